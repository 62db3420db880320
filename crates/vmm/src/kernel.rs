//! Fetch Debian's stock cloud kernel without installing it on the host.
//!
//! The metapackage `linux-image-cloud-amd64` depends on the current ABI's
//! image package (`linux-image-<abi>-cloud-amd64`); we resolve that with
//! `apt-cache`, `apt-get download` the `.deb` into the cache, and
//! `dpkg-deb -x` it into `<cache>/kernel/<package>_<version>/`.

use crate::error::VmmError;
use crate::progress::Step;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The metapackage whose dependency is the current cloud kernel.
pub const METAPACKAGE: &str = "linux-image-cloud-amd64";
/// Marker written when an extraction is complete.
const COMPLETE: &str = ".virtuos-complete";

/// An extracted kernel package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// Debian package name, e.g. `linux-image-6.1.0-48-cloud-amd64`.
    pub package: String,
    /// Debian package version, e.g. `6.1.172-1`.
    pub version: String,
    /// Kernel release (`uname -r` in the guest), e.g. `6.1.0-48-cloud-amd64`.
    pub release: String,
    /// Extraction root.
    pub root: PathBuf,
    /// `boot/vmlinuz-<release>`.
    pub vmlinuz: PathBuf,
    /// `boot/config-<release>`.
    pub config: PathBuf,
    /// `lib/modules/<release>` (or `usr/lib/modules/<release>`).
    pub modules_dir: PathBuf,
}

impl Kernel {
    /// Is `CONFIG_<name>` `=y` in this kernel's config?
    pub fn config_builtin(&self, name: &str) -> Result<bool> {
        Ok(config_value(&self.config, name)?.as_deref() == Some("y"))
    }
}

/// The value of `CONFIG_<name>` in a kernel config file (`None` if unset).
pub fn config_value(config: &Path, name: &str) -> Result<Option<String>> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("reading kernel config {}", config.display()))?;
    let key = format!("CONFIG_{name}=");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .map(|v| v.trim_matches('"').to_string()))
}

/// Fetch into [`crate::cache::cache_dir`].
pub fn fetch_default() -> Result<Kernel> {
    fetch(&crate::cache::cache_dir())
}

/// Where the last resolution is noted (`package version`).
const RESOLVED: &str = "resolved";
/// How long a resolution stays good.
const RESOLVE_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Resolve (at most once a day), download (unless cached) and extract the
/// cloud kernel.
pub fn fetch(cache: &Path) -> Result<Kernel> {
    let kernels = cache.join("kernel");
    // apt-cache takes seconds: within a day of the last resolution, the
    // kernel it chose is still the current one.
    let note = kernels.join(RESOLVED);
    let fresh = std::fs::metadata(&note)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < RESOLVE_TTL);
    if fresh {
        let text = std::fs::read_to_string(&note).unwrap_or_default();
        if let Some((package, version)) = text.trim().split_once(' ') {
            let dir = kernels.join(format!("{package}_{version}"));
            if dir.join(COMPLETE).exists() {
                return locate(&dir, package, version);
            }
        }
    }
    let (package, version) = match resolve() {
        Ok(pv) => {
            let _ = std::fs::create_dir_all(&kernels);
            let _ = std::fs::write(&note, format!("{} {}\n", pv.0, pv.1));
            pv
        }
        Err(e) => {
            // Offline with an empty apt list: use what the cache has.
            if let Some(k) = newest_cached(&kernels)? {
                tracing::warn!("{e:#}; using cached kernel {} {}", k.package, k.version);
                return Ok(k);
            }
            return Err(e);
        }
    };
    let dir = kernels.join(format!("{package}_{version}"));
    if dir.join(COMPLETE).exists() {
        return locate(&dir, &package, &version);
    }
    let step = Step::start(format!("fetching kernel {package} {version}"));
    let downloads = cache.join("downloads");
    std::fs::create_dir_all(&downloads)
        .with_context(|| format!("creating {}", downloads.display()))?;
    let deb = download(&package, &version, &downloads, &step)?;
    step.set("extracting");
    let tmp = kernels.join(format!(".tmp-{}-{package}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let out = run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp),
        "dpkg-deb",
    )?;
    if !out.status.success() {
        bail!(
            "dpkg-deb -x {} failed: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    std::fs::write(tmp.join(COMPLETE), format!("{package} {version}\n"))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))?;
    let _ = std::fs::remove_file(&deb);
    let kernel = locate(&dir, &package, &version)?;
    step.done(&format!("kernel {} in {}", kernel.release, dir.display()));
    Ok(kernel)
}

/// Resolve `(package, version)` of the kernel the metapackage depends on.
/// Runs `apt-get update` once only when the lookup finds nothing.
pub fn resolve() -> Result<(String, String)> {
    if let Some(pv) = lookup()? {
        return Ok(pv);
    }
    tracing::info!("{METAPACKAGE} unknown to apt-cache; running apt-get update");
    let out = run(Command::new("apt-get").args(["update", "-q"]), "apt-get")?;
    if !out.status.success() {
        return Err(classify_apt_failure(&out, "the package lists"));
    }
    lookup()?.ok_or_else(|| VmmError::PackageNotFound(METAPACKAGE.into()).into())
}

fn lookup() -> Result<Option<(String, String)>> {
    let out = run(
        Command::new("apt-cache").args(["depends", METAPACKAGE]),
        "apt-cache",
    )?;
    let Some(package) = parse_depends(&String::from_utf8_lossy(&out.stdout)) else {
        return Ok(None);
    };
    let out = run(
        Command::new("apt-cache").args(["show", "--no-all-versions", &package]),
        "apt-cache",
    )?;
    Ok(parse_show_version(&String::from_utf8_lossy(&out.stdout)).map(|v| (package, v)))
}

/// The first `Depends: linux-image-*` line of `apt-cache depends` output.
pub fn parse_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(|p| p.trim().trim_start_matches('|').trim())
        .find(|p| p.starts_with("linux-image-") && !p.starts_with('<'))
        .map(str::to_string)
}

/// The `Version:` field of `apt-cache show` output.
pub fn parse_show_version(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_string())
}

fn download(package: &str, version: &str, dir: &Path, step: &Step) -> Result<PathBuf> {
    step.set("downloading");
    let spec = format!("{package}={version}");
    let out = run(
        Command::new("apt-get")
            .args(["download", "-q", &spec])
            .current_dir(dir),
        "apt-get",
    )?;
    if !out.status.success() {
        return Err(classify_apt_failure(&out, package));
    }
    let bare = version.rsplit(':').next().unwrap_or(version);
    let prefix = format!("{package}_{bare}_");
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(path);
        }
    }
    bail!("apt-get download {spec} left no .deb in {}", dir.display())
}

fn classify_apt_failure(out: &Output, what: &str) -> anyhow::Error {
    let err =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let detail = err
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("Err") || l.starts_with("W:"))
        .collect::<Vec<_>>()
        .join("; ");
    let detail = if detail.is_empty() {
        err.trim().to_string()
    } else {
        detail
    };
    if err.contains("Unable to locate package") || err.contains("Can't select") {
        return VmmError::PackageNotFound(what.into()).into();
    }
    if err.contains("Temporary failure resolving")
        || err.contains("Could not resolve")
        || err.contains("Failed to fetch")
        || err.contains("Could not connect")
        || err.contains("Network is unreachable")
    {
        return VmmError::NoNetwork {
            what: what.into(),
            detail,
        }
        .into();
    }
    anyhow::anyhow!("apt failed for {what}: {detail}")
}

fn run(cmd: &mut Command, tool: &str) -> Result<Output> {
    cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            VmmError::ToolMissing {
                tool: tool.into(),
                hint: "the kernel is fetched with Debian's apt and dpkg".into(),
            }
            .into()
        } else {
            anyhow::Error::new(e).context(format!("running {tool}"))
        }
    })
}

fn newest_cached(kernels: &Path) -> Result<Option<Kernel>> {
    let Ok(rd) = std::fs::read_dir(kernels) else {
        return Ok(None);
    };
    let mut dirs: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(COMPLETE).exists())
        .collect();
    dirs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    let Some(dir) = dirs.pop() else {
        return Ok(None);
    };
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let (package, version) = name.split_once('_').unwrap_or((&name, ""));
    Ok(Some(locate(&dir, package, version)?))
}

/// Find vmlinuz, config and the modules directory in an extracted package.
pub fn locate(root: &Path, package: &str, version: &str) -> Result<Kernel> {
    let boot = root.join("boot");
    let mut release = None;
    for entry in std::fs::read_dir(&boot).with_context(|| format!("reading {}", boot.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(r) = name.strip_prefix("vmlinuz-") {
            release = Some(r.to_string());
        }
    }
    let release = release.with_context(|| format!("no vmlinuz-* in {}", boot.display()))?;
    let modules_dir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(&release))
        .find(|d| d.is_dir())
        .with_context(|| format!("no modules directory for {release} in {}", root.display()))?;
    Ok(Kernel {
        package: package.into(),
        version: version.into(),
        vmlinuz: boot.join(format!("vmlinuz-{release}")),
        config: boot.join(format!("config-{release}")),
        release,
        root: root.into(),
        modules_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apt_cache_output() {
        let deps = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-48-cloud-amd64\n";
        assert_eq!(
            parse_depends(deps).as_deref(),
            Some("linux-image-6.1.0-48-cloud-amd64")
        );
        assert_eq!(parse_depends("linux-image-cloud-amd64\n"), None);
        let show = "Package: linux-image-6.1.0-48-cloud-amd64\nSource: linux-signed-amd64 (6.1.172+1)\nVersion: 6.1.172-1\n";
        assert_eq!(parse_show_version(show).as_deref(), Some("6.1.172-1"));
    }
}
