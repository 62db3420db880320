//! A stand-in client process for the daemon's tests: connects to
//! `$VIRTUOS_RUNTIME_DIR/virtuosd.sock` and prints one line, then stays
//! alive until its stdin closes. Modes:
//!
//! - (none) / `register`: `Register`; prints `registered <id> <fds>` or
//!   `error <message>`;
//! - `claim-fork PARENT_PID TOKEN`: `ClaimFork`, the same line;
//! - `report N REASON`: N times: register, then `ReportFault` with REASON;
//!   prints `reported N`;
//! - `hold N`: opens N connections and keeps them idle; prints `held N
//!   refused R` (R: connections the daemon answered with an error);
//! - `fork-prepare N NPROC`: sets RLIMIT_NPROC to NPROC, registers and
//!   submits `OP_FORK_PREPARE` N times (a flood of pending shadows);
//!   prints `prepared K result E` (K tokens, E the first failure, or 0);
//! - `loop`: registers and makes its submit list loop (entry 3 links to
//!   itself); prints `failed` once its state page says FAILED (within
//!   10 s), else `serving`;
//! - `fork-flood NPROC` (run under `virtuos run`): opens `/storage`, sets
//!   RLIMIT_NPROC, forks children that wait, until fork fails; prints
//!   `forks K errno E procs P` (P: processes of its uid then).

use rustix::fd::OwnedFd;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use virtuos_abi::call::{self, WaitPolicy};
use virtuos_abi::control::{self, ClientRequest, DaemonReply, STORAGE};
use virtuos_abi::ops::OP_FORK_PREPARE;
use virtuos_abi::region::StatePage;
use virtuos_abi::state::status;
use virtuos_abi::ClientRegion;

fn socket_path() -> PathBuf {
    let dir = std::env::var_os("VIRTUOS_RUNTIME_DIR").expect("VIRTUOS_RUNTIME_DIR");
    std::path::Path::new(&dir).join("virtuosd.sock")
}

fn connect() -> rustix::io::Result<OwnedFd> {
    let sock = rustix::net::socket(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        None,
    )?;
    rustix::net::connect(&sock, &rustix::net::SocketAddrUnix::new(socket_path())?)?;
    Ok(sock)
}

fn talk(req: &ClientRequest) -> (DaemonReply, Vec<OwnedFd>) {
    let sock = connect().expect("connect");
    // A refused connection carries the daemon's reason; read it even
    // when the send fails.
    let _ = control::send(sock.as_fd(), req, &[]);
    control::recv::<DaemonReply>(sock.as_fd())
        .unwrap()
        .expect("the daemon closed the connection")
}

fn register() -> ClientRequest {
    ClientRequest::Register {
        domain: STORAGE.into(),
    }
}

fn line_of(reply: (DaemonReply, Vec<OwnedFd>)) -> String {
    match reply {
        (DaemonReply::Registered { client_id, .. }, fds) => {
            format!("registered {client_id} {}", fds.len())
        }
        (DaemonReply::Error { message }, _) => format!("error {message}"),
        other => format!("error unexpected {other:?}"),
    }
}

/// Register and map the region and the state page.
fn attach() -> (ClientRegion, StatePage) {
    let (reply, fds) = talk(&register());
    assert!(
        matches!(reply, DaemonReply::Registered { .. }),
        "register: {reply:?}"
    );
    let region = ClientRegion::map(&fds[0]).unwrap();
    let state = StatePage::map(&fds[1], false).unwrap();
    (region, state)
}

fn hold(n: usize) -> String {
    let mut conns = Vec::new();
    for _ in 0..n {
        match connect() {
            Ok(c) => conns.push(c),
            Err(e) => return format!("held {} connect error {e}", conns.len()),
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut refused = 0;
    for c in &conns {
        let mut buf = [0u8; 4096];
        if let Ok(n) = rustix::net::recv(c, &mut buf, rustix::net::RecvFlags::DONTWAIT) {
            if n.0 > 0 && buf[..n.0].starts_with(b"{\"Error\"") {
                refused += 1;
            }
        }
    }
    let line = format!("held {} refused {refused}", conns.len());
    // Keep them open until stdin closes.
    std::mem::forget(conns);
    line
}

fn set_nproc(n: u64) {
    rustix::process::setrlimit(
        rustix::process::Resource::Nproc,
        rustix::process::Rlimit {
            current: Some(n),
            maximum: Some(n),
        },
    )
    .expect("setrlimit(RLIMIT_NPROC)");
}

fn fork_prepare(n: usize, nproc: u64) -> String {
    set_nproc(nproc);
    let (region, state) = attach();
    let policy = WaitPolicy {
        deadline: Some(Duration::from_secs(10)),
        ..WaitPolicy::default()
    };
    for k in 0..n {
        let e = region.entry(1).unwrap();
        e.fill(OP_FORK_PREPARE, k as u16, std::process::id(), None, [0; 6]);
        match call::submit_and_wait(&region, state.get(), 1, policy) {
            Ok((r, _)) if r > 0 => {}
            Ok((r, _)) => return format!("prepared {k} result {r}"),
            Err(e) => return format!("prepared {k} error {e:?}"),
        }
    }
    format!("prepared {n} result 0")
}

fn looping() -> String {
    let (region, state) = attach();
    let e = region.entry(3).unwrap();
    e.fill(
        virtuos_abi::ops::OP_PING,
        1,
        std::process::id(),
        None,
        [0; 6],
    );
    // Entry 3 links to itself; the head names it (tag 1).
    e.next.store(4, Ordering::Release);
    region
        .header()
        .submit_head
        .store((1 << 16) | 4, Ordering::Release);
    region.ring_if_idle(state.get());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if state.get().status.load(Ordering::Acquire) == status::FAILED {
            return "failed".into();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    "serving".into()
}

/// Processes (thread group leaders) whose real uid is ours.
fn my_processes() -> usize {
    let me = rustix::process::getuid().as_raw().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("status")).is_ok_and(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    == Some(me.as_str())
            })
        })
        .count()
}

fn fork_flood(nproc: u64) -> String {
    // Forwarded state: a descriptor in the storage domain, so every fork
    // prepares a shadow there.
    let dir = std::fs::File::open("/storage").expect("open /storage");
    set_nproc(nproc);
    let (rd, wr) = rustix::pipe::pipe().unwrap();
    let mut children = Vec::new();
    let mut errno = 0;
    for _ in 0..(4 * nproc) {
        // SAFETY: the child only blocks on the pipe and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            drop(wr);
            let mut b = [0u8; 1];
            let _ = rustix::io::read(&rd, &mut b);
            // SAFETY: leave without running the parent's destructors.
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            break;
        }
        children.push(pid);
    }
    std::thread::sleep(Duration::from_millis(300));
    let procs = my_processes();
    drop(wr);
    for pid in &children {
        // SAFETY: waiting for our own children.
        unsafe { libc::waitpid(*pid, std::ptr::null_mut(), 0) };
    }
    drop(dir);
    format!("forks {} errno {errno} procs {procs}", children.len())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let line = match arg(0) {
        "claim-fork" => line_of(talk(&ClientRequest::ClaimFork {
            domain: STORAGE.into(),
            parent_pid: arg(1).parse().unwrap(),
            token: arg(2).parse().unwrap(),
        })),
        "report" => {
            let n: usize = arg(1).parse().unwrap();
            for _ in 0..n {
                let (_reply, _fds) = talk(&register());
                let _ = talk(&ClientRequest::ReportFault {
                    domain: STORAGE.into(),
                    reason: arg(2).into(),
                });
            }
            format!("reported {n}")
        }
        "hold" => hold(arg(1).parse().unwrap()),
        "fork-prepare" => fork_prepare(arg(1).parse().unwrap(), arg(2).parse().unwrap()),
        "loop" => looping(),
        "fork-flood" => {
            let line = fork_flood(arg(1).parse().unwrap());
            println!("{line}");
            return;
        }
        _ => line_of(talk(&register())),
    };
    println!("{line}");
    std::io::stdout().flush().unwrap();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}
