//! Exported fast paths for the hottest libc entry points: they ask
//! `forward` directly and run local calls with `syscall6` from our text, so
//! no SIGSYS is taken. They run in the caller's normal context, so a
//! blocking local call stays interruptible by signals exactly as in libc.
//!
//! Calls made by libc internally (stdio, `__open_nocancel`, ...) do not
//! come through here; Syscall User Dispatch catches those.
//!
//! Differences from glibc: these are not pthread cancellation points.

use core::ffi::{c_char, c_int, c_uint, c_void};

use super::{active, trace};
use crate::forward::{self, Action};
use crate::sys::raw::{syscall6, to_libc};
use crate::sys::thread::{current_slot, ALLOW};

/// One call through forward, or natively; raw result in libc convention.
#[inline]
fn call(nr: i64, args: [u64; 6]) -> i64 {
    let nr = nr as u64;
    if !active() {
        // SAFETY: the caller's own arguments for the libc function.
        return to_libc(unsafe { syscall6(nr, args) });
    }
    // While forward works, libc calls it makes run natively.
    let slot = current_slot();
    let saved = slot.selector();
    slot.set_selector(ALLOW);
    let act = forward::on_syscall(nr, args);
    slot.set_selector(saved);
    let r = match act {
        Action::Done(r) => r,
        // SAFETY: the caller's own arguments for the libc function.
        Action::Local => unsafe { syscall6(nr, args) },
    };
    if trace::enabled() {
        trace::event(
            nr,
            if matches!(act, Action::Local) {
                "wrapper"
            } else {
                "wrapper-done"
            },
            Some(r),
        );
    }
    to_libc(r)
}

#[inline]
fn int(v: c_int) -> u64 {
    v as i64 as u64
}

fn open_mode(flags: c_int, mode: c_uint) -> u64 {
    if flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE {
        mode as u64
    } else {
        0
    }
}

/// # Safety
/// As libc's `read`.
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: usize) -> isize {
    call(libc::SYS_read, [int(fd), buf as u64, n as u64, 0, 0, 0]) as isize
}

/// # Safety
/// As libc's `write`.
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: usize) -> isize {
    call(libc::SYS_write, [int(fd), buf as u64, n as u64, 0, 0, 0]) as isize
}

/// # Safety
/// As libc's `pread64`.
#[no_mangle]
pub unsafe extern "C" fn pread64(fd: c_int, buf: *mut c_void, n: usize, off: i64) -> isize {
    call(
        libc::SYS_pread64,
        [int(fd), buf as u64, n as u64, off as u64, 0, 0],
    ) as isize
}

/// # Safety
/// As libc's `pread` (64-bit off_t on x86-64).
#[no_mangle]
pub unsafe extern "C" fn pread(fd: c_int, buf: *mut c_void, n: usize, off: i64) -> isize {
    call(
        libc::SYS_pread64,
        [int(fd), buf as u64, n as u64, off as u64, 0, 0],
    ) as isize
}

/// # Safety
/// As libc's `pwrite64`.
#[no_mangle]
pub unsafe extern "C" fn pwrite64(fd: c_int, buf: *const c_void, n: usize, off: i64) -> isize {
    call(
        libc::SYS_pwrite64,
        [int(fd), buf as u64, n as u64, off as u64, 0, 0],
    ) as isize
}

/// # Safety
/// As libc's `pwrite`.
#[no_mangle]
pub unsafe extern "C" fn pwrite(fd: c_int, buf: *const c_void, n: usize, off: i64) -> isize {
    call(
        libc::SYS_pwrite64,
        [int(fd), buf as u64, n as u64, off as u64, 0, 0],
    ) as isize
}

/// # Safety
/// As libc's `close`.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    call(libc::SYS_close, [int(fd), 0, 0, 0, 0, 0]) as c_int
}

/// # Safety
/// As libc's `lseek`.
#[no_mangle]
pub unsafe extern "C" fn lseek(fd: c_int, off: i64, whence: c_int) -> i64 {
    call(libc::SYS_lseek, [int(fd), off as u64, int(whence), 0, 0, 0])
}

/// # Safety
/// As libc's `lseek64`.
#[no_mangle]
pub unsafe extern "C" fn lseek64(fd: c_int, off: i64, whence: c_int) -> i64 {
    call(libc::SYS_lseek, [int(fd), off as u64, int(whence), 0, 0, 0])
}

/// # Safety
/// As libc's `fstat`.
#[no_mangle]
pub unsafe extern "C" fn fstat(fd: c_int, st: *mut libc::stat) -> c_int {
    call(libc::SYS_fstat, [int(fd), st as u64, 0, 0, 0, 0]) as c_int
}

/// # Safety
/// As libc's `fstat64` (the same struct on x86-64).
#[no_mangle]
pub unsafe extern "C" fn fstat64(fd: c_int, st: *mut libc::stat) -> c_int {
    call(libc::SYS_fstat, [int(fd), st as u64, 0, 0, 0, 0]) as c_int
}

/// `fcntl(fd, cmd, ...)`: the optional argument is an int or a pointer,
/// passed in the same register either way.
///
/// # Safety
/// As libc's `fcntl`.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    call(libc::SYS_fcntl, [int(fd), int(cmd), arg as u64, 0, 0, 0]) as c_int
}

/// # Safety
/// As libc's `fcntl64`.
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    call(libc::SYS_fcntl, [int(fd), int(cmd), arg as u64, 0, 0, 0]) as c_int
}

/// # Safety
/// As libc's `openat`; `mode` is only read with O_CREAT/O_TMPFILE.
#[no_mangle]
pub unsafe extern "C" fn openat(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    call(
        libc::SYS_openat,
        [
            int(dirfd),
            path as u64,
            int(flags),
            open_mode(flags, mode),
            0,
            0,
        ],
    ) as c_int
}

/// # Safety
/// As libc's `openat64` (the same call on x86_64).
#[no_mangle]
pub unsafe extern "C" fn openat64(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    // SAFETY: the caller's contract is openat's.
    unsafe { openat(dirfd, path, flags, mode) }
}

/// `open` is `openat(AT_FDCWD, ...)`, as in glibc.
///
/// # Safety
/// As libc's `open`.
#[no_mangle]
pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    call(
        libc::SYS_openat,
        [
            int(libc::AT_FDCWD),
            path as u64,
            int(flags),
            open_mode(flags, mode),
            0,
            0,
        ],
    ) as c_int
}

/// # Safety
/// As libc's `open64`.
#[no_mangle]
pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    call(
        libc::SYS_openat,
        [
            int(libc::AT_FDCWD),
            path as u64,
            int(flags),
            open_mode(flags, mode),
            0,
            0,
        ],
    ) as c_int
}
