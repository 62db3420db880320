//! The attachments to the service domains (one session per domain:
//! storage, network): registration with the daemon, the mapped request
//! region and state page, fork claims and exec reattach, all per domain.
//!
//! Each session pointer is published once (Release) and never freed while
//! the process can use it; only a forked child (single-threaded) swaps it
//! out and frees the parent's mapping later, when allocation is allowed.
//!
//! Recovery: a session whose state page says FAILED (the daemon saw its
//! domain die or hang) or that read garbage from its domain (`broken`) is
//! retired at the next call: the domain's descriptor epoch ends (its
//! descriptors fail from now on, `domain` epochs), the session is left mapped
//! (other threads may still be returning from calls on it: a leak of one
//! region per failure) and the process registers again, with the
//! restarted domain.

use super::domain::{self, DOMAINS, DOMAIN_NETWORK, DOMAIN_STORAGE, NUM_DOMAINS};
use super::fds::table;
use super::sync::SpinLock;
use super::{cwd, log, pools, state};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use rustix::fd::AsFd;
use virtuos_abi::control::{self, ClientRequest, DaemonReply, NETWORK, STORAGE};
use virtuos_abi::region::StatePage;
use virtuos_abi::ClientRegion;

pub struct Session {
    pub region: ClientRegion,
    pub state: StatePage,
    /// We read garbage from the domain through this session.
    pub broken: AtomicBool,
    /// The descriptor epoch of this session (`domain::epoch` when it was
    /// published).
    pub epoch: u16,
}

impl Session {
    /// Serving, as far as this process can tell.
    #[inline]
    pub fn usable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed) && self.state.get().serving()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingClaim {
    pub parent_pid: u32,
    pub token: u64,
}

/// Per-domain attachment state.
struct Slot {
    session: AtomicPtr<Session>,
    /// The parent's session in a forked child: never used, freed at the claim.
    stale: AtomicPtr<Session>,
    /// A fork to claim: parent pid and token, valid while `has_pending`.
    /// Only written by a single-threaded fork child and under LOCK.
    pending_parent: AtomicU32,
    pending_token: AtomicU64,
    has_pending: AtomicBool,
    /// Forwarded state without a shadow (a fork whose claim failed): EIO.
    orphaned: AtomicBool,
    reported: AtomicBool,
    reported_orphan: AtomicBool,
    /// The daemon runs no such domain (`virtuos up --no-network`): its
    /// calls stay on the host (sockets), nothing to report.
    absent: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            session: AtomicPtr::new(core::ptr::null_mut()),
            stale: AtomicPtr::new(core::ptr::null_mut()),
            pending_parent: AtomicU32::new(0),
            pending_token: AtomicU64::new(0),
            has_pending: AtomicBool::new(false),
            orphaned: AtomicBool::new(false),
            reported: AtomicBool::new(false),
            reported_orphan: AtomicBool::new(false),
            absent: AtomicBool::new(false),
        }
    }
}

static SLOTS: [Slot; NUM_DOMAINS] = [const { Slot::new() }; NUM_DOMAINS];
/// Serialises registration / claim / reattach.
static LOCK: SpinLock<()> = SpinLock::new(());

fn slot(domain: u8) -> &'static Slot {
    // Unknown ids never reach here (the table only holds known ones); fall
    // back to the storage slot rather than panic.
    &SLOTS[domain::slot_of(domain).unwrap_or(0)]
}

/// The daemon's name of a domain.
pub fn name(domain: u8) -> &'static str {
    match domain {
        DOMAIN_NETWORK => NETWORK,
        _ => STORAGE,
    }
}

/// Whether this process has forwarded state in `domain` (descriptors, or
/// for storage a cwd in the domain): what a fork must carry over.
pub fn has_state_in(domain: u8) -> bool {
    table::count_in(domain) > 0 || (domain == DOMAIN_STORAGE && cwd::is_remote())
}

#[inline]
pub fn current(domain: u8) -> Option<&'static Session> {
    let p = slot(domain).session.load(Ordering::Acquire);
    // SAFETY: a non-null pointer came from `Box::into_raw` in `publish` and
    // stays valid for the life of this process image (see module comment).
    (!p.is_null()).then(|| unsafe { &*p })
}

pub fn pending(domain: u8) -> Option<PendingClaim> {
    let s = slot(domain);
    if !s.has_pending.load(Ordering::Acquire) {
        return None;
    }
    Some(PendingClaim {
        parent_pid: s.pending_parent.load(Ordering::Relaxed),
        token: s.pending_token.load(Ordering::Relaxed),
    })
}

fn set_pending(domain: u8, p: Option<PendingClaim>) {
    let s = slot(domain);
    s.has_pending.store(false, Ordering::Release);
    if let Some(p) = p {
        s.pending_parent.store(p.parent_pid, Ordering::Relaxed);
        s.pending_token.store(p.token, Ordering::Relaxed);
        s.has_pending.store(true, Ordering::Release);
    }
}

/// The daemon said it runs no such domain (only ever for network: a daemon
/// without storage is refused at `up`).
pub fn is_absent(domain: u8) -> bool {
    slot(domain).absent.load(Ordering::Relaxed)
}

pub fn is_orphaned(domain: u8) -> bool {
    slot(domain).orphaned.load(Ordering::Relaxed)
}

/// Mark `domain` as lost: its descriptors (of the current epoch) fail
/// with EIO; later calls register afresh.
pub fn set_orphaned(domain: u8) {
    slot(domain).orphaned.store(true, Ordering::Relaxed);
    domain::end_epoch(domain);
}

/// Whether the storage session this process uses has failed (its state
/// page says so, or we read garbage through it): its descriptors are about
/// to go stale (`fds::get`, `fds::reopen`). False while there is none.
#[inline]
pub fn storage_failed() -> bool {
    current(DOMAIN_STORAGE).is_some_and(|s| !s.usable())
}

/// The session of `domain`, registering (or claiming a fork) on first use.
/// May allocate on the slow path (never while libc holds malloc locks: no
/// forwarded call is made from inside malloc).
///
/// `prime` runs right after a fresh storage shadow is registered (not a
/// claimed fork, which inherited its parent's state), still under the
/// registration lock, to give it the process state it does not inherit
/// (the umask: `caller::sync_umask`). It makes a call through this very
/// session, which is a layer above this one: the caller hands it down
/// rather than this module calling up.
#[inline]
pub fn get(domain: u8, prime: fn()) -> Result<&'static Session, i64> {
    match current(domain) {
        Some(s) if s.usable() => Ok(s),
        _ => slow_get(domain, prime),
    }
}

#[cold]
fn slow_get(domain: u8, prime: fn()) -> Result<&'static Session, i64> {
    // Our caller may run in the program's normal context (the exported
    // wrappers): keep its signal handlers out while we hold LOCK.
    let mask = super::host::block_signals();
    let r = slow_get_locked(domain, prime);
    super::host::restore_signals(mask);
    r
}

fn slow_get_locked(domain: u8, prime: fn()) -> Result<&'static Session, i64> {
    let _g = LOCK.lock();
    let sl = slot(domain);
    if let Some(s) = current(domain) {
        if s.usable() {
            return Ok(s);
        }
        retire(domain);
    }
    if sl.orphaned.load(Ordering::Relaxed) {
        log::once(
            &sl.reported_orphan,
            format_args!(
                "this process lost its {} domain session (fork claim or exec reattach failed); \
                 its descriptors fail with EIO",
                name(domain)
            ),
        );
    }
    let claim = pending(domain);
    let req = match claim {
        Some(p) => ClientRequest::ClaimFork {
            domain: name(domain).into(),
            parent_pid: p.parent_pid,
            token: p.token,
        },
        None => ClientRequest::Register {
            domain: name(domain).into(),
        },
    };
    match attach(&req) {
        Ok(s) => {
            set_pending(domain, None);
            let s = publish(domain, s);
            if claim.is_none() && domain == DOMAIN_STORAGE {
                // A fresh shadow starts with the domain's umask; a forked
                // one inherited its parent's, which is ours.
                prime();
            }
            Ok(s)
        }
        Err(msg) => {
            if claim.is_none()
                && domain == DOMAIN_NETWORK
                && msg.contains("unknown domain")
                && !has_state_in(domain)
            {
                // `virtuos up --no-network`: sockets stay on the host.
                sl.absent.store(true, Ordering::Relaxed);
                return Err(-(libc::EIO as i64));
            }
            report(domain, &msg);
            if claim.is_some() {
                set_pending(domain, None);
                if has_state_in(domain) {
                    sl.orphaned.store(true, Ordering::Relaxed);
                }
            }
            Err(-(libc::EIO as i64))
        }
    }
}

/// A call on a descriptor made in `epoch`: true if that epoch is over (its
/// session failed). Retires a failed session on the spot, so the caller
/// fails at once instead of waiting for a new session (a VM domain takes
/// seconds to come back) only to learn the descriptor is stale.
pub fn epoch_over(domain: u8, epoch: u16) -> bool {
    if let Some(s) = current(domain) {
        if s.epoch == epoch && !s.usable() {
            let mask = super::host::block_signals();
            {
                let _g = LOCK.lock();
                if current(domain).is_some_and(|s| !s.usable()) {
                    retire(domain);
                }
            }
            super::host::restore_signals(mask);
        }
    }
    epoch != domain::epoch(domain)
}

/// The current session of `domain` failed: end its descriptors' epoch and
/// drop it from the slot (leaked, see the module comment). Under LOCK.
fn retire(domain: u8) {
    let sl = slot(domain);
    let old = sl.session.swap(core::ptr::null_mut(), Ordering::AcqRel);
    if old.is_null() {
        return;
    }
    domain::end_epoch(domain);
    log::emit(format_args!(
        "the {} domain failed; its descriptors in this process fail from now on, \
         new calls go to the restarted domain",
        name(domain)
    ));
}

/// Flag `domain` to the daemon: we read garbage from its queue (`what`).
/// The session is not used again. May allocate (like registration).
pub fn report_garbage(domain: u8, sess: &Session, what: &str) {
    if sess.broken.swap(true, Ordering::AcqRel) {
        return;
    }
    log::emit(format_args!(
        "the {} domain wrote garbage into this process's queue ({what}); \
         the call fails with EIO and the daemon is told",
        name(domain)
    ));
    let mask = super::host::block_signals();
    let req = ClientRequest::ReportFault {
        domain: name(domain).into(),
        reason: what.into(),
    };
    let _ = talk(&req);
    super::host::restore_signals(mask);
}

fn report(domain: u8, msg: &str) {
    log::once(
        &slot(domain).reported,
        format_args!(
            "cannot reach the virtuos daemon at {} ({} domain): {msg}",
            state::config().socket.as_str(),
            name(domain)
        ),
    );
}

/// A connection to the daemon for `sync_credentials`, opened before a
/// call that may change this thread's credentials: afterwards the thread
/// may no longer be allowed to reach the daemon's socket (a private
/// runtime directory). `None` when this process has no shadow yet.
pub fn credentials_channel() -> Option<rustix::fd::OwnedFd> {
    if has_shadow() {
        connect_daemon().ok()
    } else {
        None
    }
}

/// Registered with some domain, and not a forked child that has yet to
/// claim its shadow (the claim reads the credentials anyway).
fn has_shadow() -> bool {
    DOMAINS
        .iter()
        .any(|&d| current(d).is_some() && pending(d).is_none())
}

/// This thread's credentials changed (a set*id, setgroups, setfs*id or
/// capset call returned): have the daemon read them from the kernel and
/// give them to our shadows, before the program goes on. `channel` is
/// the connection opened before the change (with the old credentials);
/// without one, connect now (with the new ones). Never allocates: glibc
/// makes every thread run set*id from a signal handler (SIGSETXID), which
/// may interrupt malloc.
pub fn sync_credentials(channel: Option<rustix::fd::OwnedFd>) {
    let _g = LOCK.lock();
    if !has_shadow() {
        return;
    }
    let sent = match channel {
        Some(sock) => sync_credentials_on(sock),
        None => connect_daemon().and_then(sync_credentials_on),
    };
    if let Err((step, errno)) = sent {
        log::emit(format_args!(
            "cannot give the daemon this thread's new credentials ({step}: {errno}); \
             forwarded calls may run with the old ones"
        ));
    }
}

/// Where talking to the daemon failed, and how.
type Failure = (&'static str, rustix::io::Errno);

/// A connection to the daemon's socket, without allocating.
fn connect_daemon() -> Result<rustix::fd::OwnedFd, Failure> {
    use rustix::net::{
        connect, socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType,
    };
    let sock = socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| ("socket", e))?;
    let path = state::config().socket.as_str();
    let addr = SocketAddrUnix::new(path).map_err(|e| ("socket path", e))?;
    connect(&sock, &addr).map_err(|e| ("connect", e))?;
    Ok(sock)
}

fn sync_credentials_on(sock: rustix::fd::OwnedFd) -> Result<(), Failure> {
    use core::fmt::Write;
    use rustix::net::{recv, send, RecvFlags, SendFlags};
    let mut req = log::Msg::new();
    let _ = write!(
        req,
        "{{\"SyncCredentials\":{{\"tid\":{}}}}}",
        super::host::gettid()
    );
    send(&sock, req.as_bytes(), SendFlags::NOSIGNAL).map_err(|e| ("send", e))?;
    let mut buf = [0u8; 512];
    let (n, _) = recv(&sock, &mut buf, RecvFlags::empty()).map_err(|e| ("receive", e))?;
    let reply = &buf[..n.min(buf.len())];
    if reply != b"\"Ok\"" {
        log::emit(format_args!(
            "the daemon refused this thread's new credentials: {}",
            core::str::from_utf8(reply).unwrap_or("(not UTF-8)")
        ));
        return Err(("daemon", rustix::io::Errno::PERM));
    }
    Ok(())
}

/// One request to the daemon and its reply. Allocates.
fn talk(req: &ClientRequest) -> Result<(DaemonReply, Vec<rustix::fd::OwnedFd>), String> {
    use rustix::net::{
        connect, socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType,
    };
    let cfg = state::config();
    let sock = socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    let addr =
        SocketAddrUnix::new(cfg.socket.as_str()).map_err(|e| format!("bad socket path: {e}"))?;
    connect(&sock, &addr).map_err(|e| e.to_string())?;
    if let Err(e) = control::send(sock.as_fd(), req, &[]) {
        // A daemon that refused the connection (too many of this user's)
        // said why before closing it.
        return match control::recv::<DaemonReply>(sock.as_fd()) {
            Ok(Some((DaemonReply::Error { message }, _))) => {
                Err(format!("the daemon refused: {message}"))
            }
            _ => Err(format!("send: {e}")),
        };
    }
    control::recv::<DaemonReply>(sock.as_fd())
        .map_err(|e| format!("receive: {e}"))?
        .ok_or_else(|| "the daemon closed the connection".to_string())
}

/// Talk to the daemon and map what it hands out. Allocates.
fn attach(req: &ClientRequest) -> Result<Session, String> {
    let (reply, fds) = talk(req)?;
    match reply {
        DaemonReply::Registered {
            storage_mount,
            region_offset,
            state_offset,
            ..
        } => {
            if fds.len() != 2 {
                return Err(format!(
                    "the daemon sent {} descriptors, expected 2",
                    fds.len()
                ));
            }
            if storage_mount.as_bytes() != state::mount() {
                log::emit(format_args!(
                    "note: the daemon's storage mount is {storage_mount}, this process uses {}",
                    state::config().mount.as_str()
                ));
            }
            map_session_at(&fds[0], region_offset, &fds[1], state_offset)
        }
        DaemonReply::Error { message } => Err(format!("the daemon refused: {message}")),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

/// Map a region and a state page and validate them.
pub fn map_session(region: impl AsFd, state_fd: impl AsFd) -> Result<Session, String> {
    map_session_at(region, 0, state_fd, 0)
}

/// Map a region and a state page that start at the given offsets of their
/// descriptors (a VM domain's region slot holds both) and validate them.
pub fn map_session_at(
    region: impl AsFd,
    region_offset: u64,
    state_fd: impl AsFd,
    state_offset: u64,
) -> Result<Session, String> {
    let region = ClientRegion::map_at(region, region_offset)
        .map_err(|e| format!("mapping the region: {e}"))?;
    region.validate().map_err(|e| e.to_string())?;
    let state = StatePage::map_at(state_fd, state_offset, false)
        .map_err(|e| format!("mapping the state page: {e}"))?;
    if !state.get().is_valid() {
        return Err("the domain state page is not valid".into());
    }
    Ok(Session {
        region,
        state,
        broken: AtomicBool::new(false),
        epoch: 0,
    })
}

fn publish(domain: u8, mut s: Session) -> &'static Session {
    s.epoch = domain::epoch(domain);
    pools::on_new_session(domain, &s.region);
    let p = Box::into_raw(Box::new(s));
    slot(domain).session.store(p, Ordering::Release);
    drop_stale(domain);
    // SAFETY: just leaked above; never freed while this image uses it.
    unsafe { &*p }
}

fn drop_stale(domain: u8) {
    let old = slot(domain)
        .stale
        .swap(core::ptr::null_mut(), Ordering::AcqRel);
    if !old.is_null() {
        // SAFETY: `old` came from `Box::into_raw`; it was swapped out of the
        // session slot in a single-threaded forked child, so no reference
        // to it is live (no call was in progress across the fork).
        drop(unsafe { Box::from_raw(old) });
    }
}

/// Test hook / exec path: install an already mapped session for `domain`.
pub fn install(domain: u8, s: Session) -> &'static Session {
    let _g = LOCK.lock();
    publish(domain, s)
}

/// The new image after exec: attach to the same shadow of `domain` again
/// (or claim the fork the old image had not claimed yet). Allocates.
pub fn reattach(domain: u8, claim: Option<PendingClaim>) -> bool {
    let _g = LOCK.lock();
    let req = match claim {
        Some(p) => ClientRequest::ClaimFork {
            domain: name(domain).into(),
            parent_pid: p.parent_pid,
            token: p.token,
        },
        None => ClientRequest::Reattach {
            domain: name(domain).into(),
        },
    };
    match attach(&req) {
        Ok(s) => {
            publish(domain, s);
            true
        }
        Err(msg) => {
            report(domain, &msg);
            slot(domain).orphaned.store(true, Ordering::Relaxed);
            false
        }
    }
}

// ---- fork ----

/// The storage domain holds the image this process runs (ETXTBSY; set by
/// the new image from `OP_EXEC_DONE`'s answer, `exec_image`; a forked child
/// inherits it with the image): a fork then prepares the child's shadow,
/// which takes it over, even when the process has no descriptor there.
static RUNS_IMAGE: AtomicBool = AtomicBool::new(false);

/// Whether the storage domain holds the image this process runs.
pub fn runs_image() -> bool {
    RUNS_IMAGE.load(Ordering::Acquire)
}

pub fn set_runs_image(yes: bool) {
    RUNS_IMAGE.store(yes, Ordering::Release);
}

/// Whether the storage domain held our image; it holds none from now on.
pub fn take_runs_image() -> bool {
    RUNS_IMAGE.swap(false, Ordering::AcqRel)
}

/// Tokens of the shadows prepared for a fork, per domain slot.
pub type ForkTokens = [Option<u64>; NUM_DOMAINS];

/// Child, right after the fork (allocation-free, single-threaded): the
/// parent's sessions become stale, the prepared shadows (`parent_pid`'s,
/// `tokens`) are to be claimed. (`fork::after_fork_child` also resets the
/// pools of the parent's sessions.)
pub fn after_fork_child(tokens: ForkTokens, parent_pid: u32) {
    LOCK.force_unlock();
    cwd::force_unlock();
    for s in &SLOTS {
        let old = s.session.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !old.is_null() {
            let older = s.stale.swap(old, Ordering::AcqRel);
            // A stale session of our parent's parent (never claimed): leak
            // it rather than free memory here.
            let _ = older;
        }
    }
    for (i, d) in DOMAINS.into_iter().enumerate() {
        match tokens[i] {
            Some(t) => set_pending(
                d,
                Some(PendingClaim {
                    parent_pid,
                    token: t,
                }),
            ),
            None => {
                set_pending(d, None);
                if has_state_in(d) {
                    set_orphaned(d);
                }
            }
        }
    }
}

pub fn has_forwarded_state() -> bool {
    table::count() > 0
        || cwd::is_remote()
        || DOMAINS
            .into_iter()
            .any(|d| current(d).is_some() || pending(d).is_some())
}
