//! Re-opening storage files after a restart of the storage domain.
//!
//! When the storage domain fails, the shadow that held this process's remote
//! descriptors is gone (`domain` epochs). For a file opened *by path* in the
//! storage domain we remember what it takes to open it again: the path as
//! resolved at open time (absolute, lexically normalised, inside the mount),
//! the open flags without O_CREAT/O_EXCL/O_TRUNC, the file's identity (the
//! domain reports st_dev/st_ino with every open: `ops::file_identity`) and
//! the file offset as this process last moved it (read, write, lseek, ...,
//! counted here on the client: the old domain is dead, nobody else knows).
//! At the next call on such a descriptor after the restart, `fds::get`
//! calls `revive`: open the path in the restarted domain, check that it is
//! the same file (same identity) and that it is at least as long as the
//! offset, seek, and swap the table entry to the new remote descriptor. The
//! user's descriptor number stays. Anything else leaves the entry stale:
//! the call fails with EIO, as without re-opening.
//!
//! Not re-opened (EIO): descriptors a lock was taken on (flock, fcntl
//! record/OFD locks, leases: the lock died with the domain), directories
//! read with getdents since their last rewind (the position is the file
//! system's cookie), files opened with O_TMPFILE, through `/proc/self/fd`,
//! relative to a directory descriptor we cannot name, or with a path longer
//! than `MAX_PATH`, files removed or replaced since (the path opens another
//! file, or none), files now shorter than the offset (acknowledged writes
//! were lost), descriptors inherited across exec (the records stay in the
//! old image), and descriptors whose offset we lost track of (a read on an
//! O_APPEND descriptor after a write). Descriptors sharing one open file
//! description (dup, fork) are re-opened separately, each at the offset
//! moved through *that* descriptor in *this* process (plus what it had when
//! it was duplicated): exact for the usual pattern (one of them is used),
//! a guess when several move the shared offset. `VIRTUOS_REOPEN=0` turns
//! re-opening off.
//!
//! Memory: one 512-byte record per user descriptor number, indexed by it, in
//! a lazily mapped `MAP_NORESERVE` array (`fds::table::LazyWords`, 32 MiB of
//! address space, only touched pages cost memory: 8 descriptors per page).
//! Nothing is allocated; the hot-path cost is one atomic update of the
//! record's offset per read/write/lseek on a storage descriptor.
//!
//! Record (64 words): key (the table word it belongs to, without
//! close-on-exec; 0 = none), offset (`OFF_END`: at the end after an
//! O_APPEND write; `OFF_UNKNOWN`), flags (open flags | state bits << 32),
//! identity, path length, path bytes. A writer clears the key first and
//! publishes it last; a reader checks it before and after copying.

use super::table::{self, Entry, LazyWords, CAPACITY};
use crate::forward::caller::{remote_close, Call};
use crate::forward::domain::{DOMAIN_STORAGE, STALE};
use crate::forward::path::{is_under, PATH_MAX};
use crate::forward::{log, session, state, usermem};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use virtuos_abi::DOMAIN_FD_LIMIT;

const WORDS: usize = 64;
const KEY: usize = 0;
const OFFSET: usize = 1;
const FLAGS: usize = 2;
const IDENT: usize = 3;
const LEN: usize = 4;
const PATH: usize = 5;
/// Longest path a record holds.
pub const MAX_PATH: usize = (WORDS - PATH) * 8;

/// Offset: at the end of the file (after a write with O_APPEND).
const OFF_END: u64 = u64::MAX;
/// Offset: lost track (a read after `OFF_END`).
const OFF_UNKNOWN: u64 = u64::MAX - 1;

/// State bits (in the high half of FLAGS).
const LOCKED: u64 = 1 << 32;
const POSITIONED: u64 = 1 << 33;

/// Open flags we keep: without creation and truncation.
const DROP_FLAGS: i32 = libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY;
/// What F_SETFL may change.
const SETFL_MASK: i32 =
    libc::O_APPEND | libc::O_ASYNC | libc::O_DIRECT | libc::O_NOATIME | libc::O_NONBLOCK;

static RECORDS: LazyWords = LazyWords::new(CAPACITY * WORDS);
/// Descriptors re-opened / refused so far (status, tests).
static REOPENED: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicUsize = AtomicUsize::new(0);
static TOLD: AtomicBool = AtomicBool::new(false);
static TOLD_REFUSED: AtomicBool = AtomicBool::new(false);

#[inline]
fn record(fd: u64) -> Option<&'static [AtomicU64]> {
    let i = fd as u32 as usize;
    if i >= CAPACITY {
        return None;
    }
    RECORDS.get()?.get(i * WORDS..(i + 1) * WORDS)
}

/// A record that belongs to the current entry of `fd`.
#[inline]
fn live(fd: u64) -> Option<&'static [AtomicU64]> {
    let r = record(fd)?;
    let k = r[KEY].load(Ordering::Acquire);
    (k != 0 && k == table::key_of(table::raw(fd))).then_some(r)
}

pub fn enabled() -> bool {
    state::config().reopen
}

/// The entry of `fd` changed (new entry, close): its record is void.
#[inline]
pub fn forget(fd: u64) {
    if let Some(r) = record(fd) {
        if r[KEY].load(Ordering::Relaxed) != 0 {
            r[KEY].store(0, Ordering::Release);
        }
    }
}

/// Write a record for the current entry of `fd`.
fn write(fd: u64, flags: u64, offset: u64, ident: u64, path: &[u8]) {
    let Ok(all) = RECORDS.get_or_map() else {
        return;
    };
    let i = fd as u32 as usize;
    let Some(r) = all.get(i * WORDS..(i + 1) * WORDS) else {
        return;
    };
    let key = table::key_of(table::raw(fd));
    if key == 0 || path.len() > MAX_PATH {
        return;
    }
    r[KEY].store(0, Ordering::Release);
    r[OFFSET].store(offset, Ordering::Relaxed);
    r[FLAGS].store(flags, Ordering::Relaxed);
    r[IDENT].store(ident, Ordering::Relaxed);
    r[LEN].store(path.len() as u64, Ordering::Relaxed);
    for (w, piece) in path.chunks(8).enumerate() {
        let mut b = [0u8; 8];
        b[..piece.len()].copy_from_slice(piece);
        r[PATH + w].store(u64::from_le_bytes(b), Ordering::Relaxed);
    }
    r[KEY].store(key, Ordering::Release);
}

/// Copy the path of a live record into `out`; its length.
fn read_path(r: &[AtomicU64], out: &mut [u8]) -> Option<usize> {
    let n = r[LEN].load(Ordering::Relaxed) as usize;
    if n > MAX_PATH || n > out.len() {
        return None;
    }
    for w in 0..n.div_ceil(8) {
        let b = r[PATH + w].load(Ordering::Relaxed).to_le_bytes();
        let lo = w * 8;
        let hi = (lo + 8).min(n);
        out[lo..hi].copy_from_slice(&b[..hi - lo]);
    }
    Some(n)
}

/// The path of `fd`'s record (a directory for `openat` relative to it).
pub fn path_of(fd: u64, out: &mut [u8]) -> Option<usize> {
    let r = live(fd)?;
    let k = r[KEY].load(Ordering::Acquire);
    let n = read_path(r, out)?;
    (r[KEY].load(Ordering::Acquire) == k).then_some(n)
}

/// `fd` was just opened (forwarded `nr` with the user's `args`) at the
/// resolved absolute path `path`; `ident` is what the domain reported.
pub fn on_open(fd: i64, nr: u64, args: &[u64; 6], path: &[u8], ident: u64) {
    if fd < 0 || ident == 0 || !enabled() {
        return;
    }
    let flags = match nr as i64 {
        libc::SYS_open => args[1] as i32,
        libc::SYS_openat => args[2] as i32,
        libc::SYS_creat => libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
        libc::SYS_openat2 => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; }: RESOLVE_*
            // restrictions would not hold for a plain re-open.
            let resolve = usermem::read_u64(args[2].wrapping_add(16));
            if resolve != Some(0) {
                return;
            }
            usermem::read_u64(args[2]).unwrap_or(0) as i32
        }
        _ => return,
    };
    if flags & libc::O_TMPFILE == libc::O_TMPFILE {
        return;
    }
    if !is_under(path, state::mount()) {
        return;
    }
    write(
        fd as u64,
        (flags & !DROP_FLAGS) as u32 as u64,
        0,
        ident,
        path,
    );
}

/// `new` is a duplicate of `old` (dup, dup2, dup3, F_DUPFD*): it gets a
/// copy of `old`'s record (same path, flags and, for now, offset).
pub fn on_dup(old: u64, new: u64) {
    let Some(r) = live(old) else { return };
    let k = r[KEY].load(Ordering::Acquire);
    let mut path = [0u8; MAX_PATH];
    let Some(n) = read_path(r, &mut path) else {
        return;
    };
    let (off, flags, ident) = (
        r[OFFSET].load(Ordering::Relaxed),
        r[FLAGS].load(Ordering::Relaxed),
        r[IDENT].load(Ordering::Relaxed),
    );
    if r[KEY].load(Ordering::Acquire) == k {
        write(new, flags, off, ident, &path[..n]);
    }
}

/// `n` bytes were read (`write` false) or written through `fd`'s offset.
#[inline]
pub fn moved(fd: u64, n: i64, write: bool) {
    if n <= 0 {
        return;
    }
    let Some(r) = live(fd) else { return };
    let append = r[FLAGS].load(Ordering::Relaxed) & libc::O_APPEND as u64 != 0;
    if write && append {
        r[OFFSET].store(OFF_END, Ordering::Relaxed);
        return;
    }
    let o = r[OFFSET].load(Ordering::Relaxed);
    if o >= OFF_UNKNOWN {
        // (A read after an append: where it read from is not known.)
        r[OFFSET].store(OFF_UNKNOWN, Ordering::Relaxed);
    } else if o.saturating_add(n as u64) >= OFF_UNKNOWN {
        r[OFFSET].store(OFF_UNKNOWN, Ordering::Relaxed);
    } else {
        // (Atomic: threads may move one descriptor's offset concurrently.)
        r[OFFSET].fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// lseek on `fd` returned `pos`.
pub fn seeked(fd: u64, pos: i64) {
    if pos < 0 {
        return;
    }
    let Some(r) = live(fd) else { return };
    r[OFFSET].store(pos as u64, Ordering::Relaxed);
    if pos == 0 {
        // rewinddir: a directory read from the start again.
        r[FLAGS].fetch_and(!POSITIONED, Ordering::Relaxed);
    }
}

/// getdents on `fd`: its position is now a file system cookie.
pub fn listed(fd: u64) {
    if let Some(r) = live(fd) {
        r[FLAGS].fetch_or(POSITIONED, Ordering::Relaxed);
    }
}

/// A lock (flock, fcntl record/OFD lock, lease) was taken through `fd`.
pub fn locked(fd: u64) {
    if let Some(r) = live(fd) {
        r[FLAGS].fetch_or(LOCKED, Ordering::Relaxed);
    }
}

/// F_SETFL on `fd` succeeded with `arg`.
pub fn set_fl(fd: u64, arg: u64) {
    if let Some(r) = live(fd) {
        let _ = r[FLAGS].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| {
            Some((f & !(SETFL_MASK as u32 as u64)) | (arg as i32 & SETFL_MASK) as u32 as u64)
        });
    }
}

/// How many descriptors were re-opened and refused so far.
pub fn stats() -> (usize, usize) {
    (
        REOPENED.load(Ordering::Relaxed),
        REFUSED.load(Ordering::Relaxed),
    )
}

/// What a call on a storage descriptor whose domain may have failed uses:
/// the re-opened entry, or `e` presented stale (its calls fail with EIO),
/// or `e` unchanged when its session still serves (or was never set up:
/// a forked child claims its parent's shadow first).
#[cold]
#[inline(never)]
pub fn revive(fd: u64, slot: &AtomicU64, raw: u64, e: Entry) -> Entry {
    let stale = Entry {
        domain: e.home() | STALE,
        ..e
    };
    if !e.is_stale() && session::current(DOMAIN_STORAGE).is_none() {
        return e;
    }
    let Some(r) = live(fd).filter(|_| enabled()) else {
        return if e.is_stale() { e } else { stale };
    };
    let k = r[KEY].load(Ordering::Acquire);
    let mut path = [0u8; PATH_MAX];
    let Some(n) = read_path(r, &mut path) else {
        return stale;
    };
    let (off, flags, ident) = (
        r[OFFSET].load(Ordering::Relaxed),
        r[FLAGS].load(Ordering::Relaxed),
        r[IDENT].load(Ordering::Relaxed),
    );
    if r[KEY].load(Ordering::Acquire) != k {
        return stale;
    }
    // Registers with the restarted domain if needed (ending the old epoch).
    let mut call = match Call::begin(DOMAIN_STORAGE) {
        Ok(c) => c,
        Err(_) => return stale,
    };
    if call.session().epoch == e.epoch {
        // The session still serves this entry after all.
        return e;
    }
    let why = if flags & LOCKED != 0 {
        Some("a lock was taken on it; locks died with the domain")
    } else if flags & POSITIONED != 0 {
        Some("a directory being read: its position cannot be restored")
    } else if off == OFF_UNKNOWN {
        Some("its offset is not known")
    } else {
        None
    };
    let r2 = match why {
        Some(w) => Err(w),
        None => open_again(&mut call, &path[..n], flags as u32 as i32, off, ident),
    };
    let rfd = match r2 {
        Ok(rfd) => rfd,
        Err(w) => {
            forget_if(r, k);
            REFUSED.fetch_add(1, Ordering::Relaxed);
            tell_refused(fd, &path[..n], w);
            return stale;
        }
    };
    let new = super::entry_for(&call, rfd, e.cloexec);
    if !table::replace(slot, raw, new) {
        // Closed, replaced or re-opened by another thread meanwhile.
        remote_close(&mut call, rfd as u64);
        return table::peek(fd).unwrap_or(stale);
    }
    // The record now belongs to the new entry.
    let nk = table::key_of(table::encode(new));
    let _ = r[KEY].compare_exchange(k, nk, Ordering::AcqRel, Ordering::Acquire);
    REOPENED.fetch_add(1, Ordering::Relaxed);
    tell(fd, &path[..n], off);
    new
}

fn forget_if(r: &[AtomicU64], k: u64) {
    let _ = r[KEY].compare_exchange(k, 0, Ordering::AcqRel, Ordering::Acquire);
}

/// Open `path` in the (new) domain, check it is the same file and long
/// enough, seek to `off`. The new remote descriptor, or why not.
fn open_again(
    call: &mut Call,
    path: &[u8],
    flags: i32,
    off: u64,
    ident: u64,
) -> Result<u32, &'static str> {
    let chunk = call.chunk().ok_or("no chunk")?;
    if !chunk.write(0, path) || !chunk.put_byte(path.len(), 0) {
        return Err("no chunk");
    }
    let (r, got) = call
        .invoke(
            libc::SYS_openat as u16,
            [
                libc::AT_FDCWD as i64 as u64,
                0,
                flags as u32 as u64,
                0,
                0,
                0,
            ],
            true,
        )
        .map_err(|_| "the domain failed again")?;
    if r < 0 {
        return Err(if r == -(libc::ENOENT as i64) {
            "it was removed"
        } else {
            "it cannot be opened again"
        });
    }
    if r as u64 >= DOMAIN_FD_LIMIT {
        return Err("the domain answered a bad descriptor");
    }
    let rfd = r as u32;
    let fail = |call: &mut Call, why| {
        remote_close(call, rfd as u64);
        Err(why)
    };
    if got != ident {
        return fail(call, "the path names another file now");
    }
    let lseek = |call: &mut Call, pos: u64, whence: i32| {
        call.result(
            libc::SYS_lseek as u16,
            [rfd as u64, pos, whence as u64, 0, 0, 0],
            false,
        )
    };
    if off == OFF_END {
        // O_APPEND: writes go to the end anyway; reads continue there.
        if lseek(call, 0, libc::SEEK_END) < 0 {
            return fail(call, "it cannot be positioned");
        }
        return Ok(rfd);
    }
    if off > 0 {
        let size = lseek(call, 0, libc::SEEK_END);
        if size == -(libc::ESPIPE as i64) {
            return fail(call, "it is not seekable");
        }
        if size >= 0 && (size as u64) < off {
            return fail(
                call,
                "it is shorter than the offset: data written before the crash was lost",
            );
        }
        if lseek(call, off, libc::SEEK_SET) != off as i64 {
            return fail(call, "it cannot be positioned");
        }
    }
    Ok(rfd)
}

fn tell(fd: u64, path: &[u8], off: u64) {
    let p = core::str::from_utf8(path).unwrap_or("?");
    if off == OFF_END {
        log::once(
            &TOLD,
            format_args!(
                "the storage domain restarted; re-opened descriptor {fd} ({p}, appending) \
                 (further re-opens are not reported; unsynced writes may be lost)"
            ),
        );
    } else {
        log::once(
            &TOLD,
            format_args!(
                "the storage domain restarted; re-opened descriptor {fd} ({p}) at offset {off} \
                 (further re-opens are not reported; unsynced writes may be lost)"
            ),
        );
    }
}

fn tell_refused(fd: u64, path: &[u8], why: &str) {
    let p = core::str::from_utf8(path).unwrap_or("?");
    log::once(
        &TOLD_REFUSED,
        format_args!(
            "the storage domain restarted; descriptor {fd} ({p}) is not re-opened: {why}; \
             its calls fail with EIO (further refusals are not reported)"
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_follow_their_entry_and_track_the_offset() {
        let fd = 62_000u64;
        super::super::set(fd, Entry::storage(77, false)).unwrap();
        write(fd, libc::O_RDWR as u64, 0, 9, b"/storage/a/b");
        let mut p = [0u8; MAX_PATH];
        let n = path_of(fd, &mut p).unwrap();
        assert_eq!(&p[..n], b"/storage/a/b");
        moved(fd, 10, true);
        moved(fd, 5, false);
        moved(fd, -4, false);
        assert_eq!(live(fd).unwrap()[OFFSET].load(Ordering::Relaxed), 15);
        seeked(fd, 3);
        assert_eq!(live(fd).unwrap()[OFFSET].load(Ordering::Relaxed), 3);
        // close_on_exec changes do not detach the record.
        assert!(super::super::set_cloexec(fd, true));
        assert!(live(fd).is_some());
        // dup: a copy at the new number.
        let fd2 = 62_001u64;
        super::super::set(fd2, Entry::storage(78, false)).unwrap();
        on_dup(fd, fd2);
        assert_eq!(live(fd2).unwrap()[OFFSET].load(Ordering::Relaxed), 3);
        listed(fd2);
        assert_ne!(
            live(fd2).unwrap()[FLAGS].load(Ordering::Relaxed) & POSITIONED,
            0
        );
        seeked(fd2, 0);
        assert_eq!(
            live(fd2).unwrap()[FLAGS].load(Ordering::Relaxed) & POSITIONED,
            0
        );
        // A new entry at the number voids the record.
        super::super::set(fd, Entry::storage(79, false)).unwrap();
        assert!(live(fd).is_none());
        super::super::take(fd);
        super::super::take(fd2);
        assert!(live(fd2).is_none());
    }

    #[test]
    fn append_writes_put_the_offset_at_the_end() {
        let fd = 62_010u64;
        super::super::set(fd, Entry::storage(80, false)).unwrap();
        write(
            fd,
            (libc::O_RDWR | libc::O_APPEND) as u64,
            0,
            9,
            b"/storage/log",
        );
        moved(fd, 100, true);
        assert_eq!(live(fd).unwrap()[OFFSET].load(Ordering::Relaxed), OFF_END);
        moved(fd, 1, false);
        assert_eq!(
            live(fd).unwrap()[OFFSET].load(Ordering::Relaxed),
            OFF_UNKNOWN
        );
        seeked(fd, 42);
        set_fl(fd, 0);
        moved(fd, 8, true);
        assert_eq!(live(fd).unwrap()[OFFSET].load(Ordering::Relaxed), 50);
        locked(fd);
        assert_ne!(live(fd).unwrap()[FLAGS].load(Ordering::Relaxed) & LOCKED, 0);
        super::super::take(fd);
    }
}
