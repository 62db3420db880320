//! The process backend: the domain server runs as a host process (it builds
//! its own mount namespace); its control socket is descriptor 3.

use super::DomainSpec;
use anyhow::{bail, Context, Result};
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
use std::process::{Child, Command, Stdio};

/// Spawn `virtuos-domain --control-fd 3 --data-dir <data> --mount <mount>
/// --backend process`; returns the child and the daemon's end of the link.
pub fn spawn(spec: &DomainSpec) -> Result<(Child, OwnedFd)> {
    if !spec.bin.is_file() {
        bail!(
            "domain server {} not found: build it with `cargo build --release` \
             (or set VIRTUOS_DOMAIN_BIN)",
            spec.bin.display()
        );
    }
    std::fs::create_dir_all(&spec.data_dir)
        .with_context(|| format!("cannot create {}", spec.data_dir.display()))?;
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .context("socketpair")?;
    let mut cmd = Command::new(&spec.bin);
    cmd.arg("--control-fd")
        .arg("3")
        .arg("--data-dir")
        .arg(&spec.data_dir)
        .arg("--mount")
        .arg(&spec.mount)
        .arg("--backend")
        .arg("process")
        .stdin(Stdio::null());
    crate::sys::domain_child_setup(&mut cmd, theirs.as_raw_fd());
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", spec.bin.display()))?;
    drop(theirs);
    Ok((child, ours))
}
