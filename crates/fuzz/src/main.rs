//! `virtuos-fuzz`: run the fuzz targets and print a Markdown table.
//!
//! ```text
//! virtuos-fuzz [--target all|NAME[,NAME...]] [--cases N] [--seed S] [--case N] [--list]
//! ```
//!
//! `--case N` replays case N alone (with the same seed) and shows its
//! panic. The exit status is 1 if any case crashed.

use std::process::ExitCode;
use std::time::Instant;

fn usage() -> ExitCode {
    eprintln!(
        "usage: virtuos-fuzz [--target all|NAME[,NAME...]] [--cases N] [--seed S] [--case N] [--list]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut targets = "all".to_string();
    let mut cases: u64 = 100_000;
    let mut seed: u64 = 0x0076_6972_7475_6f73; // "virtuos"
    let mut replay: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next();
        match a.as_str() {
            "--target" => match value() {
                Some(v) => targets = v,
                None => return usage(),
            },
            "--cases" => match value().and_then(|v| v.replace('_', "").parse().ok()) {
                Some(v) => cases = v,
                None => return usage(),
            },
            "--seed" => match value().and_then(|v| parse_u64(&v)) {
                Some(v) => seed = v,
                None => return usage(),
            },
            "--case" => match value().and_then(|v| v.parse().ok()) {
                Some(v) => replay = Some(v),
                None => return usage(),
            },
            "--list" => {
                for s in virtuos_fuzz::all() {
                    println!("{:16} {}", s.name, s.what);
                }
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    let specs: Vec<_> = if targets == "all" {
        virtuos_fuzz::all().iter().collect()
    } else {
        let mut v = Vec::new();
        for name in targets.split(',') {
            match virtuos_fuzz::find(name) {
                Some(s) => v.push(s),
                None => {
                    eprintln!("no target {name:?} (see --list)");
                    return ExitCode::from(2);
                }
            }
        }
        v
    };
    if let Some(case) = replay {
        let mut failed = false;
        for s in specs {
            let r = virtuos_fuzz::run(s, seed, case, 1);
            for (c, msg) in &r.crashes {
                println!("{} case {c}: {msg}", s.name);
                failed = true;
            }
        }
        return if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    println!("seed {seed:#x}, {cases} cases per target");
    println!();
    println!("| target | cases | time (s) | cases/s | crashes | outcomes |");
    println!("|---|---:|---:|---:|---:|---|");
    let t0 = Instant::now();
    let mut failed = Vec::new();
    for s in specs {
        let r = virtuos_fuzz::run(s, seed, 0, cases);
        let secs = r.elapsed.as_secs_f64();
        println!(
            "| {} | {} | {:.1} | {:.0} | {} | {} |",
            r.name,
            r.cases,
            secs,
            r.cases as f64 / secs.max(1e-9),
            r.crash_count,
            r.stats
        );
        if r.crash_count > 0 {
            failed.push(r);
        }
    }
    println!();
    println!("total {:.1} s", t0.elapsed().as_secs_f64());
    for r in &failed {
        for (c, msg) in &r.crashes {
            println!(
                "CRASH {} case {c} (replay: --target {} --seed {seed:#x} --case {c}): {msg}",
                r.name, r.name
            );
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}
