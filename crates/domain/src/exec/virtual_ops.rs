//! Virtual operations (`virtuos_abi::ops`): requests that are not one Linux
//! system call.

use super::{neg, Host};
use crate::role::Role;
use std::os::fd::AsRawFd;
use virtuos_abi::decode::{marshal, Strings};
use virtuos_abi::entry::Request;
use virtuos_abi::ops::{
    FD_LINK_SHAPE, OP_EXEC_ABORT, OP_EXEC_CLAIM, OP_EXEC_DONE, OP_FDINFO_OPEN, OP_FD_LINK,
    OP_FD_PATH, OP_FORK_ABORT, OP_FORK_PREPARE, OP_PING, OP_RECVMSG, OP_SENDMSG,
};
use virtuos_abi::{ClientRegion, DOMAIN_FD_LIMIT};

#[path = "poll.rs"]
mod poll;

#[path = "epoll.rs"]
mod epoll;

/// (result, extra) of virtual op `req.op` (the caller checked the role).
pub(crate) fn execute(region: &ClientRegion, host: &dyn Host, req: &Request) -> (i64, u64) {
    let r = match req.op {
        OP_PING => 0,
        OP_FD_PATH => fd_path(region, host, req),
        OP_FD_LINK => fd_link(region, host, req),
        OP_FDINFO_OPEN => fdinfo_open(host, req),
        OP_FORK_PREPARE => host.fork_prepare(),
        OP_FORK_ABORT => host.fork_abort(req.args[0]),
        OP_EXEC_CLAIM => exec_claim(host, req),
        OP_EXEC_ABORT => host.exec_abort(),
        OP_EXEC_DONE => host.exec_done(req.args[0] == 1),
        OP_SENDMSG => super::msg::sendmsg(region, host.role(), host.fd_limit(), req),
        OP_RECVMSG => return super::msg::recvmsg(region, host.fd_limit(), req),
        virtuos_abi::ops::OP_POLL => poll::poll(region, host.fd_limit(), req),
        virtuos_abi::ops::OP_EPOLL_CREATE => epoll::create(host.fd_limit()),
        virtuos_abi::ops::OP_EPOLL_CTL => epoll::ctl(host.fd_limit(), req),
        virtuos_abi::ops::OP_EPOLL_WAIT => epoll::wait(region, host.fd_limit(), req),
        _ => neg(libc::ENOSYS),
    };
    (r, 0)
}

/// `[fd, off, len]`: what `/proc/self/fd/<fd>` names, written into the chunk.
/// "self" resolves per calling process even through a dirfd opened by the
/// main process, so each (forked) shadow sees its own table.
fn fd_path(region: &ClientRegion, host: &dyn Host, req: &Request) -> i64 {
    let [fd, off, len, ..] = req.args;
    if fd >= host.fd_limit().min(DOMAIN_FD_LIMIT) {
        return neg(libc::EBADF);
    }
    let Some(chunk) = req.chunk else {
        return neg(libc::EFAULT);
    };
    let Some(buf) = region.chunk_ptr(chunk, off, len) else {
        return neg(libc::EFAULT);
    };
    let name = format!("self/fd/{fd}\0");
    let procfd = host.procfd().as_raw_fd();
    let args = [
        procfd as i64 as u64,
        name.as_ptr() as u64,
        buf as u64,
        len,
        0,
        0,
    ];
    // SAFETY: readlinkat reads the NUL-terminated `name` (alive until the
    // call returns) and writes at most `len` bytes at `buf`, a range of the
    // call's chunk checked by `chunk_ptr`.
    unsafe { crate::sys::syscall(libc::SYS_readlinkat, args) }
}

/// `[fd, newdirfd, newpath]`: link the file `fd` names at `newpath`,
/// through this process's `/proc/self/fd/<fd>` with `AT_SYMLINK_FOLLOW`,
/// exactly as a program links an `O_TMPFILE` file natively. The kernel
/// applies its own rules (ENOENT for an unlinked file or `O_TMPFILE |
/// O_EXCL`, EPERM for a directory, EXDEV across mounts, the
/// `protected_hardlinks` checks) with the calling thread's credentials,
/// which are the client thread's; following the link of this very
/// process needs no capability.
fn fd_link(region: &ClientRegion, host: &dyn Host, req: &Request) -> i64 {
    if host.role() != Role::Storage {
        return neg(libc::ENOSYS);
    }
    let mut strings = Strings::default();
    let raw = match marshal(
        region,
        host.fd_limit(),
        req.chunk,
        &FD_LINK_SHAPE,
        &req.args,
        &mut strings,
    ) {
        Ok(raw) => raw,
        Err(e) => return neg(e),
    };
    let name = format!("self/fd/{}\0", raw[0]);
    let procfd = host.procfd().as_raw_fd();
    let args = [
        procfd as i64 as u64,
        name.as_ptr() as u64,
        raw[1],
        raw[2],
        libc::AT_SYMLINK_FOLLOW as u64,
        0,
    ];
    // SAFETY: linkat reads two NUL-terminated strings: `name` (alive until
    // the call returns) and the private copy of the client's path in
    // `strings` (checked by `marshal`, alive until after the call);
    // `raw[1]` is a client descriptor below the limit or AT_FDCWD.
    let r = unsafe { crate::sys::syscall(libc::SYS_linkat, args) };
    drop(strings);
    r
}

/// `[fd, flags]`: open this process's `/proc/self/fdinfo/<fd>`, so that a
/// client reads what the domain's kernel says about its descriptor (the
/// same mount id and inode as its `statx`). A number in the shadow's own
/// range is never opened nor handed out.
fn fdinfo_open(host: &dyn Host, req: &Request) -> i64 {
    let [fd, flags, ..] = req.args;
    let limit = host.fd_limit().min(DOMAIN_FD_LIMIT);
    if fd >= limit {
        return neg(libc::ENOENT);
    }
    let keep =
        libc::O_ACCMODE | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_NOATIME;
    let flags = (flags as i32 & keep) | libc::O_CLOEXEC;
    let name = format!("self/fdinfo/{fd}\0");
    let procfd = host.procfd().as_raw_fd();
    let args = [
        procfd as i64 as u64,
        name.as_ptr() as u64,
        flags as u64,
        0,
        0,
        0,
    ];
    // SAFETY: openat reads the NUL-terminated `name`, alive until the call
    // returns.
    let r = unsafe { crate::sys::syscall(libc::SYS_openat, args) };
    if r >= 0 && r as u64 >= limit {
        // SAFETY: closing the descriptor we just opened.
        unsafe { crate::sys::syscall(libc::SYS_close, [r as u64, 0, 0, 0, 0, 0]) };
        return neg(libc::EMFILE);
    }
    r
}

/// `[fd, image]`: the client is about to exec the file `fd` names. Only
/// the storage domain holds programs.
fn exec_claim(host: &dyn Host, req: &Request) -> i64 {
    let [fd, image, ..] = req.args;
    if host.role() != Role::Storage {
        return neg(libc::ENOSYS);
    }
    if fd >= host.fd_limit().min(DOMAIN_FD_LIMIT) {
        return neg(libc::EBADF);
    }
    host.exec_claim(fd as i32, image == 1)
}
