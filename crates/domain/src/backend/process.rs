//! Process backend: the domain is a host process with a private mount
//! namespace.
//!
//! Layout inside the namespace:
//!
//! ```text
//! R/            tmpfs, read-only after setup (R = /run, or /tmp without /run)
//! R/<mount>/    bind mount of the data directory (nosuid, nodev)
//! ```
//!
//! The tmpfs is mounted over R only in the domain's own namespace, so
//! nothing is created on the host at all (not even an empty directory that
//! a killed domain would leave behind). The data directory is opened before
//! (after `unshare`) and bind-mounted through its descriptor, so it may
//! itself live under R.
//! Shadows chroot into R: client paths such as `/storage/a/b` resolve
//! verbatim and nothing appears under the host's `/storage`.

use super::Root;
use crate::sys;
use anyhow::{Context, Result};
use rustix::fd::AsRawFd;
use rustix::fs::{Mode, OFlags};
use std::path::{Path, PathBuf};

const TMPFS_OPTS: &str = "mode=0755,size=64k";

/// The network domain's private root: an empty read-only tmpfs (no host
/// files at all), in a private mount namespace.
pub fn setup_empty() -> Result<Root> {
    sys::unshare_mount_namespace()
        .context("unshare(CLONE_NEWNS) failed (the process backend needs root)")?;
    sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .context("cannot make / recursively private in the domain's mount namespace")?;
    let root = default_root();
    build(&root, None)?;
    tracing::info!(root = %root.display(), "empty private root ready");
    Ok(Root::new(root, PathBuf::from("/")))
}

fn default_root() -> PathBuf {
    PathBuf::from(if Path::new("/run").is_dir() {
        "/run"
    } else {
        "/tmp"
    })
}

pub fn setup(data_dir: &Path, mount: &Path) -> Result<Root> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    sys::unshare_mount_namespace()
        .context("unshare(CLONE_NEWNS) failed (the process backend needs root)")?;
    sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .context("cannot make / recursively private in the domain's mount namespace")?;
    // Opened in the new namespace: bind mounts need a source mount of ours.
    let data = rustix::fs::open(
        data_dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open data directory {}", data_dir.display()))?;

    let root = default_root();
    let source = PathBuf::from(format!("/proc/self/fd/{}", data.as_raw_fd()));
    build(&root, Some((&source, mount)))
        .with_context(|| format!("data directory {}", data_dir.display()))?;
    drop(data);
    tracing::info!(root = %root.display(), data = %data_dir.display(), "private root ready");
    Ok(Root::new(root, mount.to_path_buf()))
}

/// Mount the tmpfs on `root`, bind `data_dir` at `root/<mount>` if given,
/// then make the tmpfs read-only.
fn build(root: &Path, storage: Option<(&Path, &Path)>) -> Result<()> {
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    sys::mount(
        Some(Path::new("tmpfs")),
        root,
        Some("tmpfs"),
        flags,
        Some(TMPFS_OPTS),
    )
    .with_context(|| format!("cannot mount a tmpfs on {}", root.display()))?;
    if let Some((data_dir, mount)) = storage {
        bind_storage(root, data_dir, mount)?;
    }
    // Nothing but the storage mount is writable in the private root.
    sys::mount(
        None,
        root,
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | flags,
        Some(TMPFS_OPTS),
    )
    .with_context(|| format!("cannot remount {} read-only", root.display()))?;
    Ok(())
}

fn bind_storage(root: &Path, data_dir: &Path, mount: &Path) -> Result<()> {
    let target = mount_point(root, mount);
    std::fs::create_dir_all(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    sys::mount(Some(data_dir), &target, None, libc::MS_BIND, None)
        .with_context(|| format!("cannot bind-mount it onto {}", target.display()))?;
    // Harden the storage mount: shadows never exec, and device nodes in the
    // data directory must not open host devices.
    if let Err(e) = sys::mount(
        None,
        &target,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    ) {
        tracing::warn!("cannot remount the storage bind mount nosuid,nodev: {e}");
    }
    Ok(())
}

/// `R/<mount>` for an absolute `mount`.
pub fn mount_point(root: &Path, mount: &Path) -> PathBuf {
    root.join(mount.strip_prefix("/").unwrap_or(mount))
}
