//! Process creation (the paper's Figure 5): batches of N concurrent forks
//! that exit at once, native vs under virtuos on the process backend and
//! on the vm backend, interleaved per N and round.

use super::{args, run_native, Common, Pool, Stack, TempDir};
use crate::results::{ForkPoint, ForkResults};
use crate::stats::{fmt_ns, fmt_ratio, ratio, Summary};
use crate::workers::WorkerOutput;
use anyhow::{bail, Context};

/// The paper's batch sizes.
pub const PAPER_SIZES: &str = "1,2,4,8,16,32";

#[derive(Clone, Debug, clap::Args)]
pub struct Opts {
    /// Children per batch (each N is one configuration).
    #[arg(long, value_delimiter = ',', default_value = PAPER_SIZES)]
    pub fork_sizes: Vec<u32>,
    /// Timed batches per configuration and round.
    #[arg(long, default_value_t = 10)]
    pub fork_reps: u32,
}

/// A configuration's samples, and the untimed clean-up waits after them.
#[derive(Default)]
struct Measured {
    batches: Pool,
    cleanup: Vec<f64>,
}

impl Measured {
    fn add(&mut self, r: anyhow::Result<WorkerOutput>) {
        if let Ok(w) = &r {
            if let Some(c) = w.info.get("cleanup_ns").and_then(|v| v.as_array()) {
                self.cleanup.extend(c.iter().filter_map(|x| x.as_f64()));
            }
        }
        self.batches.add(r);
    }
}

/// Measure every N natively and against each stack that started.
pub fn measure(
    o: &Opts,
    common: &Common,
    process: Result<&Stack, String>,
    vm: Result<&Stack, String>,
) -> anyhow::Result<ForkResults> {
    let tmp = TempDir::new(&common.tmp, "native")?;
    let native_path = tmp.path().join("bench-fork");
    let native_path = native_path.to_str().context("non-UTF-8 temp path")?;
    let worker = |path: &str, n: u32| {
        args([
            &"fork",
            &"--path",
            &path,
            &"--n",
            &n,
            &"--reps",
            &o.fork_reps,
        ])
    };
    let sizes = &o.fork_sizes;
    let mut native: Vec<Pool> = sizes.iter().map(|_| Pool::default()).collect();
    let mut on_process: Vec<Measured> = sizes.iter().map(|_| Measured::default()).collect();
    let mut on_vm: Vec<Measured> = sizes.iter().map(|_| Measured::default()).collect();
    let rounds = common.rounds.max(1);
    for round in 1..=rounds {
        for (i, &n) in sizes.iter().enumerate() {
            eprintln!("fork: round {round}/{rounds}: N = {n}");
            native[i].add(run_native(&worker(native_path, n), common.timeout()));
            for (stack, pool, what) in [
                (&process, &mut on_process[i], "process"),
                (&vm, &mut on_vm[i], "vm"),
            ] {
                match stack {
                    Err(msg) => pool.batches.fail(msg.clone()),
                    Ok(stack) => {
                        let r = stack.run_worker_strict(&worker("/storage/bench-fork", n), &[]);
                        if let Err(e) = &r {
                            eprintln!("fork: {what} N = {n} failed: {e:#}\n{}", stack.log_tail());
                        }
                        pool.add(r);
                    }
                }
            }
        }
    }
    let mut points = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let Some(nat) = native[i].summary() else {
            bail!(
                "native fork of {n} produced no samples: {:?}",
                native[i].forwarded().error
            );
        };
        points.push(ForkPoint {
            n,
            native: nat,
            process: on_process[i].batches.forwarded(),
            vm: on_vm[i].batches.forwarded(),
            process_cleanup: Summary::of(&on_process[i].cleanup),
            vm_cleanup: Summary::of(&on_vm[i].cleanup),
        });
    }
    Ok(ForkResults {
        reps: o.fork_reps,
        rounds,
        points,
    })
}

pub fn print(r: &ForkResults) {
    println!("fork: N children that _exit at once, time per batch (median)");
    println!(
        "{:>4}  {:>10}  {:>10}  {:>8}  {:>10}  {:>8}",
        "N", "native", "process", "/native", "vm", "/native"
    );
    for p in &r.points {
        let cell = |f: &crate::results::Forwarded| match f.median() {
            Some(m) => (fmt_ns(m), fmt_ratio(ratio(m, p.native.median))),
            None => ("n/a".into(), "n/a".into()),
        };
        let (pm, pr) = cell(&p.process);
        let (vm, vr) = cell(&p.vm);
        println!(
            "{:>4}  {:>10}  {:>10}  {:>8}  {:>10}  {:>8}",
            p.n,
            fmt_ns(p.native.median),
            pm,
            pr,
            vm,
            vr
        );
    }
}
