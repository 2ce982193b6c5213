//! im2col for 2-D convolutions: the `k × k` neighbourhoods of every pixel laid out as columns,
//! so a convolution is one matrix product (see [`crate::models::Conv2d`]).
//!
//! On the CPU, [`im2col`] is one pass (a Candle `CustomOp1`) whose backward is the matching
//! col2im scatter-add, also one pass; on every other device it is built from plain Candle ops
//! (`pad_with_zeros`, `narrow`, `stack`) with autodiff, [`im2col_composite`]. Both give the same
//! values and gradients.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

/// `[N, C, H, W]` to `[N, C·k², H·W]`, stride 1, zero padding `k / 2` (odd `k`):
/// `out[n, (c·k + dy)·k + dx, y·W + x] = x[n, c, y + dy − k/2, x + dx − k/2]` (0 outside).
///
/// # Errors
/// Not 4-D, an even `k`, a non-float dtype.
pub fn im2col(x: &Tensor, k: usize) -> Result<Tensor> {
    check(x, k)?;
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(Im2Col { k })
    } else {
        im2col_composite(x, k)
    }
}

/// [`im2col`] from plain Candle ops (any device, autodiff).
///
/// # Errors
/// Not 4-D, an even `k`, a non-float dtype.
pub fn im2col_composite(x: &Tensor, k: usize) -> Result<Tensor> {
    check(x, k)?;
    let (n, c, h, w) = x.dims4()?;
    let p = k / 2;
    let padded = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
    let mut views = Vec::with_capacity(k * k);
    for dy in 0..k {
        for dx in 0..k {
            views.push(padded.narrow(2, dy, h)?.narrow(3, dx, w)?);
        }
    }
    Tensor::stack(&views, 2)?.reshape((n, c * k * k, h * w))
}

fn check(x: &Tensor, k: usize) -> Result<()> {
    if x.rank() != 4 {
        return Err(candle_core::Error::Msg(format!(
            "im2col: input must be [N, C, H, W], got {:?}",
            x.shape()
        )));
    }
    if k & 1 == 0 {
        return Err(candle_core::Error::Msg(format!("im2col: kernel size {k} must be odd")));
    }
    if !matches!(x.dtype(), DType::F32 | DType::F64) {
        return Err(candle_core::Error::Msg(format!(
            "im2col: dtype must be f32 or f64, got {:?}",
            x.dtype()
        )));
    }
    Ok(())
}

/// Calls `f(src_start, dst_start, len)` for every run of pixels that one kernel offset reads
/// from one image row: `src` offsets in `[N, C, H, W]`, `dst` offsets in `[N, C·k², H·W]`.
fn for_each_run(n: usize, c: usize, h: usize, w: usize, k: usize, mut f: impl FnMut(usize, usize, usize)) {
    let p = k / 2;
    let hw = h * w;
    for b in 0..n {
        for ch in 0..c {
            let src_base = (b * c + ch) * hw;
            for dy in 0..k {
                // output rows y with 0 <= y + dy - p < h
                let y0 = p.saturating_sub(dy);
                let y1 = (h + p).saturating_sub(dy).min(h);
                for dx in 0..k {
                    let x0 = p.saturating_sub(dx);
                    let x1 = (w + p).saturating_sub(dx).min(w);
                    if x1 <= x0 {
                        continue;
                    }
                    let row = (ch * k + dy) * k + dx;
                    let dst_base = (b * c * k * k + row) * hw;
                    for y in y0..y1 {
                        let sy = y + dy - p;
                        f(src_base + sy * w + x0 + dx - p, dst_base + y * w + x0, x1 - x0);
                    }
                }
            }
        }
    }
}

fn contiguous<'a, T>(v: &'a [T], layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&v[start..end]),
        None => Err(candle_core::Error::Msg(format!("{op}: input must be contiguous"))),
    }
}

struct Im2Col {
    k: usize,
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        let k = self.k;
        let shape = Shape::from((n, c * k * k, h * w));
        fn run<T: Copy + Default>(src: &[T], dims: (usize, usize, usize, usize), k: usize) -> Vec<T> {
            let (n, c, h, w) = dims;
            let mut out = vec![T::default(); n * c * k * k * h * w];
            for_each_run(n, c, h, w, k, |s, d, len| {
                out[d..d + len].copy_from_slice(&src[s..s + len])
            });
            out
        }
        let out = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(run(contiguous(v, layout, "im2col")?, (n, c, h, w), k)),
            CpuStorage::F64(v) => CpuStorage::F64(run(contiguous(v, layout, "im2col")?, (n, c, h, w), k)),
            _ => return Err(candle_core::Error::Msg("im2col: dtype must be f32 or f64".into())),
        };
        Ok((out, shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (_, c, h, w) = arg.dims4()?;
        let g = grad_res.contiguous()?.apply_op1(Col2Im { k: self.k, c, h, w })?;
        Ok(Some(g))
    }
}

/// The adjoint of [`Im2Col`]: `[N, C·k², H·W]` to `[N, C, H, W]`, summing every column entry
/// into the pixel it was read from.
struct Col2Im {
    k: usize,
    c: usize,
    h: usize,
    w: usize,
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, _, _) = layout.shape().dims3()?;
        let (k, c, h, w) = (self.k, self.c, self.h, self.w);
        let shape = Shape::from((n, c, h, w));
        fn run<T: Copy + Default + std::ops::AddAssign>(
            src: &[T],
            dims: (usize, usize, usize, usize),
            k: usize,
        ) -> Vec<T> {
            let (n, c, h, w) = dims;
            let mut out = vec![T::default(); n * c * h * w];
            for_each_run(n, c, h, w, k, |s, d, len| {
                for (o, v) in out[s..s + len].iter_mut().zip(&src[d..d + len]) {
                    *o += *v;
                }
            });
            out
        }
        let out = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(run(contiguous(v, layout, "col2im")?, (n, c, h, w), k)),
            CpuStorage::F64(v) => CpuStorage::F64(run(contiguous(v, layout, "col2im")?, (n, c, h, w), k)),
            _ => return Err(candle_core::Error::Msg("col2im: dtype must be f32 or f64".into())),
        };
        Ok((out, shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.contiguous()?.apply_op1(Im2Col { k: self.k })?))
    }
}
