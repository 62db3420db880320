//! A (process, domain) request region: header, entry array, data chunks.
//!
//! The same type is used on both sides. Offsets come from `layout`; every
//! index and length that arrives from the peer goes through a checked
//! accessor here, so a hostile peer can make a call fail but never make the
//! reader touch memory outside the region.

use crate::entry::RequestEntry;
use crate::layout::*;
use crate::list::{self, Links, ListError};
use crate::mapping::{AtomicsOnly, Mapping};
use crate::state::DomainState;
use core::sync::atomic::{fence, AtomicU16, AtomicU32, AtomicU64, Ordering};
use rustix::fd::AsFd;
use std::io;

#[repr(C, align(64))]
pub struct RegionHeader {
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub num_entries: AtomicU32,
    pub chunk_size: AtomicU32,
    pub num_chunks: AtomicU32,
    _pad0: [AtomicU64; 5],
    /// Head of the submit list (tagged, see `list`). Own cache line.
    pub submit_head: AtomicU64,
    _pad1: [AtomicU64; 7],
    /// Bumped by the client to wake workers asleep in `worker_sleep`.
    pub doorbell: AtomicU32,
    /// Bumped by the client after it set FLAG_INTERRUPT on an entry: wakes
    /// the domain's interrupter (see `request_interrupt`).
    pub interrupt_bell: AtomicU32,
    _pad2: [AtomicU32; 14],
}

// SAFETY: only atomics.
unsafe impl AtomicsOnly for RegionHeader {}
// SAFETY: only atomics (`RequestEntry` is all atomics, 64 bytes, aligned).
unsafe impl AtomicsOnly for RequestEntry {}

#[derive(Debug, PartialEq, Eq)]
pub enum RegionError {
    BadMagic,
    BadVersion(u32),
    BadLayout,
    List(ListError),
}

impl std::fmt::Display for RegionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegionError::BadMagic => write!(f, "shared region has a bad magic number"),
            RegionError::BadVersion(v) => write!(
                f,
                "shared region has ABI version {v}, expected {ABI_VERSION}"
            ),
            RegionError::BadLayout => write!(f, "shared region layout does not match this build"),
            RegionError::List(e) => write!(f, "shared submit list is malformed: {e}"),
        }
    }
}

impl std::error::Error for RegionError {}

/// The mapped request region of one client for one domain.
pub struct ClientRegion {
    map: Mapping,
}

struct EntryLinks<'a>(&'a ClientRegion);

impl Links for EntryLinks<'_> {
    fn count(&self) -> usize {
        NUM_ENTRIES
    }
    fn link(&self, index: usize) -> &AtomicU16 {
        &self.0.entry_at(index).next
    }
}

impl ClientRegion {
    /// Map a region memfd read-write.
    pub fn map(fd: impl AsFd) -> io::Result<ClientRegion> {
        Self::map_at(fd, 0)
    }

    /// Map the region that starts `offset` bytes into `fd` (a VM slot).
    pub fn map_at(fd: impl AsFd, offset: u64) -> io::Result<ClientRegion> {
        Ok(ClientRegion {
            map: Mapping::map_at(fd, offset, REGION_SIZE, true)?,
        })
    }

    /// Creator (the daemon): write the header of a fresh, zeroed region.
    pub fn init(&self) {
        let h = self.header();
        h.version.store(ABI_VERSION, Ordering::Relaxed);
        h.num_entries.store(NUM_ENTRIES as u32, Ordering::Relaxed);
        h.chunk_size.store(CHUNK_SIZE as u32, Ordering::Relaxed);
        h.num_chunks.store(NUM_CHUNKS as u32, Ordering::Relaxed);
        h.submit_head.store(0, Ordering::Relaxed);
        h.magic.store(REGION_MAGIC, Ordering::Release);
    }

    /// Check that the header matches this build's layout.
    pub fn validate(&self) -> Result<(), RegionError> {
        let h = self.header();
        if h.magic.load(Ordering::Acquire) != REGION_MAGIC {
            return Err(RegionError::BadMagic);
        }
        let v = h.version.load(Ordering::Relaxed);
        if v != ABI_VERSION {
            return Err(RegionError::BadVersion(v));
        }
        if h.num_entries.load(Ordering::Relaxed) != NUM_ENTRIES as u32
            || h.chunk_size.load(Ordering::Relaxed) != CHUNK_SIZE as u32
            || h.num_chunks.load(Ordering::Relaxed) != NUM_CHUNKS as u32
        {
            return Err(RegionError::BadLayout);
        }
        Ok(())
    }

    pub fn header(&self) -> &RegionHeader {
        self.map.atomic_ref(HEADER_OFFSET)
    }

    fn entry_at(&self, index: usize) -> &RequestEntry {
        self.map.atomic_ref(ENTRIES_OFFSET + index * ENTRY_SIZE)
    }

    /// Entry `index`, if in range.
    pub fn entry(&self, index: u16) -> Option<&RequestEntry> {
        ((index as usize) < NUM_ENTRIES).then(|| self.entry_at(index as usize))
    }

    /// Client: put a filled entry on the submit list.
    pub fn submit(&self, index: u16) -> Result<(), RegionError> {
        list::push(&self.header().submit_head, &EntryLinks(self), index).map_err(RegionError::List)
    }

    /// Domain: take the next submitted entry index, if any.
    pub fn take_submitted(&self) -> Result<Option<u16>, RegionError> {
        list::pop(&self.header().submit_head, &EntryLinks(self)).map_err(RegionError::List)
    }

    pub fn has_submitted(&self) -> bool {
        !list::is_empty(&self.header().submit_head)
    }

    /// Client, after `submit`: wake a worker if the domain says they sleep.
    pub fn ring_if_idle(&self, state: &DomainState) {
        // Pairs with the fence in `worker_sleep`: either we see the worker
        // idle, or the worker sees our entry on the list.
        fence(Ordering::SeqCst);
        if state.idle_workers.load(Ordering::Relaxed) > 0 {
            let bell = &self.header().doorbell;
            bell.fetch_add(1, Ordering::SeqCst);
            crate::doorbell::wake(bell, 1);
        }
    }

    /// Domain worker: sleep until the client rings or `timeout` passes,
    /// unless work is already there.
    pub fn worker_sleep(&self, state: &DomainState, timeout: std::time::Duration) {
        let bell = &self.header().doorbell;
        let seen = bell.load(Ordering::SeqCst);
        state.idle_workers.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !self.has_submitted() {
            crate::doorbell::wait(bell, seen, Some(timeout));
        }
        state.idle_workers.fetch_sub(1, Ordering::SeqCst);
    }

    /// Client: ask the domain to interrupt the call in entry `index` (a
    /// signal arrived while the caller waited): the domain makes the call's
    /// blocking system call return EINTR, if it is still running.
    pub fn request_interrupt(&self, index: u16) {
        if let Some(e) = self.entry(index) {
            e.request_interrupt();
            let bell = &self.header().interrupt_bell;
            bell.fetch_add(1, Ordering::SeqCst);
            crate::doorbell::wake(bell, 1);
        }
    }

    /// Domain: a worker starts a call whose interrupt was already asked for:
    /// wake the interrupter, which would otherwise sleep through it (it
    /// found nothing running when the client rang).
    pub fn kick_interrupter(&self) {
        let bell = &self.header().interrupt_bell;
        bell.fetch_add(1, Ordering::SeqCst);
        crate::doorbell::wake(bell, 1);
    }

    /// Domain: sleep until a client asks for an interrupt (or `timeout`).
    /// `seen` is the bell value the caller last handled.
    pub fn wait_interrupt_bell(&self, seen: u32, timeout: std::time::Duration) -> u32 {
        let bell = &self.header().interrupt_bell;
        crate::doorbell::wait(bell, seen, Some(timeout));
        bell.load(Ordering::SeqCst)
    }

    /// Byte offset of `[offset, offset+len)` inside chunk `chunk`, if the
    /// whole range lies in that chunk.
    pub fn chunk_range(chunk: u16, offset: u64, len: u64) -> Option<usize> {
        if chunk as usize >= NUM_CHUNKS {
            return None;
        }
        let end = offset.checked_add(len)?;
        if end > CHUNK_SIZE as u64 {
            return None;
        }
        Some(DATA_OFFSET + chunk as usize * CHUNK_SIZE + offset as usize)
    }

    /// Domain: a raw pointer to a checked range of a chunk, to hand to the
    /// kernel as a syscall buffer. Never dereferenced by Rust code.
    pub fn chunk_ptr(&self, chunk: u16, offset: u64, len: u64) -> Option<*mut u8> {
        let at = Self::chunk_range(chunk, offset, len)?;
        // `at + len <= REGION_SIZE` by construction of `chunk_range`.
        Some(self.map.base().wrapping_add(at))
    }

    /// Length of the NUL-terminated string at `offset` in `chunk` (without
    /// the NUL), if it ends inside the chunk and is at most `max` bytes.
    pub fn chunk_strlen(&self, chunk: u16, offset: u64, max: usize) -> Option<usize> {
        let start = Self::chunk_range(chunk, offset, 0)?;
        let limit = (CHUNK_SIZE - offset as usize).min(max + 1);
        (0..limit).find(|&i| self.map.byte(start + i) == Some(0))
    }

    /// Copy `src` into `chunk` at `offset`.
    pub fn write_chunk(&self, chunk: u16, offset: u64, src: &[u8]) -> bool {
        match Self::chunk_range(chunk, offset, src.len() as u64) {
            Some(at) => self.map.write_bytes(at, src),
            None => false,
        }
    }

    /// Copy from `chunk` at `offset` into `dst`.
    pub fn read_chunk(&self, chunk: u16, offset: u64, dst: &mut [u8]) -> bool {
        match Self::chunk_range(chunk, offset, dst.len() as u64) {
            Some(at) => self.map.read_bytes(at, dst),
            None => false,
        }
    }

    /// Base address of the mapping (for raw copies by the preload library
    /// straight from or into user buffers; see `chunk_range`).
    pub fn base(&self) -> *mut u8 {
        self.map.base()
    }
}

/// The mapped domain state page.
pub struct StatePage {
    map: Mapping,
}

impl StatePage {
    /// Map read-only (clients) or read-write (the domain).
    pub fn map(fd: impl AsFd, writable: bool) -> io::Result<StatePage> {
        Self::map_at(fd, 0, writable)
    }

    /// Map the page `offset` bytes into `fd` (a VM slot).
    pub fn map_at(fd: impl AsFd, offset: u64, writable: bool) -> io::Result<StatePage> {
        Ok(StatePage {
            map: Mapping::map_at(fd, offset, STATE_SIZE, writable)?,
        })
    }

    pub fn get(&self) -> &DomainState {
        self.map.atomic_ref(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::create_memfd;

    fn region() -> ClientRegion {
        let fd = create_memfd("test-region", REGION_SIZE).unwrap();
        let r = ClientRegion::map(&fd).unwrap();
        r.init();
        r
    }

    #[test]
    fn fresh_region_validates_and_corruption_is_detected() {
        let r = region();
        assert_eq!(r.validate(), Ok(()));
        r.header().num_chunks.store(9999, Ordering::Relaxed);
        assert_eq!(r.validate(), Err(RegionError::BadLayout));
        r.header().magic.store(1, Ordering::Relaxed);
        assert_eq!(r.validate(), Err(RegionError::BadMagic));
    }

    #[test]
    fn chunk_bounds_are_enforced() {
        assert!(ClientRegion::chunk_range(0, 0, CHUNK_SIZE as u64).is_some());
        assert!(ClientRegion::chunk_range(0, 1, CHUNK_SIZE as u64).is_none());
        assert!(ClientRegion::chunk_range(NUM_CHUNKS as u16, 0, 1).is_none());
        assert!(ClientRegion::chunk_range(0, u64::MAX, 2).is_none());
        let r = region();
        assert!(r.write_chunk(1, 10, b"abc\0"));
        assert_eq!(r.chunk_strlen(1, 10, 100), Some(3));
        assert_eq!(r.chunk_strlen(1, 10, 2), None, "longer than max");
        let last = NUM_CHUNKS as u16 - 1;
        assert!(r.write_chunk(last, CHUNK_SIZE as u64 - 2, b"xy"));
        assert_eq!(
            r.chunk_strlen(last, CHUNK_SIZE as u64 - 2, 100),
            None,
            "no NUL inside the chunk"
        );
        let mut out = [0u8; 3];
        assert!(r.read_chunk(1, 10, &mut out));
        assert_eq!(&out, b"abc");
    }

    #[test]
    fn submit_and_take_roundtrip() {
        let r = region();
        for i in [3u16, 9, 0] {
            r.entry(i).unwrap().fill(1, 0, 0, None, [i as u64; 6]);
            r.submit(i).unwrap();
        }
        let mut got = vec![];
        while let Some(i) = r.take_submitted().unwrap() {
            got.push(r.entry(i).unwrap().claim().unwrap().args[0]);
        }
        got.sort();
        assert_eq!(got, vec![0, 3, 9]);
        assert!(r.entry(NUM_ENTRIES as u16).is_none());
    }
}
