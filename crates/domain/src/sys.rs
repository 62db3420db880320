//! The crate's thin layer over the raw system interface.
//!
//! Every `unsafe` block of the domain server lives in this module, each
//! with its `SAFETY:` note, apart from the calls of `syscall`, `sendmsg`
//! and `recvmsg` in `exec::generic`, `exec::virtual_ops` and `exec::msg`,
//! where validated arguments are handed to the kernel (and a test's
//! `pre_exec`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Execute system call `nr` with six raw arguments. Returns the kernel's
/// result, or `-errno` on failure.
///
/// # Safety
/// Every argument the kernel interprets as a pointer must point to memory
/// the calling process may let the kernel read or write for the call's
/// length (the executor points them into the checked range of a data chunk
/// or into private buffers), and the call must not be one that changes this
/// process's memory map or control flow (the shape table has none).
pub unsafe fn syscall(nr: i64, a: [u64; 6]) -> i64 {
    // SAFETY: forwarded to the caller's contract above.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r == -1 {
        -(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO) as i64)
    } else {
        r
    }
}

/// Take ownership of an inherited descriptor given on the command line.
pub fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_GETFD only queries the descriptor table entry.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    check(flags)?;
    // SAFETY: the descriptor is open (F_GETFD succeeded) and, by the command
    // line contract, handed to this process for its exclusive use.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: as above, only descriptor flags change.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) })?;
    Ok(owned)
}

/// What `fork` returned in this process.
pub enum Forked {
    Parent(u32),
    Child,
}

/// `fork(2)` through libc (so that glibc's atfork handlers, in particular
/// its malloc locks, run).
///
/// After a fork of a multithreaded process only the calling thread exists in
/// the child; locks other threads held stay locked. The callers keep the
/// child's work before it has set itself up small: it only uses its own
/// stack, the allocator (made fork-safe by glibc), the crate's log writer
/// (lock-free: a plain `write(2)`) and system calls, and never returns into
/// code of the parent's other threads.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: see the function comment: the child restricts itself to work
    // that does not depend on locks held by threads that vanished.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        p => Ok(Forked::Parent(p as u32)),
    }
}

/// A raw `clone(CLONE_FILES | CLONE_FS | SIGCHLD)` without a new stack: a
/// fork whose child shares the caller's descriptor table, cwd, root and
/// umask (and has its own copy of the memory). Used once per shadow to make
/// its zygote (`shadow::zygote`); the caller must be single threaded.
///
/// glibc does not know about this child: its thread descriptor still
/// carries the parent's thread id, and no atfork handler ran. The zygote
/// therefore only makes system calls, allocates (no other thread exists to
/// hold a lock) and forks with glibc's `fork`, which sets up its own child
/// properly.
pub fn clone_sharing_files() -> io::Result<Forked> {
    let flags = (libc::CLONE_FILES | libc::CLONE_FS | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: without CLONE_VM the child gets a copy of the address space
    // and returns from this call on its copy of the stack, like fork; the
    // caller is single threaded, so no lock is held by a thread the child
    // lacks. The pointer arguments are unused (no *_SETTID flags).
    let r = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match r {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        p => Ok(Forked::Parent(p as u32)),
    }
}

/// Ask for SIGKILL when the thread that created this process exits, and
/// check that it has not already: false if the parent is not `parent`.
pub fn die_with_parent(parent: u32) -> bool {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and nothing else.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    // SAFETY: getppid has no arguments and cannot fail.
    r == 0 && unsafe { libc::getppid() } as u32 == parent
}

/// Close every descriptor from `from` up, except those in `keep`.
pub fn close_from_except(from: RawFd, keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&k| k >= from).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut lo = from as u32;
    for k in keep.into_iter().map(|k| k as u32).chain([u32::MAX]) {
        if k > lo {
            // SAFETY: closes descriptors nobody in this process uses (the
            // caller's contract: every descriptor to keep is in `keep`).
            let r = unsafe { libc::syscall(libc::SYS_close_range, lo, k - 1, 0u32) };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        lo = k.saturating_add(1);
    }
    // The loop's last range ends at u32::MAX - 1: the last number cannot
    // be a descriptor (RLIMIT_NOFILE is far below it).
    Ok(())
}

/// Terminate this process at once, without running destructors or atexit
/// handlers (a forked child must not flush or free the parent's state).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// Write raw bytes to a descriptor by number (the log writer).
pub fn write_fd(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes; a stale or closed `fd`
    // only makes the call fail.
    let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// A fork token: 62 random bits from the kernel, never 0 (what a client
/// shows the daemon to claim a forked shadow: unguessable, so a claim does
/// not depend on the parent still being alive to vouch for its child).
pub fn random_token() -> io::Result<u64> {
    let mut b = [0u8; 8];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: the kernel writes at most `b.len() - got` bytes at the
        // given offset of `b`.
        let r = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        got += r as usize;
    }
    Ok((u64::from_le_bytes(b) >> 2).max(1))
}

/// Ignore signal `sig` in this process.
pub fn ignore_signal(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: SIG_IGN installs no handler code.
    let prev = unsafe { libc::signal(sig, libc::SIG_IGN) };
    if prev == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The signal that interrupts a worker's blocking system call when the
/// client asked for it (FLAG_INTERRUPT).
pub const INTERRUPT_SIGNAL: libc::c_int = libc::SIGUSR2;

extern "C" fn on_interrupt_signal(_: libc::c_int) {}

/// Install a handler for `INTERRUPT_SIGNAL` that does nothing and, having
/// no SA_RESTART, makes the blocking call it lands in return EINTR.
pub fn install_interrupt_handler() -> io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; the handler is an empty extern
    // "C" function, async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_interrupt_signal as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        check(libc::sigaction(INTERRUPT_SIGNAL, &sa, std::ptr::null_mut()))
    }
}

/// The calling thread's id.
pub fn gettid() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

/// Send `INTERRUPT_SIGNAL` to thread `tid` of this process.
pub fn interrupt_thread(tid: u32) {
    // SAFETY: tgkill with our own pid only signals a thread of ours; the
    // signal has a no-op handler.
    unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid(),
            tid as libc::pid_t,
            INTERRUPT_SIGNAL,
        );
    }
}

/// `unshare(CLONE_NEWNS)`. Must be called while the process is single
/// threaded (the domain's main process is, at setup).
pub fn unshare_mount_namespace() -> io::Result<()> {
    // SAFETY: CLONE_NEWNS only gives this thread a private copy of the mount
    // table; it does not affect descriptors or memory.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
        .map_err(io::Error::from)
}

/// `mount(2)`.
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(cstring).transpose()?;
    let target = cstring(target)?;
    let fstype = fstype
        .map(|s| CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL)))
        .transpose()?;
    let data = data
        .map(|s| CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL)))
        .transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(core::ptr::null(), |c| c.as_ptr());
    // SAFETY: all strings are NUL-terminated and outlive the call; NULL is
    // allowed for source, fstype and data.
    check(unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    })
}

/// `setgroups`, `setresgid`, `setresuid` in this order (process wide: glibc
/// applies them to every thread).
pub fn drop_privileges(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    // SAFETY: the pointer and length describe the `groups` slice.
    check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })?;
    // SAFETY: plain credential change.
    check(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: plain credential change.
    check(unsafe { libc::setresuid(uid, uid, uid) })
}

/// Let this process change user ids without the kernel touching its
/// capability sets (`SECBIT_NO_SETUID_FIXUP`): a shadow's worker threads
/// switch ids and set their effective capabilities explicitly. Needs
/// CAP_SETPCAP; inherited by threads created afterwards.
pub fn keep_caps_across_id_changes() -> io::Result<()> {
    const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
    // SAFETY: PR_GET_SECUREBITS only reads this thread's securebits.
    let bits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS) };
    check(bits)?;
    let want = bits as libc::c_ulong | SECBIT_NO_SETUID_FIXUP;
    // SAFETY: PR_SET_SECUREBITS changes only this thread's securebits.
    check(unsafe { libc::prctl(libc::PR_SET_SECUREBITS, want, 0, 0, 0) })
}

const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// This thread's (effective, permitted) capability sets.
pub fn thread_caps() -> io::Result<(u64, u64)> {
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: version 3 takes a header and two data structs, both ours.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    check(r as libc::c_int)?;
    let join = |lo: u32, hi: u32| lo as u64 | (hi as u64) << 32;
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
    ))
}

/// Set this thread's effective and permitted capabilities (no inheritable).
fn set_thread_caps(effective: u64, permitted: u64) -> io::Result<()> {
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let half = |v: u64, i: usize| (v >> (32 * i)) as u32;
    let data: [CapData; 2] = std::array::from_fn(|i| CapData {
        effective: half(effective, i),
        permitted: half(permitted, i),
        inheritable: 0,
    });
    // SAFETY: version 3 takes a header and two data structs, both ours;
    // pid 0 is the calling thread.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    check(r as libc::c_int)
}

/// Run `f` with capability `cap` raised in the calling thread's effective
/// set (when it is permitted and not already effective), then lower it
/// again. A worker acts with its client's capabilities; this is for a call
/// the domain makes on its own behalf (`OP_EXEC_CLAIM`'s lease probe).
pub fn with_effective_cap<T>(cap: u32, f: impl FnOnce() -> T) -> T {
    let bit = 1u64 << cap;
    let Ok((effective, permitted)) = thread_caps() else {
        return f();
    };
    if effective & bit != 0 || permitted & bit == 0 {
        return f();
    }
    if set_thread_caps(effective | bit, permitted).is_err() {
        return f();
    }
    let r = f();
    if let Err(e) = set_thread_caps(effective, permitted) {
        // Lowering within the permitted set cannot fail; if it did, the
        // worker would go on with one capability too many.
        tracing::error!("cannot drop capability {cap} again: {e}");
        exit_now(1);
    }
    r
}

/// A raw per-thread credential call (glibc's wrappers would apply it to
/// every thread of the process).
fn thread_id_call(nr: libc::c_long, a: [libc::c_long; 3]) -> io::Result<()> {
    // SAFETY: set*id calls take plain integers.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2]) };
    check(r as libc::c_int)
}

/// Make the calling thread act with `c` (ids, groups, effective
/// capabilities within `permitted`), keeping saved uid 0 and `permitted`
/// so that it can switch again. The process must have
/// `keep_caps_across_id_changes` and started as root. On error the
/// thread's credentials are unspecified: do not execute calls with them.
pub fn become_thread(c: &virtuos_abi::control::Credentials, permitted: u64) -> io::Result<()> {
    let keep = -1 as libc::c_long;
    let l = |v: u32| v as libc::c_long;
    // Back to effective root (allowed: the saved uid is 0), every
    // permitted capability effective.
    thread_id_call(libc::SYS_setresuid, [keep, 0, keep])?;
    set_thread_caps(permitted, permitted)?;
    // SAFETY: the pointer and length describe the `groups` slice.
    let r = unsafe {
        libc::syscall(
            libc::SYS_setgroups,
            c.groups.len() as libc::c_long,
            c.groups.as_ptr(),
        )
    };
    check(r as libc::c_int)?;
    let [rg, eg, sg, fsg] = c.gids;
    thread_id_call(libc::SYS_setresgid, [l(rg), l(eg), l(sg)])?;
    set_fs_id(libc::SYS_setfsgid, fsg)?;
    let [ru, eu, _saved, fsu] = c.uids;
    thread_id_call(libc::SYS_setresuid, [l(ru), l(eu), 0])?;
    set_fs_id(libc::SYS_setfsuid, fsu)?;
    set_thread_caps(c.cap_effective & permitted, permitted)
}

/// `n` zeroed atomic words in an anonymous shared mapping that lives for
/// the rest of the process and is shared with every later fork (the
/// domain's tables that all shadows see: pid map, running images).
pub fn shared_words(n: usize) -> io::Result<&'static [std::sync::atomic::AtomicU64]> {
    // SAFETY: a fresh anonymous shared mapping at a kernel-chosen address;
    // it aliases nothing of ours and is never unmapped.
    let p = unsafe {
        rustix::mm::mmap_anonymous(
            core::ptr::null_mut(),
            n * 8,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
        )
    }?;
    // SAFETY: `n * 8` bytes of zeroed memory, aligned to a page, are `n`
    // valid `AtomicU64`s, alive for the rest of the process (and its forks).
    Ok(unsafe { core::slice::from_raw_parts(p as *const std::sync::atomic::AtomicU64, n) })
}

/// The calling thread's credentials as the kernel has them (a worker's,
/// which `become_thread` switched; glibc's getters would be right too, but
/// the raw calls say plainly that they are this thread's).
pub fn thread_credentials() -> io::Result<virtuos_abi::control::Credentials> {
    let mut u = [0 as libc::uid_t; 3];
    let mut g = [0 as libc::gid_t; 3];
    let p = u.as_mut_ptr();
    // SAFETY: getresuid writes three ids through the pointers, all into `u`.
    let r = unsafe { libc::syscall(libc::SYS_getresuid, p, p.add(1), p.add(2)) };
    check(r as libc::c_int)?;
    let p = g.as_mut_ptr();
    // SAFETY: as above, into `g`.
    let r = unsafe { libc::syscall(libc::SYS_getresgid, p, p.add(1), p.add(2)) };
    check(r as libc::c_int)?;
    // SAFETY: setfs[ug]id(-1) changes nothing and returns the current id.
    let (fsu, fsg) = unsafe {
        (
            libc::syscall(libc::SYS_setfsuid, -1 as libc::c_long) as u32,
            libc::syscall(libc::SYS_setfsgid, -1 as libc::c_long) as u32,
        )
    };
    // SAFETY: a size of 0 only asks for the number of groups.
    let n = unsafe { libc::syscall(libc::SYS_getgroups, 0, std::ptr::null_mut::<libc::gid_t>()) };
    check(n as libc::c_int)?;
    let mut groups = vec![0 as libc::gid_t; n as usize];
    // SAFETY: the buffer holds `n` gids; the kernel writes at most that many.
    let got = unsafe { libc::syscall(libc::SYS_getgroups, n, groups.as_mut_ptr()) };
    check(got as libc::c_int)?;
    groups.truncate(got as usize);
    Ok(virtuos_abi::control::Credentials {
        uids: [u[0], u[1], u[2], fsu],
        gids: [g[0], g[1], g[2], fsg],
        groups,
        cap_effective: thread_caps()?.0,
    })
}

/// setfsuid/setfsgid report no error: read the value back.
fn set_fs_id(nr: libc::c_long, id: u32) -> io::Result<()> {
    // SAFETY: setfs[ug]id take a plain integer; -1 only queries.
    let now = unsafe {
        libc::syscall(nr, id as libc::c_long);
        libc::syscall(nr, -1 as libc::c_long)
    };
    if now as u32 == id {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EPERM))
    }
}

/// Move the descriptors in `keep` to `base, base+1, ...` (close-on-exec),
/// point 0, 1, 2 at `devnull` and close every other descriptor. Used once
/// by a freshly forked shadow, which then owns exactly the returned
/// descriptors. The RLIMIT_NOFILE soft limit must exceed `base + keep.len()`.
///
/// The caller must never use or drop (`OwnedFd`) descriptors it held before
/// this call: their numbers are closed or reused. Shadows never return into
/// the code that owned them (they end with `exit_now`).
pub fn compact_fds(keep: &[RawFd], devnull: RawFd, base: RawFd) -> io::Result<Vec<OwnedFd>> {
    let n = keep.len() as RawFd;
    for (i, &fd) in keep.iter().enumerate() {
        // SAFETY: duplicates onto a number above every descriptor the caller
        // uses (`base` is the domain's reserved range); no `OwnedFd` of the
        // caller refers to `base + i`.
        let r = unsafe { libc::dup3(fd, base + i as RawFd, libc::O_CLOEXEC) };
        check(r)?;
    }
    for std_fd in 0..3 {
        // SAFETY: replaces the standard descriptors; see the function comment.
        check(unsafe { libc::dup2(devnull, std_fd) })?;
    }
    // SAFETY: closes every other descriptor; by the function contract the
    // caller never uses its old descriptors again.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, (base - 1) as u32, 0u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above, for the range past the kept descriptors.
    let r = unsafe { libc::syscall(libc::SYS_close_range, (base + n) as u32, u32::MAX, 0u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..n)
        // SAFETY: `base + i` was just created by dup3 and nothing else owns it.
        .map(|i| unsafe { OwnedFd::from_raw_fd(base + i) })
        .collect())
}

/// Close a raw descriptor nobody owns (one the kernel just installed, e.g.
/// from an `SCM_RIGHTS` message the domain drops).
pub fn close_raw(fd: RawFd) {
    if fd >= 0 {
        // SAFETY: the caller names a descriptor no `OwnedFd` refers to.
        unsafe { libc::close(fd) };
    }
}

/// `sendmsg(fd, {name, [data, data_len], control}, flags)`. Result or -errno.
///
/// # Safety
/// `data` must be 0 with `data_len` 0, or point to `data_len` bytes the
/// kernel may read.
pub unsafe fn sendmsg(
    fd: u64,
    flags: u64,
    name: &[u8],
    control: &[u8],
    data: u64,
    data_len: usize,
) -> i64 {
    let mut iov = libc::iovec {
        iov_base: data as *mut libc::c_void,
        iov_len: data_len,
    };
    // SAFETY: msghdr is plain data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
    if !name.is_empty() {
        msg.msg_name = name.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = name.len() as libc::socklen_t;
    }
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !control.is_empty() {
        msg.msg_control = control.as_ptr() as *mut libc::c_void;
        msg.msg_controllen = control.len();
    }
    let args = [fd, &msg as *const libc::msghdr as u64, flags, 0, 0, 0];
    // SAFETY: `msg` and `iov` live until the call returns; the kernel only
    // reads `name`, `control` (their full lengths) and `data` (caller's
    // contract).
    unsafe { syscall(libc::SYS_sendmsg, args) }
}

/// `recvmsg` into `name`/`data` (raw pointers, 0 when their capacity is
/// 0) and `control` (`control_cap` bytes). Ok((bytes, namelen, controllen,
/// msg_flags)) or Err(-errno).
///
/// # Safety
/// `name` and `data` must be 0 or point to `name_cap` / `data_cap` bytes
/// the kernel may write; `control` must hold at least `control_cap` bytes.
#[allow(clippy::too_many_arguments)]
pub unsafe fn recvmsg(
    fd: u64,
    flags: u64,
    name: u64,
    name_cap: usize,
    control: &mut [u64],
    control_cap: usize,
    data: u64,
    data_cap: usize,
) -> Result<(i64, usize, usize, i32), i64> {
    assert!(control.len() * 8 >= control_cap);
    let mut iov = libc::iovec {
        iov_base: data as *mut libc::c_void,
        iov_len: data_cap,
    };
    // SAFETY: msghdr is plain data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
    if name_cap > 0 {
        msg.msg_name = name as *mut libc::c_void;
        msg.msg_namelen = name_cap as libc::socklen_t;
    }
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if control_cap > 0 {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control_cap;
    }
    let args = [fd, &mut msg as *mut libc::msghdr as u64, flags, 0, 0, 0];
    // SAFETY: `msg` and `iov` live until the call returns; the kernel
    // writes at most the capacities given (caller's contract).
    let r = unsafe { syscall(libc::SYS_recvmsg, args) };
    if r < 0 {
        return Err(r);
    }
    Ok((
        r,
        msg.msg_namelen as usize,
        msg.msg_controllen,
        msg.msg_flags,
    ))
}

/// `unshare(CLONE_NEWNET)`. Single threaded callers only (as above).
pub fn unshare_net_namespace() -> io::Result<()> {
    // SAFETY: CLONE_NEWNET only gives this process a fresh network
    // namespace; it does not affect descriptors or memory.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
        .map_err(io::Error::from)
}

/// Make `cmd`'s child join the network namespace `ns` (a descriptor of
/// `/proc/.../ns/net`) before it executes.
pub fn run_in_net_namespace(cmd: &mut std::process::Command, ns: RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only
    // calls setns, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns, libc::CLONE_NEWNET) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

// ---------------------------------------------------------------- interfaces
// PID 1 of a network VM configures its NICs itself (no iproute2 in the
// initramfs): the classic socket ioctls on an AF_INET datagram socket.

fn ifreq_for(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &b) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = b as libc::c_char;
    }
    Ok(req)
}

fn sockaddr_v4(addr: std::net::Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sockaddr_in` and `sockaddr` have the same size (16 bytes)
    // and both are plain old data; this is how the kernel reads it.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn inet_socket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )?)
}

/// `ioctl(sock, req, &mut ifreq)`.
fn ifreq_ioctl(sock: &OwnedFd, req: libc::c_ulong, ifr: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: every request used here takes a `struct ifreq *`, which `ifr`
    // is, valid for reads and writes for the duration of the call.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), req as _, ifr as *mut libc::ifreq) })
}

/// Bring interface `name` up.
pub fn link_up(name: &str) -> io::Result<()> {
    let sock = inet_socket()?;
    let mut ifr = ifreq_for(name)?;
    ifreq_ioctl(&sock, libc::SIOCGIFFLAGS, &mut ifr)?;
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    ifr.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ifreq_ioctl(&sock, libc::SIOCSIFFLAGS, &mut ifr)
}

/// Give interface `name` the IPv4 address `addr/netmask`.
pub fn set_ipv4(
    name: &str,
    addr: std::net::Ipv4Addr,
    netmask: std::net::Ipv4Addr,
) -> io::Result<()> {
    let sock = inet_socket()?;
    let mut ifr = ifreq_for(name)?;
    ifr.ifr_ifru.ifru_addr = sockaddr_v4(addr);
    ifreq_ioctl(&sock, libc::SIOCSIFADDR, &mut ifr)?;
    let mut ifr = ifreq_for(name)?;
    ifr.ifr_ifru.ifru_netmask = sockaddr_v4(netmask);
    ifreq_ioctl(&sock, libc::SIOCSIFNETMASK, &mut ifr)
}

/// `route add default gw GW`.
pub fn add_default_route(gw: std::net::Ipv4Addr) -> io::Result<()> {
    let sock = inet_socket()?;
    // SAFETY: `rtentry` is plain old data; all-zero is a valid value.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr_v4(std::net::Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr_v4(std::net::Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr_v4(gw);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    // SAFETY: SIOCADDRT takes a `struct rtentry *`; `rt` is one, and its
    // `rt_dev` pointer is null (any device).
    check(unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCADDRT as _,
            &mut rt as *mut libc::rtentry,
        )
    })
}
