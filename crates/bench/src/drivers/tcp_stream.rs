//! TCP stream throughput per buffer size (ttcp): sender and receiver native
//! on the host's loopback vs both under virtuos (the network domain's
//! loopback), default spin threshold.

use super::{args, run_native, Common, Pool, Stack};
use crate::results::{StreamResults, WritePoint};
use crate::stats::{fmt_bytes, fmt_ratio, parse_size, ratio};
use anyhow::bail;

pub const CHUNKS: &str = "512,1024,2048,4096,8192,16384";

#[derive(Clone, Debug, clap::Args)]
pub struct Opts {
    /// Buffer sizes (bytes per send(2) and recv(2)); suffixes k/M allowed.
    #[arg(long, value_delimiter = ',', value_parser = parse_size, default_value = CHUNKS)]
    pub stream_chunks: Vec<u64>,
    /// Bytes sent per connection (one connection per repetition).
    #[arg(long, value_parser = parse_size, default_value = "64MiB")]
    pub stream_total: u64,
    /// Timed repetitions per configuration and round.
    #[arg(long, default_value_t = 3)]
    pub stream_reps: u32,
}

/// A private stack, or why there is none (reported per configuration).
pub fn start_stack(common: &Common, what: &str) -> Result<Stack, String> {
    if common.native_only {
        return Err("not measured (--native-only)".to_string());
    }
    Stack::start(common)
        .and_then(|s| s.network_address().map(|_| s))
        .map_err(|e| {
            let msg = format!("{e:#}");
            eprintln!("{what}: forwarded runs skipped: {msg}");
            msg
        })
}

pub fn run(o: &Opts, common: &Common) -> anyhow::Result<StreamResults> {
    common.check_binaries()?;
    let worker = |chunk: u64| {
        args([
            &"tcp-stream",
            &"--total",
            &o.stream_total,
            &"--chunk",
            &chunk,
            &"--reps",
            &o.stream_reps,
        ])
    };
    let stack = start_stack(common, "tcp-stream");
    let mut native: Vec<Pool> = o.stream_chunks.iter().map(|_| Pool::default()).collect();
    let mut fwd: Vec<Pool> = o.stream_chunks.iter().map(|_| Pool::default()).collect();
    for round in 1..=common.rounds.max(1) {
        for ((&chunk, n), f) in o.stream_chunks.iter().zip(&mut native).zip(&mut fwd) {
            eprintln!(
                "tcp-stream: round {round}/{}: {}",
                common.rounds,
                fmt_bytes(chunk)
            );
            n.add(run_native(&worker(chunk), common.timeout()));
            match &stack {
                Err(msg) => f.fail(msg.clone()),
                Ok(stack) => {
                    let r = stack.run_worker(&worker(chunk), &[]);
                    if let Err(e) = &r {
                        eprintln!("tcp-stream: {chunk} B failed: {e:#}\n{}", stack.log_tail());
                    }
                    f.add(r);
                }
            }
        }
    }
    let mut points = Vec::new();
    for ((&chunk, n), f) in o.stream_chunks.iter().zip(&native).zip(&fwd) {
        let Some(native) = n.summary() else {
            bail!(
                "native tcp-stream of {} produced no samples: {:?}",
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
    Ok(StreamResults {
        total: o.stream_total,
        reps: o.stream_reps,
        rounds: common.rounds.max(1),
        points,
    })
}

pub fn print(r: &StreamResults) {
    println!(
        "tcp-stream: {} per connection, {} repetitions, MB/s = 10^6 B/s",
        fmt_bytes(r.total),
        r.reps
    );
    println!(
        "{:>10}  {:>10}  {:>10}  {:>10}",
        "buffer", "native", "virtuos", "ratio"
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
