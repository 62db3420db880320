//! Registered client processes and what the daemon knows about callers.

use super::regions::Regions;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fd::OwnedFd;
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

/// One registered process (for one domain).
pub struct Client {
    pub id: u64,
    pub pid: u32,
    /// The process's uid at registration (`SO_PEERCRED`).
    pub uid: u32,
    /// Readable once the process exited.
    pub pidfd: Arc<OwnedFd>,
    pub regions: Regions,
    /// The shadow's heartbeat as last seen, and when it last changed.
    pub heartbeat: (u64, std::time::Instant),
    /// Its shadow was lost (`Daemon::shadow_stalled`): the state page says
    /// FAILED and the domain removed the shadow. The entry stays (its
    /// process still maps the regions, and the pidfd stays watched) until
    /// the process exits or registers again.
    pub failed: bool,
    /// Regions of earlier sessions whose shadow was lost: the process
    /// still maps them (a retired session is never unmapped), so a VM
    /// region slot must not go back to the pool before the process exits.
    pub retired: Vec<Regions>,
}

#[derive(Default)]
pub struct Clients {
    by_pid: BTreeMap<u32, Client>,
    /// Registered processes per uid (for the per-uid limit).
    per_uid: BTreeMap<u32, usize>,
}

impl Clients {
    pub fn get(&self, pid: u32) -> Option<&Client> {
        self.by_pid.get(&pid)
    }
    pub fn get_mut(&mut self, pid: u32) -> Option<&mut Client> {
        self.by_pid.get_mut(&pid)
    }
    pub fn insert(&mut self, c: Client) {
        *self.per_uid.entry(c.uid).or_default() += 1;
        if let Some(old) = self.by_pid.insert(c.pid, c) {
            self.forget_uid(old.uid);
        }
    }
    pub fn remove(&mut self, pid: u32) -> Option<Client> {
        let c = self.by_pid.remove(&pid)?;
        self.forget_uid(c.uid);
        Some(c)
    }
    fn forget_uid(&mut self, uid: u32) {
        if let Some(n) = self.per_uid.get_mut(&uid) {
            *n -= 1;
            if *n == 0 {
                self.per_uid.remove(&uid);
            }
        }
    }
    /// Processes of `uid` registered here.
    pub fn count_of(&self, uid: u32) -> usize {
        self.per_uid.get(&uid).copied().unwrap_or(0)
    }
    pub fn iter(&self) -> impl Iterator<Item = &Client> {
        self.by_pid.values()
    }
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Client> {
        self.by_pid.values_mut()
    }
    pub fn len(&self) -> usize {
        self.by_pid.len()
    }
    pub fn clear(&mut self) {
        self.by_pid.clear();
        self.per_uid.clear();
    }
}

/// The caller of one connection, from `SO_PEERCRED` (taken at `connect`).
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Has the process behind `pidfd` exited?
pub fn exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
}

pub fn proc_status(pid: u32) -> io::Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
}

fn field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == name).then_some(v.trim())
    })
}

/// The soft `RLIMIT_NPROC` of process `pid` (`Max processes` in
/// `/proc/<pid>/limits`); None when unlimited or unreadable.
pub fn nproc_limit(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    parse_nproc(&text)
}

fn parse_nproc(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max processes"))?;
    line["Max processes".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Parent pid (`PPid:` line).
pub fn parse_ppid(status: &str) -> Option<u32> {
    field(status, "PPid")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nTgid:\t42\n\
        Pid:\t42\nPPid:\t7\nTracerPid:\t0\nUid:\t1000\t1000\t1000\t1000\n\
        Gid:\t1000\t1000\t1000\t1000\nFDSize:\t64\nGroups:\t4 24 27 1000 \n";

    #[test]
    fn parses_proc_status() {
        assert_eq!(parse_ppid(STATUS), Some(7));
        assert_eq!(parse_ppid("Name: x\n"), None);
    }

    #[test]
    fn parses_proc_limits() {
        let text =
            "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max cpu time              unlimited            unlimited            seconds   \n\
            Max processes             40                   50                   processes \n";
        assert_eq!(parse_nproc(text), Some(40));
        assert_eq!(
            parse_nproc(
                "Max processes             unlimited            unlimited            processes\n"
            ),
            None
        );
        assert_eq!(parse_nproc(""), None);
        let own = rustix::process::getrlimit(rustix::process::Resource::Nproc).current;
        assert_eq!(nproc_limit(std::process::id()), own);
    }

    #[test]
    fn own_status_is_readable() {
        let s = proc_status(std::process::id()).unwrap();
        assert_eq!(
            parse_ppid(&s),
            rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32)
        );
    }
}
