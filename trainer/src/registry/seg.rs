//! loss-seg's entries of the registry.

use super::{input, Inputs, Params};
use anyhow::Result;
use candle_core::Tensor;
use loss_core::Reduction;
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
pub fn call(name: &str, params: &Map<String, Value>, inputs: &Inputs) -> Option<Result<Tensor>> {
    let loss: &'static str = NAMES.iter().find(|n| **n == name)?;
    Some(super::run_checked(loss, params, inputs, run))
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

/// A non-negative integer parameter (an `Err` naming the loss for a negative one).
fn count(p: &Params, key: &'static str, default: usize) -> Result<usize> {
    let v = p.i64(key, default as i64)?;
    if v < 0 {
        return Err(loss_core::LossError::BadParam {
            loss: p.loss,
            arg: key,
            value: v as f64,
            expected: "an integer >= 0",
        }
        .into());
    }
    Ok(v as usize)
}

/// The clDice options.
fn cldice(p: &Params) -> Result<SoftClDiceLoss> {
    let d = SoftClDiceLoss::default();
    Ok(SoftClDiceLoss {
        iter_: count(p, "iter_", d.iter_)?,
        smooth_nr: p.f64("smooth_nr", d.smooth_nr)?,
        smooth_dr: p.f64("smooth_dr", d.smooth_dr)?,
        smooth: p.f64("smooth", d.smooth)?,
        include_background: p.bool("include_background", d.include_background)?,
        to_onehot_y: p.bool("to_onehot_y", d.to_onehot_y)?,
        sigmoid: p.bool("sigmoid", d.sigmoid)?,
        softmax: p.bool("softmax", d.softmax)?,
        reduction: p.reduction(d.reduction)?,
    })
}

/// The Hausdorff-DT options.
fn hausdorff(p: &Params) -> Result<HausdorffDtLoss> {
    let d = HausdorffDtLoss::default();
    Ok(HausdorffDtLoss {
        alpha: p.f64("alpha", d.alpha)?,
        include_background: p.bool("include_background", d.include_background)?,
        to_onehot_y: p.bool("to_onehot_y", d.to_onehot_y)?,
        sigmoid: p.bool("sigmoid", d.sigmoid)?,
        softmax: p.bool("softmax", d.softmax)?,
        batch: p.bool("batch", d.batch)?,
        reduction: p.reduction(d.reduction)?,
    })
}

fn run(loss: &'static str, p: &Params, x: &Inputs) -> Result<Tensor> {
    if loss == "lovasz_hinge_loss" || loss == "soft_bce_with_logits_loss" {
        let logits = input(loss, x, "logits")?;
        let target = input(loss, x, "target")?;
        if loss == "lovasz_hinge_loss" {
            let opts = LovaszHingeLoss {
                per_image: p.bool("per_image", false)?,
                ignore_index: p.opt_i64("ignore_index")?,
            };
            return Ok(lovasz_hinge_loss(logits, target, &opts)?);
        }
        let opts = SoftBceWithLogitsLoss {
            weight: p.tensor("weight", logits)?,
            pos_weight: p.tensor("pos_weight", logits)?,
            smooth_factor: p.opt_f64("smooth_factor")?,
            ignore_index: Some(p.i64("ignore_index", -100)?),
            reduction: p.reduction(Reduction::Mean)?,
        };
        return Ok(soft_bce_with_logits_loss(logits, target, &opts)?);
    }
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
            c.soft_label = p.bool("soft_label", c.soft_label)?;
            c.ignore_index = p.opt_i64("ignore_index")?;
            dice_loss(pred, target, &c)?
        }
        "masked_dice_loss" => {
            let mut c = common!(p, MaskedDiceLoss::default());
            c.squared_pred = p.bool("squared_pred", c.squared_pred)?;
            c.jaccard = p.bool("jaccard", c.jaccard)?;
            c.weight = p.tensor("weight", pred)?;
            c.soft_label = p.bool("soft_label", c.soft_label)?;
            masked_dice_loss(pred, target, input(loss, x, "mask")?, &c)?
        }
        "soft_cldice_loss" => soft_cldice_loss(pred, target, &cldice(p)?)?,
        "soft_dice_cldice_loss" => {
            let c = SoftDiceClDiceLoss {
                cldice: cldice(p)?,
                alpha: p.f64("alpha", SoftDiceClDiceLoss::default().alpha)?,
            };
            soft_dice_cldice_loss(pred, target, &c)?
        }
        "hausdorff_dt_loss" => hausdorff_dt_loss(pred, target, &hausdorff(p)?)?,
        "log_hausdorff_dt_loss" => log_hausdorff_dt_loss(pred, target, &hausdorff(p)?)?,
        "jaccard_loss" => {
            let mode = JaccardMode::parse(loss, p.str("mode", "")?)?;
            let classes = match p.tensor("classes", pred)? {
                None => None,
                Some(t) => {
                    let v = t.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
                    if v.iter().any(|&k| k < 0.0 || k.fract() != 0.0) {
                        anyhow::bail!("{loss}: `classes` must hold class indices >= 0, got {v:?}");
                    }
                    Some(v.into_iter().map(|k| k as usize).collect())
                }
            };
            let c = JaccardLoss::new(mode)
                .with_classes(classes)
                .with_log_loss(p.bool("log_loss", false)?)
                .with_from_logits(p.bool("from_logits", true)?)
                .with_smooth(p.f64("smooth", 0.0)?)
                .with_ignore_index(p.opt_i64("ignore_index")?)
                .with_eps(p.f64("eps", 1e-7)?)
                .with_class_weights(p.tensor("class_weights", pred)?);
            jaccard_loss(pred, target, &c)?
        }
        "tversky_loss" => {
            let mut c = common!(p, TverskyLoss::default());
            c.alpha = p.f64("alpha", c.alpha)?;
            c.beta = p.f64("beta", c.beta)?;
            c.soft_label = p.bool("soft_label", c.soft_label)?;
            c.ignore_index = p.opt_i64("ignore_index")?;
            tversky_loss(pred, target, &c)?
        }
        "focal_tversky_loss" => {
            let mut c = common!(p, FocalTverskyLoss::default());
            c.alpha = p.f64("alpha", c.alpha)?;
            c.beta = p.f64("beta", c.beta)?;
            c.gamma = p.f64("gamma", c.gamma)?;
            c.soft_label = p.bool("soft_label", c.soft_label)?;
            c.ignore_index = p.opt_i64("ignore_index")?;
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
