//! Where a domain runs and how its private file system view is built.
//!
//! The process backend runs the domain as a host process in its own mount
//! namespace (`process.rs`). A VM backend, where this binary is PID 1 of a
//! guest and the storage is a guest disk, provides the same `Root`.

use anyhow::Result;
use std::path::{Path, PathBuf};

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
    /// The storage mount path, absolute (e.g. `/storage`).
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

pub fn setup(kind: BackendKind, data_dir: &Path, mount: &Path) -> Result<Root> {
    match kind {
        BackendKind::Process => process::setup(data_dir, mount),
        BackendKind::Vm => vm::setup(data_dir, mount),
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
