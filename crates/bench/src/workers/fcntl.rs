//! `fcntl(fd, F_GETFL)` latency: the paper's §5.1 dispatch/spinning
//! microbenchmark (a call that never blocks natively).

use super::{close, ns_since, open, WorkerOutput};
use anyhow::{bail, Context};
use std::time::Instant;

pub struct Params {
    pub path: String,
    pub iters: u64,
    pub reps: u32,
}

pub fn run(p: &Params) -> anyhow::Result<WorkerOutput> {
    if p.iters == 0 {
        bail!("--iters must be > 0");
    }
    let fd =
        open(&p.path, libc::O_CREAT | libc::O_RDWR).with_context(|| format!("open {}", p.path))?;
    let flags = getfl(fd)?;
    if flags & libc::O_ACCMODE != libc::O_RDWR {
        bail!("F_GETFL on {} returned {flags:#x}, not O_RDWR", p.path);
    }
    // Warm-up: page in code, let the domain start its workers.
    time_calls(fd, p.iters.min(10_000))?;
    let mut samples = Vec::with_capacity(p.reps as usize);
    for _ in 0..p.reps {
        let ns = time_calls(fd, p.iters)?;
        samples.push(ns / p.iters as f64);
    }
    close(fd)?;
    let mut out = WorkerOutput {
        bench: "fcntl".into(),
        unit: "ns/call".into(),
        samples,
        info: Default::default(),
    };
    out.info.insert("path".into(), p.path.clone().into());
    out.info.insert("iters".into(), p.iters.into());
    if let Ok(spin) = std::env::var("VIRTUOS_SPIN") {
        out.info.insert("VIRTUOS_SPIN".into(), spin.into());
    }
    Ok(out)
}

fn getfl(fd: libc::c_int) -> anyhow::Result<libc::c_int> {
    // SAFETY: F_GETFL takes no third argument and touches no memory.
    let r = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if r < 0 {
        bail!("fcntl(F_GETFL): {}", std::io::Error::last_os_error());
    }
    Ok(r)
}

/// Total nanoseconds for `n` calls.
fn time_calls(fd: libc::c_int, n: u64) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut bad = 0u64;
    for _ in 0..n {
        // SAFETY: as in `getfl`.
        let r = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        bad += (r < 0) as u64;
    }
    let ns = ns_since(start);
    if bad > 0 {
        bail!("{bad} of {n} fcntl(F_GETFL) calls failed");
    }
    Ok(ns)
}
