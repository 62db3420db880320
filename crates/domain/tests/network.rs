//! The network domain end to end (needs root and iproute2): this test plays
//! the daemon and the client, as `domain.rs` does, against
//! `virtuos-domain --role network`. Sockets created through the queue live
//! in the domain's network namespace: a listener on 127.0.0.1 there is not
//! reachable on the host's loopback, but the domain's address on the veth
//! link is.

use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::Duration;
use virtuos_abi::call::{self, WaitPolicy};
use virtuos_abi::control::{self, Credentials, DomainCommand, DomainReply};
use virtuos_abi::mapping::create_memfd;
use virtuos_abi::ops::msg::{unpack_recv_extra, DATA_OFF, NAME_OFF};
use virtuos_abi::ops::{OP_PING, OP_RECVMSG, OP_SENDMSG};
use virtuos_abi::region::StatePage;
use virtuos_abi::{ClientRegion, AT_FDCWD_ARG, REGION_SIZE, STATE_SIZE};

struct Domain {
    child: Child,
    ctl: OwnedFd,
    host_if: String,
    host_addr: Ipv4Addr,
    domain_addr: Ipv4Addr,
}

impl Domain {
    fn start() -> Domain {
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        // A subnet and interface of our own (tests may run in parallel,
        // also in this process).
        let k = pid.wrapping_mul(8).wrapping_add(n);
        let c = 200 + (k % 50) as u8;
        let d = 4 * ((k / 50) % 64) as u8;
        let subnet = format!("169.254.{c}.{d}/30");
        let host_if = format!("vtos-t{}-{}", pid % 1_000_000, n % 10);
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        rustix::net::sockopt::set_socket_timeout(
            &ours,
            rustix::net::sockopt::Timeout::Recv,
            Some(Duration::from_secs(20)),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_virtuos-domain"));
        cmd.args(["--control-fd", "3", "--role", "network", "--net-subnet"])
            .arg(&subnet)
            .args(["--net-host-if", &host_if]);
        let raw = theirs.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only
        // calls dup2, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn virtuos-domain");
        drop(theirs);
        let dom = Domain {
            child,
            ctl: ours,
            host_if,
            host_addr: Ipv4Addr::new(169, 254, c, d + 1),
            domain_addr: Ipv4Addr::new(169, 254, c, d + 2),
        };
        match dom.recv() {
            Some(DomainReply::Ready { .. }) => {}
            other => panic!("expected Ready, got {other:?}"),
        }
        dom
    }

    fn recv(&self) -> Option<DomainReply> {
        control::recv::<DomainReply>(self.ctl.as_fd())
            .expect("recv from domain")
            .map(|(r, _)| r)
    }

    fn cmd(&self, cmd: &DomainCommand, fds: &[BorrowedFd<'_>]) -> DomainReply {
        control::send(self.ctl.as_fd(), cmd, fds).expect("send to domain");
        self.recv().expect("domain closed the control socket")
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client {
    region_fd: OwnedFd,
    state_fd: OwnedFd,
    region: ClientRegion,
    state: StatePage,
}

const POLICY: WaitPolicy = WaitPolicy {
    spin: 1000,
    sleep_slice: Duration::from_millis(50),
    deadline: Some(Duration::from_secs(15)),
};

fn sockaddr_in(ip: Ipv4Addr, port: u16) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    a[2..4].copy_from_slice(&port.to_be_bytes());
    a[4..8].copy_from_slice(&ip.octets());
    a
}

fn parse_sockaddr(a: &[u8]) -> SocketAddrV4 {
    assert_eq!(u16::from_ne_bytes([a[0], a[1]]), libc::AF_INET as u16);
    SocketAddrV4::new(
        Ipv4Addr::new(a[4], a[5], a[6], a[7]),
        u16::from_be_bytes([a[2], a[3]]),
    )
}

impl Client {
    fn new() -> Client {
        let region_fd = create_memfd("net-region", REGION_SIZE).unwrap();
        let state_fd = create_memfd("net-state", STATE_SIZE).unwrap();
        let region = ClientRegion::map(&region_fd).unwrap();
        region.init();
        let state = StatePage::map(&state_fd, false).unwrap();
        Client {
            region_fd,
            state_fd,
            region,
            state,
        }
    }

    /// One call on entry and chunk 0; (result, extra).
    fn call2(&self, op: impl Into<i64>, args: [u64; 6]) -> (i64, u64) {
        let e = self.region.entry(0).unwrap();
        e.fill(op.into() as u16, 0, std::process::id(), Some(0), args);
        call::submit_and_wait(&self.region, self.state.get(), 0, POLICY).expect("call completed")
    }

    fn call(&self, op: impl Into<i64>, args: [u64; 6]) -> i64 {
        self.call2(op, args).0
    }

    fn put(&self, off: u64, data: &[u8]) -> u64 {
        assert!(self.region.write_chunk(0, off, data));
        off
    }

    fn get(&self, off: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        assert!(self.region.read_chunk(0, off, &mut v));
        v
    }

    fn socket(&self, ty: i32) -> u64 {
        let fd = self.call(
            libc::SYS_socket,
            [libc::AF_INET as u64, ty as u64, 0, 0, 0, 0],
        );
        assert!(fd >= 0, "socket: {fd}");
        fd as u64
    }

    fn bind(&self, fd: u64, ip: Ipv4Addr, port: u16) {
        self.put(0, &sockaddr_in(ip, port));
        assert_eq!(self.call(libc::SYS_bind, [fd, 0, 16, 0, 0, 0]), 0, "bind");
    }

    /// getsockname / getpeername.
    fn name(&self, nr: i64, fd: u64) -> SocketAddrV4 {
        self.put(256, &128u32.to_ne_bytes());
        assert_eq!(self.call(nr, [fd, 0, 256, 0, 0, 0]), 0, "get*name");
        let len = u32::from_ne_bytes(self.get(256, 4).try_into().unwrap());
        assert_eq!(len, 16);
        parse_sockaddr(&self.get(0, 16))
    }

    fn send(&self, fd: u64, data: &[u8]) {
        self.put(4096, data);
        let n = self.call(libc::SYS_write, [fd, 4096, data.len() as u64, 0, 0, 0]);
        assert_eq!(n, data.len() as i64, "write");
    }

    fn recv(&self, fd: u64, len: usize) -> Vec<u8> {
        let n = self.call(
            libc::SYS_recvfrom,
            [
                fd,
                8192,
                len as u64,
                libc::MSG_WAITALL as u64,
                u64::MAX,
                u64::MAX,
            ],
        );
        assert!(n >= 0, "recvfrom: {n}");
        self.get(8192, n as usize)
    }

    fn close(&self, fd: u64) {
        assert_eq!(self.call(libc::SYS_close, [fd, 0, 0, 0, 0, 0]), 0);
    }
}

/// Is `port` listening on the host (its network namespace), per /proc/net/tcp?
fn host_listens(port: u16) -> bool {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    tcp.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let local_port = f[1].rsplit(':').next().unwrap();
        f[3] == "0A" && u16::from_str_radix(local_port, 16).unwrap() == port
    })
}

fn host_if_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

#[test]
fn sockets_live_in_the_domains_namespace() {
    let mut dom = Domain::start();
    assert!(
        host_if_exists(&dom.host_if),
        "host side {} missing",
        dom.host_if
    );
    let c = Client::new();
    let r = dom.cmd(
        &DomainCommand::AddClient {
            client_id: 1,
            pid: std::process::id(),
            creds: Credentials::of_user(0, 0, vec![]),
            slot: None,
            nproc: None,
        },
        &[c.region_fd.as_fd(), c.state_fd.as_fd()],
    );
    assert_eq!(r, DomainReply::Ok);
    assert_eq!(c.call(OP_PING, [0; 6]), 0);

    // Files are not served, even as root.
    c.put(0, b"/etc/passwd\0");
    assert_eq!(
        c.call(libc::SYS_openat, [AT_FDCWD_ARG, 0, 0, 0, 0, 0]),
        -(libc::ENOSYS as i64)
    );

    // A TCP listener on the domain's loopback.
    let lo = Ipv4Addr::LOCALHOST;
    let l = c.socket(libc::SOCK_STREAM | libc::SOCK_CLOEXEC);
    c.put(512, &1u32.to_ne_bytes());
    let reuse = [
        l,
        libc::SOL_SOCKET as u64,
        libc::SO_REUSEADDR as u64,
        512,
        4,
        0,
    ];
    assert_eq!(c.call(libc::SYS_setsockopt, reuse), 0);
    c.bind(l, lo, 0);
    assert_eq!(c.call(libc::SYS_listen, [l, 16, 0, 0, 0, 0]), 0);
    let addr = c.name(libc::SYS_getsockname, l);
    assert_eq!(*addr.ip(), lo);
    let port = addr.port();
    assert_ne!(port, 0);

    // Isolation: the host's stack has no such listener.
    assert!(!host_listens(port), "port {port} listens on the host");
    let e = TcpStream::connect_timeout(&SocketAddrV4::new(lo, port).into(), Duration::from_secs(2))
        .expect_err("the domain's listener must not be reachable on the host's loopback");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");

    // Connect a second socket inside the domain, accept, talk both ways.
    let s = c.socket(libc::SOCK_STREAM);
    c.put(0, &sockaddr_in(lo, port));
    assert_eq!(c.call(libc::SYS_connect, [s, 0, 16, 0, 0, 0]), 0);
    c.put(256, &u32::MAX.to_ne_bytes()); // a lying *addrlen
    let a = c.call(
        libc::SYS_accept4,
        [l, 0, 256, libc::SOCK_CLOEXEC as u64, 0, 0],
    );
    assert!(a >= 0, "accept4: {a}");
    let a = a as u64;
    assert_eq!(u32::from_ne_bytes(c.get(256, 4).try_into().unwrap()), 16);
    let peer = parse_sockaddr(&c.get(0, 16));
    assert_eq!(c.name(libc::SYS_getsockname, s), peer);
    assert_eq!(c.name(libc::SYS_getpeername, a), peer);
    assert_eq!(c.name(libc::SYS_getpeername, s).port(), port);
    c.send(s, b"ping through the queue");
    assert_eq!(c.recv(a, 22), b"ping through the queue");
    c.send(a, b"pong");
    assert_eq!(c.recv(s, 4), b"pong");
    // getsockopt(SO_ERROR) with an honest length.
    c.put(512, &4u32.to_ne_bytes());
    let so_error = [s, libc::SOL_SOCKET as u64, libc::SO_ERROR as u64, 0, 512, 0];
    assert_eq!(c.call(libc::SYS_getsockopt, so_error), 0);
    assert_eq!(c.get(0, 4), [0; 4]);
    assert_eq!(
        c.call(libc::SYS_shutdown, [s, libc::SHUT_WR as u64, 0, 0, 0, 0]),
        0
    );
    assert_eq!(c.recv(a, 16), b"", "EOF after shutdown");
    for fd in [s, a, l] {
        c.close(fd);
    }

    // The veth link: a listener on the domain's address is reachable from
    // the host (what port forwards use).
    let l = c.socket(libc::SOCK_STREAM);
    c.bind(l, Ipv4Addr::UNSPECIFIED, 0);
    assert_eq!(c.call(libc::SYS_listen, [l, 16, 0, 0, 0, 0]), 0);
    let port = c.name(libc::SYS_getsockname, l).port();
    let mut host = TcpStream::connect_timeout(
        &SocketAddrV4::new(dom.domain_addr, port).into(),
        Duration::from_secs(5),
    )
    .expect("host -> domain over the veth link");
    let a = c.call(libc::SYS_accept, [l, u64::MAX, u64::MAX, 0, 0, 0]);
    assert!(a >= 0, "accept: {a}");
    let a = a as u64;
    c.put(0, &128u32.to_ne_bytes());
    let from = c.name(libc::SYS_getpeername, a);
    assert_eq!(*from.ip(), dom.host_addr, "the host side's address");
    host.write_all(b"from the host").unwrap();
    assert_eq!(c.recv(a, 13), b"from the host");
    c.send(a, b"from the domain");
    let mut buf = [0u8; 15];
    host.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"from the domain");
    drop(host);
    c.close(a);
    c.close(l);

    // UDP with OP_SENDMSG / OP_RECVMSG.
    let u1 = c.socket(libc::SOCK_DGRAM);
    let u2 = c.socket(libc::SOCK_DGRAM);
    c.bind(u1, lo, 0);
    c.bind(u2, lo, 0);
    let p1 = c.name(libc::SYS_getsockname, u1);
    let p2 = c.name(libc::SYS_getsockname, u2);
    c.put(NAME_OFF as u64, &sockaddr_in(lo, p1.port()));
    c.put(DATA_OFF as u64, b"datagram");
    assert_eq!(c.call(OP_SENDMSG, [u2, 0, 16, 0, 8, 0]), 8);
    c.put(NAME_OFF as u64, &[0u8; 16]);
    let (n, extra) = c.call2(OP_RECVMSG, [u1, 0, 128, 0, 1024, 0]);
    assert_eq!(n, 8);
    let (namelen, controllen, flags) = unpack_recv_extra(extra);
    assert_eq!((namelen, controllen, flags), (16, 0, 0));
    assert_eq!(parse_sockaddr(&c.get(NAME_OFF as u64, 16)), p2);
    assert_eq!(c.get(DATA_OFF as u64, 8), b"datagram");
    c.close(u1);
    c.close(u2);

    // Shutdown: the veth pair goes with the namespace.
    assert_eq!(dom.cmd(&DomainCommand::Shutdown, &[]), DomainReply::Ok);
    let st = dom.child.wait().unwrap();
    assert!(st.success(), "{st:?}");
    let start = std::time::Instant::now();
    while host_if_exists(&dom.host_if) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "host side left behind"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// epoll in the network domain through the queue: a hostile client's bad
/// descriptors and sizes, edge-triggered readiness, and a blocked
/// `OP_EPOLL_WAIT` that the client interrupts (EINTR), or that ends with
/// the event when one arrives first.
#[test]
fn epoll_through_the_queue() {
    use virtuos_abi::ops::epoll::{get, EVENT_SIZE, MAX_EVENTS};
    use virtuos_abi::ops::{OP_EPOLL_CREATE, OP_EPOLL_CTL, OP_EPOLL_WAIT};
    let dom = Domain::start();
    let c = Client::new();
    let r = dom.cmd(
        &DomainCommand::AddClient {
            client_id: 1,
            pid: std::process::id(),
            creds: Credentials::of_user(0, 0, vec![]),
            slot: None,
            nproc: None,
        },
        &[c.region_fd.as_fd(), c.state_fd.as_fd()],
    );
    assert_eq!(r, DomainReply::Ok);
    let neg = |e: i32| -(e as i64);
    let ep = c.call(OP_EPOLL_CREATE, [0; 6]);
    assert!(ep >= 0, "OP_EPOLL_CREATE: {ep}");
    let ep = ep as u64;
    let lo = Ipv4Addr::LOCALHOST;
    let l = c.socket(libc::SOCK_STREAM);
    c.bind(l, lo, 0);
    assert_eq!(c.call(libc::SYS_listen, [l, 16, 0, 0, 0, 0]), 0);
    let port = c.name(libc::SYS_getsockname, l).port();
    let add = libc::EPOLL_CTL_ADD as u64;
    let et = (libc::EPOLLIN | libc::EPOLLET) as u64;
    // Hostile requests.
    let limit = virtuos_abi::DOMAIN_FD_LIMIT;
    assert_eq!(
        c.call(OP_EPOLL_CTL, [limit, add, l, et, 1, 0]),
        neg(libc::EBADF)
    );
    assert_eq!(
        c.call(OP_EPOLL_CTL, [ep, add, u64::MAX, et, 1, 0]),
        neg(libc::EBADF)
    );
    assert_eq!(
        c.call(OP_EPOLL_CTL, [ep, 1234, l, et, 1, 0]),
        neg(libc::EINVAL)
    );
    assert_eq!(
        c.call(OP_EPOLL_CTL, [l, add, ep, et, 1, 0]),
        neg(libc::EINVAL)
    );
    let too_many = (MAX_EVENTS + 1) as u64;
    assert_eq!(
        c.call(OP_EPOLL_WAIT, [ep, too_many, 0, 0, 0, 0]),
        neg(libc::EINVAL)
    );
    assert_eq!(
        c.call(OP_EPOLL_WAIT, [ep, 0, 0, 0, 0, 0]),
        neg(libc::EINVAL)
    );
    assert_eq!(
        c.call(OP_EPOLL_WAIT, [limit + 1, 1, 0, 0, 0, 0]),
        neg(libc::EBADF)
    );
    // The listener, edge-triggered, with our key.
    assert_eq!(
        c.call(OP_EPOLL_CTL, [ep, add, l, et, 0xabcd_0000_0007, 0]),
        0
    );
    assert_eq!(c.call(OP_EPOLL_WAIT, [ep, 8, 0, 0, 0, 0]), 0);
    // A blocked wait, interrupted by the client: EINTR.
    let wait = |timeout: i64| {
        let e = c.region.entry(3).unwrap();
        e.fill(
            OP_EPOLL_WAIT,
            0,
            1,
            Some(3),
            [ep, 8, timeout as i32 as u32 as u64, 0, 0, 0],
        );
        c.region.submit(3).unwrap();
        c.region.ring_if_idle(c.state.get());
        e
    };
    let done = |e: &virtuos_abi::entry::RequestEntry| {
        let start = std::time::Instant::now();
        while !e.is_done() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the wait did not end"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let (r, _) = e.result();
        e.release();
        r
    };
    let e = wait(-1);
    std::thread::sleep(Duration::from_millis(150));
    assert!(!e.is_done(), "nothing is ready: the wait blocks");
    c.region.request_interrupt(3);
    assert_eq!(done(e), neg(libc::EINTR));
    // A blocked wait that an incoming connection ends.
    let e = wait(-1);
    std::thread::sleep(Duration::from_millis(50));
    let s = c.socket(libc::SOCK_STREAM);
    c.put(0, &sockaddr_in(lo, port));
    assert_eq!(c.call(libc::SYS_connect, [s, 0, 16, 0, 0, 0]), 0);
    assert_eq!(done(e), 1);
    let mut b = [0u8; EVENT_SIZE];
    assert!(c.region.read_chunk(3, 0, &mut b));
    assert_eq!(get(&b), (libc::EPOLLIN as u32, 0xabcd_0000_0007));
    // Edge-triggered: reported once; a timeout then.
    let t0 = std::time::Instant::now();
    assert_eq!(done(wait(100)), 0);
    assert!(t0.elapsed() >= Duration::from_millis(90));
    for fd in [s, l, ep] {
        c.close(fd);
    }
}
