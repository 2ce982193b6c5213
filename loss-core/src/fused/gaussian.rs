//! Fused CPU kernel of the Gaussian NLL with `var` of the input's shape: elementwise
//! `ℓ = ½·(ln v + d²/v)` (+ `½·ln 2π` with `full`), `d = x − t`, `v = max(var, eps)`, and
//! `∂ℓ/∂x = d/v`, `∂ℓ/∂t = −d/v`, `∂ℓ/∂var = ½·(1/v − d²/v²)` (the clamp invisible to the
//! gradient, as PyTorch). One pass over the three inputs, through [`super::items`]; the check
//! that `var` holds no negative entry is made in the same pass.

use super::items::{self, ItemLoss, ItemShape, Items, Out, Plan};
use crate::kernel::{accumulate, BLOCK, LANES};
use crate::kernel::{Arg, Real};
use crate::reduction::Reduction;
use crate::LossError;
use candle_core::{Result, Shape, Tensor};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

const HALF_LN_2PI: f64 = 0.918_938_533_204_672_7;

struct Gaussian<'a, F> {
    x: &'a [F],
    t: &'a [F],
    v: &'a [F],
    eps: F,
    add: F,
    /// Set by a chunk that meets a negative variance.
    negative: &'a AtomicBool,
}

impl<F: Real> Items<F> for Gaussian<'_, F> {
    #[inline(always)]
    fn chunk(&self, items: Range<usize>, scale: F, out: Out<'_, F>) -> f64 {
        let (x, t, v) = (&self.x[items.clone()], &self.t[items.clone()], &self.v[items]);
        let Out {
            mut vals,
            grads: [mut gx, mut gt, mut gv],
        } = out;
        let half = F::of(0.5);
        let (mut acc, mut tail) = ([0.0f64; LANES], 0.0);
        let mut negative = 0u32;
        let (mut val, mut q, mut iv) = ([F::zero(); BLOCK], [F::zero(); BLOCK], [F::zero(); BLOCK]);
        for start in (0..x.len()).step_by(BLOCK) {
            let end = (start + BLOCK).min(x.len());
            let m = end - start;
            let (xb, tb, vb) = (&x[start..end], &t[start..end], &v[start..end]);
            let (val, q, iv) = (&mut val[..m], &mut q[..m], &mut iv[..m]);
            for j in 0..m {
                let var = vb[j];
                negative += (var < F::zero()) as u32;
                // max(var, eps) that keeps a NaN variance NaN (as the composite form).
                let vv = if var < self.eps { self.eps } else { var };
                let d = xb[j] - tb[j];
                let inv = F::one() / vv;
                let qj = d * inv;
                val[j] = half * (vv.fast_ln() + d * qj) + self.add;
                q[j] = qj;
                iv[j] = inv;
            }
            accumulate(val, &mut acc, &mut tail);
            if let Some(o) = vals.as_deref_mut() {
                for (o, &a) in o[start..end].iter_mut().zip(val.iter()) {
                    o.write(a);
                }
            }
            if let Some(o) = gx.as_deref_mut() {
                for (o, &a) in o[start..end].iter_mut().zip(q.iter()) {
                    o.write(scale * a);
                }
            }
            if let Some(o) = gt.as_deref_mut() {
                for (o, &a) in o[start..end].iter_mut().zip(q.iter()) {
                    o.write(-(scale * a));
                }
            }
            if let Some(o) = gv.as_deref_mut() {
                let s = half * scale;
                for ((o, &a), &b) in o[start..end].iter_mut().zip(q.iter()).zip(iv.iter()) {
                    o.write(s * (b - a * a));
                }
            }
        }
        if negative > 0 {
            self.negative.store(true, Ordering::Relaxed);
        }
        acc.iter().sum::<f64>() + tail
    }
}

struct GaussianOp {
    eps: f64,
    full: bool,
}

impl ItemLoss<3> for GaussianOp {
    const NAME: &'static str = "fused-gaussian-nll-loss";
    const GRADS: [bool; 3] = [true; 3];

    fn forward<F: Real>(&self, plan: &Plan, [x, t, v]: [Arg<'_>; 3]) -> Result<(Vec<F>, Shape)> {
        let negative = AtomicBool::new(false);
        let k = Gaussian {
            x: x.contiguous::<F>("input")?,
            t: t.contiguous::<F>("target")?,
            v: v.contiguous::<F>("var")?,
            eps: F::of(self.eps),
            add: F::of(if self.full { HALF_LN_2PI } else { 0.0 }),
            negative: &negative,
        };
        let shape = x.layout.shape();
        let out = plan.run(&k, &ItemShape::elements(&x))?;
        if negative.load(Ordering::Relaxed) {
            return Err(LossError::BadValues {
                loss: "gaussian_nll_loss",
                arg: "var",
                expected: "[0, inf) (a variance)",
                shape: shape.clone(),
            }
            .into());
        }
        Ok(out)
    }
}

/// The fused Gaussian NLL of already-checked `[input, target, var]`, all three of one shape and
/// dtype (not empty); a negative entry of `var` is the error the composite form's check gives.
pub fn gaussian_nll(inputs: [&Tensor; 3], full: bool, eps: f64, reduction: Reduction) -> Result<Tensor> {
    items::apply3(GaussianOp { eps, full }, inputs, reduction)
}
