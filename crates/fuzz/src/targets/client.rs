//! Client side: what a hostile domain controls (a completion's result and
//! extra word, the chunk's contents, the keys of epoll events) against the
//! preload library's code that takes them back.

use super::region;
use crate::rng::Rng;
use crate::{Counts, Target};
use virtuos::forward::epoll::{key, Table};
use virtuos::forward::marshal::{copy_in, copy_out, plan, Out, Slot};
use virtuos::forward::usermem::ChunkRef;
use virtuos_abi::ops::msg::{pack_recv_extra, unpack_recv_extra};
use virtuos_abi::shape::{shape, Arg, MAX_STRING};
use virtuos_abi::{ClientRegion, CHUNK_SIZE, NUM_CHUNKS};

const EIO: i64 = -(libc::EIO as i64);
/// Canary bytes after every user buffer.
const GUARD: usize = 64;
const CANARY: u8 = 0xa5;

/// A shaped call planned and copied in as the preload library does, then
/// completed by a hostile domain (garbage result, garbage chunk), then
/// copied back. Nothing outside the program's buffers may change; an
/// `OutBuf` gets at most its capacity (a larger result is EIO); input-only
/// buffers never change.
pub struct Completion {
    r: ClientRegion,
    ops: Vec<u16>,
    c: Counts,
}

impl Default for Completion {
    fn default() -> Self {
        Completion {
            r: region(),
            ops: (0..1024u16).filter(|&nr| shape(nr).is_some()).collect(),
            c: Counts::default(),
        }
    }
}

struct UserBuf {
    /// Declared size (capacity or struct size), then GUARD canary bytes.
    mem: Vec<u8>,
    size: usize,
}

impl Target for Completion {
    fn stats(&self) -> String {
        self.c.show()
    }

    fn case(&mut self, rng: &mut Rng) {
        let op = rng.pick(&self.ops);
        let mut sh = shape(op).expect("shaped");
        if op as i64 == libc::SYS_fcntl {
            sh[2] = rng.pick(&[Arg::Val, Arg::InOut(32), Arg::Out(8), Arg::In(8)]);
        } else if op as i64 == libc::SYS_ioctl {
            sh[2] = rng.pick(&[Arg::Out(4), Arg::In(4), Arg::Out(36), Arg::Out(28)]);
        }
        let mut args = [0u64; 6];
        for (i, a) in sh.iter().enumerate() {
            if matches!(a, Arg::Val | Arg::Fd | Arg::DirFd) {
                args[i] = rng.below(100);
            }
        }
        // The program's buffers: sizes first (length slots), then memory.
        let mut bufs: Vec<Option<UserBuf>> = (0..6).map(|_| None).collect();
        for (i, &a) in sh.iter().enumerate() {
            let size = match a {
                Arg::InBuf(n) | Arg::OutBuf(n) => {
                    let cap = if rng.chance(1, 16) {
                        CHUNK_SIZE - 64 + rng.index(128)
                    } else {
                        rng.len(600)
                    };
                    args[n as usize] = cap as u64;
                    cap
                }
                Arg::Path | Arg::OptPath | Arg::Str => rng.len(300) + 1,
                Arg::In(s) | Arg::OptIn(s) | Arg::Out(s) | Arg::InOut(s) | Arg::OptInOut(s) => {
                    s as usize
                }
                _ => continue,
            };
            if a.nullable() && rng.chance(1, 6) {
                continue; // NULL
            }
            let mut mem = vec![0u8; size + GUARD];
            rng.fill(&mut mem[..size]);
            mem[size..].fill(CANARY);
            if matches!(a, Arg::Path | Arg::OptPath | Arg::Str) {
                for b in &mut mem[..size - 1] {
                    *b = (*b).max(1);
                }
                mem[size - 1] = 0;
            }
            args[i] = mem.as_ptr() as u64;
            bufs[i] = Some(UserBuf { mem, size });
        }
        let strlens: Vec<(u64, usize)> = bufs
            .iter()
            .enumerate()
            .filter(|(i, _)| matches!(sh[*i], Arg::Path | Arg::OptPath | Arg::Str))
            .filter_map(|(_, b)| b.as_ref())
            .map(|b| (b.mem.as_ptr() as u64, b.size - 1))
            .collect();
        let mut strlen = |p: u64| {
            strlens
                .iter()
                .find(|&&(q, _)| q == p)
                .map(|&(_, n)| n)
                .filter(|&n| n < MAX_STRING)
                .ok_or(-(libc::ENAMETOOLONG as i64))
        };
        let Ok(mut l) = plan(&sh, &args, &mut strlen) else {
            self.c.hit("plan refused");
            return;
        };
        let chunk_index = rng.index(NUM_CHUNKS) as u16;
        let chunk = ChunkRef::new(&self.r, chunk_index).expect("chunk in range");
        assert_eq!(copy_in(&sh, &args, &mut l, &chunk, false), Ok(()));
        let before: Vec<Option<Vec<u8>>> = bufs
            .iter()
            .map(|b| b.as_ref().map(|b| b.mem.clone()))
            .collect();
        // The hostile domain: garbage over what the call uses, and beyond.
        let extra_len = rng.len(64);
        let garbage = rng.bytes((l.used + extra_len).min(CHUNK_SIZE));
        assert!(chunk.write(0, &garbage));
        let caps: Vec<u64> = l
            .slots
            .iter()
            .filter_map(|s| match s {
                Slot::Data { len, .. } => Some(*len as u64),
                _ => None,
            })
            .collect();
        let result = match rng.below(4) {
            0 => -(rng.below(4200) as i64),
            _ => rng.edgy(&caps) as i64,
        };
        let ret = copy_out(&sh, &args, &l, &chunk, result);
        // Every user buffer here is writable: never a short copy.
        let Out::Done(retv) = ret else {
            panic!("short copy into writable buffers: {ret:?}");
        };
        self.c.hit(if result < 0 {
            "errno"
        } else if ret == Out::Done(EIO) {
            "EIO (lying result)"
        } else {
            "copied"
        });
        let outbuf_over = (0..6).any(|i| {
            matches!(sh[i], Arg::OutBuf(_))
                && matches!(l.slots[i], Slot::Data { len, .. } if len > 0 && result as u64 > len as u64)
        });
        if result < 0 {
            assert_eq!(ret, Out::Done(result));
        } else if outbuf_over {
            assert_eq!(
                ret,
                Out::Done(EIO),
                "a result above the capacity must be EIO"
            );
        } else {
            assert_eq!(ret, Out::Done(result));
        }
        for i in 0..6 {
            let (Some(b), Some(old)) = (&bufs[i], &before[i]) else {
                continue;
            };
            assert!(
                b.mem[b.size..].iter().all(|&c| c == CANARY),
                "wrote past slot {i}"
            );
            let a = sh[i];
            let Slot::Data { off, len } = l.slots[i] else {
                assert_eq!(&b.mem, old, "slot {i} without data changed");
                continue;
            };
            let (off, len) = (off as usize, len as usize);
            assert!(len <= b.size);
            if result < 0 || !a.copies_out() {
                assert_eq!(&b.mem, old, "slot {i} ({a:?}) changed");
                continue;
            }
            let copied = match a {
                Arg::OutBuf(_) if len == 0 || retv < 0 => 0,
                Arg::OutBuf(_) => retv as usize,
                _ if retv == EIO => {
                    // Structs before the bad OutBuf may have been copied.
                    continue;
                }
                _ => len,
            };
            assert!(copied <= len);
            assert_eq!(&b.mem[..copied], &garbage[off..off + copied]);
            assert_eq!(&b.mem[copied..], &old[copied..], "slot {i} beyond the copy");
        }
        // OP_RECVMSG's extra word: lengths never above 16 bits.
        let extra = rng.u64();
        let (nl, cl, _) = unpack_recv_extra(extra);
        assert!(nl <= 0xffff && cl <= 0xffff);
        assert_eq!(
            unpack_recv_extra(pack_recv_extra(nl, cl, (extra >> 32) as u32)),
            unpack_recv_extra(extra)
        );
    }
}

/// epoll event keys from a hostile domain: `deliver` gives data only for
/// the key of a live member, disarms one-shot members once, and keeps its
/// counts consistent.
#[derive(Default)]
pub struct EpollKeys;

#[derive(Clone, Copy, Debug)]
struct M {
    fd: i32,
    key: u64,
    data: u64,
    oneshot: bool,
    armed: bool,
}

impl Target for EpollKeys {
    fn case(&mut self, rng: &mut Rng) {
        let mut t: Table<2, 8> = Table::new();
        let (i, _) = t.open(5, true).expect("a free set");
        let set = t.set(i);
        let mut model: Vec<M> = Vec::new();
        let mut retired: Vec<u64> = Vec::new();
        for _ in 0..40 {
            match rng.below(5) {
                0 => {
                    let fd = rng.below(12) as i32;
                    let oneshot = rng.bool();
                    let ev = if oneshot {
                        libc::EPOLLONESHOT as u32
                    } else {
                        0
                    } | 1;
                    let data = rng.u64();
                    match set.add(fd, fd as u32 + 100, ev, data) {
                        Ok(k) => {
                            assert!(model.iter().all(|m| m.fd != fd && m.key != k));
                            assert!(!retired.contains(&k), "a key was reused");
                            model.push(M {
                                fd,
                                key: k,
                                data,
                                oneshot,
                                armed: true,
                            });
                        }
                        Err(_) => assert!(model.len() == 8 || model.iter().any(|m| m.fd == fd)),
                    }
                }
                1 => {
                    let fd = rng.below(12) as i32;
                    let r = set.remove(fd);
                    match model.iter().position(|m| m.fd == fd) {
                        Some(p) => {
                            assert!(r.is_ok());
                            retired.push(model.swap_remove(p).key);
                        }
                        None => assert!(r.is_err()),
                    }
                }
                2 if !model.is_empty() => {
                    let p = rng.index(model.len());
                    let data = rng.u64();
                    assert!(set.modify(model[p].fd, 1, data).is_ok());
                    model[p].data = data;
                    model[p].oneshot = false;
                    model[p].armed = true;
                }
                _ => {
                    let k = match rng.below(4) {
                        0 if !model.is_empty() => model[rng.index(model.len())].key,
                        1 if !retired.is_empty() => retired[rng.index(retired.len())],
                        2 => key(rng.below(12) as i32, rng.u32()),
                        _ => rng.u64(),
                    };
                    let got = set.deliver(k);
                    match model.iter_mut().find(|m| m.key == k) {
                        Some(m) => {
                            assert_eq!(got, Some(m.data));
                            if m.oneshot {
                                m.armed = false;
                            }
                        }
                        None => assert_eq!(got, None, "data for a dead or forged key {k:#x}"),
                    }
                }
            }
            assert_eq!(set.len(), model.len());
            assert_eq!(set.armed(), model.iter().filter(|m| m.armed).count());
        }
    }
}
