//! `virtuosd`: the trusted daemon. It starts the storage and the network
//! domain, registers client processes with either (handing each its request
//! region and a read-only state page per domain), watches clients and the
//! domains, proxies port forwards into the network domain, and answers
//! `virtuos status`.
//!
//! Threads: the main thread starts the domains and then watches pidfds
//! (`watch`); one thread waits on the control socket and every client
//! connection (epoll), and one short-lived thread handles each request
//! (`server`, with per-uid limits); one waits for SIGTERM/SIGINT/SIGHUP;
//! one listens per port forward, two relay each forwarded connection
//! (`forward`).

mod answer;
mod clients;
mod credentials;
mod forward;
mod inject;
mod recovery;
mod regions;
mod requests;
mod server;
mod watch;

use crate::backend::vm::VmSpec;
use crate::backend::{hostnet, Domain, DomainError, DomainSpec, Phase};
use crate::config::{Backend, Settings};
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
use virtuos_abi::control::{DomainCommand, DomainReply, NETWORK, STORAGE};

/// How long the domain gets to exit after `Shutdown`.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// One service domain and the clients registered with it. A process may be
/// registered with several domains (one region pair per domain).
pub struct Served {
    pub domain: Domain,
    clients: Mutex<Clients>,
    /// Serialises Register/Reattach/ClaimFork (check + domain call + insert).
    register_lock: Mutex<()>,
    /// Why the domain does not serve (start failure, exit), for `status`.
    error: Mutex<Option<String>>,
    /// Failures, restarts, heartbeat watch.
    recovery: recovery::Recovery,
    /// One probe (after a client's fault report) at a time.
    probe_lock: Mutex<()>,
    /// Clients that exited lately (pid, client id, when): a child may claim
    /// its forked shadow after its parent is gone (`requests::register`).
    exited: Mutex<std::collections::VecDeque<(u32, u64, std::time::Instant)>>,
}

/// How long (and how many) exited clients are remembered for late claims
/// of their forks (the domain keeps their pending shadows as long).
const EXITED_TTL: Duration = Duration::from_secs(30);
const EXITED_MAX: usize = 4096;

impl Served {
    fn new(spec: DomainSpec) -> Served {
        Served {
            domain: Domain::new(spec),
            clients: Mutex::new(Clients::default()),
            register_lock: Mutex::new(()),
            error: Mutex::new(None),
            recovery: recovery::Recovery::new(),
            probe_lock: Mutex::new(()),
            exited: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// Remember that client `id` (process `pid`) exited.
    fn note_exit(&self, pid: u32, id: u64) {
        let mut q = lock(&self.exited);
        while q.len() >= EXITED_MAX || q.front().is_some_and(|(_, _, t)| t.elapsed() > EXITED_TTL) {
            q.pop_front();
        }
        q.push_back((pid, id, std::time::Instant::now()));
    }

    /// The client id of process `pid` if it exited within `EXITED_TTL`.
    fn exited_client(&self, pid: u32) -> Option<u64> {
        lock(&self.exited)
            .iter()
            .rev()
            .find(|(p, _, t)| *p == pid && t.elapsed() <= EXITED_TTL)
            .map(|&(_, id, _)| id)
    }

    fn clients(&self) -> MutexGuard<'_, Clients> {
        lock(&self.clients)
    }

    fn set_error(&self, why: impl Into<String>) {
        *lock(&self.error) = Some(why.into());
    }

    pub fn error(&self) -> Option<String> {
        lock(&self.error).clone()
    }

    /// The host side of the network domain's link, if this is one.
    fn host_if(&self) -> Option<String> {
        self.domain.spec.net.map(|n| n.host_if())
    }
}

pub struct Daemon {
    pub settings: Settings,
    /// `storage` first, then `network` (unless disabled).
    pub domains: Vec<Served>,
    next_id: AtomicU64,
    /// eventfd: pokes the watcher when a client table changed.
    wake: OwnedFd,
    stopping: AtomicBool,
    /// Port forwards that listen (`127.0.0.1:H -> A:D`), for `status`.
    forwards: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Daemon {
    fn served(&self, i: usize) -> &Served {
        &self.domains[i]
    }

    /// Index of the domain called `name`.
    fn find(&self, name: &str) -> Option<usize> {
        self.domains.iter().position(|d| d.domain.spec.name == name)
    }

    fn poke_watcher(&self) {
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }

    /// Remove a client of domain `i` (it exited): tell the domain, drop its
    /// memory.
    fn remove_client(&self, i: usize, pid: u32) {
        let s = self.served(i);
        let Some(client) = s.clients().remove(pid) else {
            return;
        };
        tracing::debug!(pid, client_id = client.id, domain = %s.domain.spec.name, "client exited");
        s.note_exit(pid, client.id);
        if !client.failed {
            self.drop_shadow(i, &client);
        }
    }

    /// The shadow of client `pid` of domain `i` stopped beating while its
    /// domain runs: fail the client's calls (its state page says FAILED, so
    /// it registers again, with a fresh shadow, at its next call) and have
    /// the domain remove the shadow. The entry stays, marked `failed`
    /// (see `clients::Client::failed`).
    fn shadow_stalled(&self, i: usize, pid: u32, quiet: Duration) {
        let s = self.served(i);
        let id = {
            let mut clients = s.clients();
            let Some(client) = clients.get_mut(pid) else {
                return;
            };
            if client.failed {
                return;
            }
            client.failed = true;
            client.regions.mark_failed();
            client.id
        };
        tracing::error!(
            pid,
            client_id = id,
            domain = %s.domain.spec.name,
            "the client's shadow is gone or stuck (no heartbeat for {} ms): \
             its calls fail with EIO, it registers again at its next call",
            quiet.as_millis()
        );
        self.remove_shadow(i, pid, id);
    }

    /// Send `RemoveClient` for `client` (no longer in the table).
    fn drop_shadow(&self, i: usize, client: &clients::Client) {
        self.remove_shadow(i, client.pid, client.id);
    }

    /// Send `RemoveClient` for client `id` (process `pid`).
    fn remove_shadow(&self, i: usize, pid: u32, id: u64) {
        let s = self.served(i);
        if s.domain.phase() == Phase::Connected {
            let epoch = s.recovery.epoch();
            let cmd = DomainCommand::RemoveClient { client_id: id };
            match s.domain.command(&cmd, &[]) {
                Ok(DomainReply::Ok) => {}
                Ok(other) => tracing::warn!(pid, ?other, "domain answered RemoveClient"),
                Err(e) => self.domain_lost(i, &e, epoch),
            }
        }
    }

    /// The control link of domain `i` broke during a command begun in
    /// incarnation `epoch`: that incarnation is unusable from now on (a
    /// newer one, already restarted, is left alone).
    fn domain_lost(&self, i: usize, e: &DomainError, epoch: u64) {
        tracing::error!("{e}");
        if self.served(i).recovery.epoch() != epoch {
            return;
        }
        self.fail_domain(i, "control link lost");
    }

    /// Domain `i` is gone: every one of its clients' calls must fail, not
    /// hang. The other domain is not affected.
    fn domain_gone(&self, i: usize, why: &str) {
        let s = self.served(i);
        let was = s.domain.disconnect();
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        if was == Phase::Disconnected {
            return;
        }
        s.set_error(why);
        // Before the table is drained: a registration that raced with us
        // sees the new epoch under the table lock and fails its client.
        s.recovery.epoch.fetch_add(1, Ordering::SeqCst);
        // Shadows outlive a killed server for a moment (or forever, when
        // stopped): none may keep serving an old region.
        let _ = s.domain.signal_all(rustix::process::Signal::KILL);
        {
            let mut clients = s.clients();
            for c in clients.iter() {
                c.regions.mark_failed();
            }
            tracing::error!(
                domain = %s.domain.spec.name,
                clients = clients.len(),
                "domain disconnected ({why}); marked every client's state page FAILED"
            );
            // They register again (with the restarted domain) at their
            // next call.
            clients.clear();
        }
        if let Some(h) = s.host_if() {
            hostnet::remove(&h);
        }
        self.record_failure(i, why);
    }

    /// Stop the domains, remove our files, exit the process.
    fn shutdown(&self, why: &str) -> ! {
        self.stopping.store(true, Ordering::SeqCst);
        tracing::info!("shutting down ({why})");
        for s in self.domains.iter().rev() {
            s.domain.stop(STOP_GRACE);
            if let Some(h) = s.host_if() {
                hostnet::remove(&h);
            }
            // Calls still waiting (the domain had until the grace ran out
            // to answer them) fail with EIO instead of waiting forever for
            // a domain that is gone; the clients' next calls find no daemon.
            for c in s.clients().iter() {
                c.regions.mark_failed();
            }
        }
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
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
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

/// Room for many client connections (each idle one holds a descriptor):
/// the soft `RLIMIT_NOFILE` up to the hard limit, at most 65536.
fn raise_nofile() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let want = lim.maximum.unwrap_or(65536).min(65536);
    if lim.current.is_some_and(|c| c < want) {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: lim.maximum,
            },
        );
    }
}

/// Run the daemon in the foreground until `Shutdown` or a termination signal.
pub fn run(settings: Settings) -> Result<()> {
    init_logging();
    // Started by `virtuos up`: leave the caller's session (fails harmlessly
    // when we already lead a process group, e.g. in a foreground shell job).
    let _ = rustix::process::setsid();
    crate::sys::block_termination_signals().context("cannot block signals")?;
    raise_nofile();
    let rt = settings.runtime.clone();
    paths::check_runtime_dir(&rt.dir, paths::DirUse::Own).map_err(anyhow::Error::msg)?;
    let _pid_lock = lock_pid_file(&settings)?;
    let env = Env::current();
    let bin = paths::domain_bin(&env).context("cannot locate the virtuos-domain binary")?;
    let vm = settings.backend == Backend::Vm;
    let mut specs = vec![DomainSpec {
        name: STORAGE.to_string(),
        backend: settings.backend,
        bin: bin.clone(),
        data_dir: (!vm).then(|| settings.storage_dir()),
        mount: settings.storage_mount.clone(),
        net: None,
        vm: vm.then(|| VmSpec {
            run_dir: rt.dir.join("vm").join(STORAGE),
            storage_image: settings.storage_image.clone(),
            kernel: settings.vm_kernel.clone(),
            initrd: settings.vm_initrd.clone(),
            memory_mib: crate::backend::vm::MEMORY_MIB,
            slots: settings.vm_slots,
            network: None,
        }),
    }];
    if settings.network {
        specs.push(DomainSpec {
            name: NETWORK.to_string(),
            backend: settings.backend,
            bin,
            data_dir: None,
            mount: settings.storage_mount.clone(),
            // A VM reaches the outside through QEMU's user networking.
            net: (!vm).then_some(settings.network_subnet),
            vm: vm.then(|| VmSpec {
                run_dir: rt.dir.join("vm").join(NETWORK),
                storage_image: settings.storage_image.clone(),
                kernel: settings.vm_kernel.clone(),
                initrd: settings.vm_initrd.clone(),
                memory_mib: crate::backend::vm::NETWORK_MEMORY_MIB,
                slots: settings.vm_slots,
                network: Some(settings.forwards.clone()),
            }),
        });
    }
    let data_shown = if vm {
        settings.storage_image.clone()
    } else {
        settings.storage_dir()
    };
    tracing::info!(
        pid = std::process::id(),
        runtime = %rt.dir.display(),
        data = %data_shown.display(),
        mount = %settings.storage_mount,
        backend = %settings.backend,
        network = settings.network,
        subnet = %settings.network_subnet,
        "virtuosd starting"
    );
    // Port forwards of a process network domain: the host ports first, so
    // that one that is taken fails the start instead of only the log.
    let forwards = if settings.network && !vm {
        forward::bind_all(&settings.forwards)?
    } else {
        Vec::new()
    };
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
        domains: specs.into_iter().map(Served::new).collect(),
        next_id: AtomicU64::new(1),
        wake,
        stopping: AtomicBool::new(false),
        forwards: Mutex::new(Vec::new()),
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
            .name("control".into())
            .spawn(move || server::run(d, listener))?;
    }

    // The main thread starts the domains (it must outlive them: their
    // parent-death signal follows it) and then watches processes. Without
    // the storage domain the daemon is useless; without the network domain
    // it still serves storage (status says why).
    let storage = daemon.served(0);
    if let Err(e) = storage.domain.start() {
        tracing::error!("cannot start the {} domain: {e:#}", STORAGE);
        let rt = &daemon.settings.runtime;
        for f in [rt.socket(), rt.info_file(), rt.pid_file()] {
            let _ = std::fs::remove_file(f);
        }
        return Err(e.context(format!("cannot start the {STORAGE} domain")));
    }
    if let Some(i) = daemon.find(NETWORK) {
        let net = daemon.served(i);
        if let Some(h) = net.host_if() {
            hostnet::remove(&h);
        }
        if let Err(e) = net.domain.start() {
            tracing::error!("cannot start the {NETWORK} domain (storage still serves): {e:#}");
            net.set_error(format!("{e:#}"));
            if let Some(h) = net.host_if() {
                hostnet::remove(&h);
            }
        }
        forward::start_all(&daemon, forwards);
    }
    watch::run(&daemon);
}
