//! The pair kernel of every box loss, written once over the float ([`PairReal`]): one pass over
//! the shared geometry of a pair ([`Geometry`]: intersection, enclosing box, centre offset,
//! sides), a loss's formula on it ([`Formula::at`]), and its gradient as the partials w.r.t.
//! those quantities ([`Partials`]), taken back to the eight coordinates by one chain rule
//! ([`Chain::into_coords`]); [`eval`] runs the three. Here also the formulas of the torchvision
//! family ([`Torchvision`]: IoU, GIoU, DIoU, CIoU, EIoU) and their f64 pair ([`pair()`]); the IoU
//! successors' formulas are in [`super::successors`].
//!
//! The same source runs as scalar f64 code (f64 boxes, and the f64 recomputation of a risky f32
//! lane: [`exact`]) and as the f32 lanes of the block kernel ([`super::block_f32`], which calls
//! [`eval`] at `f32`). It is branch-free where the lanes need it (`max`/`min`/`clamp` are
//! selects, the options that change a formula's shape are const parameters fixed outside the
//! loops). A formula also says where its f32 value would not follow the f64 one closely
//! (`risky`); the block kernel recomputes those lanes in f64, the f64 path ignores the flag.
//! This module imports neither [`super::successors`] nor [`super::block_f32`].

use crate::geometry::{aspect_angle_scalar, max_w, min_w, sel, ASPECT_K};
use crate::kinds::{AlignedLoss, IouMode};
use loss_core::kernel::Real;
use loss_core::ops::Unary;
use std::ops::Deref;

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
    /// `num/den`, given `recip = 1/den`: f64 divides (the composite path's rounding, which the
    /// f64 box simulation's chaotic GIoU trajectories follow), f32 multiplies by `recip` (no
    /// division in the lanes).
    fn quot(num: Self, den: Self, recip: Self) -> Self;
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
    fn quot(num: f64, den: f64, _: f64) -> f64 {
        num / den
    }
}

/// A loss with its options fixed: its loss of one pair and the partials of that loss, at any
/// [`PairReal`] float.
pub(super) trait Formula: Copy {
    /// Whether the loss reads the intersection's extents (`false`: its partials stay 0, and the
    /// chain rule leaves out the intersection's `max`/`min` weights).
    const INTER: bool = true;
    /// Whether the loss reads the enclosing box's extents (as [`Formula::INTER`]).
    const OUTER: bool = true;
    /// Whether the loss is `−ln` of the value [`Formula::at`] returns (IoU's log mode): the f32
    /// block takes the logarithm outside its vectorised loop, [`finish`] for one value.
    const NEG_LN: bool = false;
    /// The loss of the pair `geo` (its partials added to `d`) and whether the lane is risky in
    /// f32 (see the module docs).
    fn at<F: PairReal>(self, geo: &Geometry<F>, d: &mut Partials<F>) -> (F, bool);
}

/// What a dispatch on the loss ([`visit_aligned`], `Successor::visit`) runs with the loss's
/// [`Formula`] (the block kernel's jobs, the f64 pair).
pub(super) trait WithFormula {
    /// What the job returns.
    type Out;
    /// Runs the job with the formula `s`.
    fn run<S: Formula>(self, s: S) -> Self::Out;
}

/// One pair in f64 ([`exact`] as a [`WithFormula`] job).
pub(super) struct PairJob {
    pub p: [f64; 4],
    pub t: [f64; 4],
    pub g: Option<f64>,
}

impl WithFormula for PairJob {
    type Out = (f64, [f64; 8]);
    #[inline(always)]
    fn run<S: Formula>(self, s: S) -> Self::Out {
        exact(s, self.p, self.t, self.g)
    }
}

/// One pair: `(value, gradient w.r.t. [p.x1, .., p.y2, t.x1, .., t.y2] for the upstream g (zeros
/// for `None`), risky)`; the value is the loss but for [`Formula::NEG_LN`] ([`finish`]).
#[inline(always)]
pub(super) fn eval<S: Formula, F: PairReal>(s: S, p: [F; 4], t: [F; 4], g: Option<F>) -> (F, [F; 8], bool) {
    let geo = Geometry::new(p, t);
    let mut d = Partials::filled(-F::zero());
    let (loss, risky) = s.at(&geo, &mut d);
    let grads = match g {
        Some(g) => d.chain::<S>(&geo, g).into_coords(),
        None => [F::zero(); 8],
    };
    (loss, grads, risky)
}

/// The loss of a value of [`eval`]: `−ln v` for [`Formula::NEG_LN`], else `v`.
#[inline(always)]
pub(super) fn finish<S: Formula, F: PairReal>(v: F) -> F {
    if S::NEG_LN {
        -v.ln()
    } else {
        v
    }
}

/// One pair in f64 scalar code: `(loss, gradient)` as [`eval`].
#[inline(always)]
pub(super) fn exact<S: Formula>(s: S, p: [f64; 4], t: [f64; 4], g: Option<f64>) -> (f64, [f64; 8]) {
    let (v, d, _) = eval(s, p, t, g);
    (finish::<S, f64>(v), d)
}

/// `v` in `F`.
#[inline(always)]
pub(super) fn k<F: PairReal>(v: f64) -> F {
    F::of(v)
}

/// The quantities of a pair that the losses read and the chain rule takes back to the
/// coordinates: one layout for their values ([`Geometry`]) and their partials ([`Partials`]).
#[derive(Clone, Copy)]
pub(super) struct Quantities<F> {
    /// Intersection extents, unclamped.
    pub iw: F,
    /// See `iw`.
    pub ih: F,
    /// Enclosing extents.
    pub cw: F,
    /// See `cw`.
    pub ch: F,
    /// Centre offset `c_p − c_t`.
    pub dx: F,
    /// See `dx`.
    pub dy: F,
    /// `(w_p, h_p, w_t, h_t)`.
    pub sides: [F; 4],
}

/// The quantities of a pair every loss reads ([`Quantities`], through `Deref`), with the boxes
/// and the `max`/`min` weights of the extents.
pub(super) struct Geometry<F> {
    /// The boxes.
    pub p: [F; 4],
    /// See `p`.
    pub t: [F; 4],
    q: Quantities<F>,
    inter_w: [F; 8],
    outer_w: [F; 8],
}

impl<F> Deref for Geometry<F> {
    type Target = Quantities<F>;
    #[inline(always)]
    fn deref(&self) -> &Quantities<F> {
        &self.q
    }
}

impl<F: PairReal> Geometry<F> {
    #[inline(always)]
    pub(super) fn new(p: [F; 4], t: [F; 4]) -> Self {
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
            q: Quantities {
                iw: ix2 - ix1,
                ih: iy2 - iy1,
                cw: cx2 - cx1,
                ch: cy2 - cy1,
                // The composite's order: the sums first, so equal centres give exactly 0.
                dx: half * ((px1 + px2) - (tx1 + tx2)),
                dy: half * ((py1 + py2) - (ty1 + ty2)),
                sides: [px2 - px1, py2 - py1, tx2 - tx1, ty2 - ty1],
            },
            inter_w: [ix1_p, ix1_t, ix2_p, ix2_t, iy1_p, iy1_t, iy2_p, iy2_t],
            outer_w: [cx1_p, cx1_t, cx2_p, cx2_t, cy1_p, cy1_t, cy2_p, cy2_t],
        }
    }

    /// `ρ² = dx² + dy²`.
    #[inline(always)]
    pub(super) fn rho2(&self) -> F {
        self.dx * self.dx + self.dy * self.dy
    }

    /// `C_w² + C_h²`.
    #[inline(always)]
    pub(super) fn diag2(&self) -> F {
        self.cw * self.cw + self.ch * self.ch
    }
}

/// The partials of a pair's loss w.r.t. the quantities of [`Geometry`] (not yet times the
/// upstream gradient).
pub(super) type Partials<F> = Quantities<F>;

impl<F: PairReal> Quantities<F> {
    /// All partials `z`: `0` or, for [`eval`], `−0`, where the first term a formula adds then
    /// folds away (`x + (−0)` is `x` for every `x`, where `x + 0` is not for `x = −0`) and the
    /// coordinates' gradients are those of a `+0` start ([`Chain::into_coords`] sums from `+0`,
    /// which no term turns into `−0`).
    #[inline(always)]
    pub(super) fn filled(z: F) -> Self {
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

    /// Adds `g·∂ρ²` as partials of the centre offset.
    #[inline(always)]
    pub(super) fn add_rho2(&mut self, geo: &Geometry<F>, g: F) {
        let two = k::<F>(2.0);
        self.dx += two * geo.dx * g;
        self.dy += two * geo.dy * g;
    }

    /// Adds `g·∂(C_w² + C_h²)` as partials of the enclosing extents.
    #[inline(always)]
    pub(super) fn add_diag2(&mut self, geo: &Geometry<F>, g: F) {
        let two = k::<F>(2.0);
        self.cw += two * geo.cw * g;
        self.ch += two * geo.ch * g;
    }

    /// The angle difference `θ_t − θ_p`, `θ = atan(w/(h + h_eps))` ([`PairReal::aspect`]), and
    /// its partials: `(d, [∂d/∂w_p, ∂d/∂h_p, ∂d/∂w_t, ∂d/∂h_t], risky)`.
    #[inline(always)]
    pub(super) fn angle_diff(geo: &Geometry<F>, h_eps: F) -> (F, [F; 4], bool) {
        let [pw, ph, tw, th] = geo.sides;
        let (ap, ap_w, ap_h, rp) = F::aspect(pw, ph + h_eps);
        let (at, at_w, at_h, rt) = F::aspect(tw, th + h_eps);
        (at - ap, [-ap_w, -ap_h, at_w, at_h], rp | rt)
    }

    /// Adds `g·d` to the partials of the sides.
    #[inline(always)]
    pub(super) fn add_sides(&mut self, g: F, d: [F; 4]) {
        for (s, x) in self.sides.iter_mut().zip(d) {
            *s += g * x;
        }
    }

    /// The [`Chain`] of these partials for the upstream gradient `g`, of a loss that reads the
    /// extents `S` says (the others' terms are constant zeros, so their weights are never
    /// computed).
    #[inline(always)]
    pub(super) fn chain<S: Formula>(self, geo: &Geometry<F>, g: F) -> Chain<F> {
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

/// The torchvision family's losses as const-generic codes of [`Torchvision`] (the dispatch on
/// the kind happens once, outside the loops: [`visit_aligned`]).
pub(super) const IOU_LINEAR: u8 = 0;
pub(super) const IOU_SQUARE: u8 = 1;
pub(super) const IOU_LOG: u8 = 2;
pub(super) const GIOU: u8 = 3;
pub(super) const DIOU: u8 = 4;
pub(super) const CIOU: u8 = 5;
pub(super) const EIOU: u8 = 6;

/// A loss of the torchvision family ([`AlignedLoss`] as its code `K`) with its `eps`. See
/// [`crate::losses`] for the formulas: the masked intersection (no gradient where the boxes
/// do not overlap), `IoU = I/(U + eps)`, CIoU's `α` held constant, `atan(w/h)` finite at
/// `h = 0`. For `IOU_LOG` the value is `max(IoU, eps)` ([`Formula::NEG_LN`]). Divisions by a
/// quantity used twice are one reciprocal (the lanes' form: no `diag²` or `C_w²` squared to
/// overflow). Risky in f32: only CIoU's aspect angles ([`PairReal::aspect`]).
#[derive(Clone, Copy)]
pub(super) struct Torchvision<const K: u8> {
    /// The `eps` of the loss.
    pub eps: f64,
}

impl<const K: u8> Formula for Torchvision<K> {
    const OUTER: bool = K >= GIOU;
    const NEG_LN: bool = K == IOU_LOG;
    #[inline(always)]
    fn at<F: PairReal>(self, geo: &Geometry<F>, d: &mut Partials<F>) -> (F, bool) {
        let (zero, one, two, eps) = (F::zero(), F::one(), k::<F>(2.0), k::<F>(self.eps));
        // Intersection (torchvision's masked form).
        let (iw, ih) = (geo.iw, geo.ih);
        let overlap = (iw > zero) & (ih > zero);
        let inter = sel(overlap, iw * ih, zero);
        let [pw, ph, tw, th] = geo.sides;
        let union = pw * ph + tw * th - inter;
        let ue = union + eps;
        let iou = inter / ue;
        // The value, and the partials w.r.t. IoU and U (beyond IoU's own) of the terms.
        let mut g_iou = -one;
        let mut loss = one - iou;
        let mut g_union = zero;
        let mut risky = false;
        let (cw, ch) = (geo.cw, geo.ch);
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
                let r = one / ace;
                let q = F::quot(ac - union, ace, r);
                loss += q;
                // ∂q/∂ac = (1 − q)/(ac + eps), as the composite path's division.
                let g_ac = F::quot(one - q, ace, r);
                g_union -= r;
                d.cw += g_ac * ch;
                d.ch += g_ac * cw;
            }
            _ => {
                // DIoU, CIoU, EIoU
                let rd = one / (geo.diag2() + eps);
                let ratio = geo.rho2() * rd;
                loss += ratio;
                // −ρ²/diag², as (ρ²/diag)/diag: no diag² to overflow.
                d.add_diag2(geo, -ratio * rd);
                d.add_rho2(geo, rd);
                if K == CIOU {
                    let (a_d, da, r) = Partials::angle_diff(geo, zero);
                    risky = r;
                    let v = k::<F>(ASPECT_K) * a_d * a_d;
                    // alpha is a constant for the gradient (torch.no_grad in torchvision).
                    let alpha = v / (one - iou + v + eps);
                    loss += alpha * v;
                    d.add_sides(two * k::<F>(ASPECT_K) * a_d * alpha, da);
                } else if K == EIOU {
                    let (dw, dh) = (pw - tw, ph - th);
                    let (rw, rh) = (one / (cw * cw + eps), one / (ch * ch + eps));
                    let (ew, eh) = (dw * dw * rw, dh * dh * rh);
                    loss += ew + eh;
                    let (gw, gh) = (two * dw * rw, two * dh * rh);
                    d.add_sides(one, [gw, gh, -gw, -gh]);
                    // 2·cw·dw²/cw2², as (dw²/cw2)/cw2: no cw2² to overflow.
                    d.cw -= two * cw * ew * rw;
                    d.ch -= two * ch * eh * rh;
                }
            }
        }
        // IoU = I/(U + eps) back to the intersection's extents and the sides.
        let rue = one / ue;
        let g_union = g_union - F::quot(g_iou * iou, ue, rue);
        let g_inter = F::quot(g_iou, ue, rue) - g_union;
        d.iw += sel(overlap, g_inter * ih, zero);
        d.ih += sel(overlap, g_inter * iw, zero);
        d.add_sides(g_union, [ph, pw, th, tw]);
        (loss, risky)
    }
}

/// Runs `job` with the [`Torchvision`] formula of `kind` (the one dispatch on the kind,
/// outside the loops).
#[inline(always)]
pub(super) fn visit_aligned<J: WithFormula>(kind: AlignedLoss, eps: f64, job: J) -> J::Out {
    match kind {
        AlignedLoss::Iou(IouMode::Linear) => job.run(Torchvision::<IOU_LINEAR> { eps }),
        AlignedLoss::Iou(IouMode::Square) => job.run(Torchvision::<IOU_SQUARE> { eps }),
        AlignedLoss::Iou(IouMode::Log) => job.run(Torchvision::<IOU_LOG> { eps }),
        AlignedLoss::Giou => job.run(Torchvision::<GIOU> { eps }),
        AlignedLoss::Diou => job.run(Torchvision::<DIOU> { eps }),
        AlignedLoss::Ciou => job.run(Torchvision::<CIOU> { eps }),
        AlignedLoss::Eiou => job.run(Torchvision::<EIOU> { eps }),
    }
}

/// The loss of one pair and, with `g = Some(upstream)`, its gradient w.r.t. `p` and `t` (f64
/// scalar code of [`Torchvision`]).
///
/// `p` and `t` are `xyxy` boxes. See [`crate::losses`] for the formulas.
#[inline]
pub(crate) fn pair(kind: AlignedLoss, p: [f64; 4], t: [f64; 4], eps: f64, g: Option<f64>) -> (f64, [f64; 8]) {
    visit_aligned(kind, eps, PairJob { p, t, g })
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
