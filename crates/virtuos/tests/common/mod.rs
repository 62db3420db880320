//! Helpers shared by the integration tests: locating (and if needed
//! building) the binaries, a private runtime/data dir per test, a tiny
//! control-socket client.
#![allow(dead_code)]

use rustix::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use virtuos_abi::control::{self, ClientRequest, DaemonReply};

pub fn virtuos_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_virtuos"))
}

/// `target/<profile>`.
pub fn bin_dir() -> PathBuf {
    virtuos_bin().parent().unwrap().to_path_buf()
}

static BUILD: Mutex<()> = Mutex::new(());

/// Build with cargo if `path` is missing (or always when `refresh`, so a
/// binary another crate's authors changed is not stale; set
/// VIRTUOS_TEST_NO_BUILD=1 to skip that); fail with `hint` if still missing.
fn ensure_built(path: &Path, cargo_args: &[&str], hint: &str, refresh: bool) -> PathBuf {
    let _g = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let refresh = refresh && std::env::var_os("VIRTUOS_TEST_NO_BUILD").is_none();
    if refresh || !path.is_file() {
        let release = bin_dir().file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.arg("build").args(cargo_args);
        if release {
            cmd.arg("--release");
        }
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        let status = cmd.status();
        assert!(
            path.is_file(),
            "{} is missing ({status:?}): {hint}",
            path.display()
        );
    }
    path.to_path_buf()
}

/// The stand-in domain (examples/fake_domain.rs).
pub fn fake_domain() -> PathBuf {
    ensure_built(
        &bin_dir().join("examples/fake_domain"),
        &["-p", "virtuos", "--examples"],
        "run cargo build -p virtuos --examples first",
        false,
    )
}

/// The stand-in client process (examples/fake_client.rs).
pub fn fake_client() -> PathBuf {
    ensure_built(
        &bin_dir().join("examples/fake_client"),
        &["-p", "virtuos", "--examples"],
        "run cargo build -p virtuos --examples first",
        false,
    )
}

/// The real domain server.
pub fn real_domain() -> PathBuf {
    ensure_built(
        &bin_dir().join("virtuos-domain"),
        &["-p", "virtuos-domain"],
        "run cargo build -p virtuos-domain first",
        true,
    )
}

/// A private runtime and data directory, and the daemon in it (stopped on drop).
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub domain_bin: PathBuf,
    pub extra_env: Vec<(String, String)>,
}

static SUBNETS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A /30 of its own for each test daemon's network link (tests run in
/// parallel; the domain tests use 169.254.200-249.x).
pub fn unique_subnet() -> String {
    let n = SUBNETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pid = std::process::id();
    let c = 100 + (pid % 100);
    let d = 4 * ((pid / 100 + n) % 64);
    format!("169.254.{c}.{d}/30")
}

impl TestEnv {
    pub fn new(domain_bin: PathBuf) -> TestEnv {
        let env = TestEnv {
            dir: tempfile::Builder::new()
                .prefix("virtuos-test-")
                .tempdir()
                .unwrap(),
            domain_bin,
            extra_env: vec![],
        };
        env.write_config(&format!("network_subnet = \"{}\"\n", unique_subnet()));
        env
    }

    /// Replace the test's config file.
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config_file(), text).unwrap();
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("virtuos.toml")
    }

    /// The network domain's entry of `status --json`.
    pub fn network(&self) -> serde_json::Value {
        let st = self.status();
        st["domains"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["name"] == "network").cloned())
            .unwrap_or(serde_json::Value::Null)
    }

    pub fn runtime(&self) -> PathBuf {
        self.dir.path().join("run")
    }
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    pub fn socket(&self) -> PathBuf {
        self.runtime().join("virtuosd.sock")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(virtuos_bin());
        c.args(args)
            .env("VIRTUOS_RUNTIME_DIR", self.runtime())
            .env("VIRTUOS_DATA_DIR", self.data())
            .env("VIRTUOS_DOMAIN_BIN", &self.domain_bin)
            .env("VIRTUOS_CONFIG", self.config_file())
            .env("VIRTUOS_LOG", "debug");
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Run and require success.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "virtuos {args:?} failed: {}\nstderr: {}\nlog:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        out
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.runtime().join("virtuosd.log")).unwrap_or_default()
    }

    pub fn up(&self) {
        self.ok(&["up"]);
    }

    pub fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    pub fn storage(&self) -> serde_json::Value {
        self.status()["domains"][0].clone()
    }

    pub fn client_pids(&self) -> Vec<u64> {
        self.storage()["clients"]
            .as_array()
            .map(|a| a.iter().map(|c| c["pid"].as_u64().unwrap()).collect())
            .unwrap_or_default()
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.runtime().join("virtuosd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn connect(&self) -> OwnedFd {
        connect(&self.socket())
    }

    /// One request on a fresh connection.
    pub fn request(&self, req: &ClientRequest) -> (DaemonReply, Vec<OwnedFd>) {
        request(&self.connect(), req)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let pid = self.daemon_pid();
        let _ = self.cmd(&["down"]).output();
        if let Some(p) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
}

pub fn connect(path: &Path) -> OwnedFd {
    let fd = rustix::net::socket(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        None,
    )
    .unwrap();
    rustix::net::connect(&fd, &rustix::net::SocketAddrUnix::new(path).unwrap())
        .unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    rustix::net::sockopt::set_socket_timeout(
        &fd,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_secs(20)),
    )
    .unwrap();
    fd
}

pub fn request(sock: &OwnedFd, req: &ClientRequest) -> (DaemonReply, Vec<OwnedFd>) {
    control::send(sock.as_fd(), req, &[]).unwrap();
    control::recv(sock.as_fd())
        .unwrap()
        .expect("daemon closed the connection")
}

/// Wait until `f` holds (polling), or panic with `what`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !matches!(
            s.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next()),
            Some('Z') | Some('X')
        ),
        Err(_) => false,
    }
}

/// A local user that is neither root nor the daemon's owner (no passwd
/// entry needed: `setpriv` takes numbers).
pub const OTHER_UID: u32 = 1001;

/// `prog` as `OTHER_UID` (its own gid, no supplementary groups).
pub fn as_other(prog: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={OTHER_UID}"))
        .arg(format!("--regid={OTHER_UID}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(prog);
    c
}

impl TestEnv {
    /// Let other users reach the socket (the test's temporary directory
    /// is 0700; a daemon of root serves every user).
    pub fn open_to_others(&self) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// `virtuos ARGS` as `OTHER_UID`, with this test's environment.
    pub fn cmd_as_other(&self, args: &[&str]) -> Command {
        let mut c = as_other(&virtuos_bin());
        c.args(args)
            .env("VIRTUOS_RUNTIME_DIR", self.runtime())
            .env("VIRTUOS_DATA_DIR", self.data())
            .env("VIRTUOS_DOMAIN_BIN", &self.domain_bin)
            .env("VIRTUOS_CONFIG", self.config_file())
            .env("VIRTUOS_LOG", "debug");
        c
    }
}
