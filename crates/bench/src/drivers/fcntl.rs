//! fcntl(F_GETFL) latency: native vs forwarded per spin threshold, and the
//! cache-line ping-pong floor (the paper's §5.1 "dispatch & spinning").

use super::{args, run_native, Common, Stack, TempDir};
use crate::results::{FcntlResults, Forwarded, SpinPoint};
use crate::stats::{fmt_ns, fmt_ratio, ratio, Summary};
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
    #[arg(long, default_value_t = 20_000)]
    pub iters: u64,
    /// Timed repetitions per configuration.
    #[arg(long, default_value_t = 7)]
    pub reps: u32,
    /// Round trips per repetition of the ping-pong floor.
    #[arg(long, default_value_t = 200_000)]
    pub floor_iters: u64,
}

pub fn run(o: &Opts, common: &Common) -> anyhow::Result<FcntlResults> {
    common.check_binaries()?;
    let tmp = TempDir::new(&common.tmp, "native")?;
    let native_path = tmp.path().join("bench-fcntl");
    let native_path = native_path.to_str().context("non-UTF-8 temp path")?;
    let worker = |path: &str| {
        args([
            &"fcntl", &"--path", &path, &"--iters", &o.iters, &"--reps", &o.reps,
        ])
    };
    eprintln!("fcntl: native ({} x {} calls)", o.reps, o.iters);
    let mut native = run_native(&worker(native_path), common.timeout())?.samples;

    eprintln!("fcntl: ping-pong floor");
    let floor = super::run_native(
        &args([&"pingpong", &"--iters", &o.floor_iters, &"--reps", &o.reps]),
        common.timeout(),
    )
    .map(|w| Summary::of(&w.samples))
    .unwrap_or_else(|e| {
        eprintln!("warning: ping-pong floor failed: {e:#}");
        None
    });

    let forwarded = if common.native_only {
        o.spin
            .iter()
            .map(|&spin| SpinPoint {
                spin,
                forwarded: Forwarded::failed("not measured (--native-only)"),
            })
            .collect()
    } else {
        forwarded_runs(o, common, &worker("/storage/bench-fcntl"))
    };

    eprintln!("fcntl: native again");
    native.extend(run_native(&worker(native_path), common.timeout())?.samples);
    let native = Summary::of(&native).context("native run produced no samples")?;
    Ok(FcntlResults {
        iters: o.iters,
        reps: o.reps,
        native,
        floor,
        forwarded,
    })
}

fn forwarded_runs(o: &Opts, common: &Common, worker: &[String]) -> Vec<SpinPoint> {
    let stack = match Stack::start(common) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("fcntl: forwarded runs skipped: {msg}");
            return o
                .spin
                .iter()
                .map(|&spin| SpinPoint {
                    spin,
                    forwarded: Forwarded::failed(msg.clone()),
                })
                .collect();
        }
    };
    o.spin
        .iter()
        .map(|&spin| {
            eprintln!("fcntl: forwarded, VIRTUOS_SPIN={spin}");
            let r = stack.run_worker(worker, &[("VIRTUOS_SPIN", spin.to_string())]);
            let forwarded = match r.map(|w| Summary::of(&w.samples)) {
                Ok(Some(s)) => Forwarded::ok(s),
                Ok(None) => Forwarded::failed("worker produced no samples"),
                Err(e) => {
                    eprintln!("fcntl: spin {spin} failed: {e:#}\n{}", stack.log_tail());
                    Forwarded::failed(format!("{e:#}"))
                }
            };
            SpinPoint { spin, forwarded }
        })
        .collect()
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
