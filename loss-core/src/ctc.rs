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
//! # The kernel
//! One CPU kernel ([`Fused1`] of the kernel layer), one rayon task a sample, the recursions in
//! f64 whatever the input dtype (f32 and f64 `log_probs` are read as they are):
//! - **The band.** Only the cells on some path from the first frame to the last are computed:
//!   `S′ − 2(Tn − t) ≤ s ≤ 2t + 1` at frame `t` (`S′ = 2L + 1`), about 70 % of the `Tn × S′`
//!   cells when `L` is near `Tn / 3`. The band holds every predecessor and successor of its
//!   cells, so α and β on it are exact; the cells outside have α = 0 or β = 0.
//! - **Extended-range numbers.** α and β are kept as `m·2ᵉ` (an f64 mantissa in `[½, 1)`, an
//!   integer-valued f64 exponent) instead of logs: a sum of three cells aligns their exponents
//!   with bit operations and adds the mantissas, a product by `y = eˡᵖ` (split once a frame and
//!   class, [`exp_parts_f64`]) multiplies them. No exp or ln a cell (log space costs two of each
//!   and a ln), so the row loops vectorise, every cell keeps f64's relative precision, and no
//!   range is lost: the cells of one frame may lie 10⁴⁰⁰⁰ apart (long, peaky inputs), where
//!   Graves' rescaled linear recursion loses the small ones.
//! - **The gradient in the forward.** When `log_probs` needs a gradient, the forward runs β
//!   backward over two rows right after α, with each frame's occupancy and gradient row (no β
//!   matrix), and keeps the unscaled gradient; the backward multiplies sample `n`'s rows by its
//!   upstream gradient `w_n` (a second backward runs the kernel again).
//!
//! # Devices
//! A chain of Candle ops per frame would be far slower than the kernel, so there is no composite
//! form: on another device (CUDA, Metal) the log-probabilities are copied to the CPU, the kernel
//! runs there, and the per-sample losses (and, in the backward, the gradient) are copied back:
//! `.backward()` works on every device, at the cost of two transfers. f16 and bf16 run through
//! f32.

use crate::check;
use crate::error::LossError;
use crate::kernel::{self, exp_parts_f64, Arg, Fused1, Real, SavedGrad};
use crate::reduction::{reduce, Reduction};
use candle_core::{DType, Device, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::Arc;

const LOSS: &str = "ctc_loss";

// ---------------------------------------------------------------------------------------------
// Extended-range numbers `m·2ᵉ`: an f64 mantissa and an integer-valued f64 exponent. α and β
// are products of up to `Tn` probabilities, far outside f64's range for long inputs; log space
// keeps the range at the cost of two exponentials and a logarithm a cell, these at the cost of
// a few multiplications, adds and bit operations (no libm call: the row loops vectorise), and
// keep the relative precision of f64 on every cell.

/// The exponent of an exact 0 (a cell without a path): far below any live exponent, so that
/// its term vanishes in [`add3`] whatever it is added to, and never summed into an overflow.
const ZERO_E: f64 = -1e300;
/// 2⁵², whose low mantissa bits hold a small integer added to it.
const TWO52: f64 = 4_503_599_627_370_496.0;

/// `2ᵏ` for an integer-valued `k`: exact on `[−1022, 1023]`, 0 below (2⁻¹⁰²² times a mantissa
/// adds nothing to a sum whose largest term is at least ½), +inf above.
#[inline(always)]
fn pow2(k: f64) -> f64 {
    // k + 1023 lands in the low bits of 2⁵² + k + 1023; shifted up, they are the exponent field.
    f64::from_bits((k.clamp(-1023.0, 1024.0) + (TWO52 + 1023.0)).to_bits() << 52)
}

/// `(m, e)` with `m` in `[½, 1)` for a positive finite normal `m` (its binary exponent moved into
/// `e`); `(0, ZERO_E)` for 0; NaN and inf as they are. The mantissas here are normal: a sum
/// whose largest term has a mantissa of at least ½, times a probability's mantissa in `[√½, √2]`.
#[inline(always)]
fn renorm(m: f64, e: f64) -> (f64, f64) {
    const MANTISSA: u64 = 0x000f_ffff_ffff_ffff;
    let bits = m.to_bits();
    let k = f64::from_bits((bits >> 52) | TWO52.to_bits()) - (TWO52 + 1022.0);
    let half = f64::from_bits((bits & MANTISSA) | 0.5f64.to_bits());
    if m == 0.0 {
        (0.0, ZERO_E)
    } else if m < f64::INFINITY {
        (half, e + k)
    } else {
        (m, e)
    }
}

/// `a + b + c`, not renormalised (the mantissa is in `[½, 3)` when a term is live).
#[inline(always)]
fn add3(a: (f64, f64), b: (f64, f64), c: (f64, f64)) -> (f64, f64) {
    // Exponents are never NaN: plain compares (no NaN handling) keep the loop short.
    let e = if a.1 > b.1 { a.1 } else { b.1 };
    let e = if e > c.1 { e } else { c.1 };
    (a.0 * pow2(a.1 - e) + b.0 * pow2(b.1 - e) + c.0 * pow2(c.1 - e), e)
}

/// `y = eˣ` as an extended number: `(0, ZERO_E)` for `−inf`, `(x, 0)` for NaN and `+inf`.
#[inline(always)]
fn prob(x: f64) -> (f64, f64) {
    let (m, k) = exp_parts_f64(x);
    if x == f64::NEG_INFINITY {
        (0.0, ZERO_E)
    } else if x.is_finite() {
        (m, k)
    } else {
        (x, 0.0)
    }
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

/// Cells left and right of a row of the extended sequence: row `[0, 0, cell 0, …, cell S′−1, 0,
/// 0]`, so that `s − 2` and `s + 2` are read without a bound check.
const PAD: usize = 2;

/// One sample's extended sequence and its band of useful cells.
struct Extended {
    /// Frames `Tn`.
    tn: usize,
    /// `S′ = 2L + 1`.
    len: usize,
    /// `l′_s`, for `s` in `0..S′`.
    ext: Vec<usize>,
    /// At row index `s + PAD`: whether α may come from `s − 2` (`l′_s` a label other than
    /// `l′_{s−2}`); false in the padding.
    skip: Vec<bool>,
}

impl Extended {
    fn new(al: &Alignment, b: usize) -> Extended {
        let labels = &al.labels[b];
        let len = 2 * labels.len() + 1;
        let ext: Vec<usize> = (0..len)
            .map(|s| if s & 1 == 0 { al.blank } else { labels[s / 2] })
            .collect();
        let mut skip = vec![false; len + 2 * PAD];
        for s in 2..len {
            skip[s + PAD] = ext[s] != al.blank && ext[s] != ext[s - 2];
        }
        Extended {
            tn: al.input_lengths[b],
            len,
            ext,
            skip,
        }
    }

    /// The row indices (`s + PAD`) of the cells `s` of frame `t` that lie on some path from the
    /// first frame to the last: `S′ − 2(Tn − t) ≤ s ≤ 2t + 1`. Every other cell has α = 0 or
    /// β = 0, and the band holds every predecessor and successor of its cells, so α and β on it
    /// are exact.
    #[inline(always)]
    fn band(&self, t: usize) -> Range<usize> {
        let lo = (self.len + 2 * t).saturating_sub(2 * self.tn);
        lo + PAD..(2 * t + 1).min(self.len - 1) + PAD + 1
    }

    /// Whether the band is not empty: `S′ ≤ 2Tn + 1` (each label takes a frame; a repeated label
    /// also needs a blank between, which the recursion finds as p = 0).
    fn feasible(&self) -> bool {
        self.tn > 0 && self.len <= 2 * self.tn + 1
    }

    /// `(ym, ye)[j] = y_t(l′_s)` on the band of frame `t`, from the frame's probabilities.
    #[inline(always)]
    fn gather(&self, t: usize, (fm, fe): (&[f64], &[f64]), (ym, ye): (&mut [f64], &mut [f64])) {
        for j in self.band(t) {
            let k = self.ext[j - PAD];
            ym[j] = fm[k];
            ye[j] = fe[k];
        }
    }
}

/// One row of extended numbers, `(mantissas, exponents)`.
type Row<'a> = (&'a [f64], &'a [f64]);

/// The cells `lo..lo + n` of a row, shifted by `d`: a slice of exactly `n` (so that the loops
/// over several of them have no bound checks and vectorise).
#[inline(always)]
fn at<'a>(row: &'a [f64], cells: &Range<usize>, d: isize) -> &'a [f64] {
    let lo = cells.start.wrapping_add_signed(d);
    &row[lo..lo + cells.len()]
}

/// `α_t(s) = (α_{t−1}(s) + α_{t−1}(s−1) + [skip] α_{t−1}(s−2))·y_t(l′_s)` over the row indices
/// `cells`. Vectorised over the row: the cells of one frame depend on the previous frame only.
#[inline(always)]
fn alpha_row(prev: Row, y: Row, skip: &[bool], (cm, ce): (&mut [f64], &mut [f64]), cells: Range<usize>) {
    let (m0, m1, m2) = (at(prev.0, &cells, 0), at(prev.0, &cells, -1), at(prev.0, &cells, -2));
    let (e0, e1, e2) = (at(prev.1, &cells, 0), at(prev.1, &cells, -1), at(prev.1, &cells, -2));
    let (ym, ye) = (at(y.0, &cells, 0), at(y.1, &cells, 0));
    let skip = &skip[cells.clone()];
    let (cm, ce) = (&mut cm[cells.clone()], &mut ce[cells.clone()]);
    for i in 0..cells.len() {
        let c = if skip[i] { (m2[i], e2[i]) } else { (0.0, ZERO_E) };
        let (m, e) = add3((m0[i], e0[i]), (m1[i], e1[i]), c);
        (cm[i], ce[i]) = renorm(m * ym[i], e + ye[i]);
    }
}

/// β's step, the mirror of [`alpha_row`], fused with the occupancy: `B = β_{t+1}(s) +
/// β_{t+1}(s+1) + [skip(s+2)] β_{t+1}(s+2)`, `β_t(s) = B·y_t(l′_s)`, and `γ[j] = α_t(s)·B / p =
/// α_t(s)β_t(s) / (p·y_t(l′_s))` (an f64, at most 1) with `1/p = inv.0·2^−inv.1`.
#[inline(always)]
fn beta_row(
    next: Row,
    y: Row,
    alpha: Row,
    inv: (f64, f64),
    skip: &[bool],
    (cm, ce, gamma): (&mut [f64], &mut [f64], &mut [f64]),
    cells: Range<usize>,
) {
    let (m0, m1, m2) = (at(next.0, &cells, 0), at(next.0, &cells, 1), at(next.0, &cells, 2));
    let (e0, e1, e2) = (at(next.1, &cells, 0), at(next.1, &cells, 1), at(next.1, &cells, 2));
    let (ym, ye) = (at(y.0, &cells, 0), at(y.1, &cells, 0));
    let (am, ae) = (at(alpha.0, &cells, 0), at(alpha.1, &cells, 0));
    let skip = &skip[cells.start + 2..cells.end + 2];
    let (cm, ce, gamma) = (
        &mut cm[cells.clone()],
        &mut ce[cells.clone()],
        &mut gamma[cells.clone()],
    );
    for i in 0..cells.len() {
        let c = if skip[i] { (m2[i], e2[i]) } else { (0.0, ZERO_E) };
        let (m, e) = add3((m0[i], e0[i]), (m1[i], e1[i]), c);
        gamma[i] = am[i] * m * inv.0 * pow2(ae[i] + e - inv.1);
        (cm[i], ce[i]) = renorm(m * ym[i], e + ye[i]);
    }
}

/// Sample `b` of `lp` (`[T, N, C]`, row-major): its loss `−ln p`, and with `rows` (its `T` rows
/// of the `[T, N, C]` gradient, frame by frame) the gradient of the loss in PyTorch's convention
/// (module docs), unscaled: `exp(lp) − Σ γ` for frames before `Tn`, 0 after and for an infinite
/// loss, NaN for a NaN loss.
///
/// The frames' probabilities and α are kept (`[Tn, C]` and `[Tn, S′ + 4]`, extended numbers);
/// β runs backward in two rows, each frame's occupancy and gradient row right after its β row.
#[inline(always)]
fn sample<F: Real>(al: &Alignment, b: usize, lp: &[F], rows: Option<Vec<&mut [MaybeUninit<F>]>>) -> f64 {
    let x = Extended::new(al, b);
    let (n, c, tn) = (al.n, al.c, x.tn);
    if !x.feasible() {
        // No frames (loss 0 for an empty target) or too few for the target: no gradient.
        for row in rows.into_iter().flatten() {
            row.fill(MaybeUninit::new(F::zero()));
        }
        return if tn == 0 && x.len == 1 { 0.0 } else { f64::INFINITY };
    }
    // y_t(k) = exp(lp[t, b, k]) of every frame and class.
    let (mut fm, mut fe) = (vec![0.0; tn * c], vec![0.0; tn * c]);
    for t in 0..tn {
        let frame = &lp[(t * n + b) * c..(t * n + b + 1) * c];
        for ((m, e), &v) in fm[t * c..(t + 1) * c]
            .iter_mut()
            .zip(&mut fe[t * c..(t + 1) * c])
            .zip(frame)
        {
            (*m, *e) = prob(v.f64());
        }
    }
    let probs = |t: usize| (&fm[t * c..(t + 1) * c], &fe[t * c..(t + 1) * c]);
    let w = x.len + 2 * PAD;
    let (mut am, mut ae) = (vec![0.0; tn * w], vec![ZERO_E; tn * w]);
    x.gather(0, probs(0), (&mut am[..w], &mut ae[..w]));
    let (mut ym, mut ye) = (vec![0.0; w], vec![ZERO_E; w]);
    for t in 1..tn {
        x.gather(t, probs(t), (&mut ym, &mut ye));
        let (done_m, cur_m) = am.split_at_mut(t * w);
        let (done_e, cur_e) = ae.split_at_mut(t * w);
        let prev = (&done_m[(t - 1) * w..], &done_e[(t - 1) * w..]);
        alpha_row(prev, (&ym, &ye), &x.skip, (&mut cur_m[..w], &mut cur_e[..w]), x.band(t));
    }
    let last = (tn - 1) * w + x.len - 1 + PAD;
    let (pm, pe) = add3((am[last], ae[last]), (am[last - 1], ae[last - 1]), (0.0, ZERO_E));
    let nll = -(pm.ln() + pe * std::f64::consts::LN_2);
    let Some(mut rows) = rows else {
        return nll;
    };
    for row in rows[tn..].iter_mut() {
        row.fill(MaybeUninit::new(F::zero()));
    }
    if !nll.is_finite() {
        // No alignment (inf): no gradient; a NaN input: NaN.
        let v = if nll.is_nan() { F::nan() } else { F::zero() };
        for row in rows[..tn].iter_mut() {
            row.fill(MaybeUninit::new(v));
        }
        return nll;
    }
    let inv = (1.0 / pm, pe);
    // A β_{Tn} of 1 on the last cell and no skips make B of frame Tn − 1 one on the last two
    // cells (the two ends of a path) and 0 elsewhere.
    let (mut nm, mut ne) = (vec![0.0; w], vec![ZERO_E; w]);
    (nm[x.len - 1 + PAD], ne[x.len - 1 + PAD]) = (1.0, 0.0);
    let no_skip = vec![false; w];
    let (mut bm, mut be) = (vec![0.0; w], vec![ZERO_E; w]);
    let mut gamma = vec![0.0; w];
    let mut occ = vec![0.0; c];
    for t in (0..tn).rev() {
        x.gather(t, probs(t), (&mut ym, &mut ye));
        let alpha = (&am[t * w..(t + 1) * w], &ae[t * w..(t + 1) * w]);
        let skip = if t == tn - 1 { &no_skip } else { &x.skip };
        beta_row(
            (&nm, &ne),
            (&ym, &ye),
            alpha,
            inv,
            skip,
            (&mut bm, &mut be, &mut gamma),
            x.band(t),
        );
        std::mem::swap(&mut bm, &mut nm);
        std::mem::swap(&mut be, &mut ne);
        // Σ_{s: l′_s = k} γ(s): the blanks (even s, every other cell) in two registers, the
        // labels added where they belong.
        occ.fill(0.0);
        let cells = x.band(t);
        let first = |parity: usize| cells.start + ((cells.start - PAD) & 1 != parity) as usize;
        let mut blanks = [0.0; 2];
        for (i, j) in (first(0)..cells.end).step_by(2).enumerate() {
            blanks[i & 1] += gamma[j];
        }
        occ[al.blank] = blanks[0] + blanks[1];
        for j in (first(1)..cells.end).step_by(2) {
            occ[x.ext[j - PAD]] += gamma[j];
        }
        let (pm, pe) = probs(t);
        for (((g, &m), &e), &o) in rows[t].iter_mut().zip(pm).zip(pe).zip(&occ) {
            g.write(F::of(m * pow2(e) - o));
        }
    }
    nll
}

/// The CPU kernel ([`Fused1`]): per-sample losses `[N]` forward, and with `want_grad` the
/// gradient of each sample's loss (unscaled), kept for the backward, which scales sample `n`'s
/// rows by its upstream gradient.
struct CtcKernel {
    al: Arc<Alignment>,
    want_grad: bool,
    saved: Arc<SavedGrad>,
}

impl Fused1 for CtcKernel {
    fn name(&self) -> &'static str {
        LOSS
    }

    fn forward<F: Real>(&self, x: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        let lp = x.elems::<F>()?;
        let lp: &[F] = &lp;
        let al = &*self.al;
        let (t_max, n, c) = (al.t_max, al.n, al.c);
        let run = |b: usize, rows: Option<Vec<&mut [MaybeUninit<F>]>>| {
            kernel::with_simd(
                #[inline(always)]
                || sample(al, b, lp, rows),
            )
        };
        let losses: Vec<f64> = if self.want_grad {
            // Sample n's rows of the [T, N, C] gradient are rows t·N + n.
            let mut grad = Vec::with_capacity(t_max * n * c);
            let mut per: Vec<Vec<&mut [MaybeUninit<F>]>> = (0..n).map(|_| Vec::with_capacity(t_max)).collect();
            for (i, row) in grad.spare_capacity_mut()[..t_max * n * c]
                .chunks_mut(c.max(1))
                .enumerate()
            {
                per[i % n].push(row);
            }
            let losses = per
                .into_par_iter()
                .enumerate()
                .map(|(b, rows)| run(b, Some(rows)))
                .collect();
            // SAFETY: each sample wrote all of its T rows, and the samples' rows cover the buffer.
            unsafe { grad.set_len(t_max * n * c) };
            self.saved.keep(Some(F::to_cpu_storage_owned(grad)));
            losses
        } else {
            (0..n).into_par_iter().map(|b| run(b, None)).collect()
        };
        Ok((losses.into_iter().map(F::of).collect(), Shape::from(n)))
    }

    fn backward(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let upstream = grad.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let n = self.al.n;
        let scale = |row: usize| upstream[row % n];
        if let Some(g) = self.saved.take_scaled_groups(x, self.al.c, scale)? {
            return Ok(Some(g));
        }
        // A second backward through the same graph: the kernel again, with the gradient.
        let again = CtcKernel {
            al: self.al.clone(),
            want_grad: true,
            saved: Arc::new(SavedGrad::default()),
        };
        let saved = again.saved.clone();
        kernel::apply1_no_bwd(again, x)?;
        saved.take_scaled_groups(x, self.al.c, scale)
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
    let dtype = log_probs.dtype();
    let op = CtcKernel {
        al: Arc::new(al),
        want_grad: log_probs.track_op(),
        saved: Arc::new(SavedGrad::default()),
    };
    // The kernel reads f32 or f64 on the CPU (f16 and bf16 go through f32; other devices copy).
    let wide = if matches!(dtype, DType::F32 | DType::F64) {
        dtype
    } else {
        DType::F32
    };
    let mut losses = kernel::apply1(op, &log_probs.to_device(&Device::Cpu)?.to_dtype(wide)?)?
        .to_dtype(dtype)?
        .to_device(&device)?;
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
