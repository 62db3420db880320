//! Queue-level round trips: this process registers with the daemon as a
//! client itself and times `OP_PING` requests through the shared request
//! region, without the preload library. The difference to the forwarded
//! fcntl latency is the cost of interception, descriptor translation and
//! marshalling; the difference to the ping-pong floor is the queue protocol.

use super::{args, run_native, Common, Pool, Stack};
use crate::results::{QueuePingResults, SpinPoint};
use crate::stats::{fmt_ns, fmt_ratio, ratio};
use anyhow::{bail, Context};
use rustix::fd::{AsFd, OwnedFd};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
use std::path::Path;
use std::time::{Duration, Instant};
use virtuos_abi::call::{submit_and_wait, WaitPolicy};
use virtuos_abi::control::{self, ClientRequest, DaemonReply};
use virtuos_abi::ops::OP_PING;
use virtuos_abi::region::StatePage;
use virtuos_abi::ClientRegion;

#[derive(Clone, Debug, clap::Args)]
pub struct Opts {
    /// Client spin thresholds (polls of the entry before sleeping).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,10,100,1000,2000,10000,100000"
    )]
    pub spin: Vec<u32>,
    /// Pings per repetition.
    #[arg(long, default_value_t = 50_000)]
    pub iters: u64,
    /// Timed repetitions per spin threshold.
    #[arg(long, default_value_t = 7)]
    pub reps: u32,
}

pub fn run(o: &Opts, common: &Common) -> anyhow::Result<QueuePingResults> {
    common.check_binaries()?;
    let floor_worker = args([&"pingpong", &"--iters", &(o.iters * 4), &"--reps", &o.reps]);
    let rounds = common.rounds.max(1);
    let mut res = QueuePingResults {
        iters: o.iters,
        reps: o.reps,
        rounds,
        floor: None,
        points: Vec::new(),
        error: None,
    };
    let mut floor = Pool::default();
    let mut pings: Vec<Pool> = o.spin.iter().map(|_| Pool::default()).collect();
    let stack_client = if common.native_only {
        Err("not measured (--native-only)".to_string())
    } else {
        Stack::start(common)
            .and_then(|stack| {
                let client = Client::register(&stack.socket()).inspect_err(|e| {
                    eprintln!("queue-ping: {e:#}\ndaemon log:\n{}", stack.log_tail());
                })?;
                Ok((stack, client))
            })
            .map_err(|e| {
                let msg = format!("{e:#}");
                eprintln!("queue-ping: skipped: {msg}");
                msg
            })
    };
    for round in 1..=rounds {
        eprintln!(
            "queue-ping: round {round}/{rounds}: floor, {} spin values",
            o.spin.len()
        );
        floor.add(run_native(&floor_worker, common.timeout()));
        if let Ok((_, client)) = &stack_client {
            for (pool, &spin) in pings.iter_mut().zip(&o.spin) {
                pool.add_samples(client.measure(spin, o.iters, o.reps));
            }
        }
    }
    res.floor = floor.summary();
    match stack_client {
        Err(msg) => res.error = Some(msg),
        Ok((stack, client)) => {
            drop(client);
            drop(stack);
            res.points = o
                .spin
                .iter()
                .zip(&pings)
                .map(|(&spin, pool)| SpinPoint {
                    spin,
                    forwarded: pool.forwarded(),
                })
                .collect();
        }
    }
    Ok(res)
}

/// This process, registered with the daemon for the storage domain.
struct Client {
    _sock: OwnedFd,
    region: ClientRegion,
    state: StatePage,
}

impl Client {
    fn register(sock_path: &Path) -> anyhow::Result<Client> {
        let sock = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None)
            .context("socket")?;
        let addr = SocketAddrUnix::new(sock_path).context("socket address")?;
        rustix::net::connect(&sock, &addr)
            .with_context(|| format!("connect {}", sock_path.display()))?;
        control::send(
            sock.as_fd(),
            &ClientRequest::Register {
                domain: control::STORAGE.into(),
            },
            &[],
        )
        .context("send Register")?;
        let (reply, fds): (DaemonReply, _) = control::recv(sock.as_fd())
            .context("receive Register reply")?
            .context("daemon closed the connection")?;
        match reply {
            DaemonReply::Registered { .. } => {}
            DaemonReply::Error { message } => bail!("daemon refused Register: {message}"),
            other => bail!("unexpected reply to Register: {other:?}"),
        }
        let [region_fd, state_fd]: [OwnedFd; 2] = fds.try_into().map_err(|v: Vec<OwnedFd>| {
            anyhow::anyhow!("Registered carried {} fds, not 2", v.len())
        })?;
        let region = ClientRegion::map(&region_fd).context("map request region")?;
        region.validate().context("request region")?;
        let state = StatePage::map(&state_fd, false).context("map state page")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(state.get().is_valid() && state.get().serving()) {
            if Instant::now() > deadline {
                bail!("the storage domain never reported SERVING in the state page");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Client {
            _sock: sock,
            region,
            state,
        })
    }

    fn ping(&self, seq: u16, task: u32, policy: WaitPolicy) -> anyhow::Result<()> {
        let entry = self.region.entry(0).context("entry 0")?;
        entry.fill(OP_PING, seq, task, None, [0; 6]);
        let (r, _) = submit_and_wait(&self.region, self.state.get(), 0, policy)
            .map_err(|e| anyhow::anyhow!("OP_PING: {e:?}"))?;
        if r != 0 {
            bail!("OP_PING returned {r}");
        }
        Ok(())
    }

    /// ns per round trip, one sample per repetition.
    fn measure(&self, spin: u32, iters: u64, reps: u32) -> anyhow::Result<Vec<f64>> {
        let policy = WaitPolicy {
            spin,
            deadline: Some(Duration::from_secs(10)),
            ..WaitPolicy::default()
        };
        let task = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        let mut seq = 0u16;
        for _ in 0..iters.min(2_000) {
            seq = seq.wrapping_add(1);
            self.ping(seq, task, policy)?;
        }
        let mut samples = Vec::with_capacity(reps as usize);
        for _ in 0..reps {
            let start = Instant::now();
            for _ in 0..iters {
                seq = seq.wrapping_add(1);
                self.ping(seq, task, policy)?;
            }
            samples.push(start.elapsed().as_nanos() as f64 / iters as f64);
        }
        Ok(samples)
    }
}

pub fn print(r: &QueuePingResults) {
    println!(
        "queue OP_PING round trip; floor {}",
        r.floor.as_ref().map_or("n/a".into(), |f| fmt_ns(f.median))
    );
    if let Some(e) = &r.error {
        println!("  not measured: {e}");
        return;
    }
    println!("{:>8}  {:>12}  {:>12}", "spin", "round trip", "rt/floor");
    for p in &r.points {
        match p.forwarded.median() {
            Some(m) => println!(
                "{:>8}  {:>12}  {:>12}",
                p.spin,
                fmt_ns(m),
                fmt_ratio(r.floor.as_ref().and_then(|f| ratio(m, f.median)))
            ),
            None => println!(
                "{:>8}  {:>12}  ({})",
                p.spin,
                "n/a",
                p.forwarded.error.as_deref().unwrap_or("no data")
            ),
        }
    }
}
