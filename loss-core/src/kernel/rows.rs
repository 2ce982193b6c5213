//! Row helpers of the row kernels (softmax over the last axis of `[N, C]` rows): the maximum,
//! the sum of exponentials (optionally written out), in `L` = 8 lanes that vectorise. Used by
//! loss-core's fused cross-entropy and loss-bbox's dense-detection row kernels.

use super::Real;
use std::mem::MaybeUninit;

/// Lanes of the row loops.
const L: usize = 8;

/// The maximum of a row in `L` = 8 lanes (`max` skips NaN; a NaN makes `s`, hence the loss, NaN).
#[inline(always)]
pub fn row_max<F: Real>(row: &[F]) -> F {
    let chunks = row.chunks_exact(L);
    let rest = chunks.remainder();
    let mut m = [F::neg_infinity(); L];
    for c in chunks {
        let c: &[F; L] = c.try_into().unwrap();
        for k in 0..L {
            m[k] = num_traits::Float::max(m[k], c[k]);
        }
    }
    rest.iter()
        .chain(m.iter())
        .fold(F::neg_infinity(), |a, &b| num_traits::Float::max(a, b))
}

/// Values per block of [`row_sum_map`]: a block's values go to a stack buffer first.
const BLOCK: usize = 64;

/// Adds `vals` in `L` = 8 lanes.
#[inline(always)]
fn lane_sum<F: Real>(vals: &[F]) -> F {
    let chunks = vals.chunks_exact(L);
    let tail = chunks.remainder().iter().fold(F::zero(), |a, &v| a + v);
    let mut s = [F::zero(); L];
    for c in chunks {
        let c: &[F; L] = c.try_into().unwrap();
        for k in 0..L {
            s[k] += c[k];
        }
    }
    s.iter().fold(F::zero(), |a, &b| a + b) + tail
}

/// `Σ f(v)` over a row. Per block of 64 the values are written to a buffer by a plain loop
/// (which vectorises whatever `f` is), then added in `L` = 8 lanes.
#[inline(always)]
pub fn row_sum_map<F: Real>(row: &[F], f: impl Fn(F) -> F) -> F {
    let mut buf = [F::zero(); BLOCK];
    let mut sum = F::zero();
    for xb in row.chunks(BLOCK) {
        let vals = &mut buf[..xb.len()];
        for (v, &x) in vals.iter_mut().zip(xb) {
            *v = f(x);
        }
        sum += lane_sum(vals);
    }
    sum
}

/// `Σ a` over a row where `(a, b) = f(v)`, each `b` written to `out` (which it initialises), as
/// [`row_sum_map`].
#[inline(always)]
pub fn row_sum_map_into<F: Real>(row: &[F], out: &mut [MaybeUninit<F>], f: impl Fn(F) -> (F, F)) -> F {
    let mut buf = [F::zero(); BLOCK];
    let mut sum = F::zero();
    for (xb, ob) in row.chunks(BLOCK).zip(out.chunks_mut(BLOCK)) {
        let vals = &mut buf[..xb.len()];
        for ((v, o), &x) in vals.iter_mut().zip(ob.iter_mut()).zip(xb) {
            let (a, b) = f(x);
            *v = a;
            o.write(b);
        }
        sum += lane_sum(vals);
    }
    sum
}

/// `Σ exp(v − shift)` over a row in `L` = 8 lanes.
#[inline(always)]
pub fn row_exp_sum<F: Real>(row: &[F], shift: F) -> F {
    let chunks = row.chunks_exact(L);
    let rest = chunks.remainder();
    let mut s = [F::zero(); L];
    for c in chunks {
        let c: &[F; L] = c.try_into().unwrap();
        for k in 0..L {
            s[k] += (c[k] - shift).fast_exp();
        }
    }
    let tail = rest.iter().fold(F::zero(), |a, &v| a + (v - shift).fast_exp());
    s.iter().fold(F::zero(), |a, &b| a + b) + tail
}

/// As [`row_exp_sum`], each term also written to `out` (which it initialises).
#[inline(always)]
pub fn row_exp_sum_into<F: Real>(row: &[F], shift: F, out: &mut [MaybeUninit<F>]) -> F {
    let mut oc = out.chunks_exact_mut(L);
    let chunks = row.chunks_exact(L);
    let rest = chunks.remainder();
    let mut s = [F::zero(); L];
    for (c, o) in chunks.zip(&mut oc) {
        let c: &[F; L] = c.try_into().unwrap();
        for k in 0..L {
            let e = (c[k] - shift).fast_exp();
            o[k].write(e);
            s[k] += e;
        }
    }
    let mut tail = F::zero();
    for (&v, o) in rest.iter().zip(oc.into_remainder()) {
        let e = (v - shift).fast_exp();
        o.write(e);
        tail += e;
    }
    s.iter().fold(F::zero(), |a, &b| a + b) + tail
}

/// `out` viewed as initialised.
///
/// # Safety
/// Every element of `out` must have been written.
#[inline(always)]
pub unsafe fn assume_init<F>(out: &mut [MaybeUninit<F>]) -> &mut [F] {
    // SAFETY: MaybeUninit<F> has F's layout, and the caller guarantees initialisation.
    unsafe { &mut *(out as *mut [MaybeUninit<F>] as *mut [F]) }
}

/// Writes `softmax(row)` to `out` (which it initialises) and returns `lse = ln Σ exp(row)`.
///
/// One pass for the maximum `m`, one for the exponentials `e_c = exp(x_c − m)` (written to
/// `out`), one scaling them by `1/Σ e`; a row holding ±inf (no finite maximum) takes
/// `p_c = exp(x_c − lse)` instead, NaN where `x_c` is the infinity (as PyTorch's softmax).
#[inline(always)]
pub fn row_softmax_into<F: Real>(row: &[F], out: &mut [MaybeUninit<F>]) -> F {
    let m = row_max(row);
    let shift = if m.is_finite() { m } else { F::zero() };
    let s = row_exp_sum_into(row, shift, out);
    // SAFETY: `row_exp_sum_into` wrote every element of `out`.
    let out = unsafe { assume_init(out) };
    let lse = shift + s.fast_ln();
    if m.is_finite() {
        let inv = F::one() / s;
        out.iter_mut().for_each(|o| *o *= inv);
    } else {
        for (o, &v) in out.iter_mut().zip(row) {
            *o = (v - lse).fast_exp();
        }
    }
    lse
}
