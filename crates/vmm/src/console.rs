//! The guest's serial console, written by QEMU to a log file.

use anyhow::{Context, Result};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Follows a console log file.
#[derive(Debug, Clone)]
pub struct Console {
    path: PathBuf,
}

/// What stopped a wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// The line containing the needle.
    Found(String),
    TimedOut,
    /// The `alive` callback said the VM is gone.
    Exited,
}

impl Console {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Console { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole log so far (lossy UTF-8; empty if not created yet).
    pub fn contents(&self) -> String {
        std::fs::read(&self.path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines.
    pub fn tail(&self, lines: usize) -> String {
        let text = self.contents();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Lines containing `prefix`, each from `prefix` on (firmware and the
    /// kernel put terminal escapes before the first line of init's output).
    pub fn lines_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.contents()
            .lines()
            .filter_map(|l| l.find(prefix).map(|i| l[i..].trim_end().to_string()))
            .collect()
    }

    /// Poll until a complete line containing `needle` appears, `timeout`
    /// passes, or `alive()` returns false.
    pub fn wait_for(
        &self,
        needle: &str,
        timeout: Duration,
        mut alive: impl FnMut() -> bool,
    ) -> Result<Wait> {
        let deadline = Instant::now() + timeout;
        let mut offset = 0u64;
        let mut pending = Vec::new();
        loop {
            if let Ok(mut f) = std::fs::File::open(&self.path) {
                f.seek(SeekFrom::Start(offset))?;
                let n = f.read_to_end(&mut pending).context("reading console log")?;
                offset += n as u64;
                while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=pos).collect();
                    let line = String::from_utf8_lossy(&line);
                    if line.contains(needle) {
                        return Ok(Wait::Found(line.trim_end().to_string()));
                    }
                }
            }
            if !alive() {
                return Ok(Wait::Exited);
            }
            if Instant::now() >= deadline {
                return Ok(Wait::TimedOut);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lines_and_waits() {
        let path = std::env::temp_dir().join(format!("virtuos-console-{}", std::process::id()));
        std::fs::write(
            &path,
            "\x1bc\x1b[?7lREADY one\r\nnoise\nREADY two\npartial READY",
        )
        .unwrap();
        let c = Console::new(&path);
        assert_eq!(
            c.lines_with_prefix("READY"),
            ["READY one", "READY two", "READY"]
        );
        assert_eq!(c.tail(2), "READY two\npartial READY");
        let w = c.wait_for("two", Duration::from_secs(1), || true).unwrap();
        assert_eq!(w, Wait::Found("READY two".into()));
        // An incomplete last line does not count yet.
        let w = c
            .wait_for("partial", Duration::from_millis(50), || true)
            .unwrap();
        assert_eq!(w, Wait::TimedOut);
        let w = c
            .wait_for("never", Duration::from_secs(5), || false)
            .unwrap();
        assert_eq!(w, Wait::Exited);
        std::fs::remove_file(&path).unwrap();
    }
}
