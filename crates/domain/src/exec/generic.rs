//! Ordinary forwarded system calls, marshalled by the shape table.

use super::socket::{self, PrivateLen};
use super::{fcntl, ioctl, neg};
use crate::role::Role;
use virtuos_abi::entry::Request;
use virtuos_abi::shape::{shape, Arg, Shape, MAX_STRING};
use virtuos_abi::{ClientRegion, AT_FDCWD_ARG, DOMAIN_FD_LIMIT, NULL_ARG};

/// Private copies of the call's string arguments. Strings are copied out
/// of shared memory so that the client cannot remove the terminating NUL
/// between the check and the kernel's read (which would let the kernel read
/// past the chunk into the shadow's memory).
#[derive(Default)]
pub(crate) struct Strings {
    bufs: Vec<Vec<u8>>,
}

impl Strings {
    fn copy(&mut self, region: &ClientRegion, chunk: u16, off: u64) -> Result<u64, i32> {
        let len = region
            .chunk_strlen(chunk, off, MAX_STRING)
            .ok_or(libc::EFAULT)?;
        let mut buf = vec![0u8; len + 1];
        if !region.read_chunk(chunk, off, &mut buf) {
            return Err(libc::EFAULT);
        }
        buf[len] = 0;
        let ptr = buf.as_ptr() as u64;
        // The heap buffer does not move when `bufs` grows.
        self.bufs.push(buf);
        Ok(ptr)
    }
}

/// Turn the client's six slots into kernel arguments, checking each one.
/// Descriptors must be below `fd_limit` (itself at most `DOMAIN_FD_LIMIT`).
/// On success the result holds pointers into the chunk or into `strings`.
pub(crate) fn marshal(
    region: &ClientRegion,
    fd_limit: u64,
    chunk: Option<u16>,
    sh: &Shape,
    args: &[u64; 6],
    strings: &mut Strings,
) -> Result<[u64; 6], i32> {
    let fd_limit = fd_limit.min(DOMAIN_FD_LIMIT);
    let mut out = [0u64; 6];
    for (i, (&kind, &v)) in sh.iter().zip(args.iter()).enumerate() {
        out[i] = match kind {
            Arg::Unused => 0,
            Arg::Val => v,
            Arg::Fd if v < fd_limit => v,
            Arg::DirFd if v < fd_limit || v == AT_FDCWD_ARG => v,
            Arg::Fd | Arg::DirFd => return Err(libc::EBADF),
            k if k.nullable() && v == NULL_ARG => 0,
            Arg::Path | Arg::OptPath | Arg::Str => {
                strings.copy(region, chunk.ok_or(libc::EFAULT)?, v)?
            }
            Arg::InBuf(n) | Arg::OutBuf(n) => {
                let len = *args.get(n as usize).ok_or(libc::EFAULT)?;
                pointer(region, chunk, v, len)?
            }
            Arg::In(size)
            | Arg::OptIn(size)
            | Arg::Out(size)
            | Arg::InOut(size)
            | Arg::OptInOut(size) => pointer(region, chunk, v, size as u64)?,
        };
    }
    Ok(out)
}

fn pointer(region: &ClientRegion, chunk: Option<u16>, off: u64, len: u64) -> Result<u64, i32> {
    let chunk = chunk.ok_or(libc::EFAULT)?;
    region
        .chunk_ptr(chunk, off, len)
        .map(|p| p as u64)
        .ok_or(libc::EFAULT)
}

/// Validate and execute system call `req.op` for a domain of `role`.
pub(crate) fn execute(region: &ClientRegion, role: Role, fd_limit: u64, req: &Request) -> i64 {
    let Some(mut sh) = shape(req.op) else {
        return neg(libc::ENOSYS);
    };
    let nr = req.op as i64;
    let mut args = req.args;
    if nr == libc::SYS_fcntl {
        args[1] = fcntl::command(args[1]);
        match fcntl::arg_kind(args[1]) {
            Ok(kind) => sh[2] = kind,
            Err(e) => return neg(e),
        }
    } else if nr == libc::SYS_ioctl {
        args[1] = ioctl::request(args[1]);
        match ioctl::arg_kind(args[1]) {
            Ok(kind) => sh[2] = kind,
            Err(e) => return neg(e),
        }
    }
    if let Err(e) = socket::check_socket(role, nr, &args) {
        return neg(e);
    }
    let mut strings = Strings::default();
    let mut raw = match marshal(region, fd_limit, req.chunk, &sh, &args, &mut strings) {
        Ok(raw) => raw,
        Err(e) => return neg(e),
    };
    // The address is handed to the kernel from a checked private copy.
    let mut addr = None;
    if let Some(slots) = socket::addr_slots(nr) {
        match socket::private_addr(role, region, req.chunk, nr, &args, slots) {
            Ok(Some(a)) => {
                raw[slots.0] = a.as_ptr() as u64;
                raw[slots.1] = a.len() as u64;
                addr = Some(a);
            }
            Ok(None) => {}
            Err(e) => return neg(e),
        }
    }
    let mut len = None;
    if let Some((slot, max)) = socket::len_slot(nr) {
        match PrivateLen::take(region, req.chunk, args[slot], max) {
            Ok(Some(mut l)) => {
                raw[slot] = l.ptr();
                len = Some(l);
            }
            Ok(None) => {}
            Err(e) => return neg(e),
        }
    }
    // SAFETY: `nr` has a shape, so it is a file system or socket call that
    // does not touch this process's memory map or control flow; every
    // pointer slot was checked by `marshal` to lie inside the call's chunk
    // of the mapped region (for its full length or struct size) or points
    // into `strings`, `addr` (with its own length) or `len`, which live until the call returns (a
    // `socklen_t` bounds its buffer by the struct size: see `socket`);
    // descriptors are the client's.
    let r = unsafe { crate::sys::syscall(nr, raw) };
    if let Some(l) = len {
        l.finish(region);
    }
    if r == 0 && nr == libc::SYS_fcntl && args[1] as i32 == libc::F_GETLK {
        fcntl::holder_to_client(region, req.chunk, args[2]);
    }
    drop(strings);
    drop(addr);
    r
}
