//! `AF_UNIX` sockets at storage paths live in the storage domain.
//!
//! `socket(AF_UNIX)` makes a host socket (most Unix sockets are unnamed,
//! abstract or at host paths, and stay exactly that). When the program
//! names a path under the storage mount — `bind`, `connect`, or `sendto`/
//! `sendmsg` of a datagram socket, the path routed as every other path
//! (`route::classify`: absolute, relative to a cwd in the domain, or a
//! relative path from a host directory that leads into the mount) — the
//! host socket, still unbound and unconnected, is replaced at the same
//! number by a socket of the storage domain of the same type, protocol and
//! `O_NONBLOCK`/close-on-exec (and the options a program sets before
//! binding: buffer sizes, timeouts, `SO_PASSCRED`), and the call is
//! forwarded. The socket file is then made by the domain's kernel in the
//! domain's file system, where `lstat`/`unlink`/`chmod`/`rename` of that
//! path find it, and two programs under virtuos meet through it.
//!
//! The path travels as the program gave it when the domain resolves it
//! the same way (absolute, or relative to the shared cwd), so
//! `getsockname`/`getpeername`/`accept` report it as natively; a relative
//! path from a host directory travels as the absolute path it leads to.
//!
//! A socket of the storage domain cannot reach the host: an abstract name
//! or a host path given to it is EXDEV, as is moving a host socket that is
//! already bound or connected. A relative host path while the cwd is in
//! the domain is given to the host kernel as the absolute path it names
//! (the host cwd is stale). Descriptors and credentials never cross
//! (`SCM_RIGHTS`/`SCM_CREDENTIALS` are refused by the domain).

use super::action::Action;
use super::caller::{remote_close, Call};
use super::domain::DOMAIN_STORAGE;
use super::fds::{self, Entry};
use super::unix_addr::{route_addr, storage_addr, AddrRoute, UnixAddr, PATH_OFF, UN_LEN};
use super::{generic, host, marshal, usermem};

const EXDEV: i64 = -(libc::EXDEV as i64);

fn sockopt(fd: i32, name: i32, val: &mut [u8]) -> i64 {
    let mut len = val.len() as u32;
    host::reissue(
        libc::SYS_getsockopt as u64,
        [
            fd as u64,
            libc::SOL_SOCKET as u64,
            name as u64,
            val.as_mut_ptr() as u64,
            &mut len as *mut u32 as u64,
            0,
        ],
    )
}

fn sockopt_int(fd: i32, name: i32) -> Option<i32> {
    let mut v = [0u8; 4];
    (sockopt(fd, name, &mut v) == 0).then(|| i32::from_ne_bytes(v))
}

/// Whether host descriptor `fd` is a Unix socket of type `ty` (None: not
/// a Unix socket).
fn unix_type(fd: i32) -> Option<i32> {
    (sockopt_int(fd, libc::SO_DOMAIN)? == libc::AF_UNIX)
        .then(|| sockopt_int(fd, libc::SO_TYPE))
        .flatten()
}

/// Whether host socket `fd` has a name or a peer (then it cannot move).
fn bound_or_connected(fd: i32) -> bool {
    let mut a = [0u8; UN_LEN];
    let mut len = a.len() as u32;
    let r = host::reissue(
        libc::SYS_getsockname as u64,
        [
            fd as u64,
            a.as_mut_ptr() as u64,
            &mut len as *mut u32 as u64,
            0,
            0,
            0,
        ],
    );
    if r < 0 || len as usize > PATH_OFF {
        return true;
    }
    let mut len = a.len() as u32;
    let r = host::reissue(
        libc::SYS_getpeername as u64,
        [
            fd as u64,
            a.as_mut_ptr() as u64,
            &mut len as *mut u32 as u64,
            0,
            0,
            0,
        ],
    );
    r != -(libc::ENOTCONN as i64)
}

fn remote_setsockopt(call: &mut Call, rfd: u32, name: i32, val: &[u8]) {
    let Some(sh) = virtuos_abi::shape::shape(libc::SYS_setsockopt as u16) else {
        return;
    };
    let a = [
        rfd as u64,
        libc::SOL_SOCKET as u64,
        name as u64,
        val.as_ptr() as u64,
        val.len() as u64,
        0,
    ];
    let _ = marshal::call_shaped(call, libc::SYS_setsockopt as u16, &sh, &a);
}

/// Carry the options a program may set before binding from host socket
/// `fd` to remote `rfd`: what differs from a fresh host socket of `ty`.
fn copy_options(call: &mut Call, fd: i32, rfd: u32, ty: i32) {
    let fresh = host::reissue(
        libc::SYS_socket as u64,
        [
            libc::AF_UNIX as u64,
            (ty | libc::SOCK_CLOEXEC) as u64,
            0,
            0,
            0,
            0,
        ],
    );
    for name in [libc::SO_SNDBUF, libc::SO_RCVBUF, libc::SO_PASSCRED] {
        let Some(v) = sockopt_int(fd, name) else {
            continue;
        };
        let default = if fresh >= 0 {
            sockopt_int(fresh as i32, name)
        } else {
            None
        };
        if Some(v) != default {
            // The kernel reports twice the buffer size that was set.
            let set = if name == libc::SO_PASSCRED { v } else { v / 2 };
            remote_setsockopt(call, rfd, name, &set.to_ne_bytes());
        }
    }
    if fresh >= 0 {
        host::close(fresh as i32);
    }
    for name in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        let mut tv = [0u8; 16];
        if sockopt(fd, name, &mut tv) == 0 && tv != [0u8; 16] {
            remote_setsockopt(call, rfd, name, &tv);
        }
    }
}

/// Replace unbound, unconnected host Unix socket `fd` (of type `ty`) by a
/// socket of the storage domain at the same number.
fn migrate(fd: i32, ty: i32) -> Result<Entry, i64> {
    if bound_or_connected(fd) {
        return Err(EXDEV);
    }
    let proto = sockopt_int(fd, libc::SO_PROTOCOL).unwrap_or(0);
    let fl = host::fcntl(fd, libc::F_GETFL, 0);
    let fdfl = host::fcntl(fd, libc::F_GETFD, 0);
    if fl < 0 || fdfl < 0 {
        return Err(if fl < 0 { fl } else { fdfl });
    }
    let cloexec = fdfl as i32 & libc::FD_CLOEXEC != 0;
    let nonblock = if fl as i32 & libc::O_NONBLOCK != 0 {
        libc::SOCK_NONBLOCK
    } else {
        0
    };
    let mut call = Call::begin(DOMAIN_STORAGE)?;
    let rfd = call.result(
        libc::SYS_socket as u16,
        [
            libc::AF_UNIX as u64,
            (ty | nonblock) as u64,
            proto as u64,
            0,
            0,
            0,
        ],
        false,
    );
    if rfd < 0 {
        return Err(rfd);
    }
    if rfd as u64 >= virtuos_abi::DOMAIN_FD_LIMIT {
        return Err(-(libc::EIO as i64));
    }
    copy_options(&mut call, fd, rfd as u32, ty);
    let ph = host::open_placeholder(cloexec);
    if ph < 0 {
        remote_close(&mut call, rfd as u64);
        return Err(ph);
    }
    let e = Entry {
        socket: true,
        ..fds::entry_for(&call, rfd as u32, cloexec)
    };
    // The entry first: a call of another thread on `fd` from now on goes
    // to the domain; then the placeholder takes the number (closing the
    // host socket) atomically.
    if let Err(err) = fds::set(fd as u64, e) {
        host::close(ph as i32);
        remote_close(&mut call, rfd as u64);
        return Err(err);
    }
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    let r = host::dup3(ph as i32, fd, flags);
    host::close(ph as i32);
    if r < 0 {
        fds::take(fd as u64);
        remote_close(&mut call, rfd as u64);
        return Err(r);
    }
    Ok(e)
}

/// A call that names an address on host descriptor `fd`: if `fd` is a Unix
/// socket and the address a storage path, move the socket to the domain
/// (only datagram sockets when `dgram_only`: sendto/sendmsg). Some(entry)
/// when moved, Some(error), or None to run the call on the host.
fn for_local(fd: u64, route: &AddrRoute, dgram_only: bool) -> Option<Result<Entry, i64>> {
    let AddrRoute::Storage(_) = route else {
        return None;
    };
    let fd = i32::try_from(fd).ok()?;
    let ty = unix_type(fd)?;
    if dgram_only && ty != libc::SOCK_DGRAM {
        return None;
    }
    Some(migrate(fd, ty))
}

fn forward_addr_call(nr: u64, e: Entry, a: &UnixAddr) -> i64 {
    let Some(sh) = virtuos_abi::shape::shape(nr as u16) else {
        return -(libc::EIO as i64);
    };
    let args = [e.remote as u64, a.ptr(), a.socklen(), 0, 0, 0];
    generic::forward(nr, &args, &sh, e)
}

/// bind / connect.
pub fn bind_connect(nr: u64, a: [u64; 6]) -> Action {
    let (fd, addr, len) = (a[0], a[1], a[2] as u32 as u64);
    match fds::get(fd) {
        // A network socket: the shaped path.
        Some(e) if e.home() != DOMAIN_STORAGE => Action::Local,
        Some(e) if e.is_stale() => Action::Done(super::caller::stale_errno(e.domain)),
        Some(e) if !e.socket => Action::Done(-(libc::ENOTSOCK as i64)),
        Some(e) => Action::Done(match storage_addr(addr, len) {
            Err(err) => err,
            Ok(Some(ua)) => forward_addr_call(nr, e, &ua),
            // Longer than any address: the kernel's EINVAL, without copying.
            Ok(None) if len > virtuos_abi::shape::SOCKADDR as u64 => -(libc::EINVAL as i64),
            Ok(None) => {
                let Some(sh) = virtuos_abi::shape::shape(nr as u16) else {
                    return Action::Done(-(libc::EIO as i64));
                };
                generic::forward(nr, &[e.remote as u64, addr, len, 0, 0, 0], &sh, e)
            }
        }),
        None => {
            let route = match route_addr(addr, len) {
                Ok(r) => r,
                Err(err) => return Action::Done(err),
            };
            if let AddrRoute::HostRewritten(ua) = &route {
                let mut b = a;
                b[1] = ua.ptr();
                b[2] = ua.socklen();
                return Action::Done(host::reissue(nr, b));
            }
            match for_local(fd, &route, false) {
                None => Action::Local,
                Some(Err(err)) => Action::Done(err),
                Some(Ok(e)) => match &route {
                    AddrRoute::Storage(ua) => Action::Done(forward_addr_call(nr, e, ua)),
                    _ => Action::Done(-(libc::EIO as i64)),
                },
            }
        }
    }
}

/// sendto on a host descriptor with an address: a datagram Unix socket
/// sending to a storage path moves to the domain first (then `net::sendto`
/// sends it); a host path relative to a cwd in the domain is rewritten.
pub fn sendto_local(nr: u64, a: [u64; 6]) -> Action {
    let (fd, addr, len) = (a[0], a[4], a[5] as u32 as u64);
    if addr == 0 {
        return Action::Local;
    }
    let route = match route_addr(addr, len) {
        Ok(r) => r,
        Err(err) => return Action::Done(err),
    };
    if let AddrRoute::HostRewritten(ua) = &route {
        let mut b = a;
        b[4] = ua.ptr();
        b[5] = ua.socklen();
        return Action::Done(host::reissue(nr, b));
    }
    match for_local(fd, &route, true) {
        None => Action::Local,
        Some(Err(err)) => Action::Done(err),
        Some(Ok(e)) => Action::Done(super::net::sendto(nr, a, e)),
    }
}

/// sendmsg / sendmmsg on a host descriptor: as `sendto_local`, for the
/// address of the (first) message.
pub fn sendmsg_local(nr: u64, a: [u64; 6]) -> Action {
    let fd = a[0];
    let hdr = a[1];
    if hdr == 0 {
        return Action::Local;
    }
    let (Some(name), Some(nlen)) = (usermem::read_u64(hdr), usermem::read_u64(hdr + 8)) else {
        return Action::Local;
    };
    let route = match route_addr(name, nlen as u32 as u64) {
        Ok(r) => r,
        Err(err) => return Action::Done(err),
    };
    if let (AddrRoute::HostRewritten(ua), libc::SYS_sendmsg) = (&route, nr as i64) {
        // The program's msghdr with the absolute path as its name.
        let mut h = [0u8; 56];
        if !usermem::read_user(hdr, &mut h) {
            return Action::Done(-(libc::EFAULT as i64));
        }
        h[0..8].copy_from_slice(&ua.ptr().to_ne_bytes());
        h[8..12].copy_from_slice(&(ua.socklen() as u32).to_ne_bytes());
        let mut b = a;
        b[1] = h.as_ptr() as u64;
        return Action::Done(host::reissue(nr, b));
    }
    match for_local(fd, &route, true) {
        None => Action::Local,
        Some(Err(err)) => Action::Done(err),
        Some(Ok(e)) => Action::Done(match nr as i64 {
            libc::SYS_sendmsg => super::net::sendmsg(nr, a, e),
            _ => super::net::sendmmsg(nr, a, e),
        }),
    }
}
