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
//! - f64 inputs: [`pair`], scalar f64 code (libm `atan`).
//!
//! CPU only, f32 and f64 ([`loss_core::kernel::choose`]); the composite path for everything
//! else. Written with the kernel layer ([`loss_core::kernel`]).

use crate::geometry::{aspect_angle_scalar, max_w, min_w, ASPECT_K};
use crate::losses::{AlignedLoss, IouMode};
use candle_core::{bail, CpuStorage, DType, Result, Shape, Tensor};
use loss_core::kernel::{self, build, build_planes, Arg, Fused2, Fused3, Real, SavedGrad, Split};
use loss_core::Reduction;
use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::sync::Arc;

mod block_f32;
pub(crate) mod dense;

/// The loss of one pair and, with `g = Some(upstream)`, its gradient w.r.t. `p` and `t`.
///
/// `p` and `t` are `xyxy` boxes. See [`crate::losses`] for the formulas.
#[inline]
pub(crate) fn pair(kind: AlignedLoss, p: [f64; 4], t: [f64; 4], eps: f64, g: Option<f64>) -> (f64, [f64; 8]) {
    let [px1, py1, px2, py2] = p;
    let [tx1, ty1, tx2, ty2] = t;
    // Intersection (torchvision's masked form).
    let (ix1, ix1_p, ix1_t) = max_w(px1, tx1);
    let (iy1, iy1_p, iy1_t) = max_w(py1, ty1);
    let (ix2, ix2_p, ix2_t) = min_w(px2, tx2);
    let (iy2, iy2_p, iy2_t) = min_w(py2, ty2);
    let (iw, ih) = (ix2 - ix1, iy2 - iy1);
    let overlap = iw > 0.0 && ih > 0.0;
    let inter = if overlap { iw * ih } else { 0.0 };
    let (pw, ph, tw, th) = (px2 - px1, py2 - py1, tx2 - tx1, ty2 - ty1);
    let union = pw * ph + tw * th - inter;
    let ue = union + eps;
    let iou = inter / ue;

    // Value and the partials w.r.t. the intermediate quantities.
    let mut g_iou = -1.0;
    let mut loss = 1.0 - iou;
    let (mut g_union, mut g_cw, mut g_ch, mut g_dx, mut g_dy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut g_pw, mut g_ph, mut g_tw, mut g_th) = (0.0, 0.0, 0.0, 0.0);
    let enclosing = |p1: f64, t1: f64, p2: f64, t2: f64| {
        let (lo, lo_p, lo_t) = min_w(p1, t1);
        let (hi, hi_p, hi_t) = max_w(p2, t2);
        (hi - lo, lo_p, lo_t, hi_p, hi_t)
    };
    let (cw, cx1_p, cx1_t, cx2_p, cx2_t) = enclosing(px1, tx1, px2, tx2);
    let (ch, cy1_p, cy1_t, cy2_p, cy2_t) = enclosing(py1, ty1, py2, ty2);
    match kind {
        AlignedLoss::Iou(mode) => {
            let inside = iou >= eps || iou.is_nan();
            let c = if inside { iou } else { eps };
            (loss, g_iou) = match mode {
                IouMode::Linear => (1.0 - iou, -1.0),
                IouMode::Square => (1.0 - c * c, if inside { -2.0 * c } else { 0.0 }),
                IouMode::Log => (-c.ln(), if inside { -1.0 / c } else { 0.0 }),
            };
        }
        AlignedLoss::Giou => {
            let ac = cw * ch;
            let ace = ac + eps;
            let q = (ac - union) / ace;
            loss += q;
            // d q / d ac = (1 − q) / ace (= ue / ace², without the square), as the composite
            // path's division (`loss_core::ops::div`).
            let g_ac = (1.0 - q) / ace;
            g_union -= 1.0 / ace;
            g_cw += g_ac * ch;
            g_ch += g_ac * cw;
        }
        AlignedLoss::Diou | AlignedLoss::Ciou | AlignedLoss::Eiou => {
            let diag = cw * cw + ch * ch + eps;
            let dx = 0.5 * (px1 + px2 - tx1 - tx2);
            let dy = 0.5 * (py1 + py2 - ty1 - ty2);
            let rho2 = dx * dx + dy * dy;
            loss += rho2 / diag;
            let g_diag = -rho2 / (diag * diag);
            g_cw += 2.0 * cw * g_diag;
            g_ch += 2.0 * ch * g_diag;
            g_dx += 2.0 * dx / diag;
            g_dy += 2.0 * dy / diag;
            if kind == AlignedLoss::Ciou {
                let (ap, ap_w, ap_h) = aspect_angle_scalar(pw, ph);
                let (at, at_w, at_h) = aspect_angle_scalar(tw, th);
                let d = at - ap;
                let v = ASPECT_K * d * d;
                // alpha is a constant for the gradient (torch.no_grad in torchvision).
                let alpha = v / (1.0 - iou + v + eps);
                loss += alpha * v;
                let g_theta = 2.0 * ASPECT_K * d * alpha; // d(alpha v)/d(theta_t)
                g_tw += g_theta * at_w;
                g_th += g_theta * at_h;
                g_pw -= g_theta * ap_w;
                g_ph -= g_theta * ap_h;
            } else if kind == AlignedLoss::Eiou {
                let (dw, dh) = (pw - tw, ph - th);
                let (cw2, ch2) = (cw * cw + eps, ch * ch + eps);
                loss += dw * dw / cw2 + dh * dh / ch2;
                g_pw += 2.0 * dw / cw2;
                g_tw -= 2.0 * dw / cw2;
                g_ph += 2.0 * dh / ch2;
                g_th -= 2.0 * dh / ch2;
                g_cw -= 2.0 * cw * dw * dw / (cw2 * cw2);
                g_ch -= 2.0 * ch * dh * dh / (ch2 * ch2);
            }
        }
    }
    let Some(g) = g else {
        return (loss, [0.0; 8]);
    };

    // Chain back to the coordinates, everything scaled by the upstream gradient g.
    let mut g_inter = g * g_iou / ue;
    g_union = g * (g_union - g_iou * iou / ue);
    g_inter -= g_union;
    let chain = Chain {
        iw: if overlap { g_inter * ih } else { 0.0 },
        ih: if overlap { g_inter * iw } else { 0.0 },
        cw: g * g_cw,
        ch: g * g_ch,
        sides: [
            g * g_pw + g_union * ph,
            g * g_ph + g_union * pw,
            g * g_tw + g_union * th,
            g * g_th + g_union * tw,
        ],
        half_dx: 0.5 * g * g_dx,
        half_dy: 0.5 * g * g_dy,
        inter_w: [ix1_p, ix1_t, ix2_p, ix2_t, iy1_p, iy1_t, iy2_p, iy2_t],
        outer_w: [cx1_p, cx1_t, cx2_p, cx2_t, cy1_p, cy1_t, cy2_p, cy2_t],
    };
    (loss, chain.into_coords())
}

/// The gradient of one pair's loss w.r.t. its intermediate quantities (already times the
/// upstream gradient), and the `max`/`min` weights of the extents they came through: what
/// [`Chain::into_coords`] takes back to the eight coordinates. One chain rule for the f64 [`pair`]
/// and the f32 block kernel ([`block_f32`]).
pub(crate) struct Chain<F> {
    /// ∂/∂ intersection width (0 where the boxes do not overlap).
    pub iw: F,
    /// ∂/∂ intersection height (0 where the boxes do not overlap).
    pub ih: F,
    /// ∂/∂ enclosing width.
    pub cw: F,
    /// ∂/∂ enclosing height.
    pub ch: F,
    /// ∂/∂ (p's width, p's height, t's width, t's height).
    pub sides: [F; 4],
    /// ½ · ∂/∂ centre offset `dx = (p.x1 + p.x2 − t.x1 − t.x2) / 2`, and the same for `dy`.
    pub half_dx: F,
    /// See `half_dx`.
    pub half_dy: F,
    /// Weights of the intersection's `max`/`min`: `[ix1 w.r.t. p, w.r.t. t, ix2 .., iy1 .., iy2 ..]`.
    pub inter_w: [F; 8],
    /// Weights of the enclosing box's `min`/`max`, in the same order.
    pub outer_w: [F; 8],
}

impl<F: Real> Chain<F> {
    /// `[∂/∂p.x1, p.y1, p.x2, p.y2, ∂/∂t.x1, t.y1, t.x2, t.y2]`.
    #[inline(always)]
    pub(crate) fn into_coords(self) -> [F; 8] {
        let z = F::zero();
        let mut gp = [z; 4];
        let mut gt = [z; 4];
        let (g_iw, g_ih) = (self.iw, self.ih);
        let [ix1_p, ix1_t, ix2_p, ix2_t, iy1_p, iy1_t, iy2_p, iy2_t] = self.inter_w;
        gp[0] -= g_iw * ix1_p;
        gt[0] -= g_iw * ix1_t;
        gp[2] += g_iw * ix2_p;
        gt[2] += g_iw * ix2_t;
        gp[1] -= g_ih * iy1_p;
        gt[1] -= g_ih * iy1_t;
        gp[3] += g_ih * iy2_p;
        gt[3] += g_ih * iy2_t;
        let (g_cw, g_ch) = (self.cw, self.ch);
        let [cx1_p, cx1_t, cx2_p, cx2_t, cy1_p, cy1_t, cy2_p, cy2_t] = self.outer_w;
        gp[0] -= g_cw * cx1_p;
        gt[0] -= g_cw * cx1_t;
        gp[2] += g_cw * cx2_p;
        gt[2] += g_cw * cx2_t;
        gp[1] -= g_ch * cy1_p;
        gt[1] -= g_ch * cy1_t;
        gp[3] += g_ch * cy2_p;
        gt[3] += g_ch * cy2_t;
        // widths and heights
        let [g_pw, g_ph, g_tw, g_th] = self.sides;
        gp[0] -= g_pw;
        gp[2] += g_pw;
        gp[1] -= g_ph;
        gp[3] += g_ph;
        gt[0] -= g_tw;
        gt[2] += g_tw;
        gt[1] -= g_th;
        gt[3] += g_th;
        // centre offsets
        let (hx, hy) = (self.half_dx, self.half_dy);
        gp[0] += hx;
        gp[2] += hx;
        gt[0] -= hx;
        gt[2] -= hx;
        gp[1] += hy;
        gp[3] += hy;
        gt[1] -= hy;
        gt[3] -= hy;
        [gp[0], gp[1], gp[2], gp[3], gt[0], gt[1], gt[2], gt[3]]
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
fn forward_scalar<T: Real>(kind: AlignedLoss, eps: f64, p: &[T], t: &[T], reduce: bool) -> (Vec<T>, f64) {
    let n = p.len() / 4;
    let loss = |i: usize| pair(kind, boxes(p, i), boxes(t, i), eps, None).0;
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
fn forward_f32(kind: AlignedLoss, eps: f64, p: &[f32], t: &[f32], reduce: bool) -> (Vec<f32>, f64) {
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
    kind: AlignedLoss,
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
fn backward_scalar<T: Real>(
    kind: AlignedLoss,
    eps: f64,
    p: &[T],
    t: &[T],
    up: &Up<'_, T>,
    want: (bool, bool),
) -> Vec<T> {
    let n = p.len() / 4;
    let g = |i: usize| match up {
        Up::Scalar(g) => *g,
        Up::Each(g) => g[i].f64(),
    };
    grad_buffers::<T, ()>(n, want, |(lo, mut gp, mut gt)| {
        let len = gp.as_ref().or(gt.as_ref()).map_or(0, |c| c.len() / 4);
        for j in 0..len {
            let i = lo + j;
            let d = pair(kind, boxes(p, i), boxes(t, i), eps, Some(g(i))).1;
            for k in 0..4 {
                if let Some(c) = gp.as_deref_mut() {
                    c[4 * j + k].write(T::of(d[k]));
                }
                if let Some(c) = gt.as_deref_mut() {
                    c[4 * j + k].write(T::of(d[4 + k]));
                }
            }
        }
    })
    .0
}

/// The backward of the f32 block kernel ([`block_f32`]), as [`backward_scalar`].
fn backward_f32<F: Real>(
    kind: AlignedLoss,
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
    pub kind: AlignedLoss,
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
        if grad.dtype() != DType::F32 || grad.elem_count() != 1 || grad.flatten_all()?.to_vec1::<f32>()? != [1.0] {
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
        let r = if F::DTYPE == DType::F32 && block_f32::eps_ok(eps) {
            let (p, t) = (f32s(&p)?, f32s(&t)?);
            if reduce && (want.0 || want.1) {
                let (sum, grads) = forward_f32_with_grads(kind, eps, p, t, self.unit_upstream(n), want);
                self.saved.keep(Some(CpuStorage::F32(grads)));
                (Vec::new(), sum)
            } else {
                let (each, sum) = forward_f32(kind, eps, p, t, reduce);
                (from_f32s(each)?, sum)
            }
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

    fn backward(
        &self,
        pred: &Tensor,
        target: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
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
        let out = if F::DTYPE == DType::F32 && block_f32::eps_ok(eps) {
            from_f32s(backward_f32(kind, eps, f32s(&p)?, f32s(&t)?, &up, want)?)?
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
pub(crate) fn loss(
    kind: AlignedLoss,
    pred: &Tensor,
    target: &Tensor,
    eps: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    let op = FusedLoss {
        kind,
        eps,
        reduction,
        want: (pred.track_op(), target.track_op()),
        saved: Arc::default(),
    };
    kernel::apply2(op, pred, target)
}
