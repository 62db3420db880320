//! Entry and chunk allocation (client-private), per domain slot: what a
//! `caller::Call` holds while it talks to the domain.
//!
//! Free entries and chunks are bitmaps in our private memory (the domain
//! never sees them, so it cannot corrupt them). Each thread keeps the entry
//! and chunk of its last call in a thread-local cache and returns them at
//! thread exit (or at once when other threads are waiting for one). A new
//! session (`session::publish`) and a forked child reset a slot's pools.

use super::domain::{slot_of, NUM_DOMAINS};
use core::cell::Cell;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use virtuos_abi::entry::{Phase, PHASE_MASK};
use virtuos_abi::{ClientRegion, NUM_CHUNKS, NUM_ENTRIES};

/// A lock-free set of free indices `0..n` (a bitmap).
pub struct Pool<const W: usize> {
    bits: [AtomicU64; W],
    n: usize,
}

const fn word_mask(n: usize, w: usize) -> u64 {
    let lo = w * 64;
    if n <= lo {
        0
    } else if n >= lo + 64 {
        u64::MAX
    } else {
        (1u64 << (n - lo)) - 1
    }
}

impl<const W: usize> Pool<W> {
    /// A pool with every index free.
    pub const fn new(n: usize) -> Self {
        let mut bits = [const { AtomicU64::new(0) }; W];
        let mut w = 0;
        while w < W {
            bits[w] = AtomicU64::new(word_mask(n, w));
            w += 1;
        }
        Pool { bits, n }
    }

    /// Mark every index free again.
    pub fn fill(&self) {
        for (w, b) in self.bits.iter().enumerate() {
            b.store(word_mask(self.n, w), Ordering::Release);
        }
    }

    pub fn acquire(&self) -> Option<u16> {
        for (w, b) in self.bits.iter().enumerate() {
            let mut cur = b.load(Ordering::Acquire);
            while cur != 0 {
                let bit = cur.trailing_zeros();
                match b.compare_exchange_weak(
                    cur,
                    cur & !(1u64 << bit),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Some((w * 64 + bit as usize) as u16),
                    Err(actual) => cur = actual,
                }
            }
        }
        None
    }

    pub fn release(&self, i: u16) {
        if (i as usize) < self.n {
            if let Some(b) = self.bits.get(i as usize / 64) {
                b.fetch_or(1u64 << (i % 64), Ordering::AcqRel);
            }
        }
    }

    /// Take `i` out of the pool (in use by someone we cannot see).
    pub fn reserve(&self, i: u16) {
        if (i as usize) < self.n {
            if let Some(b) = self.bits.get(i as usize / 64) {
                b.fetch_and(!(1u64 << (i % 64)), Ordering::AcqRel);
            }
        }
    }

    pub fn free_count(&self) -> u32 {
        self.bits
            .iter()
            .map(|b| b.load(Ordering::Relaxed).count_ones())
            .sum()
    }
}

/// Per domain slot: free entries and chunks of that domain's region.
pub(super) static ENTRIES: [Pool<{ NUM_ENTRIES.div_ceil(64) }>; NUM_DOMAINS] =
    [const { Pool::new(NUM_ENTRIES) }; NUM_DOMAINS];
pub(super) static CHUNKS: [Pool<{ NUM_CHUNKS.div_ceil(64) }>; NUM_DOMAINS] =
    [const { Pool::new(NUM_CHUNKS) }; NUM_DOMAINS];
/// Bumped whenever a slot's pools are reset (new session, fork child):
/// cached indices of an older generation are dropped, never released.
pub(super) static GEN: [AtomicU32; NUM_DOMAINS] = [const { AtomicU32::new(1) }; NUM_DOMAINS];
/// Threads waiting for a free entry or chunk, per slot.
pub(super) static WAITERS: [AtomicU32; NUM_DOMAINS] = [const { AtomicU32::new(0) }; NUM_DOMAINS];

pub(super) const NONE: u16 = u16::MAX;

#[derive(Clone, Copy)]
pub(super) struct Cache {
    pub(super) gen: u32,
    pub(super) entry: u16,
    pub(super) chunk: u16,
    pub(super) seq: u16,
    pub(super) tid: u32,
}

pub(super) const EMPTY: Cache = Cache {
    gen: 0,
    entry: NONE,
    chunk: NONE,
    seq: 0,
    tid: 0,
};

thread_local! {
    static CACHE: [Cell<Cache>; NUM_DOMAINS] = const { [const { Cell::new(EMPTY) }; NUM_DOMAINS] };
}

pub(super) fn with_cache<R>(slot: usize, f: impl FnOnce(&Cell<Cache>) -> R) -> Option<R> {
    CACHE.try_with(|c| c.get(slot).map(f)).ok().flatten()
}

/// A new session's region for `domain`: all entries and chunks free,
/// except those a previous image left in flight (exec while other threads
/// waited).
pub fn on_new_session(domain: u8, region: &ClientRegion) {
    let Some(k) = slot_of(domain) else { return };
    ENTRIES[k].fill();
    CHUNKS[k].fill();
    for i in 0..NUM_ENTRIES as u16 {
        let Some(e) = region.entry(i) else { continue };
        let phase = e.state.load(Ordering::Acquire) & PHASE_MASK;
        if phase == Phase::Submitted as u32 || phase == Phase::Claimed as u32 {
            ENTRIES[k].reserve(i);
            if let Some(c) = e.chunk.load(Ordering::Relaxed).checked_sub(1) {
                CHUNKS[k].reserve(c);
            }
        }
    }
    GEN[k].fetch_add(1, Ordering::AcqRel);
}

/// Forked child: forget the parent's allocations (allocation-free).
pub fn reset_after_fork() {
    for k in 0..NUM_DOMAINS {
        ENTRIES[k].fill();
        CHUNKS[k].fill();
        WAITERS[k].store(0, Ordering::Relaxed);
        GEN[k].fetch_add(1, Ordering::AcqRel);
        let _ = with_cache(k, |c| c.set(EMPTY));
    }
}

/// The thread is exiting: give its cached entries and chunks back.
pub fn on_thread_exit() {
    for k in 0..NUM_DOMAINS {
        let _ = with_cache(k, |c| {
            let cur = c.replace(EMPTY);
            if cur.gen == GEN[k].load(Ordering::Acquire) {
                if cur.entry != NONE {
                    ENTRIES[k].release(cur.entry);
                }
                if cur.chunk != NONE {
                    CHUNKS[k].release(cur.chunk);
                }
            }
        });
    }
}

/// Free entries and chunks of the storage domain's region (tests).
pub fn free_counts() -> (u32, u32) {
    free_counts_in(super::domain::DOMAIN_STORAGE)
}

/// Free entries and chunks of `domain`'s region (tests).
pub fn free_counts_in(domain: u8) -> (u32, u32) {
    match slot_of(domain) {
        Some(k) => (ENTRIES[k].free_count(), CHUNKS[k].free_count()),
        None => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    #[test]
    fn pool_hands_out_each_index_once_under_contention() {
        let pool: Pool<2> = Pool::new(100);
        assert_eq!(pool.free_count(), 100);
        let seen = Mutex::new(HashSet::new());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let mut mine = vec![];
                    for round in 0..5000 {
                        if let Some(i) = pool.acquire() {
                            assert!(i < 100);
                            assert!(seen.lock().unwrap().insert(i), "index {i} handed out twice");
                            mine.push(i);
                        }
                        if round % 3 == 0 {
                            if let Some(i) = mine.pop() {
                                seen.lock().unwrap().remove(&i);
                                pool.release(i);
                            }
                        }
                    }
                    for i in mine {
                        seen.lock().unwrap().remove(&i);
                        pool.release(i);
                    }
                });
            }
        });
        assert_eq!(pool.free_count(), 100);
        pool.reserve(5);
        pool.release(200); // out of range: ignored
        assert_eq!(pool.free_count(), 99);
        let all: Vec<u16> = std::iter::from_fn(|| pool.acquire()).collect();
        assert_eq!(all.len(), 99);
        assert!(!all.contains(&5));
        pool.fill();
        assert_eq!(pool.free_count(), 100);
    }
}
