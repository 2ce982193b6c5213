//! The fused CPU kernels of the dense-detection losses equal their composite forms: values and
//! gradients (w.r.t. every float input the reference differentiates), f32 and f64, every
//! reduction, an upstream gradient ≠ 1 (elementwise for `none`), sizes around the chunk and
//! parallel thresholds (2¹⁴, 2¹⁵ elements), strided and empty inputs, non-default parameters
//! (the general exponent path, probabilities, label smoothing).

use candle_core::{DType, Device, Result, Tensor, Var};
use loss_bbox::{
    balanced_l1_loss, distribution_focal_loss, gaussian_focal_loss, poly1_cross_entropy, poly1_focal_loss,
    quality_focal_loss, quality_focal_loss_tensor_target, varifocal_loss,
};
use loss_core::kernel::{with_path, Path};
use loss_core::Reduction;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const REDUCTIONS: [Reduction; 3] = [Reduction::None, Reduction::Mean, Reduction::Sum];

/// An input: its values, shape, and whether it is differentiated.
struct In {
    v: Vec<f64>,
    shape: Vec<usize>,
    grad: bool,
    /// Class indices (u32) instead of floats.
    index: bool,
}

fn fl(v: Vec<f64>, shape: &[usize], grad: bool) -> In {
    In {
        v,
        shape: shape.to_vec(),
        grad,
        index: false,
    }
}

fn idx(v: Vec<f64>, shape: &[usize]) -> In {
    In {
        v,
        shape: shape.to_vec(),
        grad: false,
        index: true,
    }
}

type LossFn<'a> = &'a dyn Fn(&[Tensor], Reduction) -> Result<Tensor>;

/// The value and the gradients of `f` on `path`, with the upstream gradient `w` (elementwise,
/// seeded) or 0.7 for a reduced loss.
fn run(f: LossFn, inputs: &[In], dtype: DType, reduction: Reduction, path: Path, strided: bool) -> Vec<Vec<f64>> {
    let dev = Device::Cpu;
    let mut vars = Vec::new();
    let tensors: Vec<Tensor> = inputs
        .iter()
        .map(|i| {
            if i.index {
                let v: Vec<u32> = i.v.iter().map(|&x| x as u32).collect();
                return Tensor::from_vec(v, i.shape.as_slice(), &dev).unwrap();
            }
            let base = if strided {
                // The same values, read through a transpose of a transposed copy.
                let mut s = i.shape.clone();
                s.reverse();
                let t = Tensor::from_vec(i.v.clone(), i.shape.as_slice(), &dev).unwrap();
                let rank = i.shape.len();
                if rank >= 2 {
                    t.t().unwrap().contiguous().unwrap().t().unwrap()
                } else {
                    t
                }
            } else {
                Tensor::from_vec(i.v.clone(), i.shape.as_slice(), &dev).unwrap()
            };
            let base = base.to_dtype(dtype).unwrap();
            if i.grad {
                let v = Var::from_tensor(&base).unwrap();
                vars.push(v.clone());
                v.as_tensor().clone()
            } else {
                base
            }
        })
        .collect();
    let out = with_path(path, || f(&tensors, reduction)).unwrap();
    let n = out.elem_count();
    let w: Vec<f64> = (0..n).map(|k| 0.3 + (k % 7) as f64 * 0.25).collect();
    let w = if out.rank() == 0 {
        Tensor::new(0.7f64, &dev).unwrap()
    } else {
        Tensor::from_vec(w, out.shape(), &dev).unwrap()
    }
    .to_dtype(dtype)
    .unwrap();
    let total = with_path(path, || out.mul(&w)?.sum_all()).unwrap();
    let grads = with_path(path, || total.backward()).unwrap();
    let flat = |t: &Tensor| {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    };
    let mut res = vec![flat(&out)];
    for v in &vars {
        res.push(flat(grads.get(v.as_tensor()).expect("a gradient")));
    }
    res
}

fn check(what: &str, f: LossFn, inputs: &[In], dtype: DType, strided: bool) {
    let (rtol, atol) = if dtype == DType::F64 {
        (1e-9, 1e-12)
    } else {
        (3e-4, 3e-6)
    };
    for r in REDUCTIONS {
        let fused = run(f, inputs, dtype, r, Path::Fused, strided);
        let comp = run(f, inputs, dtype, r, Path::Composite, strided);
        assert_eq!(fused.len(), comp.len());
        for (k, (a, b)) in fused.iter().zip(&comp).enumerate() {
            assert_eq!(a.len(), b.len(), "{what} {dtype:?} {r:?} output {k}: lengths");
            let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (j, (x, y)) in a.iter().zip(b).enumerate() {
                let ok = (x - y).abs() <= atol * scale.max(1.0) + rtol * y.abs() || (x.is_nan() && y.is_nan());
                assert!(
                    ok,
                    "{what} {dtype:?} {r:?} strided {strided} output {k} [{j}]: fused {x} composite {y}"
                );
            }
        }
    }
}

fn all(what: &str, f: LossFn, make: &dyn Fn(&mut ChaCha8Rng, usize) -> Vec<In>, sizes: &[usize]) {
    let mut r = ChaCha8Rng::seed_from_u64(13);
    for &n in sizes {
        let inputs = make(&mut r, n);
        for dtype in [DType::F64, DType::F32] {
            check(&format!("{what} n={n}"), f, &inputs, dtype, false);
        }
        if n > 0 && n < 5000 {
            check(&format!("{what} n={n}"), f, &inputs, DType::F64, true);
        }
    }
}

fn normal(r: &mut ChaCha8Rng, n: usize, s: f64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let (u, v): (f64, f64) = (r.gen_range(1e-12..1.0), r.gen());
            s * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        })
        .collect()
}

fn unif(r: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| r.gen()).collect()
}

/// Element counts around the thresholds of the elementwise kernels.
const ELEMS: [usize; 6] = [1, 7, (1 << 14) - 1, (1 << 14) + 1, (1 << 15) + 3, 70_001];

#[test]
fn varifocal_fused_equals_composite() {
    let make = |r: &mut ChaCha8Rng, n: usize| {
        let t: Vec<f64> = unif(r, n)
            .into_iter()
            .enumerate()
            .map(|(k, u)| if k % 3 == 0 { u } else { 0.0 })
            .collect();
        vec![fl(normal(r, n, 2.0), &[n, 1], true), fl(t, &[n, 1], true)]
    };
    for (gamma, iw) in [(2.0, true), (1.5, false), (0.0, true)] {
        let f = move |x: &[Tensor], red| varifocal_loss(&x[0], &x[1], 0.6, gamma, iw, red);
        all(&format!("varifocal gamma {gamma}"), &f, &make, &ELEMS);
    }
}

#[test]
fn quality_focal_labels_fused_equals_composite() {
    let make = |c: usize| {
        move |r: &mut ChaCha8Rng, n: usize| {
            let label: Vec<f64> = (0..n).map(|_| r.gen_range(0..=c) as f64).collect();
            let x = normal(r, n * c, 2.0);
            let p: Vec<f64> = unif(r, n * c).into_iter().map(|u| 0.02 + 0.96 * u).collect();
            let score = unif(r, n);
            (x, p, label, score)
        }
    };
    for c in [1usize, 13, 80] {
        for (beta, activated) in [(2.0, false), (1.5, false), (2.0, true), (2.5, true)] {
            let m = make(c);
            let mk = move |r: &mut ChaCha8Rng, n: usize| {
                let (x, p, label, score) = m(r, n);
                vec![
                    fl(if activated { p } else { x }, &[n, c], true),
                    idx(label, &[n]),
                    fl(score, &[n], true),
                ]
            };
            let f = move |x: &[Tensor], red| quality_focal_loss(&x[0], &x[1], &x[2], beta, activated, red);
            let rows = [1, 3, (1 << 15) / c + 2];
            all(&format!("qfl C={c} beta {beta} activated {activated}"), &f, &mk, &rows);
        }
    }
}

#[test]
fn quality_focal_dense_target_fused_equals_composite() {
    for (beta, activated) in [(2.0, false), (1.5, true)] {
        let mk = move |r: &mut ChaCha8Rng, n: usize| {
            let c = 9;
            let x: Vec<f64> = if activated {
                unif(r, n * c).into_iter().map(|u| 0.02 + 0.96 * u).collect()
            } else {
                normal(r, n * c, 2.0)
            };
            let t: Vec<f64> = unif(r, n * c)
                .into_iter()
                .enumerate()
                .map(|(k, u)| if k % 4 == 1 { u } else { 0.0 })
                .collect();
            vec![fl(x, &[n, c], true), fl(t, &[n, c], true)]
        };
        let f = move |x: &[Tensor], red| quality_focal_loss_tensor_target(&x[0], &x[1], beta, activated, red);
        all(&format!("qfl dense beta {beta}"), &f, &mk, &[1, 5, 4000]);
    }
}

#[test]
fn distribution_focal_fused_equals_composite() {
    for bins in [1usize, 2, 17] {
        let mk = move |r: &mut ChaCha8Rng, n: usize| {
            let mut y: Vec<f64> = unif(r, n).into_iter().map(|u| u * (bins - 1) as f64).collect();
            if n > 2 {
                // The top label exactly (its right bin is the same bin).
                y[1] = (bins - 1) as f64;
            }
            vec![fl(normal(r, n * bins, 2.0), &[n, bins], true), fl(y, &[n], true)]
        };
        let f = |x: &[Tensor], red| distribution_focal_loss(&x[0], &x[1], red);
        all(&format!("dfl bins {bins}"), &f, &mk, &[1, 6, (1 << 15) / bins + 5]);
    }
}

#[test]
fn gaussian_focal_fused_equals_composite() {
    let mk = |r: &mut ChaCha8Rng, n: usize| {
        let p: Vec<f64> = unif(r, n).into_iter().map(|u| 0.01 + 0.98 * u).collect();
        let t: Vec<f64> = unif(r, n)
            .into_iter()
            .enumerate()
            .map(|(k, u)| if k % 10 == 3 { 1.0 } else { u.powi(4) * 0.99 })
            .collect();
        vec![fl(p, &[n], true), fl(t, &[n], true)]
    };
    for (alpha, gamma, pw, nw) in [(2.0, 4.0, 1.0, 1.0), (1.5, 3.0, 0.5, 2.0)] {
        let f = move |x: &[Tensor], red| gaussian_focal_loss(&x[0], &x[1], alpha, gamma, pw, nw, red);
        all(&format!("gaussian alpha {alpha} gamma {gamma}"), &f, &mk, &ELEMS);
    }
}

#[test]
fn balanced_l1_fused_equals_composite() {
    let mk = |r: &mut ChaCha8Rng, n: usize| {
        let mut x = normal(r, n, 1.0);
        let t = normal(r, n, 1.0);
        if n > 3 {
            x[2] = t[2]; // |d| = 0: gradient 0
        }
        vec![fl(x, &[n], true), fl(t, &[n], true)]
    };
    for (alpha, gamma, beta) in [(0.5, 1.5, 1.0), (0.3, 2.0, 0.4)] {
        let f = move |x: &[Tensor], red| balanced_l1_loss(&x[0], &x[1], alpha, gamma, beta, red);
        all(&format!("balanced_l1 alpha {alpha}"), &f, &mk, &ELEMS);
    }
}

#[test]
fn poly1_cross_entropy_fused_equals_composite() {
    for c in [1usize, 10, 100] {
        for (eps, ls) in [(1.0, 0.0), (-0.5, 0.1), (2.0, 1.0)] {
            let mk = move |r: &mut ChaCha8Rng, n: usize| {
                let y: Vec<f64> = (0..n).map(|_| r.gen_range(0..c) as f64).collect();
                vec![fl(normal(r, n * c, 2.0), &[n, c], true), idx(y, &[n])]
            };
            let f = move |x: &[Tensor], red| poly1_cross_entropy(&x[0], &x[1], eps, ls, red);
            all(
                &format!("poly1_ce C={c} eps {eps} ls {ls}"),
                &f,
                &mk,
                &[1, 4, (1 << 15) / c + 3],
            );
        }
    }
}

#[test]
fn poly1_focal_fused_equals_composite() {
    let mk = |r: &mut ChaCha8Rng, n: usize| {
        let y: Vec<f64> = unif(r, n)
            .into_iter()
            .map(|u| if u < 0.4 { 1.0 } else { 0.0 })
            .collect();
        vec![fl(normal(r, n, 2.0), &[n, 1], true), fl(y, &[n, 1], false)]
    };
    for (eps, alpha, gamma) in [(1.0, 0.25, 2.0), (-0.5, -1.0, 1.5), (2.0, 0.7, 0.0)] {
        let f = move |x: &[Tensor], red| poly1_focal_loss(&x[0], &x[1], eps, alpha, gamma, red);
        all(&format!("poly1_focal gamma {gamma}"), &f, &mk, &ELEMS);
    }
}

#[test]
fn empty_inputs_on_both_paths() {
    let dev = Device::Cpu;
    for dtype in [DType::F32, DType::F64] {
        let e2 = Tensor::zeros((0, 5), dtype, &dev).unwrap();
        let e1 = Tensor::zeros(0, dtype, &dev).unwrap();
        let l = Tensor::zeros(0, DType::U32, &dev).unwrap();
        for path in [Path::Fused, Path::Composite] {
            let sum = |t: Result<Tensor>| {
                t.unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            with_path(path, || {
                for r in [Reduction::None, Reduction::Sum] {
                    assert_eq!(sum(varifocal_loss(&e2, &e2, 0.75, 2.0, true, r)), 0.0);
                    assert_eq!(sum(quality_focal_loss(&e2, &l, &e1, 2.0, false, r)), 0.0);
                    assert_eq!(sum(distribution_focal_loss(&e2, &e1, r)), 0.0);
                    assert_eq!(sum(gaussian_focal_loss(&e1, &e1, 2.0, 4.0, 1.0, 1.0, r)), 0.0);
                    assert_eq!(sum(poly1_cross_entropy(&e2, &l, 1.0, 0.0, r)), 0.0);
                    assert_eq!(sum(poly1_focal_loss(&e1, &e1, 1.0, 0.25, 2.0, r)), 0.0);
                }
                // Balanced L1's empty mean is 0 (mmdetection).
                assert_eq!(sum(balanced_l1_loss(&e1, &e1, 0.5, 1.5, 1.0, Reduction::Mean)), 0.0);
            });
        }
    }
}

#[test]
fn a_second_backward_recomputes_the_saved_gradient() {
    // The forward of a reduced loss keeps the gradient for the first backward; a second backward
    // through the same graph runs the gradient kernel, with the same result.
    let dev = Device::Cpu;
    let mut r = ChaCha8Rng::seed_from_u64(5);
    let x = Var::from_vec(normal(&mut r, 40 * 17, 1.0), (40, 17), &dev).unwrap();
    let y = Tensor::from_vec(
        unif(&mut r, 40).into_iter().map(|u| u * 16.0).collect::<Vec<_>>(),
        40,
        &dev,
    )
    .unwrap();
    let l = with_path(Path::Fused, || {
        distribution_focal_loss(x.as_tensor(), &y, Reduction::Mean)
    })
    .unwrap();
    let g1 = l
        .backward()
        .unwrap()
        .get(x.as_tensor())
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    let g2 = l
        .backward()
        .unwrap()
        .get(x.as_tensor())
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    for (a, b) in g1.iter().flatten().zip(g2.iter().flatten()) {
        assert!((a - b).abs() <= 1e-15 * a.abs().max(1.0), "{a} vs {b}");
    }
}

/// Poly-1 focal with `γ < 1` at a logit whose sigmoid is subnormal (−743: `σ ≈ 5e-323`):
/// `γ·q^(γ−1)` overflows there while `∂q/∂x` underflows; the gradient is their product
/// (≈ `(1 + γ)·σ^(1+γ)`, so 0 to f64's precision), finite on both paths (a case proptest found).
#[test]
fn poly1_focal_gradient_is_finite_where_the_sigmoid_is_subnormal() -> Result<()> {
    let dev = Device::Cpu;
    for path in [Path::Fused, Path::Composite] {
        let x = Var::from_tensor(&Tensor::new(&[[0.0f64], [-743.3515616287573], [0.0], [0.0]], &dev)?)?;
        let y = Tensor::zeros((4, 1), DType::F64, &dev)?;
        let loss = with_path(path, || {
            poly1_focal_loss(x.as_tensor(), &y, 0.0, -1.0, 0.011931543151484128, Reduction::Mean)
        })?;
        let g = with_path(path, || loss.backward())?;
        let g = g
            .get(x.as_tensor())
            .expect("a gradient")
            .flatten_all()?
            .to_vec1::<f64>()?;
        assert!(g.iter().all(|v| v.is_finite()), "{path:?}: {g:?}");
        assert!(g[1].abs() < 1e-300, "{path:?}: {g:?}");
        // x = 0 (σ = q = ½), the ordinary case: the loss grows with x, a positive gradient.
        assert!(g[0] > 0.0, "{path:?}: {g:?}");
    }
    Ok(())
}

/// A loss as a function of its prediction.
type LossOf<'a> = Box<dyn Fn(&Tensor) -> Result<Tensor> + 'a>;

/// The gradient of `x` (as `[n, 1]`) under `path`, for a loss of `x`, in `dtype`.
fn grad_of(path: Path, x: &[f64], dtype: DType, loss: &dyn Fn(&Tensor) -> Result<Tensor>) -> Result<Vec<f64>> {
    let x = Tensor::new(x, &Device::Cpu)?.reshape((x.len(), 1))?;
    let x = Var::from_tensor(&x.to_dtype(dtype)?)?;
    let l = with_path(path, || loss(x.as_tensor()))?;
    let g = with_path(path, || l.backward())?;
    let g = g.get(x.as_tensor()).expect("a gradient");
    g.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

/// Varifocal, quality focal and Gaussian focal with a general exponent `< 1` where the power's
/// base is 0 or subnormal (a logit of −743 in f64, −103 in f32; a probability of 0 or the
/// smallest subnormal): the power's derivative `e·q^(e−1)` is `+inf` there. Both paths clamp it
/// to the largest finite number, so a zero factor beside it gives 0, not NaN (before, the fused
/// gradient was NaN for all three), and the fused gradient equals the composite one.
#[test]
fn general_exponent_gradients_are_finite_where_the_power_has_an_infinite_slope() -> Result<()> {
    let dev = Device::Cpu;
    for dtype in [DType::F64, DType::F32] {
        let (logits, probs): (Vec<f64>, Vec<f64>) = if dtype == DType::F64 {
            (vec![0.0, -743.35, -745.0, -700.0], vec![0.5, 1e-310, 4.9e-324, 0.0])
        } else {
            (vec![0.0, -103.0, -104.0, -88.0], vec![0.5, 1e-40, 1.4e-45, 0.0])
        };
        let zeros = Tensor::zeros((4, 1), dtype, &dev)?;
        let gamma = 0.0119;
        let cases: Vec<(&str, &[f64], LossOf)> = vec![
            (
                "varifocal",
                &logits,
                Box::new(|x| varifocal_loss(x, &zeros, 0.75, gamma, true, Reduction::Sum)),
            ),
            (
                "quality_focal",
                &logits,
                Box::new(|x| quality_focal_loss_tensor_target(x, &zeros, gamma, false, Reduction::Sum)),
            ),
            (
                "gaussian_focal t=1",
                &probs,
                Box::new(|x| {
                    let t = x.ones_like()?;
                    gaussian_focal_loss(x, &t, gamma, gamma, 1.0, 1.0, Reduction::Sum)
                }),
            ),
            (
                "gaussian_focal t=0.5",
                &probs,
                Box::new(|x| {
                    let t = x.ones_like()?.affine(0.5, 0.0)?;
                    gaussian_focal_loss(x, &t, gamma, gamma, 1.0, 1.0, Reduction::Sum)
                }),
            ),
        ];
        for (name, x, loss) in &cases {
            let fused = grad_of(Path::Fused, x, dtype, loss)?;
            let composite = grad_of(Path::Composite, x, dtype, loss)?;
            assert!(fused.iter().all(|v| v.is_finite()), "{name} {dtype:?}: {fused:?}");
            for (a, b) in fused.iter().zip(&composite) {
                let tol = 1e-5 * a.abs().max(b.abs()) + 1e-30;
                assert!(
                    (a - b).abs() <= tol,
                    "{name} {dtype:?}: fused {fused:?}, composite {composite:?}"
                );
            }
        }
        // The ordinary point (x = 0, p = ½) has a non-zero gradient on every loss.
        for (name, x, loss) in &cases {
            assert!(grad_of(Path::Fused, x, dtype, loss)?[0].abs() > 0.1, "{name} {dtype:?}");
        }
    }
    Ok(())
}
