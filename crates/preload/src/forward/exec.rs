//! Carrying forwarded state across execve: an inheritable memfd named
//! `virtuos-exec-state` holds a record of the descriptor table, the cwd and
//! any unclaimed fork; the new image's constructor reads, validates and
//! closes it, then reattaches to its shadow.
//!
//! Record (little endian): a 72-byte header
//! `magic u64 | version u32 | pid u32 | flags u32 | mount_len u32 |
//!  cwd_len u32 | entries u32 | parent_pid u32 | reserved u32 |
//!  storage token u64 | checksum u64 (FNV-1a of the body) | body_len u64 |
//!  network token u64`
//! then the body: mount bytes, cwd bytes, and 16 bytes per entry
//! `user_fd u32 | remote u32 | domain u8 | cloexec u8 | 0 u8 x6`.
//! Flags: a cwd, an unclaimed fork per domain (both forks of one parent),
//! and which domains the old image was attached to (the new image
//! reattaches to exactly those, plus the ones with an unclaimed fork).
//! Close-on-exec entries are included: the new image closes them remotely.

use super::domain::{self, DOMAINS, NUM_DOMAINS};
use super::fds::{self as fdtable, Entry};
use super::path::PATH_MAX;
use super::session::{self, PendingClaim};
use super::{caller, cwd, host, log, state};
use core::sync::atomic::{AtomicI32, Ordering};
use virtuos_abi::DOMAIN_FD_LIMIT;

pub const MAGIC: u64 = u64::from_le_bytes(*b"VIRTEXEC");
pub const VERSION: u32 = 2;
pub const MEMFD_NAME: &str = "virtuos-exec-state";
const HEADER: usize = 72;
const ENTRY: usize = 16;
const FLAG_CWD: u32 = 1;
/// Per domain slot: an unclaimed fork.
const FLAG_PENDING: [u32; NUM_DOMAINS] = [2, 4];
/// Per domain slot: the old image had a session.
const FLAG_ATTACHED: [u32; NUM_DOMAINS] = [8, 16];
const ALL_FLAGS: u32 = FLAG_CWD | 2 | 4 | 8 | 16;
const MAX_RECORD: usize = HEADER + 256 + PATH_MAX + fdtable::CAPACITY * ENTRY;

/// Where an encoded record goes (the memfd, or a buffer in tests).
pub trait Sink {
    fn put(&mut self, off: u64, bytes: &[u8]) -> bool;
}

struct FdSink(i32);

impl Sink for FdSink {
    fn put(&mut self, off: u64, mut bytes: &[u8]) -> bool {
        let mut off = off as i64;
        while !bytes.is_empty() {
            let r = host::write_raw(self.0, bytes.as_ptr(), bytes.len(), Some(off));
            if r == -(libc::EINTR as i64) {
                continue;
            }
            if r <= 0 {
                return false;
            }
            bytes = bytes.get(r as usize..).unwrap_or(&[]);
            off += r;
        }
        true
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, off: u64, bytes: &[u8]) -> bool {
        let end = off as usize + bytes.len();
        if self.len() < end {
            self.resize(end, 0);
        }
        self[off as usize..end].copy_from_slice(bytes);
        true
    }
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn feed(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= x as u64;
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// The checksum: FNV-1a of the body, then of the header without its
/// checksum field.
fn header_sum(mut body_sum: Fnv, h: &[u8]) -> u64 {
    body_sum.feed(&h[..48]);
    body_sum.feed(&h[56..HEADER]);
    body_sum.0
}

/// What a record says, besides the table.
pub struct Snapshot<'a> {
    pub pid: u32,
    pub mount: &'a [u8],
    pub cwd: Option<&'a [u8]>,
    /// Per domain slot (all of one fork: the same parent pid).
    pub pending: [Option<PendingClaim>; NUM_DOMAINS],
    pub attached: [bool; NUM_DOMAINS],
}

/// Something that calls its argument once per table entry.
pub type EntrySource<'a> = dyn FnMut(&mut dyn FnMut(u32, Entry)) + 'a;

/// Encode a record (allocation-free with an allocation-free sink).
pub fn encode(sink: &mut dyn Sink, snap: &Snapshot<'_>, entries: &mut EntrySource<'_>) -> bool {
    let mut sum = Fnv::new();
    let mut off = HEADER as u64;
    let mut ok = true;
    let cwd = snap.cwd.unwrap_or(&[]);
    for part in [snap.mount, cwd] {
        sum.feed(part);
        ok &= sink.put(off, part);
        off += part.len() as u64;
    }
    let mut batch = [0u8; 64 * ENTRY];
    let mut fill = 0usize;
    let mut count = 0u32;
    entries(&mut |fd, e| {
        let rec = &mut batch[fill..fill + ENTRY];
        rec[0..4].copy_from_slice(&fd.to_le_bytes());
        rec[4..8].copy_from_slice(&e.remote.to_le_bytes());
        rec[8] = e.domain;
        rec[9] = e.cloexec as u8;
        rec[10] = e.socket as u8;
        rec[11..16].fill(0);
        fill += ENTRY;
        count += 1;
        if fill == batch.len() {
            sum.feed(&batch);
            ok &= sink.put(off, &batch);
            off += fill as u64;
            fill = 0;
        }
    });
    sum.feed(&batch[..fill]);
    ok &= sink.put(off, &batch[..fill]);
    off += fill as u64;
    let mut h = [0u8; HEADER];
    let mut flags = if snap.cwd.is_some() { FLAG_CWD } else { 0 };
    let mut parent_pid = 0u32;
    let mut tokens = [0u64; NUM_DOMAINS];
    for k in 0..NUM_DOMAINS {
        if let Some(p) = snap.pending[k] {
            flags |= FLAG_PENDING[k];
            parent_pid = p.parent_pid;
            tokens[k] = p.token;
        }
        if snap.attached[k] {
            flags |= FLAG_ATTACHED[k];
        }
    }
    h[0..8].copy_from_slice(&MAGIC.to_le_bytes());
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&snap.pid.to_le_bytes());
    h[16..20].copy_from_slice(&flags.to_le_bytes());
    h[20..24].copy_from_slice(&(snap.mount.len() as u32).to_le_bytes());
    h[24..28].copy_from_slice(&(cwd.len() as u32).to_le_bytes());
    h[28..32].copy_from_slice(&count.to_le_bytes());
    h[32..36].copy_from_slice(&parent_pid.to_le_bytes());
    h[40..48].copy_from_slice(&tokens[0].to_le_bytes());
    h[56..64].copy_from_slice(&(off - HEADER as u64).to_le_bytes());
    h[64..72].copy_from_slice(&tokens[1].to_le_bytes());
    let sum = header_sum(sum, &h);
    h[48..56].copy_from_slice(&sum.to_le_bytes());
    ok && sink.put(0, &h)
}

#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    pub pid: u32,
    pub mount: Vec<u8>,
    pub cwd: Option<Vec<u8>>,
    pub entries: Vec<(u32, Entry)>,
    pub pending: [Option<PendingClaim>; NUM_DOMAINS],
    pub attached: [bool; NUM_DOMAINS],
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Decode and validate a record; anything malformed is rejected.
pub fn decode(b: &[u8]) -> Result<Record, &'static str> {
    if b.len() < HEADER || b.len() > MAX_RECORD {
        return Err("bad size");
    }
    if u64_at(b, 0) != MAGIC {
        return Err("bad magic");
    }
    if u32_at(b, 8) != VERSION {
        return Err("bad version");
    }
    let pid = u32_at(b, 12);
    let flags = u32_at(b, 16);
    let mount_len = u32_at(b, 20) as usize;
    let cwd_len = u32_at(b, 24) as usize;
    let n = u32_at(b, 28) as usize;
    let body_len = u64_at(b, 56);
    if flags & !ALL_FLAGS != 0 || u32_at(b, 36) != 0 {
        return Err("bad flags");
    }
    if mount_len >= 256 || cwd_len >= PATH_MAX || n > fdtable::CAPACITY {
        return Err("bad lengths");
    }
    let want = mount_len + cwd_len + n * ENTRY;
    if body_len != want as u64 || b.len() != HEADER + want {
        return Err("length mismatch");
    }
    let body = &b[HEADER..];
    let mut sum = Fnv::new();
    sum.feed(body);
    if header_sum(sum, &b[..HEADER]) != u64_at(b, 48) {
        return Err("bad checksum");
    }
    let mount = body[..mount_len].to_vec();
    match state::normalized_mount(&mount) {
        Some(m) if m.as_bytes() == mount.as_slice() => {}
        _ => return Err("bad mount"),
    }
    let cwd = if flags & FLAG_CWD != 0 {
        let c = &body[mount_len..mount_len + cwd_len];
        if c.first() != Some(&b'/') || c.contains(&0) {
            return Err("bad cwd");
        }
        Some(c.to_vec())
    } else {
        if cwd_len != 0 {
            return Err("bad cwd");
        }
        None
    };
    let mut entries = Vec::with_capacity(n);
    let mut seen = std::collections::HashSet::with_capacity(n);
    for rec in body[mount_len + cwd_len..].chunks_exact(ENTRY) {
        let fd = u32_at(rec, 0);
        let remote = u32_at(rec, 4);
        if fd as usize >= fdtable::CAPACITY
            || remote as u64 >= DOMAIN_FD_LIMIT
            || !domain::is_known_domain(rec[8])
            || rec[9] > 1
            || rec[10] > 1
            || rec[11..16].iter().any(|&x| x != 0)
            || !seen.insert(fd)
        {
            return Err("bad entry");
        }
        let e = Entry::new(rec[8], remote, rec[9] == 1);
        entries.push((
            fd,
            Entry {
                socket: e.socket || rec[10] == 1,
                ..e
            },
        ));
    }
    let token_at = [40usize, 64];
    let mut pending = [None; NUM_DOMAINS];
    let mut attached = [false; NUM_DOMAINS];
    for k in 0..NUM_DOMAINS {
        attached[k] = flags & FLAG_ATTACHED[k] != 0;
        if flags & FLAG_PENDING[k] != 0 {
            pending[k] = Some(PendingClaim {
                parent_pid: u32_at(b, 32),
                token: u64_at(b, token_at[k]),
            });
        } else if u64_at(b, token_at[k]) != 0 {
            return Err("bad claim");
        }
    }
    if pending.iter().all(Option::is_none) && u32_at(b, 32) != 0 {
        return Err("bad claim");
    }
    Ok(Record {
        pid,
        mount,
        cwd,
        entries,
        pending,
        attached,
    })
}

static EXEC_FD: AtomicI32 = AtomicI32::new(-1);

/// Before execve (allocation-free): write the record, if there is state.
pub fn before_exec() {
    let old = EXEC_FD.swap(-1, Ordering::AcqRel);
    if old >= 0 {
        host::close(old);
    }
    if !session::has_forwarded_state() {
        return;
    }
    let name = b"virtuos-exec-state\0";
    let fd = host::memfd_create(name, 0);
    if fd < 0 {
        log::emit(format_args!(
            "cannot save forwarded descriptors across exec: memfd_create failed ({})",
            -fd
        ));
        return;
    }
    let mut cwd_buf = [0u8; PATH_MAX];
    let cwd_len = cwd::copy_remote(&mut cwd_buf);
    let snap = Snapshot {
        pid: host::getpid(),
        mount: state::mount(),
        cwd: cwd_len.map(|n| &cwd_buf[..n]),
        pending: DOMAINS.map(session::pending),
        attached: DOMAINS.map(|d| session::current(d).is_some()),
    };
    // Stale entries (their domain failed) are left behind: the new image
    // sees their placeholders only (EBADF).
    let ok = encode(&mut FdSink(fd as i32), &snap, &mut |f| {
        fdtable::for_each_in(0, fdtable::CAPACITY as u64 - 1, |fd, e| {
            if !e.is_stale() {
                f(fd, e)
            }
        })
    });
    if !ok {
        host::close(fd as i32);
        log::emit(format_args!(
            "cannot save forwarded descriptors across exec: writing the record failed"
        ));
        return;
    }
    EXEC_FD.store(fd as i32, Ordering::Release);
}

pub fn after_exec_failed() {
    let fd = EXEC_FD.swap(-1, Ordering::AcqRel);
    if fd >= 0 {
        host::close(fd);
    }
}

// ---- the new image (may allocate) ----

fn read_fd_all(fd: i32) -> Option<Vec<u8>> {
    let size = host::lseek(fd, 0, libc::SEEK_END);
    if size < 0 || size as usize > MAX_RECORD {
        return None;
    }
    let mut buf = vec![0u8; size as usize];
    let mut got = 0usize;
    while got < buf.len() {
        let r = host::read_raw(
            fd,
            buf[got..].as_mut_ptr(),
            buf.len() - got,
            Some(got as i64),
        );
        if r == -(libc::EINTR as i64) {
            continue;
        }
        if r <= 0 {
            return None;
        }
        got += r as usize;
    }
    Some(buf)
}

/// Find, read and close every exec-state memfd; return the first valid.
pub fn take_record() -> Option<Record> {
    use std::os::unix::ffi::OsStrExt;
    let mut fds = Vec::new();
    for ent in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Some(fd) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(link) = std::fs::read_link(ent.path()) else {
            continue;
        };
        let prefix = format!("/memfd:{MEMFD_NAME}");
        if link.as_os_str().as_bytes().starts_with(prefix.as_bytes()) {
            fds.push(fd);
        }
    }
    let mut found = None;
    for fd in fds {
        let bytes = read_fd_all(fd);
        host::close(fd);
        if found.is_some() {
            continue;
        }
        match bytes.as_deref().map(decode) {
            Some(Ok(r)) => found = Some(r),
            Some(Err(why)) => log::emit(format_args!(
                "ignoring a malformed exec-state record ({why})"
            )),
            None => log::emit(format_args!("ignoring an unreadable exec-state record")),
        }
    }
    found
}

fn placeholder_ok(fd: u32) -> bool {
    let fl = host::fcntl(fd as i32, libc::F_GETFL, 0);
    if fl < 0 || fl as i32 & libc::O_PATH == 0 {
        return false;
    }
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|l| {
            l.to_string_lossy()
                .starts_with(&format!("/memfd:{}", host::PLACEHOLDER_NAME))
        })
        .unwrap_or(false)
}

/// Rebuild the table and cwd from `rec` and reattach.
pub fn apply(rec: Record) {
    if rec.pending.iter().all(Option::is_none) && rec.pid != host::getpid() {
        log::emit(format_args!(
            "ignoring an exec-state record of another process ({})",
            rec.pid
        ));
        return;
    }
    let mut to_close = Vec::new();
    for (fd, e) in &rec.entries {
        if !e.cloexec && placeholder_ok(*fd) && fdtable::set(*fd as u64, *e).is_ok() {
            continue;
        }
        to_close.push(*e);
    }
    if let Some(c) = &rec.cwd {
        cwd::set_remote(c);
    }
    for (k, d) in DOMAINS.into_iter().enumerate() {
        let has_entries = rec.entries.iter().any(|(_, e)| e.domain == d);
        // Descriptors (or a cwd) of a domain without a session: the
        // reattach fails and marks the domain orphaned, as it must.
        let wanted = rec.attached[k]
            || rec.pending[k].is_some()
            || has_entries
            || (d == domain::DOMAIN_STORAGE && rec.cwd.is_some());
        if !wanted {
            continue;
        }
        if session::reattach(d, rec.pending[k]) {
            if d == domain::DOMAIN_STORAGE {
                super::exec_image::exec_done();
            }
            for e in to_close.iter().filter(|e| e.domain == d) {
                let _ = caller::simple_call(
                    d,
                    libc::SYS_close as u16,
                    [e.remote as u64, 0, 0, 0, 0, 0],
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        let snap = Snapshot {
            pid: 42,
            mount: b"/storage",
            cwd: Some(b"/storage/dir"),
            pending: [
                Some(PendingClaim {
                    parent_pid: 7,
                    token: 99,
                }),
                Some(PendingClaim {
                    parent_pid: 7,
                    token: 5,
                }),
            ],
            attached: [true, false],
        };
        assert!(encode(&mut out, &snap, &mut |f| {
            for i in 0..100u32 {
                f(3 + i, Entry::storage(10 + i, i % 3 == 0));
            }
            f(200, Entry::network(7, false));
        }));
        out
    }

    #[test]
    fn roundtrip() {
        let r = decode(&sample()).unwrap();
        assert_eq!(r.pid, 42);
        assert_eq!(r.mount, b"/storage");
        assert_eq!(r.cwd.as_deref(), Some(&b"/storage/dir"[..]));
        assert_eq!(
            r.pending,
            [
                Some(PendingClaim {
                    parent_pid: 7,
                    token: 99
                }),
                Some(PendingClaim {
                    parent_pid: 7,
                    token: 5
                })
            ]
        );
        assert_eq!(r.attached, [true, false]);
        assert_eq!(r.entries.len(), 101);
        assert_eq!(r.entries[100], (200, Entry::network(7, false)));
        assert_eq!(r.entries[3], (6, Entry::storage(13, true)));
        assert_eq!(r.entries[4], (7, Entry::storage(14, false)));
    }

    #[test]
    fn corruption_is_rejected() {
        let good = sample();
        // Every single-byte flip anywhere is caught (checksum or fields).
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x41;
            assert!(decode(&bad).is_err(), "flip at {at} accepted");
        }
        // Truncation and extension.
        assert!(decode(&good[..good.len() - 1]).is_err());
        let mut longer = good.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn hostile_but_checksummed_records_are_rejected() {
        // A record with a valid checksum but a bad entry (remote fd beyond
        // the domain limit) or a duplicate user fd.
        for entries in [
            vec![(3u32, Entry::storage(DOMAIN_FD_LIMIT as u32, false))],
            vec![
                (3u32, Entry::storage(1, false)),
                (3, Entry::storage(2, false)),
            ],
            vec![(fdtable::CAPACITY as u32, Entry::storage(1, false))],
        ] {
            let mut out = Vec::new();
            let snap = Snapshot {
                pid: 1,
                mount: b"/storage",
                cwd: None,
                pending: [None; NUM_DOMAINS],
                attached: [true, false],
            };
            encode(&mut out, &snap, &mut |f| {
                for (fd, e) in &entries {
                    f(*fd, *e)
                }
            });
            assert!(decode(&out).is_err());
        }
        let mut out = Vec::new();
        let snap = Snapshot {
            pid: 1,
            mount: b"/storage/../x",
            cwd: Some(b"relative"),
            pending: [None; NUM_DOMAINS],
            attached: [false; NUM_DOMAINS],
        };
        encode(&mut out, &snap, &mut |_| {});
        assert!(decode(&out).is_err(), "unnormalised mount, relative cwd");
    }
}
