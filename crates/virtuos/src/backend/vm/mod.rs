//! The vm backend: the domain server is PID 1 of a QEMU VM booting Debian's
//! stock cloud kernel (`virtuos-vmm` fetches it, builds the initramfs with
//! the static `virtuos-domain` as `/init`, and launches QEMU).
//!
//! - Machine `pc`, `-smp 1,maxcpus=2` (under TCG, `maxcpus >= 2` makes
//!   guest atomics on shared memory coherent with the host; see
//!   crates/vmm/TRANSPORT.md), KVM only when the probe finds hardware
//!   virtualization, else TCG with a one-line warning.
//! - Storage: a raw ext4 image (`<data>/storage.img` or `--storage-image`),
//!   created sparse with `mkfs.ext4` when missing, as `virtio-blk` with
//!   `cache=writeback`: QEMU honours the guest's flushes, so a client's
//!   `fsync` reaches the image file (`fdatasync` on the host).
//! - Control: a `virtserialport` named [`CONTROL_PORT`] whose host side is a
//!   unix socket QEMU listens on (`<runtime>/vm/storage/control.sock`); the
//!   daemon connects and speaks the same `DomainCommand`/`DomainReply`
//!   protocol as with the process backend, framed by length
//!   (`control::send_framed`). Descriptors cannot travel: clients' regions
//!   are region slots instead (`slots`: a preallocated pool of sealed
//!   memfds, one NVDIMM each, device DAX in the guest), and wakes travel
//!   as bells on a second port (`bells`).
//! - The guest gets its flags on the kernel command line after `--`.

pub mod bells;
mod holders;
pub mod slots;

use super::DomainSpec;
use anyhow::{bail, Context, Result};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use virtuos_vmm::accel::{self, Accel};
use virtuos_vmm::qemu::{self, Device, Machine, Vm, VmConfig};
use virtuos_vmm::{cache, initramfs, kernel, static_bin};

/// Name of the virtio-serial control port (guest side).
pub const CONTROL_PORT: &str = "virtuos.control";
/// Name of the virtio-serial bell port.
pub const BELL_PORT: &str = "virtuos.bell";
/// Guest memory.
pub const MEMORY_MIB: u64 = 512;
/// Guest memory of the network domain (no page cache to speak of).
pub const NETWORK_MEMORY_MIB: u64 = 256;
/// Size of a new storage image (sparse).
pub const IMAGE_SIZE: u64 = 1 << 30;
/// A prebuilt static domain server (for an installed `virtuos`, where no
/// source checkout is at hand to build one).
pub const DOMAIN_STATIC_ENV: &str = "VIRTUOS_DOMAIN_STATIC";
/// The storage disk as the guest sees it (the only virtio-blk disk).
const GUEST_DISK: &str = "/dev/vda";

/// What a storage VM is booted from and where its files go.
#[derive(Clone, Debug)]
pub struct VmSpec {
    /// `<runtime>/vm/<domain>`: console log, QMP and control sockets.
    pub run_dir: PathBuf,
    pub storage_image: PathBuf,
    /// Prepared by `virtuos up` ([`prepare`]); prepared at launch if None.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub memory_mib: u64,
    /// Region slots (client processes served at once).
    pub slots: usize,
    /// The network domain: a virtio-net NIC on QEMU's user networking with
    /// these TCP port forwards (`127.0.0.1:host -> domain port`) instead of
    /// the storage disk.
    pub network: Option<Vec<crate::network::Forward>>,
}

/// Kernel and initramfs, ready to boot.
#[derive(Clone, Debug)]
pub struct Image {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// The static `virtuos-domain`: `$VIRTUOS_DOMAIN_STATIC`, else built from
/// the source checkout (`cargo build --release --target
/// x86_64-unknown-linux-gnu` with `+crt-static`, incremental).
pub fn domain_static_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(DOMAIN_STATIC_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        static_bin::check_static(&p)
            .with_context(|| format!("{DOMAIN_STATIC_ENV}={} is not usable", p.display()))?;
        return Ok(p);
    }
    static_bin::build_domain().with_context(|| {
        format!(
            "cannot build the static domain server (set {DOMAIN_STATIC_ENV} to a prebuilt \
             static virtuos-domain)"
        )
    })
}

/// Build (or take from the cache) everything the VM boots from: the static
/// domain server, the kernel, the initramfs. Shows progress on a terminal.
pub fn prepare() -> Result<Image> {
    let bin = domain_static_bin()?;
    let cache = cache::cache_dir();
    let k = kernel::fetch(&cache).context("cannot fetch the domain kernel")?;
    let img = initramfs::build(&k, &initramfs::InitramfsSpec::new(&bin), &cache)
        .context("cannot build the domain initramfs")?;
    tracing::info!(kernel = %k.package, version = %k.version, initramfs = %img.path.display(), "domain image ready");
    Ok(Image {
        kernel: k.vmlinuz.clone(),
        initrd: img.path,
    })
}

/// Create the storage image if it does not exist: a sparse file of `size`
/// bytes, `mkfs.ext4 -q -F`, root directory owned by the daemon's user,
/// no `lost+found`.
/// Returns whether it was created.
pub fn ensure_storage_image(path: &Path, size: u64) -> Result<bool> {
    if path.exists() {
        if !path.is_file() {
            bail!("storage image {} is not a regular file", path.display());
        }
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.set_len(size)?;
        drop(f);
        let owner = format!(
            "root_owner={}:{}",
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw()
        );
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "virtuos-storage", "-E", &owner])
            .arg(&tmp)
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => anyhow::anyhow!(
                    "mkfs.ext4 is not installed (Debian package e2fsprogs); run \
                     scripts/setup-debian.sh"
                ),
                _ => anyhow::Error::new(e).context("running mkfs.ext4"),
            })?;
        if !out.status.success() {
            bail!(
                "mkfs.ext4 {} failed: {}",
                tmp.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // A fresh /storage is empty, as with the process backend (e2fsck
        // recreates lost+found if it ever needs one).
        let out = Command::new("debugfs")
            .args(["-w", "-R", "rmdir lost+found"])
            .arg(&tmp)
            .output()
            .context("running debugfs (e2fsprogs)")?;
        if !out.status.success() {
            bail!(
                "debugfs on {} failed: {}",
                tmp.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::fs::rename(&tmp, path)
            .with_context(|| format!("moving {} to {}", tmp.display(), path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| true)
}

/// The kernel command line after `console=ttyS0 panic=-1 quiet`: the log
/// filter as an environment variable, then the domain's flags after `--`.
pub fn guest_append(mount: &str, slots: usize, network: bool) -> Vec<String> {
    let log = std::env::var("VIRTUOS_DOMAIN_LOG").unwrap_or_else(|_| "info".into());
    let mut a = Vec::new();
    // Bare KEY=value (no dot) parameters become init's environment.
    if !log.is_empty() && !log.contains(char::is_whitespace) {
        a.push(format!("VIRTUOS_LOG={log}"));
    }
    a.extend(
        [
            "--",
            "--backend",
            "vm",
            "--control-port",
            CONTROL_PORT,
            "--storage-disk",
            GUEST_DISK,
            "--mount",
            mount,
        ]
        .map(String::from),
    );
    if network {
        a.extend(["--role".to_string(), "network".to_string()]);
    }
    if slots > 0 {
        a.extend(["--slots".to_string(), slots.to_string()]);
        a.extend(["--bell-port".to_string(), BELL_PORT.to_string()]);
    }
    a
}

/// A started storage VM and the daemon's end of its control port.
pub struct Launched {
    pub vm: Vm,
    pub link: UnixStream,
    /// The VM's region slots and the host side of its bell port.
    pub slots: Arc<slots::SlotPool>,
    pub bell: UnixStream,
    pub accel: Accel,
    pub started: Instant,
}

/// Prepare (if needed), start QEMU, connect to the control port.
pub fn launch(spec: &DomainSpec, v: &VmSpec) -> Result<Launched> {
    let image = match (&v.kernel, &v.initrd) {
        (Some(k), Some(i)) => Image {
            kernel: k.clone(),
            initrd: i.clone(),
        },
        _ => prepare()?,
    };
    if v.network.is_none() && ensure_storage_image(&v.storage_image, IMAGE_SIZE)? {
        tracing::info!(image = %v.storage_image.display(), "created the storage image");
    }
    let choice = accel::select()?;
    let qemu = qemu::ensure_qemu()?;
    let mut cfg = VmConfig::new(&image.kernel, &image.initrd, &v.run_dir, choice.accel);
    cfg.qemu = qemu;
    cfg.machine = Machine::Pc;
    cfg.cpus = 1;
    cfg.max_cpus = Some(2);
    cfg.memory_mib = v.memory_mib;
    let control = v.run_dir.join("control.sock");
    let bell = v.run_dir.join("bell.sock");
    let _ = std::fs::remove_file(&control);
    let _ = std::fs::remove_file(&bell);
    let pool =
        Arc::new(slots::SlotPool::create(v.slots).context("cannot create the VM's region slots")?);
    for i in 0..pool.count() {
        cfg.devices.push(Device::Nvdimm(qemu::SharedMem {
            id: format!("slot{i}"),
            path: pool.qemu_path(i),
            size: virtuos_abi::slot::SLOT_FILE_SIZE as u64,
        }));
    }
    match &v.network {
        None => cfg.devices.push(Device::VirtioBlk {
            id: "storage".into(),
            image: v.storage_image.clone(),
        }),
        Some(forwards) => cfg.devices.push(Device::VirtioNetUser {
            id: "net".into(),
            forwards: forwards
                .iter()
                .map(|f| (f.host_port, f.domain_port))
                .collect(),
        }),
    }
    cfg.devices.push(Device::SerialPort {
        id: "ctl".into(),
        socket: control.clone(),
        name: CONTROL_PORT.into(),
    });
    cfg.devices.push(Device::SerialPort {
        id: "bell".into(),
        socket: bell.clone(),
        name: BELL_PORT.into(),
    });
    cfg.append = guest_append(&spec.mount, pool.count(), v.network.is_some());
    let started = Instant::now();
    let mut vm = Vm::start_with(cfg, crate::sys::vm_child_setup)?;
    pool.add_keeper(vm.pid());
    tracing::info!(
        domain = %spec.name,
        pid = vm.pid(),
        accel = %choice.accel,
        console = %vm.config().console_log().display(),
        "QEMU started"
    );
    // QEMU creates its chardev sockets before it answers QMP (which
    // `Vm::start` waited for); retry briefly all the same.
    let link = connect(&mut vm, &control)?;
    let bell = connect(&mut vm, &bell)?;
    Ok(Launched {
        vm,
        link,
        slots: pool,
        bell,
        accel: choice.accel,
        started,
    })
}

/// Connect to a chardev socket of a started QEMU.
fn connect(vm: &mut Vm, path: &Path) -> Result<UnixStream> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) => {
                if vm.try_wait().is_some() || Instant::now() > deadline {
                    let tail = vm.console().tail(20);
                    let _ = vm.kill();
                    bail!(
                        "cannot connect to the VM's port {}: {e}\nconsole:\n{tail}",
                        path.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_flags_follow_the_double_dash() {
        let a = guest_append("/data", 3, false);
        let dash = a.iter().position(|x| x == "--").unwrap();
        assert!(a[..dash]
            .iter()
            .all(|x| x.contains('=') && !x.contains('.')));
        assert_eq!(
            a[dash + 1..],
            [
                "--backend",
                "vm",
                "--control-port",
                CONTROL_PORT,
                "--storage-disk",
                GUEST_DISK,
                "--mount",
                "/data",
                "--slots",
                "3",
                "--bell-port",
                BELL_PORT,
            ]
        );
    }

    #[test]
    fn storage_image_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("sub/storage.img");
        assert!(ensure_storage_image(&img, 16 << 20).unwrap());
        let meta = std::fs::metadata(&img).unwrap();
        assert_eq!(meta.len(), 16 << 20);
        // ext4 superblock magic 0xEF53 at byte 1024 + 0x38.
        let data = std::fs::read(&img).unwrap();
        assert_eq!(&data[1024 + 0x38..1024 + 0x3a], &[0x53, 0xef]);
        assert!(!ensure_storage_image(&img, 16 << 20).unwrap());
        assert!(ensure_storage_image(dir.path(), 1 << 20).is_err());
    }
}
