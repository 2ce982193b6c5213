//! Command-line options of the commands that train on the user's data (`trainer run
//! tabular`): the training loop's settings ([`TrainingArgs`], turned into a
//! [`FitConfig`]) and the tabular command's own ([`TabularArgs`]).

use crate::data::csv::Task;
use crate::experiments::tabular::{self, LossSpec, ModelKind, Tabular, TabularConfig};
use crate::fit::{EarlyStopping, FitConfig, Plateau, Validation};
use crate::optim::{OptimizerConfig, Schedule};
use anyhow::{bail, ensure};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// A whole number of at least `MIN` (clap's own range check said "0 is not in
/// 1..18446744073709551615").
///
/// # Errors
/// Not a whole number, or below `MIN`.
pub fn count_arg<const MIN: u64>(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n >= MIN => Ok(n),
        _ => Err(format!("expected a whole number of at least {MIN}, got {s:?}")),
    }
}

/// The optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    /// Adam (PyTorch's defaults; L2 weight decay `--weight-decay`).
    Adam,
    /// AdamW (decoupled weight decay `--weight-decay`).
    Adamw,
    /// SGD with `--momentum` (and `--nesterov`).
    Sgd,
}

/// The learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    /// Constant after `--warmup` updates of linear warm-up.
    Constant,
    /// Linear warm-up over `--warmup` updates, then a cosine down to `--eta-min` at the last
    /// step.
    Cosine,
}

/// The training loop's options.
#[derive(Debug, Clone, Args)]
pub struct TrainingArgs {
    /// Training updates per run.
    #[arg(long, default_value_t = 500, value_parser = count_arg::<1>)]
    pub steps: u64,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    /// The optimizer.
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adam)]
    pub optimizer: OptimizerArg,
    /// Weight decay (Adam: L2 penalty; AdamW: decoupled; SGD: L2).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.0)]
    pub momentum: f64,
    /// SGD with Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// Mini-batches of this many rows (default: full batch).
    #[arg(long, value_parser = count_arg::<1>)]
    pub batch_size: Option<u64>,
    /// Average the gradients of this many mini-batches per update (needs --batch-size).
    #[arg(long, default_value_t = 1, value_parser = count_arg::<1>)]
    pub accumulate: u64,
    /// Schedule after the warm-up.
    #[arg(long, value_enum, default_value_t = ScheduleArg::Constant)]
    pub schedule: ScheduleArg,
    /// Updates of linear warm-up from 0 to --lr.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Final learning rate of the cosine schedule.
    #[arg(long, default_value_t = 0.0)]
    pub eta_min: f64,
    /// Clip the gradients to this global L2 norm.
    #[arg(long)]
    pub clip_norm: Option<f64>,
    /// Hold out this share of each training fold (seeded) for a validation loss; needed by
    /// --patience and --plateau-patience (default 0.2 with either).
    #[arg(long)]
    pub validation: Option<f64>,
    /// Evaluate the validation loss every N updates (default: steps / 20).
    #[arg(long, value_parser = count_arg::<1>)]
    pub eval_every: Option<u64>,
    /// Early stopping: stop after N evaluations in a row without improvement.
    #[arg(long)]
    pub patience: Option<u64>,
    /// Early stopping: the improvement needed (absolute).
    #[arg(long, default_value_t = 0.0)]
    pub min_delta: f64,
    /// Reduce-on-plateau: multiply the learning rate by --plateau-factor after more than N
    /// evaluations without a 0.01 % improvement.
    #[arg(long)]
    pub plateau_patience: Option<u64>,
    /// Reduce-on-plateau factor.
    #[arg(long, default_value_t = 0.1)]
    pub plateau_factor: f64,
    /// Reduce-on-plateau: the floor of a reduced learning rate.
    #[arg(long, default_value_t = 0.0)]
    pub min_lr: f64,
}

impl TrainingArgs {
    /// The training loop's settings (seed 0: the run's seed is set by the experiment), logged
    /// every `steps / 20` updates.
    ///
    /// # Errors
    /// A learning rate, weight decay, momentum, factor or share out of range.
    pub fn fit_config(&self) -> anyhow::Result<FitConfig> {
        let steps = self.steps as usize;
        ensure!(
            self.lr.is_finite() && self.lr > 0.0,
            "--lr must be finite and > 0, got {}",
            self.lr
        );
        ensure!(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "--weight-decay must be >= 0, got {}",
            self.weight_decay
        );
        ensure!(
            self.momentum.is_finite() && self.momentum >= 0.0,
            "--momentum must be finite and >= 0, got {}",
            self.momentum
        );
        if self.optimizer != OptimizerArg::Sgd {
            ensure!(
                self.momentum == 0.0 && !self.nesterov,
                "--momentum and --nesterov apply to --optimizer sgd (Adam and AdamW have their own moments)"
            );
        }
        ensure!(
            !self.nesterov || self.momentum > 0.0,
            "--nesterov needs --momentum > 0 (PyTorch's rule)"
        );
        if let Some(c) = self.clip_norm {
            ensure!(c.is_finite() && c > 0.0, "--clip-norm must be finite and > 0, got {c}");
        }
        ensure!(
            self.eta_min.is_finite() && self.eta_min >= 0.0 && self.eta_min <= self.lr,
            "--eta-min must be in [0, --lr {}], got {}",
            self.lr,
            self.eta_min
        );
        ensure!(
            self.eta_min == 0.0 || self.schedule == ScheduleArg::Cosine,
            "--eta-min applies to --schedule cosine"
        );
        ensure!(
            self.warmup < self.steps,
            "--warmup {} must be below --steps {} (the rate would never reach --lr)",
            self.warmup,
            self.steps
        );
        ensure!(
            self.min_delta.is_finite() && self.min_delta >= 0.0,
            "--min-delta must be finite and >= 0, got {}",
            self.min_delta
        );
        ensure!(
            self.min_lr.is_finite() && self.min_lr >= 0.0,
            "--min-lr must be finite and >= 0, got {}",
            self.min_lr
        );
        if let Some(e) = self.eval_every {
            ensure!(
                e <= self.steps,
                "--eval-every {e} is more than --steps {}: the validation loss would never be evaluated",
                self.steps
            );
        }
        let optimizer = match self.optimizer {
            OptimizerArg::Adam => OptimizerConfig::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: self.weight_decay,
                decoupled_weight_decay: false,
            },
            OptimizerArg::Adamw => OptimizerConfig::adamw(self.weight_decay),
            OptimizerArg::Sgd => OptimizerConfig::Sgd {
                momentum: self.momentum,
                dampening: 0.0,
                nesterov: self.nesterov,
                weight_decay: self.weight_decay,
            },
        };
        let warmup = self.warmup as usize;
        let schedule = match (self.schedule, warmup) {
            (ScheduleArg::Constant, 0) => Schedule::Constant,
            (ScheduleArg::Constant, w) => Schedule::WarmupConstant { warmup: w },
            (ScheduleArg::Cosine, w) => Schedule::WarmupCosine {
                warmup: w,
                t_max: steps,
                eta_min: self.eta_min,
            },
        };
        let log_every = (steps / 20).max(1);
        let wants = self.patience.is_some() || self.plateau_patience.is_some();
        let validation = match (self.validation, wants) {
            (None, false) => None,
            (fraction, _) => {
                let fraction = fraction.unwrap_or(0.2);
                ensure!(
                    fraction > 0.0 && fraction < 1.0,
                    "--validation must be a share in (0, 1), got {fraction}"
                );
                ensure!(
                    self.plateau_factor > 0.0 && self.plateau_factor < 1.0,
                    "--plateau-factor must be in (0, 1), got {}",
                    self.plateau_factor
                );
                Some(Validation {
                    fraction,
                    every: self.eval_every.map_or(log_every, |e| e as usize),
                    plateau: self.plateau_patience.map(|p| Plateau {
                        factor: self.plateau_factor,
                        patience: p as usize,
                        min_lr: self.min_lr,
                        ..Plateau::default()
                    }),
                    early_stopping: self.patience.map(|p| EarlyStopping {
                        patience: p as usize,
                        min_delta: self.min_delta,
                    }),
                })
            }
        };
        if self.accumulate > 1 && self.batch_size.is_none() {
            bail!("--accumulate {} needs --batch-size", self.accumulate);
        }
        Ok(FitConfig {
            steps,
            lr: self.lr,
            optimizer,
            schedule,
            clip_norm: self.clip_norm,
            batch_size: self.batch_size.map(|b| b as usize),
            log_every,
            seed: 0,
            accumulate: self.accumulate as usize,
            validation,
        })
    }
}

/// The task argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TaskArg {
    /// A numeric target.
    Regression,
    /// A two-valued target.
    Binary,
    /// A column of labels.
    Multiclass,
}

/// The model argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelArg {
    /// Linear, zero init.
    Linear,
    /// One hidden ReLU layer of --hidden units.
    Mlp,
}

/// `trainer run tabular`'s own options.
#[derive(Debug, Clone, Args)]
pub struct TabularArgs {
    /// CSV file with a header row.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// The target column.
    #[arg(long, value_name = "COL")]
    pub target: String,
    /// Feature columns, comma-separated (default: every other numeric column).
    #[arg(long, value_delimiter = ',')]
    pub features: Option<Vec<String>>,
    /// The kind of target.
    #[arg(long, value_enum)]
    pub task: TaskArg,
    /// Loss variants, comma-separated: the library's names for the task, each optionally with
    /// parameters as name:key=value:key=value (default: every loss of the task).
    /// regression: mse_loss, l1_loss, smooth_l1_loss, huber_loss, log_cosh_loss; binary:
    /// binary_cross_entropy_with_logits, alpha_balanced_bce, sigmoid_focal_loss; multiclass:
    /// cross_entropy, softmax_focal_loss.
    #[arg(long, value_delimiter = ',')]
    pub losses: Option<Vec<String>>,
    /// A loss parameter, loss.key=value (repeatable), e.g. huber_loss.delta=2.
    #[arg(long = "param", value_name = "LOSS.KEY=VALUE")]
    pub params: Vec<String>,
    /// The model.
    #[arg(long, value_enum, default_value_t = ModelArg::Linear)]
    pub model: ModelArg,
    /// Hidden width of the MLP (only with --model mlp) [default: 32].
    #[arg(long, value_parser = count_arg::<1>)]
    pub hidden: Option<u64>,
    /// Number of folds (stratified for classification).
    #[arg(long, default_value_t = 5, value_parser = count_arg::<2>)]
    pub folds: u64,
    /// Z-score the features with the training fold's statistics.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub standardize: bool,
    /// Drop the rows with a missing cell (empty, NA, NaN) instead of stopping at the first.
    #[arg(long)]
    pub drop_missing: bool,
    /// The training loop's options.
    #[command(flatten)]
    pub training: TrainingArgs,
}

impl TabularArgs {
    /// Reads the file and checks every option ([`Tabular::prepare`]).
    ///
    /// # Errors
    /// A one-line message: a bad option, loss or parameter, or a bad file naming its row and
    /// column.
    pub fn prepare(&self) -> anyhow::Result<Tabular> {
        let task = match self.task {
            TaskArg::Regression => Task::Regression,
            TaskArg::Binary => Task::Binary,
            TaskArg::Multiclass => Task::Multiclass,
        };
        let extra = self
            .params
            .iter()
            .map(|p| tabular::parse_param(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (loss, _, _) in &extra {
            ensure!(
                tabular::task_losses(task).contains(&loss.as_str()),
                "--param {loss}.…: no loss {loss} for --task {} (known: {})",
                task.name(),
                tabular::task_losses(task).join(", ")
            );
        }
        let names: Vec<String> = match &self.losses {
            Some(l) => l.clone(),
            None => tabular::task_losses(task).iter().map(|s| s.to_string()).collect(),
        };
        for (loss, k, _) in &extra {
            ensure!(
                names
                    .iter()
                    .any(|n| n.split(':').next().map(str::trim) == Some(loss.as_str())),
                "--param {loss}.{k}: {loss} is not among --losses {}",
                names.join(",")
            );
        }
        let mut losses = Vec::new();
        for n in &names {
            let spec = LossSpec::parse(n, task, &extra)?;
            ensure!(
                !losses.iter().any(|l: &LossSpec| l.label == spec.label),
                "--losses names {} twice",
                spec.label
            );
            losses.push(spec);
        }
        ensure!(
            self.hidden.is_none() || self.model == ModelArg::Mlp,
            "--hidden applies to --model mlp (the linear model has no hidden layer)"
        );
        let cfg = TabularConfig {
            data: self.data.clone(),
            target: self.target.clone(),
            task,
            losses,
            model: match self.model {
                ModelArg::Linear => ModelKind::Linear,
                ModelArg::Mlp => ModelKind::Mlp,
            },
            hidden: self.hidden.map_or(32, |h| h as usize),
            folds: self.folds as usize,
            standardize: self.standardize,
            drop_missing: self.drop_missing,
            fit: self.training.fit_config()?,
        };
        Tabular::prepare(cfg, self.features.as_deref())
    }
}
