//! Binary cross-entropy on probabilities and on logits.
//!
//! Sources: `torch.nn.functional.binary_cross_entropy` and
//! `binary_cross_entropy_with_logits`. A 1-D `weight` / `pos_weight` runs along the **last**
//! dimension (one value per class of a multi-label target), as PyTorch's broadcasting does.

use crate::check;
use crate::fused::{self, Pointwise};
use crate::kernel;
use crate::ops;
use crate::reduction::{reduce, Reduction};
use candle_core::{Result, Tensor};

/// Broadcasts a `weight`-like tensor against `like`: the same shape, or 1-D of the last
/// dimension's length (or of length 1).
pub(crate) fn broadcast_last(loss: &'static str, arg: &'static str, w: &Tensor, like: &Tensor) -> Result<Tensor> {
    check::float(loss, arg, w)?;
    check::same_dtype(loss, arg, w, "input", like)?;
    if w.dims() == like.dims() {
        return Ok(w.clone());
    }
    if like.rank() == 0 && w.dims() == [1] {
        // `[1]` against a 0-d input: the one value (Candle cannot broadcast `[1]` to `[]`).
        return w.reshape(());
    }
    let last = like.dims().last().copied();
    let ok = w.rank() == 1 && (w.dim(0)? == 1 || Some(w.dim(0)?) == last);
    if !ok {
        let expected = match last {
            Some(c) => format!(
                "[{c}] (along the last dimension of input {:?}), [1], or {:?}",
                like.dims(),
                like.dims()
            ),
            None => "[1] or [] for a 0-d input".to_string(),
        };
        if !(like.rank() == 0 && w.elem_count() == 1) {
            return Err(check::bad_shape(loss, arg, w, &expected));
        }
        return w.reshape(());
    }
    w.broadcast_as(like.shape())
}

/// Binary cross-entropy of probabilities (`torch.nn.functional.binary_cross_entropy`):
/// `ℓ = −w·[t·max(ln p, −100) + (1 − t)·max(ln(1 − p), −100)]`.
///
/// - `input` `p`: probabilities in `[0, 1]`, any shape; f32 or f64.
/// - `target` `t`: the same shape and dtype, values in `[0, 1]` (soft targets allowed).
/// - `weight`: optional, the input's shape or 1-D along the last dimension.
///
/// Each log term is clamped at −100, as PyTorch, so `p = 0` with `t = 1` costs 100, not inf.
/// Gradient w.r.t. `input`: PyTorch's `w·(p − t) / max(p·(1 − p), 1e-12)` (finite at 0 and 1).
/// No gradient flows to `target`.
///
/// # Errors
/// Shapes or dtypes that differ, `input` or `target` outside `[0, 1]` (as PyTorch), a `weight` of
/// the wrong shape, `Reduction::BatchMean`.
pub fn binary_cross_entropy(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "binary_cross_entropy";
    reduction.standard(LOSS)?;
    check::float_pair(LOSS, "input", input, "target", target)?;
    check::values_in(LOSS, "input", input, 0.0, 1.0, "[0, 1] (probabilities)")?;
    check::values_in(LOSS, "target", target, 0.0, 1.0, "[0, 1]")?;
    let p = input.detach();
    let t = target.detach();
    let log_p = ops::clamp(&p.log()?, -100.0, f64::INFINITY)?;
    let log_q = ops::clamp(&(p.neg()? + 1.0)?.log()?, -100.0, f64::INFINITY)?;
    let value = t.mul(&log_p)?.add(&(t.neg()? + 1.0)?.mul(&log_q)?)?.neg()?;
    let den = p.mul(&(p.neg()? + 1.0)?)?.maximum(1e-12)?;
    let grad = p.sub(&t)?.div(&den)?;
    let mut per = ops::attach_grad(input, &value, &grad)?;
    if let Some(w) = weight {
        per = per.mul(&broadcast_last(LOSS, "weight", w, input)?)?;
    }
    reduce(LOSS, &per, reduction)
}

/// Binary cross-entropy of logits (`torch.nn.functional.binary_cross_entropy_with_logits`):
/// `ℓ = w·[(1 − t)·x + (1 + (pos_weight − 1)·t)·softplus(−x)]`, which equals
/// `−w·[pos_weight·t·ln σ(x) + (1 − t)·ln(1 − σ(x))]` and is finite for logits of any size.
///
/// - `input` `x`: logits, any shape; f32 or f64. `target` `t`: the same shape and dtype.
/// - `weight`: optional, the input's shape or 1-D along the last dimension.
/// - `pos_weight`: optional weight of the positive term, 1-D along the last dimension (one per
///   class) or the input's shape.
///
/// Gradients w.r.t. both `input` and `target` by autodiff.
///
/// # Errors
/// Shapes or dtypes that differ, a `weight` or `pos_weight` of the wrong shape,
/// `Reduction::BatchMean`.
pub fn binary_cross_entropy_with_logits(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    pos_weight: Option<&Tensor>,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "binary_cross_entropy_with_logits";
    reduction.standard(LOSS)?;
    if weight.is_none() && pos_weight.is_none() && kernel::choose(LOSS, input)? {
        check::float_pair(LOSS, "input", input, "target", target)?;
        return fused::pointwise(Pointwise::BceLogits, input, target, reduction);
    }
    let per = bce_with_logits_elementwise(LOSS, input, target, weight, pos_weight)?;
    reduce(LOSS, &per, reduction)
}

/// The unreduced [`binary_cross_entropy_with_logits`].
pub(crate) fn bce_with_logits_elementwise(
    loss: &'static str,
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    pos_weight: Option<&Tensor>,
) -> Result<Tensor> {
    check::float_pair(loss, "input", input, "target", target)?;
    let sp = ops::softplus(&input.neg()?)?;
    let one_minus_t = (target.neg()? + 1.0)?;
    let log_weight = match pos_weight {
        Some(pw) => {
            let pw = broadcast_last(loss, "pos_weight", pw, input)?;
            ((pw - 1.0)?.mul(target)? + 1.0)?
        }
        None => target.ones_like()?,
    };
    let mut per = one_minus_t.mul(input)?.add(&log_weight.mul(&sp)?)?;
    if let Some(w) = weight {
        per = per.mul(&broadcast_last(loss, "weight", w, input)?)?;
    }
    Ok(per)
}

crate::loss_config! {
    /// [`binary_cross_entropy`] as a [`Loss`](crate::Loss) value (`torch.nn.BCELoss`).
    #[derive(Debug, Clone)]
    pub struct BceLoss {
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    tensors {
        /// Weight (input's shape or 1-D along the last dimension).
        weight,
    }
    loss binary_cross_entropy(weight.as_ref(), reduction);
}

crate::loss_config! {
    /// [`binary_cross_entropy_with_logits`] as a [`Loss`](crate::Loss) value (`torch.nn.BCEWithLogitsLoss`).
    #[derive(Debug, Clone)]
    pub struct BceWithLogitsLoss {
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    tensors {
        /// Weight (input's shape or 1-D along the last dimension).
        weight,
        /// Positive-class weight (1-D along the last dimension).
        pos_weight,
    }
    loss binary_cross_entropy_with_logits(weight.as_ref(), pos_weight.as_ref(), reduction);
}
