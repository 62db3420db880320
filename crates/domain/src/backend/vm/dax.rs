//! PID 1's region slots: every NVDIMM the host gave the VM becomes a
//! device-DAX node, identified by the tag the daemon wrote into its last
//! page (`virtuos_abi::slot`).
//!
//! Stock drivers, no ndctl: for each label-less region, unbind
//! `namespaceN.0` from `nd_pmem`, configure the region's `dax_seed` (uuid,
//! 4 KiB alignment, struct pages in guest RAM so that nothing the host side
//! can write is ever read by the guest kernel after probing), bind it to
//! `dax_pmem`; `device_dax` then creates `/dev/daxN.M`, a write-back
//! mapping of the very pages the host maps (crates/vmm/TRANSPORT.md).

use anyhow::{anyhow, bail, Context, Result};
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use virtuos_abi::mapping::Mapping;
use virtuos_abi::region::RegionHeader;
use virtuos_abi::slot::{self, MAX_SLOTS};
use virtuos_abi::PAGE_SIZE;

const ND: &str = "/sys/bus/nd/devices";
const DAX: &str = "/sys/bus/dax/devices";
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// One slot as the guest sees it.
pub struct SlotDev {
    pub slot: u32,
    pub dev: PathBuf,
    /// Offset of the DAX view in the slot file (what the host maps).
    pub offset: u64,
    /// The region header page, for the wakes PID 1 relays.
    header: Mapping,
}

impl SlotDev {
    pub fn header(&self) -> &RegionHeader {
        self.header.atomic_ref(0)
    }

    /// A fresh read-write descriptor of the DAX node, for a shadow.
    pub fn open(&self) -> Result<OwnedFd> {
        open_dev(&self.dev)
    }
}

fn open_dev(dev: &Path) -> Result<OwnedFd> {
    rustix::fs::open(dev, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("opening {}", dev.display()))
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn write(path: impl AsRef<Path>, value: &str) -> Result<()> {
    let path = path.as_ref();
    std::fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

/// Entries of `dir` whose names start with `prefix`, sorted.
fn named(dir: &str, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Turn all `expected` NVDIMMs into tagged DAX slots.
pub fn setup(expected: usize) -> Result<Vec<SlotDev>> {
    if expected == 0 {
        return Ok(Vec::new());
    }
    if expected > MAX_SLOTS {
        bail!("{expected} slots asked for, at most {MAX_SLOTS}");
    }
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let regions = loop {
        let r = named(ND, "region");
        if r.len() >= expected {
            break r;
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {expected} NVDIMM regions appeared (are nfit and libnvdimm loaded?)",
                r.len()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for region in &regions {
        to_devdax(region).with_context(|| format!("configuring {region} as device DAX"))?;
    }
    let names = loop {
        let names: Vec<String> = named(DAX, "dax")
            .into_iter()
            .filter(|n| Path::new("/dev").join(n).exists())
            .collect();
        if names.len() >= expected {
            break names;
        }
        if Instant::now() > deadline {
            bail!("{} of {expected} /dev/dax nodes appeared", names.len());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut slots: Vec<SlotDev> = Vec::with_capacity(names.len());
    for name in names {
        let s = identify(&name).with_context(|| format!("identifying /dev/{name}"))?;
        if slots.iter().any(|o| o.slot == s.slot) {
            bail!("two DAX devices carry the tag of slot {}", s.slot);
        }
        slots.push(s);
    }
    slots.sort_by_key(|s| s.slot);
    Ok(slots)
}

/// `ndctl create-namespace -m devdax --map=mem` for the one namespace of
/// `region`, through sysfs.
fn to_devdax(region: &str) -> Result<()> {
    let id = region.trim_start_matches("region");
    let ns = format!("namespace{id}.0");
    let seed = read(format!("{ND}/{region}/dax_seed"));
    if seed.is_empty() {
        bail!("{region} has no dax_seed (is dax_pmem loaded?)");
    }
    if let Ok(driver) = std::fs::read_link(format!("{ND}/{ns}/driver")) {
        let driver = driver
            .file_name()
            .ok_or_else(|| anyhow!("odd driver link of {ns}"))?
            .to_string_lossy()
            .into_owned();
        write(format!("/sys/bus/nd/drivers/{driver}/unbind"), &ns)?;
    }
    let d = format!("{ND}/{seed}");
    write(format!("{d}/uuid"), &read("/proc/sys/kernel/random/uuid"))?;
    write(format!("{d}/align"), &PAGE_SIZE.to_string())?;
    write(format!("{d}/mode"), "ram")?;
    write(format!("{d}/namespace"), &ns)?;
    write("/sys/bus/nd/drivers/dax_pmem/bind", &seed)
}

/// Read the tag in the last page of `/dev/<name>`.
fn identify(name: &str) -> Result<SlotDev> {
    let dev = Path::new("/dev").join(name);
    let size: u64 = read(format!("{DAX}/{name}/size"))
        .parse()
        .with_context(|| format!("no size for {name}"))?;
    let offset = slot::view_offset(size)
        .ok_or_else(|| anyhow!("{name} has {size} bytes, not a region slot"))?;
    let fd = open_dev(&dev)?;
    let tag_page = Mapping::map_at(&fd, size - PAGE_SIZE as u64, PAGE_SIZE, false)
        .context("mapping the tag page")?;
    let mut tag = [0u8; 24];
    tag_page.read_bytes(0, &mut tag);
    let slot = slot::decode_tag(&tag).ok_or_else(|| anyhow!("{name} carries no slot tag"))?;
    let header = Mapping::map_at(&fd, 0, PAGE_SIZE, true).context("mapping the region header")?;
    Ok(SlotDev {
        slot,
        dev,
        offset,
        header,
    })
}
