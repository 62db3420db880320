//! Sockets of the network domain: `socket(AF_INET|AF_INET6)` creates them
//! there (a placeholder holds the user number, `Entry { domain: network }`),
//! and the calls whose lengths are in/out values are marshalled by hand:
//! accept/accept4, getsockname/getpeername, getsockopt, recvfrom, sendto,
//! and sendmsg/recvmsg/sendmmsg/recvmmsg through `OP_SENDMSG` /
//! `OP_RECVMSG` with the fixed `ops::msg` chunk layout.
//!
//! Address and option slots are fixed-size rooms in the chunk (SOCKADDR =
//! 128, SOCKOPT = 1024): the domain gets `min(*len, room)` as the length;
//! the program gets back `min(reported, its *len)` bytes and the reported
//! length (POSIX truncation semantics).
//!
//! AF_UNIX sockets stay on the host unless the program names a storage
//! path (`unix`: then they move to the storage domain, and every call here
//! serves them as well); AF_NETLINK and every other family stay on the
//! host, as do `socketpair`, pipes, eventfd, signalfd and timerfd. When the daemon
//! runs no network domain (`virtuos up --no-network`, its answer is
//! "unknown domain"), AF_INET/AF_INET6 sockets stay on the host too.
//! Allocation-free except the first registration.

use super::action::Action;
use super::caller::Call;
use super::domain::{DOMAIN_NETWORK, DOMAIN_STORAGE};
use super::fds::{self, Entry};
use super::generic::{install, install_as};
use super::io::{gather, iov_total, scatter};
use super::session;
use super::usermem::{self, ChunkRef};
use virtuos_abi::ops::{msg, OP_RECVMSG, OP_SENDMSG};
use virtuos_abi::shape::{SOCKADDR, SOCKOPT};
use virtuos_abi::{CHUNK_SIZE, NULL_ARG};

const EIO: i64 = -(libc::EIO as i64);
const EFAULT: i64 = -(libc::EFAULT as i64);
const EINVAL: i64 = -(libc::EINVAL as i64);
const ROOM: usize = SOCKADDR as usize;
const OPT_ROOM: usize = SOCKOPT as usize;
/// Largest payload of recvfrom/sendto: the chunk minus the address rooms.
const DATA_ROOM: u64 = (CHUNK_SIZE - 2 * ROOM) as u64;
const UIO_MAXIOV: u64 = 1024;
/// sizeof(struct msghdr), sizeof(struct mmsghdr).
const MSGHDR: u64 = 56;
const MMSGHDR: u64 = 64;

/// socket(2): AF_INET and AF_INET6 go to the network domain.
pub fn socket(a: [u64; 6]) -> Action {
    let family = a[0] as i32;
    if family != libc::AF_INET && family != libc::AF_INET6 {
        return Action::Local;
    }
    if session::is_absent(DOMAIN_NETWORK) {
        return Action::Local;
    }
    let cloexec = a[1] as i32 & libc::SOCK_CLOEXEC != 0;
    let mut call = match Call::begin(DOMAIN_NETWORK) {
        Ok(c) => c,
        // A daemon started without a network domain: sockets stay local.
        Err(_) if session::is_absent(DOMAIN_NETWORK) => return Action::Local,
        Err(e) => return Action::Done(e),
    };
    let r = call.result(
        libc::SYS_socket as u16,
        [a[0], a[1] & 0xffff_ffff, a[2] & 0xffff_ffff, 0, 0, 0],
        false,
    );
    Action::Done(install(&mut call, r, cloexec))
}

/// Run `f` for a call whose first argument is a descriptor: local
/// descriptors stay on the host, a forwarded file is ENOTSOCK (natively
/// too), a socket (of the network domain, or a Unix socket of the storage
/// domain) is marshalled by `f`.
pub fn on_fd(nr: u64, a: [u64; 6], f: fn(u64, [u64; 6], Entry) -> i64) -> Action {
    on_fd_or(nr, a, f, |_, _| Action::Local)
}

/// `on_fd`, with `local` for host descriptors.
pub fn on_fd_or(
    nr: u64,
    a: [u64; 6],
    f: fn(u64, [u64; 6], Entry) -> i64,
    local: fn(u64, [u64; 6]) -> Action,
) -> Action {
    match fds::get(a[0]) {
        None => local(nr, a),
        Some(e) if e.is_stale() => Action::Done(super::caller::stale_errno(e.domain)),
        Some(e) if !e.is_socket() => Action::Done(-(libc::ENOTSOCK as i64)),
        Some(e) => Action::Done(f(nr, a, e)),
    }
}

/// listen, shutdown, setsockopt: shaped calls on a socket.
pub fn plain(nr: u64, a: [u64; 6], e: Entry) -> i64 {
    let Some(sh) = virtuos_abi::shape::shape(nr as u16) else {
        return EIO;
    };
    let mut args = a;
    args[0] = e.remote as u64;
    super::generic::forward(nr, &args, &sh, e)
}

fn begin(e: Entry) -> Result<(Call, ChunkRef<'static>), i64> {
    let call = Call::begin(e)?;
    let chunk = call.chunk().ok_or(EIO)?;
    Ok((call, chunk))
}

fn read_u32(p: u64) -> Option<u32> {
    let mut b = [0u8; 4];
    usermem::read_user(p, &mut b).then(|| u32::from_ne_bytes(b))
}

fn write_u32(p: u64, v: u32) -> bool {
    usermem::write_user(p, &v.to_ne_bytes())
}

fn chunk_u32(chunk: &ChunkRef<'_>, off: usize) -> Option<u32> {
    let mut b = [0u8; 4];
    chunk.read(off, &mut b).then(|| u32::from_ne_bytes(b))
}

/// The program's `*lenp` (a socklen_t, negative is EINVAL) and what the
/// domain gets: `min(*lenp, room)`, written into the chunk at `off`.
fn len_in(chunk: &ChunkRef<'_>, lenp: u64, off: usize, room: usize) -> Result<u32, i64> {
    let ulen = read_u32(lenp).ok_or(EFAULT)?;
    if (ulen as i32) < 0 {
        return Err(EINVAL);
    }
    let give = (ulen as usize).min(room) as u32;
    if !chunk.write(off, &give.to_ne_bytes()) {
        return Err(EIO);
    }
    Ok(ulen)
}

/// Copy an address (or option) back: `min(reported, ulen, room)` bytes
/// from the chunk at `data_off` to `dst`, and `reported` (bounded by the
/// room: nothing longer exists) into `*lenp`.
fn len_out(
    chunk: &ChunkRef<'_>,
    data_off: usize,
    len_off: usize,
    dst: u64,
    lenp: u64,
    ulen: u32,
    room: usize,
) -> Result<(), i64> {
    let reported = chunk_u32(chunk, len_off).ok_or(EIO)?.min(room as u32);
    let n = reported.min(ulen) as usize;
    if n > 0 && !chunk.to_user(data_off, dst, n) {
        return Err(EFAULT);
    }
    if !write_u32(lenp, reported) {
        return Err(EFAULT);
    }
    Ok(())
}

/// accept / accept4: installs the new descriptor (SOCK_CLOEXEC on the user
/// number, SOCK_NONBLOCK on the remote socket).
pub fn accept(nr: u64, a: [u64; 6], e: Entry) -> i64 {
    let (addr, lenp) = (a[1], a[2]);
    let flags = if nr as i64 == libc::SYS_accept4 {
        a[3] as i32
    } else {
        0
    };
    if flags & !(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) != 0 {
        return EINVAL;
    }
    let (mut call, chunk) = match begin(e) {
        Ok(x) => x,
        Err(err) => return err,
    };
    let mut ulen = 0u32;
    let (aoff, loff) = if addr != 0 {
        if lenp == 0 {
            return EFAULT;
        }
        ulen = match len_in(&chunk, lenp, ROOM, ROOM) {
            Ok(l) => l,
            Err(err) => return err,
        };
        (0u64, ROOM as u64)
    } else {
        (NULL_ARG, NULL_ARG)
    };
    let r = call.result(
        nr as u16,
        [e.remote as u64, aoff, loff, flags as u64, 0, 0],
        addr != 0,
    );
    if r < 0 {
        return r;
    }
    if addr != 0 {
        if let Err(err) = len_out(&chunk, 0, ROOM, addr, lenp, ulen, ROOM) {
            super::caller::remote_close(&mut call, r as u64);
            return err;
        }
    }
    install_as(&mut call, r, flags & libc::SOCK_CLOEXEC != 0, true)
}

/// getsockname / getpeername.
pub fn sockname(nr: u64, a: [u64; 6], e: Entry) -> i64 {
    let (addr, lenp) = (a[1], a[2]);
    let (mut call, chunk) = match begin(e) {
        Ok(x) => x,
        Err(err) => return err,
    };
    let ulen = match len_in(&chunk, lenp, ROOM, ROOM) {
        Ok(l) => l,
        Err(err) => return err,
    };
    let r = call.result(nr as u16, [e.remote as u64, 0, ROOM as u64, 0, 0, 0], true);
    if r < 0 {
        return r;
    }
    match len_out(&chunk, 0, ROOM, addr, lenp, ulen, ROOM) {
        Ok(()) => r,
        Err(err) => err,
    }
}

/// getsockopt: the option value has 1024 bytes of room.
pub fn getsockopt(nr: u64, a: [u64; 6], e: Entry) -> i64 {
    let (level, name, val, lenp) = (a[1], a[2], a[3], a[4]);
    let (mut call, chunk) = match begin(e) {
        Ok(x) => x,
        Err(err) => return err,
    };
    let ulen = match len_in(&chunk, lenp, OPT_ROOM, OPT_ROOM) {
        Ok(l) => l,
        Err(err) => return err,
    };
    // A few options read their buffer too: pass what the program has
    // (best effort; an unreadable buffer is the kernel's EFAULT later).
    let give = (ulen as usize).min(OPT_ROOM);
    if val != 0 && give > 0 {
        let _ = chunk.from_user(0, val, give);
    }
    let r = call.result(
        nr as u16,
        [e.remote as u64, level, name, 0, OPT_ROOM as u64, 0],
        true,
    );
    if r < 0 {
        return r;
    }
    // The kernel never reports more than it was given: bound by ulen.
    let reported = match chunk_u32(&chunk, OPT_ROOM) {
        Some(v) => v.min(give as u32),
        None => return EIO,
    };
    if reported > 0 && !chunk.to_user(0, val, reported as usize) {
        return EFAULT;
    }
    if !write_u32(lenp, reported) {
        return EFAULT;
    }
    r
}

/// recvfrom (and recv): the payload at 0, the address room after it.
pub fn recvfrom(nr: u64, a: [u64; 6], e: Entry) -> i64 {
    let (buf, len, flags, addr, lenp) = (a[1], a[2], a[3], a[4], a[5]);
    let cap = len.min(DATA_ROOM);
    if buf == 0 && cap > 0 {
        return EFAULT;
    }
    let (mut call, chunk) = match begin(e) {
        Ok(x) => x,
        Err(err) => return err,
    };
    let aoff = (cap as usize + 7) & !7;
    let loff = aoff + ROOM;
    let mut ulen = 0u32;
    let (sa, sl) = if addr != 0 {
        if lenp == 0 {
            return EFAULT;
        }
        ulen = match len_in(&chunk, lenp, loff, ROOM) {
            Ok(l) => l,
            Err(err) => return err,
        };
        (aoff as u64, loff as u64)
    } else {
        (NULL_ARG, NULL_ARG)
    };
    let r = call.result(nr as u16, [e.remote as u64, 0, cap, flags, sa, sl], true);
    if r < 0 {
        return r;
    }
    // With MSG_TRUNC a datagram socket reports the datagram's full length.
    if r as u64 > cap && flags as i32 & libc::MSG_TRUNC == 0 {
        return EIO;
    }
    let n = (r as u64).min(cap) as usize;
    if n > 0 && !chunk.to_user(0, buf, n) {
        return EFAULT;
    }
    if addr != 0 {
        if let Err(err) = len_out(&chunk, aoff, loff, addr, lenp, ulen, ROOM) {
            return err;
        }
    }
    r
}

/// sendto (and send): at most one chunk of payload (a short count, as a
/// stream socket may return).
pub fn sendto(nr: u64, a: [u64; 6], e: Entry) -> i64 {
    let (buf, len, flags, mut addr, mut alen) = (a[1], a[2], a[3], a[4], a[5] as u32);
    let routed = match unix_addr(e, addr, alen) {
        Ok(r) => r,
        Err(err) => return err,
    };
    if let Some(ua) = &routed {
        (addr, alen) = (ua.ptr(), ua.socklen() as u32);
    }
    let cap = len.min(DATA_ROOM);
    if addr != 0 && alen as usize > ROOM {
        return EINVAL;
    }
    let (mut call, chunk) = match begin(e) {
        Ok(x) => x,
        Err(err) => return err,
    };
    if cap > 0 && !chunk.from_user(0, buf, cap as usize) {
        return EFAULT;
    }
    let aoff = (cap as usize + 7) & !7;
    let (sa, sl) = if addr != 0 {
        if !chunk.write(aoff, &[0u8; ROOM]) || !chunk.from_user(aoff, addr, alen as usize) {
            return EFAULT;
        }
        (aoff as u64, alen as u64)
    } else {
        (NULL_ARG, 0)
    };
    let r = call.result(nr as u16, [e.remote as u64, 0, cap, flags, sa, sl], true);
    if r > cap as i64 {
        return EIO;
    }
    r
}

/// A user `struct msghdr`.
struct MsgHdr {
    name: u64,
    namelen: u32,
    iov: u64,
    iovlen: u64,
    control: u64,
    controllen: u64,
}

fn read_msghdr(p: u64) -> Result<MsgHdr, i64> {
    let mut b = [0u8; MSGHDR as usize];
    if !usermem::read_user(p, &mut b) {
        return Err(EFAULT);
    }
    let u64_at = |at: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[at..at + 8]);
        u64::from_ne_bytes(x)
    };
    let mut l = [0u8; 4];
    l.copy_from_slice(&b[8..12]);
    Ok(MsgHdr {
        name: u64_at(0),
        namelen: u32::from_ne_bytes(l),
        iov: u64_at(16),
        iovlen: u64_at(24),
        control: u64_at(32),
        controllen: u64_at(40),
    })
}

/// The address a Unix socket of the storage domain sends to (None: as
/// the program gave it); network sockets take theirs unchanged.
fn unix_addr(e: Entry, addr: u64, alen: u32) -> Result<Option<super::unix_addr::UnixAddr>, i64> {
    if e.home() != DOMAIN_STORAGE || addr == 0 {
        return Ok(None);
    }
    super::unix_addr::storage_addr(addr, alen as u64)
}

/// One sendmsg through OP_SENDMSG.
fn send_one(call: &mut Call, chunk: &ChunkRef<'_>, e: Entry, hdr: u64, flags: u64) -> i64 {
    let rfd = e.remote;
    let mut h = match read_msghdr(hdr) {
        Ok(h) => h,
        Err(e) => return e,
    };
    let routed = match unix_addr(e, h.name, h.namelen) {
        Ok(r) => r,
        Err(err) => return err,
    };
    if let Some(ua) = &routed {
        (h.name, h.namelen) = (ua.ptr(), ua.socklen() as u32);
    }
    let namelen = if h.name != 0 { h.namelen as usize } else { 0 };
    if namelen > msg::NAME_MAX {
        return EINVAL;
    }
    let controllen = if h.control != 0 {
        h.controllen as usize
    } else {
        0
    };
    if controllen > msg::CONTROL_MAX {
        return -(libc::ENOBUFS as i64);
    }
    if h.iovlen > UIO_MAXIOV {
        return -(libc::EMSGSIZE as i64);
    }
    if let Err(e) = iov_total(h.iov, h.iovlen as usize) {
        return e;
    }
    if namelen > 0 && !chunk.from_user(msg::NAME_OFF, h.name, namelen) {
        return EFAULT;
    }
    if controllen > 0 && !chunk.from_user(msg::CONTROL_OFF, h.control, controllen) {
        return EFAULT;
    }
    let data = match gather(
        chunk,
        msg::DATA_OFF,
        h.iov,
        h.iovlen as usize,
        msg::DATA_MAX as u64,
    ) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let r = call.result(
        OP_SENDMSG,
        [
            rfd as u64,
            flags & 0xffff_ffff,
            namelen as u64,
            controllen as u64,
            data,
            0,
        ],
        true,
    );
    if r > data as i64 {
        return EIO;
    }
    r
}

/// One recvmsg through OP_RECVMSG; writes back msg_namelen,
/// msg_controllen and msg_flags.
fn recv_one(call: &mut Call, chunk: &ChunkRef<'_>, rfd: u32, hdr: u64, flags: u64) -> i64 {
    let h = match read_msghdr(hdr) {
        Ok(h) => h,
        Err(e) => return e,
    };
    if h.name != 0 && (h.namelen as i32) < 0 {
        return EINVAL;
    }
    if h.iovlen > UIO_MAXIOV {
        return -(libc::EMSGSIZE as i64);
    }
    let total = match iov_total(h.iov, h.iovlen as usize) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let name_cap = if h.name != 0 {
        (h.namelen as usize).min(msg::NAME_MAX)
    } else {
        0
    };
    let control_cap = if h.control != 0 {
        (h.controllen as usize).min(msg::CONTROL_MAX)
    } else {
        0
    };
    let data_cap = total.min(msg::DATA_MAX as u64);
    let (r, extra) = match call.invoke(
        OP_RECVMSG,
        [
            rfd as u64,
            flags & 0xffff_ffff,
            name_cap as u64,
            control_cap as u64,
            data_cap,
            0,
        ],
        true,
    ) {
        Ok(x) => x,
        Err(e) => return e,
    };
    if r < 0 {
        return r;
    }
    let (namelen, controllen, mut msg_flags) = msg::unpack_recv_extra(extra);
    if r as u64 > data_cap && msg_flags as i32 & libc::MSG_TRUNC == 0 {
        return EIO;
    }
    if let Err(e) = scatter(
        chunk,
        msg::DATA_OFF,
        h.iov,
        h.iovlen as usize,
        (r as u64).min(data_cap),
    ) {
        return e;
    }
    if h.name != 0 {
        let reported = (namelen as usize).min(ROOM);
        let n = reported.min(name_cap);
        if n > 0 && !chunk.to_user(msg::NAME_OFF, h.name, n) {
            return EFAULT;
        }
        if !write_u32(hdr + 8, reported as u32) {
            return EFAULT;
        }
    }
    let mut clen = controllen as usize;
    if clen > control_cap {
        // More than we offered: keep what fits, say it was cut.
        clen = control_cap;
        msg_flags |= libc::MSG_CTRUNC as u32;
    }
    if clen > 0 && !chunk.to_user(msg::CONTROL_OFF, h.control, clen) {
        return EFAULT;
    }
    if !usermem::write_u64(hdr + 40, clen as u64) || !write_u32(hdr + 48, msg_flags) {
        return EFAULT;
    }
    r
}

pub fn sendmsg(_nr: u64, a: [u64; 6], e: Entry) -> i64 {
    match begin(e) {
        Ok((mut call, chunk)) => send_one(&mut call, &chunk, e, a[1], a[2]),
        Err(err) => err,
    }
}

pub fn recvmsg(_nr: u64, a: [u64; 6], e: Entry) -> i64 {
    match begin(e) {
        Ok((mut call, chunk)) => recv_one(&mut call, &chunk, e.remote, a[1], a[2]),
        Err(err) => err,
    }
}

/// sendmmsg: a loop of sendmsg; stops at the first error after one
/// message (returning the count), as the kernel does.
pub fn sendmmsg(_nr: u64, a: [u64; 6], e: Entry) -> i64 {
    let (vec, vlen, flags) = (a[1], a[2].min(UIO_MAXIOV), a[3]);
    let (mut call, chunk) = match begin(e) {
        Ok(x) => x,
        Err(err) => return err,
    };
    each_message(vec, vlen, |hdr| send_one(&mut call, &chunk, e, hdr, flags))
}

/// Run `one` on each `struct mmsghdr` of `vec` (its result is the byte
/// count stored in `msg_len`) until it fails; the count of messages done,
/// or the first error if none was.
fn each_message(vec: u64, vlen: u64, mut one: impl FnMut(u64) -> i64) -> i64 {
    each_message_until(vec, vlen, |hdr| (one(hdr), true))
}

/// `each_message`, also stopping after a message for which `one` says
/// `false` as its second value.
fn each_message_until(vec: u64, vlen: u64, mut one: impl FnMut(u64) -> (i64, bool)) -> i64 {
    let mut i = 0u64;
    while i < vlen {
        let hdr = vec.wrapping_add(i * MMSGHDR);
        let (r, go_on) = one(hdr);
        if r < 0 {
            return if i == 0 { r } else { i as i64 };
        }
        if !write_u32(hdr + MSGHDR, r as u32) {
            return if i == 0 { EFAULT } else { i as i64 };
        }
        i += 1;
        if !go_on {
            break;
        }
    }
    i as i64
}

/// recvmmsg: a loop of recvmsg; MSG_WAITFORONE makes every receive after
/// the first non-blocking; stops at the first error (EAGAIN) after one
/// message; the timeout is checked after each message (as the kernel does).
pub fn recvmmsg(_nr: u64, a: [u64; 6], e: Entry) -> i64 {
    let (vec, vlen, mut flags, tsp) = (a[1], a[2].min(UIO_MAXIOV), a[3], a[4]);
    let deadline = if tsp != 0 {
        let (Some(sec), Some(nsec)) = (usermem::read_u64(tsp), usermem::read_u64(tsp + 8)) else {
            return EFAULT;
        };
        if (sec as i64) < 0 || nsec >= 1_000_000_000 {
            return EINVAL;
        }
        Some(
            std::time::Instant::now()
                + std::time::Duration::new(sec.min(u32::MAX as u64), nsec as u32),
        )
    } else {
        None
    };
    let waitforone = flags as i32 & libc::MSG_WAITFORONE != 0;
    flags &= !(libc::MSG_WAITFORONE as u64);
    let (mut call, chunk) = match begin(e) {
        Ok(x) => x,
        Err(err) => return err,
    };
    each_message_until(vec, vlen, |hdr| {
        let r = recv_one(&mut call, &chunk, e.remote, hdr, flags);
        if waitforone {
            flags |= libc::MSG_DONTWAIT as u64;
        }
        (r, deadline.is_none_or(|d| std::time::Instant::now() < d))
    })
}
