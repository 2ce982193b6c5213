//! loss-seg's entries of the registry.

use super::{input, Inputs, Params};
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
];

/// Runs a loss-seg loss by name; `None` for a name it does not know.
pub fn call(name: &str, params: &Map<String, Value>, inputs: &Inputs) -> Option<Result<Tensor>> {
    let loss: &'static str = NAMES.iter().find(|n| **n == name)?;
    let p = Params::new(loss, params);
    Some(run(loss, &p, inputs))
}

/// The options every overlap loss shares, read into any config that has them.
macro_rules! common {
    ($p:expr, $cfg:expr) => {{
        let mut c = $cfg;
        c.include_background = $p.bool("include_background", c.include_background)?;
        c.to_onehot_y = $p.bool("to_onehot_y", c.to_onehot_y)?;
        c.sigmoid = $p.bool("sigmoid", c.sigmoid)?;
        c.softmax = $p.bool("softmax", c.softmax)?;
        c.batch = $p.bool("batch", c.batch)?;
        c.smooth_nr = $p.f64("smooth_nr", c.smooth_nr)?;
        c.smooth_dr = $p.f64("smooth_dr", c.smooth_dr)?;
        c.reduction = $p.reduction(c.reduction)?;
        c
    }};
}

fn run(loss: &'static str, p: &Params, x: &Inputs) -> Result<Tensor> {
    if loss == "lovasz_softmax_loss" {
        let opts = LovaszSoftmaxLoss {
            per_image: p.bool("per_image", false)?,
            ignore_index: p.opt_i64("ignore_index")?,
        };
        return Ok(lovasz_softmax_loss(
            input(loss, x, "logits")?,
            input(loss, x, "target")?,
            &opts,
        )?);
    }
    let pred = input(loss, x, "pred")?;
    let target = input(loss, x, "target")?;
    Ok(match loss {
        "dice_loss" => {
            let mut c = common!(p, DiceLoss::default());
            c.squared_pred = p.bool("squared_pred", c.squared_pred)?;
            c.jaccard = p.bool("jaccard", c.jaccard)?;
            c.weight = p.tensor("weight", pred)?;
            dice_loss(pred, target, &c)?
        }
        "tversky_loss" => {
            let mut c = common!(p, TverskyLoss::default());
            c.alpha = p.f64("alpha", c.alpha)?;
            c.beta = p.f64("beta", c.beta)?;
            tversky_loss(pred, target, &c)?
        }
        "focal_tversky_loss" => {
            let mut c = common!(p, FocalTverskyLoss::default());
            c.alpha = p.f64("alpha", c.alpha)?;
            c.beta = p.f64("beta", c.beta)?;
            c.gamma = p.f64("gamma", c.gamma)?;
            focal_tversky_loss(pred, target, &c)?
        }
        "generalized_dice_loss" => {
            let mut c = common!(p, GeneralizedDiceLoss::default());
            c.w_type = Weighting::parse(loss, p.str("w_type", "square")?)?;
            generalized_dice_loss(pred, target, &c)?
        }
        "dice_ce_loss" => {
            let mut c = common!(p, DiceCeLoss::default());
            c.squared_pred = p.bool("squared_pred", c.squared_pred)?;
            c.jaccard = p.bool("jaccard", c.jaccard)?;
            c.weight = p.tensor("weight", pred)?;
            c.lambda_dice = p.f64("lambda_dice", c.lambda_dice)?;
            c.lambda_ce = p.f64("lambda_ce", c.lambda_ce)?;
            c.label_smoothing = p.f64("label_smoothing", c.label_smoothing)?;
            dice_ce_loss(pred, target, &c)?
        }
        "dice_focal_loss" => {
            let mut c = common!(p, DiceFocalLoss::default());
            c.squared_pred = p.bool("squared_pred", c.squared_pred)?;
            c.jaccard = p.bool("jaccard", c.jaccard)?;
            c.weight = p.tensor("weight", pred)?;
            c.gamma = p.f64("gamma", c.gamma)?;
            c.alpha = p.opt_f64("alpha")?;
            c.lambda_dice = p.f64("lambda_dice", c.lambda_dice)?;
            c.lambda_focal = p.f64("lambda_focal", c.lambda_focal)?;
            dice_focal_loss(pred, target, &c)?
        }
        _ => unreachable!("listed in NAMES"),
    })
}
