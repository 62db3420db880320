//! Sequential write throughput for one buffer size: the paper's §5.1
//! copying-overhead microbenchmark (Figures 3 and 4).

use super::{close, open, WorkerOutput};
use anyhow::{bail, Context};
use std::time::Instant;

pub struct Params {
    pub path: String,
    pub total: u64,
    pub chunk: u64,
    pub reps: u32,
}

pub fn run(p: &Params) -> anyhow::Result<WorkerOutput> {
    if p.chunk == 0 || p.total == 0 {
        bail!("--chunk and --total must be > 0");
    }
    let buf = vec![0xa5u8; p.chunk as usize];
    // Warm-up pass of at most 1 MiB (starts the domain's workers, faults in
    // the buffer), untimed.
    write_file(&p.path, &buf, p.total.min(1 << 20))?;
    let mut samples = Vec::with_capacity(p.reps as usize);
    for _ in 0..p.reps {
        let secs = write_file(&p.path, &buf, p.total)?;
        samples.push(p.total as f64 / secs / 1e6);
    }
    let mut out = WorkerOutput {
        bench: "write".into(),
        unit: "MB/s".into(),
        samples,
        info: Default::default(),
    };
    out.info.insert("path".into(), p.path.clone().into());
    out.info.insert("total".into(), p.total.into());
    out.info.insert("chunk".into(), p.chunk.into());
    Ok(out)
}

/// Open (truncating), write `total` bytes in `buf`-sized writes, close.
/// Returns the seconds spent in the writes (open and close untimed).
fn write_file(path: &str, buf: &[u8], total: u64) -> anyhow::Result<f64> {
    let fd = open(path, libc::O_CREAT | libc::O_TRUNC | libc::O_WRONLY)
        .with_context(|| format!("open {path}"))?;
    let start = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        // SAFETY: `buf` holds at least `n` initialised bytes.
        let r = unsafe { libc::write(fd, buf.as_ptr().cast(), n) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            let _ = close(fd);
            bail!("write {path}: {e}");
        }
        if r == 0 {
            let _ = close(fd);
            bail!("write {path}: wrote 0 bytes");
        }
        left -= r as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    close(fd).with_context(|| format!("close {path}"))?;
    Ok(secs)
}
