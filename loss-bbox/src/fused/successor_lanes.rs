//! The IoU successors ([`Successor`]) as lanes of the f32 block kernel ([`super::block_f32`]):
//! the f32 transcription of [`super::successors`], term by term, written branch-free (selects
//! for `max`/`min`/`clamp`/`div_or_zero`, [`Real::fast_exp`]/[`Real::fast_ln`] for `exp`, `ln`
//! and powers, a power only where `α ≠ 3`), over the same geometry of a pair and the one chain
//! rule back to the coordinates ([`Chain::into_coords`]).
//!
//! A lane is `risky` (recomputed in f64 by [`Successor::pair`], as the block does for a
//! non-finite value or gradient) where f32 would not follow the f64 kernel closely: a power of
//! a non-positive base (`α ≠ 3`), a distance that `exp` would overflow, Wise-IoU's zero union.
//! Alpha-IoU (IoU base; DIoU and CIoU bases at `α = 3`: the GIoU base's gradient, and
//! `∂(ρ²)^α` for `α < 1` at close centres, cancel beyond f32's reach), MPDIoU, Wise-IoU, Focaler-IoU and NWD run here; Inner-, Shape-IoU and
//! SIoU stay on the f64 kernel ([`supports`]).

use super::block_f32::{aspect, Job, Lanes};
use super::pair::Chain;
use crate::geometry::{max_w, min_w, sel, ASPECT_K};
use crate::kinds::{AlphaIouBase, WiseIouVersion};
use loss_core::kernel::Real;

use super::Successor;

/// Whether the block kernel runs `s`.
pub(super) fn supports(s: Successor) -> bool {
    matches!(
        s,
        Successor::Alpha {
            base: AlphaIouBase::Iou,
            ..
        } | Successor::Alpha {
            base: AlphaIouBase::Diou | AlphaIouBase::Ciou,
            alpha: 3.0
        } | Successor::Mpd { .. }
            | Successor::Wise { .. }
            | Successor::Focaler { .. }
            | Successor::Nwd { .. }
    )
}

/// Runs `job` with the lanes of `s` (one of [`supports`]), its options fixed outside the loops.
pub(super) fn visit<J: Job>(s: Successor, eps: f64, job: J) -> J::Out {
    let e = eps as f32;
    match s {
        Successor::Alpha { alpha, base } => {
            let a = alpha as f32;
            match (base, alpha == 3.0) {
                (AlphaIouBase::Iou, true) => job.run(Alpha::<IOU, true> { s, eps, e, a }),
                (AlphaIouBase::Iou, false) => job.run(Alpha::<IOU, false> { s, eps, e, a }),
                (AlphaIouBase::Giou, true) => job.run(Alpha::<GIOU, true> { s, eps, e, a }),
                (AlphaIouBase::Giou, false) => job.run(Alpha::<GIOU, false> { s, eps, e, a }),
                (AlphaIouBase::Diou, true) => job.run(Alpha::<DIOU, true> { s, eps, e, a }),
                (AlphaIouBase::Diou, false) => job.run(Alpha::<DIOU, false> { s, eps, e, a }),
                (AlphaIouBase::Ciou, true) => job.run(Alpha::<CIOU, true> { s, eps, e, a }),
                (AlphaIouBase::Ciou, false) => job.run(Alpha::<CIOU, false> { s, eps, e, a }),
            }
        }
        Successor::Mpd { norm } => job.run(Mpd {
            s,
            eps,
            e,
            norm: norm as f32,
        }),
        Successor::Wise {
            version,
            mean,
            alpha,
            delta,
        } => {
            let w = Wise {
                s,
                inv_mean: (1.0 / mean) as f32,
                ln_a: alpha.ln() as f32,
                neg_d_ln_a: (-delta * alpha.ln()) as f32,
                delta: delta as f32,
            };
            match version {
                WiseIouVersion::V1 => job.run(WiseV::<1>(w)),
                WiseIouVersion::V2 => job.run(WiseV::<2>(w)),
                WiseIouVersion::V3 => job.run(WiseV::<3>(w)),
            }
        }
        Successor::Focaler { d, u } => {
            let k = 1.0 / (u - d);
            job.run(Focaler {
                s,
                eps,
                e,
                k: k as f32,
                off: (-d * k) as f32,
            })
        }
        Successor::Nwd { constant } => job.run(Nwd {
            s,
            eps,
            e,
            inv_c: (1.0 / constant) as f32,
        }),
        // Not in `supports`: the callers run the f64 kernel for these.
        Successor::Inner { .. } | Successor::Shape { .. } | Successor::Siou { .. } => {
            unreachable!("{} has no f32 lanes", s.name())
        }
    }
}

/// The quantities of a pair every successor reads ([`super::successors`]' `Geometry` in f32).
struct Geo {
    /// `(w_p, h_p, w_t, h_t)`.
    sides: [f32; 4],
    /// Intersection extents, unclamped.
    iw: f32,
    ih: f32,
    /// Enclosing extents.
    cw: f32,
    ch: f32,
    /// Centre offset `c_p − c_t`.
    dx: f32,
    dy: f32,
    inter_w: [f32; 8],
    outer_w: [f32; 8],
}

impl Geo {
    #[inline(always)]
    fn new(c: [f32; 8]) -> Self {
        let [px1, py1, px2, py2, tx1, ty1, tx2, ty2] = c;
        let (ix1, ix1_p, ix1_t) = max_w(px1, tx1);
        let (iy1, iy1_p, iy1_t) = max_w(py1, ty1);
        let (ix2, ix2_p, ix2_t) = min_w(px2, tx2);
        let (iy2, iy2_p, iy2_t) = min_w(py2, ty2);
        let (cx1, cx1_p, cx1_t) = min_w(px1, tx1);
        let (cy1, cy1_p, cy1_t) = min_w(py1, ty1);
        let (cx2, cx2_p, cx2_t) = max_w(px2, tx2);
        let (cy2, cy2_p, cy2_t) = max_w(py2, ty2);
        Self {
            sides: [px2 - px1, py2 - py1, tx2 - tx1, ty2 - ty1],
            iw: ix2 - ix1,
            ih: iy2 - iy1,
            cw: cx2 - cx1,
            ch: cy2 - cy1,
            dx: 0.5 * ((px1 + px2) - (tx1 + tx2)),
            dy: 0.5 * ((py1 + py2) - (ty1 + ty2)),
            inter_w: [ix1_p, ix1_t, ix2_p, ix2_t, iy1_p, iy1_t, iy2_p, iy2_t],
            outer_w: [cx1_p, cx1_t, cx2_p, cx2_t, cy1_p, cy1_t, cy2_p, cy2_t],
        }
    }

    #[inline(always)]
    fn rho2(&self) -> f32 {
        self.dx * self.dx + self.dy * self.dy
    }

    #[inline(always)]
    fn diag2(&self) -> f32 {
        self.cw * self.cw + self.ch * self.ch
    }
}

/// The partials of a lane's loss w.r.t. the quantities of [`Geo`].
#[derive(Default)]
struct Part {
    iw: f32,
    ih: f32,
    cw: f32,
    ch: f32,
    dx: f32,
    dy: f32,
    sides: [f32; 4],
}

impl Part {
    #[inline(always)]
    fn rho2(&mut self, geo: &Geo, g: f32) {
        self.dx += 2.0 * geo.dx * g;
        self.dy += 2.0 * geo.dy * g;
    }

    #[inline(always)]
    fn diag2(&mut self, geo: &Geo, g: f32) {
        self.cw += 2.0 * geo.cw * g;
        self.ch += 2.0 * geo.ch * g;
    }

    #[inline(always)]
    fn add_sides(&mut self, g: f32, d: [f32; 4]) {
        for (s, x) in self.sides.iter_mut().zip(d) {
            *s += g * x;
        }
    }

    /// The gradient w.r.t. the eight coordinates for the upstream `g` (the one chain rule).
    #[inline(always)]
    fn coords(self, geo: &Geo, g: f32) -> [f32; 8] {
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
        .into_coords()
    }
}

/// `clamp(x, 0)` with `torch.clamp`'s gradient (1 on `[0, ∞)`).
#[inline(always)]
fn clamp0(x: f32) -> (f32, f32) {
    let on = x >= 0.0;
    (sel(on, x, 0.0), sel(on, 1.0, 0.0))
}

/// `I/U` as [`super::successors`]' `Iou` (`U = w_p·(h_p + h_eps) + w_t·(h_t + h_eps) − I + u_eps`).
struct Iou {
    r: f32,
    u: f32,
    h_eps: f32,
    clamps: [f32; 4],
}

impl Iou {
    #[inline(always)]
    fn new(geo: &Geo, h_eps: f32, u_eps: f32) -> Self {
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

    /// Adds `g_r · ∂R + g_u · ∂U` to `d`.
    #[inline(always)]
    fn back(&self, geo: &Geo, g_r: f32, g_u: f32, d: &mut Part) {
        let [pw, ph, tw, th] = geo.sides;
        let [cw, dw, ch, dh] = self.clamps;
        let ru = 1.0 / self.u;
        let g_u = g_u - g_r * self.r * ru;
        let g_i = g_r * ru - g_u;
        d.iw += g_i * ch * dw;
        d.ih += g_i * cw * dh;
        d.add_sides(g_u, [ph + self.h_eps, pw, th + self.h_eps, tw]);
    }
}

/// `x^e` and its derivative for `x > 0` (`risky` otherwise): `x³` exactly where `CUBE`.
#[inline(always)]
fn pow<const CUBE: bool>(x: f32, e: f32) -> (f32, f32, bool) {
    if CUBE {
        (x * x * x, 3.0 * x * x, false)
    } else {
        let pos = x > 0.0;
        let xs = sel(pos, x, 1.0);
        let v = (e * xs.fast_ln()).fast_exp();
        (v, e * v / xs, !pos)
    }
}

/// The Alpha-IoU base as a const code.
const IOU: u8 = 0;
const GIOU: u8 = 1;
const DIOU: u8 = 2;
const CIOU: u8 = 3;

/// `alpha_iou_loss` with base `B` (`CUBE`: `α = 3`).
#[derive(Clone, Copy)]
struct Alpha<const B: u8, const CUBE: bool> {
    s: Successor,
    eps: f64,
    e: f32,
    a: f32,
}

impl<const B: u8, const CUBE: bool> Lanes for Alpha<B, CUBE> {
    #[inline(always)]
    fn lane(self, c: [f32; 8], g: f32) -> (f32, [f32; 8], bool) {
        let (eps, alpha) = (self.e, self.a);
        let geo = Geo::new(c);
        let mut d = Part::default();
        let iou = Iou::new(&geo, eps, eps);
        let (powered, dp, mut risky) = pow::<CUBE>(iou.r + eps, alpha);
        let mut loss = 1.0 - powered;
        let mut g_u = 0.0;
        if B == GIOU {
            let area = geo.cw * geo.ch + eps;
            let (c, c_a, c_u) = max_w(area, iou.u);
            // A near tie (nested boxes, whose eps terms f32 drops) is decided in f64.
            risky |= (area - iou.u).abs() <= 1e-5 * c.abs();
            let rc = 1.0 / c;
            let q = (c - iou.u) * rc;
            let (pq, dq, r2) = pow::<CUBE>(q + eps, alpha);
            risky |= r2;
            loss += pq;
            let g_c = dq * (1.0 - q) * rc;
            g_u += g_c * c_u - dq * rc;
            d.cw += g_c * c_a * geo.ch;
            d.ch += g_c * c_a * geo.cw;
        } else if B == DIOU || B == CIOU {
            let (rp, drp, r1) = pow::<CUBE>(geo.rho2(), alpha);
            let (cp, dcp, r2) = pow::<CUBE>(geo.diag2(), alpha);
            risky |= r1 | r2;
            let c2 = cp + eps;
            let rc2 = 1.0 / c2;
            let diou = rp * rc2;
            loss += diou;
            d.rho2(&geo, drp * rc2);
            d.diag2(&geo, -diou * rc2 * dcp);
            if B == CIOU {
                let [pw, ph, tw, th] = geo.sides;
                let (ap, ap_w, ap_h, rp) = aspect(pw, ph + eps);
                let (at, at_w, at_h, rt) = aspect(tw, th + eps);
                risky |= rp | rt;
                let a_d = at - ap;
                let v = ASPECT_K as f32 * a_d * a_d;
                let den = (1.0 + eps) - iou.r + v;
                let a = sel((v == 0.0) | (den == 0.0), 0.0, v / den);
                let (pv, dv, r3) = pow::<CUBE>(v * a + eps, alpha);
                risky |= r3;
                loss += pv;
                d.add_sides(dv * a * 2.0 * ASPECT_K as f32 * a_d, [-ap_w, -ap_h, at_w, at_h]);
            }
        }
        iou.back(&geo, -dp, g_u, &mut d);
        (loss, d.coords(&geo, g), risky)
    }

    fn exact(self, p: [f64; 4], t: [f64; 4], g: Option<f64>) -> (f64, [f64; 8]) {
        self.s.pair(p, t, self.eps, g)
    }
}

/// `mpdiou_loss`.
#[derive(Clone, Copy)]
struct Mpd {
    s: Successor,
    eps: f64,
    e: f32,
    norm: f32,
}

impl Lanes for Mpd {
    #[inline(always)]
    fn lane(self, c: [f32; 8], g: f32) -> (f32, [f32; 8], bool) {
        let (eps, norm) = (self.e, self.norm);
        let geo = Geo::new(c);
        let mut d = Part::default();
        let iou = Iou::new(&geo, eps, eps);
        iou.back(&geo, -1.0, 0.0, &mut d);
        let [pw, ph, tw, th] = geo.sides;
        let (sw, sh) = (0.5 * (pw - tw), 0.5 * (ph - th));
        let (x1, x2, y1, y2) = (geo.dx - sw, geo.dx + sw, geo.dy - sh, geo.dy + sh);
        let (gx1, gx2, gy1, gy2) = (2.0 * x1 * norm, 2.0 * x2 * norm, 2.0 * y1 * norm, 2.0 * y2 * norm);
        d.dx += gx1 + gx2;
        d.dy += gy1 + gy2;
        let (gw, gh) = (0.5 * (gx2 - gx1), 0.5 * (gy2 - gy1));
        d.add_sides(1.0, [gw, gh, -gw, -gh]);
        let loss = 1.0 - iou.r + (x1 * x1 + y1 * y1 + x2 * x2 + y2 * y2) * norm;
        (loss, d.coords(&geo, g), false)
    }

    fn exact(self, p: [f64; 4], t: [f64; 4], g: Option<f64>) -> (f64, [f64; 8]) {
        self.s.pair(p, t, self.eps, g)
    }
}

/// `wise_iou_loss`'s options (no eps).
#[derive(Clone, Copy)]
struct Wise {
    s: Successor,
    inv_mean: f32,
    ln_a: f32,
    neg_d_ln_a: f32,
    delta: f32,
}

/// `wise_iou_loss` version `V`.
#[derive(Clone, Copy)]
struct WiseV<const V: u8>(Wise);

impl<const V: u8> Lanes for WiseV<V> {
    #[inline(always)]
    fn lane(self, c: [f32; 8], g: f32) -> (f32, [f32; 8], bool) {
        let w = self.0;
        let geo = Geo::new(c);
        let mut d = Part::default();
        let iou = Iou::new(&geo, 0.0, 0.0);
        // A zero union (I/U = 0 with a zero gradient in f64) goes to the f64 kernel.
        let mut risky = iou.u == 0.0;
        let l = 1.0 - iou.r;
        let den = geo.diag2();
        let live = den != 0.0;
        let q = sel(live, geo.rho2() / sel(live, den, 1.0), 0.0);
        risky |= q > 80.0;
        let r = q.fast_exp();
        let beta = l * w.inv_mean;
        let f = match V {
            1 => 1.0,
            2 => beta.sqrt(),
            _ => beta / ((beta * w.ln_a + w.neg_d_ln_a).fast_exp() * w.delta),
        };
        iou.back(&geo, -f * r, 0.0, &mut d);
        d.rho2(&geo, sel(live, f * r * l / sel(live, den, 1.0), 0.0));
        (r * l * f, d.coords(&geo, g), risky)
    }

    fn exact(self, p: [f64; 4], t: [f64; 4], g: Option<f64>) -> (f64, [f64; 8]) {
        self.0.s.pair(p, t, 0.0, g)
    }
}

/// `focaler_iou_loss`: `k = 1/(u − d)`, `off = −d·k`.
#[derive(Clone, Copy)]
struct Focaler {
    s: Successor,
    eps: f64,
    e: f32,
    k: f32,
    off: f32,
}

impl Lanes for Focaler {
    #[inline(always)]
    fn lane(self, c: [f32; 8], g: f32) -> (f32, [f32; 8], bool) {
        let geo = Geo::new(c);
        let mut d = Part::default();
        let iou = Iou::new(&geo, self.e, self.e);
        let m = iou.r * self.k + self.off;
        let inside = (0.0..=1.0).contains(&m);
        let cm = sel(m < 0.0, 0.0, sel(m > 1.0, 1.0, m));
        iou.back(&geo, sel(inside, -self.k, 0.0), 0.0, &mut d);
        // Near a bound of the clamp the side is decided in f64 (not for disjoint boxes, whose
        // `I/U = 0` is exact).
        let near = |b: f32| ((m - b).abs() <= 1e-5) & (iou.r != 0.0);
        (1.0 - cm, d.coords(&geo, g), near(0.0) | near(1.0))
    }

    fn exact(self, p: [f64; 4], t: [f64; 4], g: Option<f64>) -> (f64, [f64; 8]) {
        self.s.pair(p, t, self.eps, g)
    }
}

/// `nwd_loss`: `inv_c = 1/C`.
#[derive(Clone, Copy)]
struct Nwd {
    s: Successor,
    eps: f64,
    e: f32,
    inv_c: f32,
}

impl Lanes for Nwd {
    #[inline(always)]
    fn lane(self, c: [f32; 8], g: f32) -> (f32, [f32; 8], bool) {
        let geo = Geo::new(c);
        let mut d = Part::default();
        let [pw, ph, tw, th] = geo.sides;
        let (sw, sh) = (pw - tw, ph - th);
        let w2 = geo.rho2() + self.e + (sw * sw + sh * sh) * 0.25;
        let (cl, dc) = clamp0(w2);
        let s = cl.sqrt();
        let e = (-s * self.inv_c).fast_exp();
        let gr = e * self.inv_c * dc / (2.0 * s);
        d.rho2(&geo, gr);
        let gs = 0.5 * gr;
        d.add_sides(1.0, [gs * sw, gs * sh, -gs * sw, -gs * sh]);
        // The distance's f32 rounding (an ulp of the coordinates) over √W²: near-equal boxes
        // far from the origin are computed in f64.
        let m = c.iter().fold(0.0f32, |a, x| a + x.abs());
        (1.0 - e, d.coords(&geo, g), s <= 0.01 * m)
    }

    fn exact(self, p: [f64; 4], t: [f64; 4], g: Option<f64>) -> (f64, [f64; 8]) {
        self.s.pair(p, t, self.eps, g)
    }
}
