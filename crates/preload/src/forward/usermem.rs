//! Copies between the program's memory (raw addresses from intercepted
//! system call arguments) and our buffers or the request region's chunks.
//!
//! Every access to the program's memory goes through `sys::usercopy`,
//! which cannot fault: a bad address (unmapped, protected, in the kernel
//! half) makes the copy come up short and the call fail with EFAULT, as
//! natively. Chunk ranges are always bounds-checked against the region
//! layout (`ClientRegion::chunk_range`).

use crate::sys::usercopy;
use core::marker::PhantomData;
use virtuos_abi::{ClientRegion, CHUNK_SIZE};

const EFAULT: i64 = -(libc::EFAULT as i64);
const ENAMETOOLONG: i64 = -(libc::ENAMETOOLONG as i64);

/// Copy `dst.len()` bytes from user address `src`; false on a bad address.
pub fn read_user(src: u64, dst: &mut [u8]) -> bool {
    // SAFETY: `dst` is our own buffer of that length.
    unsafe { usercopy::copy_from_user(dst.as_mut_ptr(), src, dst.len()) == dst.len() }
}

/// Copy `src` to user address `dst`; false on a bad address.
pub fn write_user(dst: u64, src: &[u8]) -> bool {
    // SAFETY: `src` is our own buffer of that length.
    unsafe { usercopy::copy_to_user(dst, src.as_ptr(), src.len()) == src.len() }
}

pub fn read_u64(addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    read_user(addr, &mut b).then(|| u64::from_ne_bytes(b))
}

pub fn write_u64(addr: u64, v: u64) -> bool {
    write_user(addr, &v.to_ne_bytes())
}

/// Copy a NUL-terminated user string into `buf` (with its NUL): its
/// length without the NUL; ENAMETOOLONG when it does not fit, EFAULT on a
/// bad address (NULL included), as the kernel's `strncpy_from_user`.
pub fn read_cstr_checked(src: u64, buf: &mut [u8]) -> Result<usize, i64> {
    let cap = buf.len();
    match usercopy::copy_str_from_user(src, Some(buf), cap) {
        Ok(n) if n < cap => Ok(n),
        Ok(_) => Err(ENAMETOOLONG),
        Err(usercopy::BadAddress) => Err(EFAULT),
    }
}

/// `read_cstr_checked` without the reason.
pub fn read_cstr(src: u64, buf: &mut [u8]) -> Option<usize> {
    read_cstr_checked(src, buf).ok()
}

/// Length of a NUL-terminated user string if it is below `max` bytes:
/// ENAMETOOLONG if not, EFAULT on a bad address.
pub fn strlen_user_checked(src: u64, max: usize) -> Result<usize, i64> {
    match usercopy::copy_str_from_user(src, None, max) {
        Ok(n) if n < max => Ok(n),
        Ok(_) => Err(ENAMETOOLONG),
        Err(usercopy::BadAddress) => Err(EFAULT),
    }
}

/// `strlen_user_checked` without the reason.
pub fn strlen_user(src: u64, max: usize) -> Option<usize> {
    strlen_user_checked(src, max).ok()
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

    /// Copy `len` bytes from user address `src` to `off`; false if the
    /// range is outside the chunk or the user range is bad.
    pub fn from_user(&self, off: usize, src: u64, len: usize) -> bool {
        self.from_user_partial(off, src, len) == Some(len)
    }

    /// Copy up to `len` bytes from user address `src` to `off`: how many
    /// were copied before the first bad address (None: outside the chunk).
    pub fn from_user_partial(&self, off: usize, src: u64, len: usize) -> Option<usize> {
        if !Self::range(off, len) {
            return None;
        }
        // SAFETY: destination range checked against the chunk, which lies
        // in the live mapping borrowed for 'a; `usercopy` checks the source.
        Some(unsafe { usercopy::copy_from_user(self.base.add(off), src, len) })
    }

    /// Copy `len` bytes at `off` to user address `dst`; false if the range
    /// is outside the chunk or the user range is bad.
    pub fn to_user(&self, off: usize, dst: u64, len: usize) -> bool {
        self.to_user_partial(off, dst, len) == Some(len)
    }

    /// Copy up to `len` bytes at `off` to user address `dst`: how many
    /// were copied before the first bad address (None: outside the chunk).
    pub fn to_user_partial(&self, off: usize, dst: u64, len: usize) -> Option<usize> {
        if !Self::range(off, len) {
            return None;
        }
        // SAFETY: source range checked against the chunk; `usercopy`
        // checks the destination.
        Some(unsafe { usercopy::copy_to_user(dst, self.base.add(off), len) })
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
