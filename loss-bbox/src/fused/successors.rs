//! The pair kernel of the IoU successors ([`crate::iou_successors`]): one pass over the shared
//! geometry of a pair ([`Geometry`]: intersection, enclosing box, centre offset, sides), each
//! successor's formula on it, and its gradient as the partials w.r.t. those quantities
//! ([`Partials`]), taken back to the eight coordinates by the box losses' one chain rule
//! ([`Chain::into_coords`]).
//!
//! Scalar f64 code for f32 and f64 boxes (run in parallel chunks by [`super`]); the formulas,
//! eps placements, detached terms and gradient rules at kinks are exactly those of the composite
//! forms in [`crate::iou_successors`] (held equal by `tests/fused.rs`): `max`/`min` split ½/½ at
//! a tie, `clamp` passes the gradient at its bound, `|x|` has derivative 0 at 0, a 0/0 of
//! `div_or_zero` is 0 with a zero gradient, powers follow [`Unary::Pow`].

use super::pair::Chain;
use crate::geometry::{aspect_angle_scalar, max_w, min_w, ASPECT_K};
use crate::kinds::{AlphaIouBase, InnerIouBase, WiseIouVersion};
use loss_core::ops::Unary;

/// Which successor, with its options (the kernel's `eps` is passed beside it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Successor {
    /// `alpha_iou_loss`.
    Alpha { alpha: f64, base: AlphaIouBase },
    /// `mpdiou_loss`, `norm = 1/(W² + H²)`.
    Mpd { norm: f64 },
    /// `inner_iou_loss`.
    Inner { ratio: f64, base: InnerIouBase },
    /// `shape_iou_loss`.
    Shape { scale: f64 },
    /// `wise_iou_loss` (no eps).
    Wise {
        version: WiseIouVersion,
        mean: f64,
        alpha: f64,
        delta: f64,
    },
    /// `focaler_iou_loss`.
    Focaler { d: f64, u: f64 },
    /// `nwd_loss`.
    Nwd { constant: f64 },
    /// `siou_loss` (mmdetection's SIoU).
    Siou { neg_gamma: bool },
}

impl Successor {
    /// The loss's function name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Alpha { .. } => "alpha_iou_loss",
            Self::Mpd { .. } => "mpdiou_loss",
            Self::Inner { .. } => "inner_iou_loss",
            Self::Shape { .. } => "shape_iou_loss",
            Self::Wise { .. } => "wise_iou_loss",
            Self::Focaler { .. } => "focaler_iou_loss",
            Self::Nwd { .. } => "nwd_loss",
            Self::Siou { .. } => "siou_loss",
        }
    }

    /// The loss of one pair and, with `g = Some(upstream)`, its gradient w.r.t. `p` and `t`.
    #[inline]
    pub(crate) fn pair(self, p: [f64; 4], t: [f64; 4], eps: f64, g: Option<f64>) -> (f64, [f64; 8]) {
        let geo = Geometry::new(p, t);
        let mut d = Partials::default();
        let loss = match self {
            Self::Alpha { alpha, base } => alpha_iou(&geo, alpha, base, eps, &mut d),
            Self::Mpd { norm } => mpdiou(&geo, norm, eps, &mut d),
            Self::Inner { ratio, base } => inner_iou(&geo, ratio, base, eps, &mut d),
            Self::Shape { scale } => shape_iou(&geo, scale, eps, &mut d),
            Self::Wise {
                version,
                mean,
                alpha,
                delta,
            } => wise_iou(&geo, version, mean, alpha, delta, &mut d),
            Self::Focaler { d: lo, u } => {
                let iou = Iou::new(&geo, eps, eps);
                let k = 1.0 / (u - lo);
                let m = iou.r * k + (-lo * k);
                let c = Unary::Clamp { lo: 0.0, hi: 1.0 };
                iou.back(&geo, -k * c.derivative(m), 0.0, &mut d);
                1.0 - c.value(m)
            }
            Self::Nwd { constant } => nwd(&geo, constant, eps, &mut d),
            Self::Siou { neg_gamma } => siou(&geo, neg_gamma, eps, &mut d),
        };
        match g {
            None => (loss, [0.0; 8]),
            Some(g) => (loss, d.chain(&geo, g).into_coords()),
        }
    }
}

/// The quantities of a pair every successor reads, with the `max`/`min` weights of the extents.
struct Geometry {
    /// The boxes.
    p: [f64; 4],
    t: [f64; 4],
    /// `(w_p, h_p, w_t, h_t)`.
    sides: [f64; 4],
    /// Intersection extents, unclamped.
    iw: f64,
    ih: f64,
    /// Enclosing extents.
    cw: f64,
    ch: f64,
    /// Centre offset `c_p − c_t`.
    dx: f64,
    dy: f64,
    inter_w: [f64; 8],
    outer_w: [f64; 8],
}

impl Geometry {
    #[inline(always)]
    fn new(p: [f64; 4], t: [f64; 4]) -> Self {
        let [px1, py1, px2, py2] = p;
        let [tx1, ty1, tx2, ty2] = t;
        let (ix1, ix1_p, ix1_t) = max_w(px1, tx1);
        let (iy1, iy1_p, iy1_t) = max_w(py1, ty1);
        let (ix2, ix2_p, ix2_t) = min_w(px2, tx2);
        let (iy2, iy2_p, iy2_t) = min_w(py2, ty2);
        let (cx1, cx1_p, cx1_t) = min_w(px1, tx1);
        let (cy1, cy1_p, cy1_t) = min_w(py1, ty1);
        let (cx2, cx2_p, cx2_t) = max_w(px2, tx2);
        let (cy2, cy2_p, cy2_t) = max_w(py2, ty2);
        Self {
            p,
            t,
            sides: [px2 - px1, py2 - py1, tx2 - tx1, ty2 - ty1],
            iw: ix2 - ix1,
            ih: iy2 - iy1,
            cw: cx2 - cx1,
            ch: cy2 - cy1,
            // The composite's order: the sums first, so equal centres give exactly 0.
            dx: 0.5 * ((px1 + px2) - (tx1 + tx2)),
            dy: 0.5 * ((py1 + py2) - (ty1 + ty2)),
            inter_w: [ix1_p, ix1_t, ix2_p, ix2_t, iy1_p, iy1_t, iy2_p, iy2_t],
            outer_w: [cx1_p, cx1_t, cx2_p, cx2_t, cy1_p, cy1_t, cy2_p, cy2_t],
        }
    }

    /// `ρ² = dx² + dy²`.
    #[inline(always)]
    fn rho2(&self) -> f64 {
        self.dx * self.dx + self.dy * self.dy
    }
}

/// The partials of a pair's loss w.r.t. the quantities of [`Geometry`] (not yet times the
/// upstream gradient).
#[derive(Default)]
struct Partials {
    iw: f64,
    ih: f64,
    cw: f64,
    ch: f64,
    dx: f64,
    dy: f64,
    sides: [f64; 4],
}

impl Partials {
    /// `∂/∂ρ²` as partials of the centre offset.
    #[inline(always)]
    fn rho2(&mut self, geo: &Geometry, g: f64) {
        self.dx += 2.0 * geo.dx * g;
        self.dy += 2.0 * geo.dy * g;
    }

    /// `∂/∂(C_w² + C_h²)` as partials of the enclosing extents.
    #[inline(always)]
    fn diag2(&mut self, geo: &Geometry, g: f64) {
        self.cw += 2.0 * geo.cw * g;
        self.ch += 2.0 * geo.ch * g;
    }

    /// The angle difference `θ_t − θ_p`, `θ = atan(w/(h + h_eps))`, and a closure-free way to
    /// add `g_d · ∂(θ_t − θ_p)`: returns `(d, [∂d/∂w_p, ∂d/∂h_p, ∂d/∂w_t, ∂d/∂h_t])`.
    #[inline(always)]
    fn angle_diff(geo: &Geometry, h_eps: f64) -> (f64, [f64; 4]) {
        let [pw, ph, tw, th] = geo.sides;
        let (ap, ap_w, ap_h) = aspect_angle_scalar(pw, ph + h_eps);
        let (at, at_w, at_h) = aspect_angle_scalar(tw, th + h_eps);
        (at - ap, [-ap_w, -ap_h, at_w, at_h])
    }

    #[inline(always)]
    fn add_sides(&mut self, g: f64, d: [f64; 4]) {
        for (s, x) in self.sides.iter_mut().zip(d) {
            *s += g * x;
        }
    }

    /// The [`Chain`] of these partials for the upstream gradient `g`.
    #[inline(always)]
    fn chain(self, geo: &Geometry, g: f64) -> Chain<f64> {
        Chain {
            iw: g * self.iw,
            ih: g * self.ih,
            cw: g * self.cw,
            ch: g * self.ch,
            sides: self.sides.map(|s| g * s),
            half_dx: 0.5 * g * self.dx,
            half_dy: 0.5 * g * self.dy,
            inter_w: geo.inter_w,
            outer_w: geo.outer_w,
        }
    }
}

/// `clamp(x, 0)` with `torch.clamp`'s gradient (1 on `[0, ∞)`).
#[inline(always)]
fn clamp0(x: f64) -> (f64, f64) {
    clamp_at(x, 0.0)
}

/// A ratio `R = I/U` of the clamped intersection `I = clamp(w_I, 0)·clamp(h_I, 0)` and
/// `U = w_p·(h_p + h_eps) + w_t·(h_t + h_eps) − I + u_eps` (ops::div's gradient), or with
/// `u_eps = 0` and `zero_safe`, 0 with a zero gradient where `U = 0` (Wise-IoU).
struct Iou {
    r: f64,
    u: f64,
    h_eps: f64,
    /// `(clamp(w_I), ∂clamp/∂w_I, clamp(h_I), ∂clamp/∂h_I)`.
    clamps: [f64; 4],
}

impl Iou {
    #[inline(always)]
    fn new(geo: &Geometry, h_eps: f64, u_eps: f64) -> Self {
        let [pw, ph, tw, th] = geo.sides;
        let ((cw, dw), (ch, dh)) = (clamp0(geo.iw), clamp0(geo.ih));
        let inter = cw * ch;
        let u = pw * (ph + h_eps) + tw * (th + h_eps) - inter + u_eps;
        Self {
            r: inter / u,
            u,
            h_eps,
            clamps: [cw, dw, ch, dh],
        }
    }

    /// The Wise-IoU form: no eps, `I/U = 0` (zero gradient) where `U = 0`.
    #[inline(always)]
    fn or_zero(geo: &Geometry) -> Self {
        let mut s = Self::new(geo, 0.0, 0.0);
        if s.u == 0.0 {
            s.r = 0.0;
            s.u = f64::INFINITY; // every partial below becomes 0
        }
        s
    }

    /// Adds `g_r · ∂R` plus `g_u · ∂U` (a term that reads `U` directly) to `d`.
    #[inline(always)]
    fn back(&self, geo: &Geometry, g_r: f64, g_u: f64, d: &mut Partials) {
        if self.u.is_infinite() && self.r == 0.0 {
            return;
        }
        let [pw, ph, tw, th] = geo.sides;
        let [cw, dw, ch, dh] = self.clamps;
        let g_u = g_u - g_r * self.r / self.u;
        let g_i = g_r / self.u - g_u;
        d.iw += g_i * ch * dw;
        d.ih += g_i * cw * dh;
        d.add_sides(g_u, [ph + self.h_eps, pw, th + self.h_eps, tw]);
    }
}

/// `x^e` and its derivative, as [`Unary::Pow`], the derivative's infinity (`e < 1` at 0) clamped
/// to the largest finite number as [`loss_core::ops::attach_grad`] (so `0 · ∞` is 0).
#[inline(always)]
fn pow(x: f64, e: f64) -> (f64, f64) {
    if e == 3.0 {
        // The default of Alpha-IoU: no libm call.
        return (x * x * x, 3.0 * x * x);
    }
    let p = Unary::Pow { exponent: e };
    (p.value(x), p.derivative(x).clamp(-f64::MAX, f64::MAX))
}

/// `num/den` where `den ≠ 0`, else 0: `(value, nonzero)`.
#[inline(always)]
fn div_or_zero(num: f64, den: f64) -> (f64, bool) {
    if den == 0.0 {
        (0.0, false)
    } else {
        (num / den, true)
    }
}

#[inline(always)]
fn alpha_iou(geo: &Geometry, alpha: f64, base: AlphaIouBase, eps: f64, d: &mut Partials) -> f64 {
    let iou = Iou::new(geo, eps, eps);
    let (powered, dp) = pow(iou.r + eps, alpha);
    let mut loss = 1.0 - powered;
    let mut g_u = 0.0;
    let g_r = -dp;
    match base {
        AlphaIouBase::Iou => {}
        AlphaIouBase::Giou => {
            let area = geo.cw * geo.ch + eps;
            let (c, c_a, c_u) = max_w(area, iou.u);
            let q = (c - iou.u) / c;
            let (pq, dq) = pow(q + eps, alpha);
            loss += pq;
            // q = (c − U)/c: ∂q/∂c = (1 − q)/c, ∂q/∂U = −1/c.
            let g_c = dq * (1.0 - q) / c;
            g_u += g_c * c_u - dq / c;
            d.cw += g_c * c_a * geo.ch;
            d.ch += g_c * c_a * geo.cw;
        }
        AlphaIouBase::Diou | AlphaIouBase::Ciou => {
            let (rp, drp) = pow(geo.rho2(), alpha);
            let (cp, dcp) = pow(geo.cw * geo.cw + geo.ch * geo.ch, alpha);
            let c2 = cp + eps;
            let diou = rp / c2;
            loss += diou;
            d.rho2(geo, drp / c2);
            d.diag2(geo, -diou / c2 * dcp);
            if base == AlphaIouBase::Ciou {
                let (a_d, da) = Partials::angle_diff(geo, eps);
                let v = ASPECT_K * a_d * a_d;
                let a = if v == 0.0 {
                    0.0
                } else {
                    div_or_zero(v, (1.0 + eps) - iou.r + v).0
                };
                let (pv, dv) = pow(v * a + eps, alpha);
                loss += pv;
                d.add_sides(dv * a * 2.0 * ASPECT_K * a_d, da);
            }
        }
    }
    iou.back(geo, g_r, g_u, d);
    loss
}

#[inline(always)]
fn mpdiou(geo: &Geometry, norm: f64, eps: f64, d: &mut Partials) -> f64 {
    let iou = Iou::new(geo, eps, eps);
    iou.back(geo, -1.0, 0.0, d);
    let [pw, ph, tw, th] = geo.sides;
    // The corner offsets p − t: x1 = dx − (w_p − w_t)/2, x2 = dx + (w_p − w_t)/2.
    let (sw, sh) = (0.5 * (pw - tw), 0.5 * (ph - th));
    let (x1, x2, y1, y2) = (geo.dx - sw, geo.dx + sw, geo.dy - sh, geo.dy + sh);
    let (gx1, gx2, gy1, gy2) = (2.0 * x1 * norm, 2.0 * x2 * norm, 2.0 * y1 * norm, 2.0 * y2 * norm);
    d.dx += gx1 + gx2;
    d.dy += gy1 + gy2;
    let (gw, gh) = (0.5 * (gx2 - gx1), 0.5 * (gy2 - gy1));
    d.add_sides(1.0, [gw, gh, -gw, -gh]);
    1.0 - iou.r + (x1 * x1 + y1 * y1 + x2 * x2 + y2 * y2) * norm
}

#[inline(always)]
fn inner_iou(geo: &Geometry, ratio: f64, base: InnerIouBase, eps: f64, d: &mut Partials) -> f64 {
    let [pw, ph, tw, th] = geo.sides;
    let hr = 0.5 * ratio;
    // The auxiliary boxes `c ∓ w·ratio/2` as the composite form computes them (the same ties).
    let aux = |lo: f64, hi: f64| {
        let (c, h) = ((lo + hi) * 0.5, (hi - lo) * hr);
        (c - h, c + h)
    };
    // One axis: the extent of the auxiliary boxes' intersection and its partials w.r.t. the
    // centre offset and the two sides.
    let inner = |k: usize| {
        let (p1, p2) = aux(geo.p[k], geo.p[k + 2]);
        let (t1, t2) = aux(geo.t[k], geo.t[k + 2]);
        let (lo, lo_p, lo_t) = max_w(p1, t1);
        let (hi, hi_p, hi_t) = min_w(p2, t2);
        (hi - lo, hi_p - lo_p, hr * (hi_p + lo_p), hr * (hi_t + lo_t))
    };
    let (iw, iw_off, iw_p, iw_t) = inner(0);
    let (ih, ih_off, ih_p, ih_t) = inner(1);
    let ((cw, dw), (ch, dh)) = (clamp0(iw), clamp0(ih));
    let inter = cw * ch;
    let u = (pw * ratio) * (ph * ratio) + (tw * ratio) * (th * ratio) - inter + eps;
    let r = inter / u;
    let mut loss = 1.0 - r;
    let g_u = r / u;
    let g_i = -1.0 / u - g_u;
    let (g_iw, g_ih) = (g_i * ch * dw, g_i * cw * dh);
    d.dx += g_iw * iw_off;
    d.dy += g_ih * ih_off;
    d.add_sides(1.0, [g_iw * iw_p, g_ih * ih_p, g_iw * iw_t, g_ih * ih_t]);
    d.add_sides(g_u * ratio * ratio, [ph, pw, th, tw]);
    if base == InnerIouBase::Ciou {
        let iou = Iou::new(geo, 0.0, eps).r;
        let diag = geo.cw * geo.cw + geo.ch * geo.ch + eps;
        let dist = geo.rho2() / diag;
        d.rho2(geo, 1.0 / diag);
        d.diag2(geo, -dist / diag);
        let (a_d, da) = Partials::angle_diff(geo, 0.0);
        let v = ASPECT_K * a_d * a_d;
        let a = div_or_zero(v, (v - iou) + (1.0 + eps)).0;
        d.add_sides(a * 2.0 * ASPECT_K * a_d, da);
        loss += dist + a * v;
    }
    loss
}

/// `(1 − e^{−ω})⁴` and its derivative.
#[inline(always)]
fn shape_term(omega: f64) -> (f64, f64) {
    let e = (-omega).exp();
    let m = 1.0 - e;
    let m2 = m * m;
    (m2 * m2, 4.0 * m2 * m * e)
}

/// `(1 − e^{−ω})⁴` of `ω = div_or_zero(k·|a − b|, max(a, b))` and its partials w.r.t.
/// `(k, a, b)` (Shape-IoU's and SIoU's shape cost).
#[inline(always)]
fn shape_cost(k: f64, a: f64, b: f64) -> (f64, [f64; 3]) {
    let diff = a - b;
    let (abs, sign) = (diff.abs(), Unary::Abs.derivative(diff));
    let (m, m_a, m_b) = max_w(a, b);
    let (om, live) = div_or_zero(k * abs, m);
    let (st, g_om) = shape_term(om);
    if !live {
        return (st, [0.0; 3]);
    }
    let g_num = g_om / m;
    let g_m = -om / m * g_om;
    let g_diff = g_num * k * sign;
    (st, [g_num * abs, g_diff + g_m * m_a, -g_diff + g_m * m_b])
}

#[inline(always)]
fn shape_iou(geo: &Geometry, scale: f64, eps: f64, d: &mut Partials) -> f64 {
    let iou = Iou::new(geo, 0.0, eps);
    iou.back(geo, -1.0, 0.0, d);
    let [pw, ph, tw, th] = geo.sides;
    // ww = 2·w_t^s/(w_t^s + h_t^s), hh = 2·h_t^s/(..); 1 and 1 for s = 0.
    let ((sw, dsw), (sh, dsh)) = if scale == 0.0 {
        ((1.0, 0.0), (1.0, 0.0))
    } else {
        (pow(tw, scale), pow(th, scale))
    };
    let den = sw + sh;
    let (fw, live) = if scale == 0.0 {
        (0.5, false)
    } else {
        div_or_zero(sw, den)
    };
    let fh = if scale == 0.0 { 0.5 } else { div_or_zero(sh, den).0 };
    let (ww, hh) = (2.0 * fw, 2.0 * fh);
    let (mut g_ww, mut g_hh) = (0.0, 0.0);
    // Distance: (hh·dx² + ww·dy²)/c².
    let c2 = geo.cw * geo.cw + geo.ch * geo.ch + eps;
    let (dx2, dy2) = (geo.dx * geo.dx, geo.dy * geo.dy);
    let dist = (hh * dx2 + ww * dy2) / c2;
    g_hh += dx2 / c2;
    g_ww += dy2 / c2;
    d.dx += 2.0 * geo.dx * hh / c2;
    d.dy += 2.0 * geo.dy * ww / c2;
    d.diag2(geo, -dist / c2);
    // Shape: ω = k·|a − b|/max(a, b), k = hh for the widths, ww for the heights.
    let (st_w, [gk, ga, gb]) = shape_cost(hh, pw, tw);
    g_hh += 0.5 * gk;
    d.add_sides(0.5, [ga, 0.0, gb, 0.0]);
    let (st_h, [gk, ga, gb]) = shape_cost(ww, ph, th);
    g_ww += 0.5 * gk;
    d.add_sides(0.5, [0.0, ga, 0.0, gb]);
    if live {
        let (g_fw, g_fh) = (2.0 * g_ww, 2.0 * g_hh);
        let g_den = -(g_fw * fw + g_fh * fh) / den;
        d.sides[2] += (g_fw / den + g_den) * dsw;
        d.sides[3] += (g_fh / den + g_den) * dsh;
    }
    1.0 - iou.r + dist + 0.5 * (st_w + st_h)
}

#[inline(always)]
fn wise_iou(geo: &Geometry, version: WiseIouVersion, mean: f64, alpha: f64, delta: f64, d: &mut Partials) -> f64 {
    let iou = Iou::or_zero(geo);
    let l = 1.0 - iou.r;
    let den = geo.cw * geo.cw + geo.ch * geo.ch; // a constant of the gradient
    let (q, live) = div_or_zero(geo.rho2(), den);
    let r = q.exp();
    let beta = l * (1.0 / mean);
    let f = match version {
        WiseIouVersion::V1 => 1.0,
        WiseIouVersion::V2 => beta.sqrt(),
        WiseIouVersion::V3 => beta / ((beta * alpha.ln() + (-delta * alpha.ln())).exp() * delta),
    };
    iou.back(geo, -f * r, 0.0, d);
    if live {
        d.rho2(geo, f * r * l / den);
    }
    r * l * f
}

#[inline(always)]
fn nwd(geo: &Geometry, constant: f64, eps: f64, d: &mut Partials) -> f64 {
    let [pw, ph, tw, th] = geo.sides;
    let (sw, sh) = (pw - tw, ph - th);
    let w2 = geo.rho2() + eps + (sw * sw + sh * sh) * 0.25;
    let (c, dc) = clamp0(w2);
    let s = c.sqrt();
    let e = (-s / constant).exp();
    // ∂/∂w² of 1 − e^{−√w²/C}.
    let g = e / constant * dc / (2.0 * s);
    d.rho2(geo, g);
    let gs = 0.5 * g;
    d.add_sides(1.0, [gs * sw, gs * sh, -gs * sw, -gs * sh]);
    1.0 - e
}

#[inline(always)]
fn siou(geo: &Geometry, neg_gamma: bool, eps: f64, d: &mut Partials) -> f64 {
    let iou = Iou::new(geo, 0.0, eps);
    let ((cw, dcw), (ch, dch)) = (clamp_at(geo.cw, eps), clamp_at(geo.ch, eps));
    // The centre offset target − pred, `+ eps`, in the composite's order of operations.
    let (p, t) = (geo.p, geo.t);
    let s_cw = ((t[0] + t[2]) - p[0] - p[2]) * 0.5 + eps;
    let s_ch = ((t[1] + t[3]) - p[1] - p[3]) * 0.5 + eps;
    let sigma2 = s_cw * s_cw + s_ch * s_ch;
    let flat = sigma2 == 0.0;
    let sigma = if flat { 1.0 } else { sigma2.sqrt() };
    let (sin1, sin2) = (s_cw.abs() / sigma, s_ch.abs() / sigma);
    let second = sin1 > std::f64::consts::FRAC_1_SQRT_2;
    let sin = if second { sin2 } else { sin1 };
    let root = (1.0 - sin * sin).sqrt();
    let angle = 2.0 * sin * root;
    let gamma = if neg_gamma { angle - 2.0 } else { 2.0 - angle };
    let (qx, qy) = (s_cw / cw, s_ch / ch);
    let (rx, ry) = (qx * qx, qy * qy);
    let (ex, ey) = ((gamma * rx).exp(), (gamma * ry).exp());
    let distance = 2.0 - ex - ey;
    let (hp, ht) = (geo.sides[1] + eps, geo.sides[3] + eps);
    let (st_w, [_, gw_p, gw_t]) = shape_cost(1.0, geo.sides[0], geo.sides[2]);
    let (st_h, [_, gh_p, gh_t]) = shape_cost(1.0, hp, ht);
    let score = iou.r - (distance + st_w + st_h) * 0.5;
    let c = Unary::Clamp { lo: -1.0, hi: 1.0 };
    let g = -c.derivative(score);
    // ∂/∂ of the parts, times g.
    iou.back(geo, g, 0.0, d);
    let g_cost = -0.5 * g;
    d.add_sides(g_cost, [gw_p, gh_p, gw_t, gh_t]);
    let g_gamma = -g_cost * (ex * rx + ey * ry);
    let (g_qx, g_qy) = (-g_cost * ex * gamma * 2.0 * qx, -g_cost * ey * gamma * 2.0 * qy);
    d.cw += -g_qx * qx / cw * dcw;
    d.ch += -g_qy * qy / ch * dch;
    let mut g_s = [g_qx / cw, g_qy / ch];
    // angle = 2·sin·√(1 − sin²): ∂/∂sin = 2(root − sin²/root).
    let g_sin = (if neg_gamma { g_gamma } else { -g_gamma }) * 2.0 * (root - sin * sin / root);
    // sin = |s|/σ of the chosen axis, σ = √(s_cw² + s_ch²) (constant 1 where both are 0).
    let (k, s_k) = if second { (1, s_ch) } else { (0, s_cw) };
    g_s[k] += g_sin / sigma * Unary::Abs.derivative(s_k);
    if !flat {
        let g_sigma2 = -g_sin * sin / sigma / (2.0 * sigma);
        g_s[0] += g_sigma2 * 2.0 * s_cw;
        g_s[1] += g_sigma2 * 2.0 * s_ch;
    }
    // s = −(centre offset) + eps.
    d.dx -= g_s[0];
    d.dy -= g_s[1];
    1.0 - c.value(score)
}

/// `clamp(x, lo)` with `torch.clamp`'s gradient (1 on `[lo, ∞)`).
#[inline(always)]
fn clamp_at(x: f64, lo: f64) -> (f64, f64) {
    let c = Unary::Clamp { lo, hi: f64::INFINITY };
    (c.value(x), c.derivative(x))
}
