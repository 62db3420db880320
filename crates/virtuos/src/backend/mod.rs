//! Service domains: how one is started, its control link, its life cycle.
//!
//! A domain goes through the paper's states: `registered` (known to the
//! daemon) -> `connecting` (started, waiting for `Ready`) -> `connected`
//! (serving) -> `disconnected` (gone: exited, crashed, hung, or stopped).
//! A restart would move it from `disconnected` back to `connecting`
//! (`Domain::start` can be called again).

pub mod hostnet;
pub mod process;

use crate::config::Backend;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::net::sockopt::{set_socket_timeout, Timeout};
use std::io;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use virtuos_abi::control::{self, DomainCommand, DomainReply};

/// How long a domain may take to say `Ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one command may take before the domain counts as hung.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Registered,
    Connecting,
    Connected,
    Disconnected,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Registered => "registered",
            Phase::Connecting => "connecting",
            Phase::Connected => "connected",
            Phase::Disconnected => "disconnected",
        }
    }
}

/// What a domain is and how to start it.
#[derive(Clone, Debug)]
pub struct DomainSpec {
    pub name: String,
    pub backend: Backend,
    /// The domain server binary.
    pub bin: PathBuf,
    /// The storage domain's own tree (`<data>/storage`); None for the
    /// network domain.
    pub data_dir: Option<PathBuf>,
    /// Where clients see the tree (`/storage`).
    pub mount: String,
    /// The network domain's host link; None for the storage domain.
    pub net: Option<crate::network::Subnet>,
}

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("domain {0} is not connected")]
    NotConnected(String),
    /// The control link broke or timed out: the domain is unusable.
    #[error("lost the control link to domain {name}: {why}")]
    Lost { name: String, why: String },
}

struct Running {
    child: Child,
    pidfd: Arc<OwnedFd>,
}

/// One service domain and its control link.
pub struct Domain {
    pub spec: DomainSpec,
    phase: Mutex<Phase>,
    /// The control socket. Held for a whole command round trip, so every
    /// command gets exactly its own reply.
    link: Mutex<Option<OwnedFd>>,
    running: Mutex<Option<Running>>,
    cpus: AtomicU32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Domain {
    pub fn new(spec: DomainSpec) -> Domain {
        Domain {
            spec,
            phase: Mutex::new(Phase::Registered),
            link: Mutex::new(None),
            running: Mutex::new(None),
            cpus: AtomicU32::new(1),
        }
    }

    pub fn phase(&self) -> Phase {
        *lock(&self.phase)
    }

    fn set_phase(&self, p: Phase) -> Phase {
        std::mem::replace(&mut *lock(&self.phase), p)
    }

    /// CPUs the domain reported in `Ready`.
    pub fn cpus(&self) -> u32 {
        self.cpus.load(Ordering::Relaxed)
    }

    pub fn pid(&self) -> Option<u32> {
        lock(&self.running).as_ref().map(|r| r.child.id())
    }

    /// A pidfd of the domain process (readable once it exited).
    pub fn pidfd(&self) -> Option<Arc<OwnedFd>> {
        lock(&self.running).as_ref().map(|r| r.pidfd.clone())
    }

    /// Start the domain and wait for its `Ready`. Must be called from a
    /// thread that lives as long as the daemon (see `sys::domain_child_setup`).
    pub fn start(&self) -> anyhow::Result<()> {
        self.set_phase(Phase::Connecting);
        let result = self.start_inner();
        if result.is_err() {
            self.kill();
            self.set_phase(Phase::Disconnected);
        }
        result
    }

    fn start_inner(&self) -> anyhow::Result<()> {
        let (child, sock) = match self.spec.backend {
            Backend::Process => process::spawn(&self.spec)?,
            Backend::Vm => anyhow::bail!("the vm backend is not implemented yet"),
        };
        let pid = child.id();
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_child(&child),
            rustix::process::PidfdFlags::empty(),
        )?;
        *lock(&self.running) = Some(Running {
            child,
            pidfd: Arc::new(pidfd),
        });
        tracing::info!(domain = %self.spec.name, pid, "domain process started, waiting for Ready");
        set_socket_timeout(&sock, Timeout::Recv, Some(READY_TIMEOUT))?;
        set_socket_timeout(&sock, Timeout::Send, Some(COMMAND_TIMEOUT))?;
        let started = Instant::now();
        match control::recv::<DomainReply>(sock.as_fd()) {
            Ok(Some((DomainReply::Ready { cpus }, _))) => {
                self.cpus.store(cpus.max(1), Ordering::Relaxed);
                tracing::info!(domain = %self.spec.name, cpus, after = ?started.elapsed(), "domain ready");
            }
            Ok(Some((DomainReply::Error { message }, _))) => {
                anyhow::bail!("the domain could not start: {message}")
            }
            Ok(Some((other, _))) => anyhow::bail!("domain sent {other:?} instead of Ready"),
            Ok(None) => anyhow::bail!("domain exited (or closed its control socket) before Ready"),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                anyhow::bail!("domain did not become ready within {READY_TIMEOUT:?}")
            }
            Err(e) => anyhow::bail!("bad Ready from domain: {e}"),
        }
        set_socket_timeout(&sock, Timeout::Recv, Some(COMMAND_TIMEOUT))?;
        *lock(&self.link) = Some(sock);
        self.set_phase(Phase::Connected);
        Ok(())
    }

    /// Send one command and wait for its reply. A broken or timed-out link
    /// leaves the domain disconnected (the caller decides what that means
    /// for clients: see `Daemon::domain_lost`).
    pub fn command(
        &self,
        cmd: &DomainCommand,
        fds: &[BorrowedFd<'_>],
    ) -> Result<DomainReply, DomainError> {
        let mut link = lock(&self.link);
        let Some(sock) = link.as_ref() else {
            return Err(DomainError::NotConnected(self.spec.name.clone()));
        };
        let reply = control::send(sock.as_fd(), cmd, fds).and_then(|()| {
            match control::recv::<DomainReply>(sock.as_fd()) {
                Ok(Some((r, _))) => Ok(r),
                Ok(None) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "domain closed its control socket",
                )),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no reply within {COMMAND_TIMEOUT:?}"),
                )),
                Err(e) => Err(e),
            }
        });
        reply.map_err(|e| {
            *link = None;
            DomainError::Lost {
                name: self.spec.name.clone(),
                why: format!("{e} (command {cmd:?})"),
            }
        })
    }

    /// Mark the domain disconnected and drop the link. Returns the phase
    /// it was in.
    pub fn disconnect(&self) -> Phase {
        *lock(&self.link) = None;
        self.set_phase(Phase::Disconnected)
    }

    /// Reap the domain process if it exited.
    pub fn reap(&self) -> Option<ExitStatus> {
        let mut running = lock(&self.running);
        let status = running.as_mut()?.child.try_wait().ok()??;
        *running = None;
        Some(status)
    }

    /// Kill the domain process (if any) and reap it.
    pub fn kill(&self) {
        if let Some(mut r) = lock(&self.running).take() {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }

    /// Orderly stop: `Shutdown`, then wait up to `grace` for the process to
    /// exit, then kill it.
    pub fn stop(&self, grace: Duration) {
        if self.phase() == Phase::Connected {
            match self.command(&DomainCommand::Shutdown, &[]) {
                Ok(DomainReply::Ok) => {}
                Ok(other) => tracing::warn!(?other, "domain answered Shutdown oddly"),
                Err(e) => tracing::warn!("domain shutdown: {e}"),
            }
        }
        self.disconnect();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if lock(&self.running).is_none() {
                return;
            }
            if let Some(status) = self.reap() {
                tracing::info!(domain = %self.spec.name, %status, "domain stopped");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.pid().is_some() {
            tracing::warn!(domain = %self.spec.name, "domain did not exit in {grace:?}: killing it");
            self.kill();
        }
    }
}
