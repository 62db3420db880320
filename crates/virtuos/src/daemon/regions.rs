//! The shared memory of one (client, domain) pair: request region and state
//! page, plus the daemon's writable view of the state page (to mark it
//! FAILED when the domain dies).

use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use std::io;
use std::sync::atomic::Ordering;
use virtuos_abi::mapping::create_memfd;
use virtuos_abi::region::StatePage;
use virtuos_abi::state::status;
use virtuos_abi::{ClientRegion, REGION_SIZE, STATE_SIZE};

pub struct Regions {
    region: OwnedFd,
    state: OwnedFd,
    /// `O_RDONLY` descriptor of the state page: what the client gets.
    state_ro: OwnedFd,
    page: StatePage,
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
        Ok(Regions {
            region,
            state,
            state_ro,
            page,
        })
    }

    /// [region (rw), state page (rw)]: for the domain.
    pub fn domain_fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.region.as_fd(), self.state.as_fd()]
    }

    /// [region (rw), state page (read-only)]: for the client.
    pub fn client_fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.region.as_fd(), self.state_ro.as_fd()]
    }

    /// Tell the client its domain is gone: waiting calls fail instead of hang.
    pub fn mark_failed(&self) {
        self.page
            .get()
            .status
            .store(status::FAILED, Ordering::Release);
    }
}
