//! Waking a client whose caller sleeps on a completed entry.
//!
//! Process backend: a futex wake on the entry's state word (the client maps
//! the same memfd). VM backend: the client is on the other side of the VM
//! boundary, where a guest futex wake means nothing, so the shadow writes
//! a `Bell::Complete` to the bell port (a virtio-serial port PID 1 opened
//! before forking the server) and the daemon does the wake on the host.

use rustix::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use virtuos_abi::slot::Bell;
use virtuos_abi::RequestEntry;

pub enum Waker {
    Futex,
    Bell {
        port: OwnedFd,
        slot: u8,
        failed: AtomicBool,
    },
}

impl Waker {
    pub fn bell(port: OwnedFd, slot: u8) -> Waker {
        Waker::Bell {
            port,
            slot,
            failed: AtomicBool::new(false),
        }
    }

    /// Publish the result of entry `index` and wake its caller if it sleeps.
    pub fn complete(&self, entry: &RequestEntry, index: u16, result: i64, extra: u64) {
        if !entry.complete(result, extra) {
            return;
        }
        match self {
            Waker::Futex => virtuos_abi::doorbell::wake(&entry.state, 1),
            Waker::Bell { port, slot, failed } => {
                let bell = Bell::Complete {
                    slot: *slot,
                    entry: index,
                }
                .encode();
                if let Err(e) = write_all(port, &bell) {
                    // The client still finds its result when it next looks
                    // (it wakes up every so often); say it once.
                    if !failed.swap(true, Ordering::Relaxed) {
                        tracing::warn!(slot, "cannot ring the host: {e}");
                    }
                }
            }
        }
    }

    /// The bell port, to hand down to a forked shadow.
    pub fn port(&self) -> Option<&OwnedFd> {
        match self {
            Waker::Futex => None,
            Waker::Bell { port, .. } => Some(port),
        }
    }
}

/// One bell is one `write` (virtio-serial keeps small writes whole).
fn write_all(fd: impl AsFd, bytes: &[u8]) -> rustix::io::Result<()> {
    loop {
        match rustix::io::write(&fd, bytes) {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(_) => return Err(rustix::io::Errno::IO),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}
