//! Pairwise IoU metrics between two sets of `xyxy` boxes, `[N, 4] × [M, 4] → [N, M]`, with
//! torchvision's values: `box_iou`, `generalized_box_iou`, `distance_box_iou`,
//! `complete_box_iou`.
//!
//! Entry `[i, j]` compares `boxes1[i]` with `boxes2[j]`. As torchvision (`_box_inter_union`),
//! the intersection clamps each extent at 0 (`clamp(min=0)`, whose gradient passes at the bound:
//! see [`crate::geometry`]), and the enclosing box's extents are clamped the same way. Any
//! float dtype (both sets of one dtype), any device; differentiable w.r.t. both sets. An empty
//! set gives an empty `[N, M]` matrix.
//!
//! Where torchvision divides 0 by 0 (two zero-area boxes with no overlap: `union = 0`, or an
//! enclosing box of zero area) the ratio is taken as 0 with a zero gradient instead of NaN; every
//! other value is torchvision's.

use crate::boxes::check_boxes;
use crate::geometry::{self, clamp_min, div_or_zero, Boxes, Overlap};
use candle_core::{Result, Tensor};
use loss_core::{check, ops};

fn check_sets(loss: &'static str, boxes1: &Tensor, boxes2: &Tensor) -> Result<(Boxes, Boxes)> {
    for (arg, t) in [("boxes1", boxes1), ("boxes2", boxes2)] {
        check_boxes(loss, arg, t)?;
        if t.rank() != 2 {
            return Err(check::bad_shape(loss, arg, t, "[N, 4] boxes"));
        }
    }
    check::same_dtype(loss, "boxes2", boxes2, "boxes1", boxes1)?;
    Ok((Boxes::rows_of(boxes1)?, Boxes::cols_of(boxes2)?))
}

/// `(IoU, union)` of every pair, `[N, M]`.
fn iou_union(a: &Boxes, b: &Boxes) -> Result<(Tensor, Tensor)> {
    let inter = geometry::intersection(a, b, Overlap::Clamped)?;
    let union = geometry::union(a, b, &inter)?;
    Ok((div_or_zero(&inter, &union)?, union))
}

/// `(clamp(C_w, 0), clamp(C_h, 0))` of the enclosing boxes, `[N, M]` each.
fn enclosing(a: &Boxes, b: &Boxes) -> Result<(Tensor, Tensor)> {
    let (w, h) = geometry::outer_extent(a, b)?;
    Ok((clamp_min(&w, 0.0)?, clamp_min(&h, 0.0)?))
}

/// `(DIoU, IoU)` of every pair.
fn diou_iou(a: &Boxes, b: &Boxes, eps: f64) -> Result<(Tensor, Tensor)> {
    let (iou, _) = iou_union(a, b)?;
    let (w, h) = enclosing(a, b)?;
    let diag = ((w.sqr()? + h.sqr()?)? + eps)?;
    let diou = iou.sub(&ops::div(&geometry::centre_distance2(a, b)?, &diag)?)?;
    Ok((diou, iou))
}

/// Intersection over union of every pair: `I / U`, `[N, M]` (`torchvision.ops.box_iou`).
///
/// `boxes1` `[N, 4]`, `boxes2` `[M, 4]`, `xyxy`, one float dtype. No `eps`: `U = 0` (two
/// zero-area boxes that do not overlap) gives 0 instead of torchvision's NaN.
///
/// # Errors
/// A rank other than 2 or a last dimension other than 4, a non-float dtype, dtypes that differ
/// (each naming `box_iou` and the argument).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use loss_bbox::box_iou;
/// let a = Tensor::new(&[[0f32, 0., 2., 2.]], &Device::Cpu)?;
/// let b = Tensor::new(&[[1f32, 1., 3., 3.], [0., 0., 2., 2.]], &Device::Cpu)?;
/// assert_eq!(box_iou(&a, &b)?.to_vec2::<f32>()?, [[1.0 / 7.0, 1.0]]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn box_iou(boxes1: &Tensor, boxes2: &Tensor) -> Result<Tensor> {
    let (a, b) = check_sets("box_iou", boxes1, boxes2)?;
    Ok(iou_union(&a, &b)?.0)
}

/// Generalized IoU of every pair: `IoU − (A_c − U)/A_c`, `[N, M]`, in `(−1, 1]`
/// (`torchvision.ops.generalized_box_iou`; Rezatofighi et al., CVPR 2019).
///
/// `A_c = clamp(C_w, 0)·clamp(C_h, 0)` is the area of the smallest enclosing box; `A_c = 0`
/// gives a zero enclosing term instead of NaN.
///
/// # Errors
/// As [`box_iou`].
pub fn generalized_box_iou(boxes1: &Tensor, boxes2: &Tensor) -> Result<Tensor> {
    let (a, b) = check_sets("generalized_box_iou", boxes1, boxes2)?;
    let (iou, union) = iou_union(&a, &b)?;
    let (w, h) = enclosing(&a, &b)?;
    let area = w.mul(&h)?;
    iou.sub(&div_or_zero(&area.sub(&union)?, &area)?)
}

/// Distance IoU of every pair: `IoU − ρ²/(C_w² + C_h² + eps)`, `[N, M]`
/// (`torchvision.ops.distance_box_iou`; Zheng et al., AAAI 2020).
///
/// `ρ` is the distance between the centres, `C` the enclosing box; `eps` default `1e-7` (> 0).
///
/// # Errors
/// As [`box_iou`], and `eps <= 0`.
pub fn distance_box_iou(boxes1: &Tensor, boxes2: &Tensor, eps: f64) -> Result<Tensor> {
    const LOSS: &str = "distance_box_iou";
    check::positive(LOSS, "eps", eps)?;
    let (a, b) = check_sets(LOSS, boxes1, boxes2)?;
    Ok(diou_iou(&a, &b, eps)?.0)
}

/// Complete IoU of every pair: `DIoU − α·v`, `[N, M]`
/// (`torchvision.ops.complete_box_iou`; Zheng et al., AAAI 2020).
///
/// `v = 4/π²·(atan(w₁/h₁) − atan(w₂/h₂))²`, `α = v/(1 − IoU + v + eps)` held constant in the
/// backward pass (torchvision's `torch.no_grad`). `atan(w/h)` is `±π/2` at `h = 0` and 0 for a
/// point box (see [`crate::geometry`]). `eps` default `1e-7` (> 0).
///
/// # Errors
/// As [`box_iou`], and `eps <= 0`.
pub fn complete_box_iou(boxes1: &Tensor, boxes2: &Tensor, eps: f64) -> Result<Tensor> {
    const LOSS: &str = "complete_box_iou";
    check::positive(LOSS, "eps", eps)?;
    let (a, b) = check_sets(LOSS, boxes1, boxes2)?;
    let (diou, iou) = diou_iou(&a, &b, eps)?;
    let v = geometry::aspect_term(&a, &b)?;
    let alpha = v.div(&((iou.affine(-1.0, 1.0)? + &v)? + eps)?)?.detach();
    diou.sub(&alpha.mul(&v)?)
}
