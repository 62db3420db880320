//! Assemble a domain's initramfs: `/init`, the empty mount points, the
//! kernel modules with their dependencies, and `/lib/modules/load.list`
//! (guest paths in load order, for PID 1 to `finit_module`).
//!
//! Images are cached under `<cache>/initramfs/<hash>.cpio`, keyed by a
//! SHA-256 over everything that goes in (init binary, module files, extra
//! files, layout version): a changed init binary gives a new image.

use crate::cpio::CpioWriter;
use crate::kernel::Kernel;
use crate::modules::{ModuleIndex, Want};
use crate::progress::Step;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Bumped whenever the image layout changes.
const LAYOUT_VERSION: &str = "virtuos-initramfs-1";
/// Where PID 1 finds the module list.
pub const LOAD_LIST: &str = "/lib/modules/load.list";

/// What goes into an image.
#[derive(Debug, Clone)]
pub struct InitramfsSpec {
    /// Static binary that becomes `/init`.
    pub init: PathBuf,
    /// Modules to include (with dependencies).
    pub modules: Vec<Want>,
    /// Extra files: (guest path, host path), mode 0755.
    pub files: Vec<(String, PathBuf)>,
}

impl InitramfsSpec {
    /// A spec with [`domain_modules`].
    pub fn new(init: impl Into<PathBuf>) -> Self {
        InitramfsSpec {
            init: init.into(),
            modules: domain_modules(),
            files: Vec::new(),
        }
    }
}

/// The modules a service domain needs: virtio transport, block and net,
/// uio (doorbell interrupts), NVDIMM/pmem and device DAX, pvpanic,
/// virtio_console (virtio-serial doorbells), vfio-pci (MSI-X doorbell
/// interrupts behind an emulated IOMMU; see TRANSPORT.md).
/// ext4 is built into Debian's cloud kernel (`CONFIG_EXT4_FS=y`).
pub fn domain_modules() -> Vec<Want> {
    let req = [
        "virtio",
        "virtio_ring",
        "virtio_pci",
        "virtio_blk",
        "virtio_net",
        "uio",
        "uio_pci_generic",
    ];
    let opt = [
        "virtio_pci_modern_dev",
        "virtio_pci_legacy_dev",
        "libnvdimm",
        "nfit",
        "nd_pmem",
        "nd_btt",
        "dax_pmem",
        "device_dax",
        "pvpanic",
        "pvpanic_mmio",
        "virtio_console",
        "vfio",
        "vfio_iommu_type1",
        "vfio_virqfd",
        "vfio_pci_core",
        "vfio_pci",
        "ext4",
    ];
    req.iter()
        .map(|m| Want::required(m))
        .chain(opt.iter().map(|m| Want::optional(m)))
        .collect()
}

/// A built image.
#[derive(Debug, Clone)]
pub struct Initramfs {
    pub path: PathBuf,
    /// Hex SHA-256 of the inputs.
    pub hash: String,
    /// Module names in load order.
    pub modules: Vec<String>,
}

/// Build (or reuse) the image for `spec` under `<cache>/initramfs/`.
pub fn build(kernel: &Kernel, spec: &InitramfsSpec, cache: &Path) -> Result<Initramfs> {
    let index = ModuleIndex::load(&kernel.modules_dir)?;
    let resolved = index.resolve(&spec.modules)?;
    let init = std::fs::read(&spec.init)
        .with_context(|| format!("reading init binary {}", spec.init.display()))?;
    let mut modules = Vec::new();
    for m in &resolved {
        let path = kernel.modules_dir.join(&m.path);
        let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        modules.push((m, data));
    }
    let mut extras = Vec::new();
    for (guest, host) in &spec.files {
        let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        extras.push((guest.as_str(), data));
    }

    let mut h = Sha256::new();
    let mut feed = |label: &str, data: &[u8]| {
        h.update((label.len() as u64).to_le_bytes());
        h.update(label.as_bytes());
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    };
    feed(LAYOUT_VERSION, kernel.release.as_bytes());
    feed("/init", &init);
    for (m, data) in &modules {
        feed(&m.path.to_string_lossy(), data);
    }
    for (guest, data) in &extras {
        feed(guest, data);
    }
    let hash: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let names = resolved.iter().map(|m| m.name.clone()).collect();

    let dir = cache.join("initramfs");
    let path = dir.join(format!("{}.cpio", &hash[..24]));
    if path.exists() {
        return Ok(Initramfs {
            path,
            hash,
            modules: names,
        });
    }
    let step = Step::start(format!("building initramfs ({} modules)", modules.len()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = CpioWriter::new(std::io::BufWriter::new(file));
    for d in [
        "/dev",
        "/proc",
        "/sys",
        "/tmp",
        "/run",
        "/lib",
        "/lib/modules",
    ] {
        w.dir(d, if d == "/tmp" { 0o1777 } else { 0o755 })?;
    }
    w.char_dev("/dev/console", 0o600, 5, 1)?;
    w.char_dev("/dev/null", 0o666, 1, 3)?;
    w.file("/init", 0o755, &init)?;
    let base = format!("/lib/modules/{}", kernel.release);
    let mut made = std::collections::BTreeSet::new();
    let mut list = String::new();
    for (m, data) in &modules {
        let guest = format!("{base}/{}", m.path.to_string_lossy());
        mkdirs(&mut w, &mut made, &guest)?;
        w.file(&guest, 0o644, data)?;
        list.push_str(&guest);
        list.push('\n');
    }
    w.file(LOAD_LIST, 0o644, list.as_bytes())?;
    for (guest, data) in &extras {
        mkdirs(&mut w, &mut made, guest)?;
        w.file(guest, 0o755, data)?;
    }
    w.finish()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    std::fs::rename(&tmp, &path)?;
    let size = std::fs::metadata(&path)?.len();
    step.done(&format!(
        "{} ({:.1} MiB)",
        path.display(),
        size as f64 / (1 << 20) as f64
    ));
    Ok(Initramfs {
        path,
        hash,
        modules: names,
    })
}

/// Emit the parent directories of `guest` that are not written yet
/// (`/lib/modules` exists already).
fn mkdirs<W: std::io::Write>(
    w: &mut CpioWriter<W>,
    made: &mut std::collections::BTreeSet<String>,
    guest: &str,
) -> Result<()> {
    let parts: Vec<&str> = guest.trim_start_matches('/').split('/').collect();
    for i in 1..parts.len() {
        let d = format!("/{}", parts[..i].join("/"));
        if matches!(
            d.as_str(),
            "/lib" | "/lib/modules" | "/dev" | "/run" | "/tmp"
        ) {
            continue;
        }
        if made.insert(d.clone()) {
            w.dir(&d, 0o755)?;
        }
    }
    Ok(())
}
