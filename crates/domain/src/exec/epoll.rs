//! `OP_EPOLL_CREATE`, `OP_EPOLL_CTL`, `OP_EPOLL_WAIT`
//! (`virtuos_abi::ops`): a real epoll instance in the shadow per client
//! epoll set that holds network sockets. The client keeps its own epoll
//! descriptor on the host for its local members and waits in both places.
//!
//! Every descriptor is checked against the client limit (the shadow's own
//! descriptors are never touched); `maxevents` is bounded by what the
//! chunk holds; the events are gathered into our own buffer and only then
//! copied into the chunk. The wait is an ordinary blocking call: the
//! interrupter ends it with EINTR when the client asks.

use super::neg;
use virtuos_abi::entry::Request;
use virtuos_abi::ops::epoll::{self, EVENT_SIZE, MAX_EVENTS};
use virtuos_abi::{ClientRegion, DOMAIN_FD_LIMIT};

fn limit(fd_limit: u64) -> u64 {
    fd_limit.min(DOMAIN_FD_LIMIT)
}

/// `OP_EPOLL_CREATE`: a new epoll instance (close-on-exec).
pub(crate) fn create(fd_limit: u64) -> i64 {
    // SAFETY: epoll_create1 takes no pointer.
    let r = unsafe {
        crate::sys::syscall(
            libc::SYS_epoll_create1,
            [libc::EPOLL_CLOEXEC as u64, 0, 0, 0, 0, 0],
        )
    };
    if r >= 0 && r as u64 >= limit(fd_limit) {
        // Never hand out a number in the shadow's own range.
        // SAFETY: closing the descriptor we just created.
        unsafe { crate::sys::syscall(libc::SYS_close, [r as u64, 0, 0, 0, 0, 0]) };
        return neg(libc::EMFILE);
    }
    r
}

/// `OP_EPOLL_CTL`: `[epfd, op, fd, events, data]`.
pub(crate) fn ctl(fd_limit: u64, req: &Request) -> i64 {
    let [epfd, op, fd, events, data, _] = req.args;
    let lim = limit(fd_limit);
    if epfd >= lim || fd >= lim {
        return neg(libc::EBADF);
    }
    let op = op as i32;
    if !matches!(
        op,
        libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD | libc::EPOLL_CTL_DEL
    ) {
        return neg(libc::EINVAL);
    }
    // The domain never keeps the system awake for a client.
    let events = events as u32 & !(libc::EPOLLWAKEUP as u32);
    let mut ev = libc::epoll_event { events, u64: data };
    let args = [
        epfd,
        op as u64,
        fd,
        &mut ev as *mut libc::epoll_event as u64,
        0,
        0,
    ];
    // SAFETY: epoll_ctl reads one epoll_event of our own stack (alive
    // until the call returns); both descriptors are below the client limit.
    unsafe { crate::sys::syscall(libc::SYS_epoll_ctl, args) }
}

/// `OP_EPOLL_WAIT`: `[epfd, maxevents, timeout_ms]`, events into the chunk.
pub(crate) fn wait(region: &ClientRegion, fd_limit: u64, req: &Request) -> i64 {
    let [epfd, maxevents, timeout, ..] = req.args;
    if epfd >= limit(fd_limit) {
        return neg(libc::EBADF);
    }
    if maxevents == 0 || maxevents as usize > MAX_EVENTS {
        return neg(libc::EINVAL);
    }
    let Some(chunk) = req.chunk else {
        return neg(libc::EFAULT);
    };
    let n = maxevents as usize;
    // The whole answer must fit the chunk before anything is waited for.
    if region
        .chunk_ptr(chunk, 0, (n * EVENT_SIZE) as u64)
        .is_none()
    {
        return neg(libc::EFAULT);
    }
    let timeout = timeout as i64 as i32;
    let timeout = if timeout < 0 { -1 } else { timeout };
    let mut evs: Vec<libc::epoll_event> = vec![libc::epoll_event { events: 0, u64: 0 }; n];
    let args = [
        epfd,
        evs.as_mut_ptr() as u64,
        n as u64,
        timeout as i64 as u64,
        0,
        0,
    ];
    // SAFETY: epoll_wait writes at most `n` events into our own vector
    // (alive until the call returns); no pointer comes from the client.
    let r = unsafe { crate::sys::syscall(libc::SYS_epoll_wait, args) };
    if r < 0 {
        return r;
    }
    let got = (r as usize).min(n);
    let mut out = vec![0u8; got * EVENT_SIZE];
    for (i, e) in evs.iter().take(got).enumerate() {
        let (events, data) = (e.events, e.u64);
        epoll::put(&mut out[i * EVENT_SIZE..], events, data);
    }
    if !region.write_chunk(chunk, 0, &out) {
        return neg(libc::EFAULT);
    }
    got as i64
}

#[cfg(test)]
mod tests {
    use crate::exec::{execute, Host};
    use crate::role::Role;
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use virtuos_abi::entry::Request;
    use virtuos_abi::mapping::create_memfd;
    use virtuos_abi::ops::epoll::{get, EVENT_SIZE, MAX_EVENTS};
    use virtuos_abi::ops::{OP_EPOLL_CREATE, OP_EPOLL_CTL, OP_EPOLL_WAIT};
    use virtuos_abi::{ClientRegion, DOMAIN_FD_LIMIT, NUM_CHUNKS, REGION_SIZE};

    struct H {
        proc_: OwnedFd,
        role: Role,
    }

    impl Host for H {
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
            -1
        }
        fn fork_abort(&self, _: u64) -> i64 {
            -1
        }
    }

    fn fixture(role: Role) -> (ClientRegion, H) {
        let fd = create_memfd("epoll-test", REGION_SIZE).unwrap();
        let region = ClientRegion::map(&fd).unwrap();
        region.init();
        let proc_ = rustix::fs::open(
            "/proc",
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        (region, H { proc_, role })
    }

    fn call(r: &ClientRegion, h: &H, op: u16, chunk: Option<u16>, args: [u64; 6]) -> i64 {
        let req = Request {
            op,
            seq: 0,
            task: 1,
            chunk,
            args,
        };
        execute(r, h, &req).0
    }

    const EINVAL: i64 = -(libc::EINVAL as i64);
    const EBADF: i64 = -(libc::EBADF as i64);

    #[test]
    fn epoll_ops_against_a_hostile_client() {
        let (r, h) = fixture(Role::Network);
        let ep = call(&r, &h, OP_EPOLL_CREATE, None, [0; 6]);
        assert!(ep >= 0, "create: {ep}");
        let ep = ep as u64;
        let mut p = [0i32; 2];
        // SAFETY: pipe2 writes two descriptors into `p`.
        assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let (rd, wr) = (p[0] as u64, p[1] as u64);
        let add = libc::EPOLL_CTL_ADD as u64;
        let ev_in = (libc::EPOLLIN | libc::EPOLLET) as u64;
        // Bad descriptors, bad ops.
        for bad in [DOMAIN_FD_LIMIT, u64::MAX, DOMAIN_FD_LIMIT + 5] {
            let r1 = call(&r, &h, OP_EPOLL_CTL, None, [bad, add, rd, ev_in, 7, 0]);
            assert_eq!(r1, EBADF);
            let r2 = call(&r, &h, OP_EPOLL_CTL, None, [ep, add, bad, ev_in, 7, 0]);
            assert_eq!(r2, EBADF);
            assert_eq!(
                call(&r, &h, OP_EPOLL_WAIT, Some(0), [bad, 1, 0, 0, 0, 0]),
                EBADF
            );
        }
        assert_eq!(
            call(&r, &h, OP_EPOLL_CTL, None, [ep, 99, rd, ev_in, 7, 0]),
            EINVAL
        );
        // Not an epoll instance: the kernel says EINVAL.
        assert_eq!(
            call(&r, &h, OP_EPOLL_CTL, None, [rd, add, wr, ev_in, 7, 0]),
            EINVAL
        );
        // An epoll inside itself.
        assert_eq!(
            call(&r, &h, OP_EPOLL_CTL, None, [ep, add, ep, ev_in, 7, 0]),
            EINVAL
        );
        assert_eq!(
            call(&r, &h, OP_EPOLL_CTL, None, [ep, add, rd, ev_in, 77, 0]),
            0
        );
        assert_eq!(
            call(&r, &h, OP_EPOLL_CTL, None, [ep, add, rd, ev_in, 77, 0]),
            -(libc::EEXIST as i64)
        );
        // maxevents: zero, negative, beyond the chunk; no chunk; a bad chunk.
        for m in [0u64, u64::MAX, (MAX_EVENTS + 1) as u64, -1i64 as u32 as u64] {
            assert_eq!(
                call(&r, &h, OP_EPOLL_WAIT, Some(0), [ep, m, 0, 0, 0, 0]),
                EINVAL
            );
        }
        let efault = -(libc::EFAULT as i64);
        assert_eq!(
            call(&r, &h, OP_EPOLL_WAIT, None, [ep, 4, 0, 0, 0, 0]),
            efault
        );
        let bad_chunk = Some(NUM_CHUNKS as u16);
        assert_eq!(
            call(&r, &h, OP_EPOLL_WAIT, bad_chunk, [ep, 4, 0, 0, 0, 0]),
            efault
        );
        // Nothing ready: 0 after the timeout.
        let t0 = std::time::Instant::now();
        assert_eq!(
            call(&r, &h, OP_EPOLL_WAIT, Some(0), [ep, 4, 30, 0, 0, 0]),
            0
        );
        assert!(t0.elapsed() >= std::time::Duration::from_millis(25));
        // Edge-triggered: one event per edge, with the client's data.
        // SAFETY: writing one byte from a local buffer into our pipe.
        assert_eq!(unsafe { libc::write(p[1], b"x".as_ptr().cast(), 1) }, 1);
        let n = call(
            &r,
            &h,
            OP_EPOLL_WAIT,
            Some(3),
            [ep, MAX_EVENTS as u64, 0, 0, 0, 0],
        );
        assert_eq!(n, 1);
        let mut b = [0u8; EVENT_SIZE];
        assert!(r.read_chunk(3, 0, &mut b));
        assert_eq!(get(&b), (libc::EPOLLIN as u32, 77));
        assert_eq!(call(&r, &h, OP_EPOLL_WAIT, Some(3), [ep, 1, 0, 0, 0, 0]), 0);
        // One-shot: MOD re-arms.
        let oneshot = (libc::EPOLLIN | libc::EPOLLONESHOT) as u64;
        let m = libc::EPOLL_CTL_MOD as u64;
        assert_eq!(
            call(&r, &h, OP_EPOLL_CTL, None, [ep, m, rd, oneshot, 5, 0]),
            0
        );
        assert_eq!(call(&r, &h, OP_EPOLL_WAIT, Some(3), [ep, 1, 0, 0, 0, 0]), 1);
        assert_eq!(call(&r, &h, OP_EPOLL_WAIT, Some(3), [ep, 1, 0, 0, 0, 0]), 0);
        assert_eq!(
            call(&r, &h, OP_EPOLL_CTL, None, [ep, m, rd, oneshot, 6, 0]),
            0
        );
        assert_eq!(call(&r, &h, OP_EPOLL_WAIT, Some(3), [ep, 1, 0, 0, 0, 0]), 1);
        assert!(r.read_chunk(3, 0, &mut b));
        assert_eq!(get(&b).1, 6);
        let del = libc::EPOLL_CTL_DEL as u64;
        assert_eq!(call(&r, &h, OP_EPOLL_CTL, None, [ep, del, rd, 0, 0, 0]), 0);
        assert_eq!(
            call(&r, &h, OP_EPOLL_CTL, None, [ep, del, rd, 0, 0, 0]),
            -(libc::ENOENT as i64)
        );
        // The storage domain runs them too (for its Unix sockets).
        let (rs, hs) = fixture(Role::Storage);
        let eps = call(&rs, &hs, OP_EPOLL_CREATE, None, [0; 6]);
        assert!(eps >= 0, "storage epoll_create: {eps}");
        assert_eq!(
            call(
                &rs,
                &hs,
                OP_EPOLL_WAIT,
                Some(0),
                [eps as u64, 1, 0, 0, 0, 0]
            ),
            0
        );
        // SAFETY: closing a descriptor this test created.
        unsafe { libc::close(eps as i32) };
        for fd in [rd, wr, ep] {
            // SAFETY: closing descriptors this test created.
            unsafe { libc::close(fd as i32) };
        }
    }
}
