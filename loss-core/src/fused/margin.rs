//! Fused CPU kernels of the margin family: rows of the multi-label soft margin and multi-class
//! margin losses over `[N, C]` (or `[C]`) inputs, and the elementwise margin ranking loss, through
//! [`super::items`] (one pass forward, the gradient written in it):
//!
//! - multi-label soft margin: `ℓᵢ = Σ_c w_c·((1 − t_c)·x_c + softplus(−x_c)) / C`, with
//!   `∂ℓᵢ/∂x_c = w_c·(σ(x_c) − t_c)/C` and `∂ℓᵢ/∂t_c = −w_c·x_c/C`;
//! - multi-class margin: `ℓᵢ = w_y·Σ_{c ≠ y} h_cᵖ / C` with `h_c = max(0, margin − x_y + x_c)`,
//!   `∂ℓᵢ/∂x_c = w_y·p·h_cᵖ⁻¹·[h_c' = 1]/C` for `c ≠ y` (the hinge's `clamp_min` rule) and
//!   `∂ℓᵢ/∂x_y = −Σ_{c ≠ y} ∂ℓᵢ/∂x_c`;
//! - margin ranking (elementwise over three inputs): `ℓ = max(0, −y·(x₁ − x₂) + margin)`, with
//!   `∂ℓ/∂x₁ = −y·h'`, `∂ℓ/∂x₂ = y·h'` and `∂ℓ/∂y = −(x₁ − x₂)·h'`.
//!
//! The class weights are constants here (a weight that needs a gradient takes the composite form).

use super::items::{self, hinge_grad, sum_lanes, ItemLoss, ItemShape, Items, Out, Plan};
use super::{logistic, relu, select, softmax::targets, softplus_neg};
use crate::kernel::{accumulate, BLOCK, LANES};
use crate::kernel::{Arg, Real};
use crate::reduction::Reduction;
use candle_core::{Result, Shape, Tensor};
use std::ops::Range;

/// The weights as `F` (all 1 for none).
fn weights<F: Real>(w: &Option<Vec<f64>>, c: usize) -> Vec<F> {
    w.as_ref()
        .map_or_else(|| vec![F::one(); c], |w| w.iter().map(|&v| F::of(v)).collect())
}

struct Multilabel<'a, F> {
    x: &'a [F],
    t: &'a [F],
    w: &'a [F],
    c: usize,
}

impl<F: Real> Items<F> for Multilabel<'_, F> {
    #[inline(always)]
    fn chunk(&self, items: Range<usize>, scale: F, out: Out<'_, F>) -> f64 {
        let (c, w) = (self.c, &self.w[..self.c]);
        let inv_c = F::one() / F::of(c as f64);
        let s = scale * inv_c;
        let Out {
            mut vals,
            grads: [mut gx, mut gt, _],
        } = out;
        let mut sum = 0.0;
        for (k, i) in items.enumerate() {
            let (x, t) = (&self.x[i * c..][..c], &self.t[i * c..][..c]);
            let [v] = match gx.as_deref_mut() {
                Some(g) => {
                    let g = &mut g[k * c..][..c];
                    sum_lanes(
                        c,
                        #[inline(always)]
                        |j| {
                            let (sig, _, sp) = logistic(x[j]);
                            g[j].write(s * w[j] * (sig - t[j]));
                            [w[j] * ((F::one() - t[j]) * x[j] + sp)]
                        },
                    )
                }
                None => sum_lanes(
                    c,
                    #[inline(always)]
                    |j| [w[j] * ((F::one() - t[j]) * x[j] + softplus_neg(x[j]))],
                ),
            };
            if let Some(g) = gt.as_deref_mut() {
                for ((o, &xj), &wj) in g[k * c..][..c].iter_mut().zip(x).zip(w) {
                    o.write(-(s * wj * xj));
                }
            }
            let v = v * inv_c;
            if let Some(o) = vals.as_deref_mut() {
                o[k].write(v);
            }
            sum += v.f64();
        }
        sum
    }
}

struct MultilabelOp {
    weight: Option<Vec<f64>>,
}

impl ItemLoss<2> for MultilabelOp {
    const NAME: &'static str = "fused-multilabel-soft-margin-loss";
    const GRADS: [bool; 2] = [true, true];

    fn forward<F: Real>(&self, plan: &Plan, [x, t]: [Arg<'_>; 2]) -> Result<(Vec<F>, Shape)> {
        let s = ItemShape::rows(&x);
        let w = weights::<F>(&self.weight, s.d);
        let (x, t) = (x.contiguous::<F>("input")?, t.contiguous::<F>("target")?);
        plan.run(&Multilabel { x, t, w: &w, c: s.d }, &s)
    }
}

/// The fused multi-label soft margin loss of already-checked `[N, C]` or `[C]` `input` and
/// `target` (one shape and dtype, not empty) with constant class weights.
pub fn multilabel_soft_margin(
    input: &Tensor,
    target: &Tensor,
    weight: Option<Vec<f64>>,
    reduction: Reduction,
) -> Result<Tensor> {
    items::apply2(MultilabelOp { weight }, [input, target], reduction)
}

/// `(hᵖ, p·hᵖ⁻¹·h')` of the hinge `h = max(0, z)` (NaN kept), 0 where not `keep` (the target
/// class).
#[inline(always)]
fn margin_term<F: Real>(z: F, keep: bool, squared: bool) -> (F, F) {
    let h = relu(z);
    let (v, d) = if squared {
        (h * h, F::of(2.0) * h * hinge_grad(z))
    } else {
        (h, hinge_grad(z))
    };
    (select(keep, v, F::zero()), select(keep, d, F::zero()))
}

struct MultiMargin<'a, F> {
    x: &'a [F],
    y: &'a [i64],
    w: &'a [F],
    c: usize,
    margin: F,
    squared: bool,
}

impl<F: Real> Items<F> for MultiMargin<'_, F> {
    #[inline(always)]
    fn chunk(&self, items: Range<usize>, scale: F, out: Out<'_, F>) -> f64 {
        let c = self.c;
        let inv_c = F::one() / F::of(c as f64);
        let Out {
            mut vals,
            grads: [mut gx, _, _],
        } = out;
        let mut sum = 0.0;
        for (k, i) in items.enumerate() {
            let x = &self.x[i * c..][..c];
            let y = self.y[i] as usize;
            let a = self.margin - x[y];
            let wy = self.w[y];
            let [v] = match gx.as_deref_mut() {
                Some(g) => {
                    let g = &mut g[k * c..][..c];
                    let coef = scale * wy * inv_c;
                    let [v, gsum] = sum_lanes(
                        c,
                        #[inline(always)]
                        |j| {
                            let (v, d) = margin_term(a + x[j], j != y, self.squared);
                            let gj = coef * d;
                            g[j].write(gj);
                            [v, gj]
                        },
                    );
                    g[y].write(-gsum);
                    [v]
                }
                None => sum_lanes(
                    c,
                    #[inline(always)]
                    |j| [margin_term(a + x[j], j != y, self.squared).0],
                ),
            };
            let v = v * wy * inv_c;
            if let Some(o) = vals.as_deref_mut() {
                o[k].write(v);
            }
            sum += v.f64();
        }
        sum
    }
}

struct MultiMarginOp {
    p: u32,
    margin: f64,
    weight: Option<Vec<f64>>,
}

impl ItemLoss<2> for MultiMarginOp {
    const NAME: &'static str = "fused-multi-margin-loss";
    const GRADS: [bool; 2] = [true, false];

    fn forward<F: Real>(&self, plan: &Plan, [x, y]: [Arg<'_>; 2]) -> Result<(Vec<F>, Shape)> {
        let s = ItemShape::rows(&x);
        let w = weights::<F>(&self.weight, s.d);
        let y = targets(y.storage, y.layout)?;
        let k = MultiMargin {
            x: x.contiguous::<F>("input")?,
            y: &y,
            w: &w,
            c: s.d,
            margin: F::of(self.margin),
            squared: self.p == 2,
        };
        plan.run(&k, &s)
    }
}

/// The fused multi-class margin loss of an already-checked `[N, C]` or `[C]` `input` (not empty)
/// and its class indices `target` (`[N]` or 0-d, each in `[0, C)`), `p` 1 or 2, constant class
/// weights.
pub fn multi_margin(
    input: &Tensor,
    target: &Tensor,
    p: u32,
    margin: f64,
    weight: Option<Vec<f64>>,
    reduction: Reduction,
) -> Result<Tensor> {
    items::apply2(MultiMarginOp { p, margin, weight }, [input, target], reduction)
}

/// Margin ranking: `ℓ = max(0, z)`, `z = −y·(x₁ − x₂) + margin`, with `h' = [z ≥ 0]` (the
/// hinge's `clamp_min` rule, NaN kept): `∂ℓ/∂x₁ = −y·h'`, `∂ℓ/∂x₂ = y·h'`,
/// `∂ℓ/∂y = −(x₁ − x₂)·h'`.
struct Ranking<'a, F> {
    a: &'a [F],
    b: &'a [F],
    y: &'a [F],
    margin: F,
}

impl<F: Real> Items<F> for Ranking<'_, F> {
    #[inline(always)]
    fn chunk(&self, items: Range<usize>, scale: F, out: Out<'_, F>) -> f64 {
        let (a, b, y) = (&self.a[items.clone()], &self.b[items.clone()], &self.y[items]);
        let Out {
            mut vals,
            grads: [mut ga, mut gb, mut gy],
        } = out;
        let (mut acc, mut tail) = ([0.0f64; LANES], 0.0);
        let (mut val, mut g) = ([F::zero(); BLOCK], [F::zero(); BLOCK]);
        for start in (0..a.len()).step_by(BLOCK) {
            let end = (start + BLOCK).min(a.len());
            let m = end - start;
            let (ab, bb, yb) = (&a[start..end], &b[start..end], &y[start..end]);
            let (val, g) = (&mut val[..m], &mut g[..m]);
            for j in 0..m {
                let z = self.margin - yb[j] * (ab[j] - bb[j]);
                val[j] = relu(z);
                g[j] = scale * hinge_grad(z);
            }
            accumulate(val, &mut acc, &mut tail);
            if let Some(o) = vals.as_deref_mut() {
                for (o, &v) in o[start..end].iter_mut().zip(val.iter()) {
                    o.write(v);
                }
            }
            if let Some(o) = ga.as_deref_mut() {
                for ((o, &h), &t) in o[start..end].iter_mut().zip(g.iter()).zip(yb) {
                    o.write(-(t * h));
                }
            }
            if let Some(o) = gb.as_deref_mut() {
                for ((o, &h), &t) in o[start..end].iter_mut().zip(g.iter()).zip(yb) {
                    o.write(t * h);
                }
            }
            if let Some(o) = gy.as_deref_mut() {
                for (j, (o, &h)) in o[start..end].iter_mut().zip(g.iter()).enumerate() {
                    o.write(-((ab[j] - bb[j]) * h));
                }
            }
        }
        acc.iter().sum::<f64>() + tail
    }
}

struct RankingOp {
    margin: f64,
}

impl ItemLoss<3> for RankingOp {
    const NAME: &'static str = "fused-margin-ranking-loss";
    const GRADS: [bool; 3] = [true; 3];

    fn forward<F: Real>(&self, plan: &Plan, [a, b, y]: [Arg<'_>; 3]) -> Result<(Vec<F>, Shape)> {
        let k = Ranking {
            a: a.contiguous::<F>("input1")?,
            b: b.contiguous::<F>("input2")?,
            y: y.contiguous::<F>("target")?,
            margin: F::of(self.margin),
        };
        plan.run(&k, &ItemShape::elements(&a))
    }
}

/// The fused margin ranking loss of already-checked `[input1, input2, target]`, all three of one
/// shape and float dtype (not empty); gradients to each input that tracks.
pub fn margin_ranking(inputs: [&Tensor; 3], margin: f64, reduction: Reduction) -> Result<Tensor> {
    items::apply3(RankingOp { margin }, inputs, reduction)
}
