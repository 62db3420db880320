//! The region slots of a VM domain (see `virtuos_abi::slot`): a pool of
//! sealed memfds that QEMU shows the guest as NVDIMMs, handed out one per
//! client process.
//!
//! A client gets the memfd of its own slot only. A slot given back is
//! handed out again only once no process but the daemon and QEMU holds it
//! (`holders`: a forked child may still map its parent's slot), and then
//! with its used range punched out (zeroed) and re-initialised, so nothing
//! of the previous client's calls is left in it and nobody else can read
//! the next one's. The pool lives as long as the VM: a restarted VM gets
//! a fresh one.

use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::fs::FallocateFlags;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use virtuos_abi::control::SlotView;
use virtuos_abi::mapping::{create_sized_memfd, Mapping};
use virtuos_abi::region::{RegionHeader, StatePage};
use virtuos_abi::slot::{self, SLOT_FILE_SIZE, SLOT_USED, STATE_IN_SLOT, TAG_OFFSET};
use virtuos_abi::{ClientRegion, RequestEntry, ENTRIES_OFFSET, ENTRY_SIZE, NUM_ENTRIES};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Not yet reported by the guest.
const NO_OFFSET: u64 = u64::MAX;

struct Slot {
    fd: OwnedFd,
    /// The daemon's view of the whole file (bells, init, FAILED marks).
    map: Mapping,
    /// Where the guest's DAX view starts (from `DomainReply::Slots`).
    offset: AtomicU64,
}

pub struct SlotPool {
    slots: Vec<Slot>,
    free: Mutex<Vec<u32>>,
    /// Given back, not yet checked for other holders.
    returned: Mutex<Vec<u32>>,
    /// Processes allowed to hold every slot: the daemon, QEMU.
    keepers: Mutex<Vec<u32>>,
}

/// One slot given to one client; back to the pool on drop.
pub struct Lease {
    pool: Arc<SlotPool>,
    index: u32,
    offset: u64,
    state: StatePage,
}

impl SlotPool {
    /// `count` fresh slots, each tagged with its index.
    pub fn create(count: usize) -> io::Result<SlotPool> {
        if count > slot::MAX_SLOTS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("at most {} region slots, not {count}", slot::MAX_SLOTS),
            ));
        }
        let slots = (0..count as u32)
            .map(|i| {
                let fd = create_sized_memfd(&format!("virtuos-slot-{i}"), SLOT_FILE_SIZE)?;
                let map = Mapping::map(&fd, SLOT_FILE_SIZE, true)?;
                map.write_bytes(TAG_OFFSET, &slot::encode_tag(i));
                Ok(Slot {
                    fd,
                    map,
                    offset: AtomicU64::new(NO_OFFSET),
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(SlotPool {
            slots,
            free: Mutex::new((0..count as u32).rev().collect()),
            returned: Mutex::new(Vec::new()),
            keepers: Mutex::new(vec![std::process::id()]),
        })
    }

    /// Slots in the pool.
    pub fn count(&self) -> usize {
        self.slots.len()
    }

    /// QEMU (`pid`) maps every slot: not a stranger holding one.
    pub fn add_keeper(&self, pid: u32) {
        lock(&self.keepers).push(pid);
    }

    /// Move returned slots that nobody else holds back to the free list.
    fn sweep(&self) {
        let returned: Vec<u32> = std::mem::take(&mut *lock(&self.returned));
        if returned.is_empty() {
            return;
        }
        let ino = |i: u32| {
            rustix::fs::fstat(&self.slots[i as usize].fd)
                .map(|st| st.st_ino)
                .unwrap_or(0)
        };
        let wanted = returned.iter().map(|&i| ino(i)).collect();
        let keepers = lock(&self.keepers).clone();
        let held = super::holders::held_by_others(&wanted, &keepers);
        let (busy, clean): (Vec<u32>, Vec<u32>) =
            returned.into_iter().partition(|&i| held.contains(&ino(i)));
        if !busy.is_empty() {
            tracing::info!(slots = ?busy, "region slots still held by another process: not reused yet");
        }
        lock(&self.free).extend(clean);
        lock(&self.returned).extend(busy);
    }

    /// The path QEMU opens for slot `i`: our own descriptor through /proc
    /// (QEMU is our child and may reopen it; the memfd has no other name).
    pub fn qemu_path(&self, i: usize) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.slots[i].fd.as_raw_fd()
        ))
    }

    /// Take the guest's report of where each slot's view starts. Every
    /// slot must be reported once, at a sane offset.
    pub fn set_views(&self, views: &[SlotView]) -> Result<(), String> {
        let offsets = slot::check_views(self.slots.len(), views)?;
        for (i, (s, off)) in self.slots.iter().zip(offsets).enumerate() {
            if s.offset.swap(off, Ordering::AcqRel) != NO_OFFSET {
                return Err(format!("slot {i} reported twice"));
            }
        }
        Ok(())
    }

    fn offset(&self, i: u32) -> Option<u64> {
        let off = self.slots.get(i as usize)?.offset.load(Ordering::Acquire);
        (off != NO_OFFSET).then_some(off)
    }

    /// A zeroed, initialised slot for a new client.
    pub fn lease(self: &Arc<Self>, cpus: u32) -> io::Result<Lease> {
        let mut index = lock(&self.free).pop();
        if index.is_none() {
            self.sweep();
            index = lock(&self.free).pop();
        }
        let index = index.ok_or_else(|| {
            io::Error::other(format!(
                "all {} region slots of the VM domain are in use (start it with more: \
                 virtuos up --backend vm --vm-slots N)",
                self.count()
            ))
        })?;
        let put_back = |e: io::Error| {
            lock(&self.free).push(index);
            e
        };
        let offset = self
            .offset(index)
            .ok_or_else(|| io::Error::other("the guest has not reported its slots"))
            .map_err(put_back)?;
        let fd = &self.slots[index as usize].fd;
        rustix::fs::fallocate(
            fd,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            SLOT_USED as u64,
        )
        .map_err(io::Error::from)
        .map_err(put_back)?;
        ClientRegion::map_at(fd, offset).map_err(put_back)?.init();
        let state = StatePage::map_at(fd, offset + STATE_IN_SLOT as u64, true).map_err(put_back)?;
        state.get().init(cpus);
        Ok(Lease {
            pool: Arc::clone(self),
            index,
            offset,
            state,
        })
    }

    fn release(&self, index: u32) {
        lock(&self.returned).push(index);
    }

    /// The region header of slot `i` in the daemon's view, once reported.
    pub fn header(&self, i: u32) -> Option<&RegionHeader> {
        let off = self.offset(i)? as usize;
        Some(self.slots[i as usize].map.atomic_ref(off))
    }

    /// Entry `entry` of slot `i`, once reported.
    pub fn entry(&self, i: u32, entry: u16) -> Option<&RequestEntry> {
        let off = self.offset(i)? as usize;
        ((entry as usize) < NUM_ENTRIES).then(|| {
            self.slots[i as usize]
                .map
                .atomic_ref(off + ENTRIES_OFFSET + entry as usize * ENTRY_SIZE)
        })
    }
}

impl Lease {
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The slot's memfd: what the client maps (region and state page).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.pool.slots[self.index as usize].fd.as_fd()
    }

    pub fn region_offset(&self) -> u64 {
        self.offset
    }

    pub fn state_offset(&self) -> u64 {
        self.offset + STATE_IN_SLOT as u64
    }

    pub fn state(&self) -> &StatePage {
        &self.state
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.release(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn reported(n: usize, offset: u64) -> Arc<SlotPool> {
        let pool = Arc::new(SlotPool::create(n).unwrap());
        let views: Vec<SlotView> = (0..n as u32)
            .map(|slot| SlotView { slot, offset })
            .collect();
        pool.set_views(&views).unwrap();
        pool
    }

    #[test]
    fn slots_are_tagged_sealed_and_leased_once() {
        let pool = reported(2, 8192);
        let f = &pool.slots[1];
        let mut tag = [0u8; 24];
        f.map.read_bytes(TAG_OFFSET, &mut tag);
        assert_eq!(slot::decode_tag(&tag), Some(1));
        assert!(rustix::fs::ftruncate(&f.fd, 4096).is_err(), "sealed");
        let a = pool.lease(2).unwrap();
        let b = pool.lease(2).unwrap();
        assert_ne!(a.index(), b.index());
        let Err(full) = pool.lease(2) else {
            panic!("a third lease from two slots")
        };
        assert!(full.to_string().contains("in use"), "{full}");
        let region = ClientRegion::map_at(a.fd(), a.region_offset()).unwrap();
        region.validate().unwrap();
        assert!(a.state().get().is_valid());
        assert_eq!(a.state_offset(), 8192 + STATE_IN_SLOT as u64);
        // Dirty the slot, give it back: the next lease starts clean.
        region.header().doorbell.store(7, Ordering::SeqCst);
        let index = a.index();
        drop(a);
        let c = pool.lease(2).unwrap();
        assert_eq!(c.index(), index, "the returned slot, swept");
        let region = ClientRegion::map_at(c.fd(), c.region_offset()).unwrap();
        assert_eq!(region.header().doorbell.load(Ordering::SeqCst), 0);
        assert!(pool.header(index).is_some());
        assert!(pool.entry(index, NUM_ENTRIES as u16).is_none());
    }

    #[test]
    fn a_slot_someone_else_still_holds_is_not_leased_again() {
        let pool = reported(1, 8192);
        let a = pool.lease(1).unwrap();
        // A process that kept the slot's descriptor (a forked child would
        // keep its parent's mapping the same way).
        let kept = rustix::io::fcntl_dupfd_cloexec(a.fd(), 100).unwrap();
        rustix::io::fcntl_setfd(&kept, rustix::io::FdFlags::empty()).unwrap();
        let mut holder = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        drop(kept);
        drop(a);
        let Err(e) = pool.lease(1) else {
            panic!("leased a slot another process still holds")
        };
        assert!(e.to_string().contains("in use"), "{e}");
        holder.kill().unwrap();
        holder.wait().unwrap();
        let b = pool.lease(1).expect("free once the holder is gone");
        assert_eq!(b.index(), 0);
    }

    #[test]
    fn guest_reports_are_checked() {
        let pool = SlotPool::create(2).unwrap();
        let v = |slot, offset| SlotView { slot, offset };
        assert!(pool.set_views(&[v(5, 8192)]).is_err(), "no such slot");
        assert!(pool.set_views(&[v(0, 100)]).is_err(), "misaligned");
        assert!(pool.set_views(&[v(0, SLOT_FILE_SIZE as u64)]).is_err());
        assert!(pool.set_views(&[v(0, 8192)]).is_err(), "slot 1 missing");
        assert!(pool.set_views(&[v(0, 8192)]).is_err(), "slot 0 twice");
        let fresh = Arc::new(SlotPool::create(1).unwrap());
        assert!(fresh.lease(1).is_err(), "not reported yet");
        assert!(SlotPool::create(slot::MAX_SLOTS + 1).is_err());
    }
}
