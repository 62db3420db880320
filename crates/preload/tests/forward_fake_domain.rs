//! The whole forwarding path against an in-test fake domain: we map a
//! region and a state page ourselves, install them as the session, and run
//! worker threads that claim entries and execute them with a tiny executor
//! (real system calls on a temp directory that plays the storage mount),
//! validating every chunk offset with the shape table as a domain would.
//!
//! The intercept half is not armed here (the library is linked into the
//! test binary): we call `forward::on_syscall` ourselves and run `Local`
//! results natively, as the SIGSYS handler would.

mod forward_common;

use forward_common::{fd_path, Executor};
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::sync::{Mutex, OnceLock};
use virtuos::forward::{self, fds, Action};
use virtuos_abi::mapping::create_memfd;
use virtuos_abi::region::StatePage;
use virtuos_abi::{ClientRegion, REGION_SIZE, STATE_SIZE};

struct Env {
    root: String,
    mount: String,
    local: String,
}

static ENV: OnceLock<Env> = OnceLock::new();
static SERIAL: Mutex<()> = Mutex::new(());

fn env() -> &'static Env {
    ENV.get_or_init(|| {
        let root = format!(
            "{}/forward-fake-{}",
            env!("CARGO_TARGET_TMPDIR"),
            std::process::id()
        );
        let _ = std::fs::remove_dir_all(&root);
        let mount = format!("{root}/storage");
        let local = format!("{root}/local");
        std::fs::create_dir_all(&mount).unwrap();
        std::fs::create_dir_all(&local).unwrap();
        let rfd = create_memfd("test-region", REGION_SIZE).unwrap();
        let sfd = create_memfd("test-state", STATE_SIZE).unwrap();
        let region = ClientRegion::map(&rfd).unwrap();
        region.init();
        let state = StatePage::map(&sfd, true).unwrap();
        state.get().init(2);
        forward::install_test_session(&rfd, &sfd, &mount).unwrap();
        let region: &'static ClientRegion = Box::leak(Box::new(region));
        let state: &'static StatePage = Box::leak(Box::new(state));
        let exec: &'static Executor = Box::leak(Box::new(Executor::new(None)));
        for _ in 0..2 {
            std::thread::spawn(move || exec.serve(region, state));
        }
        Env { root, mount, local }
    })
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn errno() -> i64 {
    -(std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO) as i64)
}

// ---------------------------------------------------------------- helpers

/// One system call as the interception would run it.
fn sys(nr: i64, args: [u64; 6]) -> i64 {
    match forward::on_syscall(nr as u64, args) {
        Action::Done(r) => r,
        Action::Local => {
            // SAFETY: test calls with valid arguments.
            let r =
                unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) };
            if r < 0 {
                errno()
            } else {
                r
            }
        }
    }
}

fn forwarded(nr: i64, args: [u64; 6]) -> i64 {
    match forward::on_syscall(nr as u64, args) {
        Action::Done(r) => r,
        Action::Local => panic!("syscall {nr} {args:?} was not forwarded"),
    }
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn p(s: &CString) -> u64 {
    s.as_ptr() as u64
}

const CWD: u64 = libc::AT_FDCWD as i64 as u64;

fn open_at(path: &str, flags: i32) -> i64 {
    let s = c(path);
    sys(libc::SYS_openat, [CWD, p(&s), flags as u64, 0o644, 0, 0])
}

fn write_fd(fd: i64, data: &[u8]) -> i64 {
    sys(
        libc::SYS_write,
        [fd as u64, data.as_ptr() as u64, data.len() as u64, 0, 0, 0],
    )
}

fn read_fd(fd: i64, buf: &mut [u8]) -> i64 {
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

fn close(fd: i64) -> i64 {
    sys(libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0])
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn host_link(fd: i64) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- tests

#[test]
fn open_write_read_stat_close() {
    let e = env();
    let _g = lock();
    let path = format!("{}/a.txt", e.mount);
    let fd = open_at(
        &path,
        libc::O_CREAT | libc::O_RDWR | libc::O_CLOEXEC | libc::O_TRUNC,
    );
    assert!(fd >= 0, "open: {fd}");
    assert!(fds::is_forwarded(fd as u64));
    assert!(
        host_link(fd).starts_with("/memfd:virtuos-placeholder"),
        "a placeholder holds the number"
    );
    assert_eq!(write_fd(fd, b"hello"), 5);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"hello",
        "written in the domain's tree"
    );
    assert_eq!(sys(libc::SYS_lseek, [fd as u64, 0, 0, 0, 0, 0]), 0);
    let mut buf = [0u8; 16];
    assert_eq!(read_fd(fd, &mut buf), 5);
    assert_eq!(&buf[..5], b"hello");
    // fstat and newfstatat through the shape table.
    // SAFETY: all-zero bytes are a valid plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(
        forwarded(
            libc::SYS_fstat,
            [fd as u64, &mut st as *mut _ as u64, 0, 0, 0, 0]
        ),
        0
    );
    assert_eq!(st.st_size, 5);
    let sp = c(&path);
    // SAFETY: all-zero bytes are a valid plain C struct.
    let mut st2: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(
        forwarded(
            libc::SYS_newfstatat,
            [CWD, p(&sp), &mut st2 as *mut _ as u64, 0, 0, 0]
        ),
        0
    );
    assert_eq!(st2.st_ino, st.st_ino);
    // Non-normalised paths route by their normal form.
    let weird = c(&format!("{}//./x/../a.txt", e.mount));
    // SAFETY: all-zero bytes are a valid plain C struct.
    let mut st3: libc::stat = unsafe { std::mem::zeroed() };
    let r = forwarded(
        libc::SYS_newfstatat,
        [CWD, p(&weird), &mut st3 as *mut _ as u64, 0, 0, 0],
    );
    assert!(
        r == 0 || r == -(libc::ENOENT as i64),
        "x does not exist: {r}"
    );
    assert_eq!(
        sys(
            libc::SYS_fcntl,
            [fd as u64, libc::F_GETFD as u64, 0, 0, 0, 0]
        ),
        libc::FD_CLOEXEC as i64
    );
    assert!(
        sys(
            libc::SYS_fcntl,
            [fd as u64, libc::F_GETFL as u64, 0, 0, 0, 0]
        ) & libc::O_RDWR as i64
            != 0
    );
    assert_eq!(close(fd), 0);
    assert!(!fds::is_forwarded(fd as u64));
    assert_eq!(close(fd), -(libc::EBADF as i64), "closed on the host too");
    // A lookalike prefix is local.
    let fd = open_at(&format!("{}x", e.mount), libc::O_RDONLY);
    assert_eq!(fd, -(libc::ENOENT as i64));
    // A missing remote file is the domain's ENOENT.
    assert_eq!(
        open_at(&format!("{}/missing", e.mount), libc::O_RDONLY),
        -(libc::ENOENT as i64)
    );
    // Too long a path.
    let long = format!("{}/{}", e.mount, "x".repeat(5000));
    assert_eq!(open_at(&long, libc::O_RDONLY), -(libc::ENAMETOOLONG as i64));
}

#[test]
fn large_and_vectored_io_is_split() {
    let e = env();
    let _g = lock();
    let path = format!("{}/big.bin", e.mount);
    let fd = open_at(&path, libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC);
    assert!(fd >= 0);
    let data = pattern(700_000, 3);
    assert_eq!(write_fd(fd, &data), data.len() as i64);
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let mut back = vec![0u8; 800_000];
    let r = sys(
        libc::SYS_pread64,
        [
            fd as u64,
            back.as_mut_ptr() as u64,
            back.len() as u64,
            0,
            0,
            0,
        ],
    );
    assert_eq!(r, data.len() as i64, "short at EOF");
    assert_eq!(&back[..data.len()], &data[..]);
    // pwrite at an offset beyond one chunk.
    let patch = pattern(300_000, 9);
    let r = sys(
        libc::SYS_pwrite64,
        [
            fd as u64,
            patch.as_ptr() as u64,
            patch.len() as u64,
            100_000,
            0,
            0,
        ],
    );
    assert_eq!(r, patch.len() as i64);
    let disk = std::fs::read(&path).unwrap();
    assert_eq!(&disk[100_000..400_000], &patch[..]);
    // writev with three buffers, > one chunk in all, then readv back.
    assert_eq!(sys(libc::SYS_ftruncate, [fd as u64, 0, 0, 0, 0, 0]), 0);
    assert_eq!(sys(libc::SYS_lseek, [fd as u64, 0, 0, 0, 0, 0]), 0);
    let parts = [pattern(10, 1), pattern(270_000, 2), pattern(5, 3)];
    let iov: Vec<libc::iovec> = parts
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut _,
            iov_len: b.len(),
        })
        .collect();
    let total: usize = parts.iter().map(|b| b.len()).sum();
    let r = sys(
        libc::SYS_writev,
        [fd as u64, iov.as_ptr() as u64, 3, 0, 0, 0],
    );
    assert_eq!(r, total as i64);
    assert_eq!(std::fs::read(&path).unwrap(), parts.concat());
    let mut outs = [vec![0u8; 7], vec![0u8; 262_144], vec![0u8; 10_000]];
    let oiov: Vec<libc::iovec> = outs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut _,
            iov_len: b.len(),
        })
        .collect();
    let r = sys(
        libc::SYS_preadv,
        [fd as u64, oiov.as_ptr() as u64, 3, 0, 0, 0],
    );
    assert_eq!(r, total as i64);
    let got: Vec<u8> = outs.concat();
    assert_eq!(&got[..total], &parts.concat()[..]);
    // preadv2 with a flag we cannot honour.
    let r = sys(
        libc::SYS_preadv2,
        [
            fd as u64,
            oiov.as_ptr() as u64,
            3,
            0,
            0,
            libc::RWF_NOWAIT as u64,
        ],
    );
    assert_eq!(r, -(libc::EOPNOTSUPP as i64));
    assert_eq!(close(fd), 0);
}

#[test]
fn dup_family_close_range_and_cloexec() {
    let e = env();
    let _g = lock();
    let path = format!("{}/dup.txt", e.mount);
    let fd = open_at(&path, libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC);
    assert!(fd >= 0);
    let d = sys(libc::SYS_dup, [fd as u64, 0, 0, 0, 0, 0]);
    assert!(d >= 0 && d != fd);
    assert!(fds::is_forwarded(d as u64));
    assert_ne!(
        fds::get(d as u64).unwrap().remote,
        fds::get(fd as u64).unwrap().remote
    );
    // A dup shares the file offset.
    assert_eq!(write_fd(d, b"abc"), 3);
    assert_eq!(write_fd(fd, b"def"), 3);
    assert_eq!(std::fs::read(&path).unwrap(), b"abcdef");
    // dup2 / dup3 onto free numbers.
    assert_eq!(sys(libc::SYS_dup2, [fd as u64, 1000, 0, 0, 0, 0]), 1000);
    assert_eq!(
        sys(libc::SYS_fcntl, [1000, libc::F_GETFD as u64, 0, 0, 0, 0]),
        0
    );
    assert_eq!(
        sys(
            libc::SYS_dup3,
            [fd as u64, 1001, libc::O_CLOEXEC as u64, 0, 0, 0]
        ),
        1001
    );
    assert_eq!(
        sys(libc::SYS_fcntl, [1001, libc::F_GETFD as u64, 0, 0, 0, 0]),
        libc::FD_CLOEXEC as i64
    );
    assert!(host_link(1001).starts_with("/memfd:virtuos-placeholder"));
    // The placeholder mirrors FD_CLOEXEC.
    // SAFETY: F_GETFD on a descriptor number.
    assert_eq!(
        unsafe { libc::fcntl(1001, libc::F_GETFD) },
        libc::FD_CLOEXEC
    );
    assert_eq!(
        sys(libc::SYS_fcntl, [1001, libc::F_SETFD as u64, 0, 0, 0, 0]),
        0
    );
    assert!(!fds::get(1001).unwrap().cloexec);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::fcntl(1001, libc::F_GETFD) }, 0);
    // FIOCLEX sets it again.
    assert_eq!(sys(libc::SYS_ioctl, [1001, libc::FIOCLEX, 0, 0, 0, 0]), 0);
    assert!(fds::get(1001).unwrap().cloexec);
    // dup2(fd, fd) is a no-op check, dup3(fd, fd) EINVAL.
    assert_eq!(sys(libc::SYS_dup2, [1000, 1000, 0, 0, 0, 0]), 1000);
    assert_eq!(
        sys(libc::SYS_dup3, [1000, 1000, 0, 0, 0, 0]),
        -(libc::EINVAL as i64)
    );
    // dup2 of forwarded onto forwarded replaces the remote side.
    let other = open_at(
        &format!("{}/other.txt", e.mount),
        libc::O_CREAT | libc::O_RDWR,
    );
    assert!(other >= 0);
    let old_remote = fds::get(1000).unwrap().remote;
    assert_eq!(sys(libc::SYS_dup2, [other as u64, 1000, 0, 0, 0, 0]), 1000);
    assert_ne!(fds::get(1000).unwrap().remote, old_remote);
    assert!(
        fd_path(old_remote as i64).is_none(),
        "the old remote descriptor was closed"
    );
    // A local fd dup2'ed onto a forwarded one: the number becomes local.
    let mut pipe = [0i32; 2];
    // SAFETY: pipe into a local array.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    let rem = fds::get(1000).unwrap().remote;
    assert_eq!(
        sys(libc::SYS_dup2, [pipe[0] as u64, 1000, 0, 0, 0, 0]),
        1000
    );
    assert!(!fds::is_forwarded(1000));
    assert!(host_link(1000).starts_with("pipe:"));
    assert!(fd_path(rem as i64).is_none());
    // F_DUPFD respects its minimum.
    let hi = sys(
        libc::SYS_fcntl,
        [fd as u64, libc::F_DUPFD_CLOEXEC as u64, 1005, 0, 0, 0],
    );
    assert!(hi >= 1005, "{hi}");
    assert!(fds::get(hi as u64).unwrap().cloexec);
    // close_range over forwarded and local descriptors.
    assert_eq!(sys(libc::SYS_dup2, [fd as u64, 1002, 0, 0, 0, 0]), 1002);
    let remotes: Vec<u32> = [1001u64, 1002, hi as u64]
        .iter()
        .map(|&f| fds::get(f).unwrap().remote)
        .collect();
    assert_eq!(sys(libc::SYS_close_range, [1000, 1010, 0, 0, 0, 0]), 0);
    for f in [1000u64, 1001, 1002, hi as u64] {
        assert!(!fds::is_forwarded(f));
        assert_eq!(host_link(f as i64), "", "{f} closed on the host");
    }
    for r in remotes {
        assert!(fd_path(r as i64).is_none(), "remote {r} closed");
    }
    // CLOSE_RANGE_CLOEXEC marks instead of closing.
    assert_eq!(sys(libc::SYS_dup2, [fd as u64, 1003, 0, 0, 0, 0]), 1003);
    assert_eq!(
        sys(
            libc::SYS_close_range,
            [1003, 1003, libc::CLOSE_RANGE_CLOEXEC as u64, 0, 0, 0]
        ),
        0
    );
    assert!(fds::get(1003).unwrap().cloexec);
    assert_eq!(close(1003), 0);
    // Beyond the table's capacity: EMFILE, nothing leaks.
    assert_eq!(
        sys(
            libc::SYS_dup2,
            [fd as u64, fds::CAPACITY as u64 + 1, 0, 0, 0, 0]
        ),
        -(libc::EMFILE as i64)
    );
    for f in [fd, d, other, pipe[1] as i64] {
        assert_eq!(close(f), 0);
    }
}

#[test]
fn directories_names_and_cross_domain_errors() {
    let e = env();
    let _g = lock();
    let dir = c(&format!("{}/d", e.mount));
    let _ = std::fs::remove_dir_all(format!("{}/d", e.mount));
    assert_eq!(forwarded(libc::SYS_mkdir, [p(&dir), 0o755, 0, 0, 0, 0]), 0);
    for n in ["x", "y", "z"] {
        let fd = open_at(
            &format!("{}/d/{n}", e.mount),
            libc::O_CREAT | libc::O_WRONLY,
        );
        assert!(fd >= 0);
        assert_eq!(close(fd), 0);
    }
    let dfd = open_at(
        &format!("{}/d", e.mount),
        libc::O_RDONLY | libc::O_DIRECTORY,
    );
    assert!(dfd >= 0);
    let mut buf = vec![0u8; 4096];
    let n = forwarded(
        libc::SYS_getdents64,
        [
            dfd as u64,
            buf.as_mut_ptr() as u64,
            buf.len() as u64,
            0,
            0,
            0,
        ],
    );
    assert!(n > 0);
    let mut names = vec![];
    let mut off = 0usize;
    while off < n as usize {
        let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
        let name = &buf[off + 19..off + reclen];
        let end = name.iter().position(|&b| b == 0).unwrap();
        names.push(String::from_utf8(name[..end].to_vec()).unwrap());
        off += reclen;
    }
    names.sort();
    assert_eq!(names, [".", "..", "x", "y", "z"]);
    // *at with a forwarded dirfd and a relative path.
    let x = c("x");
    // SAFETY: all-zero bytes are a valid plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(
        forwarded(
            libc::SYS_newfstatat,
            [dfd as u64, p(&x), &mut st as *mut _ as u64, 0, 0, 0]
        ),
        0
    );
    // An absolute local path with a forwarded dirfd is local.
    let local = c(&e.local);
    assert_eq!(
        sys(
            libc::SYS_newfstatat,
            [dfd as u64, p(&local), &mut st as *mut _ as u64, 0, 0, 0]
        ),
        0
    );
    assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFDIR);
    // renameat inside the domain, then across domains: EXDEV.
    let y = c("y");
    let w = c("w");
    assert_eq!(
        forwarded(
            libc::SYS_renameat,
            [dfd as u64, p(&y), dfd as u64, p(&w), 0, 0]
        ),
        0
    );
    assert!(std::path::Path::new(&format!("{}/d/w", e.mount)).exists());
    let out = c(&format!("{}/w", e.local));
    assert_eq!(
        forwarded(libc::SYS_renameat, [dfd as u64, p(&w), CWD, p(&out), 0, 0]),
        -(libc::EXDEV as i64)
    );
    let src = c(&format!("{}/d/z", e.mount));
    assert_eq!(
        forwarded(libc::SYS_rename, [p(&src), p(&out), 0, 0, 0, 0]),
        -(libc::EXDEV as i64)
    );
    // link: as natively, a missing source is ENOENT before any EXDEV.
    assert_eq!(
        forwarded(libc::SYS_link, [p(&out), p(&src), 0, 0, 0, 0]),
        -(libc::ENOENT as i64)
    );
    std::fs::write(format!("{}/w", e.local), b"local").unwrap();
    assert_eq!(
        forwarded(libc::SYS_link, [p(&out), p(&src), 0, 0, 0, 0]),
        -(libc::EXDEV as i64)
    );
    std::fs::remove_file(format!("{}/w", e.local)).unwrap();
    // symlink: the target is just a string.
    let link = c(&format!("{}/d/l", e.mount));
    let target = c("/etc/hostname");
    assert_eq!(
        forwarded(libc::SYS_symlink, [p(&target), p(&link), 0, 0, 0, 0]),
        0
    );
    let mut lb = [0u8; 64];
    let n = forwarded(
        libc::SYS_readlink,
        [p(&link), lb.as_mut_ptr() as u64, 64, 0, 0, 0],
    );
    assert_eq!(&lb[..n as usize], b"/etc/hostname");
    // unlink and rmdir.
    for n in ["x", "w", "z", "l"] {
        let s = c(n);
        assert_eq!(
            forwarded(libc::SYS_unlinkat, [dfd as u64, p(&s), 0, 0, 0, 0]),
            0
        );
    }
    assert_eq!(close(dfd), 0);
    assert_eq!(forwarded(libc::SYS_rmdir, [p(&dir), 0, 0, 0, 0, 0]), 0);
    // Unsupported uses fail clearly instead of running on the host.
    let f = open_at(&format!("{}/a2.txt", e.mount), libc::O_CREAT | libc::O_RDWR);
    assert!(f >= 0);
    assert_eq!(
        forwarded(libc::SYS_sendto, [f as u64, 0, 0, 0, 0, 0]),
        -(libc::ENOTSOCK as i64)
    );
    // SAFETY: plain libc calls on descriptors and local buffers of this test.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0,
    };
    assert_eq!(
        forwarded(
            libc::SYS_epoll_ctl,
            [
                ep as u64,
                libc::EPOLL_CTL_ADD as u64,
                f as u64,
                &mut ev as *mut _ as u64,
                0,
                0
            ]
        ),
        -(libc::EPERM as i64)
    );
    // SAFETY: plain libc calls on descriptors and local buffers of this test.
    let ino = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    let a2 = c(&format!("{}/a2.txt", e.mount));
    assert_eq!(
        forwarded(
            libc::SYS_inotify_add_watch,
            [ino as u64, p(&a2), libc::IN_MODIFY as u64, 0, 0, 0]
        ),
        -(libc::ENOSYS as i64)
    );
    assert_eq!(
        sys(libc::SYS_ioctl, [f as u64, 0x5402 /* TCSETS */, 0, 0, 0, 0]),
        -(libc::ENOTTY as i64)
    );
    // Non-forwardable fcntl command.
    assert_eq!(
        sys(libc::SYS_fcntl, [f as u64, 0x7fff, 0, 0, 0, 0]),
        -(libc::EINVAL as i64)
    );
    // SAFETY: plain libc calls on descriptors and local buffers of this test.
    unsafe {
        libc::close(ep);
        libc::close(ino);
    }
    assert_eq!(close(f), 0);
}

#[test]
fn cwd_follows_chdir_into_and_out_of_the_domain() {
    let e = env();
    let _g = lock();
    let host_cwd = std::env::current_dir().unwrap();
    let sub = format!("{}/cwd", e.mount);
    let _ = std::fs::create_dir_all(&sub);
    let s = c(&sub);
    assert_eq!(forwarded(libc::SYS_chdir, [p(&s), 0, 0, 0, 0, 0]), 0);
    assert_eq!(
        std::env::current_dir().unwrap(),
        host_cwd,
        "the host cwd is untouched"
    );
    assert!(forward::has_forwarded_state());
    let mut buf = [0u8; 512];
    let n = forwarded(libc::SYS_getcwd, [buf.as_mut_ptr() as u64, 512, 0, 0, 0, 0]);
    assert_eq!(&buf[..n as usize - 1], sub.as_bytes());
    assert_eq!(
        forwarded(libc::SYS_getcwd, [buf.as_mut_ptr() as u64, 3, 0, 0, 0, 0]),
        -(libc::ERANGE as i64)
    );
    // Relative paths go to the domain...
    let fd = open_at("rel.txt", libc::O_CREAT | libc::O_WRONLY);
    assert!(fd >= 0 && fds::is_forwarded(fd as u64));
    assert_eq!(close(fd), 0);
    assert!(std::path::Path::new(&format!("{sub}/rel.txt")).exists());
    // ... unless `..` leads out of the mount: then to the host, absolute.
    let out = "../../local/out.txt";
    let fd = open_at(out, libc::O_CREAT | libc::O_WRONLY);
    assert!(fd >= 0, "{fd}");
    assert!(!fds::is_forwarded(fd as u64));
    assert_eq!(host_link(fd), format!("{}/out.txt", e.local));
    // SAFETY: closing a local descriptor.
    unsafe { libc::close(fd as i32) };
    // fchdir to a forwarded directory.
    let dfd = open_at(&e.mount, libc::O_RDONLY | libc::O_DIRECTORY);
    assert_eq!(forwarded(libc::SYS_fchdir, [dfd as u64, 0, 0, 0, 0, 0]), 0);
    let n = forwarded(libc::SYS_getcwd, [buf.as_mut_ptr() as u64, 512, 0, 0, 0, 0]);
    assert_eq!(&buf[..n as usize - 1], e.mount.as_bytes());
    // chdir("..") leaves the domain: a local chdir to the joined path.
    let up = c("..");
    assert_eq!(forwarded(libc::SYS_chdir, [p(&up), 0, 0, 0, 0, 0]), 0);
    assert_eq!(
        std::env::current_dir().unwrap().display().to_string(),
        e.root
    );
    assert_eq!(
        forward::on_syscall(
            libc::SYS_getcwd as u64,
            [buf.as_mut_ptr() as u64, 512, 0, 0, 0, 0]
        ),
        Action::Local
    );
    std::env::set_current_dir(&host_cwd).unwrap();
    assert_eq!(close(dfd), 0);
}

#[test]
fn copies_between_local_and_forwarded_descriptors() {
    let e = env();
    let _g = lock();
    let data = pattern(600_000, 5);
    let lpath = format!("{}/src.bin", e.local);
    std::fs::write(&lpath, &data).unwrap();
    let lfd = std::fs::File::open(&lpath).unwrap();
    let rpath = format!("{}/copy.bin", e.mount);
    let rfd = open_at(&rpath, libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC);
    assert!(rfd >= 0);
    // Local -> forwarded with copy_file_range (coreutils cp), in pieces.
    let mut total = 0i64;
    loop {
        let r = forwarded(
            libc::SYS_copy_file_range,
            [lfd.as_raw_fd() as u64, 0, rfd as u64, 0, 1 << 30, 0],
        );
        assert!(r >= 0, "{r}");
        if r == 0 {
            break;
        }
        total += r;
    }
    assert_eq!(total, data.len() as i64);
    assert_eq!(std::fs::read(&rpath).unwrap(), data);
    // Forwarded -> local with sendfile and an explicit offset.
    let opath = format!("{}/out.bin", e.local);
    let ofd = std::fs::File::create(&opath).unwrap();
    let mut off: i64 = 100;
    let r = forwarded(
        libc::SYS_sendfile,
        [
            ofd.as_raw_fd() as u64,
            rfd as u64,
            &mut off as *mut i64 as u64,
            1000,
            0,
            0,
        ],
    );
    assert_eq!(r, 1000);
    assert_eq!(off, 1100);
    assert_eq!(std::fs::read(&opath).unwrap(), &data[100..1100]);
    // Both forwarded: forwarded as is.
    let r2 = open_at(
        &format!("{}/copy2.bin", e.mount),
        libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC,
    );
    let mut o_in: i64 = 0;
    let r = forwarded(
        libc::SYS_copy_file_range,
        [
            rfd as u64,
            &mut o_in as *mut i64 as u64,
            r2 as u64,
            0,
            4096,
            0,
        ],
    );
    assert_eq!(r, 4096);
    assert_eq!(o_in, 4096);
    assert_eq!(close(r2), 0);
    // Both local: not ours.
    assert_eq!(
        forward::on_syscall(
            libc::SYS_copy_file_range as u64,
            [lfd.as_raw_fd() as u64, 0, ofd.as_raw_fd() as u64, 0, 1, 0]
        ),
        Action::Local
    );
    assert_eq!(close(rfd), 0);
}

#[test]
fn mmap_proc_links_and_poll() {
    let e = env();
    let _g = lock();
    let path = format!("{}/map.bin", e.mount);
    let data = pattern(300_000, 7);
    std::fs::write(&path, &data).unwrap();
    let fd = open_at(&path, libc::O_RDONLY);
    assert!(fd >= 0);
    let len = 300_000u64;
    let addr = forwarded(
        libc::SYS_mmap,
        [
            0,
            len,
            libc::PROT_READ as u64,
            libc::MAP_PRIVATE as u64,
            fd as u64,
            0,
        ],
    );
    assert!(addr > 0, "{addr}");
    // SAFETY: a fresh readable mapping of `len` bytes.
    let mapped = unsafe { std::slice::from_raw_parts(addr as *const u8, len as usize) };
    assert_eq!(mapped, &data[..]);
    // SAFETY: unmapping what we mapped.
    unsafe { libc::munmap(addr as *mut _, len as usize) };
    // A shared writable mapping cannot be emulated.
    let r = forwarded(
        libc::SYS_mmap,
        [
            0,
            4096,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            libc::MAP_SHARED as u64,
            fd as u64,
            0,
        ],
    );
    assert_eq!(r, -(libc::ENODEV as i64));
    // /proc/self/fd/N names the domain's file.
    let link = c(&format!("/proc/self/fd/{fd}"));
    let mut buf = [0u8; 512];
    let n = forwarded(
        libc::SYS_readlink,
        [p(&link), buf.as_mut_ptr() as u64, 512, 0, 0, 0],
    );
    assert_eq!(&buf[..n as usize], path.as_bytes());
    let link2 = c(&format!("/dev/fd/{fd}"));
    let n = forwarded(
        libc::SYS_readlinkat,
        [CWD, p(&link2), buf.as_mut_ptr() as u64, 512, 0, 0],
    );
    assert_eq!(&buf[..n as usize], path.as_bytes());
    // ... and opening it reopens the file.
    let again = forwarded(
        libc::SYS_openat,
        [CWD, p(&link), libc::O_RDONLY as u64, 0, 0, 0],
    );
    assert!(again >= 0 && again != fd);
    let mut head = [0u8; 8];
    assert_eq!(read_fd(again, &mut head), 8);
    assert_eq!(&head, &data[..8]);
    // poll: forwarded files are ready; the local pipe part runs natively.
    let mut pipe = [0i32; 2];
    // SAFETY: pipe into a local array.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    let mut pfds = [
        libc::pollfd {
            fd: fd as i32,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: pipe[0],
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: pipe[1],
            events: libc::POLLOUT,
            revents: 0,
        },
    ];
    let r = forwarded(libc::SYS_poll, [pfds.as_mut_ptr() as u64, 3, 5000, 0, 0, 0]);
    assert_eq!(r, 2);
    assert_eq!(pfds[0].fd, fd as i32, "restored");
    assert_eq!(pfds[0].revents, libc::POLLIN);
    assert_eq!(pfds[1].revents, 0);
    assert_eq!(pfds[2].revents, libc::POLLOUT);
    // select with the forwarded fd in the read set.
    // SAFETY: all-zero bytes are a valid plain C struct.
    let mut rset: libc::fd_set = unsafe { std::mem::zeroed() };
    // SAFETY: plain libc calls on descriptors and local buffers of this test.
    unsafe {
        libc::FD_SET(fd as i32, &mut rset);
        libc::FD_SET(pipe[0], &mut rset);
    }
    let mut tv = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    let nfds = (fd as i32).max(pipe[0]) + 1;
    let r = forwarded(
        libc::SYS_select,
        [
            nfds as u64,
            &mut rset as *mut _ as u64,
            0,
            0,
            &mut tv as *mut _ as u64,
            0,
        ],
    );
    assert_eq!(r, 1);
    // SAFETY: plain libc calls on descriptors and local buffers of this test.
    unsafe {
        assert!(libc::FD_ISSET(fd as i32, &rset));
        assert!(!libc::FD_ISSET(pipe[0], &rset));
        libc::close(pipe[0]);
        libc::close(pipe[1]);
    }
    assert_eq!(close(again), 0);
    assert_eq!(close(fd), 0);
}

#[test]
fn many_threads_share_entries_and_chunks() {
    let e = env();
    let _g = lock();
    let fd = open_at(
        &format!("{}/threads.txt", e.mount),
        libc::O_CREAT | libc::O_RDWR,
    );
    assert!(fd >= 0);
    assert_eq!(write_fd(fd, b"0123456789"), 10);
    // (Other tests' threads may still cache one entry and chunk each.)
    forward::on_thread_exit();
    let before = virtuos::forward::pools::free_counts();
    // More threads than chunks: some must wait for others to give theirs back.
    let threads: Vec<_> = (0..80)
        .map(|_| {
            std::thread::spawn(move || {
                for i in 0..40u64 {
                    let mut b = [0u8; 4];
                    let r = sys(
                        libc::SYS_pread64,
                        [fd as u64, b.as_mut_ptr() as u64, 4, i % 6, 0, 0],
                    );
                    assert_eq!(r, 4);
                    assert_eq!(b[0], b'0' + (i % 6) as u8);
                }
                forward::on_thread_exit();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    forward::on_thread_exit();
    assert_eq!(
        virtuos::forward::pools::free_counts(),
        before,
        "everything came back"
    );
    assert_eq!(close(fd), 0);
}

#[test]
fn exec_state_record_carries_the_table() {
    let e = env();
    let _g = lock();
    let a = open_at(&format!("{}/e1", e.mount), libc::O_CREAT | libc::O_RDWR);
    let b = open_at(
        &format!("{}/e2", e.mount),
        libc::O_CREAT | libc::O_RDWR | libc::O_CLOEXEC,
    );
    assert!(a >= 0 && b >= 0);
    // An exec of a host program: run natively, after saving the table.
    let prog = b"/bin/true\0";
    let plan = forward::before_exec(
        libc::SYS_execve as u64,
        [prog.as_ptr() as u64, 0, 0, 0, 0, 0],
    );
    assert_eq!(plan, forward::ExecPlan::Native);
    // The record is an inheritable memfd.
    let rec = virtuos::forward::exec::take_record().expect("a record");
    assert_eq!(rec.pid, std::process::id());
    assert_eq!(rec.mount, e.mount.as_bytes());
    let find = |fd: i64| {
        rec.entries
            .iter()
            .find(|(f, _)| *f as i64 == fd)
            .map(|(_, e)| *e)
    };
    assert_eq!(find(a), fds::get(a as u64));
    assert_eq!(find(b).map(|e| e.cloexec), Some(true));
    forward::after_exec_failed(-(libc::ENOENT as i64));
    assert_eq!(close(a), 0);
    assert_eq!(close(b), 0);
}
