//! Binary cross-entropy with logits, label smoothing and an ignored target value, as
//! `segmentation_models_pytorch`'s `SoftBCEWithLogitsLoss` (smp 0.6.0); label smoothing after
//! Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016.
//!
//! ```text
//! t_s  = (1 − t)·smooth_factor + t·(1 − smooth_factor)        (t when smooth_factor is None)
//! l    = w · [ (1 − t_s)·x + (1 + (pw − 1)·t_s)·softplus(−x) ] · 1[t ≠ ignore_index]
//! mean = Σ l / (number of ALL elements, ignored ones included)
//! ```
//!
//! `w` (`weight`) and `pw` (`pos_weight`) lie along the last dimension (torch broadcasting); the
//! ignore test reads the *original* target. `softplus` is loss-core's stable one, so saturated
//! logits give finite values and gradients.

use candle_core::{Result, Tensor};
use loss_core::{check, ops, reduce, Reduction};

loss_core::loss_config! {
    /// smp's `SoftBCEWithLogitsLoss` options with smp's defaults; also the loss as a [`Loss`](loss_core::Loss)
    /// value.
    #[derive(Debug, Clone)]
    pub struct SoftBceWithLogitsLoss {
        /// Label smoothing in `[0, 1]` (`None`: none).
        smooth_factor: Option<f64> = None,
        /// Target value whose elements are zeroed (`None`: none).
        ignore_index: Option<i64> = Some(-100),
        /// `None` keeps the input's shape; `Mean` divides by every element, ignored ones included.
        reduction: Reduction = Reduction::Mean,
    }
    tensors {
        /// Factor of each element along the last dimension (`[D]`, `pred`'s dtype).
        weight,
        /// Factor of the positive term along the last dimension (`[D]`, `pred`'s dtype).
        pos_weight,
    }
    loss_of_config soft_bce_with_logits_loss;
}

/// A `[D]` vector along the last dimension of `like`, broadcast to its shape.
fn along_last(loss: &'static str, arg: &'static str, v: &Tensor, like: &Tensor) -> Result<Tensor> {
    check::float(loss, arg, v)?;
    let last = if like.rank() == 0 {
        1
    } else {
        like.dim(like.rank() - 1)?
    };
    if v.rank() != 1 || (v.dim(0)? != last && v.dim(0)? != 1) {
        return Err(check::bad_shape(
            loss,
            arg,
            v,
            &format!("[{last}] (along the last dimension of logits {:?})", like.dims()),
        ));
    }
    check::same_dtype(loss, arg, v, "logits", like)?;
    let v = v.to_device(like.device())?;
    if like.rank() == 0 {
        return v.reshape(());
    }
    v.broadcast_as(like.shape())
}

/// smp's soft binary cross-entropy with logits (see the module docs).
///
/// - `logits`, `target`: one shape (any rank), one float dtype; `target` in `[0, 1]` or equal to
///   `ignore_index`.
/// - Output: `logits`' shape for `Reduction::None`, else 0-d (`Sum` of an empty input is 0).
///
/// # Errors
/// Shapes or dtypes that differ; a `weight` / `pos_weight` that is not `[D]` (`D` the last
/// dimension) or `[1]`; `smooth_factor` outside `[0, 1]`; `Reduction::BatchMean`.
pub fn soft_bce_with_logits_loss(logits: &Tensor, target: &Tensor, opts: &SoftBceWithLogitsLoss) -> Result<Tensor> {
    const LOSS: &str = "soft_bce_with_logits_loss";
    opts.reduction.standard(LOSS)?;
    check::float_pair(LOSS, "logits", logits, "target", target)?;
    if let Some(f) = opts.smooth_factor {
        check::unit_interval(LOSS, "smooth_factor", f)?;
    }
    let t = target.detach();
    let keep = opts.ignore_index.map(|ii| t.ne(ii as f64)).transpose()?;
    // Ignored elements: any finite stand-in (they are zeroed below), so that a target of 255
    // cannot make the product NaN.
    let t_in = match &keep {
        Some(k) => k.where_cond(&t, &t.zeros_like()?)?,
        None => t.clone(),
    };
    let ts = match opts.smooth_factor {
        Some(f) => t_in.affine(1.0 - 2.0 * f, f)?,
        None => t_in,
    };
    let sp = ops::softplus(&logits.neg()?)?;
    let log_weight = match &opts.pos_weight {
        Some(pw) => along_last(LOSS, "pos_weight", pw, logits)?
            .affine(1.0, -1.0)?
            .mul(&ts)?
            .affine(1.0, 1.0)?,
        None => ts.ones_like()?,
    };
    let mut per = ts.affine(-1.0, 1.0)?.mul(logits)?.add(&log_weight.mul(&sp)?)?;
    if let Some(w) = &opts.weight {
        per = per.mul(&along_last(LOSS, "weight", w, logits)?)?;
    }
    if let Some(k) = &keep {
        per = k.where_cond(&per, &per.zeros_like()?)?;
    }
    reduce(LOSS, &per, opts.reduction)
}
