//! The convergence experiments: each compares loss variants on the same data, split and
//! initial weights.
//!
//! Each experiment is a function from its config and a [`Context`] to an [`Output`]: its part of
//! `summary.json`, its records (config, metrics table, figures, weights) and its report section.
//! [`crate::runner`] writes the records and the summary.

pub mod box_regressor;
pub mod boxes;
pub mod imbalanced;
pub mod regression;
pub mod segmentation;
pub mod tabular;
mod verdict;

pub use verdict::verdict;

use crate::fit::FitError;
use crate::progress::ProgressMode;
use crate::records::Csv;
use crate::report::{Figure, Section};
use candle_core::{Device, Tensor};
use serde::Serialize;

/// The experiment names, in the order `all` runs them.
pub const NAMES: [&str; 5] = ["regression", "boxes", "imbalanced", "segmentation", "box-regressor"];

/// What every experiment gets besides its own config.
#[derive(Debug, Clone)]
pub struct Context {
    /// The one seed every random choice comes from.
    pub seed: u64,
    /// Where tensors live.
    pub device: Device,
    /// How progress is shown.
    pub progress: ProgressMode,
    /// Checkpoints and resumption of the training runs (`None`: neither); the runner points
    /// its folder at `<out>/<experiment>/checkpoints`.
    pub checkpoint: Option<crate::checkpoint::Plan>,
}

/// A run that stopped (non-finite loss or tensor error) while the others went on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// The experiment.
    pub experiment: String,
    /// The run's label (`"linear/mse/shift400/fold2"`).
    pub run: String,
    /// The message (names the loss, the step and the seed).
    pub message: String,
}

impl Failure {
    /// A failure of `experiment` from a [`FitError`].
    pub fn from_fit(experiment: &str, run: &str, e: &FitError) -> Self {
        Self {
            experiment: experiment.to_string(),
            run: run.to_string(),
            message: e.to_string(),
        }
    }
}

/// Everything an experiment produces.
pub struct Output {
    /// Its part of `summary.json`.
    pub summary: serde_json::Value,
    /// Every setting (written to `config.json` with the seed, device and crate versions).
    pub config: serde_json::Value,
    /// `metrics.csv`: one row per logged step.
    pub metrics: Csv,
    /// The report section (question, set-up, tables, notes, figures).
    pub section: Section,
    /// Final weights, written as `weights.safetensors` (none: no file).
    pub weights: Vec<(String, Tensor)>,
    /// Runs that stopped.
    pub failures: Vec<Failure>,
}

impl Output {
    /// The figures of the section.
    pub fn figures(&self) -> &[Figure] {
        &self.section.figures
    }
}

/// The names in `requested` (comma-separated list already split) checked against `known`;
/// `None` gives `known` itself.
///
/// # Errors
/// An unknown name (the message lists the known ones).
pub fn select_losses(experiment: &str, requested: Option<&[String]>, known: &[&str]) -> anyhow::Result<Vec<String>> {
    match requested {
        None => Ok(known.iter().map(|s| s.to_string()).collect()),
        Some(names) => {
            let mut out = Vec::new();
            for n in names {
                if !known.contains(&n.as_str()) {
                    anyhow::bail!("unknown loss '{n}' for {experiment} (known: {})", known.join(", "));
                }
                if !out.contains(n) {
                    out.push(n.clone());
                }
            }
            if out.is_empty() {
                anyhow::bail!("--losses is empty for {experiment} (known: {})", known.join(", "));
            }
            Ok(out)
        }
    }
}

/// `mean ± std` with 3 significant decimals (std left out when undefined).
pub fn pm(m: crate::metrics::MeanStd) -> String {
    if m.mean.is_nan() {
        "n/a".to_string()
    } else if m.std.is_nan() {
        format!("{:.3}", m.mean)
    } else {
        format!("{:.3} ± {:.3}", m.mean, m.std)
    }
}

/// The mean training-loss curve of several runs: at each logged step, the mean of the runs that
/// logged it (a run stopped early logs fewer steps), in the runs' order.
pub fn mean_curve(runs: &[&[crate::fit::LogRow]]) -> Vec<(f64, f64)> {
    let mut at: std::collections::BTreeMap<usize, Vec<f64>> = std::collections::BTreeMap::new();
    for rows in runs {
        for r in rows.iter() {
            at.entry(r.0).or_default().push(r.1);
        }
    }
    at.into_iter()
        .map(|(t, v)| (t as f64, v.iter().sum::<f64>() / v.len() as f64))
        .collect()
}
