//! Focal losses (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).
//!
//! The modulating factor `(1 − p_t)^γ` down-weights easy examples (`p_t` near 1) so that the
//! many easy negatives of a dense detector do not swamp the loss; `α` balances the classes.
//! The gradient of `(1 − p_t)^γ·ln p_t` is written with `1/(1 − p_t)` folded into the factor that
//! cancels it, so it stays finite at and near `p_t = 1` for every `γ >= 0` (autodiff through
//! `(1 − p_t)^γ` would give `inf · 0 = NaN` there for `γ < 1`).

use super::cross_entropy::{classes_last, index_target, log_softmax, IGNORE_INDEX};
use crate::check;
use crate::fused::{self, Pointwise};
use crate::kernel;
use crate::ops;
use crate::reduction::{reduce, reduce_weighted_mean, Reduction};
use candle_core::{Result, Tensor};

fn check_gamma(loss: &'static str, gamma: f64) -> Result<()> {
    check::non_negative(loss, "gamma", gamma)
}

/// Sigmoid focal loss of logits, as `torchvision.ops.sigmoid_focal_loss`:
/// `ℓ = α_t·(1 − p_t)^γ·BCEWithLogits(x, t)` with `p = σ(x)`, `p_t = p·t + (1 − p)·(1 − t)`,
/// `α_t = α·t + (1 − α)·(1 − t)`.
///
/// - `input` `x`: logits, any shape; `target` `t`: the same shape and dtype (0/1, soft allowed).
/// - `alpha` in `[0, 1]` (torchvision's default 0.25), or `-1` to disable the α weighting.
/// - `gamma` ≥ 0 (default 2). torchvision's default reduction is `None`.
///
/// `1 − p_t` is computed as `t·σ(−x) + (1 − t)·σ(x)`, exact for saturated logits. The value and
/// the gradients (w.r.t. `input` and `target`) are finite for every finite logit with `t` in
/// `[0, 1]`, also for `γ < 1` at saturated logits (the `1/q` of `γ·q^(γ−1)` is folded into the
/// factor that cancels it). A `t` outside `[0, 1]` can make `1 − p_t` negative and `(1 − p_t)^γ`
/// NaN for a non-integer `γ`, as torchvision.
///
/// # Errors
/// Shapes or dtypes that differ, `gamma < 0`, `alpha` outside `[0, 1]` and not `-1`,
/// `Reduction::BatchMean`.
pub fn sigmoid_focal_loss(
    input: &Tensor,
    target: &Tensor,
    alpha: f64,
    gamma: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "sigmoid_focal_loss";
    reduction.standard(LOSS)?;
    check_gamma(LOSS, gamma)?;
    check::param(
        LOSS,
        "alpha",
        alpha,
        (0.0..=1.0).contains(&alpha) || alpha == -1.0,
        "a value in [0, 1], or -1 to disable",
    )?;
    if kernel::choose(LOSS, input)? {
        check::float_pair(LOSS, "input", input, "target", target)?;
        return fused::pointwise(Pointwise::SigmoidFocal { alpha, gamma }, input, target, reduction);
    }
    check::float_pair(LOSS, "input", input, "target", target)?;
    reduce(LOSS, &sigmoid_focal_composite(input, target, alpha, gamma)?, reduction)
}

/// The elementwise sigmoid focal loss from plain Candle ops (any device), with the fused kernel's
/// analytic gradients w.r.t. `input` and `target` joined by [`ops::attach_grad`].
///
/// Autodiff through `q^γ` would multiply `γ·q^(γ−1)` (which overflows for a tiny `q`, i.e.
/// saturated logits, when `γ < 1`) by `dq` (as tiny): `inf·0 = NaN`. Here `1/q` is folded into
/// the factor that cancels it, as in the fused kernel, so the gradient is finite for every
/// finite input with `t` in `[0, 1]`.
fn sigmoid_focal_composite(input: &Tensor, target: &Tensor, alpha: f64, gamma: f64) -> Result<Tensor> {
    let (x, t) = (input.detach(), target.detach());
    let s = ops::sigmoid(&x)?;
    let sn = ops::sigmoid(&x.neg()?)?;
    let one_minus_t = (t.neg()? + 1.0)?;
    let q = t.mul(&sn)?.add(&one_minus_t.mul(&s)?)?;
    let ce = one_minus_t.mul(&x)?.add(&ops::softplus(&x.neg()?)?)?;
    let qg = ops::powf(&q, gamma)?;
    let zeros = q.zeros_like()?;
    let (fx, ft) = if gamma == 0.0 {
        (zeros.clone(), zeros.clone())
    } else {
        let at_zero = q.eq(0.0)?;
        let q_safe = at_zero.where_cond(&q.ones_like()?, &q)?;
        let g = qg.affine(gamma, 0.0)?;
        let dq_dx = t.affine(-2.0, 1.0)?.mul(&s)?.mul(&sn)?;
        let fx = g.mul(&dq_dx.div(&q_safe)?)?.mul(&ce)?;
        let ft = g.mul(&ce.div(&q_safe)?)?.mul(&sn.sub(&s)?)?;
        (at_zero.where_cond(&zeros, &fx)?, at_zero.where_cond(&zeros, &ft)?)
    };
    let mut gx = fx.add(&qg.mul(&s.sub(&t)?)?)?;
    let mut gt = ft.sub(&qg.mul(&x)?)?;
    let mut value = ce.mul(&qg)?;
    if alpha >= 0.0 {
        let alpha_t = t.affine(alpha, 0.0)?.add(&one_minus_t.affine(1.0 - alpha, 0.0)?)?;
        gt = gt.mul(&alpha_t)?.add(&value.affine(2.0 * alpha - 1.0, 0.0)?)?;
        gx = gx.mul(&alpha_t)?;
        value = value.mul(&alpha_t)?;
    }
    ops::attach_grad(input, &value, &gx)?.add(&ops::attach_grad(target, &zeros, &gt)?)
}

/// `(1 − p)^γ·(−ln p)` of log-probabilities `l = ln p`, with the derivative
/// `d/dl = q^γ·(γ·p·(l/q) − 1)`, `q = 1 − p`, taking `l/q` at its limit −1 where `q = 0`.
///
/// Autodiff through `q^γ` gives `γ·0^(γ−1)·0 = inf·0 = NaN` at `p = 1` for `γ < 1` (and overflows
/// near it); the derivative above is the same expression with `1/q` folded into `l/q`, finite
/// everywhere (0 at `p = 1` for `γ > 0`, the cross-entropy's −1 for `γ = 0`).
fn focal_nll(l: &Tensor, gamma: f64) -> Result<Tensor> {
    let l0 = l.detach();
    let p = l0.exp()?;
    let q = (p.neg()? + 1.0)?;
    let qg = ops::powf(&q, gamma)?;
    let value = qg.mul(&l0.neg()?)?;
    let at_zero = q.eq(0.0)?;
    let q_safe = at_zero.where_cond(&q.ones_like()?, &q)?;
    let ratio = at_zero.where_cond(&q.ones_like()?.neg()?, &l0.div(&q_safe)?)?;
    let derivative = qg.mul(&p.mul(&ratio)?.affine(gamma, -1.0)?)?;
    ops::attach_grad(l, &value, &derivative)
}

/// Softmax (multi-class) focal loss: `ℓᵢ = −α_{yᵢ}·(1 − p_t)^γ·ln p_t` with
/// `p_t = softmax(input)[i, yᵢ]`; 0 where `yᵢ = ignore_index`.
///
/// - `input`: logits `[N, C]` or `[N, C, d1, ...]`, f32 or f64.
/// - `target`: class indices `[N, d1, ...]` (u32 or i64) in `[0, C)` or equal to `ignore_index`.
/// - `alpha`: optional per-class weights `[C]` (none: all 1). `gamma` ≥ 0 (default 2).
/// - `mean` divides the sum by the number of non-ignored samples (NaN when all are ignored,
///   with a zero gradient), not by the α weights.
///
/// With `gamma = 0` and no `alpha` this is exactly [`super::cross_entropy`].
///
/// # Errors
/// As `cross_entropy` with index targets; `gamma < 0`; an `alpha` not of length `C`.
pub fn softmax_focal_loss(
    input: &Tensor,
    target: &Tensor,
    alpha: Option<&Tensor>,
    gamma: f64,
    ignore_index: i64,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "softmax_focal_loss";
    reduction.standard(LOSS)?;
    check_gamma(LOSS, gamma)?;
    check::float(LOSS, "input", input)?;
    check::min_rank(LOSS, "input", input, 2, "[N, C] or [N, C, d1, ...]")?;
    super::cross_entropy::check_classes(LOSS, input)?;
    if let Some(a) = alpha {
        check::weight_vector(LOSS, "alpha", a, input.dim(1)?, input)?;
    }
    let (y_safe, kept, _) = index_target(LOSS, input, target, ignore_index)?;
    let logp = classes_last(&log_softmax(input, 1)?)?;
    let logp_t = logp.gather(&y_safe.unsqueeze(1)?, 1)?.squeeze(1)?;
    let mut per = focal_nll(&logp_t, gamma)?;
    if let Some(a) = alpha {
        per = per.mul(&a.index_select(&y_safe, 0)?)?;
    }
    let zeros = per.zeros_like()?;
    let per = kept.where_cond(&per, &zeros)?;
    match reduction {
        Reduction::None => per.reshape(super::cross_entropy::index_target_dims(input)),
        r => {
            let count = kept.where_cond(&zeros.ones_like()?, &zeros)?;
            reduce_weighted_mean(LOSS, &per, &count, r)
        }
    }
}

crate::loss_config! {
    /// [`sigmoid_focal_loss`] as a [`Loss`](crate::Loss) value.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct SigmoidFocalLoss {
        /// Class balance in `[0, 1]`, or -1 for none.
        alpha: f64 = 0.25,
        /// Focusing parameter ≥ 0.
        gamma: f64 = 2.0,
        /// Reduction (`None`, as torchvision).
        reduction: Reduction = Reduction::None,
    }
    loss sigmoid_focal_loss(alpha, gamma, reduction);
}

crate::loss_config! {
    /// [`softmax_focal_loss`] as a [`Loss`](crate::Loss) value.
    #[derive(Debug, Clone)]
    pub struct SoftmaxFocalLoss {
        /// Focusing parameter ≥ 0.
        gamma: f64 = 2.0,
        /// Ignored target value.
        ignore_index: i64 = IGNORE_INDEX,
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    tensors {
        /// Per-class weights `[C]`.
        alpha,
    }
    loss softmax_focal_loss(alpha.as_ref(), gamma, ignore_index, reduction);
}
