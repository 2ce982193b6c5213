//! Shape, dtype and parameter checks shared by every loss, so that all error messages read alike.
//!
//! Each function returns `Err(LossError)` converted into `candle_core::Error`; none panics.

use crate::error::LossError;
use candle_core::{DType, Result, Tensor};

/// `t` must have a float dtype (f16, bf16, f32 or f64).
pub fn float(loss: &'static str, arg: &'static str, t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => Ok(()),
        got => Err(LossError::BadDType {
            loss,
            arg,
            got,
            expected: "a float dtype (f32 or f64)",
        }
        .into()),
    }
}

/// `t` must hold class indices (u8, u32 or i64).
pub fn index(loss: &'static str, arg: &'static str, t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::U8 | DType::U32 | DType::I64 => Ok(()),
        got => Err(LossError::BadDType {
            loss,
            arg,
            got,
            expected: "class indices (u32 or i64)",
        }
        .into()),
    }
}

/// `a` and `b` must have exactly the same shape (no broadcasting: `[n, 1]` against `[n]` fails).
pub fn same_shape(loss: &'static str, arg: &'static str, a: &Tensor, other: &'static str, b: &Tensor) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(LossError::ShapeMismatch {
            loss,
            arg,
            got: a.shape().clone(),
            other,
            expected: b.shape().clone(),
        }
        .into());
    }
    Ok(())
}

/// `a` and `b` must have the same dtype (no silent conversion).
pub fn same_dtype(loss: &'static str, arg: &'static str, a: &Tensor, other: &'static str, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(LossError::DTypeMismatch {
            loss,
            arg,
            got: a.dtype(),
            other,
            expected: b.dtype(),
        }
        .into());
    }
    Ok(())
}

/// Two float tensors of the same shape and dtype: the usual `(input, target)` pair.
pub fn float_pair(loss: &'static str, arg: &'static str, a: &Tensor, other: &'static str, b: &Tensor) -> Result<()> {
    float(loss, arg, a)?;
    float(loss, other, b)?;
    same_shape(loss, other, b, arg, a)?;
    same_dtype(loss, other, b, arg, a)
}

/// `t` must have at least `min` dimensions; `expected` describes the accepted shapes.
pub fn min_rank(loss: &'static str, arg: &'static str, t: &Tensor, min: usize, expected: &str) -> Result<()> {
    if t.rank() < min {
        return Err(bad_shape(loss, arg, t, expected));
    }
    Ok(())
}

/// The `BadShape` error for `t`.
pub fn bad_shape(loss: &'static str, arg: &'static str, t: &Tensor, expected: &str) -> candle_core::Error {
    LossError::BadShape {
        loss,
        arg,
        got: t.shape().clone(),
        expected: expected.to_string(),
    }
    .into()
}

/// A 1-D `weight` of length `len`, float, with the dtype of `like`.
pub fn weight_vector(loss: &'static str, arg: &'static str, w: &Tensor, len: usize, like: &Tensor) -> Result<()> {
    float(loss, arg, w)?;
    if w.dims() != [len] {
        return Err(bad_shape(loss, arg, w, &format!("[{len}] (one value per class)")));
    }
    same_dtype(loss, arg, w, "input", like)
}

/// A scalar parameter check: `ok(value)` must hold, `expected` says what is accepted.
pub fn param(loss: &'static str, arg: &'static str, value: f64, ok: bool, expected: &'static str) -> Result<()> {
    if !ok || value.is_nan() {
        return Err(LossError::BadParam {
            loss,
            arg,
            value,
            expected,
        }
        .into());
    }
    Ok(())
}

/// `value >= 0` and finite.
pub fn non_negative(loss: &'static str, arg: &'static str, value: f64) -> Result<()> {
    param(
        loss,
        arg,
        value,
        value >= 0.0 && value.is_finite(),
        "a finite value >= 0",
    )
}

/// `value > 0` and finite.
pub fn positive(loss: &'static str, arg: &'static str, value: f64) -> Result<()> {
    param(loss, arg, value, value > 0.0 && value.is_finite(), "a finite value > 0")
}

/// `value` in the closed interval `[0, 1]`.
pub fn unit_interval(loss: &'static str, arg: &'static str, value: f64) -> Result<()> {
    param(loss, arg, value, (0.0..=1.0).contains(&value), "a value in [0, 1]")
}

/// Class indices of `target` (any index dtype) must lie in `[0, classes)` or equal `ignore_index`.
///
/// Reads the indices on the host (one transfer of the target): index errors must be reported
/// before any gather, on every device.
pub fn class_indices(
    loss: &'static str,
    arg: &'static str,
    target: &Tensor,
    classes: usize,
    ignore_index: Option<i64>,
) -> Result<()> {
    let idx = target.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?;
    for &i in &idx {
        if Some(i) == ignore_index {
            continue;
        }
        if i < 0 || i as u64 >= classes as u64 {
            return Err(LossError::IndexOutOfRange {
                loss,
                arg,
                index: i,
                classes,
                shape: target.shape().clone(),
            }
            .into());
        }
    }
    Ok(())
}

/// Whether a contiguous f32/f64 CPU tensor has a value outside `[lo, hi]`, read in place (one
/// vectorised pass, no f64 copy); `None` for any other tensor.
fn any_outside_cpu(t: &Tensor, lo: f64, hi: f64) -> Option<bool> {
    use candle_core::{CpuStorage, Storage};
    #[inline(always)]
    fn scan<T: Copy + Into<f64>>(v: &[T], lo: f64, hi: f64) -> bool {
        crate::kernel::with_simd(
            #[inline(always)]
            || {
                v.iter().fold(false, |acc, &x| {
                    let x: f64 = x.into();
                    acc | (x < lo) | (x > hi)
                })
            },
        )
    }
    let (storage, layout) = t.storage_and_layout();
    let (a, b) = layout.contiguous_offsets()?;
    match &*storage {
        Storage::Cpu(CpuStorage::F32(v)) => Some(scan(&v[a..b], lo, hi)),
        Storage::Cpu(CpuStorage::F64(v)) => Some(scan(&v[a..b], lo, hi)),
        _ => None,
    }
}

/// All values of `t` must lie in `[lo, hi]` (NaN passes through: it propagates to the output).
pub fn values_in(
    loss: &'static str,
    arg: &'static str,
    t: &Tensor,
    lo: f64,
    hi: f64,
    expected: &'static str,
) -> Result<()> {
    if t.elem_count() == 0 {
        return Ok(());
    }
    let outside = match any_outside_cpu(t, lo, hi) {
        Some(outside) => outside,
        None => {
            let vals = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            vals.iter().any(|&v| v < lo || v > hi)
        }
    };
    if outside {
        return Err(LossError::BadValues {
            loss,
            arg,
            expected,
            shape: t.shape().clone(),
        }
        .into());
    }
    Ok(())
}
