//! Optimizers, learning-rate schedules and gradient clipping.
//!
//! candle-nn ships plain SGD and AdamW; the experiments need PyTorch's full set of knobs
//! (momentum, Nesterov, dampening, L2 weight decay for SGD and Adam, decoupled weight decay for
//! AdamW), so they live here, with PyTorch's update rules (`torch.optim.SGD`, `torch.optim.Adam`,
//! `torch.optim.AdamW`, all with `foreach=False` semantics; no AMSGrad).
//!
//! An optimizer owns its parameters as a list of `(name, Var)` sorted by name (see
//! [`sorted_params`]), so its state can be saved and restored by name, and every reduction
//! over parameters (the global gradient norm) runs in one fixed order.

mod adam;
mod clip;
mod schedule;
mod sgd;

pub use adam::Adam;
pub use clip::{clip_grad_norm, global_grad_norm};
pub use schedule::Schedule;
pub use sgd::Sgd;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use candle_nn::VarMap;
use serde::Serialize;
use std::collections::HashMap;

/// The variables of a [`VarMap`] as `(name, Var)`, sorted by name (a `VarMap` is a `HashMap`,
/// whose order changes from run to run).
pub fn sorted_params(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    let mut params: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
}

/// A first-order optimizer: updates its variables in place from a [`GradStore`].
pub trait Optimizer: Send {
    /// Applies one update with learning rate `lr` (the schedule's value for this step).
    /// Variables without a gradient in `grads` are left as they are, with their state.
    ///
    /// # Errors
    /// A tensor error (a gradient of the wrong shape or dtype).
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()>;
    /// Number of updates applied so far.
    fn steps(&self) -> usize;
    /// The optimizer's state as named tensors (`"<param>.exp_avg"`, ...), for checkpoints.
    fn state(&self) -> Vec<(String, Tensor)>;
    /// Restores a state written by [`Optimizer::state`] after `steps` updates.
    ///
    /// # Errors
    /// A missing entry or one of the wrong shape or dtype.
    fn load_state(&mut self, state: &HashMap<String, Tensor>, steps: usize) -> Result<()>;
}

/// Which optimizer to build, with its hyper-parameters (the learning rate comes from the
/// [`Schedule`] at each step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerConfig {
    /// Adam (Kingma and Ba 2015); with `decoupled_weight_decay`, AdamW (Loshchilov and Hutter 2019).
    Adam {
        /// β₁ (PyTorch default 0.9).
        beta1: f64,
        /// β₂ (PyTorch default 0.999).
        beta2: f64,
        /// ε added to √v̂ (PyTorch default 1e-8).
        eps: f64,
        /// Weight decay λ (default 0; AdamW's PyTorch default is 0.01).
        weight_decay: f64,
        /// `false`: L2 penalty added to the gradient (Adam); `true`: `p ← p(1 − lr·λ)` (AdamW).
        decoupled_weight_decay: bool,
    },
    /// Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay.
    Sgd {
        /// Momentum μ (default 0).
        momentum: f64,
        /// Dampening τ (default 0).
        dampening: f64,
        /// Nesterov momentum (needs μ > 0 and τ = 0).
        nesterov: bool,
        /// L2 weight decay λ (default 0).
        weight_decay: f64,
    },
}

impl OptimizerConfig {
    /// Adam with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8, no weight decay).
    pub fn adam() -> Self {
        Self::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
        }
    }

    /// AdamW with PyTorch's defaults and weight decay `weight_decay` (PyTorch: 0.01).
    pub fn adamw(weight_decay: f64) -> Self {
        Self::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            decoupled_weight_decay: true,
        }
    }

    /// SGD with momentum `momentum`, optionally Nesterov, no dampening, no weight decay.
    pub fn sgd(momentum: f64, nesterov: bool) -> Self {
        Self::Sgd {
            momentum,
            dampening: 0.0,
            nesterov,
            weight_decay: 0.0,
        }
    }

    /// Builds the optimizer over `params` (sorted by name, see [`sorted_params`]).
    ///
    /// # Errors
    /// Hyper-parameters out of range (β outside [0, 1), ε or weight decay negative, momentum
    /// negative, Nesterov without momentum or with dampening), as PyTorch rejects them.
    pub fn build(&self, params: Vec<(String, Var)>) -> Result<Box<dyn Optimizer>> {
        match *self {
            Self::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                decoupled_weight_decay,
            } => Ok(Box::new(Adam::new(
                params,
                beta1,
                beta2,
                eps,
                weight_decay,
                decoupled_weight_decay,
            )?)),
            Self::Sgd {
                momentum,
                dampening,
                nesterov,
                weight_decay,
            } => Ok(Box::new(Sgd::new(params, momentum, dampening, nesterov, weight_decay)?)),
        }
    }
}

/// A bad optimizer hyper-parameter, as a candle error naming the optimizer and the argument.
pub(crate) fn bad_param(optimizer: &str, arg: &str, value: f64, expected: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("{optimizer}: invalid {arg} = {value}, expected {expected}"))
}

/// Looks up one state tensor, checking its shape and dtype against the variable's.
pub(crate) fn state_entry(state: &HashMap<String, Tensor>, key: &str, like: &Tensor) -> Result<Tensor> {
    let t = state
        .get(key)
        .ok_or_else(|| candle_core::Error::Msg(format!("optimizer state: missing entry {key}")))?;
    if t.shape() != like.shape() || t.dtype() != like.dtype() {
        return Err(candle_core::Error::Msg(format!(
            "optimizer state: entry {key} is {:?} {:?}, expected {:?} {:?}",
            t.shape(),
            t.dtype(),
            like.shape(),
            like.dtype()
        )));
    }
    t.to_device(like.device())
}
