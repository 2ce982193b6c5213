//! The fused Lovász hinge of [`crate::lovasz::lovasz_hinge_loss`]: per group of pixels (an image
//! with `per_image`, else the whole batch; groups in parallel) the hinge errors
//! `e = 1 − x·s` of the non-ignored pixels, a stable radix sort of their bits in decreasing order (ties
//! in pixel order, as the composite form's sort), the Lovász gradient `g_k = J_k − J_{k−1}` of the
//! Jaccard from the running counts of the sorted labels, the value `Σ relu(e_(k))·g_k` and, kept
//! for the backward, the gradient `−s·g_k·scale` of each pixel with `e > 0` (or NaN: it reaches
//! the value), 0 elsewhere (`relu'(0) = 0`, ignored pixels).

use candle_core::{bail, Result, Shape, Tensor};
use loss_core::kernel::{self, Arg, Fused2, Grads2, Real, SavedGrad, Split};

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

/// The error of a [`descending_key`] (its inverse).
#[inline(always)]
fn error_of<F: Real>(key: u64) -> F {
    if std::mem::size_of::<F>() == 4 {
        let ascending = !(key as u32);
        let b = if ascending >> 31 == 1 {
            ascending & !(1 << 31)
        } else {
            !ascending
        };
        F::of(f64::from(f32::from_bits(b)))
    } else {
        let ascending = !key;
        let b = if ascending >> 63 == 1 {
            ascending & !(1 << 63)
        } else {
            !ascending
        };
        F::of(f64::from_bits(b))
    }
}

/// Bits a radix digit.
const DIGIT: u32 = 11;

/// Sorts `items` (key of `bits` bits, pixel) by key, stably (LSD radix sort, [`DIGIT`] bits a
/// pass; a pass whose digit is the same for every key is skipped).
fn radix_sort<T: SortItem>(items: &mut Vec<T>, bits: u32) {
    let passes = bits.div_ceil(DIGIT) as usize;
    let mask = (1u64 << DIGIT) - 1;
    let mut counts = vec![[0u32; 1 << DIGIT]; passes];
    for k in items.iter().map(|it| it.key()) {
        for (d, c) in counts.iter_mut().enumerate() {
            c[((k >> (DIGIT as usize * d)) & mask) as usize] += 1;
        }
    }
    let n = items.len();
    let mut tmp = vec![T::new(0, 0); n];
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
            let digit = ((it.key() >> (DIGIT as usize * d)) & mask) as usize;
            tmp[start[digit]] = it;
            start[digit] += 1;
        }
        std::mem::swap(items, &mut tmp);
    }
}

/// An item of the sort: a key and a pixel field, packed in one `u64` for 32-bit keys.
trait SortItem: Copy + Send {
    /// The item of `key` and `field`.
    fn new(key: u64, field: u32) -> Self;
    /// Its key.
    fn key(self) -> u64;
    /// Its pixel field.
    fn field(self) -> u32;
}

/// A 32-bit key above the field.
impl SortItem for u64 {
    #[inline(always)]
    fn new(key: u64, field: u32) -> Self {
        key << 32 | u64::from(field)
    }
    #[inline(always)]
    fn key(self) -> u64 {
        self >> 32
    }
    #[inline(always)]
    fn field(self) -> u32 {
        self as u32
    }
}

/// A 64-bit key and the field.
impl SortItem for (u64, u32) {
    #[inline(always)]
    fn new(key: u64, field: u32) -> Self {
        (key, field)
    }
    #[inline(always)]
    fn key(self) -> u64 {
        self.0
    }
    #[inline(always)]
    fn field(self) -> u32 {
        self.1
    }
}

/// The flag of a positive pixel in a sort item's pixel field.
const POSITIVE: u32 = 1 << 31;

/// One group: the value `Σ relu(e_(k))·g_k` (before `scale`), the gradient `−s·g_k·scale`
/// written into `grad` (zero on entry). `Err` on a label other than 0, 1 or `ignore`, or a
/// group of 2³¹ pixels or more.
fn group<F: Real>(x: &[F], y: &[F], ignore: Option<F>, scale: f64, grad: &mut [F]) -> Result<f64> {
    if std::mem::size_of::<F>() == 4 {
        group_of::<F, u64>(x, y, ignore, scale, grad)
    } else {
        group_of::<F, (u64, u32)>(x, y, ignore, scale, grad)
    }
}

/// [`group`] with sort items `T`.
fn group_of<F: Real, T: SortItem>(x: &[F], y: &[F], ignore: Option<F>, scale: f64, grad: &mut [F]) -> Result<f64> {
    if x.len() >= POSITIVE as usize {
        bail!("lovasz_hinge_loss: the fused kernel takes groups of fewer than 2^31 pixels");
    }
    let mut items: Vec<T> = Vec::with_capacity(x.len());
    let (mut positives, mut bad) = (0usize, false);
    for (i, (&xi, &yi)) in x.iter().zip(y).enumerate() {
        if Some(yi) == ignore {
            continue;
        }
        let pos = yi == F::one();
        bad |= !pos && yi != F::zero();
        positives += usize::from(pos);
        let (e, flag) = if pos {
            (F::one() - xi, POSITIVE)
        } else {
            (F::one() + xi, 0)
        };
        items.push(T::new(descending_key(e), i as u32 | flag));
    }
    if bad {
        bail!("lovasz_hinge_loss: a label is not 0, 1 or ignore_index");
    }
    radix_sort(&mut items, 8 * std::mem::size_of::<F>() as u32);
    let gts = positives as f64;
    let (mut fg, mut bg, mut prev, mut value) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (key, field) in items.iter().map(|it| (it.key(), it.field())) {
        let (i, pos) = ((field & !POSITIVE) as usize, field & POSITIVE != 0);
        if pos {
            fg += 1.0;
        } else {
            bg += 1.0;
        }
        let jaccard = 1.0 - (gts - fg) / (gts + bg);
        let g = jaccard - prev;
        prev = jaccard;
        let e = error_of::<F>(key);
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
        let per = total.checked_div(groups).unwrap_or(0);
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

    fn backward(&self, x: &Tensor, y: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Grads2> {
        let g = self.grad.take_or_recompute(x, grad, |_| {
            // A second backward through the same graph: run the forward again for its gradient.
            let again = LovaszHingeOp {
                per_image: self.per_image,
                ignore: self.ignore,
                grad: SavedGrad::default(),
            };
            let _ = kernel::apply2_no_bwd(&again, x, y)?;
            again
                .grad
                .take_scaled(x, grad)?
                .ok_or_else(|| candle_core::Error::Msg("lovasz_hinge_loss: the forward kept no gradient".into()))
        })?;
        Ok((Some(g), None))
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
