//! `virtuos-domain`: a service domain server (SOSP'13 VirtuOS, §3.3.2, §4.2).
//!
//! ```text
//! virtuos-domain --control-fd N --data-dir DIR --mount /storage [--backend process|vm]
//! ```
//!
//! The daemon starts it with one end of a `SOCK_SEQPACKET` socketpair as
//! descriptor N. It answers `DomainReply::Ready { cpus }`, then one reply per
//! `DomainCommand`. Each client gets a shadow process (`shadow`) whose
//! worker threads execute the client's forwarded calls (`exec`) against the
//! domain's private view of the file system (`backend`).

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;

mod backend;
mod exec;
mod log;
mod proto;
mod server;
mod shadow;
mod sys;

#[derive(Parser, Debug)]
#[command(
    name = "virtuos-domain",
    version,
    about = "virtuos service domain server"
)]
struct Args {
    /// Inherited control socket (SOCK_SEQPACKET) to the daemon.
    #[arg(long)]
    control_fd: i32,
    /// Directory holding the domain's files (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Path at which clients see the data directory.
    #[arg(long, default_value = "/storage")]
    mount: String,
    /// Where the domain runs.
    #[arg(long, value_enum, default_value = "process")]
    backend: backend::BackendKind,
}

fn run(args: Args) -> Result<()> {
    let ctl = sys::take_inherited_fd(args.control_fd)
        .with_context(|| format!("--control-fd {} is not an open descriptor", args.control_fd))?;
    let mount = backend::check_mount(&args.mount)?;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let procfd = rustix::fs::open(
        "/proc",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .context("cannot open /proc")?;
    let root = backend::setup(args.backend, &args.data_dir, &mount)
        .context("cannot set up the domain's private root")?;
    std::env::set_current_dir("/").context("chdir /")?;
    server::Server::new(ctl, root, procfd, cpus).run()
}

fn main() {
    log::init();
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("virtuos-domain: {e:#}");
        std::process::exit(1);
    }
}
