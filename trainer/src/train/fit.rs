//! The training loop: any Candle model, any [`Loss`], the optimizers and schedules of
//! [`crate::optim`], full-batch or seeded mini-batch.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_nn::{Module, VarMap};
//! use trainer::fit::{fit, FitConfig, FitRun};
//! use trainer::models::{Init, Linear};
//! let dev = Device::Cpu;
//! let varmap = VarMap::new();
//! let mut rng = trainer::rng::stream(0, &["doc"]);
//! let model = Linear::new(&varmap, "linear", 1, 1, Init::Zeros, &mut rng, candle_core::DType::F32, &dev)?;
//! let x = Tensor::new(&[[0.0f32], [1.0], [2.0]], &dev)?;
//! let y = Tensor::new(&[[1.0f32], [3.0], [5.0]], &dev)?; // y = 2x + 1
//! let cfg = FitConfig { steps: 500, lr: 0.1, ..FitConfig::default() };
//! let loss = loss_core::MseLoss::default();
//! let report = fit(FitRun::new(&model, &varmap, &loss, &x, &y, &cfg), &mut |_, _| Ok(()))?;
//! assert!(report.final_loss < 1e-3);
//! # Ok::<(), anyhow::Error>(())
//! ```

mod validation;

pub use validation::{split_rows, EarlyStopping, Plateau, Validation, ValidationState};

use crate::checkpoint::{self, BatcherState, Plan, State};
use crate::optim::{clip_grad_norm, sorted_params, Optimizer, OptimizerConfig, Schedule};
use crate::rng;
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::{Module, VarMap};
use loss_core::Loss;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use validation::rows_of;

/// Something that counts training updates as they happen (a progress bar, a counter):
/// [`fit`] calls [`add_steps`](Self::add_steps) once per update, and once with the number of
/// updates a resumed run skips. It is shared between the runs of one experiment, which may train
/// on several threads at once.
pub trait StepCounter: Sync {
    /// `n` more updates are done.
    fn add_steps(&self, n: u64);
}

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
    /// Seed of the mini-batch order (unused with full batches) and of the validation split,
    /// reported with a failure.
    pub seed: u64,
    /// Gradient accumulation: each update averages the gradients of this many successive
    /// mini-batches (the loss of each scaled by 1/N); 1 (the default): one batch per update.
    /// Needs `batch_size`.
    #[serde(skip_serializing_if = "is_one")]
    pub accumulate: usize,
    /// A validation split carved from the training rows, with reduce-on-plateau and early
    /// stopping on its loss (`None`: train on every row, no validation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
}

fn is_one(n: &usize) -> bool {
    *n == 1
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
            accumulate: 1,
            validation: None,
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
    /// `(t, validation loss)` at each evaluation (empty without validation).
    pub validation: Vec<(usize, f64)>,
    /// Updates applied when early stopping stopped the run (`None`: it ran every step).
    pub stopped_at: Option<usize>,
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

impl FitError {
    /// Wraps a tensor error of run `run` (for `map_err`).
    pub fn in_run(run: &str) -> impl Fn(candle_core::Error) -> FitError + Copy + '_ {
        move |source| FitError::Tensor {
            run: run.to_string(),
            source,
        }
    }
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

    /// The batcher's state, for a checkpoint.
    pub fn state(&self) -> BatcherState {
        BatcherState {
            word_pos: self.rng.get_word_pos().to_string(),
            order: self.order.clone(),
            pos: self.pos,
        }
    }

    /// Restores a state written by [`Batcher::state`] of a batcher with the same `n`,
    /// `batch_size` and seed.
    ///
    /// # Errors
    /// A permutation of another length, a position past its end, a malformed word position.
    pub fn restore(&mut self, state: &BatcherState) -> candle_core::Result<()> {
        let word_pos: u128 = state
            .word_pos
            .parse()
            .map_err(|_| candle_core::Error::Msg(format!("batcher state: bad word position {:?}", state.word_pos)))?;
        if !(state.order.is_empty() || state.order.len() == self.n) || state.pos > state.order.len() {
            return Err(candle_core::Error::Msg(format!(
                "batcher state: permutation of {} rows at {}, expected {} rows",
                state.order.len(),
                state.pos,
                self.n
            )));
        }
        self.rng.set_word_pos(word_pos);
        self.order = state.order.clone();
        self.pos = state.pos;
        Ok(())
    }
}

/// One training run: the model (whose variables are those of `varmap`), the loss it minimises,
/// the rows `x` and targets `y` (one sample per row along dimension 0), the settings, the run's
/// label (it names the run in errors and its checkpoint file) and what counts its updates.
///
/// Built by [`FitRun::new`] and the `with_*` setters, trained by [`fit`] or [`fit_resumable`].
pub struct FitRun<'a, M: Module + ?Sized> {
    // what is trained, on which rows, how; then how the run is named and counted
    model: &'a M,
    varmap: &'a VarMap,
    x: &'a Tensor,
    y: &'a Tensor,
    loss: &'a dyn Loss,
    cfg: &'a FitConfig,
    label: &'a str,
    progress: Option<&'a dyn StepCounter>,
}

impl<'a, M: Module + ?Sized> FitRun<'a, M> {
    /// A run of `model` (variables in `varmap`) minimising `loss(model(x), y)` with `cfg`,
    /// labelled `"run"` and counted by nothing.
    pub fn new(
        model: &'a M,
        varmap: &'a VarMap,
        loss: &'a dyn Loss,
        x: &'a Tensor,
        y: &'a Tensor,
        cfg: &'a FitConfig,
    ) -> Self {
        Self {
            model,
            varmap,
            x,
            y,
            loss,
            cfg,
            label: "run",
            progress: None,
        }
    }

    /// The run's label, in its errors and its checkpoint's file name (`"linear/mse/fold2"`).
    pub fn with_label(self, label: &'a str) -> Self {
        Self { label, ..self }
    }

    /// What counts the updates ([`StepCounter::add_steps`] once per update).
    pub fn with_progress(self, progress: &'a dyn StepCounter) -> Self {
        Self {
            progress: Some(progress),
            ..self
        }
    }
}

/// Trains the run's model to minimise `loss(model(x), y)`.
///
/// `on_log(t, loss)` is called at each logged t (0, every `log_every`, and `steps`) with the
/// training loss at that point. The run's [`StepCounter`] is advanced by one per update.
///
/// # Errors
/// [`FitError::NonFinite`] as soon as a training loss is NaN or infinite (naming the loss, the
/// step and the seed); [`FitError::Tensor`] for a shape or dtype error from the model or the
/// loss, or an error returned by `on_log`.
pub fn fit<M: Module + ?Sized>(
    run: FitRun<'_, M>,
    on_log: &mut dyn FnMut(usize, f64) -> candle_core::Result<()>,
) -> Result<FitReport, FitError> {
    let mut log = |t: usize, v: f64| on_log(t, v).map(|()| Vec::new());
    fit_resumable(run, &mut log, None).map(|(report, _)| report)
}

/// A logged row: `(t, training loss, the columns returned by the experiment's `on_log`)`.
pub type LogRow = (usize, f64, Vec<f64>);

/// [`fit`] with checkpoints: `on_log` returns the experiment's columns for the logged step
/// (test metrics), which are kept with the checkpoints so that a resumed run returns every
/// logged row, including those logged before the interruption.
///
/// With a `plan`, a checkpoint ([`crate::checkpoint`]) of the run is written at every multiple
/// of `plan.every` updates, once the training loss there is known to be finite (so the last
/// checkpoint of a diverging run is a good one), and when the run finishes. With
/// `plan.resume`, a run with a checkpoint continues from it: weights, optimizer state,
/// mini-batch generator, logged rows; a finished run only has its final weights loaded. The
/// result is bit for bit that of an uninterrupted run.
///
/// Returns the report and every logged row.
///
/// # Errors
/// As [`fit`]; also a checkpoint that cannot be written or read, or whose settings (run label,
/// loss, [`FitConfig`], data shape) differ from this run's ([`FitError::Tensor`]).
pub fn fit_resumable<M: Module + ?Sized>(
    run: FitRun<'_, M>,
    on_log: &mut dyn FnMut(usize, f64) -> candle_core::Result<Vec<f64>>,
    plan: Option<&Plan>,
) -> Result<(FitReport, Vec<LogRow>), FitError> {
    let FitRun {
        model,
        varmap,
        x,
        y,
        loss,
        cfg,
        label: run,
        progress,
    } = run;
    let wrap = FitError::in_run(run);
    if cfg.accumulate == 0 || (cfg.accumulate > 1 && cfg.batch_size.is_none()) {
        return Err(wrap(candle_core::Error::Msg(format!(
            "accumulate = {} needs accumulate >= 1, and a batch_size when > 1",
            cfg.accumulate
        ))));
    }
    let params = sorted_params(varmap);
    let mut opt = cfg.optimizer.build(params.clone()).map_err(wrap)?;
    let fingerprint = serde_json::to_string(&(run, loss.name(), cfg, x.dims(), y.dims()))
        .map_err(|e| wrap(candle_core::Error::Msg(format!("fingerprint: {e}"))))?;
    let held_out = held_out(x, y, cfg).map_err(wrap)?;
    let (x, y) = held_out.as_ref().map_or((x, y), |h| (&h.x, &h.y));
    let n = x.dim(0).map_err(wrap)?;
    let mut batcher = cfg.batch_size.map(|b| Batcher::new(n, b, cfg.seed));
    let log_every = cfg.log_every.max(1);
    let mut rows: Vec<LogRow> = Vec::new();
    let mut vstate = ValidationState::default();
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
    let mut start = 0;
    if let Some(plan) = plan.filter(|p| p.resume) {
        let path = plan.path(run);
        if path.exists() {
            let state = checkpoint::load(&path).map_err(|e| wrap(candle_core::Error::Msg(format!("{e:#}"))))?;
            restore(&state, &fingerprint, &params, opt.as_mut(), batcher.as_mut())
                .and_then(|()| restore_validation(&state.validation))
                .map(|v| vstate = v)
                .map_err(|e| wrap(candle_core::Error::Msg(format!("checkpoint {}: {e}", path.display()))))?;
            if let Some(p) = progress {
                p.add_steps(state.step as u64);
            }
            if state.done {
                let final_loss = state.final_loss.unwrap_or(f64::NAN);
                if let Some(p) = progress {
                    p.add_steps((cfg.steps - state.step.min(cfg.steps)) as u64);
                }
                return Ok((report(&state.rows, final_loss, vstate), state.rows));
            }
            start = state.step;
            rows = state.rows;
        }
    }
    let save = |step: usize,
                done: bool,
                rows: &[LogRow],
                opt: &dyn Optimizer,
                batcher: Option<BatcherState>,
                validation: Vec<f64>,
                final_loss: Option<f64>|
     -> Result<(), FitError> {
        let Some(plan) = plan else { return Ok(()) };
        let state = State {
            run: run.to_string(),
            fingerprint: fingerprint.clone(),
            step,
            done,
            params: params
                .iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
                .collect(),
            optim: opt.state(),
            optim_steps: opt.steps(),
            batcher,
            rows: rows.to_vec(),
            validation,
            final_loss,
        };
        std::fs::create_dir_all(&plan.dir)
            .map_err(anyhow::Error::from)
            .and_then(|()| checkpoint::save(&plan.path(run), &state))
            .map_err(|e| wrap(candle_core::Error::Msg(format!("{e:#}"))))
    };
    let every = plan.and_then(|p| p.every).filter(|&e| e > 0);
    let mut end = cfg.steps;
    for t in start..cfg.steps {
        let saving = t > start && every.is_some_and(|e| t % e == 0);
        let (before, vbefore) = if saving {
            (
                batcher.as_ref().map(Batcher::state),
                vstate_vec(held_out.as_ref(), &vstate),
            )
        } else {
            (None, Vec::new())
        };
        if let Some(h) = held_out.as_ref().filter(|h| t > 0 && t % h.cfg.every == 0) {
            let v = model.forward(&h.x_val).and_then(|p| loss.forward(&p, &h.y_val));
            if vstate.observe(&h.cfg, t, v.and_then(|l| scalar(&l)).map_err(wrap)?) {
                end = t;
                break;
            }
        }
        let (grads, losses) =
            update_grads(model, loss, x, y, &params, batcher.as_mut(), cfg.accumulate).map_err(wrap)?;
        for &v in &losses {
            check(t, v)?;
        }
        let v = if losses.len() == 1 {
            losses[0]
        } else {
            losses.iter().sum::<f64>() / losses.len() as f64
        };
        if saving {
            save(t, false, &rows, opt.as_ref(), before, vbefore, None)?;
        }
        if t % log_every == 0 {
            let extra = on_log(t, v).map_err(wrap)?;
            rows.push((t, v, extra));
        }
        let mut grads = grads;
        if let Some(max_norm) = cfg.clip_norm {
            clip_grad_norm(&mut grads, &params, max_norm).map_err(wrap)?;
        }
        let lr = cfg.schedule.lr(cfg.lr, t);
        let lr = held_out.as_ref().map_or(lr, |h| vstate.lr(&h.cfg, lr));
        opt.step(&grads, lr).map_err(wrap)?;
        if let Some(p) = progress {
            p.add_steps(1);
        }
    }
    if let Some(p) = progress.filter(|_| end < cfg.steps) {
        p.add_steps((cfg.steps - end) as u64);
    }
    let l = model.forward(x).and_then(|p| loss.forward(&p, y)).map_err(wrap)?;
    let final_loss = scalar(&l).map_err(wrap)?;
    check(end, final_loss)?;
    let extra = on_log(end, final_loss).map_err(wrap)?;
    rows.push((end, final_loss, extra));
    let vfinal = vstate_vec(held_out.as_ref(), &vstate);
    save(end, true, &rows, opt.as_ref(), None, vfinal, Some(final_loss))?;
    Ok((report(&rows, final_loss, vstate), rows))
}

/// The report of a run from its logged rows.
fn report(rows: &[LogRow], final_loss: f64, vstate: ValidationState) -> FitReport {
    FitReport {
        history: rows.iter().map(|r| (r.0, r.1)).collect(),
        final_loss,
        validation: vstate.history,
        stopped_at: vstate.stopped_at,
    }
}

/// The training rows and the held-out validation rows of a run with validation.
struct HeldOut {
    x: Tensor,
    y: Tensor,
    x_val: Tensor,
    y_val: Tensor,
    cfg: Validation,
}

fn held_out(x: &Tensor, y: &Tensor, cfg: &FitConfig) -> candle_core::Result<Option<HeldOut>> {
    let Some(v) = cfg.validation else { return Ok(None) };
    let (train, val) = split_rows(&v, x.dim(0)?, cfg.seed)?;
    Ok(Some(HeldOut {
        x: rows_of(x, &train, x.device())?,
        y: rows_of(y, &train, y.device())?,
        x_val: rows_of(x, &val, x.device())?,
        y_val: rows_of(y, &val, y.device())?,
        cfg: v,
    }))
}

/// The validation state as saved in a checkpoint (empty without validation).
fn vstate_vec(held_out: Option<&HeldOut>, vstate: &ValidationState) -> Vec<f64> {
    held_out.map_or_else(Vec::new, |_| vstate.to_vec())
}

fn restore_validation(saved: &[f64]) -> candle_core::Result<ValidationState> {
    if saved.is_empty() {
        Ok(ValidationState::default())
    } else {
        ValidationState::from_slice(saved)
    }
}

/// The gradients of one update and the training loss of each of its batches: the full set,
/// or `accumulate` successive mini-batches whose gradients are summed, each loss scaled by
/// 1/`accumulate` (a single batch is not scaled, so one batch per update is the plain step).
fn update_grads<M: Module + ?Sized>(
    model: &M,
    loss: &dyn Loss,
    x: &Tensor,
    y: &Tensor,
    params: &[(String, Var)],
    mut batcher: Option<&mut Batcher>,
    accumulate: usize,
) -> candle_core::Result<(GradStore, Vec<f64>)> {
    let mut total: Option<GradStore> = None;
    let mut losses = Vec::with_capacity(accumulate);
    for _ in 0..accumulate {
        let (xb, yb) = match batcher.as_deref_mut() {
            None => (x.clone(), y.clone()),
            Some(b) => {
                let idx = b.next_batch();
                (rows_of(x, &idx, x.device())?, rows_of(y, &idx, y.device())?)
            }
        };
        let l = model.forward(&xb).and_then(|p| loss.forward(&p, &yb))?;
        losses.push(scalar(&l)?);
        let l = if accumulate > 1 {
            l.affine(1.0 / accumulate as f64, 0.0)?
        } else {
            l
        };
        let grads = l.backward()?;
        total = Some(match total {
            None => grads,
            Some(mut acc) => {
                add_grads(&mut acc, &grads, params)?;
                acc
            }
        });
    }
    let total = total.ok_or_else(|| candle_core::Error::Msg("accumulate must be >= 1".into()))?;
    Ok((total, losses))
}

/// `acc += g` for the gradient of every variable of `params` (one only in `g` is copied).
fn add_grads(acc: &mut GradStore, g: &GradStore, params: &[(String, Var)]) -> candle_core::Result<()> {
    for (_, var) in params {
        let Some(gi) = g.get(var.as_tensor()) else { continue };
        let sum = match acc.get(var.as_tensor()) {
            Some(a) => (a + gi)?,
            None => gi.clone(),
        };
        acc.insert(var.as_tensor(), sum);
    }
    Ok(())
}

/// Puts a checkpoint's state into the variables, the optimizer and the batcher.
fn restore(
    state: &State,
    fingerprint: &str,
    params: &[(String, Var)],
    opt: &mut dyn Optimizer,
    batcher: Option<&mut Batcher>,
) -> candle_core::Result<()> {
    if state.fingerprint != fingerprint {
        return Err(candle_core::Error::Msg(format!(
            "written by run {} with other settings ({}), this run has {fingerprint}",
            state.run, state.fingerprint
        )));
    }
    let saved: std::collections::HashMap<&str, &Tensor> = state.params.iter().map(|(k, t)| (k.as_str(), t)).collect();
    if saved.len() != params.len() {
        return Err(candle_core::Error::Msg(format!(
            "{} variables, the model has {}",
            saved.len(),
            params.len()
        )));
    }
    for (name, var) in params {
        let t = saved
            .get(name.as_str())
            .ok_or_else(|| candle_core::Error::Msg(format!("no variable {name}")))?;
        let like = var.as_tensor();
        if t.shape() != like.shape() || t.dtype() != like.dtype() {
            return Err(candle_core::Error::Msg(format!(
                "variable {name} is {:?} {:?}, the model's is {:?} {:?}",
                t.shape(),
                t.dtype(),
                like.shape(),
                like.dtype()
            )));
        }
        var.set(&t.to_device(like.device())?)?;
    }
    let optim: std::collections::HashMap<String, Tensor> = state.optim.iter().cloned().collect();
    opt.load_state(&optim, state.optim_steps)?;
    match (batcher, &state.batcher) {
        (Some(b), Some(s)) => b.restore(s)?,
        (_, None) if state.done => {}
        (None, None) => {}
        _ => {
            return Err(candle_core::Error::Msg(
                "the mini-batch state does not match the batch setting".to_string(),
            ))
        }
    }
    Ok(())
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
