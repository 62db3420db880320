//! The init duties of PID 1 in the domain VM: basic mounts, kernel modules,
//! and powering off (cleanly, on panic too). No `unsafe`: rustix wraps
//! `finit_module`, `sync` and `reboot`.

use crate::sys;
use std::ffi::CString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The module list the initramfs carries (`virtuos_vmm::initramfs::LOAD_LIST`).
pub const LOAD_LIST: &str = "/lib/modules/load.list";

/// The mounted storage file system (remounted read-only before power-off).
static STORAGE: Mutex<Option<PathBuf>> = Mutex::new(None);

pub fn set_storage(path: PathBuf) {
    *STORAGE.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
}

fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// proc, sysfs, devtmpfs, and tmpfs on /run and /tmp. Failures are printed
/// (a later step that needs the mount reports the real error).
pub fn mount_basics() {
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let mounts: [(&str, &str, &str, libc::c_ulong, Option<&str>); 5] = [
        ("proc", "/proc", "proc", nosuid, None),
        ("sysfs", "/sys", "sysfs", nosuid, None),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            libc::MS_NOSUID,
            Some("mode=0755"),
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=0755"),
        ),
        (
            "tmpfs",
            "/tmp",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=1777"),
        ),
    ];
    for (src, target, fstype, flags, data) in mounts {
        let _ = std::fs::create_dir_all(target);
        if let Err(e) = sys::mount(
            Some(Path::new(src)),
            Path::new(target),
            Some(fstype),
            flags,
            data,
        ) {
            say(&format!("virtuos-domain: mount {fstype} on {target}: {e}"));
        }
    }
}

/// `finit_module` every path in `list`, in order. Returns the number loaded
/// (or already present) and `name: error` for each failure.
pub fn load_modules(list: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(list).unwrap_or_default();
    let (mut loaded, mut failed) = (0, Vec::new());
    let empty = CString::default();
    for path in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let name = Path::new(path)
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                failed.push(format!("{name}: {e}"));
                continue;
            }
        };
        match rustix::system::finit_module(&file, &empty, 0) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => loaded += 1,
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    (loaded, failed)
}

/// Guest uptime in seconds, as `/proc/uptime` says.
pub fn uptime() -> String {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// A panic in PID 1 powers the VM off (after the message), so the daemon
/// sees the domain die instead of a wedged VM. Processes forked from PID 1
/// (the server, shadows) keep the normal behaviour.
pub fn install_panic_power_off() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        if rustix::process::getpid().as_raw_nonzero().get() == 1 {
            power_off(&format!("PID 1 panicked: {info}"));
        }
    }));
}

/// Fault injection (`virtuos domain crash storage --how panic`): crash the
/// guest kernel (sysrq `c`). With `panic=-1` and `-no-reboot`, QEMU exits
/// and the daemon sees the domain die. Nothing is synced first, on purpose.
pub fn kernel_panic() -> ! {
    say("virtuos-domain: fault injection: crashing the guest kernel");
    std::thread::sleep(Duration::from_millis(50));
    if let Err(e) = std::fs::write("/proc/sysrq-trigger", "c") {
        say(&format!("virtuos-domain: sysrq-trigger: {e}"));
    }
    // Not reached unless sysrq is missing: die the other way.
    power_off("fault injection (no sysrq)")
}

/// Sync, remount the storage read-only, power off. Never returns.
pub fn power_off(why: &str) -> ! {
    say(&format!("virtuos-domain: powering off: {why}"));
    rustix::fs::sync();
    let storage = STORAGE.lock().ok().and_then(|s| s.clone());
    if let Some(path) = storage {
        if let Err(e) = sys::mount(
            None,
            &path,
            None,
            libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            None,
        ) {
            say(&format!(
                "virtuos-domain: cannot remount {} read-only: {e}",
                path.display()
            ));
        }
        rustix::fs::sync();
    }
    // Let QEMU take the last frames off the port before the machine stops.
    std::thread::sleep(Duration::from_millis(50));
    loop {
        if let Err(e) = rustix::system::reboot(rustix::system::RebootCommand::PowerOff) {
            say(&format!("virtuos-domain: reboot(POWER_OFF): {e}"));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_list_failures_are_named() {
        let dir = std::env::temp_dir().join(format!("virtuos-modlist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let list = dir.join("load.list");
        std::fs::write(&list, "/nonexistent/virtio.ko\n\n").unwrap();
        let (loaded, failed) = load_modules(&list);
        assert_eq!(loaded, 0);
        assert_eq!(failed.len(), 1);
        assert!(failed[0].starts_with("virtio.ko:"), "{failed:?}");
        let (loaded, failed) = load_modules(&dir.join("missing"));
        assert_eq!((loaded, failed.len()), (0, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
