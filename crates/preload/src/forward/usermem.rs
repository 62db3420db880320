//! Copies between the program's memory (raw addresses from intercepted
//! system call arguments) and our buffers or the request region's chunks.
//!
//! User addresses are trusted to be mapped, exactly as far as the program
//! passed them to the system call it made: a bad pointer faults here (the
//! program crashes with SIGSEGV where the kernel would have said EFAULT).
//! NULL is always checked. Chunk ranges are always bounds-checked against
//! the region layout (`ClientRegion::chunk_range`).

use core::marker::PhantomData;
use virtuos_abi::{ClientRegion, CHUNK_SIZE};

/// Copy `dst.len()` bytes from user address `src`.
pub fn read_user(src: u64, dst: &mut [u8]) -> bool {
    if src == 0 {
        return dst.is_empty();
    }
    // SAFETY: the program passed `src` as a buffer of at least this length
    // (module contract); `dst` is our own memory and cannot overlap it in a
    // way that matters for a byte copy of plain data.
    unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
    true
}

/// Copy `src` to user address `dst`.
pub fn write_user(dst: u64, src: &[u8]) -> bool {
    if dst == 0 {
        return src.is_empty();
    }
    // SAFETY: the program passed `dst` as an output buffer of at least this
    // length (module contract).
    unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
    true
}

pub fn read_u64(addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    read_user(addr, &mut b).then(|| u64::from_ne_bytes(b))
}

pub fn write_u64(addr: u64, v: u64) -> bool {
    write_user(addr, &v.to_ne_bytes())
}

/// Copy a NUL-terminated user string into `buf` (with its NUL). Returns its
/// length without the NUL, or None when it does not fit (or `src` is NULL).
pub fn read_cstr(src: u64, buf: &mut [u8]) -> Option<usize> {
    if src == 0 {
        return None;
    }
    for (i, slot) in buf.iter_mut().enumerate() {
        // SAFETY: reading the program's string byte by byte, stopping at the
        // first NUL, exactly as the kernel would (module contract).
        let b = unsafe { core::ptr::read((src as *const u8).wrapping_add(i)) };
        *slot = b;
        if b == 0 {
            return Some(i);
        }
    }
    None
}

/// Length of a NUL-terminated user string if it is below `max` bytes.
pub fn strlen_user(src: u64, max: usize) -> Option<usize> {
    if src == 0 {
        return None;
    }
    (0..max).find(|&i| {
        // SAFETY: as in `read_cstr`.
        unsafe { core::ptr::read((src as *const u8).wrapping_add(i)) == 0 }
    })
}

/// One `struct iovec` of the user array at `iov`.
pub fn read_iovec(iov: u64, index: usize) -> Option<(u64, u64)> {
    let at = iov.checked_add((index as u64).checked_mul(16)?)?;
    Some((read_u64(at)?, read_u64(at.checked_add(8)?)?))
}

/// A checked view of one data chunk of the mapped request region.
#[derive(Clone, Copy)]
pub struct ChunkRef<'a> {
    base: *mut u8,
    _region: PhantomData<&'a ClientRegion>,
}

impl<'a> ChunkRef<'a> {
    pub fn new(region: &'a ClientRegion, chunk: u16) -> Option<ChunkRef<'a>> {
        let at = ClientRegion::chunk_range(chunk, 0, CHUNK_SIZE as u64)?;
        Some(ChunkRef {
            base: region.base().wrapping_add(at),
            _region: PhantomData,
        })
    }

    fn range(off: usize, len: usize) -> bool {
        off.checked_add(len).is_some_and(|end| end <= CHUNK_SIZE)
    }

    /// Raw pointer to `[off, off+len)` of the chunk, for native calls.
    pub fn ptr(&self, off: usize, len: usize) -> Option<*mut u8> {
        Self::range(off, len).then(|| self.base.wrapping_add(off))
    }

    /// Copy `len` bytes from user address `src` to `off`.
    pub fn from_user(&self, off: usize, src: u64, len: usize) -> bool {
        if !Self::range(off, len) || (src == 0 && len > 0) {
            return false;
        }
        if len == 0 {
            return true;
        }
        // SAFETY: destination range checked against the chunk, which lies in
        // the live mapping borrowed for 'a; source per the module contract.
        unsafe { core::ptr::copy(src as *const u8, self.base.add(off), len) };
        true
    }

    /// Copy `len` bytes at `off` to user address `dst`.
    pub fn to_user(&self, off: usize, dst: u64, len: usize) -> bool {
        if !Self::range(off, len) || (dst == 0 && len > 0) {
            return false;
        }
        if len == 0 {
            return true;
        }
        // SAFETY: source range checked against the chunk; destination per
        // the module contract.
        unsafe { core::ptr::copy(self.base.add(off), dst as *mut u8, len) };
        true
    }

    pub fn write(&self, off: usize, src: &[u8]) -> bool {
        if !Self::range(off, src.len()) {
            return false;
        }
        // SAFETY: destination range checked; `src` is our own memory.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), self.base.add(off), src.len()) };
        true
    }

    pub fn read(&self, off: usize, dst: &mut [u8]) -> bool {
        if !Self::range(off, dst.len()) {
            return false;
        }
        // SAFETY: source range checked; `dst` is our own memory. The domain
        // may write concurrently: we copy bytes, never interpret in place.
        unsafe { core::ptr::copy_nonoverlapping(self.base.add(off), dst.as_mut_ptr(), dst.len()) };
        true
    }

    pub fn put_byte(&self, off: usize, b: u8) -> bool {
        self.write(off, &[b])
    }
}
