//! `virtuos run -- CMD ARGS...`: run an unmodified program under libvirtuos.so.

use super::up;
use crate::config::Settings;
use crate::paths::{self, Env, Runtime};
use anyhow::{bail, Context, Result};
use std::ffi::{OsStr, OsString};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// Exit status when CMD cannot be found (as a shell).
pub const NOT_FOUND: i32 = 127;
/// Exit status when CMD cannot be executed (as a shell).
pub const NOT_EXECUTABLE: i32 = 126;

/// The preload library, which must exist.
pub fn preload_lib() -> Result<PathBuf> {
    let env = Env::current();
    let lib = paths::preload_lib(&env).context("cannot locate libvirtuos.so")?;
    if !lib.is_file() {
        bail!(
            "the preload library {} is missing: build it with `cargo build --release` \
             (or set {})",
            lib.display(),
            paths::vars::PRELOAD
        );
    }
    Ok(lib)
}

/// `LD_PRELOAD` with `lib` first, keeping what was there.
pub fn ld_preload(lib: &Path, existing: Option<&OsStr>) -> OsString {
    let mut v = OsString::from(lib);
    if let Some(e) = existing.filter(|e| !e.is_empty()) {
        v.push(":");
        v.push(e);
    }
    v
}

/// A command that runs `program args` under the library, talking to the
/// daemon in `rt` with storage mount `mount`.
pub fn command(rt: &Runtime, mount: &str, lib: &Path, argv: &[OsString]) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env(
            "LD_PRELOAD",
            ld_preload(lib, std::env::var_os("LD_PRELOAD").as_deref()),
        )
        .env(paths::vars::RUNTIME_DIR, &rt.dir)
        .env(paths::vars::STORAGE_MOUNT, mount);
    cmd
}

/// A shell-like exit code: the status, or 128+N for signal N.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 1,
    }
}

pub fn cmd(settings: &Settings, argv: &[OsString]) -> Result<i32> {
    if argv.is_empty() {
        bail!("no command given: virtuos run -- CMD [ARGS...]");
    }
    let lib = preload_lib()?;
    let running = up::ensure(settings)?;
    let name = argv[0].to_string_lossy().into_owned();
    let mut child =
        match command(&settings.runtime, &running.info.storage_mount, &lib, argv).spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("virtuos: {name}: command not found");
                return Ok(NOT_FOUND);
            }
            Err(e) => {
                eprintln!("virtuos: {name}: {e}");
                return Ok(NOT_EXECUTABLE);
            }
        };
    let status = child.wait().context("waiting for the command")?;
    Ok(exit_code(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ld_preload_is_prepended() {
        let lib = Path::new("/x/libvirtuos.so");
        assert_eq!(ld_preload(lib, None), "/x/libvirtuos.so");
        assert_eq!(ld_preload(lib, Some(OsStr::new(""))), "/x/libvirtuos.so");
        assert_eq!(
            ld_preload(lib, Some(OsStr::new("/a.so"))),
            "/x/libvirtuos.so:/a.so"
        );
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }
}
