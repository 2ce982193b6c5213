//! loss-core's entries of the registry.

use super::{input, Inputs, Params};
use anyhow::Result;
use candle_core::Tensor;
use loss_core::*;
use serde_json::{Map, Value};

/// The names this table answers.
pub const NAMES: &[&str] = &[
    "l1_loss",
    "mse_loss",
    "smooth_l1_loss",
    "huber_loss",
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
    "entropy",
    "sigmoid_focal_loss",
    "softmax_focal_loss",
];

/// Runs a loss-core loss by name; `None` for a name it does not know.
pub fn call(name: &str, params: &Map<String, Value>, inputs: &Inputs) -> Option<Result<Tensor>> {
    let loss: &'static str = NAMES.iter().find(|n| **n == name)?;
    Some(super::run_checked(loss, params, inputs, run))
}

fn run(loss: &'static str, p: &Params, x: &Inputs) -> Result<Tensor> {
    // torchvision's sigmoid_focal_loss defaults to no reduction; torch losses to mean.
    let default = if loss == "sigmoid_focal_loss" {
        Reduction::None
    } else {
        Reduction::Mean
    };
    let r = p.reduction(default)?;
    Ok(match loss {
        "l1_loss" => l1_loss(input(loss, x, "input")?, input(loss, x, "target")?, r)?,
        "mse_loss" => mse_loss(input(loss, x, "input")?, input(loss, x, "target")?, r)?,
        "smooth_l1_loss" => smooth_l1_loss(
            input(loss, x, "input")?,
            input(loss, x, "target")?,
            p.f64("beta", 1.0)?,
            r,
        )?,
        "huber_loss" => huber_loss(
            input(loss, x, "input")?,
            input(loss, x, "target")?,
            p.f64("delta", 1.0)?,
            r,
        )?,
        "cross_entropy" => {
            let logits = input(loss, x, "logits")?;
            let w = p.tensor("weight", logits)?;
            let ii = p.i64("ignore_index", IGNORE_INDEX)?;
            let ls = p.f64("label_smoothing", 0.0)?;
            cross_entropy(logits, input(loss, x, "target")?, w.as_ref(), ii, ls, r)?
        }
        "nll_loss" => {
            let lp = input(loss, x, "log_probs")?;
            let w = p.tensor("weight", lp)?;
            nll_loss(
                lp,
                input(loss, x, "target")?,
                w.as_ref(),
                p.i64("ignore_index", IGNORE_INDEX)?,
                r,
            )?
        }
        "binary_cross_entropy" => {
            let i = input(loss, x, "input")?;
            let w = p.tensor("weight", i)?;
            binary_cross_entropy(i, input(loss, x, "target")?, w.as_ref(), r)?
        }
        "binary_cross_entropy_with_logits" => {
            let i = input(loss, x, "logits")?;
            let w = p.tensor("weight", i)?;
            let pw = p.tensor("pos_weight", i)?;
            binary_cross_entropy_with_logits(i, input(loss, x, "target")?, w.as_ref(), pw.as_ref(), r)?
        }
        "kl_div" => kl_div(
            input(loss, x, "input")?,
            input(loss, x, "target")?,
            p.bool("log_target", false)?,
            r,
        )?,
        "entropy" => entropy(input(loss, x, "probs")?, EntropyBase::parse(p.str("base", "e")?)?, r)?,
        "sigmoid_focal_loss" => {
            let (a, g) = (p.f64("alpha", 0.25)?, p.f64("gamma", 2.0)?);
            sigmoid_focal_loss(input(loss, x, "logits")?, input(loss, x, "target")?, a, g, r)?
        }
        "softmax_focal_loss" => {
            let logits = input(loss, x, "logits")?;
            let a = p.tensor("alpha", logits)?;
            let (g, ii) = (p.f64("gamma", 2.0)?, p.i64("ignore_index", IGNORE_INDEX)?);
            softmax_focal_loss(logits, input(loss, x, "target")?, a.as_ref(), g, ii, r)?
        }
        _ => unreachable!("listed in NAMES"),
    })
}
