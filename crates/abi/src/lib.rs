//! The contract between a client process and a service domain.
//!
//! Everything in here is shared by the domain server (`virtuos-domain`), the
//! preload library (`libvirtuos.so`) and the daemon. The shared-memory part
//! is index based: no pointers ever live in shared memory, and every index or
//! length read from the other side is range-checked before use, because the
//! other side is untrusted in both directions.
//!
//! Hot-path code in this crate (entries, lists, doorbells, chunk copies) never
//! allocates: the preload library calls it from a `SIGSYS` handler.

pub mod call;
pub mod control;
pub mod decode;
pub mod doorbell;
pub mod entry;
pub mod layout;
pub mod list;
pub mod mapping;
pub mod ops;
pub mod region;
pub mod shape;
pub mod slot;
pub mod state;

pub use entry::{Phase, RequestEntry};
pub use layout::*;
pub use region::{ClientRegion, RegionError};
pub use state::DomainState;
