//! The fused Lovász hinge of [`crate::lovasz::lovasz_hinge_loss`]: per group of pixels (an image
//! with `per_image`, else the whole batch; groups in parallel) the hinge errors
//! `e = 1 − x·s` of the non-ignored pixels, a stable radix sort of their bits in decreasing order (ties
//! in pixel order, as the composite form's sort), the Lovász gradient `g_k = J_k − J_{k−1}` of the
//! Jaccard from the running counts of the sorted labels, the value `Σ relu(e_(k))·g_k` and, kept
//! for the backward, the gradient `−s·g_k·scale` of each pixel with `e > 0` (or NaN: it reaches
//! the value), 0 elsewhere (`relu'(0) = 0`, ignored pixels).

use candle_core::{bail, Result, Shape, Tensor};
use loss_core::kernel::{self, Arg, Fused2, Real, SavedGrad, Split};

/// `logits × labels → 0-d`: the Lovász hinge loss; labels in the logits' dtype, 0, 1 or `ignore`.
pub(crate) struct LovaszHingeOp {
    /// One group a leading index (image) and the mean over them, else one group of all pixels.
    pub per_image: bool,
    /// The ignored label, if any.
    pub ignore: Option<f64>,
    /// The gradient w.r.t. the logits (for an upstream gradient of 1), written by the forward.
    pub grad: SavedGrad,
}

/// One group a task, groups in parallel from two on.
const GROUPS: Split = Split {
    chunk: 1,
    parallel_from: 2,
    whole_below: false,
};

/// A key whose unsigned order is the decreasing [`f64::total_cmp`] order of `e` (of `F`'s bits:
/// 32 for f32, 64 for f64).
#[inline(always)]
fn descending_key<F: Real>(e: F) -> u64 {
    if std::mem::size_of::<F>() == 4 {
        let b = (e.f64() as f32).to_bits();
        let ascending = if b >> 31 == 1 { !b } else { b | (1 << 31) };
        u64::from(!ascending)
    } else {
        let b = e.f64().to_bits();
        let ascending = if b >> 63 == 1 { !b } else { b | (1 << 63) };
        !ascending
    }
}

/// Bits a radix digit.
const DIGIT: u32 = 11;

/// Sorts `items` (key of `bits` bits, pixel) by key, stably (LSD radix sort, [`DIGIT`] bits a
/// pass; a pass whose digit is the same for every key is skipped).
fn radix_sort(items: &mut Vec<(u64, u32)>, bits: u32) {
    let passes = bits.div_ceil(DIGIT) as usize;
    let mask = (1u64 << DIGIT) - 1;
    let mut counts = vec![[0u32; 1 << DIGIT]; passes];
    for &(k, _) in items.iter() {
        for (d, c) in counts.iter_mut().enumerate() {
            c[((k >> (DIGIT as usize * d)) & mask) as usize] += 1;
        }
    }
    let n = items.len();
    let mut tmp = vec![(0u64, 0u32); n];
    for (d, c) in counts.iter().enumerate() {
        if c.iter().any(|&m| m as usize == n) {
            continue;
        }
        let mut start = [0usize; 1 << DIGIT];
        let mut sum = 0;
        for (s, &m) in start.iter_mut().zip(c.iter()) {
            *s = sum;
            sum += m as usize;
        }
        for &it in items.iter() {
            let digit = ((it.0 >> (DIGIT as usize * d)) & mask) as usize;
            tmp[start[digit]] = it;
            start[digit] += 1;
        }
        std::mem::swap(items, &mut tmp);
    }
}

/// The flag of a positive pixel in a sort item's pixel field.
const POSITIVE: u32 = 1 << 31;

/// One group: the value `Σ relu(e_(k))·g_k` (before `scale`), the gradient `−s·g_k·scale`
/// written into `grad` (zero on entry). `Err` on a label other than 0, 1 or `ignore`, or a
/// group of 2³¹ pixels or more.
fn group<F: Real>(x: &[F], y: &[F], ignore: Option<F>, scale: f64, grad: &mut [F]) -> Result<f64> {
    if x.len() >= POSITIVE as usize {
        bail!("lovasz_hinge_loss: the fused kernel takes groups of fewer than 2^31 pixels");
    }
    let mut items = Vec::with_capacity(x.len());
    let mut positives = 0usize;
    for (i, (&xi, &yi)) in x.iter().zip(y).enumerate() {
        if Some(yi) == ignore {
            continue;
        }
        let (e, flag) = if yi == F::one() {
            positives += 1;
            (F::one() - xi, POSITIVE)
        } else if yi == F::zero() {
            (F::one() + xi, 0)
        } else {
            bail!("lovasz_hinge_loss: a label is not 0, 1 or ignore_index");
        };
        items.push((descending_key(e), i as u32 | flag));
    }
    radix_sort(&mut items, 8 * std::mem::size_of::<F>() as u32);
    let gts = positives as f64;
    let (mut fg, mut bg, mut prev, mut value) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for &(_, field) in &items {
        let (i, pos) = ((field & !POSITIVE) as usize, field & POSITIVE != 0);
        if pos {
            fg += 1.0;
        } else {
            bg += 1.0;
        }
        let jaccard = 1.0 - (gts - fg) / (gts + bg);
        let g = jaccard - prev;
        prev = jaccard;
        let e = if pos { F::one() - x[i] } else { F::one() + x[i] };
        if e > F::zero() || e.is_nan() {
            value += e.f64() * g;
            let w = F::of(g * scale);
            grad[i] = if pos { -w } else { w };
        }
    }
    Ok(value)
}

impl Fused2 for LovaszHingeOp {
    fn name(&self) -> &'static str {
        "lovasz-hinge"
    }

    fn forward<F: Real>(&self, x: Arg<'_>, y: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        if x.dims() != y.dims() || x.dims().is_empty() {
            bail!("lovasz_hinge_loss: logits {:?} and labels {:?}", x.dims(), y.dims());
        }
        let (xs, ys) = (x.contiguous::<F>("logits")?, y.contiguous::<F>("labels")?);
        let total = xs.len();
        let groups = if self.per_image { x.dims()[0] } else { 1 };
        let per = if groups == 0 { 0 } else { total / groups };
        let scale = 1.0 / groups.max(1) as f64;
        let ignore = self
            .ignore
            .map(F::of)
            .filter(|&i| i.f64() == self.ignore.unwrap_or(f64::NAN));
        let mut grad = vec![F::zero(); total];
        let values = kernel::for_each_chunk(GROUPS, groups, per, [&mut grad[..]], |r, [part]| {
            group(
                &xs[r.start * per..r.end * per],
                &ys[r.start * per..r.end * per],
                ignore,
                scale,
                part,
            )
        });
        let mut sum = 0.0;
        for v in values {
            sum += v?;
        }
        self.grad.keep(Some(F::to_cpu_storage_owned(grad)));
        Ok((vec![F::of(sum * scale)], Shape::from(())))
    }

    fn backward(
        &self,
        x: &Tensor,
        y: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        if let Some(g) = self.grad.take_scaled(x, grad)? {
            return Ok((Some(g), None));
        }
        // A second backward through the same graph: run the forward again for its gradient.
        let again = LovaszHingeOp {
            per_image: self.per_image,
            ignore: self.ignore,
            grad: SavedGrad::default(),
        };
        let _ = kernel::apply2_no_bwd(&again, x, y)?;
        Ok((again.grad.take_scaled(x, grad)?, None))
    }
}

impl Fused2 for &LovaszHingeOp {
    fn name(&self) -> &'static str {
        (*self).name()
    }

    fn forward<F: Real>(&self, x: Arg<'_>, y: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        (*self).forward(x, y)
    }
}
