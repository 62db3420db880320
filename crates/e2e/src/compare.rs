//! One side of a comparison, and the failure report of two.

use crate::domain::Domain;
use crate::normalize::{normalize, Norm};
use crate::run::Run;
use crate::text::{line_diff, tail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One side of a comparison: the run and its normalised output.
pub struct Side {
    pub run: Run,
    pub stdout: String,
    pub stderr: String,
    pub root: PathBuf,
    pub tmp: PathBuf,
}

impl Side {
    pub(crate) fn new(run: Run, root: &Path, tmp: &Path, norm: Norm) -> Side {
        Side {
            stdout: normalize(&run.stdout(), root, tmp, norm),
            stderr: normalize(&run.stderr(), root, tmp, norm),
            run,
            root: root.to_path_buf(),
            tmp: tmp.to_path_buf(),
        }
    }
}

/// Everything a failure report shows.
pub fn report(title: &str, script: &str, native: &Side, virt: &Side, domain: &Domain) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n===== {title} =====");
    let _ = writeln!(s, "== script ==\n{}", script.trim());
    let _ = writeln!(s, "== native: {} ==", native.run.status_text());
    let _ = writeln!(
        s,
        "== virtuos: {} ({:.2}s) ==",
        virt.run.status_text(),
        virt.run.elapsed.as_secs_f64()
    );
    if native.stdout != virt.stdout {
        let _ = writeln!(
            s,
            "== stdout diff (- native, + virtuos) ==\n{}",
            line_diff(&native.stdout, &virt.stdout)
        );
    }
    let _ = writeln!(s, "== native stdout ==\n{}", tail(&native.stdout, 150));
    let _ = writeln!(s, "== virtuos stdout ==\n{}", tail(&virt.stdout, 150));
    let _ = writeln!(s, "== native stderr ==\n{}", tail(&native.stderr, 60));
    let _ = writeln!(s, "== virtuos stderr ==\n{}", tail(&virt.stderr, 150));
    s.push_str(&domain.diagnostics());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{exec, script_env, show_run};
    use crate::tree::snapshot_tree;
    use std::fs;
    use std::process::Command;
    use std::time::Duration;

    fn native_side(script: &str, stamp: &str, norm: Norm) -> (Side, tempfile::TempDir) {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().canonicalize().unwrap();
        let (root, tmp) = (base.join("root"), base.join("tmp"));
        fs::create_dir(&root).unwrap();
        fs::create_dir(&tmp).unwrap();
        let mut cmd = Command::new("bash");
        cmd.arg("-c").arg(script).env("STAMP", stamp);
        script_env(&mut cmd, &root, &tmp);
        let run = exec(&mut cmd, None, Duration::from_secs(60), true);
        (Side::new(run, &root, &tmp, norm), d)
    }

    /// The same script in two different roots at two different "times":
    /// raw outputs differ, normalised outputs are equal.
    #[test]
    fn native_twice_is_equal_after_normalisation() {
        let script = r#"
            set -e
            cd "$ROOT"
            mkdir -p d/sub
            printf 'hello\n' > d/f
            printf '%s\n' {1..500} > d/big
            ln -s "$ROOT/d/f" d/abs-link
            touch -d "$STAMP" d/f d/big d/sub
            ls -l d
            readlink d/abs-link
            readlink -f d/f
            echo "scratch is $TMP, cwd was $OLDPWD"
            stat -c '%s %F %a %n' d/f d/sub
        "#;
        let norm = Norm {
            ls_times: true,
            ..Norm::default()
        };
        let (a, _da) = native_side(script, "2001-02-03 04:05", norm);
        let (b, _db) = native_side(script, "2019-11-12 13:14", norm);
        assert_eq!(a.run.code(), 0, "{}", show_run(&a.run));
        assert_ne!(
            a.run.output.stdout, b.run.output.stdout,
            "raw outputs should differ (paths, dates)"
        );
        assert_eq!(
            a.stdout,
            b.stdout,
            "normalised outputs differ:\n{}",
            line_diff(&a.stdout, &b.stdout)
        );
        assert!(a.stdout.contains("$ROOT/d/f\n"), "{}", a.stdout);
        assert!(
            a.stdout.contains("scratch is $TMP, cwd was $TMP"),
            "{}",
            a.stdout
        );
        assert!(
            a.stdout.contains("<mtime> abs-link -> $ROOT/d/f"),
            "{}",
            a.stdout
        );
        assert!(!a.stdout.contains("2001"), "{}", a.stdout);
        // The trees are equal too, modulo the root in symlink targets.
        assert_eq!(
            snapshot_tree(&a.root, &a.root),
            snapshot_tree(&b.root, &b.root)
        );
        // Without the ls normalisation the dates show.
        let (c, _dc) = native_side(script, "2001-02-03 04:05", Norm::default());
        assert!(c.stdout.contains("Feb  3  2001"), "{}", c.stdout);
    }
}
