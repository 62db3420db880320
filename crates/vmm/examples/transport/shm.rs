//! Host side of a shared region: a file under `/dev/shm` (for
//! `memory-backend-file`) or a memfd (for the ivshmem server), mapped
//! `MAP_SHARED`, plus the probe's ping-pong layout.

use crate::sys::Mapping;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

/// Layout the guest probe and the host agree on (byte offsets of u64 words).
pub mod layout {
    /// Written by the guest when it has mapped the region.
    pub const GUEST_MAGIC: usize = 0;
    /// Written by the host when it is ready to play.
    pub const HOST_MAGIC: usize = 8;
    /// Which experiment (the guest's choice), so stale magic is not replayed.
    pub const SESSION: usize = 16;
    /// Ping-pong counter: the guest moves it even -> odd, the host odd -> even.
    pub const PING: usize = 64;
    /// Both sides `fetch_add` here concurrently.
    pub const ADD: usize = 128;
    /// Both sides increment here with a `cmpxchg` loop.
    pub const CAS: usize = 192;
    /// Set to 1 by the guest to start the contention phase, 2 when done;
    /// the host sets 3 when its own share is done.
    pub const PHASE: usize = 256;
    pub const GUEST_MAGIC_VALUE: u64 = 0x5649_5254_554f_5347; // "VIRTUOSG"
    pub const HOST_MAGIC_VALUE: u64 = 0x5649_5254_554f_5348; // "VIRTUOSH"
}

/// A host file of `size` bytes under /dev/shm, removed on drop.
pub struct ShmFile {
    pub path: PathBuf,
    pub map: Mapping,
}

impl ShmFile {
    pub fn create(path: &Path, size: u64) -> Result<ShmFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.set_len(size)?;
        let map = Mapping::new(&file, 0, size as usize)?;
        Ok(ShmFile {
            path: path.into(),
            map,
        })
    }
}

impl Drop for ShmFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Results of the host half of the probe protocol.
#[derive(Debug, Clone, Default)]
pub struct HostPlay {
    pub base: usize,
    pub round_trips: u64,
    pub elapsed: Duration,
    pub add_final: u64,
    pub cas_final: u64,
    pub expected: u64,
}

/// Find the guest's magic at some 4 KiB-aligned offset (device DAX puts the
/// data after an info block) within `timeout`, skipping `(offset, session)`
/// pairs in `seen`. Returns (offset, session).
pub fn find_guest(map: &Mapping, seen: &[(usize, u64)], timeout: Duration) -> Option<(usize, u64)> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut off = 0;
        while off + 4096 <= map.len() {
            if map.u64_at(off + layout::GUEST_MAGIC).load(SeqCst) == layout::GUEST_MAGIC_VALUE {
                let session = map.u64_at(off + layout::SESSION).load(SeqCst);
                if !seen.contains(&(off, session)) {
                    return Some((off, session));
                }
            }
            off += 4096;
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Play the host half: answer `rounds` pings, then `per_side` contended
/// increments with fetch_add and with cmpxchg. `base` is where the guest's
/// magic is.
pub fn host_play(
    map: &Mapping,
    base: usize,
    rounds: u64,
    per_side: u64,
    timeout: Duration,
) -> Result<HostPlay> {
    let w = |o: usize| map.u64_at(base + o);
    // `timeout` bounds each wait for the guest, not the whole exchange.
    let spin_until = |cond: &dyn Fn() -> bool, what: &str| -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut n = 0u32;
        while !cond() {
            n = n.wrapping_add(1);
            if n % 4096 == 0 && Instant::now() >= deadline {
                anyhow::bail!("timed out waiting for the guest: {what}");
            }
            std::hint::spin_loop();
        }
        Ok(())
    };
    w(layout::HOST_MAGIC).store(layout::HOST_MAGIC_VALUE, SeqCst);
    let started = Instant::now();
    for i in 0..rounds {
        spin_until(&|| w(layout::PING).load(SeqCst) == 2 * i + 1, "ping")?;
        w(layout::PING).fetch_add(1, SeqCst);
    }
    let elapsed = started.elapsed();
    spin_until(&|| w(layout::PHASE).load(SeqCst) >= 1, "contention start")?;
    for _ in 0..per_side {
        w(layout::ADD).fetch_add(1, SeqCst);
        let cas = w(layout::CAS);
        let mut cur = cas.load(SeqCst);
        while let Err(now) = cas.compare_exchange(cur, cur + 1, SeqCst, SeqCst) {
            cur = now;
        }
    }
    spin_until(&|| w(layout::PHASE).load(SeqCst) >= 2, "contention end")?;
    let play = HostPlay {
        base,
        round_trips: rounds,
        elapsed,
        add_final: w(layout::ADD).load(SeqCst),
        cas_final: w(layout::CAS).load(SeqCst),
        expected: 2 * per_side,
    };
    w(layout::PHASE).store(3, SeqCst);
    Ok(play)
}
