//! loss-core's entries of the registry.

use super::{input, Inputs, Params};
use anyhow::Result;
use candle_core::Tensor;
use loss_core::*;
use serde_json::{Map, Value};

/// The names this table answers.
pub const NAMES: &[&str] = &["l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss"];

/// Runs a loss-core loss by name; `None` for a name it does not know.
pub fn call(name: &str, params: &Map<String, Value>, inputs: &Inputs) -> Option<Result<Tensor>> {
    let loss: &'static str = NAMES.iter().find(|n| **n == name)?;
    let p = Params::new(loss, params);
    Some(run(loss, &p, inputs))
}

fn run(loss: &'static str, p: &Params, x: &Inputs) -> Result<Tensor> {
    let r = p.reduction(Reduction::Mean)?;
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
        _ => unreachable!("listed in NAMES"),
    })
}
