//! Write throughput per buffer size, native tmpfs vs forwarded /storage
//! (the paper's Figures 3 and 4).

use super::{args, run_native, Common, Pool, Stack, TempDir};
use crate::results::{WritePoint, WriteResults};
use crate::stats::{fmt_bytes, fmt_ratio, parse_size, ratio};
use anyhow::{bail, Context};

/// 32 B, 64 B, ..., 2 MiB: the paper's buffer sizes.
pub const PAPER_CHUNKS: &str =
    "32,64,128,256,512,1024,2048,4096,8192,16384,32768,65536,131072,262144,524288,1048576,2097152";

#[derive(Clone, Debug, clap::Args)]
pub struct Opts {
    /// Buffer sizes (bytes per write(2)); suffixes k/M allowed.
    #[arg(long, value_delimiter = ',', value_parser = parse_size, default_value = PAPER_CHUNKS)]
    pub chunks: Vec<u64>,
    /// Bytes written per repetition.
    #[arg(long, value_parser = parse_size, default_value = "16MiB")]
    pub total: u64,
    /// Timed repetitions per configuration and round.
    #[arg(long, default_value_t = 5)]
    pub reps: u32,
}

pub fn run(o: &Opts, common: &Common) -> anyhow::Result<WriteResults> {
    common.check_binaries()?;
    let stack = if common.native_only {
        Err("not measured (--native-only)".to_string())
    } else {
        Stack::start(common).map_err(|e| {
            let msg = format!("{e:#}");
            eprintln!("write: forwarded runs skipped: {msg}");
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
) -> anyhow::Result<WriteResults> {
    let tmp = TempDir::new(&common.tmp, "native")?;
    let native_path = tmp.path().join("bench-write");
    let native_path = native_path
        .to_str()
        .context("non-UTF-8 temp path")?
        .to_string();
    let worker = |path: &str, chunk: u64| {
        args([
            &"write", &"--path", &path, &"--total", &o.total, &"--chunk", &chunk, &"--reps",
            &o.reps,
        ])
    };
    let mut native: Vec<Pool> = o.chunks.iter().map(|_| Pool::default()).collect();
    let mut fwd: Vec<Pool> = o.chunks.iter().map(|_| Pool::default()).collect();
    // Native and forwarded alternate per size, and rounds repeat the whole
    // sweep, so slow drift of the machine hits both alike.
    for round in 1..=common.rounds.max(1) {
        for ((&chunk, n), f) in o.chunks.iter().zip(&mut native).zip(&mut fwd) {
            eprintln!(
                "write: round {round}/{}: {}",
                common.rounds,
                fmt_bytes(chunk)
            );
            n.add(run_native(&worker(&native_path, chunk), common.timeout()));
            match &stack {
                Err(msg) => f.fail(msg.clone()),
                Ok(stack) => {
                    let r = stack.run_worker(&worker("/storage/bench-write", chunk), &[]);
                    if let Err(e) = &r {
                        eprintln!("write: {chunk} B failed: {e:#}\n{}", stack.log_tail());
                    }
                    f.add(r);
                }
            }
        }
    }
    let mut points = Vec::new();
    for ((&chunk, n), f) in o.chunks.iter().zip(&native).zip(&fwd) {
        let Some(native) = n.summary() else {
            bail!(
                "native write of {} produced no samples: {:?}",
                fmt_bytes(chunk),
                n.forwarded().error
            );
        };
        points.push(WritePoint {
            chunk,
            native,
            forwarded: f.forwarded(),
        });
    }
    Ok(WriteResults {
        total: o.total,
        reps: o.reps,
        rounds: common.rounds.max(1),
        points,
    })
}

pub fn print(r: &WriteResults) {
    println!(
        "write: {} per repetition, {} repetitions, MB/s = 10^6 B/s",
        fmt_bytes(r.total),
        r.reps
    );
    println!(
        "{:>10}  {:>10}  {:>10}  {:>10}",
        "buffer", "native", "forwarded", "fwd/native"
    );
    for p in &r.points {
        let fwd = p.forwarded.median();
        println!(
            "{:>10}  {:>10.1}  {:>10}  {:>10}",
            fmt_bytes(p.chunk),
            p.native.median,
            fwd.map_or("n/a".into(), |m| format!("{m:.1}")),
            fmt_ratio(fwd.and_then(|m| ratio(m, p.native.median)))
        );
    }
}
