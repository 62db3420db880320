//! Small-object HTTP throughput: nginx serving one small file, loaded by
//! wrk (or ab) on the host. Native: nginx on the host's 127.0.0.1. Under
//! virtuos: nginx's sockets live in the network domain, and the host's load
//! generator reaches it (a) directly at the domain's address on the veth
//! link, (b) through the daemon's `--forward` proxy on host 127.0.0.1. The
//! file lives in a host directory in all three, so only the network path
//! differs.

use super::loadgen::{Load, Tool};
use super::nginx::{self, Server};
use super::{Common, Pool, Stack, TempDir};
use crate::results::{Forwarded, HttpPoint, HttpResults};
use crate::stats::{fmt_ratio, ratio};
use anyhow::Context;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

/// nginx's port inside the network domain (its own namespace: always free).
const DOMAIN_PORT: u16 = 8080;
const OBJECT: &str = "/object.bin";

#[derive(Clone, Debug, clap::Args)]
pub struct Opts {
    /// Size of the file nginx serves, bytes.
    #[arg(long, value_parser = crate::stats::parse_size, default_value = "128")]
    pub http_size: u64,
    /// Seconds per load-generator run (one sample).
    #[arg(long, default_value_t = 5)]
    pub http_duration: u64,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 8)]
    pub http_connections: u32,
    /// wrk threads (ab has one).
    #[arg(long, default_value_t = 1)]
    pub http_threads: u32,
    /// Load-generator runs per configuration and round.
    #[arg(long, default_value_t = 1)]
    pub http_reps: u32,
}

/// One configuration being measured.
struct Target {
    config: &'static str,
    addr: SocketAddr,
}

impl Target {
    fn url(&self) -> String {
        format!("http://{}{OBJECT}", self.addr)
    }
}

pub fn run(o: &Opts, common: &Common) -> anyhow::Result<HttpResults> {
    let mut r = HttpResults {
        object_size: o.http_size,
        duration: o.http_duration,
        connections: o.http_connections,
        threads: o.http_threads,
        reps: o.http_reps,
        rounds: common.rounds.max(1),
        ..HttpResults::default()
    };
    let (nginx_bin, tool) = match nginx::find().and_then(|n| Ok((n, Tool::find()?))) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("http: not measured: {e:#}");
            r.error = Some(format!("{e:#}"));
            return Ok(r);
        }
    };
    r.tool = tool.name().into();
    r.tool_version = tool.version();
    r.nginx_version = nginx::version(&nginx_bin);
    let load = Load {
        duration: o.http_duration,
        connections: o.http_connections,
        threads: o.http_threads,
    };
    let tmp = TempDir::new(&common.tmp, "http")?;
    let www = tmp.path().join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join(&OBJECT[1..]), vec![b'x'; o.http_size as usize])?;

    // Native nginx on a free host port.
    let port = nginx::free_port()?;
    let native_dir = tmp.path().join("native");
    let argv = nginx::prepare(&nginx_bin, &native_dir, &format!("127.0.0.1:{port}"), &www)?;
    let mut native = Server::start(command(&argv), &native_dir, "native nginx")?;
    let native_t = Target {
        config: "native",
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    native.wait_ready(native_t.addr, OBJECT, o.http_size)?;

    // nginx under virtuos, behind a private daemon with a port forward.
    let fwd_port = nginx::free_port()?;
    let virt = start_virtuos(common, &nginx_bin, tmp.path(), &www, fwd_port, o.http_size);
    let mut targets = vec![native_t];
    let mut failed: Option<String> = None;
    match &virt {
        Ok((_, _, veth)) => {
            targets.push(Target {
                config: "virtuos-veth",
                addr: *veth,
            });
            targets.push(Target {
                config: "virtuos-forward",
                addr: SocketAddr::from(([127, 0, 0, 1], fwd_port)),
            });
        }
        Err(e) => {
            eprintln!("http: forwarded runs skipped: {e:#}");
            failed = Some(format!("{e:#}"));
        }
    }

    // Warm-up (untimed, 1 s each), then interleaved rounds.
    let warm = Load {
        duration: 1,
        ..load.clone()
    };
    for t in &targets {
        if let Err(e) = tool.run(&t.url(), &warm) {
            eprintln!("http: warm-up of {} failed: {e:#}", t.config);
        }
    }
    let mut pools: Vec<Pool> = targets.iter().map(|_| Pool::default()).collect();
    for round in 1..=r.rounds {
        for (t, pool) in targets.iter().zip(&mut pools) {
            for _ in 0..o.http_reps.max(1) {
                eprintln!("http: round {round}/{}: {} {}", r.rounds, t.config, t.url());
                let res = tool.run(&t.url(), &load);
                if let Err(e) = &res {
                    eprintln!("http: {} failed: {e:#}", t.config);
                }
                pool.add_samples(res.map(|x| vec![x]));
            }
        }
    }
    if !native.alive() {
        eprintln!("http: native nginx died: {}", native.log());
    }
    r.points = targets
        .iter()
        .zip(&pools)
        .map(|(t, p)| HttpPoint {
            config: t.config.into(),
            url: t.url(),
            measured: p.forwarded(),
        })
        .collect();
    if let Some(e) = failed {
        for config in ["virtuos-veth", "virtuos-forward"] {
            r.points.push(HttpPoint {
                config: config.into(),
                url: String::new(),
                measured: Forwarded::failed(e.clone()),
            });
        }
    }
    // Servers stop before the stack goes down (drop order: server, stack).
    drop(virt);
    drop(native);
    Ok(r)
}

fn command(argv: &[String]) -> Command {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]).env_remove("LD_PRELOAD");
    c
}

/// A private stack with `--forward FWD:8080`, and nginx under `virtuos run`
/// listening on 0.0.0.0:8080 in the network domain. Returns the server
/// (dropped first), the stack and the domain's veth address.
fn start_virtuos(
    common: &Common,
    nginx_bin: &Path,
    tmp: &Path,
    www: &Path,
    fwd_port: u16,
    size: u64,
) -> anyhow::Result<(Server, Stack, SocketAddr)> {
    if common.native_only {
        anyhow::bail!("not measured (--native-only)");
    }
    common.check_binaries()?;
    let stack = Stack::start_with(
        common,
        &["--forward".into(), format!("{fwd_port}:{DOMAIN_PORT}")],
    )?;
    let ip: std::net::IpAddr = stack
        .network_address()?
        .parse()
        .context("the network domain's address")?;
    let dir = tmp.join("virtuos");
    let argv = nginx::prepare(nginx_bin, &dir, &format!("0.0.0.0:{DOMAIN_PORT}"), www)?;
    let argv: Vec<OsString> = argv.into_iter().map(OsString::from).collect();
    let mut server = Server::start(stack.run_command(&argv), &dir, "nginx under virtuos")?;
    let veth = SocketAddr::new(ip, DOMAIN_PORT);
    let ready = server.wait_ready(veth, OBJECT, size).and_then(|()| {
        server.wait_ready(SocketAddr::from(([127, 0, 0, 1], fwd_port)), OBJECT, size)
    });
    if let Err(e) = ready {
        anyhow::bail!("{e:#}\n{}", stack.log_tail());
    }
    Ok((server, stack, veth))
}

pub fn print(r: &HttpResults) {
    if let Some(e) = &r.error {
        println!("http: not measured: {e}");
        return;
    }
    println!(
        "http: {} ({}), {} B object, {} connections, {} s per run",
        r.tool, r.nginx_version, r.object_size, r.connections, r.duration
    );
    let native = r.points.first().and_then(|p| p.measured.median());
    for p in &r.points {
        match p.measured.median() {
            Some(m) => println!(
                "  {:<16} {:>10.0} req/s  {:>8} of native  {}",
                p.config,
                m,
                fmt_ratio(native.and_then(|n| ratio(m, n))),
                p.url
            ),
            None => println!(
                "  {:<16} n/a ({})",
                p.config,
                p.measured.error.as_deref().unwrap_or("no data")
            ),
        }
    }
}
