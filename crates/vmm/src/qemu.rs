//! The QEMU command line and the running VM.
//!
//! Machine type: `pc` (i440FX). `microvm` has no PCI unless `pcie=on` and
//! no NVDIMM; ivshmem, virtio-*-pci and NVDIMM need `pc` or `q35`. `pc`
//! hot-plugs PCI devices on its root bus through ACPI (no root ports needed),
//! has an ISA bus for `pvpanic`, and takes `nvdimm=on`.

use crate::accel::Accel;
use crate::console::{Console, Wait};
use crate::error::VmmError;
use crate::qmp::Qmp;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The QEMU machine type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    Pc,
    Q35,
    Microvm,
}

impl Machine {
    fn name(self) -> &'static str {
        match self {
            Machine::Pc => "pc",
            Machine::Q35 => "q35",
            Machine::Microvm => "microvm",
        }
    }
    fn has_pci(self) -> bool {
        !matches!(self, Machine::Microvm)
    }
}

/// A file-backed shared memory region shown to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMem {
    /// QOM id (`m0`, ...).
    pub id: String,
    /// Host file, e.g. `/dev/shm/virtuos-...`.
    pub path: PathBuf,
    pub size: u64,
}

/// How a region reaches the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// `ivshmem-plain` (PCI 1af4:1110, the region is BAR2).
    IvshmemPlain(SharedMem),
    /// `nvdimm` (ACPI NFIT; `/dev/pmem*` or `/dev/dax*` in the guest).
    Nvdimm(SharedMem),
    /// `ivshmem-doorbell` with memory and eventfds from an ivshmem server.
    /// Its interrupts are MSI-X only (QEMU drops them while MSI-X is off).
    IvshmemDoorbell {
        id: String,
        socket: PathBuf,
        vectors: u32,
    },
    /// A `virtserialport` named `name` (guest: `/dev/vportNpM`, driver
    /// virtio_console) on a unix socket QEMU listens on.
    SerialPort {
        id: String,
        socket: PathBuf,
        name: String,
    },
    /// `virtio-blk-pci` on a raw image, `cache=writeback`: the guest sees
    /// a volatile write cache and QEMU honours its flushes (a guest
    /// `fsync` becomes an `fdatasync` of the image on the host).
    /// `cache=none` would need `O_DIRECT`, which tmpfs images refuse.
    VirtioBlk { id: String, image: PathBuf },
    /// `virtio-net-pci` on QEMU's user networking (the guest is
    /// 10.0.2.15/24, gateway 10.0.2.2), with TCP port forwards
    /// `127.0.0.1:host -> guest` (`hostfwd`).
    VirtioNetUser {
        id: String,
        forwards: Vec<(u16, u16)>,
    },
}

/// Everything QEMU is started with.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub qemu: PathBuf,
    pub machine: Machine,
    pub accel: Accel,
    pub cpus: u32,
    /// `-smp N,maxcpus=M`. Under TCG a guest with `maxcpus` 1 runs its
    /// atomic instructions non-atomically (no parallel TCG), so shared
    /// memory with the host needs `maxcpus >= 2` (see TRANSPORT.md).
    pub max_cpus: Option<u32>,
    pub memory_mib: u64,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Extra kernel parameters after `console=ttyS0 panic=-1 quiet`.
    pub append: Vec<String>,
    /// Directory for the console log and QMP socket.
    pub run_dir: PathBuf,
    pub devices: Vec<Device>,
    pub pvpanic: bool,
    /// An emulated Intel IOMMU with interrupt remapping (`q35` only), so
    /// the guest's stock vfio-pci driver can take MSI-X interrupts of a
    /// device (the ivshmem-doorbell interrupt path). Adds `intel_iommu=on`.
    pub iommu: bool,
    pub extra_args: Vec<String>,
}

impl VmConfig {
    pub fn new(kernel: &Path, initrd: &Path, run_dir: &Path, accel: Accel) -> Self {
        VmConfig {
            qemu: PathBuf::from("qemu-system-x86_64"),
            machine: Machine::Pc,
            accel,
            cpus: 1,
            max_cpus: None,
            memory_mib: 512,
            kernel: kernel.into(),
            initrd: initrd.into(),
            append: Vec::new(),
            run_dir: run_dir.into(),
            devices: Vec::new(),
            pvpanic: true,
            iommu: false,
            extra_args: Vec::new(),
        }
    }

    pub fn console_log(&self) -> PathBuf {
        self.run_dir.join("console.log")
    }

    pub fn qmp_socket(&self) -> PathBuf {
        self.run_dir.join("qmp.sock")
    }

    fn has_nvdimm(&self) -> bool {
        self.devices.iter().any(|d| matches!(d, Device::Nvdimm(_)))
    }

    /// The kernel command line.
    pub fn cmdline(&self) -> String {
        let mut parts = vec!["console=ttyS0", "panic=-1", "quiet"];
        if self.iommu {
            parts.push("intel_iommu=on");
        }
        parts.extend(self.append.iter().map(String::as_str));
        parts.join(" ")
    }

    /// The arguments after the QEMU binary.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        let mut machine = self.machine.name().to_string();
        if self.has_nvdimm() {
            machine.push_str(",nvdimm=on");
        }
        let accel = match self.accel {
            Accel::Kvm => "kvm".to_string(),
            Accel::Tcg => "tcg,thread=multi".to_string(),
        };
        let cpu = match self.accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        };
        let mem = if self.has_nvdimm() {
            // One memory slot per NVDIMM; the hot-plug area must hold them
            // all (each rounded up to 1 GiB alignment slack at most once).
            let (count, bytes) = self.devices.iter().fold((0u64, 0u64), |(n, b), d| match d {
                Device::Nvdimm(m) => (n + 1, b + m.size),
                _ => (n, b),
            });
            format!(
                "{}M,slots={},maxmem={}M",
                self.memory_mib,
                count.max(4),
                self.memory_mib + (bytes >> 20) + 8192
            )
        } else {
            format!("{}M", self.memory_mib)
        };
        let smp = match self.max_cpus {
            Some(m) if m > self.cpus => format!("{},maxcpus={m}", self.cpus),
            _ => self.cpus.to_string(),
        };
        let console = format!("file,id=con0,path={}", self.console_log().display());
        let qmp = format!("unix:{},server=on,wait=off", self.qmp_socket().display());
        let kernel = self.kernel.display().to_string();
        let initrd = self.initrd.display().to_string();
        let cmdline = self.cmdline();
        push(&[
            "-machine", &machine, "-accel", &accel, "-cpu", cpu, "-smp", &smp, "-m", &mem,
        ]);
        push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
        push(&["-chardev", &console, "-serial", "chardev:con0"]);
        push(&["-qmp", &qmp]);
        push(&["-kernel", &kernel, "-initrd", &initrd, "-append", &cmdline]);
        if self.iommu {
            // Must precede the PCI devices it translates for.
            push(&["-device", "intel-iommu,intremap=on"]);
        }
        if self.pvpanic && self.machine.has_pci() {
            // A guest kernel panic makes QEMU exit with a failure status
            // (the kernel's own `panic=-1` reboot would be turned into a
            // clean exit by `-no-reboot`).
            push(&["-device", "pvpanic", "-action", "panic=exit-failure"]);
        }
        let mut serial_bus = false;
        for d in &self.devices {
            match d {
                Device::IvshmemPlain(m) => {
                    push(&[
                        "-object",
                        &backend(m),
                        "-device",
                        &format!("ivshmem-plain,memdev={},id=dev-{}", m.id, m.id),
                    ]);
                }
                Device::Nvdimm(m) => {
                    push(&[
                        "-object",
                        &backend(m),
                        "-device",
                        &format!("nvdimm,memdev={},id=dev-{}", m.id, m.id),
                    ]);
                }
                Device::IvshmemDoorbell {
                    id,
                    socket,
                    vectors,
                } => {
                    let chardev = format!("socket,id={id},path={}", socket.display());
                    let dev =
                        format!("ivshmem-doorbell,chardev={id},vectors={vectors},id=dev-{id}");
                    push(&["-chardev", &chardev, "-device", &dev]);
                }
                Device::SerialPort { id, socket, name } => {
                    if !serial_bus {
                        serial_bus = true;
                        push(&["-device", "virtio-serial-pci,id=vser0"]);
                    }
                    let chardev = format!(
                        "socket,id={id},path={},server=on,wait=off",
                        socket.display()
                    );
                    let dev = format!("virtserialport,bus=vser0.0,chardev={id},name={name}");
                    push(&["-chardev", &chardev, "-device", &dev]);
                }
                Device::VirtioNetUser { id, forwards } => {
                    let mut netdev = format!("user,id={id}");
                    for (host, guest) in forwards {
                        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
                    }
                    push(&[
                        "-netdev",
                        &netdev,
                        "-device",
                        &format!("virtio-net-pci,netdev={id}"),
                    ]);
                }
                Device::VirtioBlk { id, image } => {
                    let drive = format!(
                        "file={},format=raw,if=none,id={id},cache=writeback,aio=threads,discard=unmap",
                        image.display()
                    );
                    push(&[
                        "-drive",
                        &drive,
                        "-device",
                        &format!("virtio-blk-pci,drive={id}"),
                    ]);
                }
            }
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

fn backend(m: &SharedMem) -> String {
    format!(
        "memory-backend-file,id={},share=on,mem-path={},size={}",
        m.id,
        m.path.display(),
        m.size
    )
}

/// The lifecycle of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmState {
    Starting,
    Ready,
    Failed(String),
    Stopped,
}

/// A running QEMU.
pub struct Vm {
    config: VmConfig,
    child: Child,
    qmp: Option<Qmp>,
    state: VmState,
    started: Instant,
    boot_time: Option<Duration>,
    exit: Option<ExitStatus>,
}

/// The QEMU binary: `$VIRTUOS_QEMU`, else `qemu-system-x86_64` on `PATH`.
pub fn find_qemu() -> Result<PathBuf> {
    let name = std::env::var_os("VIRTUOS_QEMU").unwrap_or_else(|| "qemu-system-x86_64".into());
    let path = PathBuf::from(&name);
    if path.is_absolute() && path.exists() {
        return Ok(path);
    }
    let found = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(&name))
                .find(|c| c.exists())
        })
        .unwrap_or_default();
    found.ok_or_else(|| {
        VmmError::ToolMissing {
            tool: name.to_string_lossy().into_owned(),
            hint: "Debian package qemu-system-x86".into(),
        }
        .into()
    })
}

/// [`find_qemu`], installing Debian's `qemu-system-x86` first when it is
/// missing and we are root.
pub fn ensure_qemu() -> Result<PathBuf> {
    if let Ok(q) = find_qemu() {
        return Ok(q);
    }
    if crate::sys::is_root() {
        let step = crate::progress::Step::start("installing qemu-system-x86");
        let out = Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "qemu-system-x86",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
        match out {
            Ok(o) if o.status.success() => step.done("installed"),
            Ok(o) => tracing::warn!(
                "apt-get install qemu-system-x86 failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => tracing::warn!("apt-get: {e}"),
        }
    }
    find_qemu()
}

impl Vm {
    /// Start QEMU (console log and QMP socket in `config.run_dir`).
    pub fn start(config: VmConfig) -> Result<Vm> {
        Vm::start_with(config, |_| {})
    }

    /// [`Vm::start`], letting the caller adjust the QEMU command first
    /// (e.g. a parent-death signal, a clean signal mask).
    pub fn start_with(config: VmConfig, prepare: impl FnOnce(&mut Command)) -> Result<Vm> {
        std::fs::create_dir_all(&config.run_dir)
            .with_context(|| format!("creating {}", config.run_dir.display()))?;
        let _ = std::fs::remove_file(config.qmp_socket());
        let _ = std::fs::remove_file(config.console_log());
        let stderr = std::fs::File::create(config.run_dir.join("qemu.stderr"))?;
        tracing::debug!("{} {}", config.qemu.display(), config.args().join(" "));
        let mut cmd = Command::new(&config.qemu);
        cmd.args(config.args())
            .stdin(Stdio::null())
            .stdout(stderr.try_clone()?)
            .stderr(stderr);
        prepare(&mut cmd);
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::Error::new(VmmError::ToolMissing {
                tool: config.qemu.display().to_string(),
                hint: "Debian package qemu-system-x86".into(),
            }),
            _ => anyhow::Error::new(e).context("starting QEMU"),
        })?;
        let mut vm = Vm {
            config,
            child,
            qmp: None,
            state: VmState::Starting,
            started: Instant::now(),
            boot_time: None,
            exit: None,
        };
        match Qmp::connect(&vm.config.qmp_socket(), Duration::from_secs(10)) {
            Ok(q) => vm.qmp = Some(q),
            Err(e) => {
                let tail = vm.failure_tail();
                let _ = vm.kill();
                return Err(e.context(format!("QEMU did not open its QMP socket:\n{tail}")));
            }
        }
        Ok(vm)
    }

    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    pub fn console(&self) -> Console {
        Console::new(self.config.console_log())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Launch to readiness line, once ready.
    pub fn boot_time(&self) -> Option<Duration> {
        self.boot_time
    }

    /// Wait for a console line containing `needle`; returns that line.
    pub fn wait_ready(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let console = self.console();
        let child = &mut self.child;
        let mut exit = None;
        let r = console.wait_for(needle, timeout, || match child.try_wait() {
            Ok(Some(s)) => {
                exit = Some(s);
                false
            }
            _ => true,
        })?;
        match r {
            Wait::Found(line) => {
                self.boot_time = Some(self.started.elapsed());
                self.state = VmState::Ready;
                Ok(line)
            }
            Wait::TimedOut => {
                let err = VmmError::ReadyTimeout {
                    needle: needle.into(),
                    secs: timeout.as_secs_f64(),
                    tail: self.failure_tail(),
                };
                self.state = VmState::Failed(err.to_string());
                Err(err.into())
            }
            Wait::Exited => {
                self.exit = exit;
                let err = VmmError::ExitedEarly {
                    status: exit.map(|s| s.to_string()).unwrap_or_default(),
                    needle: needle.into(),
                    tail: self.failure_tail(),
                };
                self.state = VmState::Failed(err.to_string());
                Err(err.into())
            }
        }
    }

    fn failure_tail(&self) -> String {
        let stderr =
            std::fs::read_to_string(self.config.run_dir.join("qemu.stderr")).unwrap_or_default();
        let mut tail = self.console().tail(30);
        if !stderr.trim().is_empty() {
            tail.push_str("\n--- qemu stderr ---\n");
            tail.push_str(stderr.trim());
        }
        tail
    }

    /// The state, updated if QEMU has exited.
    pub fn state(&mut self) -> VmState {
        if self.exit.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.exit = Some(s);
            }
        }
        if let Some(s) = self.exit {
            if !matches!(self.state, VmState::Failed(_) | VmState::Stopped) {
                self.state = if s.success() {
                    VmState::Stopped
                } else {
                    VmState::Failed(format!("QEMU exited: {s}"))
                };
            }
        }
        self.state.clone()
    }

    /// The QMP connection.
    pub fn qmp(&mut self) -> Result<&mut Qmp> {
        self.qmp.as_mut().context("no QMP connection")
    }

    /// Wait up to `timeout` for QEMU to exit on its own (guest power-off).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                self.exit = Some(s);
                self.state();
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// QMP `quit`, then kill if QEMU is still there after `grace`.
    pub fn stop(&mut self, grace: Duration) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            if let Some(q) = self.qmp.as_mut() {
                if let Err(e) = q.quit() {
                    tracing::debug!("QMP quit: {e:#}");
                }
            }
            if self.wait_exit(grace)?.is_none() {
                self.kill()?;
            }
        }
        self.qmp = None;
        self.state = VmState::Stopped;
        Ok(())
    }

    /// The exit status, if QEMU has exited (non-blocking).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.state();
        self.exit
    }

    /// Kill QEMU (SIGKILL) and reap it.
    pub fn kill(&mut self) -> Result<()> {
        let _ = self.child.kill();
        self.exit = Some(self.child.wait()?);
        Ok(())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VmConfig {
        VmConfig::new(
            Path::new("/k/vmlinuz"),
            Path::new("/i/initrd.cpio"),
            Path::new("/run/vm0"),
            Accel::Tcg,
        )
    }

    fn pairs(args: &[String]) -> Vec<(String, String)> {
        args.windows(2)
            .map(|w| (w[0].clone(), w[1].clone()))
            .collect()
    }

    #[test]
    fn basic_command_line() {
        let mut c = config();
        c.append.push("virtuos.probe=none".into());
        let a = c.args();
        let p = pairs(&a);
        let has = |k: &str, v: &str| p.contains(&(k.to_string(), v.to_string()));
        assert!(has("-machine", "pc"));
        assert!(has("-accel", "tcg,thread=multi"));
        assert!(has("-cpu", "max"));
        assert!(has("-m", "512M"));
        assert!(has("-kernel", "/k/vmlinuz"));
        assert!(has("-initrd", "/i/initrd.cpio"));
        assert!(has(
            "-append",
            "console=ttyS0 panic=-1 quiet virtuos.probe=none"
        ));
        assert!(has("-chardev", "file,id=con0,path=/run/vm0/console.log"));
        assert!(has("-serial", "chardev:con0"));
        assert!(has("-qmp", "unix:/run/vm0/qmp.sock,server=on,wait=off"));
        assert!(has("-device", "pvpanic"));
        assert!(has("-action", "panic=exit-failure"));
        for flag in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
            assert!(a.iter().any(|x| x == flag), "{flag}");
        }
    }

    #[test]
    fn kvm_and_devices() {
        let mut c = config();
        c.accel = Accel::Kvm;
        c.cpus = 2;
        let mem = |id: &str| SharedMem {
            id: id.into(),
            path: format!("/dev/shm/{id}").into(),
            size: 1 << 24,
        };
        c.devices.push(Device::IvshmemPlain(mem("m0")));
        c.devices.push(Device::Nvdimm(mem("m1")));
        c.devices.push(Device::IvshmemDoorbell {
            id: "db0".into(),
            socket: "/run/vm0/ivshmem.sock".into(),
            vectors: 1,
        });
        c.devices.push(Device::SerialPort {
            id: "vs0".into(),
            socket: "/run/vm0/vs0.sock".into(),
            name: "virtuos.0".into(),
        });
        c.devices.push(Device::VirtioNetUser {
            id: "n0".into(),
            forwards: vec![(8080, 80), (2222, 22)],
        });
        let a = c.args();
        let p = pairs(&a);
        let has = |k: &str, v: &str| p.contains(&(k.to_string(), v.to_string()));
        assert!(has(
            "-netdev",
            "user,id=n0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:127.0.0.1:2222-:22"
        ));
        assert!(has("-device", "virtio-net-pci,netdev=n0"));
        assert!(has("-accel", "kvm"));
        assert!(has("-cpu", "host"));
        assert!(has("-smp", "2"));
        assert!(has("-machine", "pc,nvdimm=on"));
        assert!(has("-m", "512M,slots=4,maxmem=8720M"));
        assert!(has(
            "-object",
            "memory-backend-file,id=m0,share=on,mem-path=/dev/shm/m0,size=16777216"
        ));
        assert!(has("-device", "ivshmem-plain,memdev=m0,id=dev-m0"));
        assert!(has("-device", "nvdimm,memdev=m1,id=dev-m1"));
        assert!(has("-chardev", "socket,id=db0,path=/run/vm0/ivshmem.sock"));
        assert!(has(
            "-device",
            "ivshmem-doorbell,chardev=db0,vectors=1,id=dev-db0"
        ));
        assert!(has("-device", "virtio-serial-pci,id=vser0"));
        assert!(has(
            "-chardev",
            "socket,id=vs0,path=/run/vm0/vs0.sock,server=on,wait=off"
        ));
        assert!(has(
            "-device",
            "virtserialport,bus=vser0.0,chardev=vs0,name=virtuos.0"
        ));
    }

    #[test]
    fn microvm_gets_no_pvpanic() {
        let mut c = config();
        c.machine = Machine::Microvm;
        assert!(!c.args().iter().any(|x| x == "pvpanic"));
    }
}
