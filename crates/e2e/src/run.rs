//! Running a command with a timeout and capturing what it did.

use crate::programs::python;
use crate::text::tail;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// One finished (or timed out) child process.
#[derive(Debug)]
pub struct Run {
    /// What was run, for reports.
    pub what: String,
    pub output: Output,
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl Run {
    /// Exit code; a death by signal N is reported as 128+N (as shells do).
    pub fn code(&self) -> i32 {
        let s = self.output.status;
        s.code()
            .or_else(|| s.signal().map(|n| 128 + n))
            .unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    /// Exit status in words: "exit 0", "killed by signal 11", "TIMED OUT".
    pub fn status_text(&self) -> String {
        if self.timed_out {
            return format!(
                "TIMED OUT after {:.1}s (killed)",
                self.elapsed.as_secs_f64()
            );
        }
        match (self.output.status.code(), self.output.status.signal()) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("killed by signal {s} ({})", signal_name(s)),
            _ => "unknown status".into(),
        }
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSYS => "SIGSYS",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "?",
    }
}

/// Default per-script timeout (`VIRTUOS_E2E_TIMEOUT` seconds, default 180).
pub fn script_timeout() -> Duration {
    let secs = std::env::var("VIRTUOS_E2E_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(180);
    Duration::from_secs(secs)
}

/// Run `cmd` with stdin from `stdin` (or /dev/null), stdout/stderr captured in
/// anonymous files (so a daemon that inherits them cannot block us), in a new
/// process group that is SIGKILLed on timeout. With `reap_group`, processes
/// left behind in the group after the child exits are killed too.
pub fn exec(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration, reap_group: bool) -> Run {
    let what = format!("{cmd:?}");
    let mut out = tempfile::tempfile().expect("tempfile for stdout");
    let mut err = tempfile::tempfile().expect("tempfile for stderr");
    let input = match stdin {
        Some(data) => {
            let mut f = tempfile::tempfile().expect("tempfile for stdin");
            f.write_all(data).expect("write stdin");
            f.seek(SeekFrom::Start(0)).expect("seek stdin");
            Stdio::from(f)
        }
        None => Stdio::null(),
    };
    cmd.stdin(input)
        .stdout(Stdio::from(out.try_clone().expect("dup")))
        .stderr(Stdio::from(err.try_clone().expect("dup")))
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
    // Release our copies of the parent ends held by `cmd`.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let pgid = child.id() as libc::pid_t;
    let mut timed_out = false;
    let mut nap = Duration::from_millis(1);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > timeout {
            timed_out = true;
            // SAFETY: signalling the process group we created for this child.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
            break child.wait().expect("wait after kill");
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    if reap_group {
        // The group id stays reserved while any member lives, so this only
        // reaches leftovers of our own child.
        // SAFETY: as above.
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
    }
    let read = |f: &mut File| {
        let mut v = Vec::new();
        f.seek(SeekFrom::Start(0)).expect("seek");
        f.read_to_end(&mut v).expect("read captured output");
        v
    };
    Run {
        what,
        output: Output {
            status,
            stdout: read(&mut out),
            stderr: read(&mut err),
        },
        timed_out,
        elapsed,
    }
}

/// The environment both sides of a comparison get.
pub(crate) fn script_env(cmd: &mut Command, root: &Path, tmp: &Path) {
    cmd.env("ROOT", root)
        .env("TMP", tmp)
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env("PY", python())
        .env_remove("LD_PRELOAD")
        .current_dir(tmp);
}

/// Run `script` natively with `bash -c`, `$ROOT` = `root`, `$TMP` = `tmp`.
pub fn run_native(script: &str, root: &Path, tmp: &Path) -> Run {
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(script);
    script_env(&mut cmd, root, tmp);
    exec(&mut cmd, None, script_timeout(), true)
}

/// A run's output for a report (the tail of each stream).
pub(crate) fn show_run(r: &Run) -> String {
    format!(
        "-- stdout --\n{}\n-- stderr --\n{}",
        tail(&r.stdout(), 200),
        tail(&r.stderr(), 200)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_times_out_and_kills_the_group() {
        let mut c = Command::new("bash");
        c.args(["-c", "sleep 30 & sleep 30; echo never"]);
        let r = exec(&mut c, None, Duration::from_millis(300), true);
        assert!(r.timed_out);
        assert!(r.elapsed < Duration::from_secs(10));
        assert_eq!(r.stdout(), "");
        let mut c = Command::new("bash");
        c.args(["-c", "cat; exit 3"]);
        let r = exec(&mut c, Some(b"input"), Duration::from_secs(30), true);
        assert_eq!((r.code(), r.stdout().as_str()), (3, "input"));
    }
}
