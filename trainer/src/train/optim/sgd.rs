//! SGD with momentum, dampening, Nesterov and weight decay, with PyTorch's update rule.

use super::{bad_param, state_entry, Optimizer};
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use std::collections::HashMap;

/// Stochastic gradient descent as `torch.optim.SGD` (Sutskever et al., ICML 2013, for the
/// momentum and Nesterov forms). At update t (1-based), for each parameter p with gradient g:
///
/// ```text
/// g ← g + λp                                  (weight decay λ)
/// if μ ≠ 0:  b ← g at t = 1, else b ← μb + (1 − τ)g
///            g ← g + μb if Nesterov, else g ← b
/// p ← p − lr · g
/// ```
/// State: the momentum buffer `b` (`"<name>.momentum_buffer"`) when μ ≠ 0.
pub struct Sgd {
    params: Vec<(String, Var)>,
    buf: Vec<Option<Tensor>>,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    weight_decay: f64,
    t: usize,
}

impl Sgd {
    /// SGD over `params` (sorted by name).
    ///
    /// # Errors
    /// Momentum, dampening or weight decay negative or not finite; Nesterov with μ = 0 or τ ≠ 0
    /// (PyTorch's rule).
    pub fn new(
        params: Vec<(String, Var)>,
        momentum: f64,
        dampening: f64,
        nesterov: bool,
        weight_decay: f64,
    ) -> Result<Self> {
        for (arg, x) in [
            ("momentum", momentum),
            ("dampening", dampening),
            ("weight_decay", weight_decay),
        ] {
            if !(x >= 0.0 && x.is_finite()) {
                return Err(bad_param("SGD", arg, x, "a finite value >= 0"));
            }
        }
        if nesterov && (momentum <= 0.0 || dampening != 0.0) {
            return Err(candle_core::Error::Msg(format!(
                "SGD: Nesterov momentum requires momentum > 0 and dampening = 0, got momentum = {momentum}, dampening = {dampening}"
            )));
        }
        let buf = vec![None; params.len()];
        Ok(Self {
            params,
            buf,
            momentum,
            dampening,
            nesterov,
            weight_decay,
            t: 0,
        })
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.t += 1;
        for (i, (_, var)) in self.params.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let p = var.as_tensor().detach();
            let mut g = g.detach();
            if self.weight_decay != 0.0 {
                g = (&g + p.affine(self.weight_decay, 0.0)?)?;
            }
            if self.momentum != 0.0 {
                let b = match &self.buf[i] {
                    None => g.clone(),
                    Some(b) => (b.affine(self.momentum, 0.0)? + g.affine(1.0 - self.dampening, 0.0)?)?,
                };
                g = if self.nesterov {
                    (&g + b.affine(self.momentum, 0.0)?)?
                } else {
                    b.clone()
                };
                self.buf[i] = Some(b);
            }
            var.set(&(p - g.affine(lr, 0.0)?)?)?;
        }
        Ok(())
    }

    fn steps(&self) -> usize {
        self.t
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.buf)
            .filter_map(|((name, _), b)| b.as_ref().map(|b| (format!("{name}.momentum_buffer"), b.clone())))
            .collect()
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>, steps: usize) -> Result<()> {
        for (i, (name, var)) in self.params.iter().enumerate() {
            let key = format!("{name}.momentum_buffer");
            self.buf[i] = if state.contains_key(&key) {
                Some(state_entry(state, &key, var.as_tensor())?)
            } else {
                None
            };
        }
        self.t = steps;
        Ok(())
    }
}
