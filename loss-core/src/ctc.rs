//! Connectionist temporal classification (CTC) loss: Graves et al., "Connectionist Temporal
//! Classification: Labelling Unsegmented Sequence Data with Recurrent Neural Networks", ICML 2006;
//! `torch.nn.functional.ctc_loss`.
//!
//! For each sample `n`, the negative log-likelihood `−ln p(l | x)` of its target label sequence
//! `l` (length `L`) under the per-frame distributions `log_probs[:input_lengths[n], n, :]`,
//! summed over every alignment: the forward-backward recursions over the extended sequence
//! `l' = (blank, l₁, blank, l₂, …, l_L, blank)` of length `2L + 1`, in log space:
//!
//! ```text
//! α₀(0) = y₀(blank), α₀(1) = y₀(l₁)
//! α_t(s) = (α_{t−1}(s) ⊕ α_{t−1}(s−1) ⊕ [l'_s ≠ blank, l'_s ≠ l'_{s−2}] α_{t−1}(s−2)) ⊗ y_t(l'_s)
//! ln p = α_{T−1}(2L) ⊕ α_{T−1}(2L − 1)
//! ```
//!
//! (`⊕` is log-sum-exp, `⊗` addition, `y_t(k) = log_probs[t, n, k]`), and β the same backwards.
//!
//! # The gradient convention
//! The gradient w.r.t. `log_probs` is PyTorch's, which is **not** the plain derivative: for
//! `t < input_lengths[n]`,
//! `∂/∂lp[t, n, c] = w_n·(exp(lp[t, n, c]) − Σ_{s: l'_s = c} α_t(s)β_t(s) / (p_n·y_t(c)))`,
//! and 0 for later frames, where `w_n` is the upstream gradient of the sample's loss (1 for
//! `Sum`, `1/(N·max(L_n, 1))` for `Mean`, 0 for a loss zeroed by `zero_infinity`). The added
//! `exp(lp)` sums to 1 over `c`, so the backward of a `log_softmax` in front cancels it: composed
//! with `log_softmax`, the result is the true gradient w.r.t. the logits (which is what
//! PyTorch's CTC training gets). Where a sample's loss is infinite (no alignment exists), its
//! gradient is 0.
//!
//! # Devices
//! The recursion runs as one CPU kernel (a Candle `CustomOp1`, parallel over the batch with
//! rayon, computed in f64 for f32 inputs too); a chain of Candle ops per frame would be far
//! slower. On another device (CUDA, Metal) the log-probabilities are copied to the CPU, the
//! kernel runs there, and the per-sample losses (and, in the backward, the gradient) are copied
//! back: `.backward()` works on every device, at the cost of two transfers.

use crate::check;
use crate::error::LossError;
use crate::reduction::{reduce, Reduction};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const LOSS: &str = "ctc_loss";

#[inline]
fn lse2(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    if m == f64::NEG_INFINITY {
        // Both -inf, or one NaN (f64::max skips NaN): the sum keeps the NaN.
        return a + b;
    }
    // One exp: the larger term's is 1 (`a − b` is NaN for a NaN, or for inf and inf, as before).
    m + (-(a - b).abs()).exp().ln_1p()
}

#[inline]
fn lse3(a: f64, b: f64, c: f64) -> f64 {
    let m = a.max(b).max(c);
    if m == f64::NEG_INFINITY {
        return a + b + c;
    }
    m + ((a - m).exp() + (b - m).exp() + (c - m).exp()).ln()
}

/// The targets and lengths of one call, validated, on the host.
#[derive(Debug, Clone)]
struct Alignment {
    t_max: usize,
    n: usize,
    c: usize,
    blank: usize,
    input_lengths: Vec<usize>,
    /// Each sample's labels.
    labels: Vec<Vec<usize>>,
}

impl Alignment {
    /// `l'_s` of sample `b`.
    #[inline]
    fn ext(&self, b: usize, s: usize) -> usize {
        if s & 1 == 0 {
            self.blank
        } else {
            self.labels[b][s / 2]
        }
    }

    /// `(α, nll)` of sample `b` from its frames `lp[t·stride + c]`; α is `[Tn, 2L + 1]`.
    fn alpha(&self, b: usize, lp: &impl Fn(usize, usize) -> f64) -> (Vec<f64>, f64) {
        let tn = self.input_lengths[b];
        let l = self.labels[b].len();
        let s_len = 2 * l + 1;
        if tn == 0 {
            return (Vec::new(), if l == 0 { 0.0 } else { f64::INFINITY });
        }
        let mut a = vec![f64::NEG_INFINITY; tn * s_len];
        a[0] = lp(0, self.blank);
        if s_len > 1 {
            a[1] = lp(0, self.ext(b, 1));
        }
        for t in 1..tn {
            let (prev, cur) = a.split_at_mut(t * s_len);
            let prev = &prev[(t - 1) * s_len..];
            for s in 0..s_len {
                let k = self.ext(b, s);
                let mut v = prev[s];
                if s >= 1 {
                    let skip = s >= 2 && k != self.blank && k != self.ext(b, s - 2);
                    v = if skip {
                        lse3(v, prev[s - 1], prev[s - 2])
                    } else {
                        lse2(v, prev[s - 1])
                    };
                }
                cur[s] = if v == f64::NEG_INFINITY { v } else { v + lp(t, k) };
            }
        }
        let last = &a[(tn - 1) * s_len..];
        let ll = if s_len > 1 {
            lse2(last[s_len - 1], last[s_len - 2])
        } else {
            last[0]
        };
        (a, -ll)
    }

    /// The gradient `[Tn, C]` of sample `b`'s loss w.r.t. its frames, times `gr` (PyTorch's
    /// convention, see the module docs); all zeros where the loss is infinite or `gr = 0`.
    fn grad(&self, b: usize, lp: &impl Fn(usize, usize) -> f64, gr: f64, kept: Option<&(Vec<f64>, f64)>) -> Vec<f64> {
        let tn = self.input_lengths[b];
        let c = self.c;
        let mut g = vec![0.0; tn * c];
        if tn == 0 || gr == 0.0 {
            return g;
        }
        let computed;
        let (a, nll) = match kept {
            Some((a, nll)) => (a, *nll),
            None => {
                computed = self.alpha(b, lp);
                (&computed.0, computed.1)
            }
        };
        if !nll.is_finite() {
            // No alignment (inf), or NaN input: NaN propagates, inf gets no gradient.
            if nll.is_nan() {
                g.iter_mut().for_each(|v| *v = f64::NAN);
            }
            return g;
        }
        let l = self.labels[b].len();
        let s_len = 2 * l + 1;
        let mut beta = vec![f64::NEG_INFINITY; tn * s_len];
        let t = tn - 1;
        beta[t * s_len + s_len - 1] = lp(t, self.blank);
        if s_len > 1 {
            beta[t * s_len + s_len - 2] = lp(t, self.ext(b, s_len - 2));
        }
        for t in (0..tn - 1).rev() {
            let (cur, next) = beta.split_at_mut((t + 1) * s_len);
            let cur = &mut cur[t * s_len..];
            for s in 0..s_len {
                let k = self.ext(b, s);
                let mut v = next[s];
                if s + 1 < s_len {
                    let skip = s + 2 < s_len && k != self.blank && self.ext(b, s + 2) != k;
                    v = if skip {
                        lse3(v, next[s + 1], next[s + 2])
                    } else {
                        lse2(v, next[s + 1])
                    };
                }
                cur[s] = if v == f64::NEG_INFINITY { v } else { v + lp(t, k) };
            }
        }
        // The occupancy `Σ_{s: l'_s = k} α_t(s)β_t(s) / (p·y_t(k))`, summed term by term (each
        // term is at most 1: one exp a term, no log-sum-exp).
        let mut occ = vec![0.0; c];
        for t in 0..tn {
            occ.iter_mut().for_each(|v| *v = 0.0);
            for s in 0..s_len {
                let k = self.ext(b, s);
                let ab = a[t * s_len + s] + beta[t * s_len + s];
                if ab != f64::NEG_INFINITY {
                    occ[k] += (ab + nll - lp(t, k)).exp();
                }
            }
            for (k, &o) in occ.iter().enumerate() {
                g[t * c + k] = (lp(t, k).exp() - o) * gr;
            }
        }
        g
    }
}

/// Row-major f64 copy of a float CPU storage.
fn host_f64(s: &CpuStorage, l: &Layout) -> Result<Vec<f64>> {
    let v = crate::ops::map_unary(s, l, |x| x, LOSS)?;
    Ok(match v {
        CpuStorage::F64(v) => v,
        CpuStorage::F32(v) => v.into_iter().map(f64::from).collect(),
        CpuStorage::F16(v) => v.into_iter().map(|x| x.to_f64()).collect(),
        CpuStorage::BF16(v) => v.into_iter().map(|x| x.to_f64()).collect(),
        other => candle_core::bail!("{LOSS}: expected float log_probs, got {:?}", other.dtype()),
    })
}

/// The CPU kernel: per-sample losses `[N]` forward, PyTorch's gradient backward.
struct CtcOp {
    al: std::sync::Arc<Alignment>,
    /// Each sample's `(α, loss)` from the forward, for the backward (which reads the same
    /// `log_probs`): the α recursion runs once.
    alphas: std::sync::OnceLock<Vec<(Vec<f64>, f64)>>,
}

impl CtcOp {
    fn frame<'a>(&'a self, lp: &'a [f64], b: usize) -> impl Fn(usize, usize) -> f64 + 'a {
        let (n, c) = (self.al.n, self.al.c);
        move |t, k| lp[(t * n + b) * c + k]
    }
}

impl CustomOp1 for CtcOp {
    fn name(&self) -> &'static str {
        "ctc_loss"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let lp = host_f64(s, l)?;
        let alphas: Vec<(Vec<f64>, f64)> = (0..self.al.n)
            .into_par_iter()
            .map(|b| self.al.alpha(b, &self.frame(&lp, b)))
            .collect();
        let losses: Vec<f64> = alphas.iter().map(|a| a.1).collect();
        // A second forward of the same op (none in practice) keeps the first α.
        let _ = self.alphas.set(alphas);
        let out = match s.dtype() {
            DType::F64 => CpuStorage::F64(losses),
            DType::F32 => CpuStorage::F32(losses.into_iter().map(|v| v as f32).collect()),
            DType::F16 => CpuStorage::F16(losses.into_iter().map(half::f16::from_f64).collect()),
            DType::BF16 => CpuStorage::BF16(losses.into_iter().map(half::bf16::from_f64).collect()),
            other => candle_core::bail!("{LOSS}: expected float log_probs, got {other:?}"),
        };
        Ok((out, Shape::from(self.al.n)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let al = &self.al;
        let lp = arg
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let gr = grad_res
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        let per: Vec<Vec<f64>> = (0..al.n)
            .into_par_iter()
            .map(|b| al.grad(b, &self.frame(&lp, b), gr[b], self.alphas.get().map(|a| &a[b])))
            .collect();
        let mut g = vec![0.0; al.t_max * al.n * al.c];
        for (b, gb) in per.iter().enumerate() {
            for t in 0..al.input_lengths[b] {
                let dst = (t * al.n + b) * al.c;
                g[dst..dst + al.c].copy_from_slice(&gb[t * al.c..(t + 1) * al.c]);
            }
        }
        let g = Tensor::from_vec(g, (al.t_max, al.n, al.c), &Device::Cpu)?
            .to_dtype(arg.dtype())?
            .to_device(arg.device())?;
        Ok(Some(g))
    }
}

fn lengths(arg: &'static str, t: &Tensor, n: usize) -> Result<Vec<i64>> {
    check::index(LOSS, arg, t)?;
    if t.dims() != [n] {
        return Err(check::bad_shape(
            LOSS,
            arg,
            t,
            &format!("[{n}] (one length per sample)"),
        ));
    }
    t.to_dtype(DType::I64)?.to_vec1::<i64>()
}

fn bad(message: String) -> candle_core::Error {
    LossError::BadOptions { loss: LOSS, message }.into()
}

/// CTC loss (Graves et al. 2006; `torch.nn.functional.ctc_loss`): per sample
/// `−ln p(target_n | log_probs[:input_lengths[n], n, :])`, summed over every alignment of the
/// target to the frames (blanks between and around the labels, repeats merged).
///
/// - `log_probs` `[T, N, C]`: per-frame log-probabilities (a `log_softmax` output), f32 or f64.
/// - `targets` (i64 or u32): padded `[N, S]` with `S ≥ max target length` (entries past
///   `target_lengths[n]` are ignored, whatever their value), or 1-D concatenated, of length
///   exactly `Σ target_lengths`. Labels lie in `[0, C)`.
/// - `input_lengths` `[N]` (i64 or u32) in `[0, T]`; `target_lengths` `[N]` (i64 or u32), `≥ 0`.
/// - `blank` (default 0) in `[0, C)`.
/// - `reduction`: `None` gives the `[N]` losses; `Sum` their sum; `Mean` (default) the mean over
///   `n` of `loss_n / max(target_lengths[n], 1)`.
/// - `zero_infinity`: a target that cannot be aligned (the input is shorter than the target plus
///   its adjacent repeats) has an infinite loss; with `zero_infinity` it is 0, and so is its
///   gradient.
///
/// Gradient: w.r.t. `log_probs` only, in PyTorch's convention (module docs of [`crate::ctc`]).
/// The kernel runs on the CPU; other devices copy to the CPU and back.
///
/// # Errors
/// `log_probs` not a rank-3 float tensor; lengths or targets of a float dtype or the wrong shape;
/// an input length outside `[0, T]`, a negative target length, padded targets narrower than the
/// longest target, concatenated targets whose length is not the sum of the target lengths; a
/// label outside `[0, C)`; `blank` outside `[0, C)`; `Reduction::BatchMean`.
#[allow(clippy::too_many_arguments)]
pub fn ctc_loss(
    log_probs: &Tensor,
    targets: &Tensor,
    input_lengths: &Tensor,
    target_lengths: &Tensor,
    blank: usize,
    zero_infinity: bool,
    reduction: Reduction,
) -> Result<Tensor> {
    check::float(LOSS, "log_probs", log_probs)?;
    let (t_max, n, c) = match log_probs.dims() {
        &[t, n, c] => (t, n, c),
        _ => return Err(check::bad_shape(LOSS, "log_probs", log_probs, "[T, N, C]")),
    };
    check::index(LOSS, "targets", targets)?;
    reduction.standard(LOSS)?;
    if blank >= c {
        return Err(bad(format!(
            "`blank` = {blank} is outside [0, {c}) (log_probs shape {:?})",
            log_probs.dims()
        )));
    }
    let il = lengths("input_lengths", input_lengths, n)?;
    let tl = lengths("target_lengths", target_lengths, n)?;
    if let Some(&bad_len) = il.iter().find(|&&v| v < 0 || v as u64 > t_max as u64) {
        return Err(bad(format!(
            "`input_lengths` holds {bad_len}, outside [0, {t_max}] (T of log_probs {:?})",
            log_probs.dims()
        )));
    }
    if let Some(&bad_len) = tl.iter().find(|&&v| v < 0) {
        return Err(bad(format!("`target_lengths` holds {bad_len}, a negative length")));
    }
    let tv = targets.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?;
    let mut labels = Vec::with_capacity(n);
    match targets.rank() {
        2 => {
            let (rows, s) = targets.dims2()?;
            let longest = tl.iter().copied().max().unwrap_or(0) as usize;
            if rows != n || s < longest {
                return Err(check::bad_shape(
                    LOSS,
                    "targets",
                    targets,
                    &format!("[{n}, S] with S >= {longest} (the longest target), or 1-D concatenated"),
                ));
            }
            for (b, &len) in tl.iter().enumerate() {
                labels.push(tv[b * s..b * s + len as usize].to_vec());
            }
        }
        1 => {
            let total: i64 = tl.iter().sum();
            if tv.len() as i64 != total {
                return Err(check::bad_shape(
                    LOSS,
                    "targets",
                    targets,
                    &format!("[{total}] (concatenated: the sum of target_lengths), or padded [{n}, S]"),
                ));
            }
            let mut off = 0usize;
            for &len in &tl {
                labels.push(tv[off..off + len as usize].to_vec());
                off += len as usize;
            }
        }
        _ => {
            return Err(check::bad_shape(
                LOSS,
                "targets",
                targets,
                "padded [N, S] or concatenated 1-D",
            ));
        }
    }
    let labels: Vec<Vec<usize>> = labels
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|k| {
                    if k < 0 || k as u64 >= c as u64 {
                        Err(LossError::IndexOutOfRange {
                            loss: LOSS,
                            arg: "targets",
                            index: k,
                            classes: c,
                            shape: targets.shape().clone(),
                        }
                        .into())
                    } else {
                        Ok(k as usize)
                    }
                })
                .collect::<Result<Vec<usize>>>()
        })
        .collect::<Result<_>>()?;
    let al = Alignment {
        t_max,
        n,
        c,
        blank,
        input_lengths: il.iter().map(|&v| v as usize).collect(),
        labels,
    };
    let device = log_probs.device().clone();
    let op = CtcOp {
        al: std::sync::Arc::new(al),
        alphas: std::sync::OnceLock::new(),
    };
    let mut losses = if device.is_cpu() {
        log_probs.apply_op1(op)?
    } else {
        log_probs.to_device(&Device::Cpu)?.apply_op1(op)?.to_device(&device)?
    };
    if zero_infinity {
        losses = losses.eq(f64::INFINITY)?.where_cond(&losses.zeros_like()?, &losses)?;
    }
    match reduction {
        Reduction::Mean => {
            let inv: Vec<f64> = tl.iter().map(|&l| 1.0 / l.max(1) as f64).collect();
            let inv = Tensor::from_vec(inv, n, &device)?.to_dtype(log_probs.dtype())?;
            reduce(LOSS, &losses.mul(&inv)?, Reduction::Mean)
        }
        r => reduce(LOSS, &losses, r),
    }
}

crate::loss_config! {
    /// [`ctc_loss`] as a value (`torch.nn.CTCLoss`): four inputs, so it has
    /// [`CtcLoss::forward4`] instead of [`crate::Loss`] (see the crate docs, "Losses of three or
    /// four inputs").
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct CtcLoss {
        /// The blank class.
        blank: usize = 0,
        /// Whether an infinite loss (no alignment) becomes 0.
        zero_infinity: bool = false,
        /// Reduction (`Mean`: per-sample loss over its target length, then the mean).
        reduction: Reduction = Reduction::Mean,
    }
}

impl CtcLoss {
    /// The loss of one batch ([`ctc_loss`]).
    ///
    /// # Errors
    /// As [`ctc_loss`].
    pub fn forward4(
        &self,
        log_probs: &Tensor,
        targets: &Tensor,
        input_lengths: &Tensor,
        target_lengths: &Tensor,
    ) -> Result<Tensor> {
        ctc_loss(
            log_probs,
            targets,
            input_lengths,
            target_lengths,
            self.blank,
            self.zero_infinity,
            self.reduction,
        )
    }
}
