//! Tversky loss (Salehi et al., "Tversky loss function for image segmentation using 3D fully
//! convolutional deep networks", MLMI 2017) and focal Tversky loss (Abraham & Khan, "A novel
//! focal Tversky loss function with improved attention U-Net for lesion segmentation", ISBI 2019).
//!
//! Per (sample, class), from the shared [`Overlap`] statistics (`TP = I`, `FP = P − I`,
//! `FN = G − I`):
//!
//! ```text
//! tversky       = 1 − (TP + smooth_nr) / (TP + α·FP + β·FN + smooth_dr)
//! focal_tversky = tversky^γ
//! ```
//!
//! `α` weighs false positives, `β` false negatives; `α = β = ½` is the Dice loss. Sources:
//! `monai.losses.TverskyLoss` (values, defaults α = β = 0.5); the focal form as Abraham & Khan
//! (their α = 0.7 weighs false negatives, which is `beta` here, and their γ = 4/3 enters as
//! `1/γ = 0.75`, this crate's `gamma`).

use crate::options::{OverlapBuilders, OverlapOptions};
use crate::overlap::Overlap;
use crate::prepare::{one_minus, prepare_ignoring, ratio_or_one};
use candle_core::{Result, Tensor};
use loss_core::{check, ops, reduce};

loss_core::loss_config! {
    /// MONAI's `TverskyLoss` options, with MONAI's defaults; also the loss as a [`Loss`](loss_core::Loss) value.
    /// The options every overlap loss shares are the part [`TverskyLoss::overlap`].
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct TverskyLoss {
        /// Weight of the false positives (finite, `>= 0`).
        alpha: f64 = 0.5,
        /// Weight of the false negatives (finite, `>= 0`).
        beta: f64 = 0.5,
        /// MONAI 1.6.1's `soft_label`: the L1-norm form of the statistics ([`Overlap::soft`]).
        soft_label: bool = false,
        /// MONAI 1.6.1's `ignore_index` (`None`: none); see [`crate::prepare::ignore_mask`].
        ignore_index: Option<i64> = None,
    }
    parts {
        /// The options every overlap loss shares.
        overlap: OverlapOptions => OverlapBuilders,
    }
    loss_of_config tversky_loss;
}

loss_core::loss_config! {
    /// Focal Tversky loss options: [`TverskyLoss`]'s with Abraham & Khan's defaults
    /// (`alpha = 0.3` on false positives, `beta = 0.7` on false negatives) and `gamma = 0.75`;
    /// also the loss as a [`Loss`](loss_core::Loss) value.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct FocalTverskyLoss {
        /// Weight of the false positives (finite, `>= 0`).
        alpha: f64 = 0.3,
        /// Weight of the false negatives (finite, `>= 0`).
        beta: f64 = 0.7,
        /// Exponent on each class's Tversky value (finite, `> 0`).
        gamma: f64 = 0.75,
        /// MONAI 1.6.1's `soft_label`: the L1-norm form of the statistics ([`Overlap::soft`]).
        soft_label: bool = false,
        /// MONAI 1.6.1's `ignore_index` (`None`: none); see [`crate::prepare::ignore_mask`].
        ignore_index: Option<i64> = None,
    }
    parts {
        /// The options every overlap loss shares.
        overlap: OverlapOptions => OverlapBuilders,
    }
    loss_of_config focal_tversky_loss;
}

impl FocalTverskyLoss {
    /// The Tversky options underneath (`gamma` left out).
    pub fn tversky(&self) -> TverskyLoss {
        TverskyLoss {
            alpha: self.alpha,
            beta: self.beta,
            soft_label: self.soft_label,
            ignore_index: self.ignore_index,
            overlap: self.overlap,
        }
    }
}

/// The Tversky value of each class from overlap statistics.
pub fn tversky_from_overlap(o: &Overlap, alpha: f64, beta: f64, smooth_nr: f64, smooth_dr: f64) -> Result<Tensor> {
    let tp = &o.intersection;
    let fp = o.pred_sum.sub(tp)?;
    let fn_ = o.target_sum.sub(tp)?;
    let num = tp.affine(1.0, smooth_nr)?;
    let den = tp
        .add(&fp.affine(alpha, 0.0)?)?
        .add(&fn_.affine(beta, 0.0)?)?
        .affine(1.0, smooth_dr)?;
    one_minus(&ratio_or_one(&num, &den)?)
}

/// The unreduced Tversky loss: `[N, C']`, or `[C']` with `batch`.
fn tversky_per_class(loss: &'static str, pred: &Tensor, target: &Tensor, opts: &TverskyLoss) -> Result<Tensor> {
    let (smooth_nr, smooth_dr) = opts.overlap.smoothing(loss)?;
    check::non_negative(loss, "alpha", opts.alpha)?;
    check::non_negative(loss, "beta", opts.beta)?;
    let prepare = opts.overlap.prepare_options();
    let prepared = prepare_ignoring(loss, pred, target, prepare, opts.ignore_index)?;
    let o = Overlap::of_options(&prepared, false, opts.soft_label, opts.overlap.batch)?;
    tversky_from_overlap(&o, opts.alpha, opts.beta, smooth_nr, smooth_dr)
}

/// Tversky loss of `pred` against `target` with MONAI's options (see [`TverskyLoss`]; shapes as
/// [`crate::dice_loss`]).
///
/// - `pred`: `[N, C, spatial...]` (rank ≥ 3), f32 or f64; `target`: the same, or class indices
///   `[N, 1, spatial...]` with `to_onehot_y`.
/// - Output: `[N, C']` (`[C']` with `batch`) for `Reduction::None`, else 0-d.
///
/// A class with a zero denominator (empty on both sides with `smooth_dr = 0`, or `alpha = beta
/// = 0` with no overlap) scores 0 with a zero gradient.
///
/// # Errors
/// As [`crate::dice_loss`], and `alpha` or `beta` negative or not finite.
pub fn tversky_loss(pred: &Tensor, target: &Tensor, opts: &TverskyLoss) -> Result<Tensor> {
    const LOSS: &str = "tversky_loss";
    let reduction = opts.overlap.reduction.standard(LOSS)?;
    reduce(LOSS, &tversky_per_class(LOSS, pred, target, opts)?, reduction)
}

/// `t^γ` for the non-negative Tversky values `t`, with a finite gradient: `γ·t^(γ−1)` where
/// `t > 0`, and 0 at `t = 0` (a perfect class, where the derivative of `t^γ` is infinite for
/// `γ < 1`). A `t` rounded below 0 is taken as 0.
fn focal_power(t: &Tensor, gamma: f64) -> Result<Tensor> {
    let zeros = t.zeros_like()?;
    let tc = t.lt(0.0)?.where_cond(&zeros, t)?.detach();
    let positive = tc.gt(0.0)?;
    let safe = positive.where_cond(&tc, &tc.ones_like()?)?;
    let value = tc.powf(gamma)?;
    let derivative = positive.where_cond(&safe.powf(gamma - 1.0)?.affine(gamma, 0.0)?, &zeros)?;
    ops::attach_grad(t, &value, &derivative)
}

/// Focal Tversky loss: each class's [`tversky_loss`] value `t` raised to `gamma`, then the
/// reduction (Abraham & Khan 2019). Shapes and options as [`tversky_loss`]; see
/// [`FocalTverskyLoss`] for the defaults.
///
/// The gradient of `t^γ` at `t = 0` (a perfectly predicted class) is taken as 0 so that it stays
/// finite for `γ < 1`.
///
/// # Errors
/// As [`tversky_loss`], and `gamma` not finite or `<= 0`.
pub fn focal_tversky_loss(pred: &Tensor, target: &Tensor, opts: &FocalTverskyLoss) -> Result<Tensor> {
    const LOSS: &str = "focal_tversky_loss";
    let reduction = opts.overlap.reduction.standard(LOSS)?;
    check::positive(LOSS, "gamma", opts.gamma)?;
    let t = tversky_per_class(LOSS, pred, target, &opts.tversky())?;
    reduce(LOSS, &focal_power(&t, opts.gamma)?, reduction)
}
