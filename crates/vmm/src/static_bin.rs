//! Static guest binaries: the domain (and test programs) run as PID 1 of an
//! initramfs with no libc, so they are built with `+crt-static` on the gnu
//! target (there is no musl target here).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TARGET: &str = "x86_64-unknown-linux-gnu";
const RUSTFLAGS: &str = "-C target-feature=+crt-static";

/// What to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact<'a> {
    Bin(&'a str),
    Example(&'a str),
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// The target directory (`cargo metadata`, which honours `CARGO_TARGET_DIR`
/// and config files).
pub fn target_dir(workspace: &Path) -> Result<PathBuf> {
    let out = Command::new(cargo())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(PathBuf::from(
        v["target_directory"]
            .as_str()
            .context("no target_directory")?,
    ))
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// `cargo build -p PACKAGE --release --target x86_64-unknown-linux-gnu`
/// with `RUSTFLAGS=-C target-feature=+crt-static`; checks the result is
/// static and returns its path.
pub fn build_static(package: &str, artifact: Artifact) -> Result<PathBuf> {
    let ws = workspace_root();
    let step = crate::progress::Step::start(format!("building static {package} {artifact:?}"));
    let mut cmd = Command::new(cargo());
    cmd.current_dir(&ws).args([
        "build",
        "-q",
        "-p",
        package,
        "--release",
        "--target",
        TARGET,
    ]);
    let (kind, name) = match artifact {
        Artifact::Bin(n) => ("--bin", n),
        Artifact::Example(n) => ("--example", n),
    };
    cmd.args([kind, name])
        .env("RUSTFLAGS", RUSTFLAGS)
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    let out = cmd.output().context("running cargo build")?;
    if !out.status.success() {
        bail!(
            "static build of {package} {name} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut path = target_dir(&ws)?.join(TARGET).join("release");
    if let Artifact::Example(_) = artifact {
        path = path.join("examples");
    }
    let path = path.join(name);
    check_static(&path)?;
    step.done(&path.display().to_string());
    Ok(path)
}

/// Build the domain server `virtuos-domain` statically.
pub fn build_domain() -> Result<PathBuf> {
    build_static("virtuos-domain", Artifact::Bin("virtuos-domain"))
}

/// Fail unless `path` is an ELF executable without a program interpreter
/// (`PT_INTERP`), i.e. it needs no dynamic loader and no shared libraries.
pub fn check_static(path: &Path) -> Result<()> {
    let elf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if elf.get(0..6) != Some(b"\x7fELF\x02\x01") {
        bail!("{} is not a 64-bit little-endian ELF file", path.display());
    }
    let rd = |o: usize, n: usize| -> Result<u64> {
        let b = elf.get(o..o + n).context("truncated ELF")?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(b);
        Ok(u64::from_le_bytes(v))
    };
    let (phoff, phentsize, phnum) = (
        rd(0x20, 8)? as usize,
        rd(0x36, 2)? as usize,
        rd(0x38, 2)? as usize,
    );
    for i in 0..phnum {
        const PT_INTERP: u64 = 3;
        if rd(phoff + i * phentsize, 4)? == PT_INTERP {
            bail!(
                "{} is dynamically linked (has a PT_INTERP program header)",
                path.display()
            );
        }
    }
    Ok(())
}
