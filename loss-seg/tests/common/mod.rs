//! Seeded random inputs for the loss-seg tests.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded generator.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform values in `[lo, hi)`, f64.
pub fn uniform(r: &mut ChaCha8Rng, shape: &[usize], lo: f64, hi: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| r.gen_range(lo..hi)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// A 0/1 mask, each value 1 with probability `p`, f64.
pub fn mask(r: &mut ChaCha8Rng, shape: &[usize], p: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| if r.gen_bool(p) { 1.0 } else { 0.0 }).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Class indices in `[0, classes)`, i64.
pub fn labels(r: &mut ChaCha8Rng, shape: &[usize], classes: usize) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<i64> = (0..n).map(|_| r.gen_range(0..classes as i64)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The one-hot encoding `[N, C, ...]` (f64) of labels `[N, 1, ...]`.
pub fn one_hot(labels: &Tensor, classes: usize) -> Tensor {
    let mut shape = vec![1usize; labels.rank()];
    shape[1] = classes;
    let ids = Tensor::arange(0i64, classes as i64, &Device::Cpu)
        .unwrap()
        .reshape(shape)
        .unwrap();
    labels.broadcast_eq(&ids).unwrap().to_dtype(DType::F64).unwrap()
}

/// Flat f64 values.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// A 0-d tensor as f64.
pub fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// The value of `sum(f(x))` and its gradient w.r.t. `x`, flat (zeros when `x` gets none).
pub fn value_and_grad(f: impl Fn(&Tensor) -> candle_core::Result<Tensor>, x: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let v = Var::from_tensor(x).unwrap();
    let out = f(v.as_tensor()).unwrap();
    let grads = out.sum_all().unwrap().backward().unwrap();
    let g = match grads.get(v.as_tensor()) {
        Some(g) => values(g),
        None => vec![0.0; x.elem_count()],
    };
    (values(&out), g)
}

/// `|a − b| <= atol + rtol·|b|` element by element.
pub fn assert_close(what: &str, a: &[f64], b: &[f64], rtol: f64, atol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= atol + rtol * y.abs(), "{what}: index {i}: {x} vs {y}");
    }
}
