//! fcntl(F_GETFL) latency: native vs forwarded per spin threshold, and the
//! cache-line ping-pong floor (the paper's §5.1 "dispatch & spinning").

use super::{args, run_native, Common, Pool, Stack, TempDir};
use crate::results::{FcntlResults, SpinPoint};
use crate::stats::{fmt_ns, fmt_ratio, ratio};
use anyhow::Context;

#[derive(Clone, Debug, clap::Args)]
pub struct Opts {
    /// Spin thresholds (polls before sleeping), passed as VIRTUOS_SPIN
    /// (the preload library's default is 2000).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,10,100,1000,2000,10000,100000"
    )]
    pub spin: Vec<u32>,
    /// fcntl calls per repetition.
    #[arg(long, default_value_t = 10_000)]
    pub iters: u64,
    /// Timed repetitions per configuration and round.
    #[arg(long, default_value_t = 11)]
    pub reps: u32,
    /// Round trips per repetition of the ping-pong floor.
    #[arg(long, default_value_t = 50_000)]
    pub floor_iters: u64,
}

pub fn run(o: &Opts, common: &Common) -> anyhow::Result<FcntlResults> {
    common.check_binaries()?;
    let stack = if common.native_only {
        Err("not measured (--native-only)".to_string())
    } else {
        Stack::start(common).map_err(|e| {
            let msg = format!("{e:#}");
            eprintln!("fcntl: forwarded runs skipped: {msg}");
            msg
        })
    };
    run_on(o, common, stack.as_ref().map_err(Clone::clone))
}

/// Measure against `stack` (a running daemon of any backend), or native
/// only with the reason why not.
pub fn run_on(
    o: &Opts,
    common: &Common,
    stack: Result<&Stack, String>,
) -> anyhow::Result<FcntlResults> {
    let tmp = TempDir::new(&common.tmp, "native")?;
    let native_path = tmp.path().join("bench-fcntl");
    let native_path = native_path.to_str().context("non-UTF-8 temp path")?;
    let worker = |path: &str| {
        args([
            &"fcntl", &"--path", &path, &"--iters", &o.iters, &"--reps", &o.reps,
        ])
    };
    let floor_worker = args([&"pingpong", &"--iters", &o.floor_iters, &"--reps", &o.reps]);
    let mut native = Pool::default();
    let mut floor = Pool::default();
    let mut fwd: Vec<Pool> = o.spin.iter().map(|_| Pool::default()).collect();
    for round in 1..=common.rounds.max(1) {
        eprintln!(
            "fcntl: round {round}/{}: native, floor, {} spin values",
            common.rounds,
            o.spin.len()
        );
        native.add(run_native(&worker(native_path), common.timeout()));
        floor.add(run_native(&floor_worker, common.timeout()));
        for (pool, &spin) in fwd.iter_mut().zip(&o.spin) {
            match &stack {
                Err(msg) => pool.fail(msg.clone()),
                Ok(stack) => {
                    let r = stack.run_worker(
                        &worker("/storage/bench-fcntl"),
                        &[("VIRTUOS_SPIN", spin.to_string())],
                    );
                    if let Err(e) = &r {
                        eprintln!("fcntl: spin {spin} failed: {e:#}\n{}", stack.log_tail());
                    }
                    pool.add(r);
                }
            }
        }
    }
    let native = match native.summary() {
        Some(s) => s,
        None => anyhow::bail!(
            "native fcntl produced no samples: {:?}",
            native.forwarded().error
        ),
    };
    if floor.summary().is_none() {
        eprintln!(
            "warning: ping-pong floor failed: {:?}",
            floor.forwarded().error
        );
    }
    Ok(FcntlResults {
        iters: o.iters,
        reps: o.reps,
        rounds: common.rounds.max(1),
        native,
        floor: floor.summary(),
        forwarded: o
            .spin
            .iter()
            .zip(&fwd)
            .map(|(&spin, pool)| SpinPoint {
                spin,
                forwarded: pool.forwarded(),
            })
            .collect(),
    })
}

/// A terminal table of the results.
pub fn print(r: &FcntlResults) {
    println!(
        "fcntl(F_GETFL): native median {} / call; floor {} / round trip",
        fmt_ns(r.native.median),
        r.floor.as_ref().map_or("n/a".into(), |f| fmt_ns(f.median))
    );
    println!(
        "{:>8}  {:>12}  {:>12}  {:>12}",
        "spin", "forwarded", "fwd/native", "fwd/floor"
    );
    for p in &r.forwarded {
        match p.forwarded.median() {
            Some(m) => println!(
                "{:>8}  {:>12}  {:>12}  {:>12}",
                p.spin,
                fmt_ns(m),
                fmt_ratio(ratio(m, r.native.median)),
                fmt_ratio(r.floor.as_ref().and_then(|f| ratio(m, f.median)))
            ),
            None => println!(
                "{:>8}  {:>12}  ({})",
                p.spin,
                "n/a",
                p.forwarded.error.as_deref().unwrap_or("no data")
            ),
        }
    }
}
