//! The successors of CIoU on aligned pairs of `xyxy` boxes, as their authors' code computes
//! them: `alpha_iou_loss` (Alpha-IoU), `mpdiou_loss` (MPDIoU), `inner_iou_loss` (Inner-IoU),
//! `shape_iou_loss` (Shape-IoU), `wise_iou_loss` (Wise-IoU v1/v2/v3, stateless, plus the
//! stateful [`WiseIoU`] that keeps the running mean), `focaler_iou_loss` (Focaler-IoU) and
//! `nwd_loss` (normalized Gaussian Wasserstein distance).
//!
//! Every function takes `pred` and `target` `[..., 4]` `xyxy` boxes of exactly the same shape
//! and float dtype (f32 or f64) and returns `[...]` (`Reduction::None`, the default except for
//! `nwd_loss`, whose default is `Mean` as the authors' `WassersteinLoss`) or a 0-d tensor; the
//! mean of an empty batch is 0 (the rule of the crate's box losses). They are built from the
//! pair geometry of [`crate::geometry`] (intersection, enclosing box, centre distance, aspect
//! angle, with PyTorch's gradient rules at kinks) as plain Candle ops, so they run on every
//! device, and the gradient reaches both `pred` and `target` (no reference detaches its target).
//!
//! With, for a pair, `I = clamp(w_I, 0)·clamp(h_I, 0)` the intersection, `C_w, C_h` the extents of
//! the smallest enclosing box and `ρ²` the squared distance between the centres:
//!
//! | loss | value | source |
//! |---|---|---|
//! | [`alpha_iou_loss`] | `1 − [(I/U + ε)^α − P]`, `P` the GIoU, DIoU or CIoU penalty raised to `α` | He et al., NeurIPS 2021; `bbox_alpha_iou` (Jacobi93/Alpha-IoU) |
//! | [`mpdiou_loss`] | `1 − I/U + (d₁² + d₂²)/(W² + H²)`, `d` the corner distances, `W × H` the image | Ma & Xu, arXiv 2307.07662 |
//! | [`inner_iou_loss`] | `1 − I_in/U_in` (+ CIoU's terms), on boxes scaled by `ratio` about their centres | Zhang, Xu & Zhang, arXiv 2311.02877 |
//! | [`shape_iou_loss`] | `1 − I/U + (hh·Δx² + ww·Δy²)/c² + ½Σ(1 − e^{−ω})⁴`, weights from the target's shape | Zhang & Zhang, arXiv 2312.17663 |
//! | [`wise_iou_loss`] | `exp(ρ²/(W_g² + H_g²))·L_IoU`, times a focusing factor of `β = L_IoU/mean` | Tong et al., arXiv 2301.10051 |
//! | [`focaler_iou_loss`] | `1 − clamp((IoU − d)/(u − d), 0, 1)` | Zhang & Zhang, arXiv 2401.10525 |
//! | [`nwd_loss`] | `1 − exp(−√W²/C)`, `W²` the Wasserstein distance of the boxes' Gaussians | Wang et al., arXiv 2110.13389 |
//!
//! The YOLO-community losses (Alpha-, MPD-, Focaler-IoU) take ultralytics' `bbox_iou` IoU: the
//! heights get `+ eps` before the areas (`w·(h + eps)`), and `U = w_p·h_p + w_t·h_t − I + eps`.
//! Inner- and Shape-IoU use the areas without `eps` in the heights; Wise-IoU has no `eps` at all
//! (a zero union gives `I/U = 0`). Where a reference divides 0 by 0 (two zero-width boxes in
//! Shape-IoU's `ω`, two identical point boxes in Wise-IoU) the term is 0 with a zero gradient,
//! so every value and gradient is finite for boxes that are not inverted.
//!
//! # Kernels
//! By default ([`loss_core::kernel::Path::Auto`]) f32/f64 tensors on the CPU run the fused pair
//! kernel of the box losses (module `fused::successors`: one pass over the pair's intersection,
//! union, enclosing box, centres and sides, the successor's formula, its gradient taken back to
//! the coordinates by the box losses' one chain rule; for a reduced loss the gradient is
//! computed in the forward pass); every other device or dtype runs the composite form written
//! here (plain Candle ops). Both give the same values and gradients (`tests/fused.rs`).

use crate::boxes::check_boxes;
use crate::extended_iou_siou::shape_term;
use crate::fused::{self, Successor};
use crate::geometry::{self, clamp_min, div_or_zero, Boxes, Overlap, ASPECT_K};
use crate::kinds::bad_option;
pub use crate::kinds::{AlphaIouBase, InnerIouBase, WiseIouVersion};
use crate::losses::{check_pair, reduce_boxes};
use candle_core::{Result, Tensor, D};
use loss_core::{check, kernel, ops, Loss, Reduction};
use std::sync::Mutex;

/// The aligned pair as geometry columns.
fn pair(pred: &Tensor, target: &Tensor) -> Result<(Boxes, Boxes)> {
    Ok((Boxes::aligned(pred)?, Boxes::aligned(target)?))
}

/// ultralytics `bbox_iou`'s `(I, U)`: clamped intersection, `U = w_p(h_p + eps) + w_t(h_t + eps) − I + eps`.
fn yolo_inter_union(p: &Boxes, t: &Boxes, eps: f64) -> Result<(Tensor, Tensor)> {
    let inter = geometry::intersection(p, t, Overlap::Clamped)?;
    let ap = p.width()?.mul(&(p.height()? + eps)?)?;
    let at = t.width()?.mul(&(t.height()? + eps)?)?;
    let union = ((ap.add(&at)?.sub(&inter))? + eps)?;
    Ok((inter, union))
}

/// Clamped intersection and `U = A_p + A_t − I + eps` (no `eps` in the heights).
fn plain_inter_union(p: &Boxes, t: &Boxes, eps: f64) -> Result<(Tensor, Tensor)> {
    let inter = geometry::intersection(p, t, Overlap::Clamped)?;
    let union = (geometry::union(p, t, &inter)? + eps)?;
    Ok((inter, union))
}

/// `C_w² + C_h²` of the enclosing box.
fn enclosing_diag2(p: &Boxes, t: &Boxes) -> Result<Tensor> {
    let (cw, ch) = geometry::outer_extent(p, t)?;
    cw.sqr()?.add(&ch.sqr()?)
}

// ------------------------------------------------------------------------------------------
// Alpha-IoU

/// Alpha-IoU loss: `1 − [(I/U + eps)^α − P]`, the IoU and its penalty raised to the power `α`.
///
/// As the authors' `bbox_alpha_iou` (x1y1x2y2): heights `h + eps` in the areas and in CIoU's
/// angle, `U = w_p·h_p + w_t·h_t − I + eps`, `I` the clamped intersection. The penalty `P`:
/// - `Iou`: 0;
/// - `Giou`: `((C − U)/C + eps)^α` with `C = max(C_w·C_h + eps, U)`;
/// - `Diou`: `(ρ²)^α / ((C_w² + C_h²)^α + eps)`, `ρ` the distance between the centres;
/// - `Ciou` (default): the DIoU term plus `(v·a + eps)^α` with
///   `v = 4/π²·(atan(w_t/h_t) − atan(w_p/h_p))²` and `a = v/((1 + eps) − I/U + v)` a **constant**
///   of the gradient (`torch.no_grad` in the reference), taken as 0 where `v = 0` (the reference
///   computes 0/0 there in f32, where `1 + 1e-9` rounds to 1).
///
/// `α = 1` gives the plain IoU/GIoU/DIoU/CIoU losses (with this `eps` placement); `α > 1`
/// up-weights the loss and gradient of high-IoU boxes (the paper's `α = 3`).
/// `pred`, `target`: `[..., 4]` `xyxy`, same shape, f32 or f64. Defaults: `alpha = 3` (> 0),
/// `base = Ciou`, `eps = 1e-9` (> 0), `reduction = None`.
/// Sources: He et al., "Alpha-IoU: A Family of Power Intersection over Union Losses for
/// Bounding Box Regression", NeurIPS 2021; Jacobi93/Alpha-IoU `utils/general.py`.
///
/// For `α < 1` the penalty `(ρ²)^α` has an infinite slope at coincident centres (the paper's
/// form); its gradient there is clamped to the dtype's largest number.
///
/// # Errors
/// A last dimension other than 4, shapes or dtypes that differ, a non-float dtype, `alpha <= 0`,
/// `eps <= 0`, `Reduction::BatchMean`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use loss_bbox::{alpha_iou_loss, AlphaIouBase};
/// use loss_core::Reduction;
/// let p = Tensor::new(&[[0f64, 0., 2., 2.]], &Device::Cpu)?;
/// let t = Tensor::new(&[[1f64, 0., 3., 2.]], &Device::Cpu)?;
/// // IoU 1/3, alpha 2: 1 - (1/3)^2
/// let l = alpha_iou_loss(&p, &t, 2.0, AlphaIouBase::Iou, 1e-9, Reduction::Sum)?;
/// assert!((l.to_scalar::<f64>()? - (1.0 - 1.0 / 9.0)).abs() < 1e-6);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn alpha_iou_loss(
    pred: &Tensor,
    target: &Tensor,
    alpha: f64,
    base: AlphaIouBase,
    eps: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "alpha_iou_loss";
    check_pair(LOSS, pred, target, eps)?;
    check::positive(LOSS, "alpha", alpha)?;
    let standard = reduction.standard(LOSS)?;
    if kernel::choose(LOSS, pred)? {
        return fused::loss(Successor::Alpha { alpha, base }.into(), pred, target, eps, standard);
    }
    let (p, t) = pair(pred, target)?;
    let (inter, union) = yolo_inter_union(&p, &t, eps)?;
    let ratio = ops::div(&inter, &union)?;
    let iou = ops::powf(&(&ratio + eps)?, alpha)?;
    let penalty = match base {
        AlphaIouBase::Iou => None,
        AlphaIouBase::Giou => {
            let (cw, ch) = geometry::outer_extent(&p, &t)?;
            let c_area = (cw.mul(&ch)? + eps)?.maximum(&union)?;
            let g = (ops::div(&c_area.sub(&union)?, &c_area)? + eps)?;
            Some(ops::powf(&g, alpha)?)
        }
        AlphaIouBase::Diou | AlphaIouBase::Ciou => {
            let rho2 = ops::powf(&geometry::centre_distance2(&p, &t)?, alpha)?;
            let c2 = (ops::powf(&enclosing_diag2(&p, &t)?, alpha)? + eps)?;
            let diou = ops::div(&rho2, &c2)?;
            if base == AlphaIouBase::Ciou {
                let ta = geometry::aspect_angle(&t.width()?, &(t.height()? + eps)?)?;
                let pa = geometry::aspect_angle(&p.width()?, &(p.height()? + eps)?)?;
                let v = ta.sub(&pa)?.sqr()?.affine(ASPECT_K, 0.0)?;
                let (v0, r0) = (v.detach(), ratio.detach());
                let den = (r0.affine(-1.0, 1.0 + eps)? + &v0)?;
                let a = v0.eq(0.0)?.where_cond(&v0.zeros_like()?, &div_or_zero(&v0, &den)?)?;
                Some(diou.add(&ops::powf(&(v.mul(&a)? + eps)?, alpha)?)?)
            } else {
                Some(diou)
            }
        }
    };
    let score = match penalty {
        Some(p) => iou.sub(&p)?,
        None => iou,
    };
    reduce_boxes(LOSS, &score.affine(-1.0, 1.0)?, reduction)
}

// ------------------------------------------------------------------------------------------
// MPDIoU

/// MPDIoU loss: `1 − [I/U − d₁²/(W² + H²) − d₂²/(W² + H²)]`.
///
/// `d₁`, `d₂` are the distances between the top-left corners and between the bottom-right
/// corners of the two boxes, `W × H` the input image's size (`img_w`, `img_h`, required, > 0),
/// which normalizes them. `I/U` is ultralytics' `bbox_iou` (heights `+ eps`,
/// `U = w_p·h_p + w_t·h_t − I + eps`). One term carries what CIoU splits into centre distance
/// and aspect: the two corners match only when the boxes do.
/// `pred`, `target`: `[..., 4]` `xyxy`, same shape, f32 or f64. Defaults: `eps = 1e-7` (> 0),
/// `reduction = None`.
/// Sources: Ma & Xu, "MPDIoU: A Loss for Efficient and Accurate Bounding Box Regression",
/// arXiv 2307.07662; the community `bbox_mpdiou` on ultralytics `bbox_iou`.
///
/// # Errors
/// A last dimension other than 4, shapes or dtypes that differ, a non-float dtype, `img_w` or
/// `img_h` not finite and > 0, `eps <= 0`, `Reduction::BatchMean`.
pub fn mpdiou_loss(
    pred: &Tensor,
    target: &Tensor,
    img_w: f64,
    img_h: f64,
    eps: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "mpdiou_loss";
    check_pair(LOSS, pred, target, eps)?;
    check::positive(LOSS, "img_w", img_w)?;
    check::positive(LOSS, "img_h", img_h)?;
    let standard = reduction.standard(LOSS)?;
    let norm = 1.0 / (img_w * img_w + img_h * img_h);
    if kernel::choose(LOSS, pred)? {
        return fused::loss(Successor::Mpd { norm }.into(), pred, target, eps, standard);
    }
    let (p, t) = pair(pred, target)?;
    let (inter, union) = yolo_inter_union(&p, &t, eps)?;
    let iou = ops::div(&inter, &union)?;
    let d1 = t.x1.sub(&p.x1)?.sqr()?.add(&t.y1.sub(&p.y1)?.sqr()?)?;
    let d2 = t.x2.sub(&p.x2)?.sqr()?.add(&t.y2.sub(&p.y2)?.sqr()?)?;
    let loss = iou.affine(-1.0, 1.0)?.add(&d1.add(&d2)?.affine(norm, 0.0)?)?;
    reduce_boxes(LOSS, &loss, reduction)
}

// ------------------------------------------------------------------------------------------
// Inner-IoU

/// The box of size `ratio·(w, h)` about each box's centre.
fn scaled_about_centre(b: &Boxes, ratio: f64) -> Result<Boxes> {
    let half_w = b.width()?.affine(0.5 * ratio, 0.0)?;
    let half_h = b.height()?.affine(0.5 * ratio, 0.0)?;
    let cx = b.x1.add(&b.x2)?.affine(0.5, 0.0)?;
    let cy = b.y1.add(&b.y2)?.affine(0.5, 0.0)?;
    Ok(Boxes {
        x1: cx.sub(&half_w)?,
        y1: cy.sub(&half_h)?,
        x2: cx.add(&half_w)?,
        y2: cy.add(&half_h)?,
    })
}

/// Inner-IoU loss: the IoU of auxiliary boxes, `ratio` times the size of each box about its centre.
///
/// `I_in` is the (clamped) intersection of the auxiliary boxes, `U_in = ratio²·(w_p·h_p +
/// w_t·h_t) − I_in + eps`. `Iou` (default): `1 − I_in/U_in`. `Ciou`: `1 − I_in/U_in +
/// ρ²/(C_w² + C_h² + eps) + a·v` where the enclosing box and `ρ` come from the real boxes,
/// `v = 4/π²·(atan2(w_t, h_t) − atan2(w_p, h_p))²` (finite at `h = 0`, see [`crate::geometry`]),
/// and `a = v/(v − IoU + 1 + eps)` is a **constant** of the gradient, `IoU` that of the real
/// boxes (`I/(w_p·h_p + w_t·h_t − I + eps)`). `ratio < 1` (smaller boxes) steepens the gradient of
/// high-IoU pairs, `ratio > 1` widens the range of pairs that overlap; `ratio = 1` is the plain
/// `1 − IoU`.
/// `pred`, `target`: `[..., 4]` `xyxy`, same shape, f32 or f64. Defaults: `ratio = 1` (> 0),
/// `base = Iou`, `eps = 1e-7` (> 0), `reduction = None`.
/// Sources: Zhang, Xu & Zhang, "Inner-IoU: More Effective Intersection over Union Loss with
/// Auxiliary Bounding Box", arXiv 2311.02877; malagoutou/Inner-IoU `innerciou.py`. The reference's
/// `atan(w/h)` has a NaN gradient at `h = 0`; this follows `atan2` there (its limit).
///
/// # Errors
/// A last dimension other than 4, shapes or dtypes that differ, a non-float dtype, `ratio <= 0`,
/// `eps <= 0`, `Reduction::BatchMean`.
pub fn inner_iou_loss(
    pred: &Tensor,
    target: &Tensor,
    ratio: f64,
    base: InnerIouBase,
    eps: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "inner_iou_loss";
    check_pair(LOSS, pred, target, eps)?;
    check::positive(LOSS, "ratio", ratio)?;
    let standard = reduction.standard(LOSS)?;
    if kernel::choose(LOSS, pred)? {
        return fused::loss(Successor::Inner { ratio, base }.into(), pred, target, eps, standard);
    }
    let (p, t) = pair(pred, target)?;
    let (ip, it) = (scaled_about_centre(&p, ratio)?, scaled_about_centre(&t, ratio)?);
    let inner = geometry::intersection(&ip, &it, Overlap::Clamped)?;
    let scaled_area = |b: &Boxes| b.width()?.affine(ratio, 0.0)?.mul(&b.height()?.affine(ratio, 0.0)?);
    let inner_union = ((scaled_area(&p)?.add(&scaled_area(&t)?)?.sub(&inner))? + eps)?;
    let mut loss = ops::div(&inner, &inner_union)?.affine(-1.0, 1.0)?;
    if base == InnerIouBase::Ciou {
        let (inter, union) = plain_inter_union(&p, &t, eps)?;
        let iou = ops::div(&inter, &union)?.detach();
        let diag = (enclosing_diag2(&p, &t)? + eps)?;
        let dist = ops::div(&geometry::centre_distance2(&p, &t)?, &diag)?;
        let v = geometry::aspect_term(&t, &p)?;
        let v0 = v.detach();
        let a = div_or_zero(&v0, &((&v0 - &iou)? + (1.0 + eps))?)?.detach();
        loss = loss.add(&dist)?.add(&a.mul(&v)?)?;
    }
    reduce_boxes(LOSS, &loss, reduction)
}

// ------------------------------------------------------------------------------------------
// Shape-IoU

/// Shape-IoU loss: IoU, a centre distance and a shape cost both weighted by the target's shape.
///
/// With `s = scale`, `ww = 2·w_t^s/(w_t^s + h_t^s)`, `hh = 2·h_t^s/(w_t^s + h_t^s)`,
/// `Δx, Δy` the offsets of the centres, `c² = C_w² + C_h² + eps`,
/// `ω_w = hh·|w_p − w_t|/max(w_p, w_t)`, `ω_h = ww·|h_p − h_t|/max(h_p, h_t)`:
/// `loss = 1 − I/U + (hh·Δx² + ww·Δy²)/c² + ½·[(1 − e^{−ω_w})⁴ + (1 − e^{−ω_h})⁴]`, with
/// `U = w_p·h_p + w_t·h_t − I + eps`. For a wide target (`w_t > h_t`, `s > 0`) an offset along
/// the short side (`y`) and an error of the height cost more. `scale = 0` (the authors' default)
/// gives `ww = hh = 1`. Where a ratio is 0/0 (two zero-width boxes, a point target with `s > 0`)
/// the term is 0 with a zero gradient (the reference gives NaN).
/// `pred`, `target`: `[..., 4]` `xyxy`, same shape, f32 or f64 (widths and heights `>= 0` for
/// `scale > 0`). Defaults: `scale = 0` (>= 0), `eps = 1e-7` (> 0), `reduction = None`.
/// Sources: Zhang & Zhang, "Shape-IoU: More Accurate Metric considering Bounding Box Shape and
/// Scale", arXiv 2312.17663; malagoutou/Shape-IoU `shapeiou.py`.
///
/// # Errors
/// A last dimension other than 4, shapes or dtypes that differ, a non-float dtype, `scale < 0`,
/// `eps <= 0`, `Reduction::BatchMean`.
pub fn shape_iou_loss(pred: &Tensor, target: &Tensor, scale: f64, eps: f64, reduction: Reduction) -> Result<Tensor> {
    const LOSS: &str = "shape_iou_loss";
    check_pair(LOSS, pred, target, eps)?;
    check::non_negative(LOSS, "scale", scale)?;
    let standard = reduction.standard(LOSS)?;
    if kernel::choose(LOSS, pred)? {
        return fused::loss(Successor::Shape { scale }.into(), pred, target, eps, standard);
    }
    let (p, t) = pair(pred, target)?;
    let (inter, union) = plain_inter_union(&p, &t, eps)?;
    let iou = ops::div(&inter, &union)?;
    let (wp, hp, wt, ht) = (p.width()?, p.height()?, t.width()?, t.height()?);
    let (ww, hh) = if scale == 0.0 {
        (wt.ones_like()?, wt.ones_like()?)
    } else {
        let (sw, sh) = (ops::powf(&wt, scale)?, ops::powf(&ht, scale)?);
        let den = sw.add(&sh)?;
        (
            div_or_zero(&sw, &den)?.affine(2.0, 0.0)?,
            div_or_zero(&sh, &den)?.affine(2.0, 0.0)?,
        )
    };
    let c2 = (enclosing_diag2(&p, &t)? + eps)?;
    let dx2 = t.x1.add(&t.x2)?.sub(&p.x1)?.sub(&p.x2)?.sqr()?.affine(0.25, 0.0)?;
    let dy2 = t.y1.add(&t.y2)?.sub(&p.y1)?.sub(&p.y2)?.sqr()?.affine(0.25, 0.0)?;
    let distance = ops::div(&hh.mul(&dx2)?.add(&ww.mul(&dy2)?)?, &c2)?;
    let omega_w = div_or_zero(&hh.mul(&ops::abs(&wp.sub(&wt)?)?)?, &wp.maximum(&wt)?)?;
    let omega_h = div_or_zero(&ww.mul(&ops::abs(&hp.sub(&ht)?)?)?, &hp.maximum(&ht)?)?;
    let shape = shape_term(&omega_w)?.add(&shape_term(&omega_h)?)?;
    let loss = iou.affine(-1.0, 1.0)?.add(&distance)?.add(&shape.affine(0.5, 0.0)?)?;
    reduce_boxes(LOSS, &loss, reduction)
}

// ------------------------------------------------------------------------------------------
// Wise-IoU

/// `L_IoU = 1 − I/U` of Wise-IoU: clamped intersection, `U = A_p + A_t − I`, no `eps`
/// (`I/U = 0` where `U = 0`).
fn wise_l_iou(p: &Boxes, t: &Boxes) -> Result<Tensor> {
    let inter = geometry::intersection(p, t, Overlap::Clamped)?;
    let union = geometry::union(p, t, &inter)?;
    div_or_zero(&inter, &union)?.affine(-1.0, 1.0)
}

fn check_wise(loss: &'static str, pred: &Tensor, target: &Tensor, alpha: f64, delta: f64) -> Result<()> {
    check_boxes(loss, "pred", pred)?;
    check_boxes(loss, "target", target)?;
    check::same_shape(loss, "target", target, "pred", pred)?;
    check::same_dtype(loss, "target", target, "pred", pred)?;
    check::positive(loss, "alpha", alpha)?;
    check::positive(loss, "delta", delta)
}

/// Wise-IoU loss (v1, v2, v3) with the running mean of `L_IoU` passed in (`mean_iou_loss`).
///
/// `L_IoU = 1 − I/U` (no `eps`; `I/U = 0` where the union is 0),
/// `R = exp(ρ²/(W_g² + H_g²))` with `ρ` the distance between the centres and `W_g, H_g` the
/// enclosing box's sides, the denominator a **constant** of the gradient (0/0 = 0 for two
/// identical point boxes). `v1 = R·L_IoU`. With the outlier degree `β = L_IoU/mean_iou_loss`,
/// also a **constant**: `v2 = v1·√β`, `v3 = v1·β/(δ·α^(β−δ))` (largest gradient gain for boxes of
/// middling quality, small for both very good and very poor boxes). The stateless function
/// takes the mean as a number; [`WiseIoU`] keeps it as the authors' `IouLoss` does.
/// `pred`, `target`: `[..., 4]` `xyxy`, same shape, f32 or f64. Defaults (the authors' v2 branch):
/// `version = V3`, `mean_iou_loss = 1` (> 0), `alpha = 1.7` (> 0), `delta = 2.7` (> 0),
/// `reduction = None`.
/// Sources: Tong et al., "Wise-IoU: Bounding Box Regression Loss with Dynamic Focusing
/// Mechanism", arXiv 2301.10051; Instinct323/wiou `iou.py` (`IouLoss(ltype="WIoU")`).
///
/// # Errors
/// A last dimension other than 4, shapes or dtypes that differ, a non-float dtype,
/// `mean_iou_loss`, `alpha` or `delta` not finite and > 0, `Reduction::BatchMean`.
pub fn wise_iou_loss(
    pred: &Tensor,
    target: &Tensor,
    version: WiseIouVersion,
    mean_iou_loss: f64,
    alpha: f64,
    delta: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "wise_iou_loss";
    check_wise(LOSS, pred, target, alpha, delta)?;
    check::positive(LOSS, "mean_iou_loss", mean_iou_loss)?;
    let standard = reduction.standard(LOSS)?;
    if kernel::choose(LOSS, pred)? {
        let kind = Successor::Wise {
            version,
            mean: mean_iou_loss,
            alpha,
            delta,
        };
        return fused::loss(kind.into(), pred, target, 0.0, standard);
    }
    let (p, t) = pair(pred, target)?;
    let l_iou = wise_l_iou(&p, &t)?;
    let den = enclosing_diag2(&p, &t)?.detach();
    let r = div_or_zero(&geometry::centre_distance2(&p, &t)?, &den)?.exp()?;
    let v1 = r.mul(&l_iou)?;
    let beta = l_iou.detach().affine(1.0 / mean_iou_loss, 0.0)?;
    let loss = match version {
        WiseIouVersion::V1 => v1,
        WiseIouVersion::V2 => v1.mul(&beta.sqrt()?)?,
        WiseIouVersion::V3 => {
            let divisor = beta
                .affine(alpha.ln(), -delta * alpha.ln())?
                .exp()?
                .affine(delta, 0.0)?;
            v1.mul(&beta.div(&divisor)?)?
        }
    };
    reduce_boxes(LOSS, &loss, reduction)
}

loss_core::loss_config! {
    /// [`wise_iou_loss`] as a [`Loss`] value with a fixed `mean_iou_loss` (the stateless function);
    /// [`WiseIoU`] keeps the running mean as the authors' `IouLoss`.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct WiseIoULoss {
        /// The focusing version.
        version: WiseIouVersion = WiseIouVersion::V3,
        /// The running mean of `L_IoU` (> 0).
        mean_iou_loss: f64 = 1.0,
        /// `α` of v3 (> 0).
        alpha: f64 = 1.7,
        /// `δ` of v3 (> 0).
        delta: f64 = 2.7,
        /// Reduction.
        reduction: Reduction = Reduction::None,
    }
}

impl Loss for WiseIoULoss {
    fn name(&self) -> &'static str {
        "wise_iou_loss"
    }
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let c = self;
        wise_iou_loss(input, target, c.version, c.mean_iou_loss, c.alpha, c.delta, c.reduction)
    }
}

/// The authors' momentum of the running mean (their v2 branch).
pub const WISE_IOU_MOMENTUM: f64 = 1e-2;

/// Wise-IoU with its running mean of `L_IoU`: the authors' stateful `IouLoss(ltype="WIoU")`.
///
/// Keeps one number, `iou_mean`, starting at 1. In training mode, **before** each call it
/// updates `iou_mean ← (1 − momentum)·iou_mean + momentum·mean(L_IoU)` (the mean over every box
/// of the call, no gradient), then computes [`wise_iou_loss`] with `mean_iou_loss = iou_mean`.
/// In evaluation mode ([`WiseIoU::eval`]) the mean is used as it is. The state is one float:
/// [`WiseIoU::iou_mean`] / [`WiseIoU::set_iou_mean`] let a checkpoint save and restore it.
/// `momentum` defaults to `1e-2` (the authors' v2 branch); their v1 branch (the paper's runs)
/// uses `1 − 0.05^(1/(n·t))` with `n` batches an epoch and `t` the epoch where the mAP growth
/// slows ([`WiseIoU::paper_momentum`]), with `alpha = 1.9`, `delta = 3`.
///
/// The mean lives behind a mutex so the value implements [`Loss`] (`&self`, `Send + Sync`).
/// An empty batch leaves the mean unchanged (its `mean(L_IoU)` is undefined).
#[derive(Debug)]
pub struct WiseIoU {
    /// The focusing version (default `V3`).
    pub version: WiseIouVersion,
    /// `α` of v3 (default 1.7).
    pub alpha: f64,
    /// `δ` of v3 (default 2.7).
    pub delta: f64,
    /// Momentum of the running mean (default `1e-2`, in `(0, 1]`).
    pub momentum: f64,
    /// Reduction (default `None`).
    pub reduction: Reduction,
    training: bool,
    iou_mean: Mutex<f64>,
}

impl Default for WiseIoU {
    fn default() -> Self {
        Self {
            version: WiseIouVersion::V3,
            alpha: 1.7,
            delta: 2.7,
            momentum: WISE_IOU_MOMENTUM,
            reduction: Reduction::None,
            training: true,
            iou_mean: Mutex::new(1.0),
        }
    }
}

impl Clone for WiseIoU {
    fn clone(&self) -> Self {
        Self {
            version: self.version,
            alpha: self.alpha,
            delta: self.delta,
            momentum: self.momentum,
            reduction: self.reduction,
            training: self.training,
            iou_mean: Mutex::new(self.iou_mean()),
        }
    }
}

impl WiseIoU {
    /// The momentum of the authors' v1 branch: `1 − 0.05^(1/(batches_per_epoch·epochs))`.
    pub fn paper_momentum(batches_per_epoch: usize, epochs: usize) -> f64 {
        1.0 - 0.05f64.powf(1.0 / (batches_per_epoch as f64 * epochs as f64))
    }
    /// Sets the version.
    pub fn with_version(mut self, version: WiseIouVersion) -> Self {
        self.version = version;
        self
    }
    /// Sets `alpha` and `delta` of v3.
    pub fn with_alpha_delta(mut self, alpha: f64, delta: f64) -> Self {
        self.alpha = alpha;
        self.delta = delta;
        self
    }
    /// Sets the momentum.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }
    /// Sets the reduction.
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }
    /// Training mode: each call updates the running mean first (the default).
    pub fn train(&mut self) {
        self.training = true;
    }
    /// Evaluation mode: calls leave the running mean as it is.
    pub fn eval(&mut self) {
        self.training = false;
    }
    /// Whether the value is in training mode.
    pub fn is_training(&self) -> bool {
        self.training
    }
    /// The running mean of `L_IoU` (1 for a fresh value): the state a checkpoint saves.
    pub fn iou_mean(&self) -> f64 {
        *self.iou_mean.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Restores the running mean (from a checkpoint).
    ///
    /// # Errors
    /// `BadParam` naming `wise_iou_loss` unless `iou_mean` is finite and > 0.
    pub fn set_iou_mean(&self, iou_mean: f64) -> Result<()> {
        check::positive("wise_iou_loss", "iou_mean", iou_mean)?;
        *self.iou_mean.lock().unwrap_or_else(|e| e.into_inner()) = iou_mean;
        Ok(())
    }

    /// One call: updates the mean in training mode, then computes [`wise_iou_loss`].
    ///
    /// # Errors
    /// As [`wise_iou_loss`]; a `momentum` outside `(0, 1]`. A batch whose `L_IoU` are all 0
    /// in training with momentum 1 would make the mean 0: the mean is then left unchanged.
    pub fn forward(&self, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
        const LOSS: &str = "wise_iou_loss";
        check_wise(LOSS, pred, target, self.alpha, self.delta)?;
        check::param(
            LOSS,
            "momentum",
            self.momentum,
            self.momentum > 0.0 && self.momentum <= 1.0,
            "a value in (0, 1]",
        )?;
        let mut mean = self.iou_mean.lock().unwrap_or_else(|e| e.into_inner());
        if self.training && pred.elem_count() > 0 {
            let (p, t) = pair(pred, target)?;
            let batch = wise_l_iou(&p, &t)?
                .detach()
                .flatten_all()?
                .to_dtype(candle_core::DType::F64)?
                .mean_all()?
                .to_scalar::<f64>()?;
            let next = (1.0 - self.momentum) * *mean + self.momentum * batch;
            if next > 0.0 && next.is_finite() {
                *mean = next;
            }
        }
        let m = *mean;
        drop(mean);
        wise_iou_loss(pred, target, self.version, m, self.alpha, self.delta, self.reduction)
    }
}

impl Loss for WiseIoU {
    fn name(&self) -> &'static str {
        "wise_iou_loss"
    }
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        WiseIoU::forward(self, input, target)
    }
}

// ------------------------------------------------------------------------------------------
// Focaler-IoU

/// Focaler-IoU loss: `1 − clamp((IoU − d)/(u − d), 0, 1)`, the IoU mapped linearly onto `[d, u]`.
///
/// IoU as ultralytics' `bbox_iou` (heights `+ eps`, `U = w_p·h_p + w_t·h_t − I + eps`). Pairs with
/// `IoU < d` cost 1 and `IoU > u` cost 0, with a zero gradient (the clamp is flat there; at a bound
/// exactly the gradient passes, `torch.clamp`'s rule); between, the slope is `1/(u − d)`. A large
/// `d` focuses on easy (high-IoU) samples, a small `u` on hard ones.
/// `pred`, `target`: `[..., 4]` `xyxy`, same shape, f32 or f64. Defaults (the authors' code):
/// `d = 0`, `u = 0.95`, `eps = 1e-7` (> 0), `reduction = None`.
/// Sources: Zhang & Zhang, "Focaler-IoU: More Focused Intersection over Union Loss",
/// arXiv 2401.10525; malagoutou/Focaler-IoU `focaleriou.py`.
///
/// # Errors
/// A last dimension other than 4, shapes or dtypes that differ, a non-float dtype, unless
/// `0 <= d < u <= 1`; `eps <= 0`, `Reduction::BatchMean`.
pub fn focaler_iou_loss(
    pred: &Tensor,
    target: &Tensor,
    d: f64,
    u: f64,
    eps: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "focaler_iou_loss";
    check_pair(LOSS, pred, target, eps)?;
    check::unit_interval(LOSS, "d", d)?;
    check::unit_interval(LOSS, "u", u)?;
    check::param(LOSS, "u", u, u > d, "a value above d")?;
    let standard = reduction.standard(LOSS)?;
    if kernel::choose(LOSS, pred)? {
        return fused::loss(Successor::Focaler { d, u }.into(), pred, target, eps, standard);
    }
    let (p, t) = pair(pred, target)?;
    let (inter, union) = yolo_inter_union(&p, &t, eps)?;
    let iou = ops::div(&inter, &union)?;
    let mapped = iou.affine(1.0 / (u - d), -d / (u - d))?;
    reduce_boxes(LOSS, &ops::clamp(&mapped, 0.0, 1.0)?.affine(-1.0, 1.0)?, reduction)
}

// ------------------------------------------------------------------------------------------
// NWD

/// Normalized Gaussian Wasserstein distance loss: `1 − exp(−√W²/constant)`.
///
/// Each box is the Gaussian `N((c_x, c_y), diag(w²/4, h²/4))`; the squared 2-Wasserstein
/// distance of two such Gaussians is `W² = |c_p − c_t|² + ((w_p − w_t)² + (h_p − h_t)²)/4`
/// (`+ eps` here, as the authors' code), computed as the equal `½·Σ_k (p_k − t_k)²` over the
/// four corner coordinates (per axis `((a + b)/2)² + ((b − a)/2)² = (a² + b²)/2` for the corner
/// offsets `a`, `b`), which keeps its precision for close boxes far from the origin. Unlike every IoU form it is smooth and non-zero for
/// disjoint and nested boxes and does not depend on the boxes' overlap, so tiny objects (a few
/// pixels, where a one-pixel shift sends IoU to 0) still get a graded loss. `constant` (the
/// dataset's typical object size; 12.8 for AI-TOD) sets the scale.
/// `pred`, `target`: `[..., 4]` `xyxy`, same shape, f32 or f64. Defaults (the authors'
/// `WassersteinLoss`): `constant = 12.8` (> 0), `eps = 1e-6` (> 0), `reduction = Mean`.
/// Sources: Wang et al., "A Normalized Gaussian Wasserstein Distance for Tiny Object Detection",
/// arXiv 2110.13389; jwwangchn/NWD `mmdet/models/losses/iou_loss.py` (`wasserstein_loss`,
/// mode `exp`).
///
/// # Errors
/// A last dimension other than 4, shapes or dtypes that differ, a non-float dtype,
/// `constant <= 0`, `eps <= 0`, `Reduction::BatchMean`.
pub fn nwd_loss(pred: &Tensor, target: &Tensor, constant: f64, eps: f64, reduction: Reduction) -> Result<Tensor> {
    const LOSS: &str = "nwd_loss";
    check_pair(LOSS, pred, target, eps)?;
    check::positive(LOSS, "constant", constant)?;
    let standard = reduction.standard(LOSS)?;
    if kernel::choose(LOSS, pred)? {
        return fused::loss(Successor::Nwd { constant }.into(), pred, target, eps, standard);
    }
    // W² as half the sum of the squared corner offsets (see the docs): no cancellation.
    let w2 = pred.sub(target)?.sqr()?.sum(D::Minus1)?.affine(0.5, eps)?;
    let loss = clamp_min(&w2, 0.0)?
        .sqrt()?
        .affine(-1.0 / constant, 0.0)?
        .exp()?
        .affine(-1.0, 1.0)?;
    reduce_boxes(LOSS, &loss, reduction)
}

// ------------------------------------------------------------------------------------------
// Configs

loss_core::loss_config! {
    /// [`alpha_iou_loss`] as a [`Loss`] value: `input` is the predicted boxes.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct AlphaIoULoss {
        /// The power (> 0).
        alpha: f64 = 3.0,
        /// The IoU form.
        base: AlphaIouBase = AlphaIouBase::Ciou,
        /// Added to the heights, the union and each powered term (> 0).
        eps: f64 = 1e-9,
        /// Reduction.
        reduction: Reduction = Reduction::None,
    }
    loss alpha_iou_loss(alpha, base, eps, reduction);
}

loss_core::loss_config! {
    /// [`mpdiou_loss`] as a [`Loss`] value: `input` is the predicted boxes. The image size has no
    /// default: `forward` is an error until `img_w` and `img_h` are set ([`MPDIoULoss::new`]).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct MPDIoULoss {
        /// Added to the heights and the union (> 0).
        eps: f64 = 1e-7,
        /// Reduction.
        reduction: Reduction = Reduction::None,
    }
    optional {
        /// Input image width (> 0; required).
        img_w: f64,
        /// Input image height (> 0; required).
        img_h: f64,
    }
}

impl MPDIoULoss {
    /// The loss for images of `img_w × img_h`, the other options at their defaults.
    pub fn new(img_w: f64, img_h: f64) -> Self {
        Self::default().with_img_w(img_w).with_img_h(img_h)
    }

    /// The image size, required by [`mpdiou_loss`].
    ///
    /// # Errors
    /// `BadOptions` when `img_w` or `img_h` is not set.
    pub fn image_size(&self) -> Result<(f64, f64)> {
        match (self.img_w, self.img_h) {
            (Some(w), Some(h)) => Ok((w, h)),
            _ => Err(bad_option(
                "mpdiou_loss",
                "`img_w` and `img_h` (the image size) are required".into(),
            )),
        }
    }
}

impl Loss for MPDIoULoss {
    fn name(&self) -> &'static str {
        "mpdiou_loss"
    }
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let (img_w, img_h) = self.image_size()?;
        mpdiou_loss(input, target, img_w, img_h, self.eps, self.reduction)
    }
}

loss_core::loss_config! {
    /// [`inner_iou_loss`] as a [`Loss`] value: `input` is the predicted boxes.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct InnerIoULoss {
        /// Scale of the auxiliary boxes (> 0; the paper uses 0.5 to 1.5).
        ratio: f64 = 1.0,
        /// The loss on the auxiliary boxes.
        base: InnerIouBase = InnerIouBase::Iou,
        /// Added to the unions and CIoU's diagonal (> 0).
        eps: f64 = 1e-7,
        /// Reduction.
        reduction: Reduction = Reduction::None,
    }
    loss inner_iou_loss(ratio, base, eps, reduction);
}

loss_core::loss_config! {
    /// [`shape_iou_loss`] as a [`Loss`] value: `input` is the predicted boxes.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct ShapeIoULoss {
        /// Exponent of the target's shape weights (>= 0).
        scale: f64 = 0.0,
        /// Added to the union and the diagonal (> 0).
        eps: f64 = 1e-7,
        /// Reduction.
        reduction: Reduction = Reduction::None,
    }
    loss shape_iou_loss(scale, eps, reduction);
}

loss_core::loss_config! {
    /// [`focaler_iou_loss`] as a [`Loss`] value: `input` is the predicted boxes.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct FocalerIoULoss {
        /// Lower end of the IoU interval.
        d: f64 = 0.0,
        /// Upper end of the IoU interval (`0 <= d < u <= 1`).
        u: f64 = 0.95,
        /// Added to the heights and the union (> 0).
        eps: f64 = 1e-7,
        /// Reduction.
        reduction: Reduction = Reduction::None,
    }
    loss focaler_iou_loss(d, u, eps, reduction);
}

loss_core::loss_config! {
    /// [`nwd_loss`] as a [`Loss`] value (the authors' `WassersteinLoss`): `input` is the predicted
    /// boxes.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct NWDLoss {
        /// Normalizing constant, about the dataset's object size (> 0).
        constant: f64 = 12.8,
        /// Added to the squared distance (> 0).
        eps: f64 = 1e-6,
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    loss nwd_loss(constant, eps, reduction);
}
