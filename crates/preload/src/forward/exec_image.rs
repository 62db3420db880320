//! execve of a program stored in a domain.
//!
//! The host kernel cannot open a file that lives in a domain, so the client
//! presents it. A `#!` script runs its interpreter with the script's path
//! as the kernel would do (the interpreter, preloaded too, reads the script
//! through the domain). A binary is copied into a sealed-off memory file and
//! run with `execveat(memfd, "", AT_EMPTY_PATH)`; set-user-ID bits of domain
//! files are never honoured.
//!
//! Runs in the SIGSYS handler, possibly in a vfork child: allocation-free.
//! Everything the rewritten call points to lives in one anonymous mapping,
//! because the call is re-executed natively after the handler returned.

use super::caller::Call;
use super::domain;
use super::fds as fdtable;
use super::path::PATH_MAX;
use super::route::{self, PathRoute, PathScratch};
use super::{caller, host, marshal, session, usermem};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use virtuos_abi::ops::{OP_EXEC_ABORT, OP_EXEC_CLAIM, OP_EXEC_DONE};
use virtuos_abi::shape::shape;
use virtuos_abi::CHUNK_SIZE;

/// What the interception must execute instead of the program's call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecPlan {
    /// Execute the program's call unchanged.
    Native,
    /// Execute system call `nr` with `args` instead.
    Rewrite { nr: u64, args: [u64; 6] },
    /// Fail the call with this (negative) errno.
    Fail(i64),
}

/// Longest argument vector we rewrite.
const MAX_ARGS: usize = 1 << 16;
/// Bytes of a script's first line the kernel looks at.
const SHEBANG_MAX: usize = 256;
/// The empty path of `execveat(fd, "", ..., AT_EMPTY_PATH)`.
static EMPTY: [u8; 1] = [0];

/// The mapping and memory file of the last rewrite, released if exec fails.
static BUFFER: AtomicU64 = AtomicU64::new(0);
static BUFFER_LEN: AtomicU64 = AtomicU64::new(0);
static MEMFD: AtomicU64 = AtomicU64::new(u64::MAX);

/// This exec registered its image with the storage domain
/// (`OP_EXEC_CLAIM`): to drop if the exec fails.
static CLAIMED: AtomicBool = AtomicBool::new(false);

const EIO: i64 = -(libc::EIO as i64);

/// Decide how to run `execve`/`execveat`.
pub fn plan(nr: u64, a: [u64; 6]) -> ExecPlan {
    release();
    let (dirfd, path, argv, envp, flags) = match nr as i64 {
        libc::SYS_execve => (None, a[0], a[1], a[2], 0),
        _ => (Some(a[0]), a[1], a[2], a[3], a[4]),
    };
    let mut scratch = PathScratch::new();
    let empty_path = usermem::strlen_user(path, 1) == Some(0);
    if flags & libc::AT_EMPTY_PATH as u64 != 0 && empty_path {
        // fexecve of a forwarded descriptor.
        return match dirfd.and_then(fdtable::get) {
            Some(e) if e.domain != domain::DOMAIN_STORAGE => ExecPlan::Fail(-(libc::EACCES as i64)),
            Some(e) => present(Source::Fd(e.remote), argv, envp, path),
            None => ExecPlan::Native,
        };
    }
    match route::classify(dirfd, path, true, &mut scratch) {
        Err(e) => ExecPlan::Fail(e),
        Ok(PathRoute::Local) => ExecPlan::Native,
        Ok(PathRoute::Rewrite) => {
            // A relative host path while our cwd is in a domain: run the
            // absolute host path the lookup resolved to.
            let Some(buf) = Buffer::new(PATH_MAX) else {
                return ExecPlan::Fail(-(libc::ENOMEM as i64));
            };
            let p = buf.put_str(scratch.rewritten());
            ExecPlan::Rewrite {
                nr: libc::SYS_execve as u64,
                args: [p, argv, envp, 0, 0, 0],
            }
        }
        Ok(PathRoute::Remote { dirfd }) => {
            present(Source::Path { dirfd, ptr: path }, argv, envp, path)
        }
        Ok(PathRoute::RemoteRewritten) => present(
            Source::Path {
                dirfd: virtuos_abi::AT_FDCWD_ARG,
                ptr: scratch.rewritten().as_ptr() as u64,
            },
            argv,
            envp,
            path,
        ),
    }
}

/// The exec failed: the domain drops the image this exec claimed.
pub fn abort_claim() {
    if CLAIMED.swap(false, Ordering::AcqRel) {
        let _ = caller::simple_call(domain::DOMAIN_STORAGE, OP_EXEC_ABORT, [0; 6]);
    }
}

/// The new image, attached to the storage domain again: the image the
/// exec claimed (if any) is now the one this process runs, the old one is
/// dropped.
pub fn exec_done() {
    let r = caller::simple_call(domain::DOMAIN_STORAGE, OP_EXEC_DONE, [1, 0, 0, 0, 0, 0]);
    session::set_runs_image(r == 1);
}

/// The process exits (exit_group): as natively at its exit, its image is
/// free for writing and its descriptors are closed at once, not when the
/// daemon sees the process gone and the domain ends its shadow (a file
/// the process held open for writing would refuse an exec meanwhile).
/// Only when it runs an image or holds storage descriptors, and only with
/// a working storage session of its own (a fork not yet
/// claimed has nothing to close; a failed domain is not asked, nor a new
/// session registered, on the way out).
pub fn on_exit() {
    let image = session::take_runs_image();
    let d = domain::DOMAIN_STORAGE;
    if !image && fdtable::count_in(d) == 0 {
        return;
    }
    if !session::current(d).is_some_and(|s| s.usable()) || session::pending(d).is_some() {
        return;
    }
    let _ = caller::simple_call(d, OP_EXEC_DONE, [0; 6]);
}

/// The exec failed: free what `plan` set up.
pub fn release() {
    let addr = BUFFER.swap(0, Ordering::AcqRel);
    let len = BUFFER_LEN.swap(0, Ordering::AcqRel);
    if addr != 0 {
        host::munmap(addr, len);
    }
    let fd = MEMFD.swap(u64::MAX, Ordering::AcqRel);
    if fd != u64::MAX {
        host::close(fd as i32);
    }
}

#[derive(Clone, Copy)]
enum Source {
    /// A path in the domain (`ptr` is a NUL-terminated string in our memory
    /// or the program's), relative to remote `dirfd`.
    Path { dirfd: u64, ptr: u64 },
    /// An open remote descriptor.
    Fd(u32),
}

/// An executable in the domain: open it, check it may be executed, then
/// run it as a script or from a memory file.
fn present(src: Source, argv: u64, envp: u64, user_path: u64) -> ExecPlan {
    let mut call = match Call::begin(domain::DOMAIN_STORAGE) {
        Ok(c) => c,
        Err(e) => return ExecPlan::Fail(e),
    };
    let rfd = match src {
        Source::Path { dirfd, ptr } => {
            let Some(sh) = shape(libc::SYS_openat as u16) else {
                return ExecPlan::Fail(EIO);
            };
            let open = [
                dirfd,
                ptr,
                (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
                0,
                0,
                0,
            ];
            let r = marshal::call_shaped(&mut call, libc::SYS_openat as u16, &sh, &open);
            if r < 0 {
                return ExecPlan::Fail(r);
            }
            r as u32
        }
        Source::Fd(fd) => {
            let r = call.result(libc::SYS_dup as u16, [fd as u64, 0, 0, 0, 0, 0], false);
            if r < 0 {
                return ExecPlan::Fail(r);
            }
            r as u32
        }
    };
    let plan = present_open(&mut call, rfd, argv, envp, user_path);
    call.result(libc::SYS_close as u16, [rfd as u64, 0, 0, 0, 0, 0], false);
    plan
}

fn present_open(call: &mut Call, rfd: u32, argv: u64, envp: u64, user_path: u64) -> ExecPlan {
    let Some(chunk) = call.chunk() else {
        return ExecPlan::Fail(EIO);
    };
    // Only regular files with an execute bit, and only if the caller may
    // execute them (the domain answers with the caller's credentials).
    let r = call.result(libc::SYS_fstat as u16, [rfd as u64, 0, 0, 0, 0, 0], true);
    if r < 0 {
        return ExecPlan::Fail(r);
    }
    let mut st = [0u8; core::mem::size_of::<libc::stat>()];
    if !chunk.read(0, &mut st) {
        return ExecPlan::Fail(EIO);
    }
    // SAFETY: libc::stat is plain old data; any bytes are a valid value.
    let st: libc::stat = unsafe { core::mem::transmute(st) };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_mode & 0o111 == 0 {
        return ExecPlan::Fail(-(libc::EACCES as i64));
    }
    let path_arg = [
        rfd as u64,
        0,
        libc::X_OK as u64,
        libc::AT_EMPTY_PATH as u64,
        0,
        0,
    ];
    if !chunk.put_byte(0, 0) {
        return ExecPlan::Fail(EIO);
    }
    let r = call.result(libc::SYS_faccessat2 as u16, path_arg, true);
    if r < 0 && r != -(libc::ENOSYS as i64) {
        return ExecPlan::Fail(r);
    }
    // The first bytes decide between a script and a binary.
    let r = call.result(
        libc::SYS_pread64 as u16,
        [rfd as u64, 0, SHEBANG_MAX as u64, 0, 0, 0],
        true,
    );
    if r < 0 {
        return ExecPlan::Fail(r);
    }
    let mut head = [0u8; SHEBANG_MAX];
    let n = (r as usize).min(SHEBANG_MAX);
    if !chunk.read(0, &mut head[..n]) {
        return ExecPlan::Fail(EIO);
    }
    // As the kernel's open of the program: ETXTBSY when it is open for
    // writing; a binary's file becomes unwritable while it runs (a
    // script's does not: the kernel holds it only during the exec).
    let is_script = n >= 2 && &head[..2] == b"#!";
    let r = call.result(
        OP_EXEC_CLAIM,
        [rfd as u64, !is_script as u64, 0, 0, 0, 0],
        false,
    );
    if r < 0 && r != -(libc::ENOSYS as i64) {
        return ExecPlan::Fail(r);
    }
    if r == 0 && !is_script {
        CLAIMED.store(true, Ordering::Release);
    }
    if is_script {
        return script(&head[2..n], argv, envp, user_path);
    }
    binary(call, rfd, st.st_size as u64, argv, envp)
}

/// `#!interp [arg]`: execve(interp, [interp, arg?, path, argv[1..]], envp).
fn script(line: &[u8], argv: u64, envp: u64, user_path: u64) -> ExecPlan {
    let line = match line.iter().position(|&b| b == b'\n') {
        Some(end) => &line[..end],
        None => line,
    };
    let trim = |s: &[u8]| -> (usize, usize) {
        let start = s
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(s.len());
        let end = s
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(start, |e| e + 1);
        (start, end.max(start))
    };
    let (s, e) = trim(line);
    let line = &line[s..e];
    if line.is_empty() {
        return ExecPlan::Fail(-(libc::ENOEXEC as i64));
    }
    let split = line
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let interp = &line[..split];
    let (as_, ae) = trim(&line[split..]);
    let opt = &line[split..][as_..ae];
    let Some(argc) = count_args(argv) else {
        return ExecPlan::Fail(-(libc::E2BIG as i64));
    };
    let Some(buf) = Buffer::new((argc + 4) * 8 + 3 * PATH_MAX) else {
        return ExecPlan::Fail(-(libc::ENOMEM as i64));
    };
    let p_interp = buf.put_str_nul(interp);
    let p_opt = (!opt.is_empty()).then(|| buf.put_str_nul(opt));
    let mut path_copy = [0u8; PATH_MAX];
    let Some(plen) = usermem::read_cstr(user_path, &mut path_copy) else {
        return ExecPlan::Fail(-(libc::ENAMETOOLONG as i64));
    };
    let p_path = buf.put_str_nul(&path_copy[..plen]);
    let vec = buf.reserve_ptrs(argc + 4);
    let mut k = 0;
    let mut push = |v: u64| {
        buf.set_ptr(vec, k, v);
        k += 1;
    };
    push(p_interp);
    if let Some(o) = p_opt {
        push(o);
    }
    push(p_path);
    for i in 1..argc {
        push(usermem::read_u64(argv + 8 * i as u64).unwrap_or(0));
    }
    push(0);
    // An interpreter that itself lives in the domain is not followed (the
    // kernel allows a few levels; one is what users meet in practice).
    let mut scratch = PathScratch::new();
    match route::classify(None, p_interp, true, &mut scratch) {
        Ok(PathRoute::Local) => ExecPlan::Rewrite {
            nr: libc::SYS_execve as u64,
            args: [p_interp, vec, envp, 0, 0, 0],
        },
        _ => ExecPlan::Fail(-(libc::ELOOP as i64)),
    }
}

/// A binary: copy it into a memory file and execveat it.
fn binary(call: &mut Call, rfd: u32, size: u64, argv: u64, envp: u64) -> ExecPlan {
    let Some(chunk) = call.chunk() else {
        return ExecPlan::Fail(EIO);
    };
    let memfd = host::memfd_create(b"virtuos-exec\0", libc::MFD_CLOEXEC);
    if memfd < 0 {
        return ExecPlan::Fail(memfd);
    }
    MEMFD.store(memfd as u64, Ordering::Release);
    let mut off = 0u64;
    while off < size {
        let want = (size - off).min(CHUNK_SIZE as u64);
        let r = call.result(
            libc::SYS_pread64 as u16,
            [rfd as u64, 0, want, off, 0, 0],
            true,
        );
        if r < 0 {
            return ExecPlan::Fail(r);
        }
        if r == 0 || r as u64 > want {
            break;
        }
        let Some(ptr) = chunk.ptr(0, r as usize) else {
            return ExecPlan::Fail(EIO);
        };
        if host::write_raw(memfd as i32, ptr, r as usize, Some(off as i64)) != r {
            return ExecPlan::Fail(EIO);
        }
        off += r as u64;
    }
    ExecPlan::Rewrite {
        nr: libc::SYS_execveat as u64,
        args: [
            memfd as u64,
            EMPTY.as_ptr() as u64,
            argv,
            envp,
            libc::AT_EMPTY_PATH as u64,
            0,
        ],
    }
}

fn count_args(argv: u64) -> Option<usize> {
    if argv == 0 {
        return Some(0);
    }
    (0..MAX_ARGS).find(|&i| usermem::read_u64(argv + 8 * i as u64).is_none_or(|p| p == 0))
}

/// A bump allocator over one fresh anonymous mapping.
struct Buffer {
    base: u64,
    len: u64,
    used: core::cell::Cell<u64>,
}

impl Buffer {
    fn new(len: usize) -> Option<Buffer> {
        let len = virtuos_abi::round_up(len, virtuos_abi::PAGE_SIZE) as u64;
        let base = host::mmap_anon(0, len, libc::PROT_READ | libc::PROT_WRITE, 0);
        if base < 0 {
            return None;
        }
        BUFFER.store(base as u64, Ordering::Release);
        BUFFER_LEN.store(len, Ordering::Release);
        Some(Buffer {
            base: base as u64,
            len,
            used: core::cell::Cell::new(0),
        })
    }

    /// `n` bytes of the mapping, or 0 (NULL: every write to it is refused
    /// by `usermem`) when they do not fit; callers size the buffer so that
    /// this does not happen.
    fn alloc(&self, n: u64) -> u64 {
        let at = virtuos_abi::round_up(self.used.get() as usize, 8) as u64;
        if at + n > self.len {
            return 0;
        }
        self.used.set(at + n);
        self.base + at
    }

    /// Copy `s` (which holds its NUL) and return its address.
    fn put_str(&self, s: &[u8]) -> u64 {
        let p = self.alloc(s.len() as u64);
        usermem::write_user(p, s);
        p
    }

    /// Copy `s` and a NUL.
    fn put_str_nul(&self, s: &[u8]) -> u64 {
        let p = self.alloc(s.len() as u64 + 1);
        usermem::write_user(p, s);
        usermem::write_user(p + s.len() as u64, &[0]);
        p
    }

    fn reserve_ptrs(&self, n: usize) -> u64 {
        self.alloc(8 * n as u64)
    }

    fn set_ptr(&self, vec: u64, i: usize, v: u64) {
        usermem::write_u64(vec + 8 * i as u64, v);
    }
}
