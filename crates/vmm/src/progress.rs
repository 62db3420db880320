//! Progress for long steps: an indicatif spinner on a terminal, plain log
//! lines (tracing `info`) otherwise.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub(crate) struct Step {
    bar: Option<ProgressBar>,
    what: String,
    started: Instant,
}

impl Step {
    pub(crate) fn start(what: impl Into<String>) -> Step {
        let what = what.into();
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(what.clone());
            bar.enable_steady_tick(Duration::from_millis(100));
            Some(bar)
        } else {
            tracing::info!("{what} ...");
            None
        };
        Step {
            bar,
            what,
            started: Instant::now(),
        }
    }

    pub(crate) fn set(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(format!("{}: {msg}", self.what)),
            None => tracing::info!("{}: {msg}", self.what),
        }
    }

    pub(crate) fn done(self, msg: &str) {
        let secs = self.started.elapsed().as_secs_f64();
        match &self.bar {
            Some(bar) => bar.finish_with_message(format!("{}: {msg} ({secs:.1} s)", self.what)),
            None => tracing::info!("{}: {msg} ({secs:.1} s)", self.what),
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}
