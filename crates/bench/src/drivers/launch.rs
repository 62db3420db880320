//! Launch to ready: `virtuos up` until the storage domain serves, per
//! backend, N boots each (interleaved), after one untimed warm-up boot per
//! configuration. Each configuration keeps one data directory across its
//! boots, so a measured boot finds its storage image (vm) or tree
//! (process) in place, as a user's second `virtuos up` does.

use super::{Common, Stack, StackOpts, TempDir};
use crate::results::{Forwarded, LaunchPoint, LaunchResults};
use crate::stats::Summary;
use std::time::Duration;

/// A configuration to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Config {
    Process,
    Vm { slots: u16 },
}

impl Config {
    pub fn up_args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec!["--no-network".into(), "--backend".into()];
        match self {
            Config::Process => a.push("process".into()),
            Config::Vm { slots } => {
                a.push("vm".into());
                a.push("--vm-slots".into());
                a.push(slots.to_string());
            }
        }
        a
    }

    fn name(&self) -> String {
        match self {
            Config::Process => "process".into(),
            Config::Vm { slots } => format!("vm, {slots} slots"),
        }
    }

    /// Stack options for this configuration.
    pub fn stack_opts(&self, vm_env: &[(String, String)]) -> StackOpts {
        StackOpts {
            up_args: self.up_args(),
            env: match self {
                Config::Process => Vec::new(),
                Config::Vm { .. } => vm_env.to_vec(),
            },
            up_timeout: match self {
                Config::Process => Duration::from_secs(60),
                // The daemon's own limit is 90 s after preparing the image.
                Config::Vm { .. } => Duration::from_secs(240),
            },
            data_dir: None,
        }
    }
}

/// What one boot measured: `virtuos up` wall time, the daemon's boot_ms.
fn boot(common: &Common, o: &StackOpts) -> anyhow::Result<(f64, Option<f64>)> {
    let stack = Stack::start_opts(common, o)?;
    let up_ms = stack.up_elapsed.as_secs_f64() * 1e3;
    let status = stack.status_json()?;
    let boot_ms = status["domains"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "storage"))
        .and_then(|d| d["boot_ms"].as_f64());
    drop(stack);
    Ok((up_ms, boot_ms))
}

pub fn measure(
    configs: &[Config],
    boots: u32,
    common: &Common,
    vm_env: &[(String, String)],
) -> anyhow::Result<LaunchResults> {
    struct Acc {
        config: Config,
        data: TempDir,
        up: Vec<f64>,
        boot: Vec<f64>,
        errors: Vec<String>,
    }
    let mut acc = Vec::new();
    for c in configs {
        acc.push(Acc {
            config: c.clone(),
            data: TempDir::new(&common.tmp, "launch")?,
            up: Vec::new(),
            boot: Vec::new(),
            errors: Vec::new(),
        });
    }
    for round in 0..=boots {
        for a in &mut acc {
            let what = if round == 0 {
                "warm-up".to_string()
            } else {
                format!("boot {round}/{boots}")
            };
            eprintln!("launch: {}: {what}", a.config.name());
            let mut o = a.config.stack_opts(vm_env);
            o.data_dir = Some(a.data.path().to_path_buf());
            match boot(common, &o) {
                Ok((up, b)) => {
                    eprintln!(
                        "launch: {}: up {:.0} ms, boot_ms {}",
                        a.config.name(),
                        up,
                        b.map_or("-".into(), |b| format!("{b:.0}"))
                    );
                    if round > 0 {
                        a.up.push(up);
                        a.boot.extend(b);
                    }
                }
                Err(e) => {
                    eprintln!("launch: {} {what} failed: {e:#}", a.config.name());
                    if round > 0 {
                        a.errors.push(format!("{e:#}"));
                    }
                }
            }
        }
    }
    let points = acc
        .into_iter()
        .map(|a| {
            let up_ms = match (Summary::of(&a.up), a.errors.first()) {
                (Some(s), _) => Forwarded::ok(s),
                (None, Some(e)) => Forwarded::failed(e.clone()),
                (None, None) => Forwarded::failed("no boots"),
            };
            let (backend, slots) = match a.config {
                Config::Process => ("process", None),
                Config::Vm { slots } => ("vm", Some(slots)),
            };
            LaunchPoint {
                backend: backend.into(),
                slots,
                up_ms,
                boot_ms: Summary::of(&a.boot),
            }
        })
        .collect();
    Ok(LaunchResults { boots, points })
}

pub fn print(r: &LaunchResults) {
    println!("launch to ready ({} boots, median):", r.boots);
    for p in &r.points {
        let name = match p.slots {
            Some(s) => format!("{} ({s} slots)", p.backend),
            None => p.backend.clone(),
        };
        match p.up_ms.median() {
            Some(m) => println!(
                "{name:>18}: virtuos up {:.2} s{}",
                m / 1e3,
                p.boot_ms.as_ref().map_or(String::new(), |b| format!(
                    ", boot_ms {:.2} s",
                    b.median / 1e3
                ))
            ),
            None => println!(
                "{name:>18}: n/a ({})",
                p.up_ms.error.as_deref().unwrap_or("no data")
            ),
        }
    }
}
