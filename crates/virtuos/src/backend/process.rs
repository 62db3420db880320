//! The process backend: the domain server runs as a host process (it builds
//! its own mount namespace); its control socket is descriptor 3.

use super::DomainSpec;
use anyhow::{bail, Context, Result};
use rustix::fd::{AsRawFd, BorrowedFd, OwnedFd};
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
use std::process::{Child, Command, Stdio};

/// Spawn `virtuos-domain --control-fd 3 --data-dir <data> --mount <mount>
/// --backend process` (storage) or `virtuos-domain --control-fd 3 --role
/// network --net-subnet <cidr> --net-host-if <name> --backend process`;
/// returns the child and the daemon's end of the link.
/// `heartbeat` (a memfd) becomes the domain's descriptor 4 (`--heartbeat-fd 4`).
pub fn spawn(spec: &DomainSpec, heartbeat: BorrowedFd<'_>) -> Result<(Child, OwnedFd)> {
    if !spec.bin.is_file() {
        bail!(
            "domain server {} not found: build it with `cargo build --release` \
             (or set VIRTUOS_DOMAIN_BIN)",
            spec.bin.display()
        );
    }
    if let Some(data) = &spec.data_dir {
        std::fs::create_dir_all(data)
            .with_context(|| format!("cannot create {}", data.display()))?;
    }
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .context("socketpair")?;
    let mut cmd = Command::new(&spec.bin);
    cmd.args(["--control-fd", "3", "--heartbeat-fd", "4"]);
    if let Some(data) = &spec.data_dir {
        cmd.arg("--data-dir")
            .arg(data)
            .arg("--mount")
            .arg(&spec.mount);
    }
    if let Some(net) = &spec.net {
        cmd.args(["--role", "network", "--net-subnet"])
            .arg(net.to_string())
            .arg("--net-host-if")
            .arg(net.host_if());
    }
    cmd.arg("--backend").arg("process").stdin(Stdio::null());
    crate::sys::domain_child_setup(&mut cmd, [theirs.as_raw_fd(), heartbeat.as_raw_fd()]);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", spec.bin.display()))?;
    drop(theirs);
    Ok((child, ours))
}
