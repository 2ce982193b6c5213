//! Fused CPU row kernels of the cosine embedding and triplet margin losses over `[N, D]` (or
//! `[D]`) rows, through [`super::items`]: per row one pass for the sums, one (the row in cache)
//! for the gradients of the inputs that need one.
//!
//! - cosine embedding: `cos = Σx₁x₂ / (m₁m₂)`, `mₖ = √(Σxₖ² + 1e-12)`; `ℓ = 1 − cos` (`y = 1`),
//!   `max(0, cos − margin)` (`y = −1`), 0 otherwise; `∂cos/∂x₁ = x₂/(m₁m₂) − cos·x₁/m₁²` (and
//!   symmetrically for `x₂`);
//! - triplet margin (`p = 2`, no swap): `ℓ = max(0, margin + ‖u‖ − ‖v‖)` with `u = a − p + eps`,
//!   `v = a − n + eps`; `∂ℓ/∂a = h'·(u/‖u‖ − v/‖v‖)`, `∂ℓ/∂p = −h'·u/‖u‖`, `∂ℓ/∂n = h'·v/‖v‖`
//!   (`h'` the hinge's `clamp_min` rule, `u/‖u‖ = 0` at `u = 0`). A norm whose sum of squares
//!   leaves the normal range is recomputed on the vector divided by its largest magnitude, as the
//!   composite form does for every norm.

use super::items::{self, hinge_grad, sum_lanes, ItemLoss, ItemShape, Items, Out, Plan};
use super::relu;
use crate::kernel::{Arg, Real};
use crate::reduction::Reduction;
use candle_core::{Result, Shape, Tensor};
use std::mem::MaybeUninit;
use std::ops::Range;

/// `g = a·x + b·y`.
#[inline(always)]
fn axpby<F: Real>(g: &mut [MaybeUninit<F>], a: F, x: &[F], b: F, y: &[F]) {
    for ((o, &xj), &yj) in g.iter_mut().zip(x).zip(y) {
        o.write(a * xj + b * yj);
    }
}

struct Cosine<'a, F> {
    x1: &'a [F],
    x2: &'a [F],
    y: &'a [F],
    d: usize,
    margin: F,
}

impl<F: Real> Items<F> for Cosine<'_, F> {
    #[inline(always)]
    fn chunk(&self, items: Range<usize>, scale: F, out: Out<'_, F>) -> f64 {
        let d = self.d;
        let (one, zero, tiny) = (F::one(), F::zero(), F::of(1e-12));
        let Out {
            mut vals,
            grads: [mut g1, mut g2, _],
        } = out;
        let mut sum = 0.0;
        for (k, i) in items.enumerate() {
            let (x1, x2) = (&self.x1[i * d..][..d], &self.x2[i * d..][..d]);
            let [dot, s1, s2] = sum_lanes(
                d,
                #[inline(always)]
                |j| [x1[j] * x2[j], x1[j] * x1[j], x2[j] * x2[j]],
            );
            let (m1, m2) = ((s1 + tiny).sqrt(), (s2 + tiny).sqrt());
            let den = m1 * m2;
            let cos = dot / den;
            let y = self.y[i];
            let (v, dl) = if y == one {
                (one - cos, -one)
            } else if y == -one {
                (relu(cos - self.margin), hinge_grad(cos - self.margin))
            } else {
                (zero, zero)
            };
            let a = scale * dl / den;
            let b = |m: F| -(scale * dl * cos / (m * m));
            if let Some(g) = g1.as_deref_mut() {
                axpby(&mut g[k * d..][..d], a, x2, b(m1), x1);
            }
            if let Some(g) = g2.as_deref_mut() {
                axpby(&mut g[k * d..][..d], a, x1, b(m2), x2);
            }
            if let Some(o) = vals.as_deref_mut() {
                o[k].write(v);
            }
            sum += v.f64();
        }
        sum
    }
}

struct CosineOp {
    margin: f64,
}

impl ItemLoss<3> for CosineOp {
    const NAME: &'static str = "fused-cosine-embedding-loss";
    const GRADS: [bool; 3] = [true, true, false];

    fn forward<F: Real>(&self, plan: &Plan, [x1, x2, y]: [Arg<'_>; 3]) -> Result<(Vec<F>, Shape)> {
        let s = ItemShape::rows(&x1);
        let k = Cosine {
            x1: x1.contiguous::<F>("input1")?,
            x2: x2.contiguous::<F>("input2")?,
            y: y.contiguous::<F>("target")?,
            d: s.d,
            margin: F::of(self.margin),
        };
        plan.run(&k, &s)
    }
}

/// The fused cosine embedding loss of already-checked `[N, D]` or `[D]` `input1`, `input2` (not
/// empty) and their ±1 `target` (`[N]` or 0-d), one dtype: `[input1, input2, target]`.
/// Gradients flow to both inputs.
pub fn cosine_embedding(inputs: [&Tensor; 3], margin: f64, reduction: Reduction) -> Result<Tensor> {
    items::apply3(CosineOp { margin }, inputs, reduction)
}

/// `(‖v‖₂, m, ‖v/m‖₂)` from the sum of squares `s` of `v`: `m = 1` while `s` is a normal number
/// well above the underflow and finite; otherwise `m = max|v|` and the norm is recomputed on
/// `v/m`, as the composite form computes every norm (no overflow or underflow where the norm is
/// representable).
#[inline(always)]
fn norm_of<F: Real>(s: F, v: impl Fn(usize) -> F, d: usize) -> (F, F, F) {
    let tiny = F::min_positive_value() / F::epsilon();
    if s >= tiny && s <= F::max_value() {
        let r = s.sqrt();
        return (r, F::one(), r);
    }
    let m = (0..d).fold(F::zero(), |m, j| {
        let a = v(j).abs();
        if a > m || a.is_nan() {
            a
        } else {
            m
        }
    });
    if m == F::zero() || m.is_nan() {
        return (m, F::one(), m);
    }
    let s = (0..d).fold(F::zero(), |s, j| {
        let u = v(j) / m;
        s + u * u
    });
    let r = s.sqrt();
    (m * r, m, r)
}

/// `g[j] = f(u_j/mu, v_j/mv)` over a triplet's row, `u = a − p + eps`, `v = a − n + eps` (no
/// division where both `mu` and `mv` are 1).
#[inline(always)]
fn grad_row<F: Real>(g: &mut [MaybeUninit<F>], [a, p, n]: [&[F]; 3], eps: F, [mu, mv]: [F; 2], f: impl Fn(F, F) -> F) {
    if mu == F::one() && mv == F::one() {
        for (((o, &a), &p), &n) in g.iter_mut().zip(a).zip(p).zip(n) {
            o.write(f(a - p + eps, a - n + eps));
        }
    } else {
        for (((o, &a), &p), &n) in g.iter_mut().zip(a).zip(p).zip(n) {
            o.write(f((a - p + eps) / mu, (a - n + eps) / mv));
        }
    }
}

struct Triplet<'a, F> {
    a: &'a [F],
    p: &'a [F],
    n: &'a [F],
    d: usize,
    margin: F,
    eps: F,
}

impl<F: Real> Items<F> for Triplet<'_, F> {
    #[inline(always)]
    fn chunk(&self, items: Range<usize>, scale: F, out: Out<'_, F>) -> f64 {
        let (d, eps, zero) = (self.d, self.eps, F::zero());
        let Out {
            mut vals,
            grads: [mut ga, mut gp, mut gn],
        } = out;
        let mut sum = 0.0;
        for (k, i) in items.enumerate() {
            let (a, p, n) = (&self.a[i * d..][..d], &self.p[i * d..][..d], &self.n[i * d..][..d]);
            let [sp, sn] = sum_lanes(
                d,
                #[inline(always)]
                |j| {
                    let (u, v) = (a[j] - p[j] + eps, a[j] - n[j] + eps);
                    [u * u, v * v]
                },
            );
            let (dp, mp, rp) = norm_of(
                sp,
                #[inline(always)]
                |j| a[j] - p[j] + eps,
                d,
            );
            let (dn, mn, rn) = norm_of(
                sn,
                #[inline(always)]
                |j| a[j] - n[j] + eps,
                d,
            );
            let z = self.margin + dp - dn;
            let h = scale * hinge_grad(z);
            // ∂‖u‖/∂u = (u/m)/‖u/m‖, 0 at u = 0 (the norm's gradient there, as PyTorch).
            let cp = if dp == zero { zero } else { h / rp };
            let cn = if dn == zero { zero } else { h / rn };
            let (row, m) = ([a, p, n], [mp, mn]);
            if let Some(g) = ga.as_deref_mut() {
                grad_row(
                    &mut g[k * d..][..d],
                    row,
                    eps,
                    m,
                    #[inline(always)]
                    |u, v| cp * u - cn * v,
                );
            }
            if let Some(g) = gp.as_deref_mut() {
                grad_row(
                    &mut g[k * d..][..d],
                    row,
                    eps,
                    m,
                    #[inline(always)]
                    |u, _| -(cp * u),
                );
            }
            if let Some(g) = gn.as_deref_mut() {
                grad_row(
                    &mut g[k * d..][..d],
                    row,
                    eps,
                    m,
                    #[inline(always)]
                    |_, v| cn * v,
                );
            }
            let v = relu(z);
            if let Some(o) = vals.as_deref_mut() {
                o[k].write(v);
            }
            sum += v.f64();
        }
        sum
    }
}

struct TripletOp {
    margin: f64,
    eps: f64,
}

impl ItemLoss<3> for TripletOp {
    const NAME: &'static str = "fused-triplet-margin-loss";
    const GRADS: [bool; 3] = [true; 3];

    fn forward<F: Real>(&self, plan: &Plan, [a, p, n]: [Arg<'_>; 3]) -> Result<(Vec<F>, Shape)> {
        let s = ItemShape::rows(&a);
        let k = Triplet {
            a: a.contiguous::<F>("anchor")?,
            p: p.contiguous::<F>("positive")?,
            n: n.contiguous::<F>("negative")?,
            d: s.d,
            margin: F::of(self.margin),
            eps: F::of(self.eps),
        };
        plan.run(&k, &s)
    }
}

/// The fused triplet margin loss with the Euclidean distance (`p = 2`, no swap) of
/// already-checked `[N, D]` or `[D]` `[anchor, positive, negative]` (one shape and dtype, not
/// empty). Gradients flow to all three.
pub fn triplet_margin_euclidean(inputs: [&Tensor; 3], margin: f64, eps: f64, reduction: Reduction) -> Result<Tensor> {
    items::apply3(TripletOp { margin, eps }, inputs, reduction)
}
