//! TCP 1-byte round-trip latency (lat_tcp): both ends native on the host's
//! loopback vs both ends under virtuos (the network domain's loopback), with
//! the preload library's default spin threshold and an unbounded one.

use super::{args, run_native, Common, Pool};
use crate::results::{LatPoint, TcpLatResults};
use crate::stats::{fmt_ns, fmt_ratio, ratio};

/// `VIRTUOS_SPIN` of the "unbounded" configuration: the largest value the
/// preload library accepts (a u32 of polls, minutes of spinning: a caller
/// never reaches the futex sleep in practice).
pub const UNBOUNDED_SPIN: u32 = u32::MAX;

#[derive(Clone, Debug, clap::Args)]
pub struct Opts {
    /// Round trips per repetition.
    #[arg(long, default_value_t = 10_000)]
    pub lat_iters: u64,
    /// Timed repetitions per configuration and round.
    #[arg(long, default_value_t = 5)]
    pub lat_reps: u32,
}

/// The forwarded configurations: name and `VIRTUOS_SPIN` (None = unset).
pub fn configs() -> [(&'static str, Option<u32>); 2] {
    [("default", None), ("unbounded", Some(UNBOUNDED_SPIN))]
}

pub fn run(o: &Opts, common: &Common) -> anyhow::Result<TcpLatResults> {
    common.check_binaries()?;
    let worker = args([&"tcp-lat", &"--iters", &o.lat_iters, &"--reps", &o.lat_reps]);
    let stack = super::tcp_stream::start_stack(common, "tcp-lat");
    let mut native = Pool::default();
    let mut fwd: Vec<Pool> = configs().iter().map(|_| Pool::default()).collect();
    for round in 1..=common.rounds.max(1) {
        eprintln!(
            "tcp-lat: round {round}/{}: native, default spin, unbounded spin",
            common.rounds
        );
        native.add(run_native(&worker, common.timeout()));
        for (pool, (name, spin)) in fwd.iter_mut().zip(configs()) {
            match &stack {
                Err(msg) => pool.fail(msg.clone()),
                Ok(stack) => {
                    let env: Vec<(&str, String)> = spin
                        .map(|s| ("VIRTUOS_SPIN", s.to_string()))
                        .into_iter()
                        .collect();
                    let r = stack.run_worker(&worker, &env);
                    if let Err(e) = &r {
                        eprintln!("tcp-lat: {name} spin failed: {e:#}\n{}", stack.log_tail());
                    }
                    pool.add(r);
                }
            }
        }
    }
    let Some(native_s) = native.summary() else {
        anyhow::bail!(
            "native tcp-lat produced no samples: {:?}",
            native.forwarded().error
        );
    };
    Ok(TcpLatResults {
        iters: o.lat_iters,
        reps: o.lat_reps,
        rounds: common.rounds.max(1),
        native: native_s,
        points: configs()
            .iter()
            .zip(&fwd)
            .map(|(&(config, spin), pool)| LatPoint {
                config: config.into(),
                spin,
                forwarded: pool.forwarded(),
            })
            .collect(),
    })
}

/// `default (2000)`-like label of a configuration.
pub fn spin_label(p: &LatPoint) -> String {
    match p.spin {
        None => format!("{} (VIRTUOS_SPIN unset)", p.config),
        Some(s) => format!("{} (VIRTUOS_SPIN={s})", p.config),
    }
}

pub fn print(r: &TcpLatResults) {
    println!(
        "tcp-lat: 1-byte round trip, native median {}",
        fmt_ns(r.native.median)
    );
    for p in &r.points {
        match p.forwarded.median() {
            Some(m) => println!(
                "  {:<36} {:>10}  {:>8} of native",
                spin_label(p),
                fmt_ns(m),
                fmt_ratio(ratio(m, r.native.median))
            ),
            None => println!(
                "  {:<36} n/a ({})",
                spin_label(p),
                p.forwarded.error.as_deref().unwrap_or("no data")
            ),
        }
    }
}
