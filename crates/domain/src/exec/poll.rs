//! `OP_POLL` (`virtuos_abi::ops::OP_POLL`): `poll` over this domain's
//! descriptors for a client's poll/select emulation. `args = [nfds,
//! timeout_ms]`; the chunk holds `nfds` `struct pollfd` from offset 0.
//!
//! The array is copied out of shared memory before the call (the client
//! cannot change fds after the check); descriptors at or above the client
//! limit (the shadow's own) are never polled: they answer POLLNVAL.
//! Only the `revents` fields are written back.

use super::neg;
use virtuos_abi::decode::{decode_pollfds, POLLFD};
use virtuos_abi::entry::Request;
use virtuos_abi::ClientRegion;

pub(crate) fn poll(region: &ClientRegion, fd_limit: u64, req: &Request) -> i64 {
    let [nfds, timeout, ..] = req.args;
    let n = nfds as usize;
    let timeout = timeout as i64 as i32;
    let timeout = if timeout < 0 { -1 } else { timeout };
    let (mut fds, nval) = match decode_pollfds(region, req.chunk, nfds, fd_limit) {
        Ok(v) => v,
        Err(e) => return neg(e),
    };
    let args = [
        fds.as_mut_ptr() as u64,
        n as u64,
        timeout as i64 as u64,
        0,
        0,
        0,
    ];
    // SAFETY: poll reads and writes `n` pollfd structs of our own vector
    // (alive until the call returns); no pointer comes from the client.
    let r = unsafe { crate::sys::syscall(libc::SYS_poll, args) };
    if r < 0 {
        return r;
    }
    let mut ready = 0i64;
    if let Some(chunk) = req.chunk {
        for (i, p) in fds.iter().enumerate() {
            let rev = if nval[i] { libc::POLLNVAL } else { p.revents };
            if rev != 0 {
                ready += 1;
            }
            if !region.write_chunk(chunk, (i * POLLFD + 6) as u64, &rev.to_ne_bytes()) {
                return neg(libc::EFAULT);
            }
        }
    }
    ready
}
