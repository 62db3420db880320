//! The credentials a shadow's workers act with, per client thread.
//!
//! The daemon reads a client thread's credentials from the kernel
//! (`/proc/PID/task/TID/status`) whenever the client registers, execs,
//! forks or returns from a set*id/setgroups/capset call, and sends them
//! with `SetCredentials`. The main process writes them into a small table
//! that it shares with that client's shadow only (a memfd the shadow maps
//! read-only: neither the client nor the shadow can change it); it answers
//! the daemon after the write, so the client's next call already sees
//! them. Before executing a request, a worker looks up the record of the
//! request's task (or the default record), and if it differs from what the
//! worker thread has, switches its own (per-thread) credentials
//! (`sys::become_thread`). A seqlock makes the copy consistent; an
//! unchanged sequence number and task skip the lookup, so a client whose
//! credentials do not change pays one atomic load per call.
//!
//! Layout: `[seq u64][victim u32][pad]` then `RECORDS` records of
//! `RECORD_WORDS` words: `[tid][uids x4][gids x4][ngroups][cap lo][cap hi]
//! [groups x MAX_GROUPS]`. Record 0 is the default (tid ignored): the
//! credentials of the last thread that changed them, which is what a new
//! thread created after the change has. Threads beyond `RECORDS - 1`
//! recycle records round robin and fall back to the default.

use anyhow::{Context, Result};
use rustix::fd::{AsFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use virtuos_abi::control::Credentials;
use virtuos_abi::mapping::{create_sized_memfd, Mapping};

/// Supplementary groups kept per record; more are dropped (with a
/// warning): fewer groups can only deny access, never grant it.
pub const MAX_GROUPS: usize = 1024;
/// The default record plus 16 per-thread ones.
const RECORDS: usize = 17;
const HEADER: usize = 64;
const FIXED_WORDS: usize = 12;
const RECORD_WORDS: usize = FIXED_WORDS + MAX_GROUPS;
const RECORD_BYTES: usize = RECORD_WORDS * 4;
const SIZE: usize = (HEADER + RECORDS * RECORD_BYTES).next_multiple_of(4096);

type Record = [AtomicU32; RECORD_WORDS];

fn record(m: &Mapping, i: usize) -> &Record {
    m.atomic_ref(HEADER + i * RECORD_BYTES)
}

fn seq(m: &Mapping) -> &AtomicU64 {
    m.atomic_ref(0)
}

/// The main process's handle on one shadow's table: only the memfd; the
/// table is mapped just while writing, so shadows forked later never
/// inherit a writable mapping of another client's table.
pub struct Writer {
    fd: OwnedFd,
}

impl Writer {
    /// A new table whose default record is `creds`.
    pub fn new(creds: &Credentials) -> Result<Writer> {
        let fd = create_sized_memfd("virtuos-creds", SIZE).context("cannot create a memfd")?;
        let w = Writer { fd };
        w.store(None, creds)?;
        Ok(w)
    }

    /// The descriptor to hand the shadow.
    pub fn fd(&self) -> rustix::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The default record (what a forked child starts with).
    pub fn default_record(&self) -> Result<Credentials> {
        let r = Reader::map(&self.fd)?;
        let (_, c) = r.lookup(0).context("the credentials table stays locked")?;
        Ok(c)
    }

    /// Record `creds` as thread `tid`'s and as the default; with `None`,
    /// as the whole process's (every per-thread record dropped).
    pub fn store(&self, tid: Option<u32>, creds: &Credentials) -> Result<()> {
        if creds.groups.len() > MAX_GROUPS {
            tracing::warn!(
                groups = creds.groups.len(),
                "a client has more than {MAX_GROUPS} supplementary groups: the rest are dropped"
            );
        }
        let m = Mapping::map(&self.fd, SIZE, true).context("cannot map the credentials")?;
        let victim: &AtomicU32 = &m.atomic_ref::<[AtomicU32; 1]>(8)[0];
        let seq = seq(&m);
        seq.fetch_add(1, Ordering::AcqRel);
        fence(Ordering::Release);
        write_record(record(&m, 0), 0, creds);
        match tid {
            None => (1..RECORDS).for_each(|i| record(&m, i)[0].store(0, Ordering::Relaxed)),
            Some(t) => {
                let i = (1..RECORDS)
                    .find(|&i| record(&m, i)[0].load(Ordering::Relaxed) == t)
                    .or_else(|| {
                        (1..RECORDS).find(|&i| record(&m, i)[0].load(Ordering::Relaxed) == 0)
                    })
                    .unwrap_or_else(|| {
                        let v = victim.fetch_add(1, Ordering::Relaxed) as usize;
                        1 + v % (RECORDS - 1)
                    });
                write_record(record(&m, i), t, creds);
            }
        }
        seq.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

fn write_record(r: &Record, tid: u32, c: &Credentials) {
    let n = c.groups.len().min(MAX_GROUPS);
    let words = [tid]
        .into_iter()
        .chain(c.uids)
        .chain(c.gids)
        .chain([
            n as u32,
            c.cap_effective as u32,
            (c.cap_effective >> 32) as u32,
        ])
        .chain(c.groups[..n].iter().copied());
    for (slot, w) in r.iter().zip(words) {
        slot.store(w, Ordering::Relaxed);
    }
}

fn read_record(r: &Record) -> Credentials {
    let w = |i: usize| r[i].load(Ordering::Relaxed);
    let n = (w(9) as usize).min(MAX_GROUPS);
    Credentials {
        uids: [w(1), w(2), w(3), w(4)],
        gids: [w(5), w(6), w(7), w(8)],
        cap_effective: w(10) as u64 | (w(11) as u64) << 32,
        groups: (0..n).map(|i| w(FIXED_WORDS + i)).collect(),
    }
}

/// A shadow's read-only view of its table.
pub struct Reader {
    map: Mapping,
}

impl Reader {
    pub fn map(fd: impl AsFd) -> Result<Reader> {
        let map = Mapping::map(fd, SIZE, false).context("cannot map the credentials")?;
        Ok(Reader { map })
    }

    /// Changes whenever the table changes.
    #[inline]
    pub fn sequence(&self) -> u64 {
        seq(&self.map).load(Ordering::Acquire)
    }

    /// A consistent copy of `task`'s record (or the default), with the
    /// sequence number it belongs to. `None` if the main process keeps
    /// writing (it never does for long) or died mid-write.
    pub fn lookup(&self, task: u32) -> Option<(u64, Credentials)> {
        for _ in 0..10_000 {
            let before = self.sequence();
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let i = (1..RECORDS)
                .find(|&i| task != 0 && record(&self.map, i)[0].load(Ordering::Relaxed) == task)
                .unwrap_or(0);
            let c = read_record(record(&self.map, i));
            fence(Ordering::Acquire);
            if seq(&self.map).load(Ordering::Relaxed) == before {
                return Some((before, c));
            }
        }
        None
    }
}

/// What one worker thread acts with now.
#[derive(Default)]
pub struct ThreadCreds {
    seq: u64,
    task: u32,
    applied: Option<Credentials>,
}

impl ThreadCreds {
    /// Make this thread act with `task`'s credentials. Errors (as
    /// `-errno`) leave the thread marked unusable until a switch succeeds.
    #[inline]
    pub fn ensure(&mut self, table: &Reader, task: u32, permitted: u64) -> Result<(), i64> {
        if self.applied.is_some() && self.task == task && self.seq == table.sequence() {
            return Ok(());
        }
        self.switch(table, task, permitted)
    }

    #[cold]
    fn switch(&mut self, table: &Reader, task: u32, permitted: u64) -> Result<(), i64> {
        let Some((seq, c)) = table.lookup(task) else {
            tracing::error!("the credentials table stays locked");
            self.applied = None;
            return Err(-(libc::EIO as i64));
        };
        if self.applied.as_ref() != Some(&c) {
            self.applied = None;
            if let Err(e) = crate::sys::become_thread(&c, permitted) {
                tracing::error!(
                    task,
                    uid = c.euid(),
                    "cannot take the client's credentials: {e}"
                );
                return Err(-(libc::EIO as i64));
            }
            self.applied = Some(c);
        }
        self.seq = seq;
        self.task = task;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(uid: u32, groups: usize) -> Credentials {
        Credentials {
            uids: [uid, uid + 1, uid + 2, uid + 3],
            gids: [7, 8, 9, 10],
            groups: (0..groups as u32).collect(),
            cap_effective: 0x1_0000_0003,
        }
    }

    #[test]
    fn records_per_thread_with_default_and_reset() {
        let w = Writer::new(&creds(0, 2)).unwrap();
        let r = Reader::map(w.fd()).unwrap();
        let (s0, c) = r.lookup(42).unwrap();
        assert_eq!(c, creds(0, 2));
        w.store(Some(42), &creds(1000, 3)).unwrap();
        let (s1, c) = r.lookup(42).unwrap();
        assert_ne!(s0, s1);
        assert_eq!(s1 % 2, 0);
        assert_eq!(c, creds(1000, 3));
        // Another thread's record does not change 42's; the default follows
        // the last change.
        w.store(Some(43), &creds(2000, 0)).unwrap();
        assert_eq!(r.lookup(42).unwrap().1, creds(1000, 3));
        assert_eq!(r.lookup(99).unwrap().1, creds(2000, 0));
        // Task 0 (unknown) always gets the default.
        assert_eq!(r.lookup(0).unwrap().1, creds(2000, 0));
        // A whole-process change drops the per-thread records.
        w.store(None, &creds(5, 1)).unwrap();
        assert_eq!(r.lookup(42).unwrap().1, creds(5, 1));
    }

    #[test]
    fn many_threads_recycle_records_and_groups_are_bounded() {
        let w = Writer::new(&creds(0, 0)).unwrap();
        let r = Reader::map(w.fd()).unwrap();
        for t in 1..=(RECORDS as u32 * 2) {
            w.store(Some(t), &creds(t, 1)).unwrap();
        }
        let last = RECORDS as u32 * 2;
        assert_eq!(r.lookup(last).unwrap().1, creds(last, 1));
        w.store(Some(1), &creds(9, MAX_GROUPS + 5)).unwrap();
        assert_eq!(r.lookup(1).unwrap().1.groups.len(), MAX_GROUPS);
    }

    #[test]
    fn the_shadow_cannot_write_its_table() {
        let w = Writer::new(&creds(0, 0)).unwrap();
        let r = Reader::map(w.fd()).unwrap();
        assert!(!r.map.writable());
    }
}
