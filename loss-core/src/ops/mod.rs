//! Differentiable elementwise primitives that candle-core 0.11 lacks or differentiates
//! differently from PyTorch at a kink.
//!
//! | function | value | gradient | why it is here |
//! |---|---|---|---|
//! | [`atan`] | atan(x) | 1 / (1 + x²) | Candle has no `atan` |
//! | [`log1p`] | ln(1 + x) | 1 / (1 + x) | Candle has no `log1p` (accuracy near 0) |
//! | [`softplus`] | ln(1 + eˣ) | σ(x) | no overflow for any x (Candle has none) |
//! | [`log_sigmoid`] | −softplus(−x) | σ(−x) | finite for any x (Candle has none) |
//! | [`sigmoid`] | 1 / (1 + e⁻ˣ) | σ(x)(1 − σ(x)) | no overflow for any x |
//! | [`abs`] | \|x\| | sign(x), **0 at x = 0** | PyTorch's rule; Candle gives +1 at 0 |
//! | [`clamp`] | min(max(x, lo), hi) | 1 on **[lo, hi] including the bounds**, else 0 | PyTorch's rule; Candle gives ½ at a bound |
//! | [`powf`] | xᵉ for x ≥ 0 (0⁰ = 1) | e·xᵉ⁻¹, **0 when e = 0**, finite at x = 0 for e ≥ 1 | Candle's `powf` is NaN at 0⁰ and its gradient at x = 0 |
//! | [`div`] | a / b | 1/b and **−(a/b)/b** | Candle's gradient −a/b² underflows to 0/0 = NaN for a tiny b |
//!
//! On the CPU each is one `CustomOp1` (value computed in f64 and rounded to the input dtype,
//! backward = upstream gradient times the derivative above). On any other device the same value
//! and derivative are built from plain Candle ops ([`composite`]) and joined with
//! [`attach_grad`], so CUDA and Metal get identical semantics without kernels of their own.
//! NaN propagates through every function.

pub mod composite;
mod cpu;

use candle_core::{Result, Tensor};
// Layout helpers of the CPU kernels, public for loss-bbox's and loss-seg's kernels, not for users.
#[doc(hidden)]
pub use cpu::layout_offsets;
#[doc(hidden)]
pub use cpu::map_unary;

/// One elementwise primitive: its value and its derivative.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    /// atan(x).
    Atan,
    /// ln(1 + x).
    Log1p,
    /// ln(1 + eˣ).
    Softplus,
    /// ln σ(x).
    LogSigmoid,
    /// σ(x).
    Sigmoid,
    /// \|x\| with derivative 0 at 0.
    Abs,
    /// xᵉ for x ≥ 0 (NaN for x < 0 unless e is 0), with 0⁰ = 1.
    Pow {
        /// The exponent e.
        exponent: f64,
    },
    /// Clamp into `[lo, hi]` with derivative 1 on the closed interval.
    Clamp {
        /// Lower bound (`-inf` for none).
        lo: f64,
        /// Upper bound (`+inf` for none).
        hi: f64,
    },
}

fn sigmoid64(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn softplus64(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

impl Unary {
    /// The value at `x`, in f64.
    pub fn value(self, x: f64) -> f64 {
        match self {
            Unary::Atan => x.atan(),
            Unary::Log1p => x.ln_1p(),
            Unary::Softplus => softplus64(x),
            Unary::LogSigmoid => -softplus64(-x),
            Unary::Sigmoid => sigmoid64(x),
            Unary::Abs => x.abs(),
            Unary::Pow { exponent } => x.powf(exponent),
            Unary::Clamp { lo, hi } => {
                if x.is_nan() {
                    x
                } else {
                    x.max(lo).min(hi)
                }
            }
        }
    }

    /// The derivative at `x`, in f64.
    pub fn derivative(self, x: f64) -> f64 {
        match self {
            Unary::Atan => 1.0 / (1.0 + x * x),
            Unary::Log1p => 1.0 / (1.0 + x),
            Unary::Softplus => sigmoid64(x),
            Unary::LogSigmoid => sigmoid64(-x),
            Unary::Sigmoid => {
                let s = sigmoid64(x);
                s * (1.0 - s)
            }
            Unary::Abs => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    x * 0.0 // 0 at 0, NaN at NaN
                }
            }
            Unary::Pow { exponent } => {
                if exponent == 0.0 {
                    x * 0.0
                } else {
                    exponent * x.powf(exponent - 1.0)
                }
            }
            Unary::Clamp { lo, hi } => {
                if x.is_nan() {
                    x
                } else if lo <= x && x <= hi {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    /// Applies the primitive to `x` (float dtype, any shape, any device), differentiably.
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        if crate::kernel::cpu_allowed(x) {
            x.apply_op1(cpu::UnaryOp {
                f: self,
                derivative: false,
            })
        } else {
            composite::apply(self, x)
        }
    }
}

/// atan(x), elementwise; gradient 1 / (1 + x²).
pub fn atan(x: &Tensor) -> Result<Tensor> {
    Unary::Atan.apply(x)
}

/// ln(1 + x), elementwise, accurate near 0; gradient 1 / (1 + x).
pub fn log1p(x: &Tensor) -> Result<Tensor> {
    Unary::Log1p.apply(x)
}

/// softplus(x) = ln(1 + eˣ), elementwise, finite for every finite x; gradient σ(x).
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    Unary::Softplus.apply(x)
}

/// ln σ(x) = −softplus(−x), elementwise, finite for every finite x; gradient σ(−x).
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    Unary::LogSigmoid.apply(x)
}

/// σ(x) = 1 / (1 + e⁻ˣ), elementwise; gradient σ(x)(1 − σ(x)).
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    Unary::Sigmoid.apply(x)
}

/// \|x\|, elementwise; gradient sign(x) with **0 at x = 0** (PyTorch's rule).
pub fn abs(x: &Tensor) -> Result<Tensor> {
    Unary::Abs.apply(x)
}

/// Clamps into `[lo, hi]` (use ±inf for a one-sided clamp); gradient 1 where `lo <= x <= hi`
/// (the bounds included, PyTorch's `clamp` rule) and 0 outside.
pub fn clamp(x: &Tensor, lo: f64, hi: f64) -> Result<Tensor> {
    Unary::Clamp { lo, hi }.apply(x)
}

/// xᵉ elementwise for x ≥ 0, with 0⁰ = 1; gradient e·xᵉ⁻¹ (0 when e = 0, 1 at x = 0 when
/// e = 1, 0 at x = 0 when e > 1, +inf at x = 0 when 0 < e < 1 as the mathematics says).
pub fn powf(x: &Tensor, exponent: f64) -> Result<Tensor> {
    Unary::Pow { exponent }.apply(x)
}

/// `x.narrow(dim, start, len)` that is safe on an empty `x`.
///
/// Candle 0.11 gives a narrowed empty tensor a start offset beyond its (empty) storage, and the
/// CPU kernels of later ops then index out of range and **panic**. An empty `x` gives a fresh
/// empty tensor of the narrowed shape instead (it has no element to carry a gradient).
///
/// # Errors
/// As `Tensor::narrow` (a `dim` or range out of bounds).
pub fn narrow(x: &Tensor, dim: usize, start: usize, len: usize) -> Result<Tensor> {
    let out = x.narrow(dim, start, len)?;
    if x.elem_count() == 0 {
        return Tensor::zeros(out.shape(), x.dtype(), x.device());
    }
    Ok(out)
}

/// `num / den` elementwise (same shape), with PyTorch's gradient: `1/den` w.r.t. `num` and
/// `−(num/den)/den` w.r.t. `den`.
///
/// Candle's own division backward computes `−num/den²`, where `den²` underflows to 0 for a `den`
/// below ~1e-19 (f32) and gives `0/0 = NaN` or `inf` even though the true gradient is
/// representable. The value is exactly `num / den` for finite operands (a zero-valued
/// correction term carries the gradient, as [`attach_grad`]); any device.
pub fn div(num: &Tensor, den: &Tensor) -> Result<Tensor> {
    let den_c = den.detach();
    let q = num.detach().div(&den_c)?;
    // (num − q·den) / den_c is 0 forward; backward 1/den w.r.t. num and −q/den w.r.t. den.
    let x = num.sub(&q.mul(den)?)?.div(&den_c)?;
    q.add(&x.sub(&x.detach())?)
}

/// `x · ln y` with `0 · ln y = 0` whenever `x = 0` (also for `y = 0`), as `torch.xlogy`;
/// the gradient is finite there too (0 w.r.t. both arguments where `x = 0`).
pub fn xlogy(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let zero = x.eq(0.0)?;
    let y_safe = zero.where_cond(&y.ones_like()?, y)?;
    x.mul(&y_safe.log()?)
}

/// Joins a value and a derivative computed without gradient into a differentiable result:
/// `value(x)` forward, `upstream · derivative` backward. Works on every device.
///
/// The result is `value + (x₀ − x₀.detach()) · d` where `x₀` is `x` with non-finite entries
/// replaced by 0, so the added term is exactly 0 forward. An infinite derivative is clamped to
/// the dtype's largest finite number (`0 · inf` would make the value NaN).
pub fn attach_grad(x: &Tensor, value: &Tensor, derivative: &Tensor) -> Result<Tensor> {
    let finite = x.sub(x)?.eq(0.0)?;
    let x0 = finite.where_cond(x, &x.zeros_like()?)?;
    let dx = x0.sub(&x0.detach())?;
    let big = match x.dtype() {
        candle_core::DType::F64 => f64::MAX,
        candle_core::DType::F16 => 65504.0,
        _ => f32::MAX as f64,
    };
    let d = derivative.detach().clamp(-big, big)?;
    value.detach().add(&dx.mul(&d)?)
}
