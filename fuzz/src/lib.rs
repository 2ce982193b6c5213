//! Decoding of fuzz bytes into loss calls, shared by the targets in `fuzz_targets/`.
//!
//! A target reads, from the fuzzer's bytes, which loss to call, tensors (any dtype among f32,
//! f64, f16, u8, u32, i64; rank 0 to 5 with empty dimensions; values from raw f32/f64 bit
//! patterns, so NaN, ±inf, subnormals and f32::MAX come up, or from small integers), parameters
//! (raw bits, specials, small values) and a reduction, calls the loss on the fused or on the
//! composite path, and then [`check`]s the result: an `Err` must be a typed `LossError` naming
//! the loss, an `Ok` must survive one backward pass. Any panic is a find: libfuzzer-sys aborts on
//! it and keeps the input.

use arbitrary::{Result, Unstructured};
use candle_core::{DType, Device, Tensor, Var};
use loss_core::Reduction;

/// At most this many elements per tensor (the fuzzer hunts for argument-checking bugs, not for
/// throughput).
pub const MAX_ELEMS: usize = 64;

const SPECIAL: &[f64] = &[
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    1e-7,
    1e-30,
    1e30,
    1.401_298_5e-45,
    3.402_823_5e38,
    -3.402_823_5e38,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::MAX,
    f64::MIN_POSITIVE,
];

/// Any dtype a tensor may come with.
pub fn dtype(u: &mut Unstructured) -> Result<DType> {
    Ok(*u.choose(&[
        DType::F32,
        DType::F32,
        DType::F64,
        DType::F64,
        DType::U8,
        DType::U32,
        DType::I64,
        DType::F16,
    ])?)
}

/// f32 or f64.
pub fn float_dtype(u: &mut Unstructured) -> Result<DType> {
    Ok(if u.arbitrary()? { DType::F32 } else { DType::F64 })
}

/// A shape of rank `lo..=hi` with dimensions 0 to 4, at most [`MAX_ELEMS`] elements.
pub fn shape_of_rank(u: &mut Unstructured, lo: usize, hi: usize) -> Result<Vec<usize>> {
    let rank = u.int_in_range(lo..=hi)?;
    let mut s = Vec::with_capacity(rank);
    for _ in 0..rank {
        s.push(u.int_in_range(0..=4usize)?);
    }
    let mut i = s.len();
    while s.iter().product::<usize>() > MAX_ELEMS && i > 0 {
        i -= 1;
        s[i] = s[i].min(1);
    }
    Ok(s)
}

/// A shape of rank 0 to 5.
pub fn shape(u: &mut Unstructured) -> Result<Vec<usize>> {
    shape_of_rank(u, 0, 5)
}

/// A value: raw f32 or f64 bits, a special value, or a small integer.
pub fn value(u: &mut Unstructured) -> Result<f64> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => f32::from_bits(u.arbitrary()?) as f64,
        1 => *u.choose(SPECIAL)?,
        2 => u.int_in_range(-3i8..=5)? as f64,
        _ => f64::from_bits(u.arbitrary()?),
    })
}

/// A scalar parameter: anything, valid or not.
pub fn param(u: &mut Unstructured) -> Result<f64> {
    value(u)
}

/// An integer parameter (`ignore_index`).
pub fn index(u: &mut Unstructured) -> Result<i64> {
    Ok(match u.int_in_range(0..=2u8)? {
        0 => u.int_in_range(-3i64..=5)?,
        1 => *u.choose(&[-100, 255, 256, i64::MIN, i64::MAX, u32::MAX as i64])?,
        _ => u.arbitrary()?,
    })
}

/// Any reduction.
pub fn reduction(u: &mut Unstructured) -> Result<Reduction> {
    Ok(*u.choose(&[Reduction::None, Reduction::Mean, Reduction::Sum, Reduction::BatchMean])?)
}

/// A tensor of `dt` and `shape` with decoded values (indices saturated into their dtype). Float
/// tensors are `Var`s, so that the backward of [`check`] reaches them.
pub fn tensor_of(u: &mut Unstructured, dt: DType, shape: &[usize]) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(value(u)?);
    }
    let dev = &Device::Cpu;
    let t = match dt {
        DType::U8 => Tensor::from_vec(v.iter().map(|&x| x as u8).collect::<Vec<_>>(), shape, dev),
        DType::U32 => Tensor::from_vec(v.iter().map(|&x| x as u32).collect::<Vec<_>>(), shape, dev),
        DType::I64 => Tensor::from_vec(v.iter().map(|&x| x as i64).collect::<Vec<_>>(), shape, dev),
        DType::F32 => Tensor::from_vec(v.iter().map(|&x| x as f32).collect::<Vec<_>>(), shape, dev),
        _ => Tensor::from_vec(v, shape, dev).and_then(|t| t.to_dtype(dt)),
    }
    .expect("building a fuzz tensor");
    Ok(if dt.is_float() {
        Var::from_tensor(&t).expect("var").as_tensor().clone()
    } else {
        t
    })
}

/// Any tensor.
pub fn tensor(u: &mut Unstructured) -> Result<Tensor> {
    let dt = dtype(u)?;
    let s = shape(u)?;
    tensor_of(u, dt, &s)
}

/// Mostly a tensor of `like`'s shape and dtype (to reach the checks past the shapes), else any.
pub fn tensor_like(u: &mut Unstructured, like: &Tensor) -> Result<Tensor> {
    match u.int_in_range(0..=3u8)? {
        0 => tensor(u),
        1 => {
            let dt = dtype(u)?;
            tensor_of(u, dt, like.dims())
        }
        _ => tensor_of(u, like.dtype(), like.dims()),
    }
}

/// Mostly class indices for logits `like` (`like`'s shape without dimension 1, small values),
/// else any tensor.
pub fn class_target(u: &mut Unstructured, like: &Tensor) -> Result<Tensor> {
    if like.rank() == 0 || u.ratio(1, 4)? {
        return tensor(u);
    }
    let mut dims = like.dims().to_vec();
    if dims.len() > 1 {
        dims.remove(1);
    } else {
        dims.clear();
    }
    let dt = *u.choose(&[DType::U8, DType::U32, DType::I64, DType::I64])?;
    tensor_of(u, dt, &dims)
}

/// An optional tensor: none, one of length `len` (a class vector), or any.
pub fn optional(u: &mut Unstructured, len: usize, dt: DType) -> Result<Option<Tensor>> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 | 1 => None,
        2 => Some(tensor_of(u, dt, &[len])?),
        _ => Some(tensor(u)?),
    })
}

/// Runs `f` on the composite path when `composite`, else on the default (fused CPU) path.
pub fn on_path<R>(composite: bool, f: impl FnOnce() -> R) -> R {
    if composite {
        loss_core::kernel::with_path(loss_core::kernel::Path::Composite, f)
    } else {
        f()
    }
}

/// The contract of every loss call: an `Err` is a typed `LossError` (Candle's `Wrapped`) whose
/// message starts with the loss's name; an `Ok` survives one backward of its sum.
///
/// # Panics
/// On a breach of the contract (that is the find).
pub fn check(loss: &str, r: candle_core::Result<Tensor>) {
    match r {
        Err(e) => {
            let msg = e.to_string();
            assert!(
                matches!(e, candle_core::Error::Wrapped(_)) && msg.starts_with(&format!("{loss}: ")),
                "{loss}: not a typed LossError naming the loss: {msg}"
            );
        }
        Ok(t) => {
            let s = t.sum_all().expect("sum of a loss");
            if let Err(e) = s.backward() {
                panic!("{loss}: backward failed: {e}");
            }
        }
    }
}
