//! Domain ids and their epochs: the lowest layer of `forward`.
//!
//! A descriptor entry, a session slot, a call's target all name a domain by
//! one of these ids. Each domain has an epoch: the incarnation of its
//! session this process talks to. A failed domain (crash, hang, garbage)
//! ends the epoch (`session`); entries made in an older epoch are stale
//! (`fds::table`), and a stale entry's id carries `STALE`.

use core::sync::atomic::{AtomicU32, Ordering};

/// Domain ids as stored in the table (and in exec records).
pub const DOMAIN_STORAGE: u8 = 1;
pub const DOMAIN_NETWORK: u8 = 2;
/// Number of domains a process may be attached to.
pub const NUM_DOMAINS: usize = 2;
/// Every domain id, in slot order.
pub const DOMAINS: [u8; NUM_DOMAINS] = [DOMAIN_STORAGE, DOMAIN_NETWORK];

/// The slot (0..NUM_DOMAINS) of a domain id; unknown ids map to None.
#[inline]
pub fn slot_of(domain: u8) -> Option<usize> {
    match domain {
        DOMAIN_STORAGE => Some(0),
        DOMAIN_NETWORK => Some(1),
        _ => None,
    }
}

/// Or'ed into the domain id of a stale entry (see the module comment).
pub const STALE: u8 = 0x80;

/// Current session epoch per domain slot.
static EPOCH: [AtomicU32; NUM_DOMAINS] = [const { AtomicU32::new(1) }; NUM_DOMAINS];

/// The current epoch of `domain` (0 for unknown ids).
pub fn epoch(domain: u8) -> u16 {
    slot_of(domain).map_or(0, |k| EPOCH[k].load(Ordering::Acquire) as u16)
}

/// End `domain`'s epoch: every entry made so far becomes stale.
pub fn end_epoch(domain: u8) {
    if let Some(k) = slot_of(domain) {
        let next = EPOCH[k].fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        if next as u16 == 0 {
            // Epoch 0 is never current (unknown ids carry it).
            EPOCH[k].fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Whether `domain` is a domain id this library knows.
pub fn is_known_domain(domain: u8) -> bool {
    slot_of(domain).is_some()
}
