//! poll/ppoll/select/pselect6/epoll_ctl with forwarded descriptors.
//!
//! Forwarded storage descriptors are regular files or directories, which
//! are always ready for reading and writing (and which epoll refuses with
//! EPERM). We report exactly that for them and run the local part of the
//! set natively (with a zero timeout when something is already ready).
//! A full cross-domain wait comes later.

use super::{fdtable, host, usermem, Action};

/// Sets larger than this with forwarded members are not emulated (EINVAL).
const MAX_POLL: usize = 8192;
const MAX_SELECT_FDS: usize = 8192;

const READY_MASK: i16 = libc::POLLIN | libc::POLLOUT | libc::POLLRDNORM | libc::POLLWRNORM;

fn read_pollfd(base: u64, i: usize) -> Option<(i32, i16, i16)> {
    let mut b = [0u8; 8];
    usermem::read_user(base.checked_add(i as u64 * 8)?, &mut b).then(|| {
        (
            i32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            i16::from_ne_bytes([b[4], b[5]]),
            i16::from_ne_bytes([b[6], b[7]]),
        )
    })
}

fn write_fd(base: u64, i: usize, fd: i32) {
    usermem::write_user(base + i as u64 * 8, &fd.to_ne_bytes());
}

fn write_revents(base: u64, i: usize, rev: i16) {
    usermem::write_user(base + i as u64 * 8 + 6, &rev.to_ne_bytes());
}

/// poll (`nr` = SYS_poll) and ppoll.
pub fn poll(nr: u64, args: [u64; 6]) -> Action {
    if fdtable::count() == 0 {
        return Action::Local;
    }
    let (fds, nfds) = (args[0], args[1] as usize);
    if fds == 0 || nfds == 0 {
        return Action::Local;
    }
    let scan = nfds.min(MAX_POLL);
    let mut mask = [0u64; MAX_POLL / 64];
    let mut any = false;
    for i in 0..scan {
        let Some((fd, _, _)) = read_pollfd(fds, i) else {
            return Action::Local;
        };
        if fd >= 0 && fdtable::is_forwarded(fd as u64) {
            mask[i / 64] |= 1 << (i % 64);
            any = true;
        }
    }
    if !any {
        return Action::Local;
    }
    if nfds > MAX_POLL {
        return Action::Done(-(libc::EINVAL as i64));
    }
    // Hide forwarded entries from the kernel (negative fds are ignored).
    let mut ready = 0i64;
    for i in 0..nfds {
        if mask[i / 64] & (1 << (i % 64)) != 0 {
            if let Some((fd, ev, _)) = read_pollfd(fds, i) {
                write_fd(fds, i, !fd);
                if ev & READY_MASK != 0 {
                    ready += 1;
                }
            }
        }
    }
    let zero_ts = [0i64, 0i64];
    let mut a = args;
    if ready > 0 {
        match nr as i64 {
            libc::SYS_poll => a[2] = 0,
            _ => a[2] = zero_ts.as_ptr() as u64,
        }
    }
    let r = host::reissue(nr, a);
    for i in 0..nfds {
        if mask[i / 64] & (1 << (i % 64)) != 0 {
            if let Some((fd, ev, _)) = read_pollfd(fds, i) {
                write_fd(fds, i, !fd);
                write_revents(fds, i, ev & READY_MASK);
            }
        }
    }
    if r < 0 {
        return Action::Done(r);
    }
    Action::Done(r + ready)
}

/// select (`nr` = SYS_select) and pselect6.
pub fn select(nr: u64, args: [u64; 6]) -> Action {
    if fdtable::count() == 0 {
        return Action::Local;
    }
    let nfds = args[0] as i32;
    if nfds <= 0 {
        return Action::Local;
    }
    let nfds = (nfds as usize).min(MAX_SELECT_FDS);
    let words = nfds.div_ceil(64);
    let mut fwd = [0u64; MAX_SELECT_FDS / 64];
    let mut any = false;
    for fd in 0..nfds {
        if fdtable::is_forwarded(fd as u64) {
            fwd[fd / 64] |= 1 << (fd % 64);
            any = true;
        }
    }
    if !any {
        return Action::Local;
    }
    let (rset, wset, eset) = (args[1], args[2], args[3]);
    let word = |set: u64, w: usize| -> u64 {
        if set == 0 {
            0
        } else {
            usermem::read_u64(set + w as u64 * 8).unwrap_or(0)
        }
    };
    let mut ready_r = [0u64; MAX_SELECT_FDS / 64];
    let mut ready_w = [0u64; MAX_SELECT_FDS / 64];
    let mut count = 0i64;
    for w in 0..words {
        let bits_in_word = if (w + 1) * 64 <= nfds {
            u64::MAX
        } else {
            (1u64 << (nfds - w * 64)) - 1
        };
        let f = fwd[w] & bits_in_word;
        if f == 0 {
            continue;
        }
        ready_r[w] = word(rset, w) & f;
        ready_w[w] = word(wset, w) & f;
        count += (ready_r[w].count_ones() + ready_w[w].count_ones()) as i64;
        for (set, keep) in [(rset, !f), (wset, !f), (eset, !f)] {
            if set != 0 {
                let v = word(set, w) & keep;
                usermem::write_u64(set + w as u64 * 8, v);
            }
        }
    }
    let zero_tv = [0i64, 0i64];
    let mut a = args;
    if count > 0 {
        a[4] = zero_tv.as_ptr() as u64; // timeval or timespec: both zero
    }
    let r = host::reissue(nr, a);
    if r < 0 {
        return Action::Done(r);
    }
    for w in 0..words {
        for (set, add) in [(rset, ready_r[w]), (wset, ready_w[w])] {
            if set != 0 && add != 0 {
                let v = word(set, w) | add;
                usermem::write_u64(set + w as u64 * 8, v);
            }
        }
    }
    Action::Done(r + count)
}

/// epoll_ctl: a forwarded regular file cannot be added (EPERM), exactly as
/// the kernel says for regular files.
pub fn epoll_ctl(args: [u64; 6]) -> Action {
    if fdtable::is_forwarded(args[0]) {
        return Action::Done(-(libc::EINVAL as i64));
    }
    if fdtable::is_forwarded(args[2]) {
        return Action::Done(-(libc::EPERM as i64));
    }
    Action::Local
}
