//! `virtuosd`: the trusted daemon. It starts the storage domain, registers
//! client processes (handing each its request region and a read-only state
//! page), watches clients and the domain, and answers `virtuos status`.
//!
//! Threads: the main thread starts the domain and then watches pidfds
//! (`watch`); one thread accepts connections and one serves each connection
//! (`server`); one waits for SIGTERM/SIGINT/SIGHUP.

mod clients;
mod regions;
mod requests;
mod server;
mod watch;

use crate::backend::{Domain, DomainError, DomainSpec, Phase};
use crate::config::Settings;
use crate::info::DaemonInfo;
use crate::paths::{self, Env};
use anyhow::{Context, Result};
use clients::Clients;
use rustix::fd::OwnedFd;
use rustix::fs::{FlockOperation, Mode, OFlags};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use virtuos_abi::control::{DomainCommand, DomainReply, STORAGE};

/// How long the domain gets to exit after `Shutdown`.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub struct Daemon {
    pub settings: Settings,
    pub domain: Domain,
    clients: Mutex<Clients>,
    /// Serialises Register/Reattach/ClaimFork (check + domain call + insert).
    register_lock: Mutex<()>,
    next_id: AtomicU64,
    /// eventfd: pokes the watcher when the client table changed.
    wake: OwnedFd,
    stopping: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Daemon {
    fn clients(&self) -> MutexGuard<'_, Clients> {
        lock(&self.clients)
    }

    fn poke_watcher(&self) {
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }

    /// Remove a client (it exited): tell the domain, drop its memory.
    fn remove_client(&self, pid: u32) {
        let Some(client) = self.clients().remove(pid) else {
            return;
        };
        tracing::debug!(pid, client_id = client.id, "client exited");
        if self.domain.phase() == Phase::Connected {
            let cmd = DomainCommand::RemoveClient {
                client_id: client.id,
            };
            match self.domain.command(&cmd, &[]) {
                Ok(DomainReply::Ok) => {}
                Ok(other) => tracing::warn!(pid, ?other, "domain answered RemoveClient"),
                Err(e) => self.domain_lost(&e),
            }
        }
    }

    /// The control link broke: the domain is unusable from now on.
    fn domain_lost(&self, e: &DomainError) {
        tracing::error!("{e}");
        self.domain.kill();
        self.domain_gone("control link lost");
    }

    /// The domain is gone: every client's calls must fail, not hang.
    fn domain_gone(&self, why: &str) {
        let was = self.domain.disconnect();
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let clients = self.clients();
        for c in clients.iter() {
            c.regions.mark_failed();
        }
        if was != Phase::Disconnected {
            tracing::error!(
                domain = %self.domain.spec.name,
                clients = clients.len(),
                "domain disconnected ({why}); marked every client's state page FAILED"
            );
        }
    }

    /// Stop the domain, remove our files, exit the process.
    fn shutdown(&self, why: &str) -> ! {
        self.stopping.store(true, Ordering::SeqCst);
        tracing::info!("shutting down ({why})");
        self.domain.stop(STOP_GRACE);
        let rt = &self.settings.runtime;
        for f in [rt.socket(), rt.info_file(), rt.pid_file()] {
            let _ = std::fs::remove_file(f);
        }
        tracing::info!("virtuosd stopped");
        std::process::exit(0);
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(paths::vars::LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Take the pid file lock (one daemon per runtime dir) and write our pid.
fn lock_pid_file(settings: &Settings) -> Result<OwnedFd> {
    let path = settings.runtime.pid_file();
    let fd = rustix::fs::open(
        &path,
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .with_context(|| format!("cannot open {}", path.display()))?;
    if rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_err() {
        let other = std::fs::read_to_string(&path).unwrap_or_default();
        anyhow::bail!(
            "another virtuosd (pid {}) already runs in {}",
            other.trim(),
            settings.runtime.dir.display()
        );
    }
    rustix::fs::ftruncate(&fd, 0)?;
    let mut f = std::fs::File::from(fd.try_clone()?);
    writeln!(f, "{}", std::process::id())?;
    Ok(fd)
}

/// Run the daemon in the foreground until `Shutdown` or a termination signal.
pub fn run(settings: Settings) -> Result<()> {
    init_logging();
    // Started by `virtuos up`: leave the caller's session (fails harmlessly
    // when we already lead a process group, e.g. in a foreground shell job).
    let _ = rustix::process::setsid();
    crate::sys::block_termination_signals().context("cannot block signals")?;
    let rt = settings.runtime.clone();
    std::fs::create_dir_all(&rt.dir)
        .with_context(|| format!("cannot create runtime dir {}", rt.dir.display()))?;
    let _pid_lock = lock_pid_file(&settings)?;
    let env = Env::current();
    let bin = paths::domain_bin(&env).context("cannot locate the virtuos-domain binary")?;
    let spec = DomainSpec {
        name: STORAGE.to_string(),
        backend: settings.backend,
        bin,
        data_dir: settings.storage_dir(),
        mount: settings.storage_mount.clone(),
    };
    tracing::info!(
        pid = std::process::id(),
        runtime = %rt.dir.display(),
        data = %spec.data_dir.display(),
        mount = %spec.mount,
        backend = %settings.backend,
        "virtuosd starting"
    );
    let listener = server::listen(&rt.socket())?;
    DaemonInfo {
        pid: std::process::id(),
        runtime_dir: rt.dir.clone(),
        data_dir: settings.data_dir.clone(),
        storage_mount: settings.storage_mount.clone(),
        backend: settings.backend.to_string(),
    }
    .write(&rt.info_file())
    .context("cannot write the daemon info file")?;

    let wake = rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )?;
    let daemon = Arc::new(Daemon {
        settings,
        domain: Domain::new(spec),
        clients: Mutex::new(Clients::default()),
        register_lock: Mutex::new(()),
        next_id: AtomicU64::new(1),
        wake,
        stopping: AtomicBool::new(false),
    });

    {
        let d = daemon.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let sig = crate::sys::wait_termination_signal();
                d.shutdown(&format!("signal {sig}"));
            })?;
    }
    {
        let d = daemon.clone();
        std::thread::Builder::new()
            .name("accept".into())
            .spawn(move || server::accept_loop(d, listener))?;
    }

    // The main thread starts the domain (it must outlive the domain: the
    // domain's parent-death signal follows it) and then watches processes.
    if let Err(e) = daemon.domain.start() {
        tracing::error!("cannot start the {} domain: {e:#}", STORAGE);
        let rt = &daemon.settings.runtime;
        for f in [rt.socket(), rt.info_file(), rt.pid_file()] {
            let _ = std::fs::remove_file(f);
        }
        return Err(e.context(format!("cannot start the {STORAGE} domain")));
    }
    watch::run(&daemon);
}
