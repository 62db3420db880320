//! The control socket: accept connections, one thread per connection, one
//! reply per request. A misbehaving connection only ends itself.

use super::clients::Peer;
use super::Daemon;
use anyhow::{Context, Result};
use rustix::fd::{AsFd, OwnedFd};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use virtuos_abi::control::{self, ClientRequest, DaemonReply};

/// Connections served at once; more are turned away.
const MAX_CONNECTIONS: usize = 512;
/// A client that does not take its reply within this long is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection idle for this long is closed (clients connect per request),
/// so idle connections cannot pile up to `MAX_CONNECTIONS`.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Bind the daemon's socket (replacing a stale one: we hold the pid lock).
pub fn listen(path: &Path) -> Result<OwnedFd> {
    let _ = std::fs::remove_file(path);
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let addr = SocketAddrUnix::new(path).context("socket path too long")?;
    rustix::net::bind(&fd, &addr).with_context(|| format!("cannot bind {}", path.display()))?;
    // Anyone may connect: SO_PEERCRED decides what a caller gets.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
    rustix::net::listen(&fd, 128)?;
    Ok(fd)
}

pub fn accept_loop(daemon: Arc<Daemon>, listener: OwnedFd) {
    loop {
        let conn = match rustix::net::accept_with(&listener, SocketFlags::CLOEXEC) {
            Ok(c) => c,
            Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::CONNABORTED) => continue,
            Err(e) => {
                tracing::error!("accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if ACTIVE.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("too many connections; refusing one");
            continue;
        }
        let d = daemon.clone();
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .spawn(move || {
                serve(&d, conn);
                ACTIVE.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
            tracing::error!("cannot start a connection thread: {e}");
        }
    }
}

fn peer_of(conn: &OwnedFd) -> io::Result<Peer> {
    let cred = rustix::net::sockopt::socket_peercred(conn)?;
    Ok(Peer {
        pid: cred.pid.as_raw_nonzero().get() as u32,
        uid: cred.uid.as_raw(),
        gid: cred.gid.as_raw(),
    })
}

fn serve(daemon: &Daemon, conn: OwnedFd) {
    let peer = match peer_of(&conn) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("connection without peer credentials: {e}");
            return;
        }
    };
    let _ = rustix::net::sockopt::set_socket_timeout(
        &conn,
        rustix::net::sockopt::Timeout::Send,
        Some(SEND_TIMEOUT),
    );
    let _ = rustix::net::sockopt::set_socket_timeout(
        &conn,
        rustix::net::sockopt::Timeout::Recv,
        Some(IDLE_TIMEOUT),
    );
    loop {
        let req = match control::recv::<ClientRequest>(conn.as_fd()) {
            Ok(Some((req, _fds))) => req,
            Ok(None) => return,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                tracing::warn!(pid = peer.pid, "bad request: {e}");
                let reply = DaemonReply::Error {
                    message: format!("bad request: {e}"),
                };
                let _ = control::send(conn.as_fd(), &reply, &[]);
                return;
            }
            Err(e) => {
                tracing::debug!(pid = peer.pid, "connection error: {e}");
                return;
            }
        };
        tracing::debug!(pid = peer.pid, ?req, "request");
        match daemon.handle(peer, req) {
            Ok(granted) => {
                let reply = DaemonReply::Registered {
                    client_id: granted.client_id,
                    storage_mount: daemon.settings.storage_mount.clone(),
                    region_offset: granted.offsets.0,
                    state_offset: granted.offsets.1,
                };
                if let Err(e) = control::send(conn.as_fd(), &reply, &granted.fds()) {
                    tracing::warn!(pid = peer.pid, "cannot send Registered: {e}");
                    return;
                }
            }
            Err(answer) => {
                let sent = control::send(conn.as_fd(), &answer.reply, &[]);
                if answer.shutdown {
                    drop(conn);
                    daemon.shutdown(&format!("requested by pid {}", peer.pid));
                }
                if let Err(e) = sent {
                    tracing::debug!(pid = peer.pid, "cannot send reply: {e}");
                    return;
                }
            }
        }
    }
}
