//! Harness for the end-to-end tests: real Debian programs run under
//! `virtuos run`, compared with the same script run natively.
//!
//! A test is a bash script parametrised by two variables:
//!
//! - `$ROOT`: the forwarded tree. `/storage` under virtuos (the storage
//!   domain's private tree), a fresh host temp dir natively.
//! - `$TMP`: a fresh host scratch dir, never forwarded (for copies between the
//!   host and the domain). The script starts with `$TMP` as its cwd.
//!
//! Both sides also get `LC_ALL=C`, `TZ=UTC` (deterministic sorting and
//! dates) and `$PY` (the Python interpreter). [`Case::check`] runs the script
//! natively first (a script that fails natively is a broken test, reported as
//! such), then under virtuos with a fresh daemon, and asserts: same exit code,
//! same normalised stdout, and the same file tree (names, types, modes, sizes,
//! contents, symlink targets) in the native root and in the domain's data dir
//! `$VIRTUOS_DATA_DIR/storage`, with nothing under the host's `/storage`.
//!
//! Binaries: `target/release/{virtuos,virtuos-domain,libvirtuos.so}`, rebuilt
//! once per test binary with `cargo build --release -p virtuos -p
//! virtuos-domain -p virtuos-preload` (a no-op when fresh; serialised by a
//! file lock). `VIRTUOS_BIN_DIR=DIR` uses prebuilt binaries from DIR and never
//! builds; `VIRTUOS_E2E_NO_BUILD=1` uses `target/release` without building.
//! Other knobs: `VIRTUOS_E2E_TIMEOUT` (seconds per script, default 180),
//! `VIRTUOS_E2E_KEEP=1` (keep the temp dirs of failed tests). `VIRTUOS_TRACE`,
//! `VIRTUOS_LOG` and friends pass through to the daemon and the programs.

mod bins;
mod case;
mod compare;
mod domain;
mod normalize;
mod programs;
mod run;
mod text;
mod trace;
mod tree;

pub use bins::*;
pub use case::*;
pub use compare::*;
pub use domain::*;
pub use normalize::*;
pub use programs::*;
pub use run::*;
pub use text::*;
pub use trace::*;
pub use tree::*;

/// The storage mount the tests use.
pub const STORAGE: &str = "/storage";
/// What to tell someone whose machine lacks a program.
pub const SETUP_HINT: &str = "run scripts/setup-debian.sh (from the repository root) to install it";
