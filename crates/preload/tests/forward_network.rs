//! Sockets through the forwarding path against in-test fake storage and
//! network domains (real system calls in this process, loopback only):
//! placeholders, the hand-marshalled address calls (POSIX truncation of
//! addrlen/optlen), accept flags, sendmsg/recvmsg layout, sendmmsg/
//! recvmmsg, poll/select over sockets (also mixed with a pipe and a
//! storage file), and cross-domain sendfile.

mod forward_common;

use forward_common::Executor;
use std::sync::{Mutex, OnceLock};
use virtuos::forward::{self, domain, fds, Action};
use virtuos_abi::mapping::create_memfd;
use virtuos_abi::region::StatePage;
use virtuos_abi::{ClientRegion, REGION_SIZE, STATE_SIZE};

static SERIAL: Mutex<()> = Mutex::new(());
static MOUNT: OnceLock<String> = OnceLock::new();

fn serve_new(n: usize) -> (std::fs::File, std::fs::File) {
    let rfd = create_memfd("test-region", REGION_SIZE).unwrap();
    let sfd = create_memfd("test-state", STATE_SIZE).unwrap();
    let region = ClientRegion::map(&rfd).unwrap();
    region.init();
    let state = StatePage::map(&sfd, true).unwrap();
    state.get().init(2);
    let region: &'static ClientRegion = Box::leak(Box::new(region));
    let state: &'static StatePage = Box::leak(Box::new(state));
    let exec: &'static Executor = Box::leak(Box::new(Executor::new(None)));
    for _ in 0..n {
        std::thread::spawn(move || exec.serve(region, state));
    }
    (rfd.into(), sfd.into())
}

fn env() -> std::sync::MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    MOUNT.get_or_init(|| {
        let root = format!(
            "{}/forward-net-{}",
            env!("CARGO_TARGET_TMPDIR"),
            std::process::id()
        );
        let _ = std::fs::remove_dir_all(&root);
        let mount = format!("{root}/storage");
        std::fs::create_dir_all(&mount).unwrap();
        let (r, s) = serve_new(2);
        forward::install_test_session(&r, &s, &mount).unwrap();
        let (r, s) = serve_new(4);
        forward::install_test_network_session(&r, &s).unwrap();
        mount
    });
    g
}

fn errno() -> i64 {
    -(std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO) as i64)
}

fn sys(nr: i64, a: [u64; 6]) -> i64 {
    match forward::on_syscall(nr as u64, a) {
        Action::Done(r) => r,
        Action::Local => {
            // SAFETY: test calls with valid arguments.
            let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
            if r < 0 {
                errno()
            } else {
                r
            }
        }
    }
}

fn fwd(nr: i64, a: [u64; 6]) -> i64 {
    match forward::on_syscall(nr as u64, a) {
        Action::Done(r) => r,
        Action::Local => panic!("syscall {nr} {a:?} was not forwarded"),
    }
}

fn ptr<T>(t: &T) -> u64 {
    t as *const T as u64
}

fn mptr<T>(t: &mut T) -> u64 {
    t as *mut T as u64
}

fn loopback(port: u16) -> libc::sockaddr_in {
    // SAFETY: all-zero bytes are a valid sockaddr_in.
    let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    a.sin_family = libc::AF_INET as u16;
    a.sin_port = port.to_be();
    a.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
    a
}

const SIN: u64 = std::mem::size_of::<libc::sockaddr_in>() as u64;

fn socket(ty: i32) -> i64 {
    let s = fwd(
        libc::SYS_socket,
        [libc::AF_INET as u64, ty as u64, 0, 0, 0, 0],
    );
    assert!(s >= 0, "socket: {s}");
    let e = fds::get(s as u64).expect("a forwarded socket");
    assert_eq!(e.domain, domain::DOMAIN_NETWORK);
    s
}

fn bound(ty: i32) -> (i64, libc::sockaddr_in) {
    let s = socket(ty);
    let a = loopback(0);
    assert_eq!(fwd(libc::SYS_bind, [s as u64, ptr(&a), SIN, 0, 0, 0]), 0);
    let mut got = loopback(0);
    let mut len: u32 = SIN as u32;
    assert_eq!(
        fwd(
            libc::SYS_getsockname,
            [s as u64, mptr(&mut got), mptr(&mut len), 0, 0, 0]
        ),
        0
    );
    assert_eq!(len as u64, SIN);
    assert_ne!(got.sin_port, 0);
    (s, got)
}

fn write(fd: i64, b: &[u8]) -> i64 {
    sys(
        libc::SYS_write,
        [fd as u64, b.as_ptr() as u64, b.len() as u64, 0, 0, 0],
    )
}

fn read(fd: i64, b: &mut [u8]) -> i64 {
    sys(
        libc::SYS_read,
        [fd as u64, b.as_mut_ptr() as u64, b.len() as u64, 0, 0, 0],
    )
}

fn close(fd: i64) {
    assert_eq!(sys(libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0]), 0);
}

fn poll(fds: &mut [libc::pollfd], ms: i32) -> i64 {
    sys(
        libc::SYS_poll,
        [
            fds.as_mut_ptr() as u64,
            fds.len() as u64,
            ms as u64,
            0,
            0,
            0,
        ],
    )
}

fn pfd(fd: i64, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd: fd as i32,
        events,
        revents: 0,
    }
}

/// A connected TCP pair (client, accepted) plus the listener.
fn tcp_pair(accept_flags: i32) -> (i64, i64, i64) {
    let (l, addr) = bound(libc::SOCK_STREAM | libc::SOCK_CLOEXEC);
    assert_eq!(fwd(libc::SYS_listen, [l as u64, 8, 0, 0, 0, 0]), 0);
    let c = socket(libc::SOCK_STREAM);
    assert_eq!(
        fwd(libc::SYS_connect, [c as u64, ptr(&addr), SIN, 0, 0, 0]),
        0
    );
    let mut peer = [0xaau8; 128];
    let mut len: u32 = 128;
    let a = fwd(
        libc::SYS_accept4,
        [
            l as u64,
            peer.as_mut_ptr() as u64,
            mptr(&mut len),
            accept_flags as u64,
            0,
            0,
        ],
    );
    assert!(a >= 0, "accept4: {a}");
    assert_eq!(len as u64, SIN);
    assert_eq!(peer[0..2], (libc::AF_INET as u16).to_ne_bytes());
    assert_eq!(
        peer[SIN as usize], 0xaa,
        "nothing beyond the address written"
    );
    (l, c, a)
}

#[test]
fn tcp_accept_flags_addrlen_truncation_and_options() {
    let _g = env();
    let (l, c, a) = tcp_pair(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK);
    // accept4 installed a placeholder with the flags.
    assert!(fds::get(a as u64).unwrap().cloexec);
    assert_eq!(
        sys(
            libc::SYS_fcntl,
            [a as u64, libc::F_GETFD as u64, 0, 0, 0, 0]
        ),
        libc::FD_CLOEXEC as i64
    );
    let fl = fwd(
        libc::SYS_fcntl,
        [a as u64, libc::F_GETFL as u64, 0, 0, 0, 0],
    );
    assert!(fl as i32 & libc::O_NONBLOCK != 0, "SOCK_NONBLOCK: {fl:o}");
    let mut buf = [0u8; 64];
    assert_eq!(read(a, &mut buf), -(libc::EAGAIN as i64));
    // Plain accept: no flags.
    let c2 = socket(libc::SOCK_STREAM);
    let mut la = loopback(0);
    let mut ll: u32 = SIN as u32;
    fwd(
        libc::SYS_getsockname,
        [l as u64, mptr(&mut la), mptr(&mut ll), 0, 0, 0],
    );
    assert_eq!(
        fwd(libc::SYS_connect, [c2 as u64, ptr(&la), SIN, 0, 0, 0]),
        0
    );
    let a2 = fwd(libc::SYS_accept, [l as u64, 0, 0, 0, 0, 0]);
    assert!(a2 >= 0);
    assert!(!fds::get(a2 as u64).unwrap().cloexec);
    let fl2 = fwd(
        libc::SYS_fcntl,
        [a2 as u64, libc::F_GETFL as u64, 0, 0, 0, 0],
    );
    assert_eq!(fl2 as i32 & libc::O_NONBLOCK, 0);
    // O_NONBLOCK through F_SETFL.
    assert_eq!(
        fwd(
            libc::SYS_fcntl,
            [
                a2 as u64,
                libc::F_SETFL as u64,
                libc::O_NONBLOCK as u64,
                0,
                0,
                0
            ]
        ),
        0
    );
    assert_eq!(read(a2, &mut buf), -(libc::EAGAIN as i64));

    // getsockname with a short buffer: 4 bytes copied, 16 reported.
    let mut small = [0xaau8; 16];
    let mut len: u32 = 4;
    assert_eq!(
        fwd(
            libc::SYS_getsockname,
            [c as u64, small.as_mut_ptr() as u64, mptr(&mut len), 0, 0, 0]
        ),
        0
    );
    assert_eq!(len as u64, SIN);
    assert_eq!(small[0..2], (libc::AF_INET as u16).to_ne_bytes());
    assert!(
        small[4..].iter().all(|&b| b == 0xaa),
        "only 4 bytes written: {small:?}"
    );
    // getpeername of the accepted socket is the client's address.
    let mut cn = loopback(0);
    let mut cl: u32 = SIN as u32;
    fwd(
        libc::SYS_getsockname,
        [c as u64, mptr(&mut cn), mptr(&mut cl), 0, 0, 0],
    );
    let mut pn = loopback(0);
    let mut pl: u32 = SIN as u32;
    assert_eq!(
        fwd(
            libc::SYS_getpeername,
            [a as u64, mptr(&mut pn), mptr(&mut pl), 0, 0, 0]
        ),
        0
    );
    assert_eq!(pn.sin_port, cn.sin_port);
    // A negative length is EINVAL.
    let mut neg: i32 = -1;
    assert_eq!(
        fwd(
            libc::SYS_getsockname,
            [c as u64, mptr(&mut cn), mptr(&mut neg), 0, 0, 0]
        ),
        -(libc::EINVAL as i64)
    );

    // getsockopt: truncated to what the program offered.
    let mut v = [0xaau8; 8];
    let mut ol: u32 = 2;
    assert_eq!(
        fwd(
            libc::SYS_getsockopt,
            [
                c as u64,
                libc::SOL_SOCKET as u64,
                libc::SO_TYPE as u64,
                v.as_mut_ptr() as u64,
                mptr(&mut ol),
                0
            ]
        ),
        0
    );
    assert_eq!(ol, 2);
    assert_eq!(v[2..], [0xaa; 6]);
    let mut ty: i32 = 0;
    let mut ol: u32 = 8;
    fwd(
        libc::SYS_getsockopt,
        [
            c as u64,
            libc::SOL_SOCKET as u64,
            libc::SO_TYPE as u64,
            mptr(&mut ty),
            mptr(&mut ol),
            0,
        ],
    );
    assert_eq!((ty, ol), (libc::SOCK_STREAM, 4));
    let one: i32 = 1;
    assert_eq!(
        fwd(
            libc::SYS_setsockopt,
            [
                c as u64,
                libc::IPPROTO_TCP as u64,
                libc::TCP_NODELAY as u64,
                ptr(&one),
                4,
                0
            ]
        ),
        0
    );

    // Data, FIONREAD, recvfrom on a connected stream (addrlen 0).
    assert_eq!(write(c, b"ping"), 4);
    let mut p = [pfd(a, libc::POLLIN)];
    assert_eq!(poll(&mut p, 2000), 1);
    assert!(p[0].revents & libc::POLLIN != 0);
    let mut n: i32 = 0;
    assert_eq!(
        fwd(
            libc::SYS_ioctl,
            [a as u64, libc::FIONREAD, mptr(&mut n), 0, 0, 0]
        ),
        0
    );
    assert_eq!(n, 4);
    let mut from = [0u8; 32];
    let mut fl: u32 = 32;
    let r = fwd(
        libc::SYS_recvfrom,
        [
            a as u64,
            buf.as_mut_ptr() as u64,
            64,
            0,
            from.as_mut_ptr() as u64,
            mptr(&mut fl),
        ],
    );
    assert_eq!(r, 4);
    assert_eq!(&buf[..4], b"ping");
    assert_eq!(fl, 0, "a connected stream reports no address");
    // fstat says socket.
    // SAFETY: all-zero bytes are a valid stat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(
        fwd(libc::SYS_fstat, [a as u64, mptr(&mut st), 0, 0, 0, 0]),
        0
    );
    assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFSOCK);
    // dup keeps the domain.
    let d = fwd(libc::SYS_dup, [a as u64, 0, 0, 0, 0, 0]);
    assert_eq!(fds::get(d as u64).unwrap().domain, domain::DOMAIN_NETWORK);
    // Shutdown: EOF at the peer.
    assert_eq!(
        fwd(
            libc::SYS_shutdown,
            [c as u64, libc::SHUT_WR as u64, 0, 0, 0, 0]
        ),
        0
    );
    let mut p = [pfd(d, libc::POLLIN)];
    assert_eq!(poll(&mut p, 2000), 1);
    assert_eq!(read(d, &mut buf), 0);
    // A socket call on a local descriptor stays local; a path call on a
    // socket dirfd is ENOTDIR.
    let name = std::ffi::CString::new("x").unwrap();
    assert_eq!(
        sys(
            libc::SYS_openat,
            [a as u64, name.as_ptr() as u64, 0, 0, 0, 0]
        ),
        -(libc::ENOTDIR as i64)
    );
    for fd in [l, c, a, c2, a2, d] {
        close(fd);
        assert!(!fds::is_forwarded(fd as u64));
    }
}

#[test]
fn local_families_and_socketpair_stay_local() {
    let _g = env();
    for fam in [libc::AF_UNIX, libc::AF_NETLINK] {
        assert_eq!(
            forward::on_syscall(
                libc::SYS_socket as u64,
                [fam as u64, libc::SOCK_DGRAM as u64, 0, 0, 0, 0]
            ),
            Action::Local
        );
    }
    let mut sv = [0i32; 2];
    assert_eq!(
        forward::on_syscall(
            libc::SYS_socketpair as u64,
            [
                libc::AF_UNIX as u64,
                libc::SOCK_STREAM as u64,
                0,
                sv.as_mut_ptr() as u64,
                0,
                0
            ]
        ),
        Action::Local
    );
}

fn iov(b: &mut [u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: b.len(),
    }
}

#[test]
fn udp_sendmsg_recvmsg_mmsg_and_truncation() {
    let _g = env();
    let (u1, _a1) = bound(libc::SOCK_DGRAM);
    let (u2, a2) = bound(libc::SOCK_DGRAM);
    // sendto / recvfrom with MSG_TRUNC: the datagram's length is reported.
    let msg = b"hello";
    assert_eq!(
        fwd(
            libc::SYS_sendto,
            [u1 as u64, msg.as_ptr() as u64, 5, 0, ptr(&a2), SIN]
        ),
        5
    );
    let mut small = [0u8; 3];
    let mut from = loopback(0);
    let mut fl: u32 = SIN as u32;
    assert_eq!(
        fwd(
            libc::SYS_recvfrom,
            [
                u2 as u64,
                small.as_mut_ptr() as u64,
                3,
                libc::MSG_TRUNC as u64,
                mptr(&mut from),
                mptr(&mut fl)
            ]
        ),
        5
    );
    assert_eq!(&small, b"hel");
    assert_eq!(fl as u64, SIN);

    // sendmsg with a name and two iovecs; recvmsg scattering into two,
    // with a name buffer shorter than the address.
    let (mut p1, mut p2) = (*b"ab", *b"cde");
    let mut siov = [iov(&mut p1), iov(&mut p2)];
    // SAFETY: all-zero bytes are a valid msghdr.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_name = (&a2 as *const libc::sockaddr_in as *mut libc::sockaddr_in).cast();
    m.msg_namelen = SIN as u32;
    m.msg_iov = siov.as_mut_ptr();
    m.msg_iovlen = 2;
    assert_eq!(
        fwd(libc::SYS_sendmsg, [u1 as u64, mptr(&mut m), 0, 0, 0, 0]),
        5
    );
    let (mut r1, mut r2) = ([0u8; 2], [0u8; 10]);
    let mut riov = [iov(&mut r1), iov(&mut r2)];
    let mut name = [0xaau8; 16];
    // SAFETY: all-zero bytes are a valid msghdr.
    let mut rm: libc::msghdr = unsafe { std::mem::zeroed() };
    rm.msg_name = name.as_mut_ptr().cast();
    rm.msg_namelen = 8;
    rm.msg_iov = riov.as_mut_ptr();
    rm.msg_iovlen = 2;
    assert_eq!(
        fwd(libc::SYS_recvmsg, [u2 as u64, mptr(&mut rm), 0, 0, 0, 0]),
        5
    );
    assert_eq!((&r1, &r2[..3]), (b"ab", &b"cde"[..]));
    assert_eq!(rm.msg_namelen as u64, SIN, "the full length is reported");
    assert_eq!(name[8..], [0xaa; 8], "only 8 bytes of the name copied");
    assert_eq!(rm.msg_flags, 0);
    assert_eq!(rm.msg_controllen, 0);

    // A short buffer: MSG_TRUNC in msg_flags.
    assert_eq!(
        fwd(
            libc::SYS_sendto,
            [u1 as u64, msg.as_ptr() as u64, 5, 0, ptr(&a2), SIN]
        ),
        5
    );
    let mut r3 = [0u8; 2];
    let mut riov = [iov(&mut r3)];
    // SAFETY: all-zero bytes are a valid msghdr.
    let mut rm: libc::msghdr = unsafe { std::mem::zeroed() };
    rm.msg_iov = riov.as_mut_ptr();
    rm.msg_iovlen = 1;
    assert_eq!(
        fwd(libc::SYS_recvmsg, [u2 as u64, mptr(&mut rm), 0, 0, 0, 0]),
        2
    );
    assert!(rm.msg_flags & libc::MSG_TRUNC != 0);

    // Ancillary data: IP_PKTINFO, then a control buffer too small for it.
    let one: i32 = 1;
    fwd(
        libc::SYS_setsockopt,
        [
            u2 as u64,
            libc::IPPROTO_IP as u64,
            libc::IP_PKTINFO as u64,
            ptr(&one),
            4,
            0,
        ],
    );
    for (cap, truncated) in [(64usize, false), (8, true)] {
        assert_eq!(
            fwd(
                libc::SYS_sendto,
                [u1 as u64, msg.as_ptr() as u64, 5, 0, ptr(&a2), SIN]
            ),
            5
        );
        let mut data = [0u8; 16];
        let mut riov = [iov(&mut data)];
        let mut control = [0u64; 8];
        // SAFETY: all-zero bytes are a valid msghdr.
        let mut rm: libc::msghdr = unsafe { std::mem::zeroed() };
        rm.msg_iov = riov.as_mut_ptr();
        rm.msg_iovlen = 1;
        rm.msg_control = control.as_mut_ptr().cast();
        rm.msg_controllen = cap;
        assert_eq!(
            fwd(libc::SYS_recvmsg, [u2 as u64, mptr(&mut rm), 0, 0, 0, 0]),
            5
        );
        assert_eq!(rm.msg_flags & libc::MSG_CTRUNC != 0, truncated, "cap {cap}");
        if !truncated {
            assert!(rm.msg_controllen >= 16);
            // cmsg_level, cmsg_type of the first header.
            let lvl = control[1] as u32 as i32;
            let ty = (control[1] >> 32) as u32 as i32;
            assert_eq!((lvl, ty), (libc::IPPROTO_IP, libc::IP_PKTINFO));
        }
    }

    // sendmmsg of three, recvmmsg(WAITFORONE) gets them, then EAGAIN.
    let mut bufs = [*b"one..", *b"two..", *b"three"];
    let mut iovs: Vec<libc::iovec> = bufs.iter_mut().map(|b| iov(b)).collect();
    // SAFETY: all-zero bytes are valid mmsghdrs.
    let mut mm: [libc::mmsghdr; 3] = unsafe { std::mem::zeroed() };
    for (i, h) in mm.iter_mut().enumerate() {
        h.msg_hdr.msg_name = (&a2 as *const libc::sockaddr_in as *mut libc::sockaddr_in).cast();
        h.msg_hdr.msg_namelen = SIN as u32;
        h.msg_hdr.msg_iov = &mut iovs[i];
        h.msg_hdr.msg_iovlen = 1;
    }
    assert_eq!(
        fwd(
            libc::SYS_sendmmsg,
            [u1 as u64, mm.as_mut_ptr() as u64, 3, 0, 0, 0]
        ),
        3
    );
    assert!(mm.iter().all(|h| h.msg_len == 5));
    let mut rb = [[0u8; 8]; 5];
    let mut riovs: Vec<libc::iovec> = rb.iter_mut().map(|b| iov(b)).collect();
    // SAFETY: all-zero bytes are valid mmsghdrs.
    let mut rmm: [libc::mmsghdr; 5] = unsafe { std::mem::zeroed() };
    for (i, h) in rmm.iter_mut().enumerate() {
        h.msg_hdr.msg_iov = &mut riovs[i];
        h.msg_hdr.msg_iovlen = 1;
    }
    // Let all three arrive.
    let mut p = [pfd(u2, libc::POLLIN)];
    assert_eq!(poll(&mut p, 2000), 1);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let r = fwd(
        libc::SYS_recvmmsg,
        [
            u2 as u64,
            rmm.as_mut_ptr() as u64,
            5,
            libc::MSG_WAITFORONE as u64,
            0,
            0,
        ],
    );
    assert_eq!(r, 3);
    assert_eq!(&rb[2][..5], b"three");
    assert_eq!(rmm[1].msg_len, 5);
    assert_eq!(
        fwd(
            libc::SYS_recvmmsg,
            [
                u2 as u64,
                rmm.as_mut_ptr() as u64,
                5,
                libc::MSG_DONTWAIT as u64,
                0,
                0
            ]
        ),
        -(libc::EAGAIN as i64)
    );
    close(u1);
    close(u2);
}

#[test]
fn poll_and_select_mix_sockets_pipes_and_storage_files() {
    let _g = env();
    let (l, c, a) = tcp_pair(0);
    let mut pipe = [0i32; 2];
    // SAFETY: a valid two-int array.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    let (pr, pw) = (pipe[0] as i64, pipe[1] as i64);
    // Nothing ready: the timeout passes.
    let t0 = std::time::Instant::now();
    let mut p = [pfd(pr, libc::POLLIN), pfd(a, libc::POLLIN)];
    assert_eq!(poll(&mut p, 60), 0);
    assert!(t0.elapsed() >= std::time::Duration::from_millis(55));
    assert_eq!((p[0].revents, p[1].revents), (0, 0));
    // The pipe only.
    assert_eq!(write(pw, b"x"), 1);
    let mut p = [pfd(pr, libc::POLLIN), pfd(a, libc::POLLIN)];
    assert_eq!(poll(&mut p, 2000), 1);
    assert_eq!((p[0].revents, p[1].revents), (libc::POLLIN, 0));
    assert_eq!(
        (p[0].fd as i64, p[1].fd as i64),
        (pr, a),
        "numbers restored"
    );
    // Both; a socket that becomes readable while we wait.
    let c2 = c;
    let writer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(write(c2, b"net"), 3);
    });
    let mut p = [pfd(a, libc::POLLIN)];
    assert_eq!(poll(&mut p, 5000), 1);
    writer.join().unwrap();
    let mut p = [pfd(pr, libc::POLLIN), pfd(a, libc::POLLIN | libc::POLLOUT)];
    assert_eq!(poll(&mut p, 0), 2);
    assert_eq!(p[1].revents, libc::POLLIN | libc::POLLOUT);
    // A storage file is always ready.
    let path = std::ffi::CString::new(format!("{}/f", MOUNT.get().unwrap())).unwrap();
    let f = fwd(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as u64,
            path.as_ptr() as u64,
            (libc::O_CREAT | libc::O_RDWR) as u64,
            0o644,
            0,
            0,
        ],
    );
    assert!(f >= 0);
    let mut p = [pfd(f, libc::POLLIN), pfd(c, libc::POLLIN)];
    assert_eq!(poll(&mut p, 5000), 1);
    assert_eq!((p[0].revents, p[1].revents), (libc::POLLIN, 0));

    // select: readable pipe and socket, writable socket.
    let mut rset = [0u64; 16];
    let mut wset = [0u64; 16];
    let set = |s: &mut [u64; 16], fd: i64| s[fd as usize / 64] |= 1 << (fd % 64);
    let isset = |s: &[u64; 16], fd: i64| s[fd as usize / 64] & (1 << (fd % 64)) != 0;
    set(&mut rset, pr);
    set(&mut rset, a);
    set(&mut rset, c);
    set(&mut wset, c);
    let nfds = [pr, a, c].into_iter().max().unwrap() + 1;
    let mut tv = [1i64, 0];
    let r = sys(
        libc::SYS_select,
        [
            nfds as u64,
            rset.as_mut_ptr() as u64,
            wset.as_mut_ptr() as u64,
            0,
            tv.as_mut_ptr() as u64,
            0,
        ],
    );
    assert_eq!(r, 3);
    assert!(isset(&rset, pr) && isset(&rset, a) && !isset(&rset, c));
    assert!(isset(&wset, c));
    // pselect6 with only a socket, nothing ready: times out.
    let mut rset = [0u64; 16];
    set(&mut rset, c);
    let ts = [0i64, 30_000_000];
    let r = sys(
        libc::SYS_pselect6,
        [
            nfds as u64,
            rset.as_mut_ptr() as u64,
            0,
            0,
            ts.as_ptr() as u64,
            0,
        ],
    );
    assert_eq!(r, 0);
    assert!(!isset(&rset, c));

    // sendfile from a storage file to a socket (two domains).
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let st = std::ffi::CString::new(format!("{}/big", MOUNT.get().unwrap())).unwrap();
    let bf = fwd(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as u64,
            st.as_ptr() as u64,
            (libc::O_CREAT | libc::O_RDWR) as u64,
            0o644,
            0,
            0,
        ],
    );
    assert_eq!(write(bf, &data), data.len() as i64);
    assert_eq!(fwd(libc::SYS_lseek, [bf as u64, 0, 0, 0, 0, 0]), 0);
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut b = vec![0u8; 65536];
        while got.len() < 300_000 {
            let n = read(a, &mut b);
            assert!(n > 0, "read: {n}");
            got.extend_from_slice(&b[..n as usize]);
        }
        got
    });
    let mut sent = 0i64;
    while sent < data.len() as i64 {
        let r = fwd(
            libc::SYS_sendfile,
            [
                c as u64,
                bf as u64,
                0,
                (data.len() as i64 - sent) as u64,
                0,
                0,
            ],
        );
        assert!(r > 0, "sendfile: {r}");
        sent += r;
    }
    let got = reader.join().unwrap();
    assert_eq!(&got[3..], &data[..], "after the earlier 'net'");
    assert_eq!(
        fwd(
            libc::SYS_lseek,
            [bf as u64, 0, libc::SEEK_CUR as u64, 0, 0, 0]
        ),
        data.len() as i64,
        "the file position moved by what was sent"
    );
    for fd in [l, c, a, f, bf] {
        close(fd);
    }
    close(pr);
    close(pw);
}
