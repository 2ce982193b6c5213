//! Edge cases of the fused CPU kernels: sizes around the chunk / block / parallel thresholds,
//! non-contiguous and empty inputs, upstream gradients ≠ 1, a second backward, gradients w.r.t.
//! the target only, non-finite inputs, and the f32 `exp` / `ln` approximations over many inputs.

use candle_core::{DType, Device, Result, Tensor, Var};
use loss_core::kernel::{exp_f32, ln1p_unit_f32, ln_f32};
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
        ("huber", |x, t, r| huber_loss(x, t, 1.5, r)),
        ("bce_with_logits", |x, t, r| {
            binary_cross_entropy_with_logits(x, t, None, None, r)
        }),
        ("sigmoid_focal", |x, t, r| sigmoid_focal_loss(x, t, 0.25, 2.0, r)),
        ("sigmoid_focal g1.5", |x, t, r| sigmoid_focal_loss(x, t, -1.0, 1.5, r)),
        ("kl_div", |x, t, r| kl_div(x, t, false, r)),
        ("kl_div log_target", |x, t, r| kl_div(x, t, true, r)),
    ]
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

fn data(seed: u64, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f64> = (0..n).map(|_| r.gen_range(-5.0..5.0)).collect();
    let t: Vec<f64> = (0..n)
        .map(|i| {
            if i % 3 == 0 {
                r.gen_range(0.0..1.0)
            } else {
                (i % 2) as f64
            }
        })
        .collect();
    (x, t)
}

fn tensors(seed: u64, n: usize, dtype: DType) -> (Tensor, Tensor) {
    let (x, t) = data(seed, n);
    let dev = Device::Cpu;
    (
        Tensor::from_vec(x, n, &dev).unwrap().to_dtype(dtype).unwrap(),
        Tensor::from_vec(t, n, &dev).unwrap().to_dtype(dtype).unwrap(),
    )
}

/// `|a − b| ≤ abs + rel·max(|a|, |b|)` elementwise, where `abs` also grows with the largest
/// finite `|b|` of the vector (f32 gradients like `σ(x) − t` cancel).
fn assert_close(what: &str, a: &[f64], b: &[f64], rel: f64, abs: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let big = b.iter().filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(v.abs()));
    let abs = abs + rel * 0.1 * big;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let ok = x == y || (x.is_nan() && y.is_nan()) || (x - y).abs() <= abs + rel * x.abs().max(y.abs());
        assert!(ok, "{what}[{i}]: fused {x} vs composite {y}");
    }
}

fn tol(dtype: DType) -> (f64, f64) {
    if dtype == DType::F64 {
        (1e-9, 1e-12)
    } else {
        (2e-5, 2e-6)
    }
}

/// The value and the gradients w.r.t. x and t (both Vars) of `head(loss)`.
fn run_with(
    f: Pair,
    x: &Tensor,
    t: &Tensor,
    r: Reduction,
    head: impl Fn(&Tensor) -> Result<Tensor>,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (vx, vt) = (Var::from_tensor(x).unwrap(), Var::from_tensor(t).unwrap());
    let out = f(vx.as_tensor(), vt.as_tensor(), r).unwrap();
    let g = head(&out).unwrap().backward().unwrap();
    // A missing gradient (nothing reached the Var) reads as empty: fused and composite must agree.
    let get = |v: &Var| g.get(v.as_tensor()).map(flat).unwrap_or_default();
    (flat(&out), get(&vx), get(&vt))
}

fn compare(what: &str, f: Pair, x: &Tensor, t: &Tensor, r: Reduction, head: impl Fn(&Tensor) -> Result<Tensor> + Copy) {
    let fused = run_with(f, x, t, r, head);
    let comp = with_path(Path::Composite, || run_with(f, x, t, r, head));
    let (rel, abs) = tol(x.dtype());
    // The mean of many f32 values: the composite sums in f32.
    let vrel = if x.dtype() == DType::F32 && r != Reduction::None {
        1e-4
    } else {
        rel
    };
    assert_close(&format!("{what} value"), &fused.0, &comp.0, vrel, abs);
    assert_close(&format!("{what} d/dx"), &fused.1, &comp.1, rel, abs);
    assert_close(&format!("{what} d/dt"), &fused.2, &comp.2, rel, abs);
}

const SIZES: [usize; 14] = [0, 1, 7, 8, 9, 255, 256, 257, 16383, 16385, 32767, 32768, 32769, 65537];

#[test]
fn pointwise_sizes_around_thresholds() {
    for &n in &SIZES {
        for dtype in [DType::F32, DType::F64] {
            let (x, t) = tensors(n as u64, n, dtype);
            for (name, f) in losses() {
                for r in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                    if n == 0 && r == Reduction::Mean {
                        continue; // checked in `empty_inputs`
                    }
                    compare(&format!("{name} n={n} {dtype:?} {r}"), f, &x, &t, r, |l| l.sum_all());
                }
            }
        }
    }
}

#[test]
fn empty_inputs() {
    for dtype in [DType::F32, DType::F64] {
        let x = Tensor::zeros((0, 3), dtype, &Device::Cpu).unwrap();
        for (name, f) in losses() {
            for r in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                let fused = run_with(f, &x, &x, r, |l| l.sum_all());
                let comp = with_path(Path::Composite, || run_with(f, &x, &x, r, |l| l.sum_all()));
                assert_close(
                    &format!("{name} empty {dtype:?} {r} value"),
                    &fused.0,
                    &comp.0,
                    0.0,
                    0.0,
                );
                assert_close(&format!("{name} empty {dtype:?} {r} d/dx"), &fused.1, &comp.1, 0.0, 0.0);
                assert_close(&format!("{name} empty {dtype:?} {r} d/dt"), &fused.2, &comp.2, 0.0, 0.0);
            }
        }
    }
}

#[test]
fn upstream_not_one_and_losses_used_twice() {
    type Head = fn(&Tensor) -> Result<Tensor>;
    let heads: [(&str, Head); 5] = [
        ("x3", |l| l.sum_all()?.affine(3.0, 0.0)),
        ("x0", |l| l.sum_all()?.affine(0.0, 0.0)),
        ("sqr", |l| l.sum_all()?.sqr()),
        ("twice", |l| {
            let s = l.sum_all()?;
            s.add(&s)
        }),
        ("neg half", |l| l.sum_all()?.affine(-0.5, 0.0)),
    ];
    for n in [5, 40000] {
        for dtype in [DType::F32, DType::F64] {
            let (x, t) = tensors(9, n, dtype);
            let x = x.reshape((n / 5, 5)).unwrap();
            let t = t.reshape((n / 5, 5)).unwrap();
            for (name, f) in losses() {
                for r in [Reduction::None, Reduction::Mean, Reduction::Sum, Reduction::BatchMean] {
                    if r == Reduction::BatchMean && !name.starts_with("kl") {
                        continue;
                    }
                    for (h, head) in heads {
                        compare(&format!("{name} n={n} {dtype:?} {r} {h}"), f, &x, &t, r, head);
                    }
                }
            }
        }
    }
}

#[test]
fn backward_twice_gives_the_same_gradient() {
    for n in [6, 40000] {
        for dtype in [DType::F32, DType::F64] {
            let (x, t) = tensors(2, n, dtype);
            for (name, f) in losses() {
                for r in [Reduction::Mean, Reduction::Sum] {
                    let vx = Var::from_tensor(&x).unwrap();
                    let out = f(vx.as_tensor(), &t, r).unwrap();
                    let g1 = flat(out.backward().unwrap().get(vx.as_tensor()).unwrap());
                    let g2 = flat(out.backward().unwrap().get(vx.as_tensor()).unwrap());
                    let out3 = out.affine(2.0, 0.0).unwrap();
                    let g3: Vec<f64> = flat(out3.backward().unwrap().get(vx.as_tensor()).unwrap())
                        .iter()
                        .map(|v| v / 2.0)
                        .collect();
                    let (rel, abs) = tol(dtype);
                    assert_close(&format!("{name} n={n} {dtype:?} {r} second"), &g2, &g1, rel, abs);
                    assert_close(&format!("{name} n={n} {dtype:?} {r} third (x2)"), &g3, &g1, rel, abs);
                }
            }
        }
    }
}

/// Gradients w.r.t. the target only (plain input tensor), and w.r.t. the input with a plain target.
#[test]
fn one_side_tracks() {
    for n in [9, 33000] {
        for dtype in [DType::F32, DType::F64] {
            let (x, t) = tensors(5, n, dtype);
            for (name, f) in losses() {
                for r in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                    let go = |wrt_t: bool| {
                        let v = Var::from_tensor(if wrt_t { &t } else { &x }).unwrap();
                        let out = if wrt_t {
                            f(&x, v.as_tensor(), r)
                        } else {
                            f(v.as_tensor(), &t, r)
                        }
                        .unwrap();
                        let g = out.sum_all().unwrap().affine(1.5, 0.0).unwrap().backward().unwrap();
                        flat(g.get(v.as_tensor()).unwrap())
                    };
                    let (rel, abs) = tol(dtype);
                    for wrt_t in [false, true] {
                        let a = go(wrt_t);
                        let b = with_path(Path::Composite, || go(wrt_t));
                        assert_close(&format!("{name} n={n} {dtype:?} {r} wrt_t={wrt_t}"), &a, &b, rel, abs);
                    }
                }
            }
        }
    }
}

#[test]
fn non_contiguous_inputs() {
    for dtype in [DType::F32, DType::F64] {
        let (x, t) = tensors(7, 40 * 37, dtype);
        let x = x.reshape((40, 37)).unwrap();
        let t = t.reshape((40, 37)).unwrap();
        // Transposed, narrowed (offset, contiguous rows), narrowed along dim 1 (strided), broadcast.
        let xt = x.t().unwrap();
        let tt = t.t().unwrap();
        let xn = x.narrow(0, 3, 30).unwrap();
        let tn = t.narrow(0, 5, 30).unwrap();
        let xs = x.narrow(1, 2, 20).unwrap();
        let ts = t.narrow(1, 9, 20).unwrap();
        let tb = t.narrow(0, 4, 1).unwrap().broadcast_as((40, 37)).unwrap();
        for (name, f) in losses() {
            for r in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                for (k, (a, b)) in [(&xt, &tt), (&xn, &tn), (&xs, &ts), (&x, &tb)].into_iter().enumerate() {
                    // Leaf views are not Vars; differentiate through them from the Var.
                    let go = || {
                        let (vx, vt) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&t).unwrap());
                        let view = |v: &Tensor, which: usize, is_t: bool| -> Tensor {
                            match (which, is_t) {
                                (0, _) => v.t().unwrap(),
                                (1, false) => v.narrow(0, 3, 30).unwrap(),
                                (1, true) => v.narrow(0, 5, 30).unwrap(),
                                (2, false) => v.narrow(1, 2, 20).unwrap(),
                                (2, true) => v.narrow(1, 9, 20).unwrap(),
                                (3, false) => v.clone(),
                                _ => v.narrow(0, 4, 1).unwrap().broadcast_as((40, 37)).unwrap(),
                            }
                        };
                        let (va, vb) = (view(vx.as_tensor(), k, false), view(vt.as_tensor(), k, true));
                        assert_eq!(va.dims(), a.dims());
                        assert_eq!(vb.dims(), b.dims());
                        let out = f(&va, &vb, r).unwrap();
                        let g = out.sum_all().unwrap().affine(0.7, 0.0).unwrap().backward().unwrap();
                        (
                            flat(&out),
                            flat(g.get(vx.as_tensor()).unwrap()),
                            flat(g.get(vt.as_tensor()).unwrap()),
                        )
                    };
                    let fu = go();
                    let co = with_path(Path::Composite, go);
                    let (rel, abs) = tol(dtype);
                    let what = format!("{name} view {k} {dtype:?} {r}");
                    assert_close(&format!("{what} value"), &fu.0, &co.0, rel.max(1e-5), abs);
                    assert_close(&format!("{what} d/dx"), &fu.1, &co.1, rel, abs);
                    assert_close(&format!("{what} d/dt"), &fu.2, &co.2, rel, abs);
                }
            }
        }
    }
}

#[test]
fn extreme_finite_inputs() {
    // Finite extremes only: with NaN / ±inf inputs the composite path itself differs from
    // PyTorch in places (e.g. its Smooth L1 gradient at x = inf is NaN, PyTorch's 1).
    let specials = [1e30, -1e30, 1e-40, -1e-40, 0.0, -0.0, 88.7201, -120.0, 3.0e38];
    let mut x = Vec::new();
    let mut t = Vec::new();
    for &a in &specials {
        for &b in &[0.0, 1.0, 0.5, 1e-40, -2.0, 88.7201, 1e-30] {
            x.push(a);
            t.push(b);
        }
    }
    let n = x.len();
    let mut all = Vec::new();
    for dtype in [DType::F64, DType::F32] {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(x.clone(), n, &dev).unwrap().to_dtype(dtype).unwrap();
        let t = Tensor::from_vec(t.clone(), n, &dev).unwrap().to_dtype(dtype).unwrap();
        for (name, f) in losses() {
            let fused = run_with(f, &x, &t, Reduction::None, |l| l.sum_all());
            let comp = with_path(Path::Composite, || {
                run_with(f, &x, &t, Reduction::None, |l| l.sum_all())
            });
            let mut bad = Vec::new();
            for (k, what) in [(0, "value"), (1, "d/dx"), (2, "d/dt")] {
                let (a, b) = match k {
                    0 => (&fused.0, &comp.0),
                    1 => (&fused.1, &comp.1),
                    _ => (&fused.2, &comp.2),
                };
                for i in 0..n {
                    let ti = flat(&t)[i];
                    if name.starts_with("sigmoid_focal") && !(0.0..=1.0).contains(&ti) {
                        continue; // targets outside [0, 1]: no defined value
                    }
                    let (u, v) = (a[i], b[i]);
                    let ok =
                        u == v || (u.is_nan() && v.is_nan()) || (u - v).abs() <= 1e-4 * u.abs().max(v.abs()) + 1e-6;
                    if !ok {
                        bad.push(format!(
                            "{what} x={} t={}: fused {u} composite {v}",
                            flat(&x)[i],
                            flat(&t)[i]
                        ));
                    }
                }
            }
            if !bad.is_empty() {
                all.push(format!(
                    "{name} {dtype:?}: {} mismatches, first: {:#?}",
                    bad.len(),
                    &bad[..bad.len().min(6)]
                ));
            }
        }
    }
    assert!(all.is_empty(), "{}", all.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy

fn ce_data(seed: u64, n: usize, c: usize, ignore: i64) -> (Vec<f64>, Vec<i64>) {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f64> = (0..n * c).map(|_| r.gen_range(-8.0..8.0)).collect();
    let y: Vec<i64> = (0..n)
        .map(|i| if i % 7 == 3 { ignore } else { r.gen_range(0..c as i64) })
        .collect();
    (x, y)
}

type Ce<'a> = (Option<&'a Tensor>, i64, f64, Reduction);

fn ce_go(x: &Tensor, y: &Tensor, o: Ce, head: impl Fn(&Tensor) -> Result<Tensor>) -> (Vec<f64>, Vec<f64>) {
    let vx = Var::from_tensor(x).unwrap();
    let out = cross_entropy(vx.as_tensor(), y, o.0, o.1, o.2, o.3).unwrap();
    let g = head(&out).unwrap().backward().unwrap();
    (flat(&out), flat(g.get(vx.as_tensor()).unwrap()))
}

fn ce_compare(what: &str, x: &Tensor, y: &Tensor, o: Ce, head: impl Fn(&Tensor) -> Result<Tensor> + Copy) {
    let fu = ce_go(x, y, o, head);
    let co = with_path(Path::Composite, || ce_go(x, y, o, head));
    let (rel, abs) = if x.dtype() == DType::F64 {
        (1e-9, 1e-12)
    } else {
        (1e-4, 1e-6)
    };
    assert_close(&format!("{what} value"), &fu.0, &co.0, rel, abs);
    assert_close(&format!("{what} grad"), &fu.1, &co.1, rel, abs);
}

#[test]
fn cross_entropy_rows_around_thresholds() {
    let dev = Device::Cpu;
    let sum: fn(&Tensor) -> Result<Tensor> = |l| l.sum_all();
    for (c, ns) in [
        (1usize, vec![0usize, 1, 7, 32767, 32768, 32769]),
        (2, vec![16383, 16384, 16385]),
        (3, vec![10922, 10923, 16384 * 2 + 1]),
        (9, vec![1, 3641, 3642]),
        (1000, vec![1, 32, 33, 17]),
        (20000, vec![2, 3]),
    ] {
        for n in ns {
            let (x, y) = ce_data((n * 31 + c) as u64, n, c, -100);
            let w: Vec<f64> = (0..c).map(|k| [0.5, 1.0, 2.0, 0.0, 1.5][k % 5]).collect();
            let w = Tensor::from_vec(w, c, &dev).unwrap();
            for dtype in [DType::F32, DType::F64] {
                let x = Tensor::from_vec(x.clone(), (n, c), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let y = Tensor::from_vec(y.clone(), n, &dev).unwrap();
                let w = w.to_dtype(dtype).unwrap();
                for r in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                    for (wt, ls) in [(None, 0.0), (Some(&w), 0.2)] {
                        let what = format!("ce n={n} c={c} {dtype:?} {r} w={} ls={ls}", wt.is_some());
                        ce_compare(&what, &x, &y, (wt, -100, ls, r), sum);
                    }
                }
            }
        }
    }
}

#[test]
fn cross_entropy_options_and_edge_cases() {
    let dev = Device::Cpu;
    type Head = fn(&Tensor) -> Result<Tensor>;
    let heads: [(&str, Head); 4] = [
        ("sum", |l| l.sum_all()),
        ("x3", |l| l.sum_all()?.affine(3.0, 0.0)),
        ("sqr", |l| l.sum_all()?.sqr()),
        ("twice", |l| {
            let s = l.sum_all()?;
            s.add(&s)
        }),
    ];
    for (n, c) in [(11usize, 4usize), (9000, 4)] {
        for dtype in [DType::F32, DType::F64] {
            let (xv, yv) = ce_data(17, n, c, 1);
            let x = Tensor::from_vec(xv, (n, c), &dev).unwrap().to_dtype(dtype).unwrap();
            let y = Tensor::from_vec(yv.clone(), n, &dev).unwrap();
            let y_u32 = y.to_dtype(DType::U32).unwrap();
            let y_u8 = y.to_dtype(DType::U8).unwrap();
            let all_ignored = Tensor::full(1i64, n, &dev).unwrap();
            let w0 = Tensor::new(&[0.0f64, 2.0, 0.0, 0.5], &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let wz = Tensor::zeros(c, dtype, &dev).unwrap();
            for r in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                for (h, head) in heads {
                    for (yname, yy) in [
                        ("i64", &y),
                        ("u32", &y_u32),
                        ("u8", &y_u8),
                        ("all ignored", &all_ignored),
                    ] {
                        for (wn, wt) in [("none", None), ("zeros in", Some(&w0)), ("all zero", Some(&wz))] {
                            for ls in [0.0, 0.3, 1.0] {
                                // A zero denominator makes the mean NaN; d(NaN²) is then NaN
                                // times a zero in places, where the composite path says 0.
                                let nan_mean = r == Reduction::Mean && (yname == "all ignored" || wn != "none");
                                if nan_mean && h == "sqr" {
                                    continue;
                                }
                                let what = format!("ce n={n} {dtype:?} {r} {h} y={yname} w={wn} ls={ls}");
                                ce_compare(&what, &x, yy, (wt, 1, ls, r), head);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn cross_entropy_backward_twice_and_views() {
    let dev = Device::Cpu;
    for dtype in [DType::F32, DType::F64] {
        let (xv, yv) = ce_data(23, 700, 6, -100);
        let x = Tensor::from_vec(xv, (700, 6), &dev).unwrap().to_dtype(dtype).unwrap();
        let y = Tensor::from_vec(yv, 700, &dev).unwrap();
        for r in [Reduction::Mean, Reduction::Sum] {
            let vx = Var::from_tensor(&x).unwrap();
            let out = cross_entropy(vx.as_tensor(), &y, None, -100, 0.1, r).unwrap();
            let g1 = flat(out.backward().unwrap().get(vx.as_tensor()).unwrap());
            let g2 = flat(out.backward().unwrap().get(vx.as_tensor()).unwrap());
            assert_close(&format!("ce {dtype:?} {r} second backward"), &g2, &g1, 1e-6, 1e-9);
        }
        // Transposed logits: a [C, N] tensor's transpose, and [N, C, d] spatial logits.
        let go = || {
            let v = Var::from_tensor(&x.t().unwrap().contiguous().unwrap()).unwrap();
            let out = cross_entropy(&v.as_tensor().t().unwrap(), &y, None, -100, 0.0, Reduction::Mean).unwrap();
            let g = out.backward().unwrap();
            (flat(&out), flat(g.get(v.as_tensor()).unwrap()))
        };
        let (a, b) = (go(), with_path(Path::Composite, go));
        assert_close("ce transposed value", &a.0, &b.0, 1e-5, 1e-7);
        assert_close("ce transposed grad", &a.1, &b.1, 1e-5, 1e-7);
        let x3 = x.reshape((70, 6, 10)).unwrap();
        let y3 = y.reshape((70, 10)).unwrap().narrow(1, 0, 10).unwrap();
        ce_compare("ce [N, C, d]", &x3, &y3, (None, -100, 0.0, Reduction::Mean), |l| {
            l.sum_all()
        });
        ce_compare("ce [N, C, d] none", &x3, &y3, (None, -100, 0.0, Reduction::None), |l| {
            l.sqr()?.sum_all()
        });
    }
}

#[test]
fn cross_entropy_non_finite_logits() {
    let dev = Device::Cpu;
    let rows: Vec<[f64; 4]> = vec![
        [f64::INFINITY, 0.0, 1.0, 2.0],
        [f64::NEG_INFINITY, 0.0, 1.0, 2.0],
        [f64::NEG_INFINITY; 4],
        [f64::NAN, 0.0, 1.0, 2.0],
        [1e30, -1e30, 0.0, 0.0],
        [100.0, 100.0, 100.0, 100.0],
        [-100.0, 0.0, 3e38, 0.0],
        [1e-40, 0.0, -1e-40, 0.0],
    ];
    for dtype in [DType::F64, DType::F32] {
        for (i, row) in rows.iter().enumerate() {
            for y in 0..4i64 {
                let x = Tensor::new(&[*row], &dev).unwrap().to_dtype(dtype).unwrap();
                let t = Tensor::new(&[y], &dev).unwrap();
                for r in [Reduction::None, Reduction::Sum] {
                    let go = || ce_go(&x, &t, (None, -100, 0.0, r), |l| l.sum_all());
                    let (a, b) = (go(), with_path(Path::Composite, go));
                    assert_close(&format!("ce row {i} y={y} {dtype:?} {r} value"), &a.0, &b.0, 1e-5, 1e-6);
                    assert_close(&format!("ce row {i} y={y} {dtype:?} {r} grad"), &a.1, &b.1, 1e-5, 1e-6);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The f32 approximations

fn ulps(a: f32, b: f32) -> u64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        return 0;
    }
    if a.is_nan() != b.is_nan() {
        return u64::MAX;
    }
    // Ordered integer line through 0.
    let key = |v: f32| {
        let b = v.to_bits() as i64;
        if b < 0x8000_0000 {
            b
        } else {
            -(b - 0x8000_0000)
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

/// Asserts `f` within 2 ulp of `want` at every 13th f32 bit pattern up to `last` (inclusive),
/// naming the worst input.
fn sweep_every_13th(name: &str, last: u32, f: fn(f32) -> f32, want: fn(f32) -> f32) {
    let mut worst = (0u64, 0.0f32, 0.0f32, 0.0f32);
    let mut b = 0u64;
    while b <= last as u64 {
        let x = f32::from_bits(b as u32);
        let (got, want) = (f(x), want(x));
        let u = ulps(got, want);
        if u > worst.0 {
            worst = (u, x, got, want);
        }
        b += 13;
    }
    assert!(
        worst.0 <= 2,
        "{name}: {} ulp at x = {:e}: got {:e}, want {:e}",
        worst.0,
        worst.1,
        worst.2,
        worst.3
    );
}

#[test]
fn exp_f32_every_13th_bit_pattern() {
    sweep_every_13th("exp_f32", u32::MAX, exp_f32, |x| (x as f64).exp() as f32);
}

#[test]
fn exp_f32_special_values() {
    assert_eq!(exp_f32(-0.0), 1.0);
    assert_eq!(exp_f32(f32::from_bits(1)), 1.0);
    assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
    assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
    assert!(exp_f32(f32::NAN).is_nan());
    assert!(exp_f32(-f32::NAN).is_nan());
    // Regression: (88.72, 88.72283] overflowed to inf. The largest finite result is at 88.72283;
    // the next f32, 88.72284, rounds past f32::MAX.
    let x = 88.722_83f32;
    assert!(((x as f64).exp() as f32).is_finite());
    assert_eq!(exp_f32(x), (x as f64).exp() as f32, "exp_f32({x})");
    assert!(ulps(exp_f32(88.720_1), (88.720_1f32 as f64).exp() as f32) <= 2);
    let next = f32::from_bits(x.to_bits() + 1);
    assert_eq!(((next as f64).exp() as f32), f32::INFINITY);
    assert_eq!(exp_f32(next), f32::INFINITY);
}

#[test]
fn ln_f32_every_13th_bit_pattern() {
    sweep_every_13th("ln_f32", u32::MAX, ln_f32, |x| {
        if x < 0.0 {
            f32::NAN
        } else {
            (x as f64).ln() as f32
        }
    });
    for x in [
        f32::from_bits(1),
        f32::MIN_POSITIVE,
        f32::MAX,
        1.0,
        std::f32::consts::E,
        0.5,
        2.0,
    ] {
        assert!(ulps(ln_f32(x), (x as f64).ln() as f32) <= 2, "ln_f32({x:e})");
    }
    assert!(ln_f32(-f32::from_bits(1)).is_nan());
    assert!(ln_f32(f32::NEG_INFINITY).is_nan());
}

#[test]
fn ln1p_unit_f32_every_13th_bit_pattern() {
    sweep_every_13th("ln1p_unit_f32", 1.0f32.to_bits(), ln1p_unit_f32, |x| {
        (x as f64).ln_1p() as f32
    });
    assert_eq!(ln1p_unit_f32(1.0), (2.0f64.ln()) as f32);
    assert_eq!(ln1p_unit_f32(-0.0).to_bits(), (-0.0f32).to_bits());
}

// ---------------------------------------------------------------------------------------------
// The fused kernels of losses of several inputs and of rows (Gaussian NLL, multi-label soft
// margin, multi-class margin, cosine embedding, triplet margin): views, empty inputs, a second
// backward, one input that tracks, non-finite and extreme inputs, and the checks made inside
// the kernel.

use loss_core::testing::{assert_paths_agree, value_and_grads, MultiLoss};

/// The five losses as functions of three `[N, D]` float tensors (the labels fixed by the row
/// count); `t[1]` doubles as the target of the losses of two inputs.
/// A loss of several float inputs, owned.
type BoxedLoss = Box<dyn Fn(&[Tensor], Reduction) -> Result<Tensor>>;

fn row_losses() -> Vec<(&'static str, BoxedLoss)> {
    fn signs(x: &Tensor) -> Result<Tensor> {
        let n = x.dims()[..x.rank() - 1].iter().product::<usize>();
        let y: Vec<f64> = (0..n).map(|i| if i % 3 == 0 { -1.0 } else { 1.0 }).collect();
        Tensor::from_vec(y, &x.dims()[..x.rank() - 1], x.device())?.to_dtype(x.dtype())
    }
    fn classes(x: &Tensor) -> Result<Tensor> {
        let c = *x.dims().last().unwrap() as i64;
        let n = x.dims()[..x.rank() - 1].iter().product::<usize>();
        let y: Vec<i64> = (0..n as i64).map(|i| (i * 7) % c.max(1)).collect();
        Tensor::from_vec(y, &x.dims()[..x.rank() - 1], x.device())
    }
    vec![
        (
            "gaussian_nll",
            Box::new(|t, r| gaussian_nll_loss(&t[0], &t[1], &t[2].abs()?, false, 1e-6, r)),
        ),
        (
            "margin_ranking",
            Box::new(|t, r| margin_ranking_loss(&t[0], &t[1], &t[2], 0.5, r)),
        ),
        (
            "multilabel_soft_margin",
            Box::new(|t, r| multilabel_soft_margin_loss(&t[0], &t[1], None, r)),
        ),
        (
            "multi_margin",
            Box::new(|t, r| multi_margin_loss(&t[0], &classes(&t[0])?, 2, 1.0, None, r)),
        ),
        (
            "cosine_embedding",
            Box::new(|t, r| cosine_embedding_loss(&t[0], &t[1], &signs(&t[0])?, 0.1, r)),
        ),
        (
            "triplet_margin",
            Box::new(|t, r| triplet_margin_loss(&t[0], &t[1], &t[2], 1.0, 2.0, 1e-6, false, r)),
        ),
    ]
}

fn three(seed: u64, shape: &[usize], dtype: DType) -> Vec<Tensor> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    (0..3)
        .map(|_| {
            let v: Vec<f64> = (0..n).map(|_| r.gen_range(-3.0..3.0)).collect();
            Tensor::from_vec(v, shape, &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        })
        .collect()
}

#[test]
fn row_kernels_on_views_and_around_thresholds() {
    for (name, f) in row_losses() {
        let f: MultiLoss = &*f;
        // Rows of 128 (chunks of 128 rows, parallel from 256) and of 3; a transposed view.
        for (shape, dtype) in [
            (vec![127usize, 128], DType::F64),
            (vec![128, 128], DType::F64),
            (vec![257, 128], DType::F32),
            (vec![10_923, 3], DType::F32),
            (vec![1, 1], DType::F64),
        ] {
            let (rel, abs) = if dtype == DType::F64 {
                (1e-9, 1e-12)
            } else {
                (2e-4, 1e-5)
            };
            let xs = three(21, &shape, dtype);
            for r in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                assert_paths_agree(&format!("{name} {shape:?}"), f, &xs, r, rel, abs);
            }
            let views: Vec<Tensor> = three(22, &[shape[1], shape[0]], dtype)
                .iter()
                .map(|t| t.t().unwrap())
                .collect();
            assert!(shape[0] == 1 || !views[0].is_contiguous());
            assert_paths_agree(&format!("{name} {shape:?} view"), f, &views, Reduction::Mean, rel, abs);
        }
    }
}

#[test]
fn row_kernels_on_empty_inputs() {
    for (name, f) in row_losses() {
        let f: MultiLoss = &*f;
        for shape in [[0usize, 4], [3, 0]] {
            if name == "multi_margin" && shape[1] == 0 {
                continue; // no class index is valid
            }
            let xs = three(23, &shape, DType::F32);
            for r in [Reduction::None, Reduction::Sum] {
                let fused = value_and_grads(Path::Fused, f, &xs, r);
                let comp = value_and_grads(Path::Composite, f, &xs, r);
                assert_close(&format!("{name} {shape:?} {r} value"), &fused.0, &comp.0, 0.0, 0.0);
                assert_eq!(fused.1, comp.1, "{name} {shape:?} {r} gradients");
            }
        }
    }
}

/// The gradients the forward keeps serve a second backward through the same graph, and an
/// input that does not track gets none while the others get theirs.
#[test]
fn row_kernels_backward_twice_and_one_input_tracking() {
    for (name, f) in row_losses() {
        let xs = three(24, &[300, 17], DType::F32);
        for r in [Reduction::Mean, Reduction::None] {
            let v = Var::from_tensor(&xs[0]).unwrap();
            let out = f(&[v.as_tensor().clone(), xs[1].clone(), xs[2].clone()], r).unwrap();
            let loss = (out.sum_all().unwrap() * 2.5).unwrap();
            let first = flat(loss.backward().unwrap().get(v.as_tensor()).unwrap());
            let second = flat(loss.backward().unwrap().get(v.as_tensor()).unwrap());
            assert_close(&format!("{name} {r} second backward"), &second, &first, 0.0, 0.0);
            let comp = with_path(Path::Composite, || {
                let out = f(&[v.as_tensor().clone(), xs[1].clone(), xs[2].clone()], r).unwrap();
                let loss = (out.sum_all().unwrap() * 2.5).unwrap();
                flat(loss.backward().unwrap().get(v.as_tensor()).unwrap())
            });
            assert_close(&format!("{name} {r} one input tracks"), &first, &comp, 2e-4, 1e-5);
        }
    }
}

#[test]
fn row_kernels_non_finite_inputs() {
    let nan = f64::NAN;
    for (name, f) in row_losses() {
        let f: MultiLoss = &*f;
        let mut xs = three(25, &[4, 5], DType::F64);
        let mut v = flat(&xs[0]);
        v[2] = nan;
        v[13] = f64::INFINITY;
        xs[0] = Tensor::from_vec(v, (4, 5), &Device::Cpu).unwrap();
        let fused = value_and_grads(Path::Fused, f, &xs, Reduction::None);
        let comp = value_and_grads(Path::Composite, f, &xs, Reduction::None);
        // The NaN (element 2, row 0) gives NaN on both paths. The inf (element 13, row 2) is left
        // out: the composite Gaussian NLL's `ops::div` turns inf/v into NaN where the kernel (and
        // PyTorch) give inf.
        let per_row = fused.0.len() == 4;
        let (nan, inf) = if per_row { (0, 2) } else { (2, 13) };
        assert!(fused.0[nan].is_nan() && comp.0[nan].is_nan(), "{name}: {:?}", fused.0);
        for i in (0..fused.0.len()).filter(|&i| i != nan && i != inf) {
            assert_close(
                &format!("{name} value[{i}]"),
                &fused.0[i..=i],
                &comp.0[i..=i],
                1e-9,
                1e-12,
            );
        }
        // Rows without a non-finite entry: the same gradients.
        for (k, (a, b)) in fused.1.iter().zip(&comp.1).enumerate() {
            for row in [1usize, 3] {
                let r = row * 5..row * 5 + 5;
                assert_close(
                    &format!("{name} d/dinput{k} row {row}"),
                    &a[r.clone()],
                    &b[r],
                    1e-9,
                    1e-12,
                );
            }
        }
    }
}

/// Norms whose sum of squares overflows or underflows f32 (1e20, 1e-25): the kernel recomputes
/// them on the scaled vector, as the composite form computes every norm.
#[test]
fn triplet_margin_extreme_magnitudes() {
    for scale in [1e20, 1e-25, 1e-40] {
        let xs: Vec<Tensor> = three(26, &[6, 9], DType::F64)
            .iter()
            .map(|t| (t * scale).unwrap().to_dtype(DType::F32).unwrap())
            .collect();
        let margin = 0.5 * scale;
        let f: MultiLoss = &|t, r| triplet_margin_loss(&t[0], &t[1], &t[2], margin, 2.0, 0.0, false, r);
        let fused = value_and_grads(Path::Fused, f, &xs, Reduction::None);
        let comp = value_and_grads(Path::Composite, f, &xs, Reduction::None);
        assert!(fused.0.iter().all(|v| v.is_finite()), "scale {scale}: {:?}", fused.0);
        assert_close(&format!("scale {scale} value"), &fused.0, &comp.0, 1e-5, 1e-6 * scale);
        for (k, (a, b)) in fused.1.iter().zip(&comp.1).enumerate() {
            assert_close(&format!("scale {scale} d/dinput{k}"), a, b, 1e-4, 1e-6);
        }
    }
}

/// The Gaussian NLL's check of `var` is made inside the fused kernel: the same error as the
/// composite form's.
#[test]
fn gaussian_nll_negative_var_is_the_same_error_on_both_paths() {
    let x = Tensor::new(&[[0.5f32, 1.0], [2.0, -1.0]], &Device::Cpu).unwrap();
    let v = Tensor::new(&[[0.5f32, 1.0], [-0.1, 1.0]], &Device::Cpu).unwrap();
    let fused = with_path(Path::Fused, || {
        gaussian_nll_loss(&x, &x, &v, false, 1e-6, Reduction::Mean)
    });
    let comp = with_path(Path::Composite, || {
        gaussian_nll_loss(&x, &x, &v, false, 1e-6, Reduction::Mean)
    });
    let (fused, comp) = (fused.unwrap_err().to_string(), comp.unwrap_err().to_string());
    assert_eq!(fused, comp);
    assert!(fused.starts_with("gaussian_nll_loss"), "{fused}");
}
