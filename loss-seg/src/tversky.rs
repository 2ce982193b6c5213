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

use crate::overlap::Overlap;
use crate::prepare::{check_smooth, one_minus, prepare_ignoring, ratio_or_one};
use candle_core::{Result, Tensor};
use loss_core::{check, ops, reduce, Loss, Reduction};

/// MONAI's `TverskyLoss` options, with MONAI's defaults; also the loss as a [`Loss`] value.
///
/// Defaults: `include_background = true`, `to_onehot_y = false`, `sigmoid = false`,
/// `softmax = false`, `alpha = 0.5`, `beta = 0.5`, `batch = false`, `smooth_nr = 1e-5`,
/// `smooth_dr = 1e-5`, `reduction = Mean`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TverskyLoss {
    /// Keep channel 0 (ignored when `C = 1`).
    pub include_background: bool,
    /// The target holds class indices `[N, 1, spatial...]` (ignored when `C = 1`).
    pub to_onehot_y: bool,
    /// Sigmoid on `pred` first.
    pub sigmoid: bool,
    /// Softmax over the channels of `pred` first (ignored when `C = 1`).
    pub softmax: bool,
    /// Weight of the false positives (finite, `>= 0`).
    pub alpha: f64,
    /// Weight of the false negatives (finite, `>= 0`).
    pub beta: f64,
    /// Sum over the batch too before the ratio: one value per class.
    pub batch: bool,
    /// Added to the numerator (finite, `>= 0`).
    pub smooth_nr: f64,
    /// Added to the denominator (finite, `>= 0`).
    pub smooth_dr: f64,
    /// MONAI 1.6.1's `soft_label`: the L1-norm form of the statistics ([`Overlap::soft`]).
    pub soft_label: bool,
    /// MONAI 1.6.1's `ignore_index` (`None`: none); see [`crate::prepare::ignore_mask`].
    pub ignore_index: Option<i64>,
    /// `None` gives `[N, C']` (`[C']` with `batch`), `Mean` / `Sum` a 0-d tensor.
    pub reduction: Reduction,
}

impl Default for TverskyLoss {
    fn default() -> Self {
        Self {
            include_background: true,
            to_onehot_y: false,
            sigmoid: false,
            softmax: false,
            alpha: 0.5,
            beta: 0.5,
            batch: false,
            smooth_nr: 1e-5,
            smooth_dr: 1e-5,
            soft_label: false,
            ignore_index: None,
            reduction: Reduction::Mean,
        }
    }
}

common_builders!(TverskyLoss);

impl TverskyLoss {
    /// Sets the false-positive weight α.
    pub fn with_alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
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
    /// Sets the false-negative weight β.
    pub fn with_beta(mut self, beta: f64) -> Self {
        self.beta = beta;
        self
    }
}

/// Focal Tversky loss options: [`TverskyLoss`]'s with Abraham & Khan's defaults
/// (`alpha = 0.3` on false positives, `beta = 0.7` on false negatives) and `gamma = 0.75`;
/// also the loss as a [`Loss`] value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FocalTverskyLoss {
    /// Keep channel 0 (ignored when `C = 1`).
    pub include_background: bool,
    /// The target holds class indices `[N, 1, spatial...]` (ignored when `C = 1`).
    pub to_onehot_y: bool,
    /// Sigmoid on `pred` first.
    pub sigmoid: bool,
    /// Softmax over the channels of `pred` first (ignored when `C = 1`).
    pub softmax: bool,
    /// Weight of the false positives (finite, `>= 0`; default 0.3).
    pub alpha: f64,
    /// Weight of the false negatives (finite, `>= 0`; default 0.7).
    pub beta: f64,
    /// Exponent on each class's Tversky value (finite, `> 0`; default 0.75).
    pub gamma: f64,
    /// Sum over the batch too before the ratio: one value per class.
    pub batch: bool,
    /// Added to the numerator (finite, `>= 0`).
    pub smooth_nr: f64,
    /// Added to the denominator (finite, `>= 0`).
    pub smooth_dr: f64,
    /// MONAI 1.6.1's `soft_label`: the L1-norm form of the statistics ([`Overlap::soft`]).
    pub soft_label: bool,
    /// MONAI 1.6.1's `ignore_index` (`None`: none); see [`crate::prepare::ignore_mask`].
    pub ignore_index: Option<i64>,
    /// `None` gives `[N, C']` (`[C']` with `batch`), `Mean` / `Sum` a 0-d tensor.
    pub reduction: Reduction,
}

impl Default for FocalTverskyLoss {
    fn default() -> Self {
        Self {
            include_background: true,
            to_onehot_y: false,
            sigmoid: false,
            softmax: false,
            alpha: 0.3,
            beta: 0.7,
            gamma: 0.75,
            batch: false,
            smooth_nr: 1e-5,
            smooth_dr: 1e-5,
            soft_label: false,
            ignore_index: None,
            reduction: Reduction::Mean,
        }
    }
}

common_builders!(FocalTverskyLoss);

impl FocalTverskyLoss {
    /// Sets the false-positive weight α.
    pub fn with_alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
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
    /// Sets the false-negative weight β.
    pub fn with_beta(mut self, beta: f64) -> Self {
        self.beta = beta;
        self
    }
    /// Sets the focal exponent γ.
    pub fn with_gamma(mut self, gamma: f64) -> Self {
        self.gamma = gamma;
        self
    }
    /// The Tversky options underneath (`gamma` left out).
    pub fn tversky(&self) -> TverskyLoss {
        TverskyLoss {
            include_background: self.include_background,
            to_onehot_y: self.to_onehot_y,
            sigmoid: self.sigmoid,
            softmax: self.softmax,
            alpha: self.alpha,
            beta: self.beta,
            batch: self.batch,
            smooth_nr: self.smooth_nr,
            smooth_dr: self.smooth_dr,
            soft_label: self.soft_label,
            ignore_index: self.ignore_index,
            reduction: self.reduction,
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
    check_smooth(loss, opts.smooth_nr, opts.smooth_dr)?;
    check::non_negative(loss, "alpha", opts.alpha)?;
    check::non_negative(loss, "beta", opts.beta)?;
    let prepared = prepare_ignoring(loss, pred, target, opts.prepare_options(), opts.ignore_index)?;
    let o = Overlap::of_options(&prepared, false, opts.soft_label, opts.batch)?;
    tversky_from_overlap(&o, opts.alpha, opts.beta, opts.smooth_nr, opts.smooth_dr)
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
    opts.reduction.standard(LOSS)?;
    reduce(LOSS, &tversky_per_class(LOSS, pred, target, opts)?, opts.reduction)
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
    opts.reduction.standard(LOSS)?;
    check::positive(LOSS, "gamma", opts.gamma)?;
    let t = tversky_per_class(LOSS, pred, target, &opts.tversky())?;
    reduce(LOSS, &focal_power(&t, opts.gamma)?, opts.reduction)
}

impl Loss for TverskyLoss {
    fn name(&self) -> &'static str {
        "tversky_loss"
    }
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        tversky_loss(input, target, self)
    }
}

impl Loss for FocalTverskyLoss {
    fn name(&self) -> &'static str {
        "focal_tversky_loss"
    }
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        focal_tversky_loss(input, target, self)
    }
}
