//! TCP 1-byte round-trip latency, lmbench's lat_tcp: this process and its
//! `tcp-peer echo` child bounce one byte over a loopback TCP connection.
//! Under `virtuos run` both sockets live in the network domain, so each
//! round trip is four forwarded calls (send and recv on each side).

use super::tcp::{accept, listen, read_exact_or_eof, spawn_peer, write_all};
use super::{ns_since, WorkerOutput};
use anyhow::{bail, Context};
use std::net::TcpStream;
use std::time::Instant;

pub struct Params {
    pub iters: u64,
    pub reps: u32,
}

pub fn run(p: &Params) -> anyhow::Result<WorkerOutput> {
    if p.iters == 0 {
        bail!("--iters must be > 0");
    }
    let (l, addr) = listen()?;
    let mut peer = spawn_peer(addr, &["echo".to_string()])?;
    let mut s = accept(&l, &mut peer)?;
    drop(l);
    // Warm-up: the domain starts its workers, both sides fault in.
    round_trips(&mut s, p.iters.min(1000)).context("warm-up")?;
    let mut samples = Vec::with_capacity(p.reps as usize);
    for _ in 0..p.reps {
        let start = Instant::now();
        round_trips(&mut s, p.iters)?;
        samples.push(ns_since(start) / p.iters as f64);
    }
    drop(s);
    peer.finish()?;
    let mut out = WorkerOutput {
        bench: "tcp-lat".into(),
        unit: "ns/roundtrip".into(),
        samples,
        info: Default::default(),
    };
    out.info.insert("iters".into(), p.iters.into());
    out.info.insert("addr".into(), addr.to_string().into());
    if let Ok(spin) = std::env::var("VIRTUOS_SPIN") {
        out.info.insert("VIRTUOS_SPIN".into(), spin.into());
    }
    Ok(out)
}

/// `n` one-byte round trips; checks that the byte comes back.
fn round_trips(s: &mut TcpStream, n: u64) -> anyhow::Result<()> {
    let mut b = [0u8; 1];
    for i in 0..n {
        let ping = [i as u8];
        write_all(s, &ping)?;
        if !read_exact_or_eof(s, &mut b)? {
            bail!("the echo peer closed the connection after {i} round trips");
        }
        if b != ping {
            bail!("echo returned {:#x}, sent {:#x}", b[0], ping[0]);
        }
    }
    Ok(())
}
