//! What every measuring command writes: the environment a run measured
//! (`Meta`), one section merged into an existing results.json, and
//! RESULTS.md, results.json and the plots rendered from the results. `all`,
//! `net` and `vm` all end here.

use super::{fs_type, Common};
use crate::report::{self, FCNTL_PLOT, FORK_PLOT, STREAM_PLOT, TCP_LAT_PLOT, WRITE_PLOT};
use crate::results::{Meta, Results};
use anyhow::Context;
use std::path::Path;

/// Merge one section (`set` puts it in) into `out/results.json`, created
/// with this run's environment if missing (the other sections are kept),
/// and render the report.
pub fn merge_section(
    out: &Path,
    common: &Common,
    command: String,
    set: impl FnOnce(&mut Results),
) -> anyhow::Result<()> {
    let js = out.join("results.json");
    let mut results: Results = match std::fs::read_to_string(&js) {
        Ok(text) => {
            serde_json::from_str(&text).with_context(|| format!("parse {}", js.display()))?
        }
        Err(_) => Results {
            meta: environment(command, common),
            ..Results::default()
        },
    };
    set(&mut results);
    finish(out, &mut results)
}

/// Derive the notes, draw the plots and write RESULTS.md and results.json.
pub fn finish(out: &Path, r: &mut Results) -> anyhow::Result<()> {
    // Every note is generated: derive them again from the data.
    r.notes = report::derive_notes(r);
    r.notes.extend(method_notes());
    if r.net.is_some() {
        r.notes.push(NET_METHOD.into());
    }
    if r.vm.is_some() {
        r.notes.push(VM_METHOD.into());
    }
    let plots = draw_plots(out, r);
    r.notes.push(plots);
    write_outputs(out, r)
}

/// Re-render RESULTS.md and the plots from a results.json (no measuring).
pub fn render(json: &Path, out: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(json).with_context(|| format!("read {}", json.display()))?;
    let mut r: Results =
        serde_json::from_str(&text).with_context(|| format!("parse {}", json.display()))?;
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    finish(out, &mut r)
}

fn draw_plots(out: &Path, r: &Results) -> String {
    let mut failed = Vec::new();
    if let Some(f) = &r.fcntl {
        if let Err(e) = crate::plot::fcntl_figure(out, FCNTL_PLOT, f, r.queue_ping.as_ref()) {
            failed.push(format!("{e:#}"));
        }
    }
    if let Some(w) = &r.write {
        if let Err(e) = crate::plot::write_figure(out, WRITE_PLOT, w) {
            failed.push(format!("{e:#}"));
        }
    }
    let how = match crate::plot::font() {
        Some(font) => format!(
            "Plots: drawn with the `plotters` crate straight to SVG and PNG (no conversion \
             step); text rendered in pure Rust (`ab_glyph`) from `{font}`."
        ),
        None => "Plots: no TrueType font was found (install `fonts-dejavu-core`), so the SVG \
                 and PNG figures have no text; the tables above carry the numbers."
            .to_string(),
    };
    if let Some(n) = &r.net {
        if let Some(l) = &n.tcp_lat {
            if let Err(e) = crate::plot::tcp_lat_figure(out, TCP_LAT_PLOT, l) {
                failed.push(format!("{e:#}"));
            }
        }
        if let Some(st) = &n.tcp_stream {
            if let Err(e) = crate::plot::stream_figure(out, STREAM_PLOT, st) {
                failed.push(format!("{e:#}"));
            }
        }
    }
    if let Some(f) = r.vm.as_ref().and_then(|v| Some((v, v.fork.as_ref()?))) {
        let label = if f.0.accel == "kvm" { "KVM" } else { "TCG" };
        if let Err(e) = crate::plot::fork_figure(out, FORK_PLOT, f.1, label) {
            failed.push(format!("{e:#}"));
        }
    }
    if failed.is_empty() {
        how
    } else {
        format!("{how} Failed: {}", failed.join("; "))
    }
}

const NET_METHOD: &str = "Network: native and virtuos runs of one benchmark alternate within \
     each round, so their ratio is of the same machine state; the load averages in the \
     network section show how busy the machine was. On a 2-vCPU VM the native round trip \
     depends on whether the peer's vCPU was idle (waking a halted vCPU costs tens of µs), \
     while forwarded calls suffer most from other load: callers, the domain's workers \
     (which spin on the submit list) and the other programs compete for two CPUs, and an \
     unbounded spin keeps a CPU busy for every blocked caller.";

const VM_METHOD: &str = "VM backend: without usable KVM (see crates/vmm/TRANSPORT.md) QEMU translates the guest under TCG, so every guest instruction, the domain \
     server's included, runs several times slower than natively, and the guest's one vCPU \
     competes with the clients and the other sessions for the machine's 2 CPUs. The VM \
     figures say what works and how the costs rank; they are not a VM domain's cost under \
     KVM. Each process creation on the vm backend forks a shadow inside the guest and \
     crosses the daemon twice (`ClaimFork`, `RemoveClient`).";

fn method_notes() -> Vec<String> {
    vec![
        "Method: workers are `virtuos-bench worker ...` processes; forwarded runs are \
         `virtuos run -- virtuos-bench worker ...` against a private daemon (`virtuos up` / \
         `virtuos down`) whose `VIRTUOS_RUNTIME_DIR` and `VIRTUOS_DATA_DIR` are fresh \
         directories under the temp dir, so no user data is touched. Each worker does an \
         untimed warm-up, then the timed repetitions."
            .into(),
        "Spin thresholds: a small threshold costs little here because the domain's idle \
         workers spin on the submit list (bounded by the domain's CPU count): the reply \
         usually lands before the client's futex wait has started, and `FUTEX_WAIT` \
         returns at once when the entry's state word has already changed. The paper's \
         ~14x blocking case needs a domain that sleeps; compare the spin 0 row with the \
         others to see how often that happened."
            .into(),
        "Machine: the paper's domains had dedicated cores; here the client, the domain's \
         workers and everything else share 2 noisy vCPUs, so a spinning domain worker \
         competes with the caller. Compare ratios, not absolute numbers."
            .into(),
    ]
}

pub fn write_outputs(out: &Path, r: &Results) -> anyhow::Result<()> {
    // The markdown is rendered from the results as results.json stores them,
    // so that `render` reproduces RESULTS.md exactly (the JSON keeps fewer
    // digits than an f64).
    let json = report::to_json(r);
    let stored: Results = serde_json::from_str(&json).context("re-read the results")?;
    let md = out.join("RESULTS.md");
    std::fs::write(&md, report::render_markdown(&stored))
        .with_context(|| format!("write {}", md.display()))?;
    let js = out.join("results.json");
    std::fs::write(&js, json).with_context(|| format!("write {}", js.display()))?;
    eprintln!("wrote {} and {}", md.display(), js.display());
    Ok(())
}

/// The machine and the code a run of `command` measures.
pub fn environment(command: String, common: &Common) -> Meta {
    let data = common.tmp.join("virtuos-bench-stack-*/data");
    Meta {
        date: utc_now(),
        command,
        kernel: rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned(),
        cpu_model: cpu_model(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        native_dir: common
            .tmp
            .join("virtuos-bench-native-*")
            .display()
            .to_string(),
        native_fs: fs_type(&common.tmp),
        data_dir: data.display().to_string(),
        data_fs: fs_type(&common.tmp),
        revision: revision(),
        load_start: loadavg(),
        load_end: String::new(),
    }
}

/// The three load averages from /proc/loadavg.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn revision() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev} (with uncommitted changes)")
            } else {
                rev
            }
        }
        None => "unknown".into(),
    }
}

/// Now, UTC, ISO 8601 (no external date crate).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    iso8601(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian,
/// the days-to-civil algorithm of H. Hinnant).
pub fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_735_787_045), "2025-01-02T03:04:05Z");
    }
}
