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
                let frac = t.min(tm) as f64 / tm as f64;
                eta_min + (base - eta_min) * (1.0 + (std::f64::consts::PI * frac).cos()) / 2.0
            }
        }
    }
}
