//! `virtuos-vmm`: the groundwork of the `vm` backend.
//!
//! A service domain is the `virtuos-domain` binary running as PID 1 of a QEMU
//! VM that boots Debian's stock cloud kernel. This crate fetches that kernel
//! ([`kernel`]), assembles the initramfs ([`initramfs`], [`cpio`],
//! [`modules`]), builds static guest binaries ([`static_bin`]), picks the
//! accelerator ([`accel`]), and launches and controls QEMU ([`qemu`],
//! [`qmp`], [`console`]). The experiments that chose the transport (see
//! `TRANSPORT.md`) are the `transport` and `guest_probe` examples; [`sys`]
//! holds the raw system calls.

pub mod accel;
pub mod cache;
pub mod console;
pub mod cpio;
pub mod error;
pub mod initramfs;
pub mod kernel;
pub mod modules;
mod progress;
pub mod qemu;
pub mod qmp;
pub mod static_bin;
pub mod sys;

pub use error::VmmError;
