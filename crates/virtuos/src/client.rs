//! Talking to the daemon over its control socket (what `virtuos` commands
//! and the tests use; the preload library has its own copy in its crate).

use crate::paths::Runtime;
use anyhow::{anyhow, bail, Result};
use rustix::fd::{AsFd, OwnedFd};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use std::io;
use std::path::Path;
use std::time::Duration;
use virtuos_abi::control::{self, ClientRequest, DaemonReply, StatusReport};

/// How long a command waits for the daemon's answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connect to the daemon's socket.
pub fn connect(socket: &Path) -> io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let addr = SocketAddrUnix::new(socket)?;
    rustix::net::connect(&fd, &addr)?;
    rustix::net::sockopt::set_socket_timeout(
        &fd,
        rustix::net::sockopt::Timeout::Recv,
        Some(REPLY_TIMEOUT),
    )?;
    Ok(fd)
}

/// One request, one reply (with its descriptors).
pub fn request(sock: &OwnedFd, req: &ClientRequest) -> Result<(DaemonReply, Vec<OwnedFd>)> {
    if let Err(e) = control::send(sock.as_fd(), req, &[]) {
        // A refused connection (too many of this user's) carries the
        // daemon's reason: that is the error to show.
        if let Ok(Some((DaemonReply::Error { message }, _))) =
            control::recv::<DaemonReply>(sock.as_fd())
        {
            bail!("virtuosd refused: {message}");
        }
        return Err(anyhow!(e).context("cannot send to virtuosd"));
    }
    match control::recv::<DaemonReply>(sock.as_fd()) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => bail!("virtuosd closed the connection without answering"),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            bail!("virtuosd did not answer within {REPLY_TIMEOUT:?}")
        }
        Err(e) => Err(anyhow!(e).context("cannot read virtuosd's answer")),
    }
}

/// Is nobody listening on the socket (as opposed to another failure)?
pub fn not_listening(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ECONNREFUSED) | Some(libc::ENOTDIR)
    )
}

/// The daemon's status, or `None` when no daemon listens on this runtime dir.
pub fn status(rt: &Runtime) -> Result<Option<StatusReport>> {
    let sock = match connect(&rt.socket()) {
        Ok(s) => s,
        Err(e) if not_listening(&e) => return Ok(None),
        Err(e) => {
            return Err(anyhow!(e).context(format!("cannot connect to {}", rt.socket().display())))
        }
    };
    match request(&sock, &ClientRequest::Status)?.0 {
        DaemonReply::Status(s) => Ok(Some(s)),
        DaemonReply::Error { message } => bail!("virtuosd: {message}"),
        other => bail!("unexpected answer from virtuosd: {other:?}"),
    }
}

/// Is process `pid` alive (a zombie counts as dead)?
pub fn pid_alive(pid: u32) -> bool {
    let Some(p) = rustix::process::Pid::from_raw(pid as i32) else {
        return false;
    };
    if rustix::process::test_kill_process(p).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next()),
            Some(Some('Z')) | Some(Some('X'))
        ),
        Err(_) => false,
    }
}

/// The pid in a pid file, if it names a live process.
pub fn live_pid_in(path: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    pid_alive(pid).then_some(pid)
}
