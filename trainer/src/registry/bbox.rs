//! loss-bbox's entries of the registry.
//!
//! Inputs: `pred`/`target` for the aligned losses, `boxes1`/`boxes2` for the pairwise metrics,
//! `boxes` for `box_convert`/`box_area`. Defaults as `cases/FORMAT.md`: the torchvision
//! family defaults to `reduction: "none"`, `extended_iou_loss`/`siou_loss` to `"mean"`.
//! The detection losses (`cases/FORMAT.md`, "Conventions of the detection losses"):
//! `pred`/`target` (`gaussian_target` for the CenterNet loss, `label` for DFL, `label` + `score`
//! or `target` for QFL, `logits`/`labels` for PolyLoss); the mmdetection losses and `nwd_loss`
//! default to `"mean"`, the PolyLoss listings and the YOLO-community box losses to `"none"`.

use super::{input, Inputs, Params};
use anyhow::{bail, Result};
use candle_core::Tensor;
use loss_bbox::*;
use loss_core::Reduction;
use serde_json::{Map, Value};

/// The names this table answers.
pub const NAMES: &[&str] = &[
    "iou_loss",
    "giou_loss",
    "diou_loss",
    "ciou_loss",
    "eiou_loss",
    "extended_iou_loss",
    "siou_loss",
    "box_iou",
    "generalized_box_iou",
    "distance_box_iou",
    "complete_box_iou",
    "box_convert",
    "box_area",
    "varifocal_loss",
    "quality_focal_loss",
    "distribution_focal_loss",
    "gaussian_focal_loss",
    "balanced_l1_loss",
    "poly1_cross_entropy",
    "poly1_focal_loss",
    "alpha_iou_loss",
    "mpdiou_loss",
    "inner_iou_loss",
    "shape_iou_loss",
    "wise_iou_loss",
    "focaler_iou_loss",
    "nwd_loss",
];

/// Runs a loss-bbox loss by name; `None` for a name it does not know.
pub fn call(name: &str, params: &Map<String, Value>, inputs: &Inputs) -> Option<Result<Tensor>> {
    let loss: &'static str = NAMES.iter().find(|n| **n == name)?;
    Some(super::run_checked(loss, params, inputs, run))
}

fn format(loss: &'static str, p: &Params, key: &'static str) -> Result<BoxFormat> {
    Ok(BoxFormat::parse(loss, key, p.str(key, "xyxy")?)?)
}

fn required_format(loss: &'static str, p: &Params, key: &'static str) -> Result<BoxFormat> {
    // A missing key (or null) reads as "", which is no format.
    match p.str(key, "")? {
        "" => bail!("{loss}: parameter `{key}` is required (\"xyxy\", \"xywh\" or \"cxcywh\")"),
        s => Ok(BoxFormat::parse(loss, key, s)?),
    }
}

fn run(loss: &'static str, p: &Params, x: &Inputs) -> Result<Tensor> {
    let pair = || -> Result<(&Tensor, &Tensor)> { Ok((input(loss, x, "pred")?, input(loss, x, "target")?)) };
    let sets = || -> Result<(&Tensor, &Tensor)> { Ok((input(loss, x, "boxes1")?, input(loss, x, "boxes2")?)) };
    let eps = |default: f64| p.f64("eps", default);
    Ok(match loss {
        "iou_loss" => {
            let (a, b) = pair()?;
            let mode = IouMode::parse(p.str("mode", "linear")?)?;
            iou_loss(a, b, mode, eps(DEFAULT_EPS)?, p.reduction(Reduction::None)?)?
        }
        "giou_loss" | "diou_loss" | "ciou_loss" | "eiou_loss" => {
            let (a, b) = pair()?;
            let f = match loss {
                "giou_loss" => giou_loss,
                "diou_loss" => diou_loss,
                "ciou_loss" => ciou_loss,
                _ => eiou_loss,
            };
            f(a, b, eps(DEFAULT_EPS)?, p.reduction(Reduction::None)?)?
        }
        "extended_iou_loss" => {
            let (a, b) = pair()?;
            let sp = p.f64("smooth_point", 0.1)?;
            extended_iou_loss(a, b, sp, eps(1e-6)?, p.reduction(Reduction::Mean)?)?
        }
        "siou_loss" => {
            let (a, b) = pair()?;
            let neg = p.bool("neg_gamma", false)?;
            siou_loss(a, b, neg, eps(1e-6)?, p.reduction(Reduction::Mean)?)?
        }
        "box_iou" => {
            let (a, b) = sets()?;
            let fmt = format(loss, p, "fmt")?;
            box_iou(
                &to_xyxy_boxes(loss, "boxes1", a, fmt)?,
                &to_xyxy_boxes(loss, "boxes2", b, fmt)?,
            )?
        }
        "generalized_box_iou" => {
            let (a, b) = sets()?;
            generalized_box_iou(a, b)?
        }
        "distance_box_iou" => {
            let (a, b) = sets()?;
            distance_box_iou(a, b, eps(DEFAULT_EPS)?)?
        }
        "complete_box_iou" => {
            let (a, b) = sets()?;
            complete_box_iou(a, b, eps(DEFAULT_EPS)?)?
        }
        "box_convert" => {
            let boxes = input(loss, x, "boxes")?;
            let in_fmt = required_format(loss, p, "in_fmt")?;
            let out_fmt = required_format(loss, p, "out_fmt")?;
            box_convert(boxes, in_fmt, out_fmt)?
        }
        "box_area" => box_area(input(loss, x, "boxes")?, format(loss, p, "fmt")?)?,
        _ => return detection(loss, p, x),
    })
}

/// The dense-detection losses and the IoU successors.
fn detection(loss: &'static str, p: &Params, x: &Inputs) -> Result<Tensor> {
    let pair = || -> Result<(&Tensor, &Tensor)> { Ok((input(loss, x, "pred")?, input(loss, x, "target")?)) };
    let poly = || -> Result<(&Tensor, &Tensor)> { Ok((input(loss, x, "logits")?, input(loss, x, "labels")?)) };
    let mean = || p.reduction(Reduction::Mean);
    let none = || p.reduction(Reduction::None);
    Ok(match loss {
        "varifocal_loss" => {
            let (a, b) = pair()?;
            let (alpha, gamma) = (p.f64("alpha", 0.75)?, p.f64("gamma", 2.0)?);
            varifocal_loss(a, b, alpha, gamma, p.bool("iou_weighted", true)?, mean()?)?
        }
        "quality_focal_loss" => {
            let pred = input(loss, x, "pred")?;
            let (beta, activated) = (p.f64("beta", 2.0)?, p.bool("activated", false)?);
            if x.contains_key("target") {
                quality_focal_loss_tensor_target(pred, input(loss, x, "target")?, beta, activated, mean()?)?
            } else {
                let (label, score) = (input(loss, x, "label")?, input(loss, x, "score")?);
                quality_focal_loss(pred, label, score, beta, activated, mean()?)?
            }
        }
        "distribution_focal_loss" => {
            distribution_focal_loss(input(loss, x, "pred")?, input(loss, x, "label")?, mean()?)?
        }
        "gaussian_focal_loss" => {
            let (a, t) = (input(loss, x, "pred")?, input(loss, x, "gaussian_target")?);
            let (alpha, gamma) = (p.f64("alpha", 2.0)?, p.f64("gamma", 4.0)?);
            let (pw, nw) = (p.f64("pos_weight", 1.0)?, p.f64("neg_weight", 1.0)?);
            gaussian_focal_loss(a, t, alpha, gamma, pw, nw, mean()?)?
        }
        "balanced_l1_loss" => {
            let (a, b) = pair()?;
            let (alpha, gamma, beta) = (p.f64("alpha", 0.5)?, p.f64("gamma", 1.5)?, p.f64("beta", 1.0)?);
            balanced_l1_loss(a, b, alpha, gamma, beta, mean()?)?
        }
        "poly1_cross_entropy" => {
            let (a, b) = poly()?;
            let (eps, ls) = (p.f64("epsilon", 1.0)?, p.f64("label_smoothing", 0.0)?);
            poly1_cross_entropy(a, b, eps, ls, none()?)?
        }
        "poly1_focal_loss" => {
            let (a, b) = poly()?;
            let (eps, alpha, gamma) = (p.f64("epsilon", 1.0)?, p.f64("alpha", 0.25)?, p.f64("gamma", 2.0)?);
            poly1_focal_loss(a, b, eps, alpha, gamma, none()?)?
        }
        "alpha_iou_loss" => {
            let (a, b) = pair()?;
            let base = AlphaIouBase::parse(p.str("base", "ciou")?)?;
            alpha_iou_loss(a, b, p.f64("alpha", 3.0)?, base, p.f64("eps", 1e-9)?, none()?)?
        }
        "mpdiou_loss" => {
            let (a, b) = pair()?;
            let size = |key: &'static str| -> Result<f64> {
                p.opt_f64(key)?
                    .ok_or_else(|| anyhow::anyhow!("{loss}: parameter `{key}` (the image size) is required"))
            };
            mpdiou_loss(a, b, size("img_w")?, size("img_h")?, p.f64("eps", 1e-7)?, none()?)?
        }
        "inner_iou_loss" => {
            let (a, b) = pair()?;
            let base = InnerIouBase::parse(p.str("base", "iou")?)?;
            inner_iou_loss(a, b, p.f64("ratio", 1.0)?, base, p.f64("eps", 1e-7)?, none()?)?
        }
        "shape_iou_loss" => {
            let (a, b) = pair()?;
            shape_iou_loss(a, b, p.f64("scale", 0.0)?, p.f64("eps", 1e-7)?, none()?)?
        }
        "wise_iou_loss" => {
            let (a, b) = pair()?;
            let version = WiseIouVersion::parse(p.str("version", "v3")?)?;
            let m = p.f64("mean_iou_loss", 1.0)?;
            wise_iou_loss(a, b, version, m, p.f64("alpha", 1.7)?, p.f64("delta", 2.7)?, none()?)?
        }
        "focaler_iou_loss" => {
            let (a, b) = pair()?;
            focaler_iou_loss(a, b, p.f64("d", 0.0)?, p.f64("u", 0.95)?, p.f64("eps", 1e-7)?, none()?)?
        }
        "nwd_loss" => {
            let (a, b) = pair()?;
            nwd_loss(a, b, p.f64("constant", 12.8)?, p.f64("eps", 1e-6)?, mean()?)?
        }
        _ => unreachable!("listed in NAMES"),
    })
}
