//! The executor against a hostile client: every bad request fails with the
//! right errno and nothing crashes.

use super::generic::{marshal, Strings};
use super::{execute, Host};
use proptest::prelude::*;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use virtuos_abi::entry::Request;
use virtuos_abi::mapping::create_memfd;
use virtuos_abi::ops::{OP_FD_PATH, OP_FORK_ABORT, OP_FORK_PREPARE, OP_PING};
use virtuos_abi::shape::{shape, Arg, MAX_STRING};
use virtuos_abi::{
    ClientRegion, AT_FDCWD_ARG, CHUNK_SIZE, DOMAIN_FD_LIMIT, NULL_ARG, NUM_CHUNKS, REGION_SIZE,
};

struct FakeHost {
    proc_: OwnedFd,
}

impl Host for FakeHost {
    fn fd_limit(&self) -> u64 {
        DOMAIN_FD_LIMIT
    }
    fn procfd(&self) -> BorrowedFd<'_> {
        self.proc_.as_fd()
    }
    fn fork_prepare(&self) -> i64 {
        4242
    }
    fn fork_abort(&self, token: u64) -> i64 {
        if token == 4242 {
            0
        } else {
            -(libc::ESRCH as i64)
        }
    }
}

struct Fixture {
    region: ClientRegion,
    host: FakeHost,
    dir: std::path::PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let fd = create_memfd("exec-test", REGION_SIZE).unwrap();
        let region = ClientRegion::map(&fd).unwrap();
        region.init();
        let proc_ = rustix::fs::open(
            "/proc",
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "virtuos-exec-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Fixture {
            region,
            host: FakeHost { proc_ },
            dir,
        }
    }

    fn call(&self, op: impl Into<i64>, chunk: Option<u16>, args: [u64; 6]) -> i64 {
        let req = Request {
            op: op.into() as u16,
            seq: 0,
            task: 1,
            chunk,
            args,
        };
        execute(&self.region, &self.host, &req)
    }

    fn path(&self, chunk: u16, off: u64, name: &str) -> u64 {
        let mut p = self.dir.join(name).into_os_string().into_encoded_bytes();
        p.push(0);
        assert!(self.region.write_chunk(chunk, off, &p));
        off
    }

    /// Open a fresh file read-write in the test directory.
    fn open_file(&self, name: &str) -> u64 {
        let off = self.path(0, 0, name);
        let flags = (libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC | libc::O_CLOEXEC) as u64;
        let fd = self.call(
            libc::SYS_openat,
            Some(0),
            [AT_FDCWD_ARG, off, flags, 0o600, 0, 0],
        );
        assert!(fd >= 0, "openat failed: {fd}");
        fd as u64
    }

    fn close(&self, fd: u64) {
        assert_eq!(self.call(libc::SYS_close, None, [fd, 0, 0, 0, 0, 0]), 0);
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const EBADF: i64 = -(libc::EBADF as i64);
const EFAULT: i64 = -(libc::EFAULT as i64);
const ENOSYS: i64 = -(libc::ENOSYS as i64);
const EINVAL: i64 = -(libc::EINVAL as i64);
const ENOTTY: i64 = -(libc::ENOTTY as i64);

#[test]
fn unknown_and_dangerous_ops_are_enosys() {
    let f = Fixture::new("enosys");
    for nr in [
        libc::SYS_execve,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_kill,
        libc::SYS_clone,
        libc::SYS_exit_group,
        libc::SYS_mount,
        libc::SYS_chroot,
        libc::SYS_setuid,
        1000,
        0x7fff,
    ] {
        assert_eq!(f.call(nr, Some(0), [0; 6]), ENOSYS, "syscall {nr}");
    }
    assert_eq!(f.call(0x8fff, None, [0; 6]), ENOSYS, "unknown virtual op");
    assert_eq!(f.call(0xffff, None, [0; 6]), ENOSYS);
}

#[test]
fn descriptors_at_or_above_the_limit_are_ebadf() {
    let f = Fixture::new("ebadf");
    for fd in [DOMAIN_FD_LIMIT, DOMAIN_FD_LIMIT + 1, u64::MAX, AT_FDCWD_ARG] {
        assert_eq!(f.call(libc::SYS_read, Some(0), [fd, 0, 1, 0, 0, 0]), EBADF);
        assert_eq!(f.call(libc::SYS_close, None, [fd, 0, 0, 0, 0, 0]), EBADF);
        assert_eq!(f.call(libc::SYS_fstat, Some(0), [fd, 0, 0, 0, 0, 0]), EBADF);
        assert_eq!(f.call(OP_FD_PATH, Some(0), [fd, 0, 64, 0, 0, 0]), EBADF);
    }
    // Second descriptor slot of a two-descriptor call.
    let a = f.open_file("a");
    assert_eq!(
        f.call(
            libc::SYS_copy_file_range,
            None,
            [a, NULL_ARG, DOMAIN_FD_LIMIT, NULL_ARG, 1, 0]
        ),
        EBADF
    );
    // DirFd: AT_FDCWD is fine, the limit is not.
    let off = f.path(1, 0, "a");
    assert_eq!(
        f.call(
            libc::SYS_openat,
            Some(1),
            [DOMAIN_FD_LIMIT, off, libc::O_RDONLY as u64, 0, 0, 0]
        ),
        EBADF
    );
    let fd = f.call(
        libc::SYS_openat,
        Some(1),
        [AT_FDCWD_ARG, off, libc::O_RDONLY as u64, 0, 0, 0],
    );
    assert!(fd >= 0);
    f.close(fd as u64);
    f.close(a);
}

#[test]
fn out_of_range_buffers_are_efault() {
    let f = Fixture::new("efault");
    let fd = f.open_file("buf");
    let cs = CHUNK_SIZE as u64;
    let read = |chunk: Option<u16>, off: u64, len: u64| {
        f.call(libc::SYS_read, chunk, [fd, off, len, 0, 0, 0])
    };
    assert_eq!(read(Some(0), cs - 10, 20), EFAULT, "crosses the chunk end");
    assert_eq!(read(Some(0), 0, cs + 1), EFAULT, "longer than a chunk");
    assert_eq!(read(Some(0), u64::MAX, 2), EFAULT, "offset overflow");
    assert_eq!(read(Some(0), 1, u64::MAX), EFAULT, "length overflow");
    assert_eq!(read(Some(NUM_CHUNKS as u16), 0, 1), EFAULT, "no such chunk");
    assert_eq!(read(Some(u16::MAX), 0, 1), EFAULT);
    assert_eq!(read(None, 0, 1), EFAULT, "pointer without a chunk");
    assert_eq!(
        read(Some(0), NULL_ARG, 1),
        EFAULT,
        "NULL is not allowed here"
    );
    assert_eq!(
        read(Some(0), cs - 1, 1),
        0,
        "last byte is fine (empty file)"
    );
    // Fixed-size output struct that does not fit.
    assert_eq!(
        f.call(libc::SYS_fstat, Some(0), [fd, cs - 100, 0, 0, 0, 0]),
        EFAULT
    );
    assert_eq!(f.call(libc::SYS_fstat, None, [fd, 0, 0, 0, 0, 0]), EFAULT);
    // Virtual op with a buffer.
    assert_eq!(f.call(OP_FD_PATH, Some(0), [fd, cs, 1, 0, 0, 0]), EFAULT);
    assert_eq!(f.call(OP_FD_PATH, None, [fd, 0, 1, 0, 0, 0]), EFAULT);
    f.close(fd);
}

#[test]
fn strings_must_end_inside_the_chunk() {
    let f = Fixture::new("nul");
    let last = NUM_CHUNKS as u16 - 1;
    let tail = vec![b'a'; 64];
    let off = CHUNK_SIZE as u64 - tail.len() as u64;
    assert!(f.region.write_chunk(last, off, &tail));
    let open = |chunk, off| {
        f.call(
            libc::SYS_openat,
            chunk,
            [AT_FDCWD_ARG, off, libc::O_RDONLY as u64, 0, 0, 0],
        )
    };
    assert_eq!(open(Some(last), off), EFAULT, "no NUL before the chunk end");
    assert_eq!(
        open(Some(last), CHUNK_SIZE as u64),
        EFAULT,
        "offset at the end"
    );
    assert_eq!(open(Some(last), u64::MAX), EFAULT);
    assert_eq!(open(None, 0), EFAULT);
    // Longer than MAX_STRING, though terminated inside the chunk.
    let long = vec![b'b'; MAX_STRING + 10];
    assert!(f.region.write_chunk(2, 0, &long));
    assert!(f.region.write_chunk(2, long.len() as u64, b"\0"));
    assert_eq!(open(Some(2), 0), EFAULT);
    // Second path of a two-path call.
    let a = f.path(3, 0, "x");
    assert!(f.region.write_chunk(3, CHUNK_SIZE as u64 - 4, b"zzzz"));
    assert_eq!(
        f.call(
            libc::SYS_renameat,
            Some(3),
            [AT_FDCWD_ARG, a, AT_FDCWD_ARG, CHUNK_SIZE as u64 - 4, 0, 0]
        ),
        EFAULT
    );
    // A proper string is accepted (ENOENT from the kernel, not EFAULT).
    let p = f.path(4, 8, "missing");
    assert_eq!(open(Some(4), p), -(libc::ENOENT as i64));
}

#[test]
fn fcntl_and_ioctl_commands_are_checked() {
    let f = Fixture::new("fcntl");
    let fd = f.open_file("f");
    let fcntl = |cmd: u64, arg: u64| f.call(libc::SYS_fcntl, Some(0), [fd, cmd, arg, 0, 0, 0]);
    // Handled by the client's descriptor table, never forwarded.
    for cmd in [
        libc::F_DUPFD,
        libc::F_DUPFD_CLOEXEC,
        libc::F_GETFD,
        libc::F_SETFD,
        9999,
    ] {
        assert_eq!(fcntl(cmd as u64, 0), EINVAL, "fcntl cmd {cmd}");
    }
    let fl = fcntl(libc::F_GETFL as u64, 0);
    assert!(fl >= 0 && fl & libc::O_RDWR as i64 != 0);
    // Upper bits are dropped before checking, as the kernel does.
    assert_eq!(fcntl((1 << 40) | libc::F_GETFL as u64, 0), fl);
    assert_eq!(fcntl((1 << 40) | libc::F_DUPFD as u64, 0), EINVAL);
    // F_GETLK: struct flock in the chunk, bounds-checked.
    assert_eq!(fcntl(libc::F_GETLK as u64, CHUNK_SIZE as u64 - 8), EFAULT);
    let mut lk = [0u8; 32];
    lk[0..2].copy_from_slice(&(libc::F_WRLCK as i16).to_ne_bytes());
    assert!(f.region.write_chunk(0, 1024, &lk));
    assert_eq!(fcntl(libc::F_GETLK as u64, 1024), 0);
    assert!(f.region.read_chunk(0, 1024, &mut lk));
    assert_eq!(i16::from_ne_bytes([lk[0], lk[1]]), libc::F_UNLCK as i16);

    let ioctl = |req: u64, arg: u64| f.call(libc::SYS_ioctl, Some(0), [fd, req, arg, 0, 0, 0]);
    assert_eq!(ioctl(0x5402 /* TCSETS */, 0), ENOTTY);
    assert_eq!(ioctl(0x0000_6601 /* _IO, no size */, 0), ENOTTY);
    assert_eq!(ioctl(libc::FIONREAD, CHUNK_SIZE as u64), EFAULT);
    assert_eq!(ioctl(libc::FIONREAD, 0), 0, "FIONREAD on a regular file");
    f.close(fd);
}

#[test]
fn file_calls_work_through_the_chunk() {
    let f = Fixture::new("io");
    let fd = f.open_file("data");
    assert!(f.region.write_chunk(5, 100, b"hello domain"));
    assert_eq!(f.call(libc::SYS_write, Some(5), [fd, 100, 12, 0, 0, 0]), 12);
    assert_eq!(f.call(libc::SYS_fsync, None, [fd, 0, 0, 0, 0, 0]), 0);
    assert_eq!(f.call(libc::SYS_pread64, Some(6), [fd, 0, 64, 6, 0, 0]), 6);
    let mut got = [0u8; 6];
    assert!(f.region.read_chunk(6, 0, &mut got));
    assert_eq!(&got, b"domain");
    assert_eq!(f.call(libc::SYS_fstat, Some(7), [fd, 8, 0, 0, 0, 0]), 0);
    let mut st = [0u8; 144];
    assert!(f.region.read_chunk(7, 8, &mut st));
    let size = i64::from_ne_bytes(st[48..56].try_into().unwrap());
    assert_eq!(size, 12, "st_size");
    // Optional pointers may be NULL: utimensat(fd, NULL, NULL, 0).
    assert_eq!(
        f.call(
            libc::SYS_utimensat,
            Some(0),
            [fd, NULL_ARG, NULL_ARG, 0, 0, 0]
        ),
        0
    );
    // OP_FD_PATH names the file.
    let n = f.call(OP_FD_PATH, Some(8), [fd, 0, 4096, 0, 0, 0]);
    assert!(n > 0, "fd path: {n}");
    let mut name = vec![0u8; n as usize];
    assert!(f.region.read_chunk(8, 0, &mut name));
    assert_eq!(
        std::path::Path::new(std::str::from_utf8(&name).unwrap()),
        f.dir.join("data")
    );
    f.close(fd);
    assert_eq!(f.call(libc::SYS_close, None, [fd, 0, 0, 0, 0, 0]), EBADF);
}

#[test]
fn virtual_ops_reach_the_host() {
    let f = Fixture::new("virt");
    assert_eq!(f.call(OP_PING, None, [0; 6]), 0);
    assert_eq!(f.call(OP_FORK_PREPARE, None, [0; 6]), 4242);
    assert_eq!(f.call(OP_FORK_ABORT, None, [4242, 0, 0, 0, 0, 0]), 0);
    assert_eq!(
        f.call(OP_FORK_ABORT, None, [1, 0, 0, 0, 0, 0]),
        -(libc::ESRCH as i64)
    );
}

fn arb_slot() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..16,
        (0u64..CHUNK_SIZE as u64 + 16),
        Just(NULL_ARG),
        Just(AT_FDCWD_ARG),
        Just(DOMAIN_FD_LIMIT),
        (CHUNK_SIZE as u64 - 300)..(CHUNK_SIZE as u64 + 300),
        any::<u64>(),
    ]
}

proptest! {
    /// Whatever the client sends, marshalling never panics, and every
    /// pointer it produces lies inside the call's chunk (for its whole
    /// length) or in a private string buffer.
    #[test]
    fn marshalled_pointers_stay_in_the_chunk(
        nr in 0u16..460,
        chunk in prop_oneof![Just(None), (0u16..NUM_CHUNKS as u16 + 2).prop_map(Some)],
        args in proptest::array::uniform6(arb_slot()),
        fill in any::<u8>(),
    ) {
        let Some(sh) = shape(nr) else { return Ok(()) };
        let fd = create_memfd("prop", REGION_SIZE).unwrap();
        let region = ClientRegion::map(&fd).unwrap();
        region.init();
        if let Some(c) = chunk {
            // Sprinkle NULs (or none) into the chunk's tail.
            let tail = vec![fill; 512];
            region.write_chunk(c, CHUNK_SIZE as u64 - 512, &tail);
        }
        let mut strings = Strings::default();
        if let Ok(raw) = marshal(&region, DOMAIN_FD_LIMIT, chunk, &sh, &args, &mut strings) {
            for (i, kind) in sh.iter().enumerate() {
                let (len, is_string) = match *kind {
                    Arg::InBuf(n) | Arg::OutBuf(n) => (args[n as usize], false),
                    Arg::In(s) | Arg::OptIn(s) | Arg::Out(s) | Arg::InOut(s) | Arg::OptInOut(s) => (s as u64, false),
                    Arg::Path | Arg::OptPath | Arg::Str => (0, true),
                    Arg::Fd => { prop_assert!(raw[i] < DOMAIN_FD_LIMIT); continue }
                    Arg::DirFd => { prop_assert!(raw[i] < DOMAIN_FD_LIMIT || raw[i] == AT_FDCWD_ARG); continue }
                    _ => continue,
                };
                if kind.nullable() && args[i] == NULL_ARG {
                    prop_assert_eq!(raw[i], 0);
                    continue;
                }
                if is_string {
                    continue; // private copies
                }
                let c = chunk.unwrap();
                let start = region.base() as u64 + virtuos_abi::DATA_OFFSET as u64 + c as u64 * CHUNK_SIZE as u64;
                prop_assert!(raw[i] >= start && raw[i] + len <= start + CHUNK_SIZE as u64);
            }
        }
    }
}
