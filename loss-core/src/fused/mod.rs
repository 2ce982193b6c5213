//! Fused CPU kernels for the pointwise losses: one pass forward, one pass backward.
//!
//! A pointwise loss `ℓ(x, t)` (L1, MSE, Smooth L1, Huber, BCE with logits, sigmoid focal) runs on
//! the CPU as one `CustomOp2` whose forward reads `input` and `target` once and writes either the
//! elementwise loss (`Reduction::None`) or directly the reduced scalar (partial sums in f64, so a
//! mean over 1e7 f32 values keeps f32's precision), and whose backward writes the analytic
//! gradient `upstream · ∂ℓ/∂x` in one pass (and `∂ℓ/∂t` only when the target needs a gradient).
//! Nothing but the inputs is kept for the backward. Large inputs are split over rayon's threads
//! (above [`PARALLEL_THRESHOLD`] elements); small ones pay no thread overhead.
//!
//! The composite path (plain Candle ops, autodiff) of each loss runs on every other device and
//! under [`crate::ops::with_composite`]; tests hold the two equal.

use crate::reduction::Reduction;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use num_traits::Float;
use rayon::prelude::*;

mod softmax;
pub use softmax::{cross_entropy_rows, CrossEntropyRows};

/// Inputs with at least this many elements are processed in parallel.
pub const PARALLEL_THRESHOLD: usize = 1 << 15;
pub(crate) const CHUNK: usize = 1 << 14;

/// A pointwise loss with a closed-form value and partial derivatives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pointwise {
    /// `|x − t|`.
    L1,
    /// `(x − t)²`.
    Mse,
    /// Smooth L1 with `beta > 0` (`beta = 0` is `L1`).
    SmoothL1 {
        /// Width of the quadratic zone.
        beta: f64,
    },
    /// Huber with `delta > 0`.
    Huber {
        /// Threshold.
        delta: f64,
    },
    /// `(1 − t)·x + softplus(−x)` (BCE with logits, no weights).
    BceLogits,
    /// `t·(ln t − x)` with `0·ln 0 = 0` (KL divergence, `x` log-probabilities), or with
    /// `log_target` `eᵗ·(t − x)`.
    KlDiv {
        /// Whether the target holds log-probabilities.
        log_target: bool,
    },
    /// torchvision's sigmoid focal loss (`alpha < 0` disables α).
    SigmoidFocal {
        /// Class balance, or negative for none.
        alpha: f64,
        /// Focusing parameter ≥ 0.
        gamma: f64,
    },
}

#[inline(always)]
fn sign<F: Float>(d: F) -> F {
    // Selects, not branches: on random data a branch mispredicts half the time.
    let p = if d > F::zero() { F::one() } else { F::zero() };
    let n = if d < F::zero() { F::one() } else { F::zero() };
    if d.is_nan() {
        d
    } else {
        p - n
    }
}

/// `if c { a } else { b }` with both arms already computed (a select, not a branch).
#[inline(always)]
fn select<F: Float>(c: bool, a: F, b: F) -> F {
    if c {
        a
    } else {
        b
    }
}

/// softplus(−x) = ln(1 + e⁻ˣ), stable.
#[inline(always)]
fn softplus_neg<F: Float>(x: F) -> F {
    logistic(x).2
}

/// `(σ(x), σ(−x), softplus(−x))` from one `e^{−|x|}`.
#[inline(always)]
fn logistic<F: Float>(x: F) -> (F, F, F) {
    let e = (-x.abs()).exp();
    let one = F::one();
    let big = one / (one + e);
    let small = e * big;
    let sp = (-x).max(F::zero()) + e.ln_1p();
    if x >= F::zero() {
        (big, small, sp)
    } else {
        (small, big, sp)
    }
}

impl Pointwise {
    /// The loss at `(x, t)`.
    #[inline(always)]
    pub fn value<F: Float>(self, x: F, t: F) -> F {
        let half = F::from(0.5).unwrap();
        match self {
            Pointwise::L1 => (x - t).abs(),
            Pointwise::Mse => (x - t) * (x - t),
            Pointwise::SmoothL1 { beta } => {
                let b = F::from(beta).unwrap();
                let d = x - t;
                let ad = d.abs();
                select(ad < b, d * d * (half / b), ad - half * b)
            }
            Pointwise::Huber { delta } => {
                let k = F::from(delta).unwrap();
                let d = x - t;
                let ad = d.abs();
                select(ad < k, half * d * d, k * (ad - half * k))
            }
            Pointwise::BceLogits => (F::one() - t) * x + softplus_neg(x),
            Pointwise::KlDiv { log_target: false } => {
                if t == F::zero() {
                    // xlogy(0, 0) − 0·x, as PyTorch: 0 for finite x, NaN for NaN or ±inf.
                    -(t * x)
                } else {
                    t * (t.ln() - x)
                }
            }
            Pointwise::KlDiv { log_target: true } => t.exp() * (t - x),
            Pointwise::SigmoidFocal { alpha, gamma } => {
                let (q, ce, _, _) = focal_parts(x, t);
                let mut v = ce * pow(q, gamma);
                if alpha >= 0.0 {
                    let a = F::from(alpha).unwrap();
                    v = v * (a * t + (F::one() - a) * (F::one() - t));
                }
                v
            }
        }
    }

    /// `(∂ℓ/∂x, ∂ℓ/∂t)` at `(x, t)`, with PyTorch's conventions at the kinks (0 for |d| at 0).
    #[inline(always)]
    pub fn grad<F: Float>(self, x: F, t: F) -> (F, F) {
        let gx = match self {
            Pointwise::L1 => sign(x - t),
            Pointwise::Mse => F::from(2.0).unwrap() * (x - t),
            Pointwise::SmoothL1 { beta } => {
                let b = F::from(beta).unwrap();
                let d = x - t;
                select(d.abs() < b, d * (F::one() / b), sign(d))
            }
            Pointwise::Huber { delta } => {
                let k = F::from(delta).unwrap();
                let d = x - t;
                select(d.abs() < k, d, k * sign(d))
            }
            Pointwise::BceLogits => return (logistic(x).0 - t, -x),
            // d/dt is ln t + 1 − x; at t = 0, the 0·ln 0 = 0 branch, 0 − x (as the composite path).
            Pointwise::KlDiv { log_target: false } => {
                return (-t, if t == F::zero() { -x } else { t.ln() + F::one() - x });
            }
            Pointwise::KlDiv { log_target: true } => {
                let e = t.exp();
                return (-e, e * (t - x + F::one()));
            }
            Pointwise::SigmoidFocal { alpha, gamma } => return focal_grad(x, t, alpha, gamma),
        };
        (gx, -gx)
    }
}

/// `xᵍ` with `0⁰ = 1`.
#[inline(always)]
fn pow<F: Float>(q: F, gamma: f64) -> F {
    if gamma == 2.0 {
        q * q
    } else {
        q.powf(F::from(gamma).unwrap())
    }
}

/// `(1 − p_t, BCE, σ(x), σ(−x))` of the focal loss at logit `x`, target `t`.
#[inline(always)]
fn focal_parts<F: Float>(x: F, t: F) -> (F, F, F, F) {
    let one = F::one();
    let (s, sn, sp) = logistic(x);
    let q = t * sn + (one - t) * s;
    let ce = (one - t) * x + sp;
    (q, ce, s, sn)
}

#[inline(always)]
fn focal_grad<F: Float>(x: F, t: F, alpha: f64, gamma: f64) -> (F, F) {
    let one = F::one();
    let (q, ce, s, sn) = focal_parts(x, t);
    let qg = pow(q, gamma);
    let dq_dx = (one - t - t) * s * sn;
    let dq_dt = sn - s;
    // d(q^γ) = γ·q^(γ−1)·dq. For a tiny q (saturated logits) q^(γ−1) overflows while dq (for x)
    // or ce (for t) is as tiny, so 1/q is folded into that factor: |dq/dx| / q ≤ 1 for t in
    // [0, 1]. 0 when γ = 0, and at q = 0 (where dq/dx = 0 too).
    let (fx, ft) = if gamma == 0.0 || q == F::zero() {
        (F::zero(), F::zero())
    } else {
        let g = F::from(gamma).unwrap() * qg;
        (g * (dq_dx / q) * ce, g * (ce / q) * dq_dt)
    };
    let mut gx = fx + qg * (s - t);
    let mut gt = ft + qg * (-x);
    if alpha >= 0.0 {
        let a = F::from(alpha).unwrap();
        let at = a * t + (one - a) * (one - t);
        let v = ce * qg;
        gt = gt * at + (a + a - one) * v;
        gx = gx * at;
    }
    (gx, gt)
}

pub(crate) fn slice<'a, T>(v: &'a [T], l: &Layout, arg: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("fused loss kernel: `{arg}` must be contiguous"),
    }
}

/// Runs `f` compiled for AVX2 and FMA when the CPU has them (detected at run time), so that the
/// kernels' loops vectorise 8 lanes wide on such CPUs while the binary still runs on any x86-64
/// (and on other architectures `f` runs as it is).
#[inline(always)]
pub(crate) fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected on this CPU.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// Sum of `f(i)` over `0..n` in f64, in parallel chunks above the threshold.
pub(crate) fn sum_f64(n: usize, f: impl Fn(usize) -> f64 + Sync) -> f64 {
    let chunk_sum = |lo: usize, hi: usize| {
        with_simd(|| {
            let mut acc = [0.0f64; 8];
            let mut i = lo;
            while i + 8 <= hi {
                for (k, a) in acc.iter_mut().enumerate() {
                    *a += f(i + k);
                }
                i += 8;
            }
            let mut s: f64 = acc.iter().sum();
            while i < hi {
                s += f(i);
                i += 1;
            }
            s
        })
    };
    if n >= PARALLEL_THRESHOLD {
        (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| chunk_sum(c * CHUNK, ((c + 1) * CHUNK).min(n)))
            .sum()
    } else {
        chunk_sum(0, n)
    }
}

/// Fills `out[i] = f(i)`, in parallel chunks above the threshold.
pub(crate) fn fill<T: Send>(out: &mut [T], f: impl Fn(usize) -> T + Sync) {
    if out.len() >= PARALLEL_THRESHOLD {
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| {
            with_simd(|| {
                for (k, v) in o.iter_mut().enumerate() {
                    *v = f(c * CHUNK + k);
                }
            })
        });
    } else {
        with_simd(|| {
            for (i, v) in out.iter_mut().enumerate() {
                *v = f(i);
            }
        })
    }
}

/// The forward kernel: elementwise values or the reduced scalar.
struct ForwardOp {
    f: Pointwise,
    reduction: Reduction,
    /// What the sum is divided by: the element count (`Mean`), the batch size (`BatchMean`), 1.
    divisor: f64,
}

impl ForwardOp {
    fn run<F: Float + Send + Sync>(&self, x: &[F], t: &[F], shape: &Shape) -> (Vec<F>, Shape) {
        let f = self.f;
        match self.reduction {
            Reduction::None => {
                let mut out = vec![F::zero(); x.len()];
                fill(&mut out, |i| f.value(x[i], t[i]));
                (out, shape.clone())
            }
            _ => {
                let s = sum_f64(x.len(), |i| f.value(x[i], t[i]).to_f64().unwrap_or(f64::NAN));
                (vec![F::from(s / self.divisor).unwrap()], Shape::from(()))
            }
        }
    }
}

impl CustomOp2 for ForwardOp {
    fn name(&self) -> &'static str {
        "fused-pointwise-loss"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(t)) => {
                let (v, s) = self.run(slice(x, l1, "input")?, slice(t, l2, "target")?, l1.shape());
                Ok((CpuStorage::F32(v), s))
            }
            (CpuStorage::F64(x), CpuStorage::F64(t)) => {
                let (v, s) = self.run(slice(x, l1, "input")?, slice(t, l2, "target")?, l1.shape());
                Ok((CpuStorage::F64(v), s))
            }
            _ => bail!("fused loss kernel: f32 or f64 inputs of one dtype expected"),
        }
    }

    fn bwd(&self, x: &Tensor, t: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let scale = if self.reduction == Reduction::None {
            1.0
        } else {
            1.0 / self.divisor
        };
        let grad = grad.contiguous()?;
        let gx = x.apply_op3_no_bwd(
            t,
            &grad,
            &GradOp {
                f: self.f,
                scale,
                wrt_target: false,
            },
        )?;
        let gt = if t.track_op() {
            Some(x.apply_op3_no_bwd(
                t,
                &grad,
                &GradOp {
                    f: self.f,
                    scale,
                    wrt_target: true,
                },
            )?)
        } else {
            None
        };
        Ok((Some(gx), gt))
    }
}

/// The backward kernel: `upstream · scale · ∂ℓ/∂x` (or `∂ℓ/∂t`); `upstream` is a scalar or has
/// the inputs' shape.
struct GradOp {
    f: Pointwise,
    scale: f64,
    wrt_target: bool,
}

impl GradOp {
    fn run<F: Float + Send + Sync>(&self, x: &[F], t: &[F], up: &[F]) -> Vec<F> {
        let (f, wrt_t) = (self.f, self.wrt_target);
        let pick = move |i: usize| {
            let (gx, gt) = f.grad(x[i], t[i]);
            if wrt_t {
                gt
            } else {
                gx
            }
        };
        let mut out = vec![F::zero(); x.len()];
        if up.len() == 1 && x.len() != 1 {
            let g = F::from(up[0].to_f64().unwrap_or(f64::NAN) * self.scale).unwrap();
            fill(&mut out, |i| g * pick(i));
        } else {
            let s = F::from(self.scale).unwrap();
            fill(&mut out, |i| up[i] * s * pick(i));
        }
        out
    }
}

impl CustomOp3 for GradOp {
    fn name(&self) -> &'static str {
        "fused-pointwise-loss-grad"
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
        let shape = l1.shape().clone();
        match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(t), CpuStorage::F32(g)) => Ok((
                CpuStorage::F32(self.run(slice(x, l1, "input")?, slice(t, l2, "target")?, slice(g, l3, "grad")?)),
                shape,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(t), CpuStorage::F64(g)) => Ok((
                CpuStorage::F64(self.run(slice(x, l1, "input")?, slice(t, l2, "target")?, slice(g, l3, "grad")?)),
                shape,
            )),
            _ => bail!("fused loss kernel: f32 or f64 inputs of one dtype expected"),
        }
    }
}

/// Whether a fused kernel can run for this call: CPU (and not forced composite), f32 or f64.
pub fn applies(input: &Tensor) -> bool {
    crate::ops::fused_allowed(input) && matches!(input.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
}

/// Runs the fused kernel of `f` on already-checked `input` and `target` (same shape and dtype).
/// `BatchMean` divides the sum by `input.dim(0)` (1 for a 0-d input).
pub fn pointwise(f: Pointwise, input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    let x = input.contiguous()?;
    let t = target.contiguous()?;
    let divisor = match reduction {
        Reduction::Mean => x.elem_count() as f64,
        Reduction::BatchMean if x.rank() > 0 => x.dim(0)? as f64,
        _ => 1.0,
    };
    x.apply_op2(&t, ForwardOp { f, reduction, divisor })
}
