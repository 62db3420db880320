//! Domain side: what a hostile client controls (the submit list, its
//! entries, the chunks) against the code that decodes it.

use super::region;
use crate::rng::Rng;
use crate::{Counts, Target};
use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use virtuos_abi::decode::{self, Strings, CMSG_HDR, POLLFD};
use virtuos_abi::entry::{Phase, PHASE_MASK};
use virtuos_abi::layout::*;
use virtuos_abi::list::{self, ListError};
use virtuos_abi::shape::{fcntl_arg, ioctl_arg, shape, Arg, MAX_STRING};
use virtuos_abi::ClientRegion;

const EFAULT: i32 = libc::EFAULT;
const EBADF: i32 = libc::EBADF;

/// The submit list on plain memory: honest pushes, then the peer corrupts
/// the head and links, then pops and pushes. A pop returns only indices in
/// range and leaves a head whose link is in range; an error changes
/// nothing; without corruption the list is a stack.
#[derive(Default)]
pub struct List {
    c: Counts,
}

impl Target for List {
    fn stats(&self) -> String {
        self.c.show()
    }

    fn case(&mut self, rng: &mut Rng) {
        let n = 1 + rng.index(NUM_ENTRIES + 2);
        let links: Vec<AtomicU16> = (0..n).map(|_| AtomicU16::new(0)).collect();
        let refs: &[AtomicU16] = &links;
        let head = AtomicU64::new(rng.u64() & !0xffff);
        let mut model: Vec<u16> = Vec::new();
        let mut free: Vec<u16> = (0..n as u16).collect();
        for _ in 0..rng.index(n + 1) {
            let i = free.swap_remove(rng.index(free.len()));
            list::push(&head, refs, i).expect("honest push");
            model.push(i);
        }
        let mut honest = true;
        for _ in 0..rng.pick(&[0, 0, 1, 2, 3]) {
            honest = false;
            match rng.below(3) {
                0 => links[rng.index(n)].store(rng.edgy(&[n as u64]) as u16, Ordering::Relaxed),
                1 => head.store(rng.edgy(&[n as u64]), Ordering::Relaxed),
                _ => {
                    let h = head.load(Ordering::Relaxed) & !0xffff;
                    head.store(h | (rng.edgy(&[n as u64]) & 0xffff), Ordering::Relaxed);
                }
            }
        }
        for _ in 0..n + 8 {
            let before = head.load(Ordering::Relaxed);
            let link = (before & 0xffff) as usize;
            if rng.chance(1, 4) {
                let i = rng.edgy(&[n as u64]) as u16;
                let r = list::push(&head, refs, i);
                let after = head.load(Ordering::Relaxed);
                if (i as usize) < n {
                    assert_eq!(r, Ok(()));
                    assert_eq!(after & 0xffff, i as u64 + 1);
                    assert_eq!(links[i as usize].load(Ordering::Relaxed) as usize, link);
                    assert_eq!(after >> 16, ((before >> 16) + 1) & ((1 << 48) - 1));
                    if honest {
                        if model.contains(&i) {
                            honest = false;
                        } else {
                            model.push(i);
                        }
                    }
                } else {
                    assert_eq!(r, Err(ListError::BadIndex));
                    assert_eq!(after, before, "a refused push changed the head");
                }
                continue;
            }
            let r = list::pop(&head, refs);
            let after = head.load(Ordering::Relaxed);
            match r {
                Ok(Some(i)) => {
                    assert!((i as usize) < n, "popped {i} of {n}");
                    assert_eq!(link, i as usize + 1);
                    let next = (after & 0xffff) as usize;
                    assert!(next <= n, "head links to {next} of {n}");
                    assert_eq!(next, links[i as usize].load(Ordering::Relaxed) as usize);
                    if honest {
                        assert_eq!(model.pop(), Some(i), "not a stack");
                    }
                    self.c.hit("pop");
                }
                Ok(None) => {
                    self.c.hit("empty");
                    assert_eq!(link, 0);
                    assert_eq!(after, before);
                    if honest {
                        assert!(model.is_empty(), "lost {model:?}");
                    }
                }
                Err(ListError::BadIndex) => {
                    self.c.hit("bad-index");
                    assert!(!honest, "an honest list is never malformed");
                    assert_eq!(after, before, "a failed pop changed the head");
                    let bad_next = link >= 1
                        && link <= n
                        && links[link - 1].load(Ordering::Relaxed) as usize > n;
                    assert!(link > n || bad_next, "refused a good list");
                }
                Err(ListError::Loop) => {
                    self.c.hit("self-loop");
                    assert!(!honest, "an honest list never loops");
                    assert_eq!(after, before, "a refused pop changed the head");
                    assert!(
                        link >= 1
                            && link <= n
                            && links[link - 1].load(Ordering::Relaxed) as usize == link,
                        "refused an entry that does not link to itself"
                    );
                }
                Err(ListError::Contended) => panic!("contended without a peer"),
            }
        }
    }
}

/// The region as a hostile client leaves it: header fields, entries,
/// submit head, chunk offsets and strings.
pub struct Region {
    r: ClientRegion,
    c: Counts,
}

impl Default for Region {
    fn default() -> Self {
        Region {
            r: region(),
            c: Counts::default(),
        }
    }
}

fn edgy_chunk(rng: &mut Rng) -> u16 {
    match rng.below(4) {
        0 => rng.u64() as u16,
        1 => (NUM_CHUNKS as u16)
            .wrapping_add(rng.below(3) as u16)
            .wrapping_sub(1),
        _ => rng.index(NUM_CHUNKS) as u16,
    }
}

fn edgy_offset(rng: &mut Rng, extra: &[u64]) -> u64 {
    let mut e = vec![CHUNK_SIZE as u64, NULL_ARG];
    e.extend_from_slice(extra);
    if rng.chance(1, 3) {
        rng.below(CHUNK_SIZE as u64)
    } else {
        rng.edgy(&e)
    }
}

impl Target for Region {
    fn stats(&self) -> String {
        self.c.show()
    }

    fn case(&mut self, rng: &mut Rng) {
        let r = &self.r;
        let h = r.header();
        // Header.
        r.init();
        if rng.chance(1, 4) {
            match rng.below(5) {
                0 => h.magic.store(rng.edgy(&[REGION_MAGIC]), Ordering::Relaxed),
                1 => h
                    .version
                    .store(rng.edgy(&[ABI_VERSION as u64]) as u32, Ordering::Relaxed),
                2 => h
                    .num_entries
                    .store(rng.edgy(&[NUM_ENTRIES as u64]) as u32, Ordering::Relaxed),
                3 => h
                    .chunk_size
                    .store(rng.edgy(&[CHUNK_SIZE as u64]) as u32, Ordering::Relaxed),
                _ => h
                    .num_chunks
                    .store(rng.edgy(&[NUM_CHUNKS as u64]) as u32, Ordering::Relaxed),
            }
        }
        let valid = h.magic.load(Ordering::Relaxed) == REGION_MAGIC
            && h.version.load(Ordering::Relaxed) == ABI_VERSION
            && h.num_entries.load(Ordering::Relaxed) == NUM_ENTRIES as u32
            && h.chunk_size.load(Ordering::Relaxed) == CHUNK_SIZE as u32
            && h.num_chunks.load(Ordering::Relaxed) == NUM_CHUNKS as u32;
        assert_eq!(r.validate().is_ok(), valid);
        // Entries and the submit list.
        for _ in 0..rng.index(6) {
            let i = rng.index(NUM_ENTRIES) as u16;
            let e = r.entry(i).expect("in range");
            let phase = rng.pick(&[0u32, 1, 1, 1, 2, 3, 4, 0xff]);
            let flags = (rng.u32() & !PHASE_MASK) * rng.below(2) as u32;
            e.state.store(phase | flags, Ordering::Relaxed);
            e.next
                .store(rng.edgy(&[NUM_ENTRIES as u64]) as u16, Ordering::Relaxed);
            e.chunk
                .store(rng.edgy(&[NUM_CHUNKS as u64]) as u16, Ordering::Relaxed);
            e.op.store(rng.u64() as u16, Ordering::Relaxed);
            for a in &e.args {
                a.store(rng.u64(), Ordering::Relaxed);
            }
        }
        let tag = rng.u64() & !0xffff;
        h.submit_head.store(
            tag | (rng.edgy(&[NUM_ENTRIES as u64]) & 0xffff),
            Ordering::Relaxed,
        );
        for _ in 0..6 {
            match r.take_submitted() {
                Ok(Some(i)) => {
                    assert!((i as usize) < NUM_ENTRIES);
                    let e = r.entry(i).expect("popped index in range");
                    let before = e.state.load(Ordering::Relaxed);
                    let raw_chunk = e.chunk.load(Ordering::Relaxed);
                    match e.claim() {
                        Some(req) => {
                            self.c.hit("claimed");
                            assert_eq!(Phase::from_state(before), Some(Phase::Submitted));
                            let now = e.state.load(Ordering::Relaxed);
                            assert_eq!(now, (before & !PHASE_MASK) | Phase::Claimed as u32);
                            assert_eq!(req.chunk, raw_chunk.checked_sub(1));
                        }
                        None => {
                            self.c.hit("not claimable");
                            assert_ne!(before & PHASE_MASK, Phase::Submitted as u32)
                        }
                    }
                }
                Ok(None) => {
                    self.c.hit("list empty");
                    break;
                }
                Err(_) => {
                    self.c.hit("list refused");
                    break;
                }
            }
        }
        let i = rng.u64() as u16;
        assert_eq!(r.entry(i).is_some(), (i as usize) < NUM_ENTRIES);
        // Chunk ranges.
        let c = edgy_chunk(rng);
        let off = edgy_offset(rng, &[]);
        let len = rng.edgy(&[
            CHUNK_SIZE as u64,
            CHUNK_SIZE as u64 - off.min(CHUNK_SIZE as u64),
        ]);
        match ClientRegion::chunk_range(c, off, len) {
            Some(at) => {
                assert!((c as usize) < NUM_CHUNKS);
                assert!(off.checked_add(len).is_some_and(|e| e <= CHUNK_SIZE as u64));
                assert_eq!(at, DATA_OFFSET + c as usize * CHUNK_SIZE + off as usize);
                assert!(at + len as usize <= REGION_SIZE);
            }
            None => assert!(
                c as usize >= NUM_CHUNKS
                    || off.checked_add(len).is_none_or(|e| e > CHUNK_SIZE as u64)
            ),
        }
        // Copies and strings.
        let n = rng.len(64);
        let data = rng.bytes(n);
        let wrote = r.write_chunk(c, off, &data);
        assert_eq!(
            wrote,
            ClientRegion::chunk_range(c, off, data.len() as u64).is_some()
        );
        if wrote {
            let mut back = vec![0u8; data.len()];
            assert!(r.read_chunk(c, off, &mut back));
            assert_eq!(back, data);
        }
        let max = rng.pick(&[0, 1, 3, 16, MAX_STRING]);
        if let Some(n) = r.chunk_strlen(c, off, max) {
            assert!(n <= max);
            assert!(off as usize + n < CHUNK_SIZE);
            let mut s = vec![0u8; n + 1];
            assert!(r.read_chunk(c, off, &mut s));
            assert_eq!(s[n], 0);
            assert!(!s[..n].contains(&0));
        }
    }
}

/// The executor's argument decoding: a shaped call (fcntl and ioctl with
/// their per-command third slot) with hostile slots and chunk contents.
/// Checked against an oracle written from the shape table's contract, and
/// every pointer handed to the kernel must lie in the chunk for the whole
/// length of its slot, or in a private NUL-terminated copy of a string
/// that is in the chunk.
pub struct ExecArgs {
    r: ClientRegion,
    ops: Vec<u16>,
    c: Counts,
}

impl Default for ExecArgs {
    fn default() -> Self {
        ExecArgs {
            r: region(),
            ops: (0..1024u16).filter(|&nr| shape(nr).is_some()).collect(),
            c: Counts::default(),
        }
    }
}

const FCNTL_CMDS: &[u64] = &[
    libc::F_GETFL as u64,
    libc::F_SETFL as u64,
    libc::F_GETLK as u64,
    libc::F_SETLKW as u64,
    libc::F_OFD_SETLK as u64,
    15,
    16,
    1035,
    1036,
    1037,
    1038,
    libc::F_DUPFD as u64,
    libc::F_GETFD as u64,
];

const IOCTL_REQS: &[u64] = &[
    libc::FIONREAD,
    libc::FIONBIO,
    libc::TCGETS,
    0x8008_6601,
    0x4008_6602,
    0x801c_581f,
    0x401c_5820,
    2,
    0x1268,
    0x5402,
    0x4004_9409,
    0xc020_660b,
];

impl ExecArgs {
    /// Put a string (maybe without NUL, maybe longer than MAX_STRING) at
    /// `off` of `chunk`.
    fn plant_string(&self, rng: &mut Rng, chunk: u16, off: u64) {
        if off >= CHUNK_SIZE as u64 {
            return;
        }
        let room = CHUNK_SIZE - off as usize;
        let n = rng.len(MAX_STRING + 8).min(room);
        let mut s: Vec<u8> = (0..n).map(|_| rng.u8().max(1)).collect();
        if n > 0 && rng.chance(3, 4) {
            s[n - 1] = 0;
        }
        self.r.write_chunk(chunk, off, &s);
    }
}

/// What `marshal` must answer, from the contract alone.
fn oracle(
    r: &ClientRegion,
    fd_limit: u64,
    chunk: Option<u16>,
    sh: &[Arg; 6],
    args: &[u64; 6],
) -> Result<(), i32> {
    let limit = fd_limit.min(DOMAIN_FD_LIMIT);
    let in_chunk = |off: u64, len: u64| -> Result<(), i32> {
        let c = chunk.ok_or(EFAULT)?;
        let ok = (c as usize) < NUM_CHUNKS
            && off.checked_add(len).is_some_and(|e| e <= CHUNK_SIZE as u64);
        ok.then_some(()).ok_or(EFAULT)
    };
    for (i, &a) in sh.iter().enumerate() {
        let v = args[i];
        match a {
            Arg::Unused | Arg::Val => {}
            Arg::Fd if v >= limit => return Err(EBADF),
            Arg::DirFd if v >= limit && v != AT_FDCWD_ARG => return Err(EBADF),
            Arg::Fd | Arg::DirFd => {}
            _ if a.nullable() && v == NULL_ARG => {}
            Arg::Path | Arg::OptPath | Arg::Str => {
                in_chunk(v, 0)?;
                let window = (CHUNK_SIZE - v as usize).min(MAX_STRING + 1);
                let mut buf = vec![0u8; window];
                assert!(r.read_chunk(chunk.unwrap(), v, &mut buf));
                if !buf.contains(&0) {
                    return Err(EFAULT);
                }
            }
            Arg::InBuf(n) | Arg::OutBuf(n) => in_chunk(v, args[n as usize])?,
            Arg::In(s) | Arg::OptIn(s) | Arg::Out(s) | Arg::InOut(s) | Arg::OptInOut(s) => {
                in_chunk(v, s as u64)?
            }
        }
    }
    Ok(())
}

impl Target for ExecArgs {
    fn stats(&self) -> String {
        self.c.show()
    }

    fn case(&mut self, rng: &mut Rng) {
        let op = rng.pick(&self.ops);
        let mut sh = shape(op).expect("shaped");
        let any = rng.u64();
        let fd_limit = rng.pick(&[DOMAIN_FD_LIMIT, 20000 - 64, 3, u64::MAX, any]);
        let chunk = match rng.below(8) {
            0 => None,
            1 => Some(edgy_chunk(rng)),
            _ => Some(rng.index(NUM_CHUNKS) as u16),
        };
        let mut args = [0u64; 6];
        for (i, a) in sh.iter().enumerate() {
            args[i] = match a {
                Arg::Fd | Arg::DirFd => rng.edgy(&[fd_limit, DOMAIN_FD_LIMIT, AT_FDCWD_ARG]),
                Arg::Val | Arg::Unused => rng.edgy(&[CHUNK_SIZE as u64, 4096, 128]),
                _ if rng.chance(1, 8) => NULL_ARG,
                _ => edgy_offset(rng, &[CHUNK_SIZE as u64 - 256]),
            };
        }
        // The domain's fcntl/ioctl decoding (exec/fcntl.rs, exec/ioctl.rs).
        if op as i64 == libc::SYS_fcntl || op as i64 == libc::SYS_ioctl {
            let table = if op as i64 == libc::SYS_fcntl {
                FCNTL_CMDS
            } else {
                IOCTL_REQS
            };
            let cmd = if rng.chance(3, 4) {
                rng.pick(table) | ((rng.u64() << 32) * rng.below(2))
            } else {
                rng.u64()
            };
            args[1] = cmd as u32 as u64;
            let kind = if op as i64 == libc::SYS_fcntl {
                fcntl_arg(args[1])
            } else {
                ioctl_arg(args[1])
            };
            let Some(kind) = kind else {
                self.c.hit("cmd refused");
                return;
            };
            assert!(
                !matches!(kind, Arg::InBuf(_) | Arg::OutBuf(_) | Arg::Path | Arg::Str),
                "a command table entry needs a length slot"
            );
            sh[2] = kind;
            if kind.is_pointer() {
                args[2] = edgy_offset(rng, &[]);
            }
        }
        if let Some(c) = chunk.filter(|&c| (c as usize) < NUM_CHUNKS) {
            for (i, a) in sh.iter().enumerate() {
                if matches!(a, Arg::Path | Arg::OptPath | Arg::Str) {
                    self.plant_string(rng, c, args[i]);
                }
            }
        }
        let expect = oracle(&self.r, fd_limit, chunk, &sh, &args);
        let mut strings = Strings::default();
        let got = decode::marshal(&self.r, fd_limit, chunk, &sh, &args, &mut strings);
        self.c.hit(match got {
            Ok(_) => "ok",
            Err(EBADF) => "EBADF",
            Err(_) => "EFAULT",
        });
        match (&got, &expect) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err(x)) => assert_eq!(e, x, "errno"),
            _ => panic!("op {op} {sh:?} {args:x?} chunk {chunk:?}: got {got:?}, oracle {expect:?}"),
        }
        let Ok(out) = got else { return };
        let base = self.r.base() as u64;
        let limit = fd_limit.min(DOMAIN_FD_LIMIT);
        let within = |p: u64, off: u64, len: u64| {
            let c = chunk.expect("a pointer needs a chunk") as u64;
            let start = base + DATA_OFFSET as u64 + c * CHUNK_SIZE as u64;
            assert_eq!(p, start + off, "pointer is not the chunk offset");
            assert!(off + len <= CHUNK_SIZE as u64, "range leaves the chunk");
        };
        for (i, &a) in sh.iter().enumerate() {
            let (v, o) = (args[i], out[i]);
            match a {
                Arg::Unused => assert_eq!(o, 0),
                Arg::Val => assert_eq!(o, v),
                Arg::Fd => assert!(o == v && v < limit),
                Arg::DirFd => assert!(o == v && (v < limit || v == AT_FDCWD_ARG)),
                _ if a.nullable() && v == NULL_ARG => assert_eq!(o, 0),
                Arg::Path | Arg::OptPath | Arg::Str => {
                    let s = strings.get(o).expect("a string pointer is a private copy");
                    let n = s.len() - 1;
                    assert_eq!(s[n], 0);
                    assert!(!s[..n].contains(&0));
                    assert!(n <= MAX_STRING);
                    let mut inchunk = vec![0u8; n];
                    assert!(self.r.read_chunk(chunk.unwrap(), v, &mut inchunk));
                    assert_eq!(&s[..n], &inchunk[..]);
                }
                Arg::InBuf(n) | Arg::OutBuf(n) => within(o, v, args[n as usize]),
                Arg::In(s) | Arg::OptIn(s) | Arg::Out(s) | Arg::InOut(s) | Arg::OptInOut(s) => {
                    within(o, v, s as u64)
                }
            }
        }
    }
}

/// `OP_POLL`'s array: copied out whole or refused; the shadow's own
/// descriptors are masked.
pub struct PollFds {
    r: ClientRegion,
    c: Counts,
}

impl Default for PollFds {
    fn default() -> Self {
        PollFds {
            r: region(),
            c: Counts::default(),
        }
    }
}

impl Target for PollFds {
    fn stats(&self) -> String {
        self.c.show()
    }

    fn case(&mut self, rng: &mut Rng) {
        let max = (CHUNK_SIZE / POLLFD) as u64;
        let nfds = if rng.chance(3, 4) {
            rng.below(70)
        } else {
            rng.edgy(&[max, 1 << 20])
        };
        let chunk = match rng.below(6) {
            0 => None,
            1 => Some(edgy_chunk(rng)),
            _ => Some(rng.index(NUM_CHUNKS) as u16),
        };
        let fd_limit = rng.pick(&[DOMAIN_FD_LIMIT, 19936, 10, u64::MAX]);
        let limit = fd_limit.min(DOMAIN_FD_LIMIT);
        if let Some(c) = chunk {
            let n = (nfds as usize).min(80);
            let mut raw = vec![0u8; n * POLLFD];
            for e in raw.chunks_exact_mut(POLLFD) {
                let fd = rng.edgy(&[limit, 0x8000_0000]) as i32;
                e[..4].copy_from_slice(&fd.to_ne_bytes());
                e[4..].copy_from_slice(&rng.u32().to_ne_bytes());
            }
            self.r.write_chunk(c, 0, &raw);
        }
        let got = decode::decode_pollfds(&self.r, chunk, nfds, fd_limit);
        self.c.hit(if got.is_ok() { "ok" } else { "refused" });
        let chunk_ok = chunk.is_some_and(|c| (c as usize) < NUM_CHUNKS);
        match got {
            Err(e) if nfds > max => assert_eq!(e, libc::EINVAL),
            Err(e) => {
                assert!(nfds > 0 && !chunk_ok, "refused a good array");
                assert_eq!(e, EFAULT);
            }
            Ok((fds, nval)) => {
                assert!(nfds <= max && (nfds == 0 || chunk_ok));
                assert_eq!(fds.len() as u64, nfds);
                assert_eq!(nval.len() as u64, nfds);
                let mut raw = vec![0u8; fds.len() * POLLFD];
                if !raw.is_empty() {
                    assert!(self.r.read_chunk(chunk.unwrap(), 0, &mut raw));
                }
                for (i, e) in raw.chunks_exact(POLLFD).enumerate() {
                    let fd = i32::from_ne_bytes([e[0], e[1], e[2], e[3]]);
                    let bad = fd >= 0 && fd as u64 >= limit;
                    assert_eq!(nval[i], bad);
                    assert_eq!(fds[i].fd, if bad { -1 } else { fd });
                    assert!(fds[i].fd < 0 || (fds[i].fd as u64) < limit);
                    assert_eq!(fds[i].events, i16::from_ne_bytes([e[4], e[5]]));
                    assert_eq!(fds[i].revents, 0);
                }
            }
        }
    }
}

/// Ancillary data: the outgoing check and the incoming filter against an
/// independent walk (kernel `CMSG_NXTHDR` semantics).
#[derive(Default)]
pub struct Cmsg {
    c: Counts,
}

fn put_cmsg(buf: &mut Vec<u8>, len: u64, level: i32, ty: i32, payload: &[u8]) {
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&level.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
}

/// Well-formed messages of `buf` in walk order: (start, len, level, type).
fn walk(buf: &[u8]) -> (Vec<(usize, usize, i32, i32)>, bool) {
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        if buf.len() < at + CMSG_HDR {
            return (out, true);
        }
        let len = u64::from_ne_bytes(buf[at..at + 8].try_into().unwrap());
        let level = i32::from_ne_bytes(buf[at + 8..at + 12].try_into().unwrap());
        let ty = i32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap());
        if len < CMSG_HDR as u64 || len > (buf.len() - at) as u64 {
            return (out, false);
        }
        out.push((at, len as usize, level, ty));
        at += (len as usize).div_ceil(8) * 8;
    }
}

impl Target for Cmsg {
    fn stats(&self) -> String {
        self.c.show()
    }

    fn case(&mut self, rng: &mut Rng) {
        let mut buf = Vec::new();
        if rng.chance(1, 5) {
            let n = rng.len(96);
            buf = rng.bytes(n);
        } else {
            for _ in 0..1 + rng.index(5) {
                let n = rng.len(40);
                let payload = rng.bytes(n);
                let good = (CMSG_HDR + payload.len()) as u64;
                let len = match rng.below(6) {
                    0 => rng.edgy(&[good, CMSG_HDR as u64]),
                    1 => good + rng.below(16),
                    _ => good,
                };
                let (l, t) = (rng.u32() as i32, rng.u32() as i32);
                let level = rng.pick(&[libc::SOL_SOCKET, libc::IPPROTO_IP, libc::IPPROTO_IPV6, l]);
                let ty = rng.pick(&[libc::SCM_RIGHTS, libc::SCM_CREDENTIALS, 0, 3, t]);
                put_cmsg(&mut buf, len, level, ty, &payload);
                if rng.chance(3, 4) {
                    buf.resize(buf.len().div_ceil(8) * 8, rng.u8());
                }
            }
            if rng.chance(1, 5) {
                buf.truncate(rng.index(buf.len() + 1));
            }
        }
        let (msgs, clean_end) = walk(&buf);
        let crossing = msgs
            .iter()
            .any(|&(_, _, l, t)| decode::crosses_domains(l, t));
        let check = decode::check_send_control(&buf);
        self.c.hit(if check.is_ok() {
            "send ok"
        } else {
            "send EINVAL"
        });
        assert_eq!(check.is_ok(), clean_end && !crossing, "check of {buf:x?}");
        if let Err(e) = check {
            assert_eq!(e, libc::EINVAL);
        }
        let mut closed = Vec::new();
        let kept = decode::filter_recv_control(&buf, &mut |fd| closed.push(fd));
        assert!(kept.len() <= buf.len());
        assert_eq!(
            decode::check_send_control(&kept),
            Ok(()),
            "filtered data must pass"
        );
        let (kmsgs, _) = walk(&kept);
        let want: Vec<(usize, i32, i32)> = msgs
            .iter()
            .filter(|&&(_, _, l, t)| !decode::crosses_domains(l, t))
            .map(|&(_, len, l, t)| (len, l, t))
            .collect();
        let got: Vec<(usize, i32, i32)> = kmsgs.iter().map(|&(_, len, l, t)| (len, l, t)).collect();
        assert_eq!(got, want, "kept messages");
        let mut fds = Vec::new();
        for &(at, len, l, t) in &msgs {
            if l == libc::SOL_SOCKET && t == libc::SCM_RIGHTS {
                for c in buf[at + CMSG_HDR..at + len].chunks_exact(4) {
                    fds.push(i32::from_ne_bytes(c.try_into().unwrap()));
                }
            }
        }
        assert_eq!(closed, fds, "descriptors closed");
        if check.is_ok() {
            assert!(closed.is_empty());
            assert_eq!(&buf[..kept.len()], &kept[..]);
        }
    }
}
