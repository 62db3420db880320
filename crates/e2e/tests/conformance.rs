//! The POSIX file-system conformance suite (pjdfstest, vendored in
//! `crates/e2e/conformance/`) under virtuos, in a directory under
//! /storage: every subtest must pass, as on native Linux (where all pass;
//! `scripts/conformance.sh` runs both in one go and records the counts).
//!
//! `VIRTUOS_CONFORMANCE_DIRS=chmod,open` runs only those directories of
//! the suite (CI does on the vm backend, where the whole suite does not
//! fit CI's time). Needs root, autoconf, automake, gcc and prove.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use virtuos_e2e::{exec, require_programs, workspace_root, Domain};

/// Build pjdfstest (once per target dir) and return its tests directory.
fn suite() -> PathBuf {
    require_programs(&["autoreconf", "make", "gcc", "prove"]);
    let root = workspace_root();
    let out = Command::new("bash")
        .arg(root.join("scripts/conformance.sh"))
        .arg("build")
        .output()
        .expect("run scripts/conformance.sh build");
    assert!(
        out.status.success(),
        "building pjdfstest failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn selected(tests: &std::path::Path) -> Vec<PathBuf> {
    match std::env::var("VIRTUOS_CONFORMANCE_DIRS") {
        Ok(dirs) if !dirs.trim().is_empty() => dirs
            .split(',')
            .map(|d| tests.join(d.trim()))
            .inspect(|p| assert!(p.is_dir(), "no such part of the suite: {}", p.display()))
            .collect(),
        _ => vec![tests.to_path_buf()],
    }
}

/// Number of test files (`*.t`) under `dirs`.
fn count_files(dirs: &[PathBuf]) -> usize {
    fn walk(p: &std::path::Path) -> usize {
        match std::fs::read_dir(p) {
            Ok(rd) => rd.flatten().map(|e| walk(&e.path())).sum(),
            Err(_) => usize::from(p.extension().is_some_and(|e| e == "t")),
        }
    }
    dirs.iter().map(|d| walk(d)).sum()
}

#[test]
fn pjdfstest_passes_in_full_under_virtuos() {
    assert!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() } == 0,
        "the conformance suite switches users: run the tests as root"
    );
    let dirs = selected(&suite());
    let files = count_files(&dirs);
    assert!(files > 0, "no test files found in {dirs:?}");
    let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let domain = Domain::start();
    let script = format!(
        "mkdir -p /storage/pjd && cd /storage/pjd && prove -r {}",
        list.join(" ")
    );
    let mut cmd = domain.command();
    cmd.args(["run", "--", "sh", "-c", &script]);
    let run = exec(&mut cmd, None, Duration::from_secs(1800), true);
    let out = run.stdout();
    let summary = out
        .lines()
        .filter(|l| l.starts_with("Files=") || l.starts_with("Result:"))
        .collect::<Vec<_>>()
        .join(" ");
    let failures: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("(Wstat") || l.trim_start().starts_with("Failed test"))
        .collect();
    assert!(
        out.contains("\nResult: PASS") && out.contains(&format!("Files={files},")),
        "pjdfstest under virtuos ({} backend): {summary}\nexpected all {files} files to pass; failing:\n{}\n\
         (re-run one file: virtuos run -- sh -c 'mkdir -p /storage/t && cd /storage/t && prove -v FILE')\n{}\n{}",
        virtuos_e2e::backend(),
        failures.join("\n"),
        virtuos_e2e::tail(&run.stderr(), 40),
        domain.diagnostics()
    );
}
