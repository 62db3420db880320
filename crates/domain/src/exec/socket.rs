//! Domain-side fixups of the socket calls that run through the generic
//! executor.
//!
//! - `socket`: only `AF_INET` and `AF_INET6` (EAFNOSUPPORT otherwise): a
//!   netlink socket would let a client reconfigure the domain's network
//!   namespace, a Unix socket would carry descriptors across the boundary.
//! - `*addrlen` / `*optlen` (the `SOCKLEN` slot): the client may lie, so the
//!   value is read from the chunk, clamped to the room the shape gives the
//!   buffer (`SOCKADDR` or `SOCKOPT`) and written back; the kernel reads and
//!   updates a private copy (so the client cannot raise it between the check
//!   and the call), which is copied back into the chunk afterwards.

use virtuos_abi::shape::{SOCKADDR, SOCKOPT};
use virtuos_abi::{ClientRegion, NULL_ARG};

/// The `socklen_t *` slot of a socket call and the room of the buffer it
/// describes.
pub(crate) fn len_slot(nr: i64) -> Option<(usize, u32)> {
    Some(match nr {
        libc::SYS_accept | libc::SYS_accept4 | libc::SYS_getsockname | libc::SYS_getpeername => {
            (2, SOCKADDR as u32)
        }
        libc::SYS_recvfrom => (5, SOCKADDR as u32),
        libc::SYS_getsockopt => (4, SOCKOPT as u32),
        _ => return None,
    })
}

/// Families a network domain creates sockets of.
pub(crate) fn check_socket(nr: i64, args: &[u64; 6]) -> Result<(), i32> {
    if nr == libc::SYS_socket {
        let family = args[0] as i32;
        if family != libc::AF_INET && family != libc::AF_INET6 {
            return Err(libc::EAFNOSUPPORT);
        }
    }
    Ok(())
}

/// A clamped private copy of a client's `socklen_t`.
pub(crate) struct PrivateLen {
    chunk: u16,
    off: u64,
    value: Box<u32>,
}

impl PrivateLen {
    /// Read `*len` at `off` of `chunk` (None: the slot is NULL), clamp it to
    /// `max` and write the clamped value back.
    pub(crate) fn take(
        region: &ClientRegion,
        chunk: Option<u16>,
        off: u64,
        max: u32,
    ) -> Result<Option<PrivateLen>, i32> {
        if off == NULL_ARG {
            return Ok(None);
        }
        let chunk = chunk.ok_or(libc::EFAULT)?;
        let mut b = [0u8; 4];
        if !region.read_chunk(chunk, off, &mut b) {
            return Err(libc::EFAULT);
        }
        let v = u32::from_ne_bytes(b).min(max);
        if !region.write_chunk(chunk, off, &v.to_ne_bytes()) {
            return Err(libc::EFAULT);
        }
        Ok(Some(PrivateLen {
            chunk,
            off,
            value: Box::new(v),
        }))
    }

    /// The pointer to hand to the kernel (valid while `self` lives).
    pub(crate) fn ptr(&mut self) -> u64 {
        let p: *mut u32 = &mut *self.value;
        p as u64
    }

    /// Copy the kernel's value back into the chunk.
    pub(crate) fn finish(self, region: &ClientRegion) {
        let _ = region.write_chunk(self.chunk, self.off, &self.value.to_ne_bytes());
    }
}
