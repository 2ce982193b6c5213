//! The geometry of a pair of `xyxy` boxes, shared by every loss and pairwise metric:
//! intersection, union, enclosing box, centre distance and the aspect-ratio angle.
//!
//! Two forms of the same quantities live here:
//! - tensor form (`Boxes` and the functions taking it), built from plain Candle ops and
//!   differentiated by Candle's autodiff; the same code serves aligned pairs (`[...]` columns
//!   against `[...]`) and pairwise metrics (`[N, 1]` columns against `[1, M]`, broadcast);
//! - scalar form (`max_w`, `min_w`, `aspect_angle_scalar`), used by the fused CPU kernel
//!   (module `fused`) which carries the gradient by hand.
//!
//! # Gradient rules at kinks (PyTorch's, in both forms)
//! - `max(a, b)` / `min(a, b)` at a tie `a == b`: the gradient is split, ½ to each argument
//!   (`torch.maximum`/`torch.minimum`; Candle's `maximum`/`minimum` do the same). Two identical
//!   boxes therefore get a zero gradient from their intersection and enclosing box.
//! - `clamp(x, lo, hi)` at a bound: the gradient passes (1 on the closed interval `[lo, hi]`),
//!   as `torch.clamp` ([`loss_core::ops::clamp`]).
//! - The losses of torchvision compute the intersection with a mask, `w·h` only where both
//!   extents are `> 0` (strictly), else 0: boxes that only touch (shared edge) get no gradient
//!   from the intersection (`Overlap::Masked`). The pairwise metrics (and mmdetection's
//!   SIoU) clamp each extent at 0 instead, so at a shared edge the gradient of the positive
//!   extent passes (`Overlap::Clamped`).
//! - `atan(w / h)` of CIoU is taken as the angle of the vector `(h, w)`: `atan(w/h)` for `h ≠ 0`,
//!   `±π/2` (the sign of `w`) for `h = 0` (so a zero-height box is finite, as `atan2(w, 0)`), and
//!   0 for a point box (`w = h = 0`). Its gradient is `(h, −w)/(w² + h²)` w.r.t. `(w, h)`, which
//!   is also the one-sided derivative at `h = 0`, and 0 for a point box.

use crate::boxes::columns;
use candle_core::{Result, Tensor};
use loss_core::kernel::Real;
use loss_core::ops;
use std::f64::consts::FRAC_PI_2;

/// The four coordinate columns of a set of `xyxy` boxes (each `[...]`, or `[N, 1]`/`[1, M]`
/// for pairwise metrics; every binary op below broadcasts).
#[derive(Debug, Clone)]
pub(crate) struct Boxes {
    pub x1: Tensor,
    pub y1: Tensor,
    pub x2: Tensor,
    pub y2: Tensor,
}

/// How the intersection extents are cut at 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overlap {
    /// torchvision's losses (`_loss_inter_union`): `w·h` where `w > 0` and `h > 0`, else 0.
    Masked,
    /// torchvision's pairwise metrics (`_box_inter_union`), mmdetection: `clamp(w, 0)·clamp(h, 0)`.
    Clamped,
}

impl Boxes {
    /// Columns of `[..., 4]` boxes, shape `[...]`.
    pub fn aligned(t: &Tensor) -> Result<Self> {
        let [x1, y1, x2, y2] = columns(t)?;
        Ok(Self { x1, y1, x2, y2 })
    }

    /// Columns of `[N, 4]` boxes as `[N, 1]` (the rows of a pairwise matrix).
    pub fn rows_of(t: &Tensor) -> Result<Self> {
        Self::aligned(t)?.map(|c| c.unsqueeze(1))
    }

    /// Columns of `[M, 4]` boxes as `[1, M]` (the columns of a pairwise matrix).
    pub fn cols_of(t: &Tensor) -> Result<Self> {
        Self::aligned(t)?.map(|c| c.unsqueeze(0))
    }

    fn map(self, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Self> {
        Ok(Self {
            x1: f(&self.x1)?,
            y1: f(&self.y1)?,
            x2: f(&self.x2)?,
            y2: f(&self.y2)?,
        })
    }

    /// `x2 − x1`.
    pub fn width(&self) -> Result<Tensor> {
        self.x2.sub(&self.x1)
    }

    /// `y2 − y1`.
    pub fn height(&self) -> Result<Tensor> {
        self.y2.sub(&self.y1)
    }

    /// `(x2 − x1)·(y2 − y1)`, unclamped (negative for a box inverted in one direction).
    pub fn area(&self) -> Result<Tensor> {
        self.width()?.mul(&self.height()?)
    }

    /// Twice the centre, `(x1 + x2, y1 + y2)`.
    fn centre2(&self) -> Result<(Tensor, Tensor)> {
        Ok((self.x1.add(&self.x2)?, self.y1.add(&self.y2)?))
    }
}

/// Extents of the intersection box, `min(x2) − max(x1)` and `min(y2) − max(y1)`, unclamped.
pub(crate) fn inner_extent(a: &Boxes, b: &Boxes) -> Result<(Tensor, Tensor)> {
    let w = a.x2.broadcast_minimum(&b.x2)?.sub(&a.x1.broadcast_maximum(&b.x1)?)?;
    let h = a.y2.broadcast_minimum(&b.y2)?.sub(&a.y1.broadcast_maximum(&b.y1)?)?;
    Ok((w, h))
}

/// Extents of the smallest enclosing box, `max(x2) − min(x1)` and `max(y2) − min(y1)`.
pub(crate) fn outer_extent(a: &Boxes, b: &Boxes) -> Result<(Tensor, Tensor)> {
    let w = a.x2.broadcast_maximum(&b.x2)?.sub(&a.x1.broadcast_minimum(&b.x1)?)?;
    let h = a.y2.broadcast_maximum(&b.y2)?.sub(&a.y1.broadcast_minimum(&b.y1)?)?;
    Ok((w, h))
}

/// Intersection area of each pair, cut at 0 by `overlap`.
pub(crate) fn intersection(a: &Boxes, b: &Boxes, overlap: Overlap) -> Result<Tensor> {
    let (w, h) = inner_extent(a, b)?;
    match overlap {
        Overlap::Masked => {
            let mask = w.gt(0.0)?.mul(&h.gt(0.0)?)?;
            mask.where_cond(&w.mul(&h)?, &w.zeros_like()?)
        }
        Overlap::Clamped => clamp_min(&w, 0.0)?.mul(&clamp_min(&h, 0.0)?),
    }
}

/// `area(a) + area(b) − inter` (broadcast).
pub(crate) fn union(a: &Boxes, b: &Boxes, inter: &Tensor) -> Result<Tensor> {
    a.area()?.broadcast_add(&b.area()?)?.sub(inter)
}

/// Squared distance between the centres of each pair.
pub(crate) fn centre_distance2(a: &Boxes, b: &Boxes) -> Result<Tensor> {
    let (ax, ay) = a.centre2()?;
    let (bx, by) = b.centre2()?;
    let dx = ax.broadcast_sub(&bx)?;
    let dy = ay.broadcast_sub(&by)?;
    (dx.sqr()? + dy.sqr()?)?.affine(0.25, 0.0)
}

/// `max(x, lo)` with PyTorch's clamp gradient (1 at the bound).
pub(crate) fn clamp_min(x: &Tensor, lo: f64) -> Result<Tensor> {
    ops::clamp(x, lo, f64::INFINITY)
}

/// `num / den` where `den ≠ 0`, and 0 (with a zero gradient) where `den = 0`. The division has
/// PyTorch's gradient ([`ops::div`]), finite for a tiny `den` (a box of area 1e-30).
pub(crate) fn div_or_zero(num: &Tensor, den: &Tensor) -> Result<Tensor> {
    let zero = den.eq(0.0)?;
    let safe = zero.where_cond(&den.ones_like()?, den)?;
    zero.where_cond(&num.zeros_like()?, &ops::div(num, &safe)?)
}

/// The aspect angle `atan(w / h)` with the conventions of the module docs (finite at `h = 0`),
/// differentiable w.r.t. `w` and `h` on every device.
pub(crate) fn aspect_angle(w: &Tensor, h: &Tensor) -> Result<Tensor> {
    let (w0, h0) = (w.detach(), h.detach());
    let flat = h0.eq(0.0)?;
    let ratio = w0.div(&flat.where_cond(&h0.ones_like()?, &h0)?)?;
    let edge = ops::composite::sign(&w0)?.affine(FRAC_PI_2, 0.0)?;
    let value = flat.where_cond(&edge, &ops::atan(&ratio)?)?;
    let r2 = (w0.sqr()? + h0.sqr()?)?;
    let dw = div_or_zero(&h0, &r2)?;
    let dh = div_or_zero(&w0.neg()?, &r2)?;
    ops::attach_grad(w, &value, &dw)?.add(&ops::attach_grad(h, &value.zeros_like()?, &dh)?)
}

/// CIoU's aspect term `v = 4/π² · (θ_a − θ_b)²` with `θ = aspect_angle(w, h)` (broadcast).
pub(crate) fn aspect_term(a: &Boxes, b: &Boxes) -> Result<Tensor> {
    let ta = aspect_angle(&a.width()?, &a.height()?)?;
    let tb = aspect_angle(&b.width()?, &b.height()?)?;
    ta.broadcast_sub(&tb)?.sqr()?.affine(ASPECT_K, 0.0)
}

/// `4 / π²`, the scale of CIoU's aspect term.
pub(crate) const ASPECT_K: f64 = 4.0 / (std::f64::consts::PI * std::f64::consts::PI);

/// `max(a, b)` and its gradient weights `(∂/∂a, ∂/∂b)`: `(1, 0)`, `(0, 1)`, or `(½, ½)` at a tie.
/// With a NaN argument the value is the other argument and the weights `(0, 1)` or `(1, 0)`:
/// NaN still reaches every loss and gradient, through the box's own sides, which every loss
/// reads. Two compares and three selects, no branch, so the f32 block kernel's lanes vectorise
/// it; one definition for every float type and both kernels.
#[inline(always)]
pub(crate) fn max_w<F: Real>(a: F, b: F) -> (F, F, F) {
    let (one, half, zero) = (F::one(), F::of(0.5), F::zero());
    let wa = sel(a > b, one, sel(a == b, half, zero));
    (sel(a > b, a, b), wa, one - wa)
}

/// `min(a, b)` and its gradient weights, with the tie and NaN rules of [`max_w`].
#[inline(always)]
pub(crate) fn min_w<F: Real>(a: F, b: F) -> (F, F, F) {
    let (one, half, zero) = (F::one(), F::of(0.5), F::zero());
    let wa = sel(a < b, one, sel(a == b, half, zero));
    (sel(a < b, a, b), wa, one - wa)
}

/// `if c { a } else { b }` with both arms computed: a select, not a branch.
#[inline(always)]
pub(crate) fn sel<F: Copy>(c: bool, a: F, b: F) -> F {
    if c {
        a
    } else {
        b
    }
}

/// The aspect angle of a `w × h` box and its gradient `(θ, ∂θ/∂w, ∂θ/∂h)` (scalar form of
/// [`aspect_angle`]).
#[inline]
pub(crate) fn aspect_angle_scalar(w: f64, h: f64) -> (f64, f64, f64) {
    let theta = if h == 0.0 {
        if w > 0.0 {
            FRAC_PI_2
        } else if w < 0.0 {
            -FRAC_PI_2
        } else {
            w * 0.0 // 0, NaN for NaN
        }
    } else {
        (w / h).atan()
    };
    let r2 = w * w + h * h;
    if r2 == 0.0 {
        (theta, 0.0, 0.0)
    } else {
        (theta, h / r2, -w / r2)
    }
}
