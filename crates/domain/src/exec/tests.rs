//! The executor against a hostile client: every bad request fails with the
//! right errno and nothing crashes.

use super::{execute, Host};
use crate::role::Role;
use proptest::prelude::*;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use virtuos_abi::decode::{marshal, Strings};
use virtuos_abi::entry::Request;
use virtuos_abi::mapping::create_memfd;
use virtuos_abi::ops::{
    OP_FDINFO_OPEN, OP_FD_LINK, OP_FD_PATH, OP_FORK_ABORT, OP_FORK_PREPARE, OP_PING,
};
use virtuos_abi::shape::{shape, Arg, MAX_STRING};
use virtuos_abi::{
    ClientRegion, AT_FDCWD_ARG, CHUNK_SIZE, DOMAIN_FD_LIMIT, NULL_ARG, NUM_CHUNKS, REGION_SIZE,
};

struct FakeHost {
    proc_: OwnedFd,
    role: Role,
}

impl Host for FakeHost {
    fn role(&self) -> Role {
        self.role
    }
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
            host: FakeHost {
                proc_,
                role: Role::Storage,
            },
            dir,
        }
    }

    fn network(name: &str) -> Fixture {
        let mut f = Fixture::new(name);
        f.host.role = Role::Network;
        f
    }

    fn call(&self, op: impl Into<i64>, chunk: Option<u16>, args: [u64; 6]) -> i64 {
        self.call_extra(op, chunk, args).0
    }

    fn call_extra(&self, op: impl Into<i64>, chunk: Option<u16>, args: [u64; 6]) -> (i64, u64) {
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
    // Signals for I/O readiness, and F_CREATED_QUERY (the fixture's open
    // created the file; kernels before 6.12 do not know the command).
    assert_eq!(fcntl(10 /* F_SETSIG */, libc::SIGUSR1 as u64), 0);
    assert_eq!(fcntl(11 /* F_GETSIG */, 0), libc::SIGUSR1 as i64);
    assert_eq!(fcntl(10 /* F_SETSIG */, 100), EINVAL);
    let created = fcntl(virtuos_abi::shape::F_CREATED_QUERY as u64, 0);
    assert!(
        created == 1 || created == EINVAL,
        "F_CREATED_QUERY: {created}"
    );

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

mod sockets {
    use super::*;
    use virtuos_abi::ops::msg::{unpack_recv_extra, CONTROL_OFF, DATA_OFF, NAME_OFF};
    use virtuos_abi::ops::{OP_RECVMSG, OP_SENDMSG};
    use virtuos_abi::shape::{SOCKADDR, SOCKOPT};

    const EAFNOSUPPORT: i64 = -(libc::EAFNOSUPPORT as i64);

    fn sockaddr_in(port: u16) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        a[2..4].copy_from_slice(&port.to_be_bytes());
        a[4..8].copy_from_slice(&[127, 0, 0, 1]);
        a
    }

    impl Fixture {
        fn socket(&self, ty: i32) -> u64 {
            let fd = self.call(
                libc::SYS_socket,
                None,
                [
                    libc::AF_INET as u64,
                    (ty | libc::SOCK_CLOEXEC) as u64,
                    0,
                    0,
                    0,
                    0,
                ],
            );
            assert!(fd >= 0, "socket: {fd}");
            fd as u64
        }

        fn put_u32(&self, chunk: u16, off: u64, v: u32) {
            assert!(self.region.write_chunk(chunk, off, &v.to_ne_bytes()));
        }

        fn get_u32(&self, chunk: u16, off: u64) -> u32 {
            let mut b = [0u8; 4];
            assert!(self.region.read_chunk(chunk, off, &mut b));
            u32::from_ne_bytes(b)
        }

        /// A UDP socket bound to 127.0.0.1 on an ephemeral port: (fd, port).
        fn udp_bound(&self) -> (u64, u16) {
            let fd = self.socket(libc::SOCK_DGRAM);
            assert!(self.region.write_chunk(1, 0, &sockaddr_in(0)));
            assert_eq!(self.call(libc::SYS_bind, Some(1), [fd, 0, 16, 0, 0, 0]), 0);
            self.put_u32(1, 256, 16);
            assert_eq!(
                self.call(libc::SYS_getsockname, Some(1), [fd, 128, 256, 0, 0, 0]),
                0
            );
            let mut a = [0u8; 16];
            assert!(self.region.read_chunk(1, 128, &mut a));
            (fd, u16::from_be_bytes([a[2], a[3]]))
        }
    }

    #[test]
    fn roles_filter_families() {
        let storage = Fixture::new("role-storage");
        // Only Unix sockets: no internet, netlink or packet sockets.
        for family in [
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
            libc::AF_PACKET,
        ] {
            let sock = [family as u64, libc::SOCK_DGRAM as u64, 0, 0, 0, 0];
            assert_eq!(storage.call(libc::SYS_socket, None, sock), EAFNOSUPPORT);
        }
        let fd = storage.open_file("f");
        storage.close(fd);

        let net = Fixture::network("role-network");
        let off = net.path(0, 0, "g");
        let flags = (libc::O_CREAT | libc::O_RDWR) as u64;
        assert_eq!(
            net.call(
                libc::SYS_openat,
                Some(0),
                [AT_FDCWD_ARG, off, flags, 0o600, 0, 0]
            ),
            ENOSYS
        );
        assert!(
            !net.dir.join("g").exists(),
            "the network domain opened a file"
        );
        assert_eq!(
            net.call(libc::SYS_mkdir, Some(0), [off, 0o700, 0, 0, 0, 0]),
            ENOSYS
        );
        assert_eq!(net.call(OP_PING, None, [0; 6]), 0);
        let s = net.socket(libc::SOCK_STREAM);
        net.close(s);
        // Only internet sockets: no netlink, no Unix sockets.
        for family in [libc::AF_UNIX, libc::AF_NETLINK, libc::AF_PACKET] {
            let args = [family as u64, libc::SOCK_DGRAM as u64, 0, 0, 0, 0];
            assert_eq!(net.call(libc::SYS_socket, None, args), EAFNOSUPPORT);
        }
    }

    fn sockaddr_un(path: &[u8]) -> Vec<u8> {
        let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(path);
        a.push(0);
        a
    }

    #[test]
    fn storage_unix_sockets_take_paths_only() {
        let f = Fixture::new("unix");
        let unix = |ty: i32| {
            let args = [
                libc::AF_UNIX as u64,
                (ty | libc::SOCK_CLOEXEC) as u64,
                0,
                0,
                0,
                0,
            ];
            let fd = f.call(libc::SYS_socket, None, args);
            assert!(fd >= 0, "socket: {fd}");
            fd as u64
        };
        let s = unix(libc::SOCK_DGRAM);
        let put = |a: &[u8]| {
            assert!(f.region.write_chunk(1, 0, a));
            a.len() as u64
        };
        // Abstract, autobind, foreign families and oversized addresses are
        // refused before the kernel sees them.
        let abs = put(&sockaddr_un(b"\0abstract"));
        assert_eq!(
            f.call(libc::SYS_bind, Some(1), [s, 0, abs, 0, 0, 0]),
            EINVAL
        );
        assert_eq!(f.call(libc::SYS_bind, Some(1), [s, 0, 2, 0, 0, 0]), EINVAL);
        assert_eq!(
            f.call(libc::SYS_connect, Some(1), [s, 0, 1, 0, 0, 0]),
            EINVAL
        );
        let inet = put(&sockaddr_in(0));
        assert_eq!(
            f.call(libc::SYS_bind, Some(1), [s, 0, inet, 0, 0, 0]),
            EAFNOSUPPORT
        );
        let mut long = sockaddr_un(&[b'a'; 120]);
        long.truncate(128);
        let n = put(&long);
        assert_eq!(f.call(libc::SYS_bind, Some(1), [s, 0, n, 0, 0, 0]), EINVAL);
        assert_eq!(
            f.call(libc::SYS_bind, Some(1), [s, 0, 129, 0, 0, 0]),
            EINVAL
        );
        // A path binds: the socket file is in the domain's file system.
        let path = f.dir.join("s.sock");
        let n = put(&sockaddr_un(path.as_os_str().as_encoded_bytes()));
        assert_eq!(f.call(libc::SYS_bind, Some(1), [s, 0, n, 0, 0, 0]), 0);
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket());
        // sendto the bound path from a second socket, recvfrom it.
        let c = unix(libc::SOCK_DGRAM);
        assert!(f.region.write_chunk(2, 0, b"ping"));
        assert!(f
            .region
            .write_chunk(2, 8, &sockaddr_un(path.as_os_str().as_encoded_bytes())));
        assert_eq!(f.call(libc::SYS_sendto, Some(2), [c, 0, 4, 0, 8, n]), 4);
        assert_eq!(
            f.call(
                libc::SYS_recvfrom,
                Some(3),
                [s, 0, 16, 0, NULL_ARG, NULL_ARG]
            ),
            4
        );
        // Connected: an address of length 0 is no address (natively too).
        assert!(f
            .region
            .write_chunk(1, 0, &sockaddr_un(path.as_os_str().as_encoded_bytes())));
        assert_eq!(f.call(libc::SYS_connect, Some(1), [c, 0, n, 0, 0, 0]), 0);
        assert_eq!(f.call(libc::SYS_sendto, Some(2), [c, 0, 4, 0, 8, 0]), 4);
        assert_eq!(
            f.call(
                libc::SYS_recvfrom,
                Some(3),
                [s, 0, 16, 0, NULL_ARG, NULL_ARG]
            ),
            4
        );
        // ... and not to an abstract name through OP_SENDMSG.
        assert!(f.region.write_chunk(2, NAME_OFF as u64, &[1, 0, 0, b'x']));
        assert_eq!(f.call(OP_SENDMSG, Some(2), [c, 0, 4, 0, 0, 0]), EINVAL);
        // Options that carry pointers are refused.
        let filter = [
            s,
            libc::SOL_SOCKET as u64,
            libc::SO_ATTACH_FILTER as u64,
            0,
            16,
            0,
        ];
        assert_eq!(
            f.call(libc::SYS_setsockopt, Some(2), filter),
            -(libc::ENOPROTOOPT as i64)
        );
        f.put_u32(2, 0, 1);
        let cred = [
            s,
            libc::SOL_SOCKET as u64,
            libc::SO_PASSCRED as u64,
            0,
            4,
            0,
        ];
        assert_eq!(f.call(libc::SYS_setsockopt, Some(2), cred), 0);
        f.close(s);
        f.close(c);
    }

    #[test]
    fn network_setsockopt_is_an_allow_list() {
        let f = Fixture::network("sockopt-net");
        let s = f.socket(libc::SOCK_STREAM);
        let set = |level: i32, name: i32, len: u64| {
            f.call(
                libc::SYS_setsockopt,
                Some(2),
                [s, level as u64, name as u64, 0, len, 0],
            )
        };
        f.put_u32(2, 0, 1);
        for (level, name) in [
            (libc::SOL_SOCKET, libc::SO_REUSEADDR),
            (libc::SOL_SOCKET, libc::SO_REUSEPORT),
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
            (libc::IPPROTO_TCP, libc::TCP_NODELAY),
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
            (libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT),
            (libc::IPPROTO_IP, libc::IP_TOS),
        ] {
            assert_eq!(set(level, name, 4), 0, "{level}/{name}");
        }
        // Values with pointers, descriptors or kernel code are refused
        // before the kernel sees them.
        for (level, name) in [
            (libc::SOL_SOCKET, libc::SO_ATTACH_FILTER),
            (libc::SOL_SOCKET, libc::SO_ATTACH_BPF),
            (libc::SOL_SOCKET, libc::SO_ATTACH_REUSEPORT_CBPF),
            (libc::IPPROTO_TCP, libc::TCP_ULP),
            (libc::IPPROTO_IP, libc::IP_IPSEC_POLICY),
            (libc::IPPROTO_IPV6, libc::IPV6_XFRM_POLICY),
            (libc::SOL_TLS, 1),
        ] {
            assert_eq!(
                set(level, name, 16),
                -(libc::ENOPROTOOPT as i64),
                "{level}/{name}"
            );
        }
        f.close(s);
    }

    #[test]
    fn lying_lengths_are_clamped() {
        let f = Fixture::network("clamp");
        let (fd, port) = f.udp_bound();
        assert_ne!(port, 0);
        // getsockopt with *optlen far beyond the option room: clamped to
        // SOCKOPT before the call (the kernel then writes 4 bytes).
        f.put_u32(2, 2048, u32::MAX);
        let args = [
            fd,
            libc::SOL_SOCKET as u64,
            libc::SO_TYPE as u64,
            0,
            2048,
            0,
        ];
        assert_eq!(f.call(libc::SYS_getsockopt, Some(2), args), 0);
        assert_eq!(f.get_u32(2, 2048), 4);
        assert_eq!(f.get_u32(2, 0), libc::SOCK_DGRAM as u32);
        // Clamping is visible before the call too: a failing call leaves the
        // clamped value.
        f.put_u32(2, 2048, 1 << 30);
        let bad = [fd, 9999, 9999, 0, 2048, 0];
        assert!(f.call(libc::SYS_getsockopt, Some(2), bad) < 0);
        assert_eq!(f.get_u32(2, 2048), SOCKOPT as u32);
        // getsockname with a huge *addrlen: the kernel sees at most SOCKADDR
        // and writes only the real address; bytes past the struct room stay.
        let tail = CHUNK_SIZE as u64 - SOCKADDR as u64;
        assert!(f.region.write_chunk(3, tail - 8, &[0xaa; 8]));
        f.put_u32(3, 0, 0x7fff_ffff);
        assert_eq!(
            f.call(libc::SYS_getsockname, Some(3), [fd, tail, 0, 0, 0, 0]),
            0
        );
        assert_eq!(f.get_u32(3, 0), 16);
        let mut guard = [0u8; 8];
        assert!(f.region.read_chunk(3, tail - 8, &mut guard));
        assert_eq!(guard, [0xaa; 8]);
        // The struct itself must fit in the chunk.
        assert_eq!(
            f.call(libc::SYS_getsockname, Some(3), [fd, tail + 1, 0, 0, 0, 0]),
            EFAULT
        );
        // recvfrom's optional length (slot 5) is clamped too; NULL is fine.
        let (peer, _) = f.udp_bound();
        assert!(f.region.write_chunk(4, 0, b"ping"));
        assert!(f.region.write_chunk(4, 64, &sockaddr_in(port)));
        let sent = f.call(libc::SYS_sendto, Some(4), [peer, 0, 4, 0, 64, 16]);
        assert_eq!(sent, 4);
        f.put_u32(4, 512, 5000);
        let got = f.call(libc::SYS_recvfrom, Some(4), [fd, 1024, 64, 0, 256, 512]);
        assert_eq!(got, 4);
        assert_eq!(f.get_u32(4, 512), 16);
        assert_eq!(
            f.call(libc::SYS_sendto, Some(4), [peer, 0, 4, 0, 64, 16]),
            4
        );
        let got = f.call(
            libc::SYS_recvfrom,
            Some(4),
            [fd, 1024, 64, 0, NULL_ARG, NULL_ARG],
        );
        assert_eq!(got, 4);
        f.close(fd);
        f.close(peer);
    }

    /// One cmsghdr with `payload`.
    fn cmsg(level: i32, ty: i32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((16 + payload.len()) as u64).to_ne_bytes());
        v.extend_from_slice(&level.to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(v.len().div_ceil(8) * 8, 0);
        v
    }

    #[test]
    fn sendmsg_refuses_descriptors_and_recvmsg_layout() {
        let f = Fixture::network("msg");
        let (a, port_a) = f.udp_bound();
        let (b, _) = f.udp_bound();
        // On a real descriptor: refused before the kernel sees it.
        let rights = cmsg(libc::SOL_SOCKET, libc::SCM_RIGHTS, &0i32.to_ne_bytes());
        let creds = cmsg(libc::SOL_SOCKET, libc::SCM_CREDENTIALS, &[0u8; 12]);
        assert!(f
            .region
            .write_chunk(5, NAME_OFF as u64, &sockaddr_in(port_a)));
        assert!(f.region.write_chunk(5, DATA_OFF as u64, b"hello"));
        for bad in [&rights, &creds] {
            assert!(f.region.write_chunk(5, CONTROL_OFF as u64, bad));
            let args = [b, 0, 16, bad.len() as u64, 5, 0];
            assert_eq!(f.call(OP_SENDMSG, Some(5), args), EINVAL);
        }
        // Hidden behind an allowed message, too.
        let mut two = cmsg(libc::IPPROTO_IP, libc::IP_TOS, &[0x10, 0, 0, 0]);
        two.extend_from_slice(&rights);
        assert!(f.region.write_chunk(5, CONTROL_OFF as u64, &two));
        assert_eq!(
            f.call(OP_SENDMSG, Some(5), [b, 0, 16, two.len() as u64, 5, 0]),
            EINVAL
        );
        // A malformed header is EINVAL, oversize lengths are EINVAL, a bad
        // descriptor EBADF.
        let mut short = rights.clone();
        short[0..8].copy_from_slice(&4u64.to_ne_bytes());
        assert!(f.region.write_chunk(5, CONTROL_OFF as u64, &short));
        assert_eq!(
            f.call(OP_SENDMSG, Some(5), [b, 0, 16, short.len() as u64, 5, 0]),
            EINVAL
        );
        assert_eq!(f.call(OP_SENDMSG, Some(5), [b, 0, 129, 0, 5, 0]), EINVAL);
        assert_eq!(
            f.call(OP_SENDMSG, Some(5), [b, 0, 16, 0, CHUNK_SIZE as u64, 0]),
            EINVAL
        );
        assert_eq!(
            f.call(OP_SENDMSG, Some(5), [DOMAIN_FD_LIMIT, 0, 16, 0, 5, 0]),
            EBADF
        );
        assert_eq!(f.call(OP_SENDMSG, None, [b, 0, 16, 0, 5, 0]), EFAULT);

        // An allowed control message goes through.
        let tos = cmsg(libc::IPPROTO_IP, libc::IP_TOS, &[0x10, 0, 0, 0]);
        assert!(f.region.write_chunk(5, CONTROL_OFF as u64, &tos));
        assert_eq!(
            f.call(OP_SENDMSG, Some(5), [b, 0, 16, tos.len() as u64, 5, 0]),
            5
        );
        // recvmsg with IP_RECVTOS: name, control and data at their offsets.
        f.put_u32(6, 0, 1);
        let on = [a, libc::IPPROTO_IP as u64, libc::IP_RECVTOS as u64, 0, 4, 0];
        assert_eq!(f.call(libc::SYS_setsockopt, Some(6), on), 0);
        assert!(f.region.write_chunk(5, CONTROL_OFF as u64, &tos));
        assert_eq!(
            f.call(OP_SENDMSG, Some(5), [b, 0, 16, tos.len() as u64, 5, 0]),
            5
        );
        // Drain the first datagram (sent before IP_RECVTOS) without control.
        let (n, extra) = f.call_extra(OP_RECVMSG, Some(7), [a, 0, 128, 0, 64, 0]);
        assert_eq!(n, 5);
        let (namelen, controllen, _) = unpack_recv_extra(extra);
        assert_eq!((namelen, controllen), (16, 0));
        let (n, extra) = f.call_extra(OP_RECVMSG, Some(7), [a, 0, 128, 256, 64, 0]);
        assert_eq!(n, 5, "bytes");
        let (namelen, controllen, flags) = unpack_recv_extra(extra);
        assert_eq!(namelen, 16);
        assert_eq!(flags & libc::MSG_TRUNC as u32, 0);
        let mut data = [0u8; 5];
        assert!(f.region.read_chunk(7, DATA_OFF as u64, &mut data));
        assert_eq!(&data, b"hello");
        let mut name = [0u8; 16];
        assert!(f.region.read_chunk(7, NAME_OFF as u64, &mut name));
        assert_eq!(u16::from_ne_bytes([name[0], name[1]]), libc::AF_INET as u16);
        assert_eq!(&name[4..8], &[127, 0, 0, 1]);
        assert!(controllen >= 16, "IP_TOS control message: {controllen}");
        let mut ctl = vec![0u8; controllen as usize];
        assert!(f.region.read_chunk(7, CONTROL_OFF as u64, &mut ctl));
        let level = i32::from_ne_bytes(ctl[8..12].try_into().unwrap());
        let ty = i32::from_ne_bytes(ctl[12..16].try_into().unwrap());
        assert_eq!((level, ty), (libc::IPPROTO_IP, libc::IP_TOS));
        assert_eq!(ctl[16], 0x10);
        // Truncation is reported in msg_flags.
        assert!(f.region.write_chunk(5, DATA_OFF as u64, b"0123456789"));
        assert_eq!(f.call(OP_SENDMSG, Some(5), [b, 0, 16, 0, 10, 0]), 10);
        let (n, extra) = f.call_extra(OP_RECVMSG, Some(7), [a, 0, 0, 0, 4, 0]);
        assert_eq!(n, 4);
        let (namelen, _, flags) = unpack_recv_extra(extra);
        assert_eq!(namelen, 0);
        assert_ne!(flags & libc::MSG_TRUNC as u32, 0);
        // Nothing left: MSG_DONTWAIT gives EAGAIN.
        let (n, _) = f.call_extra(
            OP_RECVMSG,
            Some(7),
            [a, libc::MSG_DONTWAIT as u64, 128, 0, 64, 0],
        );
        assert_eq!(n, -(libc::EAGAIN as i64));
        f.close(a);
        f.close(b);
    }

    #[test]
    fn received_descriptors_are_dropped() {
        use super::super::msg::filter_recv_control;
        let memfd = create_memfd("passed", 4096).unwrap();
        let raw = rustix::fd::IntoRawFd::into_raw_fd(memfd);
        let mut buf = cmsg(libc::SOL_SOCKET, libc::SCM_RIGHTS, &raw.to_ne_bytes());
        let tos = cmsg(libc::IPPROTO_IP, libc::IP_TOS, &[7, 0, 0, 0]);
        buf.extend_from_slice(&tos);
        buf.extend_from_slice(&cmsg(libc::SOL_SOCKET, libc::SCM_CREDENTIALS, &[0; 12]));
        let kept = filter_recv_control(&buf);
        assert_eq!(kept, tos);
        // (Another test thread may reuse the number, but not for this memfd.)
        let link = std::fs::read_link(format!("/proc/self/fd/{raw}"));
        assert!(
            !link.is_ok_and(|l| l.to_string_lossy().contains("memfd:passed")),
            "the received descriptor must be closed"
        );
    }
}

#[test]
fn fd_link_names_a_tmpfile_and_checks_its_arguments() {
    let f = Fixture::new("fdlink");
    let off = f.path(0, 0, "");
    let flags = (libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC) as u64;
    let fd = f.call(
        libc::SYS_openat,
        Some(0),
        [AT_FDCWD_ARG, off, flags, 0o600, 0, 0],
    );
    assert!(fd >= 0, "O_TMPFILE: {fd}");
    let fd = fd as u64;
    let name = f.path(1, 0, "named");
    assert_eq!(
        f.call(OP_FD_LINK, Some(1), [fd, AT_FDCWD_ARG, name, 0, 0, 0]),
        0
    );
    assert!(f.dir.join("named").exists());
    assert_eq!(
        f.call(OP_FD_LINK, Some(1), [fd, AT_FDCWD_ARG, name, 0, 0, 0]),
        -(libc::EEXIST as i64)
    );
    // Descriptors of the shadow's own range, a path outside the chunk, no
    // chunk at all.
    assert_eq!(
        f.call(
            OP_FD_LINK,
            Some(1),
            [DOMAIN_FD_LIMIT, AT_FDCWD_ARG, name, 0, 0, 0]
        ),
        EBADF
    );
    assert_eq!(
        f.call(OP_FD_LINK, Some(1), [fd, DOMAIN_FD_LIMIT, name, 0, 0, 0]),
        EBADF
    );
    assert_eq!(
        f.call(
            OP_FD_LINK,
            Some(1),
            [fd, AT_FDCWD_ARG, CHUNK_SIZE as u64, 0, 0, 0]
        ),
        EFAULT
    );
    assert_eq!(
        f.call(OP_FD_LINK, None, [fd, AT_FDCWD_ARG, 0, 0, 0, 0]),
        EFAULT
    );
    f.close(fd);
    // Only a storage domain links files.
    let n = Fixture::network("fdlink-net");
    assert_eq!(
        n.call(OP_FD_LINK, Some(1), [0, AT_FDCWD_ARG, 0, 0, 0, 0]),
        -(libc::ENOSYS as i64)
    );
}

#[test]
fn fdinfo_open_reads_the_shadows_own_fdinfo() {
    let f = Fixture::new("fdinfo");
    let fd = f.open_file("data");
    let info = f.call(
        OP_FDINFO_OPEN,
        None,
        [fd, libc::O_RDONLY as u64, 0, 0, 0, 0],
    );
    assert!(info >= 0, "fdinfo: {info}");
    assert!(f.call(libc::SYS_read, Some(2), [info as u64, 0, 64, 0, 0, 0]) > 0);
    let mut got = [0u8; 4];
    assert!(f.region.read_chunk(2, 0, &mut got));
    assert_eq!(&got, b"pos:");
    f.close(info as u64);
    // Never about (or handing out) the shadow's own descriptors.
    assert_eq!(
        f.call(OP_FDINFO_OPEN, None, [DOMAIN_FD_LIMIT, 0, 0, 0, 0, 0]),
        -(libc::ENOENT as i64)
    );
    f.close(fd);
}

#[test]
fn running_images_refuse_writes_and_truncation() {
    use std::os::unix::fs::MetadataExt;
    crate::images::init().unwrap();
    let f = Fixture::new("txtbsy");
    let fd = f.open_file("prog");
    f.close(fd);
    let meta = std::fs::metadata(f.dir.join("prog")).unwrap();
    let h = crate::images::register(meta.dev(), meta.ino()).unwrap();
    const ETXTBSY: i64 = -(libc::ETXTBSY as i64);
    let open = |flags: i32| {
        let off = f.path(0, 0, "prog");
        f.call(
            libc::SYS_openat,
            Some(0),
            [AT_FDCWD_ARG, off, (flags | libc::O_CLOEXEC) as u64, 0, 0, 0],
        )
    };
    assert_eq!(open(libc::O_WRONLY), ETXTBSY);
    assert_eq!(open(libc::O_RDWR), ETXTBSY);
    assert_eq!(open(libc::O_RDONLY | libc::O_TRUNC), ETXTBSY);
    let off = f.path(0, 0, "prog");
    assert_eq!(
        f.call(libc::SYS_truncate, Some(0), [off, 0, 0, 0, 0, 0]),
        ETXTBSY
    );
    for ok in [libc::O_RDONLY, libc::O_PATH | libc::O_WRONLY] {
        let fd = open(ok);
        assert!(fd >= 0, "flags {ok:#x}: {fd}");
        f.close(fd as u64);
    }
    // Another file is not affected.
    let other = f.open_file("other");
    f.close(other);
    crate::images::unregister(h);
    let fd = open(libc::O_WRONLY | libc::O_TRUNC);
    assert!(fd >= 0, "after the image is gone: {fd}");
    f.close(fd as u64);
}
