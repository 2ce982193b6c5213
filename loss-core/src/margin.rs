//! Margin (hinge) losses of `torch.nn`: margin ranking, hinge embedding, soft margin, multi-label
//! soft margin, multi-label margin and multi-class margin.
//!
//! | loss | per element / per sample | PyTorch |
//! |---|---|---|
//! | `margin_ranking_loss` | `max(0, −y·(x₁ − x₂) + margin)` | `margin_ranking_loss` |
//! | `hinge_embedding_loss` | `x` where `y = 1`, `max(0, margin − x)` where `y = −1` | `hinge_embedding_loss` |
//! | `soft_margin_loss` | `ln(1 + e^{−y·x})` | `soft_margin_loss` |
//! | `multilabel_soft_margin_loss` | `−Σ_c w_c·(y_c·lnσ(x_c) + (1 − y_c)·lnσ(−x_c)) / C` | `multilabel_soft_margin_loss` |
//! | `multilabel_margin_loss` | `Σ_{j ∈ y} Σ_{i ∉ y} max(0, 1 − (x_j − x_i)) / C` | `multilabel_margin_loss` |
//! | `multi_margin_loss` | `Σ_{i ≠ y} w_y·max(0, margin − x_y + x_i)^p / C` | `multi_margin_loss` |
//!
//! At a hinge (the clamp argument exactly 0) the gradient is PyTorch's `clamp_min` rule, 1 (see
//! [`ops::clamp`]); the derivative there is a convention, so no reference case pins it.
//! Every loss is written in plain Candle ops and [`crate::ops`] primitives (the CPU and any other
//! device run the same code). Label targets (±1, 0/1, class indices) get no gradient.
//!
//! Sources: the `torch.nn.functional` functions named above (torch 2.15); Weston & Watkins 1999
//! and Crammer & Singer 2001 (multi-class hinge); Elisseeff & Weston 2001 (multi-label ranking).

use crate::check;
use crate::error::LossError;
use crate::fused::{self, Pointwise};
use crate::kernel;
use crate::ops;
use crate::reduction::{reduce, Reduction};
use candle_core::{DType, Result, Tensor, D};

/// `max(0, z)` with PyTorch's `clamp_min` gradient (1 at 0), NaN kept.
pub(crate) fn hinge(z: &Tensor) -> Result<Tensor> {
    ops::clamp(z, 0.0, f64::INFINITY)
}

/// Three float tensors of one shape and dtype (`names` in order).
pub(crate) fn float_triple(loss: &'static str, names: [&'static str; 3], t: [&Tensor; 3]) -> Result<()> {
    check::float_pair(loss, names[0], t[0], names[1], t[1])?;
    check::float(loss, names[2], t[2])?;
    check::same_shape(loss, names[2], t[2], names[0], t[0])?;
    check::same_dtype(loss, names[2], t[2], names[0], t[0])
}

/// Margin ranking loss (`torch.nn.functional.margin_ranking_loss`):
/// `max(0, −target·(input1 − input2) + margin)` elementwise.
///
/// `target` is 1 where `input1` should rank higher, −1 where `input2` should. `margin` (default
/// 0) may be negative. Shapes: `input1`, `input2` and `target` identical (any rank), one float
/// dtype; no broadcasting. Gradients flow to `input1`, `input2` and `target` (`−(input1 − input2)`
/// where the hinge is active). On the CPU it runs as one fused kernel; elsewhere as Candle ops.
///
/// # Errors
/// Shapes or dtypes that differ, a non-float dtype, a non-finite `margin`, `Reduction::BatchMean`.
pub fn margin_ranking_loss(
    input1: &Tensor,
    input2: &Tensor,
    target: &Tensor,
    margin: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "margin_ranking_loss";
    float_triple(LOSS, ["input1", "input2", "target"], [input1, input2, target])?;
    check::param(LOSS, "margin", margin, margin.is_finite(), "a finite value")?;
    reduction.standard(LOSS)?;
    if input1.elem_count() > 0 && kernel::choose(LOSS, input1)? {
        return fused::margin_ranking([input1, input2, target], margin, reduction);
    }
    let z = target.mul(&input1.sub(input2)?)?.affine(-1.0, margin)?;
    reduce(LOSS, &hinge(&z)?, reduction)
}

/// Hinge embedding loss (`torch.nn.functional.hinge_embedding_loss`): elementwise `input` where
/// `target = 1`, `max(0, margin − input)` where `target = −1` (PyTorch's exact rule: the first
/// term where `target ≠ −1`, the second where `target ≠ 1`, so another label value gets both).
///
/// `input` is typically a distance; `margin` defaults to 1. Shapes: `input` and `target`
/// identical, any rank, one float dtype. Gradient flows to `input` (0 where `margin − input = 0`
/// exactly, as PyTorch's clamp). On the CPU it runs as one fused kernel; elsewhere as Candle ops.
///
/// # Errors
/// Shapes or dtypes that differ, a non-float dtype, a non-finite `margin`, `Reduction::BatchMean`.
pub fn hinge_embedding_loss(input: &Tensor, target: &Tensor, margin: f64, reduction: Reduction) -> Result<Tensor> {
    const LOSS: &str = "hinge_embedding_loss";
    check::float_pair(LOSS, "input", input, "target", target)?;
    check::param(LOSS, "margin", margin, margin.is_finite(), "a finite value")?;
    reduction.standard(LOSS)?;
    if kernel::choose(LOSS, input)? {
        return fused::pointwise(Pointwise::HingeEmbedding { margin }, input, target, reduction);
    }
    let zeros = input.zeros_like()?;
    let neg = target
        .ne(1.0)?
        .where_cond(&hinge(&input.affine(-1.0, margin)?)?, &zeros)?;
    let pos = target.ne(-1.0)?.where_cond(input, &zeros)?;
    reduce(LOSS, &neg.add(&pos)?, reduction)
}

/// Soft margin loss (`torch.nn.functional.soft_margin_loss`): `ln(1 + e^{−target·input})`,
/// i.e. `softplus(−target·input)`, elementwise (a two-class logistic loss with ±1 labels).
///
/// Computed stably: at `target·input = −100` it is 100 with gradient `−target` (PyTorch's f32
/// kernel gives inf and NaN there). Shapes: `input` and `target` identical, any rank, one float
/// dtype. Gradient flows to `input`. On the CPU it runs as one fused kernel; elsewhere as Candle
/// ops.
///
/// # Errors
/// Shapes or dtypes that differ, a non-float dtype, `Reduction::BatchMean`.
pub fn soft_margin_loss(input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    const LOSS: &str = "soft_margin_loss";
    check::float_pair(LOSS, "input", input, "target", target)?;
    reduction.standard(LOSS)?;
    if kernel::choose(LOSS, input)? {
        return fused::pointwise(Pointwise::SoftMargin, input, target, reduction);
    }
    let per = ops::softplus(&target.mul(input)?.neg()?)?;
    reduce(LOSS, &per, reduction)
}

/// The class weights of a fused kernel (a weight without gradient: a constant).
fn constant_weights(w: &Tensor) -> Result<Vec<f64>> {
    w.to_dtype(DType::F64)?.to_vec1::<f64>()
}

/// `[N, C]` or `[C]` input check shared by the three multi-class/multi-label losses.
fn check_rows(loss: &'static str, input: &Tensor) -> Result<usize> {
    check::float(loss, "input", input)?;
    match input.rank() {
        1 | 2 => Ok(input.dim(D::Minus1)?),
        _ => Err(check::bad_shape(loss, "input", input, "[N, C] or [C]")),
    }
}

/// Multi-label soft margin loss (`torch.nn.functional.multilabel_soft_margin_loss`): per sample
/// `−Σ_c w_c·(y_c·lnσ(x_c) + (1 − y_c)·lnσ(−x_c)) / C` (binary cross-entropy with logits per
/// class, averaged over the classes), then the reduction over the samples.
///
/// - `input` `[N, C]` or `[C]`, f32 or f64; `target` (0/1, or soft labels in `[0, 1]`) of the
///   input's shape and dtype.
/// - `weight`: optional `[C]` along the last dimension; the divisor stays `C` whatever the
///   weights.
/// - Output: `[N]` (`[]` for a `[C]` input) with `Reduction::None`, else 0-d (`Mean` over `N`).
///
/// Gradients flow to `input`, `target` and `weight`. On the CPU, with a weight that needs no
/// gradient, it runs as one fused row kernel (written with [`crate::kernel`]); otherwise as
/// Candle ops.
///
/// # Errors
/// An input of another rank, shapes or dtypes that differ, a `weight` that is not `[C]` of the
/// input's dtype, `Reduction::BatchMean`.
pub fn multilabel_soft_margin_loss(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "multilabel_soft_margin_loss";
    let c = check_rows(LOSS, input)?;
    check::float_pair(LOSS, "input", input, "target", target)?;
    if let Some(w) = weight {
        check::weight_vector(LOSS, "weight", w, c, input)?;
    }
    reduction.standard(LOSS)?;
    if input.elem_count() > 0 && weight.is_none_or(|w| !w.track_op()) && kernel::choose(LOSS, input)? {
        let w = weight.map(constant_weights).transpose()?;
        return fused::multilabel_soft_margin(input, target, w, reduction);
    }
    let one_minus = target.affine(-1.0, 1.0)?;
    let ls_pos = ops::log_sigmoid(input)?;
    let ls_neg = ops::log_sigmoid(&input.neg()?)?;
    let mut per = target.mul(&ls_pos)?.add(&one_minus.mul(&ls_neg)?)?.neg()?;
    if let Some(w) = weight {
        per = per.broadcast_mul(w)?;
    }
    let per = if c == 0 {
        // 0 classes: the sum is 0 and 0 / 0 is NaN, as PyTorch.
        per.sum(D::Minus1)?.affine(0.0, f64::NAN)?
    } else {
        per.sum(D::Minus1)?.affine(1.0 / c as f64, 0.0)?
    };
    reduce(LOSS, &per, reduction)
}

/// Multi-label margin loss (`torch.nn.functional.multilabel_margin_loss`): per sample
/// `Σ_{j ∈ targets} Σ_{i ∉ targets} max(0, 1 − (x_j − x_i)) / C`, a hinge between every target
/// class and every non-target class.
///
/// - `input` `[N, C]` or `[C]`, f32 or f64.
/// - `target`: class indices (i64 or u32) of the input's shape. Each row lists the target classes
///   and ends at its first `−1`; later entries are ignored, but every entry must lie in
///   `[−1, C)`. A class listed twice counts twice (PyTorch's loop over the list).
/// - Output: `[N]` (`[]` for a `[C]` input) with `Reduction::None`, else 0-d (`Mean` over `N`;
///   an empty `Sum` is 0).
///
/// Gradient flows to `input`. Memory: an `[N, C, C]` intermediate (the pairs).
///
/// # Errors
/// An input of another rank, a target of another shape or a float dtype, an entry outside
/// `[−1, C)`, `Reduction::BatchMean`.
pub fn multilabel_margin_loss(input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    const LOSS: &str = "multilabel_margin_loss";
    let c = check_rows(LOSS, input)?;
    check::index(LOSS, "target", target)?;
    check::same_shape(LOSS, "target", target, "input", input)?;
    reduction.standard(LOSS)?;
    let idx = target.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?;
    if let Some(&bad) = idx.iter().find(|&&i| i < -1 || i >= c as i64) {
        return Err(LossError::BadOptions {
            loss: LOSS,
            message: format!(
                "`target` holds {bad}, outside [-1, {c}) (a class index, or -1 to end the row; target shape {:?})",
                target.dims()
            ),
        }
        .into());
    }
    let unbatched = input.rank() == 1;
    let x = if unbatched { input.unsqueeze(0)? } else { input.clone() };
    let n = x.dim(0)?;
    if n == 0 || c == 0 {
        let per = Tensor::zeros(n, input.dtype(), input.device())?;
        let per = if unbatched { per.squeeze(0)? } else { per };
        return reduce(LOSS, &per, reduction);
    }
    // pair[n, j, i] = (times j is listed) · (i is not listed).
    let mut pair = vec![0f32; n * c * c];
    for row in 0..n {
        let mut count = vec![0f32; c];
        for &j in idx[row * c..(row + 1) * c].iter().take_while(|&&j| j != -1) {
            count[j as usize] += 1.0;
        }
        for j in 0..c {
            if count[j] == 0.0 {
                continue;
            }
            for i in 0..c {
                if count[i] == 0.0 {
                    pair[(row * c + j) * c + i] = count[j];
                }
            }
        }
    }
    let pair = Tensor::from_vec(pair, (n, c, c), input.device())?.to_dtype(input.dtype())?;
    // z[n, j, i] = 1 − x_j + x_i.
    let z = x.unsqueeze(1)?.broadcast_sub(&x.unsqueeze(2)?)?.affine(1.0, 1.0)?;
    let h = hinge(&z)?;
    let used = pair.gt(0.0)?;
    let per = used
        .where_cond(&h.mul(&pair)?, &pair.zeros_like()?)?
        .sum(2)?
        .sum(1)?
        .affine(1.0 / c as f64, 0.0)?;
    let per = if unbatched { per.squeeze(0)? } else { per };
    reduce(LOSS, &per, reduction)
}

/// Multi-class margin loss (`torch.nn.functional.multi_margin_loss`; Weston & Watkins 1999):
/// per sample `Σ_{i ≠ y} w_y·max(0, margin − x_y + x_i)^p / C`.
///
/// - `input` `[N, C]` or `[C]`, f32 or f64; `target` class indices (i64 or u32) `[N]` (0-d for a
///   `[C]` input) in `[0, C)`.
/// - `p` 1 (default) or 2; `margin` default 1; `weight` optional `[C]`, applied after the power
///   (PyTorch's kernel; its docs put it inside). `Mean` is the plain mean over `N`, not weighted.
/// - Output: `[N]` (`[]` for a `[C]` input) with `Reduction::None`, else 0-d (an empty `Sum` is 0).
///
/// Gradients flow to `input` and `weight`. On the CPU, with a weight that needs no gradient, it
/// runs as one fused row kernel (written with [`crate::kernel`]); otherwise as Candle ops.
///
/// # Errors
/// An input of another rank, a float target or one of another shape, an index outside `[0, C)`,
/// `p` other than 1 or 2, a non-finite `margin`, a `weight` that is not `[C]`,
/// `Reduction::BatchMean`.
pub fn multi_margin_loss(
    input: &Tensor,
    target: &Tensor,
    p: u32,
    margin: f64,
    weight: Option<&Tensor>,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "multi_margin_loss";
    let c = check_rows(LOSS, input)?;
    check::index(LOSS, "target", target)?;
    let want: &[usize] = if input.rank() == 1 { &[] } else { &input.dims()[..1] };
    if target.dims() != want {
        return Err(check::bad_shape(
            LOSS,
            "target",
            target,
            &format!("{want:?} (one class index per row of the input {:?})", input.dims()),
        ));
    }
    check::param(LOSS, "p", p as f64, p == 1 || p == 2, "1 or 2")?;
    check::param(LOSS, "margin", margin, margin.is_finite(), "a finite value")?;
    if let Some(w) = weight {
        check::weight_vector(LOSS, "weight", w, c, input)?;
    }
    reduction.standard(LOSS)?;
    check::class_indices(LOSS, "target", target, c, None)?;
    if input.elem_count() > 0 && weight.is_none_or(|w| !w.track_op()) && kernel::choose(LOSS, input)? {
        let w = weight.map(constant_weights).transpose()?;
        return fused::multi_margin(input, target, p, margin, w, reduction);
    }
    let unbatched = input.rank() == 1;
    let x = if unbatched { input.unsqueeze(0)? } else { input.clone() };
    let y = target.flatten_all()?.to_dtype(DType::U32)?;
    let n = x.dim(0)?;
    if n == 0 {
        return reduce(LOSS, &Tensor::zeros(0, input.dtype(), input.device())?, reduction);
    }
    let y2 = y.unsqueeze(1)?;
    let xy = x.gather(&y2, 1)?;
    let z = x.broadcast_sub(&xy)?.affine(1.0, margin)?;
    let mut h = hinge(&z)?;
    if p == 2 {
        h = h.sqr()?;
    }
    let classes = Tensor::arange(0u32, c as u32, input.device())?.unsqueeze(0)?;
    let is_y = classes.broadcast_eq(&y2)?;
    let mut per = is_y.where_cond(&h.zeros_like()?, &h)?.sum(1)?;
    if let Some(w) = weight {
        per = per.mul(&w.index_select(&y, 0)?)?;
    }
    let per = per.affine(1.0 / c as f64, 0.0)?;
    let per = if unbatched { per.squeeze(0)? } else { per };
    reduce(LOSS, &per, reduction)
}

crate::loss_config! {
    /// [`margin_ranking_loss`] as a value (`torch.nn.MarginRankingLoss`): three inputs, so it has
    /// [`MarginRankingLoss::forward3`] instead of [`Loss`](crate::Loss) (see the crate docs,
    /// "Losses of three or four inputs").
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct MarginRankingLoss {
        /// Margin.
        margin: f64 = 0.0,
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    forward3 margin_ranking_loss(input1, input2, target; margin, reduction);
}

crate::loss_config! {
    /// [`hinge_embedding_loss`] as a [`Loss`](crate::Loss) value (`torch.nn.HingeEmbeddingLoss`).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct HingeEmbeddingLoss {
        /// Margin.
        margin: f64 = 1.0,
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    loss hinge_embedding_loss(margin, reduction);
}

crate::loss_config! {
    /// [`soft_margin_loss`] as a [`Loss`](crate::Loss) value (`torch.nn.SoftMarginLoss`).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct SoftMarginLoss {
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    loss soft_margin_loss(reduction);
}

crate::loss_config! {
    /// [`multilabel_soft_margin_loss`] as a [`Loss`](crate::Loss) value (`torch.nn.MultiLabelSoftMarginLoss`).
    #[derive(Debug, Clone)]
    pub struct MultilabelSoftMarginLoss {
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    tensors {
        /// Per-class weight `[C]`.
        weight,
    }
    loss multilabel_soft_margin_loss(weight.as_ref(), reduction);
}

crate::loss_config! {
    /// [`multilabel_margin_loss`] as a [`Loss`](crate::Loss) value (`torch.nn.MultiLabelMarginLoss`).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct MultilabelMarginLoss {
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    loss multilabel_margin_loss(reduction);
}

crate::loss_config! {
    /// [`multi_margin_loss`] as a [`Loss`](crate::Loss) value (`torch.nn.MultiMarginLoss`).
    #[derive(Debug, Clone)]
    pub struct MultiMarginLoss {
        /// Exponent, 1 or 2.
        p: u32 = 1,
        /// Margin.
        margin: f64 = 1.0,
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    tensors {
        /// Per-class weight `[C]`.
        weight,
    }
    loss multi_margin_loss(p, margin, weight.as_ref(), reduction);
}
