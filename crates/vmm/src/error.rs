//! Errors a caller may want to tell apart (the rest are `anyhow` chains).

use std::path::PathBuf;

/// Errors with a clear remedy.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// A host tool is not installed.
    #[error("`{tool}` is not installed ({hint}); run scripts/setup-debian.sh")]
    ToolMissing { tool: String, hint: String },
    /// The Debian mirror could not be reached.
    #[error("cannot reach the Debian mirror to fetch {what}: {detail}")]
    NoNetwork { what: String, detail: String },
    /// apt knows no such package.
    #[error("Debian package not found: {0} (is apt's package list current? try `apt-get update`)")]
    PackageNotFound(String),
    /// A kernel module the image needs is not in the kernel package.
    #[error("kernel module `{0}` is neither in the package nor built in")]
    ModuleNotFound(String),
    /// A module is compressed and this crate does not decompress it.
    #[error("kernel module {0} is compressed; only uncompressed .ko modules are supported")]
    CompressedModule(PathBuf),
    /// The readiness line did not appear in time.
    #[error(
        "VM not ready after {secs:.1} s (no `{needle}` on the console); console tail:\n{tail}"
    )]
    ReadyTimeout {
        needle: String,
        secs: f64,
        tail: String,
    },
    /// QEMU exited before the readiness line appeared.
    #[error("QEMU exited ({status}) before `{needle}` appeared; console tail:\n{tail}")]
    ExitedEarly {
        status: String,
        needle: String,
        tail: String,
    },
}
