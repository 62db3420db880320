//! VM backend: this binary is PID 1 of a guest. Not implemented yet.
//!
//! What it will do: mount /proc, /sys, /dev and the guest's storage disk at
//! the storage mount path, so that `Root { dir: "/" }` serves client paths
//! verbatim, and take its control channel from a virtio-vsock or ivshmem
//! doorbell instead of an inherited socket.

use super::Root;
use anyhow::{bail, Result};
use std::path::Path;

pub fn setup(_data_dir: Option<&Path>, _mount: &Path) -> Result<Root> {
    bail!("the vm backend is not implemented yet (use --backend process)")
}
