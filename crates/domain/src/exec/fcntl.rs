//! `fcntl(fd, cmd, arg)`: the third slot depends on the command.

use virtuos_abi::shape::{fcntl_arg, Arg};
use virtuos_abi::ClientRegion;

/// The kernel's `cmd` is an `unsigned int`: the command validated here must
/// be the one executed, so the upper bits are dropped first.
pub fn command(raw: u64) -> u64 {
    raw as u32 as u64
}

/// Kind of the third slot, or the errno for a command that is not forwarded.
pub fn arg_kind(cmd: u64) -> Result<Arg, i32> {
    fcntl_arg(cmd).ok_or(libc::EINVAL)
}

/// Offset of `l_pid` in the kernel's `struct flock` (x86-64).
const L_PID: u64 = 24;

/// After a successful `F_GETLK` whose lock description is at `off` of the
/// chunk: the holder the kernel named is a shadow; the client sees its own
/// side, the shadow's client (`pidmap`). (`F_OFD_GETLK` reports -1.)
pub fn holder_to_client(region: &ClientRegion, chunk: Option<u16>, off: u64) {
    let Some(chunk) = chunk else { return };
    let Some(at) = off.checked_add(L_PID) else {
        return;
    };
    let mut b = [0u8; 4];
    if !region.read_chunk(chunk, at, &mut b) {
        return;
    }
    let pid = i32::from_ne_bytes(b);
    if pid > 0 {
        let client = crate::pidmap::client_of(pid);
        region.write_chunk(chunk, at, &client.to_ne_bytes());
    }
}
