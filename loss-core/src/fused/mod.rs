//! Fused CPU kernels for the pointwise losses: one pass forward, one pass backward.
//!
//! A pointwise loss `ℓ(x, t)` (L1, MSE, Smooth L1, Huber, BCE with logits, sigmoid focal) runs on
//! the CPU as one `CustomOp2` whose forward reads `input` and `target` once and writes either the
//! elementwise loss (`Reduction::None`) or directly the reduced scalar (partial sums in f64, so a
//! mean over 1e7 f32 values keeps f32's precision), and whose backward writes the analytic
//! gradient `upstream · ∂ℓ/∂x` in one pass (and `∂ℓ/∂t` only when the target needs a gradient).
//! Nothing but the inputs is kept for the backward. Large inputs are split over rayon's threads
//! (from [`Split::ELEMENTS`]`.parallel_from` elements); small ones pay no thread overhead.
//!
//! The composite path (plain Candle ops, autodiff) of each loss runs on every other device and
//! under [`Path::Composite`](crate::kernel::Path); tests hold the two equal. Written with the
//! kernel layer ([`crate::kernel`]).

use crate::kernel::{self, logistic, select, Elementwise, Real};
use crate::reduction::Reduction;
use candle_core::{Result, Tensor};

mod embedding;
mod gaussian;
mod items;
mod margin;
mod softmax;
pub use embedding::{cosine_embedding, triplet_margin_euclidean};
pub use gaussian::gaussian_nll;
pub use margin::{margin_ranking, multi_margin, multilabel_soft_margin};
pub use softmax::{cross_entropy_rows, CrossEntropyRows};

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
    /// `ln cosh(x − t)`, as `|d| + softplus(−2|d|) − ln 2` (log-cosh loss).
    LogCosh,
    /// `softplus(−t·x)` (soft margin loss, `t` = ±1).
    SoftMargin,
    /// `x·[t ≠ −1] + max(0, margin − x)·[t ≠ 1]` (hinge embedding loss, PyTorch's masks).
    HingeEmbedding {
        /// The margin.
        margin: f64,
    },
    /// `eˣ − t·x` (Poisson NLL with `log_input`, without Stirling's term).
    PoissonLogInput,
}

/// `sign(d)` with 0 at 0 and at NaN: PyTorch's `sign`, the gradient of `|d|` (so `l1_loss`
/// has a zero gradient at a NaN difference, as `torch.nn.functional.l1_loss`).
#[inline(always)]
fn sign0<F: Real>(d: F) -> F {
    // Selects, not branches: on random data a branch mispredicts half the time.
    let p = if d > F::zero() { F::one() } else { F::zero() };
    let n = if d < F::zero() { F::one() } else { F::zero() };
    p - n
}

/// `sign(d)` with 0 at 0 and NaN at NaN: the outer branch of Smooth L1 and Huber, whose
/// PyTorch gradient at a NaN difference is NaN.
#[inline(always)]
fn sign<F: Real>(d: F) -> F {
    if d.is_nan() {
        d
    } else {
        sign0(d)
    }
}

/// softplus(−x) = ln(1 + e⁻ˣ), stable.
#[inline(always)]
fn softplus_neg<F: Real>(x: F) -> F {
    logistic(x).2
}

impl Pointwise {
    /// The loss at `(x, t)`.
    #[inline(always)]
    pub(crate) fn value<F: Real>(self, x: F, t: F) -> F {
        let half = F::of(0.5);
        match self {
            Pointwise::L1 => (x - t).abs(),
            Pointwise::Mse => (x - t) * (x - t),
            Pointwise::SmoothL1 { beta } => {
                let b = F::of(beta);
                let d = x - t;
                let ad = d.abs();
                select(ad < b, d * d * (half / b), ad - half * b)
            }
            Pointwise::Huber { delta } => {
                let k = F::of(delta);
                let d = x - t;
                let ad = d.abs();
                select(ad < k, half * d * d, k * (ad - half * k))
            }
            Pointwise::BceLogits => (F::one() - t) * x + softplus_neg(x),
            Pointwise::KlDiv { log_target: false } => {
                if t == F::zero() {
                    // Zero mass is zero, whatever the log-probability, -inf (a masked logit)
                    // included; NaN stays NaN (PyTorch's 0·x gives NaN at ±inf too).
                    zero_mass(x)
                } else {
                    t * (t.fast_ln() - x)
                }
            }
            Pointwise::KlDiv { log_target: true } => {
                // A log-target of -inf is zero mass: 0, not e^-inf·(-inf − x) = NaN.
                select(t == F::neg_infinity(), zero_mass(x), t.fast_exp() * (t - x))
            }
            Pointwise::SigmoidFocal { alpha, gamma } => {
                let (q, ce, _, _) = focal_parts(x, t);
                let mut v = ce * pow(q, gamma);
                if alpha >= 0.0 {
                    let a = F::of(alpha);
                    v *= a * t + (F::one() - a) * (F::one() - t);
                }
                v
            }
            Pointwise::LogCosh => {
                let ad = (x - t).abs();
                ad + softplus_neg(ad + ad) - F::of(std::f64::consts::LN_2)
            }
            Pointwise::SoftMargin => softplus_neg(t * x),
            Pointwise::HingeEmbedding { margin } => {
                let m = F::of(margin);
                let z = F::zero();
                select(t != -F::one(), x, z) + select(t != F::one(), relu(m - x), z)
            }
            Pointwise::PoissonLogInput => x.fast_exp() - t * x,
        }
    }

    /// `(∂ℓ/∂x, ∂ℓ/∂t)` at `(x, t)`, with PyTorch's conventions at the kinks (0 for |d| at 0).
    #[inline(always)]
    pub(crate) fn grad<F: Real>(self, x: F, t: F) -> (F, F) {
        let gx = match self {
            Pointwise::L1 => sign0(x - t),
            Pointwise::Mse => F::of(2.0) * (x - t),
            Pointwise::SmoothL1 { beta } => {
                let b = F::of(beta);
                let d = x - t;
                select(d.abs() < b, d * (F::one() / b), sign(d))
            }
            Pointwise::Huber { delta } => {
                let k = F::of(delta);
                let d = x - t;
                select(d.abs() < k, d, k * sign(d))
            }
            Pointwise::BceLogits => return (logistic(x).0 - t, -x),
            // d/dt is ln t + 1 − x; at t = 0, the 0·ln 0 = 0 branch, 0 − x (as the composite path).
            Pointwise::KlDiv { log_target: false } => {
                return (-t, if t == F::zero() { -x } else { t.fast_ln() + F::one() - x });
            }
            Pointwise::KlDiv { log_target: true } => {
                let e = t.fast_exp();
                let gt = select(t == F::neg_infinity(), F::zero(), e * (t - x + F::one()));
                return (-e, gt);
            }
            Pointwise::SigmoidFocal { alpha, gamma } => return focal_grad(x, t, alpha, gamma),
            Pointwise::LogCosh => {
                // tanh(d) = sign(d)·(1 − e)/(1 + e), e = e^{−2|d|}; NaN stays NaN.
                let d = x - t;
                let e = (-(d.abs() + d.abs())).fast_exp();
                let th = (F::one() - e) / (F::one() + e);
                select(d.is_nan(), d, sign0(d) * th)
            }
            Pointwise::SoftMargin => {
                // d/dz softplus(−z) = −σ(−z) at z = t·x.
                let s = logistic(t * x).1;
                return (-t * s, -x * s);
            }
            Pointwise::HingeEmbedding { margin } => {
                let m = F::of(margin);
                let (one, z) = (F::one(), F::zero());
                // relu'(0) = 0, as PyTorch's clamp; NaN stays NaN.
                let pos = select(t != -one, one, z);
                let neg = select(t != one && m - x > z, one, z);
                let g = pos - neg;
                return (select(x.is_nan(), x, g), z);
            }
            Pointwise::PoissonLogInput => return (x.fast_exp() - t, -x),
        };
        (gx, -gx)
    }
}

/// `max(z, 0)` that keeps NaN (Rust's `max` would drop it).
#[inline(always)]
fn relu<F: Real>(z: F) -> F {
    select(z > F::zero(), z, select(z.is_nan(), z, F::zero()))
}

/// The term of an element whose target mass is exactly 0: 0 whatever `x` is (±inf included),
/// NaN for a NaN `x`.
#[inline(always)]
fn zero_mass<F: Real>(x: F) -> F {
    if x.is_nan() {
        x
    } else {
        F::zero()
    }
}

/// `xᵍ` with `0⁰ = 1`.
#[inline(always)]
fn pow<F: Real>(q: F, gamma: f64) -> F {
    if gamma == 2.0 {
        q * q
    } else {
        q.powf(F::of(gamma))
    }
}

/// `(1 − p_t, BCE, σ(x), σ(−x))` of the focal loss at logit `x`, target `t`.
#[inline(always)]
fn focal_parts<F: Real>(x: F, t: F) -> (F, F, F, F) {
    let one = F::one();
    let (s, sn, sp) = logistic(x);
    let q = t * sn + (one - t) * s;
    let ce = (one - t) * x + sp;
    (q, ce, s, sn)
}

#[inline(always)]
fn focal_grad<F: Real>(x: F, t: F, alpha: f64, gamma: f64) -> (F, F) {
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
        let g = F::of(gamma) * qg;
        (g * (dq_dx / q) * ce, g * (ce / q) * dq_dt)
    };
    let mut gx = fx + qg * (s - t);
    let mut gt = ft + qg * (-x);
    if alpha >= 0.0 {
        let a = F::of(alpha);
        let at = a * t + (one - a) * (one - t);
        let v = ce * qg;
        gt = gt * at + (a + a - one) * v;
        gx *= at;
    }
    (gx, gt)
}

/// One type per pointwise loss, with its parameters fixed at compile time where they select code
/// (`FocalGamma2K`), so that each loop of [`kernel::elementwise`] is compiled for one loss (no
/// `match` per element) and vectorises.
macro_rules! kernels {
    ($($name:ident($($field:ident),*) => $pw:expr;)*) => {
        $(
            #[derive(Clone, Copy)]
            struct $name($(kernels!(@f64 $field)),*);
            impl $name {
                #[inline(always)]
                fn get(self) -> Pointwise {
                    let $name($($field),*) = self;
                    $pw
                }
            }
            impl Elementwise for $name {
                #[inline(always)]
                fn value<F: Real>(self, x: F, t: F) -> F {
                    self.get().value(x, t)
                }
                #[inline(always)]
                fn grad<F: Real, const WRT_T: bool>(self, x: F, t: F) -> F {
                    let (gx, gt) = self.get().grad(x, t);
                    if WRT_T {
                        gt
                    } else {
                        gx
                    }
                }
            }
        )*
    };
    (@f64 $field:ident) => { f64 };
}

kernels! {
    L1K() => Pointwise::L1;
    MseK() => Pointwise::Mse;
    SmoothL1K(beta) => Pointwise::SmoothL1 { beta };
    HuberK(delta) => Pointwise::Huber { delta };
    BceLogitsK() => Pointwise::BceLogits;
    KlDivK() => Pointwise::KlDiv { log_target: false };
    KlDivLogK() => Pointwise::KlDiv { log_target: true };
    FocalGamma2K(alpha) => Pointwise::SigmoidFocal { alpha, gamma: 2.0 };
    FocalK(alpha, gamma) => Pointwise::SigmoidFocal { alpha, gamma };
    LogCoshK() => Pointwise::LogCosh;
    SoftMarginK() => Pointwise::SoftMargin;
    HingeEmbeddingK(margin) => Pointwise::HingeEmbedding { margin };
    PoissonLogInputK() => Pointwise::PoissonLogInput;
}

/// Evaluates `$body` with `$k` bound to the kernel type of `$f`.
macro_rules! with_kernel {
    ($f:expr, |$k:ident| $body:expr) => {
        match $f {
            Pointwise::L1 => {
                let $k = L1K();
                $body
            }
            Pointwise::Mse => {
                let $k = MseK();
                $body
            }
            Pointwise::SmoothL1 { beta } => {
                let $k = SmoothL1K(beta);
                $body
            }
            Pointwise::Huber { delta } => {
                let $k = HuberK(delta);
                $body
            }
            Pointwise::BceLogits => {
                let $k = BceLogitsK();
                $body
            }
            Pointwise::KlDiv { log_target: false } => {
                let $k = KlDivK();
                $body
            }
            Pointwise::KlDiv { log_target: true } => {
                let $k = KlDivLogK();
                $body
            }
            Pointwise::SigmoidFocal { alpha, gamma } if gamma == 2.0 => {
                let $k = FocalGamma2K(alpha);
                $body
            }
            Pointwise::SigmoidFocal { alpha, gamma } => {
                let $k = FocalK(alpha, gamma);
                $body
            }
            Pointwise::LogCosh => {
                let $k = LogCoshK();
                $body
            }
            Pointwise::SoftMargin => {
                let $k = SoftMarginK();
                $body
            }
            Pointwise::HingeEmbedding { margin } => {
                let $k = HingeEmbeddingK(margin);
                $body
            }
            Pointwise::PoissonLogInput => {
                let $k = PoissonLogInputK();
                $body
            }
        }
    };
}

/// Runs the fused kernel of `f` on already-checked `input` and `target` (same shape and dtype).
/// `BatchMean` divides the sum by `input.dim(0)` (1 for a 0-d input).
pub fn pointwise(f: Pointwise, input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    with_kernel!(f, |k| kernel::elementwise(k, input, target, reduction))
}
