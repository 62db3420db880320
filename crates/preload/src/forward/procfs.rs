//! /proc/self/fd/N, /proc/<our pid>/fd/N, /proc/thread-self/fd/N and
//! /dev/fd/N for a forwarded N: readlink answers with the domain's path
//! (`OP_FD_PATH`), open reopens that path in the domain, linkat with
//! `AT_SYMLINK_FOLLOW` links the descriptor's file (`OP_FD_LINK`).

use super::action::Action;
use super::caller::Call;
use super::domain;
use super::fdlink::{fd_of_path, fd_path};
use super::generic::{decide, install, Decision};
use super::path::PATH_MAX;
use super::route::PathScratch;
use super::{fds, marshal, usermem};
use virtuos_abi::ops::{FD_LINK_SHAPE, OP_FDINFO_OPEN, OP_FD_LINK};

const EIO: i64 = -(libc::EIO as i64);

/// The forwarded entry a path argument (user pointer) names, if any.
fn named_entry(ptr: u64) -> Option<fds::Entry> {
    if fds::count() == 0 {
        return None;
    }
    let mut buf = [0u8; 64];
    let n = usermem::read_cstr(ptr, &mut buf)?;
    let fd = fd_of_path(&buf[..n])?;
    fds::get(fd as u64)
}

/// The forwarded entry whose `/proc/self/fdinfo/N` (or
/// `/proc/<our pid>/fdinfo/N`, `/proc/thread-self/fdinfo/N`) a path
/// argument names, if any.
fn fdinfo_entry(ptr: u64) -> Option<fds::Entry> {
    if fds::count() == 0 {
        return None;
    }
    let mut buf = [0u8; 64];
    let n = usermem::read_cstr(ptr, &mut buf)?;
    let p = &buf[..n];
    let at = p.windows(8).position(|w| w == b"/fdinfo/")?;
    // The same path with `fd` in place of `fdinfo` names our descriptor.
    let mut alt = [0u8; 64];
    let head = &p[..at];
    let tail = &p[at + 8..];
    let len = head.len() + 4 + tail.len();
    alt.get_mut(..len)?;
    alt[..head.len()].copy_from_slice(head);
    alt[head.len()..head.len() + 4].copy_from_slice(b"/fd/");
    alt[head.len() + 4..len].copy_from_slice(tail);
    if !head.starts_with(b"/proc/") {
        return None;
    }
    let fd = fd_of_path(&alt[..len])?;
    fds::get(fd as u64)
}

/// readlink / readlinkat of a forwarded descriptor's link.
pub fn readlink(nr: u64, args: [u64; 6]) -> Option<Action> {
    let (dirfd, path, buf, size) = match nr as i64 {
        libc::SYS_readlink => (None, args[0], args[1], args[2]),
        _ => (Some(args[0]), args[1], args[2], args[3]),
    };
    let _ = dirfd; // the paths we translate are absolute
    let e = named_entry(path)?;
    if (size as i64) <= 0 {
        return Some(Action::Done(-(libc::EINVAL as i64)));
    }
    let mut call = match Call::begin(e) {
        Ok(c) => c,
        Err(err) => return Some(Action::Done(err)),
    };
    let Some(chunk) = call.chunk() else {
        return Some(Action::Done(EIO));
    };
    let cap = size.min(PATH_MAX as u64);
    let r = fd_path(&mut call, e.remote, cap);
    if r < 0 {
        return Some(Action::Done(r));
    }
    if !chunk.to_user(0, buf, r as usize) {
        return Some(Action::Done(-(libc::EFAULT as i64)));
    }
    Some(Action::Done(r))
}

/// open / openat / openat2 of a forwarded descriptor's link: reopen.
pub fn open(nr: u64, args: [u64; 6]) -> Option<Action> {
    let (path, flags, mode) = match nr as i64 {
        libc::SYS_open => (args[0], args[1], args[2]),
        libc::SYS_openat => (args[1], args[2], args[3]),
        _ => {
            // openat2: struct open_how { u64 flags; u64 mode; u64 resolve; }
            let how = args[2];
            (
                args[1],
                usermem::read_u64(how).unwrap_or(0),
                usermem::read_u64(how.wrapping_add(8)).unwrap_or(0),
            )
        }
    };
    if let Some(e) = fdinfo_entry(path) {
        // What the domain's kernel says about the descriptor.
        let mut call = match Call::begin(e) {
            Ok(c) => c,
            Err(err) => return Some(Action::Done(err)),
        };
        let rfd = call.result(OP_FDINFO_OPEN, [e.remote as u64, flags, 0, 0, 0, 0], false);
        let cloexec = flags as i32 & libc::O_CLOEXEC != 0;
        return Some(Action::Done(install(&mut call, rfd, cloexec)));
    }
    let e = named_entry(path)?;
    if e.domain != domain::DOMAIN_STORAGE {
        // Opening a socket's /proc link fails natively too.
        return Some(Action::Done(-(libc::ENXIO as i64)));
    }
    let mut call = match Call::begin(e) {
        Ok(c) => c,
        Err(err) => return Some(Action::Done(err)),
    };
    let Some(chunk) = call.chunk() else {
        return Some(Action::Done(EIO));
    };
    let r = fd_path(&mut call, e.remote, (PATH_MAX - 1) as u64);
    if r <= 0 {
        return Some(Action::Done(if r == 0 { EIO } else { r }));
    }
    if !chunk.put_byte(r as usize, 0) {
        return Some(Action::Done(EIO));
    }
    let rfd = call.result(
        libc::SYS_openat as u16,
        [virtuos_abi::AT_FDCWD_ARG, 0, flags, mode, 0, 0],
        true,
    );
    let cloexec = flags as i32 & libc::O_CLOEXEC != 0;
    Some(Action::Done(install(&mut call, rfd, cloexec)))
}

/// `linkat(olddirfd, "/proc/self/fd/N", newdirfd, newpath,
/// AT_SYMLINK_FOLLOW)` of a forwarded N (the `O_TMPFILE`-then-link
/// pattern): the domain links its own descriptor (`OP_FD_LINK`), so an
/// unnamed file gets its name as natively. A new name on the host is
/// EXDEV, as across mounts. Without `AT_SYMLINK_FOLLOW` the link itself
/// is meant, which stays on the host.
pub fn linkat(args: [u64; 6]) -> Option<Action> {
    let flags = args[4] as i32;
    if flags & libc::AT_SYMLINK_FOLLOW == 0 {
        return None;
    }
    let e = named_entry(args[1])?;
    if flags & !(libc::AT_SYMLINK_FOLLOW | libc::AT_EMPTY_PATH) != 0 {
        return Some(Action::Done(-(libc::EINVAL as i64)));
    }
    if e.domain != domain::DOMAIN_STORAGE {
        // A socket's inode lives on sockfs: another mount.
        return Some(Action::Done(-(libc::EXDEV as i64)));
    }
    let mut s = [PathScratch::new()];
    let (a, t) = match decide(libc::SYS_linkat as u64, &args, &[], &[(Some(2), 3)], &mut s) {
        Decision::Remote(a, t) => (a, t),
        Decision::Fail(err) => return Some(Action::Done(err)),
        Decision::Local | Decision::LocalRewritten(_) => {
            return Some(Action::Done(-(libc::EXDEV as i64)))
        }
    };
    if t.domain != e.domain || t.epoch.is_some_and(|ep| ep != e.epoch) {
        // The new directory's descriptor is of another incarnation.
        return Some(Action::Done(-(libc::EXDEV as i64)));
    }
    let mut call = match Call::begin(e) {
        Ok(c) => c,
        Err(err) => return Some(Action::Done(err)),
    };
    let link = [e.remote as u64, a[2], a[3], 0, 0, 0];
    Some(Action::Done(marshal::call_shaped(
        &mut call,
        OP_FD_LINK,
        &FD_LINK_SHAPE,
        &link,
    )))
}
