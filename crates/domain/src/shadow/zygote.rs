//! The shadow's zygote: the single-threaded process that forks child
//! shadows (`OP_FORK_PREPARE`).
//!
//! Forking a multithreaded process and starting threads in the child is not
//! safe: a lock another thread held at the fork (Rust's thread-start lock,
//! the allocator's, a `tracing` registry's) stays held in the child forever,
//! and the child's first new thread can deadlock. So a shadow never forks
//! once its threads run. Instead, while it is still single threaded (before
//! its first worker), it makes a *zygote*: a raw
//! `clone(CLONE_FILES | CLONE_FS)` without `CLONE_VM`. The zygote has its own
//! copy of the (single-threaded) memory, but **shares the shadow's
//! descriptor table, cwd, root and umask** with it. It blocks on a socket
//! and, per request, forks with glibc's `fork`: the child gets a *copy* of
//! the shared descriptor table and `fs_struct` as they are at that instant,
//! i.e. the shadow's descriptors (same open file descriptions, so shared
//! offsets), cwd and umask at the moment of the client's fork, and a copy of
//! a memory image in which no other thread ever existed.
//!
//! Request (shadow worker -> zygote, one control message `ForkRequest`):
//! the number of the child's end of a socketpair the worker just created
//! (the table is shared, so the number is enough) and the credentials the
//! worker acts with. Reply (16 bytes): `seq u64 | result i64`, the child's
//! pid or -errno. One request at a time (the shadow's `fork_lock`).
//!
//! Credentials: between requests the zygote is root (with the shadow's
//! permitted capabilities and `SECBIT_NO_SETUID_FIXUP`, as its workers).
//! For a request it takes the requesting worker's credentials and the
//! client's RLIMIT_NPROC as soft limit, forks, and in the parent goes back
//! to root and re-arms its parent-death signal (a change of credentials
//! clears it). The child keeps the client's credentials, as a forked
//! client does, and the domain's soft limit (its workers are not held to
//! the client's).
//!
//! Lifetime: the zygote asks for SIGKILL when the thread that made it (the
//! shadow's main thread, which runs housekeeping until the process ends)
//! exits. It cannot see the shadow's end of the socket close (the table is
//! shared), so it relies on that signal; the shadow watches the zygote's
//! pidfd while it waits for a reply.
//!
//! The zygote's memory is a copy of the shadow before its regions were
//! mapped: it holds only what a child needs to become a shadow (`Inherit`).
//! The child closes every descriptor in the shadow's own range except the
//! ones it keeps, makes its own zygote (still single threaded), waits for
//! `MainMsg::Attach` and only then maps its regions and starts threads.

use super::{map_regions, with_high_fds, FdLimits, Identity, Shadow, Waker};
use crate::proto::{MainMsg, ShadowMsg};
use crate::role::Role;
use crate::sys::{self, Forked};
use anyhow::{anyhow, Context, Result};
use rustix::event::{poll, PollFd, PollFlags};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use rustix::net::{socketpair, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, Ordering};
use virtuos_abi::control::{self, Credentials};
use virtuos_abi::slot::STATE_IN_SLOT;

/// What a child shadow needs from the shadow it was forked for: numbers
/// of descriptors in the shadow's own range (the same in the child's copy
/// of the table) and plain values.
#[derive(Clone, Copy, Debug)]
pub struct Inherit {
    /// For log lines only: the client the zygote's shadow serves.
    pub client_id: u64,
    pub cpus: u32,
    pub role: Role,
    pub limits: FdLimits,
    /// `/proc` (`O_PATH`).
    pub procfd: RawFd,
    /// VM backend: the bell port.
    pub bell_port: Option<RawFd>,
    /// The client's RLIMIT_NPROC (`AddClient { nproc }`).
    pub nproc: Option<u64>,
    /// The capabilities a shadow may switch within; `None` when the domain
    /// runs without privileges (the shadow took the client's credentials
    /// once and keeps them).
    pub permitted: Option<u64>,
}

/// One fork request.
#[derive(Debug, Serialize, Deserialize)]
struct ForkRequest {
    seq: u32,
    child_sock: RawFd,
    /// The requesting worker's credentials (`None`: keep the zygote's).
    creds: Option<Credentials>,
    /// Pins of the program image the client runs (shadow range), which
    /// the child keeps and registers as its own (`images.rs`).
    images: Vec<RawFd>,
}

/// The shadow's handle on its zygote.
pub struct Zygote {
    /// The shadow's end of the request socket.
    sock: OwnedFd,
    /// The zygote's end: also in the shared table; kept open here (closing
    /// it would close it for the zygote).
    _peer: OwnedFd,
    pid: u32,
    pidfd: OwnedFd,
    seq: AtomicU32,
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

/// A socketpair in the shadow's own descriptor range (a forked child's
/// control socket: one end for the main process, one for the child).
pub fn control_pair(limits: FdLimits) -> std::io::Result<(OwnedFd, OwnedFd)> {
    high_socketpair(limits)
}

impl Zygote {
    /// Make the calling shadow's zygote. The caller must be single
    /// threaded and must not have mapped its regions yet.
    pub fn start(inherit: Inherit) -> Result<Zygote> {
        let (sock, peer) =
            high_socketpair(inherit.limits).context("cannot create the zygote's socket")?;
        let me = std::process::id();
        match sys::clone_sharing_files().context("cannot start the zygote")? {
            Forked::Child => {
                if !sys::die_with_parent(me) {
                    sys::exit_now(0);
                }
                // `sock` and `peer` are never dropped here: `serve`
                // does not return.
                serve(inherit, me, &peer)
            }
            Forked::Parent(pid) => {
                let pidfd = rustix::process::Pid::from_raw(pid as i32)
                    .ok_or_else(|| anyhow!("clone returned pid {pid}"))
                    .and_then(|p| {
                        rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
                            .context("pidfd_open(zygote)")
                    })?;
                Ok(Zygote {
                    sock,
                    _peer: peer,
                    pid,
                    pidfd,
                    seq: AtomicU32::new(0),
                })
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Fork a child shadow whose control socket is `child_sock` (a
    /// descriptor of the shadow's range, which the caller keeps open until
    /// this returns). Returns the child's pid. Serialised by the caller.
    pub fn fork(
        &self,
        child_sock: BorrowedFd<'_>,
        creds: Option<Credentials>,
        images: Vec<RawFd>,
    ) -> std::io::Result<u32> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let req = ForkRequest {
            seq,
            child_sock: child_sock.as_raw_fd(),
            creds,
            images,
        };
        loop {
            match control::send(self.sock.as_fd(), &req, &[]) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
        loop {
            let mut fds = [
                PollFd::new(&self.sock, PollFlags::IN),
                PollFd::new(&self.pidfd, PollFlags::IN),
            ];
            match poll(&mut fds, None) {
                Ok(_) => {}
                // The interrupter's signal (the client got one): the fork
                // is under way, wait for it.
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let (sock_ready, zygote_gone) =
                (!fds[0].revents().is_empty(), !fds[1].revents().is_empty());
            if sock_ready {
                let mut rep = [0u8; 16];
                match rustix::net::recv(&self.sock, &mut rep, RecvFlags::DONTWAIT) {
                    Ok((16, _)) => {}
                    Ok(_) => return Err(std::io::Error::from_raw_os_error(libc::EIO)),
                    Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
                    Err(e) => return Err(e.into()),
                }
                let got = u64::from_le_bytes(rep[..8].try_into().unwrap_or_default());
                if got != seq as u64 {
                    // A late answer to an earlier request (cannot happen
                    // while requests are serialised; skip it anyway).
                    continue;
                }
                let r = i64::from_le_bytes(rep[8..].try_into().unwrap_or_default());
                return match u32::try_from(r) {
                    Ok(pid) if pid > 0 => Ok(pid),
                    _ if r < 0 => Err(std::io::Error::from_raw_os_error(-r as i32)),
                    _ => Err(std::io::Error::from_raw_os_error(libc::EIO)),
                };
            }
            if zygote_gone {
                return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
            }
        }
    }
}

/// The zygote's loop. Never returns; never drops anything it inherited
/// (the descriptor table is the shadow's).
fn serve(inherit: Inherit, shadow_pid: u32, sock: &OwnedFd) -> ! {
    loop {
        let req = match control::recv::<ForkRequest>(sock.as_fd()) {
            Ok(Some((req, _))) => req,
            Ok(None) => sys::exit_now(0),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            // Or a malformed request (the shadow is ours: cannot happen);
            // the shadow sees the zygote gone and fails the fork.
            Err(_) => sys::exit_now(1),
        };
        let base = inherit.limits.base_fd();
        let result: i64 = if req.child_sock < base || req.images.iter().any(|&fd| fd < base) {
            -(libc::EBADF as i64)
        } else {
            fork_as(inherit, shadow_pid, &req)
        };
        let mut rep = [0u8; 16];
        rep[..8].copy_from_slice(&(req.seq as u64).to_le_bytes());
        rep[8..].copy_from_slice(&result.to_le_bytes());
        loop {
            match rustix::net::send(sock, &rep, SendFlags::NOSIGNAL) {
                Err(rustix::io::Errno::INTR) => continue,
                Ok(_) => break,
                Err(_) => sys::exit_now(1),
            }
        }
    }
}

/// Fork a child shadow with the requester's credentials and the client's
/// process limit; the child's pid or -errno. Only the child does not return.
fn fork_as(inherit: Inherit, shadow_pid: u32, req: &ForkRequest) -> i64 {
    let neg = |e: std::io::Error| -(e.raw_os_error().unwrap_or(libc::EIO) as i64);
    let switch = inherit.permitted.zip(req.creds.as_ref());
    if let Some((permitted, creds)) = switch {
        if let Err(e) = sys::become_thread(creds, permitted) {
            tracing::warn!(
                client = inherit.client_id,
                "zygote: cannot take credentials: {e}"
            );
            back_to_root(permitted, shadow_pid);
            return neg(e);
        }
    }
    let saved = lower_nproc(inherit.nproc);
    let forked = sys::fork();
    restore_nproc(saved);
    if let Ok(Forked::Child) = forked {
        child(inherit, req.child_sock, &req.images)
    }
    if let Some((permitted, _)) = switch {
        back_to_root(permitted, shadow_pid);
    }
    match forked {
        Ok(Forked::Parent(pid)) => pid as i64,
        Ok(Forked::Child) => unreachable!("the child does not return"),
        Err(e) => neg(e),
    }
}

/// The zygote's credentials between requests: root. A change of
/// credentials clears the parent-death signal: ask for it again (and go
/// if the shadow is already gone).
fn back_to_root(permitted: u64, shadow_pid: u32) {
    let root = Credentials {
        cap_effective: permitted,
        ..Credentials::of_user(0, 0, Vec::new())
    };
    if sys::become_thread(&root, permitted).is_err() || !sys::die_with_parent(shadow_pid) {
        sys::exit_now(1);
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

/// The forked child shadow (single threaded: a copy of the zygote). Never
/// returns.
fn child(inherit: Inherit, sock: RawFd, images: &[RawFd]) -> ! {
    let mut keep = vec![sock, inherit.procfd, crate::log::fd()];
    keep.extend(inherit.bell_port);
    keep.extend_from_slice(images);
    if let Err(e) = sys::close_from_except(inherit.limits.base_fd(), &keep) {
        tracing::error!(
            client = inherit.client_id,
            "forked shadow: cannot close the parent's descriptors: {e}"
        );
        sys::exit_now(1);
    }
    // Created for this child by the parent shadow's worker; after the
    // close above nothing else in this process refers to these.
    let (sock, procfd) = match (
        sys::take_inherited_fd(sock),
        sys::take_inherited_fd(inherit.procfd),
    ) {
        (Ok(s), Ok(p)) => (s, p),
        _ => {
            tracing::error!(
                client = inherit.client_id,
                "forked shadow: lost descriptors"
            );
            sys::exit_now(1)
        }
    };
    // The pins of the client's image (numbers the parent shadow sent,
    // checked to be in the shadow's range, kept open above).
    let pins: Vec<OwnedFd> = images
        .iter()
        .filter_map(|&fd| sys::take_inherited_fd(fd).ok())
        .collect();
    match setup(inherit, &sock) {
        Ok(Some(a)) => {
            let shadow = Shadow::new(
                a.client_id,
                a.region,
                a.state,
                (inherit.cpus, inherit.role),
                (sock, procfd),
                (inherit.limits, inherit.nproc),
                (a.waker, a.identity, a.zygote),
            );
            shadow.start_corrupted(a.corrupt);
            // Before `Ready`: the client's claim returns with the image
            // registered.
            shadow.adopt_images(pins);
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

/// What a forked child learns at `Attach`.
struct Attached {
    client_id: u64,
    region: virtuos_abi::ClientRegion,
    state: virtuos_abi::region::StatePage,
    waker: Waker,
    identity: Identity,
    zygote: Zygote,
    corrupt: bool,
}

/// Make our own zygote, wait for `Attach`, map the regions. None: the
/// fork was aborted (end of file on the socket).
fn setup(inherit: Inherit, sock: &OwnedFd) -> Result<Option<Attached>> {
    // Before anything else (in parallel with the client's claim), and
    // before the regions are mapped: the new zygote must not hold them.
    let zygote = Zygote::start(inherit).context("cannot start the forked shadow's zygote")?;
    let Some((msg, fds)) =
        control::recv::<MainMsg>(sock.as_fd()).context("bad message from the domain")?
    else {
        return Ok(None);
    };
    let MainMsg::Attach {
        client_id,
        slot,
        corrupt,
    } = msg
    else {
        anyhow::bail!("expected Attach, got {msg:?}");
    };
    let [region_fd, state_fd, creds_fd]: [OwnedFd; 3] = fds
        .try_into()
        .map_err(|v: Vec<OwnedFd>| anyhow!("Attach carries {} descriptors, not 3", v.len()))?;
    // The zygote forked with the client's credentials; the privileges to
    // switch (saved uid 0, the permitted set) came along.
    let identity = Identity {
        creds: crate::creds::Reader::map(&creds_fd)?,
        permitted: inherit.permitted,
    };
    let waker = match (inherit.bell_port, slot) {
        (None, None) => Waker::Futex,
        (Some(port), Some(slot)) => Waker::bell(
            sys::take_inherited_fd(port).context("the inherited bell port")?,
            slot,
        ),
        _ => anyhow::bail!("Attach and the parent shadow disagree about slots"),
    };
    let state_offset = if slot.is_some() {
        STATE_IN_SLOT as u64
    } else {
        0
    };
    let (region, state) = map_regions(region_fd, state_fd, state_offset)?;
    state.get().init(inherit.cpus);
    Ok(Some(Attached {
        client_id,
        region,
        state,
        waker,
        identity,
        zygote,
        corrupt,
    }))
}
