//! `virtuos domain crash|restart NAME`: fault injection and recovery.

use crate::cli::{DomainAction, FaultArg};
use crate::client;
use crate::paths::Runtime;
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};
use virtuos_abi::control::{ClientRequest, DaemonReply, DomainStatus};

/// How long `--wait` waits for the domain to serve again.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

fn domain_status(rt: &Runtime, name: &str) -> Result<DomainStatus> {
    let report = client::status(rt)?
        .with_context(|| format!("virtuosd is not running (in {})", rt.dir.display()))?;
    report
        .domains
        .into_iter()
        .find(|d| d.name == name)
        .with_context(|| format!("the daemon runs no {name} domain"))
}

fn send(rt: &Runtime, req: &ClientRequest) -> Result<()> {
    let sock = client::connect(&rt.socket())
        .with_context(|| format!("cannot connect to {}", rt.socket().display()))?;
    match client::request(&sock, req)?.0 {
        DaemonReply::Ok => Ok(()),
        DaemonReply::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from virtuosd: {other:?}"),
    }
}

/// Wait until `name` has restarted more than `before` times and serves.
fn wait_restarted(rt: &Runtime, name: &str, before: u32, since: Instant) -> Result<DomainStatus> {
    loop {
        let d = domain_status(rt, name)?;
        if d.restarts > before && d.state == "connected" {
            return Ok(d);
        }
        if since.elapsed() > WAIT_LIMIT {
            bail!(
                "the {name} domain did not come back within {WAIT_LIMIT:?} (state {}{})",
                d.state,
                d.error.map(|e| format!(": {e}")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn report(d: &DomainStatus, since: Instant) {
    println!(
        "{}: serving again after {:.0} ms (detection to ready {} ms, launch to ready {} ms, restarts {})",
        d.name,
        since.elapsed().as_secs_f64() * 1000.0,
        d.last_recovery_ms.map_or("-".into(), |v| v.to_string()),
        d.last_launch_ms.map_or("-".into(), |v| v.to_string()),
        d.restarts
    );
    if let Some(f) = &d.last_failure {
        println!("  detected: {f}");
    }
}

pub fn cmd(rt: &Runtime, action: &DomainAction) -> Result<i32> {
    match action {
        DomainAction::Crash { name, how, wait } => {
            let before = domain_status(rt, name)?.restarts;
            let since = Instant::now();
            send(
                rt,
                &ClientRequest::Crash {
                    domain: name.clone(),
                    how: (*how).into(),
                },
            )?;
            eprintln!("injected {} into the {name} domain", how_name(*how));
            if *wait {
                report(&wait_restarted(rt, name, before, since)?, since);
            }
        }
        DomainAction::Restart { name, wait } => {
            let before = domain_status(rt, name)?.restarts;
            let since = Instant::now();
            send(
                rt,
                &ClientRequest::Restart {
                    domain: name.clone(),
                },
            )?;
            if *wait {
                report(&wait_restarted(rt, name, before, since)?, since);
            }
        }
    }
    Ok(0)
}

fn how_name(how: FaultArg) -> &'static str {
    virtuos_abi::control::Fault::from(how).as_str()
}
