//! Dice plus a pixelwise loss: MONAI's `DiceCELoss` and `DiceFocalLoss`.
//!
//! ```text
//! dice_ce    = λ_dice·Dice + λ_ce·CE
//! dice_focal = λ_dice·Dice + λ_focal·Focal
//! ```
//!
//! The Dice term is [`crate::dice_loss`]'s; the pixelwise terms are loss-core's
//! [`loss_core::cross_entropy`], [`loss_core::binary_cross_entropy_with_logits`] and
//! [`loss_core::sigmoid_focal_loss`], not re-written here. `pred` holds logits: `sigmoid` /
//! `softmax` act on the Dice term only, the cross-entropy and the focal loss take the logits.
//! Source: `monai.losses.DiceCELoss`, `monai.losses.DiceFocalLoss` (MONAI 1.x).

use crate::dice::{dice_per_class, DiceBuilders, DiceLoss};
use crate::options::{OverlapBuilders, OverlapOptions};
use crate::prepare::{check_pred, class_weight, dense_target};
use candle_core::{DType, Result, Tensor};
use loss_core::{
    binary_cross_entropy_with_logits, check, cross_entropy, ops, reduce, sigmoid_focal_loss, LossError, Reduction,
};

/// MONAI's checks of the combined losses: `target` has `pred`'s rank and 1 or `C` channels.
fn check_layout(loss: &'static str, pred: &Tensor, target: &Tensor) -> Result<()> {
    check_pred(loss, pred)?;
    let c = pred.dim(1)?;
    if target.rank() != pred.rank() || (target.dim(1)? != 1 && target.dim(1)? != c) {
        return Err(check::bad_shape(
            loss,
            "target",
            target,
            &format!(
                "pred's rank with 1 channel (class indices) or {c} (one-hot), as pred {:?}",
                pred.dims()
            ),
        ));
    }
    Ok(())
}

/// `λ ≥ 0` for both weights of the sum.
fn check_lambdas(loss: &'static str, dice: f64, other_name: &'static str, other: f64) -> Result<()> {
    check::non_negative(loss, "lambda_dice", dice)?;
    check::non_negative(loss, other_name, other)
}

loss_core::loss_config! {
    /// MONAI's `DiceCELoss` options, with MONAI's defaults; also the loss as a [`Loss`](loss_core::Loss) value.
    ///
    /// Holds its Dice term's options as the part [`DiceCeLoss::dice`] (a [`DiceLoss`], as
    /// MONAI's `DiceCELoss` holds a `DiceLoss`): their builders ([`DiceBuilders`],
    /// [`OverlapBuilders`]) work on this config too, and its reduction is the Dice part's
    /// (`Mean` or `Sum`; MONAI refuses `None` here). `include_background` only concerns the Dice
    /// term: the CE always uses all `C`. The Dice part's `weight` is not read (this config's
    /// `weight` serves both terms) and its `soft_label` / `ignore_index` are refused.
    #[derive(Debug, Clone)]
    pub struct DiceCeLoss {
        /// Factor of the Dice term (`>= 0`).
        lambda_dice: f64 = 1.0,
        /// Factor of the cross-entropy term (`>= 0`).
        lambda_ce: f64 = 1.0,
        /// Label smoothing of the cross-entropy, in `[0, 1]`.
        label_smoothing: f64 = 0.0,
    }
    tensors {
        /// `[C]`: the class weight of the cross-entropy (`pos_weight` of the binary
        /// cross-entropy when `C = 1`); the Dice term gets `weight[1..]` without background.
        weight,
    }
    parts {
        /// The Dice term's options.
        dice: DiceLoss => DiceBuilders,
    }
    loss_of_config dice_ce_loss;
}

impl OverlapBuilders for DiceCeLoss {
    fn options_mut(&mut self) -> &mut OverlapOptions {
        &mut self.dice.overlap
    }
}

/// Refuses the Dice options that a combined loss does not take (`soft_label`, `ignore_index`).
fn check_dice_part(loss: &'static str, dice: &DiceLoss) -> Result<()> {
    if dice.soft_label || dice.ignore_index.is_some() {
        return Err(LossError::BadOptions {
            loss,
            message: "`soft_label` and `ignore_index` are options of dice_loss, not of this loss".into(),
        }
        .into());
    }
    Ok(())
}

/// The cross-entropy term: index targets `[N, 1, ...]` (squeezed to `[N, ...]`) or one-hot /
/// probability targets `[N, C, ...]`; binary cross-entropy with logits when `C = 1`.
fn ce_term(pred: &Tensor, target: &Tensor, weight: Option<&Tensor>, opts: &DiceCeLoss) -> Result<Tensor> {
    let reduction = opts.dice.overlap.reduction;
    let float_target = || {
        if target.dtype().is_float() {
            Ok(target.clone())
        } else {
            target.to_dtype(pred.dtype())
        }
    };
    if pred.dim(1)? == 1 {
        return binary_cross_entropy_with_logits(pred, &float_target()?, None, weight, reduction);
    }
    // Class indices `[N, 1, ...]` (u8 read as u32), or probabilities of pred's shape.
    let t = if target.dim(1)? == 1 {
        let t = target.squeeze(1)?;
        if t.dtype() == DType::U8 {
            t.to_dtype(DType::U32)?
        } else {
            t
        }
    } else {
        float_target()?
    };
    cross_entropy(pred, &t, weight, -100, opts.label_smoothing, reduction)
}

/// Dice + cross-entropy of logits `pred` against `target` (MONAI's `DiceCELoss`): a 0-d tensor.
///
/// - `pred`: logits `[N, C, spatial...]` (rank ≥ 3), f32 or f64.
/// - `target`: one-hot or probabilities of `pred`'s shape and dtype (cross-entropy with
///   probability targets), or class indices `[N, 1, spatial...]` with `to_onehot_y`
///   (cross-entropy with index targets).
/// - `C = 1`: the cross-entropy term is [`binary_cross_entropy_with_logits`] with `weight` as
///   `pos_weight`; `label_smoothing` is not applied (nor checked) there, and `include_background`,
///   `to_onehot_y` and `softmax` are ignored (MONAI).
/// - `weight` and `label_smoothing` ε together follow torch's `cross_entropy`: index targets
///   give per pixel `(1−ε)·w_y·(−log p_y) + ε/C·Σ_c w_c(−log p_c)`, the mean dividing by
///   `Σ_pixels w_y`; probability targets `t' = t(1−ε) + ε/C` give `−Σ_c w_c t'_c log p_c`, the
///   mean dividing by the pixel count.
///
/// # Errors
/// `Reduction::None` or `BatchMean`; a negative `lambda_dice` / `lambda_ce`; `label_smoothing`
/// outside `[0, 1]` when `C > 1`; a target of another rank or with neither 1 nor `C` channels; no class
/// (`C = 0`); a `weight` not of length `C` or negative; and the errors of [`crate::dice_loss`] and
/// [`cross_entropy`].
pub fn dice_ce_loss(pred: &Tensor, target: &Tensor, opts: &DiceCeLoss) -> Result<Tensor> {
    const LOSS: &str = "dice_ce_loss";
    let reduction = opts.dice.overlap.reduction;
    check_dice_part(LOSS, &opts.dice)?;
    if reduction.standard(LOSS)? == Reduction::None {
        return Err(LossError::BadReduction {
            loss: LOSS,
            got: "none".into(),
            expected: "\"mean\" or \"sum\"",
        }
        .into());
    }
    check_lambdas(LOSS, opts.lambda_dice, "lambda_ce", opts.lambda_ce)?;
    check_layout(LOSS, pred, target)?;
    if pred.dim(1)? > 1 {
        // The binary path (C = 1) has no label smoothing: MONAI does not read it there.
        check::unit_interval(LOSS, "label_smoothing", opts.label_smoothing)?;
    }
    if pred.dim(1)? == 0 {
        // The cross-entropy needs a class; refused here so that the error names this loss.
        return Err(check::bad_shape(
            LOSS,
            "pred",
            pred,
            "[N, C, spatial...] with at least one class (C >= 1)",
        ));
    }
    let c = pred.dim(1)?;
    let weight = match &opts.weight {
        Some(w) => Some(class_weight(LOSS, w, c, pred)?),
        None => None,
    };
    let dice_weight = match &weight {
        Some(w) if c > 1 && !opts.dice.overlap.include_background => Some(w.narrow(0, 1, c - 1)?),
        Some(w) if c > 1 => Some(w.clone()),
        _ => None,
    };
    let dice_opts = DiceLoss {
        weight: dice_weight,
        ..opts.dice.clone()
    };
    let dice = reduce(LOSS, &dice_per_class(LOSS, pred, target, &dice_opts)?, reduction)?;
    let ce = ce_term(pred, target, weight.as_ref(), opts)?;
    dice.affine(opts.lambda_dice, 0.0)?
        .add(&ce.affine(opts.lambda_ce, 0.0)?)
}

loss_core::loss_config! {
    /// MONAI's `DiceFocalLoss` options, with MONAI's defaults; also the loss as a [`Loss`](loss_core::Loss) value.
    ///
    /// Holds its Dice term's options as the part [`DiceFocalLoss::dice`] (a [`DiceLoss`]):
    /// their builders ([`DiceBuilders`], [`OverlapBuilders`]) work on this config too. The Dice
    /// part's `weight` (`[C']`, the classes kept, `>= 0`; ignored when one class is left) weighs
    /// both terms, its `include_background` both terms, and its reduction is this loss's
    /// (`None` gives `pred`'s shape `[N, C', spatial...]`); its `soft_label` / `ignore_index`
    /// are refused.
    #[derive(Debug, Clone)]
    pub struct DiceFocalLoss {
        /// Focusing exponent of the focal term (finite, `>= 0`).
        gamma: f64 = 2.0,
        /// Class balance of the focal term in `[0, 1]`; `None` for none.
        alpha: Option<f64> = None,
        /// Factor of the Dice term (`>= 0`).
        lambda_dice: f64 = 1.0,
        /// Factor of the focal term (`>= 0`).
        lambda_focal: f64 = 1.0,
    }
    parts {
        /// The Dice term's options.
        dice: DiceLoss => DiceBuilders,
    }
    loss_of_config dice_focal_loss;
}

impl OverlapBuilders for DiceFocalLoss {
    fn options_mut(&mut self) -> &mut OverlapOptions {
        &mut self.dice.overlap
    }
}

impl DiceFocalLoss {
    /// Sets the per-class weight `[C']` of both terms (the Dice part's `weight`).
    #[must_use]
    pub fn with_weight(mut self, weight: Tensor) -> Self {
        self.dice.weight = Some(weight);
        self
    }

    /// The Dice term's options on the already dense target, unreduced.
    fn dice_term(&self) -> DiceLoss {
        let mut dice = self.dice.clone();
        dice.overlap.to_onehot_y = false;
        dice.overlap.reduction = Reduction::None;
        dice
    }
}

/// The shape `[1, C', 1, ...]` (rank `rank`) that puts a per-class vector along dimension 1.
fn along_channels(classes: usize, rank: usize) -> Vec<usize> {
    let mut shape = vec![1usize; rank];
    shape[1] = classes;
    shape
}

/// The focal term of [`dice_focal_loss`] on the kept channels `x`, `t` (`[N, C', spatial...]`):
/// elementwise for `None`, else MONAI's reduction. Without class weights the reduced forms come
/// straight from loss-core's reduced `sigmoid_focal_loss` (MONAI's `Sum` is the mean times `N·C'`).
fn focal_term(loss: &'static str, x: &Tensor, t: &Tensor, opts: &DiceFocalLoss) -> Result<Tensor> {
    let alpha = opts.alpha.unwrap_or(-1.0);
    let classes = x.dim(1)?;
    let weight = match &opts.dice.weight {
        Some(w) if classes > 1 => Some(class_weight(loss, w, classes, x)?),
        _ => None,
    };
    let Some(w) = weight else {
        return match opts.dice.overlap.reduction {
            // No (sample, class) at all: a sum over nothing, 0 (not the NaN of a mean times 0).
            Reduction::Sum if x.dim(0)? * classes == 0 => sigmoid_focal_loss(x, t, alpha, opts.gamma, Reduction::Sum),
            Reduction::Sum => {
                let rows = (x.dim(0)? * classes) as f64;
                sigmoid_focal_loss(x, t, alpha, opts.gamma, Reduction::Mean)?.affine(rows, 0.0)
            }
            r => sigmoid_focal_loss(x, t, alpha, opts.gamma, r),
        };
    };
    let focal = sigmoid_focal_loss(x, t, alpha, opts.gamma, Reduction::None)?
        .broadcast_mul(&w.reshape(along_channels(classes, x.rank()))?)?;
    match opts.dice.overlap.reduction {
        Reduction::Sum => {
            let spatial: Vec<usize> = (2..x.rank()).collect();
            reduce(loss, &focal.mean(spatial)?, Reduction::Sum)
        }
        r => reduce(loss, &focal, r),
    }
}

/// Dice + focal loss of logits `pred` against `target` (MONAI's `DiceFocalLoss`).
///
/// - `pred`: logits `[N, C, spatial...]` (rank ≥ 3), f32 or f64.
/// - `target`: 0/1 masks of `pred`'s shape and dtype, or class indices `[N, 1, spatial...]`
///   with `to_onehot_y`.
/// - The focal term is always [`sigmoid_focal_loss`] of the logits (per channel, channel 0
///   dropped without background), times `weight` per class. Its `Sum` is MONAI's: the spatial
///   *mean* summed over `(N, C')`; its `Mean` the mean over all elements.
/// - Output: `Mean` / `Sum` a 0-d tensor; `None` the focal term's shape `[N, C', spatial...]`,
///   the `[N, C']` Dice values (`[C']` with `batch`) broadcast over space and added.
///
/// # Errors
/// A negative `lambda_dice` / `lambda_focal` or `gamma`; `alpha` outside `[0, 1]`; a target of
/// another rank or with neither 1 nor `C` channels; and the errors of [`crate::dice_loss`].
pub fn dice_focal_loss(pred: &Tensor, target: &Tensor, opts: &DiceFocalLoss) -> Result<Tensor> {
    const LOSS: &str = "dice_focal_loss";
    let reduction = opts.dice.overlap.reduction.standard(LOSS)?;
    check_dice_part(LOSS, &opts.dice)?;
    check_lambdas(LOSS, opts.lambda_dice, "lambda_focal", opts.lambda_focal)?;
    check::non_negative(LOSS, "gamma", opts.gamma)?;
    if let Some(alpha) = opts.alpha {
        check::unit_interval(LOSS, "alpha", alpha)?;
    }
    check_layout(LOSS, pred, target)?;
    let target = dense_target(LOSS, pred, target, opts.dice.overlap.to_onehot_y)?;
    let dice = dice_per_class(LOSS, pred, &target, &opts.dice_term())?;

    let c = pred.dim(1)?;
    let first = usize::from(!opts.dice.overlap.include_background && c > 1);
    let (x, t) = (
        ops::narrow(pred, 1, first, c - first)?,
        ops::narrow(&target, 1, first, c - first)?,
    );
    let focal = focal_term(LOSS, &x, &t, opts)?;
    let dice = match reduction {
        Reduction::None => {
            let mut shape = along_channels(c - first, pred.rank());
            if !opts.dice.overlap.batch {
                shape[0] = pred.dim(0)?;
            }
            dice.reshape(shape)?.broadcast_as(focal.shape())?
        }
        _ => reduce(LOSS, &dice, reduction)?,
    };
    dice.affine(opts.lambda_dice, 0.0)?
        .add(&focal.affine(opts.lambda_focal, 0.0)?)
}
