//! Where a domain runs and how its private file system view is built.
//!
//! The process backend runs the domain as a host process in its own mount
//! namespace (`process.rs`); a network domain also gets its own network
//! namespace (`netns.rs`). A VM backend, where this binary is PID 1 of a
//! guest and the storage is a guest disk, provides the same `Root`.

use crate::role::Role;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

pub mod netns;
pub mod process;
pub mod vm;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    Process,
    Vm,
}

/// The directory shadows chroot into; client paths under `mount` are valid
/// in it verbatim.
pub struct Root {
    pub dir: PathBuf,
    /// The storage mount path, absolute (e.g. `/storage`); `/` for a
    /// network domain (whose root is empty).
    pub mount: PathBuf,
}

impl Root {
    pub fn new(dir: PathBuf, mount: PathBuf) -> Root {
        Root { dir, mount }
    }
}

/// Check a `--mount` argument: absolute, normalised, not `/`.
pub fn check_mount(mount: &str) -> Result<PathBuf> {
    let ok = mount
        .strip_prefix('/')
        .is_some_and(|rest| rest.split('/').all(|seg| !matches!(seg, "" | "." | "..")));
    anyhow::ensure!(
        ok,
        "--mount {mount:?} must be an absolute, normalised path other than /"
    );
    Ok(PathBuf::from(mount))
}

/// What the domain's private environment is built from.
pub struct Setup<'a> {
    pub kind: BackendKind,
    pub role: Role,
    /// The storage tree (storage role only).
    pub data_dir: Option<&'a Path>,
    pub mount: &'a Path,
    /// The host link (network role only).
    pub net: Option<&'a netns::NetConfig>,
}

pub fn setup(s: &Setup<'_>) -> Result<Root> {
    match (s.kind, s.role) {
        (BackendKind::Vm, _) => vm::setup(s.data_dir, s.mount),
        (BackendKind::Process, Role::Storage) => {
            let data = s.data_dir.context("a storage domain needs --data-dir")?;
            process::setup(data, s.mount)
        }
        (BackendKind::Process, Role::Network) => {
            let net = s
                .net
                .context("a network domain needs --net-subnet and --net-host-if")?;
            netns::setup(net)?;
            process::setup_empty()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_checked() {
        assert!(check_mount("/storage").is_ok());
        assert!(check_mount("/a/b").is_ok());
        for bad in ["storage", "/", "/a/../b", "/a/./b", "/a/", ""] {
            assert!(check_mount(bad).is_err(), "{bad:?}");
        }
    }
}
