//! `OP_SENDMSG` / `OP_RECVMSG`: `sendmsg`/`recvmsg` flattened into the
//! chunk at the fixed offsets of `ops::msg` (address, ancillary data,
//! payload), so that neither side follows a pointer the other wrote.
//!
//! The domain builds the real `msghdr` itself. Ancillary data is parsed in
//! a private copy (the client cannot change it after the check):
//! `SCM_RIGHTS` and `SCM_CREDENTIALS` are refused in `sendmsg` (EINVAL:
//! descriptors and credentials cannot cross domains) and dropped from
//! `recvmsg` results (received descriptors are closed at once).

use super::neg;
use crate::role::Role;
use virtuos_abi::decode::{self, check_send_control};
use virtuos_abi::entry::Request;
use virtuos_abi::ops::msg::{
    pack_recv_extra, CONTROL_MAX, CONTROL_OFF, DATA_MAX, DATA_OFF, NAME_MAX, NAME_OFF,
};
use virtuos_abi::{ClientRegion, DOMAIN_FD_LIMIT};

/// Incoming ancillary data without descriptors and credentials; the
/// descriptors of dropped `SCM_RIGHTS` messages are closed.
pub(crate) fn filter_recv_control(buf: &[u8]) -> Vec<u8> {
    decode::filter_recv_control(buf, &mut |fd| crate::sys::close_raw(fd))
}

fn ptr(region: &ClientRegion, chunk: Option<u16>, off: usize, len: usize) -> Result<u64, i32> {
    if len == 0 {
        return Ok(0);
    }
    let chunk = chunk.ok_or(libc::EFAULT)?;
    region
        .chunk_ptr(chunk, off as u64, len as u64)
        .map(|p| p as u64)
        .ok_or(libc::EFAULT)
}

fn check_fd(fd: u64, fd_limit: u64) -> Result<(), i32> {
    if fd < fd_limit.min(DOMAIN_FD_LIMIT) {
        Ok(())
    } else {
        Err(libc::EBADF)
    }
}

fn bounded(v: u64, max: usize) -> Result<usize, i32> {
    usize::try_from(v)
        .ok()
        .filter(|&v| v <= max)
        .ok_or(libc::EINVAL)
}

/// `args = [fd, flags, name_len, control_len, data_len]`.
pub(crate) fn sendmsg(region: &ClientRegion, role: Role, fd_limit: u64, req: &Request) -> i64 {
    match try_sendmsg(region, role, fd_limit, req) {
        Ok(n) => n,
        Err(e) => neg(e),
    }
}

fn try_sendmsg(
    region: &ClientRegion,
    role: Role,
    fd_limit: u64,
    req: &Request,
) -> Result<i64, i32> {
    let [fd, flags, name_len, control_len, data_len, _] = req.args;
    check_fd(fd, fd_limit)?;
    let name_len = bounded(name_len, NAME_MAX)?;
    let control_len = bounded(control_len, CONTROL_MAX)?;
    let data_len = bounded(data_len, DATA_MAX)?;
    let copy = |off: usize, len: usize| -> Result<Vec<u8>, i32> {
        let mut v = vec![0u8; len];
        if len > 0 && !region.read_chunk(req.chunk.ok_or(libc::EFAULT)?, off as u64, &mut v) {
            return Err(libc::EFAULT);
        }
        Ok(v)
    };
    let name = copy(NAME_OFF, name_len)?;
    if name_len > 0 {
        super::socket::check_addr(role, libc::SYS_sendto, &name)?;
    }
    let control = copy(CONTROL_OFF, control_len)?;
    check_send_control(&control)?;
    let data = ptr(region, req.chunk, DATA_OFF, data_len)?;
    // SAFETY: see `sys::sendmsg`: `name` and `control` are private buffers
    // alive for the call; `data` is 0 (len 0) or a checked chunk range of
    // `data_len` bytes.
    Ok(unsafe { crate::sys::sendmsg(fd, flags, &name, &control, data, data_len) })
}

/// `args = [fd, flags, name_cap, control_cap, data_cap]`. Returns (bytes,
/// `pack_recv_extra(namelen, controllen, msg_flags)`).
pub(crate) fn recvmsg(region: &ClientRegion, fd_limit: u64, req: &Request) -> (i64, u64) {
    match try_recvmsg(region, fd_limit, req) {
        Ok(r) => r,
        Err(e) => (neg(e), 0),
    }
}

fn try_recvmsg(region: &ClientRegion, fd_limit: u64, req: &Request) -> Result<(i64, u64), i32> {
    let [fd, flags, name_cap, control_cap, data_cap, _] = req.args;
    check_fd(fd, fd_limit)?;
    let name_cap = (name_cap.min(NAME_MAX as u64)) as usize;
    let control_cap = (control_cap.min(CONTROL_MAX as u64)) as usize;
    let data_cap = (data_cap.min(DATA_MAX as u64)) as usize;
    let name = ptr(region, req.chunk, NAME_OFF, name_cap)?;
    let data = ptr(region, req.chunk, DATA_OFF, data_cap)?;
    if control_cap > 0 {
        // The filtered control data goes back to the chunk: it must exist.
        ptr(region, req.chunk, CONTROL_OFF, control_cap)?;
    }
    let mut control = vec![0u64; control_cap.div_ceil(8)];
    let asked_cloexec = flags & libc::MSG_CMSG_CLOEXEC as u64 != 0;
    let flags = flags | libc::MSG_CMSG_CLOEXEC as u64;
    // SAFETY: see `sys::recvmsg`: `name` and `data` are 0 or checked chunk
    // ranges of their capacities; `control` is a private buffer of at least
    // `control_cap` bytes alive for the call.
    let got = unsafe {
        crate::sys::recvmsg(
            fd,
            flags,
            name,
            name_cap,
            &mut control,
            control_cap,
            data,
            data_cap,
        )
    };
    let (n, namelen, controllen, mut msg_flags) = match got {
        Ok(v) => v,
        Err(e) => return Ok((e, 0)),
    };
    if !asked_cloexec {
        // Ours, not the client's: do not report it back.
        msg_flags &= !libc::MSG_CMSG_CLOEXEC;
    }
    let bytes: Vec<u8> = control.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let kept = filter_recv_control(&bytes[..controllen.min(control_cap)]);
    if let Some(chunk) = req.chunk {
        if !kept.is_empty() && !region.write_chunk(chunk, CONTROL_OFF as u64, &kept) {
            return Err(libc::EFAULT);
        }
    }
    Ok((
        n,
        pack_recv_extra(namelen as u32, kept.len() as u32, msg_flags as u32),
    ))
}
