//! Lock-free LIFO list of entry indices with an ABA tag (Treiber stack).
//!
//! The head is one `AtomicU64`: the low 16 bits hold `index + 1` (0 = empty),
//! the high 48 bits a tag bumped by every successful update, so a pop that
//! raced with pop+push of the same index fails its CAS instead of linking a
//! stale `next`. Links live in the entries' `next` fields. Every index read
//! from shared memory is range-checked; a malformed list makes `pop` return
//! `Err(ListError)`, never panic or loop forever.

use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};

/// Bounded retries before a CAS loop gives up: a peer that keeps changing the
/// head this often is broken or hostile.
pub const MAX_CAS_RETRIES: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListError {
    /// The head or a link pointed outside the entry array.
    BadIndex,
    /// The CAS kept failing.
    Contended,
    /// An entry links to itself: the list never ends.
    Loop,
}

impl core::fmt::Display for ListError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ListError::BadIndex => "a link points outside the entry array",
            ListError::Contended => "the list head keeps changing",
            ListError::Loop => "an entry links to itself",
        })
    }
}

/// Most entries a well-formed list holds (every entry at most once): a
/// consumer that pops more than this many entries in a row without one it
/// can use is walking a cycle.
pub const WALK_LIMIT: usize = crate::layout::NUM_ENTRIES;

fn unpack(head: u64) -> (u64, u16) {
    (head >> 16, (head & 0xffff) as u16)
}

fn pack(tag: u64, link: u16) -> u64 {
    (tag.wrapping_add(1) << 16) | link as u64
}

/// Where the list's links live: the `next` fields of an entry array.
pub trait Links {
    fn count(&self) -> usize;
    /// The link of entry `index`; `index < count()` is guaranteed by callers.
    fn link(&self, index: usize) -> &AtomicU16;
}

impl Links for [AtomicU16] {
    fn count(&self) -> usize {
        self.len()
    }
    fn link(&self, index: usize) -> &AtomicU16 {
        &self[index]
    }
}

/// Push `index` (< `links.count()`) onto the list whose head is `head`.
pub fn push<L: Links + ?Sized>(head: &AtomicU64, links: &L, index: u16) -> Result<(), ListError> {
    if index as usize >= links.count() {
        return Err(ListError::BadIndex);
    }
    let mut cur = head.load(Ordering::Acquire);
    for _ in 0..MAX_CAS_RETRIES {
        let (tag, link) = unpack(cur);
        links.link(index as usize).store(link, Ordering::Relaxed);
        match head.compare_exchange_weak(
            cur,
            pack(tag, index + 1),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return Ok(()),
            Err(actual) => cur = actual,
        }
    }
    Err(ListError::Contended)
}

/// Pop one index, `Ok(None)` when empty.
pub fn pop<L: Links + ?Sized>(head: &AtomicU64, links: &L) -> Result<Option<u16>, ListError> {
    let mut cur = head.load(Ordering::Acquire);
    for _ in 0..MAX_CAS_RETRIES {
        let (tag, link) = unpack(cur);
        let Some(index) = link.checked_sub(1) else {
            return Ok(None);
        };
        if index as usize >= links.count() {
            return Err(ListError::BadIndex);
        }
        let next = links.link(index as usize).load(Ordering::Relaxed);
        if next as usize > links.count() {
            return Err(ListError::BadIndex);
        }
        if next == link {
            return Err(ListError::Loop);
        }
        match head.compare_exchange_weak(cur, pack(tag, next), Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return Ok(Some(index)),
            Err(actual) => cur = actual,
        }
    }
    Err(ListError::Contended)
}

/// True if the list looks empty (a hint: it may change at once).
pub fn is_empty(head: &AtomicU64) -> bool {
    head.load(Ordering::Acquire) & 0xffff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn links(n: usize) -> Vec<AtomicU16> {
        (0..n).map(|_| AtomicU16::new(0)).collect()
    }

    #[test]
    fn bad_head_is_an_error_not_a_crash() {
        let l = links(4);
        let refs: &[AtomicU16] = &l;
        let head = AtomicU64::new(pack(0, 9)); // index 8 of 4
        assert_eq!(pop(&head, refs), Err(ListError::BadIndex));
        let head = AtomicU64::new(pack(0, 1));
        l[0].store(77, Ordering::Relaxed); // link out of range
        assert_eq!(pop(&head, refs), Err(ListError::BadIndex));
        // An entry that links to itself.
        let head = AtomicU64::new(pack(0, 3));
        l[2].store(3, Ordering::Relaxed);
        assert_eq!(pop(&head, refs), Err(ListError::Loop));
    }

    #[test]
    fn concurrent_push_pop_loses_nothing() {
        let l = links(64);
        let refs: &[AtomicU16] = &l;
        let head = AtomicU64::new(0);
        for i in 0..64 {
            push(&head, refs, i).unwrap();
        }
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..20_000 {
                        if let Some(i) = pop(&head, refs).unwrap() {
                            push(&head, refs, i).unwrap();
                        }
                    }
                });
            }
        });
        let mut seen = HashSet::new();
        while let Some(i) = pop(&head, refs).unwrap() {
            assert!(seen.insert(i), "index {i} popped twice");
        }
        assert_eq!(seen.len(), 64);
    }

    proptest! {
        #[test]
        fn behaves_like_a_stack(ops in proptest::collection::vec(any::<Option<u8>>(), 0..200)) {
            let l = links(16);
            let refs: &[AtomicU16] = &l;
            let head = AtomicU64::new(0);
            let mut model: Vec<u16> = Vec::new();
            let mut free: Vec<u16> = (0..16).collect();
            for op in ops {
                match op {
                    Some(_) if !free.is_empty() => {
                        let i = free.pop().unwrap();
                        push(&head, refs, i).unwrap();
                        model.push(i);
                    }
                    _ => {
                        let got = pop(&head, refs).unwrap();
                        prop_assert_eq!(got, model.pop());
                        if let Some(i) = got { free.push(i); }
                    }
                }
            }
        }
    }
}
