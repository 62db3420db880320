//! Service domains: how one is started, its control link, its life cycle.
//!
//! A domain goes through the paper's states: `registered` (known to the
//! daemon) -> `connecting` (started, waiting for `Ready`) -> `connected`
//! (serving) -> `disconnected` (gone: exited, crashed, hung, or stopped).
//! A restart would move it from `disconnected` back to `connecting`
//! (`Domain::start` can be called again).

pub mod hostnet;
pub mod process;
pub mod vm;

use crate::config::Backend;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::net::sockopt::{set_socket_timeout, Timeout};
use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use virtuos_abi::control::{self, DomainCommand, DomainReply};
use virtuos_abi::region::StatePage;

/// How long a domain may take to say `Ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a VM domain may take from QEMU's start to `Ready` (about 3.5 s
/// under TCG on an idle machine, much more on a loaded one).
pub const VM_READY_TIMEOUT: Duration = Duration::from_secs(60);
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
    /// vm backend: what the VM boots and where its files go.
    pub vm: Option<vm::VmSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("domain {0} is not connected")]
    NotConnected(String),
    /// The control link broke or timed out: the domain is unusable.
    #[error("lost the control link to domain {name}: {why}")]
    Lost { name: String, why: String },
}

/// What runs the domain: the server process, or QEMU.
enum Proc {
    Child(Child),
    Vm(Box<virtuos_vmm::qemu::Vm>),
}

impl Proc {
    fn id(&self) -> u32 {
        match self {
            Proc::Child(c) => c.id(),
            Proc::Vm(vm) => vm.pid(),
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        match self {
            Proc::Child(c) => c.try_wait().ok()?,
            Proc::Vm(vm) => vm.try_wait(),
        }
    }

    fn kill(&mut self) {
        match self {
            Proc::Child(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Proc::Vm(vm) => {
                let _ = vm.kill();
            }
        }
    }
}

struct Running {
    proc_: Proc,
    pidfd: Arc<OwnedFd>,
}

/// The control link: a `SOCK_SEQPACKET` socket (process backend, one
/// message per packet, descriptors attached) or a byte stream to a VM's
/// virtio-serial port (length-prefixed frames, no descriptors).
enum Link {
    Packet(OwnedFd),
    Stream(UnixStream),
}

impl Link {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Link::Packet(fd) => fd.as_fd(),
            Link::Stream(s) => s.as_fd(),
        }
    }

    /// Descriptors cannot cross into a VM: they are left out, and the VM
    /// domain refuses the commands that need them.
    fn send(&self, cmd: &DomainCommand, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        match self {
            Link::Packet(fd) => control::send(fd.as_fd(), cmd, fds),
            Link::Stream(s) => control::send_framed(&mut &*s, cmd),
        }
    }

    fn recv(&self) -> io::Result<Option<DomainReply>> {
        match self {
            Link::Packet(fd) => Ok(control::recv::<DomainReply>(fd.as_fd())?.map(|(r, _)| r)),
            Link::Stream(s) => control::recv_framed(&mut &*s),
        }
    }
}

/// What `status` shows about a VM domain.
#[derive(Clone, Debug)]
pub struct VmInfo {
    pub accel: String,
    /// QEMU launch to `Ready`.
    pub boot: Option<Duration>,
    pub memory_mib: u64,
    pub console: PathBuf,
}

/// One service domain and its control link.
pub struct Domain {
    pub spec: DomainSpec,
    phase: Mutex<Phase>,
    /// The control socket. Held for a whole command round trip, so every
    /// command gets exactly its own reply.
    link: Mutex<Option<Link>>,
    running: Mutex<Option<Running>>,
    cpus: AtomicU32,
    vm_info: Mutex<Option<VmInfo>>,
    /// vm backend: the running VM's region slots and bell relay.
    slots: Mutex<Option<(Arc<vm::slots::SlotPool>, vm::bells::Relay)>>,
    /// Process backend: the page whose heartbeat the domain bumps.
    heartbeat: Mutex<Option<Arc<StatePage>>>,
    /// Process group of the last started domain (process backend: the
    /// server's pid), kept after the server was reaped so that leftover
    /// shadows can still be killed.
    pgid: AtomicU32,
    /// Launch to `Ready` of the last start, in microseconds.
    launch_us: AtomicU64,
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
            vm_info: Mutex::new(None),
            slots: Mutex::new(None),
            heartbeat: Mutex::new(None),
            pgid: AtomicU32::new(0),
            launch_us: AtomicU64::new(0),
        }
    }

    /// The domain's heartbeat counter, if it has a heartbeat page.
    pub fn heartbeat(&self) -> Option<u64> {
        lock(&self.heartbeat)
            .as_ref()
            .map(|p| p.get().heartbeat.load(Ordering::Acquire))
    }

    /// Launch to `Ready` of the last successful start.
    pub fn last_launch(&self) -> Duration {
        Duration::from_micros(self.launch_us.load(Ordering::Relaxed))
    }

    /// Signal every process of the domain (server and shadows; process
    /// backend) or QEMU (vm backend).
    pub fn signal_all(&self, sig: rustix::process::Signal) -> io::Result<()> {
        match self.spec.backend {
            Backend::Process => match self.pgid.load(Ordering::Relaxed) {
                0 => Ok(()),
                g => crate::sys::signal_group(g, sig),
            },
            Backend::Vm => self.signal_main(sig),
        }
    }

    /// Signal the domain's main process (the server, or QEMU).
    pub fn signal_main(&self, sig: rustix::process::Signal) -> io::Result<()> {
        let Some(pid) = self
            .pid()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        else {
            return Err(io::Error::other(format!(
                "the {} domain has no process",
                self.spec.name
            )));
        };
        Ok(rustix::process::kill_process(pid, sig)?)
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
        lock(&self.running).as_ref().map(|r| r.proc_.id())
    }

    /// vm backend: accelerator, boot time, memory, console.
    pub fn vm_info(&self) -> Option<VmInfo> {
        lock(&self.vm_info).clone()
    }

    /// vm backend: the region slots of the running VM.
    pub fn slot_pool(&self) -> Option<Arc<vm::slots::SlotPool>> {
        lock(&self.slots).as_ref().map(|(p, _)| Arc::clone(p))
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
        let mut vm_slots = None;
        // The page the domain's heartbeat goes to: mapped by a process
        // domain, bumped by the bell relay for a VM (`Bell::Heartbeat`).
        let memfd = virtuos_abi::mapping::create_memfd(
            &format!("virtuos-heartbeat-{}", self.spec.name),
            virtuos_abi::STATE_SIZE,
        )?;
        let heartbeat = Arc::new(StatePage::map(&memfd, true)?);
        heartbeat.get().init(1);
        *lock(&self.heartbeat) = Some(Arc::clone(&heartbeat));
        let (proc_, link, ready_timeout, launched) = match self.spec.backend {
            Backend::Process => {
                let (child, sock) = process::spawn(&self.spec, memfd.as_fd())?;
                self.pgid.store(child.id(), Ordering::Relaxed);
                (Proc::Child(child), Link::Packet(sock), READY_TIMEOUT, None)
            }
            Backend::Vm => {
                let v = self.spec.vm.as_ref().ok_or_else(|| {
                    anyhow::anyhow!("no VM settings for domain {}", self.spec.name)
                })?;
                let l = vm::launch(&self.spec, v)?;
                *lock(&self.vm_info) = Some(VmInfo {
                    accel: l.accel.to_string(),
                    boot: None,
                    memory_mib: l.vm.config().memory_mib,
                    console: l.vm.config().console_log(),
                });
                let started = l.started;
                vm_slots = Some((l.slots, l.bell));
                (
                    Proc::Vm(Box::new(l.vm)),
                    Link::Stream(l.link),
                    VM_READY_TIMEOUT,
                    Some(started),
                )
            }
        };
        let pid = proc_.id();
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid as i32)
                .ok_or_else(|| anyhow::anyhow!("bad pid {pid}"))?,
            rustix::process::PidfdFlags::empty(),
        )?;
        *lock(&self.running) = Some(Running {
            proc_,
            pidfd: Arc::new(pidfd),
        });
        tracing::info!(domain = %self.spec.name, pid, "domain process started, waiting for Ready");
        set_socket_timeout(link.fd(), Timeout::Recv, Some(ready_timeout))?;
        set_socket_timeout(link.fd(), Timeout::Send, Some(COMMAND_TIMEOUT))?;
        let started = launched.unwrap_or_else(Instant::now);
        let console = || {
            self.vm_info()
                .map(|v| {
                    let text = std::fs::read_to_string(&v.console).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                    format!("; console {}:\n{tail}", v.console.display())
                })
                .unwrap_or_default()
        };
        let mut reply = link.recv();
        if let Ok(Some(DomainReply::Slots { slots })) = &reply {
            let (pool, _) = vm_slots
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("a process domain reported VM slots"))?;
            pool.set_views(slots)
                .map_err(|e| anyhow::anyhow!("the VM's region slots are unusable: {e}"))?;
            reply = link.recv();
        }
        match reply {
            Ok(Some(DomainReply::Ready { cpus })) => {
                self.cpus.store(cpus.max(1), Ordering::Relaxed);
                let after = started.elapsed();
                self.launch_us
                    .store(after.as_micros() as u64, Ordering::Relaxed);
                if let Some(v) = lock(&self.vm_info).as_mut() {
                    v.boot = Some(after);
                }
                tracing::info!(domain = %self.spec.name, cpus, ?after, "domain ready");
            }
            Ok(Some(DomainReply::Error { message })) => {
                anyhow::bail!("the domain could not start: {message}{}", console())
            }
            Ok(Some(other)) => anyhow::bail!("domain sent {other:?} instead of Ready"),
            Ok(None) => anyhow::bail!(
                "domain exited (or closed its control socket) before Ready{}",
                console()
            ),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                anyhow::bail!(
                    "domain did not become ready within {ready_timeout:?}{}",
                    console()
                )
            }
            Err(e) => anyhow::bail!("bad Ready from domain: {e}{}", console()),
        }
        if let Some((pool, bell)) = vm_slots {
            let relay = vm::bells::Relay::start(Arc::clone(&pool), bell, heartbeat)?;
            *lock(&self.slots) = Some((pool, relay));
        }
        set_socket_timeout(link.fd(), Timeout::Recv, Some(COMMAND_TIMEOUT))?;
        *lock(&self.link) = Some(link);
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
        let reply = sock.send(cmd, fds).and_then(|()| match sock.recv() {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "domain closed its control socket",
            )),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no reply within {COMMAND_TIMEOUT:?}"),
            )),
            Err(e) => Err(e),
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
        // Leases keep the pool alive for their clients; the relay stops.
        *lock(&self.slots) = None;
        self.set_phase(Phase::Disconnected)
    }

    /// Reap the domain process if it exited.
    pub fn reap(&self) -> Option<ExitStatus> {
        let mut running = lock(&self.running);
        let status = running.as_mut()?.proc_.try_wait()?;
        *running = None;
        Some(status)
    }

    /// Kill the domain (every process of it: a stopped shadow would
    /// otherwise live on) and reap the main process.
    pub fn kill(&self) {
        let _ = self.signal_all(rustix::process::Signal::KILL);
        if let Some(mut r) = lock(&self.running).take() {
            r.proc_.kill();
        }
        let _ = self.signal_all(rustix::process::Signal::KILL);
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
