//! File trees as comparable snapshots.

use crate::STORAGE;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// One entry of a file tree, as compared between the native root and the domain.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Entry {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        size: u64,
        digest: u64,
        nlink: u64,
    },
    Symlink {
        target: String,
    },
    Other {
        kind: String,
        mode: u32,
    },
}

/// Relative path -> entry, for every entry below `dir` (not `dir` itself).
/// A symlink target has `root` replaced by `$ROOT`.
pub fn snapshot_tree(dir: &Path, root_name: &Path) -> BTreeMap<String, Entry> {
    fn walk(base: &Path, dir: &Path, root_name: &Path, out: &mut BTreeMap<String, Entry>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let Ok(md) = p.symlink_metadata() else {
                continue;
            };
            let mode = md.permissions().mode() & 0o7777;
            let ft = md.file_type();
            let entry = if ft.is_symlink() {
                let t = fs::read_link(&p)
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Entry::Symlink {
                    target: t.replace(&*root_name.to_string_lossy(), "$ROOT"),
                }
            } else if ft.is_dir() {
                walk(base, &p, root_name, out);
                Entry::Dir { mode }
            } else if ft.is_file() {
                Entry::File {
                    mode,
                    size: md.len(),
                    digest: fs::read(&p).map(|b| fnv1a(&b)).unwrap_or(0),
                    nlink: md.nlink(),
                }
            } else {
                let kind = if ft.is_fifo() {
                    "fifo"
                } else if ft.is_socket() {
                    "socket"
                } else {
                    "device"
                };
                Entry::Other {
                    kind: kind.into(),
                    mode,
                }
            };
            out.insert(rel, entry);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, root_name, &mut out);
    out
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Dir { mode } => write!(f, "dir {mode:04o}"),
            Entry::File {
                mode,
                size,
                digest,
                nlink,
            } => {
                write!(
                    f,
                    "file {mode:04o} size={size} links={nlink} fnv={digest:016x}"
                )
            }
            Entry::Symlink { target } => write!(f, "symlink -> {target}"),
            Entry::Other { kind, mode } => write!(f, "{kind} {mode:04o}"),
        }
    }
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100000001b3)
    })
}

/// `ls -lR`-like listing of a tree for reports.
pub fn list_tree(dir: &Path) -> String {
    let t = snapshot_tree(dir, Path::new(STORAGE));
    if t.is_empty() {
        return format!("  (empty or missing: {})\n", dir.display());
    }
    t.iter().map(|(k, v)| format!("  {k}: {v}\n")).collect()
}

fn show_tree_map(t: &BTreeMap<String, Entry>) -> String {
    t.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
}

/// The tree below `dir` one entry a line, as the tree comparison sees it:
/// files named in `ignore` (a path or a last component) without size and
/// digest. What `virtuos-tree` prints.
pub fn show_tree(dir: &Path, root_name: &Path, ignore: &[String]) -> String {
    let mut t = snapshot_tree(dir, root_name);
    for (k, e) in t.iter_mut() {
        let ignored = ignore
            .iter()
            .any(|i| k == i || k.ends_with(&format!("/{i}")));
        if let (true, Entry::File { size, digest, .. }) = (ignored, e) {
            *size = 0;
            *digest = 0;
        }
    }
    show_tree_map(&t)
}
