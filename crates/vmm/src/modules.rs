//! Kernel module dependency resolution.
//!
//! Uses `modules.dep` when the kernel tree has one. Debian's image package
//! ships none (depmod runs at install time, and we never install), so
//! otherwise the index is built from each module's `.modinfo` ELF section
//! (`depends=`), which is what depmod reads too.

use crate::error::VmmError;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module the image wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub name: String,
    /// Leave it out silently when the kernel has no such module.
    pub optional: bool,
}

impl Want {
    pub fn required(name: &str) -> Want {
        Want {
            name: normalize(name),
            optional: false,
        }
    }
    pub fn optional(name: &str) -> Want {
        Want {
            name: normalize(name),
            optional: true,
        }
    }
}

/// One module file and its direct dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    /// Path relative to the modules directory, e.g. `kernel/drivers/virtio/virtio.ko`.
    pub path: PathBuf,
    pub deps: Vec<String>,
}

/// All modules of one kernel.
#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    modules: BTreeMap<String, Module>,
    builtin: BTreeSet<String>,
}

/// Module names use `_`; file names may use `-`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// `virtio_pci` from `kernel/drivers/virtio/virtio_pci.ko[.xz]`.
pub fn name_of(path: &Path) -> String {
    let file = path.file_name().unwrap_or_default().to_string_lossy();
    let stem = file.split(".ko").next().unwrap_or(&file);
    normalize(stem)
}

impl ModuleIndex {
    /// `modules.dep` if present, else a scan of the `.ko` files.
    pub fn load(modules_dir: &Path) -> Result<ModuleIndex> {
        let builtin =
            std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
        let dep = modules_dir.join("modules.dep");
        if dep.exists() {
            let text = std::fs::read_to_string(&dep)
                .with_context(|| format!("reading {}", dep.display()))?;
            return ModuleIndex::parse(&text, &builtin);
        }
        let mut index = ModuleIndex::scan(modules_dir)?;
        index.builtin = parse_builtin(&builtin);
        Ok(index)
    }

    /// Parse `modules.dep` (`path: dep-path dep-path ...`) and `modules.builtin`.
    pub fn parse(modules_dep: &str, modules_builtin: &str) -> Result<ModuleIndex> {
        let mut modules = BTreeMap::new();
        for (n, line) in modules_dep.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (path, deps) = line
                .split_once(':')
                .with_context(|| format!("modules.dep line {}: no ':'", n + 1))?;
            let path = PathBuf::from(path.trim());
            let deps = deps
                .split_whitespace()
                .map(|d| name_of(Path::new(d)))
                .collect();
            let name = name_of(&path);
            modules.insert(name.clone(), Module { name, path, deps });
        }
        Ok(ModuleIndex {
            modules,
            builtin: parse_builtin(modules_builtin),
        })
    }

    /// Build the index from the `.modinfo` sections of every `.ko` below `dir`.
    pub fn scan(dir: &Path) -> Result<ModuleIndex> {
        let mut modules = BTreeMap::new();
        let mut stack = vec![dir.join("kernel"), dir.join("updates"), dir.join("extra")];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in rd {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let file = path.file_name().unwrap_or_default().to_string_lossy();
                if !file.contains(".ko") {
                    continue;
                }
                let rel = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
                let name = name_of(&path);
                let deps = if file.ends_with(".ko") {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    modinfo_depends(&bytes)
                        .with_context(|| format!("reading .modinfo of {}", path.display()))?
                } else {
                    Vec::new() // compressed: rejected when resolved
                };
                modules.insert(
                    name.clone(),
                    Module {
                        name,
                        path: rel,
                        deps,
                    },
                );
            }
        }
        if modules.is_empty() {
            bail!("no kernel modules below {}", dir.display());
        }
        Ok(ModuleIndex {
            modules,
            builtin: BTreeSet::new(),
        })
    }

    pub fn get(&self, name: &str) -> Option<&Module> {
        self.modules.get(&normalize(name))
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// The wanted modules and all their dependencies, each once, in load
    /// order (dependencies first). Built-in modules are left out.
    pub fn resolve(&self, wanted: &[Want]) -> Result<Vec<Module>> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for want in wanted {
            if self.is_builtin(&want.name) {
                continue;
            }
            if !self.modules.contains_key(&want.name) {
                if want.optional {
                    continue;
                }
                return Err(VmmError::ModuleNotFound(want.name.clone()).into());
            }
            self.visit(&want.name, &mut done, &mut Vec::new(), &mut order)?;
        }
        for m in &order {
            if !m.path.to_string_lossy().ends_with(".ko") {
                return Err(VmmError::CompressedModule(m.path.clone()).into());
            }
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
        order: &mut Vec<Module>,
    ) -> Result<()> {
        if done.contains(name) || self.is_builtin(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            bail!("module dependency cycle: {} -> {name}", path.join(" -> "));
        }
        let module = self
            .modules
            .get(name)
            .ok_or_else(|| VmmError::ModuleNotFound(name.to_string()))?;
        path.push(name.to_string());
        for dep in &module.deps {
            self.visit(dep, done, path, order)?;
        }
        path.pop();
        done.insert(name.to_string());
        order.push(module.clone());
        Ok(())
    }
}

fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| name_of(Path::new(l.trim())))
        .collect()
}

/// The `depends=` list of a module's `.modinfo` section.
pub fn modinfo_depends(elf: &[u8]) -> Result<Vec<String>> {
    let info = modinfo(elf)?;
    Ok(info
        .iter()
        .filter_map(|(k, v)| (k == "depends").then_some(v))
        .flat_map(|v| v.split(','))
        .filter(|d| !d.is_empty())
        .map(normalize)
        .collect())
}

/// The `key=value` pairs of a module's `.modinfo` section (ELF64 LE).
pub fn modinfo(elf: &[u8]) -> Result<Vec<(String, String)>> {
    let u16_at = |o: usize| -> Result<u64> {
        let b = elf.get(o..o + 2).context("truncated ELF")?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as u64)
    };
    let u32_at = |o: usize| -> Result<u64> {
        let b = elf.get(o..o + 4).context("truncated ELF")?;
        Ok(u32::from_le_bytes(b.try_into()?) as u64)
    };
    let u64_at = |o: usize| -> Result<u64> {
        let b = elf.get(o..o + 8).context("truncated ELF")?;
        Ok(u64::from_le_bytes(b.try_into()?))
    };
    if elf.get(0..6) != Some(b"\x7fELF\x02\x01") {
        bail!("not a 64-bit little-endian ELF file");
    }
    let shoff = u64_at(0x28)? as usize;
    let shentsize = u16_at(0x3a)? as usize;
    let shnum = u16_at(0x3c)? as usize;
    let shstrndx = u16_at(0x3e)? as usize;
    let section = |i: usize| -> Result<(u64, usize, usize)> {
        let h = shoff + i * shentsize;
        Ok((
            u32_at(h)?,
            u64_at(h + 24)? as usize,
            u64_at(h + 32)? as usize,
        ))
    };
    let (_, stroff, strsize) = section(shstrndx)?;
    let strtab = elf
        .get(stroff..stroff + strsize)
        .context("bad section string table")?;
    for i in 0..shnum {
        let (name, off, size) = section(i)?;
        let name = strtab.get(name as usize..).unwrap_or_default();
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        if name != b".modinfo" {
            continue;
        }
        let data = elf.get(off..off + size).context("bad .modinfo bounds")?;
        return Ok(data
            .split(|&b| b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect());
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = include_str!("../tests/fixtures/modules.dep");
    const BUILTIN: &str = include_str!("../tests/fixtures/modules.builtin");

    fn names(m: &[Module]) -> Vec<&str> {
        m.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn resolves_in_dependency_order() {
        let idx = ModuleIndex::parse(DEP, BUILTIN).unwrap();
        let wanted = [
            Want::required("virtio_pci"),
            Want::required("virtio_blk"),
            Want::required("virtio-net"),
            Want::required("uio_pci_generic"),
            Want::optional("nd_pmem"),
            Want::optional("not_there"),
            Want::required("ext4"),
            Want::optional("pvpanic-mmio"),
        ];
        let order = idx.resolve(&wanted).unwrap();
        let n = names(&order);
        let pos = |x: &str| {
            n.iter()
                .position(|y| *y == x)
                .unwrap_or_else(|| panic!("{x} missing from {n:?}"))
        };
        for (dep, user) in [
            ("virtio", "virtio_pci"),
            ("virtio_ring", "virtio_pci"),
            ("virtio_pci_modern_dev", "virtio_pci"),
            ("virtio_pci_legacy_dev", "virtio_pci"),
            ("virtio", "virtio_blk"),
            ("failover", "net_failover"),
            ("net_failover", "virtio_net"),
            ("uio", "uio_pci_generic"),
            ("libnvdimm", "nd_btt"),
            ("nd_btt", "nd_pmem"),
            ("pvpanic", "pvpanic_mmio"),
        ] {
            assert!(pos(dep) < pos(user), "{dep} after {user}: {n:?}");
        }
        // Each once; the built-in ext4 and the missing optional one left out.
        let mut sorted = n.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), n.len());
        assert!(!n.contains(&"ext4"));
        assert_eq!(
            order[pos("pvpanic_mmio")].path,
            Path::new("kernel/drivers/misc/pvpanic/pvpanic-mmio.ko")
        );
    }

    #[test]
    fn errors() {
        let idx = ModuleIndex::parse(DEP, BUILTIN).unwrap();
        let e = idx.resolve(&[Want::required("no_such")]).unwrap_err();
        assert!(e.to_string().contains("no_such"));
        let e = idx.resolve(&[Want::required("cyc_a")]).unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
        let idx = ModuleIndex::parse("kernel/x.ko.xz:\n", "").unwrap();
        let e = idx.resolve(&[Want::required("x")]).unwrap_err();
        assert!(e.to_string().contains("compressed"), "{e}");
        assert!(ModuleIndex::parse("no colon here\n", "").is_err());
    }

    #[test]
    fn reads_modinfo_of_a_minimal_elf() {
        // Build an ELF64 with a .shstrtab and a .modinfo section.
        let shstr = b"\0.shstrtab\0.modinfo\0";
        let info = b"license=GPL\0depends=virtio,virtio-ring\0name=virtio_blk\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let shstr_off = elf.len();
        elf.extend_from_slice(shstr);
        let info_off = elf.len();
        elf.extend_from_slice(info);
        while elf.len() % 8 != 0 {
            elf.push(0);
        }
        let shoff = elf.len();
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, shstr_off, shstr.len());
        sh(11, info_off, info.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(modinfo_depends(&elf).unwrap(), ["virtio", "virtio_ring"]);
        assert!(modinfo_depends(b"not an elf").is_err());
    }
}
