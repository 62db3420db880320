//! poll/ppoll/select/pselect6 with forwarded descriptors (epoll: `epoll`).
//!
//! Forwarded storage descriptors are regular files or directories, which
//! are always ready for reading and writing (and which epoll refuses with
//! EPERM). We report exactly that for them and run the local part of the
//! set natively (with a zero timeout when something is already ready).
//!
//! Sockets (of the network domain, and Unix sockets of the storage domain)
//! are not always ready: a set that holds one is waited for by polling its
//! domain (`OP_POLL`, the sockets' remote numbers in the chunk). A set of
//! only sockets of one domain (and storage files) is one remote poll with
//! the program's timeout. Sockets of the other domain in the same set are
//! polled with a zero timeout between slices of the first domain's wait. A
//! set that also holds local descriptors gets a zero-timeout pass over
//! both first; then the remote poll is started with the whole timeout and
//! `wake::wait` sleeps once for its completion, the local descriptors
//! (one-shot io_uring polls), the deadline or a signal (ppoll's and
//! pselect6's masks installed by the kernel). Unless the remote poll
//! completed it is interrupted and finished (its answer: EINTR, or what it
//! found), then a zero-timeout local pass collects the kernel's exact
//! answer for the local part; nothing ready (another thread took it) means
//! waiting again. A signal ends the wait with EINTR unless something is
//! ready. Where io_uring futex waits are missing (Linux < 6.7, io_uring
//! disabled) the old sliced wait remains: remote and local polls of at
//! most `SLICE_MS` each until something is ready or the timeout passes.

use super::action::Action;
use super::caller::Call;
use super::domain::{DOMAIN_NETWORK, DOMAIN_STORAGE};
use super::usermem::ChunkRef;
use super::wake::{self, Woken};
use super::{fds, host, usermem};
use std::time::{Duration, Instant};
use virtuos_abi::ops::OP_POLL;

/// Longest single wait in one domain while a mixed set is waited for in
/// slices (without `wake`).
const SLICE_MS: u64 = 5;

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
/// A socket of the network domain's current session. One whose session
/// failed is stale (ready, with an error), found out here without waiting
/// for a restarted domain (a VM takes seconds).
fn live_socket(e: fds::Entry) -> bool {
    e.is_socket() && !e.is_stale() && !super::session::epoch_over(e.home(), e.epoch)
}

/// The domains of the live sockets among the forwarded descriptors `fds`:
/// the first one's (the primary, waited in), and whether the other
/// domain has some too (then it is polled between slices).
fn socket_domains(fds: impl Iterator<Item = u64>) -> Option<(u8, bool)> {
    let mut first: Option<u8> = None;
    for fd in fds {
        if let Some(e) = fds::get(fd).filter(|&e| live_socket(e)) {
            match first {
                None => first = Some(e.home()),
                Some(d) if d != e.home() => return Some((d, true)),
                Some(_) => {}
            }
        }
    }
    first.map(|d| (d, false))
}

/// Where one forwarded member of a set is answered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// A file (always ready) or a socket of a failed domain (error).
    Now,
    /// Polled in the primary domain.
    Primary,
    /// Polled in the other domain.
    Other,
}

fn side_of(e: Option<fds::Entry>, primary: u8) -> Side {
    match e {
        Some(e) if !e.is_socket() || e.is_stale() => Side::Now,
        Some(e) if e.home() != primary => Side::Other,
        // Closed meanwhile: polled as -1 (the kernel would say POLLNVAL).
        _ => Side::Primary,
    }
}

/// The session of the other socket domain than `primary`.
fn other_domain(primary: u8) -> u8 {
    if primary == DOMAIN_NETWORK {
        DOMAIN_STORAGE
    } else {
        DOMAIN_NETWORK
    }
}

pub fn poll(nr: u64, args: [u64; 6]) -> Action {
    if fds::count() == 0 {
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
        if fd >= 0 && fds::is_forwarded(fd as u64) {
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
    let members = (0..nfds)
        .filter(|i| mask[i / 64] & (1 << (i % 64)) != 0)
        .filter_map(|i| read_pollfd(fds, i))
        .map(|(fd, _, _)| fd as u64);
    if let Some(doms) = socket_domains(members) {
        return Action::Done(poll_net(nr, args, &mask, doms));
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
    if fds::count() == 0 {
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
        if fds::is_forwarded(fd as u64) {
            fwd[fd / 64] |= 1 << (fd % 64);
            any = true;
        }
    }
    if !any {
        return Action::Local;
    }
    let (rset, wset, eset) = (args[1], args[2], args[3]);
    {
        let word = |set: u64, w: usize| -> u64 {
            if set == 0 {
                0
            } else {
                usermem::read_u64(set + w as u64 * 8).unwrap_or(0)
            }
        };
        let mut net = [0u64; MAX_SELECT_FDS / 64];
        for fd in 0..nfds {
            if fwd[fd / 64] & (1 << (fd % 64)) != 0 && fds::get(fd as u64).is_some_and(live_socket)
            {
                let w = fd / 64;
                let bit = 1u64 << (fd % 64);
                if (word(rset, w) | word(wset, w) | word(eset, w)) & bit != 0 {
                    net[w] |= bit;
                }
            }
        }
        let members = (0..nfds)
            .filter(|&fd| net[fd / 64] & (1 << (fd % 64)) != 0)
            .map(|fd| fd as u64);
        if let Some(doms) = socket_domains(members) {
            return Action::Done(select_net(nr, args, nfds, &fwd, &net, doms));
        }
    }
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

/// A timeout as "milliseconds left", None = infinite.
/// One wait for a started remote poll and the host descriptors `locals`
/// (`wake::wait`); the remote call is interrupted unless it answered, then
/// finished. Returns its result (0 when we interrupted it: no remote
/// events) and how the wait ended (None: `wake` was unavailable, so the
/// caller falls back to time slices).
fn wait_remote_and_local(
    call: &mut Call,
    locals: impl Iterator<Item = (i32, u32)>,
    deadline: &Deadline,
    sigmask: Option<u64>,
) -> Result<(i64, Option<Woken>), i64> {
    let woken = wake::wait(call, locals, deadline.0, sigmask);
    if woken.is_none() {
        call.interrupt();
    }
    let (r, _) = call.finish()?;
    Ok((if r == -(libc::EINTR as i64) { 0 } else { r }, woken))
}

struct Deadline(Option<Instant>);

impl Deadline {
    fn after(d: Option<Duration>) -> Deadline {
        Deadline(d.map(|d| Instant::now() + d))
    }

    /// Milliseconds left, rounded up; None = infinite.
    fn left_ms(&self) -> Option<u64> {
        self.0.map(|t| {
            let left = t.saturating_duration_since(Instant::now());
            left.as_micros().div_ceil(1000) as u64
        })
    }

    fn expired(&self) -> bool {
        self.left_ms() == Some(0)
    }

    /// One slice: at most SLICE_MS, at most what is left.
    fn slice_ms(&self) -> u64 {
        self.left_ms().map_or(SLICE_MS, |l| l.min(SLICE_MS))
    }
}

fn read_timespec(p: u64) -> Result<Option<Duration>, i64> {
    if p == 0 {
        return Ok(None);
    }
    let (Some(sec), Some(nsec)) = (usermem::read_u64(p), usermem::read_u64(p + 8)) else {
        return Err(-(libc::EFAULT as i64));
    };
    if (sec as i64) < 0 || nsec >= 1_000_000_000 {
        return Err(-(libc::EINVAL as i64));
    }
    Ok(Some(Duration::new(sec.min(u32::MAX as u64), nsec as u32)))
}

fn read_timeval(p: u64) -> Result<Option<Duration>, i64> {
    if p == 0 {
        return Ok(None);
    }
    let (Some(sec), Some(usec)) = (usermem::read_u64(p), usermem::read_u64(p + 8)) else {
        return Err(-(libc::EFAULT as i64));
    };
    if (sec as i64) < 0 || (usec as i64) < 0 {
        return Err(-(libc::EINVAL as i64));
    }
    // The kernel normalises large microsecond values.
    Ok(Some(
        Duration::from_secs(sec.min(u32::MAX as u64))
            + Duration::from_micros(usec.min(u32::MAX as u64)),
    ))
}

/// One remote poll of the `n` pollfds in `call`'s chunk.
fn remote_poll(call: &mut Call, n: usize, timeout_ms: Option<u64>) -> i64 {
    let t = timeout_ms.map_or(-1i64, |t| t.min(i32::MAX as u64) as i64);
    call.result(
        OP_POLL,
        [n as u64, t as i32 as u32 as u64, 0, 0, 0, 0],
        n > 0,
    )
}

fn chunk_pollfd(chunk: &ChunkRef<'_>, j: usize, fd: i32, events: i16) -> bool {
    let mut b = [0u8; 8];
    b[0..4].copy_from_slice(&fd.to_ne_bytes());
    b[4..6].copy_from_slice(&events.to_ne_bytes());
    chunk.write(j * 8, &b)
}

fn chunk_revents(chunk: &ChunkRef<'_>, j: usize, events: i16) -> i16 {
    let mut b = [0u8; 2];
    if !chunk.read(j * 8 + 6, &mut b) {
        return 0;
    }
    // Only what was asked for, plus the conditions always reported.
    i16::from_ne_bytes(b) & (events | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL)
}

/// poll/ppoll over a set with sockets of a domain (`mask`: forwarded
/// entries; `(primary, other)`: the domain waited in, and whether the
/// other one has sockets too).
fn poll_net(
    nr: u64,
    args: [u64; 6],
    mask: &[u64; MAX_POLL / 64],
    (primary, other): (u8, bool),
) -> i64 {
    let (fds, nfds) = (args[0], args[1] as usize);
    let timeout = if nr as i64 == libc::SYS_poll {
        let t = args[2] as i32;
        (t >= 0).then(|| Duration::from_millis(t as u64))
    } else {
        match read_timespec(args[2]) {
            Ok(t) => t,
            Err(e) => return e,
        }
    };
    let mut call = match Call::begin(primary) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let Some(chunk) = call.chunk() else {
        return -(libc::EIO as i64);
    };
    let mut second = match begin_other(other, primary) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let chunk2 = match chunk_of(&second) {
        Ok(ch) => ch,
        Err(e) => return e,
    };
    let is_fwd = |i: usize| mask[i / 64] & (1 << (i % 64)) != 0;
    // Sockets into the chunks (in set order), readiness of files and
    // failed sockets, and whether anything is left for the host.
    let (mut n_net, mut storage_ready, mut any_local) = (0usize, 0i64, false);
    let mut n_other = 0usize;
    let mut n_local = 0usize;
    for i in 0..nfds {
        let Some((fd, ev, _)) = read_pollfd(fds, i) else {
            return -(libc::EFAULT as i64);
        };
        if !is_fwd(i) {
            any_local |= fd >= 0;
            n_local += (fd >= 0) as usize;
            continue;
        }
        let e = fds::get(fd as u64);
        match (side_of(e, primary), e) {
            // Its domain failed: always "ready" with an error, never polled.
            (Side::Now, Some(e)) if e.is_stale() => storage_ready += 1,
            (Side::Now, _) => {
                if ev & READY_MASK != 0 {
                    storage_ready += 1;
                }
            }
            (Side::Other, Some(e)) => {
                let ok = chunk2
                    .as_ref()
                    .is_some_and(|c| chunk_pollfd(c, n_other, e.remote as i32, ev));
                if !ok {
                    return -(libc::EIO as i64);
                }
                n_other += 1;
            }
            (_, e) => {
                let rfd = e.map_or(-1, |e| e.remote as i32);
                let ev = if e.is_some() { ev } else { 0 };
                if !chunk_pollfd(&chunk, n_net, rfd, ev) {
                    return -(libc::EIO as i64);
                }
                n_net += 1;
            }
        }
    }
    // Hide forwarded entries from the kernel (negative fds are ignored).
    for i in 0..nfds {
        if is_fwd(i) {
            if let Some((fd, _, _)) = read_pollfd(fds, i) {
                write_fd(fds, i, !fd);
            }
        }
    }
    let deadline = Deadline::after(timeout);
    let zero_ts = [0i64, 0i64];
    let mut slice_ts = [0i64, 0i64];
    let sigmask_ptr = if nr as i64 == libc::SYS_ppoll {
        args[3]
    } else {
        0
    };
    let sigmask = (sigmask_ptr != 0)
        .then(|| usermem::read_u64(sigmask_ptr))
        .flatten();
    // A real wait for both sides (`wake`) unless the kernel cannot; the
    // other domain's sockets are polled between slices.
    let mut sliced =
        !any_local || n_other > 0 || n_local > wake::MAX_LOCAL || !wake::maybe_available();
    let mut local_r = 0i64;
    let mut other_r = 0i64;
    let mut first = true;
    let result = loop {
        let now_only = first || storage_ready > 0;
        first = false;
        let mut waited = false;
        let mut signalled = false;
        let net_r = if !now_only && !sliced {
            let t = deadline
                .left_ms()
                .map_or(-1i64, |t| t.min(i32::MAX as u64) as i64);
            if let Err(e) = call.start(
                OP_POLL,
                [n_net as u64, t as i32 as u32 as u64, 0, 0, 0, 0],
                n_net > 0,
            ) {
                break e;
            }
            let locals = (0..nfds)
                .filter(|&i| !is_fwd(i))
                .filter_map(|i| read_pollfd(fds, i))
                .filter(|&(fd, _, _)| fd >= 0)
                .map(|(fd, ev, _)| (fd, ev as u16 as u32));
            let (r, woken) = match wait_remote_and_local(&mut call, locals, &deadline, sigmask) {
                Ok(x) => x,
                Err(e) => break e,
            };
            sliced = woken.is_none();
            signalled = woken == Some(Woken::Signal);
            waited = true;
            r
        } else {
            let net_t = if now_only {
                Some(0)
            } else if any_local || n_other > 0 {
                Some(deadline.slice_ms())
            } else {
                deadline.left_ms()
            };
            remote_poll(&mut call, n_net, net_t)
        };
        if net_r < 0 {
            break net_r;
        }
        if let Some(c2) = second.as_mut() {
            other_r = remote_poll(c2, n_other, Some(0));
            if other_r < 0 {
                break other_r;
            }
        }
        if any_local {
            let t_ms = if now_only || net_r > 0 || other_r > 0 || waited {
                0
            } else {
                deadline.slice_ms()
            };
            let ts = if t_ms == 0 {
                &zero_ts
            } else {
                slice_ts[1] = (t_ms * 1_000_000) as i64;
                &slice_ts
            };
            local_r = host::reissue(
                libc::SYS_ppoll as u64,
                [fds, nfds as u64, ts.as_ptr() as u64, sigmask_ptr, 8, 0],
            );
            if local_r < 0 {
                break local_r;
            }
        }
        if net_r > 0 || other_r > 0 || local_r > 0 || storage_ready > 0 || deadline.expired() {
            break 0;
        }
        if signalled {
            break -(libc::EINTR as i64);
        }
    };
    // Restore the numbers and fill in the forwarded entries' revents.
    let mut count = if result < 0 { 0 } else { local_r };
    let (mut j, mut k) = (0usize, 0usize);
    for i in 0..nfds {
        if !is_fwd(i) {
            continue;
        }
        let Some((hidden, ev, _)) = read_pollfd(fds, i) else {
            continue;
        };
        let fd = !hidden;
        write_fd(fds, i, fd);
        let e = fds::get(fd as u64);
        let rev = match (side_of(e, primary), e) {
            (Side::Now, Some(e)) if e.is_stale() => libc::POLLERR | libc::POLLHUP,
            (Side::Now, _) => ev & READY_MASK,
            (Side::Other, _) => {
                let r = chunk2.as_ref().map_or(0, |c| chunk_revents(c, k, ev));
                k += 1;
                r
            }
            (Side::Primary, _) => {
                let r = chunk_revents(&chunk, j, ev);
                j += 1;
                r
            }
        };
        let rev = if result < 0 { 0 } else { rev };
        write_revents(fds, i, rev);
        if rev != 0 {
            count += 1;
        }
    }
    if result < 0 {
        result
    } else {
        count
    }
}

/// select/pselect6 over a set with sockets of a domain (`fwd`: forwarded
/// descriptors, `net`: the live sockets in some set; `(primary, other)` as
/// for `poll_net`).
#[allow(clippy::needless_range_loop)] // parallel per-word arrays
fn select_net(
    nr: u64,
    args: [u64; 6],
    nfds: usize,
    fwd: &[u64; MAX_SELECT_FDS / 64],
    net: &[u64; MAX_SELECT_FDS / 64],
    (primary, other): (u8, bool),
) -> i64 {
    let sets = [args[1], args[2], args[3]];
    let words = nfds.div_ceil(64);
    let timeout = if nr as i64 == libc::SYS_select {
        read_timeval(args[4])
    } else {
        read_timespec(args[4])
    };
    let timeout = match timeout {
        Ok(t) => t,
        Err(e) => return e,
    };
    let read_word = |set: u64, w: usize| -> u64 {
        if set == 0 {
            0
        } else {
            usermem::read_u64(set + w as u64 * 8).unwrap_or(0)
        }
    };
    let write_word = |set: u64, w: usize, v: u64| {
        if set != 0 {
            usermem::write_u64(set + w as u64 * 8, v);
        }
    };
    let valid = |w: usize| -> u64 {
        if (w + 1) * 64 <= nfds {
            u64::MAX
        } else {
            (1u64 << (nfds - w * 64)) - 1
        }
    };
    // The program's sets, saved: each local pass needs them again.
    let mut orig = [[0u64; MAX_SELECT_FDS / 64]; 3];
    for (k, &set) in sets.iter().enumerate() {
        for w in 0..words {
            orig[k][w] = read_word(set, w) & valid(w);
        }
    }
    let mut call = match Call::begin(primary) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let Some(chunk) = call.chunk() else {
        return -(libc::EIO as i64);
    };
    let mut second = match begin_other(other, primary) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let chunk2 = match chunk_of(&second) {
        Ok(ch) => ch,
        Err(e) => return e,
    };
    // The sockets polled in the other domain.
    let mut oth = [0u64; MAX_SELECT_FDS / 64];
    let mut n_other = 0usize;
    let mut n_net = 0usize;
    let mut storage = [[0u64; MAX_SELECT_FDS / 64]; 2];
    let mut storage_ready = false;
    let mut any_local = false;
    for w in 0..words {
        let f = fwd[w] & valid(w);
        let local = !f & valid(w);
        any_local |= (orig[0][w] | orig[1][w] | orig[2][w]) & local != 0;
        let st = f & !net[w];
        storage[0][w] = orig[0][w] & st;
        storage[1][w] = orig[1][w] & st;
        storage_ready |= storage[0][w] | storage[1][w] != 0;
        let mut bits = net[w] & valid(w);
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let fd = w * 64 + b;
            let bit = 1u64 << b;
            let ev = if orig[0][w] & bit != 0 {
                libc::POLLIN
            } else {
                0
            } | if orig[1][w] & bit != 0 {
                libc::POLLOUT
            } else {
                0
            } | if orig[2][w] & bit != 0 {
                libc::POLLPRI
            } else {
                0
            };
            let e = fds::get(fd as u64);
            if let (Side::Other, Some(e), Some(c2)) = (side_of(e, primary), e, chunk2.as_ref()) {
                if !chunk_pollfd(c2, n_other, e.remote as i32, ev) {
                    return -(libc::EIO as i64);
                }
                oth[w] |= bit;
                n_other += 1;
                continue;
            }
            let rfd = e.map_or(-1, |e| e.remote as i32);
            if !chunk_pollfd(&chunk, n_net, rfd, ev) {
                return -(libc::EIO as i64);
            }
            n_net += 1;
        }
    }
    let deadline = Deadline::after(timeout);
    let mut tbuf = [0i64, 0i64];
    let mut ran_local = false;
    let mut first = true;
    let mut net_r;
    // pselect6's mask: args[5] -> { const sigset_t *ss; size_t len }.
    let sigmask = (nr as i64 == libc::SYS_pselect6 && args[5] != 0)
        .then(|| usermem::read_u64(args[5]))
        .flatten()
        .filter(|&p| p != 0)
        .and_then(usermem::read_u64);
    let n_local: usize = (0..words)
        .map(|w| {
            ((orig[0][w] | orig[1][w] | orig[2][w]) & !fwd[w] & valid(w)).count_ones() as usize
        })
        .sum();
    let mut sliced =
        !any_local || n_other > 0 || n_local > wake::MAX_LOCAL || !wake::maybe_available();
    let mut other_r = 0i64;
    loop {
        let now_only = first || storage_ready;
        first = false;
        let mut waited = false;
        let mut signalled = false;
        net_r = if !now_only && !sliced {
            let t = deadline
                .left_ms()
                .map_or(-1i64, |t| t.min(i32::MAX as u64) as i64);
            if let Err(e) = call.start(
                OP_POLL,
                [n_net as u64, t as i32 as u32 as u64, 0, 0, 0, 0],
                n_net > 0,
            ) {
                return e;
            }
            let locals = (0..nfds).filter_map(|fd| {
                let (w, bit) = (fd / 64, 1u64 << (fd % 64));
                if fwd[w] & bit != 0 {
                    return None;
                }
                let mut ev = 0u32;
                if orig[0][w] & bit != 0 {
                    ev |= libc::POLLIN as u32;
                }
                if orig[1][w] & bit != 0 {
                    ev |= libc::POLLOUT as u32;
                }
                if orig[2][w] & bit != 0 {
                    ev |= libc::POLLPRI as u32;
                }
                (ev != 0).then_some((fd as i32, ev))
            });
            let (r, woken) = match wait_remote_and_local(&mut call, locals, &deadline, sigmask) {
                Ok(x) => x,
                Err(e) => return e,
            };
            sliced = woken.is_none();
            signalled = woken == Some(Woken::Signal);
            waited = true;
            r
        } else {
            let net_t = if now_only {
                Some(0)
            } else if any_local || n_other > 0 {
                Some(deadline.slice_ms())
            } else {
                deadline.left_ms()
            };
            remote_poll(&mut call, n_net, net_t)
        };
        if net_r < 0 {
            return net_r;
        }
        if let Some(c2) = second.as_mut() {
            other_r = remote_poll(c2, n_other, Some(0));
            if other_r < 0 {
                return other_r;
            }
        }
        let mut local_r = 0;
        if any_local {
            for (k, &set) in sets.iter().enumerate() {
                for w in 0..words {
                    let keep = read_word(set, w) & !(valid(w)) | (orig[k][w] & !fwd[w]);
                    write_word(set, w, keep);
                }
            }
            let t_ms = if now_only || net_r > 0 || other_r > 0 || waited {
                0
            } else {
                deadline.slice_ms()
            };
            // timeval (select) or timespec (pselect6).
            tbuf[0] = 0;
            tbuf[1] = if nr as i64 == libc::SYS_select {
                (t_ms * 1000) as i64
            } else {
                (t_ms * 1_000_000) as i64
            };
            let mut a = args;
            a[4] = tbuf.as_ptr() as u64;
            local_r = host::reissue(nr, a);
            if local_r < 0 {
                // The program's sets are as it passed them (minus ours).
                return local_r;
            }
            ran_local = true;
        }
        if net_r > 0 || other_r > 0 || local_r > 0 || storage_ready || deadline.expired() {
            break;
        }
        if signalled {
            // EINTR leaves the program's sets as it passed them.
            for (k, &set) in sets.iter().enumerate() {
                for w in 0..words {
                    let beyond = read_word(set, w) & !valid(w);
                    write_word(set, w, orig[k][w] | beyond);
                }
            }
            return -(libc::EINTR as i64);
        }
    }
    // Merge: the kernel's answer for local descriptors, the storage
    // files (always ready), the sockets' revents.
    let mut result = [[0u64; MAX_SELECT_FDS / 64]; 3];
    for w in 0..words {
        for k in 0..3 {
            result[k][w] = if ran_local {
                read_word(sets[k], w) & !fwd[w] & valid(w)
            } else {
                0
            };
        }
        result[0][w] |= storage[0][w];
        result[1][w] |= storage[1][w];
    }
    let (mut j, mut k) = (0usize, 0usize);
    let asked = libc::POLLIN | libc::POLLOUT | libc::POLLPRI;
    for w in 0..words {
        let mut bits = net[w] & valid(w);
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let bit = 1u64 << b;
            let rev = if oth[w] & bit != 0 {
                k += 1;
                chunk2
                    .as_ref()
                    .map_or(0, |c| chunk_revents(c, k - 1, asked))
            } else {
                j += 1;
                chunk_revents(&chunk, j - 1, asked)
            };
            if rev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                result[0][w] |= orig[0][w] & bit;
            }
            if rev & (libc::POLLOUT | libc::POLLERR) != 0 {
                result[1][w] |= orig[1][w] & bit;
            }
            if rev & libc::POLLPRI != 0 {
                result[2][w] |= orig[2][w] & bit;
            }
        }
    }
    let mut count = 0i64;
    for (k, &set) in sets.iter().enumerate() {
        for w in 0..words {
            let beyond = read_word(set, w) & !valid(w);
            write_word(set, w, result[k][w] | beyond);
            count += result[k][w].count_ones() as i64;
        }
    }
    count
}

/// The call in the other domain of a set with sockets in both, if needed.
fn begin_other(other: bool, primary: u8) -> Result<Option<Call>, i64> {
    if other {
        Call::begin(other_domain(primary)).map(Some)
    } else {
        Ok(None)
    }
}

/// The data chunk of that call (EIO: none left).
fn chunk_of(call: &Option<Call>) -> Result<Option<super::usermem::ChunkRef<'static>>, i64> {
    match call {
        Some(c) => c.chunk().map(Some).ok_or(-(libc::EIO as i64)),
        None => Ok(None),
    }
}
