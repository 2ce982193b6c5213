//! The driver of the fused kernels whose loss is a sum over items (elements, or rows of `d`
//! values) of up to three float inputs: Gaussian NLL (elements), multi-label soft margin and
//! multi-class margin (rows of `[N, C]`), cosine embedding and triplet margin (rows of `[N, D]`).
//!
//! One forward pass over the inputs writes, chunk by chunk of whole items, each item's loss (for
//! `Reduction::None`) or their sum (in f64), and, for every input that needs a gradient,
//! `s · ∂ℓᵢ/∂input` with `s = 1/n` for `Mean` over `n` items, 1 otherwise. Those gradients are kept
//! ([`KeptGrads`]) and the backward multiplies them by its upstream gradient (a scalar, or one
//! value per item): no second pass over the inputs, nothing done for the usual upstream 1.
//!
//! A loss implements [`Items`] (the chunk loop) and [`ItemLoss`] (its name, and the forward that
//! reads the arguments and runs [`Plan::run`]), and is applied with [`apply2`] or [`apply3`]: the
//! driver writes the op, its plan and its backward.

use crate::kernel::BLOCK;
use crate::kernel::{self, Arg, Fused2, Fused3, Grads2, KeptGrads, Real, Split};
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

/// [`Items::chunk`] compiled for AVX2 + FMA when the CPU has them. Written out rather than through
/// `simd_entry!`, whose `#[inline(always)]` entry, inlined into the driver, made
/// `multi_margin_loss` [10000, 100] 9 % slower.
fn chunk_simd<F: Real, K: Items<F>>(k: &K, items: Range<usize>, scale: F, out: Out<'_, F>) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<F: Real, K: Items<F>>(k: &K, items: Range<usize>, scale: F, out: Out<'_, F>) -> f64 {
            k.chunk(items, scale, out)
        }
        if crate::kernel::has_avx2_fma() {
            // SAFETY: the features were just detected on this CPU.
            return unsafe { avx2(k, items, scale, out) };
        }
    }
    k.chunk(items, scale, out)
}

/// A loss of the item driver over `N` tensors: its name, and the forward that reads the
/// arguments, builds its [`Items`] and runs them through the plan ([`Plan::run`]). The driver
/// makes it an op ([`apply2`], [`apply3`]) whose backward is the plan's kept gradients.
pub(crate) trait ItemLoss<const N: usize>: Send + Sync + 'static {
    /// The op's name.
    const NAME: &'static str;
    /// Which arguments take a gradient (where they are tracked).
    const GRADS: [bool; N];
    /// The output (each item's loss or the reduced value) for the dtype `F` of the arguments.
    ///
    /// # Errors
    /// A strided or mistyped argument; what the loss rejects.
    fn forward<F: Real>(&self, plan: &Plan, args: [Arg<'_>; N]) -> Result<(Vec<F>, Shape)>;
}

/// An [`ItemLoss`] with its [`Plan`]: a [`Fused2`] or [`Fused3`] of the kernel layer.
struct Driven<K> {
    k: K,
    plan: Plan,
}

impl<K: ItemLoss<2>> Fused2 for Driven<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn forward<F: Real>(&self, a: Arg<'_>, b: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        self.k.forward(&self.plan, [a, b])
    }

    fn backward(&self, _: &Tensor, _: &Tensor, _: &Tensor, grad: &Tensor) -> Result<Grads2> {
        let (ga, gb, _) = self.plan.backward(grad)?;
        Ok((ga, gb))
    }
}

impl<K: ItemLoss<3>> Fused3 for Driven<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn forward<F: Real>(&self, a: Arg<'_>, b: Arg<'_>, c: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        self.k.forward(&self.plan, [a, b, c])
    }

    fn backward(&self, _: &Tensor, _: &Tensor, _: &Tensor, _: &Tensor, grad: &Tensor) -> Result<kernel::Grads3> {
        self.plan.backward(grad)
    }
}

/// Applies the two-tensor item loss `k` to already-checked CPU `inputs` (made contiguous here).
pub(crate) fn apply2<K: ItemLoss<2>>(k: K, [a, b]: [&Tensor; 2], reduction: Reduction) -> Result<Tensor> {
    let (a, b) = (a.contiguous()?, b.contiguous()?);
    let plan = Plan::new(reduction, [&a, &b], K::GRADS);
    kernel::apply2(Driven { k, plan }, &a, &b)
}

/// Applies the three-tensor item loss `k` to already-checked CPU `inputs`, as [`apply2`].
pub(crate) fn apply3<K: ItemLoss<3>>(k: K, [a, b, c]: [&Tensor; 3], reduction: Reduction) -> Result<Tensor> {
    let (a, b, c) = (a.contiguous()?, b.contiguous()?, c.contiguous()?);
    let plan = Plan::new(reduction, [&a, &b, &c], K::GRADS);
    kernel::apply3(Driven { k, plan }, &a, &b, &c)
}

/// The items of one call: `n` items of `d` values, the shape of one value per item (the
/// unreduced output) and that of the gradients (the first argument's).
pub(crate) struct ItemShape {
    /// The number of items.
    pub n: usize,
    /// Values an item.
    pub d: usize,
    item: Shape,
    grad: Shape,
}

impl ItemShape {
    /// The `[N, D]` or `[D]` rows of `x`: `[N]` or `[]` values.
    pub(crate) fn rows(x: &Arg<'_>) -> ItemShape {
        let dims = x.dims();
        let d = dims.last().copied().unwrap_or(1);
        ItemShape {
            n: x.layout.shape().elem_count() / d.max(1),
            d,
            item: Shape::from(&dims[..dims.len().saturating_sub(1)]),
            grad: x.layout.shape().clone(),
        }
    }

    /// The elements of `x`, one value each.
    pub(crate) fn elements(x: &Arg<'_>) -> ItemShape {
        let shape = x.layout.shape();
        ItemShape {
            n: shape.elem_count(),
            d: 1,
            item: shape.clone(),
            grad: shape.clone(),
        }
    }
}

/// The plan of one fused call: the reduction (`Mean` divides by the number of items), which of
/// the three float inputs need a gradient, and the gradients the forward keeps.
#[derive(Debug)]
pub(crate) struct Plan {
    reduction: Reduction,
    want: [bool; 3],
    kept: KeptGrads<3>,
}

impl Plan {
    /// A plan: input `i` gets a gradient where `grads[i]` and it is tracked.
    fn new<const N: usize>(reduction: Reduction, inputs: [&Tensor; N], grads: [bool; N]) -> Plan {
        let mut want = [false; 3];
        for (w, (t, g)) in want.iter_mut().zip(inputs.into_iter().zip(grads)) {
            *w = g && t.track_op();
        }
        Plan {
            reduction,
            want,
            kept: KeptGrads::default(),
        }
    }

    /// Runs `k` over the items `s`: the output (each item's loss, of `s`'s item shape, or the
    /// reduced 0-d value); keeps the gradients.
    ///
    /// # Errors
    /// A gradient or output that does not fit its shape (a bug).
    pub(crate) fn run<F: Real, K: Items<F>>(&self, k: &K, s: &ItemShape) -> Result<(Vec<F>, Shape)> {
        let (n, d) = (s.n, s.d);
        let none = self.reduction == Reduction::None;
        let mean = self.reduction == Reduction::Mean;
        let divisor = n as f64;
        let scale = F::of(if mean { 1.0 / divisor } else { 1.0 });
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
        self.kept.keep([g0, g1, g2], &s.grad)?;
        let sum: f64 = sums.iter().sum();
        Ok(match vals {
            Some(v) => (v, s.item.clone()),
            None if mean => (vec![F::of(sum / divisor)], Shape::from(())),
            None => (vec![F::of(sum)], Shape::from(())),
        })
    }

    /// The gradients of the three inputs for the upstream `grad`.
    ///
    /// # Errors
    /// An upstream of a shape that does not fit.
    fn backward(&self, grad: &Tensor) -> Result<kernel::Grads3> {
        Ok((
            self.kept.scaled(0, grad)?,
            self.kept.scaled(1, grad)?,
            self.kept.scaled(2, grad)?,
        ))
    }
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
