//! Process lifecycle races (issue 9): forks of clients with state in the
//! storage domain while signals arrive and parents exit, and a client whose
//! shadow stops. `scripts/lifecycle-stress.sh` runs the same workload 100
//! times in a row (the documented long job, bench/RESULTS.md).

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};
use virtuos_e2e::{vm_backend, Case, Domain, STORAGE};

const WORKLOAD: &str = include_str!("../../../scripts/lifecycle-workload.sh");

/// Subshells, `| tail`, `$(...)`, background jobs whose SIGCHLDs land while
/// the shell prepares its next fork, dash's vfork, and a subshell that
/// exits while its background child claims its shadow: every child must
/// reach the domain (no "not registered", no "not a child", no EIO), and
/// nothing hangs. Stderr must be as empty as natively.
#[test]
fn fork_heavy_shell_never_loses_a_child() {
    Case::new(&format!(
        r#"
        cat > "$TMP/workload.sh" <<'WORKLOAD_EOF'
{WORKLOAD}
WORKLOAD_EOF
        ROOT="$ROOT/lifecycle" ROUNDS=8 bash "$TMP/workload.sh"
        ROOT="$ROOT/lifecycle" ROUNDS=8 sh -c 'cd "$ROOT" && bash "$TMP/workload.sh"'
        "#
    ))
    .needs(&["sh", "tail", "wc", "head", "seq", "sleep", "grep", "ls"])
    .native_contains("rounds: 8\nlog lines: 16\nlate lines: 8\nbackground files: 8")
    .compare_stderr()
    .check();
}

/// The process id of the shadow serving client process `pid`: the other
/// process that maps the client's request region (the same memfd: device
/// and inode; the daemon unmaps it after initialising it, and a shadow's
/// zygote and forked children never map their parent's regions).
fn shadow_of(pid: u32) -> Option<u32> {
    let region_of = |maps: &str| -> Option<String> {
        maps.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6 && f[5].starts_with("/memfd:virtuos-region-"))
                .then(|| format!("{} {} {}", f[3], f[4], f[5]))
        })
    };
    let region = region_of(&std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?)?;
    let mut found = None;
    for ent in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(other) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if other == pid {
            continue;
        }
        let Ok(m) = std::fs::read_to_string(format!("/proc/{other}/maps")) else {
            continue;
        };
        if m.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 6 && format!("{} {} {}", f[3], f[4], f[5]) == region
        }) {
            assert!(found.is_none(), "two processes besides {pid} map {region}");
            found = Some(other);
        }
    }
    found
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// A shadow that stops serving (here: SIGSTOP, as a deadlocked shadow
/// would) while its domain runs: the daemon sees its heartbeat stop and
/// fails the client's state page, so the call in flight returns EIO within
/// the hang timeout instead of hanging forever, and the client's next call
/// gets a fresh shadow. Process backend: on the vm backend the shadows live
/// in the guest, out of the host's reach (the daemon's check is the same
/// code for both: `daemon::recovery::check_shadows`).
#[test]
fn a_stopped_shadow_fails_the_call_instead_of_hanging() {
    if vm_backend() {
        eprintln!("process backend only: a VM domain's shadows cannot be stopped from the host");
        return;
    }
    let d = Domain::start();
    let w = d.run_virtuos(&format!("echo hello > {STORAGE}/f"));
    assert_eq!(w.code(), 0, "{}", w.stderr());
    let script = format!(
        r#"cd {STORAGE}; exec 3<f; echo "ready $$"; read -r go
        start=$SECONDS
        if read -r line <&3; then echo "read: $line"; else echo "read failed"; fi
        echo "waited $((SECONDS - start)) s"
        echo "again: $(cat {STORAGE}/f)""#
    );
    let mut cmd = d.command();
    cmd.args([
        "run",
        "--storage-mount",
        STORAGE,
        "--",
        "bash",
        "-c",
        &script,
    ])
    .env_remove("LD_PRELOAD")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("virtuos run");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("ready line");
    let pid: u32 = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let shadow = shadow_of(pid).unwrap_or_else(|| panic!("no shadow found for {pid}"));
    signal(shadow, "-STOP");
    let t0 = Instant::now();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("write go");
    let mut rest = String::new();
    let reader = std::thread::spawn(move || {
        let _ = std::io::Read::read_to_string(&mut out, &mut rest);
        rest
    });
    let deadline = Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t0.elapsed() > deadline {
            let _ = child.kill();
            signal(shadow, "-KILL");
            panic!("the client hung on its stopped shadow\n{}", d.diagnostics());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = t0.elapsed();
    signal(shadow, "-CONT");
    let rest = reader.join().expect("reader");
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err);
    let log = std::fs::read_to_string(d.runtime.join("virtuosd.log")).unwrap_or_default();
    assert!(status.success(), "{status}\n{rest}\n{err}");
    assert!(
        rest.contains("read failed"),
        "stdout:\n{rest}\nstderr:\n{err}"
    );
    assert!(
        rest.contains("again: hello"),
        "stdout:\n{rest}\nstderr:\n{err}"
    );
    assert!(
        log.contains("shadow is gone or stuck"),
        "the daemon did not report the shadow:\n{log}"
    );
    // hang timeout (3 s) + the watcher's tick + the client's 100 ms re-check.
    assert!(took < Duration::from_secs(20), "took {took:?}");
    // The domain still serves everyone else.
    let r = d.run(&["cat", &format!("{STORAGE}/f")]);
    assert_eq!(r.stdout(), "hello\n", "{}", r.stderr());
}
