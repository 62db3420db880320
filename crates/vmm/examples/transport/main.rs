//! Host side of the transport experiments (TRANSPORT.md).
//!
//! cargo run -p virtuos-vmm --release --example transport -- \
//!     [--cpus N] [--maxcpus N] [--rounds N] [--adds N] [--tests ivshmem,pmem,dax,doorbell,vport]
//!
//! Boots Debian's cloud kernel under the selected accelerator with the
//! static `guest_probe` as /init, two ivshmem-plain devices and one NVDIMM
//! (files in /dev/shm), and an ivshmem-doorbell device served by an
//! in-process ivshmem server (memfd). Plays the host half of each test and
//! prints the guest's and the host's figures.

use anyhow::{Context, Result};
use shm::ShmFile;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use virtuos_vmm::qemu::{Device, SharedMem, Vm, VmConfig};
use virtuos_vmm::{accel, cache, initramfs, kernel, static_bin};

mod ivshmem;
mod shm;
mod sys;

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let cpus: u32 = opt("--cpus", "1").parse()?;
    let maxcpus: u32 = opt("--maxcpus", &cpus.to_string()).parse()?;
    let rounds: u64 = opt("--rounds", "2000").parse()?;
    let adds: u64 = opt("--adds", "100000").parse()?;
    let tests = opt("--tests", "ivshmem,pmem,dax,doorbell,vport");

    let cache = cache::cache_dir();
    let k = kernel::fetch(&cache)?;
    let probe =
        static_bin::build_static("virtuos-vmm", static_bin::Artifact::Example("guest_probe"))?;
    let spec = initramfs::InitramfsSpec::new(&probe);
    let img = initramfs::build(&k, &spec, &cache)?;
    println!(
        "kernel {} ({}), initramfs {} modules={}",
        k.release,
        k.version,
        img.path.display(),
        img.modules.join(",")
    );

    let run = std::env::temp_dir().join(format!("virtuos-transport-{}", std::process::id()));
    std::fs::create_dir_all(&run)?;
    let size = 16u64 << 20;
    let tag = std::process::id();
    let mk = |id: &str| -> Result<(SharedMem, ShmFile)> {
        let path = std::path::PathBuf::from(format!("/dev/shm/virtuos-{tag}-{id}"));
        let f = ShmFile::create(&path, if id == "nv" { 32 << 20 } else { size })?;
        Ok((
            SharedMem {
                id: id.into(),
                path,
                size: f.map.len() as u64,
            },
            f,
        ))
    };
    let (m0, f0) = mk("iv0")?;
    let (m1, f1) = mk("iv1")?;
    let (mnv, fnv) = mk("nv")?;
    let memfd = sys::memfd("virtuos-doorbell", 4 << 20)?;
    let db_map = sys::Mapping::new(&memfd, 0, 4 << 20)?;
    let server = ivshmem::IvshmemServer::start(&run.join("ivshmem.sock"), memfd, 1)?;

    let choice = accel::select()?;
    let mut cfg = VmConfig::new(&k.vmlinuz, &img.path, &run, choice.accel);
    cfg.qemu = virtuos_vmm::qemu::ensure_qemu()?;
    cfg.cpus = cpus;
    cfg.max_cpus = Some(maxcpus);
    if args.iter().any(|a| a == "--iommu") {
        cfg.machine = virtuos_vmm::qemu::Machine::Q35;
        cfg.iommu = true;
    }
    cfg.append.push(format!(
        "virtuos.probe={tests} virtuos.rounds={rounds} virtuos.adds={adds}"
    ));
    cfg.devices = vec![
        Device::IvshmemPlain(m0),
        Device::IvshmemPlain(m1),
        Device::Nvdimm(mnv),
        Device::IvshmemDoorbell {
            id: "db0".into(),
            socket: server.socket().into(),
            vectors: 1,
        },
        Device::SerialPort {
            id: "vs0".into(),
            socket: run.join("vport.sock"),
            name: "virtuos.doorbell".into(),
        },
    ];
    println!("qemu {}", cfg.args().join(" "));
    let t0 = Instant::now();
    let mut vm = Vm::start(cfg)?;
    let ready = vm.wait_ready("VIRTUOS-PROBE READY", Duration::from_secs(120))?;
    println!(
        "boot: {:.2} s to readiness ({ready})",
        vm.boot_time().unwrap().as_secs_f64()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for (name, f) in [("ivshmem-0", f0), ("ivshmem-1", f1), ("nvdimm", fnv)] {
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let Some((base, session)) = shm::find_guest(&f.map, &seen, Duration::from_millis(200)) else {
                    continue;
                };
                seen.push((base, session));
                match shm::host_play(&f.map, base, rounds, adds, Duration::from_secs(3)) {
                    Ok(p) => println!(
                        "host {name}: session={session} base={:#x} rounds={} rtt_ns={} fetch_add={}/{} cmpxchg={}/{}",
                        p.base,
                        p.round_trips,
                        p.elapsed.as_nanos() / p.round_trips.max(1) as u128,
                        p.add_final,
                        p.expected,
                        p.cas_final,
                        p.expected
                    ),
                    Err(e) => println!("host {name}: session={session} base={base:#x}: {e:#}"),
                }
            }
            if seen.is_empty() {
                println!("host {name}: guest magic never seen in the host file");
            }
            drop(f);
        }));
    }
    // Doorbell: answer each ring from the guest by ringing it back.
    let server = Arc::new(server);
    {
        let (stop, server, db_map) = (stop.clone(), server.clone(), db_map);
        handles.push(std::thread::spawn(move || {
            let mut n = 0u64;
            let fd = server.host_event(0);
            while !stop.load(Ordering::SeqCst) {
                if sys::poll_readable(fd, 200).unwrap_or(false) {
                    let k = sys::eventfd_wait(fd).unwrap_or(0);
                    n += k;
                    db_map
                        .u64_at(shm::layout::PING)
                        .fetch_add(k, Ordering::SeqCst);
                    for peer in server.peers() {
                        let _ = server.ring(peer, 0);
                    }
                }
            }
            println!(
                "host doorbell: {n} rings received, peers {:?}",
                server.peers()
            );
        }));
    }
    // virtio-serial port: echo each byte back.
    {
        let stop = stop.clone();
        let sock = run.join("vport.sock");
        handles.push(std::thread::spawn(move || {
            use std::io::{Read, Write};
            let Ok(mut s) = std::os::unix::net::UnixStream::connect(&sock) else {
                println!("host vport: cannot connect {}", sock.display());
                return;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let (mut n, mut b) = (0u64, [0u8; 1]);
            while !stop.load(Ordering::SeqCst) {
                match s.read(&mut b) {
                    Ok(1) => {
                        n += 1;
                        let _ = s.write_all(&b);
                    }
                    Ok(_) => break,
                    Err(_) => continue,
                }
            }
            println!("host vport: {n} bytes echoed");
        }));
    }
    let done = vm
        .console()
        .wait_for("VIRTUOS-PROBE DONE", Duration::from_secs(600), || true)?;
    println!(
        "guest finished: {done:?} after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let exit = vm.wait_exit(Duration::from_secs(30))?;
    println!("qemu exit after power-off: {exit:?}");
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        let _ = h.join();
    }
    for l in vm.console().lines_with_prefix("VIRTUOS-") {
        println!("guest {l}");
    }
    vm.stop(Duration::from_secs(5)).context("stopping")?;
    let _ = std::fs::copy(
        run.join("console.log"),
        "/tmp/virtuos-transport-console.log",
    );
    let _ = std::fs::remove_dir_all(&run);
    Ok(())
}
