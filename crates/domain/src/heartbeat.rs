//! The domain's heartbeat: a page the daemon maps too (`--heartbeat-fd`,
//! process backend) and watches for hangs. The main loop bumps it at least
//! every `DOMAIN_HEARTBEAT_PERIOD_MS`; a domain whose main process stops
//! (SIGSTOP, a deadlock) stops bumping it and the daemon restarts it.

use anyhow::{Context, Result};
use rustix::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use virtuos_abi::region::StatePage;

static PAGE: OnceLock<StatePage> = OnceLock::new();

/// Map the daemon's heartbeat page (read-write) for this process.
pub fn install(fd: OwnedFd) -> Result<()> {
    let page = StatePage::map(&fd, true).context("cannot map the heartbeat page")?;
    let _ = PAGE.set(page);
    beat();
    Ok(())
}

/// One beat (no-op without a page: the vm backend, tests).
pub fn beat() {
    if let Some(p) = PAGE.get() {
        p.get().heartbeat.fetch_add(1, Ordering::Release);
    }
}
