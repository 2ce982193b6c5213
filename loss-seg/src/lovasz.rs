//! Lovász-Softmax loss (Berman, Rannen Triki & Blaschko, "The Lovász-Softmax loss: A tractable
//! surrogate for the optimization of the intersection-over-union measure in neural networks",
//! CVPR 2018), as `segmentation_models_pytorch`'s `LovaszLoss(mode="multiclass")`.
//!
//! With `p = softmax(logits)` over the channels and, for each class `c` present in the
//! (non-ignored) target, the errors `e_i = |1[y_i = c] − p_{i,c}|` over the valid pixels:
//!
//! ```text
//! loss_c = Σ_k e_(k) · g_k        e_(1) ≥ e_(2) ≥ ... sorted in decreasing order
//! g_k    = J_k − J_{k−1},  J_k = 1 − (G − F_k) / (G + k − F_k),  J_0 = 0
//! ```
//!
//! where `F_k` counts the foreground pixels among the `k` largest errors and `G` all of them
//! (`g` is the gradient of the Lovász extension of the Jaccard loss). The loss is the mean of
//! `loss_c` over the present classes; with `per_image` it is computed per image, then averaged
//! over the images. No valid pixel at all gives 0 (smp's stated intent; it returns an empty
//! tensor); with `per_image` such an image contributes 0 to the mean over images.
//!
//! The sort runs on the host (one copy of the errors); the gradient flows through Candle ops:
//! the loss is `Σ e ⊙ W` with the constant `W` holding each pixel's `g_k`, so the gradient
//! w.r.t. the logits comes from autodiff through the softmax and `|·|` (gradient 0 at 0) on
//! every device.

use crate::fused::LovaszHingeOp;
use crate::prepare::softmax_channels;
use candle_core::{DType, Device, Result, Tensor};
use loss_core::kernel::{self, SavedGrad};
use loss_core::{check, ops, LossError};
use rayon::prelude::*;

loss_core::loss_config! {
    /// The Lovász-Softmax options (smp's defaults: `per_image = false`, no `ignore_index`); also
    /// the loss as a [`Loss`](loss_core::Loss) value.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct LovaszSoftmaxLoss {
        /// Compute the loss per image and average over the images.
        per_image: bool = false,
        /// Target value of pixels left out of the loss (`None`: none).
        ignore_index: Option<i64> = None,
    }
    loss_of_config lovasz_softmax_loss;
}

fn check_inputs(loss: &'static str, logits: &Tensor, target: &Tensor) -> Result<()> {
    check::float(loss, "logits", logits)?;
    check::min_rank(loss, "logits", logits, 2, "[N, C, d1...]")?;
    check::index(loss, "target", target)?;
    let mut want = logits.dims().to_vec();
    want.remove(1);
    if target.dims() != want.as_slice() {
        return Err(LossError::BadShape {
            loss,
            arg: "target",
            got: target.shape().clone(),
            expected: format!("{want:?} (class indices [N, d1...] of logits {:?})", logits.dims()),
        }
        .into());
    }
    Ok(())
}

/// The Lovász gradient `g` of foreground flags sorted by decreasing error (smp's `_lovasz_grad`).
fn lovasz_grad(fg_sorted: &[bool]) -> Vec<f64> {
    let gts = fg_sorted.iter().filter(|&&f| f).count() as f64;
    let (mut fg_seen, mut bg_seen, mut prev) = (0.0, 0.0, 0.0);
    fg_sorted
        .iter()
        .map(|&f| {
            if f {
                fg_seen += 1.0;
            } else {
                bg_seen += 1.0;
            }
            let jaccard = 1.0 - (gts - fg_seen) / (gts + bg_seen);
            let g = jaccard - prev;
            prev = jaccard;
            g
        })
        .collect()
}

/// For one class over a set of pixels (flat offsets into the `[N, C, S]` errors), the pairs
/// `(offset, g)`; empty when the class is absent from these pixels.
fn class_weights(pixels: &[usize], errors: &[f64], fg: &[bool]) -> Vec<(usize, f64)> {
    if !pixels.iter().any(|&i| fg[i]) {
        return Vec::new();
    }
    let mut order = pixels.to_vec();
    // Decreasing error; ties in pixel order (deterministic, as a stable sort would give).
    order.sort_unstable_by(|&a, &b| errors[b].total_cmp(&errors[a]).then(a.cmp(&b)));
    let flags: Vec<bool> = order.iter().map(|&i| fg[i]).collect();
    order.into_iter().zip(lovasz_grad(&flags)).collect()
}

/// Host values built in f64 as a tensor of `like`'s dtype on `like`'s device (converted on the
/// host: Metal has no f64).
fn on_device(v: Vec<f64>, shape: (usize, usize, usize), like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(v, shape, &Device::Cpu)?
        .to_dtype(like.dtype())?
        .to_device(like.device())
}

/// The values of a float tensor on the host, as f64 (converted on the host: Metal has no f64).
fn host_values(t: &Tensor) -> Result<Vec<f64>> {
    let flat = t.flatten_all()?.to_device(&Device::Cpu)?;
    flat.to_dtype(DType::F64)?.to_vec1::<f64>()
}

/// Lovász-Softmax loss of `logits` against class indices `target` (a 0-d tensor).
///
/// - `logits`: `[N, C, d1...]` (rank ≥ 2), f32 or f64; the softmax over dimension 1 is taken
///   inside.
/// - `target`: class indices `[N, d1...]` (u8, u32 or i64) in `[0, C)`, or `ignore_index`.
///
/// # Errors
/// Non-float logits or rank below 2, a target that is not of index dtype or not of shape
/// `[N, d1...]` (logits without dimension 1), a class index out of range that is not
/// `ignore_index`.
pub fn lovasz_softmax_loss(logits: &Tensor, target: &Tensor, opts: &LovaszSoftmaxLoss) -> Result<Tensor> {
    const LOSS: &str = "lovasz_softmax_loss";
    check_inputs(LOSS, logits, target)?;
    let (n, c) = (logits.dim(0)?, logits.dim(1)?);
    check::class_indices(LOSS, "target", target, c, opts.ignore_index)?;
    let s = logits.elem_count() / (n * c).max(1);
    let labels = target
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_dtype(DType::I64)?
        .to_vec1::<i64>()?;

    // Foreground flags and errors, [N, C, S] row-major.
    let mut fg = vec![false; n * c * s];
    for (img, row) in labels.chunks(s.max(1)).enumerate().take(n) {
        for (px, &y) in row.iter().enumerate() {
            if Some(y) != opts.ignore_index {
                fg[(img * c + y as usize) * s + px] = true;
            }
        }
    }
    let fg_t = on_device(
        fg.iter().map(|&f| if f { 1.0 } else { 0.0 }).collect(),
        (n, c, s),
        logits,
    )?;
    let probs = softmax_channels(logits)?.reshape((n, c, s))?;
    let errors = ops::abs(&fg_t.sub(&probs)?)?;
    // Ignored pixels take no part (smp drops them): a NaN logit there must not reach the sum
    // through `NaN · 0`.
    let ignored =
        |img: usize, px: usize| opts.ignore_index.is_some() && Some(labels[img * s + px]) == opts.ignore_index;
    let errors = if (0..n).any(|img| (0..s).any(|px| ignored(img, px))) {
        let keep: Vec<f64> = (0..n * c * s)
            .map(|i| if ignored(i / (c * s), i % s.max(1)) { 0.0 } else { 1.0 })
            .collect();
        let keep = on_device(keep, (n, c, s), logits)?;
        keep.ne(0.0)?.where_cond(&errors, &errors.zeros_like()?)?
    } else {
        errors
    };
    let err_host = host_values(&errors.detach())?;

    // The groups of images averaged together: all of them, or one at a time.
    let groups: Vec<Vec<usize>> = if opts.per_image {
        (0..n).map(|i| vec![i]).collect()
    } else {
        vec![(0..n).collect()]
    };
    let mut w = vec![0f64; n * c * s];
    for images in &groups {
        let valid: Vec<(usize, usize)> = images
            .iter()
            .flat_map(|&img| (0..s).map(move |px| (img, px)))
            .filter(|&(img, px)| Some(labels[img * s + px]) != opts.ignore_index)
            .collect();
        let per_class: Vec<Vec<(usize, f64)>> = (0..c)
            .into_par_iter()
            .map(|cls| {
                let pixels: Vec<usize> = valid.iter().map(|&(img, px)| (img * c + cls) * s + px).collect();
                class_weights(&pixels, &err_host, &fg)
            })
            .collect();
        let present = per_class.iter().filter(|v| !v.is_empty()).count();
        if present == 0 {
            continue;
        }
        let scale = 1.0 / (present as f64 * groups.len() as f64);
        for (i, g) in per_class.into_iter().flatten() {
            w[i] = g * scale;
        }
    }
    let w_t = on_device(w, (n, c, s), logits)?;
    errors.mul(&w_t)?.sum_all()
}

loss_core::loss_config! {
    /// The Lovász hinge options (smp's `LovaszLoss(mode="binary")` defaults); also the loss as a
    /// [`Loss`](loss_core::Loss) value.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct LovaszHingeLoss {
        /// Compute the loss per image (dimension 0) and average over the images.
        per_image: bool = false,
        /// Target value of pixels left out of the loss (`None`: none).
        ignore_index: Option<i64> = None,
    }
    loss_of_config lovasz_hinge_loss;
}

/// The Lovász hinge weights of one group of pixels: `(offset, w_k)` in the order of decreasing
/// error, with `w` of [`lovasz_grad`] (the group need not hold a foreground pixel).
fn hinge_weights(pixels: &[usize], errors: &[f64], fg: &[bool]) -> Vec<(usize, f64)> {
    let mut order = pixels.to_vec();
    order.sort_unstable_by(|&a, &b| errors[b].total_cmp(&errors[a]).then(a.cmp(&b)));
    let flags: Vec<bool> = order.iter().map(|&i| fg[i]).collect();
    order.into_iter().zip(lovasz_grad(&flags)).collect()
}

/// Lovász hinge loss of binary `logits` against 0/1 `target` (Berman, Rannen Triki & Blaschko,
/// CVPR 2018; `segmentation_models_pytorch`'s `LovaszLoss(mode="binary")`): a 0-d tensor.
///
/// With the signs `s = 2y − 1` and the hinge errors `e = 1 − x·s` of the non-ignored pixels,
/// sorted in decreasing order, `G = Σy`, and `J_k = 1 − (G − Σ_{j≤k} y_(j)) / (G + Σ_{j≤k}
/// (1 − y_(j)))`:
///
/// ```text
/// loss = Σ_k relu(e_(k)) · (J_k − J_{k−1}),   J_0 = 0
/// ```
///
/// over all pixels of the batch, or for each image (dimension 0) and then the mean over the
/// images with `per_image`. On the CPU in f32/f64 one fused kernel (where
/// [`loss_core::kernel::choose`] takes it) forms the errors, radix-sorts them (stably: ties in
/// pixel order), and writes the value and the gradient for the backward, per image in parallel;
/// elsewhere the sort runs on the host and the gradient flows through Candle ops, so it works on
/// every device. Both give the same values and gradients, ties included (`relu'(0) = 0`). No
/// valid pixel (all ignored, an empty batch)
/// gives 0; with `per_image` such an image counts as 0 in the mean.
///
/// - `logits`: `[N, d1...]` (rank ≥ 1, e.g. `[N, 1, H, W]` or `[N, H, W]`), f32 or f64.
/// - `target`: `logits`' shape, values 0 or 1 (any dtype: float or class indices), or
///   `ignore_index`.
///
/// # Errors
/// Non-float logits or rank 0, a target of another shape, a target value other than 0, 1 or
/// `ignore_index`.
pub fn lovasz_hinge_loss(logits: &Tensor, target: &Tensor, opts: &LovaszHingeLoss) -> Result<Tensor> {
    const LOSS: &str = "lovasz_hinge_loss";
    check::float(LOSS, "logits", logits)?;
    check::min_rank(LOSS, "logits", logits, 1, "[N, d1...]")?;
    check::same_shape(LOSS, "target", target, "logits", logits)?;
    if kernel::choose(LOSS, logits)? {
        let op = LovaszHingeOp {
            per_image: opts.per_image,
            ignore: opts.ignore_index.map(|i| i as f64),
            grad: SavedGrad::default(),
        };
        let labels = target.detach().to_dtype(logits.dtype())?.contiguous()?;
        match kernel::apply2(op, &logits.contiguous()?, &labels) {
            Ok(loss) => return Ok(loss),
            // A label the kernel rejects: the error names it, else (a label that is
            // `ignore_index` only in f64) the composite form decides.
            Err(_) => {
                hinge_labels(target, opts.ignore_index)?;
            }
        }
    }
    lovasz_hinge_composite(logits, target, opts)
}

/// The labels of [`lovasz_hinge_loss`] on the host, as f64, checked: 0, 1 or `ignore_index`.
fn hinge_labels(target: &Tensor, ignore_index: Option<i64>) -> Result<Vec<f64>> {
    let labels = host_values(&target.detach())?;
    let ignore = ignore_index.map(|i| i as f64);
    if labels.iter().any(|&y| y != 0.0 && y != 1.0 && Some(y) != ignore) {
        return Err(LossError::BadValues {
            loss: "lovasz_hinge_loss",
            arg: "target",
            expected: "0 or 1 (or ignore_index)",
            shape: target.shape().clone(),
        }
        .into());
    }
    Ok(labels)
}

/// [`lovasz_hinge_loss`] from plain Candle ops and a host sort (any device, any float dtype;
/// the arguments checked by the caller).
fn lovasz_hinge_composite(logits: &Tensor, target: &Tensor, opts: &LovaszHingeLoss) -> Result<Tensor> {
    let labels = hinge_labels(target, opts.ignore_index)?;
    let ignore = opts.ignore_index.map(|i| i as f64);
    let total = logits.elem_count();
    let n = logits.dim(0)?;
    let per = total / n.max(1);
    let flat = logits.flatten_all()?;
    let valid: Vec<bool> = labels.iter().map(|&y| Some(y) != ignore).collect();
    let fg: Vec<bool> = labels.iter().map(|&y| y == 1.0).collect();
    let signs = on_device(
        labels.iter().map(|&y| if y == 1.0 { 1.0 } else { -1.0 }).collect(),
        (1, 1, total),
        logits,
    )?
    .flatten_all()?;
    // e = 1 − x·s; ignored pixels replaced by 0 (a NaN logit there takes no part).
    let errors = flat.mul(&signs)?.affine(-1.0, 1.0)?;
    let errors = if valid.iter().all(|&v| v) {
        errors
    } else {
        let keep = on_device(
            valid.iter().map(|&v| if v { 1.0 } else { 0.0 }).collect(),
            (1, 1, total),
            logits,
        )?
        .flatten_all()?;
        keep.ne(0.0)?.where_cond(&errors, &errors.zeros_like()?)?
    };
    let err_host = host_values(&errors.detach())?;
    let groups: Vec<Vec<usize>> = if opts.per_image {
        (0..n).map(|i| (i * per..(i + 1) * per).collect()).collect()
    } else {
        vec![(0..total).collect()]
    };
    let scale = 1.0 / groups.len().max(1) as f64;
    let mut w = vec![0f64; total];
    for group in &groups {
        let pixels: Vec<usize> = group.iter().copied().filter(|&i| valid[i]).collect();
        for (i, g) in hinge_weights(&pixels, &err_host, &fg) {
            // relu(e)·g: the weight only where e > 0 (relu'(0) = 0); a NaN error keeps its
            // weight so that it reaches the value.
            if err_host[i] > 0.0 || err_host[i].is_nan() {
                w[i] = g * scale;
            }
        }
    }
    let w_t = on_device(w, (1, 1, total), logits)?.flatten_all()?;
    errors.mul(&w_t)?.sum_all()
}
