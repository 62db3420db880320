//! The watcher: waits on the pidfds of every client and of the domains,
//! and on an eventfd poked whenever a client table changes.

use super::Daemon;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fd::OwnedFd;
use std::sync::Arc;

enum Source {
    Domain(usize),
    Client(usize, u32),
}

/// Longest sleep: the heartbeat checks run at least this often.
const TICK: std::time::Duration = std::time::Duration::from_millis(100);

pub fn run(daemon: &Arc<Daemon>) -> ! {
    loop {
        // Snapshot what to watch (the table may change while we sleep;
        // every change pokes `wake`).
        let mut watched: Vec<(Source, Arc<OwnedFd>)> = Vec::new();
        for (i, s) in daemon.domains.iter().enumerate() {
            if let Some(fd) = s.domain.pidfd() {
                watched.push((Source::Domain(i), fd));
            }
            for c in s.clients().iter() {
                watched.push((Source::Client(i, c.pid), c.pidfd.clone()));
            }
        }
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(watched.len() + 1);
        fds.push(PollFd::new(&daemon.wake, PollFlags::IN));
        for (_, fd) in &watched {
            fds.push(PollFd::new(fd.as_ref(), PollFlags::IN));
        }
        let wait = daemon.next_restart_in().map_or(TICK, |d| d.min(TICK));
        let timeout = Timespec {
            tv_sec: 0,
            tv_nsec: wait.as_nanos() as i64,
        };
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => {
                daemon.recovery_tick();
                continue;
            }
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!("poll: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        if ready[0] {
            let mut buf = [0u8; 8];
            let _ = rustix::io::read(&daemon.wake, &mut buf);
        }
        for ((source, fd), ready) in watched.iter().zip(&ready[1..]) {
            if !ready {
                continue;
            }
            match source {
                Source::Domain(i) => {
                    let domain = &daemon.domains[*i].domain;
                    // An event of an incarnation that is gone already.
                    if !domain.pidfd().is_some_and(|cur| Arc::ptr_eq(&cur, fd)) {
                        continue;
                    }
                    let status = domain.reap();
                    let why = match status {
                        Some(s) => format!("domain process exited: {s}"),
                        None => "domain process exited".to_string(),
                    };
                    if status.is_none() {
                        // Not reapable by try_wait: make sure it is gone.
                        domain.kill();
                    }
                    daemon.domain_gone(*i, &why);
                }
                Source::Client(i, pid) => daemon.remove_client(*i, *pid),
            }
        }
        daemon.recovery_tick();
    }
}
