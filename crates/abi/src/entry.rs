//! One forwarded call: a 64-byte request entry in shared memory.
//!
//! Layout (all fields atomics, because the peer writes them concurrently and
//! may be hostile):
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..4 | `state` | phase in the low byte, flag bits above it |
//! | 4..6 | `next` | submit-list link: index + 1, 0 = end |
//! | 6..8 | `chunk` | data chunk of this call: index + 1, 0 = none |
//! | 8..10 | `op` | x86_64 syscall number or a virtual op (`ops`) |
//! | 10..12 | `seq` | per-thread sequence number (with `task`: the call's nonce) |
//! | 12..16 | `task` | client thread id |
//! | 16..64 | `args` | six arguments; `args[0]` holds the result once DONE |

use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};

/// Lifecycle of an entry, in the low byte of `state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Phase {
    /// Owned by the client (on its free list or being filled).
    Free = 0,
    /// On the submit list, waiting for a domain worker.
    Submitted = 1,
    /// A domain worker is executing it.
    Claimed = 2,
    /// Result is in `args[0]`; the client may read it.
    Done = 3,
}

/// Mask of the phase byte in `state`.
pub const PHASE_MASK: u32 = 0xff;
/// Set by a waiting client that stopped spinning and sleeps on `state`:
/// the domain must wake it on completion.
pub const FLAG_SLEEPING: u32 = 1 << 8;
/// Set by the client when a signal asks the call to be interrupted.
pub const FLAG_INTERRUPT: u32 = 1 << 9;

impl Phase {
    pub fn from_state(state: u32) -> Option<Phase> {
        match state & PHASE_MASK {
            0 => Some(Phase::Free),
            1 => Some(Phase::Submitted),
            2 => Some(Phase::Claimed),
            3 => Some(Phase::Done),
            _ => None,
        }
    }
}

#[repr(C, align(64))]
pub struct RequestEntry {
    pub state: AtomicU32,
    pub next: AtomicU16,
    pub chunk: AtomicU16,
    pub op: AtomicU16,
    pub seq: AtomicU16,
    pub task: AtomicU32,
    pub args: [AtomicU64; 6],
}

const _: () = assert!(core::mem::size_of::<RequestEntry>() == crate::layout::ENTRY_SIZE);

/// A snapshot of a request as the domain read it (copied out of shared
/// memory once, so the client cannot change it under the worker's feet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub op: u16,
    pub seq: u16,
    pub task: u32,
    /// Chunk index (already decoded from index + 1), if any. Not yet
    /// range-checked: see `ClientRegion::chunk_ptr`.
    pub chunk: Option<u16>,
    pub args: [u64; 6],
}

impl RequestEntry {
    /// Client: fill a free entry before submitting it.
    pub fn fill(&self, op: u16, seq: u16, task: u32, chunk: Option<u16>, args: [u64; 6]) {
        self.op.store(op, Ordering::Relaxed);
        self.seq.store(seq, Ordering::Relaxed);
        self.task.store(task, Ordering::Relaxed);
        self.chunk
            .store(chunk.map_or(0, |c| c + 1), Ordering::Relaxed);
        for (slot, value) in self.args.iter().zip(args) {
            slot.store(value, Ordering::Relaxed);
        }
        // Release: the fields above are visible before the phase change.
        self.state.store(Phase::Submitted as u32, Ordering::Release);
    }

    /// Domain: take a submitted entry. Fails if the entry is not in the
    /// Submitted phase (a duplicate on the list, or a hostile client).
    pub fn claim(&self) -> Option<Request> {
        // The client may set flag bits (SLEEPING, INTERRUPT) concurrently, so
        // a failed CAS is retried as long as the phase is still Submitted;
        // the retry bound only matters against a hostile client.
        let mut cur = self.state.load(Ordering::Acquire);
        let mut claimed_ok = false;
        for _ in 0..crate::list::MAX_CAS_RETRIES {
            if cur & PHASE_MASK != Phase::Submitted as u32 {
                return None;
            }
            let claimed = (cur & !PHASE_MASK) | Phase::Claimed as u32;
            match self.state.compare_exchange_weak(
                cur,
                claimed,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    claimed_ok = true;
                    break;
                }
                Err(actual) => cur = actual,
            }
        }
        if !claimed_ok {
            return None;
        }
        let chunk = self.chunk.load(Ordering::Relaxed);
        Some(Request {
            op: self.op.load(Ordering::Relaxed),
            seq: self.seq.load(Ordering::Relaxed),
            task: self.task.load(Ordering::Relaxed),
            chunk: chunk.checked_sub(1),
            args: core::array::from_fn(|i| self.args[i].load(Ordering::Relaxed)),
        })
    }

    /// Domain: publish the result. Returns true when the client had gone to
    /// sleep and must be woken (the only case in which the domain rings).
    pub fn complete(&self, result: i64, extra: u64) -> bool {
        self.args[0].store(result as u64, Ordering::Relaxed);
        self.args[1].store(extra, Ordering::Relaxed);
        let prev = self.state.swap(Phase::Done as u32, Ordering::AcqRel);
        prev & FLAG_SLEEPING != 0
    }

    /// Client: true once the domain has completed the call.
    pub fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) & PHASE_MASK == Phase::Done as u32
    }

    /// Client: announce that we are about to sleep. Returns the state value
    /// to sleep on, or None if the call completed in the meantime.
    pub fn mark_sleeping(&self) -> Option<u32> {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            if cur & PHASE_MASK == Phase::Done as u32 {
                return None;
            }
            let want = cur | FLAG_SLEEPING;
            if cur == want {
                return Some(want);
            }
            match self
                .state
                .compare_exchange_weak(cur, want, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(want),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Client: ask the domain to interrupt this call (a signal arrived).
    pub fn request_interrupt(&self) {
        self.state.fetch_or(FLAG_INTERRUPT, Ordering::AcqRel);
    }

    /// Domain: has the client asked for this call to be interrupted?
    pub fn interrupt_requested(&self) -> bool {
        self.state.load(Ordering::Acquire) & FLAG_INTERRUPT != 0
    }

    /// Client: read the result of a completed call: (result, extra).
    pub fn result(&self) -> (i64, u64) {
        (
            self.args[0].load(Ordering::Relaxed) as i64,
            self.args[1].load(Ordering::Relaxed),
        )
    }

    /// Client: return the entry to the Free phase after reading the result.
    pub fn release(&self) {
        self.state.store(Phase::Free as u32, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> RequestEntry {
        // SAFETY: all-zero bytes are a valid RequestEntry (atomics of zero).
        unsafe { core::mem::zeroed() }
    }

    #[test]
    fn claim_only_once_and_wake_only_sleepers() {
        let e = entry();
        assert!(e.claim().is_none(), "a free entry cannot be claimed");
        e.fill(2, 7, 42, Some(3), [1, 2, 3, 4, 5, 6]);
        let req = e.claim().expect("submitted entry is claimable");
        assert_eq!(req.chunk, Some(3));
        assert_eq!(req.args, [1, 2, 3, 4, 5, 6]);
        assert!(e.claim().is_none(), "second claim must fail");
        assert!(!e.complete(-2, 0), "nobody sleeps: no wake");
        assert!(e.is_done());
        assert_eq!(e.result().0, -2);

        e.fill(2, 8, 42, None, [0; 6]);
        assert!(e.mark_sleeping().is_some());
        e.claim().unwrap();
        assert!(e.complete(5, 9), "sleeper must be woken");
        assert_eq!(e.mark_sleeping(), None, "done: no sleep");
    }
}
