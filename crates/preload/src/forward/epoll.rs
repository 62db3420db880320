//! epoll over sets that hold sockets of a domain (network sockets, or
//! Unix sockets of the storage domain).
//!
//! The program's epoll descriptor stays a real host epoll instance: its
//! local members (pipes, eventfd, timerfd, Unix sockets, other epolls) are
//! the kernel's business. Its forwarded members (network sockets) live in
//! an epoll instance of the shadow (`OP_EPOLL_CREATE`, `OP_EPOLL_CTL`),
//! which gives edge-triggered, one-shot and exclusive semantics for free.
//! Storage files are refused with EPERM, as Linux refuses regular files.
//! A set's forwarded members are sockets of one domain (the first one's):
//! a socket of the other domain is refused with EXDEV (one remote wait
//! per `epoll_wait`).
//!
//! Client side, per epoll descriptor: a fixed-capacity table (no
//! allocation: this runs in the SIGSYS handler) of the forwarded members:
//! user fd, events, the program's data, and a generation. The domain's
//! instance carries `key = generation << 32 | fd` as its data, so an event
//! of a member removed (or closed and re-added) meanwhile is recognised and
//! dropped.
//!
//! `epoll_wait` on a set with armed forwarded members: a zero-timeout probe
//! of the host instance (`ppoll` on the epoll fd: it consumes nothing),
//! then the remote `OP_EPOLL_WAIT` is submitted with the whole timeout and
//! the caller sleeps on its entry (woken by the domain). If the set may
//! hold local members, the sleep is `wake::wait`: one wait for the entry's
//! completion and for the host instance to become readable (a one-shot
//! io_uring poll of the epoll fd, which consumes nothing); without io_uring
//! futex waits, the sleep is cut in slices of `SLICE` between which the
//! host instance is probed again. When the host side is ready the remote
//! wait is interrupted (`request_interrupt`) and its answer — EINTR, or events it
//! had already taken, which are kept — is merged with the host's events
//! (fetched with `epoll_wait(.., 0)` into the rest of the program's
//! buffer, so nothing consumed is ever dropped). A signal of the program
//! (its mask, or the one given to `epoll_pwait`, is installed while it
//! sleeps) interrupts the wait: EINTR unless events had arrived. Sets
//! created by an `epoll_create` we saw know how many local members they
//! have (an over-estimate after local closes): with none, there is no
//! slicing at all.
//!
//! Closing a forwarded descriptor removes it from every set (the kernel
//! does that for local ones). The domain's instance is removed from too
//! (EPOLL_CTL_DEL before the close) unless the set may be shared with
//! another process (after a fork, as natively, a registration lives until
//! the last descriptor of its file is closed, which the forked shadows
//! mirror). Nested epoll: an epoll descriptor in another set works as the
//! kernel does it; forwarded members of the inner set do not wake the
//! outer one. Not kept across exec.

use super::action::Action;
use super::caller::{sleep_with_mask, Call, Started};
use super::domain;
use super::fds::{self, Entry};
use super::sync::SpinLock;
use super::wake::{self, Woken};
use super::{caller, host, usermem};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use virtuos_abi::ops::epoll::{self as wire, EVENT_SIZE, MAX_EVENTS};
use virtuos_abi::ops::{OP_EPOLL_CREATE, OP_EPOLL_CTL, OP_EPOLL_WAIT};
use virtuos_abi::DOMAIN_FD_LIMIT;

/// Epoll sets the process may have with forwarded members.
pub const MAX_SETS: usize = 32;
/// Forwarded members per set.
pub const MAX_MEMBERS: usize = 2048;
/// Longest sleep on the remote wait between probes of the host instance
/// (sliced waits, without `wake`).
const SLICE: Duration = Duration::from_millis(5);

const EINVAL: i64 = -(libc::EINVAL as i64);
const EBADF: i64 = -(libc::EBADF as i64);
const EFAULT: i64 = -(libc::EFAULT as i64);
const ENOENT: i64 = -(libc::ENOENT as i64);
const EEXIST: i64 = -(libc::EEXIST as i64);
const ENOSPC: i64 = -(libc::ENOSPC as i64);
const EINTR: i64 = -(libc::EINTR as i64);
const EIO: i64 = -(libc::EIO as i64);

const ONESHOT: u32 = libc::EPOLLONESHOT as u32;

/// One forwarded member of a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub fd: i32,
    /// The domain's number of the descriptor (for EPOLL_CTL_DEL at close).
    pub remote: u32,
    pub gen: u32,
    pub events: u32,
    pub data: u64,
    /// False once a one-shot member reported (until EPOLL_CTL_MOD).
    pub armed: bool,
}

const NO_MEMBER: Member = Member {
    fd: -1,
    remote: 0,
    gen: 0,
    events: 0,
    data: 0,
    armed: false,
};

/// The key the domain's instance reports for a member.
pub fn key(fd: i32, gen: u32) -> u64 {
    (gen as u64) << 32 | fd as u32 as u64
}

/// One epoll descriptor of the program.
pub struct Set<const M: usize> {
    /// The host epoll descriptor; -1 = free slot.
    pub epfd: i32,
    /// The domain's epoll descriptor; -1 = not created yet.
    pub remote: i32,
    /// The domain `remote` lives in (0: none yet). A set's forwarded
    /// members are sockets of that one domain.
    pub domain: u8,
    /// `local` is exact (we saw the set created), else unknown.
    pub local_known: bool,
    /// Local members added (not decremented by local closes).
    pub local: u32,
    /// May be shared with another process (a fork happened since).
    pub shared: bool,
    next_gen: u32,
    len: usize,
    armed: usize,
    members: [Member; M],
}

impl<const M: usize> Set<M> {
    const fn new() -> Self {
        Set {
            epfd: -1,
            remote: -1,
            domain: 0,
            local_known: false,
            local: 0,
            shared: false,
            next_gen: 1,
            len: 0,
            armed: 0,
            members: [NO_MEMBER; M],
        }
    }

    fn reset(&mut self, epfd: i32, local_known: bool) {
        self.epfd = epfd;
        self.remote = -1;
        self.domain = 0;
        self.local_known = local_known;
        self.local = 0;
        self.shared = false;
        self.len = 0;
        self.armed = 0;
    }

    fn position(&self, fd: i32) -> Option<usize> {
        self.members[..self.len].iter().position(|m| m.fd == fd)
    }

    /// Forwarded members.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Members that can still report (not disarmed one-shots).
    pub fn armed(&self) -> usize {
        self.armed
    }

    /// Whether local members may exist (then waits are sliced).
    pub fn local_maybe(&self) -> bool {
        !self.local_known || self.local > 0
    }

    pub fn member(&self, fd: i32) -> Option<Member> {
        self.position(fd).map(|i| self.members[i])
    }

    /// EPOLL_CTL_ADD bookkeeping: the key to register, EEXIST, ENOSPC.
    pub fn add(&mut self, fd: i32, remote: u32, events: u32, data: u64) -> Result<u64, i64> {
        if self.position(fd).is_some() {
            return Err(EEXIST);
        }
        if self.len == M {
            return Err(ENOSPC);
        }
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        self.members[self.len] = Member {
            fd,
            remote,
            gen,
            events,
            data,
            armed: true,
        };
        self.len += 1;
        self.armed += 1;
        Ok(key(fd, gen))
    }

    /// The key of member `fd` (for EPOLL_CTL_MOD), ENOENT.
    pub fn key_of(&self, fd: i32) -> Result<u64, i64> {
        self.member(fd).map(|m| key(m.fd, m.gen)).ok_or(ENOENT)
    }

    /// EPOLL_CTL_MOD bookkeeping (after the domain accepted it): re-arms.
    pub fn modify(&mut self, fd: i32, events: u32, data: u64) -> Result<(), i64> {
        let i = self.position(fd).ok_or(ENOENT)?;
        let m = &mut self.members[i];
        m.events = events;
        m.data = data;
        if !m.armed {
            m.armed = true;
            self.armed += 1;
        }
        Ok(())
    }

    /// EPOLL_CTL_DEL bookkeeping, or a close: the member removed.
    pub fn remove(&mut self, fd: i32) -> Result<Member, i64> {
        let i = self.position(fd).ok_or(ENOENT)?;
        let m = self.members[i];
        self.len -= 1;
        self.members[i] = self.members[self.len];
        self.members[self.len] = NO_MEMBER;
        if m.armed {
            self.armed -= 1;
        }
        Ok(m)
    }

    /// Undo an `add` whose registration the domain refused.
    pub fn remove_key(&mut self, k: u64) {
        if let Some(m) = self.member(k as u32 as i32) {
            if key(m.fd, m.gen) == k {
                let _ = self.remove(m.fd);
            }
        }
    }

    /// An event the domain reported with `k`: the program's data, or None
    /// for a member that is gone (or was replaced). A one-shot member is
    /// disarmed.
    pub fn deliver(&mut self, k: u64) -> Option<u64> {
        let i = self.position(k as u32 as i32)?;
        let m = &mut self.members[i];
        if key(m.fd, m.gen) != k {
            return None;
        }
        if m.events & ONESHOT != 0 && m.armed {
            m.armed = false;
            self.armed -= 1;
        }
        Some(m.data)
    }
}

/// Every set of the process.
pub struct Table<const S: usize, const M: usize> {
    sets: [Set<M>; S],
    used: usize,
}

impl<const S: usize, const M: usize> Default for Table<S, M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const S: usize, const M: usize> Table<S, M> {
    pub const fn new() -> Self {
        Table {
            sets: [const { Set::new() }; S],
            used: 0,
        }
    }

    /// Sets in use.
    pub fn used(&self) -> usize {
        self.used
    }

    pub fn find(&self, epfd: i32) -> Option<usize> {
        if epfd < 0 || self.used == 0 {
            return None;
        }
        self.sets.iter().position(|s| s.epfd == epfd)
    }

    pub fn set(&mut self, i: usize) -> &mut Set<M> {
        &mut self.sets[i]
    }

    pub fn get(&self, epfd: i32) -> Option<&Set<M>> {
        self.find(epfd).map(|i| &self.sets[i])
    }

    pub fn get_mut(&mut self, epfd: i32) -> Option<&mut Set<M>> {
        self.find(epfd).map(|i| &mut self.sets[i])
    }

    /// A new set for `epfd` (replacing a stale one of that number: its
    /// remote descriptor is returned in the second field, -1 if none).
    /// None when the table is full.
    pub fn open(&mut self, epfd: i32, local_known: bool) -> Option<(usize, Remote)> {
        let stale = self.close(epfd);
        let i = self.sets.iter().position(|s| s.epfd < 0)?;
        self.sets[i].reset(epfd, local_known);
        self.used += 1;
        Some((i, stale))
    }

    /// Forget set `epfd`; its remote descriptor (to close), -1 if none.
    pub fn close(&mut self, epfd: i32) -> Remote {
        let Some(i) = self.find(epfd) else {
            return (-1, 0);
        };
        let remote = (self.sets[i].remote, self.sets[i].domain);
        self.sets[i].reset(-1, false);
        self.used -= 1;
        remote
    }

    /// Forwarded `fd` is being closed: remove it from every set. Returns
    /// into `dels` the (remote epfd, remote fd) registrations to delete in
    /// the domain (sets not shared with another process); their number.
    pub fn forget_fd(&mut self, fd: i32, dels: &mut [(i32, u32)]) -> usize {
        let mut n = 0;
        if self.used == 0 {
            return 0;
        }
        for s in self.sets.iter_mut().filter(|s| s.epfd >= 0) {
            if let Ok(m) = s.remove(fd) {
                if !s.shared && s.remote >= 0 && n < dels.len() {
                    dels[n] = (s.remote, m.remote);
                    n += 1;
                }
            }
        }
        n
    }

    /// A fork is about to happen: every set may be shared from now on.
    pub fn mark_shared(&mut self) {
        for s in self.sets.iter_mut() {
            s.shared = true;
        }
    }

    /// The forked child got no shadow of `domain`: that domain's instances
    /// are not reachable any more; forget their forwarded members.
    pub fn drop_remote(&mut self, domain: u8) {
        for s in self
            .sets
            .iter_mut()
            .filter(|s| s.epfd >= 0 && s.domain == domain)
        {
            s.remote = -1;
            s.domain = 0;
            s.len = 0;
            s.armed = 0;
        }
    }

    /// Epoll descriptors in `[first, last]` (close_range), into `out`.
    pub fn in_range(&self, first: u64, last: u64, out: &mut [i32; S]) -> usize {
        let mut n = 0;
        for s in self.sets.iter() {
            if s.epfd >= 0 && (s.epfd as u64) >= first && (s.epfd as u64) <= last {
                out[n] = s.epfd;
                n += 1;
            }
        }
        n
    }
}

/// A domain's epoll descriptor and the domain: (-1, _) for none.
pub type Remote = (i32, u8);

static TABLE: SpinLock<Table<MAX_SETS, MAX_MEMBERS>> = SpinLock::new(Table::new());
/// Mirror of `TABLE.used()`, read without the lock.
static USED: AtomicUsize = AtomicUsize::new(0);

fn with_table<R>(f: impl FnOnce(&mut Table<MAX_SETS, MAX_MEMBERS>) -> R) -> R {
    let mut t = TABLE.lock();
    let r = f(&mut t);
    USED.store(t.used(), Ordering::Release);
    r
}

fn remote_close((rfd, domain): Remote) {
    if rfd >= 0 {
        let _ = caller::simple_call(domain, libc::SYS_close as u16, [rfd as u64, 0, 0, 0, 0, 0]);
    }
}

// ------------------------------------------------------------ hooks

/// `epoll_create` / `epoll_create1`: natively, then a set that knows it has
/// no local member yet.
pub fn create(nr: u64, args: [u64; 6]) -> Action {
    let r = host::reissue(nr, args);
    if r >= 0 {
        let stale = with_table(|t| t.open(r as i32, true).map_or((-1, 0), |(_, s)| s));
        remote_close(stale);
    }
    Action::Done(r)
}

/// A local descriptor is being closed (close, close_range): if it is one
/// of our sets, forget it and close its domain instance.
pub fn on_close_local(fd: u64) {
    if USED.load(Ordering::Acquire) == 0 || fd > i32::MAX as u64 {
        return;
    }
    let rfd = with_table(|t| t.close(fd as i32));
    remote_close(rfd);
}

/// Local descriptors `[first, last]` are being closed.
pub fn on_close_range(first: u64, last: u64) {
    if USED.load(Ordering::Acquire) == 0 {
        return;
    }
    let mut fds = [0i32; MAX_SETS];
    let n = with_table(|t| t.in_range(first, last, &mut fds));
    for &fd in &fds[..n] {
        on_close_local(fd as u64);
    }
}

/// Forwarded `fd` (entry `e`) is being closed: out of every set.
pub fn on_close_forwarded(fd: u64, e: Entry) {
    if USED.load(Ordering::Acquire) == 0 || !e.is_socket() || fd > i32::MAX as u64 {
        return;
    }
    let mut dels = [(0i32, 0u32); MAX_SETS];
    let n = with_table(|t| t.forget_fd(fd as i32, &mut dels));
    if n == 0 {
        return;
    }
    if let Ok(mut call) = Call::begin(e.home()) {
        for &(rep, rfd) in &dels[..n] {
            let del = libc::EPOLL_CTL_DEL as u64;
            let _ = call.result(OP_EPOLL_CTL, [rep as u64, del, rfd as u64, 0, 0, 0], false);
        }
    }
}

/// Before a fork: sets may be shared with the child from now on.
pub fn before_fork() {
    if USED.load(Ordering::Acquire) > 0 {
        with_table(|t| t.mark_shared());
    }
}

/// In the forked child (single-threaded); `has_shadow(domain)`: whether
/// the child inherits a fork of our shadow in that domain.
pub fn after_fork_child(has_shadow: impl Fn(u8) -> bool) {
    TABLE.force_unlock();
    if USED.load(Ordering::Acquire) > 0 {
        for d in domain::DOMAINS {
            if !has_shadow(d) {
                with_table(|t| t.drop_remote(d));
            }
        }
    }
}

// ------------------------------------------------------------ epoll_ctl

fn is_epoll(fd: u64) -> Result<(), i64> {
    let mut path = [0u8; 40];
    let mut l = 0;
    for b in b"/proc/self/fd/" {
        path[l] = *b;
        l += 1;
    }
    let mut digits = [0u8; 20];
    let (mut n, mut v) = (0, fd as u32);
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while n > 0 {
        n -= 1;
        path[l] = digits[n];
        l += 1;
    }
    let mut buf = [0u8; 64];
    let r = host::reissue(
        libc::SYS_readlinkat as u64,
        [
            libc::AT_FDCWD as i64 as u64,
            path.as_ptr() as u64,
            buf.as_mut_ptr() as u64,
            buf.len() as u64,
            0,
            0,
        ],
    );
    if r < 0 {
        // No /proc (a chroot): an open descriptor is taken for an epoll
        // (the domain's instance is ours anyway).
        return if host::fcntl(fd as i32, libc::F_GETFD, 0) < 0 {
            Err(EBADF)
        } else {
            Ok(())
        };
    }
    if &buf[..r as usize] == b"anon_inode:[eventpoll]" {
        Ok(())
    } else {
        Err(EINVAL)
    }
}

/// A storage descriptor as an epoll member: EPERM, as for a regular file
/// or directory; EBADF for an `O_PATH` one (the kernel does not let it
/// name a file for I/O at all).
fn storage_member_errno(e: fds::Entry) -> i64 {
    let fl = super::caller::simple_call(
        e,
        libc::SYS_fcntl as u16,
        [e.remote as u64, libc::F_GETFL as u64, 0, 0, 0, 0],
    );
    if fl >= 0 && fl as i32 & libc::O_PATH != 0 {
        -(libc::EBADF as i64)
    } else {
        -(libc::EPERM as i64)
    }
}

/// epoll_ctl: forwarded members go to the domain's instance.
pub fn ctl(args: [u64; 6]) -> Action {
    let (epfd, op, fd, evp) = (args[0], args[1] as i32, args[2], args[3]);
    if fds::count() > 0 && fds::is_forwarded(epfd) {
        return Action::Done(EINVAL);
    }
    match fds::peek(fd) {
        Some(e) if !e.is_socket() => Action::Done(storage_member_errno(e)),
        Some(e) => Action::Done(ctl_remote(epfd as u32 as i32, op, fd as u32 as i32, e, evp)),
        None => {
            if USED.load(Ordering::Acquire) == 0 || epfd > i32::MAX as u64 {
                return Action::Local;
            }
            let known = with_table(|t| t.get(epfd as i32).is_some_and(|s| s.local_known));
            if !known {
                return Action::Local;
            }
            let r = host::reissue(libc::SYS_epoll_ctl as u64, args);
            if r == 0 {
                with_table(|t| {
                    if let Some(s) = t.get_mut(epfd as i32) {
                        match op {
                            libc::EPOLL_CTL_ADD => s.local += 1,
                            libc::EPOLL_CTL_DEL => s.local = s.local.saturating_sub(1),
                            _ => {}
                        }
                    }
                });
            }
            Action::Done(r)
        }
    }
}

fn ctl_remote(epfd: i32, op: i32, fd: i32, e: Entry, evp: u64) -> i64 {
    if !matches!(
        op,
        libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD | libc::EPOLL_CTL_DEL
    ) {
        return EINVAL;
    }
    let (events, data) = if op == libc::EPOLL_CTL_DEL {
        (0, 0)
    } else {
        let mut b = [0u8; EVENT_SIZE];
        if evp == 0 || !usermem::read_user(evp, &mut b) {
            return EFAULT;
        }
        wire::get(&b)
    };
    // The set: ours already, or an epoll descriptor we did not see created.
    let known = with_table(|t| t.find(epfd).is_some());
    if !known {
        if let Err(err) = is_epoll(epfd as u64) {
            return err;
        }
        if op != libc::EPOLL_CTL_ADD {
            return ENOENT;
        }
        let (opened, stale) = with_table(|t| match t.open(epfd, false) {
            Some((_, s)) => (true, s),
            None => (false, (-1, 0)),
        });
        remote_close(stale);
        if !opened {
            return ENOSPC;
        }
    }
    // One domain per set: its instance cannot watch another domain's sockets.
    let other = with_table(|t| {
        t.get(epfd)
            .is_some_and(|s| s.remote >= 0 && s.domain != e.home())
    });
    if other {
        return -(libc::EXDEV as i64);
    }
    let mut call = match Call::begin(e.home()) {
        Ok(c) => c,
        Err(e) => return e,
    };
    // The domain's instance, created at the first forwarded member.
    let mut remote = with_table(|t| t.get(epfd).map_or(-1, |s| s.remote));
    if remote < 0 {
        if op != libc::EPOLL_CTL_ADD {
            return ENOENT;
        }
        let r = call.result(OP_EPOLL_CREATE, [0; 6], false);
        if r < 0 {
            return r;
        }
        if r as u64 >= DOMAIN_FD_LIMIT {
            return EIO;
        }
        let (mine, cur) = with_table(|t| match t.get_mut(epfd) {
            Some(s) if s.remote < 0 => {
                s.remote = r as i32;
                s.domain = e.home();
                (true, r as i32)
            }
            Some(s) if s.domain != e.home() => (false, -2),
            Some(s) => (false, s.remote),
            None => (false, -1),
        });
        if !mine {
            let _ = call.result(libc::SYS_close as u16, [r as u64, 0, 0, 0, 0, 0], false);
        }
        if cur == -2 {
            return -(libc::EXDEV as i64);
        }
        if cur < 0 {
            return EBADF;
        }
        remote = cur;
    }
    let rfd = e.remote as u64;
    let ctl = |call: &mut Call, k: u64| {
        call.result(
            OP_EPOLL_CTL,
            [remote as u64, op as u64, rfd, events as u64, k, 0],
            false,
        )
    };
    match op {
        libc::EPOLL_CTL_ADD => {
            let k = match with_table(|t| {
                t.get_mut(epfd)
                    .map_or(Err(EBADF), |s| s.add(fd, e.remote, events, data))
            }) {
                Ok(k) => k,
                Err(err) => return err,
            };
            let r = ctl(&mut call, k);
            if r < 0 {
                with_table(|t| {
                    if let Some(s) = t.get_mut(epfd) {
                        s.remove_key(k);
                    }
                });
            }
            r
        }
        libc::EPOLL_CTL_MOD => {
            let k = match with_table(|t| t.get(epfd).map_or(Err(ENOENT), |s| s.key_of(fd))) {
                Ok(k) => k,
                Err(err) => return err,
            };
            let r = ctl(&mut call, k);
            if r == 0 {
                with_table(|t| {
                    if let Some(s) = t.get_mut(epfd) {
                        let _ = s.modify(fd, events, data);
                    }
                });
            }
            r
        }
        _ => {
            if let Err(err) = with_table(|t| t.get_mut(epfd).map_or(Err(ENOENT), |s| s.remove(fd)))
            {
                return err;
            }
            let r = ctl(&mut call, 0);
            // Gone from our table either way; a domain that forgot it
            // already (its file was closed) is no error for the program.
            if r == ENOENT || r == EBADF {
                0
            } else {
                r
            }
        }
    }
}

// ------------------------------------------------------------ epoll_wait

fn read_timeout(nr: u64, args: &[u64; 6]) -> Result<Option<Duration>, i64> {
    if nr as i64 == libc::SYS_epoll_pwait2 {
        let p = args[3];
        if p == 0 {
            return Ok(None);
        }
        let (Some(sec), Some(nsec)) = (usermem::read_u64(p), usermem::read_u64(p + 8)) else {
            return Err(EFAULT);
        };
        if (sec as i64) < 0 || nsec >= 1_000_000_000 {
            return Err(EINVAL);
        }
        Ok(Some(Duration::new(sec.min(u32::MAX as u64), nsec as u32)))
    } else {
        let t = args[3] as i32;
        Ok((t >= 0).then(|| Duration::from_millis(t as u64)))
    }
}

/// Milliseconds left until `deadline` (rounded up), -1 = infinite.
fn left_ms(deadline: Option<Instant>) -> i64 {
    match deadline {
        None => -1,
        Some(t) => {
            let l = t.saturating_duration_since(Instant::now());
            (l.as_micros().div_ceil(1000) as i64).min(i32::MAX as i64)
        }
    }
}

/// Is the host instance ready? (`ppoll` on it: consumes nothing.)
fn host_ready(epfd: i32) -> bool {
    let mut pfd = [0u8; 8];
    pfd[0..4].copy_from_slice(&epfd.to_ne_bytes());
    pfd[4..6].copy_from_slice(&(libc::POLLIN).to_ne_bytes());
    let zero = [0i64, 0i64];
    let r = host::reissue(
        libc::SYS_ppoll as u64,
        [pfd.as_mut_ptr() as u64, 1, zero.as_ptr() as u64, 0, 8, 0],
    );
    r > 0
}

/// Host events into the program's buffer from slot `from` (zero timeout).
fn host_collect(epfd: i32, events: u64, from: usize, maxevents: usize) -> i64 {
    if from >= maxevents {
        return 0;
    }
    host::reissue(
        libc::SYS_epoll_wait as u64,
        [
            epfd as u64,
            events + (from * EVENT_SIZE) as u64,
            (maxevents - from) as u64,
            0,
            0,
            0,
        ],
    )
}

/// The remote answer (`n` events in the chunk) translated into the
/// program's buffer: the number written, or EFAULT.
fn remote_collect(call: &Call, epfd: i32, n: usize, events: u64) -> i64 {
    let Some(chunk) = call.chunk() else {
        return EIO;
    };
    let mut t = TABLE.lock();
    let Some(set) = t.get_mut(epfd) else {
        return 0;
    };
    let mut out = 0usize;
    for j in 0..n {
        let mut b = [0u8; EVENT_SIZE];
        if !chunk.read(j * EVENT_SIZE, &mut b) {
            break;
        }
        let (rev, k) = wire::get(&b);
        let Some(data) = set.deliver(k) else { continue };
        wire::put(&mut b, rev, data);
        if !usermem::write_user(events + (out * EVENT_SIZE) as u64, &b) {
            return EFAULT;
        }
        out += 1;
    }
    out as i64
}

/// Sleep on `word` with the program's mask, or with `mask` (epoll_pwait).
fn sleeper(mask: Option<u64>) -> impl FnMut(&AtomicU32, u32, Duration) -> bool {
    move |word, expected, slice| sleep_with_mask(mask, word, expected, slice)
}

/// epoll_wait, epoll_pwait, epoll_pwait2.
pub fn wait(nr: u64, args: [u64; 6]) -> Action {
    if USED.load(Ordering::Acquire) == 0 || args[0] > i32::MAX as u64 {
        return Action::Local;
    }
    let epfd = args[0] as i32;
    let (armed, local_maybe) = {
        let t = TABLE.lock();
        match t.get(epfd) {
            Some(s) if s.remote >= 0 => (s.armed(), s.local_maybe()),
            _ => (0, true),
        }
    };
    if armed == 0 {
        return Action::Local;
    }
    let (events, maxevents) = (args[1], args[2] as i32);
    if maxevents <= 0 || maxevents as usize > i32::MAX as usize / EVENT_SIZE {
        return Action::Done(EINVAL);
    }
    let maxevents = maxevents as usize;
    let timeout = match read_timeout(nr, &args) {
        Ok(t) => t,
        Err(e) => return Action::Done(e),
    };
    let mask = if nr as i64 != libc::SYS_epoll_wait && args[4] != 0 {
        match usermem::read_u64(args[4]) {
            Some(m) => Some(m),
            None => return Action::Done(EFAULT),
        }
    } else {
        None
    };
    Action::Done(wait_mixed(
        epfd,
        events,
        maxevents,
        timeout,
        mask,
        local_maybe,
    ))
}

fn wait_mixed(
    epfd: i32,
    events: u64,
    maxevents: usize,
    timeout: Option<Duration>,
    mask: Option<u64>,
    local_maybe: bool,
) -> i64 {
    let deadline = timeout.map(|d| Instant::now() + d);
    let cap = maxevents.min(MAX_EVENTS);
    let mut sleep = sleeper(mask);
    let domain = with_table(|t| t.get(epfd).map_or(0, |s| s.domain));
    let mut call = match Call::begin(domain) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let mut idle_rounds = 0u32;
    loop {
        let remote = {
            let t = TABLE.lock();
            match t.get(epfd) {
                Some(s) if s.remote >= 0 && s.armed() > 0 => s.remote,
                _ => -1,
            }
        };
        if remote < 0 {
            // Every forwarded member went away (or disarmed) meanwhile.
            return host_wait_rest(epfd, events, maxevents, deadline, mask);
        }
        let mut local_ready = local_maybe && host_ready(epfd);
        let t_ms = if local_ready { 0 } else { left_ms(deadline) };
        if let Err(e) = call.start(
            OP_EPOLL_WAIT,
            [
                remote as u64,
                cap as u64,
                t_ms as i32 as u32 as u64,
                0,
                0,
                0,
            ],
            true,
        ) {
            return e;
        }
        let mut signalled = false;
        let mut timed_out = false;
        let mut spin = super::state::config().spin;
        let slice = if local_maybe {
            SLICE
        } else {
            Duration::from_millis(100)
        };
        let mut sliced = !local_maybe || !wake::maybe_available();
        if !local_ready && !sliced {
            // One wait for the remote call and the host instance.
            let host = core::iter::once((epfd, libc::POLLIN as u32));
            match wake::wait(&call, host, deadline, mask) {
                // (`wait` asked the domain to stop the call.)
                Some(Woken::Remote | Woken::Gone) => {}
                Some(Woken::Local) => local_ready = true,
                Some(Woken::Signal) => signalled = true,
                Some(Woken::Timeout) => timed_out = true,
                None => sliced = true,
            }
        }
        if !local_ready && sliced {
            loop {
                match call.poll_wait(spin, slice, &mut sleep) {
                    Started::Done => break,
                    Started::Signal => {
                        signalled = true;
                        call.interrupt();
                        break;
                    }
                    Started::Pending => {
                        if !call.serving() {
                            break; // `finish` reports the dead domain
                        }
                        if local_maybe && host_ready(epfd) {
                            local_ready = true;
                            call.interrupt();
                            break;
                        }
                    }
                }
                spin = 0;
            }
        }
        let r = match call.finish() {
            Ok((r, _)) => r,
            Err(e) => return e,
        };
        let mut n = 0i64;
        if r > 0 {
            n = remote_collect(&call, epfd, (r as usize).min(cap), events);
            if n < 0 {
                return n;
            }
        } else if r < 0 && r != EINTR {
            return r;
        }
        if local_ready || (local_maybe && (n as usize) < maxevents) {
            let l = host_collect(epfd, events, n as usize, maxevents);
            if l > 0 {
                n += l;
            } else if l < 0 && n == 0 {
                return l;
            }
        }
        if n > 0 {
            return n;
        }
        if signalled {
            return EINTR;
        }
        if r == EINTR && !local_ready && !timed_out {
            // Interrupted in the domain without our asking: as a signal.
            return EINTR;
        }
        if left_ms(deadline) == 0 {
            return 0;
        }
        if r > 0 {
            // Only events of members that went away meanwhile (a
            // registration kept alive by another process): do not spin.
            idle_rounds += 1;
            if idle_rounds > 4 {
                host::sleep_ms(1);
            }
        }
    }
}

/// The set has no forwarded member left to wait for: wait on the host
/// instance for what is left of the timeout.
fn host_wait_rest(
    epfd: i32,
    events: u64,
    maxevents: usize,
    deadline: Option<Instant>,
    mask: Option<u64>,
) -> i64 {
    let t = left_ms(deadline) as u64;
    let (ev, max) = (events, maxevents as u64);
    match mask {
        // The kernel installs the given mask for the wait.
        Some(m) => host::reissue(
            libc::SYS_epoll_pwait as u64,
            [epfd as u64, ev, max, t, &m as *const u64 as u64, 8],
        ),
        None => {
            let (r, interrupted) = crate::sys::thread::with_program_signals(None, || {
                host::reissue(libc::SYS_epoll_wait as u64, [epfd as u64, ev, max, t, 0, 0])
            });
            if r == 0 && interrupted {
                EINTR
            } else {
                r
            }
        }
    }
}
