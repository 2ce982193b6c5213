//! The f64 pair kernel of the torchvision family ([`pair`]) and the one chain rule of every pair
//! kernel ([`Chain::into_coords`]): the gradient w.r.t. a pair's intersection, enclosing box,
//! centre offset and sides taken back to its eight coordinates, and the float the pair kernels
//! are written over ([`PairReal`]). Used by the f32 block kernel ([`super::block_f32`], for its
//! lanes and its f64 recomputation) and the IoU successors ([`super::successors`]); it imports
//! neither.

use crate::geometry::{aspect_angle_scalar, max_w, min_w, ASPECT_K};
use crate::kinds::{AlignedLoss, IouMode};
use loss_core::kernel::Real;
use loss_core::ops::Unary;

/// The float of the pair kernels: [`Real`] plus the two functions whose f32 form (the block
/// kernel's lanes, [`super::block_f32`]) is not the f64 one (libm). Each also says whether its
/// f32 result may stray from the f64 one (`risky`: the lane is then recomputed in f64); f64 is
/// never risky.
pub(crate) trait PairReal: Real {
    /// The aspect angle of a `w × h` box and its gradient, `(θ, ∂θ/∂w, ∂θ/∂h, risky)`, with the
    /// conventions of [`aspect_angle_scalar`] (`±π/2` at `h = 0`, 0 and a zero gradient for a
    /// point box).
    fn aspect(w: Self, h: Self) -> (Self, Self, Self, bool);
    /// `x^e` and its derivative as [`Unary::Pow`] (the derivative's infinity, `e < 1` at 0,
    /// clamped to the largest finite number as `loss_core::ops::attach_grad`, so `0 · ∞` is 0);
    /// `(value, derivative, risky)`. f32: `exp(e·ln x)`, risky for `x <= 0`.
    fn pow_d(x: Self, e: Self) -> (Self, Self, bool);
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
}

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
