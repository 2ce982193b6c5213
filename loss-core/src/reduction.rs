//! [`Reduction`] and the one shared reduction step [`reduce`] that every loss ends with.

use crate::error::LossError;
use candle_core::{DType, Device, Result, Tensor};
use std::fmt;

/// How the elementwise loss is reduced, as PyTorch's `reduction` argument.
///
/// - `None`: the unreduced loss, same shape as the elementwise loss.
/// - `Mean`: the mean over all elements (NaN for an empty tensor, as PyTorch; some losses such as
///   cross-entropy with `weight`/`ignore_index` divide by their own denominator instead).
/// - `Sum`: the sum over all elements (0 for an empty tensor).
/// - `BatchMean`: the sum divided by the size of the first dimension; accepted by `kl_div` alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Reduction {
    /// No reduction: the elementwise loss.
    None,
    /// Mean over elements (PyTorch's default).
    #[default]
    Mean,
    /// Sum over elements.
    Sum,
    /// Sum divided by the batch size (first dimension); `kl_div` only.
    BatchMean,
}

impl Reduction {
    /// Parses PyTorch's spelling (`"none"`, `"mean"`, `"sum"`, `"batchmean"`).
    ///
    /// # Errors
    /// `LossError::BadReduction` naming `loss` for any other string.
    pub fn parse(loss: &'static str, s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Self::None),
            "mean" => Ok(Self::Mean),
            "sum" => Ok(Self::Sum),
            "batchmean" => Ok(Self::BatchMean),
            _ => Err(LossError::BadReduction {
                loss,
                got: s.to_string(),
                expected: "\"none\", \"mean\", \"sum\" (\"batchmean\" for kl_div)",
            }
            .into()),
        }
    }

    /// PyTorch's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Mean => "mean",
            Self::Sum => "sum",
            Self::BatchMean => "batchmean",
        }
    }

    /// Errors with `BadReduction` unless `self` is `None`, `Mean` or `Sum`.
    pub fn standard(self, loss: &'static str) -> Result<Self> {
        if self == Self::BatchMean {
            return Err(LossError::BadReduction {
                loss,
                got: "batchmean".into(),
                expected: "\"none\", \"mean\" or \"sum\" (\"batchmean\" is for kl_div alone)",
            }
            .into());
        }
        Ok(self)
    }
}

impl<'de> serde::Deserialize<'de> for Reduction {
    /// From PyTorch's spelling ([`Reduction::parse`]).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::config::deserialize_parsed(d, |s| Self::parse("reduction", s))
    }
}

impl fmt::Display for Reduction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sum of all elements as a 0-d tensor of `t`'s dtype.
///
/// On the CPU, f32/f16/bf16 values are accumulated in f64 so that a mean over 1e7 elements
/// keeps f32's precision; elsewhere the device's own sum runs (Metal has no f64).
pub fn sum_all(t: &Tensor) -> Result<Tensor> {
    let dt = t.dtype();
    if matches!(t.device(), Device::Cpu) && dt != DType::F64 {
        t.to_dtype(DType::F64)?.sum_all()?.to_dtype(dt)
    } else {
        t.sum_all()
    }
}

/// Applies `reduction` to the elementwise loss `t` (any shape).
///
/// `None` returns `t`, `Sum` the sum of all elements, `Mean` the sum divided by the element
/// count (NaN for an empty `t`, as PyTorch).
///
/// # Errors
/// `BatchMean` is refused (`kl_div` applies it itself).
pub fn reduce(loss: &'static str, t: &Tensor, reduction: Reduction) -> Result<Tensor> {
    match reduction.standard(loss)? {
        Reduction::None => Ok(t.clone()),
        Reduction::Sum => sum_all(t),
        Reduction::Mean => {
            let n = t.elem_count();
            let s = sum_all(t)?;
            if n == 0 {
                // 0 / 0, as torch.mean of an empty tensor.
                return s.affine(f64::NAN, 0.0);
            }
            s.affine(1.0 / n as f64, 0.0)
        }
        Reduction::BatchMean => unreachable!("refused by standard()"),
    }
}

/// Applies `reduction` with a weighted mean: `Mean` gives `sum(t) / sum(weights)` (PyTorch's
/// denominator for `cross_entropy`/`nll_loss` with `weight` or `ignore_index`); `weights` has any
/// shape and gets no gradient.
///
/// A denominator of 0 (every target ignored) gives NaN, as PyTorch, with an all-zero gradient
/// (no element contributes), also as PyTorch.
pub fn reduce_weighted_mean(loss: &'static str, t: &Tensor, weights: &Tensor, reduction: Reduction) -> Result<Tensor> {
    match reduction.standard(loss)? {
        Reduction::Mean => {
            let den = sum_all(&weights.detach())?;
            let empty = den.eq(0.0)?;
            let den_safe = empty.where_cond(&den.ones_like()?, &den)?;
            let nan = empty.where_cond(&den.affine(0.0, f64::NAN)?, &den.zeros_like()?)?;
            sum_all(t)?.div(&den_safe)?.add(&nan)
        }
        other => reduce(loss, t, other),
    }
}
