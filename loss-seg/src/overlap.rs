//! The one step every overlap loss shares: per (sample, class) intersection and sums.
//!
//! For `pred` `p` and `target` `t` of shape `[N, C, spatial...]`:
//!
//! | statistic | plain | `squared` (MONAI's `squared_pred`) |
//! |---|---|---|
//! | `intersection` `I` | `Σ p·t` | `Σ p·t` |
//! | `pred_sum` `P` | `Σ p` | `Σ p²` |
//! | `target_sum` `G` | `Σ t` | `Σ t²` |
//!
//! the sums running over the spatial dimensions, giving `[N, C]` each. MONAI's true positives,
//! false positives and false negatives are `I`, `P − I` and `G − I` (its `compute_tp_fp_fn`,
//! whose norm form for `squared_pred` is algebraically the same).
//!
//! Two paths compute the same numbers:
//! - **fused** (CPU, f32 and f64): one pass over `p` and `t` with f64 accumulators, and an
//!   analytic backward `∂/∂p = g_I·t + g_P·(1 or 2p)` (likewise for `t` when it needs a gradient),
//!   also one pass;
//! - **composite** (every device, every float dtype): plain Candle ops and autodiff.
//!
//! [`Overlap::compute`] takes the fused path where [`loss_core::kernel::choose`] takes it (f32/f64
//! on the CPU, unless `Path::Composite` is in force) and the composite one elsewhere; tests hold
//! the two equal in value and gradient.

use crate::fused::{OverlapForm, OverlapOp};
use crate::prepare::Prepared;
use candle_core::{Result, Tensor};
use loss_core::{check, kernel, ops};

/// Per (sample, class) intersection `I`, prediction sum `P` and target sum `G` (see the module
/// docs); each `[N, C]`, or `[C]` after [`Overlap::sum_batch`].
#[derive(Debug, Clone)]
pub struct Overlap {
    /// `I = Σ p·t`.
    pub intersection: Tensor,
    /// `P = Σ p` (`Σ p²` when squared).
    pub pred_sum: Tensor,
    /// `G = Σ t` (`Σ t²` when squared).
    pub target_sum: Tensor,
}

fn check_inputs(pred: &Tensor, target: &Tensor) -> Result<()> {
    const WHO: &str = "overlap";
    check::float_pair(WHO, "pred", pred, "target", target)?;
    check::min_rank(WHO, "pred", pred, 3, crate::prepare::PRED_SHAPE)
}

impl Overlap {
    /// The statistics of `pred` and `target` (`[N, C, spatial...]`, same shape and float dtype,
    /// any device): the fused CPU pass for f32/f64 where [`loss_core::kernel::choose`] takes it,
    /// the composite form (plain Candle ops, autodiff) elsewhere.
    ///
    /// # Errors
    /// Shapes or dtypes that differ, a rank below 3; `Path::Fused` for another device or dtype.
    pub fn compute(pred: &Tensor, target: &Tensor, squared: bool) -> Result<Self> {
        check_inputs(pred, target)?;
        if kernel::choose("overlap", pred)? {
            Self::fused_unchecked(pred, target, squared)
        } else {
            Self::composite_unchecked(pred, target, squared)
        }
    }

    fn composite_unchecked(pred: &Tensor, target: &Tensor, squared: bool) -> Result<Self> {
        let spatial: Vec<usize> = (2..pred.rank()).collect();
        let intersection = pred.mul(target)?.sum(spatial.clone())?;
        let (pred_sum, target_sum) = if squared {
            (pred.sqr()?.sum(spatial.clone())?, target.sqr()?.sum(spatial)?)
        } else {
            (pred.sum(spatial.clone())?, target.sum(spatial)?)
        };
        Ok(Self {
            intersection,
            pred_sum,
            target_sum,
        })
    }

    fn fused_unchecked(pred: &Tensor, target: &Tensor, squared: bool) -> Result<Self> {
        let stats = kernel::apply2(
            OverlapOp {
                squared,
                form: OverlapForm::Dense,
                probs: Default::default(),
            },
            &pred.contiguous()?,
            &target.contiguous()?,
        )?;
        let column = |k: usize| ops::narrow(&stats, 2, k, 1)?.squeeze(2);
        Ok(Self {
            intersection: column(0)?,
            pred_sum: column(1)?,
            target_sum: column(2)?,
        })
    }

    /// The statistics of the classes `first..C` (drops the background column when `first = 1`).
    pub fn classes_from(&self, first: usize) -> Result<Self> {
        if first == 0 {
            return Ok(self.clone());
        }
        let keep = |t: &Tensor| -> Result<Tensor> {
            let c = t.dim(1)?;
            ops::narrow(t, 1, first, c - first)
        };
        Ok(Self {
            intersection: keep(&self.intersection)?,
            pred_sum: keep(&self.pred_sum)?,
            target_sum: keep(&self.target_sum)?,
        })
    }

    /// Sums `[N, C]` statistics over the batch into `[C]` (MONAI's `batch = true`).
    pub fn sum_batch(&self) -> Result<Self> {
        Ok(Self {
            intersection: self.intersection.sum(0)?,
            pred_sum: self.pred_sum.sum(0)?,
            target_sum: self.target_sum.sum(0)?,
        })
    }

    /// MONAI 1.6.1's `soft_label` form from plain Candle ops (any device): with the L1 norm
    /// `‖v‖ = Σ|v|` over space, `P = ‖p‖`, `G = ‖t‖` and `I = (‖p‖ + ‖t‖ − ‖p − t‖) / 2`.
    ///
    /// For 0/1 targets and probabilities it equals the plain form; for soft targets it reaches
    /// its optimum at `p = t` (the plain `Σp·t` does not). The gradient of `|u|` is `sign(u)`
    /// with `sign(0) = 0` (PyTorch's), so `p = t` gives a zero gradient from that term.
    ///
    /// # Errors
    /// As [`Overlap::compute`].
    pub fn soft(pred: &Tensor, target: &Tensor) -> Result<Self> {
        check_inputs(pred, target)?;
        let spatial: Vec<usize> = (2..pred.rank()).collect();
        let pred_sum = ops::abs(pred)?.sum(spatial.clone())?;
        let target_sum = ops::abs(target)?.sum(spatial.clone())?;
        let diff = ops::abs(&pred.sub(target)?)?.sum(spatial)?;
        let intersection = pred_sum.add(&target_sum)?.sub(&diff)?.affine(0.5, 0.0)?;
        Ok(Self {
            intersection,
            pred_sum,
            target_sum,
        })
    }

    /// The statistics of prepared inputs with the background dropped as asked, summed over the
    /// batch when `batch`: `[N, C']`, or `[C']` with `batch`.
    pub fn of(prepared: &Prepared, squared: bool, batch: bool) -> Result<Self> {
        Self::of_options(prepared, squared, false, batch)
    }

    /// As [`Overlap::of`], with MONAI's `soft_label`: the [`Overlap::soft`] form when
    /// `soft_label` is set and `squared` is not (with `squared`, MONAI's norm form is the
    /// squared one whatever `soft_label` says).
    pub fn of_options(prepared: &Prepared, squared: bool, soft_label: bool, batch: bool) -> Result<Self> {
        let all = if soft_label && !squared {
            Self::soft(&prepared.pred, &prepared.target)?
        } else {
            Self::compute(&prepared.pred, &prepared.target, squared)?
        };
        let kept = all.classes_from(prepared.first_class)?;
        if batch {
            kept.sum_batch()
        } else {
            Ok(kept)
        }
    }
}
