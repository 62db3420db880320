//! Descriptor-table operations: close, dup, dup2, dup3, fcntl (F_DUPFD*,
//! F_GETFD, F_SETFD and the forwarded commands), ioctl (FIOCLEX/FIONCLEX
//! and the forwarded requests), close_range.

use super::action::Action;
use super::caller::{self, remote_close, Call};
use super::domain;
use super::generic::{bind_as, forward};
use super::{epoll, fds, host, log};
use virtuos_abi::shape::{fcntl_arg, ioctl_arg, Arg};
use virtuos_abi::DOMAIN_FD_LIMIT;

const EIO: i64 = -(libc::EIO as i64);
const FICLONE: u32 = 0x4004_9409;
const FICLONERANGE: u32 = 0x4020_940d;
const FIDEDUPERANGE: u32 = 0xc018_9436;
const EINVAL: i64 = -(libc::EINVAL as i64);

pub fn close(fd: u64) -> Action {
    if !fds::is_forwarded(fd) {
        epoll::on_close_local(fd);
        return Action::Local;
    }
    // Clear the entry first: the placeholder keeps the number reserved
    // until the host close below, so no one else can get it meanwhile.
    let Some(e) = fds::take(fd) else {
        return Action::Local;
    };
    epoll::on_close_forwarded(fd, e);
    // A stale entry's remote descriptor died with its domain.
    let r = if e.is_stale() {
        0
    } else {
        caller::simple_call(e, libc::SYS_close as u16, [e.remote as u64, 0, 0, 0, 0, 0])
    };
    let h = host::close(fd as i32);
    // The descriptor is gone either way (POSIX); report a real error of
    // the domain's close (e.g. a deferred write error), not a dead domain.
    Action::Done(if r < 0 && r != EIO { r } else { h })
}

/// Remote dup of `rfd`; checks the domain's answer.
fn remote_dup(call: &mut Call, rfd: u32) -> i64 {
    let r = call.result(libc::SYS_dup as u16, [rfd as u64, 0, 0, 0, 0, 0], false);
    if r >= 0 && r as u64 >= DOMAIN_FD_LIMIT {
        return EIO;
    }
    r
}

/// dup / F_DUPFD / F_DUPFD_CLOEXEC of forwarded `fd`. The host side first:
/// the number (and EMFILE, EINVAL) is the kernel's, as natively.
fn dup_with(fd: u64, e: fds::Entry, cmd: i32, min: u64) -> i64 {
    let mut call = match Call::begin(e) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let n = host::fcntl(fd as i32, cmd, min);
    if n < 0 {
        return n;
    }
    let rnew = remote_dup(&mut call, e.remote);
    if rnew < 0 {
        host::close(n as i32);
        return rnew;
    }
    let r = bind_as(
        &mut call,
        n,
        rnew as u32,
        cmd == libc::F_DUPFD_CLOEXEC,
        e.socket,
    );
    if r >= 0 {
        fds::reopen::on_dup(fd, r as u64);
    }
    r
}

pub fn dup(fd: u64) -> Action {
    match fds::get(fd) {
        Some(e) => Action::Done(dup_with(fd, e, libc::F_DUPFD, 0)),
        None => Action::Local,
    }
}

/// dup2 (flags None) and dup3.
pub fn dup2(nr: u64, args: [u64; 6], flags: Option<u64>) -> Action {
    let (old, new) = (args[0], args[1]);
    let old_e = fds::get(old);
    // (Replaced: never re-opened for that.)
    let new_e = fds::peek(new);
    if old_e.is_none() && new_e.is_none() {
        return Action::Local;
    }
    let flags = flags.unwrap_or(0) as i32;
    if flags & !libc::O_CLOEXEC != 0 {
        return Action::Done(EINVAL);
    }
    let Some(oe) = old_e else {
        // Local onto forwarded: run it natively, then drop the remote side.
        let r = host::reissue(nr, args);
        if r >= 0 {
            if let Some(ne) = fds::take(new) {
                epoll::on_close_forwarded(new, ne);
                let _ = caller::simple_call(
                    ne,
                    libc::SYS_close as u16,
                    [ne.remote as u64, 0, 0, 0, 0, 0],
                );
            }
        }
        return Action::Done(r);
    };
    if old as u32 == new as u32 {
        // dup2(fd, fd) is a validity check; dup3(fd, fd) is EINVAL.
        return Action::Done(if nr as i64 == libc::SYS_dup3 {
            EINVAL
        } else {
            new as u32 as i64
        });
    }
    if new as u32 as usize >= fds::CAPACITY {
        return Action::Done(-(libc::EMFILE as i64));
    }
    let mut call = match Call::begin(oe) {
        Ok(c) => c,
        Err(e) => return Action::Done(e),
    };
    let rnew = remote_dup(&mut call, oe.remote);
    if rnew < 0 {
        return Action::Done(rnew);
    }
    let cloexec = flags & libc::O_CLOEXEC != 0;
    // The host dup3 atomically replaces whatever `new` was; the table swap
    // right after it hands us the replaced entry (if `new` was forwarded).
    let h = host::dup3(old as i32, new as i32, flags);
    if h < 0 {
        remote_close(&mut call, rnew as u64);
        return Action::Done(h);
    }
    let ne = fds::Entry {
        socket: oe.socket,
        ..fds::entry_for(&call, rnew as u32, cloexec)
    };
    let prev = fds::set(new, ne);
    if let Ok(Some(p)) = prev {
        epoll::on_close_forwarded(new, p);
    }
    match prev {
        Ok(Some(p)) if p.domain != oe.domain => {
            let _ =
                caller::simple_call(p, libc::SYS_close as u16, [p.remote as u64, 0, 0, 0, 0, 0]);
        }
        Ok(Some(p)) => {
            remote_close(&mut call, p.remote as u64);
        }
        Ok(None) => {}
        Err(e) => {
            host::close(new as i32);
            remote_close(&mut call, rnew as u64);
            return Action::Done(e);
        }
    }
    fds::reopen::on_dup(old, new);
    Action::Done(new as u32 as i64)
}

pub fn fcntl(args: [u64; 6]) -> Action {
    let fd = args[0];
    let Some(e) = fds::get(fd) else {
        return Action::Local;
    };
    let cmd = args[1] as i32;
    match cmd {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => Action::Done(dup_with(fd, e, cmd, args[2])),
        libc::F_GETFD => Action::Done(if e.cloexec {
            libc::FD_CLOEXEC as i64
        } else {
            0
        }),
        libc::F_SETFD => {
            let on = args[2] as i32 & libc::FD_CLOEXEC != 0;
            fds::set_cloexec(fd, on);
            Action::Done(host::fcntl(fd as i32, libc::F_SETFD, args[2]))
        }
        _ => match fcntl_arg(args[1]) {
            Some(third) => {
                let sh = [
                    Arg::Fd,
                    Arg::Val,
                    third,
                    Arg::Unused,
                    Arg::Unused,
                    Arg::Unused,
                ];
                let mut a = args;
                a[0] = e.remote as u64;
                let r = forward(libc::SYS_fcntl as u64, &a, &sh, e);
                if r >= 0 {
                    match cmd {
                        libc::F_SETFL => fds::reopen::set_fl(fd, args[2]),
                        libc::F_SETLK
                        | libc::F_SETLKW
                        | libc::F_OFD_SETLK
                        | libc::F_OFD_SETLKW
                        | libc::F_SETLEASE => fds::reopen::locked(fd),
                        _ => {}
                    }
                }
                Action::Done(r)
            }
            None => {
                log::unsupported(
                    libc::SYS_fcntl as u64,
                    "(this command, on a forwarded descriptor)",
                    libc::EINVAL,
                );
                Action::Done(EINVAL)
            }
        },
    }
}

pub fn ioctl(args: [u64; 6]) -> Action {
    let fd = args[0];
    let Some(e) = fds::get(fd) else {
        return Action::Local;
    };
    let req = args[1] as u32 as libc::c_ulong;
    if req == libc::FIOCLEX || req == libc::FIONCLEX {
        let on = req == libc::FIOCLEX;
        fds::set_cloexec(fd, on);
        let flag = if on { libc::FD_CLOEXEC as u64 } else { 0 };
        return Action::Done(host::fcntl(fd as i32, libc::F_SETFD, flag));
    }
    if matches!(req as u32, FICLONE | FICLONERANGE | FIDEDUPERANGE) {
        // These carry descriptors (FICLONE even by value although it is
        // encoded as _IOW(.., int)): never marshal them as buffers.
        return Action::Done(-(libc::EOPNOTSUPP as i64));
    }
    match ioctl_arg(args[1]) {
        Some(third) => {
            let sh = [
                Arg::Fd,
                Arg::Val,
                third,
                Arg::Unused,
                Arg::Unused,
                Arg::Unused,
            ];
            let mut a = args;
            a[0] = e.remote as u64;
            Action::Done(forward(libc::SYS_ioctl as u64, &a, &sh, e))
        }
        None => Action::Done(-(libc::ENOTTY as i64)),
    }
}

pub fn close_range(args: [u64; 6]) -> Action {
    let (first, last, flags) = (args[0] as u32 as u64, args[1] as u32 as u64, args[2] as u32);
    if first <= last && flags & libc::CLOSE_RANGE_CLOEXEC == 0 {
        epoll::on_close_range(first, last);
    }
    if fds::count() == 0 {
        return Action::Local;
    }
    if first > last {
        return Action::Local;
    }
    if flags & libc::CLOSE_RANGE_CLOEXEC != 0 {
        fds::for_each_in(first, last, |fd, _| {
            fds::set_cloexec(fd as u64, true);
        });
        return Action::Local;
    }
    // Remote closes for the forwarded descriptors in range, then the host
    // close_range (which closes their placeholders and the local ones).
    let mut calls: [Option<Call>; domain::NUM_DOMAINS] = [const { None }; domain::NUM_DOMAINS];
    let mut tried = [false; domain::NUM_DOMAINS];
    fds::for_each_in(first, last, |fd, _| {
        if let Some(e) = fds::take(fd as u64) {
            epoll::on_close_forwarded(fd as u64, e);
            let Some(k) = domain::slot_of(e.domain) else {
                return;
            };
            if !tried[k] {
                tried[k] = true;
                calls[k] = Call::begin(e).ok();
            }
            if let Some(c) = calls[k].as_mut() {
                remote_close(c, e.remote as u64);
            }
        }
    });
    Action::Local
}
