//! Fused CPU kernels of the dense-detection losses ([`crate::dense`]): forward and analytic
//! backward over f32/f64 slices, written with the kernel layer ([`loss_core::kernel`]).
//!
//! - Elementwise ([`kernel::elementwise`], one pass forward, one pass backward, the gradient
//!   saved by a reduced forward): varifocal, Gaussian focal, balanced L1, Poly-1 focal and the
//!   dense-target quality focal loss, named by [`Pointwise`] and run by [`pointwise`]. Each is a
//!   [`Partials`] type (its value and both partials in one function, an [`Elementwise`] through
//!   [`ByPartials`]); an exponent of 2 (or 4) is a separate type ([`Two`], [`Four`]) so that the
//!   defaults run on multiplications only, any other through `exp(e·ln q)` ([`Pow`]), which
//!   vectorises in f32.
//! - Rows ([`RowLoss`], named by [`PerRow`] and run by [`per_row`]): the `(label, score)` quality
//!   focal loss (every class a negative, the label's class fixed up after the vectorised pass),
//!   the distribution focal loss and Poly-1 cross-entropy with class indices (a softmax per row,
//!   [`row_softmax_into`]). The per-row second input (`score`, DFL's `label`; Poly-1's indices as
//!   floats, untracked) gets its gradient in a separate pass only when it is tracked.
//!
//! The formulas, and the gradient conventions at kinks, are those of the composite forms in
//! [`crate::dense`] (`tests/fused_dense.rs` holds the two equal in value and gradient).

use candle_core::{Result, Shape, Tensor};
use loss_core::kernel::{
    self, build, for_each_chunk, logistic, row_softmax_into, select, Arg, Elementwise, Fused2, Fused3, Grads2, Real,
    SavedGrad, Split,
};
use loss_core::Reduction;
use std::mem::MaybeUninit;
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// Small pieces.

/// `sign(d)` with 0 at 0 and at NaN (the gradient of `|d|`, `loss_core::ops::abs`).
#[inline(always)]
fn sign0<F: Real>(d: F) -> F {
    select(d > F::zero(), F::one(), F::zero()) - select(d < F::zero(), F::one(), F::zero())
}

/// `ln(1 + z)` for `z >= 0` (accurate near 0).
#[inline(always)]
fn ln1p<F: Real>(z: F) -> F {
    select(z <= F::one(), z.ln1p_unit(), (F::one() + z).fast_ln())
}

/// An exponent `e >= 0`: `(qᵉ, e·qᵉ⁻¹)` for `q >= 0`, with `0⁰ = 1` and the derivative at
/// `q = 0` 1 for `e = 1` and 0 for `e > 1` (`loss_core::ops::powf`'s). Where the derivative is
/// `+inf` (`e < 1` at `q = 0`) or overflows (`e < 1` at a subnormal `q`) it is the largest finite
/// number, as `loss_core::ops::attach_grad` clamps the composite path's: a zero factor beside it
/// still gives 0, not NaN.
trait Exponent: Copy + Send + Sync + 'static {
    fn pow_d<F: Real>(self, q: F) -> (F, F);
}

/// `e = 2`.
#[derive(Clone, Copy)]
struct Two;

impl Exponent for Two {
    #[inline(always)]
    fn pow_d<F: Real>(self, q: F) -> (F, F) {
        (q * q, q + q)
    }
}

/// `e = 4`.
#[derive(Clone, Copy)]
struct Four;

impl Exponent for Four {
    #[inline(always)]
    fn pow_d<F: Real>(self, q: F) -> (F, F) {
        let q2 = q * q;
        (q2 * q2, F::of(4.0) * q2 * q)
    }
}

/// Any `e >= 0`, as `exp(e·ln q)`.
#[derive(Clone, Copy)]
struct Pow(f64);

impl Exponent for Pow {
    #[inline(always)]
    fn pow_d<F: Real>(self, q: F) -> (F, F) {
        let (z, one, max) = (F::zero(), F::one(), F::max_value());
        let e = F::of(self.0);
        let v = (e * q.fast_ln()).fast_exp();
        let at0 = q == z;
        let v = select(at0, select(self.0 == 0.0, one, z), v);
        let d0 = if self.0 == 1.0 {
            one
        } else if self.0 < 1.0 {
            max
        } else {
            z
        };
        let d = select(at0, d0, e * v / q);
        // +inf where `q^(e−1)` overflows; NaN stays NaN.
        let d = select(d > max, max, d);
        if self.0 == 0.0 {
            (one, z)
        } else {
            (v, d)
        }
    }
}

/// Runs `$body` with `$e` bound to the [`Exponent`] of `$v` (2 → [`Two`], else [`Pow`]).
macro_rules! with_exponent {
    ($v:expr, |$e:ident| $body:expr) => {
        if $v == 2.0 {
            let $e = Two;
            $body
        } else {
            let $e = Pow($v);
            $body
        }
    };
}

/// How a prediction becomes a probability and a binary cross-entropy: logits
/// (`BCEWithLogits`, `σ(x)`) or probabilities (`binary_cross_entropy`, logs clamped at −100,
/// PyTorch's gradient `(p − t)/max(p(1 − p), 1e-12)`).
///
/// `parts(x)` gives `(σ, dσ/dx, b0, b1, g0, g1)` with `BCE(x, t) = b0 + t·(b1 − b0)`,
/// `∂BCE/∂x = g0 + t·(g1 − g0)` and `∂BCE/∂t = b1 − b0`.
trait Link: Copy + Send + Sync + 'static {
    fn parts<F: Real>(self, x: F) -> [F; 6];
}

/// Logits.
#[derive(Clone, Copy)]
struct Logits;

impl Link for Logits {
    #[inline(always)]
    fn parts<F: Real>(self, x: F) -> [F; 6] {
        let (s, sn, spn) = logistic(x);
        [s, s * sn, x + spn, spn, s, -sn]
    }
}

/// Probabilities (`activated`).
#[derive(Clone, Copy)]
struct Probs;

impl Link for Probs {
    #[inline(always)]
    fn parts<F: Real>(self, p: F) -> [F; 6] {
        let one = F::one();
        let floor = F::of(-100.0);
        // NaN stays NaN (as the composite path's `maximum`).
        let max = |a: F, b: F| select(a > b || a.is_nan(), a, b);
        let lp = max(p.fast_ln(), floor);
        let lq = max((one - p).fast_ln(), floor);
        let den = max(p * (one - p), F::of(1e-12));
        [p, one, -lq, -lp, p / den, (p - one) / den]
    }
}

/// `BCE(x, t)` and its partials `(∂/∂x, ∂/∂t)` from [`Link::parts`].
#[inline(always)]
fn bce<F: Real>(parts: &[F; 6], t: F) -> (F, F, F) {
    let [_, _, b0, b1, g0, g1] = *parts;
    (b0 + t * (b1 - b0), g0 + t * (g1 - g0), b1 - b0)
}

/// QFL's negative term `BCE(x, 0)·σ^β` and its `x`-derivative.
#[inline(always)]
fn qfl_negative<F: Real, E: Exponent>(parts: &[F; 6], e: E) -> (F, F) {
    let [s, ds, b0, _, g0, _] = *parts;
    let (w, dw) = e.pow_d(s);
    (b0 * w, g0 * w + b0 * dw * ds)
}

/// QFL's positive term `BCE(x, t)·|t − σ|^β` and its partials `(value, ∂/∂x, ∂/∂t)`.
#[inline(always)]
fn qfl_positive<F: Real, E: Exponent>(parts: &[F; 6], t: F, e: E) -> (F, F, F) {
    let [s, ds, ..] = *parts;
    let (b, bx, bt) = bce(parts, t);
    let d = t - s;
    let (w, dw) = e.pow_d(d.abs());
    let dw = dw * sign0(d);
    (b * w, bx * w - b * dw * ds, bt * w + b * dw)
}

// ---------------------------------------------------------------------------------------------
// Elementwise losses.

/// A dense elementwise loss as one function of its value and both partial derivatives, which
/// share most of their terms; [`ByPartials`] makes it the kernel layer's [`Elementwise`].
trait Partials: Copy + Send + Sync + 'static {
    /// `(ℓ, ∂ℓ/∂x, ∂ℓ/∂t)` at `(x, t)`; `∂ℓ/∂t` is only read when `WANT_T` (0 is fine otherwise).
    fn all<F: Real, const WANT_T: bool>(self, x: F, t: F) -> (F, F, F);
}

/// A [`Partials`] loss as an [`Elementwise`] one: each method keeps the part it needs (the rest
/// of the inlined [`Partials::all`] is dead code to the compiler).
#[derive(Clone, Copy)]
struct ByPartials<K>(K);

impl<K: Partials> Elementwise for ByPartials<K> {
    #[inline(always)]
    fn value<F: Real>(self, x: F, t: F) -> F {
        self.0.all::<F, false>(x, t).0
    }
    #[inline(always)]
    fn grad<F: Real, const WRT_T: bool>(self, x: F, t: F) -> F {
        let (_, gx, gt) = self.0.all::<F, WRT_T>(x, t);
        if WRT_T {
            gt
        } else {
            gx
        }
    }
}

/// Varifocal: `BCE(x, t)·(t or 1)` for `t > 0`, `BCE(x, t)·α·|σ − t|^γ` otherwise.
#[derive(Clone, Copy)]
struct Varifocal<E> {
    alpha: f64,
    iou_weighted: bool,
    e: E,
}

impl<E: Exponent> Partials for Varifocal<E> {
    #[inline(always)]
    fn all<F: Real, const WANT_T: bool>(self, x: F, t: F) -> (F, F, F) {
        let parts = Logits.parts(x);
        let [s, ds, ..] = parts;
        let (b, bx, bt) = bce(&parts, t);
        let d = s - t;
        let (p, dp) = self.e.pow_d(d.abs());
        let a = F::of(self.alpha);
        let dw = a * dp * sign0(d);
        let pos = t > F::zero();
        let w = select(pos, select(self.iou_weighted, t, F::one()), a * p);
        let wx = select(pos, F::zero(), dw * ds);
        let wt = select(pos, select(self.iou_weighted, F::one(), F::zero()), -dw);
        (b * w, bx * w + b * wx, bt * w + b * wt)
    }
}

/// Quality focal with a dense target: the positive term where `t ≠ 0`, the negative elsewhere.
#[derive(Clone, Copy)]
struct QflDense<L, E> {
    link: L,
    e: E,
}

impl<L: Link, E: Exponent> Partials for QflDense<L, E> {
    #[inline(always)]
    fn all<F: Real, const WANT_T: bool>(self, x: F, t: F) -> (F, F, F) {
        let parts = self.link.parts(x);
        let (n, nx) = qfl_negative(&parts, self.e);
        let (p, px, pt) = qfl_positive(&parts, t, self.e);
        let pos = t != F::zero();
        (select(pos, p, n), select(pos, px, nx), select(pos, pt, F::zero()))
    }
}

/// Gaussian focal: `−pw·ln(p + ε)·(1 − p)^α·[t = 1] − nw·ln(1 − p + ε)·p^α·(1 − t)^γ`.
#[derive(Clone, Copy)]
struct GaussianFocal<A, G> {
    a: A,
    g: G,
    /// `(pos_weight, neg_weight)`.
    w: (f64, f64),
}

impl<A: Exponent, G: Exponent> Partials for GaussianFocal<A, G> {
    #[inline(always)]
    fn all<F: Real, const WANT_T: bool>(self, p: F, t: F) -> (F, F, F) {
        let (one, eps) = (F::one(), F::of(1e-12));
        let q = one - p;
        let (lp, lq) = ((p + eps).fast_ln(), (q + eps).fast_ln());
        let (qa, dqa) = self.a.pow_d(q);
        let (pa, dpa) = self.a.pow_d(p);
        let (tg, dtg) = self.g.pow_d(one - t);
        let peak = t == one;
        let (pw, nw) = (F::of(self.w.0), F::of(self.w.1));
        let pos = select(peak, -lp * qa, F::zero());
        let pos_p = select(peak, lp * dqa - qa / (p + eps), F::zero());
        let neg = -lq * pa * tg;
        let neg_p = (pa / (q + eps) - lq * dpa) * tg;
        let gt = if WANT_T { nw * lq * pa * dtg } else { F::zero() };
        (pw * pos + nw * neg, pw * pos_p + nw * neg_p, gt)
    }
}

/// Balanced L1 on `a = |x − t|`, `b = e^(γ/α) − 1`.
#[derive(Clone, Copy)]
struct BalancedL1 {
    alpha: f64,
    gamma: f64,
    beta: f64,
    b: f64,
}

impl Partials for BalancedL1 {
    /// `∂ℓ/∂t = −∂ℓ/∂x`.
    #[inline(always)]
    fn all<F: Real, const WANT_T: bool>(self, x: F, t: F) -> (F, F, F) {
        let (a_, g, be, b) = (F::of(self.alpha), F::of(self.gamma), F::of(self.beta), F::of(self.b));
        let d = x - t;
        let a = d.abs();
        let ba = b * a;
        let l = ln1p(ba / be);
        let small = a_ / b * (ba + F::one()) * l - a_ * a;
        let large = g * a + F::of(self.gamma / self.b - self.alpha * self.beta);
        let inside = a < be;
        let dsmall = a_ * l + a_ * (ba + F::one()) / (ba + be) - a_;
        let gx = select(inside, dsmall, g) * sign0(d);
        (select(inside, small, large), gx, -gx)
    }
}

/// Poly-1 focal: `α_t·(BCE(x, y)·q^γ + ε·q^(γ+1))`, `q = 1 − p_t`; labels get no gradient.
#[derive(Clone, Copy)]
struct Poly1Focal<E> {
    epsilon: f64,
    alpha: f64,
    e: E,
}

impl<E: Exponent> Partials for Poly1Focal<E> {
    /// The labels get no gradient (`∂ℓ/∂y = 0`).
    #[inline(always)]
    fn all<F: Real, const WANT_T: bool>(self, x: F, y: F) -> (F, F, F) {
        let one = F::one();
        let (s, sn, spn) = logistic(x);
        let q = y * sn + (one - y) * s;
        let dq = (one - y - y) * s * sn;
        let ce = (one - y) * x + spn;
        let (qg, dqg) = self.e.pow_d(q);
        let eps = F::of(self.epsilon);
        let at = if self.alpha >= 0.0 {
            let a = F::of(self.alpha);
            y * a + (one - y) * (one - a)
        } else {
            one
        };
        let v = at * (ce * qg + eps * qg * q);
        let g = at * ((s - y) * qg + ce * dqg * dq + eps * (qg + q * dqg) * dq);
        (v, g, F::zero())
    }
}

/// `Mean` of an empty input as `Sum` (0), the rule of the box losses and of balanced L1.
fn empty_mean_is_zero(x: &Tensor, reduction: Reduction) -> Reduction {
    if reduction == Reduction::Mean && x.elem_count() == 0 {
        Reduction::Sum
    } else {
        reduction
    }
}

/// The elementwise dense losses with their parameters (checked by the caller): what
/// [`pointwise`] runs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pointwise {
    /// Varifocal: `pred` the logits, `target` the IoU-aware scores.
    Varifocal { alpha: f64, gamma: f64, iou_weighted: bool },
    /// Quality focal with a dense `[N, C]` target: the class sums `[N]`, or their mean over `N` /
    /// sum.
    QualityFocal { beta: f64, activated: bool },
    /// Gaussian focal: `pred` the heatmap, `target` the Gaussian target.
    GaussianFocal {
        alpha: f64,
        gamma: f64,
        pos_weight: f64,
        neg_weight: f64,
    },
    /// Balanced L1 (the mean of an empty input is 0).
    BalancedL1 { alpha: f64, gamma: f64, beta: f64 },
    /// Poly-1 focal: `target` the labels, detached by the caller.
    Poly1Focal { epsilon: f64, alpha: f64, gamma: f64 },
}

/// Runs the fused kernel of `loss` on `pred` and `target` (same shape and float dtype).
pub(crate) fn pointwise(loss: Pointwise, pred: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    match loss {
        Pointwise::Varifocal {
            alpha,
            gamma,
            iou_weighted,
        } => with_exponent!(gamma, |e| run(
            Varifocal { alpha, iou_weighted, e },
            pred,
            target,
            reduction
        )),
        Pointwise::QualityFocal { beta, activated } => {
            // The mean over rows is the sum over elements divided by dim 0.
            let r = if reduction == Reduction::Mean {
                Reduction::BatchMean
            } else {
                reduction
            };
            let out = with_exponent!(beta, |e| if activated {
                run(QflDense { link: Probs, e }, pred, target, r)
            } else {
                run(QflDense { link: Logits, e }, pred, target, r)
            })?;
            if reduction == Reduction::None {
                out.sum_keepdim(1)?.squeeze(1)
            } else {
                Ok(out)
            }
        }
        Pointwise::GaussianFocal {
            alpha,
            gamma,
            pos_weight,
            neg_weight,
        } => {
            let w = (pos_weight, neg_weight);
            if alpha == 2.0 && gamma == 4.0 {
                let (a, g) = (Two, Four);
                run(GaussianFocal { a, g, w }, pred, target, reduction)
            } else {
                let (a, g) = (Pow(alpha), Pow(gamma));
                run(GaussianFocal { a, g, w }, pred, target, reduction)
            }
        }
        Pointwise::BalancedL1 { alpha, gamma, beta } => {
            let b = (gamma / alpha).exp() - 1.0;
            let k = BalancedL1 { alpha, gamma, beta, b };
            run(k, pred, target, empty_mean_is_zero(pred, reduction))
        }
        Pointwise::Poly1Focal { epsilon, alpha, gamma } => {
            with_exponent!(gamma, |e| run(
                Poly1Focal { epsilon, alpha, e },
                pred,
                target,
                reduction
            ))
        }
    }
}

/// The kernel layer's elementwise kernel of the [`Partials`] loss `k`.
fn run<K: Partials>(k: K, pred: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    kernel::elementwise(ByPartials(k), pred, target, reduction)
}

// ---------------------------------------------------------------------------------------------
// Row losses.

/// A loss of the rows of `[N, C]` predictions `x` with one value `aux[i]` a row (a score, a
/// label), summed or averaged over rows.
trait RowLoss: Clone + Send + Sync + 'static {
    /// The op's name.
    const NAME: &'static str;
    /// `ℓᵢ` of row `i`; with `grad = Some((g, out))` also writes `g·∂ℓᵢ/∂x` to all of `out`.
    fn row<F: Real>(&self, i: usize, x: &[F], aux: F, grad: Option<(F, &mut [MaybeUninit<F>])>) -> f64;
    /// `∂ℓᵢ/∂aux[i]`.
    fn aux_grad<F: Real>(&self, i: usize, x: &[F], aux: F) -> F;
}

/// The upstream factor of row `i`: a scalar, or per row times a scale.
#[derive(Clone, Copy)]
enum Up<'a, F> {
    Scalar(F),
    Rows(&'a [F], F),
}

impl<F: Real> Up<'_, F> {
    #[inline(always)]
    fn at(self, i: usize) -> F {
        match self {
            Up::Scalar(g) => g,
            Up::Rows(u, s) => u[i] * s,
        }
    }
}

/// The split of `n` rows of `c`: about [`Split::ELEMENTS`]`.chunk` elements a task.
fn row_split(c: usize) -> Split {
    Split::new((Split::ELEMENTS.chunk / c.max(1)).max(1))
}

/// Runs `r` over the rows `items` of one chunk: the sum of their losses, each row's gradient
/// written to `grad` (`c` values a row) and each loss to `losses` where given.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn chunk<R: RowLoss, F: Real>(
    r: &R,
    x: &[F],
    aux: &[F],
    c: usize,
    items: std::ops::Range<usize>,
    up: Up<'_, F>,
    mut grad: Option<&mut [MaybeUninit<F>]>,
    mut losses: Option<&mut [MaybeUninit<F>]>,
) -> f64 {
    let mut sum = 0.0;
    let r0 = items.start;
    for i in items {
        let k = i - r0;
        let g = grad.as_deref_mut().map(|g| (up.at(i), &mut g[k * c..(k + 1) * c]));
        let v = r.row(i, &x[i * c..(i + 1) * c], aux[i], g);
        if let Some(l) = losses.as_deref_mut() {
            l[k].write(F::of(v));
        }
        sum += v;
    }
    sum
}

// [`chunk`] compiled for AVX2 + FMA where the CPU has them (through `with_simd`'s closure the
// row loops stay scalar).
loss_core::simd_entry!(chunk_simd<R: RowLoss, F: Real>(r: &R, x: &[F], aux: &[F], c: usize, items: std::ops::Range<usize>, up: Up<'_, F>, grad: Option<&mut [MaybeUninit<F>]>, losses: Option<&mut [MaybeUninit<F>]>) -> f64 = chunk);

/// Every row of `x` (`[n, c]`): the sum of the losses, and either the `[n, c]` gradient (`up`)
/// or the `[n]` losses.
enum Out {
    Sum,
    Grad,
    Losses,
}

fn rows<R: RowLoss, F: Real>(r: &R, x: &[F], aux: &[F], c: usize, up: Up<'_, F>, out: Out) -> (f64, Vec<F>) {
    let n = aux.len();
    let split = row_split(c);
    match out {
        Out::Sum => {
            let parts = for_each_chunk(split, n, 0, [], |items, []: [&mut [F]; 0]| {
                chunk_simd(r, x, aux, c, items, up, None, None)
            });
            (parts.iter().sum(), Vec::new())
        }
        Out::Grad => {
            let (g, parts) = build(split, n, c, |items, part| {
                chunk_simd(r, x, aux, c, items, up, Some(part), None)
            });
            (parts.iter().sum(), g)
        }
        Out::Losses => {
            let (l, parts) = build(split, n, 1, |items, part| {
                chunk_simd(r, x, aux, c, items, up, None, Some(part))
            });
            (parts.iter().sum(), l)
        }
    }
}

/// The forward op of a [`RowLoss`]: `[N]` losses, or their mean over `N` / sum; a reduced loss
/// whose prediction needs a gradient writes it in the same pass and keeps it.
struct RowOp<R> {
    r: R,
    reduction: Reduction,
    save_grad: bool,
    saved: SavedGrad,
}

/// `1/N` for a mean over `n` rows, else 1.
fn row_scale(reduction: Reduction, n: usize) -> f64 {
    if reduction == Reduction::Mean {
        1.0 / n as f64
    } else {
        1.0
    }
}

impl<R: RowLoss> Fused2 for RowOp<R> {
    fn name(&self) -> &'static str {
        R::NAME
    }

    fn forward<F: Real>(&self, x: Arg<'_>, aux: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        let (n, c) = x.layout.shape().dims2()?;
        let (xs, aux) = (x.contiguous::<F>("pred")?, aux.contiguous::<F>("aux")?);
        if self.reduction == Reduction::None {
            let (_, l) = rows(&self.r, xs, aux, c, Up::Scalar(F::one()), Out::Losses);
            return Ok((l, Shape::from(n)));
        }
        let scale = row_scale(self.reduction, n);
        let (sum, grad) = if self.save_grad {
            rows(&self.r, xs, aux, c, Up::Scalar(F::of(scale)), Out::Grad)
        } else {
            rows(&self.r, xs, aux, c, Up::Scalar(F::one()), Out::Sum)
        };
        if self.save_grad {
            self.saved.keep(Some(F::to_cpu_storage_owned(grad)));
        }
        Ok((vec![F::of(sum * scale)], Shape::from(())))
    }

    fn backward(&self, x: &Tensor, aux: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Grads2> {
        kernel::backward2(&self.saved, x, aux, grad, |wrt_aux| RowGradOp {
            r: self.r.clone(),
            reduction: self.reduction,
            wrt_aux,
        })
    }
}

/// The backward op of a [`RowLoss`]: `upstream·∂ℓ/∂x` (`[N, C]`) or `upstream·∂ℓ/∂aux` (`[N]`).
struct RowGradOp<R> {
    r: R,
    reduction: Reduction,
    wrt_aux: bool,
}

impl<R: RowLoss> Fused3 for RowGradOp<R> {
    fn name(&self) -> &'static str {
        R::NAME
    }

    fn forward<F: Real>(&self, x: Arg<'_>, aux: Arg<'_>, g: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        let (n, c) = x.layout.shape().dims2()?;
        let (xs, aux, g) = (
            x.contiguous::<F>("pred")?,
            aux.contiguous::<F>("aux")?,
            g.contiguous::<F>("grad")?,
        );
        let scale = F::of(row_scale(self.reduction, n));
        let up = if self.reduction == Reduction::None {
            Up::Rows(g, scale)
        } else {
            Up::Scalar(g[0] * scale)
        };
        if self.wrt_aux {
            let r = &self.r;
            let (v, _) = build(row_split(c), n, 1, |items, part| {
                for (o, i) in part.iter_mut().zip(items) {
                    o.write(up.at(i) * r.aux_grad(i, &xs[i * c..(i + 1) * c], aux[i]));
                }
            });
            return Ok((v, Shape::from(n)));
        }
        let (_, v) = rows(&self.r, xs, aux, c, up, Out::Grad);
        Ok((v, x.layout.shape().clone()))
    }
}

/// Runs the row loss `r` of `pred` (`[N, C]`) and `aux` (`[N]`, pred's dtype).
fn apply_rows<R: RowLoss>(r: R, pred: &Tensor, aux: &Tensor, reduction: Reduction) -> Result<Tensor> {
    let x = pred.contiguous()?;
    let op = RowOp {
        r,
        reduction,
        save_grad: reduction != Reduction::None && x.track_op(),
        saved: SavedGrad::default(),
    };
    kernel::apply2(op, &x, &aux.contiguous()?)
}

/// `Some(class)` for a label in `[0, c)`.
#[inline(always)]
fn class_of(label: i64, c: usize) -> Option<usize> {
    (label >= 0 && (label as u64) < c as u64).then_some(label as usize)
}

/// Quality focal loss with `(label, score)` targets: every class a negative, then the label's
/// class replaced by the positive term (`aux` = score).
#[derive(Clone)]
struct QflRows<L, E> {
    link: L,
    e: E,
    labels: Arc<Vec<i64>>,
}

impl<L: Link, E: Exponent> RowLoss for QflRows<L, E> {
    const NAME: &'static str = "fused-quality-focal-loss";

    #[inline(always)]
    fn row<F: Real>(&self, i: usize, x: &[F], score: F, grad: Option<(F, &mut [MaybeUninit<F>])>) -> f64 {
        let (link, e) = (self.link, self.e);
        let label = class_of(self.labels[i], x.len());
        let neg = |v: F| qfl_negative(&link.parts(v), e);
        let (sum, out) = match grad {
            Some((g, out)) => (
                kernel::row_sum_map_into(x, out, |v| {
                    let (n, nx) = neg(v);
                    (n, g * nx)
                }),
                Some((g, out)),
            ),
            None => (kernel::row_sum_map(x, |v| neg(v).0), None),
        };
        let Some(l) = label else {
            return sum.f64();
        };
        let parts = link.parts(x[l]);
        let (n, _) = qfl_negative(&parts, e);
        let (p, px, _) = qfl_positive(&parts, score, e);
        if let Some((g, out)) = out {
            out[l].write(g * px);
        }
        (sum - n).f64() + p.f64()
    }

    fn aux_grad<F: Real>(&self, i: usize, x: &[F], score: F) -> F {
        match class_of(self.labels[i], x.len()) {
            Some(l) => qfl_positive(&self.link.parts(x[l]), score, self.e).2,
            None => F::zero(),
        }
    }
}

/// The two bins of a DFL label `y` among `bins`: `(l, r, w_l, w_r)` with `l = ⌊y⌋` (0 for NaN,
/// at most `bins − 1`), `r = min(l + 1, bins − 1)`, `w_l = l + 1 − y`, `w_r = y − l`.
#[inline(always)]
fn dfl_bins<F: Real>(y: F, bins: usize) -> (usize, usize, F, F) {
    let top = bins - 1;
    let l = if y.is_nan() {
        0
    } else {
        (y.floor().f64().max(0.0) as usize).min(top)
    };
    let r = (l + 1).min(top);
    let lf = F::of(l as f64);
    (l, r, lf + F::one() - y, y - lf)
}

/// Distribution focal loss (`aux` = the continuous label).
#[derive(Clone)]
struct Dfl;

impl RowLoss for Dfl {
    const NAME: &'static str = "fused-distribution-focal-loss";

    #[inline(always)]
    fn row<F: Real>(&self, _: usize, x: &[F], y: F, grad: Option<(F, &mut [MaybeUninit<F>])>) -> f64 {
        let (l, r, wl, wr) = dfl_bins(y, x.len());
        let lse = match grad {
            Some((g, out)) => {
                let m = kernel::row_max(x);
                let lse = if m.is_finite() {
                    // p_c·g·(w_l + w_r) = e_c·(g·(w_l + w_r)/s): one scaling pass.
                    let s = kernel::row_exp_sum_into(x, m, out);
                    // SAFETY: `row_exp_sum_into` wrote every element.
                    let out = unsafe { kernel::assume_init(out) };
                    let a = g * (wl + wr) / s;
                    out.iter_mut().for_each(|o| *o *= a);
                    m + s.fast_ln()
                } else {
                    let lse = row_softmax_into(x, out);
                    // SAFETY: `row_softmax_into` wrote every element.
                    let out = unsafe { kernel::assume_init(out) };
                    let a = g * (wl + wr);
                    out.iter_mut().for_each(|o| *o *= a);
                    lse
                };
                // SAFETY: both branches wrote every element.
                let out = unsafe { kernel::assume_init(out) };
                out[l] -= g * wl;
                out[r] -= g * wr;
                lse
            }
            None => {
                let m = kernel::row_max(x);
                let shift = if m.is_finite() { m } else { F::zero() };
                shift + kernel::row_exp_sum(x, shift).fast_ln()
            }
        };
        ((lse - x[l]) * wl + (lse - x[r]) * wr).f64()
    }

    fn aux_grad<F: Real>(&self, _: usize, x: &[F], y: F) -> F {
        let (l, r, _, _) = dfl_bins(y, x.len());
        // (lse − x_r) − (lse − x_l)
        x[l] - x[r]
    }
}

/// Poly-1 cross-entropy with class indices (`aux` = the class as a float, untracked) and label
/// smoothing `ls`: `y' = (1 − ls)·onehot + ls/C`,
/// `ℓ = Σ y'_c·(lse − x_c) + ε·(1 − S)`, `S = Σ y'_c·p_c`;
/// `∂ℓ/∂x_c = p_c·(1 − ε·y'_c + ε·S) − y'_c`.
#[derive(Clone)]
struct Poly1Ce {
    epsilon: f64,
    smoothing: f64,
}

impl RowLoss for Poly1Ce {
    const NAME: &'static str = "fused-poly1-cross-entropy";

    #[inline(always)]
    fn row<F: Real>(&self, _: usize, x: &[F], y: F, grad: Option<(F, &mut [MaybeUninit<F>])>) -> f64 {
        let c = x.len();
        let y = y.f64() as usize;
        let ls = self.smoothing;
        let (on, off) = (F::of(1.0 - ls + ls / c as f64), F::of(ls / c as f64));
        let eps = F::of(self.epsilon);
        let (lse, py) = match grad {
            Some((g, out)) => {
                let lse = row_softmax_into(x, out);
                // SAFETY: `row_softmax_into` wrote every element.
                let out = unsafe { kernel::assume_init(out) };
                let py = out[y];
                let s = F::of(1.0 - ls) * py + off;
                let a = g * (F::one() - eps * off + eps * s);
                let b = g * off;
                out.iter_mut().for_each(|o| *o = a * *o - b);
                out[y] = g * (py * (F::one() - eps * on + eps * s) - on);
                (lse, py)
            }
            None => {
                let m = kernel::row_max(x);
                let shift = if m.is_finite() { m } else { F::zero() };
                let s = kernel::row_exp_sum(x, shift);
                let lse = shift + s.fast_ln();
                let py = (x[y] - lse).fast_exp();
                (lse, py)
            }
        };
        // Σ_c p_c = 1.
        let s = F::of(1.0 - ls) * py + off;
        let mut v = (1.0 - ls) * (lse - x[y]).f64() + self.epsilon * (F::one() - s).f64();
        if ls > 0.0 {
            let sx: f64 = x.iter().map(|v| v.f64()).sum();
            v += ls / c as f64 * (c as f64 * lse.f64() - sx);
        }
        v
    }

    fn aux_grad<F: Real>(&self, _: usize, _: &[F], _: F) -> F {
        F::zero()
    }
}

/// The row losses with their parameters (checked by the caller): what [`per_row`] runs on
/// `pred` `[N, C]` and one value a row.
#[derive(Clone, Debug)]
pub(crate) enum PerRow {
    /// Quality focal with `(label, score)` targets: the row values are the scores, `labels` the
    /// classes (as i64; outside `[0, C)`, the row is all negative).
    QualityFocal {
        labels: Vec<i64>,
        beta: f64,
        activated: bool,
    },
    /// Distribution focal: the row values are the continuous labels, in `[0, C − 1]`.
    DistributionFocal,
    /// Poly-1 cross-entropy: the row values are the class indices, in `[0, C)`.
    Poly1CrossEntropy { epsilon: f64, label_smoothing: f64 },
}

/// Runs the fused kernel of `loss` on `pred` (`[N, C]`) and `aux` (`[N]`).
pub(crate) fn per_row(loss: PerRow, pred: &Tensor, aux: &Tensor, reduction: Reduction) -> Result<Tensor> {
    match loss {
        PerRow::QualityFocal {
            labels,
            beta,
            activated,
        } => {
            let labels = Arc::new(labels);
            with_exponent!(beta, |e| if activated {
                apply_rows(QflRows { link: Probs, e, labels }, pred, aux, reduction)
            } else {
                let link = Logits;
                apply_rows(QflRows { link, e, labels }, pred, aux, reduction)
            })
        }
        PerRow::DistributionFocal => apply_rows(Dfl, pred, aux, reduction),
        PerRow::Poly1CrossEntropy {
            epsilon,
            label_smoothing,
        } => {
            let y = aux.to_dtype(pred.dtype())?.detach();
            let smoothing = label_smoothing;
            apply_rows(Poly1Ce { epsilon, smoothing }, pred, &y, reduction)
        }
    }
}
