//! The host programs a test needs.

use crate::SETUP_HINT;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Panic unless every program is installed (a name is looked up in PATH).
pub fn require_programs(names: &[&str]) {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| find_program(n).is_none())
        .collect();
    if !missing.is_empty() {
        panic!(
            "required program(s) not found: {} — {SETUP_HINT}",
            missing.join(", ")
        );
    }
}

/// Full path of a program, looked up in PATH unless it contains a `/`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let exec = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return exec(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| exec(p))
}

/// The Python interpreter the tests use: Debian's `/usr/bin/python3` when it
/// exists (what scripts/setup-debian.sh installs; no version-manager shims
/// between the test and the interpreter), else `python3` from PATH.
pub fn python() -> String {
    if find_program("/usr/bin/python3").is_some() {
        "/usr/bin/python3".into()
    } else {
        "python3".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_is_reported() {
        assert!(find_program("bash").is_some());
        assert!(find_program("no-such-program-virtuos").is_none());
        let e = std::panic::catch_unwind(|| require_programs(&["no-such-program-virtuos"]))
            .unwrap_err();
        let msg = e.downcast_ref::<String>().unwrap();
        assert!(msg.contains("setup-debian.sh"), "{msg}");
    }
}
