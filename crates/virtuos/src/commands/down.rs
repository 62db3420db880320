//! `virtuos down`: stop the daemon (and with it the domains).

use crate::client;
use crate::paths::Runtime;
use anyhow::{bail, Result};
use std::time::{Duration, Instant};
use virtuos_abi::control::{ClientRequest, DaemonReply};

const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Returns a human message on success.
pub fn stop(rt: &Runtime) -> Result<String> {
    let mut pid = client::live_pid_in(&rt.pid_file());
    match client::connect(&rt.socket()) {
        Ok(sock) => {
            if let DaemonReply::Status(s) = client::request(&sock, &ClientRequest::Status)?.0 {
                pid = Some(s.daemon_pid);
            }
            match client::request(&sock, &ClientRequest::Shutdown)?.0 {
                DaemonReply::Ok => {}
                DaemonReply::Error { message } => bail!("virtuosd refused to stop: {message}"),
                other => bail!("unexpected answer from virtuosd: {other:?}"),
            }
        }
        Err(e) if client::not_listening(&e) => match pid {
            None => return Ok(format!("virtuosd is not running (in {})", rt.dir.display())),
            Some(p) => {
                // Alive but not listening (starting or wedged): ask it by signal.
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(p as i32).expect("pid > 0"),
                    rustix::process::Signal::TERM,
                );
            }
        },
        Err(e) => bail!("cannot connect to {}: {e}", rt.socket().display()),
    }
    let started = Instant::now();
    if let Some(p) = pid {
        while client::pid_alive(p) {
            if started.elapsed() > STOP_TIMEOUT {
                bail!("virtuosd (pid {p}) did not stop within {STOP_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The daemon removes its socket before exiting; a leftover is stale.
    let _ = std::fs::remove_file(rt.socket());
    Ok(match pid {
        Some(p) => format!("virtuosd (pid {p}) stopped"),
        None => "virtuosd stopped".to_string(),
    })
}

pub fn cmd(rt: &Runtime) -> Result<()> {
    eprintln!("{}", stop(rt)?);
    Ok(())
}
