//! One module per subcommand.

pub mod demo;
pub mod domain;
pub mod down;
pub mod run;
pub mod status;
pub mod up;

use crate::cli::{Cli, DomainArgs};
use crate::config::Settings;
use crate::paths::{self, DirUse, Env};
use anyhow::Result;

/// The effective settings of this invocation. The runtime directory must
/// be safe to talk to a daemon in (`paths::check_runtime_dir`).
pub fn settings(cli: &Cli, d: &DomainArgs) -> Result<Settings> {
    let s = Settings::resolve(&cli.overrides(d), &Env::current())?;
    paths::check_runtime_dir(&s.runtime.dir, DirUse::Connect).map_err(anyhow::Error::msg)?;
    Ok(s)
}

/// The last `n` lines of `text`, indented, for error messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("  | {l}\n"))
        .collect()
}
