//! `OP_FORK_PREPARE`: fork the whole shadow before the client forks.
//!
//! The worker that took the request creates a socketpair (both ends in the
//! shadow's own descriptor range) and forks. The parent passes one end to the main
//! process (`ShadowMsg::ForkPending { token }` with token = the child's pid)
//! and completes the request with the token. The child (only the forking
//! thread survives a fork) drops the parent's control socket, keeps the
//! other end as its own control socket and blocks on it until the main
//! process sends `MainMsg::Attach` with the new client's region, state
//! page and credentials table (`AttachForked`); end of file there means the fork was aborted or the
//! parent client removed, and the child exits. It keeps the parent's
//! descriptor table and cwd as they were at the fork.
//!
//! RLIMIT_NPROC: the shadow runs as the client's uid, so its fork counts
//! the uid's processes like the client's own fork does, but it inherited
//! the domain's limit. The fork runs with the soft limit lowered to the
//! client's (`AddClient { nproc }`) and fails with EAGAIN where the
//! client's fork would, which the client's library returns from its fork:
//! a flood of pending shadows cannot outgrow the client's limit. The soft
//! limit is restored right after (in the parent and in the child), so the
//! shadows' worker threads are not held to it.
//!
//! Child setup before its first new thread: dup/close of descriptors, one
//! `recv` (allocates: glibc makes malloc usable after fork), two mappings,
//! one `send`. It never returns into the parent's code and never drops the
//! parent's state (which still names the parent's descriptors).

use super::{dup_high, map_regions, with_high_fds, FdLimits, Identity, Shadow, Waker};
use crate::proto::{MainMsg, ShadowMsg};
use crate::sys::{self, Forked};
use anyhow::{anyhow, Context, Result};
use rustix::fd::{AsFd, OwnedFd};
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use virtuos_abi::control;
use virtuos_abi::slot::STATE_IN_SLOT;

fn neg(e: &std::io::Error) -> i64 {
    -(e.raw_os_error().unwrap_or(libc::EIO) as i64)
}

fn high_socketpair(limits: FdLimits) -> std::io::Result<(OwnedFd, OwnedFd)> {
    with_high_fds(|| {
        let (a, b) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        let a2 = rustix::io::fcntl_dupfd_cloexec(&a, limits.base_fd())?;
        let b2 = rustix::io::fcntl_dupfd_cloexec(&b, limits.base_fd())?;
        Ok((a2, b2))
    })
}

pub(super) fn prepare(shadow: &Shadow) -> i64 {
    let guard = shadow.fork_lock.lock().unwrap_or_else(|e| e.into_inner());
    let (ours, theirs) = match high_socketpair(shadow.limits) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(client = shadow.client_id, "fork: socketpair: {e}");
            return neg(&e);
        }
    };
    let saved = lower_nproc(shadow.nproc);
    let forked = sys::fork();
    restore_nproc(saved);
    match forked {
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
            tracing::info!(
                client = shadow.client_id,
                nproc = shadow.nproc,
                "fork refused: the client's RLIMIT_NPROC is reached"
            );
            neg(&e)
        }
        Err(e) => {
            tracing::warn!(client = shadow.client_id, "fork: {e}");
            neg(&e)
        }
        Ok(Forked::Child) => {
            drop(ours);
            // The parent's lock (our copy) is never used again here.
            std::mem::forget(guard);
            child(shadow, theirs)
        }
        Ok(Forked::Parent(pid)) => {
            drop(theirs);
            let msg = ShadowMsg::ForkPending { token: pid as u64 };
            if let Err(e) = shadow.tell_main(&msg, &[ours.as_fd()]) {
                tracing::warn!(
                    client = shadow.client_id,
                    "fork: cannot reach the domain: {e}"
                );
                if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
                return neg(&e);
            }
            drop(guard);
            pid as i64
        }
    }
}

/// Lower the RLIMIT_NPROC soft limit to `nproc` (if lower); the previous
/// limit, to give to `restore_nproc`.
fn lower_nproc(nproc: Option<u64>) -> Option<Rlimit> {
    let want = nproc?;
    let old = getrlimit(Resource::Nproc);
    if old.current.is_some_and(|c| c <= want) {
        return None;
    }
    let lowered = Rlimit {
        current: Some(want),
        maximum: old.maximum,
    };
    setrlimit(Resource::Nproc, lowered).ok()?;
    Some(old)
}

fn restore_nproc(saved: Option<Rlimit>) {
    if let Some(old) = saved {
        let _ = setrlimit(Resource::Nproc, old);
    }
}

/// The forked child shadow. Never returns.
fn child(parent: &Shadow, sock: OwnedFd) -> ! {
    match child_setup(parent, &sock) {
        Ok(Some((client_id, region, state, procfd, waker, identity))) => {
            let shadow = Shadow::new(
                client_id,
                region,
                state,
                (parent.cpus, parent.role),
                (sock, procfd),
                (parent.limits, parent.nproc),
                (waker, identity),
            );
            shadow.announce_and_serve()
        }
        Ok(None) => sys::exit_now(0),
        Err(e) => {
            let msg = ShadowMsg::SetupFailed {
                message: format!("{e:#}"),
            };
            let _ = control::send(sock.as_fd(), &msg, &[]);
            sys::exit_now(1)
        }
    }
}

type Attached = (
    u64,
    virtuos_abi::ClientRegion,
    virtuos_abi::region::StatePage,
    OwnedFd,
    Waker,
    Identity,
);

fn child_setup(parent: &Shadow, sock: &OwnedFd) -> Result<Option<Attached>> {
    let procfd = dup_high(parent.procfd.as_fd(), parent.limits)
        .context("cannot duplicate the /proc dirfd")?;
    let port = match parent.waker.port() {
        Some(p) => {
            Some(dup_high(p.as_fd(), parent.limits).context("cannot duplicate the bell port")?)
        }
        None => None,
    };
    sys::close_inherited(&parent.procfd);
    sys::close_inherited(&parent.control);
    if let Some(p) = parent.waker.port() {
        sys::close_inherited(p);
    }
    let Some((msg, fds)) =
        control::recv::<MainMsg>(sock.as_fd()).context("bad message from the domain")?
    else {
        return Ok(None);
    };
    let MainMsg::Attach { client_id, slot } = msg else {
        anyhow::bail!("expected Attach, got {msg:?}");
    };
    let [region_fd, state_fd, creds_fd]: [OwnedFd; 3] = fds
        .try_into()
        .map_err(|v: Vec<OwnedFd>| anyhow!("Attach carries {} descriptors, not 3", v.len()))?;
    let waker = match (port, slot) {
        (None, None) => Waker::Futex,
        (Some(port), Some(slot)) => Waker::bell(port, slot),
        _ => anyhow::bail!("Attach and the parent shadow disagree about slots"),
    };
    let state_offset = if slot.is_some() {
        STATE_IN_SLOT as u64
    } else {
        0
    };
    let (region, state) = map_regions(region_fd, state_fd, state_offset)?;
    // The forking worker had its client's credentials: the table's
    // privileges come from the process (saved uid 0), as in the parent.
    let identity = Identity {
        creds: crate::creds::Reader::map(&creds_fd)?,
        permitted: parent.permitted,
    };
    state.get().init(parent.cpus);
    Ok(Some((client_id, region, state, procfd, waker, identity)))
}
