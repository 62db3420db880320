//! Virtual operations: requests that are not one Linux system call.
//!
//! Ordinary requests carry an x86_64 syscall number in `op` (always below
//! `VIRTUAL_BASE`) and are marshalled by the shape table in `shape`.

/// First virtual op number.
pub const VIRTUAL_BASE: u16 = 0x8000;
/// Round trip through the queue with no system call: result 0. Used by
/// benchmarks and liveness checks.
pub const OP_PING: u16 = 0x8000;
/// Fork the client's shadow process before the client forks. Result: a
/// token (>= 0) naming the pending shadow, which the child claims through
/// the daemon (`ClientRequest::ClaimFork`).
pub const OP_FORK_PREPARE: u16 = 0x8001;
/// The client's fork failed: `args[0]` = token of the pending shadow to drop.
pub const OP_FORK_ABORT: u16 = 0x8002;
/// `args = [fd, buf_off, buf_len]`: write the domain path of remote fd into
/// the chunk (what `/proc/self/fd/N` links to in the domain). Result: length.
pub const OP_FD_PATH: u16 = 0x8003;

pub fn is_virtual(op: u16) -> bool {
    op >= VIRTUAL_BASE
}
