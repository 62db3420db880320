//! `virtuos up`: start the daemon in the background and wait until its
//! storage domain is connected (and its network domain connected or
//! failed: the storage domain works without it). Also the "ensure it runs"
//! step of `run`.

use super::tail;
use crate::client;
use crate::config::{Backend, Settings};
use crate::info::DaemonInfo;
use crate::paths::{self, Env};
use anyhow::{bail, Context, Result};
use std::io::{IsTerminal, Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use virtuos_abi::control::{StatusReport, NETWORK, STORAGE};

/// How long `up` waits for the daemon and its domain.
pub const START_TIMEOUT: Duration = Duration::from_secs(40);
/// The same with a VM to boot (its image is prepared before the wait).
pub const VM_START_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Running {
    pub info: DaemonInfo,
    /// False when this call started it.
    pub already: bool,
    /// What the daemon reported once it served.
    pub report: Option<StatusReport>,
}

/// A line about the network domain for `up` (None without one).
pub fn network_line(report: &StatusReport) -> Option<String> {
    let d = report.domains.iter().find(|d| d.name == NETWORK)?;
    Some(match d.state.as_str() {
        "connected" => {
            let mut line = match (&d.host_link, &d.accel) {
                (Some(link), _) => format!(
                    "network domain at {} (host side {link})",
                    d.address.as_deref().unwrap_or("?")
                ),
                (None, Some(accel)) => format!(
                    "network domain VM (pid {}, {accel}, {} MiB) booted in {}, at {}",
                    d.pid.map_or("-".into(), |p| p.to_string()),
                    d.memory_mib.unwrap_or(0),
                    d.boot_ms
                        .map_or("?".into(), |ms| format!("{:.2} s", ms as f64 / 1000.0)),
                    d.address.as_deref().unwrap_or("?")
                ),
                (None, None) => {
                    format!("network domain at {}", d.address.as_deref().unwrap_or("?"))
                }
            };
            for f in &d.forwards {
                line.push_str(&format!("; forward {f}"));
            }
            line
        }
        state => format!(
            "warning: the network domain is {state}{} (storage still works)",
            d.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
    })
}

/// A line about the storage VM for `up` (None on the process backend).
pub fn vm_line(report: &StatusReport) -> Option<String> {
    let d = report.domains.iter().find(|d| d.name == STORAGE)?;
    let accel = d.accel.as_deref()?;
    Some(format!(
        "storage domain VM (pid {}, {accel}, {} MiB) booted in {}, disk {}",
        d.pid.map_or("-".into(), |p| p.to_string()),
        d.memory_mib.unwrap_or(0),
        d.boot_ms
            .map_or("?".into(), |ms| format!("{:.2} s", ms as f64 / 1000.0)),
        d.data
    ))
}

/// `virtuos up`.
pub fn cmd(settings: &Settings) -> Result<()> {
    let r = ensure(settings)?;
    let verb = if r.already {
        "is already running"
    } else {
        "started"
    };
    let files = match r.info.backend.as_str() {
        "vm" => format!(
            "disk image {}",
            r.report
                .as_ref()
                .and_then(|rep| rep.domains.iter().find(|d| d.name == STORAGE))
                .map_or(String::new(), |d| d.data.clone())
        ),
        _ => format!("files in {}/storage", r.info.data_dir.display()),
    };
    eprintln!(
        "virtuosd {verb} (pid {}): storage domain at {} (backend {}, {files})",
        r.info.pid, r.info.storage_mount, r.info.backend,
    );
    if let Some(line) = r.report.as_ref().and_then(network_line) {
        eprintln!("virtuosd: {line}");
    }
    if let Some(report) = &r.report {
        if let Some(line) = vm_line(report) {
            eprintln!("virtuosd: {line}");
        }
        for n in &report.notes {
            eprintln!("virtuosd: note: {n}");
        }
    }
    Ok(())
}

/// Make sure a compatible daemon runs in `settings.runtime`.
pub fn ensure(settings: &Settings) -> Result<Running> {
    let rt = &settings.runtime;
    if let Some(report) = client::status(rt)? {
        let info = DaemonInfo::read(&rt.info_file()).with_context(|| {
            format!(
                "virtuosd runs but {} is unreadable",
                rt.info_file().display()
            )
        })?;
        check_compatible(settings, &info)?;
        // The network domain is optional: programs that only use storage
        // still work without it.
        if let Some(d) = report
            .domains
            .iter()
            .find(|d| d.state != "connected" && d.name != NETWORK)
        {
            bail!(
                "virtuosd runs but its {} domain is {}; see {} and restart with \
                 `virtuos down && virtuos up`",
                d.name,
                d.state,
                rt.log_file().display()
            );
        }
        return Ok(Running {
            info,
            already: true,
            report: Some(report),
        });
    }
    let (info, report) = start(settings)?;
    Ok(Running {
        info,
        already: false,
        report: Some(report),
    })
}

fn check_compatible(s: &Settings, info: &DaemonInfo) -> Result<()> {
    if s.mount_explicit && s.storage_mount != info.storage_mount {
        bail!(
            "virtuosd already runs with storage mount {} (you asked for {}); \
             run `virtuos down` first to change it",
            info.storage_mount,
            s.storage_mount
        );
    }
    if s.data_explicit && s.data_dir != info.data_dir {
        bail!(
            "virtuosd already runs with data dir {} (you asked for {}); \
             run `virtuos down` first to change it",
            info.data_dir.display(),
            s.data_dir.display()
        );
    }
    if s.backend_explicit && s.backend.as_str() != info.backend {
        bail!(
            "virtuosd already runs with the {} backend (you asked for {}); \
             run `virtuos down` first to change it",
            info.backend,
            s.backend
        );
    }
    Ok(())
}

/// Check that the domain server binary exists (before starting anything).
pub fn domain_bin_present() -> Result<()> {
    let env = Env::current();
    let bin = paths::domain_bin(&env).context("cannot locate the virtuos-domain binary")?;
    if !bin.is_file() {
        bail!(
            "the domain server {} is missing: build it with `cargo build --release` \
             (or set {})",
            bin.display(),
            paths::vars::DOMAIN_BIN
        );
    }
    Ok(())
}

/// vm backend, before the daemon starts: build the static domain server,
/// fetch the kernel, build the initramfs, create the disk image (progress
/// on a terminal), and say once if the VM will run under TCG. Returns the
/// kernel and initramfs for the daemon.
fn prepare_vm(settings: &Settings) -> Result<crate::backend::vm::Image> {
    use crate::backend::vm;
    let image = vm::prepare()?;
    if vm::ensure_storage_image(&settings.storage_image, vm::IMAGE_SIZE)? {
        eprintln!(
            "virtuos: created the storage image {} (ext4, {} GiB, sparse)",
            settings.storage_image.display(),
            vm::IMAGE_SIZE >> 30
        );
    }
    let choice = virtuos_vmm::accel::select()?;
    if choice.accel == virtuos_vmm::accel::Accel::Tcg {
        eprintln!(
            "virtuos: warning: no usable hardware virtualization ({}): the storage domain VM \
             runs under TCG, slowly",
            choice.reason
        );
    }
    Ok(image)
}

/// Start `virtuos daemon ...` detached and wait until it serves.
pub fn start(settings: &Settings) -> Result<(DaemonInfo, StatusReport)> {
    let vm_image = match settings.backend {
        Backend::Process => {
            domain_bin_present()?;
            None
        }
        Backend::Vm => Some(prepare_vm(settings)?),
    };
    let rt = &settings.runtime;
    paths::check_runtime_dir(&rt.dir, paths::DirUse::Own).map_err(anyhow::Error::msg)?;
    if settings.network {
        check_forward_ports(settings)?;
    }
    let log_path = rt.log_file();
    let log = open_log(&log_path)?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);

    // A daemon that is still starting (pid alive, socket not answering yet):
    // wait for it rather than racing it.
    let mut child = None;
    if client::live_pid_in(&rt.pid_file()).is_none() {
        let exe = std::env::current_exe().context("cannot find the virtuos binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("daemon")
            .arg("--runtime-dir")
            .arg(&rt.dir)
            .arg("--data-dir")
            .arg(&settings.data_dir)
            .arg("--storage-mount")
            .arg(&settings.storage_mount)
            .arg("--backend")
            .arg(settings.backend.as_str())
            .arg("--network-subnet")
            .arg(free_subnet(settings).to_string())
            // Also in the environment: tools find "their" daemon by it.
            .env(paths::vars::RUNTIME_DIR, &rt.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if !settings.network {
            cmd.arg("--no-network");
        }
        if !settings.restart {
            cmd.arg("--no-restart");
        }
        cmd.arg("--hang-timeout-ms")
            .arg(settings.hang_timeout.as_millis().to_string());
        cmd.arg("--storage-image").arg(&settings.storage_image);
        cmd.arg("--vm-slots").arg(settings.vm_slots.to_string());
        if let Some(img) = &vm_image {
            cmd.arg("--vm-kernel")
                .arg(&img.kernel)
                .arg("--vm-initrd")
                .arg(&img.initrd);
        }
        for f in &settings.forwards {
            cmd.arg("--forward").arg(f.to_string());
        }
        child = Some(cmd.spawn().context("cannot start virtuosd")?);
    }
    wait_ready(settings, child.as_mut(), &log_path, log_start)
}

/// Every port forward's host port can be listened on (checked before the
/// daemon starts: a forward that cannot be set up fails `up`).
fn check_forward_ports(settings: &Settings) -> Result<()> {
    for f in &settings.forwards {
        let addr = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, f.host_port);
        if let Err(e) = std::net::TcpListener::bind(addr) {
            bail!("cannot forward {f}: cannot listen on {addr}: {e}");
        }
    }
    Ok(())
}

/// The daemon's log, for appending: never through a symbolic link, only
/// a regular file, readable by its owner only.
fn open_log(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot open the log {}", path.display()))?;
    if !log.metadata()?.is_file() {
        bail!("the log {} is not a regular file", path.display());
    }
    Ok(log)
}

fn log_since(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.seek(SeekFrom::Start(offset));
        let _ = f.read_to_string(&mut text);
    }
    if text.trim().is_empty() {
        "  (the log is empty)\n".to_string()
    } else {
        tail(&text, 20)
    }
}

fn wait_ready(
    settings: &Settings,
    mut child: Option<&mut Child>,
    log: &Path,
    log_start: u64,
) -> Result<(DaemonInfo, StatusReport)> {
    let rt = &settings.runtime;
    let spinner = std::io::stderr().is_terminal().then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_message(match settings.backend {
            Backend::Process => "starting virtuosd and its domains...",
            Backend::Vm => "starting virtuosd and booting the storage domain VM...",
        });
        pb.enable_steady_tick(Duration::from_millis(100));
        pb
    });
    let fail = |what: String| {
        anyhow::anyhow!(
            "{what}; last lines of {}:\n{}",
            log.display(),
            log_since(log, log_start)
        )
    };
    let started = Instant::now();
    let result = loop {
        if let Ok(Some(report)) = client::status(rt) {
            let state = |name: &str| {
                report
                    .domains
                    .iter()
                    .find(|d| d.name == name)
                    .map(|d| d.state.clone())
            };
            let storage = state(STORAGE);
            // Done when storage serves and the network domain (if any) has
            // either connected or given up.
            let network_settled = matches!(
                state(NETWORK).as_deref(),
                None | Some("connected") | Some("disconnected")
            );
            if storage.as_deref() == Some("connected") && network_settled {
                match DaemonInfo::read(&rt.info_file()) {
                    Some(info) => break Ok((info, report)),
                    None => break Err(fail("virtuosd wrote no info file".into())),
                }
            }
            if storage.as_deref() == Some("disconnected") {
                break Err(fail("the storage domain failed to start".into()));
            }
        }
        if let Some(c) = child.as_deref_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                break Err(fail(format!("virtuosd exited during start-up ({status})")));
            }
        }
        let timeout = match settings.backend {
            Backend::Process => START_TIMEOUT,
            Backend::Vm => VM_START_TIMEOUT,
        };
        if started.elapsed() > timeout {
            break Err(fail(format!(
                "virtuosd did not come up within {}s",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    if let Some(pb) = spinner {
        pb.finish_and_clear();
    }
    result
}

/// The subnet for the new daemon's network link: the configured one, or the
/// default one moved to the next free /30 while another live domain holds
/// its host interface (a veth pair vanishes with its domain's namespace, so
/// an existing interface belongs to a running daemon).
fn free_subnet(settings: &Settings) -> crate::network::Subnet {
    let mut s = settings.network_subnet;
    if settings.subnet_explicit {
        return s;
    }
    for _ in 0..64 {
        if !std::path::Path::new("/sys/class/net")
            .join(s.host_if())
            .exists()
        {
            return s;
        }
        s = s.next_link();
    }
    settings.network_subnet
}
