//! Finite-difference gradient checks (f64) of every loss-core loss on seeded random inputs away
//! from kinks.

use candle_core::{Device, Result, Tensor};
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

/// Random values whose pairwise differences stay away from the kinks at 0 and ±k.
fn away_from(rng: &mut ChaCha8Rng, shape: &[usize], kinks: &[f64]) -> (Tensor, Tensor) {
    let n: usize = shape.iter().product();
    let t: Vec<f64> = (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let x: Vec<f64> = t
        .iter()
        .map(|&ti| loop {
            let d: f64 = rng.gen_range(-3.0..3.0);
            if kinks.iter().all(|k| (d.abs() - k).abs() > 1e-3) && d.abs() > 1e-3 {
                break ti + d;
            }
        })
        .collect();
    (
        Tensor::from_vec(x, shape, &Device::Cpu).unwrap(),
        Tensor::from_vec(t, shape, &Device::Cpu).unwrap(),
    )
}

fn assert_grad(name: &str, f: impl Fn(&Tensor) -> Result<Tensor>, x: &Tensor) {
    let g = check_gradient(f, x, 1e-6).unwrap();
    assert!(
        g.max_error < TOL,
        "{name}: gradient differs from finite differences: {g:?}"
    );
}

fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(7)
}

#[test]
fn regression_gradients() {
    let mut r = rng();
    for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let (x, t) = away_from(&mut r, &[4, 5], &[0.5, 1.0]);
        assert_grad("l1_loss", |x| l1_loss(x, &t, red), &x);
        assert_grad("mse_loss", |x| mse_loss(x, &t, red), &x);
        assert_grad("smooth_l1_loss", |x| smooth_l1_loss(x, &t, 1.0, red), &x);
        assert_grad("smooth_l1_loss beta 0.5", |x| smooth_l1_loss(x, &t, 0.5, red), &x);
        assert_grad("huber_loss", |x| huber_loss(x, &t, 1.0, red), &x);
        assert_grad("huber_loss delta 0.5", |x| huber_loss(x, &t, 0.5, red), &x);
        // With respect to the target too.
        assert_grad("mse_loss (target)", |t| mse_loss(&x, t, red), &t);
        assert_grad("huber_loss (target)", |t| huber_loss(&x, t, 0.5, red), &t);
    }
}

fn index_target(r: &mut ChaCha8Rng, n: usize, c: usize, ignore: Option<i64>) -> Tensor {
    let v: Vec<i64> = (0..n)
        .map(|i| match ignore {
            Some(ig) if i % 3 == 1 => ig,
            _ => r.gen_range(0..c as i64),
        })
        .collect();
    Tensor::from_vec(v, n, &Device::Cpu).unwrap()
}

#[test]
fn cross_entropy_gradients() {
    let mut r = rng();
    let x = rand_tensor(&mut r, &[6, 4], -3.0, 3.0);
    let y = index_target(&mut r, 6, 4, Some(-100));
    let w = Tensor::new(&[0.5f64, 1.0, 2.0, 0.25], &Device::Cpu).unwrap();
    for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        assert_grad("ce", |x| cross_entropy(x, &y, None, -100, 0.0, red), &x);
        assert_grad(
            "ce weight+smoothing",
            |x| cross_entropy(x, &y, Some(&w), -100, 0.2, red),
            &x,
        );
        let lp = x.log_softmax_like();
        assert_grad("nll", |lp| nll_loss(lp, &y, Some(&w), -100, red), &lp);
    }
    // [N, C, d] logits and probability targets.
    let x3 = rand_tensor(&mut r, &[2, 3, 4], -3.0, 3.0);
    let p = rand_tensor(&mut r, &[2, 3, 4], 0.0, 1.0);
    let p = p.broadcast_div(&p.sum_keepdim(1).unwrap()).unwrap();
    assert_grad(
        "ce soft",
        |x| cross_entropy(x, &p, None, -100, 0.1, Reduction::Mean),
        &x3,
    );
    assert_grad(
        "ce soft (target)",
        |p| cross_entropy(&x3, p, Some(&w.narrow(0, 0, 3).unwrap()), -100, 0.0, Reduction::Sum),
        &p,
    );
}

trait LogSoftmaxLike {
    fn log_softmax_like(&self) -> Tensor;
}

impl LogSoftmaxLike for Tensor {
    fn log_softmax_like(&self) -> Tensor {
        loss_core::log_softmax(self, 1).unwrap().detach()
    }
}

#[test]
fn binary_gradients() {
    let mut r = rng();
    let p = rand_tensor(&mut r, &[3, 5], 0.05, 0.95);
    let t = rand_tensor(&mut r, &[3, 5], 0.0, 1.0);
    let w = rand_tensor(&mut r, &[5], 0.5, 2.0);
    for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        assert_grad("bce", |p| binary_cross_entropy(p, &t, Some(&w), red), &p);
        let x = rand_tensor(&mut r, &[3, 5], -8.0, 8.0);
        assert_grad(
            "bce logits",
            |x| binary_cross_entropy_with_logits(x, &t, Some(&w), Some(&w), red),
            &x,
        );
        assert_grad(
            "bce logits (target)",
            |t| binary_cross_entropy_with_logits(&x, t, None, Some(&w), red),
            &t,
        );
        let hard = t.ge(0.5).unwrap().to_dtype(candle_core::DType::F64).unwrap();
        assert_grad("sigmoid focal", |x| sigmoid_focal_loss(x, &hard, 0.25, 2.0, red), &x);
        assert_grad(
            "sigmoid focal gamma 0.5 no alpha",
            |x| sigmoid_focal_loss(x, &t, -1.0, 0.5, red),
            &x,
        );
    }
}

#[test]
fn divergence_and_focal_gradients() {
    let mut r = rng();
    let q = rand_tensor(&mut r, &[3, 4], 0.05, 1.0);
    let logq = q.broadcast_div(&q.sum_keepdim(1).unwrap()).unwrap().log().unwrap();
    let p = rand_tensor(&mut r, &[3, 4], 0.05, 1.0);
    let p = p.broadcast_div(&p.sum_keepdim(1).unwrap()).unwrap();
    for red in [Reduction::Mean, Reduction::Sum, Reduction::BatchMean] {
        assert_grad("kl_div", |x| kl_div(x, &p, false, red), &logq);
        assert_grad("kl_div (target)", |t| kl_div(&logq, t, false, red), &p);
        assert_grad("kl_div log_target", |x| kl_div(x, &p.log().unwrap(), true, red), &logq);
    }
    assert_grad("entropy bits", |p| entropy(p, EntropyBase::Bits, Reduction::Mean), &p);
    let x = rand_tensor(&mut r, &[6, 4], -3.0, 3.0);
    let y = index_target(&mut r, 6, 4, Some(2));
    let a = Tensor::new(&[0.25f64, 0.5, 0.75, 1.0], &Device::Cpu).unwrap();
    for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        assert_grad(
            "softmax focal",
            |x| softmax_focal_loss(x, &y, Some(&a), 2.0, 2, red),
            &x,
        );
        assert_grad(
            "softmax focal gamma 1.5",
            |x| softmax_focal_loss(x, &y, None, 1.5, -100, red),
            &x,
        );
    }
}
