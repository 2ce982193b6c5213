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
use crate::prepare::{check_smooth, class_weight, one_minus, prepare_ignoring, ratio_or_one, Prepared};
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
    /// MONAI 1.6.1's `soft_label`: the L1-norm form of the overlap statistics
    /// ([`Overlap::soft`]), exact for soft targets (its optimum is `pred = target`). Changes
    /// nothing with `squared_pred`.
    pub soft_label: bool,
    /// MONAI 1.6.1's `ignore_index` (`None`: none): pixels whose target is this value (or, for a
    /// `C`-channel target, pixels of this class or unlabelled pixels) leave the loss; see
    /// [`crate::prepare::ignore_mask`].
    pub ignore_index: Option<i64>,
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
            soft_label: false,
            ignore_index: None,
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
    /// Uses the L1-norm (`soft_label`) form of the statistics.
    pub fn with_soft_label(mut self, soft_label: bool) -> Self {
        self.soft_label = soft_label;
        self
    }
    /// Leaves the pixels labelled `ignore_index` out (`None`: none).
    pub fn with_ignore_index(mut self, ignore_index: Option<i64>) -> Self {
        self.ignore_index = ignore_index;
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
    let prepared = prepare_ignoring(loss, pred, target, opts.prepare_options(), opts.ignore_index)?;
    dice_of_prepared(loss, &prepared, opts)
}

/// [`dice_per_class`] on inputs already prepared (activation, one-hot, masks applied): the
/// options' activation, one-hot and `ignore_index` are not read again.
///
/// # Errors
/// A `weight` not of length `C'` or with a negative value.
pub fn dice_of_prepared(loss: &'static str, prepared: &Prepared, opts: &DiceLoss) -> Result<Tensor> {
    check_smooth(loss, opts.smooth_nr, opts.smooth_dr)?;
    let o = Overlap::of_options(prepared, opts.squared_pred, opts.soft_label, opts.batch)?;
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
