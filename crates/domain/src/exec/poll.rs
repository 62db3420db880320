//! `OP_POLL` (`virtuos_abi::ops::OP_POLL`): `poll` over this domain's
//! descriptors for a client's poll/select emulation. `args = [nfds,
//! timeout_ms]`; the chunk holds `nfds` `struct pollfd` from offset 0.
//!
//! The array is copied out of shared memory before the call (the client
//! cannot change fds after the check); descriptors at or above the client
//! limit (the shadow's own) are never polled: they answer POLLNVAL.
//! Only the `revents` fields are written back.

use super::neg;
use virtuos_abi::entry::Request;
use virtuos_abi::{ClientRegion, CHUNK_SIZE, DOMAIN_FD_LIMIT};

const POLLFD: usize = 8;

pub(crate) fn poll(region: &ClientRegion, fd_limit: u64, req: &Request) -> i64 {
    let [nfds, timeout, ..] = req.args;
    if nfds as usize > CHUNK_SIZE / POLLFD {
        return neg(libc::EINVAL);
    }
    let n = nfds as usize;
    let timeout = timeout as i64 as i32;
    let timeout = if timeout < 0 { -1 } else { timeout };
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut nval: Vec<bool> = Vec::new();
    if n > 0 {
        let Some(chunk) = req.chunk else {
            return neg(libc::EFAULT);
        };
        let mut raw = vec![0u8; n * POLLFD];
        if !region.read_chunk(chunk, 0, &mut raw) {
            return neg(libc::EFAULT);
        }
        let limit = fd_limit.min(DOMAIN_FD_LIMIT);
        for e in raw.chunks_exact(POLLFD) {
            let fd = i32::from_ne_bytes([e[0], e[1], e[2], e[3]]);
            let events = i16::from_ne_bytes([e[4], e[5]]);
            let bad = fd >= 0 && fd as u64 >= limit;
            nval.push(bad);
            fds.push(libc::pollfd {
                fd: if bad { -1 } else { fd },
                events,
                revents: 0,
            });
        }
    }
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
