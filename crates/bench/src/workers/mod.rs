//! What runs inside the measured process. Each worker prints exactly one
//! JSON line (`WorkerOutput`) with raw per-repetition numbers on stdout;
//! drivers parse it, so workers never print anything else there.
//!
//! Workers call libc (`open`, `fcntl`, `write`) like an ordinary program
//! would, so under `virtuos run` the calls go through the preload library's
//! interception exactly as an unmodified program's do.

pub mod fcntl;
pub mod fork;
pub mod pingpong;
pub mod tcp;
pub mod tcp_lat;
pub mod tcp_peer;
pub mod tcp_stream;
pub mod write;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::time::Instant;

/// The one line a worker prints.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WorkerOutput {
    /// `fcntl`, `write`, `pingpong`, `tcp-lat` or `tcp-stream`.
    pub bench: String,
    /// Unit of `samples`: `ns/call`, `MB/s`, `ns/roundtrip`.
    pub unit: String,
    /// One number per timed repetition (warm-up excluded).
    pub samples: Vec<f64>,
    /// Parameters and facts about the run (iters, chunk, cpus, ...).
    #[serde(default)]
    pub info: BTreeMap<String, serde_json::Value>,
}

impl WorkerOutput {
    pub fn print(&self) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string(self)?);
        Ok(())
    }

    /// Find the worker's line in a process's stdout (the last line that is a
    /// JSON object; anything a wrapper printed before it is ignored).
    pub fn parse(stdout: &str) -> anyhow::Result<WorkerOutput> {
        let line = stdout
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('{'))
            .ok_or_else(|| anyhow::anyhow!("worker printed no JSON line"))?;
        Ok(serde_json::from_str(line)?)
    }
}

/// `open(2)` through libc. Returns the descriptor.
pub(crate) fn open(path: &str, flags: libc::c_int) -> io::Result<libc::c_int> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string; mode is used with O_CREAT.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644 as libc::c_uint) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(fd)
    }
}

pub(crate) fn close(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: closes a descriptor this worker opened and no longer uses.
    if unsafe { libc::close(fd) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Nanoseconds elapsed since `t`.
pub(crate) fn ns_since(t: Instant) -> f64 {
    t.elapsed().as_nanos() as f64
}
