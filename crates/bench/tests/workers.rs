//! The workers run natively with tiny sizes and print one parsable JSON
//! line. No timing is asserted: benchmarks are not tests.

use std::path::PathBuf;
use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_virtuos-bench"))
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("virtuos-bench-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run `virtuos-bench worker ARGS`, check the exit status and parse stdout.
fn worker(args: &[&str]) -> serde_json::Value {
    let out = bench().arg("worker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "worker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stdout: {stdout:?}");
    serde_json::from_str(lines[0]).unwrap()
}

fn samples(v: &serde_json::Value, reps: usize) -> Vec<f64> {
    let s: Vec<f64> = v["samples"]
        .as_array()
        .expect("samples array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect();
    assert_eq!(s.len(), reps);
    assert!(s.iter().all(|x| x.is_finite() && *x > 0.0), "{s:?}");
    s
}

#[test]
fn fcntl_worker_prints_json() {
    let d = tmpdir("fcntl");
    let path = d.join("f");
    let v = worker(&[
        "fcntl",
        "--path",
        path.to_str().unwrap(),
        "--iters",
        "200",
        "--reps",
        "3",
    ]);
    assert_eq!(v["bench"], "fcntl");
    assert_eq!(v["unit"], "ns/call");
    assert_eq!(v["info"]["iters"], 200);
    samples(&v, 3);
    assert!(path.exists(), "fcntl worker creates its file");
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn write_worker_prints_json_and_writes_total() {
    let d = tmpdir("write");
    let path = d.join("w");
    let v = worker(&[
        "write",
        "--path",
        path.to_str().unwrap(),
        "--total",
        "64k",
        "--chunk",
        "1000",
        "--reps",
        "2",
    ]);
    assert_eq!(v["bench"], "write");
    assert_eq!(v["unit"], "MB/s");
    assert_eq!(v["info"]["total"], 65536);
    assert_eq!(v["info"]["chunk"], 1000);
    samples(&v, 2);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        65536,
        "last rep wrote all bytes"
    );
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn pingpong_worker_prints_json() {
    let v = worker(&["pingpong", "--iters", "1000", "--reps", "2"]);
    assert_eq!(v["bench"], "pingpong");
    assert_eq!(v["unit"], "ns/roundtrip");
    samples(&v, 2);
}

#[test]
fn missing_virtuos_binary_is_a_clear_error() {
    let out = bench()
        .args([
            "fcntl",
            "--iters",
            "10",
            "--reps",
            "1",
            "--floor-iters",
            "10",
        ])
        .args(["--virtuos", "/nonexistent/virtuos"])
        .arg("--tmp")
        .arg(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(!out.status.success(), "must fail before measuring");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cargo build --release --workspace first"),
        "{stderr}"
    );
    assert!(stderr.contains("/nonexistent/virtuos"), "{stderr}");
}

#[test]
fn native_only_all_writes_report_and_plots() {
    let d = tmpdir("all");
    let out = bench()
        .args([
            "all",
            "--native-only",
            "--fcntl-iters",
            "100",
            "--fcntl-reps",
            "2",
        ])
        .args([
            "--floor-iters",
            "100",
            "--chunks",
            "512,4k",
            "--total",
            "16k",
        ])
        .args([
            "--write-reps",
            "2",
            "--ping-iters",
            "10",
            "--no-net",
            "--out",
        ])
        .arg(&d)
        .arg("--tmp")
        .arg(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "RESULTS.md",
        "results.json",
        "fcntl_spin.svg",
        "fcntl_spin.png",
        "write_throughput.svg",
        "write_throughput.png",
    ] {
        let len = std::fs::metadata(d.join(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{f} missing or empty");
    }
    let md = std::fs::read_to_string(d.join("RESULTS.md")).unwrap();
    assert!(md.contains("| 512 B |"), "{md}");
    let js: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("results.json")).unwrap()).unwrap();
    assert_eq!(js["write"]["points"].as_array().unwrap().len(), 2);

    // `render` regenerates the outputs from results.json alone.
    let again = d.join("again");
    let out = bench()
        .arg("render")
        .arg("--json")
        .arg(d.join("results.json"))
        .arg("--out")
        .arg(&again)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md2 = std::fs::read_to_string(again.join("RESULTS.md")).unwrap();
    assert_eq!(md2, md, "render reproduces RESULTS.md");
    assert!(again.join("write_throughput.png").exists());
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn tcp_lat_worker_round_trips_with_its_peer() {
    let v = worker(&["tcp-lat", "--iters", "200", "--reps", "3"]);
    assert_eq!(v["bench"], "tcp-lat");
    assert_eq!(v["unit"], "ns/roundtrip");
    assert_eq!(v["info"]["iters"], 200);
    let s = samples(&v, 3);
    // A TCP round trip through the kernel takes well over a nanosecond and
    // (with TCP_NODELAY, on loopback) well under the 40 ms delayed-ACK stall.
    assert!(s.iter().all(|&ns| ns > 1.0 && ns < 40e6), "{s:?}");
}

#[test]
fn tcp_stream_worker_receives_the_total() {
    let v = worker(&[
        "tcp-stream",
        "--total",
        "256k",
        "--chunk",
        "1000",
        "--reps",
        "2",
    ]);
    assert_eq!(v["bench"], "tcp-stream");
    assert_eq!(v["unit"], "MB/s");
    assert_eq!(v["info"]["total"], 262144);
    assert_eq!(v["info"]["chunk"], 1000);
    samples(&v, 2);
}

#[test]
fn tcp_peer_alone_fails_cleanly_without_a_listener() {
    // Nothing listens on port 1 of 127.0.0.1: a clear error, not a hang.
    let out = bench()
        .args(["worker", "tcp-peer", "--connect", "127.0.0.1:1", "echo"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("connect 127.0.0.1:1"), "{stderr}");
}

#[test]
fn native_only_net_merges_into_results_json() {
    let d = tmpdir("net");
    // An existing results.json from `all`: its sections must survive.
    let out = bench()
        .args([
            "all",
            "--native-only",
            "--fcntl-iters",
            "100",
            "--fcntl-reps",
            "2",
        ])
        .args(["--floor-iters", "100", "--chunks", "4k", "--total", "16k"])
        .args([
            "--write-reps",
            "2",
            "--ping-iters",
            "10",
            "--no-net",
            "--out",
        ])
        .arg(&d)
        .arg("--tmp")
        .arg(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bench()
        .args(["net", "--native-only", "--net", "lat,stream"])
        .args(["--lat-iters", "100", "--lat-reps", "2"])
        .args(["--stream-chunks", "512,4k", "--stream-total", "64k"])
        .args(["--stream-reps", "2", "--rounds", "1", "--out"])
        .arg(&d)
        .arg("--tmp")
        .arg(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let js: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("results.json")).unwrap()).unwrap();
    assert_eq!(js["write"]["points"].as_array().unwrap().len(), 1, "kept");
    let net = &js["net"];
    assert!(net["command"]
        .as_str()
        .unwrap()
        .starts_with("target/release/virtuos-bench net --net lat,stream "));
    assert!(net["tcp_lat"]["native"]["median"].as_f64().unwrap() > 0.0);
    let pts = net["tcp_lat"]["points"].as_array().unwrap();
    assert_eq!(pts.len(), 2, "default and unbounded");
    assert_eq!(pts[1]["spin"], u32::MAX);
    assert!(pts[0]["forwarded"]["error"]
        .as_str()
        .unwrap()
        .contains("--native-only"));
    let stream = net["tcp_stream"]["points"].as_array().unwrap();
    assert_eq!(stream.len(), 2);
    assert_eq!(stream[1]["chunk"], 4096);
    assert!(net["http"].is_null(), "not selected");
    let md = std::fs::read_to_string(d.join("RESULTS.md")).unwrap();
    for want in [
        "## Write throughput",
        "## Network domain vs native",
        "| native (host loopback) |",
        "| virtuos, unbounded (VIRTUOS_SPIN=4294967295) | not measured |",
        "| 4 KiB |",
    ] {
        assert!(md.contains(want), "missing {want:?}:\n{md}");
    }
    for f in [
        "tcp_latency.svg",
        "tcp_latency.png",
        "tcp_stream_throughput.png",
    ] {
        let len = std::fs::metadata(d.join(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{f} missing or empty");
    }
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn fork_worker_times_batches() {
    let d = tmpdir("fork");
    let path = d.join("f");
    let v = worker(&[
        "fork",
        "--path",
        path.to_str().unwrap(),
        "--n",
        "4",
        "--reps",
        "3",
    ]);
    assert_eq!(v["bench"], "fork");
    assert_eq!(v["unit"], "ns/batch");
    assert_eq!(v["info"]["n"], 4);
    assert!(
        v["info"]["cleanup_ns"].is_null(),
        "no daemon, no cleanup wait"
    );
    let s = samples(&v, 3);
    // Four forks and waits take more than a microsecond and (natively)
    // far less than ten seconds.
    assert!(s.iter().all(|&ns| ns > 1e3 && ns < 1e10), "{s:?}");
    assert!(path.exists(), "the worker holds its file open");
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn native_only_vm_merges_fork_into_results_json() {
    let d = tmpdir("vm");
    // An earlier results.json whose sections must survive.
    let out = bench()
        .args(["net", "--native-only", "--net", "lat"])
        .args([
            "--lat-iters",
            "100",
            "--lat-reps",
            "2",
            "--rounds",
            "1",
            "--out",
        ])
        .arg(&d)
        .arg("--tmp")
        .arg(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bench()
        .args(["vm", "--native-only", "--vm", "fork,fcntl"])
        .args(["--fork-sizes", "1,3", "--fork-reps", "2"])
        .args([
            "--fcntl-iters",
            "100",
            "--fcntl-reps",
            "2",
            "--floor-iters",
            "100",
        ])
        .args(["--rounds", "1", "--out"])
        .arg(&d)
        .arg("--tmp")
        .arg(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let js: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("results.json")).unwrap()).unwrap();
    assert!(
        js["net"]["tcp_lat"]["native"]["median"].as_f64().unwrap() > 0.0,
        "kept"
    );
    let vm = &js["vm"];
    assert!(vm["command"]
        .as_str()
        .unwrap()
        .starts_with("target/release/virtuos-bench vm --vm fork,fcntl "));
    assert!(vm["launch"].is_null(), "launch needs the stack");
    assert!(vm["write"].is_null(), "not selected");
    let pts = vm["fork"]["points"].as_array().unwrap();
    assert_eq!(pts.len(), 2);
    assert_eq!(pts[1]["n"], 3);
    assert!(pts[1]["native"]["median"].as_f64().unwrap() > 0.0);
    assert!(pts[0]["vm"]["error"]
        .as_str()
        .unwrap()
        .contains("--native-only"));
    let md = std::fs::read_to_string(d.join("RESULTS.md")).unwrap();
    for want in [
        "## Network domain vs native",
        "## VM backend (TCG)",
        "### Process creation (Figure 5)",
        "| 3 | ",
        "### fcntl(F_GETFL) latency on the VM backend",
    ] {
        assert!(md.contains(want), "missing {want:?}:\n{md}");
    }
    for f in ["fork_batch.svg", "fork_batch.png"] {
        let len = std::fs::metadata(d.join(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{f} missing or empty");
    }
    std::fs::remove_dir_all(d).unwrap();
}
