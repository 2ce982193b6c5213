//! Learning-rate schedules.

use serde::Serialize;

/// The learning rate as a function of the number of updates already applied, t = 0, 1, ...
/// (PyTorch's schedulers stepped once per update).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// `lr(t) = lr₀`.
    Constant,
    /// `lr(t) = lr₀ · γ^⌊t / step_size⌋` (`torch.optim.lr_scheduler.StepLR`).
    Step {
        /// Updates between decays (> 0).
        step_size: usize,
        /// Decay factor γ.
        gamma: f64,
    },
    /// `lr(t) = η_min + (lr₀ − η_min)(1 + cos(π·min(t, T)/T))/2`
    /// (`CosineAnnealingLR`, without restarts: it stays at η_min after T updates).
    Cosine {
        /// Period T in updates (> 0).
        t_max: usize,
        /// Final learning rate η_min.
        eta_min: f64,
    },
    /// Linear warm-up over the first W updates, then constant
    /// (transformers' `get_constant_schedule_with_warmup`):
    /// `lr(t) = lr₀ · t / W` for t < W, `lr₀` after.
    WarmupConstant {
        /// Warm-up length W in updates (0: no warm-up).
        warmup: usize,
    },
    /// Linear warm-up over the first W updates, then a cosine from lr₀ down to η_min at T
    /// (transformers' `get_cosine_schedule_with_warmup`, with a floor):
    /// `lr(t) = lr₀ · t / W` for t < W, then with `p = min(t − W, T − W) / (T − W)`,
    /// `lr(t) = η_min + (lr₀ − η_min)(1 + cos(π·p))/2`; η_min from T on.
    WarmupCosine {
        /// Warm-up length W in updates (0: no warm-up).
        warmup: usize,
        /// Total length T in updates, warm-up included (T ≤ W is read as W + 1).
        t_max: usize,
        /// Final learning rate η_min.
        eta_min: f64,
    },
}

impl Schedule {
    /// The learning rate for the update that follows `t` updates, from the base rate `base`.
    /// A `step_size` or `t_max` of 0 is read as 1.
    pub fn lr(&self, base: f64, t: usize) -> f64 {
        match *self {
            Self::Constant => base,
            Self::Step { step_size, gamma } => {
                let k = t / step_size.max(1);
                base * gamma.powi(i32::try_from(k).unwrap_or(i32::MAX))
            }
            Self::Cosine { t_max, eta_min } => {
                let tm = t_max.max(1);
                cosine(base, eta_min, t.min(tm) as f64 / tm as f64)
            }
            Self::WarmupConstant { warmup } if t < warmup => base * t as f64 / warmup as f64,
            Self::WarmupConstant { .. } => base,
            Self::WarmupCosine { warmup, .. } if t < warmup => base * t as f64 / warmup as f64,
            Self::WarmupCosine { warmup, t_max, eta_min } => {
                let span = t_max.max(warmup + 1) - warmup;
                cosine(base, eta_min, (t - warmup).min(span) as f64 / span as f64)
            }
        }
    }
}

/// `η_min + (lr₀ − η_min)(1 + cos(π·frac))/2`: the cosine from `base` (frac 0) to `eta_min` (frac 1).
fn cosine(base: f64, eta_min: f64, frac: f64) -> f64 {
    eta_min + (base - eta_min) * (1.0 + (std::f64::consts::PI * frac).cos()) / 2.0
}
