//! mmap of a forwarded file: an anonymous private mapping filled by pread
//! through the chunk. Shared writable mappings cannot be emulated (ENODEV);
//! shared read-only ones are treated as private (not coherent with later
//! writes to the file).

use super::action::Action;
use super::caller::Call;
use super::domain;
use super::{fds, host, log};
use virtuos_abi::CHUNK_SIZE;

pub fn mmap(args: [u64; 6]) -> Action {
    let (addr, len, prot, flags, fd, off) = (
        args[0],
        args[1],
        args[2] as i32,
        args[3] as i32,
        args[4],
        args[5],
    );
    if flags & libc::MAP_ANONYMOUS != 0 {
        return Action::Local;
    }
    let Some(e) = fds::get(fd) else {
        return Action::Local;
    };
    if e.domain != domain::DOMAIN_STORAGE {
        // A socket cannot be mapped (natively: ENODEV).
        return Action::Done(-(libc::ENODEV as i64));
    }
    let kind = flags & 0x0f; // MAP_TYPE
    let shared = kind == libc::MAP_SHARED || kind == libc::MAP_SHARED_VALIDATE;
    if shared && prot & libc::PROT_WRITE != 0 {
        log::unsupported(
            libc::SYS_mmap as u64,
            "(MAP_SHARED with PROT_WRITE of a forwarded file)",
            libc::ENODEV,
        );
        return Action::Done(-(libc::ENODEV as i64));
    }
    if len == 0 || off % 4096 != 0 || (off as i64) < 0 {
        return Action::Done(-(libc::EINVAL as i64));
    }
    let keep = flags
        & (libc::MAP_FIXED
            | libc::MAP_FIXED_NOREPLACE
            | libc::MAP_NORESERVE
            | libc::MAP_32BIT
            | libc::MAP_LOCKED
            | libc::MAP_POPULATE
            | libc::MAP_STACK);
    let mut call = match Call::begin(e) {
        Ok(c) => c,
        Err(err) => return Action::Done(err),
    };
    let Some(chunk) = call.chunk() else {
        return Action::Done(-(libc::EIO as i64));
    };
    let p = host::mmap_anon(addr, len, libc::PROT_READ | libc::PROT_WRITE, keep);
    if p < 0 {
        return Action::Done(p);
    }
    let base = p as u64;
    let mut done = 0u64;
    while done < len {
        let piece = (len - done).min(CHUNK_SIZE as u64);
        let r = call.result(
            libc::SYS_pread64 as u16,
            [e.remote as u64, 0, piece, off + done, 0, 0],
            true,
        );
        if r < 0 || r as u64 > piece {
            host::munmap(base, len);
            return Action::Done(if r < 0 { r } else { -(libc::EIO as i64) });
        }
        if !chunk.to_user(0, base + done, r as usize) {
            host::munmap(base, len);
            return Action::Done(-(libc::EIO as i64));
        }
        done += r as u64;
        if (r as u64) < piece {
            break; // end of file: the rest stays zero
        }
    }
    let pr = host::mprotect(base, len, prot);
    if pr < 0 {
        host::munmap(base, len);
        return Action::Done(pr);
    }
    Action::Done(p)
}
