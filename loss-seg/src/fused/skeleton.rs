//! The fused soft skeleton of [`crate::cldice`]: soft erosion (the minimum over the axis-aligned
//! 3-neighbourhood), soft dilation (the maximum over the 3×3 / 3×3×3 window), `relu`, iterated, on
//! each `(sample, channel)` plane of a `[N, C, H, W]` or `[N, C, D, H, W]` tensor, f32 and f64.
//!
//! The forward is the composite form's ops in the composite form's order (the same values, bit
//! for bit: min, max, `−`, `·`, `+` rounded one by one). The backward recomputes the forward's
//! images and routes the gradient the way Candle's autodiff routes it through the composite form:
//! through `max(u, v)` (and `min`) with result `r`, `u` gets `g·[u = r] / (1 + [v = r])` (a tie
//! splits the gradient in halves), `relu` passes it where its argument is `> 0`, and an
//! edge-replicated neighbour is the pixel itself. The planes run in parallel through the kernel
//! layer.

use candle_core::{bail, Result, Shape, Tensor};
use loss_core::kernel::{self, with_simd, Arg, Fused1, Fused2, Real, Split};
use std::mem::MaybeUninit;

/// `[N, C, H, W]` or `[N, C, D, H, W]` → the soft skeleton after `iter` erosion steps.
pub(crate) struct SkeletonOp {
    pub iter: usize,
}

/// The gradient of [`SkeletonOp`] w.r.t. its input, from the input and the upstream gradient.
struct SkeletonGradOp {
    iter: usize,
}

/// One plane's spatial dimensions (1 to 3 of them).
#[derive(Clone, Copy)]
struct Grid<'a> {
    dims: &'a [usize],
}

impl Grid<'_> {
    fn len(self) -> usize {
        self.dims.iter().product()
    }
    /// `(n, s)`: the length of `axis` and its stride.
    fn axis(self, axis: usize) -> (usize, usize) {
        (self.dims[axis], self.dims[axis + 1..].iter().product())
    }
}

/// Candle's `maximum` (`max = true`) or `minimum` of two values.
#[inline(always)]
fn pick<F: Real>(u: F, v: F, max: bool) -> F {
    if max {
        if u < v {
            v
        } else {
            u
        }
    } else if u > v {
        v
    } else {
        u
    }
}

/// The share of `g` that `u` gets from `op(u, v) = r`: `g·[u = r] / (1 + [v = r])`.
#[inline(always)]
fn share<F: Real>(g: F, u: F, v: F, r: F) -> F {
    if u != r {
        F::zero()
    } else if v == r {
        g * F::of(0.5)
    } else {
        g
    }
}

/// Edge-replicated shifts of a plane along one axis and their gradients: `next[i]` is pixel
/// `i`'s successor along the axis (itself at the end), `prev[i]` its predecessor (itself at the
/// start); `g_next`, `g_prev` the gradients that go back to them.
struct Shifts<F> {
    next: Vec<F>,
    prev: Vec<F>,
    g_next: Vec<F>,
    g_prev: Vec<F>,
}

impl<F: Real> Shifts<F> {
    fn new(len: usize) -> Self {
        let plane = || vec![F::zero(); len];
        Self {
            next: plane(),
            prev: plane(),
            g_next: plane(),
            g_prev: plane(),
        }
    }

    /// Fills `next` and `prev` from `x` (the composite form's `shifted`).
    #[inline(always)]
    fn fill(&mut self, x: &[F], grid: Grid<'_>, axis: usize) {
        let (n, s) = grid.axis(axis);
        let block = n * s;
        let m = block - s;
        for ((xb, nb), pb) in x
            .chunks(block)
            .zip(self.next.chunks_mut(block))
            .zip(self.prev.chunks_mut(block))
        {
            nb[..m].copy_from_slice(&xb[s..]);
            nb[m..].copy_from_slice(&xb[m..]);
            pb[s..].copy_from_slice(&xb[..m]);
            pb[..s].copy_from_slice(&xb[..s]);
        }
    }

    /// Adds `g_next` and `g_prev` to the gradient `gx` of the pixels they came from.
    #[inline(always)]
    fn add_back(&self, gx: &mut [F], grid: Grid<'_>, axis: usize) {
        let (n, s) = grid.axis(axis);
        let block = n * s;
        let m = block - s;
        let add = |to: &mut [F], from: &[F]| {
            for (a, &b) in to.iter_mut().zip(from) {
                *a += b;
            }
        };
        for ((gb, nb), pb) in gx
            .chunks_mut(block)
            .zip(self.g_next.chunks(block))
            .zip(self.g_prev.chunks(block))
        {
            add(&mut gb[s..], &nb[..m]);
            add(&mut gb[m..], &nb[m..]);
            add(&mut gb[..m], &pb[s..]);
            add(&mut gb[..s], &pb[..s]);
        }
    }
}

/// `out = op(op(x, next), prev)` along `axis`: the composite form's `window3`.
#[inline(always)]
fn window<F: Real>(x: &[F], out: &mut [F], grid: Grid<'_>, axis: usize, max: bool, sh: &mut Shifts<F>) {
    if x.is_empty() {
        return;
    }
    sh.fill(x, grid, axis);
    for (((o, &a), &b), &d) in out.iter_mut().zip(x).zip(&sh.next).zip(&sh.prev) {
        *o = pick(pick(a, b, max), d, max);
    }
}

/// Adds to `gx` the gradient of [`window`] w.r.t. `x` given the gradient `g` of its output.
#[inline(always)]
fn window_back<F: Real>(x: &[F], g: &[F], gx: &mut [F], grid: Grid<'_>, axis: usize, max: bool, sh: &mut Shifts<F>) {
    if x.is_empty() {
        return;
    }
    sh.fill(x, grid, axis);
    let Shifts {
        next,
        prev,
        g_next,
        g_prev,
    } = &mut *sh;
    let it = x.iter().zip(g).zip(next.iter().zip(prev.iter()));
    for (((gc, gn), gp), ((&a, &gr), (&b, &d))) in gx.iter_mut().zip(g_next.iter_mut()).zip(g_prev.iter_mut()).zip(it) {
        let m = pick(a, b, max);
        let r = pick(m, d, max);
        let gm = share(gr, m, d, r);
        *gp = share(gr, d, m, r);
        *gc += share(gm, a, b, m);
        *gn = share(gm, b, a, m);
    }
    sh.add_back(gx, grid, axis);
}

/// Soft erosion into `o[axes − 1]`; `w` holds the per-axis minima afterwards (`w[a]` for axis
/// `a`) and `o` the running minima `o[a] = min(o[a − 1], w[a])`, `o[0] = w[0]`.
#[inline(always)]
fn erode<F: Real>(x: &[F], grid: Grid<'_>, work: &mut Work<F>) {
    let Work { w, o, sh, .. } = work;
    for (a, wa) in w.iter_mut().enumerate() {
        window(x, wa, grid, a, false, sh);
    }
    o[0].copy_from_slice(&w[0]);
    for a in 1..w.len() {
        let (done, rest) = o.split_at_mut(a);
        for ((r, &u), &v) in rest[0].iter_mut().zip(&done[a - 1]).zip(&w[a]) {
            *r = pick(u, v, false);
        }
    }
}

/// Adds to `gx` the gradient of the erosion of `x` given `g`, the gradient of its output.
#[inline(always)]
fn erode_back<F: Real>(x: &[F], g: &[F], gx: &mut [F], grid: Grid<'_>, work: &mut Work<F>) {
    let axes = grid.dims.len();
    erode(x, grid, work);
    let Work { w, o, t, sh } = work;
    // t[0] is the running gradient of o[a], t[1] the gradient of w[a].
    let (run, own) = t.split_at_mut(1);
    let (run, own) = (&mut run[0], &mut own[0]);
    run.copy_from_slice(g);
    for a in (1..axes).rev() {
        for ((((gw, gr), &prev), &wa), &r) in own.iter_mut().zip(run.iter_mut()).zip(&o[a - 1]).zip(&w[a]).zip(&o[a]) {
            *gw = share(*gr, wa, prev, r);
            *gr = share(*gr, prev, wa, r);
        }
        window_back(x, own, gx, grid, a, false, sh);
    }
    window_back(x, run, gx, grid, 0, false, sh);
}

/// Soft dilation of `x` into `w[axes − 1]`, `w[a]` the maximum along axes `0..=a`.
#[inline(always)]
fn dilate<F: Real>(x: &[F], grid: Grid<'_>, work: &mut Work<F>) {
    let Work { w: y, sh, .. } = work;
    for a in 0..y.len() {
        let (done, rest) = y.split_at_mut(a);
        let input = if a == 0 { x } else { &done[a - 1] };
        window(input, &mut rest[0], grid, a, true, sh);
    }
}

/// Adds to `gx` the gradient of the dilation of `x` given `g`, the gradient of its output.
#[inline(always)]
fn dilate_back<F: Real>(x: &[F], g: &[F], gx: &mut [F], grid: Grid<'_>, work: &mut Work<F>) {
    let axes = grid.dims.len();
    dilate(x, grid, work);
    let Work { w: y, t, sh, .. } = work;
    let (run, next) = t.split_at_mut(1);
    let (run, next) = (&mut run[0], &mut next[0]);
    run.copy_from_slice(g);
    for a in (1..axes).rev() {
        next.fill(F::zero());
        window_back(&y[a - 1], run, next, grid, a, true, sh);
        std::mem::swap(run, next);
    }
    window_back(x, run, gx, grid, 0, true, sh);
}

/// Work planes of one erosion or dilation: `w`, `o` per axis, two gradient planes `t` and the
/// shifts.
struct Work<F> {
    w: Vec<Vec<F>>,
    o: Vec<Vec<F>>,
    t: Vec<Vec<F>>,
    sh: Shifts<F>,
}

/// One plane's images: the erosions `img[k]`, `k = 0..=iter + 1` (`img[0]` the input), the
/// openings `open[k] = dilate(img[k + 1])`, `k = 0..=iter`, and the work planes.
struct Scratch<F> {
    work: Work<F>,
    img: Vec<Vec<F>>,
    open: Vec<Vec<F>>,
}

impl<F: Real> Scratch<F> {
    fn new(grid: Grid<'_>, iter: usize) -> Self {
        let planes = |k: usize| vec![vec![F::zero(); grid.len()]; k];
        let axes = grid.dims.len();
        Self {
            work: Work {
                w: planes(axes),
                o: planes(axes),
                t: planes(2),
                sh: Shifts::new(grid.len()),
            },
            img: planes(iter + 2),
            open: planes(iter + 1),
        }
    }

    /// Fills `img` and `open` for the plane `x`.
    #[inline(always)]
    fn images(&mut self, x: &[F], grid: Grid<'_>) {
        let last = grid.dims.len() - 1;
        self.img[0].copy_from_slice(x);
        for k in 1..self.img.len() {
            let (done, rest) = self.img.split_at_mut(k);
            erode(&done[k - 1], grid, &mut self.work);
            rest[0].copy_from_slice(&self.work.o[last]);
        }
        for k in 0..self.open.len() {
            dilate(&self.img[k + 1], grid, &mut self.work);
            self.open[k].copy_from_slice(&self.work.w[last]);
        }
    }
}

/// `relu` as the composite form's: `v` where `v > 0`, else 0.
#[inline(always)]
fn relu<F: Real>(v: F) -> F {
    if v > F::zero() {
        v
    } else {
        F::zero()
    }
}

/// The skeleton of one plane into `out`, from `img` and `open` filled.
#[inline(always)]
fn skeleton_plane<F: Real>(s: &Scratch<F>, out: &mut [MaybeUninit<F>]) {
    for ((o, &x), &op) in out.iter_mut().zip(&s.img[0]).zip(&s.open[0]) {
        o.write(relu(x - op));
    }
    // SAFETY: every element was written just above.
    let out: &mut [F] = unsafe { &mut *(out as *mut [MaybeUninit<F>] as *mut [F]) };
    for k in 1..s.open.len() {
        for ((sk, &x), &op) in out.iter_mut().zip(&s.img[k]).zip(&s.open[k]) {
            let d = relu(x - op);
            *sk = *sk + relu(d - *sk * d);
        }
    }
}

/// The gradient w.r.t. one plane `x` of its skeleton, given the upstream gradient `g`.
#[inline(always)]
fn skeleton_back_plane<F: Real>(x: &[F], g: &[F], grid: Grid<'_>, s: &mut Scratch<F>, out: &mut [MaybeUninit<F>]) {
    s.images(x, grid);
    let levels = s.open.len();
    // The skeleton after each level: skel[k].
    let mut skel = vec![vec![F::zero(); x.len()]; levels];
    for (sk, (&a, &b)) in skel[0].iter_mut().zip(s.img[0].iter().zip(&s.open[0])) {
        *sk = relu(a - b);
    }
    for k in 1..levels {
        let (done, rest) = skel.split_at_mut(k);
        for (((sk, &prev), &a), &b) in rest[0].iter_mut().zip(&done[k - 1]).zip(&s.img[k]).zip(&s.open[k]) {
            let d = relu(a - b);
            *sk = prev + relu(d - prev * d);
        }
    }
    let mut gimg = vec![vec![F::zero(); x.len()]; levels + 1];
    let mut run = g.to_vec();
    let mut gopen = vec![F::zero(); x.len()];
    for k in (0..levels).rev() {
        for (j, gr) in run.iter_mut().enumerate() {
            let diff = s.img[k][j] - s.open[k][j];
            // The gradient reaching `diff` (through delta_k, or s_0 at k = 0).
            let gd = if k == 0 {
                let gd = *gr;
                *gr = F::zero();
                gd
            } else {
                let (d, prev) = (relu(diff), skel[k - 1][j]);
                let gu = if d - prev * d > F::zero() { *gr } else { F::zero() };
                *gr += -gu * d;
                gu + -gu * prev
            };
            let gdiff = if diff > F::zero() { gd } else { F::zero() };
            gimg[k][j] += gdiff;
            gopen[j] = -gdiff;
        }
        dilate_back(&s.img[k + 1], &gopen, &mut gimg[k + 1], grid, &mut s.work);
    }
    for k in (1..=levels).rev() {
        let (done, rest) = gimg.split_at_mut(k);
        erode_back(&s.img[k - 1], &rest[0], &mut done[k - 1], grid, &mut s.work);
    }
    for (o, &v) in out.iter_mut().zip(&gimg[0]) {
        o.write(v);
    }
}

/// Planes and the spatial grid of a `[N, C, spatial...]` layout of rank 4 or 5.
fn planes_of<'a>(dims: &'a [usize], what: &str) -> Result<(usize, Grid<'a>)> {
    if dims.len() != 4 && dims.len() != 5 {
        bail!("soft skeleton: `{what}` must be [N, C, H, W] or [N, C, D, H, W], got {dims:?}");
    }
    Ok((dims[0] * dims[1], Grid { dims: &dims[2..] }))
}

/// Runs `plane(k, scratch, out)` for every plane `k`, in parallel for large inputs (one plane a
/// task), each with its own scratch planes.
fn per_plane<F: Real>(
    planes: usize,
    grid: Grid<'_>,
    iter: usize,
    plane: impl Fn(usize, &mut Scratch<F>, &mut [MaybeUninit<F>]) + Sync + Send,
) -> Vec<F> {
    let len = grid.len();
    let split = Split {
        chunk: 1,
        parallel_from: if planes * len >= 1 << 13 { 2 } else { usize::MAX },
        whole_below: false,
    };
    let (out, _) = kernel::build(split, planes, len, |items, part| {
        let mut s = Scratch::new(grid, iter);
        for (k, o) in items.zip(part.chunks_mut(len.max(1))) {
            plane(k, &mut s, o);
        }
    });
    out
}

fn skeleton_forward<F: Real>(x: &[F], planes: usize, grid: Grid<'_>, iter: usize) -> Vec<F> {
    let len = grid.len();
    per_plane(planes, grid, iter, |k, s, out| {
        with_simd(
            #[inline(always)]
            || {
                s.images(&x[k * len..][..len], grid);
                skeleton_plane(s, out)
            },
        )
    })
}

fn skeleton_backward<F: Real>(x: &[F], g: &[F], planes: usize, grid: Grid<'_>, iter: usize) -> Vec<F> {
    let len = grid.len();
    per_plane(planes, grid, iter, |k, s, out| {
        with_simd(
            #[inline(always)]
            || skeleton_back_plane(&x[k * len..][..len], &g[k * len..][..len], grid, s, out),
        )
    })
}

impl Fused1 for SkeletonOp {
    fn name(&self) -> &'static str {
        "soft-skeleton"
    }

    fn forward<F: Real>(&self, x: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        let (planes, grid) = planes_of(x.dims(), "x")?;
        let out = skeleton_forward::<F>(x.contiguous("x")?, planes, grid, self.iter);
        Ok((out, x.layout.shape().clone()))
    }

    fn backward(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let op = SkeletonGradOp { iter: self.iter };
        Ok(Some(kernel::apply2_no_bwd(op, &x.contiguous()?, &grad.contiguous()?)?))
    }
}

impl Fused2 for SkeletonGradOp {
    fn name(&self) -> &'static str {
        "soft-skeleton-grad"
    }

    fn forward<F: Real>(&self, x: Arg<'_>, g: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        if x.dims() != g.dims() {
            bail!("soft skeleton backward: {:?} and {:?} differ", x.dims(), g.dims());
        }
        let (planes, grid) = planes_of(x.dims(), "x")?;
        let out = skeleton_backward::<F>(x.contiguous("x")?, g.contiguous("grad")?, planes, grid, self.iter);
        Ok((out, x.layout.shape().clone()))
    }
}
