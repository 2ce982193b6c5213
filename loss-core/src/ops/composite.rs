//! The device-independent form of [`super::Unary`], from plain Candle ops.
//!
//! Used on every non-CPU device; public so that tests can hold it equal to the CPU kernels.

use super::{attach_grad, Unary};
use candle_core::{Result, Tensor};
use std::f64::consts::FRAC_PI_2;

/// sign(x) as a float tensor: −1, 0 or +1 (NaN stays NaN).
pub fn sign(x: &Tensor) -> Result<Tensor> {
    let pos = x.gt(0.0)?.to_dtype(x.dtype())?;
    let neg = x.lt(0.0)?.to_dtype(x.dtype())?;
    keep_nan(x, &pos.sub(&neg)?)
}

/// `v` where `x` is a number, NaN where `x` is NaN (±inf are numbers here).
fn keep_nan(x: &Tensor, v: &Tensor) -> Result<Tensor> {
    x.ne(x)?.where_cond(x, v)
}

fn sigmoid(x: &Tensor) -> Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

fn log1p(x: &Tensor) -> Result<Tensor> {
    // ln(u) * x / (u - 1) with u = 1 + x corrects the rounding of 1 + x (Goldberg's trick).
    let u = (x + 1.0)?;
    let d = (&u - 1.0)?;
    let exact = d.eq(0.0)?;
    let d_safe = exact.where_cond(&d.ones_like()?, &d)?;
    let v = u.log()?.mul(x)?.div(&d_safe)?;
    exact.where_cond(x, &v)
}

fn softplus(x: &Tensor) -> Result<Tensor> {
    x.relu()?.add(&log1p(&x.abs()?.neg()?.exp()?)?)
}

fn atan(x: &Tensor) -> Result<Tensor> {
    let ax = x.abs()?;
    let big = ax.gt(1.0)?;
    let ax_safe = big.where_cond(&ax, &ax.ones_like()?)?;
    let mut t = big.where_cond(&ax_safe.recip()?, &ax)?;
    // Two half-angle steps: atan(t) = 2 atan(t / (1 + sqrt(1 + t²))), leaving |t| <= tan(π/16).
    for _ in 0..2 {
        t = t.div(&((t.sqr()? + 1.0)?.sqrt()? + 1.0)?)?;
    }
    // Odd Taylor series to t^27: error below 1e-20 for |t| <= 0.2.
    let t2 = t.sqr()?;
    let mut acc = t.zeros_like()?;
    for k in (0..14).rev() {
        let c = if k % 2 == 0 { 1.0 } else { -1.0 } / (2 * k + 1) as f64;
        acc = (acc.mul(&t2)? + c)?;
    }
    let r = acc.mul(&t)?.affine(4.0, 0.0)?;
    let r = big.where_cond(&r.affine(-1.0, FRAC_PI_2)?, &r)?;
    r.mul(&sign(x)?)
}

/// `xᵉ` with the value `at_zero` at `x = 0` (Candle's `powf` goes through `ln 0`).
fn pow_at_zero(x: &Tensor, e: f64, at_zero: f64) -> Result<Tensor> {
    let zero = x.eq(0.0)?;
    let safe = zero.where_cond(&x.ones_like()?, x)?;
    zero.where_cond(&x.affine(0.0, at_zero)?, &safe.powf(e)?)
}

/// The value of `f` at `x` from plain Candle ops, without gradient.
pub fn value(f: Unary, x: &Tensor) -> Result<Tensor> {
    let x = x.detach();
    match f {
        Unary::Atan => atan(&x),
        Unary::Log1p => log1p(&x),
        Unary::Softplus => softplus(&x),
        Unary::LogSigmoid => softplus(&x.neg()?)?.neg(),
        Unary::Sigmoid => sigmoid(&x),
        Unary::Abs => x.abs(),
        Unary::Pow { exponent } => {
            if exponent == 0.0 {
                // 0⁰ = 1; NaN stays NaN.
                keep_nan(&x, &x.ones_like()?)
            } else {
                pow_at_zero(&x, exponent, 0.0)
            }
        }
        Unary::Clamp { lo, hi } => {
            let nan = x.ne(&x)?;
            let c = x.maximum(lo)?.minimum(hi)?;
            nan.where_cond(&x, &c)
        }
    }
}

/// The derivative of `f` at `x` from plain Candle ops, without gradient.
pub fn derivative(f: Unary, x: &Tensor) -> Result<Tensor> {
    let x = x.detach();
    match f {
        Unary::Atan => (x.sqr()? + 1.0)?.recip(),
        Unary::Log1p => (&x + 1.0)?.recip(),
        Unary::Softplus => sigmoid(&x),
        Unary::LogSigmoid => sigmoid(&x.neg()?),
        Unary::Sigmoid => {
            let s = sigmoid(&x)?;
            s.mul(&(s.neg()? + 1.0)?)
        }
        Unary::Abs => sign(&x),
        Unary::Pow { exponent } => {
            if exponent == 0.0 {
                keep_nan(&x, &x.zeros_like()?)
            } else if exponent == 1.0 {
                keep_nan(&x, &x.ones_like()?)
            } else {
                let at_zero = if exponent > 1.0 { 0.0 } else { f64::INFINITY };
                pow_at_zero(&x, exponent - 1.0, at_zero)?.affine(exponent, 0.0)
            }
        }
        Unary::Clamp { lo, hi } => {
            let inside = x.ge(lo)?.to_dtype(x.dtype())?.mul(&x.le(hi)?.to_dtype(x.dtype())?)?;
            keep_nan(&x, &inside)
        }
    }
}

/// `f` applied to `x` from plain Candle ops, differentiable on every device.
pub fn apply(f: Unary, x: &Tensor) -> Result<Tensor> {
    attach_grad(x, &value(f, x)?, &derivative(f, x)?)
}
