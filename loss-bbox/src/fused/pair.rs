//! The pair kernel of the torchvision family, written once over the float ([`aligned`]: the f64
//! kernel [`pair()`] and the f32 block kernel's lanes), the one chain rule of every pair kernel
//! ([`Chain::into_coords`]: the gradient w.r.t. a pair's intersection, enclosing box, centre
//! offset and sides taken back to its eight coordinates), and the float the pair kernels are
//! written over ([`PairReal`]). Used by the f32 block kernel ([`super::block_f32`], for its
//! lanes and its f64 recomputation) and the IoU successors ([`super::successors`]); it imports
//! neither.

use crate::geometry::{aspect_angle_scalar, max_w, min_w, sel, ASPECT_K};
use crate::kinds::{AlignedLoss, IouMode};
use loss_core::kernel::Real;
use loss_core::ops::Unary;

/// The float of the pair kernels: [`Real`] plus the functions whose f32 form (the block
/// kernel's lanes, [`super::block_f32`]) differs from the f64 one: the aspect angle and the
/// power (libm in f64), and the quotients (f32 multiplies by a reciprocal). `aspect` and `pow_d`
/// also say whether their f32 result may stray from the f64 one (`risky`: the lane is then
/// recomputed in f64); f64 is never risky.
pub(crate) trait PairReal: Real {
    /// The aspect angle of a `w × h` box and its gradient, `(θ, ∂θ/∂w, ∂θ/∂h, risky)`, with the
    /// conventions of [`aspect_angle_scalar`] (`±π/2` at `h = 0`, 0 and a zero gradient for a
    /// point box).
    fn aspect(w: Self, h: Self) -> (Self, Self, Self, bool);
    /// `x^e` and its derivative as [`Unary::Pow`] (the derivative's infinity, `e < 1` at 0,
    /// clamped to the largest finite number as `loss_core::ops::attach_grad`, so `0 · ∞` is 0);
    /// `(value, derivative, risky)`. f32: `exp(e·ln x)`, risky for `x <= 0`.
    fn pow_d(x: Self, e: Self) -> (Self, Self, bool);
    /// `a / b`. f64 divides, as the composite path (`loss_core::ops::div`); f32 multiplies by
    /// `1 / b`, which LLVM computes once per divisor in a lane.
    fn quot(a: Self, b: Self) -> Self;
    /// `a / b²`. f64 `a / (b·b)`, as the composite path; f32 `(a · (1/b)) · (1/b)`, with no `b²`
    /// to overflow.
    fn quot_sq(a: Self, b: Self) -> Self;
}

impl PairReal for f64 {
    #[inline(always)]
    fn aspect(w: f64, h: f64) -> (f64, f64, f64, bool) {
        let (theta, dw, dh) = aspect_angle_scalar(w, h);
        (theta, dw, dh, false)
    }

    #[inline(always)]
    fn pow_d(x: f64, e: f64) -> (f64, f64, bool) {
        if e == 3.0 {
            // No libm call.
            return (x * x * x, 3.0 * x * x, false);
        }
        let p = Unary::Pow { exponent: e };
        (p.value(x), p.derivative(x).clamp(-f64::MAX, f64::MAX), false)
    }

    #[inline(always)]
    fn quot(a: f64, b: f64) -> f64 {
        a / b
    }

    #[inline(always)]
    fn quot_sq(a: f64, b: f64) -> f64 {
        a / (b * b)
    }
}

/// The aligned losses ([`AlignedLoss`]) as const codes of [`aligned`] (the dispatch on the loss
/// happens once, outside the loops).
pub(crate) const IOU_LINEAR: u8 = 0;
/// See [`IOU_LINEAR`].
pub(crate) const IOU_SQUARE: u8 = 1;
/// See [`IOU_LINEAR`].
pub(crate) const IOU_LOG: u8 = 2;
/// See [`IOU_LINEAR`].
pub(crate) const GIOU: u8 = 3;
/// See [`IOU_LINEAR`].
pub(crate) const DIOU: u8 = 4;
/// See [`IOU_LINEAR`].
pub(crate) const CIOU: u8 = 5;
/// See [`IOU_LINEAR`].
pub(crate) const EIOU: u8 = 6;

/// The loss of one pair in f64 and, with `g = Some(upstream)`, its gradient w.r.t. `p` and `t`.
///
/// `p` and `t` are `xyxy` boxes. See [`crate::losses`] for the formulas; computed by [`aligned`].
#[inline]
pub(crate) fn pair(kind: AlignedLoss, p: [f64; 4], t: [f64; 4], eps: f64, g: Option<f64>) -> (f64, [f64; 8]) {
    let c = [p[0], p[1], p[2], p[3], t[0], t[1], t[2], t[3]];
    let (v, d) = match g {
        Some(g) => {
            let (v, d, _) = by_kind(kind, c, eps, g);
            (v, d)
        }
        // The gradient unused: the inlined kernel drops it.
        None => (by_kind(kind, c, eps, 0.0).0, [0.0; 8]),
    };
    (
        if kind == AlignedLoss::Iou(IouMode::Log) {
            -v.ln()
        } else {
            v
        },
        d,
    )
}

/// [`aligned`] with the loss chosen at run time.
#[inline(always)]
fn by_kind<F: PairReal>(kind: AlignedLoss, c: [F; 8], eps: F, g: F) -> (F, [F; 8], bool) {
    match kind {
        AlignedLoss::Iou(IouMode::Linear) => aligned::<F, IOU_LINEAR>(c, eps, g),
        AlignedLoss::Iou(IouMode::Square) => aligned::<F, IOU_SQUARE>(c, eps, g),
        AlignedLoss::Iou(IouMode::Log) => aligned::<F, IOU_LOG>(c, eps, g),
        AlignedLoss::Giou => aligned::<F, GIOU>(c, eps, g),
        AlignedLoss::Diou => aligned::<F, DIOU>(c, eps, g),
        AlignedLoss::Ciou => aligned::<F, CIOU>(c, eps, g),
        AlignedLoss::Eiou => aligned::<F, EIOU>(c, eps, g),
    }
}

/// One pair of the loss with code `K` ([`IOU_LINEAR`] ..): `(value, gradients
/// [p.x1, p.y1, p.x2, p.y2, t.x1, ..., t.y2] for the upstream g, risky)`, with
/// `c = [p.x1, p.y1, p.x2, p.y2, t.x1, ..., t.y2]` (`xyxy` boxes). See [`crate::losses`] for the
/// formulas. For [`IOU_LOG`] the value is `max(IoU, eps)` (the caller takes `−ln` of it: the f32
/// block kernel outside its vectorised loop). `risky`: an f32 aspect angle outside f32's safe
/// range ([`PairReal::aspect`]); never for f64.
///
/// The one source of the f64 kernel ([`pair()`]) and of the f32 block kernel's lanes
/// ([`super::block_f32`]): branch-free (selects, no early returns), so that LLVM vectorises it
/// over the lanes. Where the two floats differ, [`PairReal`] says how: its quotients divide in
/// f64, as the composite path, and multiply by one reciprocal per divisor in f32.
///
/// Callers that use only the value or only the gradients let LLVM drop the rest (everything
/// here is inlined and pure).
#[inline(always)]
pub(crate) fn aligned<F: PairReal, const K: u8>(c: [F; 8], eps: F, g: F) -> (F, [F; 8], bool) {
    let (zero, one, half, two) = (F::zero(), F::one(), F::of(0.5), F::of(2.0));
    let [px1, py1, px2, py2, tx1, ty1, tx2, ty2] = c;
    // Intersection (torchvision's masked form).
    let (ix1, ix1_p, ix1_t) = max_w(px1, tx1);
    let (iy1, iy1_p, iy1_t) = max_w(py1, ty1);
    let (ix2, ix2_p, ix2_t) = min_w(px2, tx2);
    let (iy2, iy2_p, iy2_t) = min_w(py2, ty2);
    let (iw, ih) = (ix2 - ix1, iy2 - iy1);
    let overlap = (iw > zero) & (ih > zero);
    let inter = sel(overlap, iw * ih, zero);
    let (pw, ph, tw, th) = (px2 - px1, py2 - py1, tx2 - tx1, ty2 - ty1);
    let union = pw * ph + tw * th - inter;
    let ue = union + eps;
    let iou = inter / ue;

    // Value and the partials w.r.t. the intermediate quantities.
    let mut g_iou = -one;
    let mut loss = one - iou;
    let (mut g_union, mut g_cw, mut g_ch, mut g_dx, mut g_dy) = (zero, zero, zero, zero, zero);
    let (mut g_pw, mut g_ph, mut g_tw, mut g_th) = (zero, zero, zero, zero);
    let mut risky = false;
    // Enclosing box.
    let (cx1, cx1_p, cx1_t) = min_w(px1, tx1);
    let (cx2, cx2_p, cx2_t) = max_w(px2, tx2);
    let (cy1, cy1_p, cy1_t) = min_w(py1, ty1);
    let (cy2, cy2_p, cy2_t) = max_w(py2, ty2);
    let (cw, ch) = (cx2 - cx1, cy2 - cy1);
    match K {
        IOU_LINEAR => {}
        IOU_SQUARE | IOU_LOG => {
            let inside = (iou >= eps) | iou.is_nan();
            let c = sel(inside, iou, eps);
            if K == IOU_SQUARE {
                loss = one - c * c;
                g_iou = sel(inside, -two * c, zero);
            } else {
                loss = c;
                g_iou = sel(inside, -one / c, zero);
            }
        }
        GIOU => {
            let ac = cw * ch;
            let ace = ac + eps;
            let q = F::quot(ac - union, ace);
            loss += q;
            // d q / d ac = (1 − q) / ace (= ue / ace², without the square), as the composite
            // path's division (`loss_core::ops::div`).
            let g_ac = F::quot(one - q, ace);
            g_union -= F::quot(one, ace);
            g_cw += g_ac * ch;
            g_ch += g_ac * cw;
        }
        _ => {
            // DIoU, CIoU, EIoU
            let diag = cw * cw + ch * ch + eps;
            let dx = half * (px1 + px2 - tx1 - tx2);
            let dy = half * (py1 + py2 - ty1 - ty2);
            let rho2 = dx * dx + dy * dy;
            loss += F::quot(rho2, diag);
            let g_diag = -F::quot_sq(rho2, diag);
            g_cw += two * cw * g_diag;
            g_ch += two * ch * g_diag;
            g_dx += F::quot(two * dx, diag);
            g_dy += F::quot(two * dy, diag);
            if K == CIOU {
                let (ap, ap_w, ap_h, rp) = F::aspect(pw, ph);
                let (at, at_w, at_h, rt) = F::aspect(tw, th);
                risky = rp | rt;
                let d = at - ap;
                let aspect_k = F::of(ASPECT_K);
                let v = aspect_k * d * d;
                // alpha is a constant for the gradient (torch.no_grad in torchvision).
                let alpha = v / (one - iou + v + eps);
                loss += alpha * v;
                let g_theta = two * aspect_k * d * alpha; // d(alpha v)/d(theta_t)
                g_tw += g_theta * at_w;
                g_th += g_theta * at_h;
                g_pw -= g_theta * ap_w;
                g_ph -= g_theta * ap_h;
            } else if K == EIOU {
                let (dw, dh) = (pw - tw, ph - th);
                let (cw2, ch2) = (cw * cw + eps, ch * ch + eps);
                let (ew, eh) = (F::quot(dw * dw, cw2), F::quot(dh * dh, ch2));
                loss += ew + eh;
                g_pw += F::quot(two * dw, cw2);
                g_tw -= F::quot(two * dw, cw2);
                g_ph += F::quot(two * dh, ch2);
                g_th -= F::quot(two * dh, ch2);
                // 2·cw·dw²/cw2², as (dw²/cw2)/cw2: no cw2² to overflow.
                g_cw -= F::quot(two * cw * ew, cw2);
                g_ch -= F::quot(two * ch * eh, ch2);
            }
        }
    }

    // Chain back to the coordinates, everything scaled by the upstream gradient g.
    let mut g_inter = F::quot(g * g_iou, ue);
    let g_union = g * (g_union - F::quot(g_iou * iou, ue));
    g_inter -= g_union;
    let chain = Chain {
        iw: sel(overlap, g_inter * ih, zero),
        ih: sel(overlap, g_inter * iw, zero),
        cw: g * g_cw,
        ch: g * g_ch,
        sides: [
            g * g_pw + g_union * ph,
            g * g_ph + g_union * pw,
            g * g_tw + g_union * th,
            g * g_th + g_union * tw,
        ],
        half_dx: half * g * g_dx,
        half_dy: half * g * g_dy,
        inter_w: [ix1_p, ix1_t, ix2_p, ix2_t, iy1_p, iy1_t, iy2_p, iy2_t],
        outer_w: [cx1_p, cx1_t, cx2_p, cx2_t, cy1_p, cy1_t, cy2_p, cy2_t],
    };
    (loss, chain.into_coords(), risky)
}

/// The gradient of one pair's loss w.r.t. its intermediate quantities (already times the
/// upstream gradient), and the `max`/`min` weights of the extents they came through: what
/// [`Chain::into_coords`] takes back to the eight coordinates. One chain rule for the f64 [`pair`]
/// and the f32 block kernel ([`super::block_f32`]).
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
        add_extents(&mut gp, &mut gt, self.iw, self.ih, self.inter_w);
        add_extents(&mut gp, &mut gt, self.cw, self.ch, self.outer_w);
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

/// Adds the gradient `(g_w, g_h)` w.r.t. the extents `w = x2 − x1`, `h = y2 − y1` of a box whose
/// corners are `max`/`min`s of the two boxes' corners (the intersection, the enclosing box) to
/// the coordinates' gradients, through those `max`/`min`s' weights `w8` (in
/// [`Chain::inter_w`]'s order).
#[inline(always)]
fn add_extents<F: Real>(gp: &mut [F; 4], gt: &mut [F; 4], g_w: F, g_h: F, w8: [F; 8]) {
    let [x1_p, x1_t, x2_p, x2_t, y1_p, y1_t, y2_p, y2_t] = w8;
    gp[0] -= g_w * x1_p;
    gt[0] -= g_w * x1_t;
    gp[2] += g_w * x2_p;
    gt[2] += g_w * x2_t;
    gp[1] -= g_h * y1_p;
    gt[1] -= g_h * y1_t;
    gp[3] += g_h * y2_p;
    gt[3] += g_h * y2_t;
}
