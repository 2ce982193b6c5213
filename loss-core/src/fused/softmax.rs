//! Fused CPU kernel of cross-entropy over the rows of `[N, C]` logits with class-index targets.
//!
//! Forward: per row one pass for the maximum and one for `Σ exp` (the row stays in cache), giving
//! `lse`, then `ℓᵢ = (1 − ε)·(−w_y·(x_y − lse)) + (ε/C)·(−Σ_c w_c·(x_c − lse))`, reduced in f64.
//! Backward: per row `∂ℓᵢ/∂x_c = (1 − ε)·w_y·(p_c − [c = y]) + (ε/C)·(W·p_c − w_c)` with
//! `p = softmax(x)` recomputed from the row and `W = Σ_c w_c`, times the upstream gradient over
//! the mean's denominator. Only the inputs are kept for the backward.

use super::{fill, slice, sum_f64, with_simd, Real, PARALLEL_THRESHOLD};
use crate::reduction::Reduction;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// The options of one fused cross-entropy call (already validated).
#[derive(Debug, Clone)]
pub struct CrossEntropyRows {
    /// Per-class weights (`None`: all 1).
    pub weight: Option<Vec<f64>>,
    /// Target value to skip.
    pub ignore_index: i64,
    /// Label smoothing ε in `[0, 1]`.
    pub label_smoothing: f64,
    /// `None`, `Mean` or `Sum`.
    pub reduction: Reduction,
}

/// `lse = max + ln Σ exp(x − max)` of a row (NaN if the row holds a NaN), with eight
/// independent lanes for the maximum and the sum so that the loops vectorise.
#[inline(always)]
fn row_lse<F: Real>(row: &[F]) -> F {
    const L: usize = 8;
    let chunks = row.chunks_exact(L);
    let rest = chunks.remainder();
    let mut m = [F::neg_infinity(); L];
    for c in chunks.clone() {
        for k in 0..L {
            m[k] = m[k].max(c[k]);
        }
    }
    let mx = rest.iter().chain(m.iter()).fold(F::neg_infinity(), |a, &b| a.max(b));
    let shift = if mx.is_finite() { mx } else { F::zero() };
    let mut s = [F::zero(); L];
    for c in chunks {
        for k in 0..L {
            s[k] = s[k] + (c[k] - shift).fast_exp();
        }
    }
    let tail = rest.iter().fold(F::zero(), |a, &v| a + (v - shift).fast_exp());
    shift + (s.iter().fold(F::zero(), |a, &b| a + b) + tail).ln()
}

fn targets(s: &CpuStorage, l: &Layout) -> Result<Vec<i64>> {
    Ok(match s {
        CpuStorage::I64(v) => slice(v, l, "target")?.to_vec(),
        CpuStorage::U32(v) => slice(v, l, "target")?.iter().map(|&x| x as i64).collect(),
        CpuStorage::U8(v) => slice(v, l, "target")?.iter().map(|&x| x as i64).collect(),
        _ => bail!("fused cross_entropy: class-index targets expected"),
    })
}

impl CrossEntropyRows {
    fn w(&self, c: usize) -> f64 {
        self.weight.as_ref().map_or(1.0, |w| w[c])
    }

    fn total_weight(&self, classes: usize) -> f64 {
        self.weight.as_ref().map_or(classes as f64, |w| w.iter().sum())
    }

    /// The per-row loss (0 for an ignored row).
    #[inline(always)]
    fn row_loss<F: Real>(&self, row: &[F], y: i64) -> f64 {
        if y == self.ignore_index {
            return 0.0;
        }
        let lse = row_lse(row).to_f64().unwrap_or(f64::NAN);
        let eps = self.label_smoothing;
        let nll = -self.w(y as usize) * (row[y as usize].to_f64().unwrap_or(f64::NAN) - lse);
        if eps == 0.0 {
            return nll;
        }
        let c = row.len();
        let wx: f64 = row
            .iter()
            .enumerate()
            .map(|(k, &v)| self.w(k) * v.to_f64().unwrap_or(f64::NAN))
            .sum();
        let smooth = -(wx - self.total_weight(c) * lse);
        (1.0 - eps) * nll + eps / c as f64 * smooth
    }

    /// The denominator of the mean: `Σ_{kept} w_y`.
    fn denominator(&self, y: &[i64]) -> f64 {
        y.iter()
            .filter(|&&v| v != self.ignore_index)
            .map(|&v| self.w(v as usize))
            .sum()
    }

    /// Writes `g · ∂ℓᵢ/∂x` of one row into `out`.
    #[inline(always)]
    fn row_grad<F: Real>(&self, row: &[F], y: i64, g: f64, out: &mut [F]) {
        if y == self.ignore_index || g == 0.0 {
            out.iter_mut().for_each(|o| *o = F::zero());
            return;
        }
        let c = row.len();
        let lse = row_lse(row);
        let eps = self.label_smoothing;
        let wy = self.w(y as usize);
        // g·[(1 − ε)·w_y·p_c + (ε/C)·W·p_c] − g·(ε/C)·w_c − g·(1 − ε)·w_y·[c = y]
        let a = F::from(g * ((1.0 - eps) * wy + eps / c as f64 * self.total_weight(c))).unwrap();
        match &self.weight {
            None => {
                let b = F::from(g * eps / c as f64).unwrap();
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = a * (v - lse).fast_exp() - b;
                }
            }
            Some(w) => {
                for ((o, &v), &wc) in out.iter_mut().zip(row).zip(w) {
                    *o = a * (v - lse).fast_exp() - F::from(g * eps / c as f64 * wc).unwrap();
                }
            }
        }
        let yi = y as usize;
        out[yi] = out[yi] - F::from(g * (1.0 - eps) * wy).unwrap();
    }
}

struct ForwardOp(CrossEntropyRows);

impl ForwardOp {
    fn run<F: Real>(&self, x: &[F], y: &[i64], n: usize, c: usize) -> (Vec<F>, Shape) {
        let o = &self.0;
        match o.reduction {
            Reduction::None => {
                let mut out = vec![F::zero(); n];
                let per_row = |i: usize| F::from(o.row_loss(&x[i * c..(i + 1) * c], y[i])).unwrap();
                if n * c >= PARALLEL_THRESHOLD {
                    out.par_iter_mut().enumerate().for_each(|(i, v)| *v = per_row(i));
                } else {
                    fill(&mut out, per_row);
                }
                (out, Shape::from(n))
            }
            r => {
                let s = if n * c >= PARALLEL_THRESHOLD {
                    (0..n)
                        .into_par_iter()
                        .map(|i| o.row_loss(&x[i * c..(i + 1) * c], y[i]))
                        .sum()
                } else {
                    sum_f64(n, |i| o.row_loss(&x[i * c..(i + 1) * c], y[i]))
                };
                // A zero denominator gives NaN (0/0 as PyTorch), also when label smoothing made
                // the sum non-zero (PyTorch adds the NaN of its NLL term).
                let v = match r {
                    Reduction::Mean => {
                        let den = o.denominator(y);
                        if den == 0.0 {
                            f64::NAN
                        } else {
                            s / den
                        }
                    }
                    _ => s,
                };
                (vec![F::from(v).unwrap()], Shape::from(()))
            }
        }
    }
}

impl CustomOp2 for ForwardOp {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c) = l1.shape().dims2()?;
        let y = targets(s2, l2)?;
        match s1 {
            CpuStorage::F32(x) => {
                let (v, s) = self.run(slice(x, l1, "input")?, &y, n, c);
                Ok((CpuStorage::F32(v), s))
            }
            CpuStorage::F64(x) => {
                let (v, s) = self.run(slice(x, l1, "input")?, &y, n, c);
                Ok((CpuStorage::F64(v), s))
            }
            _ => bail!("fused cross_entropy: f32 or f64 logits expected"),
        }
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = x.apply_op3_no_bwd(y, &grad.contiguous()?, &GradOp(self.0.clone()))?;
        Ok((Some(g), None))
    }
}

struct GradOp(CrossEntropyRows);

impl GradOp {
    fn run<F: Real>(&self, x: &[F], y: &[i64], up: &[F], n: usize, c: usize) -> Vec<F> {
        let o = &self.0;
        // A zero denominator (every target ignored or of weight 0) makes the mean NaN; its
        // gradient is that of the sum, as the composite path's `reduce_weighted_mean` (all zero
        // unless label smoothing spreads weight onto other classes), never `0 · inf = NaN`.
        let den = o.denominator(y);
        let scale = if o.reduction == Reduction::Mean && den != 0.0 {
            1.0 / den
        } else {
            1.0
        };
        let up_at = |i: usize| {
            let u = if o.reduction == Reduction::None { up[i] } else { up[0] };
            u.to_f64().unwrap_or(f64::NAN) * scale
        };
        let mut out = vec![F::zero(); n * c];
        let row =
            |(i, o_row): (usize, &mut [F])| with_simd(|| o.row_grad(&x[i * c..(i + 1) * c], y[i], up_at(i), o_row));
        if n * c >= PARALLEL_THRESHOLD {
            out.par_chunks_mut(c.max(1)).enumerate().for_each(row);
        } else {
            out.chunks_mut(c.max(1)).enumerate().for_each(row);
        }
        out
    }
}

impl CustomOp3 for GradOp {
    fn name(&self) -> &'static str {
        "fused-cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c) = l1.shape().dims2()?;
        let y = targets(s2, l2)?;
        let shape = l1.shape().clone();
        match (s1, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => Ok((
                CpuStorage::F32(self.run(slice(x, l1, "input")?, &y, slice(g, l3, "grad")?, n, c)),
                shape,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(g)) => Ok((
                CpuStorage::F64(self.run(slice(x, l1, "input")?, &y, slice(g, l3, "grad")?, n, c)),
                shape,
            )),
            _ => bail!("fused cross_entropy: f32 or f64 logits expected"),
        }
    }
}

/// Runs the fused cross-entropy on already-validated `[N, C]` logits and `[N]` class indices
/// (every index in `[0, C)` or equal to `ignore_index`). Output `[N]` or 0-d.
pub fn cross_entropy_rows(input: &Tensor, target: &Tensor, opts: CrossEntropyRows) -> Result<Tensor> {
    input.contiguous()?.apply_op2(&target.contiguous()?, ForwardOp(opts))
}
