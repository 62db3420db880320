//! Data transfer on forwarded descriptors: chunk-sized splitting of
//! read/write/pread64/pwrite64, vectored I/O gathered and scattered through
//! the chunk, and copies between descriptors of different domains (local,
//! storage, network: copy_file_range, sendfile, splice) through the chunks.
//!
//! Reads of a socket are never split: a second piece could block although
//! the first one already returned data (natively read returns what is
//! there), so a socket read returns at most one chunk.

use super::action::Action;
use super::caller::Call;
use super::fds::{self, Entry};
use super::{generic, marshal, usermem};
use virtuos_abi::shape::shape;
use virtuos_abi::CHUNK_SIZE;

const EIO: i64 = -(libc::EIO as i64);
const EINVAL: i64 = -(libc::EINVAL as i64);
const IOV_MAX: u64 = 1024;

/// read / write / pread64 / pwrite64 on forwarded `e`.
pub fn rw(nr: u64, args: [u64; 6], e: Entry) -> Action {
    let a = rw_inner(nr, args, e);
    if let Action::Done(r) = a {
        match nr as i64 {
            libc::SYS_read if !e.is_socket() => fds::reopen::moved(args[0], r, false),
            libc::SYS_write if !e.is_socket() => fds::reopen::moved(args[0], r, true),
            _ => {}
        }
    }
    a
}

fn rw_inner(nr: u64, args: [u64; 6], e: Entry) -> Action {
    let Some(sh) = shape(nr as u16) else {
        return Action::Done(EIO);
    };
    let mut call = match Call::begin(e) {
        Ok(c) => c,
        Err(err) => return Action::Done(err),
    };
    let positional = matches!(nr as i64, libc::SYS_pread64 | libc::SYS_pwrite64);
    let (buf, total, pos) = (args[1], args[2], args[3]);
    let mut a = [e.remote as u64, buf, total, pos, 0, 0];
    let is_read = matches!(nr as i64, libc::SYS_read | libc::SYS_pread64);
    if total <= CHUNK_SIZE as u64 || (e.is_socket() && is_read) {
        // (One chunk at most: the shape clamps the read.)
        return Action::Done(marshal::call_shaped(&mut call, nr as u16, &sh, &a));
    }
    let total = total.min(isize::MAX as u64);
    let mut done = 0u64;
    while done < total {
        let piece = (total - done).min(CHUNK_SIZE as u64);
        a[1] = buf.wrapping_add(done);
        a[2] = piece;
        if positional {
            a[3] = pos.wrapping_add(done);
        }
        let r = marshal::call_shaped(&mut call, nr as u16, &sh, &a);
        if r < 0 {
            return Action::Done(if done > 0 { done as i64 } else { r });
        }
        done += r as u64;
        if (r as u64) < piece {
            break;
        }
    }
    Action::Done(done as i64)
}

/// A cursor over a user iovec array.
struct Iov {
    base: u64,
    count: usize,
    index: usize,
    /// Bytes consumed of iov[index].
    within: u64,
}

impl Iov {
    /// Next contiguous user range of at most `max` bytes.
    fn next(&mut self, max: u64) -> Option<(u64, u64)> {
        while self.index < self.count {
            let (b, l) = usermem::read_iovec(self.base, self.index)?;
            if self.within < l {
                let n = (l - self.within).min(max);
                return Some((b.wrapping_add(self.within), n));
            }
            self.index += 1;
            self.within = 0;
        }
        None
    }

    fn advance(&mut self, n: u64) {
        self.within += n;
    }
}

/// Gather up to `max` bytes of the user iovec array into `chunk` at `off`;
/// returns the bytes gathered.
pub(super) fn gather(
    chunk: &super::usermem::ChunkRef<'_>,
    off: usize,
    iov: u64,
    count: usize,
    max: u64,
) -> Result<u64, i64> {
    let mut cur = Iov {
        base: iov,
        count,
        index: 0,
        within: 0,
    };
    let mut filled = 0u64;
    while filled < max {
        let Some((b, n)) = cur.next(max - filled) else {
            break;
        };
        if !chunk.from_user(off + filled as usize, b, n as usize) {
            return Err(-(libc::EFAULT as i64));
        }
        cur.advance(n);
        filled += n;
    }
    Ok(filled)
}

/// Scatter `n` bytes of `chunk` at `off` into the user iovec array.
pub(super) fn scatter(
    chunk: &super::usermem::ChunkRef<'_>,
    off: usize,
    iov: u64,
    count: usize,
    n: u64,
) -> Result<(), i64> {
    let mut cur = Iov {
        base: iov,
        count,
        index: 0,
        within: 0,
    };
    let mut copied = 0u64;
    while copied < n {
        let Some((b, len)) = cur.next(n - copied) else {
            break;
        };
        if !chunk.to_user(off + copied as usize, b, len as usize) {
            return Err(-(libc::EFAULT as i64));
        }
        cur.advance(len);
        copied += len;
    }
    Ok(())
}

pub(super) fn iov_total(iov: u64, count: usize) -> Result<u64, i64> {
    let mut total = 0u64;
    for i in 0..count {
        let (_, l) = usermem::read_iovec(iov, i).ok_or(-(libc::EFAULT as i64))?;
        total = total.checked_add(l).ok_or(EINVAL)?;
    }
    if total > isize::MAX as u64 {
        return Err(EINVAL);
    }
    Ok(total)
}

/// readv / writev / preadv / pwritev / preadv2 / pwritev2.
pub fn vectored(nr: u64, args: [u64; 6], e: Entry) -> Action {
    let a = vectored_inner(nr, args, e);
    let write = matches!(
        nr as i64,
        libc::SYS_writev | libc::SYS_pwritev | libc::SYS_pwritev2
    );
    let at_offset = match nr as i64 {
        libc::SYS_readv | libc::SYS_writev => true,
        libc::SYS_preadv2 | libc::SYS_pwritev2 => args[3] as i64 == -1,
        _ => false,
    };
    if let Action::Done(r) = a {
        if at_offset && !e.is_socket() {
            fds::reopen::moved(args[0], r, write);
        }
    }
    a
}

fn vectored_inner(nr: u64, args: [u64; 6], e: Entry) -> Action {
    let (iov, cnt) = (args[1], args[2]);
    let write = matches!(
        nr as i64,
        libc::SYS_writev | libc::SYS_pwritev | libc::SYS_pwritev2
    );
    let mut offset: Option<i64> = match nr as i64 {
        libc::SYS_preadv | libc::SYS_pwritev => Some(args[3] as i64),
        libc::SYS_preadv2 | libc::SYS_pwritev2 => {
            // RWF_HIPRI is a hint we may ignore; the rest we cannot honour.
            if args[5] & !(libc::RWF_HIPRI as u64) != 0 {
                return Action::Done(-(libc::EOPNOTSUPP as i64));
            }
            (args[3] as i64 != -1).then_some(args[3] as i64)
        }
        _ => None,
    };
    if offset.is_some_and(|o| o < 0) {
        return Action::Done(EINVAL);
    }
    if cnt > IOV_MAX {
        return Action::Done(EINVAL);
    }
    let total = match iov_total(iov, cnt as usize) {
        Ok(t) => t,
        Err(err) => return Action::Done(err),
    };
    if total == 0 {
        return Action::Done(0);
    }
    let mut call = match Call::begin(e) {
        Ok(c) => c,
        Err(err) => return Action::Done(err),
    };
    let Some(chunk) = call.chunk() else {
        return Action::Done(EIO);
    };
    let one_piece = e.is_socket() && !write;
    let mut cur = Iov {
        base: iov,
        count: cnt as usize,
        index: 0,
        within: 0,
    };
    let mut done = 0u64;
    while done < total {
        let want = (total - done).min(CHUNK_SIZE as u64);
        let (op, pos) = match (write, offset) {
            (false, None) => (libc::SYS_read, 0),
            (false, Some(o)) => (libc::SYS_pread64, o as u64),
            (true, None) => (libc::SYS_write, 0),
            (true, Some(o)) => (libc::SYS_pwrite64, o as u64),
        };
        let mut faulted = false;
        let r = if write {
            // Gather up to `want` bytes into the chunk.
            let mut filled = 0u64;
            let mut probe = Iov { ..cur };
            while filled < want {
                let Some((b, n)) = probe.next(want - filled) else {
                    break;
                };
                let got = chunk
                    .from_user_partial(filled as usize, b, n as usize)
                    .unwrap_or(0) as u64;
                filled += got;
                if got < n {
                    // The kernel writes what it could copy before the bad
                    // address (EFAULT if nothing).
                    faulted = true;
                    break;
                }
                probe.advance(n);
            }
            if filled == 0 && faulted {
                return Action::Done(if done > 0 {
                    done as i64
                } else {
                    -(libc::EFAULT as i64)
                });
            }
            let r = call.result(op as u16, [e.remote as u64, 0, filled, pos, 0, 0], true);
            if r >= 0 && r as u64 > filled {
                return Action::Done(EIO);
            }
            if r > 0 {
                skip(&mut cur, r as u64);
            }
            r
        } else {
            let r = call.result(op as u16, [e.remote as u64, 0, want, pos, 0, 0], true);
            if r >= 0 && r as u64 > want {
                return Action::Done(EIO);
            }
            // Scatter what arrived.
            let mut copied = 0u64;
            while r > 0 && copied < r as u64 {
                let Some((b, n)) = cur.next(r as u64 - copied) else {
                    break;
                };
                let got = chunk
                    .to_user_partial(copied as usize, b, n as usize)
                    .unwrap_or(0) as u64;
                copied += got;
                if got < n {
                    faulted = true;
                    break;
                }
                cur.advance(n);
            }
            if faulted {
                // As a read into a partly bad buffer: what was copied, and
                // the position moved only by that much.
                if offset.is_none() {
                    call.result(
                        libc::SYS_lseek as u16,
                        [
                            e.remote as u64,
                            (copied as i64 - r) as u64,
                            libc::SEEK_CUR as u64,
                            0,
                            0,
                            0,
                        ],
                        false,
                    );
                }
                let total = done + copied;
                return Action::Done(if total > 0 {
                    total as i64
                } else {
                    -(libc::EFAULT as i64)
                });
            }
            r
        };
        if r < 0 {
            return Action::Done(if done > 0 { done as i64 } else { r });
        }
        done += r as u64;
        if let Some(o) = offset.as_mut() {
            *o += r;
        }
        if (r as u64) < want || one_piece || faulted {
            break;
        }
    }
    Action::Done(done as i64)
}

fn skip(cur: &mut Iov, mut n: u64) {
    while n > 0 {
        let Some((_, len)) = cur.next(n) else { break };
        cur.advance(len);
        n -= len;
    }
}

/// One side of a user-level copy.
#[derive(Clone, Copy)]
enum Side {
    Local(i32),
    /// (entry, remote fd)
    Remote(Entry, u32),
}

/// copy_file_range / sendfile / splice.
pub fn transfer(nr: u64, args: [u64; 6]) -> Action {
    let a = transfer_inner(nr, args);
    if let Action::Done(r) = a {
        let (fd_in, off_in, fd_out, off_out, _) = transfer_args(nr, &args);
        if off_in == 0 {
            fds::reopen::moved(fd_in, r, false);
        }
        if off_out == 0 {
            fds::reopen::moved(fd_out, r, true);
        }
    }
    a
}

/// (in fd, in offset ptr, out fd, out offset ptr, length)
fn transfer_args(nr: u64, args: &[u64; 6]) -> (u64, u64, u64, u64, u64) {
    match nr as i64 {
        libc::SYS_sendfile => (args[1], args[2], args[0], 0, args[3]),
        _ => (args[0], args[1], args[2], args[3], args[4]),
    }
}

fn transfer_inner(nr: u64, args: [u64; 6]) -> Action {
    let (fd_in, off_in, fd_out, off_out, len) = transfer_args(nr, &args);
    let (ein, eout) = (fds::get(fd_in), fds::get(fd_out));
    match (ein, eout) {
        (None, None) => return Action::Local,
        (Some(i), Some(o)) if i.domain == o.domain => {
            let Some(sh) = shape(nr as u16) else {
                return Action::Done(EIO);
            };
            let mut a = args;
            if nr as i64 == libc::SYS_sendfile {
                a[0] = o.remote as u64;
                a[1] = i.remote as u64;
            } else {
                a[0] = i.remote as u64;
                a[2] = o.remote as u64;
            }
            return Action::Done(generic::forward(nr, &a, &sh, i));
        }
        _ => {}
    }
    if nr as i64 == libc::SYS_copy_file_range && args[5] != 0 {
        return Action::Done(EINVAL);
    }
    // A local side must be open the right way round, as the kernel checks
    // before moving anything (EBADF).
    for (fd, e, want_write) in [(fd_in, ein, false), (fd_out, eout, true)] {
        if e.is_none() {
            let fl = super::host::fcntl(fd as i32, libc::F_GETFL, 0);
            let mode = fl as i32 & libc::O_ACCMODE;
            let ok = fl >= 0
                && fl as i32 & libc::O_PATH == 0
                && if want_write {
                    mode != libc::O_RDONLY
                } else {
                    mode != libc::O_WRONLY
                };
            if !ok {
                return Action::Done(-(libc::EBADF as i64));
            }
        }
    }
    let src = ein.map_or(Side::Local(fd_in as i32), |e| Side::Remote(e, e.remote));
    let dst = eout.map_or(Side::Local(fd_out as i32), |e| Side::Remote(e, e.remote));
    let read_off = |p: u64| -> Result<Option<i64>, i64> {
        if p == 0 {
            return Ok(None);
        }
        let v = usermem::read_u64(p).ok_or(-(libc::EFAULT as i64))? as i64;
        if v < 0 {
            return Err(EINVAL);
        }
        Ok(Some(v))
    };
    let (mut oin, mut oout) = match (read_off(off_in), read_off(off_out)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return Action::Done(e),
    };
    let r = copy_loop(src, dst, &mut oin, &mut oout, len);
    if r >= 0 {
        if let Some(o) = oin {
            usermem::write_u64(off_in, o as u64);
        }
        if let Some(o) = oout {
            usermem::write_u64(off_out, o as u64);
        }
    }
    Action::Done(r)
}

fn begin_side(s: Side) -> Result<Option<Call>, i64> {
    match s {
        Side::Local(_) => Ok(None),
        Side::Remote(d, _) => Call::begin(d).map(Some),
    }
}

/// Copy through the chunk of the source's domain (or of the destination's
/// when the source is local); between two domains, chunk to chunk.
fn copy_loop(src: Side, dst: Side, oin: &mut Option<i64>, oout: &mut Option<i64>, len: u64) -> i64 {
    let mut scall = match begin_side(src) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let mut dcall = match begin_side(dst) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let schunk = scall.as_ref().map(|c| c.chunk());
    let dchunk = dcall.as_ref().map(|c| c.chunk());
    let (schunk, dchunk) = match (schunk, dchunk) {
        (Some(None), _) | (_, Some(None)) => return EIO,
        (a, b) => (a.flatten(), b.flatten()),
    };
    // The staging buffer: the source's chunk, else the destination's.
    let Some(stage) = schunk.as_ref().or(dchunk.as_ref()) else {
        return EIO;
    };
    // A remote file read at its current position: read positionally and
    // move the position by what was written (not by what was read), as
    // the kernel does; sockets and pipes (ESPIPE) are read plainly.
    let mut seek_back: Option<u32> = None;
    if let (Side::Remote(_, r), Some(call), None) = (src, scall.as_mut(), *oin) {
        let p = call.result(
            libc::SYS_lseek as u16,
            [r as u64, 0, libc::SEEK_CUR as u64, 0, 0, 0],
            false,
        );
        if p >= 0 {
            *oin = Some(p);
            seek_back = Some(r);
        }
    }
    let r = copy_pieces(
        src, dst, &mut scall, &mut dcall, &schunk, &dchunk, stage, oin, oout, len,
    );
    if let (Some(fd), Some(call), Some(pos)) = (seek_back, scall.as_mut(), *oin) {
        call.result(
            libc::SYS_lseek as u16,
            [fd as u64, pos as u64, libc::SEEK_SET as u64, 0, 0, 0],
            false,
        );
        *oin = None;
    }
    r
}

#[allow(clippy::too_many_arguments)]
fn copy_pieces(
    src: Side,
    dst: Side,
    scall: &mut Option<Call>,
    dcall: &mut Option<Call>,
    schunk: &Option<super::usermem::ChunkRef<'static>>,
    dchunk: &Option<super::usermem::ChunkRef<'static>>,
    stage: &super::usermem::ChunkRef<'static>,
    oin: &mut Option<i64>,
    oout: &mut Option<i64>,
    len: u64,
) -> i64 {
    let len = len.min(isize::MAX as u64);
    let mut done = 0u64;
    while done < len {
        let piece = (len - done).min(CHUNK_SIZE as u64) as usize;
        let Some(ptr) = stage.ptr(0, piece) else {
            return EIO;
        };
        let n = match (src, scall.as_mut()) {
            (Side::Remote(_, r), Some(call)) => {
                let (op, pos) = match *oin {
                    Some(o) => (libc::SYS_pread64, o as u64),
                    None => (libc::SYS_read, 0),
                };
                let n = call.result(op as u16, [r as u64, 0, piece as u64, pos, 0, 0], true);
                if n > piece as i64 {
                    return EIO;
                }
                n
            }
            (Side::Local(fd), _) => super::host::read_raw(fd, ptr, piece, *oin),
            _ => return EIO,
        };
        if n <= 0 {
            if n < 0 && done == 0 {
                return n;
            }
            break;
        }
        let w = match (dst, dcall.as_mut()) {
            (Side::Local(fd), _) => super::host::write_raw(fd, ptr, n as usize, *oout),
            (Side::Remote(_, r), Some(call)) => {
                if let Some(d) = dchunk.as_ref().filter(|_| schunk.is_some()) {
                    // Two domains: move the bytes into the destination's chunk.
                    if !d.from_user(0, ptr as u64, n as usize) {
                        return EIO;
                    }
                }
                let (op, pos) = match *oout {
                    Some(o) => (libc::SYS_pwrite64, o as u64),
                    None => (libc::SYS_write, 0),
                };
                let w = call.result(op as u16, [r as u64, 0, n as u64, pos, 0, 0], true);
                if w > n {
                    return EIO;
                }
                w
            }
            _ => return EIO,
        };
        if w < 0 {
            if done == 0 {
                return w;
            }
            break;
        }
        done += w as u64;
        if let Some(o) = oin.as_mut() {
            *o += w;
        }
        if let Some(o) = oout.as_mut() {
            *o += w;
        }
        if w < n || (n as usize) < piece {
            break;
        }
    }
    done as i64
}
