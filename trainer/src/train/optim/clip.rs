//! Gradient clipping by global norm (`torch.nn.utils.clip_grad_norm_`).

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Var};

/// The global L2 norm √(Σ over variables of Σ g²) of the gradients of `params` present in
/// `grads`, accumulated in f64 in the order of `params`.
///
/// # Errors
/// A tensor error.
pub fn global_grad_norm(grads: &GradStore, params: &[(String, Var)]) -> Result<f64> {
    let mut sq = 0.0f64;
    for (_, var) in params {
        if let Some(g) = grads.get(var.as_tensor()) {
            sq += g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
        }
    }
    Ok(sq.sqrt())
}

/// Scales the gradients of `params` in place so that their global L2 norm is at most
/// `max_norm`, as `torch.nn.utils.clip_grad_norm_`: with n the global norm, every gradient is
/// multiplied by `max_norm / (n + 1e-6)` when that factor is below 1. Returns n (before
/// clipping). A non-finite n is returned as is and nothing is scaled (the training loop reports
/// the non-finite loss instead).
///
/// # Errors
/// `max_norm` negative or not finite; a tensor error.
pub fn clip_grad_norm(grads: &mut GradStore, params: &[(String, Var)], max_norm: f64) -> Result<f64> {
    if !(max_norm >= 0.0 && max_norm.is_finite()) {
        return Err(candle_core::Error::Msg(format!(
            "clip_grad_norm: invalid max_norm = {max_norm}, expected a finite value >= 0"
        )));
    }
    let norm = global_grad_norm(grads, params)?;
    let coef = max_norm / (norm + 1e-6);
    if norm.is_finite() && coef < 1.0 {
        for (_, var) in params {
            if let Some(g) = grads.get(var.as_tensor()) {
                let scaled = g.affine(coef, 0.0)?;
                grads.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}
