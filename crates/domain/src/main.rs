//! `virtuos-domain`: a service domain server (SOSP'13 VirtuOS, §3.3.2, §4.2).
//!
//! ```text
//! virtuos-domain --control-fd N --data-dir DIR --mount /storage [--backend process|vm]
//! virtuos-domain --control-fd N --role network --net-subnet 169.254.199.0/30 --net-host-if vtos-h1
//! /init --backend vm --control-port virtuos.control --storage-disk /dev/vda --mount /storage
//! ```
//!
//! The last form is PID 1 of a domain VM (`backend::vm`): its arguments
//! come from the kernel command line after `--`.
//!
//! The daemon starts it with one end of a `SOCK_SEQPACKET` socketpair as
//! descriptor N. It answers `DomainReply::Ready { cpus }`, then one reply per
//! `DomainCommand`. Each client gets a shadow process (`shadow`) whose
//! worker threads execute the client's forwarded calls (`exec`) against the
//! domain's private view of the file system (`backend`).

use anyhow::{Context, Result};
use clap::Parser;
use rustix::fd::AsFd;
use std::path::PathBuf;
use virtuos_abi::control::DomainReply;

mod backend;
mod creds;
mod exec;
mod heartbeat;
mod images;
mod log;
mod pidmap;
mod proto;
mod role;
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
    /// Inherited control socket (SOCK_SEQPACKET) to the daemon (process
    /// backend).
    #[arg(long, required_unless_present = "control_port")]
    control_fd: Option<i32>,
    /// Inherited page (memfd) whose heartbeat the main loop bumps for the
    /// daemon's hang detection (process backend).
    #[arg(long)]
    heartbeat_fd: Option<i32>,
    /// VM backend: name of the virtio-serial port to the daemon.
    #[arg(long)]
    control_port: Option<String>,
    /// VM backend: region slots (NVDIMMs) to turn into device DAX.
    #[arg(long, default_value_t = 0)]
    slots: usize,
    /// VM backend: name of the virtio-serial bell port (wakes).
    #[arg(long)]
    bell_port: Option<String>,
    /// VM backend: the storage disk (ext4), mounted at `--mount`.
    #[arg(long, default_value = "/dev/vda")]
    storage_disk: PathBuf,
    /// What the domain serves: file calls (storage) or socket calls
    /// (network); descriptor calls either way.
    #[arg(long, value_enum, default_value = "storage")]
    role: role::Role,
    /// Directory holding the domain's files (created if missing; storage
    /// role).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Path at which clients see the data directory.
    #[arg(long, default_value = "/storage")]
    mount: String,
    /// Where the domain runs.
    #[arg(long, value_enum, default_value = "process")]
    backend: backend::BackendKind,
    /// Network role: the host link's subnet; the host side gets the first
    /// address, the domain (eth0) the second.
    #[arg(long, default_value = "169.254.199.0/30")]
    net_subnet: String,
    /// Network role: name of the host side of the veth pair.
    #[arg(long, default_value = "vtos-h0")]
    net_host_if: String,
}

fn cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

fn open_proc() -> Result<rustix::fd::OwnedFd> {
    rustix::fs::open(
        "/proc",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .context("cannot open /proc")
}

/// PID 1 of a domain VM: boot the guest; returns in the forked server.
fn run_vm(args: Args) -> Result<()> {
    let mount = backend::check_mount(&args.mount)?;
    let port = args
        .control_port
        .as_deref()
        .context("--backend vm needs --control-port NAME")?;
    let booted = backend::vm::boot(&backend::vm::BootArgs {
        port,
        disk: &args.storage_disk,
        mount: &mount,
        slots: args.slots,
        bell_port: args.bell_port.as_deref(),
        role: args.role,
    })?;
    let procfd = open_proc()?;
    std::env::set_current_dir("/").context("chdir /")?;
    if let Some(bell) = &booted.bell {
        heartbeat::install_bell(bell.try_clone().context("duplicating the bell port")?);
    }
    let roles = (cpus(), args.role);
    server::Server::with_bell(booted.control, booted.root, procfd, roles, booted.bell).run()
}

fn run(args: Args) -> Result<()> {
    if args.backend == backend::BackendKind::Vm {
        return run_vm(args);
    }
    let control_fd = args
        .control_fd
        .context("--control-fd is required (process backend)")?;
    let ctl = sys::take_inherited_fd(control_fd)
        .with_context(|| format!("--control-fd {control_fd} is not an open descriptor"))?;
    if let Some(fd) = args.heartbeat_fd {
        let hb = sys::take_inherited_fd(fd)
            .with_context(|| format!("--heartbeat-fd {fd} is not an open descriptor"))?;
        heartbeat::install(hb)?;
    }
    let mount = backend::check_mount(&args.mount)?;
    let cpus = cpus();
    let procfd = open_proc()?;
    let net = match args.role {
        role::Role::Network => Some(backend::netns::NetConfig::parse(
            &args.net_subnet,
            &args.net_host_if,
        )?),
        role::Role::Storage => None,
    };
    let root = backend::setup(&backend::Setup {
        kind: args.backend,
        role: args.role,
        data_dir: args.data_dir.as_deref(),
        mount: &mount,
        net: net.as_ref(),
    })
    .with_context(|| format!("cannot set up the {:?} domain", args.role));
    let root = match root {
        Ok(r) => r,
        Err(e) => {
            // Tell the daemon why, instead of just closing the link.
            let why = DomainReply::Error {
                message: format!("{e:#}"),
            };
            let _ = virtuos_abi::control::send(ctl.as_fd(), &why, &[]);
            return Err(e);
        }
    };
    std::env::set_current_dir("/").context("chdir /")?;
    server::Server::new(ctl, root, procfd, cpus, args.role).run()
}

fn main() {
    log::init();
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("virtuos-domain: {e:#}");
        std::process::exit(1);
    }
}
