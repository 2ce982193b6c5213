//! Finite-difference gradient checking, for tests of this and the other loss crates.
//!
//! [`check_gradient`] compares the autodiff gradient of `sum(f(x))` with central differences
//! `(f(x + h·eᵢ) − f(x − h·eᵢ)) / 2h` element by element, in f64.

use candle_core::{DType, Result, Tensor, Var};

/// The largest deviation found by [`check_gradient`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradCheck {
    /// max over elements of `|autodiff − numeric| / max(1, |numeric|)`.
    pub max_error: f64,
    /// Flat index where it occurs.
    pub index: usize,
    /// Autodiff value there.
    pub autodiff: f64,
    /// Finite-difference value there.
    pub numeric: f64,
}

/// Checks the gradient of `sum(f(x))` w.r.t. `x` (an f64 tensor) by central differences with step
/// `h` (1e-6 is a good default for inputs of order 1 away from kinks).
///
/// # Errors
/// `x` not f64, or any error of `f`.
pub fn check_gradient(f: impl Fn(&Tensor) -> Result<Tensor>, x: &Tensor, h: f64) -> Result<GradCheck> {
    if x.dtype() != DType::F64 {
        candle_core::bail!("check_gradient: `x` must be f64, got {:?}", x.dtype());
    }
    let var = Var::from_tensor(x)?;
    let out = f(var.as_tensor())?.sum_all()?;
    let grads = out.backward()?;
    let auto = match grads.get(var.as_tensor()) {
        Some(g) => g.flatten_all()?.to_vec1::<f64>()?,
        None => vec![0.0; x.elem_count()],
    };
    let base = x.flatten_all()?.to_vec1::<f64>()?;
    let mut worst = GradCheck {
        max_error: 0.0,
        index: 0,
        autodiff: 0.0,
        numeric: 0.0,
    };
    for i in 0..base.len() {
        let eval = |delta: f64| -> Result<f64> {
            let mut v = base.clone();
            v[i] += delta;
            let t = Tensor::from_vec(v, x.shape(), x.device())?;
            f(&t)?.sum_all()?.to_scalar::<f64>()
        };
        let numeric = (eval(h)? - eval(-h)?) / (2.0 * h);
        let err = (auto[i] - numeric).abs() / numeric.abs().max(1.0);
        // NaN compares false: a NaN error is always reported as the worst.
        if err.is_nan() || err > worst.max_error {
            worst = GradCheck {
                max_error: err,
                index: i,
                autodiff: auto[i],
                numeric,
            };
        }
    }
    Ok(worst)
}
