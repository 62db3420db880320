//! Drivers orchestrate workers: native runs on tmpfs, forwarded runs under
//! `virtuos run` against a throw-away daemon and data directory, and compute
//! medians and ratios.

pub mod all;
pub mod fcntl;
pub mod fork;
pub mod http;
pub mod launch;
pub mod loadgen;
pub mod net;
pub mod nginx;
pub mod output;
pub mod queue_ping;
pub mod tcp_lat;
pub mod tcp_stream;
pub mod vm;
pub mod write;

use crate::workers::WorkerOutput;
use anyhow::{bail, Context};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Options every driver takes.
#[derive(Clone, Debug, clap::Args)]
pub struct Common {
    /// The `virtuos` binary [default: next to this binary, or $VIRTUOS_BIN].
    #[arg(long, global = true)]
    pub virtuos: Option<PathBuf>,
    /// Only measure natively (no daemon, no forwarded runs).
    #[arg(long, global = true)]
    pub native_only: bool,
    /// Kill a worker run that takes longer than this many seconds.
    #[arg(long, global = true, default_value_t = 900)]
    pub timeout: u64,
    /// Where temporary files go (must be tmpfs to compare with the paper).
    #[arg(long, global = true, default_value = "/dev/shm")]
    pub tmp: PathBuf,
    /// Measure every configuration in this many rounds, interleaved with the
    /// other configurations, and pool the samples: slow drift of a shared
    /// machine (other jobs, the host moving vCPUs) then hits all alike.
    #[arg(long, global = true, default_value_t = 3)]
    pub rounds: u32,
}

impl Common {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }

    /// Fail early (before measuring anything) when forwarded runs are asked
    /// for but the virtuos binaries are not there.
    pub fn check_binaries(&self) -> anyhow::Result<()> {
        snapshot(self).map(drop)
    }
}

/// The bench binary itself: workers are `<bench> worker ...` (the
/// snapshot's copy once `snapshot` ran).
pub fn bench_exe() -> anyhow::Result<PathBuf> {
    if let Some(s) = SNAPSHOT.get() {
        return Ok(s.bench.clone());
    }
    std::env::current_exe().context("cannot find the virtuos-bench executable")
}

/// Private copies of the binaries a run uses, so that a concurrent
/// `cargo build` (a shared target directory) cannot swap them mid-run.
pub struct Snapshot {
    dir: PathBuf,
    bench: PathBuf,
    /// `virtuos`, with `libvirtuos.so` and `virtuos-domain` beside it.
    virtuos: Option<PathBuf>,
}

static SNAPSHOT: std::sync::OnceLock<Snapshot> = std::sync::OnceLock::new();

/// Copy the binaries into a temp dir (once per process).
pub fn snapshot(common: &Common) -> anyhow::Result<&'static Snapshot> {
    if let Some(s) = SNAPSHOT.get() {
        return Ok(s);
    }
    let dir = TempDir::new(&common.tmp, "bin")?;
    let copy = |from: &Path, name: &str| -> anyhow::Result<PathBuf> {
        let to = dir.path().join(name);
        std::fs::copy(from, &to)
            .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
        Ok(to)
    };
    let bench = copy(
        &std::env::current_exe().context("cannot find the virtuos-bench executable")?,
        "virtuos-bench",
    )?;
    let virtuos = if common.native_only {
        None
    } else {
        let v = find_virtuos(common.virtuos.as_deref())
            .context("forwarded runs need the virtuos stack (or pass --native-only)")?;
        let src = v.parent().unwrap_or(Path::new("."));
        copy(&src.join("libvirtuos.so"), "libvirtuos.so")?;
        copy(&src.join("virtuos-domain"), "virtuos-domain")?;
        Some(copy(&v, "virtuos")?)
    };
    // Kept until `cleanup` (statics are never dropped).
    let dir = std::mem::ManuallyDrop::new(dir).path.clone();
    Ok(SNAPSHOT.get_or_init(|| Snapshot {
        dir,
        bench,
        virtuos,
    }))
}

/// Copy `from` into the snapshot directory as `name` (kept until `cleanup`).
pub fn snapshot_file(common: &Common, from: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let s = snapshot(common)?;
    let to = s.dir.join(name);
    std::fs::copy(from, &to)
        .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    Ok(to)
}

/// Remove the snapshot directory (end of a driver run).
pub fn cleanup() {
    if let Some(s) = SNAPSHOT.get() {
        let _ = std::fs::remove_dir_all(&s.dir);
    }
}

/// Locate the `virtuos` CLI: `--virtuos`, `$VIRTUOS_BIN`, or the same
/// target directory as this binary. Also checks that `libvirtuos.so` is
/// there (the CLI itself decides where it loads it from).
pub fn find_virtuos(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    const HINT: &str = "cargo build --release --workspace first";
    let candidate = match explicit {
        Some(p) => p.to_path_buf(),
        None => match std::env::var_os("VIRTUOS_BIN") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => bench_exe()?
                .parent()
                .map(|d| d.join("virtuos"))
                .context("bench executable has no parent directory")?,
        },
    };
    if !candidate.is_file() {
        bail!(
            "the virtuos binary is missing at {} ({HINT}, or pass --virtuos PATH / set \
             VIRTUOS_BIN)",
            candidate.display()
        );
    }
    let dir = candidate.parent().unwrap_or(Path::new("."));
    for sibling in ["libvirtuos.so", "virtuos-domain"] {
        if !dir.join(sibling).is_file() {
            bail!(
                "{} is missing next to {} ({HINT})",
                sibling,
                candidate.display()
            );
        }
    }
    Ok(candidate)
}

/// A fresh directory under `base`, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(base: &Path, what: &str) -> anyhow::Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = base.join(format!(
            "virtuos-bench-{what}-{}-{nanos:08x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A private virtuos daemon with its own runtime and data directories.
/// `virtuos up` on start, `virtuos down` on drop.
pub struct Stack {
    virtuos: PathBuf,
    tmp: TempDir,
    /// The data directory when it is not ours (`StackOpts::data_dir`).
    data: Option<PathBuf>,
    env: Vec<(String, String)>,
    timeout: Duration,
    up: bool,
    /// How long `virtuos up` took (it returns once the storage domain serves).
    pub up_elapsed: Duration,
}

/// How to start a [`Stack`].
#[derive(Clone, Debug)]
pub struct StackOpts {
    /// Arguments of `virtuos up` (e.g. `--backend vm`, `--forward 18080:8080`).
    pub up_args: Vec<String>,
    /// Extra environment of every `virtuos` command of the stack.
    pub env: Vec<(String, String)>,
    /// Kill `virtuos up` after this long.
    pub up_timeout: Duration,
    /// Use this data directory (kept) instead of a fresh one.
    pub data_dir: Option<PathBuf>,
}

impl Default for StackOpts {
    fn default() -> StackOpts {
        StackOpts {
            up_args: Vec::new(),
            env: Vec::new(),
            up_timeout: Duration::from_secs(60),
            data_dir: None,
        }
    }
}

impl Stack {
    pub fn start(common: &Common) -> anyhow::Result<Stack> {
        Stack::start_with(common, &[])
    }

    /// `virtuos up UP_ARGS` (e.g. `--forward 18080:8080`).
    pub fn start_with(common: &Common, up_args: &[String]) -> anyhow::Result<Stack> {
        Stack::start_opts(
            common,
            &StackOpts {
                up_args: up_args.to_vec(),
                ..StackOpts::default()
            },
        )
    }

    pub fn start_opts(common: &Common, o: &StackOpts) -> anyhow::Result<Stack> {
        let virtuos = snapshot(common)?
            .virtuos
            .clone()
            .context("no virtuos binary (--native-only?)")?;
        let tmp = TempDir::new(&common.tmp, "stack")?;
        for d in ["runtime", "data"] {
            std::fs::create_dir_all(tmp.path().join(d))?;
        }
        let mut stack = Stack {
            virtuos,
            tmp,
            data: o.data_dir.clone(),
            env: o.env.clone(),
            timeout: common.timeout(),
            up: false,
            up_elapsed: Duration::ZERO,
        };
        let mut up = stack.command(["up"]);
        up.args(&o.up_args);
        let t = Instant::now();
        let out = run_with_timeout(up, o.up_timeout, "virtuos up");
        stack.up_elapsed = t.elapsed();
        // Even a failed or killed `up` may have left a daemon (and a VM):
        // `down` on drop.
        stack.up = true;
        let out = out?;
        if !out.status_ok {
            bail!("`virtuos up` failed: {}", out.stderr_tail());
        }
        let sock = stack.socket();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            if Instant::now() > deadline {
                bail!(
                    "`virtuos up` returned but {} never appeared",
                    sock.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(stack)
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.tmp.path().join("runtime")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(|| self.tmp.path().join("data"))
    }

    pub fn socket(&self) -> PathBuf {
        self.runtime_dir().join("virtuosd.sock")
    }

    fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut c = Command::new(&self.virtuos);
        c.args(args.into_iter().map(Into::into))
            .env("VIRTUOS_RUNTIME_DIR", self.runtime_dir())
            .env("VIRTUOS_DATA_DIR", self.data_dir())
            .env_remove("VIRTUOS_CONFIG")
            .env_remove("VIRTUOS_SPIN")
            .env_remove("VIRTUOS_PRELOAD")
            .env_remove("VIRTUOS_DOMAIN_BIN");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Run `virtuos run -- <bench> worker ARGS` with extra environment:
    /// what it printed, and the command line for messages.
    fn run_worker_raw(
        &self,
        args: &[String],
        env: &[(&str, String)],
    ) -> anyhow::Result<(Finished, String)> {
        let mut c = self.command(["run", "--"]);
        c.arg(bench_exe()?).arg("worker").args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let what = format!("virtuos run -- virtuos-bench worker {}", args.join(" "));
        Ok((run_with_timeout(c, self.timeout, &what)?, what))
    }

    /// Run `virtuos run -- <bench> worker ARGS` with extra environment.
    pub fn run_worker(
        &self,
        args: &[String],
        env: &[(&str, String)],
    ) -> anyhow::Result<WorkerOutput> {
        let (f, what) = self.run_worker_raw(args, env)?;
        parse_worker(f, &what)
    }

    /// As `run_worker`, and fail when the preload library (in the worker
    /// or a child of it) reported that it lost or could not reach its
    /// domain: a fork whose claim failed still exits 0.
    pub fn run_worker_strict(
        &self,
        args: &[String],
        env: &[(&str, String)],
    ) -> anyhow::Result<WorkerOutput> {
        let (f, what) = self.run_worker_raw(args, env)?;
        if let Some(line) = f.stderr.lines().find(|l| is_session_failure(l)) {
            bail!("{what}: the preload library reported: {line}");
        }
        parse_worker(f, &what)
    }

    /// `virtuos status --json`.
    pub fn status_json(&self) -> anyhow::Result<serde_json::Value> {
        let out = run_with_timeout(
            self.command(["status", "--json"]),
            Duration::from_secs(20),
            "virtuos status --json",
        )?;
        serde_json::from_str(&out.stdout)
            .with_context(|| format!("parse `virtuos status --json`: {}", out.stdout))
    }

    /// `virtuos run -- ARGV` with this stack's environment, not started
    /// (for long-running programs such as servers).
    pub fn run_command(&self, argv: &[OsString]) -> Command {
        let mut c = self.command(["run", "--"]);
        c.args(argv);
        c
    }

    /// Wait until the network domain is connected; its address on the host
    /// link (`virtuos status --json`).
    pub fn network_address(&self) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = run_with_timeout(
                self.command(["status", "--json"]),
                Duration::from_secs(20),
                "virtuos status --json",
            )?;
            let v: serde_json::Value = serde_json::from_str(&out.stdout)
                .with_context(|| format!("parse `virtuos status --json`: {}", out.stdout))?;
            let net = v["domains"]
                .as_array()
                .and_then(|d| d.iter().find(|d| d["name"] == "network"))
                .with_context(|| {
                    format!(
                        "this daemon runs no network domain (needs root and iproute2, see \
                         scripts/setup-debian.sh): {}",
                        out.stdout.trim()
                    )
                })?;
            if let (Some("connected"), Some(a)) = (net["state"].as_str(), net["address"].as_str()) {
                return Ok(a.to_string());
            }
            if Instant::now() > deadline {
                bail!(
                    "the network domain is not connected: {net}\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.runtime_dir().join("virtuosd.log")).unwrap_or_default();
        tail(&log, 15)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.up {
            let r = run_with_timeout(
                self.command(["down"]),
                Duration::from_secs(30),
                "virtuos down",
            );
            match r {
                Ok(out) if out.status_ok => {}
                Ok(out) => eprintln!("warning: `virtuos down` failed: {}", out.stderr_tail()),
                Err(e) => eprintln!("warning: `virtuos down`: {e:#}"),
            }
        }
    }
}

/// Run `<bench> worker ARGS` natively.
pub fn run_native(args: &[String], timeout: Duration) -> anyhow::Result<WorkerOutput> {
    let mut c = Command::new(bench_exe()?);
    c.arg("worker").args(args).env_remove("LD_PRELOAD");
    let what = format!("virtuos-bench worker {}", args.join(" "));
    parse_worker(run_with_timeout(c, timeout, &what)?, &what)
}

/// A line the preload library prints when a process has no working session.
pub fn is_session_failure(line: &str) -> bool {
    line.starts_with("virtuos: ")
        && (line.contains("cannot reach the virtuos daemon") || line.contains("lost its"))
}

pub struct Finished {
    pub status_ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    fn stderr_tail(&self) -> String {
        let t = tail(&self.stderr, 10);
        if t.is_empty() {
            "(no stderr)".into()
        } else {
            t
        }
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Run a command to completion, killing it after `timeout`.
fn run_with_timeout(mut c: Command, timeout: Duration, what: &str) -> anyhow::Result<Finished> {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().with_context(|| format!("cannot start {what}"))?;
    // Drain the pipes on threads so that a chatty child cannot block.
    let mut so = child.stdout.take().context("no stdout pipe")?;
    let mut se = child.stderr.take().context("no stderr pipe")?;
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut so, &mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut se, &mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    match status {
        None => bail!(
            "{what}: killed after {} s (timeout); stderr: {}",
            timeout.as_secs(),
            tail(&stderr, 10)
        ),
        Some(st) => Ok(Finished {
            status_ok: st.success(),
            stdout,
            stderr,
        }),
    }
}

fn parse_worker(f: Finished, what: &str) -> anyhow::Result<WorkerOutput> {
    if !f.status_ok {
        bail!("{what} failed: {}", f.stderr_tail());
    }
    WorkerOutput::parse(&f.stdout).with_context(|| format!("{what}: stderr: {}", f.stderr_tail()))
}

/// File system type of the file system holding `p` (from /proc/self/mounts:
/// the longest mount point that is a prefix).
pub fn fs_type(p: &Path) -> String {
    let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let _dev = it.next()?;
            let mp = it.next()?;
            let ty = it.next()?;
            Some((mp.to_string(), ty.to_string()))
        })
        .filter(|(mp, _)| p.starts_with(mp))
        .max_by_key(|(mp, _)| mp.len())
        .map(|(_, ty)| ty)
        .unwrap_or_else(|| "unknown".into())
}

/// Samples of one configuration collected over several rounds.
#[derive(Default)]
pub struct Pool {
    samples: Vec<f64>,
    errors: Vec<String>,
}

impl Pool {
    pub fn add(&mut self, r: anyhow::Result<WorkerOutput>) {
        match r {
            Ok(w) => self.samples.extend(w.samples),
            Err(e) => self.errors.push(format!("{e:#}")),
        }
    }

    pub fn add_samples(&mut self, r: anyhow::Result<Vec<f64>>) {
        match r {
            Ok(s) => self.samples.extend(s),
            Err(e) => self.errors.push(format!("{e:#}")),
        }
    }

    pub fn fail(&mut self, e: impl Into<String>) {
        self.errors.push(e.into());
    }

    pub fn summary(&self) -> Option<crate::stats::Summary> {
        crate::stats::Summary::of(&self.samples)
    }

    /// A summary if any round produced samples (failed rounds are then
    /// reported on stderr only), else the first error.
    pub fn forwarded(&self) -> crate::results::Forwarded {
        use crate::results::Forwarded;
        match (self.summary(), self.errors.first()) {
            (Some(s), _) => Forwarded::ok(s),
            (None, Some(e)) => Forwarded::failed(e.clone()),
            (None, None) => Forwarded::failed("no samples"),
        }
    }
}

/// Strings for a worker's command line.
pub fn args<const N: usize>(a: [&dyn std::fmt::Display; N]) -> Vec<String> {
    a.iter().map(|x| x.to_string()).collect()
}
