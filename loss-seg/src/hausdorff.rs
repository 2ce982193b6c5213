//! Hausdorff distance loss from distance transforms (Karimi & Salcudean, "Reducing the Hausdorff
//! Distance in Medical Image Segmentation with Convolutional Neural Networks", IEEE TMI 39(2),
//! 2020; arXiv 1904.10030, 2019), as MONAI 1.6.1's `HausdorffDTLoss` and `LogHausdorffDTLoss`.
//!
//! For each item `n` and class `c`, with `p`, `g` the activated prediction and the target:
//!
//! ```text
//! F(M) = 0                          if M is all false or all true
//!        edt(M) + edt(¬M)           otherwise (each pixel's distance to the other value)
//! loss[n, c] = mean_space (p − g)² · (F(p > 0.5)^α + F(g > 0.5)^α)
//! log_hausdorff = log(1 + reduced hausdorff)
//! ```
//!
//! `edt` is the exact Euclidean distance transform of [`crate::edt`] (unit spacing); the two
//! distance maps are computed on the host from the detached, thresholded tensors and are
//! constants for the gradient (MONAI computes them under `no_grad` with scipy), so the gradient
//! w.r.t. `p` is `2(p − g)·(F_p^α + F_g^α) / |space|`. `0^0 = 1`, so `α = 0` weighs every pixel
//! by 2. With `batch` the mean runs over the batch and space together, giving `[1, C']` (MONAI
//! keeps the batch dimension here, unlike the Dice loss).

use crate::edt::edt;
use crate::prepare::{prepare, Prepare};
use candle_core::{DType, Device, Result, Tensor};
use loss_core::{check, ops, reduce, Loss, Reduction};
use rayon::prelude::*;

loss_core::loss_config! {
    /// MONAI's `HausdorffDTLoss` options, with MONAI's defaults; also the loss as a [`Loss`]
    /// value (the same options serve `log_hausdorff_dt_loss` through [`LogHausdorffDtLoss`]).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct HausdorffDtLoss {
        /// Exponent of the distance maps (finite, `>= 0`).
        alpha: f64 = 2.0,
        /// Keep channel 0 (note: `false` by default here; ignored when `C = 1`).
        include_background: bool = false,
        /// The target holds class indices `[N, 1, spatial...]` (ignored when `C = 1`).
        to_onehot_y: bool = false,
        /// Sigmoid on `pred` first.
        sigmoid: bool = false,
        /// Softmax over the channels of `pred` first (ignored when `C = 1`).
        softmax: bool = false,
        /// Mean over the batch and space together: `[1, C']` instead of `[N, C']`.
        batch: bool = false,
        /// `None` gives `[N, C']` (`[1, C']` with `batch`), `Mean` / `Sum` a 0-d tensor.
        reduction: Reduction = Reduction::Mean,
    }
    loss_of_config hausdorff_dt_loss;
}

impl HausdorffDtLoss {
    fn prepare_options(&self) -> Prepare {
        Prepare {
            include_background: self.include_background,
            to_onehot_y: self.to_onehot_y,
            sigmoid: self.sigmoid,
            softmax: self.softmax,
        }
    }
}

/// The two-sided distance map `F(M)` of one image (see the module docs), raised to `alpha`.
fn distance_map_pow(mask: &[bool], dims: &[usize], alpha: f64) -> Vec<f64> {
    let all = mask.iter().all(|&m| m);
    let none = !mask.iter().any(|&m| m);
    if all || none {
        // A zero map: 0^alpha (1 for alpha = 0, as torch's 0 ** 0).
        return vec![0f64.powf(alpha); mask.len()];
    }
    let inside = edt(mask, dims);
    let not: Vec<bool> = mask.iter().map(|&m| !m).collect();
    let outside = edt(&not, dims);
    inside.iter().zip(&outside).map(|(a, b)| (a + b).powf(alpha)).collect()
}

/// The values of a float tensor on the host, as f64.
fn host_values(t: &Tensor) -> Result<Vec<f64>> {
    t.detach()
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()
}

/// The unreduced loss `[N, C']` (`[1, C']` with `batch`).
fn hausdorff_per_class(loss: &'static str, pred: &Tensor, target: &Tensor, opts: &HausdorffDtLoss) -> Result<Tensor> {
    check::non_negative(loss, "alpha", opts.alpha)?;
    check::float(loss, "pred", pred)?;
    if pred.rank() != 4 && pred.rank() != 5 {
        return Err(check::bad_shape(loss, "pred", pred, "[N, C, H, W] or [N, C, D, H, W]"));
    }
    let prepared = prepare(loss, pred, target, opts.prepare_options())?;
    let c = pred.dim(1)?;
    let first = prepared.first_class;
    let p = ops::narrow(&prepared.pred, 1, first, c - first)?;
    let g = ops::narrow(&prepared.target, 1, first, c - first)?;
    let dims = p.dims().to_vec();
    let spatial = &dims[2..];
    let s: usize = spatial.iter().product();
    let images = dims[0] * dims[1];
    // The weights F_p^alpha + F_g^alpha, per image, on the host (rayon over the images).
    let (pv, gv) = (host_values(&p)?, host_values(&g)?);
    let weights: Vec<f64> = if s == 0 {
        Vec::new()
    } else {
        let per: Vec<Vec<f64>> = (0..images)
            .into_par_iter()
            .map(|i| {
                let pm: Vec<bool> = pv[i * s..(i + 1) * s].iter().map(|&x| x > 0.5).collect();
                let gm: Vec<bool> = gv[i * s..(i + 1) * s].iter().map(|&x| x > 0.5).collect();
                let fp = distance_map_pow(&pm, spatial, opts.alpha);
                let fg = distance_map_pow(&gm, spatial, opts.alpha);
                fp.iter().zip(&fg).map(|(a, b)| a + b).collect()
            })
            .collect();
        per.concat()
    };
    let w = Tensor::from_vec(weights, dims.as_slice(), &Device::Cpu)?
        .to_dtype(p.dtype())?
        .to_device(p.device())?;
    let per_pixel = p.sub(&g)?.sqr()?.mul(&w)?;
    let space: Vec<usize> = (2..per_pixel.rank()).collect();
    let summed = per_pixel.sum(space)?;
    if opts.batch {
        let count = (dims[0] * s) as f64;
        summed.sum_keepdim(0)?.affine(1.0 / count, 0.0)
    } else {
        summed.affine(1.0 / s as f64, 0.0)
    }
}

/// Hausdorff distance-transform loss of `pred` against `target` (MONAI's `HausdorffDTLoss`).
///
/// - `pred`: `[N, C, H, W]` or `[N, C, D, H, W]`, f32 or f64: probabilities, or logits with
///   `sigmoid` / `softmax`.
/// - `target`: `pred`'s shape and dtype (0/1 masks), or class indices `[N, 1, spatial...]` with
///   `to_onehot_y`.
/// - Output: `[N, C']` (`[1, C']` with `batch`) for `Reduction::None`, else 0-d. An empty or
///   full mask has a zero distance map, so an empty target with every `p <= 0.5` gives 0.
///
/// # Errors
/// `pred` of a rank other than 4 or 5 or not float; `alpha` negative or not finite; and the input
/// errors of [`crate::dice_loss`].
pub fn hausdorff_dt_loss(pred: &Tensor, target: &Tensor, opts: &HausdorffDtLoss) -> Result<Tensor> {
    const LOSS: &str = "hausdorff_dt_loss";
    opts.reduction.standard(LOSS)?;
    reduce(LOSS, &hausdorff_per_class(LOSS, pred, target, opts)?, opts.reduction)
}

/// `log(1 + hausdorff_dt_loss)`, the log taken after the reduction (elementwise on the `[N, C']`
/// / `[1, C']` values for `Reduction::None`): MONAI's `LogHausdorffDTLoss`. Shapes, options and
/// errors as [`hausdorff_dt_loss`].
///
/// # Errors
/// As [`hausdorff_dt_loss`].
pub fn log_hausdorff_dt_loss(pred: &Tensor, target: &Tensor, opts: &HausdorffDtLoss) -> Result<Tensor> {
    const LOSS: &str = "log_hausdorff_dt_loss";
    opts.reduction.standard(LOSS)?;
    let h = reduce(LOSS, &hausdorff_per_class(LOSS, pred, target, opts)?, opts.reduction)?;
    ops::log1p(&h)
}

/// [`log_hausdorff_dt_loss`] as a [`Loss`] value, holding the [`HausdorffDtLoss`] options.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LogHausdorffDtLoss(pub HausdorffDtLoss);

impl Loss for LogHausdorffDtLoss {
    fn name(&self) -> &'static str {
        "log_hausdorff_dt_loss"
    }
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        log_hausdorff_dt_loss(input, target, &self.0)
    }
}
