//! `ioctl(fd, request, arg)`: the third slot is decoded from the request.
//!
//! Requests without a known shape fail with ENOTTY: an unknown request could
//! make the kernel follow a pointer of the client's choosing in the shadow.

use virtuos_abi::shape::{ioctl_arg, Arg};

/// The kernel's `cmd` is an `unsigned int`; see `fcntl::command`.
pub fn request(raw: u64) -> u64 {
    raw as u32 as u64
}

pub fn arg_kind(request: u64) -> Result<Arg, i32> {
    ioctl_arg(request).ok_or(libc::ENOTTY)
}
