//! Kullback–Leibler divergence and Shannon entropy, with `0 · ln 0 = 0`.
//!
//! Sources: `torch.nn.functional.kl_div`; Shannon, "A Mathematical Theory of Communication"
//! (1948). The worked example below is the seed article's (weather forecasts in bits):
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use loss_core::{entropy, kl_div, EntropyBase, Reduction};
//! let dev = Device::Cpu;
//! let bits = |t: Tensor| -> candle_core::Result<f64> { t.to_scalar::<f64>() };
//! // Two kinds of weather, 75 % and 25 %: 0.81 bits.
//! let p2 = Tensor::new(&[0.75f64, 0.25], &dev)?;
//! assert!((bits(entropy(&p2, EntropyBase::Bits, Reduction::Sum)?)? - 0.811).abs() < 1e-3);
//! // Eight kinds: 35, 35, 10, 10, 4, 4, 1, 1 %: 2.23 bits.
//! let p = Tensor::new(&[0.35f64, 0.35, 0.10, 0.10, 0.04, 0.04, 0.01, 0.01], &dev)?;
//! let h = bits(entropy(&p, EntropyBase::Bits, Reduction::Sum)?)?;
//! assert!((h - 2.23).abs() < 5e-3);
//! // A code of lengths 2, 2, 3, 3, 4, 4, 5, 5 bits implies q = 2^-length; for the reversed
//! // distribution the KL divergence is 2.35 bits and the cross-entropy H + KL = 4.58 bits.
//! let lengths = [2.0f64, 2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 5.0];
//! let log_q = Tensor::new(&lengths.map(|l| -l * std::f64::consts::LN_2), &dev)?;
//! let reversed = Tensor::new(&[0.01f64, 0.01, 0.04, 0.04, 0.10, 0.10, 0.35, 0.35], &dev)?;
//! let kl = bits(kl_div(&log_q, &reversed, false, Reduction::Sum)?)? / std::f64::consts::LN_2;
//! let h_rev = bits(entropy(&reversed, EntropyBase::Bits, Reduction::Sum)?)?;
//! assert!((kl - 2.35).abs() < 5e-3);
//! assert!((h_rev + kl - 4.58).abs() < 5e-3);
//! // The cross-entropy is also Σ p·length directly:
//! let ce: f64 = [0.01, 0.01, 0.04, 0.04, 0.10, 0.10, 0.35, 0.35].iter().zip(lengths).map(|(p, l)| p * l).sum();
//! assert!((ce - (h_rev + kl)).abs() < 1e-9);
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! (`cross_entropy` would renormalise `q` with a softmax: this code's `q` sums to 0.9375, so it is
//! compared through `kl_div`, which takes log-probabilities as they are.)

use crate::check;
use crate::fused::{self, Pointwise};
use crate::kernel;
use crate::ops;
use crate::reduction::{reduce, sum_all, Reduction};
use candle_core::{Result, Tensor, D};

/// Kullback–Leibler divergence `KL(target ‖ input)` with `input` given as log-probabilities
/// (`torch.nn.functional.kl_div`): elementwise `t·(ln t − x)` with `0·ln 0 = 0`, or with
/// `log_target` (target given as log-probabilities) `eᵗ·(t − x)`.
///
/// - `input` `x`: log-probabilities, any shape; `target`: the same shape and dtype (no broadcast).
/// - `reduction`: `None` (elementwise), `Sum`, `Mean` (over **all elements**, PyTorch's default,
///   which is the true KL divided by the number of classes too), or `BatchMean` (sum divided by
///   `input.dim(0)`, the mathematically correct per-sample KL; 1 for a 0-d input).
///
/// Gradient w.r.t. `input`: `−t` (`−eᵗ` with `log_target`).
///
/// Zero mass is zero: an element whose target mass is exactly 0 (`t = 0`, or with `log_target`
/// a log-target of `-inf`) contributes exactly 0 to the value and 0 to the gradient w.r.t.
/// `input`, whatever its log-probability, `-inf` (a masked logit) included; PyTorch gives NaN
/// there (PyTorch#89558's family of reports). A NaN input stays NaN.
///
/// Other non-finite values, as PyTorch: an input of `-inf` (probability 0) where `t > 0` gives
/// +inf (the divergence is infinite); `BatchMean` with `input.dim(0) = 0` is NaN (0/0). A
/// negative `target` (without `log_target`) is outside the domain and gives NaN (`ln t`).
///
/// # Errors
/// Shapes or dtypes that differ, a non-float dtype.
pub fn kl_div(input: &Tensor, target: &Tensor, log_target: bool, reduction: Reduction) -> Result<Tensor> {
    const LOSS: &str = "kl_div";
    check::float_pair(LOSS, "input", input, "target", target)?;
    if kernel::choose(LOSS, input)? {
        return fused::pointwise(Pointwise::KlDiv { log_target }, input, target, reduction);
    }
    // Zero mass is zero: where the target's mass is exactly 0 (t = 0, or a log-target of -inf)
    // an infinite log-probability is replaced by 0 before it meets the 0, so the term is 0 (and
    // its gradient 0), not 0·inf = NaN; a NaN input stays NaN.
    let inf_input = input.abs()?.eq(f64::INFINITY)?;
    let per = if log_target {
        let zero = target.eq(f64::NEG_INFINITY)?;
        let mask = zero.mul(&inf_input)?;
        let x = mask.where_cond(&input.zeros_like()?, input)?;
        let t = zero.where_cond(&target.zeros_like()?, target)?;
        target.exp()?.mul(&t.sub(&x)?)?
    } else {
        let mask = target.eq(0.0)?.mul(&inf_input)?;
        let x = mask.where_cond(&input.zeros_like()?, input)?;
        ops::xlogy(target, target)?.sub(&target.mul(&x)?)?
    };
    match reduction {
        Reduction::BatchMean => {
            let batch = if input.rank() == 0 { 1 } else { input.dim(0)? };
            sum_all(&per)?.affine(1.0 / batch as f64, 0.0)
        }
        r => reduce(LOSS, &per, r),
    }
}

/// The unit of [`entropy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EntropyBase {
    /// Natural logarithm: nats (`base = "e"`).
    #[default]
    Nats,
    /// Base-2 logarithm: bits (`base = "2"`).
    Bits,
}

impl<'de> serde::Deserialize<'de> for EntropyBase {
    /// From `"e"` or `"2"` ([`EntropyBase::parse`]).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::config::deserialize_parsed(d, Self::parse)
    }
}

impl EntropyBase {
    /// Parses `"e"` or `"2"`.
    ///
    /// # Errors
    /// Any other string.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "e" => Ok(Self::Nats),
            "2" => Ok(Self::Bits),
            _ => Err(crate::LossError::BadOptions {
                loss: "entropy",
                message: format!("`base` = {s:?} is invalid, expected \"e\" or \"2\""),
            }
            .into()),
        }
    }
}

/// Shannon entropy over the last dimension: `H(p) = −Σ_c p_c·log p_c` with `0·log 0 = 0`, in
/// nats or bits.
///
/// - `probs`: `[..., C]`, rank ≥ 1, f32 or f64 (not renormalised).
/// - Output: `[...]` for `Reduction::None` (0-d for a 1-D input), else the sum or mean of those.
///
/// Gradient: `−(ln p + 1)/ln b`; at `p = 0`, where it is mathematically infinite, it is 0 (the
/// `0·log 0 = 0` branch), so a training step never sees NaN.
///
/// # Errors
/// A 0-d or non-float `probs`, `Reduction::BatchMean`.
pub fn entropy(probs: &Tensor, base: EntropyBase, reduction: Reduction) -> Result<Tensor> {
    const LOSS: &str = "entropy";
    check::float(LOSS, "probs", probs)?;
    check::min_rank(LOSS, "probs", probs, 1, "[..., C] (rank >= 1)")?;
    reduction.standard(LOSS)?;
    let mut h = ops::xlogy(probs, probs)?.sum(D::Minus1)?.neg()?;
    if base == EntropyBase::Bits {
        h = h.affine(1.0 / std::f64::consts::LN_2, 0.0)?;
    }
    reduce(LOSS, &h, reduction)
}

crate::loss_config! {
    /// [`entropy`] as a value: one input, so [`Entropy::forward1`] instead of [`Loss`](crate::Loss).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct Entropy {
        /// The logarithm's base (`"e"`: nats, `"2"`: bits).
        base: EntropyBase = EntropyBase::Nats,
        /// Reduction.
        reduction: Reduction = Reduction::Mean,
    }
}

impl Entropy {
    /// The entropy of `probs` over its last dimension ([`entropy`]).
    ///
    /// # Errors
    /// As [`entropy`].
    pub fn forward1(&self, probs: &Tensor) -> Result<Tensor> {
        entropy(probs, self.base, self.reduction)
    }
}

crate::loss_config! {
    /// [`kl_div`] as a [`Loss`](crate::Loss) value (`torch.nn.KLDivLoss`); `forward(input, target)` takes
    /// log-probabilities as `input`.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct KlDivLoss {
        /// Whether `target` holds log-probabilities.
        log_target: bool = false,
        /// Reduction (`BatchMean` is the true KL per sample).
        reduction: Reduction = Reduction::Mean,
    }
    loss kl_div(log_target, reduction);
}
