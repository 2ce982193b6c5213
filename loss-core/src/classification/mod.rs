//! Classification losses: cross-entropy and NLL, binary cross-entropy, KL divergence and
//! entropy, and focal losses.
//!
//! Class-index targets are `u32`, `i64` (or `u8`) tensors; the class dimension of logits is
//! dimension 1 (`[N, C]` or `[N, C, d1, ...]`), as in PyTorch. The two binary losses broadcast a
//! 1-D `weight`/`pos_weight` along the last dimension.

mod binary;
mod cross_entropy;
mod divergence;
mod focal;

pub use binary::*;
pub use cross_entropy::*;
pub use divergence::*;
pub use focal::*;
