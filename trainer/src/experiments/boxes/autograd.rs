//! The autograd mode's losses: the workspace's own `loss_bbox` losses, summed over the cases,
//! so that one backward gives every case's gradient.

use super::BoxLoss;
use candle_core::{Result, Tensor};
use loss_bbox::{ciou_loss, diou_loss, giou_loss, iou_loss, IouMode, DEFAULT_EPS};
use loss_core::Reduction;

/// Sum over the cases of `loss(pred, target)` for `[N, 4]` `xyxy` boxes, with loss-bbox's
/// defaults (`eps = 1e-7`; IoU loss in its linear form `1 − IoU`; CIoU's `α` held constant),
/// as a 0-d tensor. `target` is used as a constant.
///
/// # Errors
/// Whatever the loss-bbox function returns (shapes, dtypes).
pub fn loss_sum(loss: BoxLoss, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    let target = target.detach();
    match loss {
        BoxLoss::Iou => iou_loss(pred, &target, IouMode::Linear, DEFAULT_EPS, Reduction::Sum),
        BoxLoss::Giou => giou_loss(pred, &target, DEFAULT_EPS, Reduction::Sum),
        BoxLoss::Diou => diou_loss(pred, &target, DEFAULT_EPS, Reduction::Sum),
        BoxLoss::Ciou => ciou_loss(pred, &target, DEFAULT_EPS, Reduction::Sum),
    }
}
