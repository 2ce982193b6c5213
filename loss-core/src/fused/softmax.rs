//! Fused CPU kernel of cross-entropy over the rows of `[N, C]` logits with class-index targets.
//!
//! Per row: one pass for the maximum `m`, one for `s = Σ_c exp(x_c − m)` (the row stays in
//! cache), `lse = m + ln s`, then
//! `ℓᵢ = (1 − ε)·(−w_y·(x_y − lse)) + (ε/C)·(−Σ_c w_c·(x_c − lse))`, reduced in f64. The gradient
//! is `g·∂ℓᵢ/∂x_c = g·[(1 − ε)·w_y + (ε/C)·W]·p_c − g·(ε/C)·w_c − g·(1 − ε)·w_y·[c = y]` with
//! `p = softmax(x)` and `W = Σ_c w_c`: the exponentials of the sum pass are written to the
//! gradient row and scaled in place (no second `exp`).
//!
//! A reduced loss whose logits need a gradient writes that gradient in its forward pass and keeps
//! it for the backward, which then only scales it by the upstream gradient (not at all for the
//! usual 1); otherwise (`Reduction::None`, or a second backward through the same graph) the
//! backward runs the same row kernel. Nothing else is kept.

use crate::kernel::{
    self, assume_init, row_exp_sum, row_exp_sum_into, row_max, Arg, Fused2, Fused3, Grads2, Real, SavedGrad, Split,
};
use crate::reduction::Reduction;
use candle_core::{bail, CpuStorage, Layout, Result, Shape, Tensor};
use std::mem::MaybeUninit;

/// The options of one fused cross-entropy call (already validated).
#[derive(Debug, Clone)]
pub struct CrossEntropyRows {
    /// Per-class weights (`None`: all 1).
    pub weight: Option<Vec<f64>>,
    /// Target value to skip.
    pub ignore_index: i64,
    /// Label smoothing ε in `[0, 1]`.
    pub label_smoothing: f64,
    /// `None`, `Mean` or `Sum`.
    pub reduction: Reduction,
}

/// The class indices of a target tensor (i64, u32 or u8) as i64.
pub(super) fn targets(s: &CpuStorage, l: &Layout) -> Result<Vec<i64>> {
    let y = Arg { storage: s, layout: l };
    Ok(match s {
        CpuStorage::I64(_) => y.contiguous::<i64>("target")?.to_vec(),
        CpuStorage::U32(_) => y.contiguous::<u32>("target")?.iter().map(|&x| x as i64).collect(),
        CpuStorage::U8(_) => y.contiguous::<u8>("target")?.iter().map(|&x| x as i64).collect(),
        _ => bail!("fused cross_entropy: class-index targets expected"),
    })
}

/// The upstream factor of each row's gradient: one for all rows, or one per row.
#[derive(Clone, Copy)]
enum Up<'a, F> {
    Scalar(f64),
    Rows(&'a [F], f64),
}

impl<F: Real> Up<'_, F> {
    #[inline(always)]
    fn at(self, i: usize) -> f64 {
        match self {
            Up::Scalar(g) => g,
            Up::Rows(u, s) => u[i].f64() * s,
        }
    }
}

/// One chunk of rows: its first row, and its parts of the gradient and per-row loss outputs.
type Task<'a, F> = (
    usize,
    Option<&'a mut [MaybeUninit<F>]>,
    Option<&'a mut [MaybeUninit<F>]>,
);

impl CrossEntropyRows {
    fn w(&self, c: usize) -> f64 {
        self.weight.as_ref().map_or(1.0, |w| w[c])
    }

    fn total_weight(&self, classes: usize) -> f64 {
        self.weight.as_ref().map_or(classes as f64, |w| w.iter().sum())
    }

    /// The denominator of the mean: `Σ_{kept} w_y`.
    fn denominator(&self, y: &[i64]) -> f64 {
        y.iter()
            .filter(|&&v| v != self.ignore_index)
            .map(|&v| self.w(v as usize))
            .sum()
    }

    /// `ℓᵢ` of a kept row from its `lse`.
    #[inline(always)]
    fn row_loss<F: Real>(&self, row: &[F], y: usize, lse: f64) -> f64 {
        let eps = self.label_smoothing;
        let nll = -self.w(y) * (row[y].f64() - lse);
        if eps == 0.0 {
            return nll;
        }
        let c = row.len();
        let wx: f64 = row.iter().enumerate().map(|(k, &v)| self.w(k) * v.f64()).sum();
        let smooth = -(wx - self.total_weight(c) * lse);
        (1.0 - eps) * nll + eps / c as f64 * smooth
    }

    /// The loss of one row (0 if ignored) and, with `grad = Some((g, out))`, `g·∂ℓᵢ/∂x` written
    /// to every element of `out` (zeros for an ignored row).
    #[inline(always)]
    fn row<F: Real>(&self, row: &[F], y: i64, grad: Option<(f64, &mut [MaybeUninit<F>])>) -> f64 {
        if y == self.ignore_index {
            if let Some((_, out)) = grad {
                for o in out {
                    o.write(F::zero());
                }
            }
            return 0.0;
        }
        let yi = y as usize;
        let m = row_max(row);
        let shift = if m.is_finite() { m } else { F::zero() };
        let Some((g, out)) = grad else {
            let lse = shift + row_exp_sum(row, shift).fast_ln();
            return self.row_loss(row, yi, lse.f64());
        };
        let s = row_exp_sum_into(row, shift, out);
        // SAFETY: `row_exp_sum_into` wrote every element of `out`.
        let out = unsafe { assume_init(out) };
        let lse = shift + s.fast_ln();
        let c = row.len();
        let eps = self.label_smoothing;
        let wy = self.w(yi);
        let a = g * ((1.0 - eps) * wy + eps / c as f64 * self.total_weight(c));
        let b = g * eps / c as f64;
        if g == 0.0 {
            out.iter_mut().for_each(|o| *o = F::zero());
        } else if m.is_finite() {
            // p_c = e_c / s, the exponentials already in `out`.
            let a = F::of(a) / s;
            match &self.weight {
                None => {
                    let b = F::of(b);
                    out.iter_mut().for_each(|o| *o = a * *o - b);
                }
                Some(w) => {
                    for (o, &wc) in out.iter_mut().zip(w) {
                        *o = a * *o - F::of(b * wc);
                    }
                }
            }
        } else {
            // A row with ±inf: p_c = exp(x_c − lse), NaN where x_c is the infinity (as PyTorch).
            let a = F::of(a);
            for (k, (o, &v)) in out.iter_mut().zip(row).enumerate() {
                *o = a * (v - lse).fast_exp() - F::of(b * self.w(k));
            }
        }
        out[yi] -= F::of(g * (1.0 - eps) * wy);
        self.row_loss(row, yi, lse.f64())
    }

    /// The rows of one [`Task`]: the sum of their losses; writes each row's loss and gradient
    /// where the task has those outputs.
    #[inline(always)]
    fn task<F: Real>(&self, x: &[F], y: &[i64], c: usize, rows: usize, up: Up<F>, task: Task<F>) -> f64 {
        let (r0, mut grad, mut losses) = task;
        let mut sum = 0.0;
        for i in r0..(r0 + rows).min(y.len()) {
            let k = i - r0;
            let g = grad.as_deref_mut().map(|g| (up.at(i), &mut g[k * c..(k + 1) * c]));
            let v = self.row(&x[i * c..(i + 1) * c], y[i], g);
            if let Some(l) = losses.as_deref_mut() {
                l[k].write(F::of(v));
            }
            sum += v;
        }
        sum
    }

    /// [`Self::task`] compiled for AVX2 + FMA when the CPU has them.
    fn task_simd<F: Real>(&self, x: &[F], y: &[i64], c: usize, rows: usize, up: Up<F>, task: Task<F>) -> f64 {
        // `kernel::with_simd` written out as a generic function: through the closure the row
        // loops ran 2.7 times slower (measured with `trainer bench --only cross_entropy`).
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2<F: Real>(
                o: &CrossEntropyRows,
                x: &[F],
                y: &[i64],
                c: usize,
                rows: usize,
                up: Up<F>,
                task: Task<F>,
            ) -> f64 {
                o.task(x, y, c, rows, up, task)
            }
            if kernel::has_avx2_fma() {
                // SAFETY: the features were just detected on this CPU.
                return unsafe { avx2(self, x, y, c, rows, up, task) };
            }
        }
        self.task(x, y, c, rows, up, task)
    }

    /// Runs every row, in parallel chunks of whole rows above the threshold: the sum of the
    /// losses, the `[N, C]` gradient (`up` per row) if `want_grad`, the `[N]` losses if
    /// `want_losses`.
    fn rows<F: Real>(
        &self,
        x: &[F],
        y: &[i64],
        c: usize,
        up: Up<F>,
        want_grad: bool,
        want_losses: bool,
    ) -> (f64, Option<Vec<F>>, Option<Vec<F>>) {
        let n = y.len();
        let parallel = Split::ELEMENTS.parallel(n * c);
        let per = if parallel {
            (Split::ELEMENTS.chunk / c.max(1)).max(1)
        } else {
            n.max(1)
        };
        let mut grad: Option<Vec<F>> = want_grad.then(|| Vec::with_capacity(n * c));
        let mut losses: Option<Vec<F>> = want_losses.then(|| Vec::with_capacity(n));
        let sum = {
            let mut gi = grad
                .as_mut()
                .map(|g| g.spare_capacity_mut()[..n * c].chunks_mut((per * c).max(1)));
            let mut li = losses.as_mut().map(|l| l.spare_capacity_mut()[..n].chunks_mut(per));
            let tasks: Vec<Task<F>> = (0..n.div_ceil(per))
                .map(|k| {
                    (
                        k * per,
                        gi.as_mut().and_then(|i| i.next()),
                        li.as_mut().and_then(|i| i.next()),
                    )
                })
                .collect();
            let run = |t: Task<F>| self.task_simd(x, y, c, per, up, t);
            kernel::run_tasks(parallel, tasks, run).iter().sum()
        };
        // SAFETY: the tasks cover rows 0..n; `row` writes all c gradient elements of each row
        // and `task` each row's loss, so the first n·c (n) elements are initialised.
        unsafe {
            if let Some(g) = grad.as_mut() {
                g.set_len(n * c);
            }
            if let Some(l) = losses.as_mut() {
                l.set_len(n);
            }
        }
        (sum, grad, losses)
    }

    /// The factor of the mean: `1 / Σ w_y`, or 1 for a sum or a zero denominator (whose mean is
    /// NaN: its gradient is that of the sum, as the composite path's `reduce_weighted_mean`,
    /// never `0 · inf = NaN`).
    fn grad_scale(&self, y: &[i64]) -> f64 {
        let den = self.denominator(y);
        if self.reduction == Reduction::Mean && den != 0.0 {
            1.0 / den
        } else {
            1.0
        }
    }
}

struct ForwardOp {
    o: CrossEntropyRows,
    /// Whether the forward also writes the gradient (a reduced loss of logits that need one).
    save_grad: bool,
    saved: SavedGrad,
}

impl ForwardOp {
    fn run<F: Real>(&self, x: &[F], y: &[i64], n: usize, c: usize) -> (Vec<F>, Shape, Option<Vec<F>>) {
        let o = &self.o;
        if o.reduction == Reduction::None {
            let (_, _, losses) = o.rows(x, y, c, Up::Scalar(0.0), false, true);
            return (losses.unwrap_or_default(), Shape::from(n), None);
        }
        let (s, grad, _) = o.rows(x, y, c, Up::Scalar(o.grad_scale(y)), self.save_grad, false);
        // A zero denominator gives NaN (0/0 as PyTorch), also when label smoothing made the sum
        // non-zero (PyTorch adds the NaN of its NLL term).
        let v = match o.reduction {
            Reduction::Mean => {
                let den = o.denominator(y);
                if den == 0.0 {
                    f64::NAN
                } else {
                    s / den
                }
            }
            _ => s,
        };
        (vec![F::of(v)], Shape::from(()), grad)
    }
}

impl Fused2 for ForwardOp {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn forward<F: Real>(&self, x: Arg<'_>, y: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        let (n, c) = x.layout.shape().dims2()?;
        let y = targets(y.storage, y.layout)?;
        let (v, s, g) = self.run(x.contiguous::<F>("input")?, &y, n, c);
        self.saved.keep(g.map(F::to_cpu_storage_owned));
        Ok((v, s))
    }

    fn backward(&self, x: &Tensor, y: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Grads2> {
        let g = self
            .saved
            .take_or_recompute(x, grad, |up| kernel::apply3_no_bwd(GradOp(self.o.clone()), x, y, up))?;
        Ok((Some(g), None))
    }
}

struct GradOp(CrossEntropyRows);

impl GradOp {
    fn run<F: Real>(&self, x: &[F], y: &[i64], up: &[F], c: usize) -> Vec<F> {
        let o = &self.0;
        let scale = o.grad_scale(y);
        let up = if o.reduction == Reduction::None {
            Up::Rows(up, scale)
        } else {
            Up::Scalar(up[0].f64() * scale)
        };
        o.rows(x, y, c, up, true, false).1.unwrap_or_default()
    }
}

impl Fused3 for GradOp {
    fn name(&self) -> &'static str {
        "fused-cross-entropy-grad"
    }

    fn forward<F: Real>(&self, x: Arg<'_>, y: Arg<'_>, g: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        let (_, c) = x.layout.shape().dims2()?;
        let y = targets(y.storage, y.layout)?;
        let v = self.run(x.contiguous::<F>("input")?, &y, g.contiguous::<F>("grad")?, c);
        Ok((v, x.layout.shape().clone()))
    }
}

/// Runs the fused cross-entropy on already-validated `[N, C]` logits and `[N]` class indices
/// (every index in `[0, C)` or equal to `ignore_index`). Output `[N]` or 0-d.
pub fn cross_entropy_rows(input: &Tensor, target: &Tensor, opts: CrossEntropyRows) -> Result<Tensor> {
    let x = input.contiguous()?;
    let op = ForwardOp {
        save_grad: opts.reduction != Reduction::None && x.track_op(),
        o: opts,
        saved: SavedGrad::default(),
    };
    kernel::apply2(op, &x, &target.contiguous()?)
}
