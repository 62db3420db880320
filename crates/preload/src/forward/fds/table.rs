//! The descriptor table: user fd -> (domain, remote fd, close-on-exec).
//! A pure table: it knows domain ids and epochs (`domain`) and nothing
//! above; what a change of an entry means for the rest (re-open records)
//! is `fds`'s, which alone may change it (the mutators are `pub(super)`).
//!
//! A fixed array of `CAPACITY` atomics in an anonymous private mapping,
//! mapped at the first forwarded descriptor (fork copies it with the rest of
//! our memory). A lookup is one atomic load of the table pointer and one of
//! the entry; 0 means "local". Every forwarded descriptor also holds a host
//! placeholder at the same number, so the kernel never hands that number
//! out for something else while the entry exists: the updates below rely on
//! that (an entry is always cleared before its placeholder is closed).
//!
//! Epochs: each entry records the epoch of its domain's session when it was
//! made. A failed domain (crash, hang, garbage) ends the epoch: the shadow
//! that held the remote descriptors is gone, so entries of older epochs are
//! *stale*. Lookups present a stale entry with `STALE` or'ed into its
//! domain id: no session serves that id, so every call on it fails (EIO,
//! ENOTCONN for sockets) and close just drops it.

use crate::forward::domain::{epoch, slot_of, DOMAIN_NETWORK, DOMAIN_STORAGE, NUM_DOMAINS, STALE};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use rustix::mm::{MapFlags, ProtFlags};

/// User descriptors at or above this are always local.
pub const CAPACITY: usize = 65536;

const VALID: u64 = 1 << 63;
const CLOEXEC: u64 = 1 << 40;
const EPOCH_SHIFT: u32 = 41;
/// A socket of the storage domain (an `AF_UNIX` socket at a storage path).
const SOCKET: u64 = 1 << 57;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub domain: u8,
    pub remote: u32,
    pub cloexec: bool,
    /// The domain's session epoch when the entry was made.
    pub epoch: u16,
    /// A socket (every network entry; `AF_UNIX` sockets of the storage
    /// domain), not a file.
    pub socket: bool,
}

impl Entry {
    pub fn storage(remote: u32, cloexec: bool) -> Entry {
        Entry::new(DOMAIN_STORAGE, remote, cloexec)
    }

    pub fn network(remote: u32, cloexec: bool) -> Entry {
        Entry::new(DOMAIN_NETWORK, remote, cloexec)
    }

    /// An entry of the current epoch of `domain`.
    pub fn new(domain: u8, remote: u32, cloexec: bool) -> Entry {
        Entry {
            domain,
            remote,
            cloexec,
            epoch: epoch(domain),
            socket: domain == DOMAIN_NETWORK,
        }
    }

    pub fn is_network(&self) -> bool {
        self.domain == DOMAIN_NETWORK
    }

    /// A socket of any domain (stale or not).
    pub fn is_socket(&self) -> bool {
        self.socket || self.home() == DOMAIN_NETWORK
    }

    /// Made in an epoch that ended (its domain failed since).
    pub fn is_stale(&self) -> bool {
        self.domain & STALE != 0
    }

    /// The domain the entry was made in (without `STALE`).
    pub fn home(&self) -> u8 {
        self.domain & !STALE
    }

    fn encode(self) -> u64 {
        VALID
            | (self.home() as u64) << 32
            | if self.cloexec { CLOEXEC } else { 0 }
            | (self.epoch as u64) << EPOCH_SHIFT
            | if self.socket { SOCKET } else { 0 }
            | self.remote as u64
    }

    /// The stored entry, as it was made.
    fn decode_raw(v: u64) -> Option<Entry> {
        (v & VALID != 0).then_some(Entry {
            domain: (v >> 32) as u8,
            remote: v as u32,
            cloexec: v & CLOEXEC != 0,
            epoch: (v >> EPOCH_SHIFT) as u16,
            socket: v & SOCKET != 0,
        })
    }

    /// The stored entry as lookups present it (stale if its epoch ended).
    fn decode(v: u64) -> Option<Entry> {
        Entry::decode_raw(v).map(|mut e| {
            if e.epoch != epoch(e.domain) {
                e.domain |= STALE;
            }
            e
        })
    }
}

/// A lazily mapped, zero-filled array of `len` atomics in a private
/// anonymous mapping (`MAP_NORESERVE`: only touched pages cost memory; fork
/// copies it with the rest of our memory), published once, never unmapped.
/// The descriptor table, and `reopen`'s records.
pub struct LazyWords {
    ptr: AtomicPtr<AtomicU64>,
    len: usize,
}

impl LazyWords {
    pub const fn new(len: usize) -> LazyWords {
        LazyWords {
            ptr: AtomicPtr::new(core::ptr::null_mut()),
            len,
        }
    }

    /// The words, if mapped.
    #[inline]
    pub fn get(&self) -> Option<&'static [AtomicU64]> {
        let p = self.ptr.load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` came from `get_or_map`: a private anonymous mapping of
        // `len` zero-initialised u64s (valid AtomicU64s), never unmapped.
        Some(unsafe { core::slice::from_raw_parts(p, self.len) })
    }

    /// The words, mapping them first if needed.
    pub fn get_or_map(&self) -> Result<&'static [AtomicU64], i64> {
        if let Some(t) = self.get() {
            return Ok(t);
        }
        let bytes = self.len * 8;
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address; it
        // aliases nothing.
        let p = unsafe {
            rustix::mm::mmap_anonymous(
                core::ptr::null_mut(),
                bytes,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(|e| -(e.raw_os_error() as i64))?;
        if self
            .ptr
            .compare_exchange(
                core::ptr::null_mut(),
                p.cast(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            // SAFETY: we lost the race; our mapping was never published.
            let _ = unsafe { rustix::mm::munmap(p, bytes) };
        }
        self.get().ok_or(-(libc::EIO as i64))
    }
}

static TABLE: LazyWords = LazyWords::new(CAPACITY);
/// Number of forwarded entries.
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// Number of forwarded entries per domain slot.
static COUNTS: [AtomicUsize; NUM_DOMAINS] = [const { AtomicUsize::new(0) }; NUM_DOMAINS];

fn count_add(domain: u8, delta: isize) {
    if let Some(c) = slot_of(domain).and_then(|i| COUNTS.get(i)) {
        if delta > 0 {
            c.fetch_add(1, Ordering::Relaxed);
        } else {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
/// One past the highest index ever set (bounds scans).
static HIGH: AtomicUsize = AtomicUsize::new(0);

#[inline]
fn table() -> Option<&'static [AtomicU64]> {
    TABLE.get()
}

fn map_table() -> Result<&'static [AtomicU64], i64> {
    TABLE.get_or_map()
}

fn index(fd: u64) -> Option<usize> {
    let i = fd as u32 as usize;
    (i < CAPACITY).then_some(i)
}

/// The slot, stored word and entry of user descriptor `fd` (the kernel
/// reads fd arguments as `unsigned int`: we use the low 32 bits too), as
/// lookups present it (stale if its epoch ended): for `fds::get`.
#[inline]
pub(super) fn lookup(fd: u64) -> Option<(&'static AtomicU64, u64, Entry)> {
    let t = table()?;
    let slot = t.get(index(fd)?)?;
    let raw = slot.load(Ordering::Acquire);
    Some((slot, raw, Entry::decode(raw)?))
}

/// The entry of `fd` as stored (stale if its epoch ended), never re-opened
/// (`fds::get` re-opens): for calls that only ask whether `fd` is
/// forwarded or drop the entry.
#[inline]
pub fn peek(fd: u64) -> Option<Entry> {
    let t = table()?;
    Entry::decode(t.get(index(fd)?)?.load(Ordering::Acquire))
}

pub fn is_forwarded(fd: u64) -> bool {
    peek(fd).is_some()
}

/// The stored word of `fd` (0: none): what `reopen` keys its records by.
pub(super) fn raw(fd: u64) -> u64 {
    table()
        .and_then(|t| t.get(index(fd)?))
        .map_or(0, |s| s.load(Ordering::Acquire))
}

/// The stored word an entry is kept as, without its close-on-exec bit
/// (which `set_cloexec` changes in place).
pub(super) fn key_of(raw: u64) -> u64 {
    raw & !CLOEXEC
}

/// The stored word `e` is kept as.
pub(super) fn encode(e: Entry) -> u64 {
    e.encode()
}

/// Replace the stored word `old` of `slot` by `new` (same domain, so the
/// counts stay); false if `slot` changed meanwhile.
pub(super) fn replace(slot: &AtomicU64, old: u64, new: Entry) -> bool {
    slot.compare_exchange(old, new.encode(), Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// Set the entry of `fd`; returns the previous one. EMFILE when `fd` is
/// beyond the table. (`fds::set` also voids the re-open record.)
pub(super) fn set(fd: u64, e: Entry) -> Result<Option<Entry>, i64> {
    let i = index(fd).ok_or(-(libc::EMFILE as i64))?;
    let t = map_table()?;
    let old = t[i].swap(e.encode(), Ordering::AcqRel);
    match Entry::decode_raw(old) {
        None => {
            COUNT.fetch_add(1, Ordering::Relaxed);
        }
        Some(p) => count_add(p.domain, -1),
    }
    count_add(e.home(), 1);
    HIGH.fetch_max(i + 1, Ordering::Relaxed);
    Ok(Entry::decode(old))
}

/// Remove and return the entry of `fd` (only one caller wins).
pub(super) fn take(fd: u64) -> Option<Entry> {
    let t = table()?;
    let old = t.get(index(fd)?)?.swap(0, Ordering::AcqRel);
    if let Some(p) = Entry::decode_raw(old) {
        COUNT.fetch_sub(1, Ordering::Relaxed);
        count_add(p.domain, -1);
    }
    Entry::decode(old)
}

/// Set or clear close-on-exec; false if `fd` is not forwarded.
pub(super) fn set_cloexec(fd: u64, on: bool) -> bool {
    let Some(slot) = table().and_then(|t| t.get(index(fd)?)) else {
        return false;
    };
    let mut cur = slot.load(Ordering::Acquire);
    loop {
        if cur & VALID == 0 {
            return false;
        }
        let want = if on { cur | CLOEXEC } else { cur & !CLOEXEC };
        match slot.compare_exchange_weak(cur, want, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(actual) => cur = actual,
        }
    }
}

/// Number of forwarded descriptors.
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// Number of forwarded descriptors of `domain`.
pub fn count_in(domain: u8) -> usize {
    slot_of(domain)
        .and_then(|i| COUNTS.get(i))
        .map_or(0, |c| c.load(Ordering::Relaxed))
}

/// Call `f(fd, entry)` for each forwarded fd in `[first, last]`.
pub fn for_each_in(first: u64, last: u64, mut f: impl FnMut(u32, Entry)) {
    let Some(t) = table() else { return };
    let hi = (HIGH.load(Ordering::Relaxed) as u64).min(last.saturating_add(1));
    let mut i = first;
    while i < hi {
        if let Some(e) = t
            .get(i as usize)
            .and_then(|s| Entry::decode(s.load(Ordering::Acquire)))
        {
            f(i as u32, e);
        }
        i += 1;
    }
}

/// Forget every entry (a new image whose record was rejected, tests);
/// `forgot(fd)` after each one that may have been set.
pub(super) fn clear_all(mut forgot: impl FnMut(u64)) {
    if let Some(t) = table() {
        for (i, s) in t.iter().take(HIGH.load(Ordering::Relaxed)).enumerate() {
            s.store(0, Ordering::Relaxed);
            forgot(i as u64);
        }
    }
    COUNT.store(0, Ordering::Relaxed);
    for c in &COUNTS {
        c.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_and_capacity() {
        let e = Entry::storage(12345, true);
        assert_eq!(Entry::decode(e.encode()), Some(e));
        let sock = Entry {
            socket: true,
            ..Entry::storage(7, false)
        };
        assert_eq!(Entry::decode(sock.encode()), Some(sock));
        assert!(sock.is_socket() && !e.is_socket());
        assert!(Entry::network(3, false).is_socket());
        assert_eq!(Entry::decode(0), None);
        assert_eq!(
            set(CAPACITY as u64, e),
            Err(-(libc::EMFILE as i64)),
            "beyond the table"
        );
        assert_eq!(peek(CAPACITY as u64 + 5), None);
        // AT_FDCWD and other negatives are never in the table.
        assert_eq!(peek(libc::AT_FDCWD as i64 as u64), None);
        let fd = 60_000u64;
        assert_eq!(set(fd, e), Ok(None));
        assert_eq!(peek(fd), Some(e));
        assert!(set_cloexec(fd, false));
        assert!(!peek(fd).unwrap().cloexec);
        let mut seen = vec![];
        for_each_in(59_990, 65_535, |i, e| seen.push((i, e.remote)));
        assert_eq!(seen, vec![(60_000, 12345)]);
        assert!(take(fd).is_some());
        assert!(take(fd).is_none(), "second take loses");
        assert!(!set_cloexec(fd, true));
    }

    #[test]
    fn entries_of_an_ended_epoch_are_stale() {
        // (Without ending the real epoch: other tests run meanwhile.)
        let fd = 61_000u64;
        let before = count_in(DOMAIN_NETWORK);
        let old = Entry {
            epoch: epoch(DOMAIN_NETWORK).wrapping_sub(1),
            ..Entry::network(9, false)
        };
        set(fd, old).unwrap();
        let e = peek(fd).unwrap();
        assert!(e.is_stale());
        assert_eq!(e.home(), DOMAIN_NETWORK);
        assert!(slot_of(e.domain).is_none(), "no session serves a stale id");
        // A new entry at the same number is current again.
        set(fd, Entry::network(10, false)).unwrap();
        assert!(!peek(fd).unwrap().is_stale());
        assert_eq!(count_in(DOMAIN_NETWORK), before + 1);
        let gone = take(fd).unwrap();
        assert!(!gone.is_stale());
        assert_eq!(count_in(DOMAIN_NETWORK), before);
    }
}
