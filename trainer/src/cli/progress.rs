//! Progress reporting: an indicatif bar with ETA on a terminal, plain lines otherwise, nothing
//! with `--quiet`. Counts updates (training steps) and is safe to share between threads.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar with ETA on stderr.
    Bar,
    /// A line on stderr every 10 %.
    Lines,
    /// Nothing.
    Quiet,
}

impl ProgressMode {
    /// `Quiet` if `quiet`, else `Bar` when stderr is a terminal, else `Lines`.
    pub fn detect(quiet: bool) -> Self {
        if quiet {
            Self::Quiet
        } else if std::io::stderr().is_terminal() {
            Self::Bar
        } else {
            Self::Lines
        }
    }
}

/// Progress of one experiment, in units of work (training steps).
pub struct Progress {
    name: String,
    total: u64,
    done: AtomicU64,
    bar: Option<ProgressBar>,
    lines: bool,
}

impl Progress {
    /// Starts reporting `total` units of `name`.
    pub fn new(name: &str, total: u64, mode: ProgressMode) -> Self {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = ProgressBar::new(total);
            let style =
                ProgressStyle::with_template("{prefix:>13} [{bar:30}] {percent:>3}% {elapsed_precise} ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(name.to_string());
            bar
        });
        if mode == ProgressMode::Lines {
            eprintln!("{name}: started");
        }
        Self {
            name: name.to_string(),
            total,
            done: AtomicU64::new(0),
            bar,
            lines: mode == ProgressMode::Lines,
        }
    }

    /// A progress that shows nothing.
    pub fn hidden() -> Self {
        Self::new("", 0, ProgressMode::Quiet)
    }

    /// Adds `n` units.
    pub fn inc(&self, n: u64) {
        let before = self.done.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(n);
        } else if self.lines && self.total > 0 {
            let tenth = |d: u64| (d.min(self.total) * 10) / self.total;
            if tenth(before + n) > tenth(before) {
                eprintln!("{}: {}%", self.name, tenth(before + n) * 10);
            }
        }
    }

    /// Ends the display.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl crate::fit::StepCounter for Progress {
    fn add_steps(&self, n: u64) {
        self.inc(n);
    }
}
