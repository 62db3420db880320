//! Shared mappings of memfd-backed regions. The only module here that maps
//! memory; everything above it sees bounds-checked accessors.

use rustix::fd::{AsFd, OwnedFd};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use std::io;

/// A `MAP_SHARED` mapping of a whole file, unmapped on drop.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
    writable: bool,
}

// SAFETY: the mapping is plain shared memory; all access through it goes via
// atomics or explicit raw copies, which are sound from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only hands out atomics and bounds-checked copies.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Map `len` bytes of `fd` shared. The file must be at least `len` long
    /// (checked), otherwise touching the tail would raise SIGBUS.
    pub fn map(fd: impl AsFd, len: usize, writable: bool) -> io::Result<Mapping> {
        Self::map_at(fd, 0, len, writable)
    }

    /// Map `len` bytes of `fd` from `offset` (page aligned) shared. A regular
    /// file must reach `offset + len` (checked); a device (a guest's
    /// `/dev/daxN.M`, whose size `fstat` does not tell) is trusted to,
    /// because whoever opened it checked its size in sysfs.
    pub fn map_at(fd: impl AsFd, offset: u64, len: usize, writable: bool) -> io::Result<Mapping> {
        let st = rustix::fs::fstat(&fd)?;
        let is_file = rustix::fs::FileType::from_raw_mode(st.st_mode).is_file();
        let end = offset.checked_add(len as u64);
        let fits = end.is_some_and(|end| !is_file || (st.st_size >= 0 && st.st_size as u64 >= end));
        if !fits || !offset.is_multiple_of(crate::layout::PAGE_SIZE as u64) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "shared region is {} bytes, expected at least {len} from offset {offset}",
                    st.st_size
                ),
            ));
        }
        let prot = if writable {
            ProtFlags::READ | ProtFlags::WRITE
        } else {
            ProtFlags::READ
        };
        // SAFETY: a fresh mapping at an address the kernel chooses; it aliases
        // no Rust object. Its lifetime is tied to `Mapping` (munmap on drop).
        let ptr = unsafe {
            mmap(
                core::ptr::null_mut(),
                len,
                prot,
                MapFlags::SHARED,
                &fd,
                offset,
            )?
        };
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
            writable,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn writable(&self) -> bool {
        self.writable
    }

    pub fn base(&self) -> *mut u8 {
        self.ptr
    }

    /// A reference to a `T` made only of atomics at `offset`.
    ///
    /// Panics if `offset` is misaligned or out of range: offsets come from
    /// this crate's constants, never from the peer.
    pub fn atomic_ref<T: AtomicsOnly>(&self, offset: usize) -> &T {
        assert!(offset.is_multiple_of(core::mem::align_of::<T>()));
        assert!(offset + core::mem::size_of::<T>() <= self.len);
        // SAFETY: in bounds and aligned (asserted); `T` consists only of
        // atomics, for which every bit pattern is valid and concurrent
        // access by the peer is defined. Lives as long as `&self`.
        unsafe { &*(self.ptr.add(offset) as *const T) }
    }

    /// Copy `src` into the mapping at `offset`; false if out of range.
    pub fn write_bytes(&self, offset: usize, src: &[u8]) -> bool {
        if !self.writable
            || offset
                .checked_add(src.len())
                .is_none_or(|end| end > self.len)
        {
            return false;
        }
        // SAFETY: destination range checked above and writable; `src` is a
        // private buffer, so the two cannot overlap.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(offset), src.len()) };
        true
    }

    /// Copy from the mapping at `offset` into `dst`; false if out of range.
    pub fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> bool {
        if offset
            .checked_add(dst.len())
            .is_none_or(|end| end > self.len)
        {
            return false;
        }
        // SAFETY: source range checked above; `dst` is private memory.
        unsafe {
            core::ptr::copy_nonoverlapping(self.ptr.add(offset), dst.as_mut_ptr(), dst.len())
        };
        true
    }

    /// Read one byte (for scanning strings the peer wrote).
    pub fn byte(&self, offset: usize) -> Option<u8> {
        if offset >= self.len {
            return None;
        }
        // SAFETY: in range; a volatile read because the peer may write it.
        Some(unsafe { core::ptr::read_volatile(self.ptr.add(offset)) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped; no references outlive
        // `self` because every accessor borrows it.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// Marker for `#[repr(C)]` types made only of atomics (and padding bytes).
///
/// # Safety
/// Implementors must be valid for every bit pattern and have no non-atomic
/// fields that Rust code reads.
pub unsafe trait AtomicsOnly {}

// SAFETY: arrays of atomics are atomics only, valid for every bit pattern.
unsafe impl<const N: usize> AtomicsOnly for [core::sync::atomic::AtomicU32; N] {}
// SAFETY: as above.
unsafe impl AtomicsOnly for core::sync::atomic::AtomicU64 {}

/// Create an anonymous memory file of `len` bytes (sparse).
pub fn create_memfd(name: &str, len: usize) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)?;
    rustix::fs::ftruncate(&fd, len as u64)?;
    Ok(fd)
}

/// A memfd of `len` bytes whose size can never change again: whoever gets
/// a descriptor of it (a client) cannot make the other mappers (QEMU, the
/// domain) fault by truncating it.
pub fn create_sized_memfd(name: &str, len: usize) -> io::Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, len as u64)?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
    Ok(fd)
}
