//! Two IoU losses with mmdetection's semantics: `extended_iou_loss` (mmdetection's `EIoULoss`,
//! the *Extended* IoU of libfacedetection) and `siou_loss` (SIoU, mmdetection's `SIoULoss`).
//!
//! Both take aligned `[..., 4]` `xyxy` boxes of one shape and float dtype (f32 or f64) and
//! default to `Reduction::Mean` as mmdetection (an empty input still gives 0, as the
//! torchvision losses of this crate). The gradient rules at kinks are those of
//! [`crate::geometry`] (PyTorch's). `siou_loss` runs the box losses' fused pair kernel for
//! f32/f64 on the CPU (as the IoU successors, [`crate::iou_successors`]) and the composite form
//! written here elsewhere; `extended_iou_loss` runs as composite Candle ops on every device.

use crate::fused::Successor;
use crate::geometry::{self, div_or_zero, Boxes, Overlap};
use crate::losses::{check_pair, reduce_boxes};
use candle_core::{Result, Tensor};
use loss_core::{check, ops, Reduction};
use std::f64::consts::FRAC_1_SQRT_2;

/// The extended intersection of mmdetection's `eiou_loss`, negative for disjoint boxes.
fn extended_intersection(p: &Boxes, t: &Boxes) -> Result<Tensor> {
    let ex1 = p.x1.minimum(&t.x1)?;
    let ey1 = p.y1.minimum(&t.y1)?;
    let ix1 = p.x1.maximum(&t.x1)?;
    let iy1 = p.y1.maximum(&t.y1)?;
    let ix2 = p.x2.minimum(&t.x2)?;
    let iy2 = p.y2.minimum(&t.y2)?;
    let xmin = ix1.minimum(&ix2)?;
    let ymin = iy1.minimum(&iy2)?;
    let xmax = ix1.maximum(&ix2)?;
    let ymax = iy1.maximum(&iy2)?;
    let rel = |a: &Tensor, b: &Tensor| a.sub(b);
    let a = rel(&ix2, &ex1)?.mul(&rel(&iy2, &ey1)?)?;
    let b = rel(&xmin, &ex1)?.mul(&rel(&ymin, &ey1)?)?;
    let c = rel(&ix1, &ex1)?.mul(&rel(&ymax, &ey1)?)?;
    let d = rel(&xmax, &ex1)?.mul(&rel(&iy1, &ey1)?)?;
    a.add(&b)?.sub(&c)?.sub(&d)
}

/// Extended-IoU loss with a smooth zone (mmdetection's `EIoULoss`, libfacedetection).
///
/// `x = 1 − I/(A_p + A_t − I + eps)` where `I` is the *extended* intersection
/// `(ix2−ex1)(iy2−ey1) + (min(ix1,ix2)−ex1)(min(iy1,iy2)−ey1) − (ix1−ex1)(max(iy1,iy2)−ey1) −
/// (max(ix1,ix2)−ex1)(iy1−ey1)` (`e` the enclosing box's top-left corner, `i` the intersection's
/// corners), equal to the intersection area for overlapping boxes and negative for disjoint
/// ones, so that disjoint pairs still get a gradient. The loss is `½x²/smooth_point` where
/// `x < smooth_point` and `x − ½·smooth_point` elsewhere (continuous, C¹).
///
/// `pred`, `target`: `[..., 4]` `xyxy`, same shape, f32 or f64. Defaults (mmdetection):
/// `smooth_point = 0.1` (> 0), `eps = 1e-6` (> 0), `reduction = Mean`.
/// Sources: Peng & Yu, "A Systematic IoU-Related Method: Beyond Simplified Regression for
/// Better Localization", IEEE TIP 2021; mmdetection `mmdet/models/losses/eiou_loss.py`. Not the
/// Efficient-IoU of [`crate::eiou_loss`].
///
/// # Errors
/// A last dimension other than 4, shapes or dtypes that differ, a non-float dtype, `eps <= 0`,
/// `smooth_point <= 0`, `Reduction::BatchMean`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use loss_bbox::extended_iou_loss;
/// use loss_core::Reduction;
/// let p = Tensor::new(&[[0f64, 0., 1., 1.]], &Device::Cpu)?;
/// let t = Tensor::new(&[[2f64, 0., 3., 1.]], &Device::Cpu)?;
/// // disjoint: I = -1, union 3, x = 4/3, loss 4/3 - 0.05
/// let l = extended_iou_loss(&p, &t, 0.1, 1e-6, Reduction::Mean)?;
/// assert!((l.to_scalar::<f64>()? - (4.0 / 3.0 - 0.05)).abs() < 1e-5);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn extended_iou_loss(
    pred: &Tensor,
    target: &Tensor,
    smooth_point: f64,
    eps: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "extended_iou_loss";
    check_pair(LOSS, pred, target, eps)?;
    check::positive(LOSS, "smooth_point", smooth_point)?;
    reduction.standard(LOSS)?;
    let p = Boxes::aligned(pred)?;
    let t = Boxes::aligned(target)?;
    let inter = extended_intersection(&p, &t)?;
    let union = (p.area()?.add(&t.area()?)?.sub(&inter)? + eps)?;
    let x = ops::div(&inter, &union)?.affine(-1.0, 1.0)?;
    let quadratic = x.sqr()?.affine(0.5 / smooth_point, 0.0)?;
    let linear = x.affine(1.0, -0.5 * smooth_point)?;
    let loss = x.detach().lt(smooth_point)?.where_cond(&quadratic, &linear)?;
    reduce_boxes(LOSS, &loss, reduction)
}

/// `|a − b| / max(a, b)`, 0 where `max(a, b) = 0` (two zero-width boxes: equal shapes).
fn shape_ratio(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    div_or_zero(&ops::abs(&a.sub(b)?)?, &a.maximum(b)?)
}

/// `(1 − e^{−ω})⁴` (also Shape-IoU's shape cost).
pub(crate) fn shape_term(omega: &Tensor) -> Result<Tensor> {
    omega.neg()?.exp()?.affine(-1.0, 1.0)?.sqr()?.sqr()
}

/// SIoU loss (Gevorgyan 2022) with mmdetection's semantics (`SIoULoss`).
///
/// `loss = 1 − clamp(IoU − (Δ + Ω)/2, −1, 1)` with
/// - `IoU = I/(A_p + A_t − I + eps)`, `I = clamp(w, 0)·clamp(h, 0)` of the intersection;
/// - the angle cost `Λ = cos(2·asin(s) − π/2) = 2s·√(1 − s²)` where `s` is the sine of the
///   smaller angle between the centre offset `(s_cw, s_ch)` (target centre − pred centre,
///   each `+ eps`) and an axis;
/// - the distance cost `Δ = 2 − e^{γρ_x} − e^{γρ_y}`, `ρ_x = (s_cw/C_w)²`, `ρ_y = (s_ch/C_h)²`
///   with the enclosing extents clamped at `eps`, and `γ = 2 − Λ` (`neg_gamma = false`,
///   mmdetection's default, which makes `Δ ≤ 0`) or `γ = Λ − 2` (`neg_gamma = true`, the paper);
/// - the shape cost `Ω = (1 − e^{−ω_w})⁴ + (1 − e^{−ω_h})⁴`, `ω_w = |w_p − w_t|/max(w_p, w_t)`,
///   `ω_h` likewise with `eps` added to both heights.
///
/// Where mmdetection divides 0 by 0 (two zero-width boxes in `ω_w`, a zero offset vector) this
/// takes 0 with a zero gradient, so every loss and gradient is finite.
/// `pred`, `target`: `[..., 4]` `xyxy`, same shape, f32 or f64. Defaults (mmdetection):
/// `neg_gamma = false`, `eps = 1e-6` (> 0), `reduction = Mean`.
/// Sources: Gevorgyan, "SIoU Loss: More Powerful Learning for Bounding Box Regression",
/// arXiv 2205.12740; mmdetection `mmdet/models/losses/iou_loss.py` (`siou_loss`).
///
/// # Errors
/// A last dimension other than 4, shapes or dtypes that differ, a non-float dtype, `eps <= 0`,
/// `Reduction::BatchMean`.
pub fn siou_loss(pred: &Tensor, target: &Tensor, neg_gamma: bool, eps: f64, reduction: Reduction) -> Result<Tensor> {
    const LOSS: &str = "siou_loss";
    check_pair(LOSS, pred, target, eps)?;
    let standard = reduction.standard(LOSS)?;
    if loss_core::kernel::choose(LOSS, pred)? {
        return crate::fused::loss(Successor::Siou { neg_gamma }.into(), pred, target, eps, standard);
    }
    let p = Boxes::aligned(pred)?;
    let t = Boxes::aligned(target)?;
    let inter = geometry::intersection(&p, &t, Overlap::Clamped)?;
    let iou = ops::div(&inter, &(geometry::union(&p, &t, &inter)? + eps)?)?;
    let (cw, ch) = geometry::outer_extent(&p, &t)?;
    let (cw, ch) = (geometry::clamp_min(&cw, eps)?, geometry::clamp_min(&ch, eps)?);

    // angle cost
    let s_cw = (t.x1.add(&t.x2)?.sub(&p.x1)?.sub(&p.x2)?.affine(0.5, 0.0)? + eps)?;
    let s_ch = (t.y1.add(&t.y2)?.sub(&p.y1)?.sub(&p.y2)?.affine(0.5, 0.0)? + eps)?;
    let sigma2 = (s_cw.sqr()? + s_ch.sqr()?)?;
    let flat = sigma2.eq(0.0)?;
    let sigma = flat.where_cond(&sigma2.ones_like()?, &sigma2)?.sqrt()?;
    let sin1 = div_or_zero(&ops::abs(&s_cw)?, &sigma)?;
    let sin2 = div_or_zero(&ops::abs(&s_ch)?, &sigma)?;
    let sin = sin1.gt(FRAC_1_SQRT_2)?.where_cond(&sin2, &sin1)?;
    let angle = sin.mul(&sin.sqr()?.affine(-1.0, 1.0)?.sqrt()?)?.affine(2.0, 0.0)?;

    // distance cost
    let gamma = if neg_gamma {
        angle.affine(1.0, -2.0)?
    } else {
        angle.affine(-1.0, 2.0)?
    };
    let rho_x = ops::div(&s_cw, &cw)?.sqr()?;
    let rho_y = ops::div(&s_ch, &ch)?.sqr()?;
    let distance = gamma
        .mul(&rho_x)?
        .exp()?
        .add(&gamma.mul(&rho_y)?.exp()?)?
        .affine(-1.0, 2.0)?;

    // shape cost
    let (wp, hp) = (p.width()?, (p.height()? + eps)?);
    let (wt, ht) = (t.width()?, (t.height()? + eps)?);
    let shape = shape_term(&shape_ratio(&wp, &wt)?)?.add(&shape_term(&shape_ratio(&hp, &ht)?)?)?;

    let siou = iou.sub(&distance.add(&shape)?.affine(0.5, 0.0)?)?;
    let loss = ops::clamp(&siou, -1.0, 1.0)?.affine(-1.0, 1.0)?;
    reduce_boxes(LOSS, &loss, reduction)
}

loss_core::loss_config! {
    /// [`extended_iou_loss`] as a [`Loss`](loss_core::Loss) value (mmdetection's `EIoULoss`).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct ExtendedIoULoss {
        /// Where the quadratic zone ends (> 0).
        smooth_point: f64 = 0.1,
        /// Added to the union (> 0).
        eps: f64 = 1e-6,
        /// Reduction (`Mean`, as mmdetection).
        reduction: Reduction = Reduction::Mean,
    }
    loss extended_iou_loss(smooth_point, eps, reduction);
}

loss_core::loss_config! {
    /// [`siou_loss`] as a [`Loss`](loss_core::Loss) value (mmdetection's `SIoULoss`).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct SIoULoss {
        /// `γ = Λ − 2` as the paper (true) or `2 − Λ` as mmdetection's default (false).
        neg_gamma: bool = false,
        /// Added to the union, the heights, the centre offsets; lower clamp of the enclosing extents (> 0).
        eps: f64 = 1e-6,
        /// Reduction (`Mean`, as mmdetection).
        reduction: Reduction = Reduction::Mean,
    }
    loss siou_loss(neg_gamma, eps, reduction);
}
