//! The shared memory of one (client, domain) pair: request region and state
//! page, plus the daemon's writable view of the state page (to mark it
//! FAILED when the domain dies).
//!
//! Process backend: two fresh memfds. VM backend: one leased region slot
//! (`backend::vm::slots`), whose memfd holds both at the offsets the guest
//! reported.

use crate::backend::vm::slots::{Lease, SlotPool};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use virtuos_abi::call::{submit_and_wait, CallError, WaitPolicy};
use virtuos_abi::mapping::create_memfd;
use virtuos_abi::ops::OP_PING;
use virtuos_abi::region::StatePage;
use virtuos_abi::state::status;
use virtuos_abi::{ClientRegion, REGION_SIZE, STATE_SIZE};

pub enum Regions {
    Memfds {
        region: OwnedFd,
        state: OwnedFd,
        /// `O_RDONLY` descriptor of the state page: what the client gets.
        state_ro: OwnedFd,
        page: StatePage,
    },
    Slot(Lease),
}

impl Regions {
    /// Fresh, initialised region and state page for client `client_id`.
    pub fn create(client_id: u64, cpus: u32) -> io::Result<Regions> {
        let region = create_memfd(&format!("virtuos-region-{client_id}"), REGION_SIZE)?;
        ClientRegion::map(&region)?.init();
        let state = create_memfd(&format!("virtuos-state-{client_id}"), STATE_SIZE)?;
        let page = StatePage::map(&state, true)?;
        page.get().init(cpus);
        // Only the owner may reopen the page (clients of a root daemon
        // cannot turn their read-only descriptor into a writable one
        // through /proc/self/fd).
        rustix::fs::fchmod(&state, Mode::RUSR)?;
        let state_ro = rustix::fs::open(
            format!("/proc/self/fd/{}", state.as_raw_fd()),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Regions::Memfds {
            region,
            state,
            state_ro,
            page,
        })
    }

    /// A slot of a VM domain. Its state page shares the client's memfd,
    /// so the client could write it: that only misleads the client itself.
    pub fn lease(pool: &Arc<SlotPool>, cpus: u32) -> io::Result<Regions> {
        pool.lease(cpus).map(Regions::Slot)
    }

    /// The slot a VM domain maps for this client.
    pub fn slot(&self) -> Option<u32> {
        match self {
            Regions::Memfds { .. } => None,
            Regions::Slot(l) => Some(l.index()),
        }
    }

    /// [region (rw), state page (rw)]: for a process domain (a VM domain
    /// gets the slot number instead).
    pub fn domain_fds(&self) -> Vec<BorrowedFd<'_>> {
        match self {
            Regions::Memfds { region, state, .. } => vec![region.as_fd(), state.as_fd()],
            Regions::Slot(_) => Vec::new(),
        }
    }

    /// [region (rw), state page (read-only)]: for the client.
    pub fn client_fds(&self) -> [BorrowedFd<'_>; 2] {
        match self {
            Regions::Memfds {
                region, state_ro, ..
            } => [region.as_fd(), state_ro.as_fd()],
            Regions::Slot(l) => [l.fd(), l.fd()],
        }
    }

    /// Where the region and the state page start in `client_fds`.
    pub fn offsets(&self) -> (u64, u64) {
        match self {
            Regions::Memfds { .. } => (0, 0),
            Regions::Slot(l) => (l.region_offset(), l.state_offset()),
        }
    }

    /// The daemon's writable view of the state page.
    fn page(&self) -> &StatePage {
        match self {
            Regions::Memfds { page, .. } => page,
            Regions::Slot(l) => l.state(),
        }
    }

    /// Tell the client its domain is gone: waiting calls fail instead of hang.
    pub fn mark_failed(&self) {
        self.page()
            .get()
            .status
            .store(status::FAILED, Ordering::Release);
    }

    /// Submit `OP_PING` through these regions, as a client would, and wait
    /// up to `timeout` for the answer: Ok when the domain answered 0.
    /// Only for regions the daemon alone uses (its probe of a domain).
    pub fn ping(&self, timeout: Duration) -> Result<(), String> {
        let region = match self {
            Regions::Memfds { region, .. } => ClientRegion::map(region),
            Regions::Slot(l) => ClientRegion::map_at(l.fd(), l.region_offset()),
        }
        .map_err(|e| format!("cannot map the probe's region: {e}"))?;
        let entry = region.entry(0).ok_or("the probe's region has no entries")?;
        entry.fill(OP_PING, 1, std::process::id(), None, [0; 6]);
        let policy = WaitPolicy {
            spin: 1000,
            sleep_slice: Duration::from_millis(10),
            deadline: Some(timeout),
        };
        match submit_and_wait(&region, self.page().get(), 0, policy) {
            Ok((0, _)) => Ok(()),
            Ok((r, _)) => Err(format!("it answered a ping with {r:#x}")),
            Err(CallError::DomainGone) => Err(format!("no answer to a ping within {timeout:?}")),
            Err(e) => Err(format!("the ping failed: {e:?}")),
        }
    }

    /// The shadow's heartbeat (its housekeeping bumps it while its workers
    /// take requests).
    pub fn heartbeat(&self) -> u64 {
        self.page().get().heartbeat.load(Ordering::Acquire)
    }
}
