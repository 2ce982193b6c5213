//! The elementwise kernel: a loss `ℓ(x, t)` of two same-shape tensors with a closed-form value
//! and partial derivatives becomes one pass forward, one pass backward.
//!
//! The forward reads `input` and `target` once and writes either the elementwise loss
//! (`Reduction::None`) or directly the reduced scalar (partial sums in f64, so a mean over 1e7
//! f32 values keeps f32's precision); a reduced loss whose input needs a gradient writes that
//! gradient in the same pass and keeps it ([`SavedGrad`]) for the backward. The backward writes
//! `upstream · ∂ℓ/∂x` in one pass (and `∂ℓ/∂t` only when the target needs a gradient). Large
//! inputs are split over rayon's threads ([`Split::ELEMENTS`]); small ones pay no thread
//! overhead. A loss implements [`Elementwise`] (its value and partial derivatives, generic over
//! [`Real`]) and calls [`elementwise`]: loss-core's pointwise losses (`fused::Pointwise`) and
//! loss-bbox's dense-detection losses do.

use super::{build, Arg, Fused2, Fused3, Grads2, Real, SavedGrad, Split};
use crate::reduction::Reduction;
use candle_core::{Result, Shape, Tensor};
use std::mem::MaybeUninit;

/// The split of the elementwise kernels.
const SPLIT: Split = Split::ELEMENTS;

/// A loss `ℓ(x, t)` evaluated element by element: its value and its partial derivatives.
///
/// Implement it on a small `Copy` struct holding the loss's parameters, with the methods marked
/// `#[inline(always)]` and written without branches where possible (selects), so that the loops
/// of [`elementwise`] vectorise (8 f32 lanes with AVX2); a parameter that selects code (an
/// exponent of 2) is better a separate type than a runtime test in the loop.
pub trait Elementwise: Copy + Send + Sync + 'static {
    /// `ℓ(x, t)`.
    fn value<F: Real>(self, x: F, t: F) -> F;
    /// `∂ℓ/∂t` at `(x, t)` if `WRT_T`, else `∂ℓ/∂x`.
    fn grad<F: Real, const WRT_T: bool>(self, x: F, t: F) -> F;
}

/// Lanes of the kernel loops (8 f32 = one AVX2 register).
pub(crate) const LANES: usize = 8;

/// Elements per block of [`sum_values`]: the block's values go to a stack buffer first.
pub(crate) const BLOCK: usize = 256;

/// Adds a block of values to [`LANES`] f64 accumulators (the remainder to `tail`).
#[inline(always)]
pub(crate) fn accumulate<F: Real>(vals: &[F], acc: &mut [f64; LANES], tail: &mut f64) {
    let lanes = vals.chunks_exact(LANES);
    *tail += lanes.remainder().iter().map(|v| v.f64()).sum::<f64>();
    for c in lanes {
        let c: &[F; LANES] = c.try_into().unwrap();
        for j in 0..LANES {
            acc[j] += c[j].f64();
        }
    }
}

/// `Σ ℓ(xᵢ, tᵢ)` in f64 over one chunk. Per block the values are written to a buffer by a
/// plain loop (which vectorises whatever the loss), then added in [`LANES`] f64 accumulators.
#[inline(always)]
fn sum_values<K: Elementwise, F: Real>(k: K, x: &[F], t: &[F]) -> f64 {
    let mut buf = [F::zero(); BLOCK];
    let (mut acc, mut tail) = ([0.0f64; LANES], 0.0);
    for (xb, tb) in x.chunks(BLOCK).zip(t.chunks(BLOCK)) {
        let vals = &mut buf[..xb.len()];
        for ((v, &a), &b) in vals.iter_mut().zip(xb).zip(tb) {
            *v = k.value(a, b);
        }
        accumulate(vals, &mut acc, &mut tail);
    }
    acc.iter().sum::<f64>() + tail
}

/// `Σ ℓ(xᵢ, tᵢ)` in f64 over one chunk, writing `out[i] = s · ∂ℓ/∂x` at the same time (the
/// forward of a reduced loss whose input needs a gradient: one pass instead of two).
#[inline(always)]
fn sum_values_write_grads<K: Elementwise, F: Real>(k: K, x: &[F], t: &[F], s: F, out: &mut [MaybeUninit<F>]) -> f64 {
    let mut buf = [F::zero(); BLOCK];
    let (mut acc, mut tail) = ([0.0f64; LANES], 0.0);
    for ((xb, tb), ob) in x.chunks(BLOCK).zip(t.chunks(BLOCK)).zip(out.chunks_mut(BLOCK)) {
        let vals = &mut buf[..xb.len()];
        for (((v, o), &a), &b) in vals.iter_mut().zip(ob.iter_mut()).zip(xb).zip(tb) {
            *v = k.value(a, b);
            o.write(s * k.grad::<F, false>(a, b));
        }
        accumulate(vals, &mut acc, &mut tail);
    }
    acc.iter().sum::<f64>() + tail
}

/// `out[i] = ℓ(xᵢ, tᵢ)` over one chunk.
#[inline(always)]
fn write_values<K: Elementwise, F: Real>(k: K, x: &[F], t: &[F], out: &mut [MaybeUninit<F>]) {
    for ((o, &a), &b) in out.iter_mut().zip(x).zip(t) {
        o.write(k.value(a, b));
    }
}

/// `out[i] = g · ∂ℓ/∂x` (or `∂ℓ/∂t`) at `(xᵢ, tᵢ)` over one chunk, for a scalar upstream `g`.
#[inline(always)]
fn write_grads<K: Elementwise, F: Real, const WRT_T: bool>(k: K, x: &[F], t: &[F], g: F, out: &mut [MaybeUninit<F>]) {
    for ((o, &a), &b) in out.iter_mut().zip(x).zip(t) {
        o.write(g * k.grad::<F, WRT_T>(a, b));
    }
}

/// `out[i] = upᵢ · s · ∂ℓ/∂x` (or `∂ℓ/∂t`) over one chunk, for an elementwise upstream.
#[inline(always)]
fn write_grads_up<K: Elementwise, F: Real, const WRT_T: bool>(
    k: K,
    x: &[F],
    t: &[F],
    up: &[F],
    s: F,
    out: &mut [MaybeUninit<F>],
) {
    for (((o, &a), &b), &u) in out.iter_mut().zip(x).zip(t).zip(up) {
        o.write(u * s * k.grad::<F, WRT_T>(a, b));
    }
}

crate::simd_entry!(sum_values_simd<K: Elementwise, F: Real>(k: K, x: &[F], t: &[F]) -> f64 = sum_values);
crate::simd_entry!(sum_values_write_grads_simd<K: Elementwise, F: Real>(k: K, x: &[F], t: &[F], s: F, out: &mut [MaybeUninit<F>]) -> f64 = sum_values_write_grads);
crate::simd_entry!(write_values_simd<K: Elementwise, F: Real>(k: K, x: &[F], t: &[F], out: &mut [MaybeUninit<F>]) -> () = write_values);
crate::simd_entry!(write_grads_simd<K: Elementwise, F: Real; const WRT_T: bool>(k: K, x: &[F], t: &[F], g: F, out: &mut [MaybeUninit<F>]) -> () = write_grads);
crate::simd_entry!(write_grads_up_simd<K: Elementwise, F: Real; const WRT_T: bool>(k: K, x: &[F], t: &[F], up: &[F], s: F, out: &mut [MaybeUninit<F>]) -> () = write_grads_up);

/// `Σ ℓ(xᵢ, tᵢ)` in f64: per chunk of [`SPLIT`] in parallel above the threshold, the chunks'
/// sums added in order (the same result on any number of threads).
fn sum_pointwise<K: Elementwise, F: Real>(k: K, x: &[F], t: &[F]) -> f64 {
    let parts = super::for_each_chunk(SPLIT, x.len(), 0, [], |r, []: [&mut [u8]; 0]| {
        sum_values_simd(k, &x[r.clone()], &t[r])
    });
    parts.iter().sum()
}

/// The forward kernel: elementwise values or the reduced scalar.
///
/// When the input needs a gradient and the loss is reduced (`save_grad`), the forward also writes
/// `∂ℓ/∂x / divisor` in the same pass and keeps it for the backward, which then only scales it
/// by the upstream gradient (not at all for the usual upstream 1) instead of reading the inputs
/// again. A second backward through the same graph recomputes it.
struct ForwardOp<K> {
    k: K,
    reduction: Reduction,
    /// What the sum is divided by: the element count (`Mean`), the batch size (`BatchMean`), 1.
    divisor: f64,
    save_grad: bool,
    saved: SavedGrad,
}

impl<K: Elementwise> ForwardOp<K> {
    fn run<F: Real>(&self, x: &[F], t: &[F], shape: &Shape) -> (Vec<F>, Shape, Option<Vec<F>>) {
        let k = self.k;
        match self.reduction {
            Reduction::None => {
                let (out, _) = build(SPLIT, x.len(), 1, |r, part| {
                    write_values_simd(k, &x[r.clone()], &t[r], part)
                });
                (out, shape.clone(), None)
            }
            _ if self.save_grad => {
                let s = F::of(1.0 / self.divisor);
                let (grad, sums) = build(SPLIT, x.len(), 1, |r, part| {
                    sum_values_write_grads_simd(k, &x[r.clone()], &t[r], s, part)
                });
                let sum: f64 = sums.iter().sum();
                (vec![F::of(sum / self.divisor)], Shape::from(()), Some(grad))
            }
            _ => {
                let s = sum_pointwise(k, x, t);
                (vec![F::of(s / self.divisor)], Shape::from(()), None)
            }
        }
    }
}

impl<K: Elementwise> Fused2 for ForwardOp<K> {
    fn name(&self) -> &'static str {
        "fused-pointwise-loss"
    }

    fn forward<F: Real>(&self, x: Arg<'_>, t: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        let (v, s, g) = self.run(
            x.contiguous::<F>("input")?,
            t.contiguous::<F>("target")?,
            x.layout.shape(),
        );
        self.saved.keep(g.map(F::to_cpu_storage_owned));
        Ok((v, s))
    }

    fn backward(&self, x: &Tensor, t: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Grads2> {
        let scale = if self.reduction == Reduction::None {
            1.0
        } else {
            1.0 / self.divisor
        };
        super::backward2(&self.saved, x, t, grad, |wrt_target| GradOp {
            k: self.k,
            scale,
            wrt_target,
        })
    }
}

/// The backward kernel: `upstream · scale · ∂ℓ/∂x` (or `∂ℓ/∂t`); `upstream` is a scalar or has
/// the inputs' shape.
struct GradOp<K> {
    k: K,
    scale: f64,
    wrt_target: bool,
}

impl<K: Elementwise> GradOp<K> {
    fn run<F: Real>(&self, x: &[F], t: &[F], up: &[F]) -> Vec<F> {
        if self.wrt_target {
            self.run_wrt::<F, true>(x, t, up)
        } else {
            self.run_wrt::<F, false>(x, t, up)
        }
    }

    fn run_wrt<F: Real, const WRT_T: bool>(&self, x: &[F], t: &[F], up: &[F]) -> Vec<F> {
        let k = self.k;
        if up.len() == 1 && x.len() != 1 {
            let g = F::of(up[0].f64() * self.scale);
            build(SPLIT, x.len(), 1, |r, part| {
                write_grads_simd::<_, F, WRT_T>(k, &x[r.clone()], &t[r], g, part)
            })
            .0
        } else {
            let s = F::of(self.scale);
            build(SPLIT, x.len(), 1, |r, part| {
                write_grads_up_simd::<_, F, WRT_T>(k, &x[r.clone()], &t[r.clone()], &up[r], s, part)
            })
            .0
        }
    }
}

impl<K: Elementwise> Fused3 for GradOp<K> {
    fn name(&self) -> &'static str {
        "fused-pointwise-loss-grad"
    }

    fn forward<F: Real>(&self, x: Arg<'_>, t: Arg<'_>, g: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        let v = self.run(
            x.contiguous::<F>("input")?,
            t.contiguous::<F>("target")?,
            g.contiguous::<F>("grad")?,
        );
        Ok((v, x.layout.shape().clone()))
    }
}

/// Runs the elementwise kernel of `k` on already-checked `input` and `target` (same shape, same
/// dtype f32 or f64, CPU). Output: the `[...]` losses for `Reduction::None`, else 0-d: the sum,
/// divided by the element count for `Mean` (an empty mean is NaN, as PyTorch's) or by
/// `input.dim(0)` for `BatchMean` (1 for a 0-d input). The gradient w.r.t. `target` is computed
/// only when `target` is tracked.
///
/// # Errors
/// Candle's (a dtype other than f32/f64).
pub fn elementwise<K: Elementwise>(k: K, input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    let x = input.contiguous()?;
    let t = target.contiguous()?;
    let divisor = match reduction {
        Reduction::Mean => x.elem_count() as f64,
        Reduction::BatchMean if x.rank() > 0 => x.dim(0)? as f64,
        _ => 1.0,
    };
    let op = ForwardOp {
        k,
        reduction,
        divisor,
        save_grad: reduction != Reduction::None && x.track_op(),
        saved: Default::default(),
    };
    super::apply2(op, &x, &t)
}
