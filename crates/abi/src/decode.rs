//! Domain side: decoding the untrusted contents of one request.
//!
//! The shape-driven argument checks (`marshal`), the walk over ancillary
//! data (`check_send_control`, `filter_recv_control`) and the `pollfd`
//! array of `OP_POLL` (`decode_pollfds`). Nothing here makes a system call
//! or follows a pointer the client wrote: the domain's executor
//! (`crates/domain/src/exec`) calls these before it executes anything, and
//! the fuzzing harness (`crates/fuzz`) drives exactly the same code with
//! hostile requests.

use crate::layout::{AT_FDCWD_ARG, CHUNK_SIZE, DOMAIN_FD_LIMIT, NULL_ARG};
use crate::region::ClientRegion;
use crate::shape::{Arg, Shape, MAX_STRING};

/// Private copies of the call's string arguments. Strings are copied out
/// of shared memory so that the client cannot remove the terminating NUL
/// between the check and the kernel's read (which would let the kernel read
/// past the chunk into the shadow's memory).
#[derive(Default)]
pub struct Strings {
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

    /// The copy whose first byte is at `ptr` (with its NUL), if any.
    pub fn get(&self, ptr: u64) -> Option<&[u8]> {
        self.bufs
            .iter()
            .find(|b| b.as_ptr() as u64 == ptr)
            .map(|b| b.as_slice())
    }
}

/// Turn the client's six slots into kernel arguments, checking each one.
/// Descriptors must be below `fd_limit` (itself at most `DOMAIN_FD_LIMIT`).
/// On success the result holds pointers into the chunk (for the full length
/// or struct size of the slot) or into `strings`.
pub fn marshal(
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

/// `sizeof(struct cmsghdr)` on x86_64.
pub const CMSG_HDR: usize = 16;

/// `CMSG_ALIGN`.
pub fn cmsg_align(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// One control message header at `at` of `buf` (`at + CMSG_HDR <=
/// buf.len()`): (len, level, type).
fn cmsg_header(buf: &[u8], at: usize) -> (usize, i32, i32) {
    let len = u64::from_ne_bytes(buf[at..at + 8].try_into().expect("8 bytes")) as usize;
    let level = i32::from_ne_bytes(buf[at + 8..at + 12].try_into().expect("4 bytes"));
    let ty = i32::from_ne_bytes(buf[at + 12..at + 16].try_into().expect("4 bytes"));
    (len, level, ty)
}

/// Whether a control message carries descriptors or credentials, which
/// cannot cross domains.
pub fn crosses_domains(level: i32, ty: i32) -> bool {
    level == libc::SOL_SOCKET && (ty == libc::SCM_RIGHTS || ty == libc::SCM_CREDENTIALS)
}

/// Check outgoing ancillary data (a private copy of the client's) the way
/// the kernel walks it (`for_each_cmsghdr` + `CMSG_OK`): EINVAL for a
/// malformed header or for `SCM_RIGHTS`/`SCM_CREDENTIALS`.
pub fn check_send_control(buf: &[u8]) -> Result<(), i32> {
    let mut at = 0;
    while at + CMSG_HDR <= buf.len() {
        let (len, level, ty) = cmsg_header(buf, at);
        if len < CMSG_HDR || len > buf.len() - at {
            return Err(libc::EINVAL);
        }
        if crosses_domains(level, ty) {
            return Err(libc::EINVAL);
        }
        at += cmsg_align(len);
    }
    Ok(())
}

/// Incoming ancillary data without descriptors and credentials; `close`
/// gets every descriptor of a dropped `SCM_RIGHTS` message.
pub fn filter_recv_control(buf: &[u8], close: &mut dyn FnMut(i32)) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf.len());
    let mut at = 0;
    while at + CMSG_HDR <= buf.len() {
        let (len, level, ty) = cmsg_header(buf, at);
        if len < CMSG_HDR || len > buf.len() - at {
            break;
        }
        let next = (at + cmsg_align(len)).min(buf.len());
        if crosses_domains(level, ty) {
            if ty == libc::SCM_RIGHTS {
                for fd in buf[at + CMSG_HDR..at + len].chunks_exact(4) {
                    close(i32::from_ne_bytes(fd.try_into().expect("4 bytes")));
                }
            }
        } else {
            if out.len() % 8 != 0 {
                out.resize(cmsg_align(out.len()), 0);
            }
            out.extend_from_slice(&buf[at..next]);
        }
        at = next;
    }
    out
}

/// Size of a `struct pollfd` in an `OP_POLL` chunk.
pub const POLLFD: usize = 8;

/// The `nfds` pollfds of an `OP_POLL` request, copied out of the chunk
/// (from offset 0), and for each whether it names a descriptor at or above
/// the client limit (the shadow's own: never polled, answered POLLNVAL;
/// its `fd` is -1 in the copy).
pub fn decode_pollfds(
    region: &ClientRegion,
    chunk: Option<u16>,
    nfds: u64,
    fd_limit: u64,
) -> Result<(Vec<libc::pollfd>, Vec<bool>), i32> {
    if nfds as usize > CHUNK_SIZE / POLLFD {
        return Err(libc::EINVAL);
    }
    let n = nfds as usize;
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut nval: Vec<bool> = Vec::new();
    if n > 0 {
        let chunk = chunk.ok_or(libc::EFAULT)?;
        let mut raw = vec![0u8; n * POLLFD];
        if !region.read_chunk(chunk, 0, &mut raw) {
            return Err(libc::EFAULT);
        }
        let limit = fd_limit.min(DOMAIN_FD_LIMIT);
        for e in raw.chunks_exact(POLLFD) {
            let fd = i32::from_ne_bytes([e[0], e[1], e[2], e[3]]);
            let events = i16::from_ne_bytes([e[4], e[5]]);
            let bad = fd >= 0 && fd as u64 >= limit;
            nval.push(bad);
            fds.push(libc::pollfd {
                fd: if bad { -1 } else { fd },
                events,
                revents: 0,
            });
        }
    }
    Ok((fds, nval))
}
