//! `net`: the network domain benchmarks (TCP latency, TCP stream
//! throughput, HTTP), measured in one run and merged into an existing
//! results.json (the other sections are kept), then RESULTS.md and the
//! plots are rendered again. `all` runs the same measurements.

use super::{http, tcp_lat, tcp_stream, Common};
use crate::results::NetResults;
use anyhow::Context;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Bench {
    Lat,
    Stream,
    Http,
}

#[derive(Clone, Debug, clap::Args)]
pub struct Opts {
    /// Which network benchmarks to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "lat,stream,http"
    )]
    pub net: Vec<Bench>,
    #[command(flatten)]
    pub lat: tcp_lat::Opts,
    #[command(flatten)]
    pub stream: tcp_stream::Opts,
    #[command(flatten)]
    pub http: http::Opts,
}

impl Opts {
    /// The options as command-line flags (for the reproduce command).
    pub fn flags(&self) -> String {
        let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let benches: Vec<&str> = self
            .net
            .iter()
            .map(|b| match b {
                Bench::Lat => "lat",
                Bench::Stream => "stream",
                Bench::Http => "http",
            })
            .collect();
        format!(
            "--net {} --lat-iters {} --lat-reps {} --stream-chunks {} --stream-total {} \
             --stream-reps {} --http-size {} --http-duration {} --http-connections {} \
             --http-threads {} --http-reps {}",
            benches.join(","),
            self.lat.lat_iters,
            self.lat.lat_reps,
            list(&self.stream.stream_chunks),
            self.stream.stream_total,
            self.stream.stream_reps,
            self.http.http_size,
            self.http.http_duration,
            self.http.http_connections,
            self.http.http_threads,
            self.http.http_reps,
        )
    }

    /// The `net` command line that reproduces these measurements.
    pub fn command(&self, common: &Common, out: &Path) -> String {
        let mut c = format!(
            "target/release/virtuos-bench net {} --rounds {} --out {}",
            self.flags(),
            common.rounds,
            out.display()
        );
        if common.native_only {
            c.push_str(" --native-only");
        }
        if common.tmp != Path::new("/dev/shm") {
            c.push_str(&format!(" --tmp {}", common.tmp.display()));
        }
        c
    }
}

/// Measure the selected benchmarks.
pub fn measure(o: &Opts, common: &Common, out: &Path) -> anyhow::Result<NetResults> {
    let mut r = NetResults {
        date: super::output::utc_now(),
        command: o.command(common, out),
        revision: super::output::revision(),
        load_start: super::output::loadavg(),
        ..NetResults::default()
    };
    if o.net.contains(&Bench::Lat) {
        let l = tcp_lat::run(&o.lat, common)?;
        tcp_lat::print(&l);
        r.tcp_lat = Some(l);
    }
    if o.net.contains(&Bench::Stream) {
        let s = tcp_stream::run(&o.stream, common)?;
        tcp_stream::print(&s);
        r.tcp_stream = Some(s);
    }
    if o.net.contains(&Bench::Http) {
        let h = http::run(&o.http, common)?;
        http::print(&h);
        r.http = Some(h);
    }
    r.load_end = super::output::loadavg();
    Ok(r)
}

/// `net`: measure, merge into `out/results.json` (created if missing) and
/// render the report.
pub fn run(o: &Opts, common: &Common, out: &Path) -> anyhow::Result<()> {
    if !common.native_only {
        common.check_binaries()?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let net = measure(o, common, out)?;
    let command = net.command.clone();
    super::output::merge_section(out, common, command, |r| r.net = Some(net))
}
