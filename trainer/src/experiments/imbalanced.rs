//! Experiment 3 — class imbalance: cross-entropy vs focal loss on the red wine quality data.
//!
//! Tasks on the 1,599 red wines (11 features, quality 3–8): `good` (quality ≥ 7, 13.6 %
//! positive), `poor` (quality ≤ 4, 3.9 %), `multi` (the six quality levels). Folds: within
//! each class of the task, in file order, the j-th row goes to fold j mod 5. Features z-scored
//! on the training fold. Models: linear (zero init) and an MLP 11-32-ReLU-out (seeded init,
//! the same for every loss and fold); full-batch Adam lr 0.01, 1,000 steps, mean loss.
//! Binary losses: `ce` (BCE with logits), `ce_a75` (BCE weighted 0.75 on positives, 0.25 on
//! negatives), `focal_g2` (γ = 2, no α), `focal_g2_a25` (α = 0.25), `focal_g2_a75` (α = 0.75);
//! `multi`: `ce` (cross-entropy) and `focal_g2` (softmax focal, γ = 2). Metrics on the test
//! fold: AP, ROC-AUC (on the logits), and at probability 0.5 recall, precision, F1, balanced
//! accuracy (multi: accuracy and balanced accuracy); mean and sample std over folds.
//!
//! Diagnostic (Lin et al. 2017, section 3): on the training predictions of the CE-trained
//! linear model (each fold, averaged over folds), the share of the total loss carried by easy
//! negatives (y = 0, p_t ≥ 0.9) under CE and under focal (γ = 2) weighting of the same
//! predictions, and the share of the negatives' loss carried by the hardest 10 % of negatives
//! (lowest p_t, ⌈n/10⌉ of them).

use super::{
    adam_constant, mean_curve, pm, select_losses, verdict, Context, Experiment, JobOutcome, RunLabel, Runs, Summary,
    Trained,
};
use crate::data::fold::{fold_tensors, Targets};
use crate::data::{self, folds, Table};
use crate::fit::{fit_resumable, FitConfig, FitError, FitRun};
use crate::metrics::{self, mean_std, Confusion, MeanStd};
use crate::models::linear_or_mlp;
use crate::plot::{self, BarSeries, Series};
use crate::progress::Progress;
use crate::records::{Cell, Csv};
use crate::report::{Figure, Section, Table as TextTable};
use crate::rng;
use candle_core::{Device, Result, Tensor};
use candle_nn::VarMap;
use loss_core::{
    binary_cross_entropy_with_logits, BceWithLogitsLoss, CrossEntropyLoss, Loss, Reduction, SigmoidFocalLoss,
    SoftmaxFocalLoss,
};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// The binary loss variants, in report order.
pub const BINARY_LOSSES: [&str; 5] = ["ce", "ce_a75", "focal_g2", "focal_g2_a25", "focal_g2_a75"];
/// The multi-class loss variants.
pub const MULTI_LOSSES: [&str; 2] = ["ce", "focal_g2"];
/// The tasks.
pub const TASKS: [&str; 3] = ["good", "poor", "multi"];
/// The models.
pub const MODELS: [&str; 2] = ["linear", "mlp"];
/// Binary metric names (summary keys).
pub const BINARY_METRICS: [&str; 6] = ["ap", "roc_auc", "recall", "precision", "f1", "balanced_accuracy"];
/// Multi-class metric names.
pub const MULTI_METRICS: [&str; 2] = ["accuracy", "balanced_accuracy"];

/// Settings of the imbalanced experiment.
#[derive(Debug, Clone, Serialize)]
pub struct ImbalancedConfig {
    /// Loss variants (binary names; `ce` and `focal_g2` also name the multi-class losses).
    pub losses: Vec<String>,
    /// Tasks (among [`TASKS`]).
    pub tasks: Vec<String>,
    /// Number of folds (5).
    pub folds: usize,
    /// Training steps (1,000).
    pub steps: usize,
    /// Adam learning rate (0.01).
    pub lr: f64,
    /// MLP hidden width (32).
    pub mlp_hidden: usize,
    /// Log and evaluate every this many steps (50).
    pub log_every: usize,
}

impl Default for ImbalancedConfig {
    fn default() -> Self {
        Self {
            losses: BINARY_LOSSES.iter().map(|s| s.to_string()).collect(),
            tasks: TASKS.iter().map(|s| s.to_string()).collect(),
            folds: 5,
            steps: 1000,
            lr: 0.01,
            mlp_hidden: 32,
            log_every: 50,
        }
    }
}

impl ImbalancedConfig {
    /// The default settings with `losses` and `tasks` checked (`None`: all).
    ///
    /// # Errors
    /// An unknown loss or task name.
    pub fn with_selection(losses: Option<&[String]>, tasks: Option<&[String]>) -> anyhow::Result<Self> {
        let tasks = match tasks {
            None => TASKS.iter().map(|s| s.to_string()).collect(),
            Some(ts) => {
                for t in ts {
                    anyhow::ensure!(
                        TASKS.contains(&t.as_str()),
                        "unknown task '{t}' for imbalanced (known: {})",
                        TASKS.join(", ")
                    );
                }
                ts.to_vec()
            }
        };
        Ok(Self {
            losses: select_losses("imbalanced", losses, &BINARY_LOSSES)?,
            tasks,
            ..Self::default()
        })
    }
}

/// Binary cross-entropy with logits weighted α on positives and 1 − α on negatives
/// (`binary_cross_entropy_with_logits` with `weight = α·y + (1 − α)(1 − y)`).
#[derive(Debug, Clone, Copy)]
pub struct AlphaBalancedBce {
    /// Weight of the positives (the negatives get 1 − α).
    pub alpha: f64,
}

impl Loss for AlphaBalancedBce {
    fn name(&self) -> &'static str {
        "binary_cross_entropy_with_logits"
    }
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let w = target.affine(2.0 * self.alpha - 1.0, 1.0 - self.alpha)?;
        binary_cross_entropy_with_logits(input, target, Some(&w), None, Reduction::Mean)
    }
}

/// The loss behind a variant name for a binary (`multi = false`) or multi-class task: the
/// library's configs (focal: `gamma = 2`, the mean over the elements).
pub fn loss_for(name: &str, multi: bool) -> Box<dyn Loss> {
    let focal = |alpha: f64| {
        SigmoidFocalLoss::default()
            .with_alpha(alpha)
            .with_reduction(Reduction::Mean)
    };
    match (multi, name) {
        (true, "focal_g2") => Box::new(SoftmaxFocalLoss::default()),
        (true, _) => Box::new(CrossEntropyLoss::default()),
        (false, "ce_a75") => Box::new(AlphaBalancedBce { alpha: 0.75 }),
        (false, "focal_g2") => Box::new(focal(-1.0)),
        (false, "focal_g2_a25") => Box::new(focal(0.25)),
        (false, "focal_g2_a75") => Box::new(focal(0.75)),
        (false, _) => Box::new(BceWithLogitsLoss::default()),
    }
}

/// The class of each wine for a task: good (quality ≥ 7) and poor (quality ≤ 4) give 1 for
/// the positives, multi gives quality − 3 (0..=5).
pub fn labels(quality: &[f64], task: &str) -> Vec<usize> {
    quality
        .iter()
        .map(|&q| match task {
            "good" => usize::from(q >= 7.0),
            "poor" => usize::from(q <= 4.0),
            _ => (q as usize).saturating_sub(3),
        })
        .collect()
}

/// The diagnostic shares of one set of binary predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Diagnostic {
    /// Share of the total CE loss carried by easy negatives (y = 0, p_t ≥ 0.9).
    pub easy_negative_share_ce: f64,
    /// The same share under focal weighting (γ = 2).
    pub easy_negative_share_focal: f64,
    /// Share of the negatives' CE loss carried by the hardest 10 % of negatives.
    pub hardest10_share_ce: f64,
    /// The same share under focal weighting.
    pub hardest10_share_focal: f64,
}

/// The diagnostic of logits `z` against labels `y` (1 = positive): per example
/// CE = −ln p_t and focal = (1 − p_t)² CE, with p_t = σ(z) for positives and 1 − σ(z) for
/// negatives; the hardest 10 % are the ⌈n_neg / 10⌉ negatives of lowest p_t (ties in row order).
///
/// ```
/// use trainer::experiments::imbalanced::diagnostic;
/// // one positive at z = 0 (CE ln 2), one easy negative at z = −3 (p_t = σ(3) ≈ 0.95)
/// let d = diagnostic(&[0.0, -3.0], &[1, 0]);
/// let ce_neg = (1.0f64 + 3f64.exp().recip()).ln(); // softplus(−3)
/// assert!((d.easy_negative_share_ce - ce_neg / (ce_neg + 2f64.ln())).abs() < 1e-12);
/// assert_eq!(d.hardest10_share_ce, 1.0); // one negative: it is the hardest 10 %
/// ```
pub fn diagnostic(z: &[f64], y: &[usize]) -> Diagnostic {
    let softplus = |x: f64| {
        if x > 0.0 {
            x + (-x).exp().ln_1p()
        } else {
            x.exp().ln_1p()
        }
    };
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    // (is negative, p_t, ce, focal)
    let per: Vec<(bool, f64, f64, f64)> = z
        .iter()
        .zip(y)
        .map(|(&z, &y)| {
            let (pt, ce) = if y == 1 {
                (sigmoid(z), softplus(-z))
            } else {
                (sigmoid(-z), softplus(z))
            };
            (y == 0, pt, ce, (1.0 - pt).powi(2) * ce)
        })
        .collect();
    let total_ce: f64 = per.iter().map(|p| p.2).sum();
    let total_focal: f64 = per.iter().map(|p| p.3).sum();
    let easy = per.iter().filter(|p| p.0 && p.1 >= 0.9);
    let easy_ce: f64 = easy.clone().map(|p| p.2).sum();
    let easy_focal: f64 = easy.map(|p| p.3).sum();
    let mut neg: Vec<&(bool, f64, f64, f64)> = per.iter().filter(|p| p.0).collect();
    neg.sort_by(|a, b| a.1.total_cmp(&b.1));
    let k = neg.len().div_ceil(10);
    let neg_ce: f64 = neg.iter().map(|p| p.2).sum();
    let neg_focal: f64 = neg.iter().map(|p| p.3).sum();
    let hard_ce: f64 = neg[..k].iter().map(|p| p.2).sum();
    let hard_focal: f64 = neg[..k].iter().map(|p| p.3).sum();
    let div = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    Diagnostic {
        easy_negative_share_ce: div(easy_ce, total_ce),
        easy_negative_share_focal: div(easy_focal, total_focal),
        hardest10_share_ce: div(hard_ce, neg_ce),
        hardest10_share_focal: div(hard_focal, neg_focal),
    }
}

/// One run: task, model, loss, fold.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    task: &'static str,
    model: usize,
    loss: String,
    fold: usize,
}

impl RunLabel for Job {
    fn label(&self) -> String {
        format!("{}/{}/{}/fold{}", self.task, MODELS[self.model], self.loss, self.fold)
    }
}

impl Job {
    fn multi(&self) -> bool {
        self.task == "multi"
    }
}

/// One run's logged rows, final metrics and diagnostic.
pub struct JobResult {
    /// (step, train loss, metric values in the task's metric order)
    rows: Vec<(usize, f64, Vec<f64>)>,
    last: Vec<f64>,
    diagnostic: Option<Diagnostic>,
}

struct FoldData {
    x_train: Tensor,
    t_train: Tensor,
    y_train: Vec<usize>,
    x_test: Tensor,
    y_test: Vec<usize>,
}

fn fold_data(table: &Table, cfg: &ImbalancedConfig, job: &Job, device: &Device) -> Result<FoldData> {
    let y = labels(&table.y, job.task);
    let assignment = folds::stratified(&y, cfg.folds);
    let targets = if job.multi() {
        Targets::Classes(&y)
    } else {
        Targets::Binary(&y)
    };
    let f = fold_tensors(table, &assignment, job.fold, targets, true, device)?;
    Ok(FoldData {
        x_train: f.x_train,
        t_train: f.t_train,
        y_train: f.train.iter().map(|&r| y[r]).collect(),
        x_test: f.x_test,
        y_test: f.test.iter().map(|&r| y[r]).collect(),
    })
}

/// The task's metrics of `logits` (`[n, 1]` binary or `[n, C]` multi-class) against labels:
/// [`BINARY_METRICS`] or [`MULTI_METRICS`] (AP and ROC-AUC on the logits, the others at
/// σ(z) ≥ 0.5; multi-class: the argmax).
///
/// # Errors
/// A tensor error.
pub fn evaluate(logits: &Tensor, labels: &[usize], multi: bool) -> Result<Vec<f64>> {
    if multi {
        let pred: Vec<usize> = logits
            .argmax(1)?
            .to_vec1::<u32>()?
            .into_iter()
            .map(|c| c as usize)
            .collect();
        Ok(vec![
            metrics::accuracy(&pred, labels),
            metrics::balanced_accuracy(&pred, labels),
        ])
    } else {
        let z = data::values(logits)?;
        let pos: Vec<bool> = labels.iter().map(|&c| c == 1).collect();
        let c = Confusion::at(&z, &pos, 0.0); // σ(z) ≥ 0.5 ⇔ z ≥ 0
        Ok(vec![
            metrics::average_precision(&z, &pos),
            metrics::roc_auc(&z, &pos),
            c.recall(),
            c.precision(),
            c.f1(),
            c.balanced_accuracy(),
        ])
    }
}

fn fit_config(cfg: &ImbalancedConfig, seed: u64) -> FitConfig {
    adam_constant(cfg.steps, cfg.lr, None, cfg.log_every, seed)
}

fn run_job(
    table: &Table,
    cfg: &ImbalancedConfig,
    ctx: &Context,
    job: &Job,
    progress: &Progress,
) -> JobOutcome<JobResult> {
    let label = job.label();
    let wrap = FitError::in_run(&label);
    let d = fold_data(table, cfg, job, &ctx.device).map_err(wrap)?;
    let out = if job.multi() { 6 } else { 1 };
    let varmap = VarMap::new();
    let mut init_rng = rng::stream(ctx.seed, &["imbalanced", job.task, "mlp-init"]);
    let hidden = (job.model != 0).then_some(cfg.mlp_hidden);
    let model = linear_or_mlp(&varmap, hidden, table.d, out, &mut init_rng, &ctx.device).map_err(wrap)?;
    let loss = loss_for(&job.loss, job.multi());
    let mut on_log =
        |_: usize, _: f64| -> Result<Vec<f64>> { evaluate(&model.forward(&d.x_test)?, &d.y_test, job.multi()) };
    let fit_cfg = fit_config(cfg, ctx.seed);
    let run = FitRun::new(model.as_ref(), &varmap, loss.as_ref(), &d.x_train, &d.t_train, &fit_cfg);
    let run = run.with_label(&label).with_progress(progress);
    let (_, rows) = fit_resumable(run, &mut on_log, ctx.checkpoint.as_ref())?;
    let diagnostic = if !job.multi() && job.model == 0 && job.loss == "ce" {
        let z = model.forward(&d.x_train).and_then(|t| data::values(&t)).map_err(wrap)?;
        Some(diagnostic(&z, &d.y_train))
    } else {
        None
    };
    let last = rows.last().map(|r| r.2.clone()).unwrap_or_default();
    Ok(Trained {
        done: JobResult { rows, last, diagnostic },
        varmap,
    })
}

fn task_losses<'a>(cfg: &'a ImbalancedConfig, task: &str) -> Vec<&'a String> {
    cfg.losses
        .iter()
        .filter(|l| task != "multi" || MULTI_LOSSES.contains(&l.as_str()))
        .collect()
}

fn task_metrics(task: &str) -> &'static [&'static str] {
    if task == "multi" {
        &MULTI_METRICS
    } else {
        &BINARY_METRICS
    }
}

/// The imbalanced experiment with its data, ready for [`crate::runner::execute`].
pub struct Imbalanced {
    cfg: ImbalancedConfig,
    table: Table,
}

impl Imbalanced {
    /// Checks the settings and loads the red wine table.
    ///
    /// # Errors
    /// Bad settings (fewer than two folds).
    pub fn new(cfg: ImbalancedConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(cfg.folds >= 2, "imbalanced: folds must be >= 2, got {}", cfg.folds);
        Ok(Self {
            cfg,
            table: data::winequality::load(),
        })
    }

    /// The selected tasks in [`TASKS`] order.
    fn tasks(&self) -> Vec<&'static str> {
        TASKS
            .iter()
            .copied()
            .filter(|t| self.cfg.tasks.iter().any(|c| c == t))
            .collect()
    }
}

impl Experiment for Imbalanced {
    type Job = Job;
    type Done = JobResult;
    const NAME: &'static str = "imbalanced";

    fn jobs(&self) -> Vec<Job> {
        let mut jobs = Vec::new();
        for task in self.tasks() {
            for model in 0..MODELS.len() {
                for loss in task_losses(&self.cfg, task) {
                    for fold in 0..self.cfg.folds {
                        jobs.push(Job {
                            task,
                            model,
                            loss: loss.clone(),
                            fold,
                        });
                    }
                }
            }
        }
        jobs
    }

    fn steps(&self, _: &Job) -> usize {
        self.cfg.steps
    }

    fn run_job(&self, job: &Job, ctx: &Context, progress: &Progress) -> JobOutcome<JobResult> {
        run_job(&self.table, &self.cfg, ctx, job, progress)
    }

    fn metrics_header(&self) -> Vec<&'static str> {
        let mut header = vec!["task", "model", "loss", "fold", "step", "train_loss"];
        header.extend(BINARY_METRICS);
        header.push("accuracy");
        header
    }

    fn metrics_rows(&self, job: &Job, r: &JobResult, csv: &mut Csv) {
        for (step, l, m) in &r.rows {
            let mut cells = vec![
                Cell::Str(job.task),
                Cell::Str(MODELS[job.model]),
                Cell::Str(&job.loss),
                Cell::Int(job.fold),
                Cell::Int(*step),
                Cell::Num(*l),
            ];
            if job.multi() {
                // accuracy last, balanced accuracy in its binary column
                cells.extend([f64::NAN; 5].map(Cell::Num));
                cells.push(Cell::Num(m[1]));
                cells.push(Cell::Num(m[0]));
            } else {
                cells.extend(m.iter().map(|&v| Cell::Num(v)));
                cells.push(Cell::Num(f64::NAN));
            }
            csv.push(&cells);
        }
    }

    fn summarise(&self, runs: &Runs<'_, Self>, ctx: &Context) -> anyhow::Result<Summary> {
        summarise(self, runs, ctx)
    }
}

fn summarise(e: &Imbalanced, runs: &Runs<'_, Imbalanced>, ctx: &Context) -> anyhow::Result<Summary> {
    let (cfg, table, tasks) = (&e.cfg, &e.table, e.tasks());
    let find = |task: &str, model: usize, loss: &str| -> Vec<&JobResult> {
        runs.done_where(|j| j.task == task && j.model == model && j.loss == loss)
    };

    let mut tasks_json = Map::new();
    let mut tables = Vec::new();
    let mut verdicts = Vec::new();
    let mut figures = Vec::new();
    for &task in &tasks {
        let metric_names = task_metrics(task);
        let mut verdict_rows = Vec::new();
        let losses = task_losses(cfg, task);
        let mut head = vec!["model / loss"];
        head.extend(metric_names);
        let mut t = TextTable::new(
            &format!(
                "imbalanced, task {task}: test metrics, mean ± std over {} folds",
                cfg.folds
            ),
            &head,
        );
        let mut per_model = Map::new();
        for (m, model) in MODELS.iter().enumerate() {
            let mut per_loss = Map::new();
            let mut bars = BarSeries::empty_each(metric_names);
            let mut curves = Vec::new();
            for loss in &losses {
                let rs = find(task, m, loss);
                let stats: Vec<MeanStd> = (0..metric_names.len())
                    .map(|k| mean_std(&rs.iter().map(|r| r.last[k]).collect::<Vec<_>>()))
                    .collect();
                let mut row = vec![format!("{model} / {loss}")];
                row.extend(stats.iter().map(|&s| pm(s)));
                t.push(row);
                verdict_rows.push((format!("{model} / {loss}"), stats.clone()));
                let obj: Map<String, Value> = metric_names
                    .iter()
                    .zip(&stats)
                    .map(|(n, s)| (n.to_string(), json!(s)))
                    .collect();
                per_loss.insert(loss.to_string(), Value::Object(obj));
                for (b, s) in bars.iter_mut().zip(&stats) {
                    b.values.push((s.mean, s.std));
                }
                curves.push(Series {
                    name: loss.to_string(),
                    points: mean_curve(
                        &rs.iter().map(|r| r.rows.as_slice()).collect::<Vec<_>>(),
                        |r| r.0,
                        |r| r.1,
                    ),
                });
            }
            per_model.insert(model.to_string(), Value::Object(per_loss));
            let names: Vec<String> = losses.iter().map(|s| s.to_string()).collect();
            figures.push(Figure {
                file: format!("convergence_{task}_{model}.png"),
                caption: format!(
                    "Task {task}, {model} model: training loss vs step (mean over folds; each loss in its own units)"
                ),
                png: plot::line_chart(
                    &format!("imbalanced {task}, {model}: training loss"),
                    "step",
                    "training loss (log)",
                    &curves,
                    true,
                )?,
            });
            figures.push(Figure {
                file: format!("metrics_{task}_{model}.png"),
                caption: format!("Task {task}, {model} model: test metrics after training (mean ± std over folds)"),
                png: plot::bar_chart(
                    &format!("imbalanced {task}, {model}: test metrics"),
                    "value",
                    &names,
                    &bars,
                )?,
            });
        }
        tasks_json.insert(task.to_string(), Value::Object(per_model));
        tables.push(t);
        verdicts.push(format!(
            "Task {task}: {}",
            verdict(metric_names, &verdict_rows, "folds")
        ));
    }

    let mut diag_json = Map::new();
    let mut diag_table = TextTable::new(
        "imbalanced: loss shares on the CE-trained linear model's training predictions (mean over folds)",
        &[
            "task",
            "easy neg. share CE",
            "easy neg. share focal",
            "hardest 10% share CE",
            "hardest 10% share focal",
        ],
    );
    let mut diag_bars = BarSeries::empty_each(&[
        "easy negatives, CE",
        "easy negatives, focal",
        "hardest 10%, CE",
        "hardest 10%, focal",
    ]);
    let mut diag_tasks = Vec::new();
    for &task in tasks.iter().filter(|t| **t != "multi") {
        let ds: Vec<Diagnostic> = find(task, 0, "ce").iter().filter_map(|r| r.diagnostic).collect();
        if ds.is_empty() {
            continue;
        }
        let f = |g: fn(&Diagnostic) -> f64| mean_std(&ds.iter().map(g).collect::<Vec<_>>());
        let vals = [
            f(|d| d.easy_negative_share_ce),
            f(|d| d.easy_negative_share_focal),
            f(|d| d.hardest10_share_ce),
            f(|d| d.hardest10_share_focal),
        ];
        diag_json.insert(
            task.to_string(),
            json!({
                "easy_negative_share_ce": vals[0].mean,
                "easy_negative_share_focal": vals[1].mean,
                "hardest10_share_ce": vals[2].mean,
                "hardest10_share_focal": vals[3].mean,
            }),
        );
        let mut row = vec![task.to_string()];
        row.extend(vals.iter().map(|v| format!("{:.3}", v.mean)));
        diag_table.push(row);
        for (b, v) in diag_bars.iter_mut().zip(vals) {
            b.values.push((v.mean, v.std));
        }
        diag_tasks.push(task.to_string());
    }
    if !diag_tasks.is_empty() {
        tables.push(diag_table);
        figures.push(Figure {
            file: "focal_diagnostic.png".to_string(),
            caption: "Share of the loss carried by easy negatives (of the total) and by the hardest 10 % of negatives \
                      (of the negatives' loss), CE vs focal weighting of the same predictions"
                .to_string(),
            png: plot::bar_chart(
                "imbalanced: where the loss comes from",
                "share",
                &diag_tasks,
                &diag_bars,
            )?,
        });
    }
    let summary = json!({"tasks": tasks_json, "diagnostic": diag_json});
    let mut notes = verdicts;
    notes.extend([
        "AP and ROC-AUC are computed on the logits; recall, precision, F1 and balanced accuracy at σ(z) ≥ 0.5. \
         Precision with no positive prediction counts as 0 (scikit-learn's zero_division)."
            .to_string(),
    ]);
    if diag_tasks.is_empty() {
        notes.push("The diagnostic needs the `ce` loss and a binary task; it was not computed.".to_string());
    }
    notes.extend(runs.failure_notes());
    let section = Section {
        question: "On imbalanced classes, does the focal loss (and α-balancing) find the rare class better than \
                   plain cross-entropy, and does it really move the loss away from the easy negatives?"
            .to_string(),
        setup: format!(
            "red wine quality ({} wines, {} features, linfa-datasets); tasks good (quality ≥ 7), poor (quality ≤ 4), \
             multi (6 levels); stratified folds (within each class, in file order, the j-th row in fold j mod {}); \
             features z-scored on the training fold; linear (zero init) and MLP {}-{}-ReLU-out (seeded init); \
             full-batch Adam lr {}, {} steps, mean loss. ce_a75: BCE weighted 0.75 / 0.25 on positives / \
             negatives; focal: γ = 2 with α none, 0.25 or 0.75; multi: cross-entropy vs softmax focal (γ = 2).",
            table.n, table.d, cfg.folds, table.d, cfg.mlp_hidden, cfg.lr, cfg.steps
        ),
        tables,
        notes,
        figures,
        ..Section::default()
    };
    let entries = json!({
        "data": {"name": "winequality (red)", "source": "linfa-datasets", "rows": table.n, "features": table.d},
        "fit": fit_config(cfg, ctx.seed),
    });
    Ok(Summary::of_training(summary, cfg, entries, section))
}
