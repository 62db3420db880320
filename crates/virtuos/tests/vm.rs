//! `virtuos up --backend vm`: the storage domain boots as PID 1 of a QEMU VM
//! (TCG on these machines), connects, shows up in `status`, refuses clients
//! (not supported yet), and `down` powers it off.
//!
//! Needs qemu-system-x86, e2fsprogs and Debian's apt (the cloud kernel is
//! downloaded once into the cache): when they are missing this test FAILS;
//! run scripts/setup-debian.sh.

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};
use virtuos_abi::control::{ClientRequest, DaemonReply, STORAGE};

const SETUP: &str = "run scripts/setup-debian.sh (qemu-system-x86, e2fsprogs, apt for the kernel)";

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

#[test]
fn vm_storage_domain_boots_connects_and_powers_off() {
    if let Err(e) = virtuos_vmm::qemu::find_qemu() {
        panic!("{e:#}: {SETUP}");
    }
    for tool in ["mkfs.ext4", "apt-get", "dpkg-deb"] {
        assert!(on_path(tool), "{tool} is not installed: {SETUP}");
    }
    let env = TestEnv::new(real_domain());
    let started = Instant::now();
    let out = env.run(&["up", "--backend", "vm"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let console = env.runtime().join("vm/storage/console.log");
    assert!(
        out.status.success(),
        "up --backend vm failed: {}\nstderr: {stderr}\nlog:\n{}\nconsole:\n{}",
        out.status,
        env.log(),
        std::fs::read_to_string(&console).unwrap_or_default()
    );
    eprintln!(
        "up --backend vm: {:.1} s\n{stderr}",
        started.elapsed().as_secs_f64()
    );

    let status = env.status();
    let domains = status["domains"].as_array().unwrap();
    assert_eq!(domains.len(), 2, "storage and network VMs: {status}");
    let storage = &domains[0];
    let network = &domains[1];
    assert_eq!(network["name"], "network", "{network}");
    assert_eq!(network["state"], "connected", "{network}");
    assert_eq!(network["backend"], "vm", "{network}");
    assert_eq!(storage["name"], STORAGE);
    assert_eq!(storage["state"], "connected", "{storage}");
    assert_eq!(storage["backend"], "vm", "{storage}");
    assert!(
        matches!(storage["accel"].as_str(), Some("tcg" | "kvm")),
        "{storage}"
    );
    let boot_ms = storage["boot_ms"].as_u64().expect("boot_ms");
    assert!(boot_ms > 0 && boot_ms < 90_000, "{storage}");
    eprintln!("VM boot (QEMU start to Ready): {boot_ms} ms");
    assert_eq!(storage["memory_mib"], 512, "{storage}");
    let notes = status["notes"].to_string();
    assert!(
        notes.contains("storage VM region slots: 0 of 16 in use"),
        "{status}"
    );

    // The disk image was created (ext4) in the data directory.
    let image = env.data().join("storage.img");
    assert_eq!(storage["data"], image.display().to_string(), "{storage}");
    let meta = std::fs::metadata(&image).expect("storage.img created");
    assert_eq!(meta.len(), 1 << 30);
    let head = std::fs::read(&image)
        .map(|d| d[1024 + 0x38..1024 + 0x3a].to_vec())
        .unwrap();
    assert_eq!(head, [0x53, 0xef], "ext4 superblock magic");

    // QEMU runs with the transport's requirements.
    let qemu = storage["pid"].as_u64().expect("QEMU pid") as u32;
    assert!(pid_alive(qemu));
    let cmdline = std::fs::read(format!("/proc/{qemu}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    for want in [
        "1,maxcpus=2",
        "cache=writeback",
        "virtserialport",
        "-- --backend vm",
    ] {
        assert!(cmdline.contains(want), "{want} not in {cmdline}");
    }
    let text = std::fs::read_to_string(&console).unwrap();
    assert!(text.contains("VIRTUOS-DOMAIN READY"), "{text}");

    // A client gets a region slot: one memfd holding its region and state
    // page at the offsets the guest reported, initialised.
    let (reply, fds) = env.request(&ClientRequest::Register {
        domain: STORAGE.into(),
    });
    let DaemonReply::Registered {
        region_offset,
        state_offset,
        ..
    } = reply
    else {
        panic!("Register on the vm backend: {reply:?}")
    };
    assert_eq!(fds.len(), 2);
    assert!(
        region_offset > 0 && region_offset % 4096 == 0,
        "{region_offset}"
    );
    assert_eq!(
        state_offset,
        region_offset + virtuos_abi::slot::STATE_IN_SLOT as u64
    );
    let region = virtuos_abi::ClientRegion::map_at(&fds[0], region_offset).unwrap();
    region.validate().unwrap();
    let state = virtuos_abi::region::StatePage::map_at(&fds[1], state_offset, false).unwrap();
    assert!(state.get().is_valid());
    assert!(
        rustix::fs::ftruncate(&fds[0], 0).is_err(),
        "a client must not be able to resize its slot"
    );
    assert_eq!(env.storage()["state"], "connected", "still serving");

    // down: Shutdown, the guest powers off, QEMU exits.
    let t = Instant::now();
    env.ok(&["down"]);
    wait_for("QEMU gone", Duration::from_secs(10), || !pid_alive(qemu));
    eprintln!("down: {:.2} s", t.elapsed().as_secs_f64());
    let text = std::fs::read_to_string(&console).unwrap();
    assert!(
        text.contains("powering off: shutdown"),
        "orderly power-off expected:\n{text}"
    );
    assert!(!env.socket().exists());
    assert!(Path::new(&image).exists(), "the image is kept");
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
}

/// Fault reports on the vm backend: uid 1001 reports garbage three times
/// against a storage VM that answers; the daemon's probe (a shadow of its
/// own in a region slot of the VM) answers, so only the reporter's
/// session fails: no restart, root's client keeps working.
#[test]
fn vm_fault_reports_fail_only_the_reporter() {
    if let Err(e) = virtuos_vmm::qemu::find_qemu() {
        panic!("{e:#}: {SETUP}");
    }
    let env = TestEnv::new(real_domain());
    let out = env.run(&["up", "--backend", "vm", "--no-network"]);
    assert!(
        out.status.success(),
        "up --backend vm: {}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        env.log()
    );
    env.open_to_others();
    let (reply, fds) = env.request(&ClientRequest::Register {
        domain: STORAGE.into(),
    });
    let DaemonReply::Registered {
        region_offset,
        state_offset,
        ..
    } = reply
    else {
        panic!("Register: {reply:?}")
    };
    let region = virtuos_abi::ClientRegion::map_at(&fds[0], region_offset).unwrap();
    let state = virtuos_abi::region::StatePage::map_at(&fds[1], state_offset, false).unwrap();
    let ping = || {
        let e = region.entry(7).unwrap();
        e.fill(
            virtuos_abi::ops::OP_PING,
            1,
            std::process::id(),
            None,
            [0; 6],
        );
        let policy = virtuos_abi::call::WaitPolicy {
            deadline: Some(Duration::from_secs(20)),
            ..Default::default()
        };
        virtuos_abi::call::submit_and_wait(&region, state.get(), 7, policy).map(|r| r.0)
    };
    assert_eq!(ping(), Ok(0));
    let t = Instant::now();
    let out = as_other(&fake_client())
        .args(["report", "3", "result 0xdead"])
        .env("VIRTUOS_RUNTIME_DIR", env.runtime())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        line.starts_with("reported 3"),
        "{line}\nlog:\n{}",
        env.log()
    );
    eprintln!(
        "3 reports (each: register, report, probe) on the VM: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let storage = env.storage();
    assert_eq!(storage["restarts"], 0, "{storage}\nlog:\n{}", env.log());
    assert_eq!(storage["state"], "connected");
    assert!(state.get().serving());
    assert_eq!(ping(), Ok(0), "root's client after the reports");
    let log = env.log();
    let probed = log
        .lines()
        .filter(|l| l.contains("the domain answers a probe") && l.contains("uid=1001"))
        .count();
    assert_eq!(probed, 3, "{log}");
    env.ok(&["down"]);
}
