//! Dice loss (Milletari et al., "V-Net", 3DV 2016) and its Jaccard form, with MONAI's options.
//!
//! Per (sample, class), from the shared [`Overlap`] statistics:
//!
//! ```text
//! dice    = 1 − (2I + smooth_nr) / (P + G + smooth_dr)
//! jaccard = 1 − (2I + smooth_nr) / (2(P + G − I) + smooth_dr)
//! ```
//!
//! with `P = Σp²`, `G = Σt²` under `squared_pred` (the V-Net paper's form). Source:
//! `monai.losses.DiceLoss` (MONAI 1.x): same values, gradients and defaults.

use crate::options::{OverlapBuilders, OverlapOptions};
use crate::overlap::Overlap;
use crate::prepare::{class_weight, one_minus, prepare_ignoring, ratio_or_one, Prepared};
use candle_core::{Result, Tensor};
use loss_core::reduce;

loss_core::loss_config! {
    /// MONAI's `DiceLoss` options, with MONAI's defaults; also the loss as a [`Loss`](loss_core::Loss) value.
    ///
    /// The options every overlap loss shares are the part [`DiceLoss::overlap`]
    /// ([`OverlapOptions`]; builders through [`OverlapBuilders`]).
    #[derive(Debug, Clone)]
    pub struct DiceLoss {
        /// `P = Σp²`, `G = Σt²` in the denominator.
        squared_pred: bool = false,
        /// The Jaccard (soft IoU) form.
        jaccard: bool = false,
        /// MONAI 1.6.1's `soft_label`: the L1-norm form of the overlap statistics
        /// ([`Overlap::soft`]), exact for soft targets (its optimum is `pred = target`). Changes
        /// nothing with `squared_pred`.
        soft_label: bool = false,
        /// MONAI 1.6.1's `ignore_index` (`None`: none): pixels whose target is this value (or, for
        /// a `C`-channel target, pixels of this class or unlabelled pixels) leave the loss; see
        /// [`crate::prepare::ignore_mask`].
        ignore_index: Option<i64> = None,
    }
    tensors {
        /// Per-class factor on each class's value, `[C']` (the classes kept: `C − 1` without
        /// background), values `>= 0`, `pred`'s dtype. Ignored when one class is left. The mean
        /// is then still over `N·C'` values, not over the weights (MONAI).
        weight,
    }
    parts {
        /// The options every overlap loss shares.
        overlap: OverlapOptions => OverlapBuilders,
    }
    builders DiceBuilders;
    loss_of_config dice_loss;
}

/// The Dice (or Jaccard) value of each class from overlap statistics, before any weight.
pub fn dice_from_overlap(o: &Overlap, jaccard: bool, smooth_nr: f64, smooth_dr: f64) -> Result<Tensor> {
    let num = o.intersection.affine(2.0, smooth_nr)?;
    let sums = o.pred_sum.add(&o.target_sum)?;
    let den = if jaccard {
        sums.sub(&o.intersection)?.affine(2.0, smooth_dr)?
    } else {
        sums.affine(1.0, smooth_dr)?
    };
    one_minus(&ratio_or_one(&num, &den)?)
}

/// The unreduced, weighted Dice loss: `[N, C']`, or `[C']` with `batch`. `loss` names the
/// caller in error messages (the combined losses use it too).
///
/// # Errors
/// As [`dice_loss`].
pub fn dice_per_class(loss: &'static str, pred: &Tensor, target: &Tensor, opts: &DiceLoss) -> Result<Tensor> {
    opts.overlap.smoothing(loss)?;
    let prepare = opts.overlap.prepare_options();
    let prepared = prepare_ignoring(loss, pred, target, prepare, opts.ignore_index)?;
    dice_of_prepared(loss, &prepared, opts)
}

/// [`dice_per_class`] on inputs already prepared (activation, one-hot, masks applied): the
/// options' activation, one-hot and `ignore_index` are not read again.
///
/// # Errors
/// A `weight` not of length `C'` or with a negative value.
pub fn dice_of_prepared(loss: &'static str, prepared: &Prepared, opts: &DiceLoss) -> Result<Tensor> {
    let (smooth_nr, smooth_dr) = opts.overlap.smoothing(loss)?;
    let o = Overlap::of_options(prepared, opts.squared_pred, opts.soft_label, opts.overlap.batch)?;
    let f = dice_from_overlap(&o, opts.jaccard, smooth_nr, smooth_dr)?;
    let classes = prepared.classes_kept()?;
    match &opts.weight {
        Some(w) if classes > 1 => f.broadcast_mul(&class_weight(loss, w, classes, &prepared.pred)?),
        _ => Ok(f),
    }
}

/// Dice loss of `pred` against `target` with MONAI's options (see [`DiceLoss`] and the crate
/// docs for shapes).
///
/// - `pred`: `[N, C, spatial...]` (rank ≥ 3), f32 or f64: probabilities, or logits with
///   `sigmoid` / `softmax`.
/// - `target`: `pred`'s shape and dtype, or class indices `[N, 1, spatial...]` (u8, u32, i64)
///   with `to_onehot_y`.
/// - Output: `[N, C']` (`[C']` with `batch`) for `Reduction::None`, else 0-d.
///
/// An empty prediction on an empty target gives 0 with the default smoothing; a class whose
/// denominator is exactly 0 (`smooth_dr = 0`) scores 0 with a zero gradient.
///
/// # Errors
/// `sigmoid` with `softmax`; a negative or non-finite smoothing term; `pred` not float or of rank
/// below 3; a target of another shape or dtype (after `to_onehot_y`); class indices out of range
/// or without `to_onehot_y`; a `weight` not of length `C'` or with a negative value;
/// `Reduction::BatchMean`.
pub fn dice_loss(pred: &Tensor, target: &Tensor, opts: &DiceLoss) -> Result<Tensor> {
    const LOSS: &str = "dice_loss";
    let reduction = opts.overlap.reduction.standard(LOSS)?;
    reduce(LOSS, &dice_per_class(LOSS, pred, target, opts)?, reduction)
}
