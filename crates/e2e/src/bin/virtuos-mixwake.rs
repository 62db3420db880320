//! `virtuos-mixwake poll|select|epoll ROUNDS`: wake latency of a mixed
//! wait. Run under `virtuos run`: the wait set holds a pipe (local) and an
//! idle listening TCP socket (in the network domain). Another thread writes
//! the pipe while the main thread sleeps in poll/select/epoll_wait; the
//! time from just before the write to the return of the wait is one
//! sample. Prints `MODE n=N min=.. median=.. p90=.. p99=.. max=.. us`,
//! or an error and exit 1 when the wait reports something else than the
//! pipe (the socket must stay idle).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn fail(what: &str) -> ! {
    eprintln!(
        "virtuos-mixwake: {what}: {}",
        std::io::Error::last_os_error()
    );
    std::process::exit(1)
}

/// An idle listening socket on 127.0.0.1 (under virtuos: in the network
/// domain).
fn idle_socket() -> i32 {
    // SAFETY: plain socket calls on a descriptor we own and a sockaddr_in
    // on our stack.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if s < 0 {
            fail("socket");
        }
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as u16;
        a.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        if libc::bind(
            s,
            &a as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        ) != 0
        {
            fail("bind");
        }
        if libc::listen(s, 1) != 0 {
            fail("listen");
        }
        s
    }
}

/// One wait on {pipe, socket}: true if exactly the pipe is ready.
fn wait_once(mode: &str, rfd: i32, sock: i32, ep: i32) -> bool {
    match mode {
        "poll" => {
            let mut p = [
                libc::pollfd {
                    fd: sock,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: rfd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two pollfds on our stack.
            let r = unsafe { libc::poll(p.as_mut_ptr(), 2, 5000) };
            r == 1 && p[1].revents & libc::POLLIN != 0 && p[0].revents == 0
        }
        "select" => {
            // SAFETY: fd_set manipulation on our stack; both fds < 1024.
            unsafe {
                let mut set: libc::fd_set = std::mem::zeroed();
                libc::FD_SET(sock, &mut set);
                libc::FD_SET(rfd, &mut set);
                let mut tv = libc::timeval {
                    tv_sec: 5,
                    tv_usec: 0,
                };
                let n = rfd.max(sock) + 1;
                let r = libc::select(
                    n,
                    &mut set,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    &mut tv,
                );
                r == 1 && libc::FD_ISSET(rfd, &set) && !libc::FD_ISSET(sock, &set)
            }
        }
        _ => {
            let mut ev = [libc::epoll_event { events: 0, u64: 0 }; 4];
            // SAFETY: up to 4 events into our array.
            let r = unsafe { libc::epoll_wait(ep, ev.as_mut_ptr(), 4, 5000) };
            r == 1 && ev[0].u64 == rfd as u64
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, rounds) = match args.as_slice() {
        [m, n] if ["poll", "select", "epoll"].contains(&m.as_str()) => {
            (m.clone(), n.parse::<usize>().unwrap_or(100))
        }
        _ => {
            eprintln!("usage: virtuos-mixwake poll|select|epoll ROUNDS");
            std::process::exit(2);
        }
    };
    let sock = idle_socket();
    let mut pipe = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into our array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        fail("pipe2");
    }
    let (rfd, wfd) = (pipe[0], pipe[1]);
    let mut ep = -1;
    if mode == "epoll" {
        // SAFETY: epoll calls on descriptors we own, events on our stack.
        unsafe {
            ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            if ep < 0 {
                fail("epoll_create1");
            }
            for fd in [sock, rfd] {
                let mut e = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: fd as u64,
                };
                if libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut e) != 0 {
                    fail("epoll_ctl");
                }
            }
        }
    }
    let stamp = Arc::new(AtomicU64::new(0));
    let waiting = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stamp, waiting) = (stamp.clone(), waiting.clone());
        std::thread::spawn(move || {
            for i in 0..rounds {
                while !waiting.swap(false, Ordering::AcqRel) {
                    std::thread::yield_now();
                }
                // Let the main thread fall asleep; vary the phase.
                std::thread::sleep(Duration::from_micros(2000 + (i as u64 * 397) % 3000));
                stamp.store(now_ns(), Ordering::Release);
                // SAFETY: one byte from our stack into our pipe.
                if unsafe { libc::write(wfd, b"x".as_ptr().cast(), 1) } != 1 {
                    fail("write");
                }
            }
        })
    };
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        waiting.store(true, Ordering::Release);
        let ok = wait_once(&mode, rfd, sock, ep);
        let t1 = now_ns();
        if !ok {
            eprintln!(
                "virtuos-mixwake: {mode} round {round}: the wait did not report exactly the pipe"
            );
            std::process::exit(1);
        }
        let t0 = stamp.load(Ordering::Acquire);
        samples.push(t1.saturating_sub(t0) as f64 / 1000.0);
        let mut b = [0u8; 1];
        // SAFETY: one byte into our stack buffer.
        if unsafe { libc::read(rfd, b.as_mut_ptr().cast(), 1) } != 1 {
            fail("read");
        }
    }
    writer.join().expect("writer thread");
    samples.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    println!(
        "{mode} n={} min={:.1} median={:.1} p90={:.1} p99={:.1} max={:.1} us",
        samples.len(),
        q(0.0),
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
}
