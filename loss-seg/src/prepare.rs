//! From `(pred, target)` as given to two float tensors of one shape: MONAI's input options.
//!
//! In MONAI's order: the activation (`sigmoid` or `softmax` over the channels), then the one-hot
//! encoding of class-index targets (`to_onehot_y`), then the shape check. Dropping the
//! background channel (`include_background = false`) is left to the caller as
//! [`Prepared::first_class`]: every overlap statistic is per class, so the losses compute them on
//! all `C` channels and drop column 0 of the small `[N, C]` result rather than copying the big
//! tensors. With `C = 1`, `to_onehot_y`, `softmax` and `include_background` are ignored (MONAI
//! warns and goes on).

use crate::fused::ChannelSoftmaxOp;
use candle_core::{DType, Result, Tensor};
use loss_core::{check, kernel, ops, LossError};

/// The expected shape of `pred`, for error messages.
pub const PRED_SHAPE: &str = "[N, C, spatial...] with at least one spatial dimension";

/// MONAI's input options shared by every overlap loss (defaults: MONAI's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepare {
    /// Keep channel 0 (default `true`); `false` drops it from the loss (ignored when `C = 1`).
    pub include_background: bool,
    /// The target holds class indices `[N, 1, spatial...]` to one-hot encode (default `false`;
    /// ignored when `C = 1`, where the target is used as it is).
    pub to_onehot_y: bool,
    /// Apply a sigmoid to `pred` (default `false`).
    pub sigmoid: bool,
    /// Apply a softmax over the channel dimension of `pred` (default `false`; ignored when
    /// `C = 1`).
    pub softmax: bool,
}

impl Default for Prepare {
    fn default() -> Self {
        Self {
            include_background: true,
            to_onehot_y: false,
            sigmoid: false,
            softmax: false,
        }
    }
}

/// `pred` after the activation and `target` as floats of the same shape `[N, C, spatial...]`.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The activated prediction, `[N, C, spatial...]`.
    pub pred: Tensor,
    /// The target as floats of `pred`'s dtype and shape (one-hot where it held indices).
    pub target: Tensor,
    /// 1 when the background channel is to be dropped (`include_background = false`, `C > 1`),
    /// else 0.
    pub first_class: usize,
}

impl Prepared {
    /// The number of classes kept, `C − first_class`.
    pub fn classes_kept(&self) -> Result<usize> {
        Ok(self.pred.dim(1)? - self.first_class)
    }
}

/// Refuses `sigmoid` and `softmax` together (MONAI's "Incompatible values").
pub fn check_activation(loss: &'static str, sigmoid: bool, softmax: bool) -> Result<()> {
    if sigmoid && softmax {
        return Err(LossError::BadOptions {
            loss,
            message: "`sigmoid` and `softmax` cannot both be set (choose one activation)".into(),
        }
        .into());
    }
    Ok(())
}

/// Checks `pred`: a float tensor `[N, C, spatial...]` of rank ≥ 3.
pub fn check_pred(loss: &'static str, pred: &Tensor) -> Result<()> {
    check::float(loss, "pred", pred)?;
    check::min_rank(loss, "pred", pred, 3, PRED_SHAPE)
}

/// Softmax over dimension 1 (the channels), `exp(x − max) / Σ exp(x − max)`, for `x` of rank ≥ 2.
///
/// On the CPU (f32/f64, rank ≥ 3, [`loss_core::kernel::choose`]) one fused pass forward and
/// one backward, `s ⊙ (g − Σ_c s g)`; elsewhere [`softmax_channels_composite`].
pub fn softmax_channels(x: &Tensor) -> Result<Tensor> {
    if x.rank() >= 3 && kernel::choose("softmax_channels", x)? {
        return kernel::apply1(ChannelSoftmaxOp, &x.contiguous()?);
    }
    softmax_channels_composite(x)
}

/// [`softmax_channels`] from plain Candle ops (any device, any float dtype). The max is taken as
/// a constant (it cancels in the value), so the gradient is the softmax's own without a path
/// through the max.
pub fn softmax_channels_composite(x: &Tensor) -> Result<Tensor> {
    if x.elem_count() == 0 {
        // Nothing to normalise (Candle's max refuses empty tensors); keep the graph.
        return x.affine(1.0, 0.0);
    }
    let max = x.max_keepdim(1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(1)?)
}

/// Applies the activation: `sigmoid` ([`loss_core::ops::sigmoid`]), `softmax` over the channels
/// (skipped when `C = 1`), or none.
///
/// # Errors
/// `sigmoid` and `softmax` both set.
pub fn activate(loss: &'static str, pred: &Tensor, sigmoid: bool, softmax: bool) -> Result<Tensor> {
    check_activation(loss, sigmoid, softmax)?;
    if sigmoid {
        ops::sigmoid(pred)
    } else if softmax && pred.dim(1)? > 1 {
        softmax_channels(pred)
    } else {
        Ok(pred.clone())
    }
}

/// One-hot encodes class indices `[N, 1, spatial...]` into `[N, C, spatial...]` of `dtype`.
///
/// `target` must have the rank of `pred`, `N` and the spatial dimensions of `pred`, a channel
/// dimension of 1, an index dtype (u8, u32 or i64) and values in `[0, C)` (read on the host to
/// report a bad index before any encoding, on every device).
///
/// # Errors
/// A float target (`BadDType`), a target of another shape (`BadShape`, naming the shape
/// expected), an index outside `[0, C)` (`IndexOutOfRange`).
pub fn one_hot(loss: &'static str, target: &Tensor, pred: &Tensor) -> Result<Tensor> {
    let classes = pred.dim(1)?;
    if target.dtype().is_float() {
        return Err(LossError::BadDType {
            loss,
            arg: "target",
            got: target.dtype(),
            expected: "class indices (u8, u32 or i64) with `to_onehot_y`",
        }
        .into());
    }
    check::index(loss, "target", target)?;
    let mut want = pred.dims().to_vec();
    want[1] = 1;
    if target.dims() != want.as_slice() {
        return Err(check::bad_shape(
            loss,
            "target",
            target,
            &format!("{want:?} (class indices [N, 1, spatial...] of pred {:?})", pred.dims()),
        ));
    }
    check::class_indices(loss, "target", target, classes, None)?;
    let mut shape = vec![1usize; pred.rank()];
    shape[1] = classes;
    let ids = Tensor::arange(0u32, classes as u32, target.device())?
        .to_dtype(target.dtype())?
        .reshape(shape)?;
    target.broadcast_eq(&ids)?.to_dtype(pred.dtype())
}

/// The target as floats of `pred`'s shape and dtype: one-hot of class indices with
/// `to_onehot_y` (when `C > 1`), else the target itself (class indices with `C = 1` are
/// converted to `pred`'s dtype, as MONAI uses them as they are).
///
/// # Errors
/// As [`one_hot`]; a float target of another dtype or shape than `pred`; class indices without
/// `to_onehot_y`.
pub fn dense_target(loss: &'static str, pred: &Tensor, target: &Tensor, to_onehot_y: bool) -> Result<Tensor> {
    let classes = pred.dim(1)?;
    if to_onehot_y && classes > 1 {
        return one_hot(loss, target, pred);
    }
    let target = if target.dtype().is_float() {
        target.clone()
    } else if to_onehot_y {
        check::index(loss, "target", target)?;
        target.to_dtype(pred.dtype())?
    } else {
        return Err(LossError::BadDType {
            loss,
            arg: "target",
            got: target.dtype(),
            expected: "a float dtype like pred's (class indices need `to_onehot_y`)",
        }
        .into());
    };
    check::same_shape(loss, "target", &target, "pred", pred)?;
    check::same_dtype(loss, "target", &target, "pred", pred)?;
    Ok(target)
}

/// Checks the options and the inputs, applies the activation and the one-hot encoding.
///
/// # Errors
/// `pred` not float or of rank < 3, `sigmoid` with `softmax`, and the errors of [`dense_target`].
pub fn prepare(loss: &'static str, pred: &Tensor, target: &Tensor, opts: Prepare) -> Result<Prepared> {
    check_activation(loss, opts.sigmoid, opts.softmax)?;
    check_pred(loss, pred)?;
    let target = dense_target(loss, pred, target, opts.to_onehot_y)?;
    let pred = activate(loss, pred, opts.sigmoid, opts.softmax)?;
    let first_class = usize::from(!opts.include_background && pred.dim(1)? > 1);
    Ok(Prepared {
        pred,
        target,
        first_class,
    })
}

/// Checks that a smoothing term is finite and `>= 0`.
pub fn check_smooth(loss: &'static str, smooth_nr: f64, smooth_dr: f64) -> Result<()> {
    check::non_negative(loss, "smooth_nr", smooth_nr)?;
    check::non_negative(loss, "smooth_dr", smooth_dr)
}

/// A per-class weight `[classes]` on `like`'s device: float, `like`'s dtype, every value `>= 0`.
///
/// # Errors
/// A weight of another length, dtype or rank (`BadShape` names the length expected), a negative
/// value.
pub fn class_weight(loss: &'static str, weight: &Tensor, classes: usize, like: &Tensor) -> Result<Tensor> {
    check::weight_vector(loss, "weight", weight, classes, like)?;
    check::values_in(loss, "weight", weight, 0.0, f64::INFINITY, "[0, inf)")?;
    weight.to_device(like.device())
}

/// `num / den` where `den != 0`, and 1 (with a zero gradient) where `den == 0`.
///
/// A zero denominator of an overlap ratio means an empty prediction on an empty target with
/// `smooth_dr = 0`; the ratio 1 makes that class score 0, a perfect match, instead of NaN.
///
/// The gradient is PyTorch's `(∂num − (num/den)·∂den) / den`: with `num = 0` and a tiny `den`
/// it is 0, where Candle's own division backward, `num / den²`, gives `0 / 0 = NaN` once `den²`
/// underflows.
///
/// A non-zero `den` below `√m`, `m` the dtype's smallest normal number (1.1e-19 in f32, 1.5e-154
/// in f64), keeps its exact value but gets a zero gradient. Such a denominator only arises for an
/// empty target class whose prediction sum is tiny (e.g. sigmoid outputs of −100 logits) with a
/// smoothing below it; the factor `1/den` of its gradient, times a class weight, a λ or
/// Tversky's α, overflows to inf, and `inf · 0 = NaN` where the target is 0, while the true
/// gradient w.r.t. the prediction is 0 there when `smooth_nr = 0` (`num = 0`).
pub fn ratio_or_one(num: &Tensor, den: &Tensor) -> Result<Tensor> {
    let zero = den.eq(0.0)?;
    let one = den.ones_like()?;
    let den_safe = zero.where_cond(&one, den)?;
    let q = num.detach().div(&den_safe.detach())?;
    let threshold = match den.dtype() {
        DType::F64 => f64::MIN_POSITIVE.sqrt(),
        DType::F16 => 6.103_515_6e-5f64.sqrt(),
        _ => (f32::MIN_POSITIVE as f64).sqrt(),
    };
    let tiny = den_safe.abs()?.lt(threshold)?;
    let den_c = tiny.where_cond(&one, &den_safe.detach())?;
    // Exactly q forward (x − x = 0); the gradient of x backward.
    let x = num.sub(&q.mul(&den_safe)?)?.div(&den_c)?;
    let ratio = tiny.where_cond(&q, &q.add(&x.sub(&x.detach())?)?)?;
    zero.where_cond(&one, &ratio)
}

/// The dtype-preserving `1 − x`.
pub fn one_minus(x: &Tensor) -> Result<Tensor> {
    x.affine(-1.0, 1.0)
}

/// MONAI 1.6.1's `ignore_index` mask (`create_ignore_mask`), `[N, 1, spatial...]` of `pred`'s
/// dtype: 1 where a pixel counts, 0 where it is ignored. Built from the target *as given*:
///
/// - a 1-channel target (class indices, or a `C = 1` mask): `target ≠ ignore_index`;
/// - a `C`-channel (one-hot or soft) target: `1 − target[:, ignore_index]` when
///   `0 ≤ ignore_index < C`, else 1 where the channels sum to more than 0 (unlabelled all-zero
///   pixels are ignored).
///
/// The mask is a constant (no gradient).
///
/// # Errors
/// A target whose rank differs from `pred`'s.
pub fn ignore_mask(loss: &'static str, pred: &Tensor, target: &Tensor, ignore_index: i64) -> Result<Tensor> {
    if target.rank() != pred.rank() {
        return Err(check::bad_shape(
            loss,
            "target",
            target,
            &format!("pred's rank {} (pred {:?})", pred.rank(), pred.dims()),
        ));
    }
    let t = target.detach().to_dtype(pred.dtype())?;
    let c = t.dim(1)?;
    let mask = if c == 1 {
        t.ne(ignore_index as f64)?
    } else if ignore_index >= 0 && (ignore_index as u64) < c as u64 {
        return one_minus(&ops::narrow(&t, 1, ignore_index as usize, 1)?);
    } else {
        t.sum_keepdim(1)?.gt(0.0)?
    };
    mask.to_dtype(pred.dtype())
}

/// [`prepare`] with MONAI 1.6.1's `ignore_index` (`None`: none): the mask of [`ignore_mask`] is
/// built from the target as given; with `to_onehot_y`, labels equal to an `ignore_index` outside
/// `[0, C)` become 0 before the one-hot (any other label out of range is still an error); the
/// activated `pred` and the dense target are then multiplied by the mask (broadcast over the
/// channels), so that ignored pixels take no part in any statistic and get a zero gradient.
///
/// # Errors
/// As [`prepare`].
pub fn prepare_ignoring(
    loss: &'static str,
    pred: &Tensor,
    target: &Tensor,
    opts: Prepare,
    ignore_index: Option<i64>,
) -> Result<Prepared> {
    let Some(ii) = ignore_index else {
        return prepare(loss, pred, target, opts);
    };
    check_activation(loss, opts.sigmoid, opts.softmax)?;
    check_pred(loss, pred)?;
    let c = pred.dim(1)?;
    let mask = ignore_mask(loss, pred, target, ii)?;
    let outside = ii < 0 || ii as u64 >= c as u64;
    let target = if opts.to_onehot_y && c > 1 && !target.dtype().is_float() && outside {
        check::index(loss, "target", target)?;
        let hit = target.to_dtype(DType::F64)?.eq(ii as f64)?;
        hit.where_cond(&target.zeros_like()?, target)?
    } else {
        target.clone()
    };
    let prepared = prepare(loss, pred, &target, opts)?;
    Ok(Prepared {
        pred: prepared.pred.broadcast_mul(&mask)?,
        target: prepared.target.broadcast_mul(&mask)?,
        first_class: prepared.first_class,
    })
}
