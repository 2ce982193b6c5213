//! The CPU side of [`super::Unary`]: one `CustomOp1` that maps the value or the derivative.

use super::Unary;
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// `CustomOp1` computing `f.value` (or `f.derivative`) elementwise on the CPU.
pub(crate) struct UnaryOp {
    pub f: Unary,
    pub derivative: bool,
}

/// The storage offsets of a layout's elements in row-major order (for non-contiguous inputs).
pub fn layout_offsets(l: &Layout) -> Vec<usize> {
    let dims = l.dims();
    let stride = l.stride();
    let n: usize = dims.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let mut idx = vec![0usize; dims.len()];
    let mut off = l.start_offset();
    for _ in 0..n {
        out.push(off);
        for d in (0..dims.len()).rev() {
            idx[d] += 1;
            off += stride[d];
            if idx[d] < dims[d] {
                break;
            }
            off -= stride[d] * dims[d];
            idx[d] = 0;
        }
    }
    out
}

fn collect<T: Copy, U>(v: &[T], l: &Layout, f: impl Fn(T) -> U) -> Vec<U> {
    match l.contiguous_offsets() {
        Some((a, b)) => v[a..b].iter().map(|&x| f(x)).collect(),
        None => layout_offsets(l).into_iter().map(|i| f(v[i])).collect(),
    }
}

/// Maps a float CPU storage (f32, f64, f16, bf16) elementwise through `f` computed in f64.
pub fn map_unary(s: &CpuStorage, l: &Layout, f: impl Fn(f64) -> f64, name: &str) -> Result<CpuStorage> {
    use half::{bf16, f16};
    Ok(match s {
        CpuStorage::F32(v) => CpuStorage::F32(collect(v, l, |x| f(x as f64) as f32)),
        CpuStorage::F64(v) => CpuStorage::F64(collect(v, l, &f)),
        CpuStorage::F16(v) => CpuStorage::F16(collect(v, l, |x| f16::from_f64(f(x.to_f64())))),
        CpuStorage::BF16(v) => CpuStorage::BF16(collect(v, l, |x| bf16::from_f64(f(x.to_f64())))),
        other => bail!("{name}: expected a float tensor, got dtype {:?}", other.dtype()),
    })
}

impl CustomOp1 for UnaryOp {
    fn name(&self) -> &'static str {
        match (self.f, self.derivative) {
            (Unary::Atan, false) => "atan",
            (Unary::Atan, true) => "atan-grad",
            (Unary::Log1p, false) => "log1p",
            (Unary::Log1p, true) => "log1p-grad",
            (Unary::Softplus, false) => "softplus",
            (Unary::Softplus, true) => "softplus-grad",
            (Unary::LogSigmoid, false) => "log-sigmoid",
            (Unary::LogSigmoid, true) => "log-sigmoid-grad",
            (Unary::Sigmoid, false) => "sigmoid",
            (Unary::Sigmoid, true) => "sigmoid-grad",
            (Unary::Abs, false) => "abs",
            (Unary::Abs, true) => "abs-grad",
            (Unary::Pow { .. }, false) => "powf",
            (Unary::Pow { .. }, true) => "powf-grad",
            (Unary::Clamp { .. }, false) => "clamp",
            (Unary::Clamp { .. }, true) => "clamp-grad",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let f = self.f;
        let out = if self.derivative {
            map_unary(s, l, |x| f.derivative(x), self.name())?
        } else {
            map_unary(s, l, |x| f.value(x), self.name())?
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        if self.derivative {
            candle_core::bail!("{}: second derivatives are not supported", self.name());
        }
        let d = arg.apply_op1_no_bwd(&UnaryOp {
            f: self.f,
            derivative: true,
        })?;
        Ok(Some(grad_res.mul(&d)?))
    }
}
