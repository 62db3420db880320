//! Which files the domain's clients are running (ETXTBSY).
//!
//! Natively a file that a process executes cannot be opened for writing
//! or truncated (ETXTBSY) while it runs. A client running a program stored
//! in the domain runs a host copy of it, so the domain's kernel knows
//! nothing of it: this table tells it. Each shadow registers the identity
//! (st_dev, st_ino) of the image its client runs (`OP_EXEC_CLAIM` before
//! the exec, copied into a forked shadow), and keeps a descriptor of the
//! file open while the entry exists, so the inode number cannot be reused
//! by an unrelated file meanwhile. Every forwarded open that gets write
//! access, every `O_TRUNC` open and every `truncate` consults the table
//! (`busy`).
//!
//! A small table in an anonymous shared mapping made by the main process
//! before it forks any shadow (like `pidmap`): shadows and the shadows
//! they fork inherit it. A shadow writes only entries it owns (its pid);
//! the main process drops every entry of a shadow that goes. Nothing here
//! is shared with clients.
//!
//! Entry: three words, `owner | dev | ino`; `owner` = shadow pid << 32 |
//! generation << 1 | valid. An entry is claimed by a CAS of `owner` from
//! 0 to a not-yet-valid word, filled, then published with the valid bit;
//! readers re-read `owner` after `dev` and `ino` so that a torn entry is
//! never taken for a valid one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Images tracked at once (more: the extra ones are not write-protected).
const CAPACITY: usize = 4096;
const WORDS: usize = 3 + 3 * CAPACITY;
const VALID: u64 = 1;

struct Table(&'static [AtomicU64]);

impl Table {
    /// Number of valid entries (word 0).
    fn count(&self) -> &AtomicU64 {
        &self.0[0]
    }
    /// One past the highest entry ever claimed (word 1): readers scan up
    /// to here only.
    fn high(&self) -> &AtomicU64 {
        &self.0[1]
    }
    /// Claims so far (word 2): the generation of an entry's owner word.
    fn generation(&self) -> &AtomicU64 {
        &self.0[2]
    }
    fn entry(&self, i: usize) -> [&AtomicU64; 3] {
        let b = 3 + 3 * i;
        [&self.0[b], &self.0[b + 1], &self.0[b + 2]]
    }
}

static TABLE: OnceLock<Table> = OnceLock::new();

/// Map the table (main process, before the first shadow).
pub fn init() -> std::io::Result<()> {
    if TABLE.get().is_some() {
        return Ok(());
    }
    let words = crate::sys::shared_words(WORDS)?;
    let _ = TABLE.set(Table(words));
    Ok(())
}

/// An entry this process registered.
#[derive(Debug, PartialEq, Eq)]
pub struct Handle {
    index: usize,
    owner: u64,
}

/// Register (dev, ino) as run by this shadow. `None`: no table, or full.
/// The caller keeps the file open until it calls `unregister`.
pub fn register(dev: u64, ino: u64) -> Option<Handle> {
    register_as(std::process::id(), dev, ino)
}

fn register_as(pid: u32, dev: u64, ino: u64) -> Option<Handle> {
    let t = TABLE.get()?;
    for i in 0..CAPACITY {
        let [owner, d, n] = t.entry(i);
        let old = owner.load(Ordering::Acquire);
        if old != 0 {
            continue;
        }
        // A fresh generation per claim: a reader (or a stale handle) can
        // tell that the entry changed under it.
        let gen = t.generation().fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
        let claimed = (pid as u64) << 32 | gen << 1;
        if owner
            .compare_exchange(0, claimed, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        // Readers scan up to the high-water mark: raise it before the
        // entry can be seen.
        t.high().fetch_max(i as u64 + 1, Ordering::SeqCst);
        d.store(dev, Ordering::Relaxed);
        n.store(ino, Ordering::Relaxed);
        let published = claimed | VALID;
        // The count first: a reader that sees the entry sees the count.
        t.count().fetch_add(1, Ordering::SeqCst);
        if owner
            .compare_exchange(claimed, published, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            // The main process dropped this shadow's entries meanwhile.
            t.count().fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        return Some(Handle {
            index: i,
            owner: published,
        });
    }
    tracing::warn!(dev, ino, "running-image table full");
    None
}

/// Drop an entry this process registered.
pub fn unregister(h: Handle) {
    let Some(t) = TABLE.get() else { return };
    let [owner, ..] = t.entry(h.index);
    if owner
        .compare_exchange(h.owner, 0, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
    {
        t.count().fetch_sub(1, Ordering::SeqCst);
    }
}

/// Shadow `pid` is gone: drop its entries (main process).
pub fn remove(pid: u32) {
    let Some(t) = TABLE.get() else { return };
    let high = (t.high().load(Ordering::Acquire) as usize).min(CAPACITY);
    for i in 0..high {
        let [owner, ..] = t.entry(i);
        let v = owner.load(Ordering::Acquire);
        if v != 0
            && (v >> 32) as u32 == pid
            && owner
                .compare_exchange(v, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            && v & VALID != 0
        {
            t.count().fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Whether any image is registered (one load: the common answer is no).
pub fn any() -> bool {
    TABLE
        .get()
        .is_some_and(|t| t.count().load(Ordering::SeqCst) != 0)
}

/// Whether some client runs the file (dev, ino).
pub fn busy(dev: u64, ino: u64) -> bool {
    let Some(t) = TABLE.get() else { return false };
    if t.count().load(Ordering::SeqCst) == 0 {
        return false;
    }
    let high = (t.high().load(Ordering::SeqCst) as usize).min(CAPACITY);
    (0..high).any(|i| {
        let [owner, d, n] = t.entry(i);
        let v = owner.load(Ordering::SeqCst);
        if v & VALID == 0 {
            return false;
        }
        let (dv, nv) = (d.load(Ordering::SeqCst), n.load(Ordering::SeqCst));
        dv == dev && nv == ino && owner.load(Ordering::SeqCst) == v
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_check_drop() {
        init().unwrap();
        let a = register_as(4242, 7, 100).unwrap();
        let stale = Handle {
            index: a.index,
            owner: a.owner,
        };
        let b = register_as(4242, 7, 101).unwrap();
        let c = register_as(4343, 8, 100).unwrap();
        assert!(any());
        assert!(busy(7, 100) && busy(7, 101) && busy(8, 100));
        assert!(!busy(8, 101) && !busy(7, 102));
        unregister(a);
        assert!(!busy(7, 100));
        assert!(busy(7, 101));
        remove(4242);
        assert!(!busy(7, 101));
        assert!(busy(8, 100));
        // A stale handle (an earlier owner word of the entry) drops nothing.
        let d = register_as(4242, 9, 9).unwrap();
        unregister(Handle {
            index: d.index,
            owner: stale.owner,
        });
        assert!(busy(9, 9));
        unregister(d);
        unregister(b);
        unregister(c);
        assert!(!busy(8, 100) && !busy(9, 9));
    }
}
