//! loss-bbox's entries of the registry.
//!
//! Inputs: `pred`/`target` for the aligned losses, `boxes1`/`boxes2` for the pairwise metrics,
//! `boxes` for `box_convert`/`box_area`. Defaults as `cases/FORMAT.md`: the torchvision
//! family defaults to `reduction: "none"`, `extended_iou_loss`/`siou_loss` to `"mean"`.

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
];

/// Runs a loss-bbox loss by name; `None` for a name it does not know.
pub fn call(name: &str, params: &Map<String, Value>, inputs: &Inputs) -> Option<Result<Tensor>> {
    let loss: &'static str = NAMES.iter().find(|n| **n == name)?;
    let p = Params::new(loss, params);
    Some(run(loss, &p, inputs))
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
        _ => unreachable!("listed in NAMES"),
    })
}
