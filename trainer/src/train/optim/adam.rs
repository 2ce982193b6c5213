//! Adam and AdamW with PyTorch's update rule.

use super::{bad_param, state_entry, Optimizer};
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use std::collections::HashMap;

/// Adam (Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015) and AdamW
/// (Loshchilov and Hutter, "Decoupled Weight Decay Regularization", ICLR 2019), as
/// `torch.optim.Adam` / `torch.optim.AdamW` (no AMSGrad). At update t (1-based), for each
/// parameter p with gradient g:
///
/// ```text
/// Adam:  g ← g + λp                    AdamW: p ← p(1 − lr·λ)
/// m ← β₁m + (1 − β₁)g
/// v ← β₂v + (1 − β₂)g²
/// p ← p − lr · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
/// ```
/// State: `m` (`"<name>.exp_avg"`) and `v` (`"<name>.exp_avg_sq"`), zero at the start, in the
/// parameter's dtype and device.
pub struct Adam {
    params: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
    t: usize,
}

impl Adam {
    /// Adam over `params` (sorted by name).
    ///
    /// # Errors
    /// β₁ or β₂ outside [0, 1), ε < 0, weight decay < 0 (or any of them not finite).
    pub fn new(
        params: Vec<(String, Var)>,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        decoupled: bool,
    ) -> Result<Self> {
        let name = if decoupled { "AdamW" } else { "Adam" };
        for (arg, b) in [("beta1", beta1), ("beta2", beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(bad_param(name, arg, b, "0 <= beta < 1"));
            }
        }
        if !(eps >= 0.0 && eps.is_finite()) {
            return Err(bad_param(name, "eps", eps, "a finite eps >= 0"));
        }
        if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
            return Err(bad_param(
                name,
                "weight_decay",
                weight_decay,
                "a finite weight_decay >= 0",
            ));
        }
        let zeros = |p: &Var| p.as_tensor().zeros_like();
        let m = params.iter().map(|(_, p)| zeros(p)).collect::<Result<Vec<_>>>()?;
        let v = params.iter().map(|(_, p)| zeros(p)).collect::<Result<Vec<_>>>()?;
        Ok(Self {
            params,
            m,
            v,
            beta1,
            beta2,
            eps,
            weight_decay,
            decoupled,
            t: 0,
        })
    }
}

impl Optimizer for Adam {
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.t += 1;
        let t = self.t as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        for (i, (_, var)) in self.params.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let p = var.as_tensor().detach();
            let mut g = g.detach();
            let mut p_base = p.clone();
            if self.weight_decay != 0.0 {
                if self.decoupled {
                    p_base = p.affine(1.0 - lr * self.weight_decay, 0.0)?;
                } else {
                    g = (&g + p.affine(self.weight_decay, 0.0)?)?;
                }
            }
            let m = (self.m[i].affine(self.beta1, 0.0)? + g.affine(1.0 - self.beta1, 0.0)?)?;
            let v = (self.v[i].affine(self.beta2, 0.0)? + g.sqr()?.affine(1.0 - self.beta2, 0.0)?)?;
            let denom = v.affine(1.0 / bc2, 0.0)?.sqrt()?.affine(1.0, self.eps)?;
            let update = m.affine(lr / bc1, 0.0)?.div(&denom)?;
            var.set(&(p_base - update)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    fn steps(&self) -> usize {
        self.t
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len());
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.push((format!("{name}.exp_avg"), self.m[i].clone()));
            out.push((format!("{name}.exp_avg_sq"), self.v[i].clone()));
        }
        out
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>, steps: usize) -> Result<()> {
        for (i, (name, var)) in self.params.iter().enumerate() {
            self.m[i] = state_entry(state, &format!("{name}.exp_avg"), var.as_tensor())?;
            self.v[i] = state_entry(state, &format!("{name}.exp_avg_sq"), var.as_tensor())?;
        }
        self.t = steps;
        Ok(())
    }
}
