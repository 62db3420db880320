//! `Crash` (fault injection for tests and demos) and `ReportFault` (a
//! client read garbage from a domain's queue).

use super::clients::Peer;
use super::requests::{error, plain, Answer};
use super::Daemon;
use crate::backend::Phase;
use rustix::process::Signal;
use virtuos_abi::control::{DaemonReply, DomainCommand, DomainReply, Fault};

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
    /// registered with the domain may say so; the domain is then treated
    /// as failed (killed, its clients' calls fail, restarted). The daemon
    /// cannot tell garbage a domain wrote from garbage the client wrote
    /// into its own region, so a registered client can force a restart of
    /// a domain it uses (see docs/FAULTS.md).
    pub(super) fn report_fault(&self, peer: Peer, domain: &str, reason: &str) -> Answer {
        let Some(i) = self.find(domain) else {
            return error(format!("unknown domain {domain:?}"));
        };
        let s = self.served(i);
        if s.clients().get(peer.pid).is_none() {
            // A client of an older incarnation (already failed and
            // forgotten), or a stranger.
            return plain(DaemonReply::Ok);
        }
        if s.domain.phase() == Phase::Connected {
            self.fail_domain(
                i,
                &format!("corrupt queue: process {} read {reason}", peer.pid),
            );
        }
        plain(DaemonReply::Ok)
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
