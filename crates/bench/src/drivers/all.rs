//! `all`: every benchmark, then RESULTS.md, results.json and the plots.

use super::output::{environment, finish, loadavg};
use super::{fcntl, net, queue_ping, write, Common};
use crate::results::{Meta, Results};
use crate::stats::parse_size;
use anyhow::Context;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, clap::Args)]
pub struct Opts {
    /// Spin thresholds for fcntl (VIRTUOS_SPIN) and queue-ping (client polls).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,10,100,1000,2000,10000,100000"
    )]
    pub spin: Vec<u32>,
    /// fcntl calls per repetition.
    #[arg(long, default_value_t = 10_000)]
    pub fcntl_iters: u64,
    /// Repetitions (per round) of the fcntl, floor and queue-ping measurements.
    #[arg(long, default_value_t = 11)]
    pub fcntl_reps: u32,
    /// Round trips per repetition of the ping-pong floor.
    #[arg(long, default_value_t = 50_000)]
    pub floor_iters: u64,
    /// Buffer sizes of the write benchmark.
    #[arg(long, value_delimiter = ',', value_parser = parse_size, default_value = write::PAPER_CHUNKS)]
    pub chunks: Vec<u64>,
    /// Bytes written per repetition.
    #[arg(long, value_parser = parse_size, default_value = "16MiB")]
    pub total: u64,
    /// Repetitions (per round) of the write benchmark.
    #[arg(long, default_value_t = 5)]
    pub write_reps: u32,
    /// OP_PING round trips per repetition.
    #[arg(long, default_value_t = 10_000)]
    pub ping_iters: u64,
    /// Output directory (RESULTS.md, results.json, plots).
    #[arg(long, default_value = "bench")]
    pub out: PathBuf,
    /// Skip the network domain benchmarks (`net`).
    #[arg(long)]
    pub no_net: bool,
    #[command(flatten)]
    pub net: net::Opts,
}

impl Opts {
    /// The command line that reproduces a run with these options.
    pub fn command(&self, common: &Common) -> String {
        let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let spins = self
            .spin
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut c = format!(
            "target/release/virtuos-bench all --spin {spins} --fcntl-iters {} --fcntl-reps {} \
             --floor-iters {} --chunks {} --total {} --write-reps {} --ping-iters {} --rounds {} \
             --out {}",
            self.fcntl_iters,
            self.fcntl_reps,
            self.floor_iters,
            list(&self.chunks),
            self.total,
            self.write_reps,
            self.ping_iters,
            common.rounds,
            self.out.display()
        );
        if self.no_net {
            c.push_str(" --no-net");
        } else {
            c.push(' ');
            c.push_str(&self.net.flags());
        }
        if common.native_only {
            c.push_str(" --native-only");
        }
        if common.tmp != Path::new("/dev/shm") {
            c.push_str(&format!(" --tmp {}", common.tmp.display()));
        }
        c
    }
}

pub fn run(o: &Opts, common: &Common) -> anyhow::Result<Results> {
    common.check_binaries()?;
    std::fs::create_dir_all(&o.out).with_context(|| format!("create {}", o.out.display()))?;
    let mut results = Results {
        meta: meta(o, common),
        ..Results::default()
    };
    let f = fcntl::run(
        &fcntl::Opts {
            spin: o.spin.clone(),
            iters: o.fcntl_iters,
            reps: o.fcntl_reps,
            floor_iters: o.floor_iters,
        },
        common,
    )?;
    fcntl::print(&f);
    results.fcntl = Some(f);
    let q = queue_ping::run(
        &queue_ping::Opts {
            spin: o.spin.clone(),
            iters: o.ping_iters,
            reps: o.fcntl_reps,
        },
        common,
    )?;
    queue_ping::print(&q);
    results.queue_ping = Some(q);
    let w = write::run(
        &write::Opts {
            chunks: o.chunks.clone(),
            total: o.total,
            reps: o.write_reps,
        },
        common,
    )?;
    write::print(&w);
    results.write = Some(w);
    if !o.no_net {
        results.net = Some(net::measure(&o.net, common, &o.out)?);
    }

    results.meta.load_end = loadavg();
    finish(&o.out, &mut results)?;
    Ok(results)
}

fn meta(o: &Opts, common: &Common) -> Meta {
    environment(o.command(common), common)
}
