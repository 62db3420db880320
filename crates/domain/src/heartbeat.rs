//! The domain's heartbeat: a page the daemon maps too (`--heartbeat-fd`,
//! process backend) and watches for hangs. The main loop bumps it at least
//! every `DOMAIN_HEARTBEAT_PERIOD_MS`; a domain whose main process stops
//! (SIGSTOP, a deadlock) stops bumping it and the daemon restarts it.

use anyhow::{Context, Result};
use rustix::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use virtuos_abi::region::StatePage;
use virtuos_abi::slot::Bell;

static PAGE: OnceLock<StatePage> = OnceLock::new();
/// vm backend: the bell port, and when the last beat went out on it.
static BELL: OnceLock<(OwnedFd, Mutex<Option<Instant>>)> = OnceLock::new();
/// Beats on the bell port are at most this frequent.
const BELL_PERIOD: Duration = Duration::from_millis(100);

/// Map the daemon's heartbeat page (read-write) for this process.
pub fn install(fd: OwnedFd) -> Result<()> {
    let page = StatePage::map(&fd, true).context("cannot map the heartbeat page")?;
    let _ = PAGE.set(page);
    beat();
    Ok(())
}

/// vm backend: beat by sending `Bell::Heartbeat` on the bell port (the
/// daemon counts them into its own heartbeat page for this domain).
pub fn install_bell(port: OwnedFd) {
    let _ = BELL.set((port, Mutex::new(None)));
    beat();
}

/// One beat (no-op without a page or bell: tests).
pub fn beat() {
    if let Some(p) = PAGE.get() {
        p.get().heartbeat.fetch_add(1, Ordering::Release);
    }
    if let Some((port, last)) = BELL.get() {
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < BELL_PERIOD) {
            return;
        }
        *last = Some(Instant::now());
        // A lost beat is only a late one; the daemon waits seconds.
        let _ = rustix::io::write(port, &Bell::Heartbeat.encode());
    }
}
