//! The tracked current directory: local (the host's) or in a domain, with
//! the domain path (as the remote `getcwd` reported it).
//!
//! Readers (every relative path while the cwd is remote) are lock-free: a
//! sequence lock over atomic words, so a signal handler that routes a path
//! can never deadlock against the thread it interrupted. Writers (chdir)
//! are serialised by a spinlock.

use super::path::PATH_MAX;
use super::sync::SpinLock;
use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

const WORDS: usize = PATH_MAX / 8;

static REMOTE: AtomicBool = AtomicBool::new(false);
static SEQ: AtomicU32 = AtomicU32::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);
static PATH: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];
static WRITER: SpinLock<()> = SpinLock::new(());

#[inline]
pub fn is_remote() -> bool {
    REMOTE.load(Ordering::Acquire)
}

/// Copy the remote cwd into `out`; None when the cwd is local.
pub fn copy_remote(out: &mut [u8]) -> Option<usize> {
    for attempt in 0..10_000u32 {
        if !is_remote() {
            return None;
        }
        let s1 = SEQ.load(Ordering::Acquire);
        if s1 & 1 == 0 {
            let len = LEN.load(Ordering::Relaxed);
            if len > out.len() || len > PATH_MAX {
                return None;
            }
            for (w, slot) in PATH.iter().enumerate().take(len.div_ceil(8)) {
                let bytes = slot.load(Ordering::Relaxed).to_ne_bytes();
                let start = w * 8;
                let n = (len - start).min(8);
                out[start..start + n].copy_from_slice(&bytes[..n]);
            }
            fence(Ordering::Acquire);
            if SEQ.load(Ordering::Relaxed) == s1 {
                return Some(len);
            }
        }
        if attempt > 64 {
            super::host::sched_yield();
        } else {
            core::hint::spin_loop();
        }
    }
    None
}

/// The cwd is now `path` in the storage domain (absolute, no NUL).
pub fn set_remote(path: &[u8]) -> bool {
    if path.len() >= PATH_MAX || path.first() != Some(&b'/') {
        return false;
    }
    let _g = WRITER.lock();
    SEQ.fetch_add(1, Ordering::AcqRel); // odd: writing
    fence(Ordering::Release);
    for (w, chunk) in path.chunks(8).enumerate() {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        PATH[w].store(u64::from_ne_bytes(b), Ordering::Relaxed);
    }
    LEN.store(path.len(), Ordering::Relaxed);
    SEQ.fetch_add(1, Ordering::Release); // even: stable
    REMOTE.store(true, Ordering::Release);
    true
}

pub fn set_local() {
    REMOTE.store(false, Ordering::Release);
}

/// Forked child: a parent thread may have held the writer lock.
pub(crate) fn force_unlock() {
    WRITER.force_unlock();
    let s = SEQ.load(Ordering::Relaxed);
    if s & 1 == 1 {
        SEQ.store(s.wrapping_add(1), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_whole_paths() {
        let a = b"/storage/aaaaaaaaaaaaaaaaaaaaaaaaaa";
        let b = b"/storage/b";
        assert!(set_remote(a));
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..20_000 {
                    set_remote(if i % 2 == 0 { b } else { a });
                }
            });
            s.spawn(|| {
                let mut out = [0u8; PATH_MAX];
                for _ in 0..20_000 {
                    let n = copy_remote(&mut out).unwrap();
                    assert!(&out[..n] == a || &out[..n] == b, "torn read");
                }
            });
        });
        set_local();
        assert_eq!(copy_remote(&mut [0u8; 64]), None);
        assert!(!set_remote(b"relative"));
    }
}
