//! [`OverlapOptions`]: the options every overlap loss (Dice, Tversky, generalized Dice and the
//! combined losses) shares, with MONAI's names and defaults.
//!
//! Each overlap config holds them as its part `overlap` (as MONAI's `DiceCELoss` holds a
//! `DiceLoss`), and gets their `with_*` builders through [`OverlapBuilders`]; deserializing a
//! config reads them from the same flat map as its own options (`{"softmax": true, "alpha": 0.3}`).

use crate::prepare::{check_smooth, Prepare};
use candle_core::Result;
use loss_core::Reduction;

loss_core::loss_config! {
    /// The options every overlap loss shares (MONAI's names and defaults).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct OverlapOptions {
        /// Keep channel 0, the background (ignored when `C = 1`).
        include_background: bool = true,
        /// The target holds class indices `[N, 1, spatial...]` to one-hot encode (ignored when
        /// `C = 1`).
        to_onehot_y: bool = false,
        /// Sigmoid on `pred` first (not together with `softmax`).
        sigmoid: bool = false,
        /// Softmax over the channels of `pred` first (ignored when `C = 1`).
        softmax: bool = false,
        /// Sum over the batch too before the ratio: one value per class.
        batch: bool = false,
        /// Added to the numerator (finite, `>= 0`).
        smooth_nr: f64 = 1e-5,
        /// Added to the denominator (finite, `>= 0`).
        smooth_dr: f64 = 1e-5,
        /// `None` gives `[N, C']` (`[C']` with `batch`), `Mean` / `Sum` a 0-d tensor.
        reduction: Reduction = Reduction::Mean,
    }
    builders OverlapBuilders;
}

impl OverlapOptions {
    /// `(smooth_nr, smooth_dr)`, checked for `loss` (finite, `>= 0`).
    ///
    /// # Errors
    /// A negative or non-finite smoothing term.
    pub fn smoothing(&self, loss: &'static str) -> Result<(f64, f64)> {
        check_smooth(loss, self.smooth_nr, self.smooth_dr)?;
        Ok((self.smooth_nr, self.smooth_dr))
    }

    /// The input options as a [`Prepare`].
    pub fn prepare_options(&self) -> Prepare {
        Prepare {
            include_background: self.include_background,
            to_onehot_y: self.to_onehot_y,
            sigmoid: self.sigmoid,
            softmax: self.softmax,
        }
    }
}
