//! Executing one forwarded request: validation against the shape table and
//! the data chunk, then the real system call (or a virtual op).
//!
//! Everything in a request comes from the client and may be hostile: every
//! descriptor is checked against the shadow's descriptor limit
//! (`DOMAIN_FD_LIMIT`, or lower: see `Host::fd_limit`), every pointer slot is an
//! offset that must lie inside the call's chunk, strings must end inside it.
//! A bad request fails with an errno; nothing here panics on peer data.
//!
//! The domain's role (`crate::role`) decides which calls it executes at
//! all: network domains never run file calls (ENOSYS); which sockets each
//! role makes and which addresses it takes is `socket`'s check.

use crate::role::Role;
use std::os::fd::BorrowedFd;
use virtuos_abi::entry::Request;
use virtuos_abi::ops;
use virtuos_abi::ClientRegion;

mod fcntl;
mod generic;
mod ioctl;
mod msg;
mod socket;
mod txtbsy;
mod virtual_ops;

#[cfg(test)]
mod tests;

/// What a request may need from the shadow executing it.
pub trait Host {
    /// What this domain serves.
    fn role(&self) -> Role;
    /// Client descriptors are below this number; the shadow's own ones are
    /// at or above it. `DOMAIN_FD_LIMIT` normally; lower when the domain may
    /// not raise `RLIMIT_NOFILE` past it (no CAP_SYS_RESOURCE).
    fn fd_limit(&self) -> u64;
    /// `O_PATH` descriptor of the domain's `/proc`.
    fn procfd(&self) -> BorrowedFd<'_>;
    /// `OP_FORK_PREPARE`: fork the shadow; result: the token, or -errno.
    fn fork_prepare(&self) -> i64;
    /// `OP_FORK_ABORT`: drop the pending shadow `token`.
    fn fork_abort(&self, token: u64) -> i64;
    /// `OP_EXEC_CLAIM` of client descriptor `fd` (below the limit).
    fn exec_claim(&self, fd: i32, image: bool) -> i64 {
        let _ = (fd, image);
        neg(libc::ENOSYS)
    }
    /// `OP_EXEC_ABORT`.
    fn exec_abort(&self) -> i64 {
        neg(libc::ENOSYS)
    }
    /// `OP_EXEC_DONE`.
    fn exec_done(&self, exec: bool) -> i64 {
        let _ = exec;
        neg(libc::ENOSYS)
    }
}

/// Execute `req` (already claimed) for the client owning `region`. Returns
/// the result to publish (>= 0, or a negative errno) and the extra word
/// (`OP_RECVMSG`'s lengths and flags; for a successful open, the opened
/// file's identity, `ops::file_identity`; 0 otherwise).
pub fn execute(region: &ClientRegion, host: &dyn Host, req: &Request) -> (i64, u64) {
    if !host.role().serves(req.op) {
        return (neg(libc::ENOSYS), 0);
    }
    if ops::is_virtual(req.op) {
        virtual_ops::execute(region, host, req)
    } else {
        let r = generic::execute(region, host.role(), host.fd_limit(), req);
        if r >= 0 && ops::is_open(req.op) {
            txtbsy::opened(r as i32)
        } else {
            (r, 0)
        }
    }
}

pub(crate) fn neg(errno: i32) -> i64 {
    -(errno as i64)
}
