//! Fault detection and recovery of the domains.
//!
//! Detection: the domain process exits (its pidfd, `watch`); its heartbeat
//! page stops advancing for `Settings::hang_timeout` (checked here on every
//! watcher tick); a client reports garbage in its queue (`ReportFault`); a
//! command's control link breaks or times out (`Daemon::domain_lost`).
//! Every path ends in `Daemon::domain_gone`, which marks the state pages of
//! the domain's clients FAILED (their waiting calls return errors within
//! ~100 ms), forgets those clients (they register again at their next
//! call) and asks the watcher for a restart. Restarts run on the watcher
//! (the main thread: the domains' parent-death signal follows the thread
//! that spawned them), with a back-off when a domain fails again soon after
//! it came up (a crash loop).

use super::{lock, Daemon};
use crate::backend::Phase;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A restarted domain that fails again within this time gets a back-off.
const STABLE_AFTER: Duration = Duration::from_secs(2);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a registration waits for a domain that is being restarted.
pub const REGISTER_WAIT: Duration = Duration::from_secs(10);
/// A domain whose heartbeat changed this recently counts as running when
/// the shadows' heartbeats are judged (it beats every 200 ms).
const DOMAIN_FRESH: Duration = Duration::from_secs(1);

/// Failure and restart book-keeping of one domain.
pub struct Recovery {
    /// The watcher should (re)start the domain.
    pub want_restart: AtomicBool,
    /// Bumped at every failure: work begun against an older incarnation
    /// (a registration, a command) must not touch the new one.
    pub epoch: AtomicU64,
    state: Mutex<State>,
}

struct State {
    restarts: u32,
    last_failure: Option<String>,
    failed_at: Option<Instant>,
    last_recovery: Option<Duration>,
    ready_at: Option<Instant>,
    next_attempt: Option<Instant>,
    backoff: Duration,
    heartbeat: Option<u64>,
    heartbeat_seen: Instant,
}

/// What `status` shows.
pub struct Snapshot {
    pub restarts: u32,
    pub last_failure: Option<String>,
    pub last_recovery: Option<Duration>,
}

impl Recovery {
    pub fn new() -> Recovery {
        Recovery {
            want_restart: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            state: Mutex::new(State {
                restarts: 0,
                last_failure: None,
                failed_at: None,
                last_recovery: None,
                ready_at: None,
                next_attempt: None,
                backoff: Duration::ZERO,
                heartbeat: None,
                heartbeat_seen: Instant::now(),
            }),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    pub fn snapshot(&self) -> Snapshot {
        let st = lock(&self.state);
        Snapshot {
            restarts: st.restarts,
            last_failure: st.last_failure.clone(),
            last_recovery: st.last_recovery,
        }
    }

    /// A failure was detected (`why`); `restart`: ask for a restart.
    fn failed(&self, why: &str, restart: bool) {
        let mut st = lock(&self.state);
        let now = Instant::now();
        let stamp = humantime_now();
        st.last_failure = Some(format!("{why} (at {stamp})"));
        st.failed_at = Some(now);
        // A crash loop: back off, doubling, while it keeps failing soon
        // after coming up.
        let unstable = st.ready_at.is_some_and(|r| r.elapsed() < STABLE_AFTER);
        st.backoff = if unstable {
            (st.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF)
        } else {
            Duration::ZERO
        };
        st.next_attempt = Some(now + st.backoff);
        drop(st);
        if restart {
            self.want_restart.store(true, Ordering::SeqCst);
        }
    }

    /// Waiting for a restart (requested, or under way)?
    pub fn pending(&self) -> bool {
        self.want_restart.load(Ordering::SeqCst)
    }
}

/// Wall-clock time for log and status lines (seconds since the epoch,
/// with milliseconds: good enough to correlate with the log).
fn humantime_now() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", t.as_secs(), t.subsec_millis())
}

impl Daemon {
    /// Record a failure of domain `i` (called by `domain_gone` once per
    /// incarnation) and wake the watcher for the restart.
    pub(super) fn record_failure(&self, i: usize, why: &str) {
        let s = self.served(i);
        s.recovery.failed(why, self.settings.restart);
        self.poke_watcher();
    }

    /// Declare domain `i` failed now: kill every process of it, fail its
    /// clients' calls, restart it.
    pub(super) fn fail_domain(&self, i: usize, why: &str) {
        let s = self.served(i);
        tracing::error!(domain = %s.domain.spec.name, "{why}: killing the domain");
        s.domain.kill();
        self.domain_gone(i, why);
    }

    /// `virtuos domain restart`: restart even without automatic restarts.
    pub(super) fn request_restart(&self, i: usize) {
        let s = self.served(i);
        if s.domain.phase() == Phase::Connected {
            self.fail_domain(i, "restart requested");
        }
        s.recovery.want_restart.store(true, Ordering::SeqCst);
        self.poke_watcher();
    }

    /// Watcher tick: hang detection, then due restarts.
    pub(super) fn recovery_tick(&self) {
        for i in 0..self.domains.len() {
            self.check_heartbeat(i);
            self.check_shadows(i);
        }
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        for i in 0..self.domains.len() {
            let s = self.served(i);
            if !s.recovery.pending() {
                continue;
            }
            let due = lock(&s.recovery.state)
                .next_attempt
                .is_none_or(|t| Instant::now() >= t);
            if due {
                self.restart(i);
            }
        }
    }

    /// Earliest pending restart, for the watcher's poll timeout.
    pub(super) fn next_restart_in(&self) -> Option<Duration> {
        self.domains
            .iter()
            .filter(|s| s.recovery.pending())
            .map(|s| {
                lock(&s.recovery.state)
                    .next_attempt
                    .map_or(Duration::ZERO, |t| {
                        t.saturating_duration_since(Instant::now())
                    })
            })
            .min()
    }

    fn check_heartbeat(&self, i: usize) {
        let s = self.served(i);
        if s.domain.phase() != Phase::Connected {
            return;
        }
        let Some(beat) = s.domain.heartbeat() else {
            return;
        };
        let stalled = {
            let mut st = lock(&s.recovery.state);
            if st.heartbeat != Some(beat) {
                st.heartbeat = Some(beat);
                st.heartbeat_seen = Instant::now();
                None
            } else {
                let quiet = st.heartbeat_seen.elapsed();
                (quiet > self.settings.hang_timeout).then_some(quiet)
            }
        };
        if let Some(quiet) = stalled {
            self.fail_domain(
                i,
                &format!("hung: no heartbeat for {} ms", quiet.as_millis()),
            );
        }
    }

    /// Per-client liveness: the shadow of each client bumps the heartbeat in
    /// the client's state page while its workers take requests (`shadow`'s
    /// `ClaimWatch` in the domain). A client whose shadow stopped beating for
    /// `hang_timeout` while the domain itself beats (so not a hung or
    /// stopped domain, which `check_heartbeat` handles) has lost its shadow:
    /// `shadow_stalled`.
    fn check_shadows(&self, i: usize) {
        let s = self.served(i);
        if s.domain.phase() != Phase::Connected || s.domain.heartbeat().is_none() {
            return;
        }
        let domain_fresh = {
            let st = lock(&s.recovery.state);
            st.heartbeat.is_some() && st.heartbeat_seen.elapsed() < DOMAIN_FRESH
        };
        let now = Instant::now();
        let mut stalled = Vec::new();
        for c in s.clients().iter_mut().filter(|c| !c.failed) {
            let beat = c.regions.heartbeat();
            if beat != c.heartbeat.0 || !domain_fresh {
                // Unknown while the domain itself is quiet: start afresh.
                c.heartbeat = (beat, now);
                continue;
            }
            let quiet = now.saturating_duration_since(c.heartbeat.1);
            if quiet > self.settings.hang_timeout {
                stalled.push((c.pid, quiet));
            }
        }
        for (pid, quiet) in stalled {
            self.shadow_stalled(i, pid, quiet);
        }
    }

    /// (Re)start domain `i` now (watcher thread only).
    fn restart(&self, i: usize) {
        let s = self.served(i);
        if let Some(h) = s.host_if() {
            crate::backend::hostnet::remove(&h);
        }
        // Whatever is left of the previous incarnation.
        s.domain.kill();
        s.domain.disconnect();
        tracing::info!(domain = %s.domain.spec.name, "restarting the domain");
        match s.domain.start() {
            Ok(()) => {
                s.recovery.want_restart.store(false, Ordering::SeqCst);
                *lock(&s.error) = None;
                let mut st = lock(&s.recovery.state);
                st.restarts += 1;
                st.ready_at = Some(Instant::now());
                st.last_recovery = st.failed_at.map(|t| t.elapsed());
                st.heartbeat = None;
                st.heartbeat_seen = Instant::now();
                tracing::info!(
                    domain = %s.domain.spec.name,
                    restarts = st.restarts,
                    launch_ms = s.domain.last_launch().as_secs_f64() * 1000.0,
                    since_failure_ms = st.last_recovery.map(|d| d.as_secs_f64() * 1000.0),
                    "domain restarted"
                );
            }
            Err(e) => {
                let mut st = lock(&s.recovery.state);
                st.backoff = (st.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                st.next_attempt = Some(Instant::now() + st.backoff);
                tracing::error!(
                    domain = %s.domain.spec.name,
                    retry_in = ?st.backoff,
                    "restart failed: {e:#}"
                );
                drop(st);
                s.set_error(format!("restart failed: {e:#}"));
                if let Some(h) = s.host_if() {
                    crate::backend::hostnet::remove(&h);
                }
            }
        }
    }
}
