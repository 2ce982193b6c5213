//! The driver of the fused kernels whose loss is a sum over items (elements, or rows of `d`
//! values) of up to three float inputs: Gaussian NLL (elements), multi-label soft margin and
//! multi-class margin (rows of `[N, C]`), cosine embedding and triplet margin (rows of `[N, D]`).
//!
//! One forward pass over the inputs writes, chunk by chunk of whole items, each item's loss (for
//! `Reduction::None`) or their sum (in f64), and, for every input that needs a gradient,
//! `s · ∂ℓᵢ/∂input` with `s = 1/divisor` for `Mean`, 1 otherwise. Those gradients are kept
//! ([`KeptGrads`]) and the backward multiplies them by its upstream gradient (a scalar, or one
//! value per item): no second pass over the inputs, nothing done for the usual upstream 1.

use crate::kernel::BLOCK;
use crate::kernel::{self, Arg, KeptGrads, Real, Split};
use crate::reduction::Reduction;
use candle_core::{Result, Shape, Tensor};
use std::mem::MaybeUninit;
use std::ops::Range;

/// The outputs of one chunk of items: each item's loss (`None` unless unreduced), and the
/// gradient parts (`d` values an item) of the inputs that need one.
pub(crate) struct Out<'a, F> {
    pub vals: Option<&'a mut [MaybeUninit<F>]>,
    pub grads: [Option<&'a mut [MaybeUninit<F>]>; 3],
}

/// A fused loss over items, with its inputs (the whole slices) inside.
pub(crate) trait Items<F: Real>: Sync {
    /// The items' losses over `items` (their sum in f64); writes each item's loss to `out.vals`
    /// and `scale · ∂ℓᵢ/∂input_k` to `out.grads[k]` where present (all of it: the parts start
    /// at the chunk's first item). Marked `#[inline(always)]` so that it compiles into the
    /// AVX2 copy of [`chunk_simd`].
    fn chunk(&self, items: Range<usize>, scale: F, out: Out<'_, F>) -> f64;
}

/// [`Items::chunk`] compiled for AVX2 + FMA when the CPU has them (`kernel::with_simd` written out
/// as a generic function, as the row kernels of cross-entropy: the closure form ran slower).
fn chunk_simd<F: Real, K: Items<F>>(k: &K, items: Range<usize>, scale: F, out: Out<'_, F>) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<F: Real, K: Items<F>>(k: &K, items: Range<usize>, scale: F, out: Out<'_, F>) -> f64 {
            k.chunk(items, scale, out)
        }
        if kernel::has_avx2_fma() {
            // SAFETY: the features were just detected on this CPU.
            return unsafe { avx2(k, items, scale, out) };
        }
    }
    k.chunk(items, scale, out)
}

/// The plan of one fused call: the reduction, what `Mean` divides by, which of the three float
/// inputs need a gradient, and the gradients the forward keeps.
#[derive(Debug)]
pub(crate) struct Plan {
    reduction: Reduction,
    divisor: f64,
    want: [bool; 3],
    kept: KeptGrads<3>,
}

impl Plan {
    /// A plan for `inputs` (the float inputs in order; `None` for one that takes no gradient);
    /// `Mean` divides by `divisor`.
    pub(crate) fn new(reduction: Reduction, divisor: f64, inputs: [Option<&Tensor>; 3]) -> Plan {
        Plan {
            reduction,
            divisor,
            want: inputs.map(|t| t.is_some_and(Tensor::track_op)),
            kept: KeptGrads::default(),
        }
    }

    /// Runs `k` over `n` items of `d` values: the output (each item's loss, of `item_shape`, or
    /// the reduced 0-d value); keeps the gradients, of `grad_shape`.
    ///
    /// # Errors
    /// A gradient or output that does not fit its shape (a bug).
    pub(crate) fn run<F: Real, K: Items<F>>(
        &self,
        k: &K,
        n: usize,
        d: usize,
        item_shape: &Shape,
        grad_shape: &Shape,
    ) -> Result<(Vec<F>, Shape)> {
        let none = self.reduction == Reduction::None;
        let mean = self.reduction == Reduction::Mean;
        let scale = F::of(if mean { 1.0 / self.divisor } else { 1.0 });
        let split = Split::new((Split::ELEMENTS.chunk / d.max(1)).max(1));
        let w = self.want;
        let ([vals, g0, g1, g2], sums) = kernel::build_optional(
            split,
            n,
            [1, d, d, d],
            [none, w[0], w[1], w[2]],
            |items, [v, a, b, c]| {
                chunk_simd(
                    k,
                    items,
                    scale,
                    Out {
                        vals: v,
                        grads: [a, b, c],
                    },
                )
            },
        );
        self.kept.keep([g0, g1, g2], grad_shape)?;
        let sum: f64 = sums.iter().sum();
        Ok(match vals {
            Some(v) => (v, item_shape.clone()),
            None if mean => (vec![F::of(sum / self.divisor)], Shape::from(())),
            None => (vec![F::of(sum)], Shape::from(())),
        })
    }

    /// The gradients of the three inputs for the upstream `grad`.
    ///
    /// # Errors
    /// An upstream of a shape that does not fit.
    pub(crate) fn backward(&self, grad: &Tensor) -> Result<kernel::Grads3> {
        Ok((
            self.kept.scaled(0, grad)?,
            self.kept.scaled(1, grad)?,
            self.kept.scaled(2, grad)?,
        ))
    }
}

/// `(n, d, item shape)` of `[N, D]` or `[D]` rows: their count, their length, and the shape of
/// one value per row (`[N]` or `[]`).
pub(crate) fn rows(x: &Arg<'_>) -> (usize, usize, Shape) {
    let dims = x.dims();
    let d = dims.last().copied().unwrap_or(1);
    let n = x.layout.shape().elem_count() / d.max(1);
    (n, d, Shape::from(&dims[..dims.len().saturating_sub(1)]))
}

/// The number of rows of a non-empty `[N, D]` or `[D]` tensor (what `Mean` divides by).
pub(crate) fn row_count(x: &Tensor) -> f64 {
    (x.elem_count() / x.dims().last().copied().unwrap_or(1).max(1)) as f64
}

/// Lanes of the row loops (8 f32 = one AVX2 register).
pub(crate) const L: usize = 8;

/// The lanes' sum.
#[inline(always)]
pub(crate) fn lane_sum<F: Real>(s: [F; L]) -> F {
    ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]))
}

/// `[Σ_j f(j)[0], ...]` over `j` in `0..n`: per block of [`BLOCK`] the values go to stack
/// buffers by a plain loop (which vectorises when `f` does; `f` may also write outputs at `j`),
/// then are added in [`L`] lanes. Slice the inputs `f` reads to length `n` (`&x[a..][..n]`) so
/// that their bounds checks vanish.
#[inline(always)]
pub(crate) fn sum_lanes<F: Real, const K: usize>(n: usize, mut f: impl FnMut(usize) -> [F; K]) -> [F; K] {
    let mut buf = [[F::zero(); BLOCK]; K];
    let mut lanes = [[F::zero(); L]; K];
    let mut tail = [F::zero(); K];
    let mut start = 0;
    while start < n {
        let m = BLOCK.min(n - start);
        // `j` is `f`'s argument too: a plain counted loop, which vectorises.
        #[allow(clippy::needless_range_loop)]
        for j in 0..m {
            let v = f(start + j);
            for k in 0..K {
                buf[k][j] = v[k];
            }
        }
        for k in 0..K {
            let chunks = buf[k][..m].chunks_exact(L);
            tail[k] += chunks.remainder().iter().fold(F::zero(), |a, &b| a + b);
            for c in chunks {
                for lane in 0..L {
                    lanes[k][lane] += c[lane];
                }
            }
        }
        start += m;
    }
    std::array::from_fn(|k| lane_sum(lanes[k]) + tail[k])
}

/// The derivative of the hinge `max(0, z)` with PyTorch's `clamp_min` rule ([`crate::ops::clamp`]):
/// 1 from `z = 0` on, 0 below, NaN at NaN.
#[inline(always)]
pub(crate) fn hinge_grad<F: Real>(z: F) -> F {
    let one = if z >= F::zero() { F::one() } else { F::zero() };
    if z.is_nan() {
        z
    } else {
        one
    }
}
