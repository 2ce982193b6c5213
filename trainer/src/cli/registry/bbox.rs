//! loss-bbox's entries of the registry.
//!
//! Inputs: `pred`/`target` for the aligned losses, `boxes1`/`boxes2` for the pairwise metrics,
//! `boxes` for `box_convert`/`box_area`. Defaults as `cases/FORMAT.md`: the torchvision
//! family defaults to `reduction: "none"`, `extended_iou_loss`/`siou_loss` to `"mean"`.
//! The detection losses (`cases/FORMAT.md`, "Conventions of the detection losses"):
//! `pred`/`target` (`gaussian_target` for the CenterNet loss, `label` for DFL, `label` + `score`
//! or `target` for QFL, `logits`/`labels` for PolyLoss); the mmdetection losses and `nwd_loss`
//! default to `"mean"`, the PolyLoss listings and the YOLO-community box losses to `"none"`.

use super::{config, input, pair, Inputs};
use anyhow::{anyhow, bail, Result};
use candle_core::Tensor;
use loss_bbox::*;
use loss_core::Loss;
use serde_json::{Map, Value};

/// The names this table answers besides [`YOLO_BOX_LOSSES`].
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
];

/// The YOLO-community box losses (Alpha-IoU to NWD), also answered by this table; the
/// benchmark times each of them.
pub const YOLO_BOX_LOSSES: &[&str] = &[
    "alpha_iou_loss",
    "mpdiou_loss",
    "inner_iou_loss",
    "shape_iou_loss",
    "wise_iou_loss",
    "focaler_iou_loss",
    "nwd_loss",
];

/// Runs a loss-bbox loss by name; `None` for a name it does not know.
pub fn call(name: &str, params: &Map<String, Value>, x: &Inputs) -> Option<Result<Tensor>> {
    let loss: &'static str = NAMES.iter().chain(YOLO_BOX_LOSSES).find(|n| **n == name)?;
    Some(run(loss, params, x))
}

/// The parameters of the box functions that are not losses (`box_iou`, `box_convert`, ...):
/// each takes some of them ([`only`]); `null` or missing is `None`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct BoxParams {
    /// The box format of `box_iou`'s two sets and of `box_area` (default `"xyxy"`).
    fmt: Option<BoxFormat>,
    /// `eps` of `distance_box_iou` / `complete_box_iou` (default [`DEFAULT_EPS`]).
    eps: Option<f64>,
    /// `box_convert`'s input format (required).
    in_fmt: Option<BoxFormat>,
    /// `box_convert`'s output format (required).
    out_fmt: Option<BoxFormat>,
}

/// The parameters of a box function that takes `keys`.
fn box_params(loss: &str, p: &Map<String, Value>, keys: &[&str]) -> Result<BoxParams> {
    only(loss, p, keys)?;
    let set = p.iter().filter(|(_, v)| !v.is_null());
    let set: Map<String, Value> = set.map(|(k, v)| (k.clone(), v.clone())).collect();
    serde_json::from_value(Value::Object(set)).map_err(|e| anyhow!("{loss}: {e}"))
}

/// Refuses the parameters a pairwise metric does not take (`keys` are the ones it does).
fn only(loss: &str, p: &Map<String, Value>, keys: &[&str]) -> Result<()> {
    match p.iter().find(|(k, v)| !v.is_null() && !keys.contains(&k.as_str())) {
        Some((k, _)) => bail!("{loss}: unknown parameter `{k}` (this function takes {keys:?})"),
        None => Ok(()),
    }
}

fn run(loss: &'static str, p: &Map<String, Value>, x: &Inputs) -> Result<Tensor> {
    const PT: [&str; 2] = ["pred", "target"];
    const POLY: [&str; 2] = ["logits", "labels"];
    let sets = || -> Result<(&Tensor, &Tensor)> { Ok((input(loss, x, "boxes1")?, input(loss, x, "boxes2")?)) };
    let fmt = |b: &BoxParams| b.fmt.unwrap_or(BoxFormat::Xyxy);
    let eps = |keys: &[&str]| -> Result<f64> { Ok(box_params(loss, p, keys)?.eps.unwrap_or(DEFAULT_EPS)) };
    match loss {
        "iou_loss" => pair::<IoULoss>(loss, p, x, PT),
        "giou_loss" => pair::<GIoULoss>(loss, p, x, PT),
        "diou_loss" => pair::<DIoULoss>(loss, p, x, PT),
        "ciou_loss" => pair::<CIoULoss>(loss, p, x, PT),
        "eiou_loss" => pair::<EfficientIoULoss>(loss, p, x, PT),
        "extended_iou_loss" => pair::<ExtendedIoULoss>(loss, p, x, PT),
        "siou_loss" => pair::<SIoULoss>(loss, p, x, PT),
        "box_iou" => {
            let (a, b) = sets()?;
            let fmt = fmt(&box_params(loss, p, &["fmt"])?);
            Ok(box_iou(
                &to_xyxy_boxes(loss, "boxes1", a, fmt)?,
                &to_xyxy_boxes(loss, "boxes2", b, fmt)?,
            )?)
        }
        "generalized_box_iou" => {
            box_params(loss, p, &[])?;
            let (a, b) = sets()?;
            Ok(generalized_box_iou(a, b)?)
        }
        "distance_box_iou" => {
            let (a, b) = sets()?;
            Ok(distance_box_iou(a, b, eps(&["eps"])?)?)
        }
        "complete_box_iou" => {
            let (a, b) = sets()?;
            Ok(complete_box_iou(a, b, eps(&["eps"])?)?)
        }
        "box_convert" => {
            let boxes = input(loss, x, "boxes")?;
            let c = box_params(loss, p, &["in_fmt", "out_fmt"])?;
            let required = |f: Option<BoxFormat>, key: &str| {
                f.ok_or_else(|| anyhow!("{loss}: parameter `{key}` is required (\"xyxy\", \"xywh\" or \"cxcywh\")"))
            };
            Ok(box_convert(
                boxes,
                required(c.in_fmt, "in_fmt")?,
                required(c.out_fmt, "out_fmt")?,
            )?)
        }
        "box_area" => {
            let boxes = input(loss, x, "boxes")?;
            Ok(box_area(boxes, fmt(&box_params(loss, p, &["fmt"])?))?)
        }
        "varifocal_loss" => pair::<VarifocalLoss>(loss, p, x, PT),
        "quality_focal_loss" => {
            let pred = input(loss, x, "pred")?;
            let c: QualityFocalLoss = config(loss, p, pred)?;
            if x.contains_key("target") {
                Ok(c.forward(pred, input(loss, x, "target")?)?)
            } else {
                Ok(c.forward_labels(pred, input(loss, x, "label")?, input(loss, x, "score")?)?)
            }
        }
        "distribution_focal_loss" => pair::<DistributionFocalLoss>(loss, p, x, ["pred", "label"]),
        "gaussian_focal_loss" => pair::<GaussianFocalLoss>(loss, p, x, ["pred", "gaussian_target"]),
        "balanced_l1_loss" => pair::<BalancedL1Loss>(loss, p, x, PT),
        "poly1_cross_entropy" => pair::<Poly1CrossEntropy>(loss, p, x, POLY),
        "poly1_focal_loss" => pair::<Poly1FocalLoss>(loss, p, x, POLY),
        "alpha_iou_loss" => pair::<AlphaIoULoss>(loss, p, x, PT),
        "mpdiou_loss" => pair::<MPDIoULoss>(loss, p, x, PT),
        "inner_iou_loss" => pair::<InnerIoULoss>(loss, p, x, PT),
        "shape_iou_loss" => pair::<ShapeIoULoss>(loss, p, x, PT),
        "wise_iou_loss" => pair::<WiseIoULoss>(loss, p, x, PT),
        "focaler_iou_loss" => pair::<FocalerIoULoss>(loss, p, x, PT),
        "nwd_loss" => pair::<NWDLoss>(loss, p, x, PT),
        _ => unreachable!("listed in NAMES or YOLO_BOX_LOSSES"),
    }
}
