//! Validation during training: a seeded split carved from the training rows, its loss
//! evaluated every N updates, driving reduce-on-plateau (PyTorch's `ReduceLROnPlateau`) and
//! early stopping (Keras' `EarlyStopping`).
//!
//! The state of both ([`ValidationState`]) is saved in the checkpoints as a flat f64 vector, so
//! that a resumed run takes the same decisions, bit for bit, as an uninterrupted one.

use crate::rng;
use candle_core::{Device, Result, Tensor};
use serde::Serialize;

/// A validation split and what its loss drives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Validation {
    /// Share of the training rows held out for validation, in (0, 1): `round(fraction · n)`
    /// rows (at least 1, at most n − 1) drawn by a seeded permutation (the fit's seed, stream
    /// `"validation"`); both parts keep their row order.
    pub fraction: f64,
    /// Evaluate the validation loss after every this many updates (t = every, 2·every, ...).
    pub every: usize,
    /// Reduce the learning rate when the validation loss stops improving.
    pub plateau: Option<Plateau>,
    /// Stop when the validation loss stops improving.
    pub early_stopping: Option<EarlyStopping>,
}

/// `torch.optim.lr_scheduler.ReduceLROnPlateau` (mode `min`, threshold mode `rel`): an
/// evaluation improves when `v < best · (1 − threshold)`; after more than `patience`
/// evaluations without improvement the learning rate is multiplied by `factor` and `cooldown`
/// evaluations follow in which bad evaluations are not counted. The factor multiplies the
/// schedule's rate; once reduced, the rate never goes below `min_lr`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Plateau {
    /// Multiplier of each reduction, in (0, 1) (PyTorch: 0.1).
    pub factor: f64,
    /// Bad evaluations tolerated before a reduction (PyTorch: 10).
    pub patience: usize,
    /// Relative improvement needed (PyTorch: 1e-4).
    pub threshold: f64,
    /// Evaluations after a reduction during which bad ones are not counted (PyTorch: 0).
    pub cooldown: usize,
    /// Floor of a reduced learning rate (PyTorch: 0).
    pub min_lr: f64,
}

impl Default for Plateau {
    /// PyTorch's defaults: factor 0.1, patience 10, threshold 1e-4, cooldown 0, min_lr 0.
    fn default() -> Self {
        Self {
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
        }
    }
}

/// Keras' `EarlyStopping` on the validation loss: an evaluation improves when
/// `v < best − min_delta`; training stops at the evaluation that makes `patience` bad ones in a
/// row (with patience 0, at the first bad one). The weights are those of the last update (not
/// restored to the best evaluation; the report gives the best step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EarlyStopping {
    /// Bad evaluations in a row that stop training.
    pub patience: usize,
    /// Absolute improvement needed (Keras: 0).
    pub min_delta: f64,
}

/// What the validation has seen so far.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationState {
    /// `(t, validation loss)` at each evaluation.
    pub history: Vec<(usize, f64)>,
    /// Updates applied when early stopping stopped the run.
    pub stopped_at: Option<usize>,
    /// Product of the plateau reductions so far (1 before the first).
    pub scale: f64,
    plateau_best: f64,
    plateau_bad: usize,
    cooldown: usize,
    stop_best: f64,
    stop_bad: usize,
}

/// Number of leading scalars in [`ValidationState::to_vec`].
const HEAD: usize = 7;

impl Default for ValidationState {
    fn default() -> Self {
        Self {
            history: Vec::new(),
            stopped_at: None,
            scale: 1.0,
            plateau_best: f64::INFINITY,
            plateau_bad: 0,
            cooldown: 0,
            stop_best: f64::INFINITY,
            stop_bad: 0,
        }
    }
}

impl ValidationState {
    /// Records the validation loss `v` after `t` updates and updates the plateau and
    /// early-stopping counters. Returns `true` when training must stop.
    pub fn observe(&mut self, cfg: &Validation, t: usize, v: f64) -> bool {
        self.history.push((t, v));
        if let Some(p) = cfg.plateau {
            if v < self.plateau_best * (1.0 - p.threshold) {
                self.plateau_best = v;
                self.plateau_bad = 0;
            } else {
                self.plateau_bad += 1;
            }
            if self.cooldown > 0 {
                self.cooldown -= 1;
                self.plateau_bad = 0;
            }
            if self.plateau_bad > p.patience {
                self.scale *= p.factor;
                self.cooldown = p.cooldown;
                self.plateau_bad = 0;
            }
        }
        if let Some(e) = cfg.early_stopping {
            if v < self.stop_best - e.min_delta {
                self.stop_best = v;
                self.stop_bad = 0;
            } else {
                self.stop_bad += 1;
                if self.stop_bad >= e.patience.max(1) {
                    self.stopped_at = Some(t);
                    return true;
                }
            }
        }
        false
    }

    /// The learning rate of an update whose schedule gives `lr`: `lr · scale`, at least the
    /// plateau's `min_lr` once a reduction happened.
    pub fn lr(&self, cfg: &Validation, lr: f64) -> f64 {
        match cfg.plateau {
            Some(p) if self.scale < 1.0 => (lr * self.scale).max(p.min_lr),
            _ => lr,
        }
    }

    /// The step and value of the lowest validation loss (the first of ties).
    pub fn best(&self) -> Option<(usize, f64)> {
        self.history
            .iter()
            .copied()
            .fold(None, |b: Option<(usize, f64)>, h| match b {
                Some(b) if b.1 <= h.1 => Some(b),
                _ => Some(h),
            })
    }

    /// The state as f64 values (every count is exact below 2⁵³), for a checkpoint.
    pub fn to_vec(&self) -> Vec<f64> {
        let mut v = vec![
            self.stopped_at.map_or(-1.0, |s| s as f64),
            self.scale,
            self.plateau_best,
            self.plateau_bad as f64,
            self.cooldown as f64,
            self.stop_best,
            self.stop_bad as f64,
        ];
        for &(t, l) in &self.history {
            v.push(t as f64);
            v.push(l);
        }
        v
    }

    /// The state written by [`to_vec`](Self::to_vec).
    ///
    /// # Errors
    /// A vector of the wrong length or with a count that is not a count.
    pub fn from_slice(v: &[f64]) -> Result<Self> {
        let count = |x: f64| -> Result<usize> {
            if x >= 0.0 && x.fract() == 0.0 {
                Ok(x as usize)
            } else {
                Err(candle_core::Error::Msg(format!("validation state: {x} is not a count")))
            }
        };
        if v.len() < HEAD || !(v.len() - HEAD).is_multiple_of(2) {
            return Err(candle_core::Error::Msg(format!(
                "validation state: {} values, expected {HEAD} + 2 per evaluation",
                v.len()
            )));
        }
        let history = v[HEAD..]
            .chunks(2)
            .map(|c| Ok((count(c[0])?, c[1])))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            history,
            stopped_at: if v[0] < 0.0 { None } else { Some(count(v[0])?) },
            scale: v[1],
            plateau_best: v[2],
            plateau_bad: count(v[3])?,
            cooldown: count(v[4])?,
            stop_best: v[5],
            stop_bad: count(v[6])?,
        })
    }
}

/// The training and validation rows of `n` rows: a seeded permutation's first
/// `round(fraction · n)` rows (at least 1, at most n − 1) validate, each part in row order.
///
/// # Errors
/// A fraction outside (0, 1), fewer than 2 rows, or `every` = 0.
pub fn split_rows(cfg: &Validation, n: usize, seed: u64) -> Result<(Vec<u32>, Vec<u32>)> {
    if !(cfg.fraction > 0.0 && cfg.fraction < 1.0) {
        return Err(candle_core::Error::Msg(format!(
            "validation: fraction {} is not in (0, 1)",
            cfg.fraction
        )));
    }
    if n < 2 || cfg.every == 0 {
        return Err(candle_core::Error::Msg(format!(
            "validation: needs at least 2 rows and every > 0 (got {n} rows, every {})",
            cfg.every
        )));
    }
    let n_val = ((cfg.fraction * n as f64).round() as usize).clamp(1, n - 1);
    let perm = rng::permutation(&mut rng::stream(seed, &["validation"]), n);
    let mut val: Vec<u32> = perm[..n_val].iter().map(|&i| i as u32).collect();
    let mut train: Vec<u32> = perm[n_val..].iter().map(|&i| i as u32).collect();
    val.sort_unstable();
    train.sort_unstable();
    Ok((train, val))
}

/// The rows `idx` of `t` (along dimension 0).
pub(crate) fn rows_of(t: &Tensor, idx: &[u32], device: &Device) -> Result<Tensor> {
    let idx = Tensor::new(idx, device)?;
    t.index_select(&idx, 0)
}
