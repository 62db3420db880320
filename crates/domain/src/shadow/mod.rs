//! A shadow process: the domain-side twin of one client process.
//!
//! It is chrooted into the domain's private root and executes the client's
//! forwarded calls with a pool of worker threads (`workers.rs`), each of
//! which takes on the credentials of the client thread whose call it runs
//! (`crate::creds`): the shadow stays root (saved uid 0, every capability
//! permitted) so that its workers can switch. Its own descriptors (control socket, `/proc`
//! dirfd, log) sit at BASE and above, and the `RLIMIT_NOFILE` soft limit
//! (= BASE) keeps every descriptor the client's calls create below it; the
//! executor refuses descriptors >= BASE. BASE is `DOMAIN_FD_LIMIT` when the
//! hard limit can be raised past it (CAP_SYS_RESOURCE), otherwise the hard
//! limit minus `OWN_FDS`. A forked shadow (`fork.rs`, `zygote.rs`) inherits
//! the parent's descriptor table, cwd, umask and BASE.
//!
//! Every shadow makes its zygote (`zygote.rs`) while it is still single
//! threaded, after taking the client's credentials and before mapping its
//! regions; forks of the shadow are forks of the zygote.
//!
//! Descriptor layout of a shadow created by `AddClient`:
//!
//! | fd | what |
//! |---|---|
//! | 0, 1, 2 | `/dev/null` (the client may close and reuse them) |
//! | BASE + 0 | control socket to the main process |
//! | BASE + 1 | `/proc` (`O_PATH`), for `OP_FD_PATH` |
//! | BASE + 2 | log (the domain's stderr) |
//! | BASE + 3.. | region, state page, credentials table (until mapped), bell port (vm), the zygote's socketpair |

use crate::creds;
use crate::proto::{MainMsg, ShadowMsg};
use crate::role::Role;
use crate::{exec, log, sys};
use anyhow::{Context, Result};
use rustix::event::{poll, PollFd, PollFlags};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use virtuos_abi::control;
use virtuos_abi::region::StatePage;
use virtuos_abi::{ClientRegion, DOMAIN_FD_LIMIT};

mod fork;
mod images;
mod wake;
mod workers;
mod zygote;

pub use wake::Waker;

/// Descriptor numbers a shadow reserves for itself above the client's.
const OWN_FDS: u64 = 64;
/// Smallest acceptable client descriptor range.
const MIN_CLIENT_FDS: u64 = 1024;

/// Client descriptors are below `base`; the shadow's own in `[base, hard)`.
#[derive(Clone, Copy, Debug)]
pub struct FdLimits {
    base: u64,
    hard: u64,
}

impl FdLimits {
    fn base_fd(self) -> RawFd {
        self.base as RawFd
    }
}

/// Set RLIMIT_NOFILE to room for the client's descriptors plus our own
/// (hard = soft for now; `finish_setup` lowers the soft limit to `base`).
fn choose_limits() -> Result<FdLimits> {
    let want = DOMAIN_FD_LIMIT + OWN_FDS;
    let set = |n: u64| {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(n),
                maximum: Some(n),
            },
        )
    };
    if set(want).is_ok() {
        return Ok(FdLimits {
            base: DOMAIN_FD_LIMIT,
            hard: want,
        });
    }
    // Without CAP_SYS_RESOURCE the hard limit cannot grow: carve our own
    // descriptors out of its top instead.
    let hard = getrlimit(Resource::Nofile)
        .maximum
        .unwrap_or(want)
        .min(want);
    anyhow::ensure!(
        hard >= MIN_CLIENT_FDS + OWN_FDS,
        "RLIMIT_NOFILE hard limit {hard} is too small for a shadow"
    );
    set(hard).context("cannot set RLIMIT_NOFILE")?;
    tracing::debug!(
        hard,
        "cannot raise RLIMIT_NOFILE past DOMAIN_FD_LIMIT: client descriptors stay below {}",
        hard - OWN_FDS
    );
    Ok(FdLimits {
        base: hard - OWN_FDS,
        hard,
    })
}
/// How often the interrupter re-signals a worker whose call is still running.
const INTERRUPT_RETRY: std::time::Duration = std::time::Duration::from_millis(5);
/// Longest sleep of the interrupter when nothing is pending.
const INTERRUPT_IDLE: std::time::Duration = std::time::Duration::from_millis(500);

/// How often the housekeeping thread bumps the heartbeat.
const HEARTBEAT_MS: i64 = 50;
/// A request left on the submit list this long, while a worker counts as
/// idle and none took anything, means the workers are stuck: the
/// heartbeat stops (the daemon then fails the client, see `ClaimWatch`).
const CLAIM_STALL: std::time::Duration = std::time::Duration::from_secs(3);

pub struct Shadow {
    client_id: u64,
    region: ClientRegion,
    state: StatePage,
    cpus: u32,
    role: Role,
    /// Socket to the main process (shadow -> main messages).
    control: OwnedFd,
    procfd: OwnedFd,
    /// Workers not executing a request (sleeping, spinning or looking).
    idle: AtomicU32,
    workers: AtomicU32,
    /// One `OP_FORK_PREPARE` at a time.
    fork_lock: Mutex<()>,
    /// The client's queue is malformed: every worker stops (`queue_broken`).
    queue_broken: AtomicBool,
    /// Fault injection: complete every request with garbage.
    pub(crate) corrupt: AtomicBool,
    limits: FdLimits,
    /// Requests being executed: (worker tid, entry index). The interrupter
    /// signals a worker only while holding this lock and only if its entry
    /// is still listed, so a signal never lands in a later request.
    running: Mutex<Vec<(u32, u16)>>,
    /// How a sleeping caller is woken (futex, or a bell to the VM's host).
    waker: Waker,
    /// The credentials of the client's threads (written by the main process).
    creds: creds::Reader,
    /// What workers may switch to: the shadow's permitted capabilities;
    /// `None` when the domain runs without privileges and the shadow keeps
    /// the client's credentials at registration (no switching).
    permitted: Option<u64>,
    /// The client's `RLIMIT_NPROC`, applied to `OP_FORK_PREPARE`'s fork.
    nproc: Option<u64>,
    /// The single-threaded process that forks child shadows.
    zygote: zygote::Zygote,
    /// Requests claimed by the workers so far (housekeeping watches it).
    claims: std::sync::atomic::AtomicU64,
    /// The program images the client runs (ETXTBSY), with their pins.
    images: Mutex<images::Running>,
}

/// What `AddClient` hands a freshly forked shadow (raw numbers of the main
/// process's descriptors, which the shadow inherited).
pub struct NewShadow<'a> {
    pub client_id: u64,
    pub control: RawFd,
    pub procfd: RawFd,
    pub region: RawFd,
    pub state: RawFd,
    /// The credentials table (`creds::Writer`), mapped read-only.
    pub creds: RawFd,
    /// Where the state page starts in `state` (0, or inside a VM slot).
    pub state_offset: u64,
    /// VM backend: the bell port and this client's slot.
    pub bell: Option<(RawFd, u8)>,
    pub root: &'a Path,
    pub mount: &'a Path,
    /// The client's `RLIMIT_NPROC` (None: unlimited): see `fork.rs`.
    pub nproc: Option<u64>,
    /// Fault injection `corrupt` happened: misbehave from the first request.
    pub corrupt: bool,
    pub cpus: u32,
    pub role: Role,
}

/// Body of a shadow forked by the main process for `AddClient`. Never
/// returns: the process ends with `exit_now`.
pub fn start_new(a: NewShadow<'_>) -> ! {
    let (fds, limits) = match early_setup(&a) {
        Ok(fds) => fds,
        Err(e) => {
            tracing::error!(client = a.client_id, "shadow setup failed: {e:#}");
            sys::exit_now(1)
        }
    };
    let mut fds = fds.into_iter();
    let mut next = || fds.next().unwrap_or_else(|| sys::exit_now(1));
    let (control, procfd, logfd, region, state) = (next(), next(), next(), next(), next());
    let creds = next();
    let waker = match a.bell {
        Some((_, slot)) => Waker::bell(next(), slot),
        None => Waker::Futex,
    };
    // Process lifetime: the log writer uses it by number.
    std::mem::forget(logfd);
    let inherit = zygote::Inherit {
        client_id: a.client_id,
        cpus: a.cpus,
        role: a.role,
        limits,
        procfd: procfd.as_raw_fd(),
        bell_port: waker.port().map(|p| p.as_raw_fd()),
        nproc: a.nproc,
        permitted: None,
    };
    match finish_setup(&a, inherit, (region, state), creds) {
        Ok((region, state, identity, zygote)) => {
            let shadow = Shadow::new(
                a.client_id,
                region,
                state,
                (a.cpus, a.role),
                (control, procfd),
                (limits, a.nproc),
                (waker, identity, zygote),
            );
            shadow.start_corrupted(a.corrupt);
            shadow.announce_and_serve()
        }
        Err(e) => {
            let msg = ShadowMsg::SetupFailed {
                message: format!("{e:#}"),
            };
            let _ = control::send(control.as_fd(), &msg, &[]);
            sys::exit_now(1)
        }
    }
}

/// Single threaded, still root: signals, limits, descriptor layout.
fn early_setup(a: &NewShadow<'_>) -> Result<(Vec<OwnedFd>, FdLimits)> {
    // Forked shadows are reaped automatically; F_SETOWN'd files must not
    // kill the shadow with SIGIO.
    sys::ignore_signal(libc::SIGCHLD).context("signal(SIGCHLD)")?;
    sys::ignore_signal(libc::SIGIO).context("signal(SIGIO)")?;
    sys::ignore_signal(libc::SIGPIPE).context("signal(SIGPIPE)")?;
    sys::install_interrupt_handler().context("sigaction(SIGUSR2)")?;
    let limits = choose_limits()?;
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("cannot open /dev/null")?;
    let stderr = std::io::stderr();
    let log_src = if rustix::fs::fstat(stderr.as_fd()).is_ok() {
        2
    } else {
        devnull.as_raw_fd()
    };
    let mut keep = vec![a.control, a.procfd, log_src, a.region, a.state, a.creds];
    keep.extend(a.bell.map(|(fd, _)| fd));
    let fds = sys::compact_fds(&keep, devnull.as_raw_fd(), limits.base_fd())
        .context("cannot move the shadow's descriptors")?;
    // Closed (or now 0..2) by `compact_fds`: must not be closed again.
    std::mem::forget(devnull);
    log::set_fd(fds[2].as_raw_fd());
    Ok((fds, limits))
}

/// Chroot, prepare to take the client's credentials, make the zygote, map
/// the regions.
fn finish_setup(
    a: &NewShadow<'_>,
    mut inherit: zygote::Inherit,
    (region_fd, state_fd): (OwnedFd, OwnedFd),
    creds_fd: OwnedFd,
) -> Result<(ClientRegion, StatePage, Identity, zygote::Zygote)> {
    let limits = inherit.limits;
    rustix::process::chroot(a.root)
        .with_context(|| format!("chroot({}) failed", a.root.display()))?;
    rustix::process::chdir(a.mount)
        .with_context(|| format!("chdir({}) failed", a.mount.display()))?;
    let identity = Identity::take(creds_fd)?;
    inherit.permitted = identity.permitted;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(limits.base),
            maximum: Some(limits.hard),
        },
    )
    .context("cannot lower RLIMIT_NOFILE")?;
    // Still single threaded; with the credentials, root, cwd and limits
    // its children need, and without this client's regions.
    let zygote = zygote::Zygote::start(inherit)?;
    let (region, state) = map_regions(region_fd, state_fd, a.state_offset)?;
    state.get().init(a.cpus);
    Ok((region, state, identity, zygote))
}

/// How a shadow's workers get their clients' credentials.
pub(crate) struct Identity {
    pub(super) creds: creds::Reader,
    pub(super) permitted: Option<u64>,
}

impl Identity {
    /// Map the table; keep the privileges to switch (root), or, where the
    /// domain has none, take the client's credentials once for the whole
    /// process. Single threaded (before the zygote and the workers start).
    fn take(creds_fd: OwnedFd) -> Result<Identity> {
        let creds = creds::Reader::map(&creds_fd)?;
        let switchable =
            rustix::process::geteuid().is_root() && sys::keep_caps_across_id_changes().is_ok();
        let permitted = if switchable {
            Some(sys::thread_caps().context("capget")?.1)
        } else {
            let (_, c) = creds
                .lookup(0)
                .context("cannot read the client's credentials")?;
            sys::drop_privileges(c.euid(), c.gids[1], &c.groups).with_context(|| {
                format!(
                    "cannot take the client's credentials uid {} gid {}",
                    c.euid(),
                    c.gids[1]
                )
            })?;
            None
        };
        Ok(Identity { creds, permitted })
    }
}

/// Map and check a client's region and state page (closing the memfds).
fn map_regions(
    region_fd: OwnedFd,
    state_fd: OwnedFd,
    state_offset: u64,
) -> Result<(ClientRegion, StatePage)> {
    let region = ClientRegion::map(&region_fd).context("cannot map the request region")?;
    region
        .validate()
        .context("the request region is not valid")?;
    let state =
        StatePage::map_at(&state_fd, state_offset, true).context("cannot map the state page")?;
    Ok((region, state))
}

/// Run `f` with the `RLIMIT_NOFILE` soft limit raised to the hard limit, so
/// that descriptors in the shadow's own range can be created.
fn with_high_fds<T>(f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    let lim = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        },
    )?;
    let r = f();
    let _ = setrlimit(Resource::Nofile, lim);
    r
}

impl Shadow {
    fn new(
        client_id: u64,
        region: ClientRegion,
        state: StatePage,
        (cpus, role): (u32, Role),
        (control, procfd): (OwnedFd, OwnedFd),
        (limits, nproc): (FdLimits, Option<u64>),
        (waker, identity, zygote): (Waker, Identity, zygote::Zygote),
    ) -> Arc<Shadow> {
        let st = state.get();
        st.workers.store(0, Ordering::Relaxed);
        st.spinning_workers.store(0, Ordering::Relaxed);
        Arc::new(Shadow {
            client_id,
            region,
            state,
            cpus: cpus.max(1),
            role,
            control,
            procfd,
            idle: AtomicU32::new(0),
            workers: AtomicU32::new(0),
            fork_lock: Mutex::new(()),
            queue_broken: AtomicBool::new(false),
            corrupt: AtomicBool::new(false),
            limits,
            running: Mutex::new(Vec::new()),
            waker,
            creds: identity.creds,
            permitted: identity.permitted,
            nproc,
            zygote,
            claims: std::sync::atomic::AtomicU64::new(0),
            images: Mutex::new(images::Running::default()),
        })
    }

    /// A shadow started after `corrupt` was injected misbehaves from its
    /// first request (before its workers start: a probe of the domain
    /// must not find it sane).
    fn start_corrupted(&self, corrupt: bool) {
        if corrupt {
            self.corrupt.store(true, Ordering::Release);
        }
    }

    /// Tell the main process we serve, start the workers, and keep the
    /// heartbeat going on this thread. Never returns.
    fn announce_and_serve(self: Arc<Self>) -> ! {
        if !workers::spawn(&self) {
            tracing::error!(client = self.client_id, "cannot start a worker");
            sys::exit_now(1);
        }
        let sh = Arc::clone(&self);
        if let Err(e) = std::thread::Builder::new()
            .name("interrupter".into())
            .stack_size(64 * 1024)
            .spawn(move || sh.interrupter())
        {
            tracing::error!(client = self.client_id, "cannot start the interrupter: {e}");
            sys::exit_now(1);
        }
        if let Err(e) = control::send(self.control.as_fd(), &ShadowMsg::Ready, &[]) {
            tracing::error!(client = self.client_id, "cannot reach the domain: {e}");
            sys::exit_now(1);
        }
        tracing::debug!(
            client = self.client_id,
            pid = std::process::id(),
            zygote = self.zygote.pid(),
            "shadow serving"
        );
        self.housekeeping()
    }

    /// Executing request `index` on this thread (until `finished`).
    pub(crate) fn started(&self, tid: u32, index: u16) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((tid, index));
    }

    pub(crate) fn finished(&self, tid: u32, index: u16) {
        let mut r = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = r.iter().position(|&x| x == (tid, index)) {
            r.swap_remove(i);
        }
    }

    /// Interrupt the calls whose client asked for it (a signal arrived
    /// while it waited): signal the worker executing each until it is done.
    /// Repeats every few milliseconds while such calls run, because the
    /// signal may land just before the worker enters its blocking call.
    fn interrupter(&self) {
        let mut seen = 0u32;
        loop {
            let mut pending = false;
            {
                let r = self.running.lock().unwrap_or_else(|p| p.into_inner());
                for &(tid, index) in r.iter() {
                    if self
                        .region
                        .entry(index)
                        .is_some_and(|e| e.interrupt_requested())
                    {
                        sys::interrupt_thread(tid);
                        pending = true;
                    }
                }
            }
            let slice = if pending {
                INTERRUPT_RETRY
            } else {
                INTERRUPT_IDLE
            };
            seen = self.region.wait_interrupt_bell(seen, slice);
        }
    }

    /// Heartbeat, and exit when the main process goes away (its end of the
    /// control socket closes).
    fn housekeeping(&self) -> ! {
        let st = self.state.get();
        let period = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: HEARTBEAT_MS * 1_000_000,
        };
        let mut watch = ClaimWatch::default();
        loop {
            if watch.healthy(self) {
                st.heartbeat.fetch_add(1, Ordering::Release);
            }
            let mut fds = [PollFd::new(&self.control, PollFlags::IN)];
            match poll(&mut fds, Some(&period)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    tracing::error!(client = self.client_id, "poll on control socket: {e}");
                    sys::exit_now(1);
                }
            }
            let rev = fds[0].revents();
            if rev.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
                tracing::debug!(client = self.client_id, "domain main process gone");
                sys::exit_now(0);
            }
            match control::recv::<MainMsg>(self.control.as_fd()) {
                Ok(None) => sys::exit_now(0),
                Ok(Some((MainMsg::Corrupt, _))) => {
                    tracing::warn!(
                        client = self.client_id,
                        "fault injection: corrupting results"
                    );
                    self.corrupt.store(true, Ordering::Release);
                }
                Ok(Some((msg, _fds))) => {
                    tracing::warn!(client = self.client_id, "unexpected message {msg:?}")
                }
                Err(e) => tracing::warn!(client = self.client_id, "bad control message: {e}"),
            }
        }
    }

    /// The client's queue is malformed (`why`): stop serving it. Its state
    /// page says FAILED (its waiting calls fail, it does not wait for us),
    /// and the main process is told, which logs who the client is and ends
    /// this shadow. Other clients are not affected. Once per shadow.
    pub(crate) fn queue_broken(&self, why: &str) {
        if self.queue_broken.swap(true, Ordering::AcqRel) {
            return;
        }
        self.state
            .get()
            .status
            .store(virtuos_abi::state::status::FAILED, Ordering::Release);
        let msg = ShadowMsg::QueueBroken {
            reason: why.to_string(),
        };
        if let Err(e) = self.tell_main(&msg, &[]) {
            tracing::error!(
                client = self.client_id,
                "malformed queue ({why}); cannot tell the domain: {e}"
            );
            sys::exit_now(1);
        }
    }

    /// Send a message to the main process.
    fn tell_main(&self, msg: &ShadowMsg, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        control::send(self.control.as_fd(), msg, fds)
    }
}

/// The shadow's own liveness test, run by housekeeping before each beat.
///
/// The heartbeat in the state page says more than "the process exists": it
/// says "a request put on the submit list gets claimed". A shadow whose
/// workers are stuck (deadlocked, or never started) while its housekeeping
/// thread runs on must stop beating, or its client waits forever. Stuck
/// means: something has been on the submit list for `CLAIM_STALL`, no
/// request was taken meanwhile, and a worker counts as idle (so one should
/// have taken it; with every worker busy in a long call, waiting is right).
/// Once stuck, always stuck: the daemon fails the client and removes the
/// shadow.
#[derive(Default)]
struct ClaimWatch {
    claims: u64,
    waiting_since: Option<std::time::Instant>,
    stuck: bool,
}

impl ClaimWatch {
    fn healthy(&mut self, shadow: &Shadow) -> bool {
        let was_stuck = self.stuck;
        let ok = self.observe(
            shadow.claims.load(Ordering::Relaxed),
            shadow.region.has_submitted(),
            shadow.idle.load(Ordering::Acquire),
            std::time::Instant::now(),
        );
        if !ok && !was_stuck {
            tracing::error!(
                client = shadow.client_id,
                workers = shadow.workers.load(Ordering::Relaxed),
                idle = shadow.idle.load(Ordering::Relaxed),
                "no worker took a request for {CLAIM_STALL:?}: the shadow is stuck, \
                 its heartbeat stops"
            );
        }
        ok
    }

    /// One look: `claims` taken so far, whether the submit list holds
    /// something, how many workers count as idle. False once stuck.
    fn observe(
        &mut self,
        claims: u64,
        submitted: bool,
        idle: u32,
        now: std::time::Instant,
    ) -> bool {
        if self.stuck {
            return false;
        }
        let progress = claims != self.claims;
        self.claims = claims;
        if progress || !submitted || idle == 0 {
            self.waiting_since = None;
            return true;
        }
        let since = *self.waiting_since.get_or_insert(now);
        if now.saturating_duration_since(since) < CLAIM_STALL {
            return true;
        }
        self.stuck = true;
        false
    }
}

impl exec::Host for Shadow {
    fn role(&self) -> Role {
        self.role
    }

    fn fd_limit(&self) -> u64 {
        self.limits.base
    }

    fn procfd(&self) -> BorrowedFd<'_> {
        self.procfd.as_fd()
    }

    fn fork_prepare(&self) -> i64 {
        fork::prepare(self)
    }

    fn fork_abort(&self, token: u64) -> i64 {
        match self.tell_main(&ShadowMsg::ForkAbort { token }, &[]) {
            Ok(()) => 0,
            Err(e) => -(e.raw_os_error().unwrap_or(libc::EIO) as i64),
        }
    }

    fn exec_claim(&self, fd: i32, image: bool) -> i64 {
        self.claim_image(fd, image)
    }

    fn exec_abort(&self) -> i64 {
        self.abort_image()
    }

    fn exec_done(&self, exec: bool) -> i64 {
        self.image_done(exec)
    }
}

#[cfg(test)]
mod tests {
    use super::{ClaimWatch, CLAIM_STALL};
    use std::time::{Duration, Instant};

    #[test]
    fn claim_watch_fails_only_an_idle_shadow_that_takes_nothing() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let stall = CLAIM_STALL.as_millis() as u64;
        // Requests keep being taken: healthy however long the list is busy.
        let mut w = ClaimWatch::default();
        for i in 0..100 {
            assert!(w.observe(i, true, 1, at(i * stall)));
        }
        // Every worker busy in a long call: waiting is right.
        let mut w = ClaimWatch::default();
        for i in 0..10 {
            assert!(w.observe(5, true, 0, at(i * stall)));
        }
        // Nothing submitted: nothing to take.
        let mut w = ClaimWatch::default();
        for i in 0..10 {
            assert!(w.observe(5, false, 1, at(i * stall)));
        }
        // A request sits while a worker counts as idle: stuck after the
        // stall time, and stays stuck.
        let mut w = ClaimWatch::default();
        assert!(w.observe(7, true, 1, at(0)));
        assert!(w.observe(7, true, 1, at(1)));
        assert!(w.observe(7, true, 1, at(stall - 1)));
        assert!(!w.observe(7, true, 1, at(stall + 1)));
        assert!(!w.observe(8, false, 1, at(stall + 2)));
        // A claim in between restarts the clock.
        let mut w = ClaimWatch::default();
        assert!(w.observe(1, true, 1, at(0)));
        assert!(w.observe(1, true, 1, at(stall - 10)));
        assert!(w.observe(2, true, 1, at(stall - 5)));
        assert!(w.observe(2, true, 1, at(stall + 10)));
        assert!(!w.observe(2, true, 1, at(2 * stall + 10)));
    }
}
