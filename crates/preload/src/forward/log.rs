//! Messages to stderr from fixed buffers (no allocation), at most once per
//! system call number for "unsupported" reports.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A fixed-size message buffer (silently truncates).
pub struct Msg {
    buf: [u8; 512],
    len: usize,
}

impl Msg {
    pub const fn new() -> Msg {
        Msg {
            buf: [0; 512],
            len: 0,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Default for Msg {
    fn default() -> Self {
        Msg::new()
    }
}

impl Write for Msg {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Print `virtuos: <args>\n` to stderr.
pub fn emit(args: fmt::Arguments<'_>) {
    let mut m = Msg::new();
    let _ = m.write_str("virtuos: ");
    let _ = m.write_fmt(args);
    let _ = m.write_str("\n");
    super::host::write_all(2, m.as_bytes());
}

/// Print once per `flag`.
pub fn once(flag: &AtomicBool, args: fmt::Arguments<'_>) {
    if !flag.swap(true, Ordering::Relaxed) {
        emit(args);
    }
}

static LOGGED_NR: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];

/// Report an unsupported use of system call `nr` once per number.
pub fn unsupported(nr: u64, what: &str, errno: i32) {
    let (word, bit) = ((nr as usize / 64) % 16, nr % 64);
    if nr >= 1024 || LOGGED_NR[word].fetch_or(1 << bit, Ordering::Relaxed) & (1 << bit) != 0 {
        return;
    }
    emit(format_args!(
        "system call {nr} {what} is not supported; it fails with {} (reported once)",
        errno_name(errno)
    ));
}

pub fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EBADF => "EBADF",
        libc::EINVAL => "EINVAL",
        libc::ENODEV => "ENODEV",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EPERM => "EPERM",
        libc::EXDEV => "EXDEV",
        libc::EIO => "EIO",
        libc::ENOTTY => "ENOTTY",
        _ => "an error",
    }
}
