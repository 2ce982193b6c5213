//! The fused CPU kernel of the aligned losses ([`AlignedLoss`]: IoU, GIoU, DIoU, CIoU, EIoU).
//!
//! Forward: one pass over the box pairs, each pair's loss computed in f64 from its eight
//! coordinates and rounded to the input dtype; nothing but the `[...]` loss is stored. Backward:
//! one more pass that recomputes the pair's geometry and writes the analytic gradient w.r.t.
//! both boxes (no autodiff graph of temporaries). The formulas, eps placements and gradient
//! rules at kinks are exactly those of the composite path ([`crate::losses`]), documented in
//! [`crate::geometry`]; `tests/fused.rs` holds the two equal. Both passes run in parallel over
//! chunks of pairs (rayon) for large inputs.
//!
//! CPU only, f32 and f64; [`crate::Kernel::Auto`] picks this kernel for those and the composite
//! path for everything else.

use crate::geometry::{aspect_angle_scalar, max_w, min_w, ASPECT_K};
use crate::losses::{AlignedLoss, IouMode};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use loss_core::ops::layout_offsets;
use rayon::prelude::*;
use std::borrow::Cow;

/// Pairs per parallel chunk.
const CHUNK: usize = 4096;

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
    let mut gp = [0.0f64; 4];
    let mut gt = [0.0f64; 4];
    let mut g_inter = g * g_iou / ue;
    g_union = g * (g_union - g_iou * iou / ue);
    g_inter -= g_union;
    // area terms of the union
    g_pw = g * g_pw + g_union * ph;
    g_ph = g * g_ph + g_union * pw;
    g_tw = g * g_tw + g_union * th;
    g_th = g * g_th + g_union * tw;
    if overlap {
        let (g_iw, g_ih) = (g_inter * ih, g_inter * iw);
        gp[0] -= g_iw * ix1_p;
        gt[0] -= g_iw * ix1_t;
        gp[2] += g_iw * ix2_p;
        gt[2] += g_iw * ix2_t;
        gp[1] -= g_ih * iy1_p;
        gt[1] -= g_ih * iy1_t;
        gp[3] += g_ih * iy2_p;
        gt[3] += g_ih * iy2_t;
    }
    let (g_cw, g_ch) = (g * g_cw, g * g_ch);
    gp[0] -= g_cw * cx1_p;
    gt[0] -= g_cw * cx1_t;
    gp[2] += g_cw * cx2_p;
    gt[2] += g_cw * cx2_t;
    gp[1] -= g_ch * cy1_p;
    gt[1] -= g_ch * cy1_t;
    gp[3] += g_ch * cy2_p;
    gt[3] += g_ch * cy2_t;
    // widths and heights
    gp[0] -= g_pw;
    gp[2] += g_pw;
    gp[1] -= g_ph;
    gp[3] += g_ph;
    gt[0] -= g_tw;
    gt[2] += g_tw;
    gt[1] -= g_th;
    gt[3] += g_th;
    // centre offset dx = (p.x1 + p.x2 - t.x1 - t.x2) / 2
    let (hx, hy) = (0.5 * g * g_dx, 0.5 * g * g_dy);
    gp[0] += hx;
    gp[2] += hx;
    gt[0] -= hx;
    gt[2] -= hx;
    gp[1] += hy;
    gp[3] += hy;
    gt[1] -= hy;
    gt[3] -= hy;
    (loss, [gp[0], gp[1], gp[2], gp[3], gt[0], gt[1], gt[2], gt[3]])
}

/// A float element the kernel reads and writes (computed in f64).
trait Elem: Copy + Send + Sync + 'static {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

impl Elem for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Elem for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// The elements of a layout in row-major order: a borrowed slice when contiguous.
fn elems<'a, T: Copy>(v: &'a [T], l: &Layout) -> Cow<'a, [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Cow::Borrowed(&v[a..b]),
        None => Cow::Owned(layout_offsets(l).into_iter().map(|i| v[i]).collect()),
    }
}

fn boxes<T: Elem>(v: &[T], i: usize) -> [f64; 4] {
    [
        v[4 * i].to_f64(),
        v[4 * i + 1].to_f64(),
        v[4 * i + 2].to_f64(),
        v[4 * i + 3].to_f64(),
    ]
}

fn forward<T: Elem>(kind: AlignedLoss, eps: f64, p: &[T], t: &[T]) -> Vec<T> {
    let n = p.len() / 4;
    let mut out = vec![T::from_f64(0.0); n];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
        for (j, o) in chunk.iter_mut().enumerate() {
            let i = c * CHUNK + j;
            *o = T::from_f64(pair(kind, boxes(p, i), boxes(t, i), eps, None).0);
        }
    });
    out
}

/// Gradients as `[pred grads (n·4) | target grads (n·4)]`, or only the one of them that
/// `want = (pred, target)` asks for.
fn backward<T: Elem>(kind: AlignedLoss, eps: f64, p: &[T], t: &[T], g: &[T], want: (bool, bool)) -> Vec<T> {
    let n = p.len() / 4;
    let grad = |i: usize| pair(kind, boxes(p, i), boxes(t, i), eps, Some(g[i].to_f64())).1;
    let write = |dst: &mut [T], src: &[f64]| {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = T::from_f64(*s);
        }
    };
    if want.0 && want.1 {
        let mut out = vec![T::from_f64(0.0); 8 * n];
        let (gp, gt) = out.split_at_mut(4 * n);
        gp.par_chunks_mut(4 * CHUNK)
            .zip(gt.par_chunks_mut(4 * CHUNK))
            .enumerate()
            .for_each(|(c, (cp, ct))| {
                for j in 0..cp.len() / 4 {
                    let d = grad(c * CHUNK + j);
                    write(&mut cp[4 * j..4 * j + 4], &d[..4]);
                    write(&mut ct[4 * j..4 * j + 4], &d[4..]);
                }
            });
        out
    } else {
        let off = if want.0 { 0 } else { 4 };
        let mut out = vec![T::from_f64(0.0); 4 * n];
        out.par_chunks_mut(4 * CHUNK).enumerate().for_each(|(c, cp)| {
            for j in 0..cp.len() / 4 {
                let d = grad(c * CHUNK + j);
                write(&mut cp[4 * j..4 * j + 4], &d[off..off + 4]);
            }
        });
        out
    }
}

/// `CustomOp2(pred, target) -> loss [...]`, the fused forward.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FusedLoss {
    pub kind: AlignedLoss,
    pub eps: f64,
}

/// `CustomOp3(pred, target, upstream) -> [k, ..., 4]`: the gradients w.r.t. pred and/or
/// target (`k` = how many of `want` are set).
#[derive(Debug, Clone, Copy)]
struct FusedLossGrad {
    op: FusedLoss,
    /// `(pred, target)`: which gradients to compute.
    want: (bool, bool),
}

fn out_shape(l: &Layout) -> Shape {
    let d = l.dims();
    Shape::from(&d[..d.len() - 1])
}

impl CustomOp2 for FusedLoss {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(p), CpuStorage::F32(t)) => {
                CpuStorage::F32(forward(self.kind, self.eps, &elems(p, l1), &elems(t, l2)))
            }
            (CpuStorage::F64(p), CpuStorage::F64(t)) => {
                CpuStorage::F64(forward(self.kind, self.eps, &elems(p, l1), &elems(t, l2)))
            }
            _ => bail!(
                "{}: the fused kernel takes f32 or f64 boxes of one dtype, got {:?} and {:?}",
                self.name(),
                s1.dtype(),
                s2.dtype()
            ),
        };
        Ok((out, out_shape(l1)))
    }

    fn bwd(
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
        let g = pred.apply_op3_no_bwd(target, grad, &FusedLossGrad { op: *self, want })?;
        Ok(match want {
            (true, true) => (Some(g.get(0)?), Some(g.get(1)?)),
            (true, false) => (Some(g.get(0)?), None),
            _ => (None, Some(g.get(0)?)),
        })
    }
}

impl CustomOp3 for FusedLossGrad {
    fn name(&self) -> &'static str {
        "fused-box-loss-grad"
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
        let FusedLoss { kind, eps } = self.op;
        let want = self.want;
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(p), CpuStorage::F32(t), CpuStorage::F32(g)) => {
                CpuStorage::F32(backward(kind, eps, &elems(p, l1), &elems(t, l2), &elems(g, l3), want))
            }
            (CpuStorage::F64(p), CpuStorage::F64(t), CpuStorage::F64(g)) => {
                CpuStorage::F64(backward(kind, eps, &elems(p, l1), &elems(t, l2), &elems(g, l3), want))
            }
            _ => bail!("{}: expected f32 or f64 tensors of one dtype", self.name()),
        };
        let mut dims = vec![usize::from(want.0) + usize::from(want.1)];
        dims.extend_from_slice(l1.dims());
        Ok((out, Shape::from(dims)))
    }
}

/// The elementwise loss of `kind` through the fused kernel (`pred`, `target`: validated
/// `[..., 4]` CPU tensors of one float dtype f32/f64). Output `[...]`.
pub(crate) fn elementwise(kind: AlignedLoss, pred: &Tensor, target: &Tensor, eps: f64) -> Result<Tensor> {
    pred.apply_op2(target, FusedLoss { kind, eps })
}
