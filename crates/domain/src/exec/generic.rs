//! Ordinary forwarded system calls, marshalled by the shape table
//! (`virtuos_abi::decode::marshal` checks every slot).

use super::socket::{self, PrivateLen};
use super::{fcntl, ioctl, neg};
use crate::role::Role;
use virtuos_abi::decode::{marshal, Strings};
use virtuos_abi::entry::Request;
use virtuos_abi::shape::shape;
use virtuos_abi::ClientRegion;

/// Validate and execute system call `req.op` for a domain of `role`.
pub(crate) fn execute(region: &ClientRegion, role: Role, fd_limit: u64, req: &Request) -> i64 {
    let Some(mut sh) = shape(req.op) else {
        return neg(libc::ENOSYS);
    };
    let nr = req.op as i64;
    let mut args = req.args;
    if nr == libc::SYS_fcntl {
        args[1] = fcntl::command(args[1]);
        match fcntl::arg_kind(args[1]) {
            Ok(kind) => sh[2] = kind,
            Err(e) => return neg(e),
        }
    } else if nr == libc::SYS_ioctl {
        args[1] = ioctl::request(args[1]);
        match ioctl::arg_kind(args[1]) {
            Ok(kind) => sh[2] = kind,
            Err(e) => return neg(e),
        }
    }
    if let Err(e) = socket::check_socket(role, nr, &args) {
        return neg(e);
    }
    let mut strings = Strings::default();
    let mut raw = match marshal(region, fd_limit, req.chunk, &sh, &args, &mut strings) {
        Ok(raw) => raw,
        Err(e) => return neg(e),
    };
    // The address is handed to the kernel from a checked private copy.
    let mut addr = None;
    if let Some(slots) = socket::addr_slots(nr) {
        match socket::private_addr(role, region, req.chunk, nr, &args, slots) {
            Ok(Some(a)) => {
                raw[slots.0] = a.as_ptr() as u64;
                raw[slots.1] = a.len() as u64;
                addr = Some(a);
            }
            Ok(None) => {}
            Err(e) => return neg(e),
        }
    }
    let mut len = None;
    if let Some((slot, max)) = socket::len_slot(nr) {
        match PrivateLen::take(region, req.chunk, args[slot], max) {
            Ok(Some(mut l)) => {
                raw[slot] = l.ptr();
                len = Some(l);
            }
            Ok(None) => {}
            Err(e) => return neg(e),
        }
    }
    if let Err(e) = super::txtbsy::before(nr, &raw) {
        return neg(e);
    }
    // SAFETY: `nr` has a shape, so it is a file system or socket call that
    // does not touch this process's memory map or control flow; every
    // pointer slot was checked by `marshal` to lie inside the call's chunk
    // of the mapped region (for its full length or struct size) or points
    // into `strings`, `addr` (with its own length) or `len`, which live until the call returns (a
    // `socklen_t` bounds its buffer by the struct size: see `socket`);
    // descriptors are the client's.
    let r = unsafe { crate::sys::syscall(nr, raw) };
    if let Some(l) = len {
        l.finish(region);
    }
    if r == 0 && nr == libc::SYS_fcntl && args[1] as i32 == libc::F_GETLK {
        fcntl::holder_to_client(region, req.chunk, args[2]);
    }
    drop(strings);
    drop(addr);
    r
}
