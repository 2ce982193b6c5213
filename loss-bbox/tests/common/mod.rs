//! Shared helpers of the loss-bbox tests: seeded box generators (random and degenerate),
//! gradients through Candle's autodiff, central finite differences in f64, comparisons.
#![allow(dead_code)]

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded generator.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A random box with positive extents: corner in [-10, 10]², width and height in [0.5, 10].
pub fn random_box(r: &mut impl Rng) -> [f64; 4] {
    let x = r.gen_range(-10.0..10.0);
    let y = r.gen_range(-10.0..10.0);
    let w = r.gen_range(0.5..10.0);
    let h = r.gen_range(0.5..10.0);
    [x, y, x + w, y + h]
}

/// A pair of boxes of one of the degenerate kinds (or a plain random pair), chosen by `kind`:
/// zero width, zero height, point box, identical, disjoint, nested, shared edge, shared corner,
/// integer grid (many ties), both zero width, both points, point against itself.
pub fn pair_of_kind(r: &mut impl Rng, kind: usize) -> ([f64; 4], [f64; 4]) {
    let a = random_box(r);
    let b = random_box(r);
    match kind % 14 {
        0 => ([a[0], a[1], a[0], a[3]], b),                             // zero-width pred
        1 => ([a[0], a[1], a[2], a[1]], b),                             // zero-height pred
        2 => ([a[0], a[1], a[0], a[1]], b),                             // point pred
        3 => (a, a),                                                    // identical
        4 => (a, [a[2] + 1.0, b[1], a[2] + 1.0 + (b[2] - b[0]), b[3]]), // disjoint in x
        5 => {
            // nested: pred inside target
            let (w, h) = (a[2] - a[0], a[3] - a[1]);
            ([a[0] + 0.25 * w, a[1] + 0.25 * h, a[2] - 0.3 * w, a[3] - 0.1 * h], a)
        }
        6 => (a, [a[2], a[1], a[2] + 3.0, a[3]]),       // shared edge
        7 => (a, [a[2], a[3], a[2] + 2.0, a[3] + 1.0]), // shared corner
        8 => {
            let g = |r: &mut dyn rand::RngCore| {
                let x = r.gen_range(-3i32..3) as f64;
                let y = r.gen_range(-3i32..3) as f64;
                [x, y, x + r.gen_range(0i32..4) as f64, y + r.gen_range(0i32..4) as f64]
            };
            (g(r), g(r))
        }
        9 => ([a[0], a[1], a[0], a[3]], [a[0], b[1], a[0], b[3]]), // both zero width, same x
        10 => ([a[0], a[1], a[0], a[1]], [b[0], b[1], b[0], b[1]]), // two points
        11 => ([a[0], a[1], a[0], a[1]], [a[0], a[1], a[0], a[1]]), // point against itself
        12 => (a, [a[0], a[1], b[2].max(a[0]), a[3]]),             // shared corner and edge ties
        _ => (a, b),
    }
}

/// `n` pairs: half plain random, half spread over the degenerate kinds.
pub fn mixed_pairs(seed: u64, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut r = rng(seed);
    let mut p = Vec::with_capacity(4 * n);
    let mut t = Vec::with_capacity(4 * n);
    for i in 0..n {
        let (a, b) = if i % 2 == 0 {
            (random_box(&mut r), random_box(&mut r))
        } else {
            pair_of_kind(&mut r, i / 2)
        };
        p.extend_from_slice(&a);
        t.extend_from_slice(&b);
    }
    (p, t)
}

/// `n` random pairs with positive extents, generic (no ties, no touching): safe for finite
/// differences.
pub fn generic_pairs(seed: u64, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut r = rng(seed);
    let mut p = Vec::new();
    let mut t = Vec::new();
    for _ in 0..n {
        let a = random_box(&mut r);
        // targets near the prediction, so most pairs overlap
        let b = [
            a[0] + r.gen_range(-3.0..3.0),
            a[1] + r.gen_range(-3.0..3.0),
            a[2] + r.gen_range(-3.0..3.0),
            a[3] + r.gen_range(-3.0..3.0),
        ];
        let b = [b[0].min(b[2] - 0.3), b[1].min(b[3] - 0.3), b[2], b[3]];
        p.extend_from_slice(&a);
        t.extend_from_slice(&b);
    }
    (p, t)
}

/// `[n, 4]` tensor of `dtype` from flat f64 data.
pub fn boxes(data: &[f64], dtype: DType) -> Tensor {
    Tensor::from_vec(data.to_vec(), (data.len() / 4, 4), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// Flat f64 values of any tensor.
pub fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// Value (flat) and the gradients of `sum(f(a, b))` w.r.t. `a` and `b` (flat; zeros if absent).
pub fn value_and_grads(
    f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    a: &Tensor,
    b: &Tensor,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let va = Var::from_tensor(a).unwrap();
    let vb = Var::from_tensor(b).unwrap();
    let out = f(va.as_tensor(), vb.as_tensor()).unwrap();
    let grads = out.sum_all().unwrap().backward().unwrap();
    let g = |v: &Var| match grads.get(v.as_tensor()) {
        Some(g) => flat(g),
        None => vec![0.0; v.elem_count()],
    };
    (flat(&out), g(&va), g(&vb))
}

/// Central finite differences of `sum(f(a, b))` w.r.t. every entry of `a` (f64 data).
pub fn fd_grad(f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>, a: &[f64], b: &[f64], rows_b: usize) -> Vec<f64> {
    let h = 1e-6;
    let eval = |a: &[f64]| -> f64 {
        let ta = boxes(a, DType::F64);
        let tb = Tensor::from_vec(b.to_vec(), (rows_b, 4), &Device::Cpu).unwrap();
        flat(&f(&ta, &tb).unwrap()).iter().sum()
    };
    (0..a.len())
        .map(|i| {
            let mut up = a.to_vec();
            let mut dn = a.to_vec();
            up[i] += h;
            dn[i] -= h;
            (eval(&up) - eval(&dn)) / (2.0 * h)
        })
        .collect()
}

/// Asserts `|got − want| <= atol + rtol·|want|` entrywise (NaN only against NaN, an infinity only
/// against itself), naming `what` and the first index.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= atol + rtol * w.abs() || (g.is_nan() && w.is_nan()) || g == w,
            "{what}: index {i} (box {}, coord {}): got {g}, want {w}",
            i / 4,
            i % 4
        );
    }
}

/// Asserts every value is finite.
pub fn assert_finite(what: &str, v: &[f64]) {
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        panic!("{what}: non-finite value {} at index {i}", v[i]);
    }
}
