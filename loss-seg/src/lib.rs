//! # loss-seg
//!
//! The overlap losses of segmentation on [Candle](https://github.com/huggingface/candle)
//! tensors, with MONAI's option set, defaults, values and gradients:
//!
//! | loss | per (sample, class) value | reference |
//! |---|---|---|
//! | [`dice_loss`] | `1 − (2I + s_nr) / (P + G + s_dr)` (Jaccard: `/(2(P + G − I) + s_dr)`) | Milletari et al. 2016; `monai.losses.DiceLoss` |
//! | [`tversky_loss`] | `1 − (I + s_nr) / (I + α(P − I) + β(G − I) + s_dr)` | Salehi et al. 2017; `monai.losses.TverskyLoss` |
//! | [`focal_tversky_loss`] | `tversky^γ` | Abraham & Khan 2019 |
//! | [`generalized_dice_loss`] | `1 − (2Σ_c w_c I_c + s_nr) / (Σ_c w_c (P_c + G_c) + s_dr)` per sample | Sudre et al. 2017; `monai.losses.GeneralizedDiceLoss` |
//! | [`dice_ce_loss`] | `λ_dice·Dice + λ_ce·cross_entropy` | `monai.losses.DiceCELoss` |
//! | [`dice_focal_loss`] | `λ_dice·Dice + λ_focal·sigmoid focal loss` | `monai.losses.DiceFocalLoss` |
//! | [`lovasz_softmax_loss`] | Lovász extension of the Jaccard loss | Berman et al. 2018; `segmentation_models_pytorch` |
//! | [`masked_dice_loss`] | [`dice_loss`] of `act(p)·M` against `t·M` | `monai.losses.MaskedDiceLoss` |
//! | [`soft_cldice_loss`], [`soft_dice_cldice_loss`] | `1 − 2·Tprec·Tsens / (Tprec + Tsens)` on soft skeletons | Shit et al., CVPR 2021; `monai.losses.SoftclDiceLoss` |
//! | [`hausdorff_dt_loss`], [`log_hausdorff_dt_loss`] | `mean (p − g)²·(F_p^α + F_g^α)`, `F` distance transforms | Karimi & Salcudean 2019; `monai.losses.HausdorffDTLoss` |
//! | [`lovasz_hinge_loss`] | Lovász extension of the Jaccard loss on hinge errors (binary) | Berman et al. 2018; smp `LovaszLoss(mode="binary")` |
//! | [`jaccard_loss`] | `1 − (I + s)/(S_p + S_g − I + s)` per class over the batch | smp `JaccardLoss` |
//! | [`soft_bce_with_logits_loss`] | BCE with logits, label smoothing, `ignore_index` | smp `SoftBCEWithLogitsLoss` |
//!
//! with `I = Σ p·t`, `P = Σ p` (or `Σ p²` with `squared_pred`), `G = Σ t` (or `Σ t²`), the sums
//! running over the spatial dimensions of one sample and one class (and over the batch too with
//! `batch`). These three sums come from one shared step, [`overlap::Overlap`]; each loss is only
//! its formula on top of them. On the CPU the step is one fused pass with an analytic backward
//! (f32 and f64); on every other device it is built from plain Candle ops.
//!
//! ## Shapes and options (MONAI's)
//! - `pred`: `[N, C, spatial...]` with at least one spatial dimension (2-D, 3-D, ...), f32 or f64:
//!   probabilities, or logits with `sigmoid` / `softmax` (never both).
//! - `target`: the same shape and dtype (one-hot or soft masks), or with `to_onehot_y` class
//!   indices `[N, 1, spatial...]` (u8, u32 or i64) in `[0, C)`.
//! - `include_background = false` drops channel 0 after the activation and the one-hot; with
//!   `C = 1`, `include_background`, `to_onehot_y` and `softmax` are ignored (as MONAI).
//! - `reduction`: `None` gives `[N, C']` (`[C']` with `batch`; `C'` the classes kept), `Mean`
//!   and `Sum` a 0-d tensor.
//!
//! ## Empty masks
//! An empty prediction on an empty target gives `1 − s_nr / s_dr = 0` with the default smoothing
//! (`1e-5` both), MONAI's rule. Where the denominator of a class is exactly 0 (possible only with
//! `smooth_dr = 0`), this crate takes the ratio as 1: the class scores 0 with a zero gradient
//! instead of MONAI's NaN (`s_nr = 0`) or −inf (`s_nr > 0`). Note that `s_nr > 0` with
//! `s_dr = 0` stays unbounded *near* an empty class: `1 − s_nr / den` tends to −∞ as `den → 0`
//! (saturated logits can bring `den` down to 1e-35 in f32), so keep `s_dr ≥ s_nr`.
//!
//! ## Empty ground truth
//! MONAI has no special rule, and neither has this crate: a class whose (masked, non-ignored)
//! target is empty in an item (in the whole batch with `batch`) has `I = 0`, `G = 0`, so
//! [`dice_loss`] gives `1 − s_nr / (P + s_dr)` (Jaccard `1 − s_nr / (2P + s_dr)`) and
//! [`tversky_loss`] `1 − s_nr / (α·P + s_dr)`: 0 when the prediction is empty too
//! (`s_nr = s_dr`), exactly 1 when `s_nr = 0`, with a gradient of `s_nr / (P + s_dr)²` per
//! element (1e5 at `p = 0` with the default smoothing). [`hausdorff_dt_loss`]: an empty or full
//! mask has a zero distance map. [`jaccard_loss`]: a class with an empty target contributes 0.
//!
//! ## Non-finite values
//! For inputs in the domain (probabilities in `[0, 1]` or finite logits with an activation, masks
//! in `[0, 1]`, `0 <= smooth_nr <= smooth_dr`) every value and gradient is finite, except a `Mean`
//! over nothing (an empty batch, or `dice_focal_loss` over an empty image), NaN as `torch.mean`
//! of an empty tensor. A ratio whose denominator is non-zero but below `√m` (`m` the dtype's
//! smallest normal number: 1.1e-19 in f32) gets its exact value and a zero gradient, since its
//! `1/den` factor would overflow (see [`prepare::ratio_or_one`]); `focal_tversky_loss`'s
//! derivative `γ·t^(γ−1)` is unbounded as a class's Tversky value `t → 0` for `γ < 1` (0 at
//! `t = 0` itself) and leaves f32's range for `γ` below about 0.14. An empty batch gives an empty
//! output (`None`), 0 (`Sum`) or NaN (`Mean`); no loss panics on it. NaN in `pred` or `target`
//! gives NaN in the values that depend on it.
//!
//! ## Errors
//! Bad input is an `Err` ([`loss_core::LossError`] wrapped in `candle_core::Error`) naming the
//! loss, the argument and the shapes: different shapes after `to_onehot_y`, fewer than 3
//! dimensions, `sigmoid` and `softmax` both set, negative or non-finite smoothing, a `weight` of
//! the wrong length or with a negative value, class indices out of range. No loss panics.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use loss_seg::{dice_loss, DiceLoss};
//! let pred = Tensor::new(&[[[0.9f32, 0.1, 0.8, 0.2]]], &Device::Cpu)?; // [1, 1, 4]
//! let target = Tensor::new(&[[[1.0f32, 0.0, 1.0, 0.0]]], &Device::Cpu)?;
//! let loss = dice_loss(&pred, &target, &DiceLoss::default())?;
//! // 1 − (2·1.7 + 1e-5) / (2 + 2 + 1e-5)
//! assert!((loss.to_scalar::<f32>()? - 0.15).abs() < 1e-5);
//! # Ok::<(), candle_core::Error>(())
//! ```

#![warn(missing_docs)]

pub mod cldice;
pub mod combined;
pub mod dice;
pub mod edt;
mod fused;
pub mod generalized_dice;
pub mod hausdorff;
pub mod jaccard;
pub mod lovasz;
pub mod masked_dice;
pub mod options;
pub mod overlap;
pub mod prepare;
pub mod soft_bce;
pub mod tversky;

pub use cldice::{soft_cldice_loss, soft_dice_cldice_loss, SoftClDiceBuilders, SoftClDiceLoss, SoftDiceClDiceLoss};
pub use combined::{dice_ce_loss, dice_focal_loss, DiceCeLoss, DiceFocalLoss};
pub use dice::{dice_loss, DiceBuilders, DiceLoss};
pub use generalized_dice::{generalized_dice_loss, GeneralizedDiceLoss, Weighting};
pub use hausdorff::{hausdorff_dt_loss, log_hausdorff_dt_loss, HausdorffDtLoss, LogHausdorffDtLoss};
pub use jaccard::{jaccard_loss, JaccardLoss, JaccardMode};
pub use lovasz::{lovasz_hinge_loss, lovasz_softmax_loss, LovaszHingeLoss, LovaszSoftmaxLoss};
pub use masked_dice::{masked_dice_loss, MaskedDice, MaskedDiceLoss};
pub use options::{OverlapBuilders, OverlapOptions};
pub use overlap::Overlap;
pub use prepare::Prepare;
pub use soft_bce::{soft_bce_with_logits_loss, SoftBceWithLogitsLoss};
pub use tversky::{focal_tversky_loss, tversky_loss, FocalTverskyLoss, TverskyLoss};

// The README's example is compiled and run with the doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;
