//! CPU helpers of the box simulation, on loss-core's kernel layer: the float trait the scalar
//! kernels are written over, fixed-size chunking over cases on rayon's pool, zero-copy access to a CPU tensor, and the
//! differentiable `(x, y, w, h) → (x1, y1, x2, y2)` conversion (a `CustomOp1` on the CPU, plain
//! Candle ops elsewhere).

use candle_core::{bail, Result, Shape, Storage, Tensor, WithDType, D};
use loss_core::kernel::{self, Arg, Fused1, Split};
use std::ops::Range;

/// f32 or f64: what the scalar kernels are generic over (the workspace's one float trait).
pub use loss_core::kernel::Real;

/// The larger of two values (the second when they compare equal or one is NaN).
#[inline]
pub fn maxr<T: Real>(a: T, b: T) -> T {
    if a > b {
        a
    } else {
        b
    }
}

/// The smaller of two values (the second when they compare equal or one is NaN).
#[inline]
pub fn minr<T: Real>(a: T, b: T) -> T {
    if a < b {
        a
    } else {
        b
    }
}

/// Cases per chunk. Partial sums are kept per chunk and added in chunk order, so results do
/// not depend on the number of threads.
pub const CHUNK: usize = 4096;

/// The split of the box kernels: [`CHUNK`] cases a task (also on the calling thread), in
/// parallel above `4 · CHUNK` cases.
const SPLIT: Split = Split {
    chunk: CHUNK,
    parallel_from: 4 * CHUNK + 1,
    whole_below: false,
};

/// Runs `f(cases, out)` over the fixed chunks of `0..n` (`out` is the chunk's slice of `out`,
/// `per_case` values a case) on rayon's pool for large inputs (on the calling thread for small
/// ones), and returns the results in chunk order.
pub fn par_chunks<T: Send, R: Send>(
    n: usize,
    out: &mut [T],
    per_case: usize,
    f: impl Fn(Range<usize>, &mut [T]) -> R + Sync + Send,
) -> Vec<R> {
    kernel::for_each_chunk(SPLIT, n, per_case, [out], |cases, [o]| f(cases, o))
}

/// Calls `f` with the contiguous CPU data of `t` (made contiguous first if needed).
///
/// # Errors
/// `t` not on the CPU or not of dtype `T`.
pub fn with_cpu_slice<T: WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        bail!("boxes: expected a CPU tensor");
    };
    let data = cpu.as_slice::<T>()?;
    let Some((a, b)) = layout.contiguous_offsets() else {
        bail!("boxes: expected a contiguous tensor");
    };
    Ok(f(&data[a..b]))
}

/// Applies `f` to the `[N, 4]` rows of `x` (row-major order, strided layouts gathered first), on
/// a few threads for large inputs.
fn map_rows_of<T: Real>(x: Arg<'_>, f: fn(&[T; 4]) -> [T; 4]) -> Result<Vec<T>> {
    let src = x.elems::<T>()?;
    let n = src.len() / 4;
    let mut out = vec![T::zero(); 4 * n];
    par_chunks(n, &mut out, 4, |cases, o| {
        let rows = src[4 * cases.start..4 * cases.end].chunks_exact(4);
        for (dst, r) in o.chunks_exact_mut(4).zip(rows) {
            dst.copy_from_slice(&f(&[r[0], r[1], r[2], r[3]]));
        }
    });
    Ok(out)
}

fn check_n4(name: &str, dims: &[usize]) -> Result<()> {
    if dims.len() != 2 || dims[1] != 4 {
        bail!("{name}: expected boxes of shape [N, 4], got {dims:?}");
    }
    Ok(())
}

/// `(x, y, w, h)` to `(x − w/2, y − h/2, x + w/2, y + h/2)`.
#[inline]
fn xywh_to_xyxy_row<T: Real>(b: &[T; 4]) -> [T; 4] {
    let half = T::of(0.5);
    let (hw, hh) = (half * b[2], half * b[3]);
    [b[0] - hw, b[1] - hh, b[0] + hw, b[1] + hh]
}

/// The chain rule of [`xywh_to_xyxy_row`]: `(g1, g2, g3, g4)` w.r.t. `(x1, y1, x2, y2)` to
/// `(g1 + g3, g2 + g4, (g3 − g1)/2, (g4 − g2)/2)` w.r.t. `(x, y, w, h)`.
#[inline]
fn xyxy_grad_to_xywh_row<T: Real>(r: &[T; 4]) -> [T; 4] {
    let half = T::of(0.5);
    [r[0] + r[2], r[1] + r[3], (r[2] - r[0]) * half, (r[3] - r[1]) * half]
}

/// The CPU conversion op: forward `xywh → xyxy`, backward its transpose.
struct XywhToXyxy;
/// The backward of [`XywhToXyxy`] as an op of its own (no gradient of its own).
struct XyxyGradToXywh;

impl Fused1 for XywhToXyxy {
    fn name(&self) -> &'static str {
        "xywh-to-xyxy"
    }
    fn forward<F: Real>(&self, x: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        check_n4(self.name(), x.dims())?;
        Ok((map_rows_of(x, xywh_to_xyxy_row::<F>)?, x.layout.shape().clone()))
    }
    fn backward(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(xyxy_grad_to_xywh(grad_res)?))
    }
}

impl Fused1 for XyxyGradToXywh {
    fn name(&self) -> &'static str {
        "xyxy-grad-to-xywh"
    }
    fn forward<F: Real>(&self, x: Arg<'_>) -> Result<(Vec<F>, Shape)> {
        check_n4(self.name(), x.dims())?;
        Ok((map_rows_of(x, xyxy_grad_to_xywh_row::<F>)?, x.layout.shape().clone()))
    }
}

/// Whether the CPU op runs for `t` (on the path in force; `fast = false` never).
fn use_op(t: &Tensor, fast: bool) -> Result<bool> {
    Ok(fast && kernel::choose("xywh_to_xyxy", t)?)
}

/// `[N, 4]` boxes `(x, y, w, h)` (centre, width, height) to `(x1, y1, x2, y2)`, differentiable:
/// the gradient flows back to `(x, y, w, h)`. One pass on the CPU; plain Candle ops elsewhere.
///
/// # Errors
/// `boxes` not of shape `[N, 4]`.
pub fn xywh_to_xyxy(boxes: &Tensor) -> Result<Tensor> {
    xywh_to_xyxy_with(boxes, true)
}

/// [`xywh_to_xyxy`], with `fast = false` forcing the plain-Candle path (tests compare the two).
///
/// # Errors
/// `boxes` not of shape `[N, 4]`.
pub fn xywh_to_xyxy_with(boxes: &Tensor, fast: bool) -> Result<Tensor> {
    if use_op(boxes, fast)? {
        return kernel::apply1(XywhToXyxy, boxes);
    }
    let (n, four) = boxes.dims2()?;
    if four != 4 {
        bail!("xywh-to-xyxy: expected boxes of shape [N, 4], got [{n}, {four}]");
    }
    let xy = boxes.narrow(1, 0, 2)?;
    let half = boxes.narrow(1, 2, 2)?.affine(0.5, 0.0)?;
    Tensor::cat(&[&xy.sub(&half)?, &xy.add(&half)?], D::Minus1)
}

/// The transpose of [`xywh_to_xyxy`]'s Jacobian applied to a gradient w.r.t. `xyxy`.
fn xyxy_grad_to_xywh(g: &Tensor) -> Result<Tensor> {
    if use_op(g, true)? {
        return kernel::apply1_no_bwd(XyxyGradToXywh, g);
    }
    let lo = g.narrow(1, 0, 2)?;
    let hi = g.narrow(1, 2, 2)?;
    Tensor::cat(&[&lo.add(&hi)?, &hi.sub(&lo)?.affine(0.5, 0.0)?], D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn conversion_and_its_gradient_match_the_composite_path() -> Result<()> {
        let v = [1.0f64, 2.0, 4.0, 6.0, -1.0, 0.5, 0.2, 3.0];
        let b = Var::from_slice(&v, (2, 4), &Device::Cpu)?;
        let xyxy = xywh_to_xyxy(b.as_tensor())?;
        assert_eq!(
            xyxy.to_vec2::<f64>()?,
            vec![vec![-1.0, -1.0, 3.0, 5.0], vec![-1.1, -1.0, -0.9, 2.0]]
        );
        let w = Tensor::new(&[[1.0f64, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]], &Device::Cpu)?;
        let g = xyxy.mul(&w)?.sum_all()?.backward()?;
        // d/dx = w1 + w3, d/dw = (w3 − w1)/2.
        let gb = g.get(b.as_tensor()).expect("gradient").to_vec2::<f64>()?;
        assert_eq!(gb, vec![vec![4.0, 6.0, 1.0, 1.0], vec![12.0, 14.0, 1.0, 1.0]]);
        assert_eq!(xyxy_grad_to_xywh_row(&[1.0f64, 2.0, 3.0, 4.0]), [4.0, 6.0, 1.0, 1.0]);
        Ok(())
    }

    #[test]
    fn chunks_are_in_order_whatever_the_split() {
        let n = 3 * CHUNK + 5;
        let mut out = vec![0usize; n * 2];
        let starts = par_chunks(n, &mut out, 2, |r, s| {
            for (i, c) in r.clone().enumerate() {
                s[2 * i] = c;
                s[2 * i + 1] = c;
            }
            r.start
        });
        assert_eq!(starts, vec![0, CHUNK, 2 * CHUNK, 3 * CHUNK]);
        assert!(out.chunks(2).enumerate().all(|(i, p)| p == [i, i]));
    }
}
