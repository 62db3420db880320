//! Fixed sizes and offsets of the shared regions.
//!
//! Both sides compute offsets from these constants; the header only carries
//! them so that a mismatch is detected (never to size anything from).

/// Page size assumed for layout (x86_64).
pub const PAGE_SIZE: usize = 4096;
/// Version of this ABI; bumped on any layout change.
pub const ABI_VERSION: u32 = 2;
/// `b"VIRTUOSR"` as a little-endian u64: the request region's magic.
pub const REGION_MAGIC: u64 = u64::from_le_bytes(*b"VIRTUOSR");
/// `b"VIRTUOSS"`: the domain state page's magic.
pub const STATE_MAGIC: u64 = u64::from_le_bytes(*b"VIRTUOSS");

/// One request entry is exactly one cache line.
pub const ENTRY_SIZE: usize = 64;
/// Request entries per (process, domain) region.
pub const NUM_ENTRIES: usize = 128;
/// Bytes in one data chunk: the most one forwarded call carries; larger
/// transfers are split into several calls.
pub const CHUNK_SIZE: usize = 256 * 1024;
/// Chunks in the data area. The backing memfd is sparse, so untouched chunks
/// cost no memory: the data area "grows on demand" page by page.
pub const NUM_CHUNKS: usize = 64;

/// Offset of the region header.
pub const HEADER_OFFSET: usize = 0;
/// Offset of the request entry array.
pub const ENTRIES_OFFSET: usize = PAGE_SIZE;
/// Offset of the data area (chunk 0).
pub const DATA_OFFSET: usize = ENTRIES_OFFSET + round_up(NUM_ENTRIES * ENTRY_SIZE, PAGE_SIZE);
/// Total size of one request region.
pub const REGION_SIZE: usize = DATA_OFFSET + NUM_CHUNKS * CHUNK_SIZE;
/// Size of the read-only (for clients) domain state page.
pub const STATE_SIZE: usize = PAGE_SIZE;

/// Remote descriptors at or above this number are the domain's own (control
/// sockets and such) and are never used on a client's behalf.
pub const DOMAIN_FD_LIMIT: u64 = 65536;
/// `AT_FDCWD` as it travels in an argument slot.
pub const AT_FDCWD_ARG: u64 = libc::AT_FDCWD as i64 as u64;
/// An optional pointer argument that was NULL in the client.
pub const NULL_ARG: u64 = u64::MAX;

pub const fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

// The layout invariants, checked at compile time.
const _: () = {
    assert!(DATA_OFFSET.is_multiple_of(PAGE_SIZE));
    assert!(REGION_SIZE.is_multiple_of(PAGE_SIZE));
    assert!(NUM_ENTRIES < u16::MAX as usize);
    assert!(NUM_CHUNKS < u16::MAX as usize);
    assert!(ENTRIES_OFFSET + NUM_ENTRIES * ENTRY_SIZE <= DATA_OFFSET);
};
