//! VM backend: this binary is PID 1 of a guest (QEMU, Debian's stock cloud
//! kernel, an initramfs built by `virtuos-vmm`).
//!
//! The host passes our flags after `--` on the kernel command line (the
//! kernel hands everything after `--` to init as argv; unknown bare
//! `KEY=value` parameters before it, such as `VIRTUOS_LOG=info`, become
//! environment variables). [`boot`] then:
//!
//! 1. mounts proc, sysfs, devtmpfs, a tmpfs on /run and /tmp;
//! 2. loads the modules in `/lib/modules/load.list` with `finit_module`;
//! 3. opens the control channel, a virtio-serial port found by name
//!    (`/sys/class/virtio-ports/*/name`), and waits until the daemon is
//!    connected to its host side;
//! 4. turns the NVDIMMs into tagged device-DAX region slots (`dax`) and
//!    opens the bell port (wakes across the VM boundary, `slot::Bell`);
//! 5. mounts the storage disk (virtio-blk, ext4) at the storage mount path
//!    inside a private read-only tmpfs root (`/run/domain`), as the process
//!    backend does with its bind mount: client paths work verbatim;
//! 6. forks the domain server proper, which talks `SOCK_SEQPACKET` to PID 1
//!    exactly as in the process backend (`server.rs` is unchanged), and
//!    returns in that child.
//!
//! PID 1 stays in [`relay`]: it moves commands and replies between the
//! port (length-prefixed JSON frames, `control::send_framed`) and the
//! server, turning a client's slot number into descriptors of its DAX
//! node; it relays down-bells from the host into futex wakes on the slot's
//! region header, reaps every orphan, and powers the VM off when the server exits (after `Shutdown`,
//! or when it dies), when the daemon disconnects, or when PID 1 panics.
//! It never exits: the kernel would panic (and with `panic=-1` reboot,
//! which `-no-reboot` turns into QEMU exiting).

use super::Root;
use crate::role::Role;
use crate::sys::{self, Forked};
use anyhow::{bail, Context, Result};
use rustix::event::{poll, PollFd, PollFlags};
use rustix::fd::{AsFd, OwnedFd};
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
use rustix::process::WaitOptions;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use virtuos_abi::control::{self, DomainCommand, DomainReply, Fault, SlotView};
use virtuos_abi::slot::{Bell, BELL_SIZE};

mod dax;
mod init;

/// Where PID 1 builds the root the shadows chroot into.
const ROOT_DIR: &str = "/run/domain";
/// The line on the console once the domain serves (for humans and logs).
pub const READY_LINE: &str = "VIRTUOS-DOMAIN READY";
/// How long the daemon may take to connect to the port's host side.
const HOST_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The message for an `AddClient`/`AttachForked` without a usable slot.
pub const NO_SLOT: &str = "a VM domain serves clients only through its region slots";

/// What the host told us on the kernel command line.
pub struct BootArgs<'a> {
    /// Name of the virtio-serial control port (`virtserialport,name=`).
    pub port: &'a str,
    /// The storage disk (`/dev/vda`).
    pub disk: &'a Path,
    /// The storage mount path (`/storage`).
    pub mount: &'a Path,
    /// Region slots (NVDIMMs) the host attached.
    pub slots: usize,
    /// Name of the virtio-serial bell port (needed when `slots > 0`).
    pub bell_port: Option<&'a str>,
    /// Storage: the disk at the mount; network: the NIC, an empty root.
    pub role: Role,
}

/// What the forked domain server gets from PID 1.
pub struct Booted {
    pub control: OwnedFd,
    pub root: Root,
    /// The bell port, for the shadows' up-bells (None without slots).
    pub bell: Option<OwnedFd>,
}

/// Not PID 1 of a VM: the vm backend is only reached through [`boot`].
pub fn setup(_data_dir: Option<&Path>, _mount: &Path) -> Result<Root> {
    bail!("the vm backend runs as PID 1 of a VM (started by `virtuos up --backend vm`)")
}

/// Bring the guest up and fork the domain server. Returns only in the
/// server process: the control socket to PID 1 and the private root. In
/// PID 1 it never returns (errors are reported to the daemon and on the
/// console, then the VM powers off).
pub fn boot(args: &BootArgs<'_>) -> Result<Booted> {
    if rustix::process::getpid().as_raw_nonzero().get() != 1 {
        bail!("--backend vm: virtuos-domain must run as PID 1 of the domain VM");
    }
    init::install_panic_power_off();
    let started = Instant::now();
    init::mount_basics();
    let (loaded, failed) = init::load_modules(Path::new(init::LOAD_LIST));
    if failed.is_empty() {
        say(&format!("virtuos-domain: {loaded} modules loaded"));
    } else {
        say(&format!(
            "virtuos-domain: {loaded} modules loaded, failed: {}",
            failed.join(", ")
        ));
    }
    let port = match open_port(args.port) {
        Ok(p) => p,
        Err(e) => init::power_off(&format!("no control channel: {e:#}")),
    };
    if let Err(e) = wait_host(&port) {
        init::power_off(&format!("{e:#}"));
    }
    let fail = |e: anyhow::Error, what: &str| -> ! {
        let message = format!("{what}: {e:#}");
        let _ = control::send_framed(&mut &port, &DomainReply::Error { message });
        init::power_off(&format!("{what}: {e:#}"));
    };
    let slots = match dax::setup(args.slots) {
        Ok(s) => s,
        Err(e) => fail(e, "cannot set up the region slots"),
    };
    let bell = match (args.slots, args.bell_port) {
        (0, _) => None,
        (_, None) => fail(
            anyhow::anyhow!("no --bell-port"),
            "region slots need a bell port",
        ),
        (_, Some(name)) => match open_port(name).and_then(|p| wait_host(&p).map(|()| p)) {
            Ok(p) => Some(p),
            Err(e) => fail(e, "cannot open the bell port"),
        },
    };
    say(&format!("virtuos-domain: {} region slots", slots.len()));
    let root = match args.role {
        Role::Storage => storage_root(args.disk, args.mount)
            .unwrap_or_else(|e| fail(e, "cannot set up the storage domain")),
        Role::Network => {
            network_root().unwrap_or_else(|e| fail(e, "cannot set up the network domain"))
        }
    };
    let (ours, theirs) = match socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    ) {
        Ok(p) => p,
        Err(e) => init::power_off(&format!("socketpair: {e}")),
    };
    match sys::fork() {
        Ok(Forked::Child) => {
            drop(ours);
            drop(port);
            drop(slots);
            Ok(Booted {
                control: theirs,
                root,
                bell: bell.map(OwnedFd::from),
            })
        }
        Ok(Forked::Parent(server)) => {
            drop(theirs);
            say(&format!(
                "virtuos-domain: booted in {:.2} s (uptime {}), server pid {server}",
                started.elapsed().as_secs_f64(),
                init::uptime()
            ));
            relay(port, ours, server, &Slots { devs: slots, bell })
        }
        Err(e) => init::power_off(&format!("cannot fork the domain server: {e}")),
    }
}

/// A line on the console (PID 1's stderr is /dev/console).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The port named `name`: `/dev/vportNpM` where
/// `/sys/class/virtio-ports/vportNpM/name` holds `name`.
fn open_port(name: &str) -> Result<File> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let dev = loop {
        if let Some(dev) = find_port(Path::new("/sys/class/virtio-ports"), name) {
            let path = Path::new("/dev").join(&dev);
            if path.exists() {
                break path;
            }
        }
        if Instant::now() > deadline {
            bail!("no virtio-serial port named {name:?} (is virtio_console loaded?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)
        .with_context(|| format!("opening {}", dev.display()))
}

/// The device name of the port called `name` under `class` (sysfs).
pub fn find_port(class: &Path, name: &str) -> Option<String> {
    std::fs::read_dir(class)
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| std::fs::read_to_string(e.path().join("name")).is_ok_and(|n| n.trim() == name))
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

/// Wait until the host side of the port is open: virtio_console reports
/// `POLLHUP` while it is not, and drops what the guest writes meanwhile.
fn wait_host(port: &File) -> Result<()> {
    let deadline = Instant::now() + HOST_CONNECT_TIMEOUT;
    loop {
        let mut fds = [PollFd::new(port, PollFlags::OUT)];
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if let Ok(n) = poll(&mut fds, Some(&zero)) {
            let rev = fds[0].revents();
            if n > 0 && !rev.contains(PollFlags::HUP) && rev.contains(PollFlags::OUT) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the daemon did not connect to the control port within {HOST_CONNECT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// QEMU user networking: the guest's address, netmask and gateway.
const GUEST_ADDR: [u8; 4] = [10, 0, 2, 15];
const GUEST_MASK: [u8; 4] = [255, 255, 255, 0];
const GUEST_GW: [u8; 4] = [10, 0, 2, 2];
/// The NIC (virtio-net, the only one).
const GUEST_NIC: &str = "eth0";

/// The network domain: loopback and the NIC up (the address QEMU's user
/// networking expects; its port forwards reach it), and `/run/domain` an
/// empty read-only tmpfs, as the process backend's network root.
fn network_root() -> Result<Root> {
    sys::link_up("lo").context("bringing lo up")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Path::new("/sys/class/net").join(GUEST_NIC).exists() {
        if Instant::now() > deadline {
            bail!("no {GUEST_NIC} (virtio-net; is virtio_net loaded?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    sys::set_ipv4(GUEST_NIC, GUEST_ADDR.into(), GUEST_MASK.into())
        .with_context(|| format!("configuring {GUEST_NIC}"))?;
    sys::link_up(GUEST_NIC).with_context(|| format!("bringing {GUEST_NIC} up"))?;
    sys::add_default_route(GUEST_GW.into()).context("adding the default route")?;
    let root = PathBuf::from(ROOT_DIR);
    std::fs::create_dir_all(&root).with_context(|| format!("creating {ROOT_DIR}"))?;
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY;
    sys::mount(
        Some(Path::new("tmpfs")),
        &root,
        Some("tmpfs"),
        flags,
        Some("mode=0755,size=16k"),
    )
    .with_context(|| format!("mounting an empty tmpfs on {ROOT_DIR}"))?;
    tracing::info!(nic = GUEST_NIC, "network up");
    Ok(Root::new(root, PathBuf::from("/")))
}

/// `/run/domain`: a tmpfs holding only the storage mount point, the disk
/// mounted there, then the tmpfs made read-only.
fn storage_root(disk: &Path, mount: &Path) -> Result<Root> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !disk.exists() {
        if Instant::now() > deadline {
            bail!(
                "no storage disk {} (virtio-blk; is virtio_blk loaded?)",
                disk.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let root = PathBuf::from(ROOT_DIR);
    std::fs::create_dir_all(&root).with_context(|| format!("creating {ROOT_DIR}"))?;
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let opts = "mode=0755,size=64k";
    sys::mount(
        Some(Path::new("tmpfs")),
        &root,
        Some("tmpfs"),
        flags,
        Some(opts),
    )
    .with_context(|| format!("mounting a tmpfs on {ROOT_DIR}"))?;
    let target = super::process::mount_point(&root, mount);
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    sys::mount(
        Some(disk),
        &target,
        Some("ext4"),
        libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )
    .with_context(|| format!("mounting {} (ext4) on {}", disk.display(), target.display()))?;
    sys::mount(
        None,
        &root,
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | flags,
        Some(opts),
    )
    .with_context(|| format!("remounting {ROOT_DIR} read-only"))?;
    tracing::info!(disk = %disk.display(), at = %target.display(), "storage mounted");
    init::set_storage(target);
    Ok(Root::new(root, mount.to_path_buf()))
}

/// PID 1's slots and the bell port.
struct Slots {
    devs: Vec<dax::SlotDev>,
    bell: Option<File>,
}

impl Slots {
    fn views(&self) -> Vec<SlotView> {
        self.devs
            .iter()
            .map(|d| SlotView {
                slot: d.slot,
                offset: d.offset,
            })
            .collect()
    }

    fn get(&self, slot: Option<u32>) -> Option<&dax::SlotDev> {
        let slot = slot?;
        self.devs.iter().find(|d| d.slot == slot)
    }

    /// Turn down-bells from the host into futex wakes on the slots' region
    /// headers. `carry` keeps a partial bell between reads.
    fn ring(&self, carry: &mut Vec<u8>) {
        let Some(port) = &self.bell else { return };
        let mut buf = [0u8; 256];
        let n = match rustix::io::read(port, &mut buf) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => return,
            Err(e) => init::power_off(&format!("bell port: {e}")),
        };
        carry.extend_from_slice(&buf[..n]);
        let whole = carry.len() / BELL_SIZE * BELL_SIZE;
        for b in carry[..whole].chunks_exact(BELL_SIZE) {
            let bell = Bell::decode([b[0], b[1], b[2], b[3]]);
            let dev = |slot: u8| self.get(Some(slot as u32));
            match bell {
                Some(Bell::Doorbell { slot }) => {
                    if let Some(d) = dev(slot) {
                        virtuos_abi::doorbell::wake(&d.header().doorbell, 1);
                    }
                }
                Some(Bell::Interrupt { slot }) => {
                    if let Some(d) = dev(slot) {
                        virtuos_abi::doorbell::wake(&d.header().interrupt_bell, 1);
                    }
                }
                _ => tracing::warn!(?b, "bad bell from the host"),
            }
        }
        carry.drain(..whole);
    }
}

/// A client command from the daemon: the slot's DAX node as [region, state
/// page] descriptors, or why not.
fn slot_fds(slots: &Slots, slot: Option<u32>) -> Result<[OwnedFd; 2], String> {
    let dev = slots.get(slot).ok_or_else(|| match slot {
        Some(s) => format!("{NO_SLOT}: slot {s} does not exist"),
        None => format!("{NO_SLOT}: the command names none"),
    })?;
    let fd = dev.open().map_err(|e| format!("{e:#}"))?;
    let again = fd
        .try_clone()
        .map_err(|e| format!("duplicating a slot descriptor: {e}"))?;
    Ok([fd, again])
}

/// PID 1's loop: relay between the port and the server, ring bells, reap,
/// power off.
fn relay(port: File, server_sock: OwnedFd, server: u32, slots: &Slots) -> ! {
    let mut server_alive = true;
    let mut announced = false;
    // A Shutdown was forwarded: the daemon may close the port as soon as
    // it has the reply, before the server is reaped.
    let mut stopping = false;
    let mut carry = Vec::new();
    let send_port = |reply: &DomainReply| {
        if let Err(e) = control::send_framed(&mut &port, reply) {
            init::power_off(&format!("control port: {e}"));
        }
    };
    loop {
        // Reap everything (orphans end up here too).
        while let Ok(Some((pid, status))) = rustix::process::waitpid(None, WaitOptions::NOHANG) {
            if pid.as_raw_nonzero().get() as u32 == server {
                server_alive = false;
                tracing::info!(?status, "domain server exited");
            }
        }
        if !server_alive {
            // Forward what it said last (the reply to Shutdown).
            while let Ok(true) = readable(&server_sock) {
                match control::recv::<DomainReply>(server_sock.as_fd()) {
                    Ok(Some((reply, _))) => {
                        let _ = control::send_framed(&mut &port, &reply);
                    }
                    _ => break,
                }
            }
            init::power_off(if stopping {
                "shutdown"
            } else {
                "the domain server exited"
            });
        }
        let mut fds = vec![
            PollFd::new(&port, PollFlags::IN),
            PollFd::new(&server_sock, PollFlags::IN),
        ];
        if let Some(bell) = &slots.bell {
            fds.push(PollFd::new(bell, PollFlags::IN));
        }
        let tick = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        match poll(&mut fds, Some(&tick)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => init::power_off(&format!("poll: {e}")),
        }
        let revents: Vec<PollFlags> = fds.iter().map(|f| f.revents()).collect();
        drop(fds);
        if revents.get(2).is_some_and(|r| r.contains(PollFlags::IN)) {
            slots.ring(&mut carry);
        }
        if !revents[1].is_empty() {
            match control::recv::<DomainReply>(server_sock.as_fd()) {
                Ok(Some((reply, _))) => {
                    if !announced && matches!(reply, DomainReply::Ready { .. }) {
                        announced = true;
                        send_port(&DomainReply::Slots {
                            slots: slots.views(),
                        });
                        say(&format!("{READY_LINE} uptime={}", init::uptime()));
                    }
                    send_port(&reply);
                }
                // Closed: the server is exiting; the reaper notices.
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => tracing::warn!("bad message from the domain server: {e}"),
            }
        }
        if !revents[0].is_empty() {
            match control::recv_framed::<DomainCommand>(&mut &port) {
                Ok(Some(cmd)) => {
                    let slot = match &cmd {
                        DomainCommand::AddClient { slot, .. }
                        | DomainCommand::AttachForked { slot, .. } => Some(*slot),
                        _ => None,
                    };
                    let fds = match slot.map(|s| slot_fds(slots, s)) {
                        None => Ok(None),
                        Some(Ok(fds)) => Ok(Some(fds)),
                        Some(Err(message)) => Err(message),
                    };
                    if let DomainCommand::InjectFault { how: Fault::Panic } = cmd {
                        // In a VM, a panic is the guest kernel's.
                        send_port(&DomainReply::Ok);
                        init::kernel_panic();
                    }
                    match fds {
                        Err(message) => send_port(&DomainReply::Error { message }),
                        Ok(fds) => {
                            stopping |= cmd == DomainCommand::Shutdown;
                            let borrowed = fds
                                .as_ref()
                                .map(|f| control::borrow_all(f))
                                .unwrap_or_default();
                            if let Err(e) = control::send(server_sock.as_fd(), &cmd, &borrowed) {
                                init::power_off(&format!("domain server link: {e}"));
                            }
                        }
                    }
                }
                // The daemon closed its side: as in the process backend,
                // the domain ends.
                Ok(None) if stopping => {
                    wait_server(server, Duration::from_secs(5));
                    init::power_off("shutdown");
                }
                Ok(None) => init::power_off("the daemon closed the control port"),
                Err(e) => init::power_off(&format!("control port: {e}")),
            }
        }
    }
}

/// Reap until `server` has exited or `timeout` passed.
fn wait_server(server: u32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match rustix::process::waitpid(None, WaitOptions::NOHANG) {
            Ok(Some((pid, _))) if pid.as_raw_nonzero().get() as u32 == server => return,
            Ok(Some(_)) => continue,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return,
        }
    }
}

fn readable(fd: &OwnedFd) -> rustix::io::Result<bool> {
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    Ok(poll(&mut fds, Some(&zero))? > 0 && fds[0].revents().contains(PollFlags::IN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_found_by_name() {
        let dir = std::env::temp_dir().join(format!("virtuos-vports-{}", std::process::id()));
        for (dev, name) in [("vport0p1", "other"), ("vport0p2", "virtuos.control")] {
            std::fs::create_dir_all(dir.join(dev)).unwrap();
            std::fs::write(dir.join(dev).join("name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(
            find_port(&dir, "virtuos.control").as_deref(),
            Some("vport0p2")
        );
        assert_eq!(find_port(&dir, "nope"), None);
        assert_eq!(find_port(Path::new("/nonexistent"), "x"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn boot_refuses_outside_pid_1() {
        let Err(e) = boot(&BootArgs {
            port: "virtuos.control",
            disk: Path::new("/dev/vda"),
            mount: Path::new("/storage"),
            slots: 0,
            bell_port: None,
            role: Role::Storage,
        }) else {
            panic!("boot succeeded outside a VM");
        };
        assert!(e.to_string().contains("PID 1"), "{e}");
    }
}
