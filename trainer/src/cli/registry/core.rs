//! loss-core's entries of the registry.

use super::{config, input, pair, Inputs};
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
pub fn call(name: &str, params: &Map<String, Value>, x: &Inputs) -> Option<Result<Tensor>> {
    let loss: &'static str = NAMES.iter().find(|n| **n == name)?;
    Some(run(loss, params, x))
}

fn run(loss: &'static str, p: &Map<String, Value>, x: &Inputs) -> Result<Tensor> {
    const IT: [&str; 2] = ["input", "target"];
    const LT: [&str; 2] = ["logits", "target"];
    let three = |[a, b, c]: [&str; 3]| -> Result<[&Tensor; 3]> {
        Ok([input(loss, x, a)?, input(loss, x, b)?, input(loss, x, c)?])
    };
    const TRIPLET: [&str; 3] = ["anchor", "positive", "negative"];
    const RANKED: [&str; 3] = ["input1", "input2", "target"];
    match loss {
        "l1_loss" => pair::<L1Loss>(loss, p, x, IT),
        "mse_loss" => pair::<MseLoss>(loss, p, x, IT),
        "smooth_l1_loss" => pair::<SmoothL1Loss>(loss, p, x, IT),
        "huber_loss" => pair::<HuberLoss>(loss, p, x, IT),
        "cross_entropy" => pair::<CrossEntropyLoss>(loss, p, x, LT),
        "nll_loss" => pair::<NllLoss>(loss, p, x, ["log_probs", "target"]),
        "binary_cross_entropy" => pair::<BceLoss>(loss, p, x, IT),
        "binary_cross_entropy_with_logits" => pair::<BceWithLogitsLoss>(loss, p, x, LT),
        "kl_div" => pair::<KlDivLoss>(loss, p, x, IT),
        "entropy" => {
            let probs = input(loss, x, "probs")?;
            Ok(config::<Entropy>(loss, p, probs)?.forward1(probs)?)
        }
        "sigmoid_focal_loss" => pair::<SigmoidFocalLoss>(loss, p, x, LT),
        "softmax_focal_loss" => pair::<SoftmaxFocalLoss>(loss, p, x, LT),
        "poisson_nll_loss" => pair::<PoissonNllLoss>(loss, p, x, IT),
        "gaussian_nll_loss" => {
            let [i, t, var] = three(["input", "target", "var"])?;
            Ok(config::<GaussianNllLoss>(loss, p, i)?.forward3(i, t, var)?)
        }
        "log_cosh_loss" => pair::<LogCoshLoss>(loss, p, x, IT),
        "ctc_loss" => {
            let lp = input(loss, x, "log_probs")?;
            let [t, il, tl] = three(["targets", "input_lengths", "target_lengths"])?;
            Ok(config::<CtcLoss>(loss, p, lp)?.forward4(lp, t, il, tl)?)
        }
        "margin_ranking_loss" => {
            let [a, b, t] = three(RANKED)?;
            Ok(config::<MarginRankingLoss>(loss, p, a)?.forward3(a, b, t)?)
        }
        "hinge_embedding_loss" => pair::<HingeEmbeddingLoss>(loss, p, x, IT),
        "soft_margin_loss" => pair::<SoftMarginLoss>(loss, p, x, IT),
        "multilabel_soft_margin_loss" => pair::<MultilabelSoftMarginLoss>(loss, p, x, IT),
        "multilabel_margin_loss" => pair::<MultilabelMarginLoss>(loss, p, x, IT),
        "multi_margin_loss" => pair::<MultiMarginLoss>(loss, p, x, IT),
        "cosine_embedding_loss" => {
            let [a, b, t] = three(RANKED)?;
            Ok(config::<CosineEmbeddingLoss>(loss, p, a)?.forward3(a, b, t)?)
        }
        "triplet_margin_loss" => {
            let [a, pos, neg] = three(TRIPLET)?;
            Ok(config::<TripletMarginLoss>(loss, p, a)?.forward3(a, pos, neg)?)
        }
        "triplet_margin_with_distance_loss" => {
            let [a, pos, neg] = three(TRIPLET)?;
            Ok(config::<TripletMarginWithDistanceLoss>(loss, p, a)?.forward3(a, pos, neg)?)
        }
        _ => unreachable!("listed in NAMES"),
    }
}
