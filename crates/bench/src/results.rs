//! What the drivers measured: the data behind RESULTS.md, results.json and
//! the plots. Forwarded measurements may be missing (the stack is not built,
//! or a run failed): they carry the error instead, and the report says so.

use crate::stats::Summary;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Results {
    pub meta: Meta,
    pub fcntl: Option<FcntlResults>,
    pub write: Option<WriteResults>,
    pub queue_ping: Option<QueuePingResults>,
    /// The network domain benchmarks (`virtuos-bench net`, also part of `all`).
    #[serde(default)]
    pub net: Option<NetResults>,
    /// The VM backend against native and the process backend (`virtuos-bench vm`).
    #[serde(default)]
    pub vm: Option<VmResults>,
    /// Free-form observations added by the drivers (and the report).
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    /// UTC, ISO 8601.
    pub date: String,
    /// The command that reproduces these results, with every parameter.
    pub command: String,
    /// `uname -r`.
    pub kernel: String,
    pub cpu_model: String,
    /// CPUs this process may use.
    pub cpus: usize,
    /// Where the native runs wrote, and its file system type.
    pub native_dir: String,
    pub native_fs: String,
    /// Where the storage domain's data lived (forwarded runs).
    pub data_dir: String,
    pub data_fs: String,
    /// `git describe`-like identification of the code, if known.
    pub revision: String,
    /// /proc/loadavg (1, 5, 15 min) when the run started and ended: other
    /// work on the machine shows up here.
    #[serde(default)]
    pub load_start: String,
    #[serde(default)]
    pub load_end: String,
}

/// A measurement of the forwarded configuration: a summary, or why none.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Forwarded {
    pub summary: Option<Summary>,
    pub error: Option<String>,
}

impl Forwarded {
    pub fn ok(s: Summary) -> Forwarded {
        Forwarded {
            summary: Some(s),
            error: None,
        }
    }
    pub fn failed(e: impl Into<String>) -> Forwarded {
        Forwarded {
            summary: None,
            error: Some(e.into()),
        }
    }
    pub fn median(&self) -> Option<f64> {
        self.summary.as_ref().map(|s| s.median)
    }
}

/// One spin threshold's forwarded latency.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SpinPoint {
    pub spin: u32,
    pub forwarded: Forwarded,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FcntlResults {
    pub iters: u64,
    pub reps: u32,
    /// Interleaved rounds; each configuration has `reps * rounds` samples.
    #[serde(default = "one")]
    pub rounds: u32,
    /// ns/call, native, on tmpfs.
    pub native: Summary,
    /// ns per cache-line round trip between two pinned threads.
    pub floor: Option<Summary>,
    /// ns/call, forwarded to the storage domain, per `VIRTUOS_SPIN`.
    pub forwarded: Vec<SpinPoint>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WritePoint {
    pub chunk: u64,
    /// MB/s (10^6 bytes per second).
    pub native: Summary,
    pub forwarded: Forwarded,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WriteResults {
    pub total: u64,
    pub reps: u32,
    #[serde(default = "one")]
    pub rounds: u32,
    pub points: Vec<WritePoint>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct QueuePingResults {
    pub iters: u64,
    pub reps: u32,
    #[serde(default = "one")]
    pub rounds: u32,
    /// ns per cache-line round trip between two pinned threads.
    pub floor: Option<Summary>,
    /// ns per OP_PING round trip, per client spin threshold.
    pub points: Vec<SpinPoint>,
    /// Set when the daemon could not be reached at all.
    pub error: Option<String>,
}

/// The network domain against native, measured in one run of `virtuos-bench
/// net` (or `all`), with its own date and reproduce command: `net` can
/// refresh these sections of an existing results.json alone.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NetResults {
    /// UTC, ISO 8601.
    pub date: String,
    /// The `virtuos-bench net ...` command that reproduces these sections.
    pub command: String,
    pub revision: String,
    pub load_start: String,
    pub load_end: String,
    pub tcp_lat: Option<TcpLatResults>,
    pub tcp_stream: Option<StreamResults>,
    pub http: Option<HttpResults>,
}

/// A forwarded configuration of the TCP latency benchmark.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LatPoint {
    /// `default` or `unbounded`.
    pub config: String,
    /// `VIRTUOS_SPIN`, `None` = unset (the preload library's default).
    pub spin: Option<u32>,
    pub forwarded: Forwarded,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TcpLatResults {
    /// Round trips per repetition.
    pub iters: u64,
    pub reps: u32,
    pub rounds: u32,
    /// ns per round trip, both ends native on the host's loopback.
    pub native: Summary,
    /// ns per round trip, both ends under virtuos (network domain loopback).
    pub points: Vec<LatPoint>,
}

/// TCP stream throughput per buffer size (same point shape as `write`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StreamResults {
    /// Bytes per connection (one connection per repetition).
    pub total: u64,
    pub reps: u32,
    pub rounds: u32,
    pub points: Vec<WritePoint>,
}

/// One way of reaching nginx with the load generator.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HttpPoint {
    /// `native`, `virtuos-veth`, `virtuos-forward`.
    pub config: String,
    /// What the load generator connected to, e.g. `http://169.254.3.2:8080/`.
    pub url: String,
    /// Requests per second (one sample per load-generator run).
    pub measured: Forwarded,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct HttpResults {
    /// `wrk` or `ab` (fallback when wrk is missing), with its version line.
    pub tool: String,
    pub tool_version: String,
    pub nginx_version: String,
    /// Size of the file served, bytes.
    pub object_size: u64,
    /// Seconds per load-generator run.
    pub duration: u64,
    pub connections: u32,
    pub threads: u32,
    pub reps: u32,
    pub rounds: u32,
    /// The first point is native; ratios are against it.
    pub points: Vec<HttpPoint>,
    /// Set when nothing could be measured (nginx missing, ...).
    pub error: Option<String>,
}

/// The VM backend (storage domain as PID 1 of a QEMU VM) measured in one
/// run of `virtuos-bench vm`, with its own date and reproduce command.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VmResults {
    /// UTC, ISO 8601.
    pub date: String,
    /// The `virtuos-bench vm ...` command that reproduces this section.
    pub command: String,
    pub revision: String,
    pub load_start: String,
    pub load_end: String,
    /// `tcg` or `kvm`, as `virtuos status --json` reported it.
    pub accel: String,
    /// `qemu-system-x86_64 --version`, first line.
    pub qemu: String,
    /// Region slots of the VM that served fork, fcntl and write.
    pub slots: u16,
    pub launch: Option<LaunchResults>,
    pub fork: Option<ForkResults>,
    /// fcntl(F_GETFL): native vs forwarded to the storage VM.
    pub fcntl: Option<FcntlResults>,
    /// Write throughput: native vs forwarded to the storage VM.
    pub write: Option<WriteResults>,
}

/// `virtuos up` to a domain ready to serve, per backend (and slot count).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LaunchResults {
    /// Measured boots per configuration (after one untimed warm-up each).
    pub boots: u32,
    pub points: Vec<LaunchPoint>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LaunchPoint {
    /// `process` or `vm`.
    pub backend: String,
    /// `--vm-slots` (vm only).
    pub slots: Option<u16>,
    /// Milliseconds from starting `virtuos up` to its return (the storage
    /// domain connected).
    pub up_ms: Forwarded,
    /// The daemon's own measure (`boot_ms` in `virtuos status --json`:
    /// QEMU start to the domain's Ready), vm only.
    pub boot_ms: Option<Summary>,
}

/// Process creation (the paper's Figure 5): a registered client with an
/// open storage file forks N children that `_exit` at once, then waits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ForkResults {
    /// Timed batches per configuration and round.
    pub reps: u32,
    pub rounds: u32,
    pub points: Vec<ForkPoint>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ForkPoint {
    /// Children per batch.
    pub n: u32,
    /// ns per batch (fork all, wait for all), native.
    pub native: Summary,
    /// ns per batch under virtuos, process backend.
    pub process: Forwarded,
    /// ns per batch under virtuos, vm backend.
    pub vm: Forwarded,
    /// ns from the end of a batch until the daemon had dropped every child
    /// (untimed in the batch): process backend, vm backend.
    #[serde(default)]
    pub process_cleanup: Option<Summary>,
    #[serde(default)]
    pub vm_cleanup: Option<Summary>,
}

fn one() -> u32 {
    1
}
