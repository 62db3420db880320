//! Native system calls on raw descriptor numbers, issued from this library's
//! own text (`sys::raw::syscall6`), so Syscall User Dispatch lets them
//! through. Results are raw: negative errno on failure.
//!
//! Every function here passes scalars, pointers to our own live buffers, or
//! pointers into the mapped request region (valid for the given length by
//! construction of `usermem::ChunkRef`). The kernel validates every pointer
//! it is given (EFAULT), so none of these can make Rust code touch invalid
//! memory.

use crate::sys::raw::syscall6;
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};

fn sys(nr: i64, args: [u64; 6]) -> i64 {
    // SAFETY: see the module comment: callers pass only scalars and pointers
    // to live buffers of at least the length they pass with them.
    unsafe { syscall6(nr as u64, args) }
}

pub fn close(fd: i32) -> i64 {
    sys(libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0])
}

pub fn dup3(old: i32, new: i32, flags: i32) -> i64 {
    sys(
        libc::SYS_dup3,
        [old as u64, new as u64, flags as u64, 0, 0, 0],
    )
}

pub fn fcntl(fd: i32, cmd: i32, arg: u64) -> i64 {
    sys(libc::SYS_fcntl, [fd as u64, cmd as u64, arg, 0, 0, 0])
}

pub fn close_range(first: u32, last: u32, flags: u32) -> i64 {
    sys(
        libc::SYS_close_range,
        [first as u64, last as u64, flags as u64, 0, 0, 0],
    )
}

/// Name of the memory files behind placeholders (as `/proc/self/fd` shows
/// them: `/memfd:virtuos-placeholder (deleted)`).
pub const PLACEHOLDER_NAME: &str = "virtuos-placeholder";

/// A placeholder descriptor: an `O_PATH` descriptor of a private, sealed,
/// empty memory file. Whatever escapes interception and reaches it — a
/// read, a write, or `chmod("/proc/self/fd/N")` — touches only that file:
/// never a shared host object (an earlier `/dev/null` placeholder let a
/// leaked chmod change the host's `/dev/null`).
///
/// It gets the number the kernel would have given a native open: the
/// lowest free one. Usually a duplicate of the last placeholder made (one
/// `F_DUPFD` and an `fstat` to check that number still holds one of ours);
/// otherwise a fresh memory file, whose number the `O_PATH` descriptor
/// then takes over.
pub fn open_placeholder(cloexec: bool) -> i64 {
    let last = LAST_PLACEHOLDER.load(Ordering::Acquire);
    if last >= 0 {
        let cmd = if cloexec {
            libc::F_DUPFD_CLOEXEC
        } else {
            libc::F_DUPFD
        };
        let fd = fcntl(last, cmd, 0);
        if fd < 0 && fd != -(libc::EBADF as i64) {
            return fd;
        }
        if fd >= 0 {
            if inode_of(fd as i32) == Some(PLACEHOLDER_INODE.load(Ordering::Acquire)) {
                return fd;
            }
            // That number was closed and reused: not ours to copy.
            close(fd as i32);
        }
    }
    new_placeholder(cloexec)
}

/// The last placeholder made from a fresh memory file (-1: none yet), and
/// (device, inode) of that file, packed.
static LAST_PLACEHOLDER: AtomicI32 = AtomicI32::new(-1);
static PLACEHOLDER_INODE: AtomicU64 = AtomicU64::new(0);

fn inode_of(fd: i32) -> Option<u64> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    let r = sys(
        libc::SYS_fstat,
        [fd as u64, &mut st as *mut libc::stat as u64, 0, 0, 0, 0],
    );
    (r == 0).then_some(st.st_ino ^ (st.st_dev << 48))
}

fn new_placeholder(cloexec: bool) -> i64 {
    const NAME: &[u8] = b"virtuos-placeholder\0";
    let memfd = sys(
        libc::SYS_memfd_create,
        [
            NAME.as_ptr() as u64,
            (libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) as u64,
            0,
            0,
            0,
            0,
        ],
    );
    if memfd < 0 {
        return memfd;
    }
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    let sealed = fcntl(memfd as i32, libc::F_ADD_SEALS, seals as u64);
    // Reopen it O_PATH through /proc so that I/O on the placeholder fails
    // with EBADF, as on a closed descriptor.
    let mut path = *b"/proc/self/fd/0000000000\0";
    let digits = fmt_u32(memfd as u32, &mut path[14..24]);
    path[14 + digits] = 0;
    let ph = if sealed < 0 {
        sealed
    } else {
        open_cstr(&path, libc::O_PATH | libc::O_CLOEXEC, 0)
    };
    if ph < 0 {
        close(memfd as i32);
        return ph;
    }
    // The memory file holds the lowest free number: the placeholder
    // replaces it there.
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    let r = dup3(ph as i32, memfd as i32, flags);
    close(ph as i32);
    if r < 0 {
        close(memfd as i32);
        return r;
    }
    if let Some(ino) = inode_of(memfd as i32) {
        PLACEHOLDER_INODE.store(ino, Ordering::Release);
        LAST_PLACEHOLDER.store(memfd as i32, Ordering::Release);
    }
    memfd
}

/// The host path of local descriptor `fd` (what `/proc/self/fd/N` links
/// to), without NUL, if it is an absolute path that fits in `out`.
pub fn fd_path(fd: i32, out: &mut [u8]) -> Option<usize> {
    let mut path = *b"/proc/self/fd/0000000000\0";
    let digits = fmt_u32(fd as u32, &mut path[14..24]);
    path[14 + digits] = 0;
    let r = sys(
        libc::SYS_readlink,
        [
            path.as_ptr() as u64,
            out.as_mut_ptr() as u64,
            out.len() as u64,
            0,
            0,
            0,
        ],
    );
    (r > 0 && (r as usize) < out.len() && out[0] == b'/').then_some(r as usize)
}

/// The host's current directory, without NUL.
pub fn getcwd(out: &mut [u8]) -> Option<usize> {
    let r = sys(
        libc::SYS_getcwd,
        [out.as_mut_ptr() as u64, out.len() as u64, 0, 0, 0, 0],
    );
    // The kernel returns the length including the NUL.
    (r > 1 && out[0] == b'/').then(|| r as usize - 1)
}

/// Decimal digits of `v` into `out`; returns how many.
fn fmt_u32(mut v: u32, out: &mut [u8]) -> usize {
    let mut tmp = [0u8; 10];
    let mut n = 0;
    loop {
        tmp[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..n {
        out[i] = tmp[n - 1 - i];
    }
    n
}

/// `openat(AT_FDCWD, path, flags, mode)`; `path` must hold a NUL.
pub fn open_cstr(path: &[u8], flags: i32, mode: u32) -> i64 {
    if !path.contains(&0) {
        return -(libc::EINVAL as i64);
    }
    sys(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as i64 as u64,
            path.as_ptr() as u64,
            flags as u64,
            mode as u64,
            0,
            0,
        ],
    )
}

pub fn read(fd: i32, buf: &mut [u8]) -> i64 {
    sys(
        libc::SYS_read,
        [
            fd as u64,
            buf.as_mut_ptr() as u64,
            buf.len() as u64,
            0,
            0,
            0,
        ],
    )
}

pub fn write(fd: i32, buf: &[u8]) -> i64 {
    sys(
        libc::SYS_write,
        [fd as u64, buf.as_ptr() as u64, buf.len() as u64, 0, 0, 0],
    )
}

/// Write all of `buf` (retrying short writes and EINTR).
pub fn write_all(fd: i32, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        let r = write(fd, buf);
        if r == -(libc::EINTR as i64) {
            continue;
        }
        if r <= 0 {
            return false;
        }
        buf = buf.get(r as usize..).unwrap_or(&[]);
    }
    true
}

/// Native read/pread (offset `Some`) into raw memory (a chunk of the
/// request region, or user memory the program handed us).
pub fn read_raw(fd: i32, ptr: *mut u8, len: usize, offset: Option<i64>) -> i64 {
    match offset {
        None => sys(libc::SYS_read, [fd as u64, ptr as u64, len as u64, 0, 0, 0]),
        Some(off) => sys(
            libc::SYS_pread64,
            [fd as u64, ptr as u64, len as u64, off as u64, 0, 0],
        ),
    }
}

/// Native write/pwrite from raw memory.
pub fn write_raw(fd: i32, ptr: *const u8, len: usize, offset: Option<i64>) -> i64 {
    match offset {
        None => sys(
            libc::SYS_write,
            [fd as u64, ptr as u64, len as u64, 0, 0, 0],
        ),
        Some(off) => sys(
            libc::SYS_pwrite64,
            [fd as u64, ptr as u64, len as u64, off as u64, 0, 0],
        ),
    }
}

pub fn gettid() -> u32 {
    sys(libc::SYS_gettid, [0; 6]) as u32
}

pub fn getpid() -> u32 {
    sys(libc::SYS_getpid, [0; 6]) as u32
}

pub fn sched_yield() {
    sys(libc::SYS_sched_yield, [0; 6]);
}

pub fn sleep_ms(ms: u64) {
    let ts = [(ms / 1000) as i64, ((ms % 1000) * 1_000_000) as i64];
    sys(libc::SYS_nanosleep, [ts.as_ptr() as u64, 0, 0, 0, 0, 0]);
}

/// Block the asynchronous signals of this thread; returns the old mask.
/// SIGSYS and SIGTRAP (the interception's own, raised synchronously by
/// Syscall User Dispatch when libc code runs) and the fault signals stay
/// unblocked: a blocked synchronous signal kills the process.
pub fn block_signals() -> u64 {
    let keep = [
        libc::SIGSYS,
        libc::SIGTRAP,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGFPE,
        libc::SIGILL,
    ];
    let all: u64 = keep.iter().fold(!0u64, |m, &s| m & !(1u64 << (s - 1)));
    let mut old: u64 = 0;
    sys(
        libc::SYS_rt_sigprocmask,
        [
            libc::SIG_SETMASK as u64,
            &all as *const u64 as u64,
            &mut old as *mut u64 as u64,
            8,
            0,
            0,
        ],
    );
    old
}

pub fn restore_signals(old: u64) {
    sys(
        libc::SYS_rt_sigprocmask,
        [
            libc::SIG_SETMASK as u64,
            &old as *const u64 as u64,
            0,
            8,
            0,
            0,
        ],
    );
}

/// Anonymous private mapping; returns the address or -errno.
pub fn mmap_anon(addr: u64, len: u64, prot: i32, extra_flags: i32) -> i64 {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags;
    sys(
        libc::SYS_mmap,
        [addr, len, prot as u64, flags as u64, (-1i64) as u64, 0],
    )
}

pub fn mprotect(addr: u64, len: u64, prot: i32) -> i64 {
    sys(libc::SYS_mprotect, [addr, len, prot as u64, 0, 0, 0])
}

pub fn munmap(addr: u64, len: u64) -> i64 {
    sys(libc::SYS_munmap, [addr, len, 0, 0, 0, 0])
}

/// `memfd_create(name, flags)`; `name` must hold a NUL.
pub fn memfd_create(name: &[u8], flags: u32) -> i64 {
    if !name.contains(&0) {
        return -(libc::EINVAL as i64);
    }
    sys(
        libc::SYS_memfd_create,
        [name.as_ptr() as u64, flags as u64, 0, 0, 0, 0],
    )
}

pub fn lseek(fd: i32, off: i64, whence: i32) -> i64 {
    sys(
        libc::SYS_lseek,
        [fd as u64, off as u64, whence as u64, 0, 0, 0],
    )
}

/// Re-issue an intercepted system call natively with some pointer slots
/// replaced by pointers to our own NUL-terminated buffers (rewritten paths),
/// or with scalar slots changed. Everything else is what the program passed.
pub fn reissue(nr: u64, args: [u64; 6]) -> i64 {
    // SAFETY: the program made this very call; the slots we changed point to
    // live buffers owned by the caller for the duration of the call.
    unsafe { syscall6(nr, args) }
}
