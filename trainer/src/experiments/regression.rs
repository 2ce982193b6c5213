//! Experiment 1 — regression with outliers: L1 vs L2 vs Smooth L1 vs Huber.
//!
//! Data: the diabetes table of linfa-datasets (10 features). Row j goes to fold j mod 5; the
//! features are z-scored with the training fold's mean and population standard deviation;
//! targets are modelled as (y − 150) / 75. Outliers: the training rows at positions
//! i ≡ 0 (mod 10) of the training fold (in row order) get y += shift; test folds stay clean.
//! Losses: `mse`, `l1`, `smooth_l1` (β = 1), `huber` (δ = 1) on the corrupted targets, and
//! `mse_clean` (mse without outliers, i.e. at shift 0) as the yardstick. Models: linear (zero
//! init, full-batch Adam lr 0.01, 3,000 steps) and an MLP 10-32-ReLU-1 (seeded init shared by
//! every loss and fold, full-batch Adam lr 0.01, 200 steps). Metrics on the test fold in
//! original units: MAE, RMSE and bias (mean prediction − y), mean and sample std over the
//! folds; and a sweep of the linear model over the shifts 0, 100, 200, 400, 800.

use super::{
    adam_constant, mean_curve, metric, pm, push_logged, select_losses, Context, Experiment, JobOutcome, RunLabel, Runs,
    Summary, Trained,
};
use crate::data::{self, folds, Table, ZScore};
use crate::fit::{fit_resumable, FitConfig, FitError, FitRun, LogRow};
use crate::metrics::{self, mean_std, MeanStd};
use crate::models::linear_or_mlp;
use crate::plot::{self, BarSeries, Series};
use crate::progress::Progress;
use crate::records::{Cell, Csv};
use crate::report::{Figure, Section, Table as TextTable};
use crate::rng;
use candle_core::{DType, Device, Tensor};
use candle_nn::{Module, VarMap};
use loss_core::{HuberLoss, L1Loss, Loss, MseLoss, SmoothL1Loss};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// The loss variants, in report order.
pub const LOSSES: [&str; 5] = ["mse", "l1", "smooth_l1", "huber", "mse_clean"];

/// The models.
pub const MODELS: [&str; 2] = ["linear", "mlp"];

/// Settings of the regression experiment.
#[derive(Debug, Clone, Serialize)]
pub struct RegressionConfig {
    /// Loss variants (among [`LOSSES`]).
    pub losses: Vec<String>,
    /// Outlier shift added to y of the corrupted training rows (default 400).
    pub shift: f64,
    /// Shifts of the linear-model sweep (default 0, 100, 200, 400, 800).
    pub sweep: Vec<f64>,
    /// Number of folds (5).
    pub folds: usize,
    /// Every `outlier_every`-th training row (positions 0, 10, 20, ...) is an outlier (10).
    pub outlier_every: usize,
    /// Targets are modelled as (y − `target_center`) / `target_scale` (150, 75).
    pub target_center: f64,
    /// See `target_center`.
    pub target_scale: f64,
    /// Steps of the linear model (3,000).
    pub linear_steps: usize,
    /// Steps of the MLP (200).
    pub mlp_steps: usize,
    /// Hidden width of the MLP (32).
    pub mlp_hidden: usize,
    /// Adam learning rate (0.01).
    pub lr: f64,
    /// Log (and evaluate) every this many steps (50 for the linear model, a tenth of that for
    /// the MLP... at least 1).
    pub log_every: usize,
}

impl Default for RegressionConfig {
    fn default() -> Self {
        Self {
            losses: LOSSES.iter().map(|s| s.to_string()).collect(),
            shift: 400.0,
            sweep: vec![0.0, 100.0, 200.0, 400.0, 800.0],
            folds: 5,
            outlier_every: 10,
            target_center: 150.0,
            target_scale: 75.0,
            linear_steps: 3000,
            mlp_steps: 200,
            mlp_hidden: 32,
            lr: 0.01,
            log_every: 50,
        }
    }
}

impl RegressionConfig {
    /// The default settings with `losses` checked against [`LOSSES`] (`None`: all).
    ///
    /// # Errors
    /// An unknown loss name.
    pub fn with_losses(losses: Option<&[String]>) -> anyhow::Result<Self> {
        Ok(Self {
            losses: select_losses("regression", losses, &LOSSES)?,
            ..Self::default()
        })
    }
}

/// The loss function behind a variant name (`mse_clean` trains `mse` on clean targets).
pub fn loss_for(base: &str) -> Box<dyn Loss> {
    match base {
        "l1" => Box::new(L1Loss::default()),
        "smooth_l1" => Box::new(SmoothL1Loss::default().with_beta(1.0)),
        "huber" => Box::new(HuberLoss::default().with_delta(1.0)),
        _ => Box::new(MseLoss::default()),
    }
}

/// The training loss and the shift actually trained for a variant at `shift`.
fn resolve(name: &str, shift: f64) -> (&'static str, f64) {
    match name {
        "mse_clean" => ("mse", 0.0),
        "mse" => ("mse", shift),
        "l1" => ("l1", shift),
        "smooth_l1" => ("smooth_l1", shift),
        _ => ("huber", shift),
    }
}

/// The training targets of a fold: y of the training rows with `shift` added at the outlier
/// positions.
pub fn corrupted_targets(y_train: &[f64], shift: f64, every: usize) -> Vec<f64> {
    let mut y = y_train.to_vec();
    for i in folds::outlier_positions(y.len(), every) {
        y[i] += shift;
    }
    y
}

/// One run: model, training loss, shift trained, fold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Job {
    model: usize,
    base: &'static str,
    shift: f64,
    fold: usize,
}

impl RunLabel for Job {
    fn label(&self) -> String {
        format!(
            "{}/{}/shift{}/fold{}",
            MODELS[self.model], self.base, self.shift, self.fold
        )
    }
}

/// One run's logged rows and final metrics.
pub struct JobResult {
    /// (step, train loss, [mae, rmse, bias])
    rows: Vec<LogRow>,
    /// (mae, rmse, bias) after the last step.
    last: (f64, f64, f64),
}

struct FoldData {
    x_train: Tensor,
    t_train: Tensor,
    x_test: Tensor,
    y_test: Vec<f64>,
}

fn fold_data(table: &Table, cfg: &RegressionConfig, job: &Job, device: &Device) -> candle_core::Result<FoldData> {
    let assignment = folds::by_position(table.n, cfg.folds);
    let (train, test) = folds::split(&assignment, job.fold);
    let z = ZScore::fit(&table.rows_x(&train), table.d);
    let y = corrupted_targets(&table.rows_y(&train), job.shift, cfg.outlier_every);
    let t: Vec<f64> = y.iter().map(|v| (v - cfg.target_center) / cfg.target_scale).collect();
    Ok(FoldData {
        x_train: data::tensor(
            z.apply(&table.rows_x(&train)),
            &[train.len(), table.d],
            DType::F32,
            device,
        )?,
        t_train: data::tensor(t, &[train.len(), 1], DType::F32, device)?,
        x_test: data::tensor(
            z.apply(&table.rows_x(&test)),
            &[test.len(), table.d],
            DType::F32,
            device,
        )?,
        y_test: table.rows_y(&test),
    })
}

fn run_job(
    table: &Table,
    cfg: &RegressionConfig,
    ctx: &Context,
    job: &Job,
    progress: &Progress,
) -> JobOutcome<JobResult> {
    let label = job.label();
    let wrap = FitError::in_run(&label);
    let d = fold_data(table, cfg, job, &ctx.device).map_err(wrap)?;
    let varmap = VarMap::new();
    let mut init_rng = rng::stream(ctx.seed, &["regression", "mlp-init"]);
    let hidden = (job.model != 0).then_some(cfg.mlp_hidden);
    let model = linear_or_mlp(&varmap, hidden, table.d, 1, &mut init_rng, &ctx.device).map_err(wrap)?;
    let steps = if job.model == 0 {
        cfg.linear_steps
    } else {
        cfg.mlp_steps
    };
    let fit_cfg = fit_config(cfg, job.model, ctx.seed);
    let loss = loss_for(job.base);
    let eval = |m: &dyn Module| -> candle_core::Result<Vec<f64>> {
        let p = data::values(&m.forward(&d.x_test)?)?;
        let pred: Vec<f64> = p.iter().map(|v| v * cfg.target_scale + cfg.target_center).collect();
        Ok(vec![
            metrics::mae(&pred, &d.y_test),
            metrics::rmse(&pred, &d.y_test),
            metrics::bias(&pred, &d.y_test),
        ])
    };
    let mut on_log = |_: usize, _: f64| eval(model.as_ref());
    debug_assert_eq!(fit_cfg.steps, steps);
    let run = FitRun::new(model.as_ref(), &varmap, loss.as_ref(), &d.x_train, &d.t_train, &fit_cfg);
    let run = run.with_label(&label).with_progress(progress);
    let (_, rows) = fit_resumable(run, &mut on_log, ctx.checkpoint.as_ref())?;
    let last = rows
        .last()
        .map(|r| (metric(r, 0), metric(r, 1), metric(r, 2)))
        .unwrap_or((f64::NAN, f64::NAN, f64::NAN));
    Ok(Trained {
        done: JobResult { rows, last },
        varmap,
    })
}

/// The training settings of model 0 (linear) or 1 (MLP).
fn fit_config(cfg: &RegressionConfig, model: usize, seed: u64) -> FitConfig {
    let steps = if model == 0 { cfg.linear_steps } else { cfg.mlp_steps };
    let log_every = if model == 0 {
        cfg.log_every
    } else {
        (cfg.log_every / 5).max(1)
    };
    adam_constant(steps, cfg.lr, None, log_every, seed)
}

/// The regression experiment with its data, ready for [`crate::runner::execute`].
pub struct Regression {
    cfg: RegressionConfig,
    table: Table,
}

impl Regression {
    /// Checks the settings and loads the diabetes table.
    ///
    /// # Errors
    /// Bad settings (fewer than two folds, an unknown loss).
    pub fn new(cfg: RegressionConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(cfg.folds >= 2, "regression: folds must be >= 2, got {}", cfg.folds);
        for name in &cfg.losses {
            anyhow::ensure!(LOSSES.contains(&name.as_str()), "regression: unknown loss '{name}'");
        }
        Ok(Self {
            cfg,
            table: data::diabetes::load(),
        })
    }
}

impl Experiment for Regression {
    type Job = Job;
    type Done = JobResult;
    const NAME: &'static str = "regression";

    /// The unique runs: (model, training loss, shift actually trained, fold).
    fn jobs(&self) -> Vec<Job> {
        let cfg = &self.cfg;
        let mut jobs: Vec<Job> = Vec::new();
        let mut add = |model: usize, name: &str, shift: f64| {
            let (base, shift) = resolve(name, shift);
            for fold in 0..cfg.folds {
                let job = Job {
                    model,
                    base,
                    shift,
                    fold,
                };
                if !jobs.contains(&job) {
                    jobs.push(job);
                }
            }
        };
        for model in 0..MODELS.len() {
            for name in &cfg.losses {
                add(model, name, cfg.shift);
            }
        }
        for &s in &cfg.sweep {
            for name in &cfg.losses {
                add(0, name, s);
            }
        }
        jobs
    }

    fn steps(&self, job: &Job) -> usize {
        if job.model == 0 {
            self.cfg.linear_steps
        } else {
            self.cfg.mlp_steps
        }
    }

    fn run_job(&self, job: &Job, ctx: &Context, progress: &Progress) -> JobOutcome<JobResult> {
        run_job(&self.table, &self.cfg, ctx, job, progress)
    }

    fn metrics_header(&self) -> Vec<&'static str> {
        vec![
            "model",
            "loss",
            "shift",
            "fold",
            "step",
            "train_loss",
            "test_mae",
            "test_rmse",
            "test_bias",
        ]
    }

    fn metrics_rows(&self, job: &Job, r: &JobResult, csv: &mut Csv) {
        let shift = format!("{}", job.shift);
        let key = [
            Cell::Str(MODELS[job.model]),
            Cell::Str(job.base),
            Cell::Str(&shift),
            Cell::Int(job.fold),
        ];
        push_logged(csv, &key, &r.rows);
    }

    fn summarise(&self, runs: &Runs<'_, Self>, ctx: &Context) -> anyhow::Result<Summary> {
        summarise(&self.cfg, &self.table, runs, ctx)
    }
}

fn summarise(
    cfg: &RegressionConfig,
    table: &Table,
    runs: &Runs<'_, Regression>,
    ctx: &Context,
) -> anyhow::Result<Summary> {
    let jobs = runs.jobs;
    let find = |model: usize, name: &str, shift: f64| -> Vec<&JobResult> {
        let (base, shift) = resolve(name, shift);
        runs.done_where(|j| j.model == model && j.base == base && j.shift == shift)
    };
    let stat = |rs: &[&JobResult], f: fn(&JobResult) -> f64| mean_std(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
    let mae_of = |r: &JobResult| r.last.0;
    let rmse_of = |r: &JobResult| r.last.1;
    let bias_of = |r: &JobResult| r.last.2;

    // summary
    let mut models = Map::new();
    let mut table_main = TextTable::new(
        &format!(
            "regression: test metrics in original units, mean ± std over {} folds (outlier shift {})",
            cfg.folds, cfg.shift
        ),
        &["model / loss", "MAE", "RMSE", "bias"],
    );
    let mut final_stats: Vec<(usize, String, MeanStd, MeanStd, MeanStd)> = Vec::new();
    for (m, model) in MODELS.iter().enumerate() {
        let mut per_loss = Map::new();
        for name in &cfg.losses {
            let rs = find(m, name, cfg.shift);
            let (mae, rmse, bias) = (stat(&rs, mae_of), stat(&rs, rmse_of), stat(&rs, bias_of));
            per_loss.insert(name.clone(), json!({"mae": mae, "rmse": rmse, "bias": bias}));
            table_main.push(vec![format!("{model} / {name}"), pm(mae), pm(rmse), pm(bias)]);
            final_stats.push((m, name.clone(), mae, rmse, bias));
        }
        models.insert(model.to_string(), Value::Object(per_loss));
    }
    let mut sweep = Map::new();
    let mut header = vec!["loss".to_string()];
    header.extend(cfg.sweep.iter().map(|s| format!("shift {s}")));
    let mut table_sweep = TextTable {
        caption: "regression: linear model, test MAE (bias) by outlier shift, mean over folds".to_string(),
        header,
        rows: Vec::new(),
    };
    let mut sweep_series_mae: Vec<Series> = Vec::new();
    let mut sweep_series_bias: Vec<Series> = Vec::new();
    for name in &cfg.losses {
        let mut row = vec![name.clone()];
        let mut pts_mae = Vec::new();
        let mut pts_bias = Vec::new();
        for &s in &cfg.sweep {
            let rs = find(0, name, s);
            let (mae, bias) = (stat(&rs, mae_of).mean, stat(&rs, bias_of).mean);
            row.push(format!("{mae:.2} ({bias:+.2})"));
            pts_mae.push((s, mae));
            pts_bias.push((s, bias));
        }
        table_sweep.push(row);
        sweep_series_mae.push(Series {
            name: name.clone(),
            points: pts_mae,
        });
        sweep_series_bias.push(Series {
            name: name.clone(),
            points: pts_bias,
        });
    }
    for &s in &cfg.sweep {
        let mut per_loss = Map::new();
        for name in &cfg.losses {
            let rs = find(0, name, s);
            per_loss.insert(
                name.clone(),
                json!({"mae": stat(&rs, mae_of).mean, "bias": stat(&rs, bias_of).mean}),
            );
        }
        sweep.insert(format!("{s}"), Value::Object(per_loss));
    }
    let summary = json!({"models": models, "shift_sweep": sweep});

    // figures
    let mut figures = Vec::new();
    for (m, model) in MODELS.iter().enumerate() {
        let curves = |col: fn(&LogRow) -> f64| -> Vec<Series> {
            cfg.losses
                .iter()
                .map(|name| Series {
                    name: name.clone(),
                    points: mean_curve(
                        &find(m, name, cfg.shift)
                            .iter()
                            .map(|r| r.rows.as_slice())
                            .collect::<Vec<_>>(),
                        |r| r.0,
                        col,
                    ),
                })
                .collect()
        };
        figures.push(Figure {
            file: format!("convergence_{model}.png"),
            caption: format!(
                "{model} model: training loss (each in its own units, on the standardised targets) vs step, mean over folds"
            ),
            png: plot::line_chart(
                &format!("regression, {model}: training loss"),
                "step",
                "training loss (log)",
                &curves(|r| r.1),
                true,
            )?,
        });
        figures.push(Figure {
            file: format!("test_mae_{model}.png"),
            caption: format!("{model} model: test MAE (original units) vs step, mean over folds"),
            png: plot::line_chart(
                &format!("regression, {model}: test MAE"),
                "step",
                "test MAE",
                &curves(|r| metric(r, 0)),
                false,
            )?,
        });
    }
    let mut bars = Vec::new();
    for (m, model) in MODELS.iter().enumerate() {
        for (metric, pick) in [("MAE", 0usize), ("RMSE", 1)] {
            bars.push(BarSeries {
                name: format!("{model} {metric}"),
                values: final_stats
                    .iter()
                    .filter(|s| s.0 == m)
                    .map(|s| {
                        let v = if pick == 0 { s.2 } else { s.3 };
                        (v.mean, v.std)
                    })
                    .collect(),
            });
        }
    }
    figures.push(Figure {
        file: "final_metrics.png".to_string(),
        caption: format!(
            "Test MAE and RMSE after training (mean ± std over folds, shift {})",
            cfg.shift
        ),
        png: plot::bar_chart("regression: final test metrics", "original units", &cfg.losses, &bars)?,
    });
    figures.push(Figure {
        file: "shift_sweep_mae.png".to_string(),
        caption: "Linear model: test MAE vs outlier shift, mean over folds".to_string(),
        png: plot::line_chart(
            "regression: MAE vs outlier shift",
            "shift",
            "test MAE",
            &sweep_series_mae,
            false,
        )?,
    });
    figures.push(Figure {
        file: "shift_sweep_bias.png".to_string(),
        caption: "Linear model: test bias (mean prediction − y) vs outlier shift, mean over folds".to_string(),
        png: plot::line_chart(
            "regression: bias vs outlier shift",
            "shift",
            "test bias",
            &sweep_series_bias,
            false,
        )?,
    });

    let verdict_rows: Vec<(String, Vec<MeanStd>)> = final_stats
        .iter()
        .map(|(m, name, mae, rmse, bias)| (format!("{} / {name}", MODELS[*m]), vec![*mae, *rmse, *bias]))
        .collect();
    let mut notes = vec![super::verdict(&["MAE", "RMSE", "bias"], &verdict_rows, "folds")];
    notes.push(format!(
        "{} training runs (mse_clean is mse at shift 0 and is shared with the sweep; the sweep reuses the \
         main runs at equal shifts). metrics.csv labels each run by its training loss and shift.",
        jobs.len()
    ));
    if cfg.losses.iter().any(|l| l == "huber") && cfg.losses.iter().any(|l| l == "smooth_l1") {
        notes.push(
            "huber (δ = 1) is exactly smooth_l1 (β = 1) times δ, and Adam is invariant to a constant factor on the \
             loss, so their rows coincide."
                .to_string(),
        );
    }
    notes.extend(runs.failure_notes());
    let section = Section {
        question: "With outliers in the training targets, how far do L2, L1, Smooth L1 and Huber pull a \
                   regression away from the clean fit, and how does that grow with the size of the outliers?"
            .to_string(),
        setup: format!(
            "diabetes ({} rows, {} features, linfa-datasets); row j in fold j mod {}; features z-scored on the \
             training fold; targets (y − {}) / {}; every {}th training row (positions 0, {}, ...) gets y += {}; \
             test folds clean. Linear model: zero init, full-batch Adam lr {}, {} steps. MLP {}-{}-ReLU-1: \
             seeded init shared by all losses and folds, full-batch Adam lr {}, {} steps. smooth_l1 β = 1, \
             huber δ = 1 (in standardised target units, i.e. {} in y).",
            table.n,
            table.d,
            cfg.folds,
            cfg.target_center,
            cfg.target_scale,
            cfg.outlier_every,
            cfg.outlier_every,
            cfg.shift,
            cfg.lr,
            cfg.linear_steps,
            table.d,
            cfg.mlp_hidden,
            cfg.lr,
            cfg.mlp_steps,
            cfg.target_scale
        ),
        tables: vec![table_main, table_sweep],
        notes,
        figures,
        ..Section::default()
    };
    let entries = json!({
        "data": {"name": "diabetes", "source": "linfa-datasets", "rows": table.n, "features": table.d},
        "fit": {"linear": fit_config(cfg, 0, ctx.seed), "mlp": fit_config(cfg, 1, ctx.seed)},
    });
    Ok(Summary::of_training(summary, cfg, entries, section))
}
