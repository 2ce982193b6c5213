//! The convergence experiments: each compares loss variants on the same data, split and
//! initial weights.
//!
//! The four training experiments have one shape, [`Experiment`]: a list of independent training
//! runs (jobs), one run, and a summary of all runs. [`crate::runner::execute`] runs the jobs in
//! parallel (results in job order, whatever the thread count), shows progress, collects the
//! metrics table, the weights and the runs that stopped, and hands the results to
//! [`Experiment::summarise`] for the experiment's part of `summary.json`, its `config.json` and its
//! report section. The box simulation ([`boxes`]) is one data-parallel computation rather than a
//! set of training runs and gives its [`Output`] directly. [`crate::runner`] writes the records.

pub mod box_regressor;
pub mod boxes;
pub mod data;
pub mod imbalanced;
pub mod regression;
pub mod segmentation;
pub mod tabular;
mod verdict;

pub use verdict::verdict;

use crate::fit::{FitConfig, FitError, LogRow};
use crate::optim::{sorted_params, OptimizerConfig, Schedule};
use crate::progress::{Progress, ProgressMode};
use crate::records::{Cell, Csv};
use crate::report::{Figure, Section};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{json, Value};

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

/// A convergence experiment: independent training runs (jobs) whose results are summarised
/// together. Implemented by the regression, imbalanced, segmentation and box-regressor
/// experiments; run by [`crate::runner::execute`].
pub trait Experiment: Sync {
    /// One training run's settings (model, loss, fold or seed).
    type Job: Sync + RunLabel;
    /// What one run gives (logged rows, final metrics).
    type Done: Send + Sync;
    /// The experiment's name (the folder of its records, its key in `summary.json`).
    const NAME: &'static str;
    /// The runs, in the order of the records.
    fn jobs(&self) -> Vec<Self::Job>;
    /// A run's number of training steps (the unit of progress).
    fn steps(&self, job: &Self::Job) -> usize;
    /// Trains one run.
    ///
    /// # Errors
    /// A run that stops (non-finite loss, tensor error); the other runs go on.
    fn run_job(&self, job: &Self::Job, ctx: &Context, progress: &Progress) -> JobOutcome<Self::Done>;
    /// The columns of `metrics.csv`.
    fn metrics_header(&self) -> Vec<&'static str>;
    /// Appends a finished run's logged rows to `metrics.csv`.
    fn metrics_rows(&self, job: &Self::Job, done: &Self::Done, csv: &mut Csv);
    /// The experiment's summary, config and report section from all runs.
    ///
    /// # Errors
    /// A figure that cannot be drawn.
    fn summarise(&self, runs: &Runs<'_, Self>, ctx: &Context) -> anyhow::Result<Summary>;
}

/// A finished training run: what the experiment keeps of it and the model's variables, whose
/// final values the runner writes to `weights.safetensors` named `"<run label>/<variable>"`
/// ([`named_weights`]).
pub struct Trained<D> {
    /// The experiment's result of the run (logged rows, final metrics).
    pub done: D,
    /// The trained model's variables.
    pub varmap: VarMap,
}

/// What [`Experiment::run_job`] gives: the trained run, or the error that stopped it.
pub type JobOutcome<D> = Result<Trained<D>, FitError>;

/// The final values of `varmap`'s variables, sorted by name and named `"<label>/<variable>"`
/// (detached from the graph).
pub fn named_weights(label: &str, varmap: &VarMap) -> Vec<(String, Tensor)> {
    sorted_params(varmap)
        .into_iter()
        .map(|(n, v)| (format!("{label}/{n}"), v.as_tensor().detach()))
        .collect()
}

/// The training settings every experiment uses: `steps` Adam updates at the constant rate
/// `lr`, no gradient clipping, mini-batches of `batch_size` rows (`None`: full batch) drawn
/// from `seed`, the test metrics logged every `log_every` updates.
pub fn adam_constant(steps: usize, lr: f64, batch_size: Option<usize>, log_every: usize, seed: u64) -> FitConfig {
    FitConfig {
        steps,
        lr,
        optimizer: OptimizerConfig::adam(),
        schedule: Schedule::Constant,
        clip_norm: None,
        batch_size,
        log_every,
        seed,
        ..FitConfig::default()
    }
}

/// Metric `i` of a logged row (NaN where the row has none).
pub fn metric(row: &LogRow, i: usize) -> f64 {
    row.2.get(i).copied().unwrap_or(f64::NAN)
}

/// Appends a run's logged rows to `metrics.csv`: each line is the run's `key` cells (its loss,
/// seed, fold, ...), then the step, the training loss and the logged metrics.
pub fn push_logged(csv: &mut Csv, key: &[Cell<'_>], rows: &[LogRow]) {
    for (step, l, m) in rows {
        let mut cells = key.to_vec();
        cells.extend([Cell::Int(*step), Cell::Num(*l)]);
        cells.extend(m.iter().map(|&v| Cell::Num(v)));
        csv.push(&cells);
    }
}

/// A run's label in messages and weight names (`"linear/mse/shift400/fold2"`, `"dice/seed1"`).
pub trait RunLabel {
    /// The label.
    fn label(&self) -> String;
}

/// The runs of an experiment with their results, in job order.
pub struct Runs<'a, E: Experiment + ?Sized> {
    /// The jobs.
    pub jobs: &'a [E::Job],
    /// Each job's result.
    pub results: &'a [Result<E::Done, FitError>],
    /// The runs that stopped, in job order.
    pub failures: &'a [Failure],
}

impl<E: Experiment + ?Sized> Runs<'_, E> {
    /// The results of the finished runs whose job satisfies `keep`, in job order.
    pub fn done_where(&self, keep: impl Fn(&E::Job) -> bool) -> Vec<&E::Done> {
        self.jobs
            .iter()
            .zip(self.results)
            .filter(|(j, _)| keep(j))
            .filter_map(|(_, r)| r.as_ref().ok())
            .collect()
    }

    /// One note per run that stopped, for the report.
    pub fn failure_notes(&self) -> impl Iterator<Item = String> + '_ {
        self.failures
            .iter()
            .map(|f| format!("Run {} stopped: {}", f.run, f.message))
    }
}

/// What [`Experiment::summarise`] gives; the runner adds the metrics table, weights and failures
/// to make the [`Output`].
pub struct Summary {
    /// The experiment's part of `summary.json`.
    pub summary: serde_json::Value,
    /// Every setting (written to `config.json` with the experiment's name, the seed, device and
    /// crate versions).
    pub config: serde_json::Value,
    /// The report section (its name is left to the runner: [`Experiment::NAME`]).
    pub section: Section,
}

impl Summary {
    /// The summary of a training experiment (every one trains in f32): its part of
    /// `summary.json`, its report `section`, and `config.json`: the experiment's `settings` and
    /// `"dtype": "f32"` beside its other `entries` (a JSON object: the data set, the fit settings).
    pub fn of_training(summary: Value, settings: &impl Serialize, entries: Value, section: Section) -> Self {
        let mut config = json!({ "settings": settings, "dtype": "f32" });
        if let (Value::Object(config), Value::Object(entries)) = (&mut config, entries) {
            config.extend(entries);
        }
        Self {
            summary,
            config,
            section,
        }
    }
}

/// A run of an experiment that repeats each loss over seeds (segmentation, box-regressor).
#[derive(Debug, Clone, PartialEq)]
pub struct LossSeed {
    /// The loss variant.
    pub loss: String,
    /// The seed index (its data, initial weights and batch order).
    pub seed: usize,
}

impl LossSeed {
    /// Every loss of `losses` with every seed `0..seeds`, loss by loss.
    pub fn all(losses: &[String], seeds: usize) -> Vec<Self> {
        losses
            .iter()
            .flat_map(|l| {
                (0..seeds).map(move |s| Self {
                    loss: l.clone(),
                    seed: s,
                })
            })
            .collect()
    }
}

impl LossSeed {
    /// The random stream of this run's `purpose` (`"data"`, `"init"`, `"split"`) in
    /// `experiment`: [`crate::rng::stream`] of `[experiment, "seed<k>", purpose]`.
    pub fn stream(&self, seed: u64, experiment: &str, purpose: &str) -> ChaCha8Rng {
        crate::rng::stream(seed, &[experiment, &format!("seed{}", self.seed), purpose])
    }

    /// The seed of this run's `purpose` (`"batches"`) in `experiment`:
    /// [`crate::rng::derive_seed`] of `[experiment, "seed<k>", purpose]`.
    pub fn derive_seed(&self, seed: u64, experiment: &str, purpose: &str) -> u64 {
        crate::rng::derive_seed(seed, &[experiment, &format!("seed{}", self.seed), purpose])
    }
}

impl RunLabel for LossSeed {
    /// `"dice/seed1"`.
    fn label(&self) -> String {
        format!("{}/seed{}", self.loss, self.seed)
    }
}

/// The mean over runs of one logged column at each logged step: at each step any run logged,
/// the mean of the runs that logged it, in the runs' order (a run stopped early, by early
/// stopping, logs fewer steps and is left out of the later means).
pub fn mean_curve<R>(runs: &[&[R]], step: impl Fn(&R) -> usize, col: impl Fn(&R) -> f64) -> Vec<(f64, f64)> {
    let mut at: std::collections::BTreeMap<usize, Vec<f64>> = std::collections::BTreeMap::new();
    for rows in runs {
        for r in rows.iter() {
            at.entry(step(r)).or_default().push(col(r));
        }
    }
    at.into_iter()
        .map(|(t, v)| (t as f64, v.iter().sum::<f64>() / v.len() as f64))
        .collect()
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
