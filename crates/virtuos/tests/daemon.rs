//! The daemon against the stand-in domain (examples/fake_domain.rs), so
//! these tests do not depend on the real domain server.

mod common;

use common::*;
use rustix::fd::AsFd;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use virtuos_abi::call::{self, WaitPolicy};
use virtuos_abi::control::{ClientRequest, DaemonReply, STORAGE};
use virtuos_abi::mapping::Mapping;
use virtuos_abi::ops::OP_PING;
use virtuos_abi::region::StatePage;
use virtuos_abi::state::status;
use virtuos_abi::{ClientRegion, STATE_SIZE};

const WAIT: Duration = Duration::from_secs(10);

fn register() -> ClientRequest {
    ClientRequest::Register {
        domain: STORAGE.into(),
    }
}

fn error_text(reply: &DaemonReply) -> String {
    match reply {
        DaemonReply::Error { message } => message.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A fake client process; returns it and its first output line.
fn spawn_client(env: &TestEnv, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(fake_client())
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

fn ping(region: &ClientRegion, state: &StatePage) -> i64 {
    let e = region.entry(5).unwrap();
    e.fill(OP_PING, 1, std::process::id(), None, [0; 6]);
    let policy = WaitPolicy {
        deadline: Some(Duration::from_secs(5)),
        ..WaitPolicy::default()
    };
    call::submit_and_wait(region, state.get(), 5, policy)
        .expect("ping round trip")
        .0
}

#[test]
fn register_ping_reattach_and_down() {
    let env = TestEnv::new(fake_domain());
    env.up();
    let st = env.status();
    assert_eq!(st["running"], true);
    let storage = &st["domains"][0];
    assert_eq!(storage["name"], "storage");
    assert_eq!(storage["state"], "connected", "{st}");
    assert_eq!(storage["backend"], "process");
    assert_eq!(st["storage_mount"], "/storage");
    let domain_pid = storage["pid"].as_u64().unwrap() as u32;
    assert!(env.data().join("storage").is_dir());

    // Register: [region rw, state page read-only].
    let (reply, fds) = env.request(&register());
    let DaemonReply::Registered {
        client_id,
        storage_mount,
        region_offset: 0,
        state_offset: 0,
    } = reply
    else {
        panic!("{reply:?}")
    };
    assert_eq!(storage_mount, "/storage");
    assert_eq!(fds.len(), 2);
    let region = ClientRegion::map(&fds[0]).unwrap();
    region.validate().unwrap();
    let state = StatePage::map(&fds[1], false).unwrap();
    assert!(state.get().is_valid());
    assert!(state.get().serving());
    let writable = Mapping::map(&fds[1], STATE_SIZE, true);
    assert!(
        writable.is_err(),
        "the state page must not be mappable writable"
    );
    assert_eq!(ping(&region, &state), 0);
    assert_eq!(ping(&region, &state), 0);
    assert_eq!(env.client_pids(), vec![std::process::id() as u64]);

    // The same pid again is refused; Reattach gives the same regions.
    let (reply, _) = env.request(&register());
    assert!(
        error_text(&reply).contains("already registered"),
        "{reply:?}"
    );
    let (reply, fds2) = env.request(&ClientRequest::Reattach {
        domain: STORAGE.into(),
    });
    assert!(
        matches!(reply, DaemonReply::Registered { client_id: id, .. } if id == client_id),
        "{reply:?}"
    );
    assert_eq!(fds2.len(), 2);
    let st0 = rustix::fs::fstat(&fds[0]).unwrap();
    let st1 = rustix::fs::fstat(&fds2[0]).unwrap();
    assert_eq!(
        (st0.st_dev, st0.st_ino),
        (st1.st_dev, st1.st_ino),
        "same region"
    );
    let again = ClientRegion::map(&fds2[0]).unwrap();
    assert_eq!(ping(&again, &state), 0);

    // An unknown domain is an error.
    let (reply, _) = env.request(&ClientRequest::Register {
        domain: "graphics".into(),
    });
    assert!(error_text(&reply).contains("unknown domain"));

    // down stops the daemon and the domain and removes the socket.
    let daemon_pid = env.daemon_pid().unwrap();
    env.ok(&["down"]);
    assert!(!env.socket().exists());
    assert!(!env.runtime().join("virtuosd.pid").exists());
    wait_for("daemon gone", WAIT, || !pid_alive(daemon_pid));
    wait_for("domain gone", WAIT, || !pid_alive(domain_pid));
    let out = env.ok(&["down"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));
    let out = env.run(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(env.status()["running"], false);
}

#[test]
fn garbage_and_broken_clients_do_not_hurt_others() {
    let env = TestEnv::new(fake_domain());
    env.up();
    // Garbage: an error reply, then the connection is closed.
    let sock = env.connect();
    rustix::net::send(&sock, b"\xff\x00{not json", rustix::net::SendFlags::empty()).unwrap();
    let reply: Option<(DaemonReply, _)> = virtuos_abi::control::recv(sock.as_fd()).unwrap();
    assert!(error_text(&reply.unwrap().0).contains("bad request"));
    // Valid JSON of the wrong shape, an empty packet, a vanishing client.
    let sock = env.connect();
    rustix::net::send(&sock, b"{\"Register\":42}", rustix::net::SendFlags::empty()).unwrap();
    drop(sock);
    let sock = env.connect();
    rustix::net::send(&sock, b"", rustix::net::SendFlags::empty()).unwrap();
    drop(sock);
    for _ in 0..20 {
        drop(env.connect());
    }
    // An idle connection does not block others.
    let _idle = env.connect();
    // Descriptors sent to the daemon are dropped, not kept.
    let memfd = virtuos_abi::mapping::create_memfd("junk", 4096).unwrap();
    let sock = env.connect();
    virtuos_abi::control::send(sock.as_fd(), &ClientRequest::Status, &[memfd.as_fd()]).unwrap();
    let (reply, _): (DaemonReply, _) = virtuos_abi::control::recv(sock.as_fd()).unwrap().unwrap();
    assert!(matches!(reply, DaemonReply::Status(_)));

    assert_eq!(env.storage()["state"], "connected");
    let (reply, fds) = env.request(&register());
    assert!(matches!(reply, DaemonReply::Registered { .. }), "{reply:?}");
    assert_eq!(fds.len(), 2);
}

#[test]
fn exited_clients_are_removed() {
    let env = TestEnv::new(fake_domain());
    env.up();
    let (mut a, line_a) = spawn_client(&env, &["register"]);
    let (mut b, line_b) = spawn_client(&env, &["register"]);
    assert!(
        line_a.starts_with("registered ") && line_a.ends_with(" 2"),
        "{line_a}"
    );
    assert!(line_b.starts_with("registered "), "{line_b}");
    let mut pids = env.client_pids();
    pids.sort();
    let mut want = vec![a.id() as u64, b.id() as u64];
    want.sort();
    assert_eq!(pids, want);
    // a exits normally, b is killed.
    drop(a.stdin.take());
    a.wait().unwrap();
    b.kill().unwrap();
    b.wait().unwrap();
    wait_for("clients removed", WAIT, || env.client_pids().is_empty());
    assert!(env.log().contains("client exited"), "{}", env.log());
}

#[test]
fn claim_fork_checks_the_parent() {
    let env = TestEnv::new(fake_domain());
    env.up();
    let me = std::process::id().to_string();
    // The parent (this test process) is not registered yet.
    let (mut c, line) = spawn_client(&env, &["claim-fork", &me, "77"]);
    assert!(line.contains("not registered"), "{line}");
    drop(c.stdin.take());
    c.wait().unwrap();

    let (reply, _fds) = env.request(&register());
    assert!(matches!(reply, DaemonReply::Registered { .. }));
    let (mut c, line) = spawn_client(&env, &["claim-fork", &me, "77"]);
    assert!(line.starts_with("registered "), "{line}");
    assert!(env.client_pids().contains(&(c.id() as u64)));
    drop(c.stdin.take());
    c.wait().unwrap();
    // A token the domain does not know.
    let (mut c, line) = spawn_client(&env, &["claim-fork", &me, "5"]);
    assert!(line.contains("no pending shadow"), "{line}");
    drop(c.stdin.take());
    c.wait().unwrap();
    // A parent that never registered (nor exited lately).
    let (mut c, line) = spawn_client(&env, &["claim-fork", "1", "77"]);
    assert!(line.contains("not registered"), "{line}");
    drop(c.stdin.take());
    c.wait().unwrap();
    // A registered, live process that is not our parent.
    let (mut other, line) = spawn_client(&env, &["register"]);
    assert!(line.starts_with("registered "), "{line}");
    let other_pid = other.id().to_string();
    let (mut c, line) = spawn_client(&env, &["claim-fork", &other_pid, "77"]);
    assert!(line.contains("not a child"), "{line}");
    drop(c.stdin.take());
    c.wait().unwrap();
    drop(other.stdin.take());
    other.wait().unwrap();
}

#[test]
fn domain_crash_marks_state_pages_failed() {
    // Without automatic restarts the domain stays down (see the next test).
    let env = TestEnv::new(fake_domain());
    env.ok(&["up", "--no-restart"]);
    let (reply, fds) = env.request(&register());
    assert!(matches!(reply, DaemonReply::Registered { .. }));
    let state = StatePage::map(&fds[1], false).unwrap();
    assert_eq!(
        state
            .get()
            .status
            .load(std::sync::atomic::Ordering::Acquire),
        status::SERVING
    );
    let domain_pid = env.storage()["pid"].as_u64().unwrap() as i32;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(domain_pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    wait_for("domain disconnected", WAIT, || {
        env.storage()["state"] == "disconnected"
    });
    assert_eq!(
        state
            .get()
            .status
            .load(std::sync::atomic::Ordering::Acquire),
        status::FAILED
    );
    assert!(!state.get().serving());
    assert!(env.log().contains("FAILED"), "{}", env.log());
    let (mut c, line) = spawn_client(&env, &["register"]);
    assert!(line.contains("disconnected"), "{line}");
    drop(c.stdin.take());
    c.wait().unwrap();
    // up refuses to pretend all is well; down still works.
    let out = env.run(&["up"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("disconnected"));
    env.ok(&["down"]);
    assert!(!env.socket().exists());
}

#[test]
fn crashed_domain_is_restarted_and_clients_register_again() {
    let env = TestEnv::new(fake_domain());
    env.up();
    let (reply, fds) = env.request(&register());
    assert!(matches!(reply, DaemonReply::Registered { .. }));
    let state = StatePage::map(&fds[1], false).unwrap();
    let old_pid = env.storage()["pid"].as_u64().unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(old_pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    wait_for("domain restarted", WAIT, || {
        let s = env.storage();
        s["state"] == "connected" && s["restarts"] == 1
    });
    assert!(!state.get().serving(), "the old state page must say FAILED");
    let s = env.storage();
    assert_ne!(s["pid"].as_u64().unwrap(), old_pid);
    assert!(
        s["last_failure"].as_str().unwrap().contains("SIGKILL"),
        "{s}"
    );
    assert!(s["last_recovery_ms"].is_number(), "{s}");
    // The old registration was forgotten: registering again works and
    // hands out a fresh, serving state page.
    let (reply, fds) = env.request(&register());
    assert!(matches!(reply, DaemonReply::Registered { .. }), "{reply:?}");
    let fresh = StatePage::map(&fds[1], false).unwrap();
    assert!(fresh.get().serving());
    // A requested restart works the same way.
    env.ok(&["domain", "restart", "storage", "--wait"]);
    assert_eq!(env.storage()["restarts"], 2);
    assert!(!fresh.get().serving());
    env.ok(&["down"]);
}

#[test]
fn up_is_idempotent_and_one_daemon_per_runtime_dir() {
    let env = TestEnv::new(fake_domain());
    env.up();
    let pid = env.daemon_pid().unwrap();
    let out = env.ok(&["up"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
    assert_eq!(env.daemon_pid(), Some(pid));
    // A second daemon in the same runtime dir refuses to start.
    let out = env.run(&["daemon"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already runs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.storage()["state"], "connected");
    // A different storage mount needs `virtuos down` first.
    let out = env.run(&["up", "--storage-mount", "/elsewhere"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("virtuos down"));
    let other = env.dir.path().join("other-data");
    let out = env.run(&["up", "--data-dir", other.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("data dir"));
    // The data dir persists across down/up.
    std::fs::write(env.data().join("storage/keep.txt"), "x").unwrap();
    env.ok(&["down"]);
    env.up();
    assert!(env.data().join("storage/keep.txt").is_file());
    assert_ne!(env.daemon_pid(), Some(pid));
}

#[test]
fn up_reports_a_missing_or_dying_domain() {
    let env = TestEnv::new("/nonexistent/virtuos-domain".into());
    let out = env.run(&["up"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cargo build"), "{err}");

    let env = TestEnv::new("/bin/true".into());
    let out = env.run(&["up"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("before Ready"), "{err}");
    assert!(!env.socket().exists(), "a failed daemon leaves no socket");
}

#[test]
fn run_sets_the_environment_and_passes_exit_codes() {
    let mut env = TestEnv::new(fake_domain());
    // A stand-in preload library: ld.so ignores a non-ELF file (with a
    // warning), so the command runs natively.
    let lib = env.dir.path().join("libvirtuos.so");
    std::fs::File::create(&lib).unwrap().write_all(b"").unwrap();
    env.extra_env
        .push(("VIRTUOS_PRELOAD".into(), lib.display().to_string()));
    env.extra_env.push(("LD_PRELOAD".into(), "".into()));

    // run starts the daemon when needed.
    let out = env.run(&[
        "run",
        "--",
        "sh",
        "-c",
        "echo \"$LD_PRELOAD|$VIRTUOS_RUNTIME_DIR|$VIRTUOS_STORAGE_MOUNT\"",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        format!("{}|{}|/storage", lib.display(), env.runtime().display())
    );
    assert_eq!(env.storage()["state"], "connected");

    assert_eq!(
        env.run(&["run", "--", "sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    assert_eq!(
        env.run(&["run", "sh", "-c", "kill -9 $$"]).status.code(),
        Some(137)
    );
    let out = env.run(&["run", "--", "/nonexistent/cmd"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = env.run(&["run", "--storage-mount", "/other", "--", "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("virtuos down"));
}

#[test]
fn both_domains_and_no_network() {
    let env = TestEnv::new(fake_domain());
    env.up();
    let st = env.status();
    let names: Vec<&str> = st["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["storage", "network"]);
    assert_eq!(env.network()["state"], "connected");
    assert!(env.network()["address"].is_string());
    // Registered with both domains at once, with separate regions.
    let (r1, f1) = env.request(&register());
    let (r2, f2) = env.request(&ClientRequest::Register {
        domain: "network".into(),
    });
    assert!(matches!(r1, DaemonReply::Registered { .. }), "{r1:?}");
    assert!(matches!(r2, DaemonReply::Registered { .. }), "{r2:?}");
    let ino = |f: &rustix::fd::OwnedFd| rustix::fs::fstat(f).unwrap().st_ino;
    assert_ne!(ino(&f1[0]), ino(&f2[0]));
    let net = ClientRegion::map(&f2[0]).unwrap();
    let net_state = StatePage::map(&f2[1], false).unwrap();
    assert_eq!(ping(&net, &net_state), 0);
    env.ok(&["down"]);

    let env = TestEnv::new(fake_domain());
    env.ok(&["up", "--no-network"]);
    let st = env.status();
    assert_eq!(st["domains"].as_array().unwrap().len(), 1, "{st}");
    assert_eq!(env.network(), serde_json::Value::Null);
    let (reply, _) = env.request(&ClientRequest::Register {
        domain: "network".into(),
    });
    assert!(error_text(&reply).contains("unknown domain"));
    env.ok(&["down"]);
    // The config key does the same.
    let env = TestEnv::new(fake_domain());
    env.write_config("network = false\n");
    env.up();
    assert_eq!(env.status()["domains"].as_array().unwrap().len(), 1);
}
