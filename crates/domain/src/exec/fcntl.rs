//! `fcntl(fd, cmd, arg)`: the third slot depends on the command.

use virtuos_abi::shape::{fcntl_arg, Arg};

/// The kernel's `cmd` is an `unsigned int`: the command validated here must
/// be the one executed, so the upper bits are dropped first.
pub fn command(raw: u64) -> u64 {
    raw as u32 as u64
}

/// Kind of the third slot, or the errno for a command that is not forwarded.
pub fn arg_kind(cmd: u64) -> Result<Arg, i32> {
    fcntl_arg(cmd).ok_or(libc::EINVAL)
}
