//! Logging: `tracing` to a descriptor chosen at run time.
//!
//! The main process logs to its stderr. A shadow closes its standard
//! descriptors (client descriptors start at 0) and moves its copy of stderr
//! into its own descriptor range, then points the writer there. The writer takes
//! no lock (one `write(2)` per event), so it is safe to use in a child forked
//! from a multithreaded shadow.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use tracing_subscriber::EnvFilter;

static LOG_FD: AtomicI32 = AtomicI32::new(2);

/// Point the log writer at `fd` (a process-lifetime descriptor).
pub fn set_fd(fd: RawFd) {
    LOG_FD.store(fd, Ordering::Relaxed);
}

pub fn fd() -> RawFd {
    LOG_FD.load(Ordering::Relaxed)
}

pub struct FdWriter;

impl io::Write for FdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::sys::write_fd(fd(), buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Install the subscriber (filter from `VIRTUOS_LOG`, default `warn`) and a
/// panic hook that writes through the same descriptor.
pub fn init() {
    let filter = EnvFilter::try_from_env("VIRTUOS_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| FdWriter)
        .with_ansi(false)
        .try_init();
    std::panic::set_hook(Box::new(|info| {
        let msg = format!("virtuos-domain[{}]: panic: {info}\n", std::process::id());
        let _ = crate::sys::write_fd(fd(), msg.as_bytes());
    }));
}
