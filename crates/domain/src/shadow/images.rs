//! The program images this shadow's client runs (ETXTBSY, see
//! `crate::images`): `OP_EXEC_CLAIM`, `OP_EXEC_ABORT`, `OP_EXEC_DONE`.
//!
//! Each image the shadow registers is pinned by a descriptor in the
//! shadow's own range (a duplicate of the client's descriptor, which the
//! client cannot reach), so its inode number cannot be reused by another
//! file while the entry exists. A forked shadow gets the pins of the image
//! its client's parent runs (the zygote's child keeps them, `zygote.rs`)
//! and registers them as its own (`adopt`).
//!
//! The exec side (ETXTBSY for a file open for writing) is a read-lease
//! probe: `F_SETLEASE F_RDLCK` fails with EAGAIN exactly when the file is
//! open for writing, and is released at once. Setting a lease on a file
//! one does not own needs CAP_LEASE, which the worker raises for that
//! call only. A probe that cannot be made (no privileges, a file system
//! without leases) lets the exec go on.

use super::Shadow;
use crate::images;
use rustix::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// A registered image and the descriptor that pins it.
pub(super) struct Held {
    handle: Option<images::Handle>,
    pin: OwnedFd,
}

impl Held {
    /// Register the file `pin` names (for this process).
    fn register(pin: OwnedFd) -> Held {
        let handle = match rustix::fs::fstat(&pin) {
            Ok(st) => images::register(st.st_dev, st.st_ino),
            Err(_) => None,
        };
        tracing::debug!(pin = pin.as_raw_fd(), ?handle, "image registered");
        Held { handle, pin }
    }

    fn drop_entry(self) {
        if let Some(h) = self.handle {
            images::unregister(h);
        }
        drop(self.pin);
    }
}

/// What a shadow runs: the image of the client's current program and the
/// one an exec in progress claimed.
#[derive(Default)]
pub(super) struct Running {
    current: Vec<Held>,
    pending: Option<Held>,
}

impl Running {
    /// Raw numbers of the pins of the current image (for a fork).
    pub(super) fn current_pins(&self) -> Vec<RawFd> {
        self.current.iter().map(|h| h.pin.as_raw_fd()).collect()
    }
}

fn neg(e: rustix::io::Errno) -> i64 {
    -(e.raw_os_error() as i64)
}

/// Whether the file `fd` names is open for writing anywhere (a read lease
/// cannot be had). None: the probe could not tell.
fn open_for_writing(fd: BorrowedFd<'_>) -> Option<bool> {
    const CAP_LEASE: u32 = 28;
    crate::sys::with_effective_cap(CAP_LEASE, || {
        // SAFETY: F_SETLEASE takes an integer; `fd` is a descriptor of ours
        // (the client's, opened read-only by the library for this exec).
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) };
        if r == 0 {
            // SAFETY: as above; releases the lease just taken.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
            return Some(false);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => Some(true),
            _ => None,
        }
    })
}

impl Shadow {
    fn images(&self) -> std::sync::MutexGuard<'_, Running> {
        self.images.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `OP_EXEC_CLAIM` of client descriptor `fd`.
    pub(super) fn claim_image(&self, fd: RawFd, image: bool) -> i64 {
        // SAFETY: `fd` is below the client limit (checked by the caller);
        // it is only used for the duration of this call, and an unused
        // number only makes the calls below fail with EBADF.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let st = match rustix::fs::fstat(fd) {
            Ok(st) => st,
            Err(e) => return neg(e),
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return 0;
        }
        if image {
            let base = self.limits.base_fd();
            let pin = match super::with_high_fds(|| Ok(rustix::io::fcntl_dupfd_cloexec(fd, base)?))
            {
                Ok(p) => p,
                Err(e) => return -(e.raw_os_error().unwrap_or(libc::EMFILE) as i64),
            };
            // Registered before the probe: an open for writing that
            // races with this exec sees the entry or is seen by the probe.
            let held = Held::register(pin);
            if let Some(old) = self.images().pending.replace(held) {
                old.drop_entry();
            }
        }
        if open_for_writing(fd) == Some(true) {
            if image {
                self.abort_image();
            }
            return -(libc::ETXTBSY as i64);
        }
        0
    }

    /// `OP_EXEC_ABORT`.
    pub(super) fn abort_image(&self) -> i64 {
        if let Some(p) = self.images().pending.take() {
            p.drop_entry();
        }
        0
    }

    /// `OP_EXEC_DONE`.
    pub(super) fn image_done(&self, exec: bool) -> i64 {
        let mut r = self.images();
        let pending = r.pending.take();
        for old in r.current.drain(..) {
            old.drop_entry();
        }
        match pending {
            Some(p) if exec => r.current.push(p),
            Some(p) => p.drop_entry(),
            None => {}
        }
        if !exec {
            // The client is exiting: its descriptors close now, as
            // natively (the shadow's own range stays).
            let last = self.limits.base.saturating_sub(1);
            // SAFETY: close_range takes integers; it closes the client's
            // descriptors only, which no one uses once the client exits.
            unsafe { libc::syscall(libc::SYS_close_range, 0u32, last as u32, 0u32) };
        }
        tracing::debug!(
            client = self.client_id,
            exec,
            current = r.current.len(),
            "exec done"
        );
        i64::from(!r.current.is_empty())
    }

    /// A forked shadow: register the images of the parent's client, whose
    /// pins it inherited.
    pub(super) fn adopt_images(&self, pins: Vec<OwnedFd>) {
        let mut r = self.images();
        for pin in pins {
            r.current.push(Held::register(pin));
        }
    }
}
