//! Generalized Dice loss (Sudre et al., "Generalised Dice overlap as a deep learning loss
//! function for highly unbalanced segmentations", DLMIA 2017), with MONAI's options.
//!
//! Per sample (or once for the batch with `batch`), from the shared [`Overlap`] statistics:
//!
//! ```text
//! w_c  = 1/G_c² ("square", default), 1/G_c ("simple") or 1 ("uniform")
//! loss = 1 − (2·Σ_c w_c·I_c + smooth_nr) / (Σ_c w_c·(P_c + G_c) + smooth_dr)
//! ```
//!
//! A class with `G_c = 0` (absent from the target) would get an infinite weight; it takes the
//! largest finite weight of its sample instead (of the whole batch with `batch`), and 0 when every
//! class of the sample is absent. The weights are constants for the gradient. Source:
//! `monai.losses.GeneralizedDiceLoss` (MONAI 1.x).

use crate::options::{OverlapBuilders, OverlapOptions};
use crate::overlap::Overlap;
use crate::prepare::{one_minus, prepare, ratio_or_one};
use candle_core::{Result, Tensor};
use loss_core::{reduce, LossError};

/// How the classes are weighted (MONAI's `w_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weighting {
    /// `1 / G²` (MONAI's default).
    #[default]
    Square,
    /// `1 / G`.
    Simple,
    /// 1 for every class.
    Uniform,
}

impl<'de> serde::Deserialize<'de> for Weighting {
    /// From MONAI's spelling ([`Weighting::parse`]).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        loss_core::config::deserialize_parsed(d, |s| Self::parse("generalized_dice_loss", s))
    }
}

impl Weighting {
    /// Parses MONAI's spelling: `"square"`, `"simple"`, `"uniform"`.
    ///
    /// # Errors
    /// `BadOptions` naming `loss` for any other string.
    pub fn parse(loss: &'static str, s: &str) -> Result<Self> {
        match s {
            "square" => Ok(Self::Square),
            "simple" => Ok(Self::Simple),
            "uniform" => Ok(Self::Uniform),
            _ => Err(LossError::BadOptions {
                loss,
                message: format!("`w_type` = {s:?} is not supported, expected \"square\", \"simple\" or \"uniform\""),
            }
            .into()),
        }
    }

    /// MONAI's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Square => "square",
            Self::Simple => "simple",
            Self::Uniform => "uniform",
        }
    }
}

loss_core::loss_config! {
    /// MONAI's `GeneralizedDiceLoss` options, with MONAI's defaults; also the loss as a [`Loss`](loss_core::Loss)
    /// value. The options every overlap loss shares are the part
    /// [`GeneralizedDiceLoss::overlap`] (`batch`: one value for the whole batch instead of one
    /// per sample; `reduction = None` gives `[N, 1]`, `[1]` with `batch`).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct GeneralizedDiceLoss {
        /// The class weighting.
        w_type: Weighting = Weighting::Square,
    }
    parts {
        /// The options every overlap loss shares.
        overlap: OverlapOptions => OverlapBuilders,
    }
    loss_of_config generalized_dice_loss;
}

/// The class weights `[N, C']` (`[C']` for batch statistics) from the target sums `G`, with
/// MONAI's replacement of infinite weights; no gradient.
pub fn class_weights(target_sum: &Tensor, w_type: Weighting) -> Result<Tensor> {
    let g = target_sum.detach();
    let w = match w_type {
        Weighting::Square => g.sqr()?.recip()?,
        Weighting::Simple => g.recip()?,
        Weighting::Uniform => return g.ones_like(),
    };
    if w.elem_count() == 0 {
        // No sample or no class kept: nothing to replace (Candle's max refuses empty tensors).
        return Ok(w);
    }
    let zeros = w.zeros_like()?;
    let infinite = w.abs()?.eq(f64::INFINITY)?;
    let finite = infinite.where_cond(&zeros, &w)?;
    let max = if g.rank() == 1 {
        finite.max_keepdim(0)?
    } else {
        finite.max_keepdim(1)?
    };
    infinite.where_cond(&max.broadcast_as(w.shape())?, &finite)
}

/// Generalized Dice loss of `pred` against `target` with MONAI's options (see
/// [`GeneralizedDiceLoss`]; input shapes as [`crate::dice_loss`]).
///
/// Output: `[N, 1]` (`[1]` with `batch`) for `Reduction::None`, else 0-d. A sample whose
/// denominator is exactly 0 (every class empty with `smooth_dr = 0`) scores 0 with a zero
/// gradient.
///
/// # Errors
/// As [`crate::dice_loss`] (no `weight` here).
pub fn generalized_dice_loss(pred: &Tensor, target: &Tensor, opts: &GeneralizedDiceLoss) -> Result<Tensor> {
    const LOSS: &str = "generalized_dice_loss";
    let OverlapOptions { batch, reduction, .. } = opts.overlap;
    reduction.standard(LOSS)?;
    let (smooth_nr, smooth_dr) = opts.overlap.smoothing(LOSS)?;
    let prepared = prepare(LOSS, pred, target, opts.overlap.prepare_options())?;
    let o = Overlap::of(&prepared, false, batch)?;
    let w = class_weights(&o.target_sum, opts.w_type)?;
    // Sum over the classes: dim 1 of [N, C'], dim 0 of [C'], keeping it ([N, 1] or [1]).
    let class_dim = usize::from(!batch);
    let num = o.intersection.mul(&w)?.sum_keepdim(class_dim)?.affine(2.0, smooth_nr)?;
    let den = o
        .pred_sum
        .add(&o.target_sum)?
        .mul(&w)?
        .sum_keepdim(class_dim)?
        .affine(1.0, smooth_dr)?;
    reduce(LOSS, &one_minus(&ratio_or_one(&num, &den)?)?, reduction)
}
