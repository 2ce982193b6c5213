//! The training loop: any Candle model, any [`Loss`], the optimizers and schedules of
//! [`crate::optim`], full-batch or seeded mini-batch.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use candle_nn::{Module, VarMap};
//! use trainer::fit::{fit, FitConfig};
//! use trainer::models::{Init, Linear};
//! let dev = Device::Cpu;
//! let varmap = VarMap::new();
//! let mut rng = trainer::rng::stream(0, &["doc"]);
//! let model = Linear::new(&varmap, "linear", 1, 1, Init::Zeros, &mut rng, candle_core::DType::F32, &dev)?;
//! let x = Tensor::new(&[[0.0f32], [1.0], [2.0]], &dev)?;
//! let y = Tensor::new(&[[1.0f32], [3.0], [5.0]], &dev)?; // y = 2x + 1
//! let cfg = FitConfig { steps: 500, lr: 0.1, ..FitConfig::default() };
//! let report = fit(&model, &varmap, &loss_core::MseLoss::default(), &x, &y, &cfg, "doc", &mut |_, _| Ok(()), None)?;
//! assert!(report.final_loss < 1e-3);
//! # Ok::<(), anyhow::Error>(())
//! ```

use crate::optim::{clip_grad_norm, sorted_params, OptimizerConfig, Schedule};
use crate::progress::Progress;
use crate::rng;
use candle_core::{Device, Tensor};
use candle_nn::{Module, VarMap};
use loss_core::Loss;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Settings of one training run.
#[derive(Debug, Clone, Serialize)]
pub struct FitConfig {
    /// Number of updates.
    pub steps: usize,
    /// Base learning rate (scaled by `schedule`).
    pub lr: f64,
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    /// Clip the gradients to this global L2 norm before each update (`None`: no clipping).
    pub clip_norm: Option<f64>,
    /// `None`: full batch; `Some(b)`: mini-batches of `b` rows drawn without replacement from a
    /// seeded permutation, a new permutation each epoch (the last short batch is kept).
    pub batch_size: Option<usize>,
    /// Log the training loss every `log_every` updates (and at 0 and at the end).
    pub log_every: usize,
    /// Seed of the mini-batch order (unused with full batches), reported with a failure.
    pub seed: u64,
}

impl Default for FitConfig {
    /// 100 full-batch Adam steps at lr 0.01, constant schedule, no clipping, logged every 10.
    fn default() -> Self {
        Self {
            steps: 100,
            lr: 0.01,
            optimizer: OptimizerConfig::adam(),
            schedule: Schedule::Constant,
            clip_norm: None,
            batch_size: None,
            log_every: 10,
            seed: 0,
        }
    }
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    /// `(t, loss)` at each logged t: the training loss at the parameters after t updates
    /// (with mini-batches: the loss of the batch of update t + 1; at t = steps, of the full set).
    pub history: Vec<(usize, f64)>,
    /// The training loss on the full training set after the last update.
    pub final_loss: f64,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// The training loss became NaN or infinite.
    #[error("run {run}: non-finite training loss {value} from {loss} at step {step} (seed {seed})")]
    NonFinite {
        /// The run's label.
        run: String,
        /// The loss's name.
        loss: String,
        /// Number of updates applied before the loss was computed.
        step: usize,
        /// The run's seed.
        seed: u64,
        /// The value (NaN or ±inf).
        value: f64,
    },
    /// A tensor or optimizer error.
    #[error("run {run}: {source}")]
    Tensor {
        /// The run's label.
        run: String,
        /// The underlying error.
        source: candle_core::Error,
    },
}

/// Draws the row indices of successive mini-batches from one seeded generator: a fresh
/// permutation of `0..n` each epoch, cut into batches of `batch_size` (the last may be short).
pub struct Batcher {
    n: usize,
    batch_size: usize,
    rng: ChaCha8Rng,
    order: Vec<usize>,
    pos: usize,
}

impl Batcher {
    /// A batcher over `n` rows, seeded by `seed`.
    pub fn new(n: usize, batch_size: usize, seed: u64) -> Self {
        Self {
            n,
            batch_size: batch_size.max(1),
            rng: rng::stream(seed, &["minibatch"]),
            order: Vec::new(),
            pos: 0,
        }
    }

    /// The indices of the next batch.
    pub fn next_batch(&mut self) -> Vec<u32> {
        if self.pos >= self.order.len() {
            self.order = rng::permutation(&mut self.rng, self.n);
            self.pos = 0;
        }
        let end = (self.pos + self.batch_size).min(self.order.len());
        let batch = self.order[self.pos..end].iter().map(|&i| i as u32).collect();
        self.pos = end;
        batch
    }
}

fn rows(t: &Tensor, idx: &[u32], device: &Device) -> candle_core::Result<Tensor> {
    let idx = Tensor::new(idx, device)?;
    t.index_select(&idx, 0)
}

/// Trains `model` (whose variables are those of `varmap`) to minimise `loss(model(x), y)`.
///
/// `x` and `y` hold one row per sample along dimension 0. `on_log(t, loss)` is called at each
/// logged t (0, every `log_every`, and `steps`) with the training loss at that point; the
/// experiments compute their test metrics there. `progress` is advanced by one per update.
///
/// # Errors
/// [`FitError::NonFinite`] as soon as a training loss is NaN or infinite (naming the loss, the
/// step and the seed); [`FitError::Tensor`] for a shape or dtype error from the model or the
/// loss, or an error returned by `on_log`.
#[allow(clippy::too_many_arguments)]
pub fn fit<M: Module + ?Sized>(
    model: &M,
    varmap: &VarMap,
    loss: &dyn Loss,
    x: &Tensor,
    y: &Tensor,
    cfg: &FitConfig,
    run: &str,
    on_log: &mut dyn FnMut(usize, f64) -> candle_core::Result<()>,
    progress: Option<&Progress>,
) -> Result<FitReport, FitError> {
    let wrap = |source| FitError::Tensor {
        run: run.to_string(),
        source,
    };
    let params = sorted_params(varmap);
    let mut opt = cfg.optimizer.build(params.clone()).map_err(wrap)?;
    let n = x.dim(0).map_err(wrap)?;
    let mut batcher = cfg.batch_size.map(|b| Batcher::new(n, b, cfg.seed));
    let log_every = cfg.log_every.max(1);
    let mut history = Vec::new();
    let check = |t: usize, v: f64| -> Result<(), FitError> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(FitError::NonFinite {
                run: run.to_string(),
                loss: loss.name().to_string(),
                step: t,
                seed: cfg.seed,
                value: v,
            })
        }
    };
    for t in 0..cfg.steps {
        let (xb, yb) = match batcher.as_mut() {
            None => (x.clone(), y.clone()),
            Some(b) => {
                let idx = b.next_batch();
                (
                    rows(x, &idx, x.device()).map_err(wrap)?,
                    rows(y, &idx, y.device()).map_err(wrap)?,
                )
            }
        };
        let l = model.forward(&xb).and_then(|p| loss.forward(&p, &yb)).map_err(wrap)?;
        let v = scalar(&l).map_err(wrap)?;
        check(t, v)?;
        if t % log_every == 0 {
            history.push((t, v));
            on_log(t, v).map_err(wrap)?;
        }
        let mut grads = l.backward().map_err(wrap)?;
        if let Some(max_norm) = cfg.clip_norm {
            clip_grad_norm(&mut grads, &params, max_norm).map_err(wrap)?;
        }
        opt.step(&grads, cfg.schedule.lr(cfg.lr, t)).map_err(wrap)?;
        if let Some(p) = progress {
            p.inc(1);
        }
    }
    let l = model.forward(x).and_then(|p| loss.forward(&p, y)).map_err(wrap)?;
    let final_loss = scalar(&l).map_err(wrap)?;
    check(cfg.steps, final_loss)?;
    history.push((cfg.steps, final_loss));
    on_log(cfg.steps, final_loss).map_err(wrap)?;
    Ok(FitReport { history, final_loss })
}

/// A 0-d (or one-element) tensor's value as f64, whatever its float dtype.
///
/// # Errors
/// A tensor with more than one element.
pub fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    t.flatten_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1::<f64>()?
        .first()
        .copied()
        .filter(|_| t.elem_count() == 1)
        .ok_or_else(|| candle_core::Error::Msg(format!("expected a one-element tensor, got {:?}", t.shape())))
}
