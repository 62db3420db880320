//! The host side of the network domain's veth link (process backend).
//!
//! The domain creates the pair itself (see virtuos-domain's `netns`); the
//! pair disappears with the domain's namespace. The daemon deletes a stale
//! host side (a killed daemon's, same subnet) before starting the domain
//! and again after the domain exits.

use std::path::Path;
use std::process::{Command, Stdio};

pub fn exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// `ip link del <name>` if it exists. Errors are logged, not fatal.
pub fn remove(name: &str) {
    if !exists(name) {
        return;
    }
    let out = Command::new("ip")
        .args(["link", "del", name])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => tracing::info!(interface = name, "removed host link"),
        Ok(o) => tracing::warn!(
            interface = name,
            "cannot remove host link: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => tracing::warn!(interface = name, "cannot run `ip`: {e}"),
    }
}
