//! `<runtime>/virtuosd.json`: what the running daemon serves. Written by the
//! daemon at start, read by `virtuos run/up/status` to detect a daemon that
//! was started with other settings (the control protocol's `StatusReport`
//! does not carry the storage mount).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub runtime_dir: PathBuf,
    pub data_dir: PathBuf,
    pub storage_mount: String,
    pub backend: String,
}

impl DaemonInfo {
    pub fn read(path: &Path) -> Option<DaemonInfo> {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Write atomically (a fresh temp file, never through a symbolic
    /// link, then rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self)?)?;
        drop(f);
        std::fs::rename(tmp, path)
    }
}
