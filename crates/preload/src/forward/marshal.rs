//! Shape-driven marshalling: lay out a call's pointer data in its chunk,
//! copy inputs in, and copy outputs back, all bounds-checked.
//!
//! Layout: pointer slots in slot order, each at an 8-byte aligned offset
//! from 0; the slot then carries that offset. NULL in a nullable slot
//! travels as `NULL_ARG`. An `OutBuf` larger than what is left of the chunk
//! is clamped (its length slot shrinks); an `InBuf` that does not fit is
//! E2BIG (callers split large transfers first).

use super::caller::Call;
use super::usermem::{self, ChunkRef};
use virtuos_abi::shape::{Arg, Shape, MAX_STRING};
use virtuos_abi::{CHUNK_SIZE, NULL_ARG};

const EFAULT: i64 = -(libc::EFAULT as i64);
const EIO: i64 = -(libc::EIO as i64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Passed as is (scalar, or an already translated descriptor).
    Value,
    /// NULL in a nullable pointer slot.
    Null,
    /// `len` bytes at `off` in the chunk.
    Data { off: u32, len: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub slots: [Slot; 6],
    /// What the domain gets in each slot.
    pub remote: [u64; 6],
    /// Bytes of the chunk in use.
    pub used: usize,
}

impl Layout {
    pub fn uses_chunk(&self) -> bool {
        self.slots.iter().any(|s| matches!(s, Slot::Data { .. }))
    }
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// Compute the layout of a call with `shape` and (fd-translated) `args`.
/// `strlen(ptr)` measures a user string (without NUL) if it is shorter than
/// `MAX_STRING` (errors: ENAMETOOLONG, EFAULT).
pub fn plan(
    shape: &Shape,
    args: &[u64; 6],
    strlen: &mut dyn FnMut(u64) -> Result<usize, i64>,
) -> Result<Layout, i64> {
    let mut l = Layout {
        slots: [Slot::Value; 6],
        remote: *args,
        used: 0,
    };
    let mut off = 0usize;
    for i in 0..6 {
        let a = shape[i];
        if !a.is_pointer() {
            continue;
        }
        let p = args[i];
        let start = align8(off);
        let room = CHUNK_SIZE.saturating_sub(start);
        let len: usize = match a {
            Arg::Path | Arg::OptPath | Arg::Str => {
                if p == 0 {
                    if a.nullable() {
                        l.slots[i] = Slot::Null;
                        l.remote[i] = NULL_ARG;
                        continue;
                    }
                    return Err(EFAULT);
                }
                let n = strlen(p)?;
                n + 1
            }
            Arg::InBuf(n) | Arg::OutBuf(n) => {
                let want = *args.get(n as usize).ok_or(EIO)?;
                let len = if want > room as u64 {
                    if matches!(a, Arg::InBuf(_)) {
                        return Err(-(libc::E2BIG as i64));
                    }
                    l.remote[n as usize] = room as u64;
                    room
                } else {
                    want as usize
                };
                if p == 0 && len > 0 {
                    return Err(EFAULT);
                }
                len
            }
            Arg::In(s) | Arg::Out(s) | Arg::InOut(s) => {
                if p == 0 {
                    return Err(EFAULT);
                }
                s as usize
            }
            Arg::OptIn(s) | Arg::OptInOut(s) => {
                if p == 0 {
                    l.slots[i] = Slot::Null;
                    l.remote[i] = NULL_ARG;
                    continue;
                }
                s as usize
            }
            Arg::Unused | Arg::Val | Arg::Fd | Arg::DirFd => continue,
        };
        if len > room {
            return Err(match a {
                Arg::Path | Arg::OptPath | Arg::Str => -(libc::ENAMETOOLONG as i64),
                _ => -(libc::E2BIG as i64),
            });
        }
        l.slots[i] = Slot::Data {
            off: start as u32,
            len: len as u32,
        };
        l.remote[i] = start as u64;
        off = start + len;
    }
    l.used = off;
    Ok(l)
}

/// Copy the inputs of `layout` from user memory (`args`) into the chunk.
/// `partial`: the call writes what it was given (write, pwrite64): an
/// input buffer that is readable only in part becomes that part, as the
/// kernel writes what it could copy before the bad address.
pub fn copy_in(
    shape: &Shape,
    args: &[u64; 6],
    l: &mut Layout,
    chunk: &ChunkRef<'_>,
    partial: bool,
) -> Result<(), i64> {
    for i in 0..6 {
        let Slot::Data { off, len } = l.slots[i] else {
            continue;
        };
        let (off, len) = (off as usize, len as usize);
        let a = shape[i];
        if !a.copies_in() {
            continue;
        }
        let got = chunk.from_user_partial(off, args[i], len).ok_or(EFAULT)?;
        if got < len {
            match a {
                Arg::InBuf(n) if partial && got > 0 => {
                    l.remote[n as usize] = got as u64;
                    l.slots[i] = Slot::Data {
                        off: off as u32,
                        len: got as u32,
                    };
                }
                _ => return Err(EFAULT),
            }
        }
        if matches!(a, Arg::Path | Arg::OptPath | Arg::Str) {
            // The string may have changed since we measured it: terminate.
            if len == 0 || !chunk.put_byte(off + len - 1, 0) {
                return Err(EFAULT);
            }
        }
    }
    Ok(())
}

/// Copy the outputs back after the call returned `result`. Returns the
/// result, or EIO if the domain claims more bytes than it was given.
/// A bad output address is EFAULT, except for an `OutBuf` that could be
/// written in part: then (`Short`) the bytes that were.
pub fn copy_out(
    shape: &Shape,
    args: &[u64; 6],
    l: &Layout,
    chunk: &ChunkRef<'_>,
    result: i64,
) -> Out {
    if result < 0 {
        return Out::Done(result);
    }
    for i in 0..6 {
        let Slot::Data { off, len } = l.slots[i] else {
            continue;
        };
        let (off, len) = (off as usize, len as usize);
        match shape[i] {
            Arg::OutBuf(_) => {
                if len == 0 {
                    // A size query (getxattr(..., NULL, 0)): nothing to copy.
                    continue;
                }
                if result as u64 > len as u64 {
                    return Out::Done(EIO);
                }
                let got = chunk.to_user_partial(off, args[i], result as usize);
                match got {
                    Some(g) if g == result as usize => {}
                    Some(g) => return Out::Short(g),
                    None => return Out::Done(EFAULT),
                }
            }
            a if a.copies_out() && !chunk.to_user(off, args[i], len) => return Out::Done(EFAULT),
            _ => {}
        }
    }
    Out::Done(result)
}

/// What `copy_out` made of a call's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    Done(i64),
    /// The output buffer was writable for only this many bytes.
    Short(usize),
}

/// Marshal, call and unmarshal: `args` holds user pointers and already
/// translated descriptors.
pub fn call_shaped(call: &mut Call, nr: u16, shape: &Shape, args: &[u64; 6]) -> i64 {
    call_shaped_extra(call, nr, shape, args).0
}

/// `call_shaped`, also returning the domain's extra word (0 on errors).
pub fn call_shaped_extra(call: &mut Call, nr: u16, shape: &Shape, args: &[u64; 6]) -> (i64, u64) {
    let Some(chunk) = call.chunk() else {
        return (EIO, 0);
    };
    let mut l = match plan(shape, args, &mut |p| {
        usermem::strlen_user_checked(p, MAX_STRING)
    }) {
        Ok(l) => l,
        Err(e) => return (e, 0),
    };
    let writes = matches!(nr as i64, libc::SYS_write | libc::SYS_pwrite64);
    if let Err(e) = copy_in(shape, args, &mut l, &chunk, writes) {
        return (e, 0);
    }
    let (r, extra) = match call.invoke(nr, l.remote, l.uses_chunk()) {
        Ok(x) => x,
        Err(e) => (e, 0),
    };
    match copy_out(shape, args, &l, &chunk, r) {
        Out::Done(r) => (r, extra),
        Out::Short(got) => (short_read(call, nr, &l, r, got), extra),
    }
}

/// A read whose result (`r` bytes) fit in the program's buffer only for
/// `got` bytes: the kernel returns what it could copy (EFAULT if nothing)
/// and moves the file position only by that much; a plain `read` of a
/// seekable file is moved back by the rest. (A socket's bytes are gone:
/// the domain consumed them.)
fn short_read(call: &mut Call, nr: u16, l: &Layout, r: i64, got: usize) -> i64 {
    if nr as i64 == libc::SYS_read {
        let back = r - got as i64;
        call.result(
            libc::SYS_lseek as u16,
            [l.remote[0], (-back) as u64, libc::SEEK_CUR as u64, 0, 0, 0],
            false,
        );
    }
    if got > 0 {
        got as i64
    } else {
        EFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtuos_abi::shape::shape;

    fn sh(nr: i64) -> Shape {
        shape(nr as u16).unwrap()
    }

    #[test]
    fn offsets_are_aligned_and_in_slot_order() {
        // renameat(dirfd, "abc", dirfd, "defgh")
        let s = sh(libc::SYS_renameat);
        let l = plan(&s, &[3, 0x1000, 4, 0x2000, 0, 0], &mut |p| {
            Ok(if p == 0x1000 { 3 } else { 5 })
        })
        .unwrap();
        assert_eq!(l.slots[1], Slot::Data { off: 0, len: 4 });
        assert_eq!(l.slots[3], Slot::Data { off: 8, len: 6 });
        assert_eq!(l.remote, [3, 0, 4, 8, 0, 0]);
        assert!(l.uses_chunk());
        // newfstatat(dirfd, path(9 chars), statbuf, flags)
        let s = sh(libc::SYS_newfstatat);
        let l = plan(&s, &[3, 0x1000, 0x2000, 0, 0, 0], &mut |_| Ok(9)).unwrap();
        assert_eq!(l.slots[2], Slot::Data { off: 16, len: 144 });
        for slot in l.slots {
            if let Slot::Data { off, .. } = slot {
                assert_eq!(off % 8, 0);
            }
        }
    }

    #[test]
    fn nulls_and_bounds() {
        // utimensat(fd, NULL, NULL, 0): both optional slots NULL.
        let s = sh(libc::SYS_utimensat);
        let l = plan(&s, &[3, 0, 0, 0, 0, 0], &mut |_| {
            Err(-(libc::ENAMETOOLONG as i64))
        })
        .unwrap();
        assert_eq!(l.slots[1], Slot::Null);
        assert_eq!(l.remote[1], NULL_ARG);
        assert_eq!(l.remote[2], NULL_ARG);
        assert!(!l.uses_chunk());
        // A NULL required path is EFAULT, a NULL stat buffer too.
        let s = sh(libc::SYS_newfstatat);
        assert_eq!(
            plan(&s, &[3, 0, 0x10, 0, 0, 0], &mut |_| Ok(1)),
            Err(EFAULT)
        );
        assert_eq!(
            plan(&s, &[3, 0x10, 0, 0, 0, 0], &mut |_| Ok(1)),
            Err(EFAULT)
        );
        // Too long a path.
        assert_eq!(
            plan(&s, &[3, 0x10, 0x20, 0, 0, 0], &mut |_| Err(
                -(libc::ENAMETOOLONG as i64)
            )),
            Err(-(libc::ENAMETOOLONG as i64))
        );
        // A write larger than a chunk is E2BIG (split by io.rs first).
        let s = sh(libc::SYS_write);
        assert_eq!(
            plan(&s, &[3, 0x10, CHUNK_SIZE as u64 + 1, 0, 0, 0], &mut |_| {
                Err(-(libc::ENAMETOOLONG as i64))
            }),
            Err(-(libc::E2BIG as i64))
        );
        // A getdents64 buffer larger than a chunk is clamped.
        let s = sh(libc::SYS_getdents64);
        let l = plan(&s, &[3, 0x10, 1 << 30, 0, 0, 0], &mut |_| {
            Err(-(libc::ENAMETOOLONG as i64))
        })
        .unwrap();
        assert_eq!(l.remote[2], CHUNK_SIZE as u64);
        // getxattr(path, name, NULL, 0): a size query is fine.
        let s = sh(libc::SYS_getxattr);
        let l = plan(&s, &[0x10, 0x20, 0, 0, 0, 0], &mut |_| Ok(4)).unwrap();
        assert_eq!(l.slots[2], Slot::Data { off: 16, len: 0 });
        // ... but a NULL buffer with a length is EFAULT.
        assert_eq!(
            plan(&s, &[0x10, 0x20, 0, 8, 0, 0], &mut |_| Ok(4)),
            Err(EFAULT)
        );
    }
}
