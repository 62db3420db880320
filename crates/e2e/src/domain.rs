//! A private daemon with its domains, and the check that nothing escaped
//! to the host.

use crate::bins::{bins, describe_bins, target_dir};
use crate::run::{exec, script_env, script_timeout, show_run, Run};
use crate::text::tail;
use crate::tree::{list_tree, show_tree};
use crate::STORAGE;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

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
