//! `trainer bench --loss NAME --shape A,B,...`: one loss of the registry at the user's shape,
//! parameters and float type, timed like the workload list (same columns and JSON rows).
//!
//! Inputs (seeded): the workload list's generator for that loss (valid for the loss: the
//! distributions of `bench/torch_bench.py`) at the given shape. A loss without one takes the
//! first of these families whose inputs it accepts: probabilities and a 0/1 target of the shape
//! (the segmentation losses), boxes `[n, 4]` near their targets (the box losses), standard
//! normal input and target, logits `[n, c]` and class indices `[n]`. The prediction is given
//! under every name the registry's losses use for it (`input`, `logits`, `pred`, `log_probs`,
//! `probs`), the target as `target`; the gradient is taken for the prediction. Parameters are
//! the registry's (`reduction` mean unless given); one the loss does not have is an error.

use super::{make_inputs, named_inputs, time_named, BenchOptions, Named, Row};
use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::{Map, Value};

/// One user workload.
#[derive(Debug, Clone)]
pub struct Custom {
    /// A loss name of the registry ([`crate::registry::names`]).
    pub loss: String,
    /// The prediction's shape.
    pub shape: Vec<usize>,
    /// Parameters as `key → JSON value`.
    pub params: Map<String, Value>,
    /// F32 or F64.
    pub dtype: DType,
}

/// The most elements a `--shape` may have: 2^31, 8 GiB of f32 for the prediction alone (a
/// larger product, or one that overflows, would abort on the allocation instead of erring).
pub const MAX_ELEMENTS: usize = 1 << 31;

/// The families tried, in order, for a loss without its own generator: the workload list's
/// generators, then class maps (`[N, C, ...]` probabilities, `[N, ...]` class indices) and
/// multi-label index rows (`[N, C]` logits, `[N, C]` i64 labels padded with −1).
const FAMILIES: [&str; 6] = [
    "dice_loss",
    "iou_loss",
    "mse_loss",
    "cross_entropy",
    CLASS_MAP,
    LABEL_ROWS,
];
const CLASS_MAP: &str = "class map";
const LABEL_ROWS: &str = "multi-label rows";

/// Prediction and target of the families that are not in the workload list.
fn extra_family(family: &str, shape: &[usize], dev: &Device) -> Result<(Tensor, Tensor)> {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    if shape.len() < 2 || shape[1] < 2 {
        bail!("{family}: needs a shape [N, C, ...] with C >= 2, got {shape:?}");
    }
    let n: usize = shape.iter().product();
    let c = shape[1];
    let x: Vec<f32> = (0..n).map(|_| r.gen::<f32>()).collect();
    let x = Tensor::from_vec(x, shape, dev)?;
    if family == CLASS_MAP {
        let probs = candle_nn::ops::softmax(&x, 1)?;
        let mut t_shape = vec![shape[0]];
        t_shape.extend_from_slice(&shape[2..]);
        let y: Vec<u32> = (0..n / c).map(|_| r.gen_range(0..c as u32)).collect();
        return Ok((probs, Tensor::from_vec(y, t_shape, dev)?));
    }
    if shape.len() != 2 {
        bail!("{family}: needs a shape [N, C], got {shape:?}");
    }
    // each row: a few distinct labels, then −1
    let mut y = Vec::with_capacity(n);
    for _ in 0..shape[0] {
        let k = r.gen_range(1..=c.min(3));
        let mut row: Vec<i64> = Vec::with_capacity(c);
        while row.len() < k {
            let l = r.gen_range(0..c as i64);
            if !row.contains(&l) {
                row.push(l);
            }
        }
        row.resize(c, -1);
        y.extend(row);
    }
    Ok((x, Tensor::from_vec(y, shape, dev)?))
}

fn family_inputs(family: &str, shape: &[usize], dev: &Device) -> Result<Named> {
    let (x, y) = if family == CLASS_MAP || family == LABEL_ROWS {
        extra_family(family, shape, dev)?
    } else {
        make_inputs(family, shape, dev)?
    };
    let mut inputs = crate::registry::Inputs::new();
    // the names the registry's losses give the prediction (boxes for the box utilities and
    // pairwise IoUs, the anchor of a triplet), the target and the other inputs
    for name in [
        "input",
        "logits",
        "pred",
        "log_probs",
        "probs",
        "boxes",
        "boxes1",
        "anchor",
    ] {
        inputs.insert(name.to_string(), x.clone());
    }
    for name in ["boxes2", "positive"] {
        inputs.insert(name.to_string(), y.clone());
    }
    if y.dtype().is_float() && y.shape() == x.shape() {
        inputs.insert("negative".to_string(), y.neg()?);
    }
    if shape.len() >= 3 {
        // masked_dice_loss's mask: one channel, the prediction's batch and spatial dimensions
        let mut m = shape.to_vec();
        m[1] = 1;
        inputs.insert("mask".to_string(), Tensor::ones(m, x.dtype(), x.device())?);
    }
    inputs.insert("target".to_string(), y);
    let mut params = Map::new();
    params.insert("reduction".into(), "mean".into());
    Ok(Named {
        inputs,
        grad: "input",
        params,
    })
}

/// `named` with the user's parameters and float type, if the loss accepts it.
fn accept(loss: &str, mut named: Named, c: &Custom) -> Result<Named> {
    for (k, v) in &c.params {
        named.params.insert(k.clone(), v.clone());
    }
    if c.dtype != DType::F32 {
        let x = &named.inputs[named.grad];
        let (id, x64) = (x.id(), x.to_dtype(c.dtype)?);
        for t in named.inputs.values_mut() {
            if t.id() == id {
                *t = x64.clone();
            } else if t.dtype().is_float() {
                *t = t.to_dtype(c.dtype)?;
            }
        }
    }
    crate::registry::call(loss, &named.params, &named.inputs)
        .ok_or_else(|| anyhow!("{loss} is not in the registry"))??;
    Ok(named)
}

/// The inputs of `c` (see the module's rules), checked by one call of the loss.
///
/// # Errors
/// An unknown loss, or a shape or parameter the loss refuses (one line naming both).
fn inputs(c: &Custom, dev: &Device) -> Result<Named> {
    let names = crate::registry::names();
    let Some(loss) = names.iter().copied().find(|n| *n == c.loss) else {
        bail!(
            "bench: unknown loss {:?} (the registry's losses: {})",
            c.loss,
            names.join(", ")
        );
    };
    let shape = &c.shape;
    if shape.is_empty() || shape.contains(&0) {
        bail!("bench: --shape {shape:?} must have at least one dimension, each > 0");
    }
    let elements = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if elements.is_none_or(|n| n > MAX_ELEMENTS) {
        bail!("bench: --shape {shape:?} has more than {MAX_ELEMENTS} elements (2^31), too many to time");
    }
    let refused = |e: anyhow::Error| {
        let text = format!("{e:#}");
        anyhow!(
            "bench: {loss} refuses shape {shape:?}: {}",
            text.lines().next().unwrap_or("").trim()
        )
    };
    if let Some(named) = named_inputs(loss, shape, dev).map_err(refused)? {
        return accept(loss, named, c).map_err(refused);
    }
    if make_inputs(loss, &[4, 4], dev).is_ok() {
        // a workload-list loss timed by direct call: the same inputs through the registry
        return accept(loss, family_inputs(loss, shape, dev).map_err(refused)?, c).map_err(refused);
    }
    let mut first = None;
    for family in FAMILIES {
        // with `reduction` mean, then without it for the box utilities and pairwise IoUs that
        // have none (unless the user gave one)
        let without = |mut n: Named| {
            n.params.remove("reduction");
            n
        };
        let tries = family_inputs(family, shape, dev).and_then(|n| {
            accept(loss, n, c).or_else(|e| {
                if c.params.contains_key("reduction") {
                    return Err(e);
                }
                family_inputs(family, shape, dev).and_then(|n| accept(loss, without(n), c))
            })
        });
        match tries {
            Ok(n) => return Ok(n),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(refused(first.unwrap_or_else(|| anyhow!("no input generator"))))
}

/// Times `c` on each path of `opts.impls`.
///
/// # Errors
/// An unknown loss, or a shape or parameter the loss refuses (one line naming both); a timing
/// error.
pub fn run_custom(c: &Custom, opts: &BenchOptions, mut progress: impl FnMut(&Row)) -> Result<Vec<Row>> {
    super::check_options(&BenchOptions {
        only: Vec::new(),
        ..opts.clone()
    })?;
    let named = inputs(c, &opts.device)?;
    let mut rows = Vec::new();
    for i in &opts.impls {
        let fresh = Named {
            inputs: named.inputs.clone(),
            grad: named.grad,
            params: named.params.clone(),
        };
        let row = time_named(&c.loss, &c.shape, i == "composite", opts, fresh)?;
        progress(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// `key=value` pairs as JSON parameters ([`crate::experiments::tabular::param_value`]).
///
/// # Errors
/// A pair without `=`.
pub fn parse_params(pairs: &[String]) -> Result<Map<String, Value>> {
    pairs
        .iter()
        .map(|p| crate::experiments::tabular::param_value(p).map_err(|e| anyhow!("bench: --param: {e}")))
        .collect()
}
