//! Finite-difference gradient checks (f64) of the losses of `likelihood.rs`, `margin.rs`,
//! `embedding.rs` and `ctc.rs`, on seeded random inputs (away from the hinges almost surely), on
//! the default path and on the composite path.

use candle_core::{DType, Device, Result, Tensor, Var};
use loss_core::gradcheck::check_gradient;
use loss_core::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TOL: f64 = 1e-6;

fn rand_tensor(rng: &mut ChaCha8Rng, shape: &[usize], lo: f64, hi: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.gen_range(lo..hi)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn signs(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| if rng.gen_bool(0.5) { 1.0 } else { -1.0 }).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Checks on both paths.
fn assert_grad(name: &str, f: impl Fn(&Tensor) -> Result<Tensor>, x: &Tensor) {
    for composite in [false, true] {
        let g = if composite {
            loss_core::kernel::with_path(loss_core::kernel::Path::Composite, || check_gradient(&f, x, 1e-6)).unwrap()
        } else {
            check_gradient(&f, x, 1e-6).unwrap()
        };
        assert!(
            g.max_error < TOL,
            "{name} (composite {composite}): gradient differs from finite differences: {g:?}"
        );
    }
}

fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(14)
}

const REDUCTIONS: [Reduction; 3] = [Reduction::Mean, Reduction::Sum, Reduction::None];

#[test]
fn likelihood_gradients() {
    let mut r = rng();
    for red in REDUCTIONS {
        let x = rand_tensor(&mut r, &[3, 4], -2.0, 2.0);
        let counts = rand_tensor(&mut r, &[3, 4], 0.0, 6.0).round().unwrap();
        for full in [false, true] {
            assert_grad(
                "poisson_nll_loss (input)",
                |x| poisson_nll_loss(x, &counts, true, full, 1e-8, red),
                &x,
            );
            // Away from t = 1, where Stirling's term switches on.
            let t = rand_tensor(&mut r, &[3, 4], 1.1, 5.0);
            assert_grad(
                "poisson_nll_loss (target)",
                |t| poisson_nll_loss(&x, t, true, full, 1e-8, red),
                &t,
            );
            let rate = rand_tensor(&mut r, &[3, 4], 0.1, 3.0);
            assert_grad(
                "poisson_nll_loss rate",
                |x| poisson_nll_loss(x, &counts, false, full, 1e-8, red),
                &rate,
            );
            assert_grad(
                "poisson_nll_loss rate (target)",
                |t| poisson_nll_loss(&rate, t, false, full, 1e-8, red),
                &t,
            );
        }
        let t = rand_tensor(&mut r, &[3, 4], -2.0, 2.0);
        for var_shape in [&[3, 4][..], &[3, 1], &[3], &[1, 4]] {
            let var = rand_tensor(&mut r, var_shape, 0.2, 2.0);
            for full in [false, true] {
                assert_grad(
                    "gaussian_nll_loss",
                    |x| gaussian_nll_loss(x, &t, &var, full, 1e-6, red),
                    &x,
                );
                assert_grad(
                    "gaussian_nll_loss (target)",
                    |t| gaussian_nll_loss(&x, t, &var, full, 1e-6, red),
                    &t,
                );
                assert_grad(
                    "gaussian_nll_loss (var)",
                    |v| gaussian_nll_loss(&x, &t, v, full, 1e-6, red),
                    &var,
                );
            }
        }
        assert_grad("log_cosh_loss", |x| log_cosh_loss(x, &t, red), &x);
        assert_grad("log_cosh_loss (target)", |t| log_cosh_loss(&x, t, red), &t);
        let far = rand_tensor(&mut r, &[3, 4], 20.0, 60.0);
        assert_grad("log_cosh_loss far", |x| log_cosh_loss(x, &t, red), &far);
    }
}

#[test]
fn margin_gradients() {
    let mut r = rng();
    for red in REDUCTIONS {
        let a = rand_tensor(&mut r, &[4, 5], -2.0, 2.0);
        let b = rand_tensor(&mut r, &[4, 5], -2.0, 2.0);
        let y = signs(&mut r, &[4, 5]);
        for margin in [0.0, 0.5, -0.3] {
            assert_grad(
                "margin_ranking_loss (input1)",
                |a| margin_ranking_loss(a, &b, &y, margin, red),
                &a,
            );
            assert_grad(
                "margin_ranking_loss (input2)",
                |b| margin_ranking_loss(&a, b, &y, margin, red),
                &b,
            );
        }
        let dist = rand_tensor(&mut r, &[4, 5], 0.0, 3.0);
        assert_grad("hinge_embedding_loss", |x| hinge_embedding_loss(x, &y, 1.5, red), &dist);
        assert_grad("soft_margin_loss", |x| soft_margin_loss(x, &y, red), &a);
        let y01 = y.affine(0.5, 0.5).unwrap();
        let w = rand_tensor(&mut r, &[5], 0.1, 2.0);
        assert_grad(
            "multilabel_soft_margin_loss",
            |x| multilabel_soft_margin_loss(x, &y01, None, red),
            &a,
        );
        assert_grad(
            "multilabel_soft_margin_loss weight",
            |x| multilabel_soft_margin_loss(x, &y01, Some(&w), red),
            &a,
        );
        let labels = Tensor::new(
            &[[3i64, 0, -1, 2, 1], [1, -1, 0, 0, 0], [0, 1, 2, 3, 4], [4, 4, 2, -1, 3]],
            &Device::Cpu,
        )
        .unwrap();
        assert_grad(
            "multilabel_margin_loss",
            |x| multilabel_margin_loss(x, &labels, red),
            &a,
        );
        let cls = Tensor::new(&[0i64, 4, 2, 2], &Device::Cpu).unwrap();
        for p in [1, 2] {
            for weight in [None, Some(&w)] {
                assert_grad(
                    "multi_margin_loss",
                    |x| multi_margin_loss(x, &cls, p, 0.7, weight, red),
                    &a,
                );
            }
        }
    }
}

#[test]
fn embedding_gradients() {
    let mut r = rng();
    for red in REDUCTIONS {
        let a = rand_tensor(&mut r, &[4, 6], -2.0, 2.0);
        let p = rand_tensor(&mut r, &[4, 6], -2.0, 2.0);
        let n = rand_tensor(&mut r, &[4, 6], -2.0, 2.0);
        let y = signs(&mut r, &[4]);
        for margin in [0.0, -0.5, 0.3] {
            assert_grad(
                "cosine_embedding_loss (input1)",
                |x| cosine_embedding_loss(x, &p, &y, margin, red),
                &a,
            );
            assert_grad(
                "cosine_embedding_loss (input2)",
                |x| cosine_embedding_loss(&a, x, &y, margin, red),
                &p,
            );
        }
        // A large margin keeps every triplet active, so each input's gradient is non-zero.
        for swap in [false, true] {
            for pn in [1.0, 2.0, 3.0] {
                let f = |a: &Tensor, p: &Tensor, n: &Tensor| triplet_margin_loss(a, p, n, 5.0, pn, 1e-6, swap, red);
                assert_grad("triplet_margin_loss (anchor)", |x| f(x, &p, &n), &a);
                assert_grad("triplet_margin_loss (positive)", |x| f(&a, x, &n), &p);
                assert_grad("triplet_margin_loss (negative)", |x| f(&a, &p, x), &n);
            }
            for d in [TripletDistance::Euclidean, TripletDistance::Cosine] {
                let f =
                    |a: &Tensor, p: &Tensor, n: &Tensor| triplet_margin_with_distance_loss(a, p, n, d, 3.0, swap, red);
                assert_grad("triplet_margin_with_distance_loss (anchor)", |x| f(x, &p, &n), &a);
                assert_grad("triplet_margin_with_distance_loss (positive)", |x| f(&a, x, &n), &p);
                assert_grad("triplet_margin_with_distance_loss (negative)", |x| f(&a, &p, x), &n);
            }
        }
    }
}

/// CTC composed with `log_softmax`: PyTorch's convention cancels, so the gradient w.r.t. the
/// logits is the true one.
#[test]
fn ctc_gradients_through_log_softmax() {
    let mut r = rng();
    let (t, n, c) = (9usize, 3usize, 5usize);
    let logits = rand_tensor(&mut r, &[t, n, c], -2.0, 2.0);
    let targets = Tensor::new(&[[1i64, 2, 2, 0], [3, 4, 1, 1], [2, 0, 0, 0]], &Device::Cpu).unwrap();
    let il = Tensor::new(&[9i64, 7, 5], &Device::Cpu).unwrap();
    let tl = Tensor::new(&[3i64, 4, 1], &Device::Cpu).unwrap();
    for red in REDUCTIONS {
        for blank in [0usize, 3] {
            let tg = if blank == 3 {
                Tensor::new(&[[1i64, 2, 2, 0], [0, 4, 1, 1], [2, 0, 0, 0]], &Device::Cpu).unwrap()
            } else {
                targets.clone()
            };
            assert_grad(
                "ctc_loss (logits)",
                |x| ctc_loss(&log_softmax(x, 2)?, &tg, &il, &tl, blank, false, red),
                &logits,
            );
        }
    }
}

/// The gradient w.r.t. `log_probs` itself: the finite-difference derivative plus
/// `w_n·exp(log_probs)` for `t < input_lengths[n]` (PyTorch's convention), 0 for later frames.
#[test]
fn ctc_gradient_convention_on_log_probs() {
    let mut r = rng();
    let (t, n, c) = (6usize, 2usize, 4usize);
    let lp = log_softmax(&rand_tensor(&mut r, &[t, n, c], -2.0, 2.0), 2).unwrap();
    let targets = Tensor::new(&[1i64, 2, 3, 3, 1], &Device::Cpu).unwrap();
    let il = Tensor::new(&[6i64, 4], &Device::Cpu).unwrap();
    let tl = Tensor::new(&[2i64, 3], &Device::Cpu).unwrap();
    let f = |x: &Tensor| ctc_loss(x, &targets, &il, &tl, 0, false, Reduction::Sum);
    let var = Var::from_tensor(&lp).unwrap();
    let g = f(var.as_tensor()).unwrap().backward().unwrap();
    let auto = g
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let base = lp.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let lens = [6usize, 4];
    let h = 1e-6;
    for i in 0..base.len() {
        let (ti, b) = (i / (n * c), (i / c) % n);
        let eval = |d: f64| {
            let mut v = base.clone();
            v[i] += d;
            f(&Tensor::from_vec(v, (t, n, c), &Device::Cpu).unwrap())
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let numeric = (eval(h) - eval(-h)) / (2.0 * h);
        let want = if ti < lens[b] { numeric + base[i].exp() } else { 0.0 };
        assert!((auto[i] - want).abs() < 1e-6, "flat {i}: got {}, want {want}", auto[i]);
    }
}

/// A loss of `(input, target)`.
type PairLoss = dyn Fn(&Tensor, &Tensor) -> Result<Tensor>;

/// f32 and f64 agree on the new losses (the f64 path is what the checks above differentiate).
#[test]
fn f32_matches_f64() {
    let mut r = rng();
    let x = rand_tensor(&mut r, &[5, 4], -2.0, 2.0);
    let t = rand_tensor(&mut r, &[5, 4], -2.0, 2.0);
    let f32_ = |v: &Tensor| v.to_dtype(DType::F32).unwrap();
    let pairs: Vec<(&str, Box<PairLoss>)> = vec![
        ("log_cosh_loss", Box::new(|a, b| log_cosh_loss(a, b, Reduction::Sum))),
        (
            "soft_margin_loss",
            Box::new(|a, b| soft_margin_loss(a, &b.ge(0.0)?.to_dtype(a.dtype())?.affine(2.0, -1.0)?, Reduction::Sum)),
        ),
        (
            "poisson_nll_loss",
            Box::new(|a, b| poisson_nll_loss(a, &b.abs()?, true, true, 1e-8, Reduction::Sum)),
        ),
    ];
    for (name, f) in pairs {
        let v64 = f(&x, &t).unwrap().to_scalar::<f64>().unwrap();
        let v32 = f(&f32_(&x), &f32_(&t)).unwrap().to_scalar::<f32>().unwrap() as f64;
        assert!(
            (v64 - v32).abs() <= 1e-5 * v64.abs().max(1.0),
            "{name}: f64 {v64}, f32 {v32}"
        );
    }
}
