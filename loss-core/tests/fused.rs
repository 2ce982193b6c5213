//! The fused CPU kernels and the composite (any-device) path agree: values and gradients w.r.t.
//! input and target, rel. 1e-5 in f64 (and f32 within its precision), at kinks too.

use candle_core::{DType, Device, Result, Tensor, Var};
use loss_core::kernel::{with_path, Path};
use loss_core::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Pair = fn(&Tensor, &Tensor, Reduction) -> Result<Tensor>;

fn losses() -> Vec<(&'static str, Pair)> {
    vec![
        ("l1", |x, t, r| l1_loss(x, t, r)),
        ("mse", |x, t, r| mse_loss(x, t, r)),
        ("smooth_l1", |x, t, r| smooth_l1_loss(x, t, 0.5, r)),
        ("smooth_l1 beta 0", |x, t, r| smooth_l1_loss(x, t, 0.0, r)),
        ("huber", |x, t, r| huber_loss(x, t, 1.5, r)),
        ("bce_with_logits", |x, t, r| {
            binary_cross_entropy_with_logits(x, t, None, None, r)
        }),
        ("sigmoid_focal", |x, t, r| sigmoid_focal_loss(x, t, 0.25, 2.0, r)),
        ("sigmoid_focal g0.5 no alpha", |x, t, r| {
            sigmoid_focal_loss(x, t, -1.0, 0.5, r)
        }),
        ("sigmoid_focal g0", |x, t, r| sigmoid_focal_loss(x, t, 0.75, 0.0, r)),
        ("log_cosh", |x, t, r| log_cosh_loss(x, t, r)),
        ("soft_margin", |x, t, r| soft_margin_loss(x, t, r)),
        ("hinge_embedding", |x, t, r| hinge_embedding_loss(x, t, 1.5, r)),
        ("poisson_nll", |x, t, r| poisson_nll_loss(x, t, true, false, 1e-8, r)),
    ]
}

fn inputs(seed: u64, n: usize, dtype: DType) -> (Tensor, Tensor) {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let mut x: Vec<f64> = (0..n).map(|_| r.gen_range(-6.0..6.0)).collect();
    let t: Vec<f64> = (0..n)
        .map(|i| {
            if i % 3 == 0 {
                r.gen_range(0.0..1.0)
            } else {
                (i % 2) as f64
            }
        })
        .collect();
    // Kinks: d = 0, |d| = 0.5 (beta), |d| = 1.5 (delta), saturated logits.
    x[0] = t[0];
    x[1] = t[1] + 0.5;
    x[2] = t[2] - 1.5;
    x[3] = 40.0;
    x[4] = -40.0;
    let dev = Device::Cpu;
    (
        Tensor::from_vec(x, n, &dev).unwrap().to_dtype(dtype).unwrap(),
        Tensor::from_vec(t, n, &dev).unwrap().to_dtype(dtype).unwrap(),
    )
}

/// Value, d/dinput and d/dtarget. A composite loss whose target only selects (hinge embedding)
/// gives the target no gradient at all: read as zeros, which the fused kernel must give.
fn run(f: Pair, x: &Tensor, t: &Tensor, r: Reduction) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (vx, vt) = (Var::from_tensor(x).unwrap(), Var::from_tensor(t).unwrap());
    let out = f(vx.as_tensor(), vt.as_tensor(), r).unwrap();
    let g = out.sum_all().unwrap().backward().unwrap();
    let flat = |t: &Tensor| {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    };
    (
        flat(&out),
        flat(g.get(vx.as_tensor()).unwrap()),
        g.get(vt.as_tensor()).map_or_else(|| vec![0.0; t.elem_count()], flat),
    )
}

fn assert_close(what: &str, a: &[f64], b: &[f64], rel: f64, abs: f64) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let ok = x == y || (x.is_nan() && y.is_nan()) || (x - y).abs() <= abs + rel * x.abs().max(y.abs());
        assert!(ok, "{what}[{i}]: fused {x} vs composite {y}");
    }
}

#[test]
fn fused_equals_composite_f64() {
    for (name, f) in losses() {
        for r in [Reduction::None, Reduction::Mean, Reduction::Sum] {
            let (x, t) = inputs(1, 257, DType::F64);
            let fused = run(f, &x, &t, r);
            let comp = with_path(Path::Composite, || run(f, &x, &t, r));
            let what = format!("{name} {r}");
            assert_close(&format!("{what} value"), &fused.0, &comp.0, 1e-5, 1e-12);
            assert_close(&format!("{what} d/dinput"), &fused.1, &comp.1, 1e-5, 1e-12);
            assert_close(&format!("{what} d/dtarget"), &fused.2, &comp.2, 1e-5, 1e-12);
        }
    }
}

fn ce_inputs(seed: u64, n: usize, c: usize, dtype: DType) -> (Tensor, Tensor) {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f64> = (0..n * c).map(|_| r.gen_range(-8.0..8.0)).collect();
    let y: Vec<i64> = (0..n)
        .map(|i| if i % 7 == 3 { -100 } else { r.gen_range(0..c as i64) })
        .collect();
    let dev = Device::Cpu;
    (
        Tensor::from_vec(x, (n, c), &dev).unwrap().to_dtype(dtype).unwrap(),
        Tensor::from_vec(y, n, &dev).unwrap(),
    )
}

fn ce_run(x: &Tensor, y: &Tensor, w: Option<&Tensor>, ls: f64, r: Reduction) -> (Vec<f64>, Vec<f64>) {
    let vx = Var::from_tensor(x).unwrap();
    let out = cross_entropy(vx.as_tensor(), y, w, -100, ls, r).unwrap();
    let g = out.sum_all().unwrap().backward().unwrap();
    let flat = |t: &Tensor| {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    };
    (flat(&out), flat(g.get(vx.as_tensor()).unwrap()))
}

#[test]
fn fused_cross_entropy_equals_composite() {
    let w = Tensor::new(&[0.5f64, 1.0, 2.0, 0.25, 1.5], &Device::Cpu).unwrap();
    for (n, c, dtype) in [(13, 5, DType::F64), (7000, 5, DType::F64), (900, 5, DType::F32)] {
        let (x, y) = ce_inputs(3, n, c, dtype);
        let w = w.to_dtype(dtype).unwrap();
        for r in [Reduction::None, Reduction::Mean, Reduction::Sum] {
            for (wt, ls) in [(None, 0.0), (Some(&w), 0.0), (None, 0.3), (Some(&w), 0.1)] {
                let fused = ce_run(&x, &y, wt, ls, r);
                let comp = with_path(Path::Composite, || ce_run(&x, &y, wt, ls, r));
                let what = format!("ce [{n}, {c}] {dtype:?} {r} weight {} smoothing {ls}", wt.is_some());
                let (rel, abs) = if dtype == DType::F64 {
                    (1e-5, 1e-12)
                } else {
                    (1e-5, 1e-6)
                };
                assert_close(&format!("{what} value"), &fused.0, &comp.0, rel, abs);
                assert_close(&format!("{what} grad"), &fused.1, &comp.1, rel, abs);
            }
        }
    }
}

#[test]
fn fused_kl_div_equals_composite() {
    let f: Pair = |x, t, r| kl_div(x, t, false, r);
    let g: Pair = |x, t, r| kl_div(x, t, true, r);
    let (x, t) = inputs(4, 120, DType::F64);
    let x = x.reshape((8, 15)).unwrap();
    let t = t.reshape((8, 15)).unwrap();
    for r in [Reduction::None, Reduction::Mean, Reduction::Sum, Reduction::BatchMean] {
        for (name, f) in [("kl_div", f), ("kl_div log_target", g)] {
            let fused = run(f, &x, &t, r);
            let comp = with_path(Path::Composite, || run(f, &x, &t, r));
            assert_close(&format!("{name} {r} value"), &fused.0, &comp.0, 1e-5, 1e-12);
            assert_close(&format!("{name} {r} d/dinput"), &fused.1, &comp.1, 1e-5, 1e-12);
            assert_close(&format!("{name} {r} d/dtarget"), &fused.2, &comp.2, 1e-5, 1e-12);
        }
    }
}

#[test]
fn fused_equals_composite_f32_large() {
    // Above the parallel threshold, so the chunked rayon path runs.
    for (name, f) in losses() {
        let (x, t) = inputs(2, 100_003, DType::F32);
        let fused = run(f, &x, &t, Reduction::Mean);
        let comp = with_path(Path::Composite, || run(f, &x, &t, Reduction::Mean));
        assert_close(&format!("{name} value"), &fused.0, &comp.0, 1e-5, 1e-7);
        assert_close(&format!("{name} d/dinput"), &fused.1, &comp.1, 1e-4, 1e-10);
    }
}

#[test]
fn fused_cross_entropy_nd_equals_composite() {
    let mut r = ChaCha8Rng::seed_from_u64(5);
    let dev = Device::Cpu;
    let x: Vec<f64> = (0..4 * 5 * 3 * 2).map(|_| r.gen_range(-5.0..5.0)).collect();
    let x = Tensor::from_vec(x, (4, 5, 3, 2), &dev).unwrap();
    let y: Vec<i64> = (0..4 * 3 * 2)
        .map(|i| if i % 5 == 2 { -100 } else { r.gen_range(0..5) })
        .collect();
    let y = Tensor::from_vec(y, (4, 3, 2), &dev).unwrap();
    let w = Tensor::new(&[0.5f64, 1.0, 2.0, 0.25, 1.5], &dev).unwrap();
    for red in [Reduction::None, Reduction::Mean, Reduction::Sum] {
        for (wt, ls) in [(None, 0.0), (Some(&w), 0.2)] {
            let fused = ce_run(&x, &y, wt, ls, red);
            let comp = with_path(Path::Composite, || ce_run(&x, &y, wt, ls, red));
            assert_close(&format!("ce nd {red} value"), &fused.0, &comp.0, 1e-5, 1e-12);
            assert_close(&format!("ce nd {red} grad"), &fused.1, &comp.1, 1e-5, 1e-12);
        }
    }
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// A reduced loss whose input needs a gradient writes `∂ℓ/∂x` in its forward pass and keeps it
/// for the backward: that kept gradient is scaled by an upstream other than 1, a second
/// backward through the same graph recomputes it, and a forward on an input without a gradient
/// (the value-only kernel) gives the same value.
#[test]
fn fused_gradient_kept_by_the_forward_scales_and_recomputes() {
    for (name, f) in losses() {
        for r in [Reduction::Mean, Reduction::Sum] {
            // Above the parallel threshold, and one small input on the sequential path.
            for n in [40_001, 37] {
                let (x, t) = inputs(3, n, DType::F32);
                let what = format!("{name} {r} n={n}");
                let vx = Var::from_tensor(&x).unwrap();
                let out = f(vx.as_tensor(), &t, r).unwrap();
                let scaled = (&out * 2.5).unwrap();
                let first = flat(scaled.backward().unwrap().get(vx.as_tensor()).unwrap());
                let second = flat(scaled.backward().unwrap().get(vx.as_tensor()).unwrap());
                let comp = with_path(Path::Composite, || {
                    let out = f(vx.as_tensor(), &t, r).unwrap();
                    let g = (&out * 2.5).unwrap().backward().unwrap();
                    flat(g.get(vx.as_tensor()).unwrap())
                });
                // f32: a few ulp of σ(x) ≈ 1 (times the upstream 2.5) where σ(x) − t cancels.
                let ulps = 1e-6 * if r == Reduction::Mean { 1.0 / n as f64 } else { 1.0 };
                assert_close(&format!("{what} kept gradient"), &first, &comp, 1e-4, ulps);
                assert_close(&format!("{what} recomputed gradient"), &second, &first, 1e-6, 0.0);
                let detached = flat(&f(&x, &t, r).unwrap());
                assert_close(
                    &format!("{what} value without gradient"),
                    &detached,
                    &flat(&out),
                    1e-6,
                    0.0,
                );
            }
        }
    }
}

/// The cross-entropy gradient written by the forward (reduced loss, logits that need a
/// gradient) is scaled by an upstream other than 1 and recomputed by a second backward; the
/// value of logits without a gradient is the same.
#[test]
fn fused_cross_entropy_kept_gradient_scales_and_recomputes() {
    // Parallel chunks of rows, and a sequential run with C not a multiple of the lanes.
    for (n, c) in [(7000usize, 5usize), (9, 37)] {
        let (x, y) = ce_inputs(6, n, c, DType::F32);
        let w: Vec<f32> = (0..c).map(|k| 0.25 + (k % 4) as f32 * 0.5).collect();
        let w = Tensor::from_vec(w, c, &Device::Cpu).unwrap();
        for (wt, ls) in [(None, 0.0), (Some(&w), 0.0), (None, 0.3), (Some(&w), 0.1)] {
            for r in [Reduction::Mean, Reduction::Sum] {
                let what = format!("ce [{n}, {c}] {r} weight {} smoothing {ls}", wt.is_some());
                let vx = Var::from_tensor(&x).unwrap();
                let out = cross_entropy(vx.as_tensor(), &y, wt, -100, ls, r).unwrap();
                let scaled = (&out * 2.5).unwrap();
                let first = flat(scaled.backward().unwrap().get(vx.as_tensor()).unwrap());
                let second = flat(scaled.backward().unwrap().get(vx.as_tensor()).unwrap());
                let comp = with_path(Path::Composite, || {
                    let out = cross_entropy(vx.as_tensor(), &y, wt, -100, ls, r).unwrap();
                    flat((&out * 2.5).unwrap().backward().unwrap().get(vx.as_tensor()).unwrap())
                });
                // f32 rounding where p_y − 1 cancels: a few ulp of the largest entry.
                let scale = first.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                assert_close(&format!("{what} kept gradient"), &first, &comp, 1e-4, 1e-6 * scale);
                assert_close(
                    &format!("{what} recomputed gradient"),
                    &second,
                    &first,
                    1e-5,
                    1e-6 * scale,
                );
                let detached = flat(&cross_entropy(&x, &y, wt, -100, ls, r).unwrap());
                assert_close(
                    &format!("{what} value without gradient"),
                    &detached,
                    &flat(&out),
                    1e-6,
                    0.0,
                );
            }
        }
    }
}

/// Rows holding ±inf or NaN: the same values and gradients (NaN where PyTorch has NaN) on the
/// fused and the composite path.
#[test]
fn fused_cross_entropy_non_finite_rows_equal_composite() {
    let inf = f64::INFINITY;
    let x = Tensor::new(
        &[
            [1.0, inf, 0.5, -2.0],
            [-inf, 0.0, 1.0, 2.0],
            [-inf, -inf, -inf, -inf],
            [0.0, f64::NAN, 1.0, 2.0],
            [0.3, -0.2, 1e30, -1e30],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let y = Tensor::new(&[0i64, 2, 1, 3, 2], &Device::Cpu).unwrap();
    for r in [Reduction::None, Reduction::Sum] {
        for ls in [0.0, 0.2] {
            let fused = ce_run(&x, &y, None, ls, r);
            let comp = with_path(Path::Composite, || ce_run(&x, &y, None, ls, r));
            assert_close(&format!("{r} smoothing {ls} value"), &fused.0, &comp.0, 1e-12, 1e-12);
            assert_close(&format!("{r} smoothing {ls} grad"), &fused.1, &comp.1, 1e-12, 1e-12);
        }
    }
}

/// PyTorch's gradients at a NaN difference (torch 2.15, `reduction="sum"`, x = [NaN, 3],
/// t = [0, 0]): `l1_loss` [0, 1] (`sign(NaN) = 0`), also `smooth_l1_loss` with `beta = 0` (its
/// L1 path); `smooth_l1_loss` with `beta = 1` and `huber_loss` [NaN, 1]. Values NaN.
#[test]
fn gradients_at_a_nan_difference_follow_pytorch() {
    let x = Tensor::new(&[f64::NAN, 3.0], &Device::Cpu).unwrap();
    let t = Tensor::new(&[0.0f64, 0.0], &Device::Cpu).unwrap();
    let cases: [(&str, Pair, [f64; 2]); 4] = [
        ("l1", |x, t, r| l1_loss(x, t, r), [0.0, 1.0]),
        ("smooth_l1 beta 0", |x, t, r| smooth_l1_loss(x, t, 0.0, r), [0.0, 1.0]),
        (
            "smooth_l1 beta 1",
            |x, t, r| smooth_l1_loss(x, t, 1.0, r),
            [f64::NAN, 1.0],
        ),
        ("huber", |x, t, r| huber_loss(x, t, 1.0, r), [f64::NAN, 1.0]),
    ];
    for (name, f, want) in cases {
        for dtype in [DType::F64, DType::F32] {
            let (x, t) = (x.to_dtype(dtype).unwrap(), t.to_dtype(dtype).unwrap());
            let vx = Var::from_tensor(&x).unwrap();
            let out = f(vx.as_tensor(), &t, Reduction::Sum).unwrap();
            assert!(flat(&out)[0].is_nan(), "{name} {dtype:?} value");
            let g = flat(out.backward().unwrap().get(vx.as_tensor()).unwrap());
            assert_close(&format!("{name} {dtype:?} gradient"), &g, &want, 0.0, 0.0);
            let composite = with_path(Path::Composite, || {
                let out = f(vx.as_tensor(), &t, Reduction::Sum).unwrap();
                flat(out.backward().unwrap().get(vx.as_tensor()).unwrap())
            });
            assert_close(
                &format!("{name} {dtype:?} composite gradient"),
                &composite,
                &want,
                0.0,
                0.0,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fused kernels of losses of several inputs and of rows: Gaussian NLL, multi-label soft
// margin, multi-class margin, cosine embedding, triplet margin.

use loss_core::testing::{assert_paths_agree, MultiLoss};

fn uniform(r: &mut ChaCha8Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| r.gen_range(lo..hi)).collect()
}

fn tensor(v: Vec<f64>, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// `[x, t, var]` with variances below `eps` (clamped), at 0 and at `eps` itself.
fn gaussian_inputs(seed: u64, shape: &[usize], dtype: DType) -> Vec<Tensor> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    let mut v = uniform(&mut r, n, 0.05, 3.0);
    for (i, e) in v.iter_mut().enumerate() {
        match i % 11 {
            0 => *e = 0.0,
            5 => *e = 1e-3,
            7 => *e = 0.01,
            _ => {}
        }
    }
    vec![
        tensor(uniform(&mut r, n, -3.0, 3.0), shape, dtype),
        tensor(uniform(&mut r, n, -3.0, 3.0), shape, dtype),
        tensor(v, shape, dtype),
    ]
}

/// `[x, t]` of `[N, C]` logits and soft or 0/1 labels.
fn multilabel_inputs(seed: u64, shape: &[usize], dtype: DType) -> Vec<Tensor> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    let t = (0..n)
        .map(|i| {
            if i % 4 == 0 {
                r.gen_range(0.0..1.0)
            } else {
                (r.gen::<f64>() < 0.3) as u8 as f64
            }
        })
        .collect();
    vec![
        tensor(uniform(&mut r, n, -8.0, 8.0), shape, dtype),
        tensor(t, shape, dtype),
    ]
}

/// `[N, D]` embeddings (three of them), with a zero row and a row equal to the first input's.
fn embeddings(seed: u64, shape: &[usize], dtype: DType) -> Vec<Tensor> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let d = *shape.last().unwrap();
    let a = uniform(&mut r, n, -2.0, 2.0);
    let mut p = uniform(&mut r, n, -2.0, 2.0);
    let mut q = uniform(&mut r, n, -2.0, 2.0);
    if n >= 3 * d {
        p[d..2 * d].copy_from_slice(&a[d..2 * d]);
        q[2 * d..3 * d].iter_mut().for_each(|v| *v = 0.0);
    }
    [a, p, q].into_iter().map(|v| tensor(v, shape, dtype)).collect()
}

/// ±1 labels (and a 0, which selects neither term) for the rows of `shape`.
fn labels(seed: u64, rows: &[usize], dtype: DType) -> Tensor {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let n = rows.iter().product();
    let y = (0..n)
        .map(|i| {
            if i % 9 == 4 {
                0.0
            } else if r.gen::<bool>() {
                1.0
            } else {
                -1.0
            }
        })
        .collect();
    tensor(y, rows, dtype)
}

fn tolerance(dtype: DType) -> (f64, f64) {
    if dtype == DType::F64 {
        (1e-9, 1e-12)
    } else {
        (2e-4, 2e-6)
    }
}

const REDUCTIONS: [Reduction; 3] = [Reduction::None, Reduction::Mean, Reduction::Sum];

#[test]
fn fused_gaussian_nll_equals_composite() {
    for dtype in [DType::F64, DType::F32] {
        let (rel, abs) = tolerance(dtype);
        for shape in [vec![1usize], vec![37], vec![4, 9], vec![16_385], vec![40_001]] {
            let xs = gaussian_inputs(7, &shape, dtype);
            for full in [false, true] {
                let f: MultiLoss = &|t, r| gaussian_nll_loss(&t[0], &t[1], &t[2], full, 1e-2, r);
                for r in REDUCTIONS {
                    assert_paths_agree(
                        &format!("gaussian_nll {shape:?} {dtype:?} full {full}"),
                        f,
                        &xs,
                        r,
                        rel,
                        abs,
                    );
                }
            }
        }
    }
}

/// `[x1, x2, y]` on a grid of halves (so that `−y·(x1 − x2) + 0.5` is exactly 0 at many
/// elements: the kink), with ±1 labels, a 0 and a 2.
fn ranking_inputs(seed: u64, shape: &[usize], dtype: DType) -> Vec<Tensor> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    let mut half = |_| r.gen_range(-6i32..6) as f64 * 0.5;
    let (a, b): (Vec<f64>, Vec<f64>) = ((0..n).map(&mut half).collect(), (0..n).map(&mut half).collect());
    let y = (0..n)
        .map(|i| match i % 13 {
            3 => 0.0,
            8 => 2.0,
            k => [1.0, -1.0][k % 2],
        })
        .collect();
    vec![
        tensor(a, shape, dtype),
        tensor(b, shape, dtype),
        tensor(y, shape, dtype),
    ]
}

#[test]
fn fused_margin_ranking_equals_composite() {
    for dtype in [DType::F64, DType::F32] {
        let (rel, abs) = tolerance(dtype);
        for shape in [vec![1usize], vec![37], vec![4, 9], vec![16_385], vec![40_001]] {
            let xs = ranking_inputs(9, &shape, dtype);
            for margin in [0.5, -1.0] {
                let f: MultiLoss = &|t, r| margin_ranking_loss(&t[0], &t[1], &t[2], margin, r);
                for r in REDUCTIONS {
                    let what = format!("margin_ranking {shape:?} {dtype:?} margin {margin}");
                    assert_paths_agree(&what, f, &xs, r, rel, abs);
                }
            }
        }
    }
}

#[test]
fn fused_multilabel_soft_margin_equals_composite() {
    for dtype in [DType::F64, DType::F32] {
        let (rel, abs) = tolerance(dtype);
        for shape in [vec![13usize], vec![5, 13], vec![300, 100], vec![7000, 5]] {
            let xs = multilabel_inputs(8, &shape, dtype);
            let c = *shape.last().unwrap();
            let w: Vec<f64> = (0..c).map(|k| 0.25 + (k % 4) as f64 * 0.5).collect();
            let w = tensor(w, &[c], dtype);
            for weight in [None, Some(&w)] {
                let f: MultiLoss = &|t, r| multilabel_soft_margin_loss(&t[0], &t[1], weight, r);
                for r in REDUCTIONS {
                    let what = format!("multilabel_soft_margin {shape:?} {dtype:?} weight {}", weight.is_some());
                    assert_paths_agree(&what, f, &xs, r, rel, abs);
                }
            }
        }
    }
}

#[test]
fn fused_multi_margin_equals_composite() {
    for dtype in [DType::F64, DType::F32] {
        let (rel, abs) = tolerance(dtype);
        for (n, c) in [(1usize, 13usize), (9, 37), (300, 100), (7000, 5)] {
            let mut r = ChaCha8Rng::seed_from_u64(9);
            let y: Vec<i64> = (0..n).map(|_| r.gen_range(0..c as i64)).collect();
            let mut x = uniform(&mut r, n * c, -2.0, 2.0);
            // A hinge exactly at 0 (x_c = x_y − margin) and exactly at the margin's other side.
            let y0 = y[0] as usize;
            x[(y0 + 1) % c] = x[y0] - 1.0;
            let (x, y) = if n == 1 {
                (tensor(x, &[c], dtype), Tensor::new(y[0], &Device::Cpu).unwrap())
            } else {
                (tensor(x, &[n, c], dtype), Tensor::from_vec(y, n, &Device::Cpu).unwrap())
            };
            let w: Vec<f64> = (0..c).map(|k| 0.5 + (k % 3) as f64).collect();
            let w = tensor(w, &[c], dtype);
            for (p, margin) in [(1u32, 1.0), (2, 1.0), (1, -0.5), (2, 0.3)] {
                for weight in [None, Some(&w)] {
                    let f: MultiLoss = &|t, r| multi_margin_loss(&t[0], &y, p, margin, weight, r);
                    for red in REDUCTIONS {
                        let what = format!(
                            "multi_margin [{n}, {c}] {dtype:?} p {p} margin {margin} weight {}",
                            weight.is_some()
                        );
                        assert_paths_agree(&what, f, std::slice::from_ref(&x), red, rel, abs);
                    }
                }
            }
        }
    }
}

#[test]
fn fused_cosine_embedding_equals_composite() {
    for dtype in [DType::F64, DType::F32] {
        let (rel, abs) = tolerance(dtype);
        for shape in [vec![7usize], vec![5, 3], vec![300, 128], vec![7000, 5]] {
            let xs = embeddings(10, &shape, dtype);
            let y = labels(11, &shape[..shape.len() - 1], dtype);
            for margin in [0.0, 0.3, -0.5] {
                let f: MultiLoss = &|t, r| cosine_embedding_loss(&t[0], &t[1], &y, margin, r);
                for r in REDUCTIONS {
                    let what = format!("cosine_embedding {shape:?} {dtype:?} margin {margin}");
                    assert_paths_agree(&what, f, &xs[..2], r, rel, abs);
                }
            }
        }
    }
}

#[test]
fn fused_triplet_margin_equals_composite() {
    for dtype in [DType::F64, DType::F32] {
        let (rel, abs) = tolerance(dtype);
        for shape in [vec![7usize], vec![5, 3], vec![300, 128], vec![7000, 5]] {
            let xs = embeddings(12, &shape, dtype);
            // f32: margin + d(a, p) − d(a, n) cancels; a few ulp of the distances (≈ 10).
            let abs = if dtype == DType::F32 { 2e-5 } else { abs };
            for (margin, eps) in [(1.0, 1e-6), (0.5, 0.0), (2.0, 0.1)] {
                let f: MultiLoss = &|t, r| triplet_margin_loss(&t[0], &t[1], &t[2], margin, 2.0, eps, false, r);
                let g: MultiLoss = &|t, r| {
                    triplet_margin_with_distance_loss(&t[0], &t[1], &t[2], TripletDistance::Euclidean, margin, false, r)
                };
                for r in REDUCTIONS {
                    let what = format!("triplet_margin {shape:?} {dtype:?} margin {margin} eps {eps}");
                    assert_paths_agree(&what, f, &xs, r, rel, abs);
                    assert_paths_agree(&format!("{what} with distance"), g, &xs, r, rel, abs);
                }
            }
        }
    }
}
