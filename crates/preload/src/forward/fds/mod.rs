//! Descriptors: the pure table (`table`) composed with the re-open records
//! of storage files (`reopen`). Calls look descriptors up and change them
//! here, never in `table` directly (its mutators are visible to this module
//! only):
//! - `get` (the lookup of calls that use a descriptor) re-opens a storage
//!   entry whose epoch ended, or whose session failed (`reopen::revive`);
//!   `peek` never does (close, bookkeeping);
//! - every change of an entry (`set`, `take`, `clear_all`) voids the
//!   descriptor's re-open record (`reopen::forget`).
//!
//! Also the conversions between entries and the transport's types (a call's
//! `Target`, the entry a call made), which sit above both.

pub mod reopen;
pub mod table;

use super::caller::{Call, Target};
use super::domain::DOMAIN_STORAGE;
use super::session;
pub use table::{count, count_in, for_each_in, is_forwarded, peek, Entry, CAPACITY};

/// The entry of user descriptor `fd` (the kernel reads fd arguments as
/// `unsigned int`: we use the low 32 bits too), for a call that will use
/// it: a storage file whose domain failed is re-opened first when it can
/// be (`reopen`), otherwise it is presented stale.
#[inline]
pub fn get(fd: u64) -> Option<Entry> {
    let (slot, raw, e) = table::lookup(fd)?;
    if e.home() == DOMAIN_STORAGE && (e.is_stale() || session::storage_failed()) {
        return Some(reopen::revive(fd, slot, raw, e));
    }
    Some(e)
}

/// Set the entry of `fd`; returns the previous one. EMFILE when `fd` is
/// beyond the table.
pub fn set(fd: u64, e: Entry) -> Result<Option<Entry>, i64> {
    let old = table::set(fd, e)?;
    reopen::forget(fd);
    Ok(old)
}

/// Remove and return the entry of `fd` (only one caller wins).
pub fn take(fd: u64) -> Option<Entry> {
    let old = table::take(fd);
    reopen::forget(fd);
    old
}

/// Set or clear close-on-exec; false if `fd` is not forwarded. (The
/// re-open record stays: it is keyed without the close-on-exec bit.)
pub fn set_cloexec(fd: u64, on: bool) -> bool {
    table::set_cloexec(fd, on)
}

/// Forget every entry (a new image whose record was rejected, tests).
pub fn clear_all() {
    table::clear_all(reopen::forget);
}

/// A table entry for remote descriptor `rfd` made through `call` (in the
/// epoch of its session).
pub fn entry_for(call: &Call, rfd: u32, cloexec: bool) -> Entry {
    Entry {
        epoch: call.session().epoch,
        ..Entry::new(call.domain(), rfd, cloexec)
    }
}

/// A call on a descriptor goes to its domain, in the epoch it was made in.
impl From<Entry> for Target {
    fn from(e: Entry) -> Target {
        Target {
            domain: e.domain,
            epoch: Some(e.epoch),
        }
    }
}
