//! Which client each shadow stands for, by pid, for every process of the
//! domain: a lock a shadow holds is its client's lock, so `F_GETLK` must
//! name the client's pid as the holder (as natively), not the shadow's.
//!
//! A small table in an anonymous shared mapping made by the main process
//! before it forks any shadow: shadows (and the shadows they fork) inherit
//! it and read it; only the main process writes it (when a shadow starts,
//! attaches after a fork, or goes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Shadows tracked at once (more: their locks report holder pid 0).
const CAPACITY: usize = 8192;

struct Table(&'static [AtomicU64]);

static TABLE: OnceLock<Table> = OnceLock::new();

fn pack(shadow: u32, client: u32) -> u64 {
    (shadow as u64) << 32 | client as u64
}

/// Map the table (main process, before the first shadow).
pub fn init() -> std::io::Result<()> {
    if TABLE.get().is_some() {
        return Ok(());
    }
    let words = crate::sys::shared_words(CAPACITY)?;
    let _ = TABLE.set(Table(words));
    Ok(())
}

/// Shadow `shadow` now serves client process `client`.
pub fn set(shadow: u32, client: u32) {
    let Some(t) = TABLE.get() else { return };
    remove(shadow);
    for w in t.0 {
        if w.compare_exchange(0, pack(shadow, client), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
    tracing::warn!(shadow, client, "shadow pid table full");
}

/// Shadow `shadow` is gone.
pub fn remove(shadow: u32) {
    let Some(t) = TABLE.get() else { return };
    for w in t.0 {
        let v = w.load(Ordering::Acquire);
        if v != 0 && (v >> 32) as u32 == shadow {
            let _ = w.compare_exchange(v, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

/// The client pid a lock holder `pid` (as this domain sees it) stands for:
/// its client's when it is a shadow; 0 otherwise, as the kernel reports a
/// holder outside the caller's pid namespace (no client can name a
/// process of the domain).
pub fn client_of(pid: i32) -> i32 {
    let Some(t) = TABLE.get() else { return 0 };
    if pid <= 0 {
        return pid;
    }
    t.0.iter()
        .map(|w| w.load(Ordering::Acquire))
        .find(|&v| v != 0 && (v >> 32) as u32 == pid as u32)
        .map_or(0, |v| v as u32 as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadows_map_to_clients() {
        init().unwrap();
        set(4242, 17);
        set(4343, 18);
        assert_eq!(client_of(4242), 17);
        assert_eq!(client_of(4343), 18);
        assert_eq!(client_of(999_999), 0, "not a shadow");
        assert_eq!(client_of(-1), -1, "OFD locks stay -1");
        set(4242, 19);
        assert_eq!(client_of(4242), 19, "a reused pid is the new client's");
        remove(4242);
        assert_eq!(client_of(4242), 0);
        remove(4343);
    }
}
