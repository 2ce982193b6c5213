//! Masked Dice loss: the Dice loss restricted to a region of each image, as MONAI 1.6.1's
//! `monai.losses.MaskedDiceLoss` (Dice: Milletari et al., "V-Net", 3DV 2016).
//!
//! With a 0/1 `mask` `M` of shape `[N, 1, spatial...]` (or `[1, 1, spatial...]`, shared by the
//! batch), broadcast over the channels:
//!
//! ```text
//! p' = act(pred) · M        t' = target · M
//! masked_dice = dice_loss(p', t')      (no activation the second time)
//! ```
//!
//! so pixels outside the mask take no part in `I`, `P` and `G` and get a zero gradient. As in
//! MONAI, the mask multiplies the *index* target before its one-hot (`to_onehot_y`): masked
//! pixels become class 0 while the prediction there is 0, i.e. false negatives of channel 0 when
//! the background is included (the other channels are clean). An all-ones mask gives
//! [`crate::dice_loss`] exactly.

use crate::dice::{dice_of_prepared, DiceLoss};
use crate::prepare::{activate, check_activation, check_pred, Prepared};
use candle_core::{Result, Tensor};
use loss_core::{check, reduce, LossError};

/// MONAI's `MaskedDiceLoss` options: [`DiceLoss`]'s options and defaults (the `ignore_index` of
/// [`DiceLoss`] is not part of MONAI's masked loss and is refused here).
pub type MaskedDiceLoss = DiceLoss;

/// Checks the mask: float, `pred`'s rank, one channel, a batch of 1 or `N`, `pred`'s spatial
/// dimensions.
fn check_mask(loss: &'static str, pred: &Tensor, mask: &Tensor) -> Result<()> {
    check::float(loss, "mask", mask)?;
    let n = pred.dim(0)?;
    let ok = mask.rank() == pred.rank()
        && mask.dim(1)? == 1
        && (mask.dim(0)? == 1 || mask.dim(0)? == n)
        && mask.dims()[2..] == pred.dims()[2..];
    if !ok {
        let mut spatial = pred.dims().to_vec();
        spatial[0] = n;
        spatial[1] = 1;
        return Err(check::bad_shape(
            loss,
            "mask",
            mask,
            &format!(
                "{spatial:?} or with a batch of 1 (one channel, pred's spatial dimensions; pred {:?})",
                pred.dims()
            ),
        ));
    }
    check::same_dtype(loss, "mask", mask, "pred", pred)
}

/// Masked Dice loss of `pred` against `target` inside `mask` (MONAI's `MaskedDiceLoss`).
///
/// - `pred`: `[N, C, spatial...]` (rank ≥ 3), f32 or f64: probabilities, or logits with
///   `sigmoid` / `softmax`.
/// - `target`: `pred`'s shape and dtype, or class indices `[N, 1, spatial...]` with
///   `to_onehot_y`.
/// - `mask`: 0/1 floats of `pred`'s dtype, `[N, 1, spatial...]` or `[1, 1, spatial...]`; a
///   constant (no gradient flows to it).
/// - Output: `[N, C']` (`[C']` with `batch`) for `Reduction::None`, else 0-d.
///
/// # Errors
/// A mask with more than one channel, a batch other than 1 or `N`, other spatial dimensions or
/// another dtype; `opts.ignore_index` set; and the errors of [`crate::dice_loss`].
pub fn masked_dice_loss(pred: &Tensor, target: &Tensor, mask: &Tensor, opts: &MaskedDiceLoss) -> Result<Tensor> {
    const LOSS: &str = "masked_dice_loss";
    opts.overlap.reduction.standard(LOSS)?;
    if opts.ignore_index.is_some() {
        return Err(LossError::BadOptions {
            loss: LOSS,
            message: "`ignore_index` is not an option of the masked Dice loss (use the mask)".into(),
        }
        .into());
    }
    check_activation(LOSS, opts.overlap.sigmoid, opts.overlap.softmax)?;
    check_pred(LOSS, pred)?;
    check_mask(LOSS, pred, mask)?;
    let mask = mask.detach();
    let c = pred.dim(1)?;
    let act = activate(LOSS, pred, opts.overlap.sigmoid, opts.overlap.softmax)?.broadcast_mul(&mask)?;
    let target = if target.dtype().is_float() {
        check::same_shape(LOSS, "target", target, "pred", pred)?;
        check::same_dtype(LOSS, "target", target, "pred", pred)?;
        target.broadcast_mul(&mask)?
    } else {
        // Class indices: zeroed outside the mask before the one-hot (MONAI's `target * mask`).
        if target.rank() != pred.rank()
            || target.dim(0)? != pred.dim(0)?
            || target.dim(1)? != 1
            || target.dims()[2..] != pred.dims()[2..]
        {
            return Err(check::bad_shape(
                LOSS,
                "target",
                target,
                &format!("class indices [N, 1, spatial...] of pred {:?}", pred.dims()),
            ));
        }
        let keep = mask.ne(0.0)?.broadcast_as(target.shape())?;
        keep.where_cond(target, &target.zeros_like()?)?
    };
    let target = crate::prepare::dense_target(LOSS, &act, &target, opts.overlap.to_onehot_y)?;
    let prepared = Prepared {
        pred: act,
        target,
        first_class: usize::from(!opts.overlap.include_background && c > 1),
    };
    let per = dice_of_prepared(LOSS, &prepared, opts)?;
    reduce(LOSS, &per, opts.overlap.reduction)
}

/// The masked Dice loss as a value: the options plus the mask (the [`loss_core::Loss`] trait
/// takes two tensors).
#[derive(Debug, Clone)]
pub struct MaskedDice {
    /// The Dice options.
    pub options: MaskedDiceLoss,
    /// The mask `[N, 1, spatial...]` or `[1, 1, spatial...]`.
    pub mask: Tensor,
}

impl loss_core::Loss for MaskedDice {
    fn name(&self) -> &'static str {
        "masked_dice_loss"
    }
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        masked_dice_loss(input, target, &self.mask, &self.options)
    }
}
