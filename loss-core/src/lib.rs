//! # loss-core
//!
//! Regression and classification losses on [Candle](https://github.com/huggingface/candle)
//! tensors, with PyTorch's names, defaults, values and gradients.
//!
//! Every loss is reachable two ways:
//! - a function, like `torch.nn.functional` (`l1_loss(&input, &target, Reduction::Mean)`);
//! - a config struct with PyTorch's defaults and `with_*` builders that implements [`Loss`], so a
//!   training loop can hold any loss as `Box<dyn Loss>`.
//!
//! Every loss is written once in its unreduced form and ends with the shared [`reduce`] step.
//! Bad input is an `Err` (a [`LossError`] wrapped in `candle_core::Error`) that names the loss,
//! the argument and the shapes; no loss panics. Gradients come from Candle's autodiff, with the
//! primitives of [`ops`] where Candle lacks an op or differs from PyTorch at a kink.
//!
//! # Non-finite values
//! For finite inputs inside a loss's domain (probabilities in `[0, 1]` for
//! `binary_cross_entropy`, class indices in range, ...) and valid parameters, the value and the
//! gradient are finite, on the fused CPU path and on the composite path alike, except:
//! - where the result itself leaves the dtype's range (`mse_loss` of a difference above 1.8e19 in
//!   f32), which overflows to ±inf;
//! - where the mathematics is undefined or infinite, as PyTorch: a `Mean` over nothing (an empty
//!   tensor, or `cross_entropy` / `nll_loss` / `softmax_focal_loss` whose kept targets have a zero
//!   total weight) is NaN (0/0) with a finite gradient; `kl_div` of a `-inf` log-probability where
//!   the target is positive is +inf, and `batchmean` with `dim(0) = 0` is NaN; the entropy of a
//!   negative "probability" is NaN. `binary_cross_entropy` at `p = 0` with `t = 1` is not one of
//!   them: each log term is clamped at −100, as PyTorch, so it costs 100.
//!
//! NaN in an input gives NaN in every output value that depends on it (an elementwise loss's
//! element, a reduction's scalar; an ignored target's row does not depend on its logits), never
//! a finite number. `tests/robustness.rs` holds these properties on over 100,000 random inputs
//! per loss.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use loss_core::{smooth_l1_loss, Reduction};
//! let input = Tensor::new(&[0.5f32, 2.0, -1.0], &Device::Cpu)?;
//! let target = Tensor::new(&[0.0f32, 0.0, -1.0], &Device::Cpu)?;
//! let loss = smooth_l1_loss(&input, &target, 1.0, Reduction::Mean)?;
//! // (0.5·0.5² + (2 − 0.5) + 0) / 3
//! assert!((loss.to_scalar::<f32>()? - 0.541_666_7).abs() < 1e-6);
//! # Ok::<(), candle_core::Error>(())
//! ```
#![warn(missing_docs)]

pub mod check;
pub mod classification;
pub mod error;
// The fused CPU kernels and their plumbing (SIMD dispatch, buffer writers, parallel thresholds):
// public because loss-bbox and loss-seg build their kernels on it, hidden because it is the
// crates' internal kernel layer, not an API for users, and may change in any release.
#[doc(hidden)]
pub mod fused;
// A finite-difference gradient check for the test suites of the three loss crates; hidden for the
// same reason.
#[doc(hidden)]
pub mod gradcheck;
pub mod ops;
pub mod reduction;
pub mod regression;

pub use classification::*;
pub use error::LossError;
pub use reduction::{reduce, Reduction};
pub use regression::*;

use candle_core::{Result, Tensor};

/// A loss as a value: what a training loop holds (`Box<dyn Loss>`).
///
/// `forward(input, target)` returns the loss with the configured reduction (a 0-d tensor for
/// `Mean`/`Sum`). Implemented by every loss config of the workspace.
pub trait Loss: Send + Sync {
    /// The loss's name, as PyTorch spells the function (`"smooth_l1_loss"`).
    fn name(&self) -> &'static str;
    /// Computes the loss of `input` (the prediction) against `target`.
    ///
    /// # Errors
    /// Whatever the loss function returns for these inputs (see each loss).
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor>;
}

impl<L: Loss + ?Sized> Loss for Box<L> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        (**self).forward(input, target)
    }
}

// The README's example is compiled and run with the doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;
