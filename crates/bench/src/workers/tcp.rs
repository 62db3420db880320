//! Helpers of the TCP workers: a loopback listener, the peer process (this
//! binary's `worker tcp-peer`, spawned by the measuring worker so that under
//! `virtuos run` it inherits the preload library and its sockets live in the
//! network domain too), bounded accepts and exact reads and writes.
//!
//! Everything goes through `std::net`, i.e. glibc's socket calls, as an
//! unmodified program's would.

use anyhow::{bail, Context};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long setup steps (peer start, accept) and single I/O calls may take
/// before the worker gives up instead of hanging.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A listener on 127.0.0.1 (natively the host's loopback, under virtuos the
/// network domain's) on a free port.
pub fn listen() -> anyhow::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    let addr = l.local_addr().context("getsockname")?;
    Ok((l, addr))
}

/// The peer: `<this binary> worker tcp-peer --connect ADDR ARGS`.
pub fn spawn_peer(addr: SocketAddr, args: &[String]) -> anyhow::Result<Peer> {
    let exe = std::env::current_exe().context("cannot find the virtuos-bench executable")?;
    let child = Command::new(exe)
        .args(["worker", "tcp-peer", "--connect", &addr.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawn the tcp-peer worker")?;
    Ok(Peer { child: Some(child) })
}

/// The peer process; killed on drop unless `finish` reaped it.
pub struct Peer {
    child: Option<Child>,
}

impl Peer {
    /// Wait (bounded) for the peer to exit after the last connection closed.
    pub fn finish(mut self) -> anyhow::Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        let start = Instant::now();
        loop {
            if let Some(st) = c.try_wait()? {
                if !st.success() {
                    bail!("the tcp-peer worker failed: {st}");
                }
                return Ok(());
            }
            if start.elapsed() > IO_TIMEOUT {
                let _ = c.kill();
                let _ = c.wait();
                bail!("the tcp-peer worker did not exit (killed)");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Fail if the peer already died (it then never connects).
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.child.as_mut() {
            if let Some(st) = c.try_wait()? {
                self.child = None;
                bail!("the tcp-peer worker exited before connecting: {st}");
            }
        }
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Accept one connection from `peer` within `IO_TIMEOUT`; the stream gets
/// TCP_NODELAY and I/O timeouts.
pub fn accept(l: &TcpListener, peer: &mut Peer) -> anyhow::Result<TcpStream> {
    l.set_nonblocking(true).context("listener O_NONBLOCK")?;
    let start = Instant::now();
    let s = loop {
        match l.accept() {
            Ok((s, _)) => break s,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(e) => return Err(e).context("accept"),
        }
        peer.check_alive()?;
        if start.elapsed() > IO_TIMEOUT {
            bail!("no connection from the tcp-peer worker within {IO_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    s.set_nonblocking(false).context("stream blocking")?;
    configure(&s)?;
    Ok(s)
}

/// Connect to `addr` (the listener exists before the peer starts), configured.
pub fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let s =
        TcpStream::connect_timeout(&addr, IO_TIMEOUT).with_context(|| format!("connect {addr}"))?;
    configure(&s)?;
    Ok(s)
}

fn configure(s: &TcpStream) -> anyhow::Result<()> {
    s.set_nodelay(true).context("TCP_NODELAY")?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .context("SO_RCVTIMEO")?;
    s.set_write_timeout(Some(IO_TIMEOUT))
        .context("SO_SNDTIMEO")?;
    Ok(())
}

/// Read exactly `buf.len()` bytes; `false` on a clean EOF before any byte.
pub fn read_exact_or_eof(s: &mut TcpStream, buf: &mut [u8]) -> anyhow::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => bail!("EOF after {got} of {} bytes", buf.len()),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("recv"),
        }
    }
    Ok(true)
}

/// Read until EOF in `buf`-sized reads; returns the byte count.
pub fn drain(s: &mut TcpStream, buf: &mut [u8]) -> anyhow::Result<u64> {
    let mut total = 0u64;
    loop {
        match s.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("recv after {total} bytes")),
        }
    }
}

/// Write all of `buf`.
pub fn write_all(s: &mut TcpStream, buf: &[u8]) -> anyhow::Result<()> {
    s.write_all(buf).context("send")
}
