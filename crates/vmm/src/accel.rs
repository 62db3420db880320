//! Choosing QEMU's accelerator.
//!
//! `/dev/kvm` existing is not enough: on these machines it is `kvm_pvm`
//! (nested PVM), which runs only PVM-enlightened guests; a stock kernel under
//! it crawls and stops. KVM is chosen only when `/dev/kvm` opens, answers
//! `KVM_GET_API_VERSION` = 12, and the loaded vendor module is `kvm_intel` or
//! `kvm_amd` (hardware virtualization). `VIRTUOS_ACCEL=kvm|tcg` overrides.

use anyhow::{bail, Result};
use std::path::Path;

/// The accelerator QEMU runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The environment variable that forces an accelerator.
pub const OVERRIDE_ENV: &str = "VIRTUOS_ACCEL";

/// Parse an override value: `None`/empty/`auto` means probe.
pub fn parse_override(value: Option<&str>) -> Result<Option<Accel>> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("auto") => Ok(None),
        Some("kvm") => Ok(Some(Accel::Kvm)),
        Some("tcg") => Ok(Some(Accel::Tcg)),
        Some(other) => bail!("{OVERRIDE_ENV}={other:?}: expected `kvm`, `tcg` or `auto`"),
    }
}

/// The decision and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub accel: Accel,
    pub reason: String,
}

/// Decide, honouring `VIRTUOS_ACCEL`; logs a one-line warning for TCG.
pub fn select() -> Result<Choice> {
    let forced = parse_override(std::env::var(OVERRIDE_ENV).ok().as_deref())?;
    let choice = match forced {
        Some(accel) => Choice {
            accel,
            reason: format!("{OVERRIDE_ENV}={accel}"),
        },
        None => probe(Path::new("/dev/kvm"), Path::new("/sys/module")),
    };
    if choice.accel == Accel::Tcg {
        tracing::warn!(
            "no usable hardware virtualization ({}): VMs run under TCG, slowly",
            choice.reason
        );
    }
    Ok(choice)
}

/// Probe `dev` (normally `/dev/kvm`) and the module directory `sys_module`.
pub fn probe(dev: &Path, sys_module: &Path) -> Choice {
    let tcg = |reason: String| Choice {
        accel: Accel::Tcg,
        reason,
    };
    if sys_module.join("kvm_pvm").exists() && !hardware_module(sys_module) {
        return tcg("/dev/kvm is kvm_pvm, which runs only PVM guests".into());
    }
    let file = match std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        Ok(f) => f,
        Err(e) => return tcg(format!("cannot open {}: {e}", dev.display())),
    };
    match api_version(&file) {
        Ok(12) => {}
        Ok(v) => {
            return tcg(format!(
                "{} answers KVM API version {v}, not 12",
                dev.display()
            ))
        }
        Err(e) => return tcg(format!("{} is not KVM: {e}", dev.display())),
    }
    if !hardware_module(sys_module) {
        return tcg("neither kvm_intel nor kvm_amd is loaded".into());
    }
    Choice {
        accel: Accel::Kvm,
        reason: "KVM with hardware virtualization".into(),
    }
}

fn hardware_module(sys_module: &Path) -> bool {
    ["kvm_intel", "kvm_amd"]
        .iter()
        .any(|m| sys_module.join(m).exists())
}

fn api_version(file: &std::fs::File) -> std::io::Result<i32> {
    use std::os::fd::AsRawFd;
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00; // _IO(KVMIO, 0x00)
                                                       // SAFETY: the fd is open for the duration of the call; this ioctl takes
                                                       // no argument and only returns an int.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_overrides() {
        assert_eq!(parse_override(None).unwrap(), None);
        assert_eq!(parse_override(Some("")).unwrap(), None);
        assert_eq!(parse_override(Some("auto")).unwrap(), None);
        assert_eq!(parse_override(Some("kvm")).unwrap(), Some(Accel::Kvm));
        assert_eq!(parse_override(Some(" TCG ")).unwrap(), Some(Accel::Tcg));
        assert!(parse_override(Some("hvf")).is_err());
    }

    #[test]
    fn pvm_and_missing_device_mean_tcg() {
        let dir = std::env::temp_dir().join(format!("virtuos-accel-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("kvm_pvm")).unwrap();
        let c = probe(Path::new("/dev/null"), &dir);
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("kvm_pvm"), "{}", c.reason);
        std::fs::remove_dir_all(dir.join("kvm_pvm")).unwrap();
        let c = probe(Path::new("/nonexistent/kvm"), &dir);
        assert_eq!(c.accel, Accel::Tcg);
        // /dev/null opens but is not KVM.
        let c = probe(Path::new("/dev/null"), &dir);
        assert_eq!(c.accel, Accel::Tcg);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn this_machine_is_not_kvm_capable() {
        // DESIGN.md: /dev/kvm here is kvm_pvm.
        if Path::new("/sys/module/kvm_pvm").exists() {
            let c = probe(Path::new("/dev/kvm"), Path::new("/sys/module"));
            assert_eq!(c.accel, Accel::Tcg, "{}", c.reason);
        }
    }
}
