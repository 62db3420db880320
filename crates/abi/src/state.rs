//! The domain state page: written by the domain, read-only for clients.
//!
//! Clients read `idle_workers` after submitting to decide whether to ring the
//! doorbell (the paper's "idle flag"), and `status`/`heartbeat` to tell a live
//! domain from a dead or hung one.

use crate::layout::{ABI_VERSION, STATE_MAGIC};
use crate::mapping::AtomicsOnly;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Values of `DomainState::status`.
pub mod status {
    pub const STARTING: u32 = 0;
    pub const SERVING: u32 = 1;
    pub const STOPPING: u32 = 2;
    pub const FAILED: u32 = 3;
}

#[repr(C, align(64))]
pub struct DomainState {
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub status: AtomicU32,
    /// Bumped by the domain at least every `HEARTBEAT_PERIOD_MS`.
    pub heartbeat: AtomicU64,
    /// CPUs of the domain: bounds how many workers may spin at once.
    pub cpus: AtomicU32,
    _pad0: [AtomicU32; 9],
    /// Workers of this client's shadow asleep on the region doorbell.
    pub idle_workers: AtomicU32,
    /// Workers of this client's shadow, in all.
    pub workers: AtomicU32,
    /// Workers currently spinning on the submit list.
    pub spinning_workers: AtomicU32,
    _pad1: [AtomicU32; 13],
}

const _: () = assert!(core::mem::size_of::<DomainState>() <= crate::layout::STATE_SIZE);

// SAFETY: only atomics.
unsafe impl AtomicsOnly for DomainState {}

pub const HEARTBEAT_PERIOD_MS: u64 = 100;

/// The per-domain page the daemon watches for hangs (same layout as a
/// client's state page): the domain's main loop bumps `heartbeat` at least
/// every `DOMAIN_HEARTBEAT_PERIOD_MS`; only `heartbeat` and `magic` are used.
pub const DOMAIN_HEARTBEAT_PERIOD_MS: u64 = 200;

impl DomainState {
    /// Domain: initialise a fresh page.
    pub fn init(&self, cpus: u32) {
        self.version.store(ABI_VERSION, Ordering::Relaxed);
        self.cpus.store(cpus, Ordering::Relaxed);
        self.status.store(status::SERVING, Ordering::Relaxed);
        self.magic.store(STATE_MAGIC, Ordering::Release);
    }

    pub fn is_valid(&self) -> bool {
        self.magic.load(Ordering::Acquire) == STATE_MAGIC
            && self.version.load(Ordering::Relaxed) == ABI_VERSION
    }

    pub fn serving(&self) -> bool {
        self.status.load(Ordering::Acquire) == status::SERVING
    }
}
