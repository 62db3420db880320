//! The other end of the TCP workers (`worker tcp-peer`), started by them:
//! `echo` answers every byte of one connection (lat_tcp's server); `send`
//! opens `conns` connections in turn and sends a fixed number of bytes on
//! each in `chunk`-byte writes (ttcp's transmitter).

use super::tcp::{connect, drain, read_exact_or_eof, write_all};
use anyhow::{bail, Context};
use std::net::{Shutdown, SocketAddr};

#[derive(Clone, Debug, clap::Subcommand)]
pub enum Mode {
    /// Echo single bytes until EOF.
    Echo,
    /// Send `--warmup` bytes on the first connection and `--total` on each of
    /// the `--conns` following ones.
    Send {
        #[arg(long, value_parser = crate::stats::parse_size)]
        total: u64,
        #[arg(long, value_parser = crate::stats::parse_size)]
        warmup: u64,
        #[arg(long, value_parser = crate::stats::parse_size)]
        chunk: u64,
        #[arg(long)]
        conns: u32,
    },
}

pub fn run(addr: SocketAddr, mode: &Mode) -> anyhow::Result<()> {
    match *mode {
        Mode::Echo => echo(addr),
        Mode::Send {
            total,
            warmup,
            chunk,
            conns,
        } => {
            if chunk == 0 {
                bail!("--chunk must be > 0");
            }
            let buf = vec![0x5au8; chunk as usize];
            send(addr, &buf, warmup).context("warm-up connection")?;
            for i in 0..conns {
                send(addr, &buf, total).with_context(|| format!("connection {i}"))?;
            }
            Ok(())
        }
    }
}

fn echo(addr: SocketAddr) -> anyhow::Result<()> {
    let mut s = connect(addr)?;
    let mut b = [0u8; 1];
    while read_exact_or_eof(&mut s, &mut b)? {
        write_all(&mut s, &b)?;
    }
    Ok(())
}

/// One connection: `total` bytes in `buf`-sized writes, half-close, then
/// wait for the receiver's close so that connections never overlap.
fn send(addr: SocketAddr, buf: &[u8], total: u64) -> anyhow::Result<()> {
    let mut s = connect(addr)?;
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        write_all(&mut s, &buf[..n])?;
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write).context("shutdown(SHUT_WR)")?;
    let extra = drain(&mut s, &mut [0u8; 64])?;
    if extra != 0 {
        bail!("the receiver sent {extra} unexpected bytes");
    }
    Ok(())
}
