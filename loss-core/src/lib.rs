//! # loss-core
//!
//! Regression and classification losses on [Candle](https://github.com/huggingface/candle)
//! tensors, with PyTorch's names, defaults, values and gradients.
//!
//! Every loss is reachable two ways:
//! - a function, like `torch.nn.functional` (`l1_loss(&input, &target, Reduction::Mean)`);
//! - a config struct with PyTorch's defaults and `with_*` builders that implements [`Loss`], so a
//!   training loop can hold any loss as `Box<dyn Loss>` (the losses of three or four inputs have
//!   `forward3` / `forward4` instead, see below; [`entropy`] and
//!   [`triplet_margin_with_distance_loss`] are functions only).
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
//!   them: each log term is clamped at −100, as PyTorch, so it costs 100. `ctc_loss` of a target
//!   that cannot be aligned to its input is +inf (0 with `zero_infinity`), with a zero gradient;
//!   `multilabel_soft_margin_loss` over 0 classes is NaN (0/0).
//! - Zero mass is zero: where a target probability is exactly 0, `kl_div`, `cross_entropy` with
//!   probability targets and `entropy` add exactly 0 and give the input a zero gradient, even at a
//!   log-probability or logit of `-inf` (where PyTorch gives NaN); rows that `ignore_index`
//!   removes give 0 and a zero gradient whatever their logits.
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
//!
//! # Losses of three or four inputs
//! [`Loss::forward`] takes two tensors, the prediction and the target. The losses with more
//! inputs are functions like the rest and configs with PyTorch's defaults and `with_*` builders,
//! but their configs offer `forward3` ([`MarginRankingLoss`], [`CosineEmbeddingLoss`],
//! [`TripletMarginLoss`], [`GaussianNllLoss`]) or `forward4` ([`CtcLoss`]) instead of
//! implementing [`Loss`] (only [`GaussianNllLoss`] also implements it, with a fixed variance set
//! by `with_var`). A training loop holds such a config by its type and calls it with what its
//! model produces for one batch:
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use loss_core::{CtcLoss, Reduction, TripletMarginLoss};
//! let dev = Device::Cpu;
//! // Triplets: the model embeds anchor, positive and negative; one step's loss.
//! let anchor = Var::new(&[[0.0f32, 1.0], [1.0, 0.0]], &dev)?;
//! let positive = Tensor::new(&[[0.0f32, 0.9], [0.9, 0.1]], &dev)?;
//! let negative = Tensor::new(&[[0.0f32, 0.5], [0.0, 1.0]], &dev)?;
//! let triplet = TripletMarginLoss::default().with_margin(1.0);
//! let loss = triplet.forward3(anchor.as_tensor(), &positive, &negative)?;
//! let grads = loss.backward()?;
//! assert!(grads.get(anchor.as_tensor()).is_some());
//! // CTC: frames [T, N, C] from a log_softmax, padded targets and the two lengths.
//! let logits = Var::new(&[[[0.0f32, 1.0, 0.5]], [[1.0, 0.0, 0.5]], [[0.0, 0.0, 2.0]]], &dev)?;
//! let log_probs = loss_core::log_softmax(logits.as_tensor(), 2)?;
//! let targets = Tensor::new(&[[1i64, 2]], &dev)?;
//! let input_lengths = Tensor::new(&[3i64], &dev)?;
//! let target_lengths = Tensor::new(&[2i64], &dev)?;
//! let ctc = CtcLoss::default().with_reduction(Reduction::Sum);
//! let loss = ctc.forward4(&log_probs, &targets, &input_lengths, &target_lengths)?;
//! assert!(loss.to_scalar::<f32>()?.is_finite());
//! loss.backward()?;
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! To hold several such losses behind one type, wrap each in a closure over the batch
//! (`Box<dyn Fn(&Batch) -> Result<Tensor>>`): the batch type is the training loop's, not this
//! crate's.
#![warn(missing_docs)]

pub mod check;
pub mod classification;
pub mod config;
pub mod ctc;
pub mod embedding;
pub mod error;
// The fused CPU kernels of this crate's losses (pointwise, cross-entropy rows), written with
// `kernel`.
mod fused;
// A finite-difference gradient check for the test suites of the three loss crates; hidden for the
// same reason.
#[doc(hidden)]
pub mod gradcheck;
pub mod kernel;
pub mod likelihood;
pub mod margin;
pub mod ops;
pub mod reduction;
pub mod regression;
// The shared machinery of the robustness property tests of the three loss crates (feature
// `testing`, for their dev-dependencies): one place instead of a file included by path.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;

pub use classification::*;
pub use config::LossConfig;
pub use ctc::*;
pub use embedding::*;
pub use error::LossError;
pub use likelihood::*;
pub use margin::*;
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
