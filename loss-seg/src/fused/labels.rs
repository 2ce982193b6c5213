//! The overlap sums of [`super::OverlapForm::SoftmaxLabels`]: the channel softmax `p` of logits
//! `x` `[N, C, S]` against the one-hot `t` of class labels `[N, S]`, per (sample, class)
//! `(Σ |p − t|, Σ p, Σ t)` over the pixels whose label is not `ignore` (smp's multiclass Jaccard
//! sums), in one pass that also writes the softmax (kept for the backward); the backward applies
//! `∂/∂x_c = p_c (d_c − Σ_k p_k d_k)`, `d_c = g_P + g_D·sign(p_c − t_c)` (`sign(0) = 0`, as the
//! composite form's `abs`), in one more pass (recomputing the softmax when none was kept: a
//! second backward through the same graph). Sums in the input's dtype per block of
//! [`BLOCK`] columns, added in f64.

use super::{for_each_column_chunk, LANES};
use loss_core::kernel::{self, with_simd, Real};
use std::mem::MaybeUninit;

/// Columns whose softmax is held at once.
const BLOCK: usize = 256;

/// The inputs: logits `x` `[N, C, S]`, labels `y` `[N, S]` as floats, and the ignored label.
#[derive(Clone, Copy)]
pub(super) struct Labels<'a, F> {
    pub x: &'a [F],
    pub y: &'a [F],
    pub classes: usize,
    pub len: usize,
    pub ignore: Option<F>,
}

impl<F: Real> Labels<'_, F> {
    /// The softmax over the channels of columns `s0..s0 + w` of `sample` into `p` (`C` rows of
    /// [`BLOCK`]) and the pixels' weights (1, or 0 where ignored) into `keep`.
    /// With `probs`, `x` already holds the softmax: it is copied.
    #[inline(always)]
    fn softmax(self, sample: usize, s0: usize, w: usize, p: &mut [F], keep: &mut [F; BLOCK], probs: bool) {
        let (c, len) = (self.classes, self.len);
        let base = sample * c * len + s0;
        let labels = &self.y[sample * len + s0..][..w];
        for (k, &l) in keep[..w].iter_mut().zip(labels) {
            *k = if Some(l) == self.ignore { F::zero() } else { F::one() };
        }
        if probs {
            for k in 0..c {
                p[k * BLOCK..][..w].copy_from_slice(&self.x[base + k * len..][..w]);
            }
            return;
        }
        let mut max = [F::zero(); BLOCK];
        max[..w].copy_from_slice(&self.x[base..base + w]);
        for k in 1..c {
            for (m, &v) in max[..w].iter_mut().zip(&self.x[base + k * len..][..w]) {
                // A NaN (not equal to itself) wins, so that it propagates.
                if v > *m || v.is_nan() {
                    *m = v;
                }
            }
        }
        let mut sum = [F::zero(); BLOCK];
        for k in 0..c {
            let row = &mut p[k * BLOCK..][..w];
            for ((e, &v), (s, &m)) in row
                .iter_mut()
                .zip(&self.x[base + k * len..][..w])
                .zip(sum.iter_mut().zip(&max))
            {
                *e = (v - m).fast_exp();
                *s += *e;
            }
        }
        for s in &mut sum[..w] {
            *s = F::one() / *s;
        }
        for k in 0..c {
            for (e, &s) in p[k * BLOCK..][..w].iter_mut().zip(&sum) {
                *e *= s;
            }
        }
    }

    /// `[(Σ |p − t|, Σ p, Σ t); C]` of the columns `s0..` of `sample` that `rows` (its `C` row
    /// pieces) cover; writes the softmax into `rows`.
    #[inline(always)]
    fn span(self, sample: usize, s0: usize, rows: &mut [&mut [MaybeUninit<F>]]) -> Vec<[f64; 3]> {
        let c = self.classes;
        let width = rows[0].len();
        let mut out = vec![[0f64; 3]; c];
        let mut p = vec![F::zero(); c * BLOCK];
        let mut keep = [F::zero(); BLOCK];
        for b0 in (0..width).step_by(BLOCK) {
            let w = BLOCK.min(width - b0);
            self.softmax(sample, s0 + b0, w, &mut p, &mut keep, false);
            for (k, row) in rows.iter_mut().enumerate() {
                for (o, &v) in row[b0..b0 + w].iter_mut().zip(&p[k * BLOCK..][..w]) {
                    o.write(v);
                }
            }
            let labels = &self.y[sample * self.len + s0 + b0..][..w];
            for (k, o) in out.iter_mut().enumerate() {
                let class = F::of(k as f64);
                // The three terms of one pixel.
                let terms = |pj: F, kj: F, lj: F| {
                    let pk = pj * kj;
                    let t = if lj == class { kj } else { F::zero() };
                    [(pk - t).abs(), pk, t]
                };
                let mut acc = [[F::zero(); LANES]; 3];
                let pc = p[k * BLOCK..][..w].chunks_exact(LANES);
                let (kc, lc) = (keep[..w].chunks_exact(LANES), labels.chunks_exact(LANES));
                let rest = pc.remainder().iter().zip(kc.remainder()).zip(lc.remainder());
                for ((pa, ka), la) in pc.zip(kc).zip(lc) {
                    for i in 0..LANES {
                        let v = terms(pa[i], ka[i], la[i]);
                        for (a, v) in acc.iter_mut().zip(v) {
                            a[i] += v;
                        }
                    }
                }
                for (o, lanes) in o.iter_mut().zip(&acc) {
                    *o += lanes.iter().map(|v| v.f64()).sum::<f64>();
                }
                for ((&pj, &kj), &lj) in rest {
                    for (o, v) in o.iter_mut().zip(terms(pj, kj, lj)) {
                        *o += v.f64();
                    }
                }
            }
        }
        out
    }
}

/// The sums `[N, C, 3]` (see the module docs) and the softmax `[N, C, S]`.
pub(super) fn forward<F: Real>(l: Labels<'_, F>, samples: usize) -> (Vec<F>, Vec<F>) {
    let c = l.classes;
    let mut spans = Vec::new();
    let probs = kernel::uninit_vec(l.x.len(), |out| {
        spans = for_each_column_chunk(out, c, l.len, |sample, s0, rows| {
            with_simd(
                #[inline(always)]
                || (sample, l.span(sample, s0, rows)),
            )
        });
    });
    let mut sums = vec![0f64; samples * c * 3];
    for (sample, span) in spans {
        for (k, s) in span.iter().enumerate() {
            for m in 0..3 {
                sums[(sample * c + k) * 3 + m] += s[m];
            }
        }
    }
    (sums.into_iter().map(F::of).collect(), probs)
}

/// The gradient w.r.t. `x` given the upstream gradient `g` `[N, C, 3]` of the sums; with
/// `probs`, `l.x` holds the softmax kept by [`forward`] (else the logits).
pub(super) fn backward<F: Real>(l: Labels<'_, F>, g: &[F], probs: bool) -> Vec<F> {
    let (c, len) = (l.classes, l.len);
    kernel::uninit_vec(l.x.len(), |out| {
        for_each_column_chunk(out, c, len, |sample, s0, rows| {
            backward_span(l, g, probs, sample, s0, rows)
        });
    })
}

/// [`backward`] of columns `s0..s0 + width` of `sample` into its `C` row pieces `rows` (each
/// written in full).
fn backward_span<F: Real>(
    l: Labels<'_, F>,
    g: &[F],
    probs: bool,
    sample: usize,
    s0: usize,
    rows: &mut [&mut [MaybeUninit<F>]],
) {
    let (c, len) = (l.classes, l.len);
    {
        with_simd(
            #[inline(always)]
            || {
                let mut p = vec![F::zero(); c * BLOCK];
                let mut d = vec![F::zero(); c * BLOCK];
                let mut keep = [F::zero(); BLOCK];
                let width = rows[0].len();
                for b0 in (0..width).step_by(BLOCK) {
                    let w = BLOCK.min(width - b0);
                    l.softmax(sample, s0 + b0, w, &mut p, &mut keep, probs);
                    let labels = &l.y[sample * len + s0 + b0..][..w];
                    let mut dot = [F::zero(); BLOCK];
                    for k in 0..c {
                        let (gd, gp) = (g[(sample * c + k) * 3], g[(sample * c + k) * 3 + 1]);
                        let class = F::of(k as f64);
                        let it = p[k * BLOCK..][..w].iter().zip(&keep[..w]).zip(labels);
                        for ((dk, ((&pj, &kj), &lj)), s) in d[k * BLOCK..][..w].iter_mut().zip(it).zip(&mut dot) {
                            let t = if lj == class { kj } else { F::zero() };
                            let u = pj * kj - t;
                            let sign = if u > F::zero() {
                                F::one()
                            } else if u < F::zero() {
                                -F::one()
                            } else {
                                F::zero()
                            };
                            *dk = kj * (gp + gd * sign);
                            *s += pj * *dk;
                        }
                    }
                    for (k, row) in rows.iter_mut().enumerate() {
                        let o = &mut row[b0..b0 + w];
                        let it = p[k * BLOCK..][..w].iter().zip(&d[k * BLOCK..][..w]);
                        for ((o, (&pj, &dj)), &s) in o.iter_mut().zip(it).zip(&dot) {
                            o.write(pj * (dj - s));
                        }
                    }
                }
            },
        )
    }
}
