//! The authors' closed-form gradients (Zheng et al., AAAI 2020), as in their public MATLAB code
//! (repository Zzh-tju/DIoU, folder "simulation experiment": `dIOU.m`, `dGIOU.m`, `dDIOU.m`,
//! `dCIOU.m` and helpers), re-derived here conventions and all.
//!
//! Every function returns the *ascent* direction of the score (IoU, GIoU, −DIoU penalty, ...)
//! with respect to `(x, y, w, h)`; the simulation adds it: `B += lr (2 − IoU) s`.
//! The conventions, which make these differ from the true gradients of the losses:
//!
//! - **IoU part** (all four): the derivative of IoU w.r.t. the edges `(t, b, l, r)`
//!   (`t = y − h/2`, `b = y + h/2`, `l = x − w/2`, `r = x + w/2`) is mapped to `(x, y, w, h)` by
//!   `dx = dl + dr`, `dy = dt + db`, `dw = dr − dl`, `dh = db − dt`, without the factor ½ of the
//!   chain rule in `dw` and `dh` (their `to_xywh.m`). It is 0 when the boxes do not overlap. If a
//!   box has turned over (`t ≥ b`), both edge derivatives take the value of `db` (`dl`, `dr` take
//!   `dr` when `l ≥ r`), the effect of their two sequential assignments.
//! - **GIoU** adds `d(U/C)` w.r.t. the edges (`U` union, `C` enclosing area) and, for disjoint
//!   boxes, uses that term alone with the intersection `(min b − max t)(min r − max l)` left
//!   unclamped in `U` and in `dU` (it can be negative or the product of two negative sides).
//! - **DIoU** adds `−d(ρ²/c²)` (`ρ` centre distance, `c` enclosing diagonal) w.r.t. `(x, y, w, h)`
//!   directly, with the enclosing box's width and height given the *same* derivative vector
//!   (`(∂r − ∂l)·x, (∂b − ∂t)·y, (∂r − ∂l)·w, (∂b − ∂t)·h`, where an enclosing edge moves with the
//!   anchor only when the anchor sticks out on that side), the width's `w` entry set to −1 when the
//!   anchor sticks out on both sides (and the height's `h` entry likewise), and the `x`, `y` entries
//!   written `(2(xg − x)c² − ∂c²/∂x · ρ²) / c⁴`.
//! - **CIoU** adds `α · 8/π² (atan(wg/hg) − atan(w/h)) · (h, −w)` to `(dw, dh)`: the derivative of
//!   `v` without its factor `1/(w² + h²)`, with `α = v / (1 − IoU + v + 1e−7)`.
//!
//! [`paper_gradient`] is the scalar form (the CPU path); [`paper_gradient_tensor`] the same in
//! plain Candle ops for any device. Tests hold the two equal.

use super::kernels::{maxr, minr, Real};
use super::BoxLoss;
use candle_core::{DType, Result, Tensor, D};

/// A box by its edges: top, bottom, left, right (`t < b`, `l < r` for a proper box).
#[derive(Debug, Clone, Copy)]
struct Edges<T> {
    t: T,
    b: T,
    l: T,
    r: T,
}

/// The smallest box enclosing both.
#[inline]
fn enclosing<T: Real>(p: &Edges<T>, g: &Edges<T>) -> Edges<T> {
    Edges {
        t: minr(p.t, g.t),
        b: maxr(p.b, g.b),
        l: minr(p.l, g.l),
        r: maxr(p.r, g.r),
    }
}

/// `(x, y, w, h)` to edges (their `to_tblr.m`).
#[inline]
fn edges<T: Real>(v: [T; 4]) -> Edges<T> {
    let two = T::of(2.0);
    Edges {
        t: v[1] - v[3] / two,
        b: v[1] + v[3] / two,
        l: v[0] - v[2] / two,
        r: v[0] + v[2] / two,
    }
}

/// Edge derivatives `(t, b, l, r)` to `(x, y, w, h)` (their `to_xywh.m`, no ½ on w and h).
#[inline]
fn to_xywh<T: Real>(d: [T; 4]) -> [T; 4] {
    [d[2] + d[3], d[0] + d[1], d[3] - d[2], d[1] - d[0]]
}

/// Intersection box (their `In.m`) and the unclamped intersection area and union.
struct Overlap<T> {
    i: Edges<T>,
    inter: T,
    union: T,
    /// Both sides of the intersection box are positive.
    overlaps: bool,
}

#[inline]
fn overlap<T: Real>(p: &Edges<T>, g: &Edges<T>) -> Overlap<T> {
    let i = Edges {
        t: maxr(p.t, g.t),
        b: minr(p.b, g.b),
        l: maxr(p.l, g.l),
        r: minr(p.r, g.r),
    };
    let inter = (i.b - i.t) * (i.r - i.l);
    let union = (p.b - p.t) * (p.r - p.l) + (g.b - g.t) * (g.r - g.l) - inter;
    Overlap {
        i,
        inter,
        union,
        overlaps: i.t < i.b && i.l < i.r,
    }
}

/// IoU as their `iou.m`: `I / U` when the boxes overlap, else 0.
#[inline]
fn iou_of<T: Real>(o: &Overlap<T>) -> T {
    if o.overlaps {
        o.inter / o.union
    } else {
        T::zero()
    }
}

/// IoU of two `(x, y, w, h)` boxes as their `iou.m` (0 for disjoint boxes).
#[inline]
pub fn iou<T: Real>(pred: [T; 4], gt: [T; 4]) -> T {
    iou_of(&overlap(&edges(pred), &edges(gt)))
}

/// Derivatives of the intersection and of the union w.r.t. the anchor's edges (`dIbox.m`,
/// `dUbox.m`), with the intersection's sides unclamped.
#[inline]
fn d_inter_union<T: Real>(p: &Edges<T>, g: &Edges<T>, o: &Overlap<T>) -> ([T; 4], [T; 4]) {
    let (iw, ih) = (o.i.r - o.i.l, o.i.b - o.i.t);
    let z = T::zero();
    let di = [
        if p.t > g.t { -iw } else { z },
        if p.b < g.b { iw } else { z },
        if p.l > g.l { -ih } else { z },
        if p.r < g.r { ih } else { z },
    ];
    let (pw, ph) = (p.r - p.l, p.b - p.t);
    let dx = [-pw, pw, -ph, ph];
    (di, [dx[0] - di[0], dx[1] - di[1], dx[2] - di[2], dx[3] - di[3]])
}

/// Their `dIOU.m`: d IoU / d(t, b, l, r), 0 unless the boxes overlap.
///
/// The turned-over test is written `!(t < b)` on purpose: their `if t<b ... else` takes the
/// `else` branch for NaN too.
#[inline]
#[allow(clippy::neg_cmp_op_on_partial_ord)]
fn d_iou_edges<T: Real>(p: &Edges<T>, g: &Edges<T>, o: &Overlap<T>) -> [T; 4] {
    let mut s = [T::zero(); 4];
    if o.overlaps && o.union > T::zero() {
        let (di, du) = d_inter_union(p, g, o);
        let u2 = o.union * o.union;
        for k in 0..4 {
            s[k] = (o.union * di[k] - o.inter * du[k]) / u2;
        }
    }
    if !(p.t < p.b) {
        s[0] = s[1];
    }
    if !(p.l < p.r) {
        s[2] = s[3];
    }
    s
}

/// Their `dGIOU.m`: d GIoU / d(t, b, l, r).
#[inline]
fn d_giou_edges<T: Real>(p: &Edges<T>, g: &Edges<T>, o: &Overlap<T>) -> [T; 4] {
    let (_, du) = d_inter_union(p, g, o);
    let c = enclosing(p, g);
    let (cw, ch) = (c.r - c.l, c.b - c.t);
    let z = T::zero();
    let dc = [
        if p.t < g.t { -cw } else { z },
        if p.b > g.b { cw } else { z },
        if p.l < g.l { -ch } else { z },
        if p.r > g.r { ch } else { z },
    ];
    let area = ch * cw;
    let penalty = |k: usize| (area * du[k] - o.union * dc[k]) / (area * area);
    if o.overlaps {
        let mut s = d_iou_edges(p, g, o);
        if area > z {
            for (k, sk) in s.iter_mut().enumerate() {
                *sk += penalty(k);
            }
        }
        s
    } else {
        [penalty(0), penalty(1), penalty(2), penalty(3)]
    }
}

/// Their `dDIOU.m` distance part: −d(ρ²/c²) / d(x, y, w, h) with their enclosing-box
/// derivatives, plus (CIoU, `dCIOU.m`) the aspect term `α · 8/π² Δatan · (h, −w)`.
#[inline]
fn d_distance<T: Real>(a: [T; 4], gt: [T; 4], p: &Edges<T>, g: &Edges<T>, iou: T, ciou: bool) -> [T; 4] {
    let c = enclosing(p, g);
    let (cw, ch) = (c.r - c.l, c.b - c.t);
    let c2 = ch * ch + cw * cw;
    let (z, one, half) = (T::zero(), T::one(), T::of(0.5));
    let (top, bottom, left, right) = (p.t < g.t, p.b > g.b, p.l < g.l, p.r > g.r);
    // (dx, dy, dw, dh) of each enclosing edge.
    let ct = if top { [z, one, z, -half] } else { [z; 4] };
    let cb = if bottom { [z, one, z, half] } else { [z; 4] };
    let cl = if left { [one, z, -half, z] } else { [z; 4] };
    let cr = if right { [one, z, half, z] } else { [z; 4] };
    let shared = [cr[0] - cl[0], cb[1] - ct[1], cr[2] - cl[2], cb[3] - ct[3]];
    let mut dcw = shared;
    let mut dch = shared;
    if left && right {
        dcw[2] = -one;
    }
    if top && bottom {
        dch[3] = -one;
    }
    let two = T::of(2.0);
    let d = (a[0] - gt[0]) * (a[0] - gt[0]) + (a[1] - gt[1]) * (a[1] - gt[1]);
    let dc2 = |k: usize| two * cw * dcw[k] + two * ch * dch[k];
    let c4 = c2 * c2;
    let mut s = [
        (two * (gt[0] - a[0]) * c2 - dc2(0) * d) / c4,
        (two * (gt[1] - a[1]) * c2 - dc2(1) * d) / c4,
        dc2(2) * d / c4,
        dc2(3) * d / c4,
    ];
    if ciou {
        let pi2 = T::of(std::f64::consts::PI * std::f64::consts::PI);
        let delta = (gt[2] / gt[3]).atan() - (a[2] / a[3]).atan();
        let v = T::of(4.0) / pi2 * delta * delta;
        let alpha = v / (one - iou + v + T::of(1e-7));
        let k = T::of(8.0) / pi2 * delta;
        s[2] += alpha * (k * a[3]);
        s[3] += alpha * (-k * a[2]);
    }
    s
}

/// The authors' update direction for one anchor `pred = (x, y, w, h)` and target `gt`, and the
/// IoU of the pair (their `iou.m`, used in the step factor `2 − IoU`).
///
/// The simulation step is `pred += lr (2 − IoU) s` with `s` the returned direction.
#[inline]
pub fn paper_gradient<T: Real>(loss: BoxLoss, pred: [T; 4], gt: [T; 4]) -> ([T; 4], T) {
    let p = edges(pred);
    let g = edges(gt);
    let o = overlap(&p, &g);
    let iou = iou_of(&o);
    let s = match loss {
        BoxLoss::Iou => to_xywh(d_iou_edges(&p, &g, &o)),
        BoxLoss::Giou => to_xywh(d_giou_edges(&p, &g, &o)),
        BoxLoss::Diou | BoxLoss::Ciou => {
            let dist = d_distance(pred, gt, &p, &g, iou, loss == BoxLoss::Ciou);
            let i = to_xywh(d_iou_edges(&p, &g, &o));
            [dist[0] + i[0], dist[1] + i[1], dist[2] + i[2], dist[3] + i[3]]
        }
    };
    (s, iou)
}

// ---------------------------------------------------------------------------------------------
// The same in plain Candle ops, for any device.

/// A `[N]` tensor set of four per-box values.
type Quad = [Tensor; 4];

fn columns(b: &Tensor) -> Result<Quad> {
    Ok([
        b.narrow(1, 0, 1)?.squeeze(1)?,
        b.narrow(1, 1, 1)?.squeeze(1)?,
        b.narrow(1, 2, 1)?.squeeze(1)?,
        b.narrow(1, 3, 1)?.squeeze(1)?,
    ])
}

/// `mask ? a : b` with a `u8` mask.
fn sel(mask: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    mask.where_cond(a, b)
}

/// `mask ? v : 0` as a float tensor of `dtype`.
fn const_where(mask: &Tensor, v: f64, dtype: DType) -> Result<Tensor> {
    mask.to_dtype(dtype)?.affine(v, 0.0)
}

struct TEdges {
    t: Tensor,
    b: Tensor,
    l: Tensor,
    r: Tensor,
}

fn t_edges(v: &Quad) -> Result<TEdges> {
    let hw = v[2].affine(0.5, 0.0)?;
    let hh = v[3].affine(0.5, 0.0)?;
    Ok(TEdges {
        t: v[1].sub(&hh)?,
        b: v[1].add(&hh)?,
        l: v[0].sub(&hw)?,
        r: v[0].add(&hw)?,
    })
}

fn t_to_xywh(d: &Quad) -> Result<Quad> {
    Ok([d[2].add(&d[3])?, d[0].add(&d[1])?, d[3].sub(&d[2])?, d[1].sub(&d[0])?])
}

struct TOverlap {
    iw: Tensor,
    ih: Tensor,
    inter: Tensor,
    union: Tensor,
    overlaps: Tensor,
}

fn t_overlap(p: &TEdges, g: &TEdges) -> Result<TOverlap> {
    let (it, ib) = (p.t.maximum(&g.t)?, p.b.minimum(&g.b)?);
    let (il, ir) = (p.l.maximum(&g.l)?, p.r.minimum(&g.r)?);
    let (iw, ih) = (ir.sub(&il)?, ib.sub(&it)?);
    let inter = ih.mul(&iw)?;
    let pa = p.b.sub(&p.t)?.mul(&p.r.sub(&p.l)?)?;
    let ga = g.b.sub(&g.t)?.mul(&g.r.sub(&g.l)?)?;
    let union = pa.add(&ga)?.sub(&inter)?;
    let overlaps = it.lt(&ib)?.mul(&il.lt(&ir)?)?;
    Ok(TOverlap {
        iw,
        ih,
        inter,
        union,
        overlaps,
    })
}

fn t_iou(o: &TOverlap) -> Result<Tensor> {
    let zero = o.inter.zeros_like()?;
    // Divide only where the boxes overlap (U > 0 there), so no 0/0 is ever selected.
    let safe_u = sel(&o.overlaps, &o.union, &zero.ones_like()?)?;
    sel(&o.overlaps, &o.inter.div(&safe_u)?, &zero)
}

fn t_d_inter_union(p: &TEdges, g: &TEdges, o: &TOverlap) -> Result<(Quad, Quad)> {
    let zero = o.iw.zeros_like()?;
    let di = [
        sel(&p.t.gt(&g.t)?, &o.iw.neg()?, &zero)?,
        sel(&p.b.lt(&g.b)?, &o.iw, &zero)?,
        sel(&p.l.gt(&g.l)?, &o.ih.neg()?, &zero)?,
        sel(&p.r.lt(&g.r)?, &o.ih, &zero)?,
    ];
    let (pw, ph) = (p.r.sub(&p.l)?, p.b.sub(&p.t)?);
    let dx = [pw.neg()?, pw.clone(), ph.neg()?, ph];
    let du = [
        dx[0].sub(&di[0])?,
        dx[1].sub(&di[1])?,
        dx[2].sub(&di[2])?,
        dx[3].sub(&di[3])?,
    ];
    Ok((di, du))
}

fn t_d_iou_edges(p: &TEdges, g: &TEdges, o: &TOverlap) -> Result<Quad> {
    let (di, du) = t_d_inter_union(p, g, o)?;
    let zero = o.inter.zeros_like()?;
    let ok = o.overlaps.mul(&o.union.gt(&zero)?)?;
    let safe_u = sel(&ok, &o.union, &zero.ones_like()?)?;
    let u2 = safe_u.sqr()?;
    let mut s = Vec::with_capacity(4);
    for k in 0..4 {
        let v = safe_u.mul(&di[k])?.sub(&o.inter.mul(&du[k])?)?.div(&u2)?;
        s.push(sel(&ok, &v, &zero)?);
    }
    let flip_tb = p.t.lt(&p.b)?;
    let flip_lr = p.l.lt(&p.r)?;
    let dt = sel(&flip_tb, &s[0], &s[1])?;
    let dl = sel(&flip_lr, &s[2], &s[3])?;
    Ok([dt, s[1].clone(), dl, s[3].clone()])
}

fn t_d_giou_edges(p: &TEdges, g: &TEdges, o: &TOverlap) -> Result<Quad> {
    let (_, du) = t_d_inter_union(p, g, o)?;
    let (ct, cb) = (p.t.minimum(&g.t)?, p.b.maximum(&g.b)?);
    let (cl, cr) = (p.l.minimum(&g.l)?, p.r.maximum(&g.r)?);
    let (cw, ch) = (cr.sub(&cl)?, cb.sub(&ct)?);
    let zero = cw.zeros_like()?;
    let dc = [
        sel(&p.t.lt(&g.t)?, &cw.neg()?, &zero)?,
        sel(&p.b.gt(&g.b)?, &cw, &zero)?,
        sel(&p.l.lt(&g.l)?, &ch.neg()?, &zero)?,
        sel(&p.r.gt(&g.r)?, &ch, &zero)?,
    ];
    let area = ch.mul(&cw)?;
    let a2 = area.sqr()?;
    let diou = t_d_iou_edges(p, g, o)?;
    let positive = area.gt(&zero)?;
    let mut s = Vec::with_capacity(4);
    for k in 0..4 {
        let pen = area.mul(&du[k])?.sub(&o.union.mul(&dc[k])?)?.div(&a2)?;
        let inside = sel(&positive, &diou[k].add(&pen)?, &diou[k])?;
        s.push(sel(&o.overlaps, &inside, &pen)?);
    }
    Ok([s[0].clone(), s[1].clone(), s[2].clone(), s[3].clone()])
}

fn t_d_distance(a: &Quad, gt: &Quad, p: &TEdges, g: &TEdges, iou: &Tensor, ciou: bool) -> Result<Quad> {
    let dt = a[0].dtype();
    let (ct, cb) = (p.t.minimum(&g.t)?, p.b.maximum(&g.b)?);
    let (cl, cr) = (p.l.minimum(&g.l)?, p.r.maximum(&g.r)?);
    let (cw, ch) = (cr.sub(&cl)?, cb.sub(&ct)?);
    let c2 = ch.sqr()?.add(&cw.sqr()?)?;
    let (top, bottom) = (p.t.lt(&g.t)?, p.b.gt(&g.b)?);
    let (left, right) = (p.l.lt(&g.l)?, p.r.gt(&g.r)?);
    // (∂r − ∂l)·x, (∂b − ∂t)·y, (∂r − ∂l)·w, (∂b − ∂t)·h of the enclosing box.
    let sx = const_where(&right, 1.0, dt)?.sub(&const_where(&left, 1.0, dt)?)?;
    let sy = const_where(&bottom, 1.0, dt)?.sub(&const_where(&top, 1.0, dt)?)?;
    let sw = const_where(&right, 0.5, dt)?.sub(&const_where(&left, -0.5, dt)?)?;
    let sh = const_where(&bottom, 0.5, dt)?.sub(&const_where(&top, -0.5, dt)?)?;
    let minus_one = sw.ones_like()?.neg()?;
    let dcw_w = sel(&left.mul(&right)?, &minus_one, &sw)?;
    let dch_h = sel(&top.mul(&bottom)?, &minus_one, &sh)?;
    let (cw2, ch2) = (cw.affine(2.0, 0.0)?, ch.affine(2.0, 0.0)?);
    let dc2 = |dw: &Tensor, dh: &Tensor| -> Result<Tensor> { cw2.mul(dw)?.add(&ch2.mul(dh)?) };
    let (ex, ey) = (a[0].sub(&gt[0])?, a[1].sub(&gt[1])?);
    let d = ex.sqr()?.add(&ey.sqr()?)?;
    let c4 = c2.sqr()?;
    let sx_out = ex
        .affine(-2.0, 0.0)?
        .mul(&c2)?
        .sub(&dc2(&sx, &sx)?.mul(&d)?)?
        .div(&c4)?;
    let sy_out = ey
        .affine(-2.0, 0.0)?
        .mul(&c2)?
        .sub(&dc2(&sy, &sy)?.mul(&d)?)?
        .div(&c4)?;
    let mut sw_out = dc2(&dcw_w, &sw)?.mul(&d)?.div(&c4)?;
    let mut sh_out = dc2(&sh, &dch_h)?.mul(&d)?.div(&c4)?;
    if ciou {
        let pi2 = std::f64::consts::PI * std::f64::consts::PI;
        let delta = loss_core::ops::atan(&gt[2].div(&gt[3])?)?.sub(&loss_core::ops::atan(&a[2].div(&a[3])?)?)?;
        let v = delta.sqr()?.affine(4.0 / pi2, 0.0)?;
        let alpha = v.div(&iou.neg()?.add(&v)?.affine(1.0, 1.0 + 1e-7)?)?;
        let k = delta.affine(8.0 / pi2, 0.0)?.mul(&alpha)?;
        sw_out = sw_out.add(&k.mul(&a[3])?)?;
        sh_out = sh_out.sub(&k.mul(&a[2])?)?;
    }
    Ok([sx_out, sy_out, sw_out, sh_out])
}

/// IoU of `[N, 4]` boxes `(x, y, w, h)` against targets as their `iou.m` (0 for disjoint boxes),
/// `[N]`, in plain Candle ops (any device).
///
/// # Errors
/// Shapes other than `[N, 4]`, a tensor error.
pub fn iou_tensor(pred: &Tensor, gt: &Tensor) -> Result<Tensor> {
    let p = t_edges(&columns(pred)?)?;
    let g = t_edges(&columns(gt)?)?;
    t_iou(&t_overlap(&p, &g)?)
}

/// [`paper_gradient`] for `[N, 4]` anchors and targets `(x, y, w, h)` in plain Candle ops (any
/// device): the `[N, 4]` directions and the `[N]` IoUs.
///
/// # Errors
/// Shapes other than `[N, 4]`, a tensor error.
pub fn paper_gradient_tensor(loss: BoxLoss, pred: &Tensor, gt: &Tensor) -> Result<(Tensor, Tensor)> {
    let a = columns(pred)?;
    let b = columns(gt)?;
    let p = t_edges(&a)?;
    let g = t_edges(&b)?;
    let o = t_overlap(&p, &g)?;
    let iou = t_iou(&o)?;
    let s = match loss {
        BoxLoss::Iou => t_to_xywh(&t_d_iou_edges(&p, &g, &o)?)?,
        BoxLoss::Giou => t_to_xywh(&t_d_giou_edges(&p, &g, &o)?)?,
        BoxLoss::Diou | BoxLoss::Ciou => {
            let dist = t_d_distance(&a, &b, &p, &g, &iou, loss == BoxLoss::Ciou)?;
            let i = t_to_xywh(&t_d_iou_edges(&p, &g, &o)?)?;
            [
                dist[0].add(&i[0])?,
                dist[1].add(&i[1])?,
                dist[2].add(&i[2])?,
                dist[3].add(&i[3])?,
            ]
        }
    };
    Ok((Tensor::stack(&s, D::Minus1)?, iou))
}
