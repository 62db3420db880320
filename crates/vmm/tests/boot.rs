//! Boots Debian's cloud kernel (TCG here) with the static guest probe as
//! /init: the readiness line appears, QMP answers, QEMU exits after the
//! guest powers off, and `Vm::stop` ends a VM that does not.
//!
//! Needs the kernel package (apt) and qemu-system-x86: when they are
//! missing this test fails; run scripts/setup-debian.sh.

use std::time::{Duration, Instant};
use virtuos_vmm::qemu::{Vm, VmConfig, VmState};
use virtuos_vmm::{accel, cache, initramfs, kernel, qemu, static_bin};

const SETUP: &str = "run scripts/setup-debian.sh (needs Debian's apt, qemu-system-x86 and cpio)";

fn config(
    k: &kernel::Kernel,
    img: &initramfs::Initramfs,
    run: &std::path::Path,
    append: &str,
) -> VmConfig {
    let choice = accel::select().expect("VIRTUOS_ACCEL");
    let mut cfg = VmConfig::new(&k.vmlinuz, &img.path, run, choice.accel);
    cfg.qemu = qemu::find_qemu().unwrap_or_else(|e| panic!("{e:#}: {SETUP}"));
    cfg.max_cpus = Some(2);
    cfg.memory_mib = 256;
    cfg.append.push(append.into());
    cfg
}

#[test]
fn boots_stock_kernel_to_probe_init_and_powers_off() {
    let started = Instant::now();
    let cache = cache::cache_dir();
    let k = kernel::fetch(&cache).unwrap_or_else(|e| panic!("kernel fetch failed: {e:#}: {SETUP}"));
    assert!(k.vmlinuz.exists());
    assert!(k.config_builtin("EXT4_FS").unwrap(), "ext4 built in");
    // A second fetch is served from the cache.
    let t = Instant::now();
    assert_eq!(kernel::fetch(&cache).unwrap(), k);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "cached fetch took {:?}",
        t.elapsed()
    );

    let probe =
        static_bin::build_static("virtuos-vmm", static_bin::Artifact::Example("guest_probe"))
            .expect("static guest probe");
    let img =
        initramfs::build(&k, &initramfs::InitramfsSpec::new(&probe), &cache).expect("initramfs");
    for m in ["virtio_pci", "virtio_blk", "uio_pci_generic", "nd_pmem"] {
        assert!(
            img.modules.iter().any(|x| x == m),
            "{m} not in {:?}",
            img.modules
        );
    }
    let again = initramfs::build(&k, &initramfs::InitramfsSpec::new(&probe), &cache).unwrap();
    assert_eq!(again.path, img.path, "cached by content");

    let run = std::env::temp_dir().join(format!("virtuos-vmm-boot-{}", std::process::id()));

    // 1. Boot, see the readiness line, query QMP, guest powers off.
    let mut vm = Vm::start(config(&k, &img, &run.join("a"), "virtuos.hold=3")).expect("start QEMU");
    assert_eq!(vm.state(), VmState::Starting);
    let line = vm
        .wait_ready("VIRTUOS-PROBE READY", Duration::from_secs(45))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let boot = vm.boot_time().unwrap();
    eprintln!("boot to readiness: {:.2} s ({line})", boot.as_secs_f64());
    assert_eq!(vm.state(), VmState::Ready);
    let modules = vm.console().lines_with_prefix("VIRTUOS-PROBE modules");
    assert!(
        modules.iter().any(|l| l.ends_with("failed=[]")),
        "module loading: {modules:?}\n{}",
        vm.console().tail(20)
    );
    let (status, running) = vm.qmp().unwrap().query_status().expect("query-status");
    assert_eq!((status.as_str(), running), ("running", true));
    let exit = vm.wait_exit(Duration::from_secs(30)).unwrap();
    let exit = exit.unwrap_or_else(|| {
        panic!(
            "QEMU still running after power-off:\n{}",
            vm.console().tail(20)
        )
    });
    assert!(exit.success(), "QEMU exit {exit}");
    assert_eq!(vm.state(), VmState::Stopped);
    assert!(vm.console().contents().contains("VIRTUOS-PROBE DONE"));

    // 2. A VM that does not power off is stopped with QMP quit.
    let mut vm =
        Vm::start(config(&k, &img, &run.join("b"), "virtuos.hold=600")).expect("start QEMU");
    vm.wait_ready("VIRTUOS-PROBE READY", Duration::from_secs(45))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let t = Instant::now();
    vm.stop(Duration::from_secs(5)).unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "QMP quit took {:?}",
        t.elapsed()
    );
    assert_eq!(vm.state(), VmState::Stopped);

    let _ = std::fs::remove_dir_all(&run);
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn readiness_timeout_reports_the_console_tail() {
    // A bogus kernel: QEMU starts, nothing ever appears on the console.
    let run = std::env::temp_dir().join(format!("virtuos-vmm-timeout-{}", std::process::id()));
    std::fs::create_dir_all(&run).unwrap();
    let kernel = run.join("not-a-kernel");
    std::fs::write(&kernel, b"nothing").unwrap();
    let mut cfg = VmConfig::new(&kernel, &kernel, &run, accel::Accel::Tcg);
    cfg.qemu = qemu::find_qemu().unwrap_or_else(|e| panic!("{e:#}: {SETUP}"));
    match Vm::start(cfg) {
        Ok(mut vm) => {
            let e = vm.wait_ready("NEVER", Duration::from_secs(2)).unwrap_err();
            let msg = format!("{e:#}");
            assert!(msg.contains("NEVER"), "{msg}");
            assert!(matches!(vm.state(), VmState::Failed(_) | VmState::Stopped));
        }
        // QEMU may refuse the image outright; the error must say so.
        Err(e) => assert!(format!("{e:#}").contains("qemu"), "{e:#}"),
    }
    let _ = std::fs::remove_dir_all(&run);
}
