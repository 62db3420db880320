//! `virtuos status [--json]`.

use crate::client;
use crate::info::DaemonInfo;
use crate::paths::Runtime;
use anyhow::Result;

/// Exit status when the daemon does not run (as `systemctl status`).
pub const NOT_RUNNING: i32 = 3;

pub fn cmd(rt: &Runtime, json: bool) -> Result<i32> {
    let report = client::status(rt)?;
    let info = DaemonInfo::read(&rt.info_file());
    let Some(report) = report else {
        if json {
            let v = serde_json::json!({
                "running": false,
                "runtime_dir": rt.dir,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            println!("virtuosd is not running (runtime dir {})", rt.dir.display());
        }
        return Ok(NOT_RUNNING);
    };
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["running"] = true.into();
        v["runtime_dir"] = serde_json::to_value(&rt.dir)?;
        if let Some(i) = &info {
            v["storage_mount"] = i.storage_mount.clone().into();
            v["data_dir"] = serde_json::to_value(&i.data_dir)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!(
        "virtuosd: running (pid {}), runtime dir {}",
        report.daemon_pid,
        rt.dir.display()
    );
    for d in &report.domains {
        let pid = d.pid.map_or("-".to_string(), |p| p.to_string());
        println!(
            "domain {}: {} (backend {}, pid {pid})",
            d.name, d.state, d.backend
        );
        if let Some(e) = &d.error {
            println!("  error:   {e}");
        }
        if d.restarts > 0 || d.last_failure.is_some() {
            println!(
                "  restarts: {} (last: detection to ready {} ms, launch to ready {} ms)",
                d.restarts,
                d.last_recovery_ms.map_or("-".into(), |v| v.to_string()),
                d.last_launch_ms.map_or("-".into(), |v| v.to_string()),
            );
            if let Some(f) = &d.last_failure {
                println!("  failure: {f}");
            }
        }
        if let Some(a) = &d.accel {
            let boot = d
                .boot_ms
                .map_or("-".into(), |ms| format!("{:.2} s", ms as f64 / 1000.0));
            println!(
                "  vm:      accel {a}, boot {boot}, memory {} MiB",
                d.memory_mib.unwrap_or(0)
            );
        }
        if let Some(c) = &d.console {
            println!("  console: {c}");
        }
        if let Some(a) = &d.address {
            println!("  address: {a}");
        }
        if let Some(h) = &d.host_link {
            println!("  host:    {h}");
        }
        for f in &d.forwards {
            println!("  forward: {f}");
        }
        if !d.data.is_empty() {
            if let Some(i) = &info {
                println!("  mount:   {}", i.storage_mount);
            }
            println!("  data:    {}", d.data);
        }
        let pids: Vec<String> = d.clients.iter().map(|c| c.pid.to_string()).collect();
        if pids.is_empty() {
            println!("  clients: none");
        } else {
            println!("  clients: {} (pid {})", pids.len(), pids.join(", "));
        }
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    Ok(0)
}
