//! The IoU family on aligned pairs of `xyxy` boxes: `iou_loss` (UnitBox), `giou_loss`,
//! `diou_loss`, `ciou_loss` (torchvision) and `eiou_loss` (Efficient-IoU).
//!
//! `pred` and `target` are `[..., 4]` float tensors (f32 or f64) of exactly the same shape; the
//! loss of each pair of boxes gives an output of shape `[...]` (`Reduction::None`) or a 0-d
//! tensor. With, for a pair of boxes,
//! `I` the intersection area (torchvision's: `w·h` only where both extents are `> 0`),
//! `U = A_p + A_t − I` the union, `IoU = I / (U + eps)`,
//! `C_w, C_h` the extents of the smallest enclosing box,
//! `ρ²` the squared distance between the centres, `c² = C_w² + C_h² + eps`:
//!
//! | loss | value | source |
//! |---|---|---|
//! | `iou_loss` linear | `1 − IoU` | Yu et al., "UnitBox", ACM MM 2016; torchvision's family |
//! | `iou_loss` square | `1 − max(IoU, eps)²` | mmdetection `IoULoss(mode="square")` |
//! | `iou_loss` log | `−ln max(IoU, eps)` | UnitBox; mmdetection `IoULoss(mode="log")` |
//! | `giou_loss` | `1 − IoU + (A_c − U)/(A_c + eps)`, `A_c = C_w·C_h` | Rezatofighi et al., CVPR 2019; `torchvision.ops.generalized_box_iou_loss` |
//! | `diou_loss` | `1 − IoU + ρ²/c²` | Zheng et al., AAAI 2020; `torchvision.ops.distance_box_iou_loss` |
//! | `ciou_loss` | `1 − IoU + ρ²/c² + α·v`, `v = 4/π²·(atan(w_t/h_t) − atan(w_p/h_p))²`, `α = v/(1 − IoU + v + eps)` | Zheng et al., AAAI 2020; `torchvision.ops.complete_box_iou_loss` |
//! | `eiou_loss` | `1 − IoU + ρ²/c² + (w_p − w_t)²/(C_w² + eps) + (h_p − h_t)²/(C_h² + eps)` | Zhang et al., "Focal and Efficient IOU Loss", Neurocomputing 2022 (arXiv 2101.08158) |
//!
//! # Conventions
//! - `α` of CIoU is a constant for the gradient (computed under `torch.no_grad` in torchvision).
//! - `atan(w/h)` is finite at `h = 0` (`±π/2`, as `atan2(w, 0)`); a point box has angle 0 and a
//!   zero gradient there (see [`crate::geometry`] for every rule at a kink: ties of `max`/`min`
//!   split the gradient ½/½, `clamp` passes it at its bound, PyTorch's rules).
//! - Degenerate boxes (zero width or height, a point, identical, disjoint, nested, sharing an edge)
//!   give a finite loss and gradient: every division has `eps` in its denominator. A point box
//!   against itself has `IoU = 0/(0 + eps) = 0`, so `giou_loss`/`diou_loss`/`iou_loss` give 1
//!   there with a zero gradient (torchvision's convention, pytorch/vision#7746).
//! - Inverted boxes (`x2 < x1`) are accepted, as torchvision (their area is negative).
//! - Empty input `[0, 4]`: `None` gives `[0]`, `Sum` and `Mean` give 0 (torchvision).
//! - `reduction` defaults to `None`, as torchvision.
//!
//! # Kernels
//! By default ([`loss_core::kernel::Path::Auto`]) the functions run the fused CPU kernel (module
//! `fused`: one pass forward, analytic gradient backward) for f32/f64 tensors on the CPU, and the
//! composite path (plain Candle ops, Candle's autodiff) on every other device or dtype;
//! [`loss_core::kernel::force`] picks one path on purpose. Both compute the
//! same values and gradients (held equal by `tests/fused.rs`).

use crate::boxes::check_boxes;
use crate::fused;
use crate::geometry::{self, Boxes, Overlap};
pub use crate::kinds::{AlignedLoss, IouMode};
use candle_core::{Result, Tensor};
use loss_core::{check, kernel, ops, reduce, Loss, Reduction};

/// Shared argument checks of the aligned losses (also used by `extended_iou_loss`, `siou_loss`).
pub(crate) fn check_pair(loss: &'static str, pred: &Tensor, target: &Tensor, eps: f64) -> Result<()> {
    check_boxes(loss, "pred", pred)?;
    check_boxes(loss, "target", target)?;
    check::same_shape(loss, "target", target, "pred", pred)?;
    check::same_dtype(loss, "target", target, "pred", pred)?;
    check::positive(loss, "eps", eps)
}

/// `reduce`, except that `Mean` of an empty loss is 0 (torchvision's box losses) instead of NaN.
pub(crate) fn reduce_boxes(loss: &'static str, t: &Tensor, reduction: Reduction) -> Result<Tensor> {
    let reduction = reduction.standard(loss)?;
    if reduction == Reduction::Mean && t.elem_count() == 0 {
        return reduce(loss, t, Reduction::Sum);
    }
    reduce(loss, t, reduction)
}

/// Computes the aligned loss `kind` of `pred` against `target` on the path in force
/// ([`loss_core::kernel::Path`]).
///
/// `pred`, `target`: `[..., 4]` `xyxy` boxes, same shape, same float dtype. Output: `[...]` for
/// `Reduction::None`, else 0-d. The functions [`iou_loss`] ... [`eiou_loss`] call this with
/// these arguments; tests and benchmarks run it under [`loss_core::kernel::force`] to pick one
/// path on purpose.
///
/// # Errors
/// A last dimension other than 4, shapes or dtypes that differ, a non-float dtype,
/// `eps <= 0` or not finite, `Reduction::BatchMean`; `Path::Fused` off the CPU or for a dtype
/// other than f32/f64.
pub fn aligned_loss(
    kind: AlignedLoss,
    pred: &Tensor,
    target: &Tensor,
    eps: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    let loss = kind.name();
    check_pair(loss, pred, target, eps)?;
    let standard = reduction.standard(loss)?;
    // The fused kernel reduces by itself (0 for an empty mean, as `reduce_boxes`).
    if kernel::choose(loss, pred)? {
        return fused::loss(kind.into(), pred, target, eps, standard);
    }
    let per_box = composite(kind, pred, target, eps)?;
    reduce_boxes(loss, &per_box, reduction)
}

/// The composite (plain Candle ops) elementwise loss: `[...]`.
fn composite(kind: AlignedLoss, pred: &Tensor, target: &Tensor, eps: f64) -> Result<Tensor> {
    let p = Boxes::aligned(pred)?;
    let t = Boxes::aligned(target)?;
    let inter = geometry::intersection(&p, &t, Overlap::Masked)?;
    let union = geometry::union(&p, &t, &inter)?;
    let iou = ops::div(&inter, &(&union + eps)?)?;
    let one_minus_iou = iou.affine(-1.0, 1.0)?;
    let enclosing = || geometry::outer_extent(&p, &t);
    match kind {
        AlignedLoss::Iou(IouMode::Linear) => Ok(one_minus_iou),
        AlignedLoss::Iou(IouMode::Square) => geometry::clamp_min(&iou, eps)?.sqr()?.affine(-1.0, 1.0),
        AlignedLoss::Iou(IouMode::Log) => geometry::clamp_min(&iou, eps)?.log()?.neg(),
        AlignedLoss::Giou => {
            let (cw, ch) = enclosing()?;
            let area_c = cw.mul(&ch)?;
            one_minus_iou.add(&ops::div(&area_c.sub(&union)?, &(&area_c + eps)?)?)
        }
        AlignedLoss::Diou | AlignedLoss::Ciou | AlignedLoss::Eiou => {
            let (cw, ch) = enclosing()?;
            let (cw2, ch2) = (cw.sqr()?, ch.sqr()?);
            let diag = ((&cw2 + &ch2)? + eps)?;
            let diou = one_minus_iou.add(&ops::div(&geometry::centre_distance2(&p, &t)?, &diag)?)?;
            match kind {
                AlignedLoss::Ciou => {
                    let v = geometry::aspect_term(&t, &p)?;
                    let alpha = v.div(&((iou.affine(-1.0, 1.0)? + &v)? + eps)?)?.detach();
                    diou.add(&alpha.mul(&v)?)
                }
                AlignedLoss::Eiou => {
                    let dw = ops::div(&p.width()?.sub(&t.width()?)?.sqr()?, &(cw2 + eps)?)?;
                    let dh = ops::div(&p.height()?.sub(&t.height()?)?.sqr()?, &(ch2 + eps)?)?;
                    diou.add(&dw)?.add(&dh)
                }
                _ => Ok(diou),
            }
        }
    }
}

/// IoU loss of aligned box pairs (UnitBox): `1 − IoU`, `1 − max(IoU, eps)²` or `−ln max(IoU, eps)`.
///
/// `pred`, `target`: `[..., 4]` `xyxy`, same shape, f32 or f64; `IoU = I / (U + eps)` with
/// torchvision's intersection; `eps` default `1e-7` (> 0). The clamp of the square and log
/// forms makes disjoint and degenerate pairs finite (`−ln eps`) with a zero gradient.
/// `reduction` default `None`. Fused CPU kernel on the CPU (see the module docs).
/// Sources: Yu et al., "UnitBox: An Advanced Object Detection Network", ACM MM 2016;
/// mmdetection `IoULoss`.
///
/// # Errors
/// A last dimension other than 4, shapes or dtypes that differ, a non-float dtype, `eps <= 0`,
/// `Reduction::BatchMean`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use loss_bbox::{iou_loss, IouMode};
/// use loss_core::Reduction;
/// let p = Tensor::new(&[[0f64, 0., 2., 2.]], &Device::Cpu)?;
/// let t = Tensor::new(&[[1f64, 1., 3., 3.]], &Device::Cpu)?;
/// let l = iou_loss(&p, &t, IouMode::Linear, 1e-7, Reduction::Sum)?;
/// assert!((l.to_scalar::<f64>()? - (1.0 - 1.0 / 7.0)).abs() < 1e-6);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn iou_loss(pred: &Tensor, target: &Tensor, mode: IouMode, eps: f64, reduction: Reduction) -> Result<Tensor> {
    aligned_loss(AlignedLoss::Iou(mode), pred, target, eps, reduction)
}

/// Generalized IoU loss: `1 − IoU + (A_c − U)/(A_c + eps)` with `A_c` the enclosing box's area.
///
/// Exactly `torchvision.ops.generalized_box_iou_loss`: `pred`, `target` `[..., 4]` `xyxy`,
/// same shape, f32 or f64; `eps` default `1e-7` (> 0); `reduction` default `None`. Values in
/// `[0, 2)`. Source: Rezatofighi et al., "Generalized Intersection over Union", CVPR 2019.
///
/// # Errors
/// As [`iou_loss`].
///
/// ```
/// use candle_core::{Device, Tensor};
/// use loss_bbox::giou_loss;
/// use loss_core::Reduction;
/// let p = Tensor::new(&[[0f32, 0., 1., 1.]], &Device::Cpu)?;
/// let t = Tensor::new(&[[2f32, 0., 3., 1.]], &Device::Cpu)?;
/// // IoU 0, enclosing box 3 x 1 with union 2: 1 + 1/3
/// let l = giou_loss(&p, &t, 1e-7, Reduction::None)?;
/// assert!((l.to_vec1::<f32>()?[0] - 4.0 / 3.0).abs() < 1e-6);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn giou_loss(pred: &Tensor, target: &Tensor, eps: f64, reduction: Reduction) -> Result<Tensor> {
    aligned_loss(AlignedLoss::Giou, pred, target, eps, reduction)
}

/// Distance IoU loss: `1 − IoU + ρ²/(C_w² + C_h² + eps)`, `ρ` the distance between the centres.
///
/// Exactly `torchvision.ops.distance_box_iou_loss`: `[..., 4]` `xyxy`, same shape, f32 or f64;
/// `eps` default `1e-7` (> 0); `reduction` default `None`. Squared distances only, so coincident
/// centres have a finite gradient. Source: Zheng et al., "Distance-IoU Loss", AAAI 2020.
///
/// # Errors
/// As [`iou_loss`].
pub fn diou_loss(pred: &Tensor, target: &Tensor, eps: f64, reduction: Reduction) -> Result<Tensor> {
    aligned_loss(AlignedLoss::Diou, pred, target, eps, reduction)
}

/// Complete IoU loss: DIoU + `α·v`, `v = 4/π²·(atan(w_t/h_t) − atan(w_p/h_p))²`,
/// `α = v/(1 − IoU + v + eps)` held constant in the backward pass.
///
/// torchvision's `complete_box_iou_loss`, with `atan(w/h)` finite at `h = 0` (`±π/2`, as
/// `atan2`) and 0 for a point box, where torchvision gives NaN. `[..., 4]` `xyxy`, same shape,
/// f32 or f64; `eps` default `1e-7` (> 0); `reduction` default `None`.
/// Source: Zheng et al., "Distance-IoU Loss", AAAI 2020.
///
/// # Errors
/// As [`iou_loss`].
///
/// ```
/// use candle_core::{Device, Tensor};
/// use loss_bbox::ciou_loss;
/// use loss_core::Reduction;
/// let p = Tensor::new(&[[-1f32, -1., 1., 1.]], &Device::Cpu)?;
/// let t = Tensor::new(&[[0f32, 0., 1., 1.]], &Device::Cpu)?;
/// let l = ciou_loss(&p, &t, 1e-7, Reduction::None)?;
/// assert!((l.to_vec1::<f32>()?[0] - 0.8125).abs() < 1e-5); // torchvision's test value
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn ciou_loss(pred: &Tensor, target: &Tensor, eps: f64, reduction: Reduction) -> Result<Tensor> {
    aligned_loss(AlignedLoss::Ciou, pred, target, eps, reduction)
}

/// Efficient IoU loss: DIoU + `(w_p − w_t)²/(C_w² + eps) + (h_p − h_t)²/(C_h² + eps)`.
///
/// Zhang et al., "Focal and Efficient IOU Loss for Accurate Bounding Box Regression",
/// Neurocomputing 2022 (arXiv 2101.08158), with torchvision's placement of `eps`. Not
/// mmdetection's `EIoULoss`, which is the *Extended* IoU ([`crate::extended_iou_loss`]).
/// `[..., 4]` `xyxy`, same shape, f32 or f64; `eps` default `1e-7` (> 0); `reduction` default
/// `None`.
///
/// # Errors
/// As [`iou_loss`].
pub fn eiou_loss(pred: &Tensor, target: &Tensor, eps: f64, reduction: Reduction) -> Result<Tensor> {
    aligned_loss(AlignedLoss::Eiou, pred, target, eps, reduction)
}

/// The default `eps` of the torchvision box losses.
pub const DEFAULT_EPS: f64 = 1e-7;

/// An aligned box loss's config ([`loss_core::loss_config!`]) and its [`Loss`] impl.
macro_rules! aligned_config {
    ($(#[$doc:meta])* $name:ident, $kind:expr, $fname:literal) => {
        loss_core::loss_config! {
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, PartialEq)]
            pub struct $name {
                /// Added to every denominator (`> 0`).
                eps: f64 = DEFAULT_EPS,
                /// Reduction (`None`, as torchvision).
                reduction: Reduction = Reduction::None,
            }
        }

        impl Loss for $name {
            fn name(&self) -> &'static str {
                $fname
            }
            fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
                aligned_loss($kind, input, target, self.eps, self.reduction)
            }
        }
    };
}

aligned_config!(
    /// [`giou_loss`] as a [`Loss`] value: `input` is the predicted boxes.
    GIoULoss,
    AlignedLoss::Giou,
    "giou_loss"
);
aligned_config!(
    /// [`diou_loss`] as a [`Loss`] value: `input` is the predicted boxes.
    DIoULoss,
    AlignedLoss::Diou,
    "diou_loss"
);
aligned_config!(
    /// [`ciou_loss`] as a [`Loss`] value: `input` is the predicted boxes.
    CIoULoss,
    AlignedLoss::Ciou,
    "ciou_loss"
);
aligned_config!(
    /// [`eiou_loss`] (Efficient-IoU) as a [`Loss`] value: `input` is the predicted boxes.
    EfficientIoULoss,
    AlignedLoss::Eiou,
    "eiou_loss"
);

loss_core::loss_config! {
    /// [`iou_loss`] as a [`Loss`] value: `input` is the predicted boxes.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct IoULoss {
        /// Linear, square or log.
        mode: IouMode = IouMode::Linear,
        /// Added to the union and the lower clamp of IoU (`> 0`).
        eps: f64 = DEFAULT_EPS,
        /// Reduction.
        reduction: Reduction = Reduction::None,
    }
    loss iou_loss(mode, eps, reduction);
}
