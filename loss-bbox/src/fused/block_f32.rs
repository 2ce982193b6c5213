//! The f32 block kernel of the fused aligned losses: blocks of [`BLOCK`] pairs, transposed into
//! structure-of-arrays lanes and computed branch-free in f32 (selects, no early returns), so
//! that LLVM vectorises the loop over the lanes (8 lanes wide with AVX2, chosen at run time;
//! SSE2 otherwise).
//!
//! A lane is [`super::pair::aligned`] at f32, the one source of the f64 kernel
//! [`super::pair::pair()`] too, so every formula, eps placement and gradient rule at a kink is
//! the f64 kernel's (ties of `max`/`min` split ½/½, the masked intersection, CIoU's `α` held
//! constant, `atan(w/h)` finite at `h = 0`). A lane whose inputs or results leave the range
//! where f32 arithmetic is safe is recomputed by [`super::pair::pair()`] in f64 (NaN or infinite
//! coordinates, coordinates whose magnitudes sum to more than [`COORD_LIMIT`], a non-finite
//! value or gradient, CIoU's `w² + h²` outside f32's normal range), so NaN propagation,
//! infinities and overflow behave exactly as in the f64 kernel. Elsewhere the results agree with
//! the f64 kernel to a few f32 ulp of the terms they sum (`tests`); the reductions add the
//! per-pair f32 losses in f64.

use super::pair::{aligned, pair, PairReal, CIOU, DIOU, EIOU, GIOU, IOU_LINEAR, IOU_LOG, IOU_SQUARE};
use super::successors::{eval, Formula, WithFormula};
use super::{PairKind, Successor};
use crate::geometry::sel;
use crate::kinds::{AlignedLoss, AlphaIouBase, IouMode};
use loss_core::kernel::{with_simd, Real};
use std::f32::consts::FRAC_PI_2;
use std::mem::MaybeUninit;

/// Pairs per block.
pub(super) const BLOCK: usize = 64;

/// A lane whose eight `|coordinates|` sum to more than this goes to the f64 kernel: below it no
/// product of two extents (areas, `C_w²`, `ρ²`) can overflow f32.
pub(super) const COORD_LIMIT: f32 = 1e18;

/// `atan(x)` for `|x| <= 1`: the odd minimax polynomial of degree 17 of SLEEF's `atanf`
/// (Shibata and Petrogalli, SLEEF `sleefsp.c`, `xatanf`), evaluated in f32 (Horner, no FMA, so
/// the AVX2 and the plain builds give the same bits).
///
/// Max error 2 ulp against f64 `atan` rounded to f32, as measured by
/// `tests::atan_is_within_two_ulp` (every 7th f32 of `[1e-6, 1]`, both signs, and 10⁶ evenly
/// spaced points; below `1e-6` the result is `x` itself). Through [`atan_ratio`]'s
/// `±π/2 − atan(h/w)` for `|w| > |h|` also 2 ulp (`tests::atan_ratio_is_within_two_ulp_on_every_quadrant`).
#[inline(always)]
pub(super) fn atan_unit(x: f32) -> f32 {
    let t = x * x;
    let mut u = 0.002_823_639_f32;
    u = u * t - 0.015_956_903;
    u = u * t + 0.042_504_99;
    u = u * t - 0.074_890_09;
    u = u * t + 0.106_347_93;
    u = u * t - 0.142_027_36;
    u = u * t + 0.199_926_96;
    u = u * t - 0.333_331_02;
    x + x * (t * u)
}

/// `atan(w / h)` with one division: `atan(w/h)` for `|w| <= |h|`, `±π/2 − atan(h/w)` beyond.
/// `h = 0` is handled by the caller.
#[inline(always)]
pub(super) fn atan_ratio(w: f32, h: f32) -> f32 {
    let swap = w.abs() > h.abs();
    let x = sel(swap, h, w) / sel(swap, w, h);
    let a = atan_unit(x);
    sel(swap, FRAC_PI_2.copysign(x) - a, a)
}

/// The aspect angle of a `w × h` box and its gradient, `(θ, ∂θ/∂w, ∂θ/∂h, risky)`, with the
/// conventions of `geometry::aspect_angle_scalar` (`±π/2` at `h = 0`, 0 and a zero gradient for
/// a point box). `risky`: `w² + h²` is non-zero but below f32's normal range or infinite, where
/// the f32 gradient `(h, −w)/(w² + h²)` would lose its precision: the lane goes to f64.
#[inline(always)]
pub(super) fn aspect(w: f32, h: f32) -> (f32, f32, f32, bool) {
    let flat = h == 0.0;
    let edge = sel(w > 0.0, FRAC_PI_2, sel(w < 0.0, -FRAC_PI_2, 0.0));
    let theta = sel(flat, edge, atan_ratio(w, h));
    let r2 = w * w + h * h;
    let zero = r2 == 0.0;
    let inv = 1.0 / sel(zero, 1.0, r2);
    let risky = ((w != 0.0) | (h != 0.0)) & !(f32::MIN_POSITIVE * 1e6..=f32::MAX).contains(&r2);
    (theta, sel(zero, 0.0, h * inv), sel(zero, 0.0, -w * inv), risky)
}

impl PairReal for f32 {
    #[inline(always)]
    fn aspect(w: f32, h: f32) -> (f32, f32, f32, bool) {
        aspect(w, h)
    }

    #[inline(always)]
    fn pow_d(x: f32, e: f32) -> (f32, f32, bool) {
        let pos = x > 0.0;
        let xs = sel(pos, x, 1.0);
        let v = (e * xs.fast_ln()).fast_exp();
        (v, e * v / xs, !pos)
    }

    #[inline(always)]
    fn quot(a: f32, b: f32) -> f32 {
        a * (1.0 / b)
    }

    #[inline(always)]
    fn quot_sq(a: f32, b: f32) -> f32 {
        let r = 1.0 / b;
        a * r * r
    }
}

/// What the generic block computes a lane with: one loss of the pair kernel, its options
/// captured (the dispatch on the loss happens once, outside the loops), in f32 for the lanes
/// and in f64 for the lanes outside the f32 domain.
pub(super) trait Lanes: Copy {
    /// One pair in f32: `(value, gradients for the upstream g, risky)`, as [`aligned`].
    fn lane(self, c: [f32; 8], g: f32) -> (f32, [f32; 8], bool);
    /// The same pair in f64 (the recomputation of a lane outside the f32 domain).
    fn exact(self, p: [f64; 4], t: [f64; 4], g: Option<f64>) -> (f64, [f64; 8]);
    /// Turns the block's lane values into losses (outside the vectorised loop).
    #[inline(always)]
    fn finish(self, _out: &mut [f32; BLOCK]) {}
}

/// A loss of the torchvision family ([`AlignedLoss`] with its const code `K`) as [`Lanes`].
#[derive(Clone, Copy)]
struct Aligned<const K: u8> {
    kind: AlignedLoss,
    eps: f64,
}

impl<const K: u8> Lanes for Aligned<K> {
    #[inline(always)]
    fn lane(self, c: [f32; 8], g: f32) -> (f32, [f32; 8], bool) {
        aligned::<f32, K>(c, self.eps as f32, g)
    }
    fn exact(self, p: [f64; 4], t: [f64; 4], g: Option<f64>) -> (f64, [f64; 8]) {
        pair(self.kind, p, t, self.eps, g)
    }
    #[inline(always)]
    fn finish(self, out: &mut [f32; BLOCK]) {
        if K == IOU_LOG {
            for v in out.iter_mut() {
                *v = -v.ln();
            }
        }
    }
}

/// An IoU successor's [`Formula`] as [`Lanes`]: the one source of [`super::successors`] at f32
/// for the lanes and at f64 for their recomputation.
#[derive(Clone, Copy)]
struct Succ<S>(S);

impl<S: Formula> Lanes for Succ<S> {
    #[inline(always)]
    fn lane(self, c: [f32; 8], g: f32) -> (f32, [f32; 8], bool) {
        let [px1, py1, px2, py2, tx1, ty1, tx2, ty2] = c;
        eval(self.0, [px1, py1, px2, py2], [tx1, ty1, tx2, ty2], Some(g))
    }
    fn exact(self, p: [f64; 4], t: [f64; 4], g: Option<f64>) -> (f64, [f64; 8]) {
        let (v, d, _) = eval(self.0, p, t, g);
        (v, d)
    }
}

/// A [`Job`] run with a successor's [`Formula`] as [`Succ`] lanes.
struct AsLanes<J>(J);

impl<J: Job> WithFormula for AsLanes<J> {
    type Out = J::Out;
    fn run<S: Formula>(self, s: S) -> J::Out {
        self.0.run(Succ(s))
    }
}

/// Whether the lane's coordinates are in the f32 kernel's domain (finite, `Σ|c| <= COORD_LIMIT`).
#[inline(always)]
pub(super) fn coords_ok(c: &[f32; 8]) -> bool {
    let s = c[0].abs() + c[1].abs() + c[2].abs() + c[3].abs() + c[4].abs() + c[5].abs() + c[6].abs() + c[7].abs();
    s <= COORD_LIMIT
}

/// Structure-of-arrays block: `s[k][l]` is coordinate `k` (`p.x1 .. t.y2`) of pair `l`.
type Soa = [[f32; BLOCK]; 8];

/// Transposes a block of pairs into `s`.
#[inline(always)]
fn transpose(p: &[f32; 4 * BLOCK], t: &[f32; 4 * BLOCK], s: &mut Soa) {
    for l in 0..BLOCK {
        for k in 0..4 {
            s[k][l] = p[4 * l + k];
            s[4 + k][l] = t[4 * l + k];
        }
    }
}

/// Lane `l` of the block `s`: `[p.x1 .. t.y2]`.
#[inline(always)]
fn lane_coords(s: &Soa, l: usize) -> [f32; 8] {
    [s[0][l], s[1][l], s[2][l], s[3][l], s[4][l], s[5][l], s[6][l], s[7][l]]
}

/// Stores lane `l`'s gradients `d` into `o` (`o[k][l] = d[k]`); whether they are all finite.
#[inline(always)]
fn store_grads(o: &mut Soa, l: usize, d: &[f32; 8]) -> bool {
    let m = d[0].abs() + d[1].abs() + d[2].abs() + d[3].abs() + d[4].abs() + d[5].abs() + d[6].abs() + d[7].abs();
    for k in 0..8 {
        o[k][l] = d[k];
    }
    m.is_finite()
}

/// One block of pairs (`p`, `t`, transposed into `s`) through the lanes `ls`, lane `l` with the
/// upstream gradient `g(l)`: with `VALUES` the losses into `out`, with `GRAD` the gradients
/// w.r.t. the coordinates into `o` (`o[k][l]`, `k` as in [`Soa`]). Returns whether some lane is
/// out of the f32 domain (`bad[l] != 0` for those lanes: `risky`, coordinates outside
/// [`coords_ok`], or a value or gradient it computes not finite), to be recomputed in f64.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn run_block<L: Lanes, const VALUES: bool, const GRAD: bool>(
    ls: L,
    p: &[f32; 4 * BLOCK],
    t: &[f32; 4 * BLOCK],
    g: impl Fn(usize) -> f32,
    s: &mut Soa,
    out: &mut [f32; BLOCK],
    o: &mut Soa,
    bad: &mut [u32; BLOCK],
) -> bool {
    transpose(p, t, s);
    for l in 0..BLOCK {
        let c = lane_coords(s, l);
        let (v, d, risky) = ls.lane(c, g(l));
        let mut ok = !risky & coords_ok(&c);
        if VALUES {
            out[l] = v;
            ok &= v.is_finite();
        }
        if GRAD {
            ok &= store_grads(o, l, &d);
        }
        bad[l] = u32::from(!ok);
    }
    if VALUES {
        ls.finish(out);
    }
    bad.iter().fold(0, |a, &b| a | b) != 0
}

/// Writes the rows `first..first + 4` of `o` (one box's gradients) interleaved into `dst`
/// (`dst[4·l + k] = o[first + k][l]` for the `dst.len() / 4` lanes).
#[inline(always)]
fn interleave(o: &Soa, first: usize, dst: &mut [MaybeUninit<f32>]) {
    if let Ok(d) = <&mut [MaybeUninit<f32>; 4 * BLOCK]>::try_from(&mut *dst) {
        // A full block: fixed trip counts, vectorised.
        for l in 0..BLOCK {
            for k in 0..4 {
                d[4 * l + k].write(o[first + k][l]);
            }
        }
    } else {
        for (l, q) in dst.chunks_exact_mut(4).enumerate() {
            for k in 0..4 {
                q[k].write(o[first + k][l]);
            }
        }
    }
}

/// Whether an optional output has `n` slots (or is absent).
fn fits(out: &Option<&mut [MaybeUninit<f32>]>, n: usize) -> bool {
    match out {
        Some(o) => o.len() == n,
        None => true,
    }
}

/// `[p.x1 .. t.y2]` of pair `i` in f64, for the f64 recomputation.
fn pair64(p: &[f32], t: &[f32], i: usize) -> ([f64; 4], [f64; 4]) {
    let b = |v: &[f32]| {
        [
            v[4 * i] as f64,
            v[4 * i + 1] as f64,
            v[4 * i + 2] as f64,
            v[4 * i + 3] as f64,
        ]
    };
    (b(p), b(t))
}

/// The block of `len <= BLOCK` pairs starting at pair `i` of `v`: the slice itself, or its
/// tail copied into `pad` and zero-padded.
#[inline(always)]
fn block_of<'a>(v: &'a [f32], i: usize, len: usize, pad: &'a mut [f32; 4 * BLOCK]) -> &'a [f32; 4 * BLOCK] {
    if len == BLOCK {
        v[4 * i..4 * i + 4 * BLOCK].try_into().expect("a full block")
    } else {
        pad.fill(0.0);
        pad[..4 * len].copy_from_slice(&v[4 * i..4 * (i + len)]);
        pad
    }
}

/// The gradients a forward computes on the way (see [`forward`]): with the scalar upstream
/// gradient `g`, into `gp` and/or `gt` (`4·n` slots each).
pub(super) struct Grads<'a> {
    /// The upstream gradient of every pair.
    pub g: f64,
    /// The gradient w.r.t. the pred boxes, when wanted.
    pub gp: Option<&'a mut [MaybeUninit<f32>]>,
    /// The gradient w.r.t. the target boxes, when wanted.
    pub gt: Option<&'a mut [MaybeUninit<f32>]>,
}

/// The forward over a chunk of pairs (`p`, `t`: `4·n` values): the losses into `out` (`n`
/// slots) when given, with `GRAD` the gradients into `grads`; returns the sum of the losses
/// in f64.
#[inline(always)]
fn forward_chunk<L: Lanes, const GRAD: bool>(
    ls: L,
    p: &[f32],
    t: &[f32],
    mut out: Option<&mut [MaybeUninit<f32>]>,
    mut grads: Option<Grads<'_>>,
) -> f64 {
    let n = p.len() / 4;
    assert!(t.len() == 4 * n && fits(&out, n));
    assert!(GRAD == grads.is_some());
    if let Some(gr) = &grads {
        assert!(fits(&gr.gp, 4 * n) && fits(&gr.gt, 4 * n));
    }
    let g = grads.as_ref().map_or(0.0, |gr| gr.g);
    let (mut pp, mut pt) = ([0.0f32; 4 * BLOCK], [0.0f32; 4 * BLOCK]);
    let mut s = [[0.0f32; BLOCK]; 8];
    let mut o = [[0.0f32; BLOCK]; 8];
    let mut v = [0.0f32; BLOCK];
    let mut bad = [0u32; BLOCK];
    let mut acc = [0.0f64; 8];
    let mut i = 0;
    while i < n {
        let len = BLOCK.min(n - i);
        let (bp, bt) = (block_of(p, i, len, &mut pp), block_of(t, i, len, &mut pt));
        if run_block::<L, true, GRAD>(ls, bp, bt, |_| g as f32, &mut s, &mut v, &mut o, &mut bad) {
            for l in 0..len {
                if bad[l] != 0 {
                    let (a, b) = pair64(p, t, i + l);
                    let (val, d) = ls.exact(a, b, if GRAD { Some(g) } else { None });
                    v[l] = val as f32;
                    if GRAD {
                        for (k, x) in d.iter().enumerate() {
                            o[k][l] = *x as f32;
                        }
                    }
                }
            }
        }
        if len == BLOCK {
            for c in v.chunks_exact(8) {
                for k in 0..8 {
                    acc[k] += c[k] as f64;
                }
            }
        } else {
            for (l, x) in v[..len].iter().enumerate() {
                acc[l % 8] += *x as f64;
            }
        }
        if let Some(dst) = out.as_deref_mut() {
            for (d, s) in dst[i..i + len].iter_mut().zip(&v) {
                d.write(*s);
            }
        }
        if let Some(gr) = grads.as_mut() {
            if let Some(dst) = gr.gp.as_deref_mut() {
                interleave(&o, 0, &mut dst[4 * i..4 * (i + len)]);
            }
            if let Some(dst) = gr.gt.as_deref_mut() {
                interleave(&o, 4, &mut dst[4 * i..4 * (i + len)]);
            }
        }
        i += len;
    }
    acc.iter().sum()
}

/// The upstream gradient of the backward: one value for every pair, or one per pair.
#[derive(Clone, Copy)]
pub(super) enum Upstream<'a> {
    /// The same `g` for every pair (reduced losses, broadcast gradients), in f64 for the f64
    /// recomputation.
    Scalar(f64),
    /// `g[i]` for pair `i`.
    Each(&'a [f32]),
}

/// The backward over a chunk of pairs: the gradients into `gp` and/or `gt` (`4·n` slots each).
#[inline(always)]
fn backward_chunk<L: Lanes>(
    ls: L,
    p: &[f32],
    t: &[f32],
    up: Upstream<'_>,
    mut gp: Option<&mut [MaybeUninit<f32>]>,
    mut gt: Option<&mut [MaybeUninit<f32>]>,
) {
    let n = p.len() / 4;
    assert!(t.len() == 4 * n);
    assert!(fits(&gp, 4 * n) && fits(&gt, 4 * n));
    if let Upstream::Each(g) = up {
        assert!(g.len() == n);
    }
    let (mut pp, mut pt) = ([0.0f32; 4 * BLOCK], [0.0f32; 4 * BLOCK]);
    let mut s = [[0.0f32; BLOCK]; 8];
    let mut o = [[0.0f32; BLOCK]; 8];
    let mut gb = [0.0f32; BLOCK];
    let mut v = [0.0f32; BLOCK]; // unused: no values
    if let Upstream::Scalar(g) = up {
        gb = [g as f32; BLOCK];
    }
    let mut bad = [0u32; BLOCK];
    let mut i = 0;
    while i < n {
        let len = BLOCK.min(n - i);
        let (bp, bt) = (block_of(p, i, len, &mut pp), block_of(t, i, len, &mut pt));
        if let Upstream::Each(g) = up {
            gb[..len].copy_from_slice(&g[i..i + len]);
        }
        if run_block::<L, false, true>(ls, bp, bt, |l| gb[l], &mut s, &mut v, &mut o, &mut bad) {
            for l in 0..len {
                if bad[l] != 0 {
                    let (a, b) = pair64(p, t, i + l);
                    let g = match up {
                        Upstream::Scalar(g) => g,
                        Upstream::Each(g) => g[i + l] as f64,
                    };
                    let d = ls.exact(a, b, Some(g)).1;
                    for (k, x) in d.iter().enumerate() {
                        o[k][l] = *x as f32;
                    }
                }
            }
        }
        if let Some(dst) = gp.as_deref_mut() {
            interleave(&o, 0, &mut dst[4 * i..4 * (i + len)]);
        }
        if let Some(dst) = gt.as_deref_mut() {
            interleave(&o, 4, &mut dst[4 * i..4 * (i + len)]);
        }
        i += len;
    }
}

/// A job over a chunk of pairs, run with the [`Lanes`] of the loss ([`visit`]).
pub(super) trait Job {
    /// What the job returns.
    type Out;
    /// Runs the job with the lanes `ls`.
    fn run<L: Lanes>(self, ls: L) -> Self::Out;
}

/// Runs `job` with the [`Lanes`] of `kind` (the one dispatch on the loss, outside the loops).
/// `kind` must be one that [`supports`] accepts.
fn visit<J: Job>(kind: PairKind, eps: f64, job: J) -> J::Out {
    macro_rules! aligned {
        ($k:expr, $K:expr) => {
            job.run(Aligned::<{ $K }> { kind: $k, eps })
        };
    }
    match kind {
        PairKind::Aligned(k) => match k {
            AlignedLoss::Iou(IouMode::Linear) => aligned!(k, IOU_LINEAR),
            AlignedLoss::Iou(IouMode::Square) => aligned!(k, IOU_SQUARE),
            AlignedLoss::Iou(IouMode::Log) => aligned!(k, IOU_LOG),
            AlignedLoss::Giou => aligned!(k, GIOU),
            AlignedLoss::Diou => aligned!(k, DIOU),
            AlignedLoss::Ciou => aligned!(k, CIOU),
            AlignedLoss::Eiou => aligned!(k, EIOU),
        },
        PairKind::Successor(s) => s.visit(eps, AsLanes(job)),
    }
}

/// Whether the block kernel runs `kind` at `eps` (Wise-IoU has no `eps`).
///
/// Every IoU successor but SIoU and two Alpha-IoU forms runs on the lanes: the GIoU base (its
/// gradient cancels beyond f32's reach for nested boxes) and the DIoU and CIoU bases at `α ≠ 3`
/// (`∂(ρ²)^α` for `α < 1` at close centres) stay on the f64 kernel.
pub(super) fn supports(kind: PairKind, eps: f64) -> bool {
    match kind {
        PairKind::Aligned(_) => eps_ok(eps),
        PairKind::Successor(s) => match s {
            Successor::Alpha {
                base: AlphaIouBase::Giou,
                ..
            }
            | Successor::Siou { .. } => false,
            Successor::Alpha {
                base: AlphaIouBase::Diou | AlphaIouBase::Ciou,
                alpha,
            } => alpha == 3.0 && eps_ok(eps),
            Successor::Wise { .. } => true,
            _ => eps_ok(eps),
        },
    }
}

/// The forward job ([`forward_chunk`] in its AVX2 + FMA build when the CPU has them).
struct ForwardJob<'a> {
    p: &'a [f32],
    t: &'a [f32],
    out: Option<&'a mut [MaybeUninit<f32>]>,
    grads: Option<Grads<'a>>,
}

impl Job for ForwardJob<'_> {
    type Out = f64;
    fn run<L: Lanes>(self, ls: L) -> f64 {
        let ForwardJob { p, t, out, grads } = self;
        if grads.is_some() {
            with_simd(
                #[inline(always)]
                || forward_chunk::<L, true>(ls, p, t, out, grads),
            )
        } else {
            with_simd(
                #[inline(always)]
                || forward_chunk::<L, false>(ls, p, t, out, None),
            )
        }
    }
}

/// The backward job ([`backward_chunk`] in its AVX2 + FMA build when the CPU has them).
struct BackwardJob<'a> {
    p: &'a [f32],
    t: &'a [f32],
    up: Upstream<'a>,
    gp: Option<&'a mut [MaybeUninit<f32>]>,
    gt: Option<&'a mut [MaybeUninit<f32>]>,
}

impl Job for BackwardJob<'_> {
    type Out = ();
    fn run<L: Lanes>(self, ls: L) {
        let BackwardJob { p, t, up, gp, gt } = self;
        with_simd(
            #[inline(always)]
            || backward_chunk(ls, p, t, up, gp, gt),
        )
    }
}

/// The f32 forward of `kind` over a chunk of pairs (see [`forward_chunk`]): the losses into
/// `out` when given, and the gradients into `grads` when given (computed in the same pass,
/// bit for bit those of [`backward`] with `Upstream::Scalar(grads.g)`); returns the sum of the
/// losses in f64. `kind` must be one that [`supports`] accepts at `eps`.
pub(super) fn forward(
    kind: impl Into<PairKind>,
    eps: f64,
    p: &[f32],
    t: &[f32],
    out: Option<&mut [MaybeUninit<f32>]>,
    grads: Option<Grads<'_>>,
) -> f64 {
    visit(kind.into(), eps, ForwardJob { p, t, out, grads })
}

/// The f32 backward of `kind` over a chunk of pairs (see [`backward_chunk`]).
pub(super) fn backward(
    kind: impl Into<PairKind>,
    eps: f64,
    p: &[f32],
    t: &[f32],
    up: Upstream<'_>,
    gp: Option<&mut [MaybeUninit<f32>]>,
    gt: Option<&mut [MaybeUninit<f32>]>,
) {
    visit(kind.into(), eps, BackwardJob { p, t, up, gp, gt })
}

/// Whether `eps` suits the f32 kernel: its f32 rounding, its square and its reciprocal are
/// normal f32 numbers. Otherwise the f64 kernel runs.
pub(super) fn eps_ok(eps: f64) -> bool {
    (1e-18..=1e18).contains(&eps)
}

#[cfg(test)]
mod tests {
    //! The f32 block kernel against the f64 scalar kernel `pair` (values and both gradients) on
    //! random and adversarial boxes, and the accuracy of the f32 `atan`.

    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const KINDS: [AlignedLoss; 7] = [
        AlignedLoss::Iou(IouMode::Linear),
        AlignedLoss::Iou(IouMode::Square),
        AlignedLoss::Iou(IouMode::Log),
        AlignedLoss::Giou,
        AlignedLoss::Diou,
        AlignedLoss::Ciou,
        AlignedLoss::Eiou,
    ];

    /// Distance in f32 ulps between `a` and the f64 value `b` rounded to f32.
    fn ulps(a: f32, b: f64) -> u32 {
        let b = b as f32;
        let key = |x: f32| {
            let i = x.to_bits() as i32;
            if i < 0 {
                i32::MIN - i
            } else {
                i
            }
        };
        (key(a) as i64 - key(b) as i64).unsigned_abs() as u32
    }

    #[test]
    fn atan_is_within_two_ulp() {
        let mut worst = (0u32, 0.0f32);
        let mut check = |x: f32| {
            let u = ulps(atan_unit(x), (x as f64).atan());
            if u > worst.0 {
                worst = (u, x);
            }
        };
        // Every f32 in [1e-6, 1] (and its negative), then a uniform sweep.
        let (lo, hi) = (1e-6f32.to_bits(), 1.0f32.to_bits());
        for b in (lo..=hi).step_by(7) {
            let x = f32::from_bits(b);
            check(x);
            check(-x);
        }
        for i in 0..=1_000_000 {
            check(i as f32 / 1e6);
        }
        eprintln!("atan_unit: worst {} ulp at {}", worst.0, worst.1);
        assert!(worst.0 <= 2, "atan_unit: {} ulp at {}", worst.0, worst.1);
        // Tiny arguments: atan(x) = x.
        for x in [0.0f32, -0.0, 1e-30, -1e-20, f32::MIN_POSITIVE] {
            assert_eq!(atan_unit(x), x);
        }
    }

    #[test]
    fn atan_ratio_is_within_two_ulp_on_every_quadrant() {
        let mut r = ChaCha8Rng::seed_from_u64(11);
        let mut worst = 0;
        for i in 0..2_000_000 {
            // log-uniform magnitudes over 1e-6..1e6, both signs
            let w = 10f32.powf(r.gen_range(-6.0..6.0)) * if r.gen() { 1.0 } else { -1.0 };
            let h = if i % 2 == 0 {
                10f32.powf(r.gen_range(-6.0..6.0)) * if r.gen() { 1.0 } else { -1.0 }
            } else {
                // ratios near 1, where the two branches meet
                w * r.gen_range(0.999..1.001) * if r.gen() { 1.0 } else { -1.0 }
            };
            let want = (w as f64 / h as f64).atan();
            worst = worst.max(ulps(atan_ratio(w, h), want));
        }
        eprintln!("atan_ratio: worst {worst} ulp");
        assert!(worst <= 2, "atan_ratio: {worst} ulp");
        assert!(ulps(atan_ratio(1.0, 1.0), std::f64::consts::FRAC_PI_4) <= 1);
        assert!(ulps(atan_ratio(-3.0, 3.0), -std::f64::consts::FRAC_PI_4) <= 1);
        assert!((atan_ratio(1e30, 1.0) - FRAC_PI_2).abs() <= f32::EPSILON);
    }

    /// Runs the f32 block kernel (forward, backward with per-pair upstream) on `p`, `t`.
    fn run_f32(kind: AlignedLoss, eps: f64, p: &[f32], t: &[f32], g: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let n = p.len() / 4;
        let mut v = vec![MaybeUninit::new(f32::NAN); n];
        let mut gp = vec![MaybeUninit::new(f32::NAN); 4 * n];
        let mut gt = vec![MaybeUninit::new(f32::NAN); 4 * n];
        let sum = forward(kind, eps, p, t, Some(&mut v), None);
        backward(kind, eps, p, t, Upstream::Each(g), Some(&mut gp), Some(&mut gt));
        // SAFETY: all initialised above.
        let get = |x: Vec<MaybeUninit<f32>>| x.into_iter().map(|y| unsafe { y.assume_init() }).collect::<Vec<_>>();
        let v = get(v);
        let s: f64 = v.iter().map(|&x| x as f64).sum();
        assert!(
            (sum - s).abs() <= 1e-9 * s.abs().max(1.0) || (sum.is_nan() && s.is_nan()),
            "{kind:?}: block sum {sum} against {s}"
        );
        (v, get(gp), get(gt))
    }

    /// `got` (f32 kernel) against `want` (f64 kernel): NaN exactly where the f64 kernel has NaN,
    /// the same infinities, else within `tol`.
    fn close(what: &str, got: f32, want: f64, tol: f64) {
        if want.is_nan() || got.is_nan() {
            assert!(want.is_nan() && got.is_nan(), "{what}: got {got}, want {want}");
        } else if want.is_infinite() || (want as f32).is_infinite() || tol.is_nan() {
            assert_eq!(got, want as f32, "{what}");
        } else {
            assert!(
                (got as f64 - want).abs() <= tol,
                "{what}: got {got}, want {want} (diff {:e}, tol {tol:e})",
                (got as f64 - want).abs()
            );
        }
    }

    /// The magnitude of the largest terms that the gradient of `kind` at `(a, b)` sums (per unit
    /// upstream gradient): the f32 kernel's rounding errors are a few ulp of these, even where
    /// they cancel to a much smaller gradient (identical boxes: terms ≈ 1, gradient ≈ eps).
    fn term_scale(kind: AlignedLoss, a: [f64; 4], b: [f64; 4], eps: f64) -> f64 {
        let (pw, ph, tw, th) = (a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]);
        let (cw, ch) = (a[2].max(b[2]) - a[0].min(b[0]), a[3].max(b[3]) - a[1].min(b[1]));
        let ext = [pw, ph, tw, th, cw, ch].iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let (iw, ih) = (a[2].min(b[2]) - a[0].max(b[0]), a[3].min(b[3]) - a[1].max(b[1]));
        let inter = if iw > 0.0 && ih > 0.0 { iw * ih } else { 0.0 };
        let ue = (pw * ph + tw * th - inter + eps).abs();
        let iou = (inter / ue).max(eps);
        let g_iou = if kind == AlignedLoss::Iou(IouMode::Log) {
            1.0 / iou
        } else {
            2.0
        };
        let mut s = ext / ue * g_iou;
        let diag = cw * cw + ch * ch + eps;
        s += match kind {
            AlignedLoss::Giou => ext / (cw * ch + eps).abs(),
            AlignedLoss::Diou => ext / diag,
            AlignedLoss::Ciou => ext / diag + 1.0 / (pw * pw + ph * ph).sqrt() + 1.0 / (tw * tw + th * th).sqrt(),
            AlignedLoss::Eiou => ext / diag + ext / (cw * cw + eps) + ext / (ch * ch + eps),
            _ => 0.0,
        };
        s
    }

    /// Checks every pair of `p`, `t` and every kind: the value within `1e-5` relative plus
    /// 8 ulp of the loss's terms (≈ 1); the gradients within `rtol` of the pair's largest
    /// gradient component (in f64) plus `ulp_terms` ulp of the largest terms they sum
    /// ([`term_scale`]). Returns the largest errors seen (value, relative to max(1, |value|);
    /// gradient, relative to the pair's largest component).
    fn check(p: &[f32], t: &[f32], eps: f64, rtol: f64, ulp_terms: f64, label: &str) -> (f64, f64) {
        let n = p.len() / 4;
        let g: Vec<f32> = (0..n).map(|i| [1.0, 0.25, -3.0, 1e-6][i % 4]).collect();
        let mut worst = (0.0f64, 0.0f64);
        for kind in KINDS {
            let (v, gp, gt) = run_f32(kind, eps, p, t, &g);
            for i in 0..n {
                let b = |s: &[f32]| {
                    [
                        s[4 * i] as f64,
                        s[4 * i + 1] as f64,
                        s[4 * i + 2] as f64,
                        s[4 * i + 3] as f64,
                    ]
                };
                let (a, bb) = (b(p), b(t));
                let (want, d) = pair(kind, a, bb, eps, Some(g[i] as f64));
                let what = format!("{label} {kind:?} pair {i} {a:?} {bb:?}");
                // Outside the f32 domain the lane is the f64 result rounded (NaN tolerance:
                // exact comparison in `close`).
                let exact = a.iter().chain(&bb).map(|x| x.abs()).sum::<f64>() > COORD_LIMIT as f64;
                let scale = if exact { f64::NAN } else { want.abs().max(1.0) };
                let vtol = 1e-5 * want.abs() + 8.0 * f32::EPSILON as f64 * scale;
                close(&format!("{what} value"), v[i], want, vtol);
                if want.is_finite() {
                    worst.0 = worst.0.max((v[i] as f64 - want).abs() / scale);
                }
                let big = d.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                let terms = if exact {
                    f64::NAN
                } else {
                    (g[i] as f64).abs() * term_scale(kind, a, bb, eps)
                };
                let gtol = (rtol + 4.0 * f32::EPSILON as f64) * big + ulp_terms * f32::EPSILON as f64 * terms;
                for k in 0..8 {
                    let got = if k < 4 { gp[4 * i + k] } else { gt[4 * i + k - 4] };
                    close(&format!("{what} grad {k}"), got, d[k], gtol);
                    if d[k].is_finite() && big > 0.0 && big.is_finite() {
                        worst.1 = worst.1.max((got as f64 - d[k]).abs() / big);
                    }
                }
            }
        }
        worst
    }

    fn r32(x: f64) -> f32 {
        x as f32
    }

    #[test]
    fn block_kernel_matches_f64_on_random_boxes() {
        let mut r = ChaCha8Rng::seed_from_u64(1);
        let (mut p, mut t) = (Vec::new(), Vec::new());
        // 1000 pairs: not a multiple of the block, so the padded tail runs too.
        for i in 0..1000 {
            let s = [1.0, 100.0, 1e-3, 1e4][i % 4];
            let (x, y) = (r.gen_range(-10.0..10.0) * s, r.gen_range(-10.0..10.0) * s);
            let (w, h) = (r.gen_range(0.1..10.0) * s, r.gen_range(0.1..10.0) * s);
            p.extend([x, y, x + w, y + h].map(r32));
            let (dx, dy) = (r.gen_range(-3.0..3.0) * s, r.gen_range(-3.0..3.0) * s);
            let (w2, h2) = (w * r.gen_range(0.5..2.0), h * r.gen_range(0.5..2.0));
            t.extend([x + dx, y + dy, x + dx + w2, y + dy + h2].map(r32));
        }
        for eps in [1e-7, 1e-3] {
            let (v, g) = check(&p, &t, eps, 1e-5, 0.0, "random");
            assert!(v < 1e-5 && g < 1e-5, "random: worst value {v:e}, grad {g:e}");
        }
    }

    /// Pairs that stress every rule: degenerate, zero-area, identical, disjoint, touching,
    /// nested, ties, inverted, huge and tiny coordinates, NaN and infinities.
    fn adversarial() -> (Vec<f32>, Vec<f32>) {
        let mut r = ChaCha8Rng::seed_from_u64(2);
        let nan = f32::NAN;
        let inf = f32::INFINITY;
        let fixed: Vec<([f32; 4], [f32; 4])> = vec![
            ([0., 0., 1., 1.], [0., 0., 1., 1.]),   // identical
            ([0., 0., 0., 0.], [0., 0., 0., 0.]),   // point against itself
            ([1., 1., 1., 1.], [0., 0., 2., 2.]),   // point inside
            ([0., 0., 0., 3.], [0., 1., 0., 2.]),   // both zero width, same x
            ([0., 0., 2., 0.], [1., 0., 3., 0.]),   // both zero height
            ([0., 0., 0., 3.], [0., 0., 2., 2.]),   // zero width on an edge
            ([0., 0., 1., 1.], [1., 0., 2., 1.]),   // shared edge
            ([0., 0., 1., 1.], [1., 1., 2., 2.]),   // shared corner
            ([0., 0., 1., 1.], [5., 5., 6., 7.]),   // disjoint
            ([-1., -1., 1., 1.], [0., 0., 1., 1.]), // nested, torchvision's example
            ([0., 0., 4., 4.], [0., 1., 4., 3.]),   // ties on x
            ([2., 2., 0., 0.], [0., 0., 1., 1.]),   // inverted pred
            ([0., 0., 1., 2.], [0., 0., 2., 1.]),   // same corner, swapped aspect
            ([0., 0., 1e-10, 1e-10], [0., 0., 1e-10, 1e-10]),
            ([0., 0., 1e-10, 2e-10], [5e-11, 0., 1.5e-10, 1e-10]),
            ([0., 0., 1e-10, 1.], [0., 0., 1., 1e-10]), // slivers
            ([0., 0., 1e-20, 1e-20], [0., 0., 1., 1.]), // below f32's normal area
            ([0., 0., 1e-25, 0.], [0., 0., 1., 1.]),    // CIoU: w² + h² underflows
            ([1e6, 1e6, 1e6 + 1., 1e6 + 2.], [1e6, 1e6, 1e6 + 2., 1e6 + 1.]),
            ([1e15, 1e15, 2e15, 3e15], [1.5e15, 1e15, 2.5e15, 2e15]),
            ([-1e15, 0., 1e15, 1.], [0., 0., 1., 1e15]),
            ([1e19, 1e19, 3e19, 2e19], [2e19, 1e19, 4e19, 3e19]), // beyond the f32 domain
            ([0., 0., 3e38, 3e38], [0., 0., 1., 1.]),             // area overflows
            ([nan, 0., 1., 1.], [0., 0., 1., 1.]),
            ([0., 0., 1., 1.], [0., 0., 1., nan]),
            ([0., 0., inf, 1.], [0., 0., 1., 1.]),
            ([-inf, 0., 1., 1.], [0., 0., 1., 1.]),
            ([0., 0., 1., 1.], [0., -inf, 1., inf]),
        ];
        let (mut p, mut t) = (Vec::new(), Vec::new());
        for (a, b) in &fixed {
            p.extend_from_slice(a);
            t.extend_from_slice(b);
            p.extend_from_slice(b);
            t.extend_from_slice(a);
        }
        // Random integer grids: many ties, touching and degenerate boxes.
        for _ in 0..600 {
            let mut g = || {
                let x = r.gen_range(-3i32..3) as f32;
                let y = r.gen_range(-3i32..3) as f32;
                [x, y, x + r.gen_range(0i32..4) as f32, y + r.gen_range(0i32..4) as f32]
            };
            let (a, b) = (g(), g());
            p.extend_from_slice(&a);
            t.extend_from_slice(&b);
        }
        (p, t)
    }

    #[test]
    fn block_kernel_matches_f64_on_adversarial_boxes() {
        let (p, t) = adversarial();
        for eps in [1e-7, 1e-12, 0.5] {
            let (v, _) = check(&p, &t, eps, 1e-5, 2.0, "adversarial");
            assert!(v < 1e-5, "adversarial eps {eps}: worst value {v:e}");
        }
    }

    #[test]
    fn nan_and_overflow_lanes_are_recomputed_in_f64() {
        // A NaN coordinate makes the pair's value and all eight gradients NaN, as in f64.
        let p = [f32::NAN, 0., 1., 1.];
        let t = [0., 0., 1., 1.];
        for kind in KINDS {
            let (v, gp, gt) = run_f32(kind, 1e-7, &p, &t, &[1.0]);
            assert!(v[0].is_nan(), "{kind:?}");
            assert!(gp.iter().chain(&gt).all(|x| x.is_nan()), "{kind:?}: {gp:?} {gt:?}");
        }
        // Beyond the f32 domain the f64 result, rounded, comes back.
        let p = [1e19f32, 1e19, 3e19, 2e19];
        let t = [2e19f32, 1e19, 4e19, 3e19];
        let a = p.map(|x| x as f64);
        let b = t.map(|x| x as f64);
        for kind in KINDS {
            let (v, gp, gt) = run_f32(kind, 1e-7, &p, &t, &[1.0]);
            let (want, d) = pair(kind, a, b, 1e-7, Some(1.0));
            assert_eq!(v[0], want as f32, "{kind:?}");
            let got: Vec<f32> = gp.iter().chain(&gt).copied().collect();
            assert_eq!(got, d.map(|x| x as f32).to_vec(), "{kind:?}");
        }
    }

    #[test]
    fn forward_with_gradients_equals_forward_then_backward() {
        // Bit for bit: the gradients a forward computes on the way are those of the backward.
        let (p, t) = adversarial();
        let n = p.len() / 4;
        let bits = |x: Vec<MaybeUninit<f32>>| -> Vec<u32> {
            // SAFETY: initialised at creation.
            x.into_iter().map(|y| unsafe { y.assume_init() }.to_bits()).collect()
        };
        for kind in KINDS {
            for g in [1.0, 1.0 / 3.0] {
                let (mut v1, mut v2) = (vec![MaybeUninit::new(0.0f32); n], vec![MaybeUninit::new(0.0f32); n]);
                let mut gp = vec![MaybeUninit::new(0.0f32); 4 * n];
                let mut gt = vec![MaybeUninit::new(0.0f32); 4 * n];
                let s1 = forward(kind, 1e-7, &p, &t, Some(&mut v1), None);
                let grads = Grads {
                    g,
                    gp: Some(&mut gp),
                    gt: Some(&mut gt),
                };
                let s2 = forward(kind, 1e-7, &p, &t, Some(&mut v2), Some(grads));
                let mut bp = vec![MaybeUninit::new(0.0f32); 4 * n];
                let mut bt = vec![MaybeUninit::new(0.0f32); 4 * n];
                backward(kind, 1e-7, &p, &t, Upstream::Scalar(g), Some(&mut bp), Some(&mut bt));
                assert_eq!(s1.to_bits(), s2.to_bits(), "{kind:?}: sum");
                assert_eq!(bits(v1), bits(v2), "{kind:?}: values");
                assert_eq!(bits(gp), bits(bp), "{kind:?}: pred gradients");
                assert_eq!(bits(gt), bits(bt), "{kind:?}: target gradients");
            }
        }
    }

    #[test]
    fn scalar_upstream_equals_per_pair_upstream() {
        let (p, t) = adversarial();
        let n = p.len() / 4;
        for kind in KINDS {
            let each = vec![0.375f32; n];
            let mut a = vec![MaybeUninit::new(0.0f32); 4 * n];
            let mut b = vec![MaybeUninit::new(0.0f32); 4 * n];
            backward(kind, 1e-7, &p, &t, Upstream::Each(&each), Some(&mut a), None);
            backward(kind, 1e-7, &p, &t, Upstream::Scalar(0.375), None, Some(&mut b));
            let (_, gp, gt) = run_f32(kind, 1e-7, &p, &t, &each);
            // SAFETY: initialised above.
            let a: Vec<f32> = a.into_iter().map(|x| unsafe { x.assume_init() }).collect();
            let b: Vec<f32> = b.into_iter().map(|x| unsafe { x.assume_init() }).collect();
            let same = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(u, v)| u.to_bits() == v.to_bits());
            assert!(same(&a, &gp) && same(&b, &gt), "{kind:?}");
        }
    }
}
