//! The domain's main process: the daemon's control loop and the table of
//! shadows.
//!
//! Single threaded on purpose: it forks a shadow for every `AddClient`,
//! which is only simple in a single-threaded process. It is a child
//! subreaper, so shadows forked by shadows (`OP_FORK_PREPARE`) that lose
//! their parent are reaped here.
//!
//! Tokens: a pending forked shadow is named by a random token (what the
//! client claims it with) and is process `pid`. A shadow announces one with
//! `ShadowMsg::ForkPending`; before accepting it the main process checks
//! that the pid's parent is that shadow's zygote (a child of the shadow) and
//! pins the process with a pidfd, so a misbehaving shadow can neither name
//! nor signal an unrelated process.
//!
//! A pending shadow outlives the removal of the client that forked it by
//! `ORPHAN_TTL`: a child may claim its shadow after its parent exited (a
//! subshell that starts a background job and exits at once; the child's
//! claim is under way while the parent goes).

use crate::backend::Root;
use crate::creds;
use crate::heartbeat;
use crate::proto::{MainMsg, ShadowMsg};
use crate::role::Role;
use crate::shadow::{self, NewShadow};
use crate::sys::{self, Forked};
use anyhow::{anyhow, bail, Context, Result};
use rustix::event::{poll, PollFd, PollFlags};
use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal, WaitOptions};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use virtuos_abi::control::{self, Credentials, DomainCommand, DomainReply, Fault};

/// How long a new shadow may take to report that it serves.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll period of the main loop (reaping, housekeeping).
const TICK_MS: i64 = 200;
/// How long a pending forked shadow waits for its claim once the client
/// that forked it is gone.
const ORPHAN_TTL: Duration = Duration::from_secs(30);

/// A running shadow.
struct ShadowProc {
    pid: u32,
    pidfd: OwnedFd,
    sock: OwnedFd,
    /// Its client's credentials (`None` for a pending forked shadow, which
    /// still maps its parent's until it is attached).
    creds: Option<creds::Writer>,
    /// Who it serves, for the log: the client's pid (0 while pending) and uid.
    client_pid: u32,
    uid: u32,
}

impl ShadowProc {
    fn kill(&self) {
        let _ = pidfd_send_signal(&self.pidfd, Signal::KILL);
    }

    /// Kill and reap, if it is our child (a forked shadow usually belongs to
    /// its parent shadow, which reaps it). Through the pidfd, so a pid that
    /// was reaped and reused meanwhile cannot make us wait for a stranger.
    fn kill_and_reap(&self) {
        self.kill();
        let _ = rustix::process::waitid(
            rustix::process::WaitId::PidFd(self.pidfd.as_fd()),
            rustix::process::WaitIdOptions::EXITED,
        );
    }
}

/// A forked shadow waiting for `AttachForked`.
struct Pending {
    parent_client: u64,
    proc_: ShadowProc,
    created: Instant,
    /// When the parent client was removed (the claim may still come).
    orphaned: Option<Instant>,
}

pub struct Server {
    ctl: OwnedFd,
    root: Root,
    procfd: OwnedFd,
    cpus: u32,
    role: Role,
    clients: HashMap<u64, ShadowProc>,
    pending: HashMap<u64, Pending>,
    /// Clients whose shadow died on its own, until the daemon removes them.
    dead: HashSet<u64>,
    /// VM backend: the bell port (see `shadow::Waker`), handed to shadows.
    bell: Option<OwnedFd>,
    /// Fault injection `corrupt` happened: new shadows misbehave too (a
    /// corrupted domain stays corrupted, also for the daemon's probe).
    corrupt: bool,
}

enum Flow {
    Continue,
    Exit,
}

impl Server {
    pub fn new(ctl: OwnedFd, root: Root, procfd: OwnedFd, cpus: u32, role: Role) -> Server {
        Self::with_bell(ctl, root, procfd, (cpus, role), None)
    }

    /// A server whose clients live in VM slots and are woken through `bell`.
    pub fn with_bell(
        ctl: OwnedFd,
        root: Root,
        procfd: OwnedFd,
        (cpus, role): (u32, Role),
        bell: Option<OwnedFd>,
    ) -> Server {
        Server {
            ctl,
            root,
            procfd,
            cpus,
            role,
            clients: HashMap::new(),
            pending: HashMap::new(),
            dead: HashSet::new(),
            bell,
            corrupt: false,
        }
    }

    /// Serve until `Shutdown` or until the daemon closes the control socket.
    pub fn run(mut self) -> Result<()> {
        if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
            tracing::warn!("cannot become a child subreaper: {e}");
        }
        if let Err(e) = crate::pidmap::init() {
            tracing::warn!("no shadow pid table (F_GETLK reports holder pid 0): {e}");
        }
        if let Err(e) = crate::images::init() {
            tracing::warn!("no running-image table (no ETXTBSY for stored programs): {e}");
        }
        control::send(
            self.ctl.as_fd(),
            &DomainReply::Ready { cpus: self.cpus },
            &[],
        )
        .context("cannot send Ready on the control socket")?;
        let result = self.main_loop();
        self.kill_all();
        result
    }

    fn main_loop(&mut self) -> Result<()> {
        loop {
            heartbeat::beat();
            self.reap();
            self.expire_orphans();
            let ids: Vec<(bool, u64)> = self
                .clients
                .keys()
                .map(|&id| (true, id))
                .chain(self.pending.keys().map(|&t| (false, t)))
                .collect();
            let mut fds = Vec::with_capacity(ids.len() + 1);
            fds.push(PollFd::new(&self.ctl, PollFlags::IN));
            for &(is_client, id) in &ids {
                let sock = if is_client {
                    &self.clients[&id].sock
                } else {
                    &self.pending[&id].proc_.sock
                };
                // Pending shadows send nothing: only watch for their death.
                let ev = if is_client {
                    PollFlags::IN
                } else {
                    PollFlags::empty()
                };
                fds.push(PollFd::new(sock, ev));
            }
            let tick = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: TICK_MS * 1_000_000,
            };
            match poll(&mut fds, Some(&tick)) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(anyhow!("poll: {e}")),
            }
            let revents: Vec<PollFlags> = fds.iter().map(|f| f.revents()).collect();
            drop(fds);
            for (&(is_client, id), rev) in ids.iter().zip(&revents[1..]) {
                if rev.is_empty() {
                    continue;
                }
                if is_client {
                    self.shadow_readable(id, *rev);
                } else {
                    tracing::debug!(token = id, "pending shadow exited");
                    self.drop_pending(id);
                }
            }
            if !revents[0].is_empty() {
                if let Flow::Exit = self.control_readable()? {
                    return Ok(());
                }
            }
        }
    }

    fn control_readable(&mut self) -> Result<Flow> {
        let got = control::recv::<DomainCommand>(self.ctl.as_fd());
        let (cmd, fds) = match got {
            Ok(Some(m)) => m,
            Ok(None) => {
                tracing::info!("control socket closed: exiting");
                return Ok(Flow::Exit);
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                tracing::warn!("bad command: {e}");
                self.reply(DomainReply::Error {
                    message: format!("{e}"),
                })?;
                return Ok(Flow::Continue);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(Flow::Continue),
            Err(e) => return Err(anyhow!("control socket: {e}")),
        };
        tracing::debug!(?cmd, fds = fds.len(), "command");
        let (reply, flow) = match cmd {
            DomainCommand::AddClient {
                client_id,
                pid,
                creds,
                slot,
                nproc,
            } => (
                self.slot(slot)
                    .and_then(|slot| self.add_client(client_id, (pid, &creds, nproc), slot, fds)),
                Flow::Continue,
            ),
            DomainCommand::AttachForked {
                client_id,
                parent_client_id,
                token,
                pid,
                slot,
                creds,
            } => (
                self.slot(slot).and_then(|slot| {
                    self.attach_forked(
                        client_id,
                        (parent_client_id, token),
                        (pid, creds.as_ref()),
                        slot,
                        fds,
                    )
                }),
                Flow::Continue,
            ),
            DomainCommand::SetCredentials {
                client_id,
                tid,
                creds,
            } => (self.set_credentials(client_id, tid, &creds), Flow::Continue),
            DomainCommand::RemoveClient { client_id } => {
                (self.remove_client(client_id), Flow::Continue)
            }
            DomainCommand::Ping => (Ok(()), Flow::Continue),
            DomainCommand::InjectFault { how } => return self.inject(how),
            DomainCommand::Shutdown => {
                self.kill_all();
                (Ok(()), Flow::Exit)
            }
        };
        let reply = match reply {
            Ok(()) => DomainReply::Ok,
            Err(e) => {
                tracing::warn!("command failed: {e:#}");
                DomainReply::Error {
                    message: format!("{e:#}"),
                }
            }
        };
        self.reply(reply)?;
        Ok(flow)
    }

    /// `InjectFault`: answer first, then misbehave.
    fn inject(&mut self, how: Fault) -> Result<Flow> {
        match how {
            Fault::Panic => {
                self.reply(DomainReply::Ok)?;
                tracing::error!("fault injection: the domain server aborts");
                std::process::abort();
            }
            Fault::Corrupt => {
                // Answer first: a client may read garbage (and the daemon
                // fail the domain) before a later answer would get out.
                self.reply(DomainReply::Ok)?;
                self.corrupt = true;
                for (id, p) in &self.clients {
                    if let Err(e) = control::send(p.sock.as_fd(), &MainMsg::Corrupt, &[]) {
                        tracing::warn!(client = id, "cannot tell the shadow to corrupt: {e}");
                    }
                }
                tracing::error!(
                    shadows = self.clients.len(),
                    "fault injection: shadows complete requests with garbage"
                );
            }
            Fault::Kill | Fault::Hang => self.reply(DomainReply::Error {
                message: format!("{} is injected by the daemon (signals)", how.as_str()),
            })?,
        }
        Ok(Flow::Continue)
    }

    fn reply(&self, reply: DomainReply) -> Result<()> {
        control::send(self.ctl.as_fd(), &reply, &[]).context("cannot reply on the control socket")
    }

    /// A command's slot: present exactly when this server has a bell port
    /// (VM backend), and in range.
    fn slot(&self, slot: Option<u32>) -> Result<Option<u8>> {
        match (slot, &self.bell) {
            (None, None) => Ok(None),
            (Some(s), Some(_)) if (s as usize) < virtuos_abi::slot::MAX_SLOTS => Ok(Some(s as u8)),
            (Some(s), Some(_)) => bail!("slot {s} is out of range"),
            (Some(_), None) => bail!("this domain has no region slots"),
            (None, Some(_)) => bail!("a VM domain needs a region slot for every client"),
        }
    }

    fn add_client(
        &mut self,
        client_id: u64,
        (pid, creds, nproc): (u32, &Credentials, Option<u64>),
        slot: Option<u8>,
        fds: Vec<OwnedFd>,
    ) -> Result<()> {
        if self.clients.contains_key(&client_id) {
            bail!("client {client_id} already has a shadow");
        }
        self.dead.remove(&client_id);
        let [region, state]: [OwnedFd; 2] = fds.try_into().map_err(|v: Vec<OwnedFd>| {
            anyhow!(
                "AddClient needs 2 descriptors [region, state], got {}",
                v.len()
            )
        })?;
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .context("socketpair")?;
        let table = creds::Writer::new(creds)?;
        let child = match sys::fork().context("cannot fork a shadow")? {
            Forked::Child => shadow::start_new(NewShadow {
                client_id,
                control: theirs.as_raw_fd(),
                procfd: self.procfd.as_raw_fd(),
                region: region.as_raw_fd(),
                state: state.as_raw_fd(),
                creds: table.fd().as_raw_fd(),
                state_offset: if slot.is_some() {
                    virtuos_abi::slot::STATE_IN_SLOT as u64
                } else {
                    0
                },
                bell: self
                    .bell
                    .as_ref()
                    .zip(slot)
                    .map(|(b, s)| (b.as_raw_fd(), s)),
                root: &self.root.dir,
                mount: &self.root.mount,
                nproc,
                corrupt: self.corrupt,
                cpus: self.cpus,
                role: self.role,
            }),
            Forked::Parent(child) => child,
        };
        drop(theirs);
        let pidfd = match Pid::from_raw(child as i32)
            .ok_or_else(|| anyhow!("fork returned pid {child}"))
            .and_then(|p| pidfd_open(p, PidfdFlags::empty()).context("pidfd_open"))
        {
            Ok(fd) => fd,
            Err(e) => {
                kill_pid(child);
                wait_pid(child);
                return Err(e);
            }
        };
        let proc_ = ShadowProc {
            pid: child,
            pidfd,
            sock: ours,
            creds: Some(table),
            client_pid: pid,
            uid: creds.euid(),
        };
        if let Err(e) = wait_ready(&proc_) {
            proc_.kill_and_reap();
            return Err(e.context(format!("shadow for client {client_id} did not start")));
        }
        tracing::info!(
            client = client_id,
            client_pid = pid,
            shadow = child,
            uid = creds.euid(),
            "shadow started"
        );
        crate::pidmap::set(child, pid);
        self.clients.insert(client_id, proc_);
        Ok(())
    }

    fn attach_forked(
        &mut self,
        client_id: u64,
        (parent_client_id, token): (u64, u64),
        (pid, creds): (u32, Option<&Credentials>),
        slot: Option<u8>,
        fds: Vec<OwnedFd>,
    ) -> Result<()> {
        if self.clients.contains_key(&client_id) {
            bail!("client {client_id} already has a shadow");
        }
        let creds = match creds {
            Some(c) => c.clone(),
            None => self
                .clients
                .get(&parent_client_id)
                .and_then(|p| p.creds.as_ref())
                .ok_or_else(|| anyhow!("unknown parent client {parent_client_id}"))?
                .default_record()?,
        };
        let table = creds::Writer::new(&creds)?;
        let fds: [OwnedFd; 2] = fds.try_into().map_err(|v: Vec<OwnedFd>| {
            anyhow!(
                "AttachForked needs 2 descriptors [region, state], got {}",
                v.len()
            )
        })?;
        // Announcements (and aborts) of the parent shadow were queued before
        // the client could learn the token: handle them first.
        self.drain_shadows();
        let Some(p) = self.pending.get(&token) else {
            bail!("no pending forked shadow {token}");
        };
        if p.parent_client != parent_client_id {
            bail!("pending shadow {token} was not forked by client {parent_client_id}");
        }
        let p = self.pending.remove(&token).expect("checked above");
        let mut proc_ = p.proc_;
        let [region, state] = &fds;
        proc_.client_pid = pid;
        let sent = control::send(
            proc_.sock.as_fd(),
            &MainMsg::Attach {
                client_id,
                slot,
                corrupt: self.corrupt,
            },
            &[region.as_fd(), state.as_fd(), table.fd()],
        );
        if let Err(e) = sent
            .map_err(anyhow::Error::from)
            .and_then(|()| wait_ready(&proc_))
        {
            proc_.kill();
            return Err(e.context(format!("forked shadow {token} did not attach")));
        }
        tracing::info!(
            client = client_id,
            client_pid = pid,
            shadow = proc_.pid,
            parent = parent_client_id,
            "forked shadow attached"
        );
        proc_.creds = Some(table);
        crate::pidmap::set(proc_.pid, pid);
        self.clients.insert(client_id, proc_);
        Ok(())
    }

    /// `SetCredentials`: written before the answer, so the client's next
    /// call runs with them.
    fn set_credentials(
        &mut self,
        client_id: u64,
        tid: Option<u32>,
        creds: &Credentials,
    ) -> Result<()> {
        let table = self
            .clients
            .get(&client_id)
            .and_then(|p| p.creds.as_ref())
            .ok_or_else(|| anyhow!("unknown client {client_id}"))?;
        table.store(tid, creds)?;
        tracing::debug!(
            client = client_id,
            ?tid,
            uids = ?creds.uids,
            gids = ?creds.gids,
            "credentials changed"
        );
        Ok(())
    }

    fn remove_client(&mut self, client_id: u64) -> Result<()> {
        match self.clients.remove(&client_id) {
            Some(proc_) => {
                crate::pidmap::remove(proc_.pid);
                proc_.kill_and_reap();
                // After it is gone: a worker of it may still register.
                crate::images::remove(proc_.pid);
            }
            None if self.dead.remove(&client_id) => {}
            None => bail!("unknown client {client_id}"),
        }
        self.orphan_pending_of(client_id);
        tracing::info!(client = client_id, "shadow removed");
        Ok(())
    }

    /// `client_id` is gone: its pending forked shadows wait `ORPHAN_TTL`
    /// more for their claims.
    fn orphan_pending_of(&mut self, client_id: u64) {
        let now = Instant::now();
        for p in self.pending.values_mut() {
            if p.parent_client == client_id && p.orphaned.is_none() {
                p.orphaned = Some(now);
            }
        }
    }

    /// Kill the pending shadows whose parent left more than `ORPHAN_TTL` ago.
    fn expire_orphans(&mut self) {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.orphaned.is_some_and(|t| t.elapsed() > ORPHAN_TTL))
            .map(|(&t, _)| t)
            .collect();
        for t in expired {
            self.drop_pending(t);
        }
    }

    fn drop_pending(&mut self, token: u64) {
        if let Some(p) = self.pending.remove(&token) {
            p.proc_.kill();
            tracing::debug!(
                token,
                age_ms = p.created.elapsed().as_millis() as u64,
                "pending shadow dropped"
            );
        }
    }

    /// Handle every message already queued on the shadows' sockets.
    fn drain_shadows(&mut self) {
        // Bounded: a shadow that keeps sending cannot stall the control loop.
        for _ in 0..64 {
            let ids: Vec<u64> = self.clients.keys().copied().collect();
            let mut fds: Vec<PollFd<'_>> = ids
                .iter()
                .map(|id| PollFd::new(&self.clients[id].sock, PollFlags::IN))
                .collect();
            let zero = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            if !matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0) {
                return;
            }
            let revents: Vec<PollFlags> = fds.iter().map(|f| f.revents()).collect();
            drop(fds);
            for (id, rev) in ids.into_iter().zip(revents) {
                if !rev.is_empty() {
                    self.shadow_readable(id, rev);
                }
            }
        }
    }

    /// A shadow's socket is readable (a message) or hung up (it died).
    fn shadow_readable(&mut self, client_id: u64, rev: PollFlags) {
        let Some(proc_) = self.clients.get(&client_id) else {
            return;
        };
        let got = if rev.contains(PollFlags::IN) {
            control::recv::<ShadowMsg>(proc_.sock.as_fd())
        } else {
            Ok(None)
        };
        match got {
            Ok(Some((msg, fds))) => self.shadow_message(client_id, msg, fds),
            Ok(None) => {
                tracing::warn!(client = client_id, "shadow exited");
                self.shadow_dead(client_id);
            }
            Err(e) => tracing::warn!(client = client_id, "bad message from shadow: {e}"),
        }
    }

    /// The shadow of `client_id` is gone (or must go): kill it, forget its
    /// pending forks; the daemon's `RemoveClient` finds it in `dead`.
    fn shadow_dead(&mut self, client_id: u64) {
        if let Some(p) = self.clients.remove(&client_id) {
            crate::pidmap::remove(p.pid);
            crate::images::remove(p.pid);
            p.kill();
        }
        self.dead.insert(client_id);
        self.orphan_pending_of(client_id);
    }

    fn shadow_message(&mut self, client_id: u64, msg: ShadowMsg, fds: Vec<OwnedFd>) {
        match msg {
            ShadowMsg::QueueBroken { reason } => {
                if let Some(p) = self.clients.get(&client_id) {
                    tracing::error!(
                        client = client_id,
                        pid = p.client_pid,
                        uid = p.uid,
                        shadow = p.pid,
                        reason = %control::escape(&reason),
                        "malformed request queue: this client's calls fail from now on \
                         (other clients are not affected)"
                    );
                }
                self.shadow_dead(client_id);
            }
            ShadowMsg::ForkPending { token, pid } => {
                let Some(parent) = self.clients.get(&client_id) else {
                    return;
                };
                let (parent_pid, uid) = (parent.pid, parent.uid);
                let accepted = if token == 0 || token > i64::MAX as u64 {
                    Err(anyhow!("bad token"))
                } else if self.pending.contains_key(&token) {
                    Err(anyhow!("token already in use"))
                } else {
                    accept_pending(parent_pid, uid, pid, fds)
                };
                match accepted {
                    Ok(proc_) => {
                        self.pending.insert(
                            token,
                            Pending {
                                parent_client: client_id,
                                proc_,
                                created: Instant::now(),
                                orphaned: None,
                            },
                        );
                        tracing::debug!(client = client_id, token, pid, "fork pending");
                    }
                    Err(e) => {
                        tracing::warn!(client = client_id, token, "rejected forked shadow: {e:#}")
                    }
                }
            }
            ShadowMsg::ForkAbort { token } => match self.pending.get(&token) {
                Some(p) if p.parent_client == client_id => self.drop_pending(token),
                _ => tracing::warn!(
                    client = client_id,
                    token,
                    "fork abort for a shadow it does not own"
                ),
            },
            other => tracing::warn!(
                client = client_id,
                "unexpected message from shadow: {other:?}"
            ),
        }
    }

    /// Reap every exited child (direct shadows and adopted orphans).
    fn reap(&mut self) {
        while let Ok(Some((pid, status))) = rustix::process::waitpid(None, WaitOptions::NOHANG) {
            tracing::debug!(pid = pid.as_raw_nonzero().get(), ?status, "reaped");
        }
    }

    fn kill_all(&mut self) {
        for (_, p) in self.pending.drain() {
            p.proc_.kill();
        }
        for (_, p) in self.clients.drain() {
            p.kill_and_reap();
        }
        self.reap();
    }
}

/// Check a `ForkPending` announcement: one socket attached, and `pid` is
/// a live child of the announcing shadow's zygote (a child of the shadow:
/// `shadow::zygote`).
fn accept_pending(shadow_pid: u32, uid: u32, pid: u32, fds: Vec<OwnedFd>) -> Result<ShadowProc> {
    let [sock]: [OwnedFd; 1] = fds
        .try_into()
        .map_err(|v: Vec<OwnedFd>| anyhow!("ForkPending carries {} descriptors, not 1", v.len()))?;
    let child = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| anyhow!("bad pid"))?;
    let pidfd = pidfd_open(child, PidfdFlags::empty()).context("pidfd_open")?;
    // Checked after pinning the processes: a pidfd names the process whose
    // parent we read (a pid reused in between would fail the check), and a
    // child whose zygote died meanwhile has been re-parented (to us), so
    // the second reading of its parent tells.
    let zygote = parent_of(pid).context("cannot read the child's parent")?;
    let zygote_pid = Pid::from_raw(zygote as i32).ok_or_else(|| anyhow!("no parent"))?;
    let _pin = pidfd_open(zygote_pid, PidfdFlags::empty()).context("pidfd_open(zygote)")?;
    let grandparent = parent_of(zygote).context("cannot read the zygote's parent")?;
    if grandparent != shadow_pid || parent_of(pid).ok() != Some(zygote) {
        bail!(
            "process {pid} is not a child of the zygote of shadow {shadow_pid} \
             (parent {zygote}, its parent {grandparent})"
        );
    }
    Ok(ShadowProc {
        pid,
        pidfd,
        sock,
        creds: None,
        client_pid: 0,
        uid,
    })
}

/// Parent pid from `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Result<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed stat"))?;
    let ppid = rest
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("malformed stat"))?;
    Ok(ppid.parse()?)
}

/// Wait for a shadow's first message: `Ready` or `SetupFailed`.
fn wait_ready(p: &ShadowProc) -> Result<()> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        heartbeat::beat();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("timed out after {SETUP_TIMEOUT:?}");
        }
        let left = left.min(Duration::from_millis(TICK_MS as u64));
        let ts = rustix::time::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos() as i64,
        };
        let mut fds = [PollFd::new(&p.sock, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => continue,
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(anyhow!("poll: {e}")),
        }
    }
    match control::recv::<ShadowMsg>(p.sock.as_fd())? {
        Some((ShadowMsg::Ready, _)) => Ok(()),
        Some((ShadowMsg::SetupFailed { message }, _)) => Err(anyhow!("{message}")),
        Some((other, _)) => Err(anyhow!("unexpected first message {other:?}")),
        None => Err(anyhow!("shadow exited during setup")),
    }
}

fn kill_pid(pid: u32) {
    if let Some(p) = Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, Signal::KILL);
    }
}

/// Reap our own fresh child `pid` (before a pidfd exists for it).
fn wait_pid(pid: u32) {
    if let Some(p) = Pid::from_raw(pid as i32) {
        let _ = rustix::process::waitpid(Some(p), WaitOptions::empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_must_name_a_grandchild_of_the_announcing_shadow() {
        use std::io::BufRead;
        let me = std::process::id();
        // We play the shadow, `sh` its zygote, `sleep` a forked child.
        let mut zygote = std::process::Command::new("sh")
            .args(["-c", "sleep 10 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(zygote.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let child: u32 = line.trim().parse().unwrap();
        assert_eq!(parent_of(zygote.id()).unwrap(), me);
        assert_eq!(parent_of(child).unwrap(), zygote.id());
        let sock = || {
            let (a, _b) = socketpair(
                AddressFamily::UNIX,
                SocketType::SEQPACKET,
                SocketFlags::CLOEXEC,
                None,
            )
            .unwrap();
            a
        };
        let ok = accept_pending(me, 0, child, vec![sock()]).unwrap();
        assert_eq!(ok.pid, child);
        // Our own child (not the zygote's), the zygote's parent is not the
        // announcer, no descriptor, too many, absurd pids.
        assert!(accept_pending(me, 0, zygote.id(), vec![sock()]).is_err());
        assert!(accept_pending(zygote.id(), 0, child, vec![sock()]).is_err());
        assert!(accept_pending(me, 0, me, vec![sock()]).is_err());
        assert!(accept_pending(me, 0, 1, vec![sock()]).is_err());
        assert!(accept_pending(me, 0, child, vec![]).is_err());
        assert!(accept_pending(me, 0, child, vec![sock(), sock()]).is_err());
        assert!(accept_pending(me, 0, 0, vec![sock()]).is_err());
        assert!(accept_pending(me, 0, u32::MAX, vec![sock()]).is_err());
        assert!(accept_pending(me + 1, 0, child, vec![sock()]).is_err());
        ok.kill();
        zygote.wait().unwrap();
    }
}
