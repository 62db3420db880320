//! ETXTBSY for files a client runs (`crate::images`): an open that gets
//! write access to one, an `O_TRUNC` open of one and a `truncate` of one
//! fail as natively.
//!
//! Opens are checked after the call, on the descriptor: the exec side
//! registers its image before it looks for writers (`OP_EXEC_CLAIM`), and
//! an open makes its writer before it looks at the table, so of an exec
//! and an open that race one always sees the other. Truncation cannot be
//! undone, so `O_TRUNC` opens and `truncate` look the path up before the
//! call as well (a window between that lookup and the call remains).
//! When the file is busy the answer is what the kernel finds first: a
//! missing write permission (EACCES, EROFS) before ETXTBSY.

use super::neg;

/// (st_mode, st_dev, st_ino) of `fd`, or None.
fn fd_ids(fd: i32) -> Option<(u32, u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: fstat writes at most one `struct stat` into `st`, valid for
    // that size; a bad `fd` only makes it fail.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: zero-initialised and, on success, filled by the kernel.
    let st = unsafe { st.assume_init() };
    Some((st.st_mode, st.st_dev, st.st_ino))
}

fn is_reg(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFREG
}

/// After a successful open that returned `fd`: (result, extra) to answer,
/// the extra being the file's identity (`ops::file_identity`).
pub(super) fn opened(fd: i32) -> (i64, u64) {
    let Some((mode, dev, ino)) = fd_ids(fd) else {
        return (fd as i64, 0);
    };
    let identity = virtuos_abi::ops::file_identity(dev, ino);
    if !is_reg(mode) || !crate::images::busy(dev, ino) {
        return (fd as i64, identity);
    }
    // SAFETY: F_GETFL reads the flags of our own descriptor.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl >= 0 && fl & libc::O_PATH == 0 && fl & libc::O_ACCMODE != libc::O_RDONLY {
        // SAFETY: closing the descriptor this very call opened, which the
        // client has not seen.
        unsafe { libc::close(fd) };
        return (neg(libc::ETXTBSY), 0);
    }
    (fd as i64, identity)
}

/// Read a u64 from the call's chunk (shared with the client, who may
/// change it at any time: bytewise, volatile).
fn chunk_u64(ptr: u64) -> u64 {
    let mut b = [0u8; 8];
    for (i, x) in b.iter_mut().enumerate() {
        // SAFETY: `marshal` checked that the struct (at least 8 bytes, see
        // the caller) lies inside the call's chunk of the mapped region.
        *x = unsafe { core::ptr::read_volatile((ptr as *const u8).add(i)) };
    }
    u64::from_ne_bytes(b)
}

/// Before system call `nr` with marshalled arguments `raw` (paths are
/// private copies): Err(errno) to fail it without running it.
pub(super) fn before(nr: i64, raw: &[u64; 6]) -> Result<(), i32> {
    if !crate::images::any() {
        return Ok(());
    }
    let trunc = |flags: u64| flags & libc::O_TRUNC as u64 != 0;
    let nofollow = |flags: u64| flags & libc::O_NOFOLLOW as u64 != 0;
    let at = libc::AT_FDCWD as i64 as u64;
    // (dirfd, path, follow the last symlink)
    let (dirfd, path, follow) = match nr {
        libc::SYS_truncate | libc::SYS_creat => (at, raw[0], true),
        libc::SYS_open if trunc(raw[1]) => (at, raw[0], !nofollow(raw[1])),
        libc::SYS_openat if trunc(raw[2]) => (raw[0], raw[1], !nofollow(raw[2])),
        libc::SYS_openat2 if raw[2] != 0 && raw[3] >= 8 => {
            let flags = chunk_u64(raw[2]);
            if !trunc(flags) {
                return Ok(());
            }
            (raw[0], raw[1], !nofollow(flags))
        }
        _ => return Ok(()),
    };
    if path == 0 {
        return Ok(());
    }
    let nf = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `path` is the private NUL-terminated copy `marshal` made
    // (alive until the caller's call returns); fstatat writes one
    // `struct stat` into `st`.
    let r = unsafe {
        libc::fstatat(
            dirfd as i64 as i32,
            path as *const libc::c_char,
            st.as_mut_ptr(),
            nf,
        )
    };
    if r != 0 {
        return Ok(());
    }
    // SAFETY: filled by the kernel.
    let st = unsafe { st.assume_init() };
    if !is_reg(st.st_mode) || !crate::images::busy(st.st_dev, st.st_ino) {
        return Ok(());
    }
    let args = [
        dirfd,
        path,
        libc::W_OK as u64,
        (libc::AT_EACCESS | nf) as u64,
        0,
        0,
    ];
    // SAFETY: faccessat2 reads the same private path; the thread's
    // credentials are the client thread's, as for the call itself.
    let r = unsafe { crate::sys::syscall(libc::SYS_faccessat2, args) };
    if r < 0 && r != neg(libc::ENOSYS) {
        return Err(-r as i32);
    }
    Err(libc::ETXTBSY)
}
