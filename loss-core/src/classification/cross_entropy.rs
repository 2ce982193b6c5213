//! Cross-entropy (hard or soft targets, `weight`, `ignore_index`, `label_smoothing`) and NLL.
//!
//! Source: `torch.nn.functional.cross_entropy` and `nll_loss`, including their denominators.
//! With `logp = log_softmax(input, dim = 1)`, `C` classes, `ε = label_smoothing` and per-class
//! weights `w` (all 1 when absent):
//!
//! - index targets `y`: `ℓᵢ = (1 − ε)·(−w_yᵢ·logp[i, yᵢ]) + (ε / C)·(−Σ_c w_c·logp[i, c])`,
//!   `ℓᵢ = 0` where `yᵢ = ignore_index`; `mean` divides the sum by `Σ_{i kept} w_yᵢ` (NaN when
//!   every target is ignored, with a zero gradient);
//! - probability targets `t` (the logits' shape): `ℓᵢ = −Σ_c w_c·t'[i, c]·logp[i, c]` with
//!   `t' = (1 − ε)·t + ε / C`; `mean` divides by the number of rows `N·d1·…`.

use crate::check;
use crate::error::LossError;
use crate::fused::{self, CrossEntropyRows};
use crate::kernel;
use crate::reduction::{reduce, reduce_weighted_mean, sum_all, Reduction};
use candle_core::{DType, Result, Tensor};

/// PyTorch's default `ignore_index`.
pub const IGNORE_INDEX: i64 = -100;

/// `log_softmax` over dimension `dim`, stable for large logits.
pub fn log_softmax(x: &Tensor, dim: usize) -> Result<Tensor> {
    if x.elem_count() == 0 {
        // Nothing to normalise (Candle's max refuses empty tensors); keep the graph.
        return x.affine(1.0, 0.0);
    }
    let m = x.max_keepdim(dim)?.detach();
    // A row of -inf logits has max -inf: shift by 0 there to keep -inf, not NaN.
    let finite = m.sub(&m)?.eq(0.0)?;
    let m = finite.where_cond(&m, &m.zeros_like()?)?;
    let shifted = x.broadcast_sub(&m)?;
    let lse = shifted.exp()?.sum_keepdim(dim)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Moves the class dimension (1) of `[N, C, d1, ...]` last and flattens to `[M, C]`.
pub(crate) fn classes_last(x: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    let x = if x.rank() > 2 {
        let mut perm: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
        perm.push(1);
        x.permute(perm)?.contiguous()?
    } else {
        x.clone()
    };
    x.reshape(((), c))
}

/// The shape of the index target that goes with `[N, C, d1, ...]`: `[N, d1, ...]`.
pub(crate) fn index_target_dims(input: &Tensor) -> Vec<usize> {
    let mut d = input.dims().to_vec();
    d.remove(1);
    d
}

/// Checks an index target against `input` `[N, C, ...]` and returns it flattened as i64 `[M]`,
/// together with the "kept" mask (`target != ignore_index`) as u8 `[M]`.
pub(crate) fn index_target(
    loss: &'static str,
    input: &Tensor,
    target: &Tensor,
    ignore_index: i64,
) -> Result<(Tensor, Tensor, Tensor)> {
    check::index(loss, "target", target)?;
    let want = index_target_dims(input);
    if target.dims() != want.as_slice() {
        return Err(check::bad_shape(
            loss,
            "target",
            target,
            &format!("{want:?} (input {:?} without the class dimension 1)", input.dims()),
        ));
    }
    let classes = input.dim(1)?;
    check::class_indices(loss, "target", target, classes, Some(ignore_index))?;
    let y = target.flatten_all()?.to_dtype(DType::I64)?;
    let kept = y.ne(ignore_index)?;
    let y_safe = kept.where_cond(&y, &y.zeros_like()?)?;
    Ok((y_safe, kept, y))
}

/// Adds a leading batch dimension to unbatched input (`[C]` logits): returns the batched input
/// and target and whether to squeeze the unreduced result.
fn batched(loss: &'static str, input: &Tensor, target: &Tensor, index: bool) -> Result<(Tensor, Tensor, bool)> {
    match input.rank() {
        0 => Err(check::bad_shape(
            loss,
            "input",
            input,
            "[N, C], [N, C, d1, ...] or unbatched [C]",
        )),
        1 => {
            let t = if index || target.rank() == 1 {
                target.unsqueeze(0)?
            } else {
                target.clone()
            };
            Ok((input.unsqueeze(0)?, t, true))
        }
        _ => Ok((input.clone(), target.clone(), false)),
    }
}

/// The options of the composite cross-entropy and NLL ([`cross_entropy`]'s arguments after the
/// tensors).
#[derive(Clone, Copy)]
struct Options<'a> {
    weight: Option<&'a Tensor>,
    ignore_index: i64,
    label_smoothing: f64,
    reduction: Reduction,
}

/// The weighted NLL of index targets from log-probabilities `logp` `[N, C, ...]`: the common core of
/// [`cross_entropy`] and [`nll_loss`].
fn nll_core(loss: &'static str, logp: &Tensor, target: &Tensor, o: Options<'_>) -> Result<Tensor> {
    let classes = logp.dim(1)?;
    let (y_safe, kept, _) = index_target(loss, logp, target, o.ignore_index)?;
    let lp = classes_last(logp)?;
    let picked = lp.gather(&y_safe.unsqueeze(1)?, 1)?.squeeze(1)?;
    let scaled;
    let weight = match (o.weight, o.reduction) {
        (Some(w), Reduction::Mean) => {
            // The mean does not change when every weight is scaled alike: divide them by the
            // denominator Σ_kept w_y first, so that the gradient w_y / Σ w_y never goes through
            // 1 / Σ w_y (which overflows for tiny weights, e.g. 1e-39 in f32).
            let w_y = kept.where_cond(&w.index_select(&y_safe, 0)?, &picked.zeros_like()?)?;
            let total = sum_all(&w_y)?.detach();
            if total.to_dtype(DType::F64)?.to_scalar::<f64>()? > 0.0 {
                scaled = w.detach().broadcast_div(&total)?;
                Some(&scaled)
            } else {
                Some(w)
            }
        }
        (w, _) => w,
    };
    let w_y = match weight {
        Some(w) => w.index_select(&y_safe, 0)?,
        None => picked.ones_like()?,
    };
    let zeros = picked.zeros_like()?;
    let mut per = kept.where_cond(&picked.mul(&w_y)?.neg()?, &zeros)?;
    if o.label_smoothing > 0.0 {
        let all = match weight {
            Some(w) => lp.broadcast_mul(&w.unsqueeze(0)?)?,
            None => lp.clone(),
        };
        let smooth = kept.where_cond(&all.sum(1)?.neg()?, &zeros)?;
        let eps = o.label_smoothing;
        per = (per.affine(1.0 - eps, 0.0)? + smooth.affine(eps / classes as f64, 0.0)?)?;
    }
    let den = kept.where_cond(&w_y, &zeros)?;
    match o.reduction.standard(loss)? {
        Reduction::None => per.reshape(index_target_dims(logp)),
        r => reduce_weighted_mean(loss, &per, &den, r),
    }
}

/// Logits `[N, C, ...]` need at least one class.
pub(crate) fn check_classes(loss: &'static str, input: &Tensor) -> Result<()> {
    if input.dim(1)? == 0 {
        return Err(check::bad_shape(
            loss,
            "input",
            input,
            "[N, C, d1, ...] with at least one class (C >= 1)",
        ));
    }
    Ok(())
}

fn check_common(loss: &'static str, input: &Tensor, weight: Option<&Tensor>, label_smoothing: f64) -> Result<()> {
    check::float(loss, "input", input)?;
    check_classes(loss, input)?;
    check::param(
        loss,
        "label_smoothing",
        label_smoothing,
        (0.0..=1.0).contains(&label_smoothing),
        "a value in [0, 1]",
    )?;
    if let Some(w) = weight {
        check::weight_vector(loss, "weight", w, input.dim(1)?, input)?;
    }
    Ok(())
}

/// Cross-entropy between logits and class-index or class-probability targets
/// (`torch.nn.functional.cross_entropy`).
///
/// - `input`: logits `[N, C]`, `[N, C, d1, ...]`, or unbatched `[C]`; f32 or f64.
/// - `target`: class indices `[N]` / `[N, d1, ...]` / `[]` (u32 or i64, each in `[0, C)` or equal to
///   `ignore_index`), **or** probabilities of exactly the input's shape and dtype.
/// - `weight`: optional per-class weights `[C]` of the input's dtype.
/// - `ignore_index` (default [`IGNORE_INDEX`] = -100): targets equal to it contribute 0 and are left
///   out of the mean's denominator; index targets only (must be negative with probability targets).
/// - `label_smoothing` in `[0, 1]` (default 0).
///
/// Output: `[N, d1, ...]` for `Reduction::None`, else 0-d. Formula and denominators: see the
/// module docs. Gradients via autodiff of a stable `log_softmax`.
///
/// Zero mass is zero: with probability targets, a class whose (smoothed) target is exactly 0 adds
/// 0 to the value and 0 to the gradient even where its logit is `-inf` (a masked class; PyTorch
/// and optax#896 give NaN); with `label_smoothing > 0` no target is 0, so a `-inf` logit costs
/// +inf. A row that `ignore_index` removes contributes 0 with a zero gradient even when all its
/// logits are `-inf` (PyTorch#11551), on the fused and the composite path.
///
/// # Errors
/// Rank 0 input, a target of the wrong shape or dtype, a class index out of range, a `weight` not
/// of length `C`, `label_smoothing` outside `[0, 1]`, `ignore_index >= 0` with probability
/// targets, `Reduction::BatchMean`.
pub fn cross_entropy(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    ignore_index: i64,
    label_smoothing: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "cross_entropy";
    reduction.standard(LOSS)?;
    let index = !target.dtype().is_float();
    let (x, t, unbatched) = batched(LOSS, input, target, index)?;
    check_common(LOSS, &x, weight, label_smoothing)?;
    if index && kernel::choose(LOSS, &x)? {
        index_target(LOSS, &x, &t, ignore_index)?;
        let opts = CrossEntropyRows {
            weight: weight.map(|w| w.to_dtype(DType::F64)?.to_vec1::<f64>()).transpose()?,
            ignore_index,
            label_smoothing,
            reduction,
        };
        // [N, C, d1, ...] runs as [N·d1·…, C] rows (one copy of the logits, inside the graph).
        let out = fused::cross_entropy_rows(&classes_last(&x)?, &t.flatten_all()?, opts)?;
        return match reduction {
            Reduction::None if unbatched => out.squeeze(0),
            Reduction::None => out.reshape(t.shape()),
            _ => Ok(out),
        };
    }
    // A row that ignore_index removes may hold -inf logits (a fully masked row): its log-softmax
    // would be -inf − (-inf) = NaN and poison the gradient through the where. Its logits are
    // replaced by 0 first; the row contributes 0 and gets a zero gradient either way.
    let x = if index && x.elem_count() > 0 {
        index_target(LOSS, &x, &t, ignore_index)?;
        let kept = t.to_dtype(DType::I64)?.ne(ignore_index)?.unsqueeze(1)?;
        kept.broadcast_as(x.shape())?.where_cond(&x, &x.zeros_like()?)?
    } else {
        x
    };
    let logp = log_softmax(&x, 1)?;
    let o = Options {
        weight,
        ignore_index,
        label_smoothing,
        reduction,
    };
    let out = if index {
        nll_core(LOSS, &logp, &t, o)?
    } else {
        soft_targets(LOSS, &logp, &t, o)?
    };
    if unbatched && reduction == Reduction::None {
        out.squeeze(0)
    } else {
        Ok(out)
    }
}

/// The cross-entropy of probability targets `target` (`logp`'s shape) from log-probabilities.
fn soft_targets(loss: &'static str, logp: &Tensor, target: &Tensor, o: Options<'_>) -> Result<Tensor> {
    let (ignore_index, label_smoothing) = (o.ignore_index, o.label_smoothing);
    check::same_shape(loss, "target", target, "input", logp)?;
    check::same_dtype(loss, "target", target, "input", logp)?;
    if ignore_index >= 0 {
        return Err(LossError::BadOptions {
            loss,
            message: format!(
                "`ignore_index` = {ignore_index} is only for class-index targets; probability targets {:?} need it negative (default -100)",
                target.dims()
            ),
        }
        .into());
    }
    let classes = logp.dim(1)?;
    let t = if label_smoothing > 0.0 {
        target.affine(1.0 - label_smoothing, label_smoothing / classes as f64)?
    } else {
        target.clone()
    };
    // Zero mass is zero: where the (smoothed) target is exactly 0, a log-probability of -inf
    // (a masked logit) is replaced by 0 before the product, so the term is 0, not 0·(-inf) = NaN;
    // the logit's gradient there is softmax·Σt = 0 either way. A smoothed target is not 0.
    let masked = t.eq(0.0)?.mul(&logp.eq(f64::NEG_INFINITY)?)?;
    let logp = masked.where_cond(&logp.zeros_like()?, logp)?;
    let mut prod = logp.mul(&t)?;
    if let Some(w) = o.weight {
        let mut shape = vec![1usize; logp.rank()];
        shape[1] = classes;
        prod = prod.broadcast_mul(&w.reshape(shape)?)?;
    }
    let per = prod.sum(1)?.neg()?;
    reduce(loss, &per, o.reduction)
}

/// Negative log-likelihood of class-index targets given log-probabilities
/// (`torch.nn.functional.nll_loss`): `ℓᵢ = −w_yᵢ·input[i, yᵢ]`, 0 where `yᵢ = ignore_index`.
///
/// - `input`: log-probabilities `[N, C]`, `[N, C, d1, ...]` or unbatched `[C]`; f32 or f64.
/// - `target`: class indices `[N, d1, ...]` (u32 or i64) in `[0, C)` or equal to `ignore_index`.
/// - `weight`: optional `[C]`. `mean` divides by `Σ_{i kept} w_yᵢ` (NaN when all are ignored or
///   that sum is 0, with the gradient of the sum).
///
/// Output: `[N, d1, ...]` for `Reduction::None`, else 0-d.
///
/// # Errors
/// As [`cross_entropy`] with index targets.
pub fn nll_loss(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    ignore_index: i64,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "nll_loss";
    reduction.standard(LOSS)?;
    let (x, t, unbatched) = batched(LOSS, input, target, true)?;
    check_common(LOSS, &x, weight, 0.0)?;
    let o = Options {
        weight,
        ignore_index,
        label_smoothing: 0.0,
        reduction,
    };
    let out = nll_core(LOSS, &x, &t, o)?;
    if unbatched && reduction == Reduction::None {
        out.squeeze(0)
    } else {
        Ok(out)
    }
}

crate::loss_config! {
    /// [`cross_entropy`] as a [`Loss`](crate::Loss) value (`torch.nn.CrossEntropyLoss`).
    #[derive(Debug, Clone)]
    pub struct CrossEntropyLoss {
        /// Ignored target value.
        ignore_index: i64 = IGNORE_INDEX,
        /// Label smoothing in `[0, 1]`.
        label_smoothing: f64 = 0.0,
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    tensors {
        /// Per-class weights `[C]`.
        weight,
    }
    loss cross_entropy(weight.as_ref(), ignore_index, label_smoothing, reduction);
}

crate::loss_config! {
    /// [`nll_loss`] as a [`Loss`](crate::Loss) value (`torch.nn.NLLLoss`).
    #[derive(Debug, Clone)]
    pub struct NllLoss {
        /// Ignored target value.
        ignore_index: i64 = IGNORE_INDEX,
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    tensors {
        /// Per-class weights `[C]`.
        weight,
    }
    loss nll_loss(weight.as_ref(), ignore_index, reduction);
}
