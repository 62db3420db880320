//! An ivshmem server for `ivshmem-doorbell` (QEMU docs/specs/ivshmem-spec.rst).
//!
//! On connect a client (QEMU) gets, as little-endian int64 messages on the
//! unix socket: the protocol version (0), its peer id, then -1 with the
//! shared-memory fd attached; then for every peer (the others and itself)
//! that peer's id once per vector, each with one eventfd attached. Writing
//! `(peer << 16) | vector` to BAR0's Doorbell register (offset 12) makes
//! QEMU signal that peer's eventfd; a signal on a guest's own eventfd
//! becomes its interrupt (MSI-X vector, or INTx with `msi=off`).
//!
//! The host itself is peer [`HOST_PEER`]: it has eventfds like a client but
//! no connection, so guests ring the host by writing `HOST_PEER << 16 | v`.

use crate::sys;
use anyhow::{Context, Result};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The host's peer id.
pub const HOST_PEER: u16 = 0;

struct Peer {
    id: u16,
    events: Vec<OwnedFd>,
    conn: UnixStream,
}

struct Shared {
    peers: Vec<Peer>,
    next_id: u16,
}

/// A running server (accept loop in a thread).
pub struct IvshmemServer {
    path: PathBuf,
    host_events: Vec<OwnedFd>,
    shared: Arc<Mutex<Shared>>,
}

impl IvshmemServer {
    /// Listen on `path`, serving `shm` with `vectors` eventfds per peer.
    pub fn start(path: &Path, shm: File, vectors: u32) -> Result<IvshmemServer> {
        let _ = std::fs::remove_file(path);
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        let host_events = (0..vectors)
            .map(|_| sys::eventfd())
            .collect::<Result<Vec<_>>>()?;
        let host_raw: Vec<RawFd> = host_events.iter().map(|e| e.as_raw_fd()).collect();
        let shared = Arc::new(Mutex::new(Shared {
            peers: Vec::new(),
            next_id: HOST_PEER + 1,
        }));
        let s2 = shared.clone();
        std::thread::Builder::new()
            .name("ivshmem-server".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { break };
                    if let Err(e) = accept(&s2, conn, &shm, &host_raw, vectors) {
                        tracing::warn!("ivshmem server: {e:#}");
                    }
                }
            })?;
        Ok(IvshmemServer {
            path: path.into(),
            host_events,
            shared,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.path
    }

    /// The eventfd guests signal when they ring the host on `vector`.
    pub fn host_event(&self, vector: u32) -> RawFd {
        self.host_events[vector as usize].as_raw_fd()
    }

    /// Ids of the connected guests.
    pub fn peers(&self) -> Vec<u16> {
        self.shared
            .lock()
            .unwrap()
            .peers
            .iter()
            .map(|p| p.id)
            .collect()
    }

    /// Interrupt guest `peer` on `vector`.
    pub fn ring(&self, peer: u16, vector: u32) -> Result<()> {
        let g = self.shared.lock().unwrap();
        let p = g
            .peers
            .iter()
            .find(|p| p.id == peer)
            .context("no such peer")?;
        sys::eventfd_signal(p.events[vector as usize].as_raw_fd())?;
        Ok(())
    }
}

impl Drop for IvshmemServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept(
    shared: &Mutex<Shared>,
    conn: UnixStream,
    shm: &File,
    host: &[RawFd],
    vectors: u32,
) -> Result<()> {
    let mut g = shared.lock().unwrap();
    let id = g.next_id;
    g.next_id = g.next_id.checked_add(1).context("out of peer ids")?;
    let events = (0..vectors)
        .map(|_| sys::eventfd())
        .collect::<Result<Vec<_>>>()?;
    sys::send_i64(&conn, 0, None)?; // protocol version
    sys::send_i64(&conn, id as i64, None)?;
    sys::send_i64(&conn, -1, Some(shm.as_raw_fd()))?;
    // The host peer, then the other guests, to the new one.
    for &fd in host {
        sys::send_i64(&conn, HOST_PEER as i64, Some(fd))?;
    }
    for p in &g.peers {
        for e in &p.events {
            sys::send_i64(&conn, p.id as i64, Some(e.as_raw_fd()))?;
        }
    }
    // The new one to the others.
    for p in &g.peers {
        for e in &events {
            let _ = sys::send_i64(&p.conn, id as i64, Some(e.as_raw_fd()));
        }
    }
    // Its own vectors last.
    for e in &events {
        sys::send_i64(&conn, id as i64, Some(e.as_raw_fd()))?;
    }
    g.peers.push(Peer { id, events, conn });
    Ok(())
}
