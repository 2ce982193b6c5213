//! Regression losses: L1 (MAE), L2 (MSE), Smooth L1 (Fast R-CNN) and Huber.
//!
//! All take `input` and `target` of exactly the same shape (any rank, including 0-d and empty)
//! and the same float dtype (f32 or f64); no broadcasting. With `d = input − target`:
//!
//! | loss | elementwise value | gradient w.r.t. input |
//! |---|---|---|
//! | `l1_loss` | \|d\| | sign(d), 0 at d = 0 (PyTorch) |
//! | `mse_loss` | d² | 2d |
//! | `smooth_l1_loss` | ½d²/β if \|d\| < β, else \|d\| − ½β | d/β, or sign(d) |
//! | `huber_loss` | ½d² if \|d\| < δ, else δ(\|d\| − ½δ) | d, or δ·sign(d) |
//!
//! `smooth_l1_loss` with β = 0 is exactly `l1_loss`; `huber_loss = β · smooth_l1_loss` with β = δ.
//! On the CPU each runs as one fused kernel (written with [`crate::kernel`]); elsewhere as Candle ops.
//!
//! Sources: `torch.nn.functional.{l1_loss, mse_loss, smooth_l1_loss, huber_loss}`;
//! Girshick, "Fast R-CNN", ICCV 2015 (Smooth L1); Huber, "Robust Estimation of a Location
//! Parameter", 1964.

use crate::check;
use crate::fused::{self, Pointwise};
use crate::kernel;
use crate::ops;
use crate::reduction::{reduce, Reduction};
use candle_core::{Result, Tensor};

/// Validates the pair; `Some(loss)` from the fused CPU kernel where [`kernel::choose`] takes it.
fn checked_fused(
    loss: &'static str,
    f: Pointwise,
    input: &Tensor,
    target: &Tensor,
    reduction: Reduction,
) -> Result<Option<Tensor>> {
    check::float_pair(loss, "input", input, "target", target)?;
    reduction.standard(loss)?;
    if kernel::choose(loss, input)? {
        return fused::pointwise(f, input, target, reduction).map(Some);
    }
    Ok(None)
}

/// Mean absolute error (L1): `reduce(|input − target|)`.
///
/// Shapes: `input` and `target` identical, any rank; f32 or f64. Output: the input's shape for
/// `Reduction::None`, else 0-d. The gradient at `input == target` is 0, as PyTorch.
///
/// # Errors
/// Shapes or dtypes that differ, a non-float dtype, `Reduction::BatchMean`.
pub fn l1_loss(input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    const LOSS: &str = "l1_loss";
    if let Some(fused) = checked_fused(LOSS, Pointwise::L1, input, target, reduction)? {
        return Ok(fused);
    }
    let d = input.sub(target)?;
    reduce(LOSS, &ops::abs(&d)?, reduction)
}

/// Mean squared error (L2): `reduce((input − target)²)`.
///
/// Shapes: `input` and `target` identical, any rank; f32 or f64.
///
/// # Errors
/// Shapes or dtypes that differ, a non-float dtype, `Reduction::BatchMean`.
pub fn mse_loss(input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    const LOSS: &str = "mse_loss";
    if let Some(fused) = checked_fused(LOSS, Pointwise::Mse, input, target, reduction)? {
        return Ok(fused);
    }
    let d = input.sub(target)?;
    reduce(LOSS, &d.sqr()?, reduction)
}

/// Smooth L1 loss (Girshick 2015): `½d²/β` where `|d| < β`, else `|d| − ½β`, `d = input − target`.
///
/// `beta` (PyTorch's default 1.0) must be finite and `>= 0`; `beta = 0` is exactly [`l1_loss`].
/// Shapes: `input` and `target` identical, any rank; f32 or f64.
///
/// # Errors
/// `beta < 0` or not finite, shapes or dtypes that differ, a non-float dtype.
pub fn smooth_l1_loss(input: &Tensor, target: &Tensor, beta: f64, reduction: Reduction) -> Result<Tensor> {
    const LOSS: &str = "smooth_l1_loss";
    check::non_negative(LOSS, "beta", beta)?;
    let f = if beta == 0.0 {
        Pointwise::L1
    } else {
        Pointwise::SmoothL1 { beta }
    };
    if let Some(fused) = checked_fused(LOSS, f, input, target, reduction)? {
        return Ok(fused);
    }
    let d = input.sub(target)?;
    let ad = ops::abs(&d)?;
    if beta == 0.0 {
        return reduce(LOSS, &ad, reduction);
    }
    let quadratic = d.sqr()?.affine(0.5 / beta, 0.0)?;
    let linear = ad.affine(1.0, -0.5 * beta)?;
    reduce(LOSS, &ad.lt(beta)?.where_cond(&quadratic, &linear)?, reduction)
}

/// Huber loss: `½d²` where `|d| < δ`, else `δ(|d| − ½δ)`, `d = input − target`.
///
/// `delta` (PyTorch's default 1.0) must be finite and `> 0`.
/// Shapes: `input` and `target` identical, any rank; f32 or f64.
///
/// # Errors
/// `delta <= 0` or not finite, shapes or dtypes that differ, a non-float dtype.
pub fn huber_loss(input: &Tensor, target: &Tensor, delta: f64, reduction: Reduction) -> Result<Tensor> {
    const LOSS: &str = "huber_loss";
    check::positive(LOSS, "delta", delta)?;
    if let Some(fused) = checked_fused(LOSS, Pointwise::Huber { delta }, input, target, reduction)? {
        return Ok(fused);
    }
    let d = input.sub(target)?;
    let ad = ops::abs(&d)?;
    let quadratic = d.sqr()?.affine(0.5, 0.0)?;
    let linear = ad.affine(delta, -0.5 * delta * delta)?;
    reduce(LOSS, &ad.lt(delta)?.where_cond(&quadratic, &linear)?, reduction)
}

crate::loss_config! {
    /// [`l1_loss`] as a [`Loss`](crate::Loss) value (`torch.nn.L1Loss`).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct L1Loss {
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    loss l1_loss(reduction);
}

crate::loss_config! {
    /// [`mse_loss`] as a [`Loss`](crate::Loss) value (`torch.nn.MSELoss`).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct MseLoss {
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    loss mse_loss(reduction);
}

crate::loss_config! {
    /// [`smooth_l1_loss`] as a [`Loss`](crate::Loss) value (`torch.nn.SmoothL1Loss`).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct SmoothL1Loss {
        /// Width of the quadratic zone (`>= 0`).
        beta: f64 = 1.0,
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    loss smooth_l1_loss(beta, reduction);
}

crate::loss_config! {
    /// [`huber_loss`] as a [`Loss`](crate::Loss) value (`torch.nn.HuberLoss`).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct HuberLoss {
        /// Threshold between the quadratic and linear zones (`> 0`).
        delta: f64 = 1.0,
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    loss huber_loss(delta, reduction);
}
