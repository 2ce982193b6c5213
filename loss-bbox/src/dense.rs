//! The classification and regression losses of dense detectors, with mmdetection 3.x's
//! semantics (and the PolyLoss paper's listings): `varifocal_loss`, `quality_focal_loss` (both
//! target forms), `distribution_focal_loss`, `gaussian_focal_loss`, `balanced_l1_loss`,
//! `poly1_cross_entropy`, `poly1_focal_loss`.
//!
//! | loss | value (elementwise) | source |
//! |---|---|---|
//! | [`varifocal_loss`] | `BCE(x, t)·(t if t > 0 else α·\|σ(x) − t\|^γ)` | Zhang et al., VarifocalNet, CVPR 2021 |
//! | [`quality_focal_loss`] | negatives `BCE(x, 0)·σ^β`, the positive `BCE(x, s)·\|s − σ\|^β`, summed over classes | Li et al., Generalized Focal Loss, NeurIPS 2020 |
//! | [`distribution_focal_loss`] | `CE(x, l)·(l + 1 − y) + CE(x, l + 1)·(y − l)`, `l = ⌊y⌋` | Li et al., Generalized Focal Loss, NeurIPS 2020 |
//! | [`gaussian_focal_loss`] | `−ln p·(1 − p)^α·1[t = 1] − ln(1 − p)·p^α·(1 − t)^γ` | Law & Deng, CornerNet, ECCV 2018; CenterNet |
//! | [`balanced_l1_loss`] | `α/b·(b·x + 1)·ln(b·x/β + 1) − α·x` below `β`, linear above | Pang et al., Libra R-CNN, CVPR 2019 |
//! | [`poly1_cross_entropy`] | `CE + ε·(1 − p_t)` (with label smoothing) | Leng et al., PolyLoss, ICLR 2022 |
//! | [`poly1_focal_loss`] | `focal + ε·α_t·(1 − p_t)^(γ+1)` | Leng et al., PolyLoss, ICLR 2022 |
//!
//! The mmdetection losses default to `Reduction::Mean` (mmdetection's `weight_reduce_loss`
//! without `weight`/`avg_factor`: the mean over every element of the unreduced output, `[N, C]`
//! for varifocal, `[N]` for QFL and DFL); the PolyLoss listings return per-element values and
//! default to `None`. No reference detaches its targets: the gradient reaches the soft targets
//! (varifocal's IoU targets, QFL's scores, DFL's labels, the Gaussian heatmap, balanced L1's
//! target, Poly-1 CE's probability labels) as autodiff of the reference would. mmdetection's
//! `weight`, `avg_factor` and `loss_weight` are left to the caller (multiply the `None` output).
//!
//! On the CPU, for f32 and f64, each runs a fused kernel (forward and analytic backward,
//! `fused/dense.rs`; Poly-1 cross-entropy with probability labels excepted); elsewhere, and under
//! [`loss_core::kernel::Path::Composite`], the same formulas run as composite Candle ops
//! (loss-core's primitives, PyTorch's gradient rules), on every device.

use crate::fused::dense as fused;
use crate::losses::reduce_boxes;
use candle_core::{DType, Result, Tensor, D};
use loss_core::kernel;
use loss_core::{check, log_softmax, ops, reduce, sigmoid_focal_loss, Loss, Reduction};

/// `BCEWithLogits(x, t) = (1 − t)·x + softplus(−x)`, elementwise, finite for every finite `x`;
/// gradient `σ(x) − t` w.r.t. `x` and `−x` w.r.t. `t`.
fn bce_logits(x: &Tensor, t: &Tensor) -> Result<Tensor> {
    t.affine(-1.0, 1.0)?.mul(x)?.add(&ops::softplus(&x.neg()?)?)
}

/// `BCE(p, t) = −(t·max(ln p, −100) + (1 − t)·max(ln(1 − p), −100))` (`torch.binary_cross_entropy`)
/// with PyTorch's gradients: `(p − t)/max(p(1 − p), 1e-12)` w.r.t. `p`, `ln(1 − p) − ln p`
/// (clamped) w.r.t. `t`.
fn bce_prob(p: &Tensor, t: &Tensor) -> Result<Tensor> {
    let p0 = p.detach();
    let log_p = p0.log()?.maximum(-100.0)?;
    let log_q = p0.affine(-1.0, 1.0)?.log()?.maximum(-100.0)?;
    let value = t.mul(&log_q.sub(&log_p)?)?.sub(&log_q)?;
    let den = p0.mul(&p0.affine(-1.0, 1.0)?)?.maximum(1e-12)?;
    let dp = p0.sub(&t.detach())?.div(&den)?;
    value.add(&ops::attach_grad(p, &p0.zeros_like()?, &dp)?)
}

// ------------------------------------------------------------------------------------------
// Varifocal

/// Varifocal loss (VarifocalNet): `BCEWithLogits(x, t)·w` with `w = t` (or 1 without
/// `iou_weighted`) where `t > 0` and `w = α·|σ(x) − t|^γ` where `t <= 0`.
///
/// `pred` `x`: logits `[N, C]` (any shape is accepted); `target` `t`: the IoU-aware
/// classification score of the positives (the IoU of the predicted box with its ground truth),
/// 0 for the negatives, same shape and dtype. Only the negatives are down-weighted by the focal
/// factor, so the rare positives keep their full weight (and, `iou_weighted`, more of it the
/// better their box). The weight is not detached (mmdetection's code): the gradient of the
/// negatives includes `d|σ − t|^γ/dx`. The loss jumps at `t = 0`, where its target gradient is
/// not defined. Defaults (mmdetection): `alpha = 0.75` (>= 0), `gamma = 2` (>= 0),
/// `iou_weighted = true`, `reduction = Mean` (over `N·C`).
/// Sources: Zhang et al., "VarifocalNet: An IoU-aware Dense Object Detector", CVPR 2021;
/// mmdetection `mmdet/models/losses/varifocal_loss.py`.
///
/// # Errors
/// Shapes or dtypes that differ, a non-float dtype, `alpha < 0`, `gamma < 0`,
/// `Reduction::BatchMean`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use loss_bbox::varifocal_loss;
/// use loss_core::Reduction;
/// let x = Tensor::new(&[[0f64, 0.]], &Device::Cpu)?;
/// let t = Tensor::new(&[[0.5f64, 0.]], &Device::Cpu)?;
/// let l = varifocal_loss(&x, &t, 0.75, 2.0, true, Reduction::Sum)?;
/// // ln 2 · 0.5 for the positive, ln 2 · 0.75 · 0.5² for the negative
/// let want = std::f64::consts::LN_2 * (0.5 + 0.75 * 0.25);
/// assert!((l.to_scalar::<f64>()? - want).abs() < 1e-12);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn varifocal_loss(
    pred: &Tensor,
    target: &Tensor,
    alpha: f64,
    gamma: f64,
    iou_weighted: bool,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "varifocal_loss";
    check::float_pair(LOSS, "pred", pred, "target", target)?;
    check::non_negative(LOSS, "alpha", alpha)?;
    check::non_negative(LOSS, "gamma", gamma)?;
    reduction.standard(LOSS)?;
    if kernel::choose(LOSS, pred)? {
        let loss = fused::Pointwise::Varifocal {
            alpha,
            gamma,
            iou_weighted,
        };
        return fused::pointwise(loss, pred, target, reduction);
    }
    let sigma = ops::sigmoid(pred)?;
    let negative = ops::powf(&ops::abs(&sigma.sub(target)?)?, gamma)?.affine(alpha, 0.0)?;
    let positive = if iou_weighted {
        target.clone()
    } else {
        target.ones_like()?
    };
    let weight = target.detach().gt(0.0)?.where_cond(&positive, &negative)?;
    reduce(LOSS, &bce_logits(pred, target)?.mul(&weight)?, reduction)
}

// ------------------------------------------------------------------------------------------
// Quality focal

fn check_qfl_pred(loss: &'static str, pred: &Tensor, activated: bool) -> Result<()> {
    check::float(loss, "pred", pred)?;
    if pred.rank() != 2 {
        return Err(check::bad_shape(loss, "pred", pred, "[N, C] class scores"));
    }
    if activated {
        check::values_in(loss, "pred", pred, 0.0, 1.0, "[0, 1] (probabilities, activated = true)")?;
    }
    Ok(())
}

/// Checks that `t` is `[n]`: one value per row of the `[n, C]` prediction.
fn check_per_row(loss: &'static str, arg: &'static str, t: &Tensor, n: usize) -> Result<()> {
    if t.dims() != [n] {
        return Err(check::bad_shape(
            loss,
            arg,
            t,
            &format!("[{n}] (one per row of the prediction)"),
        ));
    }
    Ok(())
}

/// A binary cross-entropy of `(pred, target)`: [`bce_logits`] or [`bce_prob`].
type BceFn = fn(&Tensor, &Tensor) -> Result<Tensor>;

/// The QFL sum over classes of a dense target `t` (`[N, C]`) with positives `mask`.
fn qfl_rows(pred: &Tensor, t: &Tensor, mask: &Tensor, beta: f64, activated: bool) -> Result<Tensor> {
    let (sigma, bce): (Tensor, BceFn) = if activated {
        (pred.clone(), bce_prob)
    } else {
        (ops::sigmoid(pred)?, bce_logits)
    };
    let negative = bce(pred, &pred.zeros_like()?)?.mul(&ops::powf(&sigma, beta)?)?;
    let positive = bce(pred, t)?.mul(&ops::powf(&ops::abs(&t.sub(&sigma)?)?, beta)?)?;
    let per = mask.where_cond(&positive, &negative)?;
    if per.elem_count() == 0 {
        return per.sum_keepdim(D::Minus1)?.squeeze(D::Minus1);
    }
    per.sum(D::Minus1)
}

/// Quality focal loss (Generalized Focal Loss) with mmdetection's `(label, score)` target.
///
/// Every class of every row is a negative supervised by 0, costing `BCE(x, 0)·σ^β`, except the
/// positive class of a row with `0 <= label < C`, which is supervised by its quality score `s`
/// (the IoU of the box) and costs `BCE(x, s)·|s − σ|^β`; the classes are summed to `[N]`.
/// A label outside `[0, C)` (mmdetection's background is `C`) makes the row all negative and its
/// score unused (zero gradient). The factors are not detached (mmdetection): the gradient reaches
/// `pred` and `score`.
/// `pred`: logits `[N, C]`, or probabilities with `activated = true` (mmdetection's
/// `quality_focal_loss_with_prob`, BCE on probabilities with its logs clamped at −100);
/// `label`: class indices `[N]` (u8, u32 or i64); `score`: `[N]`, pred's float dtype.
/// Defaults: `beta = 2` (>= 0), `activated = false`, `reduction = Mean` (over `N`).
/// Sources: Li et al., "Generalized Focal Loss: Learning Qualified and Distributed Bounding Boxes
/// for Dense Object Detection", NeurIPS 2020; mmdetection `mmdet/models/losses/gfocal_loss.py`.
///
/// # Errors
/// `pred` not `[N, C]` float, `label` not integer `[N]`, `score` not `[N]` of pred's dtype,
/// `activated` with a `pred` outside `[0, 1]`, `beta < 0`, `Reduction::BatchMean`.
pub fn quality_focal_loss(
    pred: &Tensor,
    label: &Tensor,
    score: &Tensor,
    beta: f64,
    activated: bool,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "quality_focal_loss";
    check_qfl_pred(LOSS, pred, activated)?;
    check::index(LOSS, "label", label)?;
    check::float(LOSS, "score", score)?;
    check::same_dtype(LOSS, "score", score, "pred", pred)?;
    check::non_negative(LOSS, "beta", beta)?;
    reduction.standard(LOSS)?;
    let (n, c) = pred.dims2()?;
    check_per_row(LOSS, "label", label, n)?;
    check_per_row(LOSS, "score", score, n)?;
    let labels = label.to_dtype(DType::I64)?.to_vec1::<i64>()?;
    if kernel::choose(LOSS, pred)? {
        let loss = fused::PerRow::QualityFocal {
            labels,
            beta,
            activated,
        };
        return fused::per_row(loss, pred, score, reduction);
    }
    let mut onehot = vec![0u8; n * c];
    for (row, &l) in labels.iter().enumerate() {
        if l >= 0 && (l as u64) < c as u64 {
            onehot[row * c + l as usize] = 1;
        }
    }
    let mask = Tensor::from_vec(onehot, (n, c), pred.device())?;
    let t = mask.to_dtype(pred.dtype())?.broadcast_mul(&score.unsqueeze(1)?)?;
    reduce(LOSS, &qfl_rows(pred, &t, &mask, beta, activated)?, reduction)
}

/// Quality focal loss with a dense soft target `[N, C]` (mmdetection's
/// `quality_focal_loss_tensor_target`): the positives are the entries where `target ≠ 0`.
///
/// Equal to [`quality_focal_loss`] with `target = one_hot(label)·score` (a positive of score 0
/// counts as a negative, which costs the same). `pred`: logits `[N, C]` (probabilities with
/// `activated`); `target`: `[N, C]`, pred's dtype. The output is the class sum `[N]`, reduced.
/// Defaults: `beta = 2` (>= 0), `activated = false`, `reduction = Mean`. The target's gradient is
/// autodiff's, but it is not defined at `target = 0` (the positive set changes there).
/// Source: mmdetection `mmdet/models/losses/gfocal_loss.py`.
///
/// # Errors
/// `pred` not `[N, C]` float, `target` of another shape or dtype, `activated` with a `pred`
/// outside `[0, 1]`, `beta < 0`, `Reduction::BatchMean`.
pub fn quality_focal_loss_tensor_target(
    pred: &Tensor,
    target: &Tensor,
    beta: f64,
    activated: bool,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "quality_focal_loss";
    check_qfl_pred(LOSS, pred, activated)?;
    check::float_pair(LOSS, "pred", pred, "target", target)?;
    check::non_negative(LOSS, "beta", beta)?;
    reduction.standard(LOSS)?;
    if kernel::choose(LOSS, pred)? {
        let loss = fused::Pointwise::QualityFocal { beta, activated };
        return fused::pointwise(loss, pred, target, reduction);
    }
    let mask = target.detach().ne(0.0)?;
    reduce(LOSS, &qfl_rows(pred, target, &mask, beta, activated)?, reduction)
}

// ------------------------------------------------------------------------------------------
// Distribution focal

/// Distribution focal loss (Generalized Focal Loss): the cross-entropy of the two bins around a
/// continuous label, weighted by the distance to each.
///
/// With `l = ⌊y⌋`: `CE(x, l)·(l + 1 − y) + CE(x, l + 1)·(y − l)`, `x` the logits of the `n + 1`
/// bins of one box side. At `y = n` exactly the value is `CE(x, n)` (mmdetection indexes bin
/// `n + 1` there, which does not exist, although its weight is 0). The gradient reaches the
/// logits and the label (`CE(x, l + 1) − CE(x, l)`, not defined at integer labels, a kink).
/// `pred`: `[N, n + 1]` logits, f32 or f64; `label`: `[N]`, pred's dtype, in `[0, n]`.
/// Default `reduction = Mean` (over `N`).
/// Sources: Li et al., NeurIPS 2020; mmdetection `mmdet/models/losses/gfocal_loss.py`.
///
/// # Errors
/// `pred` not `[N, n + 1]` float with `n + 1 >= 1`, `label` not `[N]` of pred's dtype, a label
/// outside `[0, n]`, `Reduction::BatchMean`.
pub fn distribution_focal_loss(pred: &Tensor, label: &Tensor, reduction: Reduction) -> Result<Tensor> {
    const LOSS: &str = "distribution_focal_loss";
    check::float(LOSS, "pred", pred)?;
    if pred.rank() != 2 || pred.dim(1)? == 0 {
        return Err(check::bad_shape(LOSS, "pred", pred, "[N, n + 1] logits of the bins"));
    }
    let (n_rows, bins) = pred.dims2()?;
    check::float(LOSS, "label", label)?;
    check::same_dtype(LOSS, "label", label, "pred", pred)?;
    check_per_row(LOSS, "label", label, n_rows)?;
    let top = (bins - 1) as f64;
    check::values_in(LOSS, "label", label, 0.0, top, "[0, n] (n + 1 bins)")?;
    reduction.standard(LOSS)?;
    if kernel::choose(LOSS, pred)? {
        return fused::per_row(fused::PerRow::DistributionFocal, pred, label, reduction);
    }
    if n_rows == 0 {
        let empty = pred
            .sum_keepdim(1)?
            .squeeze(1)?
            .affine(0.0, 0.0)?
            .add(&label.affine(0.0, 0.0)?)?;
        return reduce(LOSS, &empty, reduction);
    }
    let values = label.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let left: Vec<u32> = values
        .iter()
        .map(|&y| if y.is_nan() { 0 } else { y.floor().min(top) as u32 })
        .collect();
    let right: Vec<u32> = left.iter().map(|&l| (l + 1).min(bins as u32 - 1)).collect();
    let left_f: Vec<f64> = left.iter().map(|&l| l as f64).collect();
    let dev = pred.device();
    let idx_l = Tensor::from_vec(left, (n_rows, 1), dev)?;
    let idx_r = Tensor::from_vec(right, (n_rows, 1), dev)?;
    let lf = Tensor::from_vec(left_f, n_rows, dev)?.to_dtype(pred.dtype())?;
    let ls = log_softmax(pred, 1)?;
    let ce_l = ls.gather(&idx_l, 1)?.squeeze(1)?.neg()?;
    let ce_r = ls.gather(&idx_r, 1)?.squeeze(1)?.neg()?;
    let w_l = (&lf + 1.0)?.sub(label)?;
    let w_r = label.sub(&lf)?;
    reduce(LOSS, &ce_l.mul(&w_l)?.add(&ce_r.mul(&w_r)?)?, reduction)
}

// ------------------------------------------------------------------------------------------
// Gaussian focal

/// Gaussian focal loss (CornerNet / CenterNet heatmaps), elementwise:
/// `pos_weight·(−ln(p + 1e-12)·(1 − p)^α·1[t = 1]) + neg_weight·(−ln(1 − p + 1e-12)·p^α·(1 − t)^γ)`.
///
/// `pred` `p`: heatmap probabilities in `[0, 1]`, any shape; `gaussian_target` `t`: the
/// Gaussian-splatted ground truth in `[0, 1]` (1 at the object centres), same shape and dtype.
/// The negatives near a centre are down-weighted by `(1 − t)^γ`, so a peak one pixel off costs
/// little. The gradient reaches `t` through `(1 − t)^γ` (not defined where `t = 1`, a jump).
/// Defaults (mmdetection): `alpha = 2` (>= 0), `gamma = 4` (>= 0), `pos_weight = 1`,
/// `neg_weight = 1`, `reduction = Mean`.
/// Sources: Law & Deng, "CornerNet: Detecting Objects as Paired Keypoints", ECCV 2018; Zhou et
/// al., "Objects as Points", 2019; mmdetection `mmdet/models/losses/gaussian_focal_loss.py`.
///
/// # Errors
/// Shapes or dtypes that differ, a non-float dtype, `pred` or `gaussian_target` outside
/// `[0, 1]` (mmdetection gives NaN), `alpha < 0`, `gamma < 0`, weights not finite,
/// `Reduction::BatchMean`.
pub fn gaussian_focal_loss(
    pred: &Tensor,
    gaussian_target: &Tensor,
    alpha: f64,
    gamma: f64,
    pos_weight: f64,
    neg_weight: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "gaussian_focal_loss";
    check::float_pair(LOSS, "pred", pred, "gaussian_target", gaussian_target)?;
    check::non_negative(LOSS, "alpha", alpha)?;
    check::non_negative(LOSS, "gamma", gamma)?;
    check::param(LOSS, "pos_weight", pos_weight, pos_weight.is_finite(), "a finite value")?;
    check::param(LOSS, "neg_weight", neg_weight, neg_weight.is_finite(), "a finite value")?;
    check::values_in(LOSS, "pred", pred, 0.0, 1.0, "[0, 1] (probabilities)")?;
    check::values_in(LOSS, "gaussian_target", gaussian_target, 0.0, 1.0, "[0, 1]")?;
    reduction.standard(LOSS)?;
    if kernel::choose(LOSS, pred)? {
        let loss = fused::Pointwise::GaussianFocal {
            alpha,
            gamma,
            pos_weight,
            neg_weight,
        };
        return fused::pointwise(loss, pred, gaussian_target, reduction);
    }
    const EPS: f64 = 1e-12;
    let t = gaussian_target;
    let is_peak = t.detach().eq(1.0)?.to_dtype(pred.dtype())?;
    let q = pred.affine(-1.0, 1.0)?;
    let pos = (pred + EPS)?.log()?.mul(&ops::powf(&q, alpha)?)?.mul(&is_peak)?;
    let neg = (&q + EPS)?
        .log()?
        .mul(&ops::powf(pred, alpha)?)?
        .mul(&ops::powf(&t.affine(-1.0, 1.0)?, gamma)?)?;
    let loss = pos.affine(-pos_weight, 0.0)?.add(&neg.affine(-neg_weight, 0.0)?)?;
    reduce(LOSS, &loss, reduction)
}

// ------------------------------------------------------------------------------------------
// Balanced L1

/// Balanced L1 loss (Libra R-CNN), elementwise on `x = |pred − target|`, with `b = e^(γ/α) − 1`:
/// `α/b·(b·x + 1)·ln(b·x/β + 1) − α·x` for `x < β`, `γ·x + γ/b − α·β` otherwise.
///
/// It raises the gradient of the inliers (`x < β`) above Smooth L1's, so that the many accurate
/// boxes are not drowned by the few outliers, while the outliers keep a gradient bounded by `γ`.
/// `pred`, `target`: any shape, the same, f32 or f64; the gradient reaches both. Defaults
/// (mmdetection): `alpha = 0.5` (> 0), `gamma = 1.5` (> 0: `b = 0` would divide by 0),
/// `beta = 1` (> 0), `reduction = Mean`; the
/// mean of an empty input is 0 (mmdetection returns `pred.sum()·0`).
/// Sources: Pang et al., "Libra R-CNN: Towards Balanced Learning for Object Detection", CVPR
/// 2019; mmdetection `mmdet/models/losses/balanced_l1_loss.py`.
///
/// # Errors
/// Shapes or dtypes that differ, a non-float dtype, `alpha <= 0`, `gamma <= 0`, `beta <= 0`,
/// `Reduction::BatchMean`.
pub fn balanced_l1_loss(
    pred: &Tensor,
    target: &Tensor,
    alpha: f64,
    gamma: f64,
    beta: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "balanced_l1_loss";
    check::float_pair(LOSS, "pred", pred, "target", target)?;
    check::positive(LOSS, "alpha", alpha)?;
    check::positive(LOSS, "gamma", gamma)?;
    check::positive(LOSS, "beta", beta)?;
    reduction.standard(LOSS)?;
    if kernel::choose(LOSS, pred)? {
        let loss = fused::Pointwise::BalancedL1 { alpha, gamma, beta };
        return fused::pointwise(loss, pred, target, reduction);
    }
    let b = (gamma / alpha).exp() - 1.0;
    let x = ops::abs(&pred.sub(target)?)?;
    let small = x
        .affine(b, 1.0)?
        .mul(&ops::log1p(&x.affine(b / beta, 0.0)?)?)?
        .affine(alpha / b, 0.0)?
        .sub(&x.affine(alpha, 0.0)?)?;
    let large = x.affine(gamma, gamma / b - alpha * beta)?;
    let loss = x.detach().lt(beta)?.where_cond(&small, &large)?;
    reduce_boxes(LOSS, &loss, reduction)
}

// ------------------------------------------------------------------------------------------
// PolyLoss

fn check_epsilon(loss: &'static str, epsilon: f64) -> Result<()> {
    check::param(
        loss,
        "epsilon",
        epsilon,
        epsilon >= -1.0 && epsilon.is_finite(),
        "a finite value >= -1",
    )
}

/// Poly-1 cross-entropy (PolyLoss): `CE + ε·Σ y'·(1 − softmax)`, with label smoothing.
///
/// `y' = y·(1 − ls) + ls/C` where `y` is the one-hot of the index labels or the probability rows;
/// `loss = −Σ_c y'_c·log softmax(x)_c + ε·Σ_c y'_c·(1 − softmax(x)_c)`, which is
/// `CE + ε·(1 − p_t)` for rows summing to 1. `ε > 0` puts more weight on the leading polynomial
/// term (the gradient of confident samples); `ε = −1` removes it.
/// `logits`: `[N, C]`, f32 or f64; `labels`: indices `[N]` (u8, u32, i64, in `[0, C)`) or
/// probabilities `[N, C]` of the logits' dtype (the gradient reaches them).
/// Defaults (the paper's listing): `epsilon = 1` (>= −1), `label_smoothing = 0` (in `[0, 1]`),
/// `reduction = None` (`[N]`).
/// Sources: Leng et al., "PolyLoss: A Polynomial Expansion Perspective of Classification Loss
/// Functions", ICLR 2022 (arXiv 2204.12511), its Poly-1 listing.
///
/// # Errors
/// `logits` not `[N, C]` float, labels of another shape or dtype, an index outside `[0, C)`,
/// `epsilon < −1`, `label_smoothing` outside `[0, 1]`, `Reduction::BatchMean`.
pub fn poly1_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    epsilon: f64,
    label_smoothing: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "poly1_cross_entropy";
    check::float(LOSS, "logits", logits)?;
    if logits.rank() != 2 {
        return Err(check::bad_shape(LOSS, "logits", logits, "[N, C] logits"));
    }
    check_epsilon(LOSS, epsilon)?;
    check::unit_interval(LOSS, "label_smoothing", label_smoothing)?;
    reduction.standard(LOSS)?;
    let (n, c) = logits.dims2()?;
    let y = if labels.dtype().is_float() {
        check::same_shape(LOSS, "labels", labels, "logits", logits)?;
        check::same_dtype(LOSS, "labels", labels, "logits", logits)?;
        labels.clone()
    } else {
        check_per_row(LOSS, "labels", labels, n)?;
        check::class_indices(LOSS, "labels", labels, c, None)?;
        if kernel::choose(LOSS, logits)? {
            let loss = fused::PerRow::Poly1CrossEntropy {
                epsilon,
                label_smoothing,
            };
            return fused::per_row(loss, logits, labels, reduction);
        }
        let idx = labels.to_dtype(DType::I64)?.to_vec1::<i64>()?;
        let mut onehot = vec![0f64; n * c];
        for (row, &l) in idx.iter().enumerate() {
            onehot[row * c + l as usize] = 1.0;
        }
        Tensor::from_vec(onehot, (n, c), logits.device())?.to_dtype(logits.dtype())?
    };
    let y = if label_smoothing > 0.0 {
        y.affine(1.0 - label_smoothing, label_smoothing / c as f64)?
    } else {
        y
    };
    let ls = log_softmax(logits, 1)?;
    let per = y
        .mul(&ls)?
        .neg()?
        .add(&y.mul(&ls.exp()?.affine(-1.0, 1.0)?)?.affine(epsilon, 0.0)?)?;
    let rows = if per.elem_count() == 0 {
        per.sum_keepdim(1)?.squeeze(1)?
    } else {
        per.sum(1)?
    };
    reduce(LOSS, &rows, reduction)
}

/// Poly-1 focal loss (PolyLoss, the α-balanced listing), elementwise:
/// `α_t·BCEWithLogits(x, y)·(1 − p_t)^γ + ε·α_t·(1 − p_t)^(γ+1)`.
///
/// `p = σ(x)`, `p_t = y·p + (1 − y)(1 − p)`, `α_t = y·α + (1 − y)(1 − α)`; with `alpha = −1`
/// there is no `α_t` in either term (the paper's first listing). The first term is
/// [`loss_core::sigmoid_focal_loss`] (torchvision's).
/// `logits`: any shape, f32 or f64; `labels`: 0/1 floats of the same shape and dtype (binary
/// targets: no gradient reaches them). Defaults: `epsilon = 1` (>= −1), `alpha = 0.25` (in
/// `[0, 1]` or −1), `gamma = 2` (>= 0), `reduction = None`.
/// Sources: Leng et al., ICLR 2022 (arXiv 2204.12511).
///
/// # Errors
/// Shapes or dtypes that differ, a non-float dtype, `epsilon < −1`, `alpha` outside `[0, 1]` and
/// not −1, `gamma < 0`, `Reduction::BatchMean`.
pub fn poly1_focal_loss(
    logits: &Tensor,
    labels: &Tensor,
    epsilon: f64,
    alpha: f64,
    gamma: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "poly1_focal_loss";
    check::float_pair(LOSS, "logits", logits, "labels", labels)?;
    check_epsilon(LOSS, epsilon)?;
    check::param(
        LOSS,
        "alpha",
        alpha,
        (0.0..=1.0).contains(&alpha) || alpha == -1.0,
        "a value in [0, 1], or -1 to disable",
    )?;
    check::non_negative(LOSS, "gamma", gamma)?;
    reduction.standard(LOSS)?;
    let y = labels.detach();
    if kernel::choose(LOSS, logits)? {
        let loss = fused::Pointwise::Poly1Focal { epsilon, alpha, gamma };
        return fused::pointwise(loss, logits, &y, reduction);
    }
    let focal = sigmoid_focal_loss(logits, &y, alpha, gamma, Reduction::None)?;
    // 1 − p_t = y·σ(−x) + (1 − y)·σ(x)
    let q = y
        .mul(&ops::sigmoid(&logits.neg()?)?)?
        .add(&y.affine(-1.0, 1.0)?.mul(&ops::sigmoid(logits)?)?)?;
    let mut poly = ops::powf(&q, gamma + 1.0)?.affine(epsilon, 0.0)?;
    if alpha >= 0.0 {
        poly = poly.mul(&y.affine(2.0 * alpha - 1.0, 1.0 - alpha)?)?;
    }
    reduce(LOSS, &focal.add(&poly)?, reduction)
}

// ------------------------------------------------------------------------------------------
// Configs

loss_core::loss_config! {
    /// [`varifocal_loss`] as a [`Loss`] value (mmdetection's `VarifocalLoss`): `input` the logits.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct VarifocalLoss {
        /// Weight of the negatives' focal term (>= 0).
        alpha: f64 = 0.75,
        /// Focusing exponent (>= 0).
        gamma: f64 = 2.0,
        /// Weight the positives by their target.
        iou_weighted: bool = true,
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    loss varifocal_loss(alpha, gamma, iou_weighted, reduction);
}

loss_core::loss_config! {
    /// [`quality_focal_loss_tensor_target`] as a [`Loss`] value (mmdetection's `QualityFocalLoss`
    /// with a dense `[N, C]` target; call [`quality_focal_loss`] for the `(label, score)` form).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct QualityFocalLoss {
        /// Focusing exponent (>= 0).
        beta: f64 = 2.0,
        /// `pred` holds probabilities, not logits.
        activated: bool = false,
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
}

impl QualityFocalLoss {
    /// The loss with the `(label, score)` target.
    ///
    /// # Errors
    /// As [`quality_focal_loss`].
    pub fn forward_labels(&self, pred: &Tensor, label: &Tensor, score: &Tensor) -> Result<Tensor> {
        quality_focal_loss(pred, label, score, self.beta, self.activated, self.reduction)
    }
}

impl Loss for QualityFocalLoss {
    fn name(&self) -> &'static str {
        "quality_focal_loss"
    }
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        quality_focal_loss_tensor_target(input, target, self.beta, self.activated, self.reduction)
    }
}

loss_core::loss_config! {
    /// [`distribution_focal_loss`] as a [`Loss`] value: `input` the bin logits, `target` the labels.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct DistributionFocalLoss {
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    loss distribution_focal_loss(reduction);
}

loss_core::loss_config! {
    /// [`gaussian_focal_loss`] as a [`Loss`] value: `input` the heatmap, `target` the Gaussian target.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct GaussianFocalLoss {
        /// Exponent on the prediction (>= 0).
        alpha: f64 = 2.0,
        /// Exponent of the negatives' `(1 − t)` (>= 0).
        gamma: f64 = 4.0,
        /// Weight of the positive term.
        pos_weight: f64 = 1.0,
        /// Weight of the negative term.
        neg_weight: f64 = 1.0,
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    loss gaussian_focal_loss(alpha, gamma, pos_weight, neg_weight, reduction);
}

loss_core::loss_config! {
    /// [`balanced_l1_loss`] as a [`Loss`] value (mmdetection's `BalancedL1Loss`).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct BalancedL1Loss {
        /// Inlier gradient scale (> 0).
        alpha: f64 = 0.5,
        /// Outlier gradient bound (> 0).
        gamma: f64 = 1.5,
        /// Where the inlier zone ends (> 0).
        beta: f64 = 1.0,
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    loss balanced_l1_loss(alpha, gamma, beta, reduction);
}

loss_core::loss_config! {
    /// [`poly1_cross_entropy`] as a [`Loss`] value: `input` the logits, `target` the labels.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct Poly1CrossEntropy {
        /// Weight of the first polynomial term (>= −1).
        epsilon: f64 = 1.0,
        /// Label smoothing, in `[0, 1]`.
        label_smoothing: f64 = 0.0,
        /// Reduction.
        reduction: Reduction = Reduction::None,
    }
    loss poly1_cross_entropy(epsilon, label_smoothing, reduction);
}

loss_core::loss_config! {
    /// [`poly1_focal_loss`] as a [`Loss`] value: `input` the logits, `target` the 0/1 labels.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct Poly1FocalLoss {
        /// Weight of the first polynomial term (>= −1).
        epsilon: f64 = 1.0,
        /// Class balance, in `[0, 1]` or −1.
        alpha: f64 = 0.25,
        /// Focusing exponent (>= 0).
        gamma: f64 = 2.0,
        /// Reduction.
        reduction: Reduction = Reduction::None,
    }
    loss poly1_focal_loss(epsilon, alpha, gamma, reduction);
}
