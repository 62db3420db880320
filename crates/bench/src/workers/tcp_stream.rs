//! TCP stream throughput for one buffer size, ttcp style: the `tcp-peer
//! send` child transmits a fixed number of bytes per connection in
//! buffer-sized writes, this process receives them in buffer-sized reads and
//! counts. One connection per repetition (plus an untimed warm-up one).

use super::tcp::{accept, drain, listen, spawn_peer, IO_TIMEOUT};
use super::WorkerOutput;
use anyhow::{bail, Context};
use std::io::Read;
use std::time::Instant;

pub struct Params {
    pub total: u64,
    pub chunk: u64,
    pub reps: u32,
}

pub fn run(p: &Params) -> anyhow::Result<WorkerOutput> {
    if p.chunk == 0 || p.total == 0 || p.reps == 0 {
        bail!("--chunk, --total and --reps must be > 0");
    }
    let warmup = p.total.min(1 << 20);
    let (l, addr) = listen()?;
    let peer_args = crate::drivers::args([
        &"send",
        &"--total",
        &p.total,
        &"--warmup",
        &warmup,
        &"--chunk",
        &p.chunk,
        &"--conns",
        &p.reps,
    ]);
    let mut peer = spawn_peer(addr, &peer_args)?;
    let mut buf = vec![0u8; p.chunk as usize];
    receive(&l, &mut peer, &mut buf, warmup).context("warm-up connection")?;
    let mut samples = Vec::with_capacity(p.reps as usize);
    for i in 0..p.reps {
        let (bytes, secs) =
            receive(&l, &mut peer, &mut buf, p.total).with_context(|| format!("connection {i}"))?;
        samples.push(bytes as f64 / secs / 1e6);
    }
    drop(l);
    peer.finish()?;
    let mut out = WorkerOutput {
        bench: "tcp-stream".into(),
        unit: "MB/s".into(),
        samples,
        info: Default::default(),
    };
    out.info.insert("total".into(), p.total.into());
    out.info.insert("chunk".into(), p.chunk.into());
    Ok(out)
}

/// Accept one connection and read it to EOF; checks that exactly `want`
/// bytes arrived. Returns the bytes after the first read and the seconds
/// from the end of the first read to EOF (the peer's start-up is untimed).
fn receive(
    l: &std::net::TcpListener,
    peer: &mut super::tcp::Peer,
    buf: &mut [u8],
    want: u64,
) -> anyhow::Result<(u64, f64)> {
    let mut s = accept(l, peer)?;
    let first = loop {
        match s.read(buf) {
            Ok(0) => bail!("EOF before any byte"),
            Ok(n) => break n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("recv (timeout {IO_TIMEOUT:?})")),
        }
    };
    let start = Instant::now();
    let got = first + drain(&mut s, buf)?;
    let secs = start.elapsed().as_secs_f64();
    if got != want {
        bail!("received {got} bytes, expected {want}");
    }
    Ok((got - first, secs))
}
