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

/// Link the file a storage descriptor names at a new name, as
/// `linkat(AT_FDCWD, "/proc/self/fd/<fd>", newdirfd, newpath,
/// AT_SYMLINK_FOLLOW)` does natively (an `O_TMPFILE` file, or any file
/// that still has a name; ENOENT for an unlinked one or `O_TMPFILE |
/// O_EXCL`). `args = [fd, newdirfd, newpath]`, marshalled by
/// `FD_LINK_SHAPE`. The domain links through its own `/proc` (no
/// capability needed, unlike `AT_EMPTY_PATH`). Storage domain only.
/// Result: 0 or -errno.
pub const OP_FD_LINK: u16 = 0x800A;

/// The argument shape of `OP_FD_LINK`.
pub const FD_LINK_SHAPE: crate::shape::Shape = {
    use crate::shape::Arg::{DirFd, Fd, Path, Unused};
    [Fd, DirFd, Path, Unused, Unused, Unused]
};

/// Open what `/proc/self/fdinfo/<fd>` shows in the domain (position,
/// flags, the mount id and inode the domain's `statx` reports, locks):
/// `args = [fd, flags]` (only the access mode and `O_NONBLOCK`/`O_CLOEXEC`/
/// `O_NOFOLLOW`/`O_DIRECTORY`/`O_NOATIME` are used). Result: the new
/// descriptor, read like any forwarded file.
pub const OP_FDINFO_OPEN: u16 = 0x800B;

/// exec of a program stored in the storage domain, before the client runs
/// its copy: `args = [fd, image]`, `fd` the client's read-only descriptor
/// of the file. Fails with ETXTBSY, as a native exec does, when the file
/// is open for writing anywhere in the domain. With `image` = 1 (a binary,
/// not a `#!` script) the file is also registered as the image the client
/// is about to run (pending until `OP_EXEC_DONE`), and from then on every
/// open for writing or truncation of it fails with ETXTBSY. Result: 0 or
/// -errno.
pub const OP_EXEC_CLAIM: u16 = 0x800C;
/// The exec after `OP_EXEC_CLAIM` failed: drop the pending image. Result 0.
pub const OP_EXEC_ABORT: u16 = 0x800D;
/// `args = [exec]`: with `exec` = 1 the client's exec completed (its new
/// image says so): the pending image, if any, becomes the one it runs and
/// the old one is dropped; with 0 the client is exiting (exit_group): drop
/// all, and close its descriptors in the domain as its exit does natively
/// (not only when the daemon sees it gone). Result: 1 when the client now
/// runs a registered image, else 0.
pub const OP_EXEC_DONE: u16 = 0x800E;

/// Whether `op` opens a file (open, creat, openat, openat2): on success the
/// domain answers the new descriptor and, as extra, the file's identity
/// (`file_identity`), which a client can compare when it re-opens the same
/// path after a restart of the domain.
pub fn is_open(op: u16) -> bool {
    matches!(
        op as i64,
        libc::SYS_open | libc::SYS_creat | libc::SYS_openat | libc::SYS_openat2
    )
}

/// The identity of a file as the domain reports it for opens: st_ino mixed
/// with st_dev, never 0 (0 = unknown).
pub fn file_identity(dev: u64, ino: u64) -> u64 {
    (ino ^ dev.rotate_left(40)).max(1)
}

pub fn is_virtual(op: u16) -> bool {
    op >= VIRTUAL_BASE
}

/// `sendmsg` flattened into the chunk (see `msg`): `args = [fd, flags,
/// name_len, control_len, data_len]`. Result: bytes sent.
pub const OP_SENDMSG: u16 = 0x8004;
/// `recvmsg` into the chunk (see `msg`): `args = [fd, flags, name_cap,
/// control_cap, data_cap]`. Result: bytes received; extra =
/// `msg::pack_recv_extra(namelen, controllen, msg_flags)`.
pub const OP_RECVMSG: u16 = 0x8005;

/// `poll` over descriptors of one domain: `args = [nfds, timeout_ms]`
/// (timeout as a signed 32-bit value, negative = infinite); the chunk holds
/// `nfds` `struct pollfd` (8 bytes each: fd i32 with the domain's numbers,
/// events i16, revents i16) from offset 0. The domain ignores negative
/// fds, answers POLLNVAL for fds at or above its descriptor limit, and
/// writes each `revents` back. Result: the number of entries with nonzero
/// revents.
pub const OP_POLL: u16 = 0x8006;

/// epoll in the network domain (the client's epoll fd stays a host epoll
/// instance; its forwarded members live in a real epoll instance of the
/// shadow, which gives edge-triggered and one-shot semantics). `args = []`.
/// Result: the domain's epoll descriptor (created close-on-exec; a forked
/// shadow shares the instance, as a forked process does natively).
pub const OP_EPOLL_CREATE: u16 = 0x8007;
/// `epoll_ctl` on a domain epoll instance: `args = [epfd, op, fd, events,
/// data]` (domain numbers; `op` = EPOLL_CTL_ADD/MOD/DEL; `events` the low
/// 32 bits, EPOLLWAKEUP is dropped; `data` the 64-bit value the domain
/// reports back). Result: 0 or -errno. No chunk.
pub const OP_EPOLL_CTL: u16 = 0x8008;
/// `epoll_wait` on a domain epoll instance: `args = [epfd, maxevents,
/// timeout_ms]` (timeout as a signed 32-bit value, negative = infinite;
/// `maxevents` in `1..=epoll::MAX_EVENTS`, else EINVAL). The domain writes
/// the ready events into the chunk from offset 0 as packed x86_64 `struct
/// epoll_event`s (`epoll::EVENT_SIZE` bytes: events u32, data u64).
/// Result: the number of events. Interruptible (`request_interrupt`):
/// EINTR, or the events it had already collected.
pub const OP_EPOLL_WAIT: u16 = 0x8009;

/// Chunk layout of `OP_EPOLL_WAIT`.
pub mod epoll {
    use crate::layout::CHUNK_SIZE;

    /// Size of one packed `struct epoll_event` (x86_64).
    pub const EVENT_SIZE: usize = 12;
    /// Most events one `OP_EPOLL_WAIT` returns.
    pub const MAX_EVENTS: usize = CHUNK_SIZE / EVENT_SIZE;

    /// Encode one event at `buf[..EVENT_SIZE]`.
    pub fn put(buf: &mut [u8], events: u32, data: u64) {
        buf[0..4].copy_from_slice(&events.to_ne_bytes());
        buf[4..12].copy_from_slice(&data.to_ne_bytes());
    }

    /// Decode one event from `buf[..EVENT_SIZE]`: (events, data).
    pub fn get(buf: &[u8]) -> (u32, u64) {
        let mut e = [0u8; 4];
        let mut d = [0u8; 8];
        e.copy_from_slice(&buf[0..4]);
        d.copy_from_slice(&buf[4..12]);
        (u32::from_ne_bytes(e), u64::from_ne_bytes(d))
    }
}

/// Chunk layout of `OP_SENDMSG` / `OP_RECVMSG`: the address, the ancillary
/// data and the payload at fixed offsets, so that neither side follows a
/// pointer the other wrote.
pub mod msg {
    use crate::layout::CHUNK_SIZE;

    pub const NAME_OFF: usize = 0;
    pub const NAME_MAX: usize = 128;
    pub const CONTROL_OFF: usize = 128;
    pub const CONTROL_MAX: usize = 4096 - 128;
    pub const DATA_OFF: usize = 4096;
    pub const DATA_MAX: usize = CHUNK_SIZE - DATA_OFF;

    pub fn pack_recv_extra(namelen: u32, controllen: u32, msg_flags: u32) -> u64 {
        (namelen.min(0xffff) as u64)
            | ((controllen.min(0xffff) as u64) << 16)
            | ((msg_flags as u64) << 32)
    }

    /// (namelen, controllen, msg_flags); the caller still bounds the
    /// lengths by the capacities it asked for.
    pub fn unpack_recv_extra(extra: u64) -> (u32, u32, u32) {
        (
            (extra & 0xffff) as u32,
            ((extra >> 16) & 0xffff) as u32,
            (extra >> 32) as u32,
        )
    }
}
