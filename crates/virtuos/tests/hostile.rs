//! The control plane against another local user (uid 1001 through
//! `setpriv`; the tests run as root): fault injection and restarts are
//! refused, fault reports fail only the reporter while the domain answers,
//! idle connections cannot starve root, pending forks count against the
//! client's RLIMIT_NPROC, a looping submit list fails that client alone,
//! client strings are escaped in the log; bad configuration values and
//! unsafe runtime directories are refused with one clear message.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};
use virtuos_abi::call::{self, WaitPolicy};
use virtuos_abi::control::{ClientRequest, DaemonReply, STORAGE};
use virtuos_abi::ops::OP_PING;
use virtuos_abi::region::StatePage;
use virtuos_abi::ClientRegion;

const WAIT: Duration = Duration::from_secs(20);

/// The tests count and start processes of uid 1001: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A registered client of the test process itself (root).
struct RootClient {
    region: ClientRegion,
    state: StatePage,
}

impl RootClient {
    fn register(env: &TestEnv) -> RootClient {
        let (reply, fds) = env.request(&ClientRequest::Register {
            domain: STORAGE.into(),
        });
        assert!(
            matches!(reply, DaemonReply::Registered { .. }),
            "{reply:?}\nlog:\n{}",
            env.log()
        );
        RootClient {
            region: ClientRegion::map(&fds[0]).unwrap(),
            state: StatePage::map(&fds[1], false).unwrap(),
        }
    }

    /// OP_PING's raw result (or why there is none).
    fn ping(&self) -> Result<i64, String> {
        let e = self.region.entry(7).unwrap();
        e.fill(OP_PING, 1, std::process::id(), None, [0; 6]);
        let policy = WaitPolicy {
            deadline: Some(Duration::from_secs(10)),
            ..WaitPolicy::default()
        };
        call::submit_and_wait(&self.region, self.state.get(), 7, policy)
            .map(|r| r.0)
            .map_err(|e| format!("{e:?}"))
    }
}

/// `fake_client ARGS` as uid 1001; returns it and its first line.
fn other_client(env: &TestEnv, args: &[&str]) -> (Child, String) {
    let mut child = as_other(&fake_client())
        .args(args)
        .env("VIRTUOS_RUNTIME_DIR", env.runtime())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().to_string())
}

fn finish(mut c: Child) {
    drop(c.stdin.take());
    let _ = c.wait();
}

/// A failed command: non-zero exit and exactly one line on stderr, the
/// error, which contains `want` and names the OS error at most once.
fn one_clear_error(out: &Output, want: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "must fail ({want}): {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, not:\n{err}");
    assert!(lines[0].starts_with("virtuos: error: "), "{err}");
    assert!(err.contains(want), "expected {want:?} in: {err}");
    assert!(
        err.matches("os error").count() <= 1,
        "OS error repeated: {err}"
    );
    err
}

fn restarts(env: &TestEnv) -> u64 {
    env.storage()["restarts"].as_u64().unwrap_or(0)
}

#[test]
fn crash_restart_and_down_are_refused_to_other_users() {
    let _serial = serial();
    let env = TestEnv::new(fake_domain());
    env.up();
    env.open_to_others();
    for (args, what) in [
        (
            &["domain", "crash", "storage", "--how", "kill"][..],
            "only root or the daemon's owner may crash a domain",
        ),
        (
            &["domain", "restart", "storage"][..],
            "only root or the daemon's owner may restart a domain",
        ),
        (
            &["down"][..],
            "only root or the daemon's owner may stop virtuosd",
        ),
    ] {
        let out = env.cmd_as_other(args).output().unwrap();
        one_clear_error(&out, what);
    }
    let s = env.storage();
    assert_eq!(s["state"], "connected", "{s}");
    assert_eq!(s["restarts"], 0, "{s}");
    // Root may.
    env.ok(&["domain", "restart", "storage", "--wait"]);
    assert_eq!(restarts(&env), 1);
}

/// Five fault reports from uid 1001 (with a forged log line in the
/// reason) against a domain that answers: no restart, root's client keeps
/// working, the log names the reporter and keeps one line per event.
fn reports_fail_only_the_reporter(env: &TestEnv) -> RootClient {
    env.open_to_others();
    let root = RootClient::register(env);
    assert_eq!(root.ping(), Ok(0));
    let (c, line) = other_client(env, &["report", "5", "result 0x1\nERROR forged line"]);
    assert_eq!(line, "reported 5");
    finish(c);
    assert_eq!(restarts(env), 0, "log:\n{}", env.log());
    assert_eq!(env.storage()["state"], "connected");
    assert!(root.state.get().serving());
    assert_eq!(root.ping(), Ok(0), "root's client after the reports");
    let log = env.log();
    let probed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("the domain answers a probe"))
        .collect();
    assert_eq!(probed.len(), 5, "{log}");
    assert!(probed.iter().all(|l| l.contains("uid=1001")), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("ERROR forged")),
        "a client forged a log line:\n{log}"
    );
    assert!(log.contains("result 0x1\\nERROR forged line"), "{log}");
    root
}

#[test]
fn fault_reports_fail_only_the_reporter_fake_domain() {
    let _serial = serial();
    let env = TestEnv::new(fake_domain());
    env.up();
    let _root = reports_fail_only_the_reporter(&env);
}

#[test]
fn fault_reports_fail_only_the_reporter_and_a_corrupt_domain_restarts() {
    let _serial = serial();
    let env = TestEnv::new(real_domain());
    env.up();
    let root = reports_fail_only_the_reporter(&env);
    // A domain that really answers garbage fails the probe too.
    env.ok(&["domain", "crash", "storage", "--how", "corrupt"]);
    let r = root.ping().unwrap();
    assert_ne!(r, 0, "a corrupted domain answers garbage");
    let (reply, _) = env.request(&ClientRequest::ReportFault {
        domain: STORAGE.into(),
        reason: format!("result {r:#x}"),
    });
    assert_eq!(reply, DaemonReply::Ok);
    let start = std::time::Instant::now();
    loop {
        let s = env.storage();
        if s["restarts"] == 1 && s["state"] == "connected" {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "the corrupt domain did not restart once: {s}\n{}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!root.state.get().serving());
    assert!(env.log().contains("failed a probe"), "{}", env.log());
    assert_eq!(RootClient::register(&env).ping(), Ok(0));
}

#[test]
fn idle_connections_of_another_user_do_not_starve_root() {
    let _serial = serial();
    let env = TestEnv::new(fake_domain());
    env.up();
    env.open_to_others();
    let (hog, line) = other_client(&env, &["hold", "1000"]);
    eprintln!("uid {OTHER_UID}: {line}");
    let refused: usize = line
        .strip_prefix("held 1000 refused ")
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    assert!(refused >= 1000 - 64, "{line}");
    // Root is served at once, several times over.
    let root = RootClient::register(&env);
    for _ in 0..5 {
        let t = Instant::now();
        env.ok(&["status"]);
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "status took {:?}",
            t.elapsed()
        );
        assert_eq!(root.ping(), Ok(0));
    }
    let (mut other, line) = other_client(&env, &["register"]);
    // The other user, at its limit, is told why.
    assert!(
        line.starts_with("error uid 1001 has too many connections"),
        "{line}"
    );
    finish_child(&mut other);
    // No thread per connection.
    let pid = env.daemon_pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let threads: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(threads < 32, "the daemon runs {threads} threads");
    assert!(env.log().contains("too many connections"), "{}", env.log());
    finish(hog);
}

fn finish_child(c: &mut Child) {
    drop(c.stdin.take());
    let _ = c.wait();
}

/// Children of `parent` whose real uid is `uid`.
fn children_of(parent: u32, uid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("status")).is_ok_and(|s| {
                let field = |k: &str| {
                    s.lines()
                        .find(|l| l.starts_with(k))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .map(str::to_string)
                };
                field("PPid:") == Some(parent.to_string()) && field("Uid:") == Some(uid.to_string())
            })
        })
        .count()
}

/// Processes whose real uid is `uid`.
fn processes_of(uid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("status")).is_ok_and(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    == Some(uid.to_string().as_str())
            })
        })
        .count()
}

#[test]
fn pending_forks_respect_rlimit_nproc() {
    let _serial = serial();
    let env = TestEnv::new(real_domain());
    env.up();
    env.open_to_others();
    // A flood of OP_FORK_PREPARE (pending shadows, no fork of the
    // client) under RLIMIT_NPROC 20: refused with EAGAIN at the limit.
    let (c, line) = other_client(&env, &["fork-prepare", "300", "20"]);
    let procs = processes_of(OTHER_UID);
    eprintln!(
        "OP_FORK_PREPARE flood under RLIMIT_NPROC 20: {line}; {procs} processes of uid {OTHER_UID}"
    );
    let prepared: usize = line
        .strip_prefix("prepared ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        line.ends_with("result -11"),
        "EAGAIN expected: {line}\n{}",
        env.log()
    );
    assert!(prepared < 20, "{line}");
    assert!(
        procs <= 20,
        "{procs} processes of uid {OTHER_UID} under a limit of 20"
    );
    finish(c);

    // A program under virtuos forking until fork fails: EAGAIN, and its
    // uid's processes stay within the limit.
    let out = env
        .cmd_as_other(&[
            "run",
            "--",
            fake_client().to_str().unwrap(),
            "fork-flood",
            "30",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "fork flood under virtuos, RLIMIT_NPROC 30: {}",
        stdout.trim()
    );
    let words: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"forks"), "{stdout}");
    assert_eq!(words[3], "11", "fork must fail with EAGAIN: {stdout}");
    let procs: usize = words[5].parse().unwrap();
    assert!(procs <= 30, "{stdout}");
    assert!(words[1].parse::<usize>().unwrap() >= 1, "{stdout}");
}

#[test]
fn a_looping_submit_list_fails_that_client_alone() {
    let _serial = serial();
    let env = TestEnv::new(real_domain());
    env.up();
    env.open_to_others();
    let root = RootClient::register(&env);
    assert_eq!(root.ping(), Ok(0));
    let (c, line) = other_client(&env, &["loop"]);
    assert_eq!(line, "failed", "log:\n{}", env.log());
    let pid = c.id();
    wait_for("the malformed queue logged", WAIT, || {
        env.log().lines().any(|l| {
            l.contains("malformed request queue")
                && l.contains(&format!("pid={pid}"))
                && l.contains("uid=1001")
        })
    });
    assert_eq!(root.ping(), Ok(0), "root's client after the loop");
    assert_eq!(restarts(&env), 0);
    // No domain CPU is burnt on it: its shadow is gone (no process of
    // uid 1001 is left but the client itself).
    let domain = env.storage()["pid"].as_u64().unwrap() as u32;
    wait_for("the looping client's shadow ended", WAIT, || {
        children_of(domain, OTHER_UID) == 0
    });
    finish(c);
}

fn bad_up(env: &TestEnv, args: &[&str], want: &str) {
    let mut c = env.cmd(&["up"]);
    c.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let out = wait_output(child, Duration::from_secs(20));
    one_clear_error(&out, want);
    assert!(!env.socket().exists(), "no daemon may start ({args:?})");
}

fn wait_output(mut child: Child, limit: Duration) -> Output {
    let t = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_configuration_values_fail_with_one_clear_message() {
    let _serial = serial();
    let env = TestEnv::new(fake_domain());
    for (mount, want) in [
        ("/proc", "system directory"),
        ("/dev", "system directory"),
        ("/dev/shm", "system directory"),
        ("/etc", "system directory"),
        ("/tmp", "system directory"),
        ("/var/lib/x", "system directory"),
        ("/", "cannot be `/`"),
        ("storage", "absolute path"),
        ("/a/../b", "`..`"),
    ] {
        bad_up(&env, &["--storage-mount", mount], want);
    }
    for (subnet, want) in [
        ("127.0.0.0/30", "must lie in"),
        ("8.8.8.0/30", "must lie in"),
        ("10.0.0.0/8", "/30"),
        ("169.254.1.1/30", "host bits"),
    ] {
        bad_up(&env, &["--network-subnet", subnet], want);
    }
    bad_up(&env, &["--hang-timeout-ms", "0"], "hang timeout 0 ms");
    bad_up(&env, &["--hang-timeout-ms", "99"], "hang timeout 99 ms");
    bad_up(
        &env,
        &["--forward", "18123:80", "--forward", "18123:81"],
        "both use host port 18123",
    );
    // A host port that is taken: `up` fails, not only the log.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    bad_up(
        &env,
        &["--forward", &format!("{port}:80")],
        "cannot forward",
    );
    // The config file: /dev/zero must not hang, a FIFO neither.
    let mut c = env.cmd(&["status"]);
    c.env("VIRTUOS_CONFIG", "/dev/zero").stderr(Stdio::piped());
    let out = wait_output(c.spawn().unwrap(), Duration::from_secs(10));
    one_clear_error(&out, "not a regular file");
    // Unreadable for the caller: the OS error once.
    std::fs::write(env.dir.path().join("secret.toml"), "").unwrap();
    env.open_to_others();
    let unreadable = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            env.dir.path().join("secret.toml"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        env.cmd_as_other(&["status"])
            .env("VIRTUOS_CONFIG", env.dir.path().join("secret.toml"))
            .output()
            .unwrap()
    };
    let err = one_clear_error(&unreadable, "cannot read config file");
    assert!(err.contains("Permission denied"), "{err}");
}

#[test]
fn unsafe_runtime_directories_are_refused() {
    let _serial = serial();
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new(fake_domain());
    let rt = env.runtime();
    // Another user's directory (e.g. a /tmp/virtuos-<uid> made by them).
    std::fs::create_dir(&rt).unwrap();
    rustix::fs::chown(
        &rt,
        Some(rustix::process::Uid::from_raw(OTHER_UID)),
        Some(rustix::process::Gid::from_raw(OTHER_UID)),
    )
    .unwrap();
    bad_up(&env, &[], "belongs to uid 1001");
    let out = env.run(&["status"]);
    one_clear_error(&out, "belongs to uid 1001");
    assert_eq!(
        std::fs::read_dir(&rt).unwrap().count(),
        0,
        "nothing created"
    );
    std::fs::remove_dir(&rt).unwrap();
    // Writable by others.
    std::fs::create_dir(&rt).unwrap();
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o777)).unwrap();
    bad_up(&env, &[], "writable by group or others");
    std::fs::remove_dir(&rt).unwrap();
    // A symbolic link.
    let real = env.dir.path().join("elsewhere");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, &rt).unwrap();
    bad_up(&env, &[], "symbolic link");
    std::fs::remove_file(&rt).unwrap();
    // A symbolic link planted where the log goes: never followed.
    std::fs::create_dir(&rt).unwrap();
    let victim = env.dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, rt.join("virtuosd.log")).unwrap();
    bad_up(&env, &[], "cannot open the log");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    // Cleaned up, it works.
    std::fs::remove_file(rt.join("virtuosd.log")).unwrap();
    env.up();
    let mode = std::fs::metadata(&rt).unwrap().permissions().mode();
    assert_eq!(mode & 0o022, 0);
}
