//! The kernel layer: how a loss of this workspace gets a fused CPU kernel.
//!
//! A fused loss has two forms. The **composite** form is plain Candle ops, differentiated by
//! Candle's autodiff; it runs on every device and dtype and is the reference. The **fused** form
//! is one pass over f32/f64 slices on the CPU forward and one pass backward, with the analytic
//! gradient. Everything the fused form needs besides its formula is here, once:
//!
//! | piece | what |
//! |---|---|
//! | [`Real`], [`select`], [`logistic`], [`exp_parts_f64`] | the float trait the loops are written over (f32 with `exp`/`ln` that vectorise, f64 with libm), a branch-free select, the stable sigmoid pair and softplus, an f64 `eˣ = m·2ᵏ` that vectorises and never overflows (CTC's recursion) |
//! | [`with_simd`], [`simd_entry!`](crate::simd_entry) | runs a loop compiled for AVX2 + FMA when the CPU has them |
//! | [`Split`], [`build`], [`build_planes`], [`build_optional`], [`for_each_chunk`], [`run_tasks`], [`uninit_vec`] | fills an output buffer (never zero-filled first) in fixed chunks, in parallel for large inputs, the chunks' results in order (the same sums on any number of threads) |
//! | [`Elementwise`], [`elementwise`] | a loss `ℓ(x, t)` of two same-shape tensors from its value and partial derivatives: the whole forward and backward (values or the reduced sum, the gradient saved by a reduced forward) |
//! | [`row_max`], [`row_sum_map`], [`row_sum_map_into`], [`row_exp_sum`], [`row_exp_sum_into`], [`row_softmax_into`], [`assume_init`] | the pieces of a softmax over `[N, C]` rows (row kernels) |
//! | [`SavedGrad`], [`KeptGrads`], [`backward2`] | gradients written by the forward and kept for the backward (taken by the first, or kept for every one); the backward that takes the kept gradient or recomputes it |
//! | [`Fused1`], [`Fused2`], [`Fused3`], [`Arg`], [`apply1`], [`apply2`], [`apply3`], [`apply3_no_bwd`] | the adapter: a forward over f32/f64 slices plus a backward becomes Candle's `CustomOp1/2/3`; the f32/f64 `match` is written here |
//! | [`Path`], [`force`], [`with_path`], [`choose`] | which form runs: the one switch of the workspace |
//!
//! The pattern of every fused loss (see CONTRIBUTING.md, "How to add a loss"):
//!
//! ```ignore
//! pub fn my_loss(input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
//!     check::float_pair("my_loss", "input", input, "target", target)?;
//!     if kernel::choose("my_loss", input)? {
//!         return kernel::apply2(MyKernel { reduction }, input, target); // Fused2
//!     }
//!     reduce("my_loss", &composite_form(input, target)?, reduction)
//! }
//! ```
//!
//! Tests hold the two forms equal by running a loss under `with_path(Path::Composite, ..)` and
//! `with_path(Path::Fused, ..)`.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;
use std::cell::Cell;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::Mutex;

mod elementwise;
mod real;
mod rows;
pub(crate) use elementwise::{accumulate, BLOCK, LANES};
pub use elementwise::{elementwise, Elementwise};
pub use real::{exp_f32, exp_parts_f64, ln1p_unit_f32, ln_f32, logistic, select, Real};
pub use rows::{assume_init, row_exp_sum, row_exp_sum_into, row_max, row_softmax_into, row_sum_map, row_sum_map_into};

// ---------------------------------------------------------------------------------------------
// The path switch.

/// Which form of a loss runs: the fused CPU kernel or the composite (plain Candle ops) form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Path {
    /// The fused kernel where one exists for the call (CPU, f32/f64), else the composite form.
    #[default]
    Auto,
    /// The fused kernel; a loss that has one is an error on another device or dtype.
    Fused,
    /// The composite form everywhere, also on the CPU (as CUDA and Metal run).
    Composite,
}

thread_local! {
    static PATH: Cell<Path> = const { Cell::new(Path::Auto) };
}

/// The path in force on this thread ([`Path::Auto`] unless [`force`]d).
pub fn path() -> Path {
    PATH.with(|p| p.get())
}

/// Sets the path of the current thread until the returned guard is dropped, which restores the
/// previous one (also when a panic unwinds): `let _path = kernel::force(Path::Composite);`.
///
/// The choice is per thread: the kernels read it on the thread that calls the loss (rayon's
/// workers inside a kernel do not ask).
#[must_use = "the path is restored when the guard is dropped"]
pub fn force(path: Path) -> PathGuard {
    PathGuard(PATH.with(|p| p.replace(path)))
}

/// Restores the previous [`Path`] when dropped (see [`force`]).
#[derive(Debug)]
pub struct PathGuard(Path);

impl Drop for PathGuard {
    fn drop(&mut self) {
        PATH.with(|p| p.set(self.0));
    }
}

/// Runs `f` under [`force`]`(path)`.
pub fn with_path<R>(path: Path, f: impl FnOnce() -> R) -> R {
    let _path = force(path);
    f()
}

/// Whether `loss` runs its fused kernel for `x` (its first float input): `true` on the CPU for
/// f32/f64 unless [`Path::Composite`] is in force.
///
/// # Errors
/// [`Path::Fused`] for a tensor the kernels cannot take (another device, another dtype): a
/// [`crate::LossError::BadOptions`] naming `loss`.
pub fn choose(loss: &'static str, x: &Tensor) -> Result<bool> {
    let fits = x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64);
    match path() {
        Path::Composite => Ok(false),
        Path::Auto => Ok(fits),
        Path::Fused if fits => Ok(true),
        Path::Fused => Err(crate::LossError::BadOptions {
            loss,
            message: format!(
                "the fused kernel runs on the CPU for f32/f64, got {:?} on {:?}",
                x.dtype(),
                x.device().location()
            ),
        }
        .into()),
    }
}

/// Whether a CPU fast path of any dtype may run for `x` (the differentiable primitives of
/// [`crate::ops`]): on the CPU and not under [`Path::Composite`].
pub fn cpu_allowed(x: &Tensor) -> bool {
    x.device().is_cpu() && path() != Path::Composite
}

// ---------------------------------------------------------------------------------------------
// SIMD.

/// Whether this CPU has AVX2 and FMA (detected once at run time; std caches the answer).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Runs `f` compiled for AVX2 and FMA when the CPU has them (detected once at run time), and as
/// it is otherwise (other CPUs, other architectures): the loops of the kernels vectorise 8 f32
/// lanes wide through it while the binary runs on any x86-64.
///
/// `f` should be a closure marked `#[inline(always)]` (allowed on a closure in argument
/// position) that calls `#[inline(always)]` loop functions, so that all of it is compiled into
/// the AVX2 copy: `with_simd(#[inline(always)] || kernel(x, y))`. A closure that LLVM declines
/// to inline, or one called per element inside the loop, stays baseline x86-64 code.
#[inline(always)]
pub fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if has_avx2_fma() {
            // SAFETY: the features were just detected on this CPU.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// Defines the function `$name`, which runs the `#[inline(always)]` function `$body` (same
/// generics and arguments) compiled for AVX2 + FMA when the CPU has them ([`has_avx2_fma`]), and
/// as it is otherwise: [`with_simd`] written out as a generic function. Some loops (lanes kept
/// in a `[F; 8]` array, row kernels) vectorise only this way, not through `with_simd`'s closure.
///
/// `simd_entry!(name<K: Bound, F: Real>(k: K, x: &[F]) -> f64 = body);` (an optional
/// `; const C: bool` after the type parameters).
#[macro_export]
macro_rules! simd_entry {
    ($name:ident <$($g:ident : $b:path),* $(; const $c:ident : bool)?> ($($a:ident : $t:ty),*) -> $r:ty = $body:ident) => {
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        fn $name<$($g: $b),* $(, const $c: bool)?>($($a: $t),*) -> $r {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2<$($g: $b),* $(, const $c: bool)?>($($a: $t),*) -> $r {
                    $body::<$($g),* $(, $c)?>($($a),*)
                }
                if $crate::kernel::has_avx2_fma() {
                    // SAFETY: the features were just detected on this CPU.
                    return unsafe { avx2::<$($g),* $(, $c)?>($($a),*) };
                }
            }
            $body::<$($g),* $(, $c)?>($($a),*)
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Chunked parallel writers.

/// How a kernel splits its items (elements, pairs, rows, cases): `chunk` items a task, in
/// parallel on rayon's threads from `parallel_from` items on; below that, one task over all
/// items (`whole_below`) or the same chunks on the calling thread. The tasks fix the order in
/// which partial sums are added, so a kernel keeps its split for its results to stay the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Items per task.
    pub chunk: usize,
    /// The smallest number of items run in parallel (smaller inputs pay no thread overhead).
    pub parallel_from: usize,
    /// Whether an input run on the calling thread is one task (else the same chunks).
    pub whole_below: bool,
}

impl Split {
    /// The split of the elementwise kernels: chunks of 2¹⁴ elements, parallel from 2¹⁵.
    pub const ELEMENTS: Split = Split::new(1 << 14);

    /// Chunks of `chunk` items, parallel from two chunks on, one task below.
    pub const fn new(chunk: usize) -> Split {
        Split {
            chunk,
            parallel_from: 2 * chunk,
            whole_below: true,
        }
    }

    /// Whether `n` items run in parallel.
    pub fn parallel(self, n: usize) -> bool {
        n >= self.parallel_from
    }

    /// The item ranges of the tasks over `0..n`.
    pub fn ranges(self, n: usize) -> impl Iterator<Item = Range<usize>> {
        let chunk = if self.whole_below && !self.parallel(n) {
            n.max(1)
        } else {
            self.chunk.max(1)
        };
        let tasks = if self.whole_below && !self.parallel(n) {
            1
        } else {
            n.div_ceil(chunk)
        };
        (0..tasks).map(move |c| (c * chunk).min(n)..((c + 1) * chunk).min(n))
    }
}

/// Runs `f` on every task, in parallel when `parallel`; the results in the tasks' order.
pub fn run_tasks<P: Send, R: Send>(parallel: bool, tasks: Vec<P>, f: impl Fn(P) -> R + Sync + Send) -> Vec<R> {
    if parallel {
        tasks.into_par_iter().map(f).collect()
    } else {
        tasks.into_iter().map(f).collect()
    }
}

/// Runs `f(items, pieces)` over the tasks of `0..n` ([`Split::ranges`]), where `pieces[k]` is the
/// chunk's part of `planes[k]` (`per` values an item; `per = 0` for none): in parallel for large
/// inputs, the results in chunk order.
pub fn for_each_chunk<T: Send, R: Send, const K: usize>(
    split: Split,
    n: usize,
    per: usize,
    planes: [&mut [T]; K],
    f: impl Fn(Range<usize>, [&mut [T]; K]) -> R + Sync + Send,
) -> Vec<R> {
    let mut rest = planes;
    let mut tasks = Vec::new();
    for items in split.ranges(n) {
        let len = items.len() * per;
        let pieces = std::array::from_fn(|k| {
            let (head, tail) = std::mem::take(&mut rest[k]).split_at_mut(len);
            rest[k] = tail;
            head
        });
        tasks.push((items, pieces));
    }
    run_tasks(split.parallel(n), tasks, |(items, pieces)| f(items, pieces))
}

/// A vector of `n` elements that `fill` initialises in full (the buffer is not zero-filled
/// first: one pass less over memory). Should `fill` panic, the vector is dropped empty.
pub fn uninit_vec<T>(n: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    fill(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: `fill` initialised every element of `v[..n]` (its contract).
    unsafe { v.set_len(n) };
    v
}

/// A vector of `n · per` values written chunk by chunk by `write(items, part)`, which must
/// initialise all of `part` (the values of `items`); returns it with `write`'s results in chunk
/// order.
pub fn build<T: Send, R: Send>(
    split: Split,
    n: usize,
    per: usize,
    write: impl Fn(Range<usize>, &mut [MaybeUninit<T>]) -> R + Sync + Send,
) -> (Vec<T>, Vec<R>) {
    let (v, r) = build_planes::<T, R, 1>(split, n, per, |items, [part]| write(items, part));
    (v, r)
}

/// As [`build`] with `K` planes of `n · per` values one after the other (`[plane 0 | plane 1 |
/// ...]`), each chunk writing its part of every plane.
pub fn build_planes<T: Send, R: Send, const K: usize>(
    split: Split,
    n: usize,
    per: usize,
    write: impl Fn(Range<usize>, [&mut [MaybeUninit<T>]; K]) -> R + Sync + Send,
) -> (Vec<T>, Vec<R>) {
    let mut results = Vec::new();
    let v = uninit_vec(K * n * per, |spare| {
        let mut rest = spare;
        let planes = std::array::from_fn(|_| {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(n * per);
            rest = tail;
            head
        });
        results = for_each_chunk(split, n, per, planes, &write);
    });
    (v, results)
}

/// As [`build_planes`] with planes that may be absent and of different widths: plane `k` holds
/// `n · per[k]` values and exists only where `want[k]` (a loss's per-item values, say, and the
/// gradients of those of its inputs that need one). `write(items, parts)` gets the chunk's part of
/// every present plane, which it must initialise in full; returns the planes and `write`'s
/// results in chunk order.
pub fn build_optional<T: Send, R: Send, const M: usize>(
    split: Split,
    n: usize,
    per: [usize; M],
    want: [bool; M],
    write: impl Fn(Range<usize>, [Option<&mut [MaybeUninit<T>]>; M]) -> R + Sync + Send,
) -> ([Option<Vec<T>>; M], Vec<R>) {
    let mut planes: [Option<Vec<T>>; M] = std::array::from_fn(|k| want[k].then(|| Vec::with_capacity(n * per[k])));
    let results = {
        let mut rest: [Option<&mut [MaybeUninit<T>]>; M] = std::array::from_fn(|_| None);
        for (k, p) in planes.iter_mut().enumerate() {
            rest[k] = p.as_mut().map(|v| &mut v.spare_capacity_mut()[..n * per[k]]);
        }
        let tasks = split.ranges(n).map(|items| {
            let pieces = std::array::from_fn(|k| {
                let (head, tail) = rest[k].take()?.split_at_mut(items.len() * per[k]);
                rest[k] = Some(tail);
                Some(head)
            });
            (items, pieces)
        });
        if split.parallel(n) {
            run_tasks(true, tasks.collect(), |(items, pieces)| write(items, pieces))
        } else {
            tasks.map(|(items, pieces)| write(items, pieces)).collect()
        }
    };
    for (k, p) in planes.iter_mut().enumerate() {
        if let Some(v) = p {
            // SAFETY: the tasks cover 0..n and `write` initialised each task's part of the plane.
            unsafe { v.set_len(n * per[k]) };
        }
    }
    (planes, results)
}

// ---------------------------------------------------------------------------------------------
// The saved gradient.

/// A gradient written by a forward kernel and kept for the backward (taken by the first
/// backward; a second backward through the same graph recomputes it).
#[derive(Debug, Default)]
pub struct SavedGrad(Mutex<Option<CpuStorage>>);

impl SavedGrad {
    /// Keeps `grad`, if any.
    pub fn keep(&self, grad: Option<CpuStorage>) {
        if let (Some(g), Ok(mut slot)) = (grad, self.0.lock()) {
            *slot = Some(g);
        }
    }

    /// Takes the kept gradient, if any.
    pub fn take(&self) -> Option<CpuStorage> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }

    /// The kept gradient as a tensor of `shape` on the CPU; `None` if nothing is kept.
    ///
    /// # Errors
    /// A kept gradient whose size is not `shape`'s.
    pub fn take_tensor(&self, shape: impl Into<Shape>) -> Result<Option<Tensor>> {
        let shape = shape.into();
        let device = candle_core::Device::Cpu;
        Ok(match self.take() {
            Some(CpuStorage::F32(v)) => Some(Tensor::from_vec(v, shape, &device)?),
            Some(CpuStorage::F64(v)) => Some(Tensor::from_vec(v, shape, &device)?),
            _ => None,
        })
    }

    /// The kept gradient times the 0-d `upstream` gradient, as a tensor of `x`'s shape; `None`
    /// if nothing is kept.
    ///
    /// # Errors
    /// A non-scalar `upstream`.
    pub fn take_scaled(&self, x: &Tensor, upstream: &Tensor) -> Result<Option<Tensor>> {
        let Some(storage) = self.take() else {
            return Ok(None);
        };
        let u = scalar_f64(upstream)?;
        let chunk = Split::ELEMENTS.chunk;
        Ok(Some(match storage {
            CpuStorage::F32(mut v) => {
                if u != 1.0 {
                    v.par_iter_mut().with_min_len(chunk).for_each(|e| *e *= u as f32);
                }
                Tensor::from_vec(v, x.shape(), x.device())?
            }
            CpuStorage::F64(mut v) => {
                if u != 1.0 {
                    v.par_iter_mut().with_min_len(chunk).for_each(|e| *e *= u);
                }
                Tensor::from_vec(v, x.shape(), x.device())?
            }
            _ => return Ok(None),
        }))
    }

    /// The kept gradient with its `i`-th group of `per` consecutive values multiplied by
    /// `scale(i)`, as a tensor of `x`'s shape on the CPU; `None` if nothing is kept. A scale of 0
    /// gives zeros, also for a NaN or infinite value (an input the upstream gradient does not
    /// reach): per-item upstream gradients of a kernel whose items are not the leading dimension
    /// (CTC's samples, `[T, N, C]` rows `t·N + n`).
    ///
    /// # Errors
    /// A kept gradient whose size is not `x`'s.
    pub fn take_scaled_groups(
        &self,
        x: &Tensor,
        per: usize,
        scale: impl Fn(usize) -> f64 + Sync,
    ) -> Result<Option<Tensor>> {
        fn scaled<F: Real>(mut v: Vec<F>, per: usize, scale: impl Fn(usize) -> f64 + Sync) -> Vec<F> {
            let rows = (Split::ELEMENTS.chunk / per.max(1)).max(1);
            v.par_chunks_mut(per.max(1))
                .with_min_len(rows)
                .enumerate()
                .for_each(|(i, g)| {
                    let w = scale(i);
                    if w == 0.0 {
                        g.fill(F::zero());
                    } else if w != 1.0 {
                        let w = F::of(w);
                        g.iter_mut().for_each(|e| *e *= w);
                    }
                });
            v
        }
        let device = candle_core::Device::Cpu;
        Ok(match self.take() {
            Some(CpuStorage::F32(v)) => Some(Tensor::from_vec(scaled(v, per, scale), x.shape(), &device)?),
            Some(CpuStorage::F64(v)) => Some(Tensor::from_vec(scaled(v, per, scale), x.shape(), &device)?),
            _ => None,
        })
    }

    /// The gradient w.r.t. `x` in a backward: the kept gradient times the 0-d `upstream` where
    /// the forward kept one ([`SavedGrad::take_scaled`]: the first backward), else
    /// `recompute(upstream)` with `upstream` made contiguous (a second backward through the same
    /// graph, or a forward that kept none, e.g. an unreduced loss).
    ///
    /// # Errors
    /// A kept gradient with a non-scalar `upstream`; `recompute`'s.
    pub fn take_or_recompute(
        &self,
        x: &Tensor,
        upstream: &Tensor,
        recompute: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        match self.take_scaled(x, upstream)? {
            Some(g) => Ok(g),
            None => recompute(&upstream.contiguous()?),
        }
    }
}

/// The backward of a [`Fused2`] loss `ℓ(a, b)` whose forward may keep `∂ℓ/∂a` in `saved`, with
/// the gradient op `grad_op(wrt_b)`: a [`Fused3`] of `(a, b, upstream)` that writes `upstream ·
/// ∂ℓ/∂a` (`wrt_b = false`) or `upstream · ∂ℓ/∂b` (`true`). Returns `(∂/∂a, ∂/∂b)`: `∂/∂a` from
/// [`SavedGrad::take_or_recompute`], `∂/∂b` only when `b` is tracked (else `None`).
///
/// # Errors
/// The gradient op's.
pub fn backward2<G: Fused3>(
    saved: &SavedGrad,
    a: &Tensor,
    b: &Tensor,
    upstream: &Tensor,
    grad_op: impl Fn(bool) -> G,
) -> Result<Grads2> {
    let ga = saved.take_or_recompute(a, upstream, |up| apply3_no_bwd(grad_op(false), a, b, up))?;
    let gb = if b.track_op() {
        Some(apply3_no_bwd(grad_op(true), a, b, &upstream.contiguous()?)?)
    } else {
        None
    };
    Ok((Some(ga), gb))
}

/// The value of the 0-d tensor `t` in f64, read in its own dtype (f32 and f64 need no conversion
/// op: a backward that reads its upstream gradient pays for none).
///
/// # Errors
/// A tensor that is not 0-d.
pub fn scalar_f64(t: &Tensor) -> Result<f64> {
    match t.dtype() {
        DType::F32 => Ok(f64::from(t.to_scalar::<f32>()?)),
        DType::F64 => t.to_scalar::<f64>(),
        _ => t.to_dtype(DType::F64)?.to_scalar::<f64>(),
    }
}

/// The gradients a forward kernel wrote for its `K` inputs (`scale · ∂ℓ/∂input`, per item for an
/// unreduced loss), kept as CPU tensors for every backward through the graph: a backward
/// multiplies them by its upstream gradient (nothing to do for the usual scalar 1), a second
/// backward reads them again. They live as long as the graph that holds the op.
#[derive(Debug)]
pub struct KeptGrads<const K: usize>(Mutex<[Option<Tensor>; K]>);

impl<const K: usize> Default for KeptGrads<K> {
    fn default() -> Self {
        Self(Mutex::new(std::array::from_fn(|_| None)))
    }
}

impl<const K: usize> KeptGrads<K> {
    /// Keeps the gradients present in `grads`, each of `shape`.
    ///
    /// # Errors
    /// A gradient whose size is not `shape`'s.
    pub fn keep<F: Real>(&self, grads: [Option<Vec<F>>; K], shape: &Shape) -> Result<()> {
        let device = candle_core::Device::Cpu;
        let mut kept: [Option<Tensor>; K] = std::array::from_fn(|_| None);
        for (slot, g) in kept.iter_mut().zip(grads) {
            if let Some(g) = g {
                *slot = Some(Tensor::from_vec(g, shape, &device)?);
            }
        }
        if let Ok(mut slot) = self.0.lock() {
            *slot = kept;
        }
        Ok(())
    }

    /// The kept gradient of input `k` times `upstream`, a 0-d scalar or one value per item (the
    /// leading dimensions of the gradient, broadcast over the rest); `None` if nothing is kept.
    ///
    /// # Errors
    /// An `upstream` whose shape is not a leading part of the gradient's.
    pub fn scaled(&self, k: usize, upstream: &Tensor) -> Result<Option<Tensor>> {
        let Some(g) = self.0.lock().ok().and_then(|s| s[k].clone()) else {
            return Ok(None);
        };
        if upstream.rank() == 0 {
            let u = scalar_f64(upstream)?;
            return Ok(Some(if u == 1.0 { g } else { g.affine(u, 0.0)? }));
        }
        let mut dims = upstream.dims().to_vec();
        dims.resize(g.rank(), 1);
        Ok(Some(g.broadcast_mul(&upstream.reshape(dims)?)?))
    }
}

// ---------------------------------------------------------------------------------------------
// The adapter.

/// One argument of a kernel's CPU forward: its storage and layout.
#[derive(Clone, Copy)]
pub struct Arg<'a> {
    /// The whole storage (the tensor's elements are where `layout` says).
    pub storage: &'a CpuStorage,
    /// The tensor's layout in `storage`.
    pub layout: &'a Layout,
}

impl<'a> Arg<'a> {
    /// The tensor's dimensions.
    pub fn dims(&self) -> &'a [usize] {
        self.layout.dims()
    }

    /// The elements of a contiguous tensor of dtype `F`.
    ///
    /// # Errors
    /// Another dtype, a strided layout (naming the argument `what`).
    #[inline]
    pub fn contiguous<F: candle_core::WithDType>(&self, what: &str) -> Result<&'a [F]> {
        let v = F::cpu_storage_as_slice(self.storage)?;
        match self.layout.contiguous_offsets() {
            Some((a, b)) => Ok(&v[a..b]),
            None => bail!("fused kernel: `{what}` must be contiguous"),
        }
    }

    /// The elements of a tensor of dtype `F` in row-major order: borrowed when contiguous,
    /// gathered otherwise.
    ///
    /// # Errors
    /// Another dtype.
    pub fn elems<F: candle_core::WithDType>(&self) -> Result<Cow<'a, [F]>> {
        let v = F::cpu_storage_as_slice(self.storage)?;
        Ok(match self.layout.contiguous_offsets() {
            Some((a, b)) => Cow::Borrowed(&v[a..b]),
            None => Cow::Owned(
                crate::ops::layout_offsets(self.layout)
                    .into_iter()
                    .map(|i| v[i])
                    .collect(),
            ),
        })
    }

    /// The whole storage as `F` (read it through [`Arg::layout`]).
    ///
    /// # Errors
    /// Another dtype.
    pub fn raw<F: candle_core::WithDType>(&self) -> Result<&'a [F]> {
        F::cpu_storage_as_slice(self.storage)
    }
}

/// A kernel of one tensor: the CPU forward over f32 or f64, and the backward.
pub trait Fused1: Send + Sync {
    /// The op's name (errors and Candle's graph).
    fn name(&self) -> &'static str;
    /// The output and its shape, for the dtype `F` of `x`.
    ///
    /// # Errors
    /// Whatever the kernel rejects.
    fn forward<F: Real>(&self, x: Arg<'_>) -> Result<(Vec<F>, Shape)>;
    /// The gradient w.r.t. `x` from the forward's result `res` and the upstream `grad`.
    ///
    /// # Errors
    /// The default: the op has no backward.
    fn backward(&self, _x: &Tensor, _res: &Tensor, _grad: &Tensor) -> Result<Option<Tensor>> {
        Err(candle_core::Error::BackwardNotSupported { op: self.name() })
    }
}

/// A kernel of two tensors, as [`Fused1`].
pub trait Fused2: Send + Sync {
    /// The op's name.
    fn name(&self) -> &'static str;
    /// The output and its shape, for the dtype `F` of `a` (`b` may be of any dtype).
    ///
    /// # Errors
    /// Whatever the kernel rejects.
    fn forward<F: Real>(&self, a: Arg<'_>, b: Arg<'_>) -> Result<(Vec<F>, Shape)>;
    /// The gradients w.r.t. `a` and `b`.
    ///
    /// # Errors
    /// The default: the op has no backward.
    fn backward(&self, _a: &Tensor, _b: &Tensor, _res: &Tensor, _grad: &Tensor) -> Result<Grads2> {
        Err(candle_core::Error::BackwardNotSupported { op: self.name() })
    }
}

/// A kernel of three tensors, as [`Fused1`]: a loss of three inputs (applied with [`apply3`]),
/// or the backward pass of a [`Fused2`] (applied with [`apply3_no_bwd`]).
pub trait Fused3: Send + Sync {
    /// The op's name.
    fn name(&self) -> &'static str;
    /// The output and its shape, for the dtype `F` of `a`.
    ///
    /// # Errors
    /// Whatever the kernel rejects.
    fn forward<F: Real>(&self, a: Arg<'_>, b: Arg<'_>, c: Arg<'_>) -> Result<(Vec<F>, Shape)>;
    /// The gradients w.r.t. `a`, `b` and `c`.
    ///
    /// # Errors
    /// The default: the op has no backward.
    fn backward(&self, _a: &Tensor, _b: &Tensor, _c: &Tensor, _res: &Tensor, _grad: &Tensor) -> Result<Grads3> {
        Err(candle_core::Error::BackwardNotSupported { op: self.name() })
    }
}

/// The gradients of a [`Fused2`] w.r.t. its two tensors (`None`: no gradient).
pub type Grads2 = (Option<Tensor>, Option<Tensor>);

/// The gradients of a [`Fused3`] w.r.t. its three tensors (`None`: no gradient).
pub type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

/// A [`Fused1`], [`Fused2`] or [`Fused3`] as Candle's `CustomOp`.
struct Op<K>(K);

/// Runs `forward::<f32>` or `forward::<f64>` on the dtype of `first`: the one f32/f64 `match`.
fn by_dtype(
    name: &str,
    first: &CpuStorage,
    f32: impl FnOnce() -> Result<(Vec<f32>, Shape)>,
    f64: impl FnOnce() -> Result<(Vec<f64>, Shape)>,
) -> Result<(CpuStorage, Shape)> {
    match first {
        CpuStorage::F32(_) => f32().map(|(v, s)| (CpuStorage::F32(v), s)),
        CpuStorage::F64(_) => f64().map(|(v, s)| (CpuStorage::F64(v), s)),
        other => bail!("{name}: the fused kernel takes f32 or f64, got {:?}", other.dtype()),
    }
}

impl<K: Fused1> CustomOp1 for Op<K> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = Arg { storage: s, layout: l };
        by_dtype(
            self.0.name(),
            s,
            || self.0.forward::<f32>(x),
            || self.0.forward::<f64>(x),
        )
    }
    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        self.0.backward(x, res, grad)
    }
}

impl<K: Fused2> CustomOp2 for Op<K> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (
            Arg {
                storage: s1,
                layout: l1,
            },
            Arg {
                storage: s2,
                layout: l2,
            },
        );
        by_dtype(
            self.0.name(),
            s1,
            || self.0.forward::<f32>(a, b),
            || self.0.forward::<f64>(a, b),
        )
    }
    fn bwd(&self, a: &Tensor, b: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Grads2> {
        self.0.backward(a, b, res, grad)
    }
}

impl<K: Fused3> CustomOp3 for Op<K> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = Arg {
            storage: s1,
            layout: l1,
        };
        let b = Arg {
            storage: s2,
            layout: l2,
        };
        let c = Arg {
            storage: s3,
            layout: l3,
        };
        by_dtype(
            self.0.name(),
            s1,
            || self.0.forward::<f32>(a, b, c),
            || self.0.forward::<f64>(a, b, c),
        )
    }
    fn bwd(&self, a: &Tensor, b: &Tensor, c: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Grads3> {
        self.0.backward(a, b, c, res, grad)
    }
}

/// Applies the one-tensor kernel `k` to `x` (a CPU tensor; the caller has [`choose`]n).
///
/// # Errors
/// As `k`'s forward.
pub fn apply1<K: Fused1 + 'static>(k: K, x: &Tensor) -> Result<Tensor> {
    x.apply_op1(Op(k))
}

/// Applies `k` to `x` without recording a backward (a backward pass's kernel).
///
/// # Errors
/// As `k`'s forward.
pub fn apply1_no_bwd<K: Fused1>(k: K, x: &Tensor) -> Result<Tensor> {
    x.apply_op1_no_bwd(&Op(k))
}

/// Applies the two-tensor kernel `k` to `a` and `b` (CPU tensors; the caller has [`choose`]n).
///
/// # Errors
/// As `k`'s forward.
pub fn apply2<K: Fused2 + 'static>(k: K, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.apply_op2(b, Op(k))
}

/// Applies `k` to `a` and `b` without recording a backward.
///
/// # Errors
/// As `k`'s forward.
pub fn apply2_no_bwd<K: Fused2>(k: K, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.apply_op2_no_bwd(b, &Op(k))
}

/// Applies the three-tensor kernel `k` to `a`, `b` and `c` (CPU tensors; the caller has
/// [`choose`]n), recording its backward.
///
/// # Errors
/// As `k`'s forward.
pub fn apply3<K: Fused3 + 'static>(k: K, a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Tensor> {
    a.apply_op3(b, c, Op(k))
}

/// Applies the three-tensor kernel `k` (a backward pass) to `a`, `b`, `c`.
///
/// # Errors
/// As `k`'s forward.
pub fn apply3_no_bwd<K: Fused3>(k: K, a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Tensor> {
    a.apply_op3_no_bwd(b, c, &Op(k))
}
