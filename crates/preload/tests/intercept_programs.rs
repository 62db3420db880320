//! Runs real programs under `LD_PRELOAD=libvirtuos.so` (with the stub
//! forward module every call is local) and compares them with native runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// The freshly built cdylib (`cargo test` builds only the rlib for the
/// tests, so build the cdylib here; a no-op when it is up to date).
fn lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let so = target_dir().join("debug/libvirtuos.so");
        {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let st = Command::new(cargo)
                .args(["build", "-p", "virtuos-preload"])
                .current_dir(workspace())
                .status()
                .expect("run cargo build");
            assert!(st.success(), "cargo build -p virtuos-preload failed");
        }
        assert!(so.exists(), "libvirtuos.so not found at {}", so.display());
        so
    })
}

/// The C helper program, compiled once per test run.
fn sigprog() -> &'static Path {
    static PROG: OnceLock<PathBuf> = OnceLock::new();
    PROG.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/progs/sigprog.c");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("virtuos-sigprog");
        let st = Command::new("cc")
            .args(["-O2", "-pthread", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("run cc");
        assert!(st.success(), "compiling sigprog.c failed");
        out
    })
}

fn run(preload: bool, env: &[(&str, &str)], prog: &str, args: &[&str]) -> Output {
    let mut c = Command::new(prog);
    c.args(args);
    c.env_remove("VIRTUOS_TRACE")
        .env_remove("VIRTUOS_LOCAL")
        .env_remove("VIRTUOS_DISABLE");
    if preload {
        c.env("LD_PRELOAD", lib());
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap_or_else(|e| panic!("run {prog}: {e}"))
}

/// Same stdout and exit status natively and preloaded (in both local modes).
fn same(prog: &str, args: &[&str]) -> String {
    let native = run(false, &[], prog, args);
    for mode in ["table", "native"] {
        let pre = run(true, &[("VIRTUOS_LOCAL", mode)], prog, args);
        assert_eq!(
            String::from_utf8_lossy(&native.stdout),
            String::from_utf8_lossy(&pre.stdout),
            "stdout differs for {prog} {args:?} (mode {mode}); stderr: {}",
            String::from_utf8_lossy(&pre.stderr)
        );
        assert_eq!(
            native.status.code(),
            pre.status.code(),
            "status differs for {prog} {args:?} (mode {mode})"
        );
        assert!(
            !String::from_utf8_lossy(&pre.stderr).contains("virtuos:"),
            "virtuos complained: {}",
            String::from_utf8_lossy(&pre.stderr)
        );
    }
    String::from_utf8_lossy(&native.stdout).into_owned()
}

fn sh(script: &str) -> String {
    same("/bin/sh", &["-c", script])
}

#[test]
fn intercept_ls_head() {
    let out = sh("ls -l /usr/bin | head");
    assert!(out.lines().count() >= 5);
}

#[test]
fn intercept_pipe_tr() {
    assert_eq!(sh("echo a | tr a b"), "b\n");
}

#[test]
fn intercept_bash_fork_exec_loop() {
    let out = same(
        "bash",
        &[
            "-c",
            "for i in $(seq 1 20); do x=$(echo v$i); /bin/echo $x; done | tail -n 2; (exit 3)",
        ],
    );
    assert_eq!(out, "v19\nv20\n");
}

#[test]
fn intercept_python_threads_file_io() {
    let script = r#"
import threading, os, tempfile
d = tempfile.mkdtemp()
res = []
def work(i):
    p = os.path.join(d, f"f{i}")
    for k in range(30):
        with open(p, "w") as f: f.write(f"{i}-{k}\n" * 10)
        with open(p) as f: data = f.read()
    res.append((i, data.count("\n")))
ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
print(sorted(res))
"#;
    let out = same("python3", &["-c", script]);
    assert!(out.contains("(7, 10)"));
}

#[test]
fn intercept_python_subprocess_vfork() {
    let out = same(
        "python3",
        &[
            "-c",
            "import subprocess; print(subprocess.run(['echo','hi'],capture_output=True).stdout)",
        ],
    );
    assert_eq!(out, "b'hi\\n'\n");
}

#[test]
fn intercept_posix_spawn() {
    let out = same("python3", &["-c", "import os; p=os.posix_spawn('/bin/true',['true'],os.environ); print(os.waitpid(p,0)[1])"]);
    assert_eq!(out, "0\n");
}

#[test]
fn intercept_exec_failure_then_success() {
    let out = sh("/nonexistent/prog 2>/dev/null; echo rc=$?; exec /bin/echo after");
    assert_eq!(out, "rc=127\nafter\n");
}

#[test]
fn intercept_timeout_interrupts_sleep() {
    for mode in ["table", "native"] {
        let t = Instant::now();
        let o = run(
            true,
            &[("VIRTUOS_LOCAL", mode)],
            "timeout",
            &["0.3", "sleep", "5"],
        );
        let el = t.elapsed();
        assert_eq!(o.status.code(), Some(124), "mode {mode}");
        assert!(
            el < Duration::from_millis(2000) && el >= Duration::from_millis(290),
            "took {el:?} (mode {mode})"
        );
    }
}

#[test]
fn intercept_sigalrm_eintr() {
    let p = sigprog().to_str().unwrap();
    for m in ["eintr", "eintr-raw"] {
        let out = same(p, &[m]);
        assert!(out.contains("errno=EINTR hits=1"), "{out}");
    }
}

#[test]
fn intercept_sa_restart() {
    let p = sigprog().to_str().unwrap();
    for m in ["restart", "restart-raw"] {
        let out = same(p, &[m]);
        assert!(out.contains("r=1 c=x hits=1"), "{out}");
    }
}

#[test]
fn intercept_siglongjmp_out_of_blocking_call() {
    let out = same(sigprog().to_str().unwrap(), &["longjmp"]);
    assert_eq!(out, "longjmp hits=3 pid_ok=1\n");
}

#[test]
fn intercept_block_all_signals() {
    let out = same(sigprog().to_str().unwrap(), &["blockall"]);
    assert_eq!(out, "blockall read=1 thread=1 child=7\n");
}

#[test]
fn intercept_sigaction_sigsys_and_sigtrap() {
    let out = same(sigprog().to_str().unwrap(), &["sigsys"]);
    assert_eq!(out, "sigsys r=0 r2=0 trap_hits=1 pid_ok=1\n");
}

#[test]
fn intercept_sigsuspend_sigwait() {
    let out = same(sigprog().to_str().unwrap(), &["sigwait"]);
    assert_eq!(out, "sigwait hits=1 got=USR2\n");
}

#[test]
fn intercept_disable_env() {
    let o = run(
        true,
        &[("VIRTUOS_DISABLE", "1"), ("VIRTUOS_TRACE", "1")],
        "/bin/true",
        &[],
    );
    assert!(o.status.success());
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Prove interception is live in the main thread, a second thread, a forked
/// child and a vfork child: each one's getppid (nr 110) shows up in the
/// trace under its own pid/tid.
#[test]
fn intercept_trace_covers_threads_and_children() {
    let o = run(
        true,
        &[("VIRTUOS_TRACE", "1")],
        sigprog().to_str().unwrap(),
        &["ids"],
    );
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    let id = |who: &str| -> (String, String) {
        let l = out
            .lines()
            .find(|l| l.starts_with(&format!("ids {who} ")))
            .unwrap_or_else(|| panic!("no {who}: {out}"));
        let f: Vec<&str> = l.split_whitespace().collect();
        (f[2].to_string(), f[3].to_string())
    };
    for who in ["main", "thread", "child"] {
        let (pid, tid) = id(who);
        let needle = format!("{pid} {tid} nr=110 ");
        assert!(
            err.contains(&needle),
            "no traced getppid for {who} ({needle}):\n{err}"
        );
    }
    assert!(err.contains("new-thread-armed"), "{err}");
    assert!(err.contains("fork-child-armed"), "{err}");
    assert!(err.contains("vm-child-armed"), "{err}");
    // The vfork child's getppid, under a pid that is none of the above.
    let main_pid = id("main").0;
    let vfork_line = err
        .lines()
        .skip_while(|l| !l.contains("vm-child-armed"))
        .find(|l| l.contains("nr=110 "))
        .unwrap_or_else(|| panic!("no vfork child getppid:\n{err}"));
    assert!(!vfork_line.contains(&main_pid), "{vfork_line}");
    // Syscalls libc makes internally (not via our wrappers) are caught too.
    assert!(err.contains("nr=1 "), "no write syscall traced:\n{err}");
}

/// The exported wrappers are used for libc's read/write (no signal).
#[test]
fn intercept_wrappers_used() {
    let o = run(
        true,
        &[("VIRTUOS_TRACE", "1")],
        "/bin/cat",
        &["/proc/self/stat"],
    );
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nr=0 wrapper"), "{err}");
    assert!(err.contains("nr=1 wrapper"), "{err}");
}
