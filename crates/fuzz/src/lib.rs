//! virtuos-fuzz: a stable-Rust fuzzing harness for everything that parses
//! input from an untrusted peer.
//!
//! No nightly toolchain (so no cargo-fuzz/libFuzzer): each target is a
//! generator of hostile inputs driven by a deterministic PRNG ([`rng`]) and
//! the real parsing code, with assertions of what must hold for *any*
//! input (no panic, nothing out of range, the invariants of the format).
//! A case that panics is a crash; it is reported with its case number, and
//! `--seed S --case N` replays it alone.
//!
//! Targets (see [`targets`]): the domain's view of request entries, the
//! submit list and chunks; the client's view of completions; the daemon's
//! view of control messages, slot reports and VM bells.

pub mod rng;
pub mod targets;

use rng::Rng;
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// One fuzz target: state kept across cases (a mapped region, a socket
/// pair) and one case per call.
pub trait Target {
    /// Run one case from `rng`. Panics (assertions) are crashes.
    fn case(&mut self, rng: &mut Rng);

    /// Outcome counts (how often each path was reached), for the report.
    fn stats(&self) -> String {
        String::new()
    }
}

/// Named outcome counters of a target.
#[derive(Default, Debug)]
pub struct Counts(Vec<(&'static str, u64)>);

impl Counts {
    pub fn hit(&mut self, what: &'static str) {
        match self.0.iter_mut().find(|(w, _)| *w == what) {
            Some((_, n)) => *n += 1,
            None => self.0.push((what, 1)),
        }
    }

    /// `what n (p%), ...`.
    pub fn show(&self) -> String {
        let total: u64 = self.0.iter().map(|(_, n)| n).sum::<u64>().max(1);
        self.0
            .iter()
            .map(|(w, n)| format!("{w} {:.0}%", *n as f64 * 100.0 / total as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A target's name, what it drives, and how to build it.
pub struct Spec {
    pub name: &'static str,
    pub what: &'static str,
    pub make: fn() -> Box<dyn Target>,
}

/// The result of running one target.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: &'static str,
    pub cases: u64,
    pub elapsed: Duration,
    /// (case number, panic message) of the first crashes (at most 10).
    pub crashes: Vec<(u64, String)>,
    /// All crashing cases.
    pub crash_count: u64,
    /// The target's outcome counts.
    pub stats: String,
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Install a panic hook that records the message (with its location) for
/// the runner instead of printing it for every crashing case.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = match info.payload().downcast_ref::<&str>() {
                Some(s) => (*s).to_string(),
                None => match info.payload().downcast_ref::<String>() {
                    Some(s) => s.clone(),
                    None => "(non-string panic)".into(),
                },
            };
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let recorded = LAST_PANIC.with(|p| {
                p.borrow_mut().replace(format!("{msg}{at}"));
                true
            });
            if !recorded {
                default(info);
            }
        }));
    });
}

/// Run `cases` cases of `spec` from `seed` (cases `first..first + cases`).
pub fn run(spec: &Spec, seed: u64, first: u64, cases: u64) -> Report {
    quiet_panics();
    let mut target = (spec.make)();
    let mut crashes = Vec::new();
    let mut crash_count = 0;
    let start = Instant::now();
    for case in first..first + cases {
        let mut rng = Rng::for_case(seed, case);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target.case(&mut rng)));
        if r.is_err() {
            crash_count += 1;
            let msg = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_default();
            if crashes.len() < 10 {
                crashes.push((case, msg));
            }
            // State shared across cases may be broken now: start afresh.
            target = (spec.make)();
        }
    }
    Report {
        stats: target.stats(),
        name: spec.name,
        cases,
        elapsed: start.elapsed(),
        crashes,
        crash_count,
    }
}

/// Every target, in the order `--target all` runs them.
pub fn all() -> &'static [Spec] {
    targets::ALL
}

/// The target called `name`.
pub fn find(name: &str) -> Option<&'static Spec> {
    all().iter().find(|s| s.name == name)
}
