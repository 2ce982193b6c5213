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
    "poisson_nll_loss",
    "gaussian_nll_loss",
    "log_cosh_loss",
    "ctc_loss",
    "margin_ranking_loss",
    "hinge_embedding_loss",
    "soft_margin_loss",
    "multilabel_soft_margin_loss",
    "multilabel_margin_loss",
    "multi_margin_loss",
    "cosine_embedding_loss",
    "triplet_margin_loss",
    "triplet_margin_with_distance_loss",
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
        "poisson_nll_loss" => poisson_nll_loss(
            input(loss, x, "input")?,
            input(loss, x, "target")?,
            p.bool("log_input", true)?,
            p.bool("full", false)?,
            p.f64("eps", 1e-8)?,
            r,
        )?,
        "gaussian_nll_loss" => gaussian_nll_loss(
            input(loss, x, "input")?,
            input(loss, x, "target")?,
            input(loss, x, "var")?,
            p.bool("full", false)?,
            p.f64("eps", 1e-6)?,
            r,
        )?,
        "log_cosh_loss" => log_cosh_loss(input(loss, x, "input")?, input(loss, x, "target")?, r)?,
        "ctc_loss" => {
            let blank = p.i64("blank", 0)?;
            let blank =
                usize::try_from(blank).map_err(|_| anyhow::anyhow!("ctc_loss: `blank` = {blank} is negative"))?;
            ctc_loss(
                input(loss, x, "log_probs")?,
                input(loss, x, "targets")?,
                input(loss, x, "input_lengths")?,
                input(loss, x, "target_lengths")?,
                blank,
                r,
                p.bool("zero_infinity", false)?,
            )?
        }
        "margin_ranking_loss" => margin_ranking_loss(
            input(loss, x, "input1")?,
            input(loss, x, "input2")?,
            input(loss, x, "target")?,
            p.f64("margin", 0.0)?,
            r,
        )?,
        "hinge_embedding_loss" => hinge_embedding_loss(
            input(loss, x, "input")?,
            input(loss, x, "target")?,
            p.f64("margin", 1.0)?,
            r,
        )?,
        "soft_margin_loss" => soft_margin_loss(input(loss, x, "input")?, input(loss, x, "target")?, r)?,
        "multilabel_soft_margin_loss" => {
            let i = input(loss, x, "input")?;
            let w = p.tensor("weight", i)?;
            multilabel_soft_margin_loss(i, input(loss, x, "target")?, w.as_ref(), r)?
        }
        "multilabel_margin_loss" => multilabel_margin_loss(input(loss, x, "input")?, input(loss, x, "target")?, r)?,
        "multi_margin_loss" => {
            let i = input(loss, x, "input")?;
            let w = p.tensor("weight", i)?;
            let pw = p.i64("p", 1)?;
            let pw = u32::try_from(pw).map_err(|_| anyhow::anyhow!("multi_margin_loss: `p` = {pw} must be 1 or 2"))?;
            multi_margin_loss(i, input(loss, x, "target")?, pw, p.f64("margin", 1.0)?, w.as_ref(), r)?
        }
        "cosine_embedding_loss" => cosine_embedding_loss(
            input(loss, x, "input1")?,
            input(loss, x, "input2")?,
            input(loss, x, "target")?,
            p.f64("margin", 0.0)?,
            r,
        )?,
        "triplet_margin_loss" => triplet_margin_loss(
            input(loss, x, "anchor")?,
            input(loss, x, "positive")?,
            input(loss, x, "negative")?,
            p.f64("margin", 1.0)?,
            p.f64("p", 2.0)?,
            p.f64("eps", 1e-6)?,
            p.bool("swap", false)?,
            r,
        )?,
        "triplet_margin_with_distance_loss" => {
            let d = match p.opt_str("distance_function")? {
                None => TripletDistance::Euclidean,
                Some(s) => TripletDistance::parse(Some(s))?,
            };
            triplet_margin_with_distance_loss(
                input(loss, x, "anchor")?,
                input(loss, x, "positive")?,
                input(loss, x, "negative")?,
                d,
                p.f64("margin", 1.0)?,
                p.bool("swap", false)?,
                r,
            )?
        }
        _ => unreachable!("listed in NAMES"),
    })
}
