//! # loss-bbox
//!
//! The IoU family of bounding-box regression losses on [Candle](https://github.com/huggingface/candle)
//! tensors, with torchvision's (and, where named, mmdetection's or the authors') values and
//! gradients, finite on every degenerate box; and the classification and regression losses of
//! dense detectors.
//!
//! | item | what | reference |
//! |---|---|---|
//! | [`BoxFormat`], [`box_convert`], [`box_area`] | `xyxy`, `xywh`, `cxcywh` boxes | `torchvision.ops` |
//! | [`box_iou`], [`generalized_box_iou`], [`distance_box_iou`], [`complete_box_iou`] | `[N, 4] × [M, 4] → [N, M]` | `torchvision.ops` |
//! | [`iou_loss`], [`giou_loss`], [`diou_loss`], [`ciou_loss`] | aligned pairs `[..., 4]` | UnitBox; `torchvision.ops.*_box_iou_loss` |
//! | [`eiou_loss`] | Efficient-IoU | Zhang et al. 2022 |
//! | [`extended_iou_loss`], [`siou_loss`] | Extended-IoU, SIoU | mmdetection `EIoULoss`, `SIoULoss` |
//! | [`alpha_iou_loss`], [`mpdiou_loss`], [`inner_iou_loss`], [`shape_iou_loss`], [`wise_iou_loss`] ([`WiseIoU`]), [`focaler_iou_loss`], [`nwd_loss`] | the successors of CIoU ([`iou_successors`]) | the authors' code |
//! | [`varifocal_loss`], [`quality_focal_loss`], [`distribution_focal_loss`], [`gaussian_focal_loss`], [`balanced_l1_loss`], [`poly1_cross_entropy`], [`poly1_focal_loss`] | dense-detection losses ([`dense`]) | mmdetection 3.x, PolyLoss |
//!
//! Every box loss takes `xyxy` boxes `pred` and `target` of exactly the same shape `[..., 4]` and
//! float dtype (f32 or f64), an `eps` (> 0; [`wise_iou_loss`] has none, as its authors' code)
//! and a [`Reduction`](loss_core::Reduction) (default
//! `None` for the torchvision family and the YOLO-community successors, `Mean` for the mmdetection
//! pair and `nwd_loss`), and is also a config struct implementing [`loss_core::Loss`]. The
//! dense-detection losses of [`dense`] take logits, probabilities or regression values with
//! their own targets (see each function). Bad input is an `Err` naming the loss, the argument
//! and the shapes. The gradient rules at kinks (ties of `max`/`min`, `clamp` bounds, `h = 0` in
//! CIoU's `atan(w/h)`) are PyTorch's and are documented once, in [`geometry`].
//!
//! # Non-finite values
//! For boxes that are not inverted and finite coordinates, every loss, metric and gradient is
//! finite (degenerate boxes included) as long as the true gradient fits the dtype: near degenerate
//! pairs the gradients grow like `1/eps` (GIoU's enclosing term over `A_c + eps`, Extended-IoU's
//! union, SIoU's offsets), like `1/area` (the pairwise metrics, which have no `eps`), and like
//! `1/h` for CIoU's aspect angle near a point box (unbounded as `h → 0`, 0 at the point itself).
//! In f32 that stays finite for `eps >= 1e-12` and box extents of 0 or at least 1e-10
//! (`tests/robustness.rs` holds it there on over 100,000 random inputs per loss); far below, the
//! true gradient itself exceeds f32's range. Inverted boxes are accepted (torchvision's rule) but
//! can make a union 0 or negative, and the ratios infinite or NaN. NaN in a coordinate gives NaN
//! in every output of its pair (its row of a pairwise matrix).
//!
//! On the CPU, [`iou_loss`], [`giou_loss`], [`diou_loss`], [`ciou_loss`] and [`eiou_loss`] run a
//! fused kernel (one pass forward, analytic gradient backward); elsewhere the same formulas run
//! as plain Candle ops (the path switch is [`loss_core::kernel::Path`]).
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use loss_bbox::giou_loss;
//! use loss_core::Reduction;
//! let pred = Var::new(&[[0f32, 0., 2., 2.], [1., 1., 2., 3.]], &Device::Cpu)?;
//! let target = Tensor::new(&[[1f32, 1., 3., 3.], [1., 1., 2., 3.]], &Device::Cpu)?;
//! let loss = giou_loss(pred.as_tensor(), &target, 1e-7, Reduction::Sum)?;
//! let grads = loss.backward()?;
//! let g = grads.get(pred.as_tensor()).unwrap();
//! assert_eq!(g.dims(), &[2, 4]);
//! # Ok::<(), candle_core::Error>(())
//! ```

#![warn(missing_docs)]

pub mod boxes;
pub mod dense;
pub mod extended_iou_siou;
mod fused;
pub mod geometry;
pub mod iou_successors;
mod kinds;
pub mod losses;
pub mod pairwise;

pub use boxes::{box_area, box_convert, check_boxes, to_xyxy_boxes, BoxFormat};
pub use dense::{
    balanced_l1_loss, distribution_focal_loss, gaussian_focal_loss, poly1_cross_entropy, poly1_focal_loss,
    quality_focal_loss, quality_focal_loss_tensor_target, varifocal_loss, BalancedL1Loss, DistributionFocalLoss,
    GaussianFocalLoss, Poly1CrossEntropy, Poly1FocalLoss, QualityFocalLoss, VarifocalLoss,
};
pub use extended_iou_siou::{extended_iou_loss, siou_loss, ExtendedIoULoss, SIoULoss};
pub use iou_successors::{
    alpha_iou_loss, focaler_iou_loss, inner_iou_loss, mpdiou_loss, nwd_loss, shape_iou_loss, wise_iou_loss,
    AlphaIoULoss, AlphaIouBase, FocalerIoULoss, InnerIoULoss, InnerIouBase, MPDIoULoss, NWDLoss, ShapeIoULoss, WiseIoU,
    WiseIoULoss, WiseIouVersion, WISE_IOU_MOMENTUM,
};
pub use losses::{
    aligned_loss, ciou_loss, diou_loss, eiou_loss, giou_loss, iou_loss, AlignedLoss, CIoULoss, DIoULoss,
    EfficientIoULoss, GIoULoss, IoULoss, IouMode, DEFAULT_EPS,
};
pub use pairwise::{box_iou, complete_box_iou, distance_box_iou, generalized_box_iou};

// The README's example is compiled and run with the doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;
