//! Process creation, the paper's Figure 5: a process that holds an open
//! file (under virtuos: a storage-domain descriptor, so it is a client
//! whose shadow every child must inherit) forks N children that `_exit(0)`
//! at once, and waits for all of them; one sample = one batch.
//!
//! The children are made with glibc's `fork()`, as any program makes them:
//! under virtuos the preload library catches the fork, prepares a forked
//! shadow in the domain first (`OP_FORK_PREPARE`), and each child claims it
//! (`ClaimFork` to the daemon) from the library's `pthread_atfork` child
//! handler before `fork()` returns in the child. So a batch includes N
//! shadow forks in the domain and N claims through the daemon.
//!
//! Under `virtuos run` (`VIRTUOS_RUNTIME_DIR` set) the worker waits, untimed,
//! after each batch until the daemon has dropped every child of it (their
//! region slots go back to the pool, on the vm backend), so that batches do
//! not eat each other's slots; that wait is reported separately.

use super::{close, ns_since, open, WorkerOutput};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct Params {
    pub path: String,
    /// Children per batch.
    pub n: u32,
    pub reps: u32,
}

/// How long to wait for the daemon to drop a batch's children.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(p: &Params) -> anyhow::Result<WorkerOutput> {
    if p.n == 0 {
        bail!("--n must be > 0");
    }
    let fd =
        open(&p.path, libc::O_CREAT | libc::O_RDWR).with_context(|| format!("open {}", p.path))?;
    let daemon = std::env::var_os("VIRTUOS_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join("virtuosd.sock"));
    // Warm-up batch (pages in the fork paths, starts the domain's workers).
    let pids = batch(p.n)?;
    if let Some(sock) = &daemon {
        wait_dropped(sock, &pids)?;
    }
    let mut samples = Vec::with_capacity(p.reps as usize);
    let mut cleanup = Vec::new();
    for _ in 0..p.reps {
        let start = Instant::now();
        let pids = batch(p.n)?;
        samples.push(ns_since(start));
        if let Some(sock) = &daemon {
            let t = Instant::now();
            wait_dropped(sock, &pids)?;
            cleanup.push(ns_since(t));
        }
    }
    close(fd)?;
    let mut out = WorkerOutput {
        bench: "fork".into(),
        unit: "ns/batch".into(),
        samples,
        info: Default::default(),
    };
    out.info.insert("path".into(), p.path.clone().into());
    out.info.insert("n".into(), p.n.into());
    if !cleanup.is_empty() {
        out.info.insert("cleanup_ns".into(), cleanup.into());
    }
    Ok(out)
}

/// Fork `n` children that exit at once; wait for all. Returns their pids.
fn batch(n: u32) -> anyhow::Result<Vec<libc::pid_t>> {
    let mut pids = Vec::with_capacity(n as usize);
    let mut err = None;
    for _ in 0..n {
        // SAFETY: the child calls only `_exit`, which is async-signal-safe.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: ends the child at once, without running atexit
            // handlers or flushing the parent's stdio buffers.
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            err = Some(std::io::Error::last_os_error());
            break;
        }
        pids.push(pid);
    }
    let mut bad = 0;
    for &pid in &pids {
        let mut status = 0;
        loop {
            // SAFETY: waits for our own child; `status` is a valid out pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r >= 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                bail!("waitpid {pid}: {e}");
            }
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            bad += 1;
        }
    }
    if let Some(e) = err {
        bail!("fork {} of {n}: {e}", pids.len() + 1);
    }
    if bad > 0 {
        bail!("{bad} of {n} children did not exit with status 0");
    }
    Ok(pids)
}

/// Wait until the daemon lists none of `pids` as a client any more.
fn wait_dropped(sock: &Path, pids: &[libc::pid_t]) -> anyhow::Result<()> {
    let deadline = Instant::now() + CLEANUP_TIMEOUT;
    loop {
        let report = status(sock)?;
        let left = report
            .domains
            .iter()
            .flat_map(|d| &d.clients)
            .filter(|c| pids.contains(&(c.pid as libc::pid_t)))
            .count();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the daemon still lists {left} of {} exited children as clients after {} s",
                pids.len(),
                CLEANUP_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn status(sock: &Path) -> anyhow::Result<virtuos_abi::control::StatusReport> {
    use rustix::fd::AsFd;
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    use virtuos_abi::control::{self, ClientRequest, DaemonReply};
    let s = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .context("socket")?;
    let addr = SocketAddrUnix::new(sock).context("socket address")?;
    rustix::net::connect(&s, &addr).with_context(|| format!("connect {}", sock.display()))?;
    control::send(s.as_fd(), &ClientRequest::Status, &[]).context("send Status")?;
    match control::recv::<DaemonReply>(s.as_fd()).context("receive status")? {
        Some((DaemonReply::Status(r), _)) => Ok(r),
        Some((other, _)) => bail!("the daemon answered Status with {other:?}"),
        None => bail!("the daemon closed the connection"),
    }
}
