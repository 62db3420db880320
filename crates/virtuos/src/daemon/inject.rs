//! `Crash` (fault injection for tests and demos) and `ReportFault` (a
//! client read garbage from a domain's queue: the domain is probed, and
//! failed only if it does not answer).

use super::answer::{error, plain, Answer};
use super::clients::Peer;
use super::regions::Regions;
use super::{lock, Daemon};
use crate::backend::Phase;
use rustix::process::Signal;
use std::sync::atomic::Ordering;
use std::time::Duration;
use virtuos_abi::control::{self, Credentials, DaemonReply, DomainCommand, DomainReply, Fault};

/// How long the daemon's probe of a reported domain waits for its ping.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The same for a VM (TCG, bells across the VM boundary).
const VM_PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// The probe shadow's uid and gid: nobody.
const NOBODY: u32 = 65534;

impl Daemon {
    /// Inject `how` into `domain`. Detection is left to the ordinary paths
    /// (pidfd, heartbeat, clients' checks): nothing here marks the domain
    /// failed.
    pub(super) fn crash(&self, domain: &str, how: Fault) -> Answer {
        let Some(i) = self.find(domain) else {
            return error(format!("unknown domain {domain:?}"));
        };
        let s = self.served(i);
        if s.domain.phase() != Phase::Connected {
            return error(format!(
                "the {domain} domain is {}",
                s.domain.phase().as_str()
            ));
        }
        tracing::warn!(domain, how = how.as_str(), "fault injection");
        let done = match how {
            Fault::Kill => s
                .domain
                .signal_main(Signal::KILL)
                .map_err(|e| e.to_string()),
            Fault::Hang => s.domain.signal_all(Signal::STOP).map_err(|e| e.to_string()),
            Fault::Panic | Fault::Corrupt => {
                let epoch = s.recovery.epoch();
                match s.domain.command(&DomainCommand::InjectFault { how }, &[]) {
                    Ok(DomainReply::Ok) => Ok(()),
                    Ok(other) => Err(format!("the domain answered {other:?}")),
                    // The fault took effect before its answer got here: a
                    // client already read garbage and the domain is being
                    // failed for it (a VM's answer crosses a slow serial
                    // port). Give that failure a moment to be recorded.
                    Err(_) if failed_meanwhile(&s.recovery, epoch) => Ok(()),
                    Err(e) => {
                        self.domain_lost(i, &e, epoch);
                        Err(e.to_string())
                    }
                }
            }
        };
        match done {
            Ok(()) => plain(DaemonReply::Ok),
            Err(e) => error(format!("cannot inject {}: {e}", how.as_str())),
        }
    }

    /// A client says `domain` wrote garbage into its queue. Only a process
    /// registered with the domain may say so, and its word alone fails no
    /// one else: the daemon cannot tell garbage a domain wrote from garbage
    /// the client wrote into its own region. So the daemon probes the
    /// domain (`probe`: a ping through a shadow of its own). If the domain
    /// answers, only the reporter's session fails (its state page says
    /// FAILED, its shadow is removed; it registers afresh at its next
    /// call); if not, the domain is failed and restarted for everyone.
    pub(super) fn report_fault(&self, peer: Peer, domain: &str, reason: &str) -> Answer {
        let Some(i) = self.find(domain) else {
            return error(format!("unknown domain {domain:?}"));
        };
        let s = self.served(i);
        let reason = control::escape(reason);
        // One probe at a time per domain: reports that queue behind a
        // probe that failed the domain find their session gone.
        let _probing = lock(&s.probe_lock);
        if s.clients().get(peer.pid).is_none() || s.domain.phase() != Phase::Connected {
            // A client of an older incarnation (already failed and
            // forgotten), or a stranger.
            return plain(DaemonReply::Ok);
        }
        let epoch = s.recovery.epoch();
        match self.probe(i) {
            Ok(()) => {
                tracing::warn!(
                    pid = peer.pid,
                    uid = peer.uid,
                    domain,
                    reason = %reason,
                    "fault report, but the domain answers a probe: failing only this \
                     client's session"
                );
                self.fail_client(i, peer.pid);
            }
            Err(why) => {
                if s.recovery.epoch() == epoch {
                    self.fail_domain(
                        i,
                        &format!(
                            "corrupt queue: process {} (uid {}) read {reason}, and the \
                             domain failed a probe: {why}",
                            peer.pid, peer.uid
                        ),
                    );
                }
            }
        }
        plain(DaemonReply::Ok)
    }

    /// Fail one client's session of domain `i`: its calls fail (state page
    /// FAILED), its shadow is removed; the process registers again at its
    /// next call. Other clients are not touched.
    fn fail_client(&self, i: usize, pid: u32) {
        if let Some(c) = self.served(i).clients().get(pid) {
            c.regions.mark_failed();
        }
        self.remove_client(i, pid);
    }

    /// Does domain `i` still serve? A shadow of the daemon's own (uid
    /// nobody, fresh regions) pings it through a request queue, exactly the
    /// path a client's call takes; a corrupted or hung domain fails that.
    /// When no probe shadow can be had (a VM with every region slot in
    /// use, a domain that refuses another shadow), a `Ping` on the control
    /// link must be answered instead.
    fn probe(&self, i: usize) -> Result<(), String> {
        let s = self.served(i);
        let epoch = s.recovery.epoch();
        let timeout = match s.domain.spec.backend {
            crate::config::Backend::Process => PROBE_TIMEOUT,
            crate::config::Backend::Vm => VM_PROBE_TIMEOUT,
        };
        let client_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let regions = match s.domain.slot_pool() {
            Some(pool) => Regions::lease(&pool, s.domain.cpus()),
            None => Regions::create(client_id, s.domain.cpus()),
        };
        let regions = match regions {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(domain = %s.domain.spec.name, "no probe shadow ({e}): pinging the control link");
                return self.ping_link(i, epoch);
            }
        };
        let cmd = DomainCommand::AddClient {
            client_id,
            pid: std::process::id(),
            creds: Credentials::of_user(NOBODY, NOBODY, vec![]),
            slot: regions.slot(),
            nproc: None,
        };
        match s.domain.command(&cmd, &regions.domain_fds()) {
            Ok(DomainReply::Ok) => {}
            Ok(other) => {
                tracing::info!(domain = %s.domain.spec.name, ?other, "no probe shadow: pinging the control link");
                return self.ping_link(i, epoch);
            }
            Err(e) => {
                self.domain_lost(i, &e, epoch);
                return Err(e.to_string());
            }
        }
        let answer = regions.ping(timeout);
        match s
            .domain
            .command(&DomainCommand::RemoveClient { client_id }, &[])
        {
            Ok(_) => {}
            Err(e) => {
                self.domain_lost(i, &e, epoch);
                return Err(e.to_string());
            }
        }
        answer
    }

    /// `Ping` on domain `i`'s control link (incarnation `epoch`).
    fn ping_link(&self, i: usize, epoch: u64) -> Result<(), String> {
        match self.served(i).domain.command(&DomainCommand::Ping, &[]) {
            Ok(DomainReply::Ok) => Ok(()),
            Ok(other) => Err(format!("it answered Ping with {other:?}")),
            Err(e) => {
                self.domain_lost(i, &e, epoch);
                Err(e.to_string())
            }
        }
    }
}

/// Whether the domain failed (its epoch moved on) since `epoch`, waiting
/// up to a second for a failure under way to be recorded.
fn failed_meanwhile(r: &super::recovery::Recovery, epoch: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while r.epoch() == epoch && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    r.epoch() != epoch
}
