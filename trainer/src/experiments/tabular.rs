//! `trainer run tabular`: loss variants compared on the user's CSV file, with the folds,
//! models, metrics, records and figures of the built-in experiments.
//!
//! The file is read by [`crate::data::csv`] (its rules and errors there). Folds: stratified for
//! classification (within each class, in file order, the j-th row goes to fold j mod K, as the
//! imbalanced experiment), by position for regression (row j to fold j mod K, as the
//! regression experiment). Features z-scored on the training fold (`standardize`). Models:
//! linear (zero init) or an MLP d-`hidden`-ReLU-out (seeded init, the same for every loss and
//! fold). Losses: the library's, by name, with parameters ([`LossSpec`]); every loss takes
//! the mean over the rows unless its `reduction` parameter says otherwise. Metrics on the test
//! fold after the last update: regression MAE, RMSE and bias (mean prediction − y); binary AP
//! and ROC-AUC (on the logits), recall, precision, F1 and balanced accuracy at σ(z) ≥ 0.5;
//! multi-class accuracy and balanced accuracy (argmax); mean and sample std over folds.

use super::imbalanced::{self, AlphaBalancedBce, BINARY_METRICS, MULTI_METRICS};
use super::{mean_curve, pm, push_logged, verdict, Context, Experiment, JobOutcome, RunLabel, Runs, Summary, Trained};
use crate::data::csv::{self as table_csv, Loaded, Task};
use crate::data::fold::{fold_tensors, Targets};
use crate::data::{self, folds};
use crate::fit::{fit_resumable, FitConfig, FitError, FitRun, LogRow, Validation};
use crate::metrics::{self, mean_std, MeanStd};
use crate::models::linear_or_mlp;
use crate::optim::OptimizerConfig;
use crate::plot::{self, BarSeries, Series};
use crate::progress::Progress;
use crate::records::{Cell, Csv};
use crate::registry;
use crate::report::{Figure, Section, Table as TextTable};
use crate::rng;
use anyhow::{anyhow, bail};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarMap;
use loss_core::Loss;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::path::PathBuf;

/// The loss names of a regression, in default order.
pub const REGRESSION_LOSSES: [&str; 5] = ["mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "log_cosh_loss"];
/// The loss names of a binary task (`alpha_balanced_bce`: BCE with logits weighted α on the
/// positives and 1 − α on the negatives, parameter `alpha`, default 0.75).
pub const BINARY_LOSSES: [&str; 3] = [
    "binary_cross_entropy_with_logits",
    "alpha_balanced_bce",
    "sigmoid_focal_loss",
];
/// The loss names of a multi-class task.
pub const MULTICLASS_LOSSES: [&str; 2] = ["cross_entropy", "softmax_focal_loss"];
/// Regression metric names (summary keys).
pub const REGRESSION_METRICS: [&str; 3] = ["mae", "rmse", "bias"];

/// The loss names the library has for `task`.
pub fn task_losses(task: Task) -> &'static [&'static str] {
    match task {
        Task::Regression => &REGRESSION_LOSSES,
        Task::Binary => &BINARY_LOSSES,
        Task::Multiclass => &MULTICLASS_LOSSES,
    }
}

/// The metric names of `task`, in table order.
pub fn task_metrics(task: Task) -> &'static [&'static str] {
    match task {
        Task::Regression => &REGRESSION_METRICS,
        Task::Binary => &BINARY_METRICS,
        Task::Multiclass => &MULTI_METRICS,
    }
}

/// One loss variant: a library name with parameters, written `name` or
/// `name:key=value:key=value` (a value is read as JSON when it parses: numbers, booleans,
/// lists; else as a string).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LossSpec {
    /// The variant as written (its label in tables, records and the summary).
    pub label: String,
    /// The library's loss name.
    pub name: &'static str,
    /// Its parameters (JSON, as in the reference cases).
    pub params: Map<String, Value>,
}

impl LossSpec {
    /// Parses `name[:key=value...]` for `task`, adding the `extra` parameters (`--param
    /// name.key=value`) of the same name.
    ///
    /// # Errors
    /// A name the task does not have, or a parameter without `=`.
    pub fn parse(text: &str, task: Task, extra: &[(String, String, Value)]) -> anyhow::Result<Self> {
        let mut parts = text.split(':');
        let name = parts.next().unwrap_or("").trim();
        let known = task_losses(task);
        let name: &'static str = known.iter().copied().find(|k| *k == name).ok_or_else(|| {
            anyhow!(
                "unknown loss '{name}' for --task {} (known: {})",
                task.name(),
                known.join(", ")
            )
        })?;
        let mut params = Map::new();
        for p in parts {
            let (k, v) = param_value(p).map_err(|e| anyhow!("--losses {text}: {e}"))?;
            params.insert(k, v);
        }
        for (_, k, v) in extra.iter().filter(|(l, _, _)| l == name) {
            // the label names the variant's own value: a --param may not overwrite it
            anyhow::ensure!(
                !params.contains_key(k),
                "--param {name}.{k}={v} and --losses {} both set `{k}` (give it in one place)",
                text.trim()
            );
            params.insert(k.clone(), v.clone());
        }
        Ok(Self {
            label: text.trim().to_string(),
            name,
            params,
        })
    }

    /// The loss, mean-reduced unless the parameters say otherwise.
    pub fn build(&self) -> Box<dyn Loss> {
        if self.name == "alpha_balanced_bce" {
            let alpha = self.params.get("alpha").and_then(Value::as_f64).unwrap_or(0.75);
            return Box::new(AlphaBalancedBce { alpha });
        }
        let mut params = self.params.clone();
        params.entry("reduction").or_insert_with(|| json!("mean"));
        Box::new(Named {
            name: self.name,
            params,
        })
    }

    /// Checks the parameters by one call on a tiny input of the task's shape.
    ///
    /// # Errors
    /// A parameter the loss does not have or a bad value, as the library reports it.
    pub fn check(&self, task: Task, classes: usize) -> anyhow::Result<()> {
        if self.name == "alpha_balanced_bce" {
            for (k, v) in &self.params {
                anyhow::ensure!(
                    k == "alpha" && v.as_f64().is_some_and(|a| (0.0..=1.0).contains(&a)),
                    "alpha_balanced_bce: parameter `{k}` = {v} (it takes `alpha`, a number in [0, 1])"
                );
            }
            return Ok(());
        }
        let dev = Device::Cpu;
        let (input, target) = match task {
            Task::Multiclass => (
                Tensor::zeros((2, classes), DType::F32, &dev)?,
                Tensor::new(&[0u32, 1], &dev)?,
            ),
            _ => (
                Tensor::new(&[[0.5f32], [-0.5]], &dev)?,
                Tensor::new(&[[1.0f32], [0.0]], &dev)?,
            ),
        };
        self.build()
            .forward(&input, &target)
            .map(|_| ())
            .map_err(|e| anyhow!("--losses {}: {e}", self.label))
    }
}

/// `key=value` with the value read as JSON when it parses (numbers, booleans, lists), else as
/// a string: the form of every loss parameter given on the command line.
///
/// # Errors
/// A text without `=`.
pub fn param_value(text: &str) -> anyhow::Result<(String, Value)> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| anyhow!("parameter {text:?} is not key=value"))?;
    let v = v.trim();
    let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
    Ok((k.trim().to_string(), value))
}

/// Parses `--param loss.key=value` into `(loss, key, value)`.
///
/// # Errors
/// A text without a `.` before the `=`, or without `=`.
pub fn parse_param(text: &str) -> anyhow::Result<(String, String, Value)> {
    let (lhs, _) = text
        .split_once('=')
        .ok_or_else(|| anyhow!("--param {text:?}: expected loss.key=value"))?;
    let (loss, _) = lhs
        .split_once('.')
        .ok_or_else(|| anyhow!("--param {text:?}: expected loss.key=value"))?;
    let (k, v) = param_value(&text[loss.len() + 1..])?;
    Ok((loss.trim().to_string(), k, v))
}

/// A library loss called through the registry, the prediction given as `input` and `logits`.
struct Named {
    name: &'static str,
    params: Map<String, Value>,
}

impl Loss for Named {
    fn name(&self) -> &'static str {
        self.name
    }
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let inputs = registry::Inputs::from([
            ("input".to_string(), input.clone()),
            ("logits".to_string(), input.clone()),
            ("target".to_string(), target.clone()),
        ]);
        match registry::call(self.name, &self.params, &inputs) {
            Some(r) => r.map_err(|e| candle_core::Error::Msg(format!("{e:#}"))),
            None => Err(candle_core::Error::Msg(format!("no loss named {}", self.name))),
        }
    }
}

/// The model of a tabular run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Linear, zero init.
    Linear,
    /// One hidden ReLU layer, seeded init.
    Mlp,
}

/// Settings of a tabular run.
#[derive(Debug, Clone, Serialize)]
pub struct TabularConfig {
    /// The CSV file.
    pub data: PathBuf,
    /// The target column.
    pub target: String,
    /// The kind of target.
    pub task: Task,
    /// The loss variants.
    pub losses: Vec<LossSpec>,
    /// The model.
    pub model: ModelKind,
    /// Hidden width of the MLP.
    pub hidden: usize,
    /// Number of folds (≥ 2).
    pub folds: usize,
    /// Z-score the features with the training fold's statistics.
    pub standardize: bool,
    /// Rows with a missing cell were dropped.
    pub drop_missing: bool,
    /// The training loop's settings (its seed is replaced by the run's).
    pub fit: FitConfig,
}

/// A tabular run: its settings and the table read from the file.
#[derive(Debug, Clone)]
pub struct Tabular {
    /// The settings.
    pub cfg: TabularConfig,
    /// The table.
    pub data: Loaded,
}

impl Tabular {
    /// Reads the file and checks everything that can be checked before training: the file's
    /// rules, every class with at least `folds` rows, the losses' parameters.
    ///
    /// # Errors
    /// A one-line message naming the file (and row and column) or the loss.
    pub fn prepare(cfg: TabularConfig, features: Option<&[String]>) -> anyhow::Result<Self> {
        if cfg.folds < 2 {
            bail!("--folds must be >= 2, got {}", cfg.folds);
        }
        if cfg.losses.is_empty() {
            bail!("--losses is empty");
        }
        let data = table_csv::load(&cfg.data, &cfg.target, features, cfg.task, cfg.drop_missing)?;
        if cfg.task == Task::Regression {
            if data.table.n < cfg.folds {
                bail!(
                    "{}: {} rows, fewer than the {} folds",
                    cfg.data.display(),
                    data.table.n,
                    cfg.folds
                );
            }
        } else {
            table_csv::check_class_sizes(&cfg.data, &cfg.target, &data, cfg.folds)?;
        }
        for l in &cfg.losses {
            l.check(cfg.task, data.classes.len())?;
        }
        Ok(Self { cfg, data })
    }

    fn outputs(&self) -> usize {
        match self.cfg.task {
            Task::Multiclass => self.data.classes.len(),
            _ => 1,
        }
    }
}

/// What one run gives.
pub struct JobResult {
    rows: Vec<LogRow>,
    last: Vec<f64>,
    stopped_at: Option<usize>,
}

/// The task's metrics of the model's output on the test rows.
fn evaluate(out: &Tensor, y_test: &[f64], labels: &[usize], task: Task) -> Result<Vec<f64>> {
    match task {
        Task::Regression => {
            let pred = data::values(out)?;
            Ok(vec![
                metrics::mae(&pred, y_test),
                metrics::rmse(&pred, y_test),
                metrics::bias(&pred, y_test),
            ])
        }
        Task::Binary => imbalanced::evaluate(out, labels, false),
        Task::Multiclass => imbalanced::evaluate(out, labels, true),
    }
}

fn run_job(t: &Tabular, ctx: &Context, job: &Job, progress: &Progress) -> JobOutcome<JobResult> {
    let cfg = &t.cfg;
    let (loss, fold) = (&cfg.losses[job.loss], job.fold);
    let label = job.label();
    let wrap = FitError::in_run(&label);
    let table = &t.data.table;
    let (assignment, targets) = match cfg.task {
        Task::Regression => (folds::by_position(table.n, cfg.folds), Targets::Values(&table.y)),
        Task::Binary => (
            folds::stratified(&t.data.labels, cfg.folds),
            Targets::Binary(&t.data.labels),
        ),
        Task::Multiclass => (
            folds::stratified(&t.data.labels, cfg.folds),
            Targets::Classes(&t.data.labels),
        ),
    };
    let f = fold_tensors(table, &assignment, fold, targets, cfg.standardize, &ctx.device).map_err(wrap)?;
    let y_test: Vec<f64> = f.test.iter().map(|&r| table.y[r]).collect();
    let labels: Vec<usize> = if cfg.task == Task::Regression {
        Vec::new()
    } else {
        f.test.iter().map(|&r| t.data.labels[r]).collect()
    };
    let varmap = VarMap::new();
    let mut init_rng = rng::stream(ctx.seed, &["tabular", "mlp-init"]);
    let (dev, out) = (&ctx.device, t.outputs());
    let hidden = (cfg.model == ModelKind::Mlp).then_some(cfg.hidden);
    let model = linear_or_mlp(&varmap, hidden, table.d, out, &mut init_rng, dev).map_err(wrap)?;
    let built = loss.build();
    let mut on_log =
        |_: usize, _: f64| -> Result<Vec<f64>> { evaluate(&model.forward(&f.x_test)?, &y_test, &labels, cfg.task) };
    let fit_cfg = FitConfig {
        seed: ctx.seed,
        ..cfg.fit.clone()
    };
    let run = FitRun::new(
        model.as_ref(),
        &varmap,
        built.as_ref(),
        &f.x_train,
        &f.t_train,
        &fit_cfg,
    );
    let run = run.with_label(&label).with_progress(progress);
    let (report, rows) = fit_resumable(run, &mut on_log, ctx.checkpoint.as_ref())?;
    let last = rows.last().map(|r| r.2.clone()).unwrap_or_default();
    Ok(Trained {
        done: JobResult {
            rows,
            last,
            stopped_at: report.stopped_at,
        },
        varmap,
    })
}

/// One run: a loss (index into the config's losses) on a fold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Index of the loss in [`TabularConfig::losses`].
    pub loss: usize,
    /// The test fold.
    pub fold: usize,
    /// `"<loss label>/fold<k>"`.
    pub label: String,
}

impl RunLabel for Job {
    fn label(&self) -> String {
        self.label.clone()
    }
}

impl Experiment for Tabular {
    type Job = Job;
    type Done = JobResult;
    const NAME: &'static str = "tabular";

    fn jobs(&self) -> Vec<Job> {
        let label = |loss: usize, fold| format!("{}/fold{fold}", self.cfg.losses[loss].label);
        (0..self.cfg.losses.len())
            .flat_map(|loss| {
                (0..self.cfg.folds).map(move |fold| Job {
                    loss,
                    fold,
                    label: label(loss, fold),
                })
            })
            .collect()
    }

    fn steps(&self, _: &Job) -> usize {
        self.cfg.fit.steps
    }

    fn run_job(&self, job: &Job, ctx: &Context, progress: &Progress) -> JobOutcome<JobResult> {
        run_job(self, ctx, job, progress)
    }

    fn metrics_header(&self) -> Vec<&'static str> {
        let mut header = vec!["loss", "fold", "step", "train_loss"];
        header.extend(task_metrics(self.cfg.task));
        header
    }

    fn metrics_rows(&self, job: &Job, r: &JobResult, csv: &mut Csv) {
        let label = &self.cfg.losses[job.loss].label;
        push_logged(csv, &[Cell::Str(label), Cell::Int(job.fold)], &r.rows);
    }

    fn summarise(&self, runs: &Runs<'_, Self>, _: &Context) -> anyhow::Result<Summary> {
        summarise(self, runs)
    }
}

fn summarise(t: &Tabular, runs: &Runs<'_, Tabular>) -> anyhow::Result<Summary> {
    let cfg = &t.cfg;
    let metric_names = task_metrics(cfg.task);
    let mut head = vec!["loss"];
    head.extend(metric_names);
    let file = cfg.data.display().to_string();
    let mut table = TextTable::new(
        &format!(
            "tabular, {file} → {} ({}, {} model): test metrics, mean ± std over {} folds",
            cfg.target,
            cfg.task.name(),
            model_name(cfg.model),
            cfg.folds
        ),
        &head,
    );
    let mut per_loss = Map::new();
    let mut curves = Vec::new();
    let mut bars = BarSeries::empty_each(metric_names);
    let mut all_stats = Vec::new();
    for (i, loss) in cfg.losses.iter().enumerate() {
        let rs = runs.done_where(|j| j.loss == i);
        let stats: Vec<MeanStd> = (0..metric_names.len())
            .map(|k| mean_std(&rs.iter().map(|r| r.last[k]).collect::<Vec<_>>()))
            .collect();
        let mut row = vec![loss.label.clone()];
        row.extend(stats.iter().map(|&s| pm(s)));
        table.push(row);
        let mut obj: Map<String, Value> = metric_names
            .iter()
            .zip(&stats)
            .map(|(n, s)| (n.to_string(), json!(s)))
            .collect();
        if cfg.fit.validation.is_some_and(|v| v.early_stopping.is_some()) {
            obj.insert(
                "stopped_at".into(),
                json!(rs.iter().map(|r| r.stopped_at).collect::<Vec<_>>()),
            );
        }
        per_loss.insert(loss.label.clone(), Value::Object(obj));
        for (b, s) in bars.iter_mut().zip(&stats) {
            b.values.push((s.mean, s.std));
        }
        let rows: Vec<&[LogRow]> = rs.iter().map(|r| r.rows.as_slice()).collect();
        curves.push(Series {
            name: loss.label.clone(),
            points: mean_curve(&rows, |r| r.0, |r| r.1),
        });
        all_stats.push((loss.label.clone(), stats));
    }
    let names: Vec<String> = cfg.losses.iter().map(|l| l.label.clone()).collect();
    let model = model_name(cfg.model);
    let figures = vec![
        Figure {
            file: "convergence.png".to_string(),
            caption: format!("{model} model: training loss vs step (mean over folds; each loss in its own units)"),
            png: plot::line_chart(
                &format!("tabular {}, {model}: training loss", cfg.target),
                "step",
                "training loss (log)",
                &curves,
                true,
            )?,
        },
        Figure {
            file: "metrics.png".to_string(),
            caption: format!("{model} model: test metrics after training (mean ± std over folds)"),
            png: plot::bar_chart(
                &format!("tabular {}, {model}: test metrics", cfg.target),
                "value",
                &names,
                &bars,
            )?,
        },
    ];
    let summary = json!({
        "data": file,
        "target": cfg.target,
        "task": cfg.task,
        "model": cfg.model,
        "rows": t.data.table.n,
        "features": t.data.features,
        "dropped_rows": t.data.dropped,
        "classes": t.data.classes,
        "folds": cfg.folds,
        "losses": per_loss,
    });
    let mut notes = vec![verdict(metric_names, &all_stats, "folds")];
    if cfg.task == Task::Binary {
        notes.push(format!(
            "Positive class: {:?} (of {:?}). AP and ROC-AUC on the logits; recall, precision, F1 and balanced \
             accuracy at σ(z) ≥ 0.5.",
            t.data.classes[1], t.data.classes
        ));
    }
    if t.data.dropped > 0 {
        notes.push(format!(
            "{} rows with a missing cell were dropped (--drop-missing).",
            t.data.dropped
        ));
    }
    notes.extend(runs.failure_notes());
    let section = Section {
        question: format!("Which loss trains the best {model} model for {} in {file}?", cfg.target),
        setup: setup_text(t),
        tables: vec![table],
        notes,
        figures,
        ..Section::default()
    };
    let data = json!({
        "data": {
            "file": file,
            "rows": t.data.table.n,
            "features": t.data.features,
            "ignored_columns": t.data.ignored,
            "dropped_rows": t.data.dropped,
            "classes": t.data.classes,
        },
    });
    Ok(Summary::of_training(summary, cfg, data, section))
}

fn model_name(m: ModelKind) -> &'static str {
    match m {
        ModelKind::Linear => "linear",
        ModelKind::Mlp => "mlp",
    }
}

/// The schedule in words for the report (its `Debug` form read "WarmupCosine { warmup: 20, ... }").
fn schedule_text(s: &crate::optim::Schedule) -> String {
    use crate::optim::Schedule;
    match *s {
        Schedule::Constant => "constant rate".to_string(),
        Schedule::Step { step_size, gamma } => format!("rate ×{gamma} every {step_size} updates"),
        Schedule::Cosine { t_max, eta_min } => format!("cosine to {eta_min} at update {t_max}"),
        Schedule::WarmupConstant { warmup } => format!("linear warm-up over {warmup} updates, then constant"),
        Schedule::WarmupCosine {
            warmup: 0,
            t_max,
            eta_min,
        } => format!("cosine to {eta_min} at update {t_max}"),
        Schedule::WarmupCosine { warmup, t_max, eta_min } => {
            format!("linear warm-up over {warmup} updates, then cosine to {eta_min} at update {t_max}")
        }
    }
}

fn setup_text(t: &Tabular) -> String {
    let cfg = &t.cfg;
    let fit = &cfg.fit;
    let folds = if cfg.task == Task::Regression {
        "folds by position (row j in fold j mod K)"
    } else {
        "stratified folds (within each class, in file order, the j-th row in fold j mod K)"
    };
    let model = match cfg.model {
        ModelKind::Linear => "linear model (zero init)".to_string(),
        ModelKind::Mlp => format!("MLP {}-{}-ReLU-out (seeded init)", t.data.table.d, cfg.hidden),
    };
    let validation = fit.validation.map_or(String::new(), |v: Validation| {
        format!(
            "; validation: {:.0} % of each training fold, every {} updates{}{}",
            v.fraction * 100.0,
            v.every,
            v.plateau.map_or(String::new(), |p| format!(
                ", reduce-on-plateau ×{} after {} bad",
                p.factor, p.patience
            )),
            v.early_stopping
                .map_or(String::new(), |e| format!(", early stopping after {} bad", e.patience))
        )
    });
    format!(
        "{} rows, {} features ({}), target {} ({}); K = {}, {folds}; features {}; {model}; {} lr {}, {} steps, {}, \
         {}{}{validation}.",
        t.data.table.n,
        t.data.table.d,
        t.data.features.join(", "),
        cfg.target,
        cfg.task.name(),
        cfg.folds,
        if cfg.standardize {
            "z-scored on the training fold"
        } else {
            "as in the file"
        },
        match fit.optimizer {
            OptimizerConfig::Adam {
                decoupled_weight_decay: true,
                ..
            } => "AdamW",
            OptimizerConfig::Adam { .. } => "Adam",
            OptimizerConfig::Sgd { .. } => "SGD",
        },
        fit.lr,
        fit.steps,
        fit.batch_size
            .map_or("full batch".to_string(), |b| format!("mini-batches of {b}")),
        schedule_text(&fit.schedule),
        if fit.accumulate > 1 {
            format!(", gradients accumulated over {} batches", fit.accumulate)
        } else {
            String::new()
        },
    )
}
