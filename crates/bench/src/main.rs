//! virtuos-bench: the paper's §5.1 microbenchmarks (fcntl latency vs spin
//! threshold, write throughput vs buffer size) plus a queue-level ping,
//! forwarded through virtuos and compared with native Linux; and the
//! network domain against native (TCP round trip, TCP stream, nginx).
//!
//! `worker ...` subcommands are what runs inside the measured process; the
//! others are drivers that start workers natively and under `virtuos run`,
//! and report medians and ratios.

mod drivers;
mod plot;
mod report;
mod results;
mod stats;
mod timeline;
mod workers;

use clap::{Parser, Subcommand};
use drivers::Common;

#[derive(Parser)]
#[command(name = "virtuos-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one measurement in this process and print one JSON line.
    #[command(subcommand)]
    Worker(Worker),
    /// fcntl(F_GETFL) latency: native, forwarded per spin threshold, floor.
    Fcntl {
        #[command(flatten)]
        opts: drivers::fcntl::Opts,
        #[command(flatten)]
        common: Common,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Write throughput per buffer size: native tmpfs vs forwarded /storage.
    Write {
        #[command(flatten)]
        opts: drivers::write::Opts,
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// OP_PING round trips through the request queue, without the preload library.
    QueuePing {
        #[command(flatten)]
        opts: drivers::queue_ping::Opts,
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Network domain vs native: TCP round trip, TCP stream, nginx HTTP.
    /// Merges into --out/results.json and re-renders RESULTS.md and plots.
    Net {
        #[command(flatten)]
        opts: drivers::net::Opts,
        #[command(flatten)]
        common: Common,
        /// Output directory (its results.json is updated, other sections kept).
        #[arg(long, default_value = "bench")]
        out: std::path::PathBuf,
    },
    /// VM backend (TCG here) vs native: launch to ready, process creation
    /// (also on the process backend), fcntl latency, write throughput.
    /// Merges into --out/results.json and re-renders RESULTS.md and plots.
    Vm {
        #[command(flatten)]
        opts: drivers::vm::Opts,
        #[command(flatten)]
        common: Common,
        /// Output directory (its results.json is updated, other sections kept).
        #[arg(long, default_value = "bench")]
        out: std::path::PathBuf,
    },
    /// Everything; writes RESULTS.md, results.json and plots to --out.
    All {
        #[command(flatten)]
        opts: drivers::all::Opts,
        #[command(flatten)]
        common: Common,
    },
    /// Render the Figure 13 timeline (fault_timeline.svg/png) from the JSON
    /// bench/faults/fig13.sh wrote.
    Timeline {
        #[arg(long, default_value = "bench/faults/fig13.json")]
        json: std::path::PathBuf,
        #[arg(long, default_value = "bench/faults")]
        out: std::path::PathBuf,
    },
    /// Re-render RESULTS.md and the plots from an existing results.json.
    Render {
        #[arg(long, default_value = "bench/results.json")]
        json: std::path::PathBuf,
        #[arg(long, default_value = "bench")]
        out: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum Worker {
    /// ns per fcntl(fd, F_GETFL) call.
    Fcntl {
        #[arg(long)]
        path: String,
        #[arg(long, default_value_t = 100_000)]
        iters: u64,
        #[arg(long, default_value_t = 5)]
        reps: u32,
    },
    /// MB/s writing --total bytes in --chunk-byte writes.
    Write {
        #[arg(long)]
        path: String,
        #[arg(long, value_parser = stats::parse_size, default_value = "16MiB")]
        total: u64,
        #[arg(long, value_parser = stats::parse_size)]
        chunk: u64,
        #[arg(long, default_value_t = 5)]
        reps: u32,
    },
    /// ns per cache-line round trip between two pinned threads.
    Pingpong {
        #[arg(long, default_value_t = 1_000_000)]
        iters: u64,
        #[arg(long, default_value_t = 5)]
        reps: u32,
    },
    /// ns per 1-byte TCP round trip with a `tcp-peer echo` child (lat_tcp).
    TcpLat {
        #[arg(long, default_value_t = 10_000)]
        iters: u64,
        #[arg(long, default_value_t = 5)]
        reps: u32,
    },
    /// MB/s receiving --total bytes per connection from a `tcp-peer send`
    /// child, both sides using --chunk-byte calls (ttcp).
    TcpStream {
        #[arg(long, value_parser = stats::parse_size, default_value = "64MiB")]
        total: u64,
        #[arg(long, value_parser = stats::parse_size)]
        chunk: u64,
        #[arg(long, default_value_t = 3)]
        reps: u32,
    },
    /// ns per batch of --n forks whose children `_exit` at once (parent
    /// holds --path open, so under virtuos every child inherits a shadow).
    Fork {
        #[arg(long)]
        path: String,
        #[arg(long)]
        n: u32,
        #[arg(long, default_value_t = 10)]
        reps: u32,
    },
    /// The other end of tcp-lat / tcp-stream (started by them).
    TcpPeer {
        #[arg(long)]
        connect: std::net::SocketAddr,
        #[command(subcommand)]
        mode: workers::tcp_peer::Mode,
    },
}

fn write_json<T: serde::Serialize>(path: Option<&std::path::Path>, v: &T) -> anyhow::Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(v)? + "\n")?;
    }
    Ok(())
}

fn main() {
    let r = run(Cli::parse());
    drivers::cleanup();
    if let Err(e) = r {
        eprintln!("virtuos-bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Worker(w) => {
            let out = match w {
                Worker::Fcntl { path, iters, reps } => {
                    workers::fcntl::run(&workers::fcntl::Params { path, iters, reps })?
                }
                Worker::Write {
                    path,
                    total,
                    chunk,
                    reps,
                } => workers::write::run(&workers::write::Params {
                    path,
                    total,
                    chunk,
                    reps,
                })?,
                Worker::Pingpong { iters, reps } => {
                    workers::pingpong::run(&workers::pingpong::Params { iters, reps })?
                }
                Worker::TcpLat { iters, reps } => {
                    workers::tcp_lat::run(&workers::tcp_lat::Params { iters, reps })?
                }
                Worker::TcpStream { total, chunk, reps } => {
                    workers::tcp_stream::run(&workers::tcp_stream::Params { total, chunk, reps })?
                }
                Worker::Fork { path, n, reps } => {
                    workers::fork::run(&workers::fork::Params { path, n, reps })?
                }
                // Prints nothing: the measuring worker owns stdout.
                Worker::TcpPeer { connect, mode } => return workers::tcp_peer::run(connect, &mode),
            };
            out.print()
        }
        Cmd::Fcntl { opts, common, json } => {
            let r = drivers::fcntl::run(&opts, &common)?;
            drivers::fcntl::print(&r);
            write_json(json.as_deref(), &r)
        }
        Cmd::Write { opts, common, json } => {
            let r = drivers::write::run(&opts, &common)?;
            drivers::write::print(&r);
            write_json(json.as_deref(), &r)
        }
        Cmd::QueuePing { opts, common, json } => {
            let r = drivers::queue_ping::run(&opts, &common)?;
            drivers::queue_ping::print(&r);
            write_json(json.as_deref(), &r)
        }
        Cmd::Net { opts, common, out } => drivers::net::run(&opts, &common, &out),
        Cmd::Vm { opts, common, out } => drivers::vm::run(&opts, &common, &out),
        Cmd::All { opts, common } => {
            drivers::all::run(&opts, &common)?;
            Ok(())
        }
        Cmd::Render { json, out } => drivers::output::render(&json, &out),
        Cmd::Timeline { json, out } => timeline::render(&json, &out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        // clap checks (duplicate flags between flattened option groups, ...)
        // that otherwise run only in debug builds.
        <Cli as clap::CommandFactory>::command().debug_assert();
        let cli = Cli::try_parse_from([
            "virtuos-bench",
            "net",
            "--net",
            "lat",
            "--lat-iters",
            "7",
            "--rounds",
            "2",
        ])
        .unwrap();
        let Cmd::Net { opts, common, .. } = cli.cmd else {
            panic!("not net");
        };
        assert_eq!(opts.net, [drivers::net::Bench::Lat]);
        assert_eq!(opts.lat.lat_iters, 7);
        assert_eq!(common.rounds, 2);
        assert!(opts.flags().starts_with("--net lat --lat-iters 7 "));
    }

    #[test]
    fn vm_command_line_parses_and_reproduces() {
        let cli = Cli::try_parse_from([
            "virtuos-bench",
            "vm",
            "--vm",
            "fork,write",
            "--vm-slots",
            "40",
            "--fork-sizes",
            "1,8",
            "--chunks",
            "4k,1M",
            "--rounds",
            "2",
        ])
        .unwrap();
        let Cmd::Vm { opts, common, out } = cli.cmd else {
            panic!("not vm");
        };
        use drivers::vm::Bench;
        assert_eq!(opts.vm, [Bench::Fork, Bench::Write]);
        assert_eq!(opts.vm_slots, 40);
        assert_eq!(opts.fork.fork_sizes, [1, 8]);
        assert_eq!(opts.chunks, [4096, 1 << 20]);
        assert_eq!(opts.launch_slots, [16, 40], "default");
        assert_eq!(common.rounds, 2);
        let cmd = opts.command(&common, &out);
        assert!(
            cmd.starts_with("target/release/virtuos-bench vm --vm fork,write --vm-slots 40 "),
            "{cmd}"
        );
        assert!(cmd.contains(" --fork-sizes 1,8 "), "{cmd}");
        assert!(cmd.contains(" --chunks 4096,1048576 "), "{cmd}");
        assert!(cmd.ends_with(" --rounds 2 --out bench"), "{cmd}");
        // The reproduce command parses back to the same options.
        let argv: Vec<&str> = cmd.split(' ').skip(1).collect();
        let again = Cli::try_parse_from(std::iter::once("virtuos-bench").chain(argv)).unwrap();
        let Cmd::Vm { opts: o2, .. } = again.cmd else {
            panic!("not vm");
        };
        assert_eq!(o2.command(&common, &out), cmd);
        // Slots beyond the VM's 63 are refused.
        assert!(Cli::try_parse_from(["virtuos-bench", "vm", "--vm-slots", "64"]).is_err());
    }
}
