//! A script compared between a native run and a run under virtuos.

use crate::compare::{report, Side};
use crate::domain::{backend, host_escape, Domain};
use crate::normalize::{normalize, Norm};
use crate::programs::require_programs;
use crate::run::{exec, run_native, script_env, script_timeout, show_run};
use crate::text::{head, line_diff};
use crate::trace::trace_excerpt;
use crate::tree::show_tree;
use crate::{SETUP_HINT, STORAGE};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// What a [`Case`] leaves for further assertions.
pub struct Checked {
    pub native: Side,
    pub virt: Side,
    pub domain: Domain,
    _native_dir: tempfile::TempDir,
}

/// Prepended to every [`Case`] script (one line, so `$LINENO` is off by one).
pub const PRELUDE: &str = r#"set -eE; trap 'echo "e2e: script line $((LINENO-1)) failed (exit $?): $BASH_COMMAND" >&2' ERR"#;

/// A script compared between a native run and a run under virtuos.
pub struct Case {
    script: String,
    expect_exit: i32,
    norm: Norm,
    needs: Vec<String>,
    native_must_contain: Vec<String>,
    tree: bool,
    tree_ignore_content: Vec<String>,
    compare_stderr: bool,
}

impl Case {
    /// `script` runs with `set -eE` and an ERR trap that names the failing
    /// line and command on stderr (the first thing that broke under virtuos
    /// is then in the report); commands expected to fail need `|| ...`.
    pub fn new(script: &str) -> Case {
        Case {
            script: format!("{PRELUDE}\n{}", script.trim_start_matches('\n')),
            expect_exit: 0,
            norm: Norm::default(),
            needs: vec!["bash".into()],
            native_must_contain: Vec::new(),
            tree: true,
            tree_ignore_content: Vec::new(),
            compare_stderr: false,
        }
    }
    /// Programs the script uses (checked before running).
    pub fn needs(mut self, programs: &[&str]) -> Case {
        self.needs.extend(programs.iter().map(|s| s.to_string()));
        self
    }
    /// The exit code the native run must have (default 0).
    pub fn exit_code(mut self, code: i32) -> Case {
        self.expect_exit = code;
        self
    }
    pub fn norm(mut self, n: Norm) -> Case {
        self.norm = n;
        self
    }
    /// Sanity check of the native run: its normalised stdout contains `s`.
    pub fn native_contains(mut self, s: &str) -> Case {
        self.native_must_contain.push(s.to_string());
        self
    }
    /// Don't compare the file trees (the script leaves nothing comparable).
    pub fn no_tree(mut self) -> Case {
        self.tree = false;
        self
    }
    /// Compare the tree, but not the size/content of files whose relative
    /// path is `rel` or ends with `/rel` (files whose bytes legitimately
    /// differ, e.g. git's index holds inode numbers and timestamps).
    pub fn tree_ignore_content(mut self, rel: &str) -> Case {
        self.tree_ignore_content.push(rel.to_string());
        self
    }
    /// Also require equal normalised stderr.
    pub fn compare_stderr(mut self) -> Case {
        self.compare_stderr = true;
        self
    }

    /// Run natively, check the native run is sane, run under virtuos, compare.
    pub fn check(self) -> Checked {
        let needs: Vec<&str> = self.needs.iter().map(String::as_str).collect();
        require_programs(&needs);

        let native_dir = tempfile::Builder::new()
            .prefix("virtuos-e2e-native-")
            .tempdir()
            .expect("tempdir");
        let nbase = native_dir.path().canonicalize().expect("canonicalize");
        // Traversable by other users, like /storage (tests switch users).
        fs::set_permissions(&nbase, fs::Permissions::from_mode(0o755)).expect("chmod");
        let (nroot, ntmp) = (nbase.join("root"), nbase.join("tmp"));
        fs::create_dir(&nroot).expect("mkdir");
        fs::create_dir(&ntmp).expect("mkdir");
        let native = Side::new(
            run_native(&self.script, &nroot, &ntmp),
            &nroot,
            &ntmp,
            self.norm,
        );
        let native_ok = !native.run.timed_out
            && native.run.code() == self.expect_exit
            && self
                .native_must_contain
                .iter()
                .all(|s| native.stdout.contains(s));
        if !native_ok {
            panic!(
                "the NATIVE run of the test script is not as the test expects ({}, expected exit {}, stdout must contain {:?}) — \
                 the test is wrong or the machine lacks something ({SETUP_HINT})\n== script ==\n{}\n{}",
                native.run.status_text(),
                self.expect_exit,
                self.native_must_contain,
                self.script.trim(),
                show_run(&native.run)
            );
        }

        let domain = Domain::start();
        let virt = Side::new(
            domain.run_virtuos(&self.script),
            Path::new(STORAGE),
            &domain.tmp,
            self.norm,
        );
        let mut problems = Vec::new();
        if virt.run.timed_out {
            problems.push("virtuos run timed out".to_string());
        }
        if virt.run.code() != native.run.code() {
            problems.push(format!(
                "exit status differs: native {}, virtuos {}",
                native.run.status_text(),
                virt.run.status_text()
            ));
        }
        if virt.stdout != native.stdout {
            problems.push("stdout differs".into());
        }
        if self.compare_stderr && virt.stderr != native.stderr {
            problems.push("stderr differs".into());
        }
        let mut tree_report = String::new();
        if self.tree && problems.is_empty() {
            let nt = show_tree(&nroot, &nroot, &self.tree_ignore_content);
            let vt = domain.tree(&self.tree_ignore_content);
            if nt != vt {
                problems.push(format!(
                    "file tree differs between the native root and the domain's tree ({} backend)",
                    backend()
                ));
                let _ = writeln!(
                    tree_report,
                    "== tree diff (- native root, + domain tree) ==\n{}",
                    head(&line_diff(&nt, &vt), 120)
                );
            }
        }
        // Whatever else went wrong: did anything land on the host's /storage?
        let native_top: Vec<String> = fs::read_dir(&nroot)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let mut escaped: Vec<String> = native_top
            .iter()
            .filter_map(|top| host_escape(top))
            .collect();
        escaped.sort();
        if !escaped.is_empty() {
            let n = escaped.len();
            escaped.truncate(5);
            problems.insert(
                0,
                format!(
                    "{n} path(s) escaped to the host, e.g. {}",
                    escaped.join("; ")
                ),
            );
        }
        if !problems.is_empty() {
            panic!(
                "{}{}{}",
                report(&problems.join("; "), &self.script, &native, &virt, &domain),
                tree_report,
                retrace(&self.script)
            );
        }
        Checked {
            native,
            virt,
            domain,
            _native_dir: native_dir,
        }
    }
}

/// After a failure: the same script in a fresh domain with `VIRTUOS_TRACE=1`
/// (unless `VIRTUOS_E2E_RETRACE=0`, or tracing was on already), and the
/// [`trace_excerpt`] of its stderr.
fn retrace(script: &str) -> String {
    if std::env::var_os("VIRTUOS_E2E_RETRACE").is_some_and(|v| v == "0")
        || std::env::var_os("VIRTUOS_TRACE").is_some()
    {
        return String::new();
    }
    let r = std::panic::catch_unwind(|| {
        let d = Domain::start();
        let mut c = d.command();
        c.args([
            "run",
            "--storage-mount",
            STORAGE,
            "--",
            "bash",
            "-c",
            script,
        ])
        .env("VIRTUOS_TRACE", "1");
        script_env(&mut c, Path::new(STORAGE), &d.tmp);
        let run = exec(
            &mut c,
            None,
            script_timeout().min(Duration::from_secs(60)),
            true,
        );
        let (root, tmp) = (Path::new(STORAGE), d.tmp.clone());
        format!(
            "\n== re-run with VIRTUOS_TRACE=1 in a fresh domain: {} ==\n{}",
            run.status_text(),
            trace_excerpt(&normalize(&run.stderr(), root, &tmp, Norm::default()))
        )
    });
    r.unwrap_or_else(|_| "\n== re-run with VIRTUOS_TRACE=1 failed to start ==\n".into())
}

/// Shorthand: compare `script` with default settings.
pub fn compare(script: &str) -> Checked {
    Case::new(script).check()
}
