//! `vm`: the VM backend (storage domain as PID 1 of a QEMU VM; TCG on
//! machines without usable KVM) against native, in one run: launch to
//! ready (vm and process backends), process creation (Figure 5: native,
//! process backend, vm backend), and the fcntl latency and write
//! throughput microbenchmarks forwarded to the VM. Merged into an existing
//! results.json (other sections kept), then RESULTS.md and the plots are
//! rendered again.

use super::launch::{self, Config};
use super::{fcntl, fork, write, Common, Stack};
use crate::results::VmResults;
use crate::stats::parse_size;
use anyhow::Context;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Bench {
    Launch,
    Fork,
    Fcntl,
    Write,
}

impl Bench {
    fn name(self) -> &'static str {
        match self {
            Bench::Launch => "launch",
            Bench::Fork => "fork",
            Bench::Fcntl => "fcntl",
            Bench::Write => "write",
        }
    }
}

/// Write sizes for the VM (every 4x of the paper's 32 B .. 2 MiB: a TCG
/// guest is slow).
pub const VM_CHUNKS: &str = "32,128,512,2048,8192,32768,131072,524288,2097152";

#[derive(Clone, Debug, clap::Args)]
pub struct Opts {
    /// Which VM benchmarks to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "launch,fork,fcntl,write"
    )]
    pub vm: Vec<Bench>,
    /// Region slots of the VM that serves fork, fcntl and write (a batch of
    /// N forks needs N + 1).
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u16).range(1..=63))]
    pub vm_slots: u16,
    /// Measured boots per launch configuration (after one warm-up each).
    #[arg(long, default_value_t = 5)]
    pub boots: u32,
    /// `--vm-slots` values to boot in the launch benchmark.
    #[arg(long, value_delimiter = ',', default_value = "16,40")]
    pub launch_slots: Vec<u16>,
    #[command(flatten)]
    pub fork: fork::Opts,
    /// fcntl: spin thresholds (VIRTUOS_SPIN; the preload default is 2000).
    #[arg(long, value_delimiter = ',', default_value = "0,2000")]
    pub fcntl_spin: Vec<u32>,
    /// fcntl calls per repetition.
    #[arg(long, default_value_t = 2_000)]
    pub fcntl_iters: u64,
    /// fcntl repetitions per configuration and round.
    #[arg(long, default_value_t = 5)]
    pub fcntl_reps: u32,
    /// Round trips per repetition of the ping-pong floor.
    #[arg(long, default_value_t = 50_000)]
    pub floor_iters: u64,
    /// Write buffer sizes.
    #[arg(long, value_delimiter = ',', value_parser = parse_size, default_value = VM_CHUNKS)]
    pub chunks: Vec<u64>,
    /// Bytes written per repetition.
    #[arg(long, value_parser = parse_size, default_value = "2MiB")]
    pub total: u64,
    /// Write repetitions per configuration and round.
    #[arg(long, default_value_t = 3)]
    pub write_reps: u32,
}

impl Opts {
    /// The `vm` command line that reproduces these measurements.
    pub fn command(&self, common: &Common, out: &Path) -> String {
        let list = |v: Vec<String>| v.join(",");
        let mut c = format!(
            "target/release/virtuos-bench vm --vm {} --vm-slots {} --boots {} --launch-slots {} \
             --fork-sizes {} --fork-reps {} --fcntl-spin {} --fcntl-iters {} --fcntl-reps {} \
             --floor-iters {} --chunks {} --total {} --write-reps {} --rounds {} --out {}",
            list(self.vm.iter().map(|b| b.name().to_string()).collect()),
            self.vm_slots,
            self.boots,
            list(self.launch_slots.iter().map(u16::to_string).collect()),
            list(self.fork.fork_sizes.iter().map(u32::to_string).collect()),
            self.fork.fork_reps,
            list(self.fcntl_spin.iter().map(u32::to_string).collect()),
            self.fcntl_iters,
            self.fcntl_reps,
            self.floor_iters,
            list(self.chunks.iter().map(u64::to_string).collect()),
            self.total,
            self.write_reps,
            common.rounds,
            out.display()
        );
        if common.native_only {
            c.push_str(" --native-only");
        }
        if common.tmp != Path::new("/dev/shm") {
            c.push_str(&format!(" --tmp {}", common.tmp.display()));
        }
        if common.timeout != 900 {
            c.push_str(&format!(" --timeout {}", common.timeout));
        }
        c
    }

    fn wants(&self, b: Bench) -> bool {
        self.vm.contains(&b)
    }
}

/// `qemu-system-x86_64 --version`, first line.
fn qemu_version() -> String {
    std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The static domain server the VM boots: `$VIRTUOS_DOMAIN_STATIC`, else
/// the one `virtuos up --backend vm` builds in the target directory (one
/// untimed boot builds it if needed). Copied into the snapshot directory and
/// passed to every vm stack, so no boot runs cargo and a concurrent build
/// cannot swap it. Returns the stacks' extra environment.
fn static_domain(common: &Common, slots: u16) -> anyhow::Result<Vec<(String, String)>> {
    const VAR: &str = "VIRTUOS_DOMAIN_STATIC";
    let from = match std::env::var_os(VAR).filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => {
            eprintln!("vm: preparing the VM image (first time: builds the static domain server)");
            let mut o = Config::Vm { slots }.stack_opts(&[]);
            o.up_timeout = std::time::Duration::from_secs(900);
            drop(Stack::start_opts(common, &o).context("preparing boot")?);
            let virtuos = match &common.virtuos {
                Some(v) => v.clone(),
                None => std::env::current_exe()?,
            };
            let target = virtuos
                .parent()
                .and_then(Path::parent)
                .context("no target directory")?;
            target.join("x86_64-unknown-linux-gnu/release/virtuos-domain")
        }
    };
    let copy = super::snapshot_file(common, &from, "virtuos-domain-static")?;
    Ok(vec![(VAR.into(), copy.display().to_string())])
}

/// Start the stack the VM benchmarks share, or say why not.
fn start(common: &Common, c: &Config, env: &[(String, String)]) -> Result<Stack, String> {
    Stack::start_opts(common, &c.stack_opts(env)).map_err(|e| {
        let msg = format!("{e:#}");
        eprintln!("vm: {c:?} stack not started: {msg}");
        msg
    })
}

pub fn measure(o: &Opts, common: &Common, out: &Path) -> anyhow::Result<VmResults> {
    let mut r = VmResults {
        date: super::output::utc_now(),
        command: o.command(common, out),
        revision: super::output::revision(),
        load_start: super::output::loadavg(),
        qemu: qemu_version(),
        slots: o.vm_slots,
        ..VmResults::default()
    };
    let vm_env: Result<Vec<(String, String)>, String> = if common.native_only {
        Err("not measured (--native-only)".into())
    } else {
        static_domain(common, o.vm_slots).map_err(|e| {
            let msg = format!("{e:#}");
            eprintln!("vm: cannot prepare the VM: {msg}");
            msg
        })
    };
    if o.wants(Bench::Launch) && !common.native_only {
        let mut configs = vec![Config::Process];
        configs.extend(o.launch_slots.iter().map(|&slots| Config::Vm { slots }));
        if vm_env.is_err() {
            configs.truncate(1);
        }
        let l = launch::measure(&configs, o.boots, common, vm_env.as_deref().unwrap_or(&[]))?;
        launch::print(&l);
        r.launch = Some(l);
    }
    let vm_config = Config::Vm { slots: o.vm_slots };
    let need_vm = o.wants(Bench::Fork) || o.wants(Bench::Fcntl) || o.wants(Bench::Write);
    let vm = match (&vm_env, need_vm) {
        (_, false) => Err("not selected".to_string()),
        (Err(e), _) => Err(e.clone()),
        (Ok(env), true) => start(common, &vm_config, env),
    };
    if let Ok(stack) = &vm {
        let status = stack.status_json().unwrap_or_default();
        r.accel = status["domains"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["name"] == "storage"))
            .and_then(|d| d["accel"].as_str())
            .unwrap_or("unknown")
            .to_string();
    }
    if o.wants(Bench::Fork) {
        let process = if common.native_only {
            Err("not measured (--native-only)".to_string())
        } else {
            start(common, &Config::Process, &[])
        };
        let f = fork::measure(
            &o.fork,
            common,
            process.as_ref().map_err(Clone::clone),
            vm.as_ref().map_err(Clone::clone),
        )?;
        drop(process);
        fork::print(&f);
        r.fork = Some(f);
    }
    if o.wants(Bench::Fcntl) {
        let f = fcntl::run_on(
            &fcntl::Opts {
                spin: o.fcntl_spin.clone(),
                iters: o.fcntl_iters,
                reps: o.fcntl_reps,
                floor_iters: o.floor_iters,
            },
            common,
            vm.as_ref().map_err(Clone::clone),
        )?;
        fcntl::print(&f);
        r.fcntl = Some(f);
    }
    if o.wants(Bench::Write) {
        let w = write::run_on(
            &write::Opts {
                chunks: o.chunks.clone(),
                total: o.total,
                reps: o.write_reps,
            },
            common,
            vm.as_ref().map_err(Clone::clone),
        )?;
        write::print(&w);
        r.write = Some(w);
    }
    drop(vm);
    r.load_end = super::output::loadavg();
    Ok(r)
}

/// `vm`: measure, merge into `out/results.json` (created if missing) and
/// render the report.
pub fn run(o: &Opts, common: &Common, out: &Path) -> anyhow::Result<()> {
    if !common.native_only {
        common.check_binaries()?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let vm = measure(o, common, out)?;
    let command = vm.command.clone();
    super::output::merge_section(out, common, command, |r| r.vm = Some(vm))
}
