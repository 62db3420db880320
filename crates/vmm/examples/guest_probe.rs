//! PID 1 of the transport-experiment initramfs (built static, see
//! `virtuos_vmm::static_bin`). Loads `/lib/modules/load.list` with
//! `finit_module`, mounts proc/sys/devtmpfs, prints the readiness line, runs
//! the experiments named by `virtuos.probe=a,b,...` on the kernel command
//! line, and powers off (after `virtuos.hold=SECS`, if given). Results are console lines `VIRTUOS-RESULT <test> k=v ...`.
//!
//! Tests: `ivshmem` (ivshmem-plain BAR2 via sysfs `resource2`, then a second
//! device via `resource2_wc`), `pmem` (/dev/pmem0 mmap), `dax` (the NVDIMM
//! namespace reconfigured as device DAX through sysfs, /dev/dax0.0 mmap),
//! `doorbell` (ivshmem-doorbell with uio_pci_generic, INTx).

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

// Must match `layout` in examples/transport/shm.rs.
const GUEST_MAGIC: usize = 0;
const HOST_MAGIC: usize = 8;
const PING: usize = 64;
const ADD: usize = 128;
const CAS: usize = 192;
const PHASE: usize = 256;
const SESSION: usize = 16;
const GUEST_MAGIC_VALUE: u64 = 0x5649_5254_554f_5347;
const HOST_MAGIC_VALUE: u64 = 0x5649_5254_554f_5348;
const HOST_PEER: u32 = 0;

macro_rules! say {
    ($($t:tt)*) => {{
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, $($t)*);
        let _ = out.flush();
    }};
}

fn main() {
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");
    let (loaded, failed) = load_modules();
    say!(
        "VIRTUOS-PROBE modules loaded={loaded} failed=[{}]",
        failed.join(",")
    );
    let uptime = fs::read_to_string("/proc/uptime").unwrap_or_default();
    say!(
        "VIRTUOS-PROBE READY uptime={}",
        uptime.split_whitespace().next().unwrap_or("?")
    );

    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let param = |key: &str| {
        cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    };
    let rounds: u64 = param("virtuos.rounds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let adds: u64 = param("virtuos.adds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let tests = param("virtuos.probe").unwrap_or_default();
    for test in tests.split(',').filter(|t| !t.is_empty() && *t != "none") {
        let r = match test {
            "ivshmem" => test_ivshmem(rounds, adds),
            "pmem" => test_pmem(rounds, adds),
            "dax" => test_dax(rounds, adds),
            "doorbell" => test_doorbell(rounds),
            "vport" => test_vport(rounds),
            "vfio" => test_vfio(rounds),
            other => Err(format!("unknown test {other}")),
        };
        if let Err(e) = r {
            say!("VIRTUOS-RESULT {test} error=\"{e}\"");
        }
    }
    let hold: u64 = param("virtuos.hold")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    std::thread::sleep(Duration::from_secs(hold));
    say!("VIRTUOS-PROBE DONE");
    // SAFETY: sync and reboot take no pointers; PID 1 powering off is the intent.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
}

fn cstr(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).expect("no NUL")
}

fn mount(src: &str, target: &str, fstype: &str) {
    let (s, t, f) = (cstr(src), cstr(target), cstr(fstype));
    // SAFETY: all strings are valid and NUL-terminated; data is NULL.
    let r = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        say!(
            "VIRTUOS-PROBE mount {target}: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn load_modules() -> (usize, Vec<String>) {
    let list = fs::read_to_string("/lib/modules/load.list").unwrap_or_default();
    let (mut loaded, mut failed) = (0, Vec::new());
    for path in list.lines().filter(|l| !l.is_empty()) {
        let name = Path::new(path)
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                failed.push(format!("{name}:{e}"));
                continue;
            }
        };
        let params = cstr("");
        // SAFETY: finit_module reads the module from a valid open fd; params is
        // a valid empty C string.
        let r =
            unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
        let err = std::io::Error::last_os_error();
        if r == 0 || err.raw_os_error() == Some(libc::EEXIST) {
            loaded += 1;
        } else {
            failed.push(format!("{name}:{err}"));
        }
    }
    (loaded, failed)
}

/// A MAP_SHARED mapping of a device file.
struct Map {
    ptr: *mut u8,
    len: usize,
    _file: fs::File,
}

impl Map {
    fn open(path: &Path, len: usize, sync: bool) -> Result<Map, String> {
        let mut o = fs::OpenOptions::new();
        o.read(true).write(true);
        if sync {
            use std::os::unix::fs::OpenOptionsExt;
            o.custom_flags(libc::O_SYNC);
        }
        let file = o
            .open(path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        // SAFETY: fresh mapping chosen by the kernel; the file stays open in `self`.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!(
                "mmap {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(Map {
            ptr: p.cast(),
            len,
            _file: file,
        })
    }

    fn u64(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= self.len);
        // SAFETY: in bounds and aligned; lives as long as &self.
        unsafe { &*self.ptr.add(off).cast::<AtomicU64>() }
    }

    fn u32(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0 && off + 4 <= self.len);
        // SAFETY: in bounds and aligned; lives as long as &self.
        unsafe { &*self.ptr.add(off).cast::<AtomicU32>() }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmaps what `open` mapped; no borrows outlive self.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn spin_until(cond: impl Fn() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut n = 0u32;
    while !cond() {
        n = n.wrapping_add(1);
        if n % 1024 == 0 && Instant::now() >= deadline {
            return false;
        }
        std::hint::spin_loop();
    }
    true
}

/// The guest half of the shm::host_play protocol; returns the result fields.
fn play(m: &Map, session: u64, rounds: u64, adds: u64) -> Result<String, String> {
    m.u64(SESSION).store(session, SeqCst);
    m.u64(GUEST_MAGIC).store(GUEST_MAGIC_VALUE, SeqCst);
    if !spin_until(
        || m.u64(HOST_MAGIC).load(SeqCst) == HOST_MAGIC_VALUE,
        Duration::from_secs(8),
    ) {
        return Ok("coherent=no host_seen=no".into());
    }
    let t = Instant::now();
    for i in 0..rounds {
        if !spin_until(
            || m.u64(PING).load(SeqCst) == 2 * i,
            Duration::from_secs(10),
        ) {
            return Ok(format!("coherent=partial ping_stuck_at={i}"));
        }
        m.u64(PING).fetch_add(1, SeqCst);
    }
    if !spin_until(
        || m.u64(PING).load(SeqCst) == 2 * rounds,
        Duration::from_secs(10),
    ) {
        return Ok("coherent=partial last_pong_missing".into());
    }
    let el = t.elapsed();
    m.u64(PHASE).store(1, SeqCst);
    let t2 = Instant::now();
    for _ in 0..adds {
        m.u64(ADD).fetch_add(1, SeqCst);
        let cas = m.u64(CAS);
        let mut cur = cas.load(SeqCst);
        while let Err(now) = cas.compare_exchange(cur, cur + 1, SeqCst, SeqCst) {
            cur = now;
        }
    }
    let el2 = t2.elapsed();
    m.u64(PHASE).store(2, SeqCst);
    if !spin_until(|| m.u64(PHASE).load(SeqCst) == 3, Duration::from_secs(30)) {
        return Ok("coherent=partial host_never_finished".into());
    }
    let (add, cas) = (m.u64(ADD).load(SeqCst), m.u64(CAS).load(SeqCst));
    Ok(format!(
        "coherent=yes rounds={rounds} rtt_ns={} rt_per_s={:.0} fetch_add={add}/{} cmpxchg={cas}/{} atomic={} guest_rmw_ns={}",
        el.as_nanos() / rounds.max(1) as u128,
        rounds as f64 / el.as_secs_f64(),
        2 * adds,
        2 * adds,
        if add == 2 * adds && cas == 2 * adds { "yes" } else { "NO" },
        el2.as_nanos() / adds.max(1) as u128,
    ))
}

fn pci_devices(vendor: &str, device: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir("/sys/bus/pci/devices")
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|d| {
        let r = |f: &str| {
            fs::read_to_string(d.join(f))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        r("vendor") == vendor && r("device") == device
    });
    v.sort();
    v
}

fn ivshmem_devices() -> Vec<PathBuf> {
    pci_devices("0x1af4", "0x1110")
}

/// ivshmem-doorbell has an MSI-X table in BAR1; ivshmem-plain has no BAR1.
fn is_doorbell(dev: &Path) -> bool {
    let _ = fs::write(dev.join("enable"), "1");
    dev.join("resource1").exists()
}

fn test_ivshmem(rounds: u64, adds: u64) -> Result<(), String> {
    let plain: Vec<PathBuf> = ivshmem_devices()
        .into_iter()
        .filter(|d| !is_doorbell(d))
        .collect();
    if plain.is_empty() {
        return Err("no ivshmem-plain device".into());
    }
    for (i, dev) in plain.iter().enumerate() {
        let wc = dev.join("resource2_wc");
        let res = if i % 2 == 1 && wc.exists() {
            wc
        } else {
            dev.join("resource2")
        };
        let len = fs::metadata(&res).map_err(|e| e.to_string())?.len() as usize;
        let m = Map::open(&res, len, false)?;
        let r = play(&m, 10 + i as u64, rounds, adds)?;
        let name = res
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let bdf = dev
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        say!("VIRTUOS-RESULT ivshmem dev={bdf} map={name} size={len} {r}");
    }
    Ok(())
}

fn test_pmem(rounds: u64, adds: u64) -> Result<(), String> {
    let dev = Path::new("/dev/pmem0");
    if !wait_path(dev, Duration::from_secs(3)) {
        return Err("no /dev/pmem0".into());
    }
    let m = Map::open(dev, 2 << 20, false)?;
    let r = play(&m, 2, rounds, adds)?;
    say!("VIRTUOS-RESULT pmem dev=/dev/pmem0 map=blockdev-mmap {r}");
    Ok(())
}

fn wait_path(p: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !p.exists() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn sysfs_write(path: &str, value: &str) -> Result<(), String> {
    fs::write(path, value).map_err(|e| format!("write {value:?} to {path}: {e}"))
}

fn sysfs_read(path: &str) -> String {
    fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Reconfigure the first NVDIMM namespace as device DAX (what
/// `ndctl create-namespace -f -e namespace0.0 -m devdax` does), then map
/// /dev/daxX.Y.
fn test_dax(rounds: u64, adds: u64) -> Result<(), String> {
    let nd = "/sys/bus/nd/devices";
    let region = "region0";
    let ns = "namespace0.0";
    if !wait_path(Path::new(&format!("{nd}/{ns}")), Duration::from_secs(3)) {
        return Err("no namespace0.0".into());
    }
    let seed = sysfs_read(&format!("{nd}/{region}/dax_seed"));
    if seed.is_empty() {
        return Err("region has no dax_seed".into());
    }
    let driver = fs::read_link(format!("{nd}/{ns}/driver")).ok();
    if let Some(drv) = driver {
        let drv = drv
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        sysfs_write(&format!("/sys/bus/nd/drivers/{drv}/unbind"), ns)?;
    }
    let uuid = sysfs_read("/proc/sys/kernel/random/uuid");
    let d = format!("{nd}/{seed}");
    sysfs_write(&format!("{d}/uuid"), &uuid)?;
    sysfs_write(&format!("{d}/align"), "4096")
        .or_else(|_| sysfs_write(&format!("{d}/align"), "2097152"))?;
    sysfs_write(&format!("{d}/mode"), "pmem")?;
    sysfs_write(&format!("{d}/namespace"), ns)?;
    sysfs_write("/sys/bus/nd/drivers/dax_pmem/bind", &seed)?;
    // The dax bus device appears as daxR.N (R = region id).
    let devpath = (0..50).find_map(|_| {
        let found = fs::read_dir("/dev")
            .ok()?
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().starts_with("dax"));
        if found.is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        found.map(|e| e.path())
    });
    let dev = devpath.ok_or("no /dev/dax* after binding dax_pmem")?;
    let name = dev
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let size: usize = sysfs_read(&format!("/sys/bus/dax/devices/{name}/size"))
        .parse()
        .unwrap_or(2 << 20);
    let len = size.min(2 << 20);
    let m = Map::open(&dev, len, false)?;
    let info = format!(
        "align={} ns_res={} dax_res={}",
        sysfs_read(&format!("{d}/align")),
        sysfs_read(&format!("{nd}/{ns}/resource")),
        sysfs_read(&format!("{d}/resource"))
    );
    let r = play(&m, 3, rounds, adds)?;
    say!(
        "VIRTUOS-RESULT dax dev={} size={size} {info} {r}",
        dev.display()
    );
    Ok(())
}

/// Doorbells through ivshmem-doorbell. Guest -> host: a write to BAR0's
/// Doorbell register (no driver needed: sysfs `resource0`). Host -> guest:
/// the guest's eventfd, which QEMU turns into an MSI-X message only (the
/// doorbell device has no INTx path), so uio_pci_generic (INTx only) is
/// tried and expected to see nothing; the host also answers in shared
/// memory (BAR2 = the server's memfd) so the upward doorbell is measured.
fn test_doorbell(rounds: u64) -> Result<(), String> {
    let dev = ivshmem_devices()
        .into_iter()
        .find(|d| is_doorbell(d))
        .ok_or("no ivshmem-doorbell device (with an MSI-X BAR1)")?;
    let bdf = dev
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let regs = Map::open(&dev.join("resource0"), 4096, true)?;
    let len = fs::metadata(dev.join("resource2"))
        .map_err(|e| e.to_string())?
        .len() as usize;
    let mem = Map::open(&dev.join("resource2"), len, false)?;
    let me = regs.u32(8).load(SeqCst);
    let ring_host = || regs.u32(12).store(HOST_PEER << 16, SeqCst);
    let pongs = || mem.u64(PING).load(SeqCst);

    // Upward doorbell + answer in shared memory.
    let n = rounds.clamp(1, 5000);
    let t = Instant::now();
    for i in 0..n {
        ring_host();
        if !spin_until(|| pongs() > i, Duration::from_secs(5)) {
            say!("VIRTUOS-RESULT doorbell dev={bdf} peer={me} up=no stuck_at={i}");
            return Ok(());
        }
    }
    let el = t.elapsed();
    say!(
        "VIRTUOS-RESULT doorbell dev={bdf} peer={me} up=yes memfd_shared=yes rounds={n} ring_to_shm_answer_us={:.1}",
        el.as_secs_f64() * 1e6 / n as f64
    );

    // Downward doorbell via uio_pci_generic.
    let r = (|| -> Result<String, String> {
        sysfs_write(
            &dev.join("driver_override").to_string_lossy(),
            "uio_pci_generic",
        )?;
        let _ = fs::write("/sys/bus/pci/drivers_probe", &bdf);
        let uio = fs::read_dir(dev.join("uio"))
            .map_err(|e| format!("not bound to uio_pci_generic: {e}"))?
            .filter_map(|e| e.ok())
            .next()
            .ok_or("no uio node")?
            .file_name()
            .to_string_lossy()
            .into_owned();
        let uio_path = PathBuf::from(format!("/dev/{uio}"));
        wait_path(&uio_path, Duration::from_secs(2));
        let mut uiof = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&uio_path)
            .map_err(|e| format!("open {uio}: {e}"))?;
        let config = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dev.join("config"))
            .map_err(|e| e.to_string())?;
        let unmask = || -> Result<(), String> {
            use std::os::unix::fs::FileExt;
            let mut cmd = [0u8; 2];
            config
                .read_exact_at(&mut cmd, 4)
                .map_err(|e| e.to_string())?;
            let v = u16::from_le_bytes(cmd) & !0x400; // clear INTx Disable
            config
                .write_all_at(&v.to_le_bytes(), 4)
                .map_err(|e| e.to_string())
        };
        let wait_irq = |uiof: &mut fs::File, ms: i32| -> Result<bool, String> {
            let mut p = libc::pollfd {
                fd: uiof.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            if unsafe { libc::poll(&mut p, 1, ms) } <= 0 {
                return Ok(false);
            }
            if p.revents & libc::POLLERR != 0 {
                return Err("uio device has no interrupt (POLLERR)".into());
            }
            let mut cnt = [0u8; 4];
            std::io::Read::read_exact(uiof, &mut cnt).map_err(|e| e.to_string())?;
            Ok(true)
        };
        regs.u32(0).store(0xffff_ffff, SeqCst); // IntrMask
        unmask()?;
        let spurious = wait_irq(&mut uiof, 500)?;
        let mut got = 0;
        let n = rounds.clamp(1, 500);
        let t = Instant::now();
        for _ in 0..n {
            let before = pongs();
            ring_host();
            spin_until(|| pongs() > before, Duration::from_secs(5));
            if !wait_irq(&mut uiof, 2000)? {
                break;
            }
            got += 1;
            let _ = regs.u32(4).load(SeqCst); // IntrStatus: read clears
            unmask()?;
        }
        let el = t.elapsed();
        let msix = fs::read_dir(dev.join("msi_irqs")).is_ok();
        let irqline = sysfs_read(&dev.join("irq").to_string_lossy());
        Ok(format!(
            "uio={uio} intx_irq={irqline} spurious_before_ring={spurious} irqs={got}/{n} msix_enabled={msix} rtt_us={:.1}",
            el.as_secs_f64() * 1e6 / got.max(1) as f64
        ))
    })();
    match r {
        Ok(s) => say!("VIRTUOS-RESULT doorbell-irq dev={bdf} driver=uio_pci_generic {s}"),
        Err(e) => {
            say!("VIRTUOS-RESULT doorbell-irq dev={bdf} driver=uio_pci_generic error=\"{e}\"")
        }
    }
    Ok(())
}

/// Doorbells through a virtio-serial port (stock virtio_console driver):
/// one byte each way, blocking reads on both sides.
fn test_vport(rounds: u64) -> Result<(), String> {
    use std::io::Read;
    let port = fs::read_dir("/sys/class/virtio-ports")
        .map_err(|e| format!("no virtio-ports: {e}"))?
        .filter_map(|e| e.ok())
        .find(|e| sysfs_read(&e.path().join("name").to_string_lossy()) == "virtuos.doorbell")
        .ok_or("no port named virtuos.doorbell")?
        .file_name()
        .to_string_lossy()
        .into_owned();
    let path = PathBuf::from(format!("/dev/{port}"));
    wait_path(&path, Duration::from_secs(2));
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("open {port}: {e}"))?;
    let n = rounds.clamp(1, 5000);
    let mut b = [0u8; 1];
    // Warm-up round (the host may connect late).
    f.write_all(b"w").map_err(|e| e.to_string())?;
    f.read_exact(&mut b).map_err(|e| e.to_string())?;
    let t = Instant::now();
    for _ in 0..n {
        f.write_all(b"p").map_err(|e| e.to_string())?;
        f.read_exact(&mut b).map_err(|e| e.to_string())?;
    }
    let el = t.elapsed();
    say!(
        "VIRTUOS-RESULT vport dev=/dev/{port} works=yes rounds={n} rtt_us={:.1} rt_per_s={:.0}",
        el.as_secs_f64() * 1e6 / n as f64,
        n as f64 / el.as_secs_f64()
    );
    Ok(())
}

/// Host -> guest doorbell with a stock driver: vfio-pci (behind the emulated
/// Intel IOMMU) enables the ivshmem-doorbell's MSI-X and signals an eventfd
/// of ours on each interrupt. Guest -> host: Doorbell register write
/// through the vfio region (pwrite).
fn test_vfio(rounds: u64) -> Result<(), String> {
    const VFIO_SET_IOMMU: u64 = 0x3B66;
    const VFIO_GROUP_GET_STATUS: u64 = 0x3B67;
    const VFIO_GROUP_SET_CONTAINER: u64 = 0x3B68;
    const VFIO_GROUP_GET_DEVICE_FD: u64 = 0x3B6A;
    const VFIO_DEVICE_GET_REGION_INFO: u64 = 0x3B6C;
    const VFIO_DEVICE_SET_IRQS: u64 = 0x3B6E;
    const VFIO_TYPE1_IOMMU: u64 = 1;
    const MSIX_INDEX: u32 = 2;
    let dev = ivshmem_devices()
        .into_iter()
        .find(|d| is_doorbell(d))
        .ok_or("no ivshmem-doorbell device")?;
    let bdf = dev
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let group = fs::read_link(dev.join("iommu_group"))
        .map_err(|e| format!("{bdf} has no IOMMU group (intel_iommu=on?): {e}"))?;
    let group = group
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let _ = fs::write(dev.join("driver/unbind"), &bdf);
    sysfs_write(&dev.join("driver_override").to_string_lossy(), "vfio-pci")?;
    let _ = fs::write("/sys/bus/pci/drivers_probe", &bdf);
    let gpath = PathBuf::from(format!("/dev/vfio/{group}"));
    wait_path(&gpath, Duration::from_secs(2));
    let open = |p: &Path| {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .map_err(|e| format!("open {}: {e}", p.display()))
    };
    let container = open(Path::new("/dev/vfio/vfio"))?;
    let groupf = open(&gpath)?;
    let ioctl = |fd: i32, req: u64, arg: usize, what: &str| -> Result<i32, String> {
        // SAFETY: each call passes a pointer to a live, correctly sized
        // struct (or an integer) as the VFIO uAPI defines for `req`.
        let r = unsafe { libc::ioctl(fd, req as _, arg) };
        if r < 0 {
            Err(format!("{what}: {}", std::io::Error::last_os_error()))
        } else {
            Ok(r)
        }
    };
    let mut status = [8u32, 0];
    ioctl(
        groupf.as_raw_fd(),
        VFIO_GROUP_GET_STATUS,
        status.as_mut_ptr() as usize,
        "GROUP_GET_STATUS",
    )?;
    if status[1] & 1 == 0 {
        return Err(format!("group {group} not viable"));
    }
    let cfd = container.as_raw_fd();
    ioctl(
        groupf.as_raw_fd(),
        VFIO_GROUP_SET_CONTAINER,
        &cfd as *const i32 as usize,
        "SET_CONTAINER",
    )?;
    ioctl(cfd, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU as usize, "SET_IOMMU")?;
    let name = cstr(&bdf);
    let devfd = ioctl(
        groupf.as_raw_fd(),
        VFIO_GROUP_GET_DEVICE_FD,
        name.as_ptr() as usize,
        "GET_DEVICE_FD",
    )?;
    // BAR0's region offset in the device fd.
    let mut info = [0u64; 4]; // argsz, flags | index, cap_offset | size, offset
    let words: &mut [u32; 8] = {
        // SAFETY: [u64; 4] and [u32; 8] have the same size; u32 alignment is weaker.
        unsafe { &mut *(info.as_mut_ptr() as *mut [u32; 8]) }
    };
    words[0] = 32; // argsz
    words[2] = 0; // index: BAR0
    ioctl(
        devfd,
        VFIO_DEVICE_GET_REGION_INFO,
        info.as_mut_ptr() as usize,
        "GET_REGION_INFO",
    )?;
    let bar0 = info[3];
    let efd = {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::eventfd(0, 0) };
        if fd < 0 {
            return Err("eventfd".into());
        }
        fd
    };
    // struct vfio_irq_set + one eventfd.
    let mut set = [0u32; 6];
    set[0] = 24; // argsz
    set[1] = 4 | 32; // DATA_EVENTFD | ACTION_TRIGGER
    set[2] = MSIX_INDEX;
    set[3] = 0; // start
    set[4] = 1; // count
    set[5] = efd as u32;
    ioctl(
        devfd,
        VFIO_DEVICE_SET_IRQS,
        set.as_mut_ptr() as usize,
        "SET_IRQS(MSI-X)",
    )?;
    // MSI-X messages are DMA writes: they need Bus Master Enable, which
    // vfio-pci leaves to its user.
    {
        use std::os::unix::fs::FileExt;
        let config = open(&dev.join("config"))?;
        let mut cmd = [0u8; 2];
        config
            .read_exact_at(&mut cmd, 4)
            .map_err(|e| e.to_string())?;
        let v = u16::from_le_bytes(cmd) | 0x4;
        config
            .write_all_at(&v.to_le_bytes(), 4)
            .map_err(|e| e.to_string())?;
    }
    let ring = || {
        let v = (HOST_PEER << 16).to_le_bytes();
        // SAFETY: writes 4 bytes from a live buffer to the device fd.
        unsafe { libc::pwrite(devfd, v.as_ptr().cast(), 4, (bar0 + 12) as libc::off_t) }
    };
    let wait = |ms: i32| -> bool {
        let mut p = libc::pollfd {
            fd: efd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd; then an 8-byte read into a live buffer.
        unsafe {
            if libc::poll(&mut p, 1, ms) <= 0 {
                return false;
            }
            let mut b = [0u8; 8];
            libc::read(efd, b.as_mut_ptr().cast(), 8) == 8
        }
    };
    let t0 = Instant::now();
    if ring() != 4 {
        return Err(format!(
            "doorbell pwrite: {}",
            std::io::Error::last_os_error()
        ));
    }
    if !wait(5000) {
        say!(
            "VIRTUOS-RESULT vfio dev={bdf} group={group} msix=enabled works=no irq_timeout_ms=5000"
        );
        dump_kernel_log(&["vfio", "DMAR", "ivshmem", "IRQ", "iommu"]);
        for l in fs::read_to_string("/proc/interrupts")
            .unwrap_or_default()
            .lines()
        {
            if l.contains("vfio") || l.contains("DMAR") || l.contains("PCI-MSI") {
                say!(
                    "VIRTUOS-PROBE irq {}",
                    l.split_whitespace().collect::<Vec<_>>().join(" ")
                );
            }
        }
        return Ok(());
    }
    let first = t0.elapsed();
    let n = rounds.clamp(1, 2000);
    let t = Instant::now();
    for i in 0..n {
        ring();
        if !wait(2000) {
            say!("VIRTUOS-RESULT vfio dev={bdf} works=partial lost_at={i}");
            return Ok(());
        }
    }
    let el = t.elapsed();
    say!(
        "VIRTUOS-RESULT vfio dev={bdf} group={group} works=yes first_us={} rounds={n} rtt_us={:.1} rt_per_s={:.0}",
        first.as_micros(),
        el.as_secs_f64() * 1e6 / n as f64,
        n as f64 / el.as_secs_f64()
    );
    Ok(())
}

/// Print kernel log lines containing any of `words` (reads /dev/kmsg).
fn dump_kernel_log(words: &[&str]) {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut f) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return;
    };
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = std::io::Read::read(&mut f, &mut buf) {
        let rec = String::from_utf8_lossy(&buf[..n]);
        let msg = rec.split_once(';').map(|x| x.1).unwrap_or(&rec).trim();
        if words.iter().any(|w| msg.contains(w)) {
            say!("VIRTUOS-PROBE kmsg {msg}");
        }
    }
}
