//! Port forwards into the network domain: a small userspace TCP proxy.
//!
//! For each `HOSTPORT:DOMAINPORT` the daemon listens on host
//! `127.0.0.1:HOSTPORT`; every accepted connection is relayed to the network
//! domain's address on the veth link (`169.254.199.2:DOMAINPORT` by
//! default), so programs outside reach a server running under virtuos.
//! Bounded: at most `MAX_CONNECTIONS` relayed connections per forward (two
//! threads each); more are closed at once. Half-closes are passed on
//! (`shutdown(SHUT_WR)`), an error on either side closes both.

use super::{lock, Daemon};
use crate::backend::Phase;
use crate::network::Forward;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use virtuos_abi::control::NETWORK;

/// Relayed connections per forward at once.
pub const MAX_CONNECTIONS: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const STACK: usize = 128 * 1024;

/// Bind a listener per forward, before anything starts: a port that
/// cannot be had fails the daemon's start (and so `virtuos up`).
pub fn bind_all(forwards: &[Forward]) -> anyhow::Result<Vec<(Forward, TcpListener)>> {
    forwards
        .iter()
        .map(|f| {
            let listen = SocketAddrV4::new(Ipv4Addr::LOCALHOST, f.host_port);
            TcpListener::bind(listen)
                .map(|l| (*f, l))
                .map_err(|e| anyhow::anyhow!("cannot forward {f}: cannot listen on {listen}: {e}"))
        })
        .collect()
}

/// Serve the bound forwards (shown in `status`).
pub fn start_all(daemon: &Arc<Daemon>, listeners: Vec<(Forward, TcpListener)>) {
    let Some(i) = daemon.find(NETWORK) else {
        return;
    };
    let Some(net) = daemon.served(i).domain.spec.net else {
        return;
    };
    for (f, l) in listeners {
        let listen = SocketAddrV4::new(Ipv4Addr::LOCALHOST, f.host_port);
        let target = SocketAddr::V4(SocketAddrV4::new(net.domain_addr(), f.domain_port));
        let mut shown = format!("{listen} -> {target}");
        let d = daemon.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("forward-{}", f.host_port))
            .spawn(move || accept_loop(&d, i, l, target));
        match spawned {
            Ok(_) => tracing::info!(%listen, %target, "port forward listening"),
            Err(e) => {
                tracing::error!(%listen, %target, "cannot start the port forward: {e}");
                shown.push_str(&format!(" (not listening: {e})"));
            }
        }
        lock(&daemon.forwards).push(shown);
    }
}

fn accept_loop(daemon: &Daemon, domain: usize, listener: TcpListener, target: SocketAddr) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let conn = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(%target, "port forward accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // Without the domain its address is not on the host link any more:
        // a connect would wander off through the default route.
        if daemon.served(domain).domain.phase() != Phase::Connected {
            tracing::debug!(%target, "network domain not connected; closing a forwarded connection");
            continue;
        }
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(%target, "too many forwarded connections; closing one");
            continue;
        }
        let a = active.clone();
        let spawned = std::thread::Builder::new()
            .name("forward-conn".into())
            .stack_size(STACK)
            .spawn(move || {
                if let Err(e) = relay(conn, target) {
                    tracing::debug!(%target, "forwarded connection: {e}");
                }
                a.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("cannot start a relay thread: {e}");
        }
    }
}

/// Relay one connection both ways until both directions ended.
fn relay(client: TcpStream, target: SocketAddr) -> io::Result<()> {
    let upstream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (c2, u2) = (client.try_clone()?, upstream.try_clone()?);
    let back = std::thread::Builder::new()
        .name("forward-back".into())
        .stack_size(STACK)
        .spawn(move || pipe(u2, c2))?;
    pipe(client, upstream);
    let _ = back.join();
    Ok(())
}

/// Copy `from` to `to` until end of file (then half-close `to`) or an
/// error (then close both, which also ends the other direction).
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    match io::copy(&mut from, &mut to) {
        Ok(_) => {
            let _ = to.shutdown(Shutdown::Write);
        }
        Err(_) => {
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        }
    }
}
