//! Harness for the end-to-end tests: real Debian programs run under
//! `virtuos run`, compared with the same script run natively.
//!
//! A test is a bash script parametrised by two variables:
//!
//! - `$ROOT`: the forwarded tree. `/storage` under virtuos (the storage
//!   domain's private tree), a fresh host temp dir natively.
//! - `$TMP`: a fresh host scratch dir, never forwarded (for copies between the
//!   host and the domain). The script starts with `$TMP` as its cwd.
//!
//! Both sides also get `LC_ALL=C`, `TZ=UTC` (deterministic sorting and
//! dates) and `$PY` (the Python interpreter). [`Case::check`] runs the script
//! natively first (a script that fails natively is a broken test, reported as
//! such), then under virtuos with a fresh daemon, and asserts: same exit code,
//! same normalised stdout, and the same file tree (names, types, modes, sizes,
//! contents, symlink targets) in the native root and in the domain's data dir
//! `$VIRTUOS_DATA_DIR/storage`, with nothing under the host's `/storage`.
//!
//! Binaries: `target/release/{virtuos,virtuos-domain,libvirtuos.so}`, rebuilt
//! once per test binary with `cargo build --release -p virtuos -p
//! virtuos-domain -p virtuos-preload` (a no-op when fresh; serialised by a
//! file lock). `VIRTUOS_BIN_DIR=DIR` uses prebuilt binaries from DIR and never
//! builds; `VIRTUOS_E2E_NO_BUILD=1` uses `target/release` without building.
//! Other knobs: `VIRTUOS_E2E_TIMEOUT` (seconds per script, default 180),
//! `VIRTUOS_E2E_KEEP=1` (keep the temp dirs of failed tests). `VIRTUOS_TRACE`,
//! `VIRTUOS_LOG` and friends pass through to the daemon and the programs.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// The storage mount the tests use.
pub const STORAGE: &str = "/storage";
/// What to tell someone whose machine lacks a program.
pub const SETUP_HINT: &str = "run scripts/setup-debian.sh (from the repository root) to install it";

// ---------------------------------------------------------------- binaries

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
fn target_dir() -> PathBuf {
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

fn describe_bins() -> String {
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

// ---------------------------------------------------------------- programs

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

// ---------------------------------------------------------------- running

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
fn script_env(cmd: &mut Command, root: &Path, tmp: &Path) {
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

// ---------------------------------------------------------------- domain

/// The backend the suite runs against: `VIRTUOS_E2E_BACKEND` = `process`
/// (default) or `vm` (the storage domain in a QEMU VM, TCG on machines
/// without usable KVM).
pub fn backend() -> &'static str {
    static BACKEND: OnceLock<String> = OnceLock::new();
    BACKEND.get_or_init(|| match std::env::var("VIRTUOS_E2E_BACKEND") {
        Err(_) => "process".into(),
        Ok(b) if b == "process" || b == "vm" => b,
        Ok(b) => panic!("VIRTUOS_E2E_BACKEND={b:?}: expected process or vm"),
    })
}

pub fn vm_backend() -> bool {
    backend() == "vm"
}

/// The tree lister run under virtuos on the vm backend (the domain's files
/// are inside its disk image there): `virtuos-tree DIR [IGNORE...]`.
fn tree_lister() -> PathBuf {
    // Built with the tests, next to `deps/` of this test executable.
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("virtuos-tree")))
        .unwrap_or_else(|| target_dir().join("release").join("virtuos-tree"))
}

/// A daemon with its storage domain, in fresh temp dirs; `down` on drop.
pub struct Domain {
    base: Option<tempfile::TempDir>,
    pub runtime: PathBuf,
    pub data: PathBuf,
    /// Host scratch dir for the scripts (`$TMP`).
    pub tmp: PathBuf,
    config: PathBuf,
    running: bool,
    host_watch: std::sync::Mutex<Vec<String>>,
}

impl Domain {
    /// Fresh dirs and `virtuos up`; panics with the daemon log on failure.
    pub fn start() -> Domain {
        let mut d = Domain::new_stopped();
        d.up();
        d
    }

    /// Fresh dirs, no daemon yet.
    pub fn new_stopped() -> Domain {
        let _ = bins();
        let _ = suite_start();
        let base = tempfile::Builder::new()
            .prefix("virtuos-e2e-")
            .tempdir()
            .expect("tempdir");
        let p = base.path().canonicalize().expect("canonicalize tempdir");
        let (runtime, data, tmp) = (p.join("run"), p.join("data"), p.join("tmp"));
        for d in [&runtime, &data, &tmp] {
            fs::create_dir(d).expect("mkdir");
        }
        // As root's /run/virtuos: programs that switch to another user
        // (setuid, setpriv) must still reach the daemon's socket.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod base");
        fs::set_permissions(&runtime, fs::Permissions::from_mode(0o755)).expect("chmod runtime");
        Domain {
            config: p.join("no-such-virtuos.toml"),
            base: Some(base),
            runtime,
            data,
            tmp,
            running: false,
            host_watch: Default::default(),
        }
    }

    /// A `virtuos` command pointed at this domain's dirs and binaries.
    pub fn command(&self) -> Command {
        let b = bins();
        let mut c = Command::new(&b.virtuos);
        c.env("VIRTUOS_RUNTIME_DIR", &self.runtime)
            .env("VIRTUOS_DATA_DIR", &self.data)
            // A user's config file must not leak into the tests.
            .env("VIRTUOS_CONFIG", &self.config)
            .env("VIRTUOS_DOMAIN_BIN", &b.domain)
            .env("VIRTUOS_PRELOAD", &b.preload)
            .env_remove("LD_PRELOAD")
            .current_dir(&self.tmp);
        c
    }

    /// `virtuos ARGS...` with a timeout.
    pub fn virtuos(&self, args: &[&str], timeout: Duration) -> Run {
        let mut c = self.command();
        c.args(args);
        exec(&mut c, None, timeout, false)
    }

    pub fn up(&mut self) {
        self.up_with(&[]);
    }

    /// `virtuos up ARGS...` (e.g. `--network-subnet` of its own, so that
    /// tests running in parallel each get a network domain).
    pub fn up_with(&mut self, args: &[&str]) {
        let mut argv = vec!["up"];
        // The first VM boot of a run also builds the static domain server.
        let timeout = if vm_backend() {
            argv.extend(["--backend", "vm"]);
            Duration::from_secs(900)
        } else {
            Duration::from_secs(60)
        };
        argv.extend_from_slice(args);
        let r = self.virtuos(&argv, timeout);
        self.running = true; // even a failed `up` may have left a daemon: `down` on drop
        if r.timed_out || r.code() != 0 {
            panic!(
                "`virtuos up` failed: {}\n{}\n{}",
                r.status_text(),
                show_run(&r),
                self.diagnostics()
            );
        }
    }

    pub fn down(&mut self) {
        let r = self.virtuos(&["down"], Duration::from_secs(60));
        if r.timed_out || r.code() != 0 {
            panic!(
                "`virtuos down` failed: {}\n{}\n{}",
                r.status_text(),
                show_run(&r),
                self.diagnostics()
            );
        }
        self.running = false;
    }

    /// The storage domain's tree on the host (`$VIRTUOS_DATA_DIR/storage`).
    /// Process backend only: on the vm backend the files are inside the
    /// domain's disk image (see [`Domain::tree`]).
    pub fn storage_dir(&self) -> PathBuf {
        assert!(
            !vm_backend(),
            "this check reads the domain's files on the host, which the vm backend keeps in its disk image"
        );
        self.data.join("storage")
    }

    /// The domain's tree as [`show_tree`] lists it, with the contents of
    /// `ignore` left out. vm backend: listed from inside, by a program run
    /// under virtuos.
    pub fn tree(&self, ignore: &[String]) -> String {
        if !vm_backend() {
            return show_tree(&self.storage_dir(), Path::new(STORAGE), ignore);
        }
        let lister = tree_lister();
        assert!(
            lister.is_file(),
            "{} is missing (it is a bin target of virtuos-e2e, built with the tests)",
            lister.display()
        );
        let mut argv = vec![lister.to_string_lossy().into_owned(), STORAGE.into()];
        argv.extend(ignore.iter().cloned());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let r = self.run(&argv);
        if r.timed_out || r.code() != 0 {
            panic!(
                "listing the domain's tree failed: {}\n{}\n{}",
                r.status_text(),
                show_run(&r),
                self.diagnostics()
            );
        }
        r.stdout()
    }

    /// `virtuos run --storage-mount /storage -- ARGV...`.
    pub fn run(&self, argv: &[&str]) -> Run {
        let mut c = self.command();
        c.args(["run", "--storage-mount", STORAGE, "--"]).args(argv);
        script_env(&mut c, Path::new(STORAGE), &self.tmp);
        exec(&mut c, None, script_timeout(), true)
    }

    /// `virtuos run --storage-mount /storage -- bash -c SCRIPT`, `$ROOT=/storage`.
    pub fn run_virtuos(&self, script: &str) -> Run {
        self.run(&["bash", "-c", script])
    }

    /// Panic unless `rel` exists in the domain's tree and not on the host's /storage.
    pub fn assert_in_domain(&self, rel: &str) {
        if vm_backend() {
            let r = self.run(&["test", "-e", &format!("{STORAGE}/{rel}")]);
            let escaped = host_escape(rel);
            assert!(
                r.code() == 0 && escaped.is_none(),
                "{rel} should exist in the domain ({}) and not on the host's /storage ({}):\n{}",
                if r.code() == 0 {
                    "it does"
                } else {
                    "it does NOT"
                },
                escaped.as_deref().unwrap_or("it is not"),
                self.diagnostics()
            );
            return;
        }
        let p = self.storage_dir().join(rel);
        let escaped = host_escape(rel);
        assert!(
            p.symlink_metadata().is_ok() && escaped.is_none(),
            "{rel} should exist in the domain's data dir as {} ({}) and not on the host's /storage ({}); domain tree:\n{}\n{}",
            p.display(),
            if p.symlink_metadata().is_ok() { "it does" } else { "it does NOT" },
            escaped.as_deref().unwrap_or("it is not"),
            list_tree(&self.storage_dir()),
            self.diagnostics()
        );
    }

    /// Top-level names under /storage that this test writes: when the test
    /// ends, any of them found on the host's /storage is reported (stderr)
    /// and removed if this test run created it (see [`host_escape`]).
    pub fn watch_host(&self, names: &[&str]) {
        self.host_watch
            .lock()
            .unwrap()
            .extend(names.iter().map(|s| s.to_string()));
    }

    /// Names in directory `rel` of the domain's tree, sorted (vm backend:
    /// listed through the domain by `ls` under virtuos).
    pub fn list_domain_dir(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = if vm_backend() {
            let r = self.run(&["ls", "-1A", &format!("{STORAGE}/{rel}")]);
            if r.timed_out || r.code() != 0 {
                panic!(
                    "cannot list domain dir {rel} through the VM: {}\n{}\n{}",
                    r.status_text(),
                    show_run(&r),
                    self.diagnostics()
                );
            }
            r.stdout().lines().map(str::to_string).collect()
        } else {
            let dir = self.storage_dir().join(rel);
            fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", dir.display(), self.diagnostics()))
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        names.sort();
        names
    }

    /// Contents of a file in the domain's tree (vm backend: read through
    /// the domain by `cat` under virtuos).
    pub fn read_domain_file(&self, rel: &str) -> Vec<u8> {
        if vm_backend() {
            let path = format!("{STORAGE}/{rel}");
            let r = self.run(&["cat", &path]);
            if r.timed_out || r.code() != 0 {
                panic!(
                    "cannot read domain file {rel} through the VM: {}\n{}\n{}",
                    r.status_text(),
                    show_run(&r),
                    self.diagnostics()
                );
            }
            return r.output.stdout;
        }
        let p = self.storage_dir().join(rel);
        fs::read(&p).unwrap_or_else(|e| {
            panic!(
                "cannot read {} (domain file {rel}): {e}; domain tree:\n{}\n{}",
                p.display(),
                list_tree(&self.storage_dir()),
                self.diagnostics()
            )
        })
    }

    /// The daemon's log files (last lines) and which binaries were used.
    pub fn diagnostics(&self) -> String {
        let mut s = format!("== {} ==\n", describe_bins());
        let mut logs: Vec<PathBuf> = fs::read_dir(&self.runtime)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
        logs.sort();
        if logs.is_empty() {
            let _ = writeln!(s, "== no *.log in {} ==", self.runtime.display());
        }
        for l in logs {
            let text = fs::read(&l)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "== {} (last 60 lines) ==\n{}",
                l.display(),
                tail(&text, 60)
            );
        }
        s
    }

    fn kill_leftover_daemon(&self) {
        let Ok(pid) = fs::read_to_string(self.runtime.join("virtuosd.pid")) else {
            return;
        };
        let Ok(pid) = pid.trim().parse::<libc::pid_t>() else {
            return;
        };
        if pid <= 1 {
            return;
        }
        // Only a daemon still serving *our* runtime dir (guards against pid reuse).
        let cmdline = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let ours = cmdline.split(|b| *b == 0).any(|kv| {
            kv == [
                b"VIRTUOS_RUNTIME_DIR=".as_slice(),
                self.runtime.as_os_str().as_bytes(),
            ]
            .concat()
        });
        if !ours {
            return;
        }
        let children =
            fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        // SAFETY: signalling processes our own daemon started (and the daemon).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        for c in children
            .split_whitespace()
            .filter_map(|c| c.parse::<libc::pid_t>().ok())
        {
            // SAFETY: signalling a child of our own leftover daemon.
            unsafe { libc::kill(c, libc::SIGKILL) };
        }
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        if self.running {
            let r = self.virtuos(&["down"], Duration::from_secs(30));
            if r.timed_out || r.code() != 0 {
                eprintln!(
                    "virtuos-e2e: `virtuos down` failed ({}): {}",
                    r.status_text(),
                    r.stderr()
                );
            }
            self.kill_leftover_daemon();
        }
        for name in self
            .host_watch
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
        {
            if let Some(msg) = host_escape(&name) {
                eprintln!("virtuos-e2e: {msg}");
            }
        }
        remove_host_storage_if_ours();
        if std::thread::panicking() && std::env::var_os("VIRTUOS_E2E_KEEP").is_some() {
            if let Some(b) = self.base.take() {
                eprintln!("virtuos-e2e: keeping {}", b.keep().display());
            }
        }
    }
}

/// When this test process started using virtuos (see [`host_escape`]).
fn suite_start() -> SystemTime {
    static START: OnceLock<SystemTime> = OnceLock::new();
    *START.get_or_init(SystemTime::now)
}

/// Birth time (mtime where the file system has none).
fn created(md: &fs::Metadata) -> Option<SystemTime> {
    md.created().or_else(|_| md.modified()).ok()
}

/// If `rel` exists under the host's `/storage`, a forwarded call escaped to
/// the host (the test process itself is not under virtuos, so it sees the
/// host's tree). Returns the complaint. The entry is removed when it was
/// created after this test process started (it is debris of this suite and
/// would fail later runs), and so is `/storage` itself once empty.
pub fn host_escape(rel: &str) -> Option<String> {
    let p = Path::new(STORAGE).join(rel);
    let md = p.symlink_metadata().ok()?;
    let mut msg = format!(
        "{} exists on the HOST: a forwarded call escaped to the host file system",
        p.display()
    );
    if created(&md).is_some_and(|t| t >= suite_start()) {
        let r = if md.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        match r {
            Ok(()) => msg.push_str(" (created by this test run: removed)"),
            Err(e) => {
                let _ = write!(msg, " (could not remove it: {e})");
            }
        }
        remove_host_storage_if_ours();
    }
    Some(msg)
}

/// `rmdir /storage` if this suite created it (an escaped `mkdir -p`) and it is empty.
fn remove_host_storage_if_ours() {
    let root = Path::new(STORAGE);
    if let Ok(md) = root.symlink_metadata() {
        if md.is_dir() && created(&md).is_some_and(|t| t >= suite_start()) {
            let _ = fs::remove_dir(root); // fails harmlessly unless empty
        }
    }
}

/// Panic if `rel` exists under the host's `/storage` (see [`host_escape`]).
pub fn assert_not_on_host(rel: &str) {
    if let Some(msg) = host_escape(rel) {
        panic!("{msg}");
    }
}

// ---------------------------------------------------------------- normalisation

/// Normalisations beyond the always-on path replacement. Each one is for a
/// difference that is legitimate between two runs of the same script.
#[derive(Clone, Copy, Debug, Default)]
pub struct Norm {
    /// `ls -l` lines: the modification time columns become `<mtime>` (the two
    /// runs happen at different times) and the column padding collapses to
    /// one space (padding follows the widest field, so one real difference
    /// would otherwise show on every line).
    pub ls_times: bool,
    /// `total N` lines of `ls -l`: N is allocated blocks, which depends on
    /// the file system's allocation (only needed if the two trees are on
    /// different file systems; the harness keeps them on the same one).
    pub ls_total: bool,
}

/// Always on: the root and scratch paths differ between the two runs
/// (`/storage` vs a temp dir), so they become `$ROOT` and `$TMP`.
pub fn normalize(text: &str, root: &Path, tmp: &Path, norm: Norm) -> String {
    let mut pairs = [
        (tmp.to_string_lossy().into_owned(), "$TMP"),
        (root.to_string_lossy().into_owned(), "$ROOT"),
    ];
    // Longest first, in case one is a prefix of the other.
    pairs.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    let mut s = text.to_string();
    for (from, to) in &pairs {
        if !from.is_empty() {
            s = s.replace(from.as_str(), to);
        }
    }
    if !norm.ls_times && !norm.ls_total {
        return s;
    }
    let mut out = String::with_capacity(s.len());
    for line in s.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        if norm.ls_total && is_ls_total(body) {
            out.push_str("total <blocks>");
        } else if norm.ls_times {
            out.push_str(&normalize_ls_line(body));
        } else {
            out.push_str(body);
        }
        out.push_str(nl);
    }
    out
}

fn is_ls_total(line: &str) -> bool {
    line.strip_prefix("total ").is_some_and(|n| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c.is_ascii_alphabetic())
    })
}

/// `-rw-r--r-- 1 root root 3 Dec  2 06:52 name` -> `-rw-r--r-- 1 root root 3 <mtime> name`.
fn normalize_ls_line(line: &str) -> String {
    // Fields with their byte offsets.
    let mut fields = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                fields.push((s, i));
                start = None;
            }
            _ => {}
        }
        if fields.len() == 8 {
            break;
        }
    }
    if let Some(s) = start {
        if fields.len() < 8 {
            fields.push((s, line.len()));
        }
    }
    if fields.len() < 8 || !is_mode_string(&line[fields[0].0..fields[0].1]) {
        return line.to_string();
    }
    let name_start = line[fields[7].1..]
        .find(|c: char| !c.is_whitespace())
        .map(|o| fields[7].1 + o);
    let mut s: Vec<&str> = fields[..5].iter().map(|&(a, b)| &line[a..b]).collect();
    s.push("<mtime>");
    let mut out = s.join(" ");
    if let Some(n) = name_start {
        out.push(' ');
        out.push_str(&line[n..]);
    }
    out
}

fn is_mode_string(s: &str) -> bool {
    let b = s.as_bytes();
    (10..=11).contains(&b.len())
        && b"-dlcbps".contains(&b[0])
        && b[1..10].iter().all(|c| b"rwxsStT-".contains(c))
        && (b.len() == 10 || b".+@".contains(&b[10]))
}

// ---------------------------------------------------------------- diff

/// A line diff (`-` expected, `+` actual, two lines of context), for reports.
pub fn line_diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    const CAP: usize = 3000;
    if a.len() > CAP || b.len() > CAP {
        let i = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        return format!(
            "(too long for a full diff) first difference at line {}:\n- {}\n+ {}\n",
            i + 1,
            a.get(i).unwrap_or(&"<end of output>"),
            b.get(i).unwrap_or(&"<end of output>")
        );
    }
    // LCS table, suffix form.
    let (n, m) = (a.len(), b.len());
    let mut t = vec![0u32; (n + 1) * (m + 1)];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            t[i * (m + 1) + j] = if a[i] == b[j] {
                t[(i + 1) * (m + 1) + j + 1] + 1
            } else {
                t[(i + 1) * (m + 1) + j].max(t[i * (m + 1) + j + 1])
            };
        }
    }
    let mut ops = Vec::new(); // (tag, line)
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || t[(i + 1) * (m + 1) + j] >= t[i * (m + 1) + j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let near_change = |k: usize| {
        ops[k.saturating_sub(2)..(k + 3).min(ops.len())]
            .iter()
            .any(|(t, _)| *t != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (tag, line)) in ops.iter().enumerate() {
        if *tag == ' ' && !near_change(k) {
            if !skipped {
                out.push_str("  ...\n");
                skipped = true;
            }
            continue;
        }
        skipped = false;
        let _ = writeln!(out, "{tag} {line}");
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out.push_str("(the outputs differ in the final newline)\n");
    }
    out
}

// ---------------------------------------------------------------- trees

/// One entry of a file tree, as compared between the native root and the domain.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Entry {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        size: u64,
        digest: u64,
        nlink: u64,
    },
    Symlink {
        target: String,
    },
    Other {
        kind: String,
        mode: u32,
    },
}

/// Relative path -> entry, for every entry below `dir` (not `dir` itself).
/// A symlink target has `root` replaced by `$ROOT`.
pub fn snapshot_tree(dir: &Path, root_name: &Path) -> BTreeMap<String, Entry> {
    fn walk(base: &Path, dir: &Path, root_name: &Path, out: &mut BTreeMap<String, Entry>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let Ok(md) = p.symlink_metadata() else {
                continue;
            };
            let mode = md.permissions().mode() & 0o7777;
            let ft = md.file_type();
            let entry = if ft.is_symlink() {
                let t = fs::read_link(&p)
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Entry::Symlink {
                    target: t.replace(&*root_name.to_string_lossy(), "$ROOT"),
                }
            } else if ft.is_dir() {
                walk(base, &p, root_name, out);
                Entry::Dir { mode }
            } else if ft.is_file() {
                Entry::File {
                    mode,
                    size: md.len(),
                    digest: fs::read(&p).map(|b| fnv1a(&b)).unwrap_or(0),
                    nlink: md.nlink(),
                }
            } else {
                let kind = if ft.is_fifo() {
                    "fifo"
                } else if ft.is_socket() {
                    "socket"
                } else {
                    "device"
                };
                Entry::Other {
                    kind: kind.into(),
                    mode,
                }
            };
            out.insert(rel, entry);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, root_name, &mut out);
    out
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Dir { mode } => write!(f, "dir {mode:04o}"),
            Entry::File {
                mode,
                size,
                digest,
                nlink,
            } => {
                write!(
                    f,
                    "file {mode:04o} size={size} links={nlink} fnv={digest:016x}"
                )
            }
            Entry::Symlink { target } => write!(f, "symlink -> {target}"),
            Entry::Other { kind, mode } => write!(f, "{kind} {mode:04o}"),
        }
    }
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100000001b3)
    })
}

/// `ls -lR`-like listing of a tree for reports.
pub fn list_tree(dir: &Path) -> String {
    let t = snapshot_tree(dir, Path::new(STORAGE));
    if t.is_empty() {
        return format!("  (empty or missing: {})\n", dir.display());
    }
    t.iter().map(|(k, v)| format!("  {k}: {v}\n")).collect()
}

fn show_tree_map(t: &BTreeMap<String, Entry>) -> String {
    t.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
}

/// The tree below `dir` one entry a line, as the tree comparison sees it:
/// files named in `ignore` (a path or a last component) without size and
/// digest. What `virtuos-tree` prints.
pub fn show_tree(dir: &Path, root_name: &Path, ignore: &[String]) -> String {
    let mut t = snapshot_tree(dir, root_name);
    for (k, e) in t.iter_mut() {
        let ignored = ignore
            .iter()
            .any(|i| k == i || k.ends_with(&format!("/{i}")));
        if let (true, Entry::File { size, digest, .. }) = (ignored, e) {
            *size = 0;
            *digest = 0;
        }
    }
    show_tree_map(&t)
}

// ---------------------------------------------------------------- comparison

/// One side of a comparison: the run and its normalised output.
pub struct Side {
    pub run: Run,
    pub stdout: String,
    pub stderr: String,
    pub root: PathBuf,
    pub tmp: PathBuf,
}

impl Side {
    fn new(run: Run, root: &Path, tmp: &Path, norm: Norm) -> Side {
        Side {
            stdout: normalize(&run.stdout(), root, tmp, norm),
            stderr: normalize(&run.stderr(), root, tmp, norm),
            run,
            root: root.to_path_buf(),
            tmp: tmp.to_path_buf(),
        }
    }
}

fn show_run(r: &Run) -> String {
    format!(
        "-- stdout --\n{}\n-- stderr --\n{}",
        tail(&r.stdout(), 200),
        tail(&r.stderr(), 200)
    )
}

/// Keep the first `n` lines.
pub fn head(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    if lines.len() <= n {
        return s.to_string();
    }
    format!(
        "{}\n[... {} more lines ...]",
        lines[..n].join("\n"),
        lines.len() - n
    )
}

/// Keep the last `n` lines.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    if lines.len() <= n {
        return s.to_string();
    }
    format!(
        "[... {} lines cut ...]\n{}",
        lines.len() - n,
        lines[lines.len() - n..].join("\n")
    )
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

// ---------------------------------------------------------------- traces

/// x86_64 syscall names, for annotating `VIRTUOS_TRACE=1` lines.
pub fn syscall_name(nr: u64) -> Option<&'static str> {
    Some(match nr {
        0 => "read",
        1 => "write",
        2 => "open",
        3 => "close",
        4 => "stat",
        5 => "fstat",
        6 => "lstat",
        7 => "poll",
        8 => "lseek",
        9 => "mmap",
        10 => "mprotect",
        11 => "munmap",
        12 => "brk",
        13 => "rt_sigaction",
        14 => "rt_sigprocmask",
        16 => "ioctl",
        17 => "pread64",
        18 => "pwrite64",
        19 => "readv",
        20 => "writev",
        21 => "access",
        22 => "pipe",
        32 => "dup",
        33 => "dup2",
        39 => "getpid",
        41 => "socket",
        42 => "connect",
        44 => "sendto",
        45 => "recvfrom",
        46 => "sendmsg",
        47 => "recvmsg",
        51 => "getsockname",
        52 => "getpeername",
        109 => "setpgid",
        111 => "getpgrp",
        112 => "setsid",
        157 => "prctl",
        158 => "arch_prctl",
        202 => "futex",
        218 => "set_tid_address",
        228 => "clock_gettime",
        230 => "clock_nanosleep",
        273 => "set_robust_list",
        40 => "sendfile",
        56 => "clone",
        57 => "fork",
        58 => "vfork",
        59 => "execve",
        60 => "exit",
        61 => "wait4",
        62 => "kill",
        63 => "uname",
        72 => "fcntl",
        73 => "flock",
        74 => "fsync",
        75 => "fdatasync",
        76 => "truncate",
        77 => "ftruncate",
        78 => "getdents",
        79 => "getcwd",
        80 => "chdir",
        81 => "fchdir",
        82 => "rename",
        83 => "mkdir",
        84 => "rmdir",
        85 => "creat",
        86 => "link",
        87 => "unlink",
        88 => "symlink",
        89 => "readlink",
        90 => "chmod",
        91 => "fchmod",
        92 => "chown",
        93 => "fchown",
        94 => "lchown",
        95 => "umask",
        102 => "getuid",
        104 => "getgid",
        107 => "geteuid",
        108 => "getegid",
        110 => "getppid",
        132 => "utime",
        133 => "mknod",
        137 => "statfs",
        138 => "fstatfs",
        161 => "chroot",
        162 => "sync",
        187 => "readahead",
        188 => "setxattr",
        191 => "getxattr",
        192 => "lgetxattr",
        193 => "fgetxattr",
        194 => "listxattr",
        195 => "llistxattr",
        196 => "flistxattr",
        217 => "getdents64",
        221 => "fadvise64",
        231 => "exit_group",
        235 => "utimes",
        257 => "openat",
        258 => "mkdirat",
        259 => "mknodat",
        260 => "fchownat",
        261 => "futimesat",
        262 => "newfstatat",
        263 => "unlinkat",
        264 => "renameat",
        265 => "linkat",
        266 => "symlinkat",
        267 => "readlinkat",
        268 => "fchmodat",
        269 => "faccessat",
        275 => "splice",
        276 => "tee",
        277 => "sync_file_range",
        280 => "utimensat",
        285 => "fallocate",
        292 => "dup3",
        293 => "pipe2",
        295 => "preadv",
        296 => "pwritev",
        302 => "prlimit64",
        316 => "renameat2",
        318 => "getrandom",
        319 => "memfd_create",
        322 => "execveat",
        326 => "copy_file_range",
        327 => "preadv2",
        328 => "pwritev2",
        332 => "statx",
        334 => "rseq",
        435 => "clone3",
        436 => "close_range",
        437 => "openat2",
        439 => "faccessat2",
        452 => "fchmodat2",
        n if n >= 0x8000 => "virtual-op",
        _ => return None,
    })
}

/// Annotate `nr=N` with the syscall name and `r=-E` with the errno name.
fn annotate_trace_line(line: &str) -> String {
    let mut out = Vec::new();
    for w in line.split(' ') {
        if let Some(n) = w.strip_prefix("nr=").and_then(|n| n.parse::<u64>().ok()) {
            out.push(match syscall_name(n) {
                Some(name) => format!("{name}({n})"),
                None => w.to_string(),
            });
        } else if let Some(e) = w.strip_prefix("r=-").and_then(|n| n.parse::<i32>().ok()) {
            out.push(format!("r=-{e}({})", errno_name(e)));
        } else {
            out.push(w.to_string());
        }
    }
    out.join(" ")
}

fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::ENXIO => "ENXIO",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EROFS => "EROFS",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ETXTBSY => "ETXTBSY",
        libc::ESPIPE => "ESPIPE",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return format!("errno{e}"),
    };
    name.to_string()
}

/// The part of a `VIRTUOS_TRACE=1` stderr that explains a failure: the trace
/// lines just before the first failing command (the ERR trap's message), and
/// a count of the failed calls by syscall and error.
pub fn trace_excerpt(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let stop = lines
        .iter()
        .position(|l| l.contains("e2e: script line"))
        .map_or(lines.len(), |i| i + 1);
    let mut s = String::new();
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    for l in &lines {
        if l.contains("virtuos: trace") && l.contains(" r=-") {
            let a = annotate_trace_line(l);
            let key = a
                .split(' ')
                .filter(|w| !w.starts_with("pid=") && !w.starts_with("tid="))
                .collect::<Vec<_>>()
                .join(" ");
            *failed.entry(key).or_default() += 1;
        }
    }
    let _ = writeln!(s, "-- failed calls (count, call) --");
    for (k, n) in &failed {
        let _ = writeln!(s, "{n:6} {}", k.trim_start_matches("virtuos: trace "));
    }
    let start = stop.saturating_sub(60);
    let _ = writeln!(
        s,
        "-- last {} stderr lines up to the first failing command --",
        stop - start
    );
    for l in &lines[start..stop] {
        let _ = writeln!(s, "{}", annotate_trace_line(l));
    }
    s
}

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

// ---------------------------------------------------------------- self-tests

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn ls_line_normalisation_is_narrow() {
        let n = Norm {
            ls_times: true,
            ls_total: true,
        };
        let r = Path::new("/r");
        let t = Path::new("/t");
        assert_eq!(
            normalize(
                "-rw-r--r--  1 root root   3 Dec  2 06:52 my file\n",
                r,
                t,
                n
            ),
            "-rw-r--r-- 1 root root 3 <mtime> my file\n"
        );
        assert_eq!(
            normalize("lrwxrwxrwx. 1 a b 9 Jan 10  2020 l -> /r/x\n", r, t, n),
            "lrwxrwxrwx. 1 a b 9 <mtime> l -> $ROOT/x\n"
        );
        assert_eq!(normalize("total 48\n", r, t, n), "total <blocks>\n");
        // Lines that are not ls -l lines are left alone.
        for s in [
            "hello world this is a line with nine fields\n",
            "total: 5 files\n",
            "-rw 1 2\n",
        ] {
            assert_eq!(normalize(s, r, t, n), s);
        }
        assert_eq!(normalize("total 48\n", r, t, Norm::default()), "total 48\n");
    }

    #[test]
    fn diff_shows_changed_lines_with_context() {
        let a = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let b = "1\n2\n3\n4\nfive\n6\n7\n8\n9\n";
        let d = line_diff(a, b);
        assert!(d.contains("- 5\n+ five\n"), "{d}");
        assert!(
            d.contains("  4\n") && d.contains("  6\n") && d.contains("..."),
            "{d}"
        );
        assert!(!d.contains("  1\n"), "{d}");
        assert!(line_diff("a\n", "a").contains("final newline"));
    }

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

    #[test]
    fn trace_excerpt_names_calls_and_errors() {
        let stderr = "virtuos: trace pid=1 tid=1 nr=257 wrapper r=-2\nsh: cannot create\n\
                      e2e: script line 3 failed (exit 2): echo x > f\nvirtuos: trace pid=1 tid=1 nr=3 wrapper r=0\n";
        let t = trace_excerpt(stderr);
        assert!(t.contains("1 openat(257) wrapper r=-2(ENOENT)"), "{t}");
        assert!(t.contains("e2e: script line 3"), "{t}");
        assert!(
            !t.contains("close(3)"),
            "lines after the failing command are cut: {t}"
        );
    }

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
