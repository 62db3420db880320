//! The floor: two threads on different CPUs bounce a counter on one cache
//! line. A forwarded call needs at least one such round trip (request entry
//! to the domain's worker, result back), so no queue design beats this.

use super::{ns_since, WorkerOutput};
use anyhow::bail;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub struct Params {
    pub iters: u64,
    pub reps: u32,
}

/// The shared counter, alone on its cache line (and the adjacent-line
/// prefetch pair).
#[repr(align(128))]
struct Line(AtomicU64);

const STOP: u64 = u64::MAX;

pub fn run(p: &Params) -> anyhow::Result<WorkerOutput> {
    if p.iters == 0 {
        bail!("--iters must be > 0");
    }
    let cpus = allowed_cpus();
    let (cpu_a, cpu_b) = match cpus.as_slice() {
        [a, b, ..] => (Some(*a), Some(*b)),
        _ => (None, None),
    };
    let line = Arc::new(Line(AtomicU64::new(0)));
    let peer = {
        let line = line.clone();
        std::thread::spawn(move || {
            let pinned = cpu_b.is_some_and(pin);
            echo(&line.0);
            pinned
        })
    };
    let pinned_a = cpu_a.is_some_and(pin);
    let mut next = 0u64;
    bounce(&line.0, &mut next, p.iters.min(10_000)); // warm-up
    let mut samples = Vec::with_capacity(p.reps as usize);
    for _ in 0..p.reps {
        let start = Instant::now();
        bounce(&line.0, &mut next, p.iters);
        samples.push(ns_since(start) / p.iters as f64);
    }
    line.0.store(STOP, Ordering::Release);
    let pinned_b = peer
        .join()
        .map_err(|_| anyhow::anyhow!("peer thread panicked"))?;
    let mut out = WorkerOutput {
        bench: "pingpong".into(),
        unit: "ns/roundtrip".into(),
        samples,
        info: Default::default(),
    };
    out.info.insert("iters".into(), p.iters.into());
    out.info
        .insert("cpus".into(), serde_json::json!([cpu_a, cpu_b]));
    out.info
        .insert("pinned".into(), (pinned_a && pinned_b).into());
    Ok(out)
}

/// Main side: post odd values, wait for the peer's even answer.
fn bounce(line: &AtomicU64, next: &mut u64, iters: u64) {
    for _ in 0..iters {
        let ping = *next * 2 + 1;
        line.store(ping, Ordering::Release);
        wait_for(line, |v| v == ping + 1);
        *next += 1;
    }
}

/// Peer side: answer every odd value with the next even one until STOP.
fn echo(line: &AtomicU64) {
    loop {
        let v = wait_for(line, |v| v % 2 == 1);
        if v == STOP {
            return;
        }
        line.store(v + 1, Ordering::Release);
    }
}

/// Spin until `done(value)`; yields now and then so that the benchmark still
/// terminates (slowly) on a single CPU.
fn wait_for(line: &AtomicU64, done: impl Fn(u64) -> bool) -> u64 {
    let mut polls = 0u32;
    loop {
        let v = line.load(Ordering::Acquire);
        if done(v) {
            return v;
        }
        polls += 1;
        if polls & 4095 == 0 {
            std::thread::yield_now();
        } else {
            core::hint::spin_loop();
        }
    }
}

/// CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        if libc::sched_getaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pin the calling thread to `cpu`. False if the kernel refused.
fn pin(cpu: usize) -> bool {
    // SAFETY: as above; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}
