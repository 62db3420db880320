//! Credentials that follow the client: what the kernel says a client's
//! thread has, handed to that client's shadows in every domain.
//!
//! The client's word is never taken: a `SyncCredentials { tid }` only
//! names a thread of the sender (checked: `/proc/PID/task/TID` with
//! `Tgid` = the sender's pid), and the daemon reads that thread's
//! credentials itself. The library sends it after every set*id,
//! setgroups, setfs*id or capset call, and answers the program only after
//! the daemon did, so the next forwarded call runs with the new identity.

use super::answer::{error, plain, Answer};
use super::clients::Peer;
use super::Daemon;
use virtuos_abi::control::{Credentials, DaemonReply, DomainCommand, DomainReply};

/// Thread `tid` of process `pid`, as the kernel sees it.
pub fn of_thread(pid: u32, tid: u32) -> Result<Credentials, String> {
    let path = format!("/proc/{pid}/task/{tid}/status");
    let status = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read the credentials of thread {tid} of {pid}: {e}"))?;
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    if tgid != Some(pid) {
        return Err(format!("thread {tid} does not belong to process {pid}"));
    }
    Credentials::from_proc_status(&status).ok_or_else(|| format!("{path}: unexpected format"))
}

/// Process `pid`'s credentials (its main thread's).
pub fn of_process(pid: u32) -> Result<Credentials, String> {
    of_thread(pid, pid)
}

impl Daemon {
    /// `SyncCredentials`: read thread `tid`'s credentials and hand them to
    /// every domain the sender is registered with.
    pub(super) fn sync_credentials(&self, peer: Peer, tid: u32) -> Answer {
        let creds = match of_thread(peer.pid, tid) {
            Ok(c) => c,
            Err(e) => return error(e),
        };
        for i in 0..self.domains.len() {
            if let Err(e) = self.send_credentials(i, peer.pid, Some(tid), &creds) {
                return error(e);
            }
        }
        plain(DaemonReply::Ok)
    }

    /// Tell domain `i` the credentials of its client `pid` (thread `tid`,
    /// or with `None` the whole process). Nothing to do where `pid` is not
    /// registered.
    pub(super) fn send_credentials(
        &self,
        i: usize,
        pid: u32,
        tid: Option<u32>,
        creds: &Credentials,
    ) -> Result<(), String> {
        let served = self.served(i);
        let Some(client_id) = served.clients().get(pid).map(|c| c.id) else {
            return Ok(());
        };
        let cmd = DomainCommand::SetCredentials {
            client_id,
            tid,
            creds: creds.clone(),
        };
        let name = &served.domain.spec.name;
        match served.domain.command(&cmd, &[]) {
            Ok(DomainReply::Ok) => Ok(()),
            Ok(DomainReply::Error { message }) => Err(format!(
                "the {name} domain refused new credentials: {message}"
            )),
            Ok(other) => Err(format!("the {name} domain answered {other:?}")),
            // A lost domain fails its clients' calls anyway (recovery).
            Err(e) => Err(e.to_string()),
        }
    }
}
