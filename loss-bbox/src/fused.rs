//! The fused CPU kernel of the aligned losses ([`AlignedLoss`]: IoU, GIoU, DIoU, CIoU, EIoU).
//!
//! Forward: one pass over the box pairs that writes the `[...]` loss, or with `Sum`/`Mean` only
//! the reduced 0-d value (partial sums in f64). Backward: one more pass that recomputes the
//! pair's geometry and writes the analytic gradient w.r.t. the boxes Candle asks for (no
//! autodiff graph of temporaries); a reduced loss reads its 0-d upstream gradient once. A
//! reduced f32 loss whose boxes need a gradient computes that gradient already in its forward
//! pass (same bits) and keeps it for the backward, which then returns it without reading the
//! boxes again when the upstream gradient is exactly 1 (`loss.backward()`); with any other
//! upstream gradient, or on a second backward, the backward recomputes it. The formulas, eps placements and gradient rules at kinks are exactly those of the
//! composite path ([`crate::losses`]), documented in [`crate::geometry`]; `tests/fused.rs` holds
//! the two equal. Both passes run in parallel over chunks of pairs (rayon) for large inputs.
//!
//! Two kernels compute a pair:
//! - f32 inputs: the block kernel of [`block_f32`], branch-free f32 arithmetic over blocks of 64
//!   pairs that LLVM vectorises (AVX2 + FMA chosen at run time). Lanes outside its safe domain
//!   (NaN or infinite coordinates, coordinates beyond `1e18`, results that overflow, CIoU's
//!   `w² + h²` below f32's normal range) are recomputed by the f64 kernel, so NaN propagation
//!   and overflow are those of the f64 kernel; the other lanes agree with it to a few f32 ulp
//!   of the terms involved (`block_f32::tests`). An `eps` outside `[1e-18, 1e18]` runs the f64
//!   kernel for the whole call.
//! - f64 inputs: [`pair()`], scalar f64 code (libm `atan`).
//!
//! CPU only, f32 and f64 ([`loss_core::kernel::choose`]); the composite path for everything
//! else. Written with the kernel layer ([`loss_core::kernel`]).

use crate::kinds::AlignedLoss;
use candle_core::{bail, CpuStorage, DType, Result, Shape, Tensor};
use loss_core::kernel::{self, build, build_planes, Arg, Fused2, Fused3, Grads2, Real, SavedGrad, Split};
use loss_core::Reduction;
use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::sync::Arc;

mod block_f32;
pub(crate) mod dense;
mod pair;
mod successors;

use pair::pair;

pub(crate) use successors::Successor;

/// What the pair kernel computes: a loss of the torchvision family ([`AlignedLoss`], f32 lanes
/// in [`block_f32`]) or an IoU successor ([`Successor`]); both take their gradient back to the
/// coordinates through [`pair::Chain::into_coords`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum PairKind {
    /// IoU, GIoU, DIoU, CIoU, EIoU.
    Aligned(AlignedLoss),
    /// Alpha-, MPD-, Inner-, Shape-, Wise-, Focaler-IoU, NWD.
    Successor(Successor),
}

impl PairKind {
    /// The loss's function name.
    fn name(self) -> &'static str {
        match self {
            Self::Aligned(k) => k.name(),
            Self::Successor(s) => s.name(),
        }
    }

    /// The loss of one pair and, with `g = Some(upstream)`, its gradient (f64 scalar code).
    #[inline]
    fn pair(self, p: [f64; 4], t: [f64; 4], eps: f64, g: Option<f64>) -> (f64, [f64; 8]) {
        match self {
            Self::Aligned(k) => pair(k, p, t, eps, g),
            Self::Successor(s) => s.pair(p, t, eps, g),
        }
    }

    /// This kind, where the f32 block kernel runs it at this `eps`.
    fn block(self, eps: f64) -> Option<PairKind> {
        block_f32::supports(self, eps).then_some(self)
    }
}

impl From<Successor> for PairKind {
    fn from(s: Successor) -> Self {
        Self::Successor(s)
    }
}

impl From<AlignedLoss> for PairKind {
    fn from(k: AlignedLoss) -> Self {
        Self::Aligned(k)
    }
}

/// `v` as f32 (the f32 block kernel's input): `F` is f32 where this is called.
fn f32s<F: Real>(v: &[F]) -> Result<&[f32]> {
    match F::as_f32(v) {
        Some(v) => Ok(v),
        None => bail!("fused box kernel: f32 expected"),
    }
}

/// The f32 block kernel's output as `F` (f32 where this is called).
fn from_f32s<F: Real>(v: Vec<f32>) -> Result<Vec<F>> {
    match F::from_f32_vec(v) {
        Some(v) => Ok(v),
        None => bail!("fused box kernel: f32 expected"),
    }
}

/// The upstream gradient of the backward as the kernels read it.
enum Up<'a, T: Clone> {
    /// One value for every pair (a reduced loss, or a broadcast gradient), in f64.
    Scalar(f64),
    /// One value a pair.
    Each(Cow<'a, [T]>),
}

/// Reads the upstream gradient `g` (layout `l`) of a loss over `n` pairs reduced by `reduction`:
/// the 0-d gradient of `Sum`, divided by `n` for `Mean`; for `None` a single value when every
/// dimension of more than one element has stride 0 (a broadcast scalar), else the elements.
fn upstream<'a, T: Real>(up: Arg<'a>, reduction: Reduction, n: usize) -> Result<Up<'a, T>> {
    let (g, l) = (up.raw::<T>()?, up.layout);
    let first = || g[l.start_offset()].f64();
    Ok(match reduction {
        Reduction::Sum => Up::Scalar(first()),
        Reduction::Mean => Up::Scalar(first() / n as f64),
        _ => {
            let broadcast = l.dims().iter().zip(l.stride()).all(|(&d, &s)| d <= 1 || s == 0);
            if broadcast && n > 0 {
                Up::Scalar(first())
            } else {
                Up::Each(up.elems::<T>()?)
            }
        }
    })
}

/// Pairs per parallel task; from two chunks on in parallel, below as one task on the calling
/// thread (the reductions' sums).
const SPLIT: Split = Split::new(8192);

/// [`SPLIT`] with the same chunks also on the calling thread: the buffers written chunk by chunk.
const CHUNKED: Split = Split {
    whole_below: false,
    ..SPLIT
};

/// The forward of the f64 scalar kernel: `(per-pair losses, or nothing with `reduce`; their sum)`.
fn forward_scalar<T: Real>(kind: PairKind, eps: f64, p: &[T], t: &[T], reduce: bool) -> (Vec<T>, f64) {
    let n = p.len() / 4;
    let loss = |i: usize| kind.pair(boxes(p, i), boxes(t, i), eps, None).0;
    if reduce {
        let sums = kernel::for_each_chunk(SPLIT, n, 0, [], |r, []: [&mut [u8]; 0]| r.map(loss).sum::<f64>());
        return (Vec::new(), sums.iter().sum());
    }
    let (out, _) = build(CHUNKED, n, 1, |r, o| {
        for (v, i) in o.iter_mut().zip(r) {
            v.write(T::of(loss(i)));
        }
    });
    (out, 0.0)
}

/// The forward of the f32 block kernel ([`block_f32`]), as [`forward_scalar`].
fn forward_f32(kind: PairKind, eps: f64, p: &[f32], t: &[f32], reduce: bool) -> (Vec<f32>, f64) {
    let n = p.len() / 4;
    if reduce {
        let sums = kernel::for_each_chunk(SPLIT, n, 0, [], |r, []: [&mut [u8]; 0]| {
            block_f32::forward(
                kind,
                eps,
                &p[4 * r.start..4 * r.end],
                &t[4 * r.start..4 * r.end],
                None,
                None,
            )
        });
        return (Vec::new(), sums.iter().sum());
    }
    // `block_f32::forward` writes every slot of its chunk.
    let (out, _) = build(CHUNKED, n, 1, |r, o| {
        block_f32::forward(
            kind,
            eps,
            &p[4 * r.start..4 * r.end],
            &t[4 * r.start..4 * r.end],
            Some(o),
            None,
        );
    });
    (out, 0.0)
}

/// What [`grad_buffers`] hands to its `run`: `(first pair, pred chunk, target chunk)`.
type GradRun<'a, T> = (
    usize,
    Option<&'a mut [MaybeUninit<T>]>,
    Option<&'a mut [MaybeUninit<T>]>,
);

/// The gradient buffers of a backward: `[pred grads (n·4) | target grads (n·4)]` or the one of
/// them that `want = (pred, target)` asks for, handed to `run(first pair, pred chunk, target
/// chunk)` chunk by chunk (in parallel for large inputs), which must write its chunks in full.
/// Returns the buffer and `run`'s results in chunk order.
fn grad_buffers<T: Send, R: Send>(
    n: usize,
    want: (bool, bool),
    run: impl Fn(GradRun<'_, T>) -> R + Sync + Send,
) -> (Vec<T>, Vec<R>) {
    match want {
        (true, true) => build_planes(CHUNKED, n, 4, |r, [gp, gt]| run((r.start, Some(gp), Some(gt)))),
        (true, false) => build(CHUNKED, n, 4, |r, gp| run((r.start, Some(gp), None))),
        _ => build(CHUNKED, n, 4, |r, gt| run((r.start, None, Some(gt)))),
    }
}

/// The f32 forward of a reduced loss that also computes, in the same pass, the gradients
/// `want`ed for the scalar upstream gradient `g` (kept in a [`SavedGrad`]): `(sum of the losses,
/// gradients as [`grad_buffers`])`.
fn forward_f32_with_grads(
    kind: PairKind,
    eps: f64,
    p: &[f32],
    t: &[f32],
    g: f64,
    want: (bool, bool),
) -> (f64, Vec<f32>) {
    let (grads, sums) = grad_buffers::<f32, f64>(p.len() / 4, want, |(lo, gp, gt)| {
        let len = gp.as_ref().or(gt.as_ref()).map_or(0, |c| c.len() / 4);
        let (a, b) = (4 * lo, 4 * (lo + len));
        block_f32::forward(
            kind,
            eps,
            &p[a..b],
            &t[a..b],
            None,
            Some(block_f32::Grads { g, gp, gt }),
        )
    });
    (sums.iter().sum(), grads)
}

/// The backward of the f64 scalar kernel: the gradients `want`ed, as [`grad_buffers`].
fn backward_scalar<T: Real>(kind: PairKind, eps: f64, p: &[T], t: &[T], up: &Up<'_, T>, want: (bool, bool)) -> Vec<T> {
    let n = p.len() / 4;
    let g = |i: usize| match up {
        Up::Scalar(g) => *g,
        Up::Each(g) => g[i].f64(),
    };
    grad_buffers::<T, ()>(n, want, |(lo, mut gp, mut gt)| {
        let len = gp.as_ref().or(gt.as_ref()).map_or(0, |c| c.len() / 4);
        for j in 0..len {
            let i = lo + j;
            let d = kind.pair(boxes(p, i), boxes(t, i), eps, Some(g(i))).1;
            write_grads(&mut gp, &mut gt, j, &d);
        }
    })
    .0
}

/// Writes pair `j`'s gradient `d` into the chunks that are there.
#[inline(always)]
fn write_grads<T: Real>(
    gp: &mut Option<&mut [MaybeUninit<T>]>,
    gt: &mut Option<&mut [MaybeUninit<T>]>,
    j: usize,
    d: &[f64; 8],
) {
    for k in 0..4 {
        if let Some(c) = gp.as_deref_mut() {
            c[4 * j + k].write(T::of(d[k]));
        }
        if let Some(c) = gt.as_deref_mut() {
            c[4 * j + k].write(T::of(d[4 + k]));
        }
    }
}

/// The scalar forward of a reduced loss that also computes, in the same pass, the gradients
/// `want`ed for the scalar upstream gradient `g`, as [`forward_f32_with_grads`].
fn forward_scalar_with_grads<T: Real>(
    kind: PairKind,
    eps: f64,
    p: &[T],
    t: &[T],
    g: f64,
    want: (bool, bool),
) -> (f64, Vec<T>) {
    let (grads, sums) = grad_buffers::<T, f64>(p.len() / 4, want, |(lo, mut gp, mut gt)| {
        let len = gp.as_ref().or(gt.as_ref()).map_or(0, |c| c.len() / 4);
        let mut sum = 0.0;
        for j in 0..len {
            let (v, d) = kind.pair(boxes(p, lo + j), boxes(t, lo + j), eps, Some(g));
            sum += v;
            write_grads(&mut gp, &mut gt, j, &d);
        }
        sum
    });
    (sums.iter().sum(), grads)
}

/// The backward of the f32 block kernel ([`block_f32`]), as [`backward_scalar`].
fn backward_f32<F: Real>(
    kind: PairKind,
    eps: f64,
    p: &[f32],
    t: &[f32],
    up: &Up<'_, F>,
    want: (bool, bool),
) -> Result<Vec<f32>> {
    let n = p.len() / 4;
    let each = match up {
        Up::Scalar(_) => &[][..],
        Up::Each(g) => f32s(g)?,
    };
    Ok(grad_buffers::<f32, ()>(n, want, |(lo, gp, gt)| {
        let len = gp.as_ref().or(gt.as_ref()).map_or(0, |c| c.len() / 4);
        let u = match up {
            Up::Scalar(g) => block_f32::Upstream::Scalar(*g),
            Up::Each(_) => block_f32::Upstream::Each(&each[lo..lo + len]),
        };
        let (a, b) = (4 * lo, 4 * (lo + len));
        block_f32::backward(kind, eps, &p[a..b], &t[a..b], u, gp, gt);
    })
    .0)
}

/// Box `i` of `v` (`4·n` coordinates) in f64.
fn boxes<T: Real>(v: &[T], i: usize) -> [f64; 4] {
    [
        v[4 * i].f64(),
        v[4 * i + 1].f64(),
        v[4 * i + 2].f64(),
        v[4 * i + 3].f64(),
    ]
}

/// `CustomOp2(pred, target) -> loss`: the fused forward, `[...]` for `Reduction::None`, else
/// the 0-d sum or mean (0 for an empty mean, torchvision's box losses).
#[derive(Debug, Clone)]
pub(crate) struct FusedLoss {
    pub kind: PairKind,
    pub eps: f64,
    /// `None`, `Sum` or `Mean` (already standardised).
    pub reduction: Reduction,
    /// `(pred, target)`: which boxes need a gradient (decided when the op is applied).
    want: (bool, bool),
    /// Where a reduced f32 forward leaves the gradients for the backward: taken by the backward
    /// when the upstream gradient is exactly 1 (the loss itself is differentiated, the usual
    /// case), so that it does not read the boxes again; recomputed for any other upstream
    /// gradient or a second backward. `[k, ..., 4]`, `k` = the number of wanted gradients.
    saved: Arc<SavedGrad>,
}

impl FusedLoss {
    fn reduced(&self) -> bool {
        matches!(self.reduction, Reduction::Sum | Reduction::Mean)
    }

    /// The upstream gradient of every pair for an upstream gradient of 1 on the reduced loss.
    fn unit_upstream(&self, n: usize) -> f64 {
        match self.reduction {
            Reduction::Mean => 1.0 / n as f64,
            _ => 1.0,
        }
    }

    /// The output of a forward of `n` pairs: the per-pair losses, or the sum made a 0-d value.
    fn finish<T: Real>(&self, (each, sum): (Vec<T>, f64), n: usize) -> Vec<T> {
        match self.reduction {
            Reduction::Sum => vec![T::of(sum)],
            Reduction::Mean if n == 0 => vec![T::of(0.0)],
            Reduction::Mean => vec![T::of(sum / n as f64)],
            _ => each,
        }
    }

    /// The gradients saved by the forward as the `[k, ..., 4]` tensor of the backward, when the
    /// upstream gradient `grad` is exactly 1 (else `None`, and nothing is taken).
    fn saved_grads(&self, pred: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let one = grad.elem_count() == 1
            && match (grad.dtype(), pred.dtype()) {
                (DType::F32, DType::F32) => grad.flatten_all()?.to_vec1::<f32>()? == [1.0],
                (DType::F64, DType::F64) => grad.flatten_all()?.to_vec1::<f64>()? == [1.0],
                _ => false,
            };
        if !one {
            return Ok(None);
        }
        let mut dims = vec![usize::from(self.want.0) + usize::from(self.want.1)];
        dims.extend_from_slice(pred.dims());
        self.saved.take_tensor(dims)
    }
}

/// `CustomOp3(pred, target, upstream) -> [k, ..., 4]`: the gradients w.r.t. pred and/or
/// target (`k` = how many of `want` are set).
#[derive(Debug, Clone)]
struct FusedLossGrad {
    op: FusedLoss,
    /// `(pred, target)`: which gradients to compute.
    want: (bool, bool),
}

impl Fused2 for FusedLoss {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn forward<F: Real>(&self, a: Arg<'_>, b: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        let (kind, eps, reduce, want) = (self.kind, self.eps, self.reduced(), self.want);
        let l1 = a.layout;
        let n = l1.shape().elem_count() / 4;
        let (p, t) = (a.elems::<F>()?, b.elems::<F>()?);
        let block = kind.block(eps).filter(|_| F::DTYPE == DType::F32);
        let r = if let Some(k) = block {
            let (p, t) = (f32s(&p)?, f32s(&t)?);
            if reduce && (want.0 || want.1) {
                let (sum, grads) = forward_f32_with_grads(k, eps, p, t, self.unit_upstream(n), want);
                self.saved.keep(Some(CpuStorage::F32(grads)));
                (Vec::new(), sum)
            } else {
                let (each, sum) = forward_f32(k, eps, p, t, reduce);
                (from_f32s(each)?, sum)
            }
        } else if reduce && (want.0 || want.1) && matches!(kind, PairKind::Successor(_)) {
            let (sum, grads) = forward_scalar_with_grads::<F>(kind, eps, &p, &t, self.unit_upstream(n), want);
            self.saved.keep(Some(F::to_cpu_storage_owned(grads)));
            (Vec::new(), sum)
        } else {
            forward_scalar(kind, eps, &p, &t, reduce)
        };
        let shape = if reduce {
            Shape::from(())
        } else {
            let d = l1.dims();
            Shape::from(&d[..d.len() - 1])
        };
        Ok((self.finish(r, n), shape))
    }

    fn backward(&self, pred: &Tensor, target: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Grads2> {
        // Only the gradients Candle will use: a constant target (the usual case) costs nothing.
        let want = (pred.track_op(), target.track_op());
        if !want.0 && !want.1 {
            return Ok((None, None));
        }
        let saved = if want == self.want {
            self.saved_grads(pred, grad)?
        } else {
            None
        };
        let g = match saved {
            Some(g) => g,
            None => kernel::apply3_no_bwd(FusedLossGrad { op: self.clone(), want }, pred, target, grad)?,
        };
        Ok(match want {
            (true, true) => (Some(g.get(0)?), Some(g.get(1)?)),
            (true, false) => (Some(g.get(0)?), None),
            _ => (None, Some(g.get(0)?)),
        })
    }
}

impl Fused3 for FusedLossGrad {
    fn name(&self) -> &'static str {
        "fused-box-loss-grad"
    }

    fn forward<F: Real>(&self, a: Arg<'_>, b: Arg<'_>, c: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        let FusedLoss {
            kind, eps, reduction, ..
        } = self.op;
        let want = self.want;
        let n = a.layout.shape().elem_count() / 4;
        let (p, t) = (a.elems::<F>()?, b.elems::<F>()?);
        let up = upstream::<F>(c, reduction, n)?;
        let out = if let Some(k) = kind.block(eps).filter(|_| F::DTYPE == DType::F32) {
            from_f32s(backward_f32(k, eps, f32s(&p)?, f32s(&t)?, &up, want)?)?
        } else {
            backward_scalar(kind, eps, &p, &t, &up, want)
        };
        let mut dims = vec![usize::from(want.0) + usize::from(want.1)];
        dims.extend_from_slice(a.dims());
        Ok((out, Shape::from(dims)))
    }
}

/// The loss of `kind` through the fused kernel (`pred`, `target`: validated `[..., 4]` CPU
/// tensors of one float dtype f32/f64; `reduction` standardised: `None`, `Sum` or `Mean`).
/// Output `[...]` for `None`, else 0-d.
pub(crate) fn loss(kind: PairKind, pred: &Tensor, target: &Tensor, eps: f64, reduction: Reduction) -> Result<Tensor> {
    let op = FusedLoss {
        kind,
        eps,
        reduction,
        want: (pred.track_op(), target.track_op()),
        saved: Arc::default(),
    };
    kernel::apply2(op, pred, target)
}
