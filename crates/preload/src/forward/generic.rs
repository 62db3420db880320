//! Shape-driven calls: decide where a call runs from its descriptor and
//! path arguments, then forward it (translating descriptors), run it on the
//! host (possibly with a rewritten path), or refuse it (EXDEV).
//! Also the calls that change or report the cwd.

use super::action::Action;
use super::caller::{remote_close, Call, Target};
use super::domain;
use super::path::PATH_MAX;
use super::route::{self, PathRoute, PathScratch};
use super::{cwd, fds, host, marshal, usermem};
use virtuos_abi::shape::{Arg, Shape};
use virtuos_abi::{AT_FDCWD_ARG, DOMAIN_FD_LIMIT};

const EIO: i64 = -(libc::EIO as i64);

/// Where a call goes.
pub enum Decision {
    Local,
    /// On the host with these arguments (rewritten paths point into the
    /// scratch buffers, which must outlive the call).
    LocalRewritten([u64; 6]),
    /// Forward with these (descriptor-translated) arguments to this domain.
    Remote([u64; 6], Target),
    /// Errno for the call.
    Fail(i64),
}

/// Decide for a call whose descriptor slots are `fd_slots` and whose path
/// slots are `paths` (each with its dirfd slot, if any).
pub fn decide(
    nr: u64,
    args: &[u64; 6],
    fd_slots: &[usize],
    paths: &[(Option<usize>, usize)],
    scratch: &mut [PathScratch],
) -> Decision {
    let mut remote = *args;
    let mut local = *args;
    let (mut any_remote, mut any_local, mut rewritten) = (false, false, false);
    // The one domain every forwarded argument must belong to.
    let mut domain: Option<u8> = None;
    // The epoch of the descriptors among the arguments.
    let mut epoch: Option<u16> = None;
    for &i in fd_slots {
        let Some(&fd) = args.get(i) else { continue };
        match fds::get(fd) {
            Some(e) => {
                if domain.is_some_and(|d| d != e.domain) {
                    return Decision::Fail(-(libc::EXDEV as i64));
                }
                domain = Some(e.domain);
                epoch = Some(e.epoch);
                remote[i] = e.remote as u64;
                any_remote = true;
            }
            None => any_local = true,
        }
    }
    for (k, &(dirslot, pslot)) in paths.iter().enumerate() {
        let (Some(s), Some(&ptr)) = (scratch.get_mut(k), args.get(pslot)) else {
            return Decision::Fail(EIO);
        };
        let dirfd = dirslot.and_then(|d| args.get(d).copied());
        // Paths live in the storage domain; a socket is no directory.
        if dirfd
            .and_then(fds::get)
            .is_some_and(|e| e.domain != domain::DOMAIN_STORAGE)
        {
            return Decision::Fail(-(libc::ENOTDIR as i64));
        }
        if ptr == 0 && !null_path_allowed(nr) {
            // As the kernel, which copies path strings first.
            return Decision::Fail(-(libc::EFAULT as i64));
        }
        match route::classify(dirfd, ptr, follows_final_link(nr, args), s) {
            Err(e) => return Decision::Fail(e),
            Ok(PathRoute::Local) => any_local = true,
            Ok(PathRoute::Rewrite) => {
                any_local = true;
                rewritten = true;
                local[pslot] = s.rewritten().as_ptr() as u64;
                if let Some(d) = dirslot {
                    local[d] = AT_FDCWD_ARG;
                }
            }
            Ok(PathRoute::RemoteRewritten) => {
                if domain.is_some_and(|d| d != domain::DOMAIN_STORAGE) {
                    return Decision::Fail(-(libc::EXDEV as i64));
                }
                domain = Some(domain::DOMAIN_STORAGE);
                any_remote = true;
                remote[pslot] = s.rewritten().as_ptr() as u64;
                if let Some(d) = dirslot {
                    remote[d] = AT_FDCWD_ARG;
                }
            }
            Ok(PathRoute::Remote { dirfd }) => {
                if domain.is_some_and(|d| d != domain::DOMAIN_STORAGE) {
                    return Decision::Fail(-(libc::EXDEV as i64));
                }
                domain = Some(domain::DOMAIN_STORAGE);
                any_remote = true;
                if let Some(d) = dirslot {
                    remote[d] = dirfd;
                    if let Some(e) = args.get(d).copied().and_then(fds::get) {
                        epoch = Some(e.epoch);
                    }
                }
            }
        }
    }
    match (any_remote, any_local) {
        (true, true) => Decision::Fail(mixed_errno(nr, args, paths, &local)),
        (true, false) => Decision::Remote(
            remote,
            Target {
                domain: domain.unwrap_or(domain::DOMAIN_STORAGE),
                epoch,
            },
        ),
        (false, _) if rewritten => Decision::LocalRewritten(local),
        _ => Decision::Local,
    }
}

/// A call whose names lie on both sides (host and domain): EXDEV, as
/// across mounts, unless the kernel would have failed first: a bad or
/// non-directory dirfd (EBADF, ENOTDIR), or a source name that does not
/// resolve (link, rename). `local` holds the arguments as the host would
/// run them.
fn mixed_errno(
    nr: u64,
    args: &[u64; 6],
    paths: &[(Option<usize>, usize)],
    local: &[u64; 6],
) -> i64 {
    for &(dirslot, pslot) in paths {
        let Some(d) = dirslot.map(|d| args[d]) else {
            continue;
        };
        if d as i32 == libc::AT_FDCWD || fds::peek(d).is_some() {
            continue;
        }
        let mut first = [0u8; 1];
        let absolute = usermem::read_user(args[pslot], &mut first) && first[0] == b'/';
        if absolute {
            continue;
        }
        match crate::sys::kernel::fd_type(d) {
            None => return -(libc::EBADF as i64),
            Some(t) if t != libc::S_IFDIR && first[0] != 0 => return -(libc::ENOTDIR as i64),
            _ => {}
        }
    }
    // The source must exist (link and rename look it up before the
    // target's mount is compared).
    let source = match nr as i64 {
        libc::SYS_link | libc::SYS_rename => Some((None, 0)),
        libc::SYS_linkat | libc::SYS_renameat | libc::SYS_renameat2 => Some((Some(0), 1)),
        _ => None,
    };
    if let Some((dirslot, pslot)) = source {
        let dirfd = dirslot.map_or(libc::AT_FDCWD as i64 as u64, |d| local[d]);
        let mut st = [0u8; 256];
        let flags = libc::AT_SYMLINK_NOFOLLOW as u64;
        let user_dirfd = dirslot.map(|d| args[d]);
        let mut scratch = PathScratch::new();
        let stat = libc::SYS_newfstatat as u64;
        let buf = st.as_mut_ptr() as u64;
        let r = match route::classify(user_dirfd, args[pslot], false, &mut scratch) {
            Ok(PathRoute::Local | PathRoute::Rewrite) => {
                host::reissue(stat, [dirfd, local[pslot], buf, flags, 0, 0])
            }
            Ok(route) => {
                let (rdir, path) = match route {
                    PathRoute::Remote { dirfd } => (dirfd, args[pslot]),
                    _ => (AT_FDCWD_ARG, scratch.rewritten().as_ptr() as u64),
                };
                match virtuos_abi::shape::shape(stat as u16) {
                    Some(sh) => forward(
                        stat,
                        &[rdir, path, buf, flags, 0, 0],
                        &sh,
                        domain::DOMAIN_STORAGE,
                    ),
                    None => 0,
                }
            }
            Err(e) => e,
        };
        if r < 0 {
            return r;
        }
    }
    -(libc::EXDEV as i64)
}

/// Calls whose path may be NULL (they then act on their dirfd).
fn null_path_allowed(nr: u64) -> bool {
    matches!(
        nr as i64,
        libc::SYS_utimensat | libc::SYS_futimesat | libc::SYS_fanotify_mark
    )
}

/// Whether call `nr` follows a symlink in the last component of its path
/// (only then does `/proc/self/fd/N` stand for the file N names).
pub fn follows_final_link(nr: u64, a: &[u64; 6]) -> bool {
    let nofollow = |flags: u64| flags as i32 & libc::AT_SYMLINK_NOFOLLOW != 0;
    match nr as i64 {
        libc::SYS_open => a[1] as i32 & libc::O_NOFOLLOW == 0,
        libc::SYS_openat => a[2] as i32 & libc::O_NOFOLLOW == 0,
        libc::SYS_openat2 => usermem::read_u64(a[2]).unwrap_or(0) as i32 & libc::O_NOFOLLOW == 0,
        libc::SYS_creat
        | libc::SYS_stat
        | libc::SYS_statfs
        | libc::SYS_access
        | libc::SYS_chmod
        | libc::SYS_chown
        | libc::SYS_truncate
        | libc::SYS_utime
        | libc::SYS_utimes
        | libc::SYS_chdir
        | libc::SYS_getxattr
        | libc::SYS_setxattr
        | libc::SYS_listxattr
        | libc::SYS_removexattr => true,
        libc::SYS_newfstatat | libc::SYS_fchownat | libc::SYS_utimensat => !nofollow(a[3]),
        libc::SYS_statx => !nofollow(a[2]),
        libc::SYS_faccessat2 | 452 /* fchmodat2 */ => !nofollow(a[3]),
        libc::SYS_faccessat | libc::SYS_fchmodat => true,
        _ => false,
    }
}

/// Descriptor and path slots of a shape.
pub struct Slots {
    fds: [usize; 6],
    nf: usize,
    paths: [(Option<usize>, usize); 6],
    np: usize,
}

impl Slots {
    pub fn of(sh: &Shape) -> Slots {
        let mut s = Slots {
            fds: [0; 6],
            nf: 0,
            paths: [(None, 0); 6],
            np: 0,
        };
        for i in 0..6 {
            match sh[i] {
                Arg::Fd => {
                    s.fds[s.nf] = i;
                    s.nf += 1;
                }
                // A DirFd is routed with its path (the next slot); alone,
                // like an Fd.
                Arg::DirFd if !matches!(sh.get(i + 1), Some(Arg::Path | Arg::OptPath)) => {
                    s.fds[s.nf] = i;
                    s.nf += 1;
                }
                Arg::Path | Arg::OptPath => {
                    let d = (i > 0 && sh[i - 1] == Arg::DirFd).then(|| i - 1);
                    s.paths[s.np] = (d, i);
                    s.np += 1;
                }
                _ => {}
            }
        }
        s
    }

    pub fn fds(&self) -> &[usize] {
        &self.fds[..self.nf]
    }

    pub fn paths(&self) -> &[(Option<usize>, usize)] {
        &self.paths[..self.np]
    }
}

/// Any call with a shape (after the special cases in `dispatch`).
pub fn shaped(nr: u64, args: [u64; 6], sh: Shape) -> Action {
    let slots = Slots::of(&sh);
    if slots.paths().is_empty() {
        // Descriptor-only: the fast path for local descriptors.
        if !slots.fds().iter().any(|&i| fds::is_forwarded(args[i])) {
            return Action::Local;
        }
        let a = run(nr, &sh, decide(nr, &args, slots.fds(), &[], &mut []));
        if let Action::Done(r) = a {
            track(nr, &args, r);
        }
        return a;
    }
    path_call(nr, &args, &sh, slots.fds(), slots.paths())
}

/// What a forwarded descriptor call did to the state `reopen` keeps.
#[inline]
fn track(nr: u64, args: &[u64; 6], r: i64) {
    if r < 0 {
        return;
    }
    match nr as i64 {
        libc::SYS_lseek => super::fds::reopen::seeked(args[0], r),
        libc::SYS_getdents | libc::SYS_getdents64 => super::fds::reopen::listed(args[0]),
        libc::SYS_flock if args[1] as i32 & libc::LOCK_UN == 0 => {
            super::fds::reopen::locked(args[0])
        }
        _ => {}
    }
}

#[inline(never)]
fn path_call(
    nr: u64,
    args: &[u64; 6],
    sh: &Shape,
    fds: &[usize],
    paths: &[(Option<usize>, usize)],
) -> Action {
    if paths.len() == 1 {
        let mut s = [PathScratch::new()];
        let d = decide(nr, args, fds, paths, &mut s);
        if is_open(nr) {
            if let Decision::Remote(a, t) = d {
                return Action::Done(forward_open(nr, args, &a, sh, t, &s[0]));
            }
        }
        run(nr, sh, d)
    } else {
        let mut s = [PathScratch::new(), PathScratch::new()];
        let d = decide(nr, args, fds, paths, &mut s);
        run(nr, sh, d)
    }
}

fn run(nr: u64, sh: &Shape, d: Decision) -> Action {
    match d {
        Decision::Local => Action::Local,
        Decision::LocalRewritten(a) => Action::Done(host::reissue(nr, a)),
        Decision::Fail(e) => Action::Done(e),
        Decision::Remote(a, t) => Action::Done(forward_checked(nr, &a, sh, t)),
    }
}

/// A socket call reaches only the network domain, a file call only the
/// storage domain (per-family tables): a socket call on a forwarded file is
/// ENOTSOCK, as natively.
fn forward_checked(nr: u64, a: &[u64; 6], sh: &Shape, t: Target) -> i64 {
    use virtuos_abi::shape::{family, Family};
    if t.domain & domain::STALE != 0 {
        return super::caller::stale_errno(t.domain);
    }
    if family(nr as u16) == Some(Family::Socket) && t.domain != domain::DOMAIN_NETWORK {
        return -(libc::ENOTSOCK as i64);
    }
    if family(nr as u16) == Some(Family::File) && t.domain == domain::DOMAIN_NETWORK {
        // The network domain runs no file calls: what the kernel answers
        // for a socket.
        if let Some(e) = file_call_on_socket(nr) {
            return e;
        }
    }
    forward(nr, a, sh, t)
}

/// The errno of file call `nr` on a socket, where it always fails.
fn file_call_on_socket(nr: u64) -> Option<i64> {
    let e = match nr as i64 {
        libc::SYS_ftruncate | libc::SYS_fsync | libc::SYS_fdatasync | libc::SYS_readahead => {
            libc::EINVAL
        }
        libc::SYS_lseek | libc::SYS_fadvise64 | libc::SYS_sync_file_range => libc::ESPIPE,
        libc::SYS_getdents64 => libc::ENOTDIR,
        libc::SYS_fallocate => libc::ENODEV,
        _ => return None,
    };
    Some(-(e as i64))
}

/// Forward a shaped call to `domain` and apply its effects on our state.
pub fn forward(nr: u64, a: &[u64; 6], sh: &Shape, target: impl Into<Target>) -> i64 {
    let mut call = match Call::begin(target) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let r = marshal::call_shaped(&mut call, nr as u16, sh, a);
    match nr as i64 {
        libc::SYS_open | libc::SYS_creat | libc::SYS_openat | libc::SYS_openat2 => {
            if r < 0 {
                return r;
            }
            install(&mut call, r, open_cloexec(nr, a))
        }
        _ => r,
    }
}

fn is_open(nr: u64) -> bool {
    matches!(
        nr as i64,
        libc::SYS_open | libc::SYS_creat | libc::SYS_openat | libc::SYS_openat2
    )
}

/// A forwarded open (`a`: translated arguments of the user's `args`): also
/// records what `reopen` needs to open the file again after a restart.
fn forward_open(
    nr: u64,
    args: &[u64; 6],
    a: &[u64; 6],
    sh: &Shape,
    t: Target,
    s: &PathScratch,
) -> i64 {
    if t.domain & domain::STALE != 0 {
        return super::caller::stale_errno(t.domain);
    }
    let mut call = match Call::begin(t) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let (r, ident) = marshal::call_shaped_extra(&mut call, nr as u16, sh, a);
    if r < 0 {
        return r;
    }
    let fd = install(&mut call, r, open_cloexec(nr, a));
    if fd >= 0 && super::fds::reopen::enabled() {
        record_open(fd, nr, args, s, ident);
    }
    fd
}

/// The absolute path an open resolved to (joined with its directory's
/// recorded path when relative to a descriptor), for `reopen`.
fn record_open(fd: i64, nr: u64, args: &[u64; 6], s: &PathScratch, ident: u64) {
    let Some((p, dirfd)) = s.resolved() else {
        return;
    };
    let mut buf = [0u8; PATH_MAX];
    let path = match dirfd {
        None => p,
        Some(d) => {
            let mut dir = [0u8; PATH_MAX];
            let Some(n) = super::fds::reopen::path_of(d, &mut dir) else {
                return;
            };
            match route::join_normalize(&dir[..n], p, &mut buf) {
                Some(m) => &buf[..m],
                None => return,
            }
        }
    };
    super::fds::reopen::on_open(fd, nr, args, path, ident);
}

fn open_cloexec(nr: u64, a: &[u64; 6]) -> bool {
    match nr as i64 {
        libc::SYS_open => a[1] as i32 & libc::O_CLOEXEC != 0,
        libc::SYS_openat => a[2] as i32 & libc::O_CLOEXEC != 0,
        libc::SYS_openat2 => usermem::read_u64(a[2]).unwrap_or(0) as i32 & libc::O_CLOEXEC != 0,
        _ => false,
    }
}

/// Give remote descriptor `rfd` a user number (a fresh placeholder).
pub fn install(call: &mut Call, rfd: i64, cloexec: bool) -> i64 {
    install_as(call, rfd, cloexec, false)
}

/// `install`; `socket`: `rfd` is a socket (always so in the network domain).
pub fn install_as(call: &mut Call, rfd: i64, cloexec: bool, socket: bool) -> i64 {
    if rfd < 0 {
        return rfd;
    }
    if rfd as u64 >= DOMAIN_FD_LIMIT {
        return EIO;
    }
    let ph = host::open_placeholder(cloexec);
    if ph < 0 {
        remote_close(call, rfd as u64);
        return ph;
    }
    bind_as(call, ph, rfd as u32, cloexec, socket)
}

/// Record user fd `ph` (a placeholder we own) as remote `rfd`.
pub fn bind(call: &mut Call, ph: i64, rfd: u32, cloexec: bool) -> i64 {
    bind_as(call, ph, rfd, cloexec, false)
}

/// `bind`; `socket`: `rfd` is a socket.
pub fn bind_as(call: &mut Call, ph: i64, rfd: u32, cloexec: bool, socket: bool) -> i64 {
    let e = fds::entry_for(call, rfd, cloexec);
    let e = fds::Entry {
        socket: e.socket || socket,
        ..e
    };
    match fds::set(ph as u64, e) {
        Ok(prev) => {
            if let Some(p) = prev {
                // A stale entry for a number the kernel considered free.
                remote_close(call, p.remote as u64);
            }
            ph
        }
        Err(e) => {
            host::close(ph as i32);
            remote_close(call, rfd as u64);
            e
        }
    }
}

// ---- cwd ----

/// Ask the domain for its cwd and record it.
fn refresh_remote_cwd(call: &mut Call) -> i64 {
    let Some(chunk) = call.chunk() else {
        return EIO;
    };
    let r = call.result(
        libc::SYS_getcwd as u16,
        [0, PATH_MAX as u64, 0, 0, 0, 0],
        true,
    );
    if r < 0 {
        return r;
    }
    let n = r as usize;
    let mut buf = [0u8; PATH_MAX];
    if n == 0 || n > PATH_MAX || !chunk.read(0, &mut buf[..n]) || buf[n - 1] != 0 {
        return EIO;
    }
    if !cwd::set_remote(&buf[..n - 1]) {
        return EIO;
    }
    0
}

pub fn chdir(args: [u64; 6]) -> Action {
    let mut s = [PathScratch::new()];
    match decide(libc::SYS_chdir as u64, &args, &[], &[(None, 0)], &mut s) {
        Decision::Local if !cwd::is_remote() => Action::Local,
        Decision::Local => local_chdir(args),
        Decision::LocalRewritten(a) => local_chdir(a),
        Decision::Fail(e) => Action::Done(e),
        Decision::Remote(a, _) => Action::Done(remote_chdir(libc::SYS_chdir, &a)),
    }
}

fn local_chdir(a: [u64; 6]) -> Action {
    let r = host::reissue(libc::SYS_chdir as u64, a);
    if r == 0 {
        cwd::set_local();
    }
    Action::Done(r)
}

pub fn fchdir(args: [u64; 6]) -> Action {
    match fds::get(args[0]) {
        Some(e) if e.domain != domain::DOMAIN_STORAGE => Action::Done(-(libc::ENOTDIR as i64)),
        Some(e) => {
            let mut a = args;
            a[0] = e.remote as u64;
            Action::Done(remote_chdir(libc::SYS_fchdir, &a))
        }
        None if cwd::is_remote() => {
            let r = host::reissue(libc::SYS_fchdir as u64, args);
            if r == 0 {
                cwd::set_local();
            }
            Action::Done(r)
        }
        None => Action::Local,
    }
}

fn remote_chdir(nr: i64, a: &[u64; 6]) -> i64 {
    let Some(sh) = virtuos_abi::shape::shape(nr as u16) else {
        return EIO;
    };
    let mut call = match Call::begin(domain::DOMAIN_STORAGE) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let r = marshal::call_shaped(&mut call, nr as u16, &sh, a);
    if r != 0 {
        return r;
    }
    refresh_remote_cwd(&mut call)
}

pub fn getcwd(args: [u64; 6]) -> Action {
    let mut buf = [0u8; PATH_MAX];
    let Some(n) = cwd::copy_remote(&mut buf) else {
        return Action::Local;
    };
    let (ptr, size) = (args[0], args[1]);
    if size < (n + 1) as u64 {
        return Action::Done(-(libc::ERANGE as i64));
    }
    buf[n] = 0;
    if !usermem::write_user(ptr, &buf[..n + 1]) {
        return Action::Done(-(libc::EFAULT as i64));
    }
    Action::Done((n + 1) as i64)
}

/// umask: the host's, mirrored into the shadow so that files created in
/// the domain get the same mode bits as natively.
pub fn umask(mask: u64) -> Action {
    let old = host::reissue(libc::SYS_umask as u64, [mask, 0, 0, 0, 0, 0]);
    if super::session::current(domain::DOMAIN_STORAGE).is_some() {
        let _ = super::caller::simple_call(
            domain::DOMAIN_STORAGE,
            libc::SYS_umask as u16,
            [mask & 0o777, 0, 0, 0, 0, 0],
        );
    }
    Action::Done(old)
}

/// A call that may change this thread's credentials: run it here, then
/// let our shadows follow (the daemon reads the result from the kernel).
/// setfs[ug]id report no errors, so they sync unless they only query
/// (-1).
pub fn credentials_change(nr: u64, a: [u64; 6]) -> Action {
    let fs_query =
        matches!(nr as i64, libc::SYS_setfsuid | libc::SYS_setfsgid) && a[0] as u32 == u32::MAX;
    if fs_query {
        return Action::Local;
    }
    let channel = super::session::credentials_channel();
    let r = host::reissue(nr, a);
    if r >= 0 {
        super::session::sync_credentials(channel);
    }
    Action::Done(r)
}
