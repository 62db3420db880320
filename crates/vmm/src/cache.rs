//! The cache directory for kernels, initramfs images and downloads.

use std::path::PathBuf;

/// `$VIRTUOS_CACHE_DIR`, else `/var/cache/virtuos` as root, else
/// `$XDG_CACHE_HOME/virtuos` (`~/.cache/virtuos`).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VIRTUOS_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if crate::sys::is_root() {
        return PathBuf::from("/var/cache/virtuos");
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("virtuos");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/virtuos")
}
