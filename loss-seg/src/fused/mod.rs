//! The fused CPU kernels: the overlap statistics of [`crate::overlap::Overlap`] (one pass for `I`,
//! `P`, `G` and one pass for each gradient) and the softmax over the channels of
//! [`crate::prepare::softmax_channels`] (one pass forward, one backward), and the soft skeleton
//! of [`crate::cldice`] ([`skeleton`]). f32 and f64; other dtypes and devices take the composite
//! path. Written with the kernel layer ([`loss_core::kernel`]).

mod labels;
mod lovasz;
mod skeleton;

pub(crate) use lovasz::LovaszHingeOp;
pub(crate) use skeleton::SkeletonOp;

use candle_core::{bail, Layout, Result, Shape, Tensor};
use loss_core::kernel::{self, with_simd, Arg, Fused1, Fused2, Fused3, Grads2, Real, SavedGrad, Split};
use std::mem::MaybeUninit;

/// Accumulator lanes: independent partial sums so that the loop vectorises.
const LANES: usize = 8;

/// `[N, C, spatial...] × 2 → [N, C, 3]`: three sums per (sample, class), of the inputs as
/// [`OverlapForm`] reads them.
pub(crate) struct OverlapOp {
    /// `P = Σ p²`, `G = Σ t²` instead of `Σ p`, `Σ t` (the dense form).
    pub squared: bool,
    /// How the two inputs are read and which sums are formed.
    pub form: OverlapForm,
    /// The softmax of [`OverlapForm::SoftmaxLabels`], kept by the forward for the backward.
    pub probs: SavedGrad,
}

/// The inputs of an [`OverlapOp`] and its three sums.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum OverlapForm {
    /// Probabilities `p` and a target `t` of the same shape: `(I, P, G)` = `(Σ p·t, Σ p, Σ t)`
    /// (squared: `Σ p²`, `Σ t²`); gradients for both.
    Dense,
    /// Logits `x` `[N, C, spatial...]` and class labels `[N, spatial...]` in `x`'s dtype: with `p` the softmax
    /// of `x` over the channels and `t` the one-hot labels, `(Σ |p − t|, Σ p, Σ t)` over the
    /// pixels whose label is not `ignore` (smp's multiclass Jaccard sums, [`labels`]); a gradient
    /// for `x` only.
    SoftmaxLabels {
        /// The ignored label, if any.
        ignore: Option<f64>,
    },
}

/// The gradient of an [`OverlapForm::SoftmaxLabels`] overlap w.r.t. its logits, from the logits,
/// the labels and the upstream gradient `[N, C, 3]`.
struct LabelsGradOp {
    ignore: Option<f64>,
    /// The first input holds the softmax kept by the forward, not the logits.
    probs: bool,
}

/// The [`labels::Labels`] view of logits `x` `[N, C, spatial...]` and labels `y`
/// `[N, spatial...]`.
fn labels_of<'a, F: Real>(x: Arg<'a>, y: Arg<'a>, ignore: Option<f64>) -> Result<labels::Labels<'a, F>> {
    let dims = x.dims();
    let (rows, len) = rows_and_len(x.layout)?;
    if y.dims().iter().product::<usize>() != rows / dims[1].max(1) * len || y.dims().first() != dims.first() {
        bail!(
            "overlap: logits {dims:?} need labels [N, spatial...], got {:?}",
            y.dims()
        );
    }
    Ok(labels::Labels {
        x: x.contiguous("logits")?,
        y: y.contiguous("labels")?,
        classes: dims[1],
        len,
        ignore: ignore.map(F::of),
    })
}

/// The gradient of one argument `x` of [`OverlapOp`] given the other, `y`, and the upstream
/// gradient `g` `[N, C, 3]`: `g_I·y + g_x·(1 or 2x)`, where `g_x` is column `own` of `g`.
struct OverlapGradOp {
    squared: bool,
    own: usize,
}

/// Rows (N·C) and row length (the spatial size) of a `[N, C, spatial...]` layout.
fn rows_and_len(l: &Layout) -> Result<(usize, usize)> {
    let dims = l.dims();
    if dims.len() < 3 {
        bail!("overlap: expected [N, C, spatial...], got {dims:?}");
    }
    Ok((dims[0] * dims[1], dims[2..].iter().product()))
}

/// Elements per parallel task of the overlap kernels (rows longer than this are split, so that a
/// single large volume still uses every thread); inputs of fewer than 2¹⁵ elements run on the
/// calling thread.
const SPLIT: Split = Split {
    chunk: 1 << 16,
    parallel_from: 1 << 15,
    whole_below: false,
};
const PART: usize = SPLIT.chunk;

/// Elements per block of [`span_stats`]: summed in the input's dtype, then added in f64.
const STATS_BLOCK: usize = 512;

/// `(Σ p·t, Σ p, Σ t)` of one span (`(Σ p·t, Σ p², Σ t²)` with `SQ`): per block of
/// [`STATS_BLOCK`] in [`LANES`] lanes of the input's dtype (64 terms a lane), the blocks' sums
/// added in f64 — a two-level sum, as accurate as PyTorch's cascade sum for f32 and exact enough
/// in f64, and 8 f32 lanes wide under AVX2.
#[inline(always)]
fn span_stats<T: Real, const SQ: bool>(p: &[T], t: &[T]) -> [f64; 3] {
    let mut out = [0f64; 3];
    for (pb, tb) in p.chunks(STATS_BLOCK).zip(t.chunks(STATS_BLOCK)) {
        let mut acc = [[T::zero(); LANES]; 3];
        let (pc, tc) = (pb.chunks_exact(LANES), tb.chunks_exact(LANES));
        let (pr, tr) = (pc.remainder(), tc.remainder());
        for (pa, ta) in pc.zip(tc) {
            let (pa, ta): (&[T; LANES], &[T; LANES]) = (pa.try_into().unwrap(), ta.try_into().unwrap());
            for k in 0..LANES {
                let (a, b) = (pa[k], ta[k]);
                acc[0][k] += a * b;
                acc[1][k] += if SQ { a * a } else { a };
                acc[2][k] += if SQ { b * b } else { b };
            }
        }
        for (o, lanes) in out.iter_mut().zip(&acc) {
            *o += lanes.iter().map(|v| v.f64()).sum::<f64>();
        }
        for (&a, &b) in pr.iter().zip(tr) {
            let (a, b) = (a.f64(), b.f64());
            out[0] += a * b;
            out[1] += if SQ { a * a } else { a };
            out[2] += if SQ { b * b } else { b };
        }
    }
    out
}

fn span_stats_simd<T: Real>(p: &[T], t: &[T], squared: bool) -> [f64; 3] {
    if squared {
        with_simd(
            #[inline(always)]
            || span_stats::<T, true>(p, t),
        )
    } else {
        with_simd(
            #[inline(always)]
            || span_stats::<T, false>(p, t),
        )
    }
}

fn forward<T: Real>(p: &[T], t: &[T], rows: usize, len: usize, squared: bool) -> Vec<T> {
    // Tasks: (row, span of the row), each row's spans in order so that its sums add up the same
    // way on any number of threads.
    let parts = len.div_ceil(PART).max(1);
    let task = |k: usize| {
        let (r, j) = (k / parts, k % parts);
        let lo = r * len + (j * PART).min(len);
        let hi = r * len + ((j + 1) * PART).min(len);
        span_stats_simd(&p[lo..hi], &t[lo..hi], squared)
    };
    let stats: Vec<[f64; 3]> = kernel::run_tasks(SPLIT.parallel(rows * len), (0..rows * parts).collect(), task);
    let mut out = Vec::with_capacity(rows * 3);
    for row in stats.chunks(parts) {
        for k in 0..3 {
            out.push(T::from_f64(row.iter().map(|s| s[k]).sum()));
        }
    }
    out
}

/// `o = gi·y + gx2·x` (`SQ`) or `o = gi·y + gx` over one span.
#[inline(always)]
fn span_grad<T: Real, const SQ: bool>(x: &[T], y: &[T], gi: T, gx: T, o: &mut [MaybeUninit<T>]) {
    if SQ {
        for ((o, &a), &b) in o.iter_mut().zip(x).zip(y) {
            o.write(gi * b + gx * a);
        }
    } else {
        for (o, &b) in o.iter_mut().zip(y) {
            o.write(gi * b + gx);
        }
    }
}

fn backward<T: Real>(x: &[T], y: &[T], g: &[T], len: usize, squared: bool, own: usize) -> Vec<T> {
    let n = x.len();
    if len == 0 {
        return Vec::new();
    }
    let two = T::one() + T::one();
    let span = |r: usize, lo: usize, o: &mut [MaybeUninit<T>]| {
        let (gi, gx) = (g[3 * r], g[3 * r + own]);
        let at = r * len + lo;
        let (xs, ys) = (&x[at..at + o.len()], &y[at..at + o.len()]);
        if squared {
            let gx2 = gx * two;
            with_simd(
                #[inline(always)]
                || span_grad::<T, true>(xs, ys, gi, gx2, o),
            )
        } else {
            with_simd(
                #[inline(always)]
                || span_grad::<T, false>(xs, ys, gi, gx, o),
            )
        }
    };
    // Tasks: (row, first column, span of the row); each span is written in full.
    kernel::uninit_vec(n, |spare| {
        let parallel = SPLIT.parallel(n);
        let part = if parallel { PART } else { len };
        let tasks: Vec<_> = spare
            .chunks_mut(len)
            .enumerate()
            .flat_map(|(r, row)| row.chunks_mut(part).enumerate().map(move |(j, o)| (r, j * part, o)))
            .collect();
        kernel::run_tasks(parallel, tasks, |(r, lo, o)| span(r, lo, o));
    })
}

impl Fused2 for OverlapOp {
    fn name(&self) -> &'static str {
        "overlap-stats"
    }

    fn forward<F: Real>(&self, a: Arg<'_>, b: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        if let OverlapForm::SoftmaxLabels { ignore } = self.form {
            let l = labels_of::<F>(a, b, ignore)?;
            let dims = a.dims();
            let (sums, probs) = labels::forward(l, dims[0]);
            self.probs.keep(Some(F::to_cpu_storage_owned(probs)));
            return Ok((sums, Shape::from((dims[0], dims[1], 3))));
        }
        if a.dims() != b.dims() {
            bail!("overlap: pred {:?} and target {:?} differ in shape", a.dims(), b.dims());
        }
        let (rows, len) = rows_and_len(a.layout)?;
        let dims = a.dims();
        let out = forward::<F>(a.contiguous("pred")?, b.contiguous("target")?, rows, len, self.squared);
        Ok((out, Shape::from((dims[0], dims[1], 3))))
    }

    fn backward(&self, pred: &Tensor, target: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Grads2> {
        let grad = grad.contiguous()?;
        if let OverlapForm::SoftmaxLabels { ignore } = self.form {
            let kept = self.probs.take_tensor(pred.shape())?;
            let op = LabelsGradOp {
                ignore,
                probs: kept.is_some(),
            };
            let first = kept.as_ref().unwrap_or(pred);
            return Ok((Some(kernel::apply3_no_bwd(op, first, target, &grad)?), None));
        }
        let of = |x: &Tensor, y: &Tensor, own: usize| -> Result<Option<Tensor>> {
            if !x.track_op() {
                return Ok(None);
            }
            let op = OverlapGradOp {
                squared: self.squared,
                own,
            };
            Ok(Some(kernel::apply3_no_bwd(op, x, y, &grad)?))
        };
        Ok((of(pred, target, 1)?, of(target, pred, 2)?))
    }
}

impl Fused3 for OverlapGradOp {
    fn name(&self) -> &'static str {
        "overlap-stats-grad"
    }

    fn forward<F: Real>(&self, x: Arg<'_>, y: Arg<'_>, g: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        let (rows, len) = rows_and_len(x.layout)?;
        if g.dims().iter().product::<usize>() != rows * 3 || x.dims() != y.dims() {
            bail!(
                "overlap backward: shapes {:?}, {:?} and gradient {:?} do not fit",
                x.dims(),
                y.dims(),
                g.dims()
            );
        }
        let out = backward::<F>(
            x.contiguous("x")?,
            y.contiguous("y")?,
            g.contiguous("grad")?,
            len,
            self.squared,
            self.own,
        );
        Ok((out, x.layout.shape().clone()))
    }
}

impl Fused3 for LabelsGradOp {
    fn name(&self) -> &'static str {
        "overlap-labels-grad"
    }

    fn forward<F: Real>(&self, x: Arg<'_>, y: Arg<'_>, g: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        let l = labels_of::<F>(x, y, self.ignore)?;
        if g.dims().iter().product::<usize>() != x.dims()[0] * l.classes * 3 {
            bail!(
                "overlap backward: logits {:?} and gradient {:?} do not fit",
                x.dims(),
                g.dims()
            );
        }
        let out = labels::backward(l, g.contiguous("grad")?, self.probs);
        Ok((out, x.layout.shape().clone()))
    }
}

/// Columns per parallel task of the channel softmax.
const COLUMN_CHUNK: usize = 4096;

/// Splits a contiguous `[N, C, S]` buffer into tasks of `C` row pieces (one per class) covering
/// columns `s0..s0 + len` of one sample, and runs `f(sample, s0, pieces)` on rayon's threads; the
/// results in task order (sample by sample, columns in order).
fn for_each_column_chunk<T: Send, R: Send>(
    out: &mut [T],
    classes: usize,
    len: usize,
    f: impl Fn(usize, usize, &mut [&mut [T]]) -> R + Sync + Send,
) -> Vec<R> {
    if classes == 0 || len == 0 {
        return Vec::new();
    }
    let mut tasks: Vec<(usize, usize, Vec<&mut [T]>)> = Vec::new();
    for (sample, block) in out.chunks_mut(classes * len).enumerate() {
        let mut rows: Vec<std::slice::ChunksMut<'_, T>> =
            block.chunks_mut(len).map(|r| r.chunks_mut(COLUMN_CHUNK)).collect();
        let mut s0 = 0;
        loop {
            let pieces: Vec<&mut [T]> = rows.iter_mut().filter_map(|r| r.next()).collect();
            if pieces.len() < classes {
                break;
            }
            let width = pieces[0].len();
            tasks.push((sample, s0, pieces));
            s0 += width;
        }
    }
    kernel::run_tasks(true, tasks, |(sample, s0, mut pieces)| f(sample, s0, &mut pieces))
}

/// Softmax over dimension 1 of a contiguous `[N, C, spatial...]` tensor, with its analytic
/// backward `y ⊙ (g − Σ_c y g)`.
pub(crate) struct ChannelSoftmaxOp;

/// The backward of [`ChannelSoftmaxOp`] from its output `y` and the upstream gradient `g`.
struct ChannelSoftmaxGradOp;

fn softmax_forward<T: Real>(x: &[T], classes: usize, len: usize) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    for_each_column_chunk(&mut out, classes, len, |sample, s0, rows| {
        let base = sample * classes * len + s0;
        let width = rows[0].len();
        let mut max = x[base..base + width].to_vec();
        for c in 1..classes {
            let xr = &x[base + c * len..base + c * len + width];
            for (m, &v) in max.iter_mut().zip(xr) {
                // A NaN (not comparable with itself) wins, so that it propagates.
                if v > *m || v.partial_cmp(&v).is_none() {
                    *m = v;
                }
            }
        }
        let mut sum = vec![T::zero(); width];
        for (c, row) in rows.iter_mut().enumerate() {
            let xr = &x[base + c * len..base + c * len + width];
            for ((o, &v), (s, &m)) in row.iter_mut().zip(xr).zip(sum.iter_mut().zip(&max)) {
                *o = (v - m).exp();
                *s += *o;
            }
        }
        for row in rows.iter_mut() {
            for (o, &s) in row.iter_mut().zip(&sum) {
                *o /= s;
            }
        }
    });
    out
}

fn softmax_backward<T: Real>(y: &[T], g: &[T], classes: usize, len: usize) -> Vec<T> {
    let mut out = vec![T::zero(); y.len()];
    for_each_column_chunk(&mut out, classes, len, |sample, s0, rows| {
        let base = sample * classes * len + s0;
        let width = rows[0].len();
        let mut dot = vec![T::zero(); width];
        for c in 0..classes {
            let (yr, gr) = (&y[base + c * len..][..width], &g[base + c * len..][..width]);
            for ((d, &a), &b) in dot.iter_mut().zip(yr).zip(gr) {
                *d += a * b;
            }
        }
        for (c, row) in rows.iter_mut().enumerate() {
            let (yr, gr) = (&y[base + c * len..][..width], &g[base + c * len..][..width]);
            for (((o, &a), &b), &d) in row.iter_mut().zip(yr).zip(gr).zip(&dot) {
                *o = a * (b - d);
            }
        }
    });
    out
}

impl Fused1 for ChannelSoftmaxOp {
    fn name(&self) -> &'static str {
        "channel-softmax"
    }

    fn forward<F: Real>(&self, x: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        let (rows, len) = rows_and_len(x.layout)?;
        let classes = if rows == 0 { 0 } else { x.dims()[1] };
        Ok((
            softmax_forward::<F>(x.contiguous("x")?, classes, len),
            x.layout.shape().clone(),
        ))
    }

    fn backward(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(kernel::apply2_no_bwd(
            ChannelSoftmaxGradOp,
            res,
            &grad.contiguous()?,
        )?))
    }
}

impl Fused2 for ChannelSoftmaxGradOp {
    fn name(&self) -> &'static str {
        "channel-softmax-grad"
    }

    fn forward<F: Real>(&self, y: Arg<'_>, g: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        let (rows, len) = rows_and_len(y.layout)?;
        if y.dims() != g.dims() {
            bail!("channel softmax backward: {:?} and {:?} differ", y.dims(), g.dims());
        }
        let classes = if rows == 0 { 0 } else { y.dims()[1] };
        let out = softmax_backward::<F>(y.contiguous("y")?, g.contiguous("grad")?, classes, len);
        Ok((out, y.layout.shape().clone()))
    }
}
