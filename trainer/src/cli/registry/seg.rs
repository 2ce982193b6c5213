//! loss-seg's entries of the registry.

use super::{config, input, pair, Inputs};
use anyhow::Result;
use candle_core::Tensor;
use loss_seg::*;
use serde_json::{Map, Value};

/// The names this table answers.
pub const NAMES: &[&str] = &[
    "dice_loss",
    "tversky_loss",
    "focal_tversky_loss",
    "generalized_dice_loss",
    "dice_ce_loss",
    "dice_focal_loss",
    "lovasz_softmax_loss",
    "masked_dice_loss",
    "soft_cldice_loss",
    "soft_dice_cldice_loss",
    "hausdorff_dt_loss",
    "log_hausdorff_dt_loss",
    "lovasz_hinge_loss",
    "jaccard_loss",
    "soft_bce_with_logits_loss",
];

/// Runs a loss-seg loss by name; `None` for a name it does not know.
pub fn call(name: &str, params: &Map<String, Value>, x: &Inputs) -> Option<Result<Tensor>> {
    let loss: &'static str = NAMES.iter().find(|n| **n == name)?;
    Some(run(loss, params, x))
}

fn run(loss: &'static str, p: &Map<String, Value>, x: &Inputs) -> Result<Tensor> {
    const PT: [&str; 2] = ["pred", "target"];
    const LT: [&str; 2] = ["logits", "target"];
    match loss {
        "dice_loss" => pair::<DiceLoss>(loss, p, x, PT),
        "tversky_loss" => pair::<TverskyLoss>(loss, p, x, PT),
        "focal_tversky_loss" => pair::<FocalTverskyLoss>(loss, p, x, PT),
        "generalized_dice_loss" => pair::<GeneralizedDiceLoss>(loss, p, x, PT),
        "dice_ce_loss" => pair::<DiceCeLoss>(loss, p, x, PT),
        "dice_focal_loss" => pair::<DiceFocalLoss>(loss, p, x, PT),
        "lovasz_softmax_loss" => pair::<LovaszSoftmaxLoss>(loss, p, x, LT),
        "masked_dice_loss" => {
            let pred = input(loss, x, "pred")?;
            let c: MaskedDiceLoss = config(loss, p, pred)?;
            Ok(masked_dice_loss(
                pred,
                input(loss, x, "target")?,
                input(loss, x, "mask")?,
                &c,
            )?)
        }
        "soft_cldice_loss" => pair::<SoftClDiceLoss>(loss, p, x, PT),
        "soft_dice_cldice_loss" => pair::<SoftDiceClDiceLoss>(loss, p, x, PT),
        "hausdorff_dt_loss" => pair::<HausdorffDtLoss>(loss, p, x, PT),
        "log_hausdorff_dt_loss" => {
            let (pred, target) = (input(loss, x, "pred")?, input(loss, x, "target")?);
            Ok(log_hausdorff_dt_loss(pred, target, &config(loss, p, pred)?)?)
        }
        "lovasz_hinge_loss" => pair::<LovaszHingeLoss>(loss, p, x, LT),
        "jaccard_loss" => pair::<JaccardLoss>(loss, p, x, PT),
        "soft_bce_with_logits_loss" => pair::<SoftBceWithLogitsLoss>(loss, p, x, LT),
        _ => unreachable!("listed in NAMES"),
    }
}
