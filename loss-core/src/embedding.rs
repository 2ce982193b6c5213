//! Embedding losses of `torch.nn`: cosine embedding and the two triplet margin losses.
//!
//! | loss | per sample | PyTorch |
//! |---|---|---|
//! | `cosine_embedding_loss` | `1 − cos(x₁, x₂)` where `y = 1`, `max(0, cos(x₁, x₂) − margin)` where `y = −1` | `cosine_embedding_loss` |
//! | `triplet_margin_loss` | `max(0, margin + d(a, p) − d(a, n))`, `d(x, y) = ‖x − y + eps‖_p` | `triplet_margin_loss` |
//! | `triplet_margin_with_distance_loss` | the same with `d` the pairwise distance or `1 − cos` | `triplet_margin_with_distance_loss` |
//!
//! Inputs are `[N, D]` (one embedding per row) or `[D]` (one sample: a 0-d result with
//! `Reduction::None`); the distances and similarities run over the last dimension. Norms are
//! computed on the vector divided by its largest magnitude (then scaled back), so they neither
//! overflow nor underflow where the result is representable; the gradient of a norm at the zero
//! vector is 0, as PyTorch's `linalg.vector_norm`. Written in plain Candle ops (the CPU and any
//! other device run the same code).
//!
//! Sources: `torch.nn.functional.{cosine_embedding_loss, triplet_margin_loss,
//! triplet_margin_with_distance_loss, pairwise_distance, cosine_similarity}` (torch 2.15);
//! Schroff et al., "FaceNet", CVPR 2015 and Balntas et al., BMVC 2016 (triplets, `swap`).

use crate::check;
use crate::fused;
use crate::kernel;
use crate::margin::{float_triple, hinge};
use crate::ops;
use crate::reduction::{reduce, Reduction};
use crate::LossError;
use candle_core::{Result, Tensor, D};

/// `‖v‖_p` over the last dimension (`p ≥ 1`), scaled by the largest magnitude so that no power
/// overflows or underflows; gradient 0 at the zero vector. `v` has rank ≥ 1; output drops the last
/// dimension.
pub(crate) fn vector_norm(v: &Tensor, p: f64) -> Result<Tensor> {
    let out_dims = &v.dims()[..v.rank() - 1];
    if v.elem_count() == 0 {
        return Tensor::zeros(out_dims, v.dtype(), v.device());
    }
    let m = v.detach().abs()?.max_keepdim(D::Minus1)?;
    let m_safe = m.gt(0.0)?.where_cond(&m, &m.ones_like()?)?;
    let u = v.broadcast_div(&m_safe)?;
    let norm = if p == 1.0 {
        ops::abs(&u)?.sum(D::Minus1)?
    } else {
        let s = if p == 2.0 {
            u.sqr()?.sum(D::Minus1)?
        } else {
            ops::powf(&ops::abs(&u)?, p)?.sum(D::Minus1)?
        };
        // s ≥ 1 unless v = 0 (then s = 0, the root's gradient is infinite: take 0, as PyTorch).
        // `ne`, not `gt`: a NaN s must reach the root and stay NaN.
        let pos = s.ne(0.0)?;
        let s1 = pos.where_cond(&s, &s.ones_like()?)?;
        let root = if p == 2.0 { s1.sqrt()? } else { ops::powf(&s1, 1.0 / p)? };
        pos.where_cond(&root, &s.zeros_like()?)?
    };
    norm.mul(&m_safe.squeeze(D::Minus1)?)
}

/// `torch.nn.functional.pairwise_distance(x, y, p, eps)`: `‖x − y + eps‖_p` over the last
/// dimension (eps added to every coordinate of the difference).
pub fn pairwise_distance(x: &Tensor, y: &Tensor, p: f64, eps: f64) -> Result<Tensor> {
    vector_norm(&x.sub(y)?.affine(1.0, eps)?, p)
}

/// `torch.nn.functional.cosine_similarity(x, y, dim = −1, eps)`:
/// `Σ (x/max(‖x‖, eps))·(y/max(‖y‖, eps))` over the last dimension, the clamp invisible to the
/// gradient (PyTorch clamps the norms in place under `no_grad`).
pub fn cosine_similarity(x: &Tensor, y: &Tensor, eps: f64) -> Result<Tensor> {
    let clamped = |t: &Tensor| -> Result<Tensor> {
        let n = vector_norm(t, 2.0)?;
        let shift = n.detach().maximum(eps)?.sub(&n.detach())?;
        n.add(&shift)?.unsqueeze(D::Minus1)
    };
    let xn = x.broadcast_div(&clamped(x)?)?;
    let yn = y.broadcast_div(&clamped(y)?)?;
    xn.mul(&yn)?.sum(D::Minus1)
}

/// Cosine embedding loss (`torch.nn.functional.cosine_embedding_loss`).
///
/// `cos = Σ x₁x₂ / √((Σx₁² + 1e-12)·(Σx₂² + 1e-12))` over the last dimension (PyTorch's EPSILON
/// inside each squared norm; the square root is taken of each factor, so the product does not
/// overflow). Per sample `1 − cos` where `target = 1`, `max(0, cos − margin)` where
/// `target = −1`, 0 for any other label. A zero vector has `cos = 0`; the gradient w.r.t. a zero
/// vector facing a non-zero `y` is `−[target = 1]·y/(‖y‖·1e-6)`.
///
/// Shapes: `input1`, `input2` `[N, D]` with `target` (±1) `[N]`, or `[D]` with a 0-d target; one
/// float dtype. Output: `[N]` (`[]`) with `Reduction::None`, else 0-d. Gradients flow to `input1`
/// and `input2`. `margin` (default 0) in `[−1, 1]` is meaningful; any finite value is accepted.
/// On the CPU it runs as one fused row kernel (written with [`crate::kernel`]); elsewhere as
/// Candle ops.
///
/// # Errors
/// Inputs of another rank or of different shapes, a target not `[N]` (0-d), dtypes that differ,
/// a non-finite margin, `Reduction::BatchMean`.
pub fn cosine_embedding_loss(
    input1: &Tensor,
    input2: &Tensor,
    target: &Tensor,
    margin: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "cosine_embedding_loss";
    check::float_pair(LOSS, "input1", input1, "input2", input2)?;
    check::float(LOSS, "target", target)?;
    check::same_dtype(LOSS, "target", target, "input1", input1)?;
    if !matches!(input1.rank(), 1 | 2) {
        return Err(check::bad_shape(LOSS, "input1", input1, "[N, D] or [D]"));
    }
    let want = &input1.dims()[..input1.rank() - 1];
    if target.dims() != want {
        return Err(check::bad_shape(
            LOSS,
            "target",
            target,
            &format!("{want:?} (one ±1 label per row of the inputs {:?})", input1.dims()),
        ));
    }
    check::param(LOSS, "margin", margin, margin.is_finite(), "a finite value")?;
    reduction.standard(LOSS)?;
    if input1.elem_count() == 0 {
        // No vector, or vectors of length 0 (cos = 0 / 1e-12 = 0).
        let cos = target.zeros_like()?;
        return finish_cosine(LOSS, &cos, target, margin, reduction);
    }
    if kernel::choose(LOSS, input1)? {
        return fused::cosine_embedding([input1, input2, target], margin, reduction);
    }
    let prod = input1.mul(input2)?.sum(D::Minus1)?;
    let m1 = input1.sqr()?.sum(D::Minus1)?.affine(1.0, 1e-12)?.sqrt()?;
    let m2 = input2.sqr()?.sum(D::Minus1)?.affine(1.0, 1e-12)?.sqrt()?;
    let cos = ops::div(&prod, &m1.mul(&m2)?)?;
    finish_cosine(LOSS, &cos, target, margin, reduction)
}

fn finish_cosine(
    loss: &'static str,
    cos: &Tensor,
    target: &Tensor,
    margin: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    let zeros = cos.zeros_like()?;
    let pos = target.eq(1.0)?.where_cond(&cos.affine(-1.0, 1.0)?, &zeros)?;
    let neg = target
        .eq(-1.0)?
        .where_cond(&hinge(&cos.affine(1.0, -margin)?)?, &zeros)?;
    reduce(loss, &pos.add(&neg)?, reduction)
}

/// The distance of a triplet loss.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum TripletDistance {
    /// `torch.nn.functional.pairwise_distance` with `p` and `eps` (`‖x − y + eps‖_p`).
    Pairwise {
        /// The norm's order (`≥ 1`).
        p: f64,
        /// Added to every coordinate of the difference.
        eps: f64,
    },
    /// PyTorch's default distance of `triplet_margin_with_distance_loss`: pairwise, p = 2,
    /// eps = 1e-6.
    #[default]
    Euclidean,
    /// `1 − cosine_similarity(x, y, dim = −1, eps = 1e-8)`.
    Cosine,
}

impl<'de> serde::Deserialize<'de> for TripletDistance {
    /// From `distance_function`'s string ([`TripletDistance::parse`]).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::config::deserialize_parsed(d, |s| Self::parse(Some(s)))
    }
}

impl TripletDistance {
    /// Parses `triplet_margin_with_distance_loss`'s `distance_function`: `None` (pairwise
    /// distance) or `"cosine"`.
    ///
    /// # Errors
    /// Any other string.
    pub fn parse(s: Option<&str>) -> Result<Self> {
        match s {
            None => Ok(Self::Euclidean),
            Some("cosine") => Ok(Self::Cosine),
            Some(other) => Err(LossError::BadOptions {
                loss: "triplet_margin_with_distance_loss",
                message: format!(
                    "`distance_function` = {other:?} is invalid, expected null (pairwise distance) or \"cosine\""
                ),
            }
            .into()),
        }
    }

    fn apply(self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        match self {
            Self::Pairwise { p, eps } => pairwise_distance(x, y, p, eps),
            Self::Euclidean => pairwise_distance(x, y, 2.0, 1e-6),
            Self::Cosine => cosine_similarity(x, y, 1e-8)?.affine(-1.0, 1.0),
        }
    }
}

/// The triplet margin loss `loss` of `[anchor, positive, negative]` with `distance` (both public
/// forms).
fn triplet(
    loss: &'static str,
    inputs: [&Tensor; 3],
    distance: TripletDistance,
    margin: f64,
    swap: bool,
    reduction: Reduction,
) -> Result<Tensor> {
    float_triple(loss, ["anchor", "positive", "negative"], inputs)?;
    let [anchor, positive, negative] = inputs;
    if !matches!(anchor.rank(), 1 | 2) {
        return Err(check::bad_shape(loss, "anchor", anchor, "[N, D] or [D]"));
    }
    check::positive(loss, "margin", margin)?;
    if let TripletDistance::Pairwise { p, eps } = distance {
        check::param(loss, "p", p, p >= 1.0 && p.is_finite(), "a finite value >= 1")?;
        check::param(loss, "eps", eps, eps.is_finite(), "a finite value")?;
    }
    reduction.standard(loss)?;
    let euclidean = match distance {
        TripletDistance::Pairwise { p: 2.0, eps } => Some(eps),
        TripletDistance::Euclidean => Some(1e-6),
        _ => None,
    };
    if let Some(eps) = euclidean.filter(|_| !swap && anchor.elem_count() > 0) {
        if kernel::choose(loss, anchor)? {
            return fused::triplet_margin_euclidean(inputs, margin, eps, reduction);
        }
    }
    let d_pos = distance.apply(anchor, positive)?;
    let mut d_neg = distance.apply(anchor, negative)?;
    if swap {
        d_neg = d_neg.minimum(&distance.apply(positive, negative)?)?;
    }
    let per = hinge(&d_pos.sub(&d_neg)?.affine(1.0, margin)?)?;
    reduce(loss, &per, reduction)
}

/// Triplet margin loss (`torch.nn.functional.triplet_margin_loss`; Schroff et al. 2015):
/// `max(0, margin + d(anchor, positive) − d(anchor, negative))` with
/// `d(x, y) = ‖x − y + eps‖_p` over the last dimension ([`pairwise_distance`]).
///
/// With `swap` (Balntas et al. 2016) `d(anchor, negative)` becomes
/// `min(d(anchor, negative), d(positive, negative))` (a tie splits the gradient in halves, as
/// `torch.minimum`). Defaults: `margin` 1 (`> 0`), `p` 2 (`≥ 1`), `eps` 1e-6, `swap` false.
///
/// Shapes: `anchor`, `positive`, `negative` identical, `[N, D]` or `[D]`, one float dtype.
/// Output: `[N]` (`[]`) with `Reduction::None`, else 0-d. Gradients flow to all three. On the
/// CPU the Euclidean distance (`p = 2`) without `swap` runs as one fused row kernel (written
/// with [`crate::kernel`]); the other forms and other devices use Candle ops.
///
/// # Errors
/// Shapes or dtypes that differ, a rank other than 1 or 2, `margin <= 0`, `p < 1`, a non-finite
/// `eps`, `Reduction::BatchMean`.
#[allow(clippy::too_many_arguments)]
pub fn triplet_margin_loss(
    anchor: &Tensor,
    positive: &Tensor,
    negative: &Tensor,
    margin: f64,
    p: f64,
    eps: f64,
    swap: bool,
    reduction: Reduction,
) -> Result<Tensor> {
    let distance = TripletDistance::Pairwise { p, eps };
    triplet(
        "triplet_margin_loss",
        [anchor, positive, negative],
        distance,
        margin,
        swap,
        reduction,
    )
}

/// Triplet margin loss with a chosen distance
/// (`torch.nn.functional.triplet_margin_with_distance_loss`):
/// `max(0, margin + d(anchor, positive) − d(anchor, negative))`, `d` a [`TripletDistance`]
/// (PyTorch's default: the pairwise distance with p = 2, eps = 1e-6; or `1 − cos`).
///
/// `margin` default 1 (`> 0`), `swap` as [`triplet_margin_loss`]. Shapes: three identical
/// `[N, D]` or `[D]` tensors of one float dtype; the distance runs over the last dimension.
/// Output: `[N]` (`[]`) with `Reduction::None`, else 0-d. Gradients flow to all three.
///
/// # Errors
/// As [`triplet_margin_loss`].
pub fn triplet_margin_with_distance_loss(
    anchor: &Tensor,
    positive: &Tensor,
    negative: &Tensor,
    distance: TripletDistance,
    margin: f64,
    swap: bool,
    reduction: Reduction,
) -> Result<Tensor> {
    let inputs = [anchor, positive, negative];
    triplet(
        "triplet_margin_with_distance_loss",
        inputs,
        distance,
        margin,
        swap,
        reduction,
    )
}

crate::loss_config! {
    /// [`cosine_embedding_loss`] as a value (`torch.nn.CosineEmbeddingLoss`); three inputs, so
    /// [`CosineEmbeddingLoss::forward3`] (see the crate docs, "Losses of three or four inputs").
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct CosineEmbeddingLoss {
        /// Margin.
        margin: f64 = 0.0,
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    forward3 cosine_embedding_loss(input1, input2, target; margin, reduction);
}

crate::loss_config! {
    /// [`triplet_margin_loss`] as a value (`torch.nn.TripletMarginLoss`); three inputs, so
    /// [`TripletMarginLoss::forward3`].
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct TripletMarginLoss {
        /// Margin (`> 0`).
        margin: f64 = 1.0,
        /// The norm's order of the pairwise distance (`≥ 1`).
        p: f64 = 2.0,
        /// Added to every coordinate of the difference.
        eps: f64 = 1e-6,
        /// Whether to use the distance swap.
        swap: bool = false,
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    forward3 triplet_margin_loss(anchor, positive, negative; margin, p, eps, swap, reduction);
}

crate::loss_config! {
    /// [`triplet_margin_with_distance_loss`] as a value
    /// (`torch.nn.TripletMarginWithDistanceLoss`); three inputs, so
    /// [`TripletMarginWithDistanceLoss::forward3`].
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct TripletMarginWithDistanceLoss {
        /// The distance (`null`: pairwise, p = 2, eps = 1e-6; or `"cosine"`).
        distance_function: TripletDistance = TripletDistance::Euclidean,
        /// Margin (`> 0`).
        margin: f64 = 1.0,
        /// Whether to use the distance swap.
        swap: bool = false,
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    forward3 triplet_margin_with_distance_loss(
        anchor, positive, negative; distance_function, margin, swap, reduction
    );
}
