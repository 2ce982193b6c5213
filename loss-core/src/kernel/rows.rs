//! Row helpers of the row kernels (softmax over the last axis of `[N, C]` rows): the maximum,
//! the sum of exponentials (optionally written out), in [`L`] lanes that vectorise. Used by
//! loss-core's fused cross-entropy and loss-bbox's dense-detection row kernels.

use super::Real;
use std::mem::MaybeUninit;

/// Lanes of the row loops.
const L: usize = 8;

/// The maximum of a row in [`L`] lanes (`max` skips NaN; a NaN makes `s`, hence the loss, NaN).
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

/// `Σ f(v)` over a row in [`L`] lanes (`f` inlined into a loop that vectorises).
#[inline(always)]
pub fn row_sum_map<F: Real>(row: &[F], f: impl Fn(F) -> F) -> F {
    let chunks = row.chunks_exact(L);
    let rest = chunks.remainder();
    let mut s = [F::zero(); L];
    for c in chunks {
        let c: &[F; L] = c.try_into().unwrap();
        for k in 0..L {
            s[k] += f(c[k]);
        }
    }
    let tail = rest.iter().fold(F::zero(), |a, &v| a + f(v));
    s.iter().fold(F::zero(), |a, &b| a + b) + tail
}

/// `Σ a` over a row where `(a, b) = f(v)`, each `b` written to `out` (which it initialises), in
/// [`L`] lanes.
#[inline(always)]
pub fn row_sum_map_into<F: Real>(row: &[F], out: &mut [MaybeUninit<F>], f: impl Fn(F) -> (F, F)) -> F {
    let mut oc = out.chunks_exact_mut(L);
    let chunks = row.chunks_exact(L);
    let rest = chunks.remainder();
    let mut s = [F::zero(); L];
    for (c, o) in chunks.zip(&mut oc) {
        let c: &[F; L] = c.try_into().unwrap();
        for k in 0..L {
            let (a, b) = f(c[k]);
            o[k].write(b);
            s[k] += a;
        }
    }
    let mut tail = F::zero();
    for (&v, o) in rest.iter().zip(oc.into_remainder()) {
        let (a, b) = f(v);
        o.write(b);
        tail += a;
    }
    s.iter().fold(F::zero(), |a, &b| a + b) + tail
}

/// `Σ exp(v − shift)` over a row in [`L`] lanes.
#[inline(always)]
pub fn row_exp_sum<F: Real>(row: &[F], shift: F) -> F {
    row_sum_map(row, |v| (v - shift).fast_exp())
}

/// As [`row_exp_sum`], each term also written to `out` (which it initialises).
#[inline(always)]
pub fn row_exp_sum_into<F: Real>(row: &[F], shift: F, out: &mut [MaybeUninit<F>]) -> F {
    row_sum_map_into(row, out, |v| {
        let e = (v - shift).fast_exp();
        (e, e)
    })
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
        out.iter_mut().for_each(|o| *o = *o * inv);
    } else {
        for (o, &v) in out.iter_mut().zip(row) {
            *o = (v - lse).fast_exp();
        }
    }
    lse
}
