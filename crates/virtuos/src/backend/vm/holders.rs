//! Who still holds a slot: before a region slot is leased to a new client,
//! no process but the daemon and QEMU may have its memfd open or mapped
//! (a forked child that never talked to the domain still maps its
//! parent's slot; a client may have passed the descriptor on). Otherwise
//! the next client's calls would be readable by that process.
//!
//! Found through /proc: `fd/*` (the inode behind each descriptor) and
//! `maps` (the inode of each mapping).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;

/// The inodes of `wanted` that some process other than `except` holds.
pub fn held_by_others(wanted: &HashSet<u64>, except: &[u32]) -> HashSet<u64> {
    let mut held = HashSet::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        // Cannot tell: treat every slot as held (never hand one out unsure).
        return wanted.clone();
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if except.contains(&pid) {
            continue;
        }
        scan(pid, wanted, &mut held);
        if held.len() == wanted.len() {
            break;
        }
    }
    held
}

fn scan(pid: u32, wanted: &HashSet<u64>, held: &mut HashSet<u64>) {
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            let is_memfd = std::fs::read_link(fd.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with("/memfd:"));
            if !is_memfd {
                continue;
            }
            if let Ok(md) = std::fs::metadata(fd.path()) {
                if wanted.contains(&md.ino()) {
                    held.insert(md.ino());
                }
            }
        }
    }
    if let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) {
        for line in maps.lines().filter(|l| l.contains("/memfd:")) {
            // address perms offset dev inode path
            if let Some(ino) = line
                .split_whitespace()
                .nth(4)
                .and_then(|i| i.parse::<u64>().ok())
            {
                if wanted.contains(&ino) {
                    held.insert(ino);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;

    #[test]
    fn a_memfd_held_by_a_child_is_found_and_not_once_it_is_gone() {
        let fd = virtuos_abi::mapping::create_memfd("virtuos-holders-test", 4096).unwrap();
        let ino = rustix::fs::fstat(&fd).unwrap().st_ino;
        let wanted: HashSet<u64> = [ino].into();
        let me = std::process::id();
        assert!(held_by_others(&wanted, &[me]).is_empty(), "only we hold it");
        assert_eq!(held_by_others(&wanted, &[]), wanted, "we hold it ourselves");
        // A child that inherits it (as a forked client would).
        let raw = rustix::io::fcntl_dupfd_cloexec(fd.as_fd(), 100).unwrap();
        rustix::io::fcntl_setfd(&raw, rustix::io::FdFlags::empty()).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        drop(raw);
        assert_eq!(held_by_others(&wanted, &[me]), wanted, "the child holds it");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(held_by_others(&wanted, &[me]).is_empty());
    }
}
