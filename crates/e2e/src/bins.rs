//! The binaries under test: located or built once per test binary.

use crate::text::tail;
use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::SystemTime;

/// The three artifacts under test.
#[derive(Debug)]
pub struct Bins {
    pub dir: PathBuf,
    pub virtuos: PathBuf,
    pub domain: PathBuf,
    pub preload: PathBuf,
    /// How they were obtained (shown in failure reports).
    pub note: String,
}

/// The workspace root (`crates/e2e/../..`).
pub fn workspace_root() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    p.canonicalize().unwrap_or(p)
}

/// The cargo target dir this test binary was built into.
pub(crate) fn target_dir() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        let t = PathBuf::from(t);
        return if t.is_absolute() {
            t
        } else {
            workspace_root().join(t)
        };
    }
    // A test executable is <target>/<profile>/deps/<name>-<hash>.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(deps) = exe.parent() {
            if deps.file_name().is_some_and(|n| n == "deps") {
                if let Some(target) = deps.parent().and_then(Path::parent) {
                    return target.to_path_buf();
                }
            }
        }
    }
    workspace_root().join("target")
}

/// Locate (and, unless disabled, build) the binaries; cached per process.
/// Panics with the reason, so every test fails with the same clear message.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Result<Bins, String>> = OnceLock::new();
    match BINS.get_or_init(locate_or_build) {
        Ok(b) => b,
        Err(e) => panic!("virtuos binaries unavailable: {e}"),
    }
}

fn locate_or_build() -> Result<Bins, String> {
    let (dir, note) = if let Some(d) = std::env::var_os("VIRTUOS_BIN_DIR") {
        (
            PathBuf::from(d),
            "from VIRTUOS_BIN_DIR, not rebuilt".to_string(),
        )
    } else {
        let target = target_dir();
        let dir = target.join("release");
        if std::env::var_os("VIRTUOS_E2E_NO_BUILD").is_some_and(|v| v != "0") {
            (
                dir,
                "VIRTUOS_E2E_NO_BUILD set: not rebuilt, may be stale".to_string(),
            )
        } else {
            build(&target)?;
            (
                dir,
                "rebuilt by the harness (cargo build --release)".to_string(),
            )
        }
    };
    let b = Bins {
        virtuos: dir.join("virtuos"),
        domain: dir.join("virtuos-domain"),
        preload: dir.join("libvirtuos.so"),
        dir,
        note,
    };
    let missing: Vec<String> = [&b.virtuos, &b.domain, &b.preload]
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        return Err(format!("missing: {} ({})", missing.join(", "), b.note));
    }
    Ok(b)
}

fn build(target: &Path) -> Result<(), String> {
    fs::create_dir_all(target).map_err(|e| format!("create {}: {e}", target.display()))?;
    // Test binaries (or other test runners) may build concurrently: one at a time.
    let lock_path = target.join(".virtuos-e2e-build.lock");
    let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "flock {}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        ));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let out = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "-p",
            "virtuos",
            "-p",
            "virtuos-domain",
            "-p",
            "virtuos-preload",
        ])
        .arg("--target-dir")
        .arg(target)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cargo:?}: {e}"))?;
    drop(lock);
    if !out.status.success() {
        return Err(format!(
            "`cargo build --release -p virtuos -p virtuos-domain -p virtuos-preload` failed ({}):\n{}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 80)
        ));
    }
    Ok(())
}

pub(crate) fn describe_bins() -> String {
    let b = bins();
    let age = |p: &Path| {
        fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map(|d| format!("built {}s ago", d.as_secs()))
            .unwrap_or_else(|| "?".into())
    };
    format!(
        "binaries in {} ({}); virtuos {}, libvirtuos.so {}",
        b.dir.display(),
        b.note,
        age(&b.virtuos),
        age(&b.preload)
    )
}
