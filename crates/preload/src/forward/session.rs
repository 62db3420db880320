//! The attachment to the storage domain: registration with the daemon, the
//! mapped request region and state page, fork claims and exec reattach.
//!
//! The session pointer is published once (Release) and never freed while
//! the process can use it; only a forked child (single-threaded) swaps it
//! out and frees the parent's mapping later, when allocation is allowed.

use super::sync::SpinLock;
use super::{caller, cwd, fdtable, log, state};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use rustix::fd::AsFd;
use virtuos_abi::control::{self, ClientRequest, DaemonReply, STORAGE};
use virtuos_abi::region::StatePage;
use virtuos_abi::ClientRegion;

pub struct Session {
    pub region: ClientRegion,
    pub state: StatePage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingClaim {
    pub parent_pid: u32,
    pub token: u64,
}

static SESSION: AtomicPtr<Session> = AtomicPtr::new(core::ptr::null_mut());
/// The parent's session in a forked child: never used, freed at the claim.
static STALE: AtomicPtr<Session> = AtomicPtr::new(core::ptr::null_mut());
/// Serialises registration / claim / reattach.
static LOCK: SpinLock<()> = SpinLock::new(());
/// A fork to claim: parent pid and token, valid while HAS_PENDING. Only
/// written by a single-threaded fork child and under LOCK.
static PENDING_PARENT: AtomicU32 = AtomicU32::new(0);
static PENDING_TOKEN: AtomicU64 = AtomicU64::new(0);
static HAS_PENDING: AtomicBool = AtomicBool::new(false);
/// Forwarded state without a shadow (a fork whose claim failed): EIO.
static ORPHANED: AtomicBool = AtomicBool::new(false);
static REPORTED: AtomicBool = AtomicBool::new(false);
static REPORTED_ORPHAN: AtomicBool = AtomicBool::new(false);
/// Our pid when `before_fork` ran (the child's parent pid).
static FORK_PARENT: AtomicU32 = AtomicU32::new(0);

#[inline]
pub fn current() -> Option<&'static Session> {
    let p = SESSION.load(Ordering::Acquire);
    // SAFETY: a non-null pointer came from `Box::into_raw` in `publish` and
    // stays valid for the life of this process image (see module comment).
    (!p.is_null()).then(|| unsafe { &*p })
}

pub fn pending() -> Option<PendingClaim> {
    if !HAS_PENDING.load(Ordering::Acquire) {
        return None;
    }
    Some(PendingClaim {
        parent_pid: PENDING_PARENT.load(Ordering::Relaxed),
        token: PENDING_TOKEN.load(Ordering::Relaxed),
    })
}

fn set_pending(p: Option<PendingClaim>) {
    HAS_PENDING.store(false, Ordering::Release);
    if let Some(p) = p {
        PENDING_PARENT.store(p.parent_pid, Ordering::Relaxed);
        PENDING_TOKEN.store(p.token, Ordering::Relaxed);
        HAS_PENDING.store(true, Ordering::Release);
    }
}

pub fn is_orphaned() -> bool {
    ORPHANED.load(Ordering::Relaxed)
}

/// The session, registering (or claiming a fork) on first use. May
/// allocate on the slow path (never while libc holds malloc locks: no
/// forwarded call is made from inside malloc).
#[inline]
pub fn get() -> Result<&'static Session, i64> {
    match current() {
        Some(s) => Ok(s),
        None => slow_get(),
    }
}

#[cold]
fn slow_get() -> Result<&'static Session, i64> {
    // Our caller may run in the program's normal context (the exported
    // wrappers): keep its signal handlers out while we hold LOCK.
    let mask = super::host::block_signals();
    let r = slow_get_locked();
    super::host::restore_signals(mask);
    r
}

fn slow_get_locked() -> Result<&'static Session, i64> {
    let _g = LOCK.lock();
    if let Some(s) = current() {
        return Ok(s);
    }
    if ORPHANED.load(Ordering::Relaxed) {
        log::once(
            &REPORTED_ORPHAN,
            format_args!("this process lost its storage domain session (fork claim failed); forwarded calls fail with EIO"),
        );
        return Err(-(libc::EIO as i64));
    }
    let claim = pending();
    let req = match claim {
        Some(p) => ClientRequest::ClaimFork {
            domain: STORAGE.into(),
            parent_pid: p.parent_pid,
            token: p.token,
        },
        None => ClientRequest::Register {
            domain: STORAGE.into(),
        },
    };
    match attach(&req) {
        Ok(s) => {
            set_pending(None);
            let s = publish(s);
            if claim.is_none() {
                // A fresh shadow starts with the domain's umask; a forked
                // one inherited its parent's, which is ours.
                super::generic::sync_umask();
            }
            Ok(s)
        }
        Err(msg) => {
            report(&msg);
            if claim.is_some() {
                set_pending(None);
                if fdtable::count() > 0 || cwd::is_remote() {
                    ORPHANED.store(true, Ordering::Relaxed);
                }
            }
            Err(-(libc::EIO as i64))
        }
    }
}

fn report(msg: &str) {
    log::once(
        &REPORTED,
        format_args!(
            "cannot reach the virtuos daemon at {}: {msg}",
            state::config().socket.as_str()
        ),
    );
}

/// Talk to the daemon and map what it hands out. Allocates.
fn attach(req: &ClientRequest) -> Result<Session, String> {
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
    control::send(sock.as_fd(), req, &[]).map_err(|e| format!("send: {e}"))?;
    let (reply, fds) = control::recv::<DaemonReply>(sock.as_fd())
        .map_err(|e| format!("receive: {e}"))?
        .ok_or_else(|| "the daemon closed the connection".to_string())?;
    match reply {
        DaemonReply::Registered { storage_mount, .. } => {
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
            map_session(&fds[0], &fds[1])
        }
        DaemonReply::Error { message } => Err(format!("the daemon refused: {message}")),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

/// Map a region and a state page and validate them.
pub fn map_session(region: impl AsFd, state_fd: impl AsFd) -> Result<Session, String> {
    let region = ClientRegion::map(region).map_err(|e| format!("mapping the region: {e}"))?;
    region.validate().map_err(|e| e.to_string())?;
    let state =
        StatePage::map(state_fd, false).map_err(|e| format!("mapping the state page: {e}"))?;
    if !state.get().is_valid() {
        return Err("the domain state page is not valid".into());
    }
    Ok(Session { region, state })
}

fn publish(s: Session) -> &'static Session {
    caller::on_new_session(&s.region);
    let p = Box::into_raw(Box::new(s));
    SESSION.store(p, Ordering::Release);
    drop_stale();
    // SAFETY: just leaked above; never freed while this image uses it.
    unsafe { &*p }
}

fn drop_stale() {
    let old = STALE.swap(core::ptr::null_mut(), Ordering::AcqRel);
    if !old.is_null() {
        // SAFETY: `old` came from `Box::into_raw`; it was swapped out of
        // SESSION in a single-threaded forked child, so no reference to it
        // is live (no call was in progress across the fork).
        drop(unsafe { Box::from_raw(old) });
    }
}

/// Test hook / exec path: install an already mapped session.
pub fn install(s: Session) -> &'static Session {
    let _g = LOCK.lock();
    publish(s)
}

/// Claim a pending fork now (the atfork child handler). Allocates.
pub fn claim_pending_now() {
    if current().is_some() || pending().is_none() {
        return;
    }
    let _ = get();
}

/// The new image after exec: attach to the same shadow again (or claim the
/// fork the old image had not claimed yet). Allocates.
pub fn reattach(claim: Option<PendingClaim>) -> bool {
    let _g = LOCK.lock();
    let req = match claim {
        Some(p) => ClientRequest::ClaimFork {
            domain: STORAGE.into(),
            parent_pid: p.parent_pid,
            token: p.token,
        },
        None => ClientRequest::Reattach {
            domain: STORAGE.into(),
        },
    };
    match attach(&req) {
        Ok(s) => {
            publish(s);
            true
        }
        Err(msg) => {
            report(&msg);
            ORPHANED.store(true, Ordering::Relaxed);
            false
        }
    }
}

// ---- fork ----

/// Parent, before the fork (malloc locks may be held: allocation-free).
/// Returns the token of the prepared shadow.
pub fn before_fork() -> Option<u64> {
    current()?;
    if is_orphaned() {
        return None;
    }
    FORK_PARENT.store(super::host::getpid(), Ordering::Relaxed);
    if fdtable::count() == 0 && !cwd::is_remote() {
        // Nothing to inherit: the child registers afresh if it ever needs to.
        return None;
    }
    let r = caller::simple_call(virtuos_abi::ops::OP_FORK_PREPARE, [0; 6]);
    (r >= 0).then_some(r as u64)
}

pub fn after_fork_parent(token: Option<u64>, result: i64) {
    if let (Some(t), true) = (token, result < 0) {
        let _ = caller::simple_call(virtuos_abi::ops::OP_FORK_ABORT, [t, 0, 0, 0, 0, 0]);
    }
}

/// Child, right after the fork (allocation-free, single-threaded).
pub fn after_fork_child(token: Option<u64>) {
    LOCK.force_unlock();
    cwd::force_unlock();
    let old = SESSION.swap(core::ptr::null_mut(), Ordering::AcqRel);
    if !old.is_null() {
        let older = STALE.swap(old, Ordering::AcqRel);
        // A stale session of our parent's parent (never claimed): leak it
        // rather than free memory here.
        let _ = older;
    }
    caller::reset_after_fork();
    match token {
        Some(t) => set_pending(Some(PendingClaim {
            parent_pid: FORK_PARENT.load(Ordering::Relaxed),
            token: t,
        })),
        None => {
            set_pending(None);
            if fdtable::count() > 0 || cwd::is_remote() {
                ORPHANED.store(true, Ordering::Relaxed);
            }
        }
    }
}

pub fn has_forwarded_state() -> bool {
    current().is_some() || fdtable::count() > 0 || cwd::is_remote() || pending().is_some()
}
