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

use crate::overlap::Overlap;
use crate::prepare::{check_smooth, class_weight, one_minus, prepare, ratio_or_one};
use candle_core::{Result, Tensor};
use loss_core::{reduce, Loss, Reduction};

/// MONAI's `DiceLoss` options, with MONAI's defaults; also the loss as a [`Loss`] value.
///
/// Defaults: `include_background = true`, `to_onehot_y = false`, `sigmoid = false`,
/// `softmax = false`, `squared_pred = false`, `jaccard = false`, `batch = false`,
/// `smooth_nr = 1e-5`, `smooth_dr = 1e-5`, `weight = None`, `reduction = Mean`.
#[derive(Debug, Clone)]
pub struct DiceLoss {
    /// Keep channel 0 (ignored when `C = 1`).
    pub include_background: bool,
    /// The target holds class indices `[N, 1, spatial...]` (ignored when `C = 1`).
    pub to_onehot_y: bool,
    /// Sigmoid on `pred` first.
    pub sigmoid: bool,
    /// Softmax over the channels of `pred` first (ignored when `C = 1`).
    pub softmax: bool,
    /// `P = Σp²`, `G = Σt²` in the denominator.
    pub squared_pred: bool,
    /// The Jaccard (soft IoU) form.
    pub jaccard: bool,
    /// Sum over the batch too before the ratio: one value per class.
    pub batch: bool,
    /// Added to the numerator (finite, `>= 0`).
    pub smooth_nr: f64,
    /// Added to the denominator (finite, `>= 0`).
    pub smooth_dr: f64,
    /// Per-class factor on each class's value, `[C']` (the classes kept: `C − 1` without
    /// background), values `>= 0`, `pred`'s dtype. Ignored when one class is left. The mean is
    /// then still over `N·C'` values, not over the weights (MONAI).
    pub weight: Option<Tensor>,
    /// `None` gives `[N, C']` (`[C']` with `batch`), `Mean` / `Sum` a 0-d tensor.
    pub reduction: Reduction,
}

impl Default for DiceLoss {
    fn default() -> Self {
        Self {
            include_background: true,
            to_onehot_y: false,
            sigmoid: false,
            softmax: false,
            squared_pred: false,
            jaccard: false,
            batch: false,
            smooth_nr: 1e-5,
            smooth_dr: 1e-5,
            weight: None,
            reduction: Reduction::Mean,
        }
    }
}

common_builders!(DiceLoss);

impl DiceLoss {
    /// Uses `Σp²` and `Σt²` in the denominator.
    pub fn with_squared_pred(mut self, squared_pred: bool) -> Self {
        self.squared_pred = squared_pred;
        self
    }
    /// Computes the Jaccard (soft IoU) loss instead.
    pub fn with_jaccard(mut self, jaccard: bool) -> Self {
        self.jaccard = jaccard;
        self
    }
    /// Sets the per-class weight `[C']`.
    pub fn with_weight(mut self, weight: Tensor) -> Self {
        self.weight = Some(weight);
        self
    }
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
    check_smooth(loss, opts.smooth_nr, opts.smooth_dr)?;
    let prepared = prepare(loss, pred, target, opts.prepare_options())?;
    let o = Overlap::of(&prepared, opts.squared_pred, opts.batch)?;
    let f = dice_from_overlap(&o, opts.jaccard, opts.smooth_nr, opts.smooth_dr)?;
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
    opts.reduction.standard(LOSS)?;
    reduce(LOSS, &dice_per_class(LOSS, pred, target, opts)?, opts.reduction)
}

impl Loss for DiceLoss {
    fn name(&self) -> &'static str {
        "dice_loss"
    }
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        dice_loss(input, target, self)
    }
}
