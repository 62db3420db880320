//! A writer (and, for tests and inspection, a reader) of the `newc` cpio
//! format, the one the kernel unpacks as an initramfs.
//!
//! Each entry: the ASCII header `070701` + 13 fields of 8 hex digits (ino,
//! mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
//! rdevminor, namesize incl. NUL, check), the name and its NUL padded to 4
//! bytes, the data padded to 4 bytes. The archive ends with `TRAILER!!!`.

use anyhow::{bail, Context, Result};
use std::io::Write;

pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;
const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";

/// Writes a newc archive. Entries get sequential inode numbers and mtime 0,
/// so equal inputs give byte-identical images.
pub struct CpioWriter<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            ino: 0,
            written: 0,
        }
    }

    pub fn dir(&mut self, path: &str, perm: u32) -> Result<()> {
        self.entry(path, S_IFDIR | perm, 2, (0, 0), &[])
    }

    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> Result<()> {
        self.entry(path, S_IFREG | perm, 1, (0, 0), data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> Result<()> {
        self.entry(path, S_IFCHR | perm, 1, (major, minor), &[])
    }

    /// Write the trailer and return the inner writer.
    pub fn finish(mut self) -> Result<W> {
        self.ino = 0;
        self.header(TRAILER, 0, 1, (0, 0), 0, 0)?;
        self.pad()?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<()> {
        let name = path.trim_start_matches('/');
        if name.is_empty() || name.contains('\0') {
            bail!("bad cpio path {path:?}");
        }
        let size = u32::try_from(data.len()).context("cpio entry larger than 4 GiB")?;
        self.ino += 1;
        self.header(name, mode, nlink, rdev, size, self.ino)?;
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        self.pad()
    }

    fn header(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        size: u32,
        ino: u32,
    ) -> Result<()> {
        let namesize = name.len() as u32 + 1;
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        let mut h = Vec::with_capacity(110 + name.len() + 4);
        h.extend_from_slice(MAGIC);
        for f in fields {
            h.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        h.extend_from_slice(name.as_bytes());
        h.push(0);
        self.out.write_all(&h)?;
        self.written += h.len() as u64;
        self.pad()
    }

    fn pad(&mut self) -> Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.out.write_all(&[0u8; 3][..n])?;
        self.written += n as u64;
        Ok(())
    }
}

/// One entry read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub mode: u32,
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

/// Parse a newc archive (up to the trailer).
pub fn read_archive(mut buf: &[u8]) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let start = buf.len();
    loop {
        if buf.len() < 110 || &buf[..6] != MAGIC {
            bail!("bad cpio header at offset {}", start - buf.len());
        }
        let field = |i: usize| -> Result<u32> {
            let s = std::str::from_utf8(&buf[6 + i * 8..14 + i * 8])?;
            Ok(u32::from_str_radix(s, 16)?)
        };
        let (mode, size, namesize) = (field(1)?, field(6)? as usize, field(11)? as usize);
        let rdev = (field(9)?, field(10)?);
        let name_end = 110 + namesize;
        let name = buf.get(110..name_end - 1).context("truncated cpio name")?;
        let name = String::from_utf8(name.to_vec())?;
        let data_start = (name_end + 3) & !3;
        let data_end = data_start + size;
        let data = buf
            .get(data_start..data_end)
            .context("truncated cpio data")?
            .to_vec();
        if name == TRAILER {
            return Ok(entries);
        }
        entries.push(Entry {
            name,
            mode,
            rdev,
            data,
        });
        buf = buf
            .get((data_end + 3) & !3..)
            .context("truncated cpio archive")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("/dev", 0o755).unwrap();
        w.char_dev("/dev/console", 0o600, 5, 1).unwrap();
        w.file("/init", 0o755, b"#!/bin/sh\necho hi\n").unwrap();
        w.file("/empty", 0o644, b"").unwrap();
        w.file("/odd", 0o644, b"abcde").unwrap();
        w.symlink("/sbin", "/bin").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_through_own_reader() {
        let img = sample();
        assert_eq!(img.len() % 4, 0);
        let e = read_archive(&img).unwrap();
        let names: Vec<_> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["dev", "dev/console", "init", "empty", "odd", "sbin"]
        );
        assert_eq!(e[1].mode, S_IFCHR | 0o600);
        assert_eq!(e[1].rdev, (5, 1));
        assert_eq!(e[2].data, b"#!/bin/sh\necho hi\n");
        assert_eq!(e[4].data, b"abcde");
        assert_eq!(e[5].data, b"/bin");
        assert_eq!(sample(), img, "deterministic");
    }

    #[test]
    fn debian_cpio_lists_and_extracts_it() {
        let dir = std::env::temp_dir().join(format!("virtuos-cpio-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("img.cpio");
        std::fs::write(&img, sample()).unwrap();
        let run = |args: &[&str]| {
            std::process::Command::new("cpio")
                .args(args)
                .current_dir(&dir)
                .stdin(std::fs::File::open(&img).unwrap())
                .output()
                .expect("`cpio` is not installed: run scripts/setup-debian.sh")
        };
        let out = run(&["-it", "--quiet"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            listed.lines().collect::<Vec<_>>(),
            ["dev", "dev/console", "init", "empty", "odd", "sbin"]
        );
        // Extract the regular files only (device nodes need privileges).
        let out = run(&["-id", "--quiet", "init", "odd"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(dir.join("odd")).unwrap(), b"abcde");
        assert_eq!(
            std::fs::read(dir.join("init")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
