//! The pair kernel of the IoU successors ([`crate::iou_successors`]), written once over the
//! float ([`PairReal`]): one pass over the shared geometry of a pair ([`Geometry`]:
//! intersection, enclosing box, centre offset, sides), each successor's formula on it
//! ([`Formula::at`]), and its gradient as the partials w.r.t. those quantities ([`Partials`]),
//! taken back to the eight coordinates by the box losses' one chain rule
//! ([`Chain::into_coords`]).
//!
//! The same source runs as scalar f64 code (f64 boxes, and the f64 recomputation of a risky f32
//! lane: [`Successor::pair`]) and as the f32 lanes of the block kernel ([`super::block_f32`],
//! which calls [`eval`] at `f32`). It is branch-free where the lanes need it: `max`/`min`/
//! `clamp`/`div_or_zero` are selects, the options that change the formula's shape (Alpha-IoU's
//! base and `α = 3`, Inner-IoU's base, Shape-IoU's `scale = 0`, Wise-IoU's version) are const
//! parameters fixed outside the loops ([`Successor::visit`]). A formula also says where its f32
//! value would not follow the f64 one closely (`risky`: a power of a non-positive base, an `exp`
//! that could overflow, a near tie that f32 may decide the other way); the block kernel
//! recomputes those lanes in f64, the f64 path ignores the flag.
//!
//! The formulas, eps placements, detached terms and gradient rules at kinks are exactly those
//! of the composite forms in [`crate::iou_successors`] (held equal by `tests/fused_successors.rs`):
//! `max`/`min` split ½/½ at a tie, `clamp` passes the gradient at its bound, `|x|` has
//! derivative 0 at 0, a 0/0 of `div_or_zero` is 0 with a zero gradient, powers follow
//! [`Unary::Pow`] (f64; [`PairReal::pow_d`]).

use super::pair::{Chain, PairReal};
use crate::geometry::{max_w, min_w, sel, ASPECT_K};
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
    /// `siou_loss` (mmdetection's SIoU): f64 only.
    Siou { neg_gamma: bool },
}

/// What [`Successor::visit`] runs with the successor's [`Formula`] (the block kernel's jobs, the
/// f64 pair).
pub(super) trait WithFormula {
    /// What the job returns.
    type Out;
    /// Runs the job with the formula `s`.
    fn run<S: Formula>(self, s: S) -> Self::Out;
}

/// One pair in f64 ([`Successor::pair`] as a [`WithFormula`] job).
struct PairJob {
    p: [f64; 4],
    t: [f64; 4],
    g: Option<f64>,
}

impl WithFormula for PairJob {
    type Out = (f64, [f64; 8]);
    #[inline(always)]
    fn run<S: Formula>(self, s: S) -> Self::Out {
        let (v, d, _) = eval(s, self.p, self.t, self.g);
        (v, d)
    }
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

    /// The loss of one pair and, with `g = Some(upstream)`, its gradient w.r.t. `p` and `t`
    /// (f64 scalar code).
    #[inline]
    pub(crate) fn pair(self, p: [f64; 4], t: [f64; 4], eps: f64, g: Option<f64>) -> (f64, [f64; 8]) {
        if let Self::Siou { neg_gamma } = self {
            let geo = Geometry::new(p, t);
            let mut d = Partials::zero();
            let loss = siou(&geo, neg_gamma, eps, &mut d);
            return match g {
                None => (loss, [0.0; 8]),
                Some(g) => (loss, d.chain::<Siou>(&geo, g).into_coords()),
            };
        }
        self.visit(eps, PairJob { p, t, g })
    }

    /// Runs `job` with the [`Formula`] of this successor, its options fixed (the one dispatch on
    /// the successor, outside the loops). Not for SIoU, which has no [`Formula`].
    pub(super) fn visit<J: WithFormula>(self, eps: f64, job: J) -> J::Out {
        match self {
            Self::Alpha { alpha, base } => {
                macro_rules! alpha {
                    ($b:expr) => {
                        if alpha == 3.0 {
                            job.run(Alpha::<{ $b }, true> { alpha, eps })
                        } else {
                            job.run(Alpha::<{ $b }, false> { alpha, eps })
                        }
                    };
                }
                match base {
                    AlphaIouBase::Iou => alpha!(IOU),
                    AlphaIouBase::Giou => alpha!(GIOU),
                    AlphaIouBase::Diou => alpha!(DIOU),
                    AlphaIouBase::Ciou => alpha!(CIOU),
                }
            }
            Self::Mpd { norm } => job.run(Mpd { norm, eps }),
            Self::Inner { ratio, base } => match base {
                InnerIouBase::Iou => job.run(Inner::<false> { ratio, eps }),
                InnerIouBase::Ciou => job.run(Inner::<true> { ratio, eps }),
            },
            Self::Shape { scale } if scale == 0.0 => job.run(Shape::<true> { scale, eps }),
            Self::Shape { scale } => job.run(Shape::<false> { scale, eps }),
            Self::Wise {
                version,
                mean,
                alpha,
                delta,
            } => {
                let w = Wise::<0> {
                    inv_mean: 1.0 / mean,
                    ln_a: alpha.ln(),
                    neg_d_ln_a: -delta * alpha.ln(),
                    delta,
                };
                match version {
                    WiseIouVersion::V1 => job.run(w.version::<1>()),
                    WiseIouVersion::V2 => job.run(w.version::<2>()),
                    WiseIouVersion::V3 => job.run(w.version::<3>()),
                }
            }
            Self::Focaler { d, u } => {
                let k = 1.0 / (u - d);
                job.run(Focaler { k, off: -d * k, eps })
            }
            Self::Nwd { constant } => job.run(Nwd {
                inv_c: 1.0 / constant,
                eps,
            }),
            Self::Siou { .. } => unreachable!("siou_loss has no generic formula"),
        }
    }
}

/// A successor with its options fixed: its loss of one pair and the partials of that loss, at
/// any [`PairReal`] float.
pub(super) trait Formula: Copy {
    /// Whether the loss reads the intersection's extents (`false`: its partials stay 0, and the
    /// chain rule leaves out the intersection's `max`/`min` weights).
    const INTER: bool = true;
    /// Whether the loss reads the enclosing box's extents (as [`Formula::INTER`]).
    const OUTER: bool = true;
    /// The loss of the pair `geo` (its partials added to `d`) and whether the lane is risky in
    /// f32 (see the module docs).
    fn at<F: PairReal>(self, geo: &Geometry<F>, d: &mut Partials<F>) -> (F, bool);
}

/// One pair: `(loss, gradient w.r.t. [p.x1, .., p.y2, t.x1, .., t.y2] for the upstream g (zeros
/// for `None`), risky)`.
#[inline(always)]
pub(super) fn eval<S: Formula, F: PairReal>(s: S, p: [F; 4], t: [F; 4], g: Option<F>) -> (F, [F; 8], bool) {
    let geo = Geometry::new(p, t);
    let mut d = Partials::zero();
    let (loss, risky) = s.at(&geo, &mut d);
    let grads = match g {
        Some(g) => d.chain::<S>(&geo, g).into_coords(),
        None => [F::zero(); 8],
    };
    (loss, grads, risky)
}

/// `v` in `F`.
#[inline(always)]
fn k<F: PairReal>(v: f64) -> F {
    F::of(v)
}

/// The quantities of a pair every successor reads, with the `max`/`min` weights of the extents.
pub(super) struct Geometry<F> {
    /// The boxes.
    p: [F; 4],
    t: [F; 4],
    /// `(w_p, h_p, w_t, h_t)`.
    sides: [F; 4],
    /// Intersection extents, unclamped.
    iw: F,
    ih: F,
    /// Enclosing extents.
    cw: F,
    ch: F,
    /// Centre offset `c_p − c_t`.
    dx: F,
    dy: F,
    inter_w: [F; 8],
    outer_w: [F; 8],
}

impl<F: PairReal> Geometry<F> {
    #[inline(always)]
    fn new(p: [F; 4], t: [F; 4]) -> Self {
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
        let half = k::<F>(0.5);
        Self {
            p,
            t,
            sides: [px2 - px1, py2 - py1, tx2 - tx1, ty2 - ty1],
            iw: ix2 - ix1,
            ih: iy2 - iy1,
            cw: cx2 - cx1,
            ch: cy2 - cy1,
            // The composite's order: the sums first, so equal centres give exactly 0.
            dx: half * ((px1 + px2) - (tx1 + tx2)),
            dy: half * ((py1 + py2) - (ty1 + ty2)),
            inter_w: [ix1_p, ix1_t, ix2_p, ix2_t, iy1_p, iy1_t, iy2_p, iy2_t],
            outer_w: [cx1_p, cx1_t, cx2_p, cx2_t, cy1_p, cy1_t, cy2_p, cy2_t],
        }
    }

    /// `ρ² = dx² + dy²`.
    #[inline(always)]
    fn rho2(&self) -> F {
        self.dx * self.dx + self.dy * self.dy
    }

    /// `C_w² + C_h²`.
    #[inline(always)]
    fn diag2(&self) -> F {
        self.cw * self.cw + self.ch * self.ch
    }
}

/// The partials of a pair's loss w.r.t. the quantities of [`Geometry`] (not yet times the
/// upstream gradient).
pub(super) struct Partials<F> {
    iw: F,
    ih: F,
    cw: F,
    ch: F,
    dx: F,
    dy: F,
    sides: [F; 4],
}

impl<F: PairReal> Partials<F> {
    #[inline(always)]
    fn zero() -> Self {
        let z = F::zero();
        Self {
            iw: z,
            ih: z,
            cw: z,
            ch: z,
            dx: z,
            dy: z,
            sides: [z; 4],
        }
    }

    /// `∂/∂ρ²` as partials of the centre offset.
    #[inline(always)]
    fn rho2(&mut self, geo: &Geometry<F>, g: F) {
        let two = k::<F>(2.0);
        self.dx += two * geo.dx * g;
        self.dy += two * geo.dy * g;
    }

    /// `∂/∂(C_w² + C_h²)` as partials of the enclosing extents.
    #[inline(always)]
    fn diag2(&mut self, geo: &Geometry<F>, g: F) {
        let two = k::<F>(2.0);
        self.cw += two * geo.cw * g;
        self.ch += two * geo.ch * g;
    }

    /// The angle difference `θ_t − θ_p`, `θ = atan(w/(h + h_eps))` ([`PairReal::aspect`]), and
    /// its partials: `(d, [∂d/∂w_p, ∂d/∂h_p, ∂d/∂w_t, ∂d/∂h_t], risky)`.
    #[inline(always)]
    fn angle_diff(geo: &Geometry<F>, h_eps: F) -> (F, [F; 4], bool) {
        let [pw, ph, tw, th] = geo.sides;
        let (ap, ap_w, ap_h, rp) = F::aspect(pw, ph + h_eps);
        let (at, at_w, at_h, rt) = F::aspect(tw, th + h_eps);
        (at - ap, [-ap_w, -ap_h, at_w, at_h], rp | rt)
    }

    #[inline(always)]
    fn add_sides(&mut self, g: F, d: [F; 4]) {
        for (s, x) in self.sides.iter_mut().zip(d) {
            *s += g * x;
        }
    }

    /// The [`Chain`] of these partials for the upstream gradient `g`, of a loss that reads the
    /// extents `S` says (the others' terms are constant zeros, so their weights are never
    /// computed).
    #[inline(always)]
    fn chain<S: Formula>(self, geo: &Geometry<F>, g: F) -> Chain<F> {
        let (half, z) = (k::<F>(0.5), F::zero());
        let (inter, outer) = (S::INTER, S::OUTER);
        Chain {
            iw: sel(inter, g * self.iw, z),
            ih: sel(inter, g * self.ih, z),
            cw: sel(outer, g * self.cw, z),
            ch: sel(outer, g * self.ch, z),
            sides: self.sides.map(|s| g * s),
            half_dx: half * g * self.dx,
            half_dy: half * g * self.dy,
            inter_w: sel(inter, geo.inter_w, [z; 8]),
            outer_w: sel(outer, geo.outer_w, [z; 8]),
        }
    }
}

/// `clamp(x, 0)` with `torch.clamp`'s gradient (1 on `[0, ∞)`); NaN stays NaN.
#[inline(always)]
fn clamp0<F: PairReal>(x: F) -> (F, F) {
    let below = x < F::zero();
    (sel(below, F::zero(), x), sel(below, F::zero(), F::one()))
}

/// `num/den` where `den ≠ 0`, else 0: `(value, nonzero)`.
#[inline(always)]
fn div_or_zero<F: PairReal>(num: F, den: F) -> (F, bool) {
    let zero = den == F::zero();
    (sel(zero, F::zero(), num / sel(zero, F::one(), den)), !zero)
}

/// The derivative of `|x|`: the sign, 0 at 0.
#[inline(always)]
fn sign0<F: PairReal>(x: F) -> F {
    sel(x > F::zero(), F::one(), sel(x < F::zero(), -F::one(), F::zero()))
}

/// `x^e` and its derivative ([`PairReal::pow_d`]), exactly `x³` where `CUBE` (`e = 3`, the
/// default of Alpha-IoU: no `exp`/`ln`).
#[inline(always)]
fn pow<F: PairReal, const CUBE: bool>(x: F, e: F) -> (F, F, bool) {
    if CUBE {
        (x * x * x, k::<F>(3.0) * x * x, false)
    } else {
        F::pow_d(x, e)
    }
}

/// A ratio `R = I/U` of the clamped intersection `I = clamp(w_I, 0)·clamp(h_I, 0)` and
/// `U = w_p·(h_p + h_eps) + w_t·(h_t + h_eps) − I + u_eps` (ops::div's gradient), or with
/// [`Iou::or_zero`] 0 with a zero gradient where `U = 0` (Wise-IoU).
struct Iou<F> {
    r: F,
    u: F,
    /// `1/U` (0 where [`Iou::or_zero`] zeroed the ratio).
    ru: F,
    h_eps: F,
    /// `(clamp(w_I), ∂clamp/∂w_I, clamp(h_I), ∂clamp/∂h_I)`.
    clamps: [F; 4],
}

impl<F: PairReal> Iou<F> {
    #[inline(always)]
    fn new(geo: &Geometry<F>, h_eps: F, u_eps: F) -> Self {
        let [pw, ph, tw, th] = geo.sides;
        let ((cw, dw), (ch, dh)) = (clamp0(geo.iw), clamp0(geo.ih));
        let inter = cw * ch;
        let u = pw * (ph + h_eps) + tw * (th + h_eps) - inter + u_eps;
        Self {
            r: inter / u,
            u,
            ru: F::one() / u,
            h_eps,
            clamps: [cw, dw, ch, dh],
        }
    }

    /// The Wise-IoU form: no eps, `I/U = 0` (zero gradient) where `U = 0`; `(iou, U = 0)`.
    #[inline(always)]
    fn or_zero(geo: &Geometry<F>) -> (Self, bool) {
        let mut s = Self::new(geo, F::zero(), F::zero());
        let zero = s.u == F::zero();
        s.r = sel(zero, F::zero(), s.r);
        s.ru = sel(zero, F::zero(), s.ru);
        (s, zero)
    }

    /// Adds `g_r · ∂R` plus `g_u · ∂U` (a term that reads `U` directly) to `d`.
    #[inline(always)]
    fn back(&self, geo: &Geometry<F>, g_r: F, g_u: F, d: &mut Partials<F>) {
        let [pw, ph, tw, th] = geo.sides;
        let [cw, dw, ch, dh] = self.clamps;
        let g_u = g_u - g_r * self.r * self.ru;
        let g_i = g_r * self.ru - g_u;
        d.iw += g_i * ch * dw;
        d.ih += g_i * cw * dh;
        d.add_sides(g_u, [ph + self.h_eps, pw, th + self.h_eps, tw]);
    }
}

/// Alpha-IoU's base as a const code.
const IOU: u8 = 0;
const GIOU: u8 = 1;
const DIOU: u8 = 2;
const CIOU: u8 = 3;

/// `alpha_iou_loss` with base `B` (`CUBE`: `α = 3`).
#[derive(Clone, Copy)]
struct Alpha<const B: u8, const CUBE: bool> {
    alpha: f64,
    eps: f64,
}

impl<const B: u8, const CUBE: bool> Formula for Alpha<B, CUBE> {
    const OUTER: bool = B != IOU;
    #[inline(always)]
    fn at<F: PairReal>(self, geo: &Geometry<F>, d: &mut Partials<F>) -> (F, bool) {
        let (eps, alpha) = (k::<F>(self.eps), k::<F>(self.alpha));
        let (one, two) = (F::one(), k::<F>(2.0));
        let iou = Iou::new(geo, eps, eps);
        let (powered, dp, mut risky) = pow::<F, CUBE>(iou.r + eps, alpha);
        let mut loss = one - powered;
        let mut g_u = F::zero();
        if B == GIOU {
            let area = geo.cw * geo.ch + eps;
            let (c, c_a, c_u) = max_w(area, iou.u);
            // A near tie (nested boxes, whose eps terms f32 drops) is decided in f64.
            risky |= (area - iou.u).abs() <= k::<F>(1e-5) * c.abs();
            let rc = one / c;
            // q = (c − U)/c: ∂q/∂c = (1 − q)/c, ∂q/∂U = −1/c.
            let q = (c - iou.u) * rc;
            let (pq, dq, r2) = pow::<F, CUBE>(q + eps, alpha);
            risky |= r2;
            loss += pq;
            let g_c = dq * (one - q) * rc;
            g_u += g_c * c_u - dq * rc;
            d.cw += g_c * c_a * geo.ch;
            d.ch += g_c * c_a * geo.cw;
        } else if B == DIOU || B == CIOU {
            let (rp, drp, r1) = pow::<F, CUBE>(geo.rho2(), alpha);
            let (cp, dcp, r2) = pow::<F, CUBE>(geo.diag2(), alpha);
            risky |= r1 | r2;
            let rc2 = one / (cp + eps);
            let diou = rp * rc2;
            loss += diou;
            d.rho2(geo, drp * rc2);
            d.diag2(geo, -diou * rc2 * dcp);
            if B == CIOU {
                let (a_d, da, r3) = Partials::angle_diff(geo, eps);
                let v = k::<F>(ASPECT_K) * a_d * a_d;
                let a = sel(v == F::zero(), F::zero(), div_or_zero(v, (one + eps) - iou.r + v).0);
                let (pv, dv, r4) = pow::<F, CUBE>(v * a + eps, alpha);
                risky |= r3 | r4;
                loss += pv;
                d.add_sides(dv * a * two * k::<F>(ASPECT_K) * a_d, da);
            }
        }
        iou.back(geo, -dp, g_u, d);
        (loss, risky)
    }
}

/// `mpdiou_loss`, `norm = 1/(W² + H²)`.
#[derive(Clone, Copy)]
struct Mpd {
    norm: f64,
    eps: f64,
}

impl Formula for Mpd {
    const OUTER: bool = false;
    #[inline(always)]
    fn at<F: PairReal>(self, geo: &Geometry<F>, d: &mut Partials<F>) -> (F, bool) {
        let (eps, norm) = (k::<F>(self.eps), k::<F>(self.norm));
        let (half, two) = (k::<F>(0.5), k::<F>(2.0));
        let iou = Iou::new(geo, eps, eps);
        iou.back(geo, -F::one(), F::zero(), d);
        let [pw, ph, tw, th] = geo.sides;
        // The corner offsets p − t: x1 = dx − (w_p − w_t)/2, x2 = dx + (w_p − w_t)/2.
        let (sw, sh) = (half * (pw - tw), half * (ph - th));
        let (x1, x2, y1, y2) = (geo.dx - sw, geo.dx + sw, geo.dy - sh, geo.dy + sh);
        let (gx1, gx2, gy1, gy2) = (two * x1 * norm, two * x2 * norm, two * y1 * norm, two * y2 * norm);
        d.dx += gx1 + gx2;
        d.dy += gy1 + gy2;
        let (gw, gh) = (half * (gx2 - gx1), half * (gy2 - gy1));
        d.add_sides(F::one(), [gw, gh, -gw, -gh]);
        let loss = F::one() - iou.r + (x1 * x1 + y1 * y1 + x2 * x2 + y2 * y2) * norm;
        (loss, false)
    }
}

/// `inner_iou_loss` (`CIOU`: with CIoU's distance and aspect terms of the real boxes).
#[derive(Clone, Copy)]
struct Inner<const CIOU: bool> {
    ratio: f64,
    eps: f64,
}

impl<const CIOU: bool> Formula for Inner<CIOU> {
    const INTER: bool = CIOU;
    const OUTER: bool = CIOU;
    #[inline(always)]
    fn at<F: PairReal>(self, geo: &Geometry<F>, d: &mut Partials<F>) -> (F, bool) {
        let (eps, ratio, hr) = (k::<F>(self.eps), k::<F>(self.ratio), k::<F>(0.5 * self.ratio));
        let (one, half, two) = (F::one(), k::<F>(0.5), k::<F>(2.0));
        let [pw, ph, tw, th] = geo.sides;
        // The auxiliary boxes `c ∓ w·ratio/2` as the composite form computes them (the same ties).
        let aux = |lo: F, hi: F| {
            let (c, h) = ((lo + hi) * half, (hi - lo) * hr);
            (c - h, c + h)
        };
        // One axis: the extent of the auxiliary boxes' intersection, its partials w.r.t. the
        // centre offset and the two sides, and whether a tie of its `max`/`min` or its sign is
        // too close for f32 (the auxiliary corners carry a few ulp of the coordinates).
        let inner = |a: usize| {
            let (p1, p2) = aux(geo.p[a], geo.p[a + 2]);
            let (t1, t2) = aux(geo.t[a], geo.t[a + 2]);
            let (lo, lo_p, lo_t) = max_w(p1, t1);
            let (hi, hi_p, hi_t) = min_w(p2, t2);
            let m = geo.p[a].abs() + geo.p[a + 2].abs() + geo.t[a].abs() + geo.t[a + 2].abs();
            let tol = k::<F>(8.0) * F::epsilon() * m;
            let near = ((p1 - t1).abs() <= tol) | ((p2 - t2).abs() <= tol) | ((hi - lo).abs() <= tol);
            (hi - lo, hi_p - lo_p, hr * (hi_p + lo_p), hr * (hi_t + lo_t), near)
        };
        let (iw, iw_off, iw_p, iw_t, near_w) = inner(0);
        let (ih, ih_off, ih_p, ih_t, near_h) = inner(1);
        let mut risky = near_w | near_h;
        let ((cw, dw), (ch, dh)) = (clamp0(iw), clamp0(ih));
        let inter = cw * ch;
        let u = (pw * ratio) * (ph * ratio) + (tw * ratio) * (th * ratio) - inter + eps;
        let r = inter / u;
        let mut loss = one - r;
        let ru = one / u;
        let g_u = r * ru;
        let g_i = -ru - g_u;
        let (g_iw, g_ih) = (g_i * ch * dw, g_i * cw * dh);
        d.dx += g_iw * iw_off;
        d.dy += g_ih * ih_off;
        d.add_sides(one, [g_iw * iw_p, g_ih * ih_p, g_iw * iw_t, g_ih * ih_t]);
        d.add_sides(g_u * ratio * ratio, [ph, pw, th, tw]);
        if CIOU {
            let iou = Iou::new(geo, F::zero(), eps).r;
            let rdiag = one / (geo.diag2() + eps);
            let dist = geo.rho2() * rdiag;
            d.rho2(geo, rdiag);
            d.diag2(geo, -dist * rdiag);
            let (a_d, da, r) = Partials::angle_diff(geo, F::zero());
            risky |= r;
            let v = k::<F>(ASPECT_K) * a_d * a_d;
            let a = div_or_zero(v, (v - iou) + (one + eps)).0;
            d.add_sides(a * two * k::<F>(ASPECT_K) * a_d, da);
            loss += dist + a * v;
        }
        (loss, risky)
    }
}

/// `(1 − e^{−ω})⁴` and its derivative.
#[inline(always)]
fn shape_term<F: PairReal>(omega: F) -> (F, F) {
    let e = (-omega).fast_exp();
    let m = F::one() - e;
    let m2 = m * m;
    (m2 * m2, k::<F>(4.0) * m2 * m * e)
}

/// `(1 − e^{−ω})⁴` of `ω = div_or_zero(k·|a − b|, max(a, b))` and its partials w.r.t.
/// `(k, a, b)` (Shape-IoU's and SIoU's shape cost).
#[inline(always)]
fn shape_cost<F: PairReal>(kk: F, a: F, b: F) -> (F, [F; 3]) {
    let diff = a - b;
    let (abs, sign) = (diff.abs(), sign0(diff));
    let (m, m_a, m_b) = max_w(a, b);
    let (om, live) = div_or_zero(kk * abs, m);
    let (st, g_om) = shape_term(om);
    let rm = sel(live, F::one() / m, F::zero());
    let g_num = g_om * rm;
    let g_m = -om * rm * g_om;
    let g_diff = g_num * kk * sign;
    (st, [g_num * abs, g_diff + g_m * m_a, -g_diff + g_m * m_b])
}

/// `shape_iou_loss` (`S0`: `scale = 0`, where the weights are 1).
#[derive(Clone, Copy)]
struct Shape<const S0: bool> {
    scale: f64,
    eps: f64,
}

impl<const S0: bool> Formula for Shape<S0> {
    #[inline(always)]
    fn at<F: PairReal>(self, geo: &Geometry<F>, d: &mut Partials<F>) -> (F, bool) {
        let (eps, scale) = (k::<F>(self.eps), k::<F>(self.scale));
        let (zero, one, half, two) = (F::zero(), F::one(), k::<F>(0.5), k::<F>(2.0));
        let iou = Iou::new(geo, zero, eps);
        iou.back(geo, -one, zero, d);
        let [pw, ph, tw, th] = geo.sides;
        // ww = 2·w_t^s/(w_t^s + h_t^s), hh = 2·h_t^s/(..); 1 and 1 for s = 0.
        let ((sw, dsw, r1), (sh, dsh, r2)) = if S0 {
            ((one, zero, false), (one, zero, false))
        } else {
            (pow::<F, false>(tw, scale), pow::<F, false>(th, scale))
        };
        let risky = r1 | r2;
        let den = sw + sh;
        let ((fw, live), fh) = if S0 {
            ((half, false), half)
        } else {
            (div_or_zero(sw, den), div_or_zero(sh, den).0)
        };
        let (ww, hh) = (two * fw, two * fh);
        // Distance: (hh·dx² + ww·dy²)/c².
        let rc2 = one / (geo.diag2() + eps);
        let (dx2, dy2) = (geo.dx * geo.dx, geo.dy * geo.dy);
        let dist = (hh * dx2 + ww * dy2) * rc2;
        let mut g_hh = dx2 * rc2;
        let mut g_ww = dy2 * rc2;
        d.dx += two * geo.dx * hh * rc2;
        d.dy += two * geo.dy * ww * rc2;
        d.diag2(geo, -dist * rc2);
        // Shape: ω = k·|a − b|/max(a, b), k = hh for the widths, ww for the heights.
        let (st_w, [gk, ga, gb]) = shape_cost(hh, pw, tw);
        g_hh += half * gk;
        d.add_sides(half, [ga, zero, gb, zero]);
        let (st_h, [gk, ga, gb]) = shape_cost(ww, ph, th);
        g_ww += half * gk;
        d.add_sides(half, [zero, ga, zero, gb]);
        if !S0 {
            let (g_fw, g_fh) = (two * g_ww, two * g_hh);
            let rden = sel(live, one / den, zero);
            let g_den = -(g_fw * fw + g_fh * fh) * rden;
            d.sides[2] += sel(live, (g_fw * rden + g_den) * dsw, zero);
            d.sides[3] += sel(live, (g_fh * rden + g_den) * dsh, zero);
        }
        (one - iou.r + dist + half * (st_w + st_h), risky)
    }
}

/// `wise_iou_loss` version `V` (no eps): `inv_mean = 1/mean`, `ln_a = ln α`,
/// `neg_d_ln_a = −δ·ln α`.
#[derive(Clone, Copy)]
struct Wise<const V: u8> {
    inv_mean: f64,
    ln_a: f64,
    neg_d_ln_a: f64,
    delta: f64,
}

impl<const V: u8> Wise<V> {
    fn version<const W: u8>(self) -> Wise<W> {
        let Self {
            inv_mean,
            ln_a,
            neg_d_ln_a,
            delta,
        } = self;
        Wise {
            inv_mean,
            ln_a,
            neg_d_ln_a,
            delta,
        }
    }
}

impl<const V: u8> Formula for Wise<V> {
    #[inline(always)]
    fn at<F: PairReal>(self, geo: &Geometry<F>, d: &mut Partials<F>) -> (F, bool) {
        let (zero, one) = (F::zero(), F::one());
        // A zero union (I/U = 0 with a zero gradient) is decided in f64 for an f32 lane.
        let (iou, mut risky) = Iou::or_zero(geo);
        let l = one - iou.r;
        let den = geo.diag2(); // a constant of the gradient
        let (q, live) = div_or_zero(geo.rho2(), den);
        risky |= q > k::<F>(80.0);
        let r = q.fast_exp();
        let beta = l * k::<F>(self.inv_mean);
        let f = match V {
            1 => one,
            2 => beta.sqrt(),
            _ => beta / ((beta * k::<F>(self.ln_a) + k::<F>(self.neg_d_ln_a)).fast_exp() * k::<F>(self.delta)),
        };
        iou.back(geo, -f * r, zero, d);
        let rden = sel(live, one / den, zero);
        d.rho2(geo, f * r * l * rden);
        (r * l * f, risky)
    }
}

/// `focaler_iou_loss`: `k = 1/(u − d)`, `off = −d·k`.
#[derive(Clone, Copy)]
struct Focaler {
    k: f64,
    off: f64,
    eps: f64,
}

impl Formula for Focaler {
    const OUTER: bool = false;
    #[inline(always)]
    fn at<F: PairReal>(self, geo: &Geometry<F>, d: &mut Partials<F>) -> (F, bool) {
        let (zero, one, eps, kk) = (F::zero(), F::one(), k::<F>(self.eps), k::<F>(self.k));
        let iou = Iou::new(geo, eps, eps);
        let m = iou.r * kk + k::<F>(self.off);
        let inside = (m >= zero) & (m <= one);
        let cm = sel(m < zero, zero, sel(m > one, one, m));
        iou.back(geo, sel(inside, -kk, zero), zero, d);
        // Near a bound of the clamp the side is decided in f64 (not for disjoint boxes, whose
        // `I/U = 0` is exact).
        let near = |b: F| ((m - b).abs() <= k::<F>(1e-5)) & (iou.r != zero);
        (one - cm, near(zero) | near(one))
    }
}

/// `nwd_loss`: `inv_c = 1/C`.
#[derive(Clone, Copy)]
struct Nwd {
    inv_c: f64,
    eps: f64,
}

impl Formula for Nwd {
    const INTER: bool = false;
    const OUTER: bool = false;
    /// `W² = |c_p − c_t|² + ((w_p − w_t)² + (h_p − h_t)²)/4 = ½·Σ_k (p_k − t_k)²` per axis
    /// (`((a + b)/2)² + ((b − a)/2)² = (a² + b²)/2` for the corner offsets `a`, `b`): a sum of
    /// squares of the corner offsets, each one f32 subtraction, so the f32 distance has a few
    /// ulp of relative error even for close boxes far from the origin (no cancellation, no f64
    /// recomputation).
    #[inline(always)]
    fn at<F: PairReal>(self, geo: &Geometry<F>, d: &mut Partials<F>) -> (F, bool) {
        let (one, half, inv_c) = (F::one(), k::<F>(0.5), k::<F>(self.inv_c));
        let o = [0, 1, 2, 3].map(|i| geo.p[i] - geo.t[i]);
        let w2 = (o[0] * o[0] + o[1] * o[1] + o[2] * o[2] + o[3] * o[3]) * half + k::<F>(self.eps);
        let (c, dc) = clamp0(w2);
        let s = c.sqrt();
        let e = (-s * inv_c).fast_exp();
        // ∂/∂w² of 1 − e^{−√w²/C}; ∂w²/∂(p_k − t_k) = p_k − t_k, as the offset and the sides'
        // partials: ∂/∂dx = o₀ + o₂, ∂/∂w_p = −∂/∂w_t = (o₂ − o₀)/2.
        let g = e * inv_c * dc * half / s;
        d.dx += g * (o[0] + o[2]);
        d.dy += g * (o[1] + o[3]);
        let (gw, gh) = (g * half * (o[2] - o[0]), g * half * (o[3] - o[1]));
        d.add_sides(one, [gw, gh, -gw, -gh]);
        (one - e, false)
    }
}

/// SIoU's marker for [`Partials::chain`] (it reads every extent; its loss is [`siou`], f64 only:
/// not on the f32 lanes).
#[derive(Clone, Copy)]
struct Siou;

impl Formula for Siou {
    fn at<F: PairReal>(self, _: &Geometry<F>, _: &mut Partials<F>) -> (F, bool) {
        unreachable!("siou_loss is computed by `siou`")
    }
}

/// SIoU (f64 only: not on the f32 lanes).
#[inline(always)]
fn siou(geo: &Geometry<f64>, neg_gamma: bool, eps: f64, d: &mut Partials<f64>) -> f64 {
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
