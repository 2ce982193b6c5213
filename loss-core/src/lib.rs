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

pub mod check;
pub mod classification;
pub mod error;
pub mod fused;
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
