//! Negative log-likelihood losses of regression: Poisson NLL, Gaussian NLL, and log-cosh (the
//! NLL, up to constants, of the hyperbolic-secant distribution, whose density is ∝ 1/cosh(d)).
//!
//! | loss | elementwise value | gradients |
//! |---|---|---|
//! | `poisson_nll_loss` | `eˣ − t·x` (`log_input`), else `x − t·ln(x + eps)`; `full` adds Stirling's `t·ln t − t + ½ln(2πt)` where `t > 1` | input and target |
//! | `gaussian_nll_loss` | `½(ln v + (x − t)²/v)` (+ `½ln 2π` with `full`), `v = max(var, eps)` | input, target and `var` |
//! | `log_cosh_loss` | `ln cosh(x − t)` | `tanh(d)`, `−tanh(d)` |
//!
//! All three take `input` and `target` of exactly the same shape and float dtype (no
//! broadcasting; `var` of the Gaussian NLL is the one input that broadcasts, in the forms its
//! docs list), default to `Reduction::Mean` over every element, and are written in plain Candle
//! ops and [`crate::ops`] primitives, so the CPU and any other device run the same code.
//!
//! Sources: `torch.nn.functional.poisson_nll_loss`, `torch.nn.functional.gaussian_nll_loss`
//! (Nix & Weigend, "Estimating the mean and variance of the target probability distribution",
//! ICNN 1994); `keras.losses.log_cosh` for log-cosh (PyTorch has none).

use crate::check;
use crate::error::LossError;
use crate::fused::{self, Pointwise};
use crate::kernel;
use crate::ops;
use crate::reduction::{reduce, Reduction};
use crate::Loss;
use candle_core::{Result, Tensor};

const HALF_LN_2PI: f64 = 0.918_938_533_204_672_7;

/// Poisson negative log-likelihood (`torch.nn.functional.poisson_nll_loss`).
///
/// With `x = input` and `t = target` (the observed counts), elementwise:
/// - `log_input = true` (PyTorch's default; `x` is the log-rate): `eˣ − t·x`;
/// - `log_input = false` (`x` is the rate): `x − t·ln(x + eps)`;
/// - `full = true` adds Stirling's approximation of `ln t!`, `t·ln t − t + ½·ln(2π·t)`, only
///   where `t > 1` (it adds nothing, and nothing to the target's gradient, where `t ≤ 1`; at
///   `t = 0` PyTorch's target gradient is NaN, here it is the finite `−x` or `−ln(x + eps)`).
///
/// Shapes: `input` and `target` identical (any rank, 0-d and empty included), f32 or f64. Output:
/// the input's shape for `Reduction::None`, else 0-d (`Mean` over all elements, PyTorch's
/// default). Gradients flow to `input` and `target`. `eps` (default 1e-8) must be finite. On the
/// CPU, the default form (`log_input`, not `full`) runs as one fused kernel (value and gradient in
/// one pass, written with [`crate::kernel`]); the other forms and other devices use Candle ops.
///
/// # Errors
/// Shapes or dtypes that differ, a non-float dtype, a non-finite `eps`, `Reduction::BatchMean`.
pub fn poisson_nll_loss(
    input: &Tensor,
    target: &Tensor,
    log_input: bool,
    full: bool,
    eps: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "poisson_nll_loss";
    check::float_pair(LOSS, "input", input, "target", target)?;
    check::param(LOSS, "eps", eps, eps.is_finite(), "a finite value")?;
    reduction.standard(LOSS)?;
    if log_input && !full && kernel::choose(LOSS, input)? {
        return fused::pointwise(Pointwise::PoissonLogInput, input, target, reduction);
    }
    let mut per = if log_input {
        input.exp()?.sub(&target.mul(input)?)?
    } else {
        input.sub(&target.mul(&input.affine(1.0, eps)?.log()?)?)?
    };
    if full {
        // Stirling's term where t > 1; t is replaced by 1 elsewhere so that ln t and 1/t stay
        // finite in the (unselected) branch's gradient.
        let big = target.gt(1.0)?;
        let t1 = big.where_cond(target, &target.ones_like()?)?;
        let stirling = t1
            .mul(&t1.log()?)?
            .sub(&t1)?
            .add(&t1.log()?.affine(0.5, HALF_LN_2PI)?)?;
        per = per.add(&big.where_cond(&stirling, &target.zeros_like()?)?)?;
    }
    reduce(LOSS, &per, reduction)
}

/// How `var` lines up with `input` in [`gaussian_nll_loss`]: the shape to view it as before
/// broadcasting, or `None` when the shape is not one of the accepted forms.
fn var_view(input: &[usize], var: &[usize]) -> Option<Vec<usize>> {
    if input == var {
        return Some(var.to_vec());
    }
    // One dimension short: input.shape[:-1] (0-d against a 1-D input).
    if !input.is_empty() && &input[..input.len() - 1] == var {
        let mut v = var.to_vec();
        v.push(1);
        return Some(v);
    }
    // Same rank, exactly one differing dimension, of size 1 in var.
    if input.len() == var.len() {
        let diff: Vec<usize> = (0..input.len()).filter(|&i| input[i] != var[i]).collect();
        if diff.len() == 1 && var[diff[0]] == 1 {
            return Some(var.to_vec());
        }
    }
    None
}

/// Gaussian negative log-likelihood (`torch.nn.functional.gaussian_nll_loss`; Nix & Weigend
/// 1994): `½·(ln v + (input − target)²/v)`, plus `½·ln(2π)` with `full`, where
/// `v = max(var, eps)`.
///
/// - `input` (the predicted mean) and `target`: one shape, any rank, f32 or f64.
/// - `var` (the predicted variance, same dtype): the input's shape; or `input.shape[:-1]` (e.g.
///   `[N]` for `[N, D]`; a 0-d `var` only against a 1-D input), one variance per row; or the
///   input's rank with exactly one dimension that differs and is 1 in `var` (`[N, 1]`, `[1, D]`,
///   `[N, 1, W]`), shared along it. `var` is broadcast against `input`; its gradient is summed
///   over the broadcast dimensions.
/// - `eps` (default 1e-6, `> 0`): the clamp `max(var, eps)` is invisible to the gradient, as in
///   PyTorch (which clamps in place under `no_grad`): at a clamped entry `∂/∂var` is
///   `½·(1/eps − (input − target)²/eps²)`.
///
/// Output: the input's shape for `Reduction::None`, else 0-d (`Mean` over all of the input's
/// elements). Gradients flow to `input`, `target` and `var`. On the CPU a `var` of the input's
/// shape runs as one fused kernel (value, the check of `var` and the gradients in one pass,
/// written with [`crate::kernel`]); the broadcast forms and other devices use Candle ops.
///
/// # Errors
/// A negative entry of `var`; a `var` shape not listed above; shapes or dtypes that differ; a
/// non-float dtype; `eps <= 0` or not finite; `Reduction::BatchMean`.
pub fn gaussian_nll_loss(
    input: &Tensor,
    target: &Tensor,
    var: &Tensor,
    full: bool,
    eps: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "gaussian_nll_loss";
    check::float_pair(LOSS, "input", input, "target", target)?;
    check::float(LOSS, "var", var)?;
    check::same_dtype(LOSS, "var", var, "input", input)?;
    check::positive(LOSS, "eps", eps)?;
    reduction.standard(LOSS)?;
    let view = var_view(input.dims(), var.dims()).ok_or_else(|| {
        check::bad_shape(
            LOSS,
            "var",
            var,
            &format!(
                "the input's shape {:?}, the input's shape without its last dim, or the input's rank with one dim of size 1",
                input.dims()
            ),
        )
    })?;
    if input.elem_count() > 0 && var.dims() == input.dims() && kernel::choose(LOSS, input)? {
        // One pass, the check of `var` included.
        return fused::gaussian_nll([input, target, var], full, eps, reduction);
    }
    check::values_in(LOSS, "var", var, 0.0, f64::INFINITY, "[0, inf) (a variance)")?;
    if input.elem_count() == 0 {
        // Nothing to broadcast into: an empty elementwise loss (its sum is 0, its mean NaN).
        let per = input.sub(target)?.sqr()?;
        return reduce(LOSS, &per, reduction);
    }
    let v = var.reshape(view)?;
    // max(var, eps) forward, identity backward (PyTorch's in-place clamp under no_grad).
    let v = v.add(&v.detach().maximum(eps)?.sub(&v.detach())?)?;
    let v = v.broadcast_as(input.shape())?;
    let sq = input.sub(target)?.sqr()?;
    let mut per = v.log()?.add(&ops::div(&sq, &v)?)?.affine(0.5, 0.0)?;
    if full {
        per = per.affine(1.0, HALF_LN_2PI)?;
    }
    reduce(LOSS, &per, reduction)
}

/// Log-cosh loss: `ln cosh(input − target)` elementwise (`keras.losses.log_cosh`; PyTorch has
/// none). Quadratic (`d²/2`) near 0 and linear (`|d| − ln 2`) far out, like Huber with a smooth
/// transition and no parameter.
///
/// Computed as `|d| + softplus(−2|d|) − ln 2`, which never overflows (`cosh` itself does above
/// `|d| ≈ 89` in f32). Gradient `tanh(d)` w.r.t. `input`, `−tanh(d)` w.r.t. `target`. On the
/// CPU one fused kernel computes both in one pass; other devices use Candle ops.
///
/// Shapes: `input` and `target` identical, any rank, f32 or f64. Output: the input's shape for
/// `Reduction::None`, else 0-d (`Mean` over all elements by default).
///
/// # Errors
/// Shapes or dtypes that differ, a non-float dtype, `Reduction::BatchMean`.
pub fn log_cosh_loss(input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    const LOSS: &str = "log_cosh_loss";
    check::float_pair(LOSS, "input", input, "target", target)?;
    reduction.standard(LOSS)?;
    if kernel::choose(LOSS, input)? {
        return fused::pointwise(Pointwise::LogCosh, input, target, reduction);
    }
    let ad = ops::abs(&input.sub(target)?)?;
    let per = ad
        .add(&ops::softplus(&ad.affine(-2.0, 0.0)?)?)?
        .affine(1.0, -std::f64::consts::LN_2)?;
    reduce(LOSS, &per, reduction)
}

crate::loss_config! {
    /// [`poisson_nll_loss`] as a [`Loss`] value (`torch.nn.PoissonNLLLoss`).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct PoissonNllLoss {
        /// Whether `input` is the log of the rate.
        log_input: bool = true,
        /// Whether to add Stirling's term.
        full: bool = false,
        /// Added to the rate inside the log when `log_input` is false.
        eps: f64 = 1e-8,
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    loss poisson_nll_loss(log_input, full, eps, reduction);
}

crate::loss_config! {
    /// [`gaussian_nll_loss`] as a value (`torch.nn.GaussianNLLLoss`).
    ///
    /// It takes three tensors, so it implements [`Loss`] only through [`GaussianNllLoss::with_var`]
    /// (a fixed variance, e.g. a learned homoscedastic one held by the model); a training loop whose
    /// model predicts the variance calls [`GaussianNllLoss::forward3`] (see the crate docs,
    /// "Losses of three or four inputs").
    #[derive(Debug, Clone)]
    pub struct GaussianNllLoss {
        /// Whether to add `½·ln(2π)`.
        full: bool = false,
        /// Lower clamp of the variance.
        eps: f64 = 1e-6,
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    tensors {
        /// The variance `Loss::forward` uses; `None` makes `forward` an error.
        var,
    }
    forward3 gaussian_nll_loss(input, target, var; full, eps, reduction);
}

impl Loss for GaussianNllLoss {
    fn name(&self) -> &'static str {
        "gaussian_nll_loss"
    }
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let var = self.var.as_ref().ok_or_else(|| LossError::BadOptions {
            loss: "gaussian_nll_loss",
            message: "`forward` needs a variance: set one with `with_var`, or call `forward3`".into(),
        })?;
        self.forward3(input, target, var)
    }
}

crate::loss_config! {
    /// [`log_cosh_loss`] as a [`Loss`] value.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct LogCoshLoss {
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
    loss log_cosh_loss(reduction);
}
