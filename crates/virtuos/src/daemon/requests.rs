//! What the daemon does for each `ClientRequest`.

use super::answer::{error, plain, Answer};
use super::clients::{self, Client, Peer};
use super::credentials;
use super::regions::Regions;
use super::{lock, Daemon};
use crate::backend::Phase;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use virtuos_abi::control::{
    ClientRequest, ClientStatus, DaemonReply, DomainCommand, DomainReply, DomainStatus,
    StatusReport,
};

/// Processes one unprivileged uid may register with one domain.
pub const MAX_CLIENTS_PER_UID: usize = 1024;
/// VM backend: region slots an unprivileged uid must leave to others.
const SLOTS_KEPT_FOR_OTHERS: usize = 2;

/// Root or the daemon's owner.
pub(super) fn privileged(peer: Peer) -> bool {
    peer.uid == 0 || peer.uid == rustix::process::geteuid().as_raw()
}

/// Everything a `Registered` answer needs, copied out of the table so the
/// table lock is not held while sending.
pub struct Granted {
    pub client_id: u64,
    pub region: OwnedFd,
    pub state_ro: OwnedFd,
    /// Where the region and the state page start in their descriptors.
    pub offsets: (u64, u64),
}

impl Daemon {
    pub(super) fn handle(&self, peer: Peer, req: ClientRequest) -> Result<Granted, Answer> {
        match req {
            ClientRequest::Register { domain } => self.register(peer, &domain, None),
            ClientRequest::ClaimFork {
                domain,
                parent_pid,
                token,
            } => self.register(peer, &domain, Some((parent_pid, token))),
            ClientRequest::Reattach { domain } => self.reattach(peer, &domain),
            ClientRequest::SyncCredentials { tid } => Err(self.sync_credentials(peer, tid)),
            ClientRequest::Status => Err(plain(DaemonReply::Status(self.status()))),
            ClientRequest::Shutdown => {
                if !privileged(peer) {
                    return Err(error("only root or the daemon's owner may stop virtuosd"));
                }
                Err(Answer {
                    shutdown: true,
                    ..plain(DaemonReply::Ok)
                })
            }
            ClientRequest::ReportFault { domain, reason } => {
                Err(self.report_fault(peer, &domain, &reason))
            }
            ClientRequest::Crash { domain, how } => {
                if !privileged(peer) {
                    return Err(error("only root or the daemon's owner may crash a domain"));
                }
                Err(self.crash(&domain, how))
            }
            ClientRequest::Restart { domain } => {
                if !privileged(peer) {
                    return Err(error(
                        "only root or the daemon's owner may restart a domain",
                    ));
                }
                let Some(i) = self.find(&domain) else {
                    return Err(error(format!("unknown domain {domain:?}")));
                };
                self.request_restart(i);
                Err(plain(DaemonReply::Ok))
            }
        }
    }

    /// The index of the serving domain called `domain`.
    fn check_domain(&self, domain: &str) -> Result<usize, Answer> {
        let Some(i) = self.find(domain) else {
            let known: Vec<&str> = self
                .domains
                .iter()
                .map(|d| d.domain.spec.name.as_str())
                .collect();
            return Err(error(format!(
                "unknown domain {domain:?} (this daemon runs {known:?})"
            )));
        };
        let s = self.served(i);
        // A domain being restarted: wait for it (bounded), so that a
        // client's first call after a crash finds it serving again.
        let deadline = std::time::Instant::now() + super::recovery::REGISTER_WAIT;
        loop {
            let p = s.domain.phase();
            let restarting = s.recovery.pending() || p == Phase::Connecting;
            if p == Phase::Connected || !restarting || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        match s.domain.phase() {
            Phase::Connected => Ok(i),
            p => {
                let why = s.error().map(|e| format!(": {e}")).unwrap_or_default();
                Err(error(format!(
                    "the {domain} domain is {} (not serving){why}",
                    p.as_str()
                )))
            }
        }
    }

    fn granted(c: &Client) -> Result<Granted, Answer> {
        let [region, state_ro] = c.regions.client_fds();
        let dup = |fd: BorrowedFd<'_>| {
            fd.try_clone_to_owned()
                .map_err(|e| error(format!("cannot duplicate descriptor: {e}")))
        };
        Ok(Granted {
            client_id: c.id,
            region: dup(region)?,
            state_ro: dup(state_ro)?,
            offsets: c.regions.offsets(),
        })
    }

    /// `Register` (fork = None) or `ClaimFork` (fork = Some((parent_pid, token))).
    fn register(
        &self,
        peer: Peer,
        domain: &str,
        fork: Option<(u32, u64)>,
    ) -> Result<Granted, Answer> {
        let i = self.check_domain(domain)?;
        let served = self.served(i);
        let _serial = lock(&served.register_lock);
        let status = clients::proc_status(peer.pid)
            .map_err(|e| error(format!("cannot inspect process {}: {e}", peer.pid)))?;
        // What the kernel says now, not what the socket saw at connect().
        let creds = credentials::of_process(peer.pid).map_err(error)?;

        // A registered pid whose process is gone is a stale entry (pid reuse
        // before the watcher noticed): drop it first.
        let stale = match served.clients().get(peer.pid) {
            Some(c) if clients::exited(&c.pidfd) => true,
            // Its shadow was lost: it registers again (replaced below).
            Some(c) if c.failed && fork.is_none() => false,
            Some(_) => {
                return Err(error(format!(
                    "process {} is already registered (use Reattach after execve)",
                    peer.pid
                )))
            }
            None => false,
        };
        if stale {
            self.remove_client(i, peer.pid);
        }
        if !privileged(peer) {
            self.check_uid_quota(i, peer)?;
        }

        let parent = match fork {
            None => None,
            Some((parent_pid, token)) => {
                // A live parent vouches for its child (the child's parent is
                // it). A parent that exited meanwhile (a subshell that starts
                // a job and exits) cannot: the child has been re-parented.
                // Then the token, 62 random bits only the parent's shadow and
                // the parent knew, is the proof; the domain checks that it
                // names a pending shadow of that parent.
                let (parent_id, alive) = match served.clients().get(parent_pid) {
                    Some(c) => (Some(c.id), !clients::exited(&c.pidfd)),
                    None => (served.exited_client(parent_pid), false),
                };
                let Some(parent_id) = parent_id else {
                    return Err(error(format!("process {parent_pid} is not registered")));
                };
                if alive && clients::parse_ppid(&status) != Some(parent_pid) {
                    return Err(error(format!(
                        "process {} is not a child of {parent_pid}",
                        peer.pid
                    )));
                }
                Some((parent_id, token))
            }
        };

        let pidfd = rustix::process::Pid::from_raw(peer.pid as i32)
            .ok_or_else(|| error("bad peer pid"))
            .and_then(|p| {
                rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
                    .map_err(|e| error(format!("cannot watch process {}: {e}", peer.pid)))
            })?;
        let client_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let epoch = served.recovery.epoch();
        let regions = match served.domain.slot_pool() {
            Some(pool) => Regions::lease(&pool, served.domain.cpus()),
            None => Regions::create(client_id, served.domain.cpus()),
        }
        .map_err(|e| error(format!("cannot create shared regions: {e}")))?;
        let slot = regions.slot();
        let cmd = match parent {
            None => DomainCommand::AddClient {
                client_id,
                pid: peer.pid,
                creds,
                slot,
                nproc: clients::nproc_limit(peer.pid),
            },
            Some((parent_client_id, token)) => DomainCommand::AttachForked {
                client_id,
                parent_client_id,
                token,
                pid: peer.pid,
                slot,
                creds: Some(creds),
            },
        };
        match served.domain.command(&cmd, &regions.domain_fds()) {
            Ok(DomainReply::Ok) => {}
            Ok(DomainReply::Error { message }) => {
                return Err(error(format!("the {domain} domain refused: {message}")))
            }
            Ok(other) => return Err(error(format!("the {domain} domain answered {other:?}"))),
            Err(e) => {
                self.domain_lost(i, &e, epoch);
                return Err(error(e.to_string()));
            }
        }
        let mut client = Client {
            id: client_id,
            pid: peer.pid,
            uid: peer.uid,
            pidfd: Arc::new(pidfd),
            heartbeat: (regions.heartbeat(), std::time::Instant::now()),
            regions,
            failed: false,
            retired: Vec::new(),
        };
        let granted = Self::granted(&client)?;
        tracing::debug!(
            pid = peer.pid,
            uid = peer.uid,
            gid = peer.gid,
            client_id,
            domain,
            forked_from = ?fork.map(|f| f.0),
            "client registered"
        );
        {
            let mut clients = served.clients();
            if served.recovery.epoch() != epoch {
                // The domain failed after it accepted us: its state page
                // was never marked (we were not in the table yet).
                client.regions.mark_failed();
                return Err(error(format!(
                    "the {domain} domain failed during registration"
                )));
            }
            if let Some(old) = clients.remove(peer.pid) {
                // The entry of a lost shadow (checked above, under the
                // registration lock): its regions stay with the process.
                client.retired = old.retired;
                client.retired.push(old.regions);
            }
            clients.insert(client);
        }
        self.poke_watcher();
        Ok(granted)
    }

    /// An unprivileged uid may hold at most `MAX_CLIENTS_PER_UID`
    /// registrations per domain, and on the vm backend must leave
    /// `SLOTS_KEPT_FOR_OTHERS` region slots to other users.
    fn check_uid_quota(&self, i: usize, peer: Peer) -> Result<(), Answer> {
        let served = self.served(i);
        let mut limit = MAX_CLIENTS_PER_UID;
        if let Some(pool) = served.domain.slot_pool() {
            limit = limit.min(pool.count().saturating_sub(SLOTS_KEPT_FOR_OTHERS).max(1));
        }
        let held = served.clients().count_of(peer.uid);
        if held >= limit {
            tracing::warn!(
                pid = peer.pid,
                uid = peer.uid,
                held,
                limit,
                domain = %served.domain.spec.name,
                "registration refused: per-uid limit"
            );
            return Err(error(format!(
                "uid {} already has {held} processes registered with the {} domain \
                 (limit {limit} per user)",
                peer.uid, served.domain.spec.name
            )));
        }
        Ok(())
    }

    /// The same process after execve: its regions, and its credentials
    /// again (the new image may have others; its old threads are gone).
    fn reattach(&self, peer: Peer, domain: &str) -> Result<Granted, Answer> {
        let i = self.check_domain(domain)?;
        let granted = {
            let clients = self.served(i).clients();
            let c = clients
                .get(peer.pid)
                .ok_or_else(|| error(format!("process {} is not registered", peer.pid)))?;
            tracing::debug!(pid = peer.pid, client_id = c.id, "client reattached");
            Self::granted(c)?
        };
        let creds = credentials::of_process(peer.pid).map_err(error)?;
        self.send_credentials(i, peer.pid, None, &creds)
            .map_err(error)?;
        Ok(granted)
    }

    pub(super) fn status(&self) -> StatusReport {
        let forwards = lock(&self.forwards).clone();
        let domains = self
            .domains
            .iter()
            .map(|s| {
                let clients = s
                    .clients()
                    .iter()
                    .map(|c| ClientStatus {
                        client_id: c.id,
                        pid: c.pid,
                    })
                    .collect();
                let spec = &s.domain.spec;
                let phase = s.domain.phase();
                let vm = s.domain.vm_info();
                let rec = s.recovery.snapshot();
                DomainStatus {
                    name: spec.name.clone(),
                    backend: spec.backend.to_string(),
                    state: phase.as_str().to_string(),
                    pid: s.domain.pid(),
                    data: spec
                        .data_dir
                        .as_ref()
                        .or(spec
                            .vm
                            .as_ref()
                            .filter(|v| v.network.is_none())
                            .map(|v| &v.storage_image))
                        .map(|d| d.display().to_string())
                        .unwrap_or_default(),
                    clients,
                    address: match (&spec.net, &spec.vm) {
                        (Some(n), _) => Some(n.domain_addr().to_string()),
                        (None, Some(v)) if v.network.is_some() => {
                            Some("10.0.2.15 (QEMU user networking)".to_string())
                        }
                        _ => None,
                    },
                    host_link: spec
                        .net
                        .map(|n| format!("{} {}/{}", n.host_if(), n.host_addr(), n.prefix)),
                    forwards: match &spec.vm {
                        Some(v) => v
                            .network
                            .iter()
                            .flatten()
                            .map(|f| {
                                format!("127.0.0.1:{} -> :{} (QEMU)", f.host_port, f.domain_port)
                            })
                            .collect(),
                        None if spec.net.is_some() => forwards.clone(),
                        None => vec![],
                    },
                    error: if phase == Phase::Connected {
                        None
                    } else {
                        s.error()
                    },
                    accel: vm.as_ref().map(|v| v.accel.clone()),
                    boot_ms: vm
                        .as_ref()
                        .and_then(|v| v.boot)
                        .map(|b| b.as_millis() as u64),
                    memory_mib: vm.as_ref().map(|v| v.memory_mib),
                    console: vm.as_ref().map(|v| v.console.display().to_string()),
                    restarts: rec.restarts,
                    last_failure: rec.last_failure,
                    last_recovery_ms: rec.last_recovery.map(|d| d.as_millis() as u64),
                    last_launch_ms: (rec.restarts > 0)
                        .then(|| s.domain.last_launch().as_millis() as u64),
                }
            })
            .collect();
        StatusReport {
            daemon_pid: std::process::id(),
            domains,
            notes: self.notes(),
        }
    }
}

impl Daemon {
    /// Remarks for `status`.
    fn notes(&self) -> Vec<String> {
        let s = &self.settings;
        let mut notes = Vec::new();
        if s.backend == crate::config::Backend::Vm {
            for d in self.domains.iter() {
                if let Some(pool) = d.domain.slot_pool() {
                    notes.push(format!(
                        "{} VM region slots: {} of {} in use",
                        d.domain.spec.name,
                        d.clients().len(),
                        pool.count()
                    ));
                }
            }
        }
        notes
    }
}

impl Granted {
    pub fn fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.region.as_fd(), self.state_ro.as_fd()]
    }
}
