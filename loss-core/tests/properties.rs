//! Properties of the losses that hold for any input: identities between losses, invariances, and
//! exact values at the kinks where PyTorch fixes a convention.

use candle_core::{DType, Device, Tensor, Var};
use loss_core::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn t(v: &[f64]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

fn scalar(x: &Tensor) -> f64 {
    x.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn vec(x: &Tensor) -> Vec<f64> {
    x.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

fn grad(f: impl Fn(&Tensor) -> Tensor, x: &Tensor) -> Vec<f64> {
    let v = Var::from_tensor(x).unwrap();
    let g = f(v.as_tensor()).sum_all().unwrap().backward().unwrap();
    vec(g.get(v.as_tensor()).unwrap())
}

fn random(seed: u64, n: usize, scale: f64) -> Tensor {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    t(&(0..n).map(|_| r.gen_range(-scale..scale)).collect::<Vec<_>>())
}

#[test]
fn smooth_l1_beta_zero_is_l1_and_huber_is_beta_times_smooth_l1() {
    for seed in 0..20 {
        let (x, y) = (random(seed, 50, 3.0), random(seed + 100, 50, 3.0));
        let l1 = vec(&l1_loss(&x, &y, Reduction::None).unwrap());
        assert_eq!(vec(&smooth_l1_loss(&x, &y, 0.0, Reduction::None).unwrap()), l1);
        for beta in [0.25, 1.0, 2.5] {
            let s = vec(&smooth_l1_loss(&x, &y, beta, Reduction::None).unwrap());
            let h = vec(&huber_loss(&x, &y, beta, Reduction::None).unwrap());
            for (a, b) in s.iter().zip(&h) {
                assert!((a * beta - b).abs() < 1e-12, "huber {b} != beta * smooth_l1 {a}");
            }
        }
    }
}

#[test]
fn gradients_at_the_kinks_follow_pytorch() {
    // l1 at d = 0: 0. smooth_l1 with beta = 0 at d = 0: 0 (no NaN). At |d| = beta: continuous.
    let x = t(&[1.0, 2.0, 3.5]);
    let y = t(&[1.0, 1.0, 2.5]);
    assert_eq!(
        grad(|x| l1_loss(x, &y, Reduction::Sum).unwrap(), &x),
        vec![0.0, 1.0, 1.0]
    );
    assert_eq!(
        grad(|x| smooth_l1_loss(x, &y, 0.0, Reduction::Sum).unwrap(), &x),
        vec![0.0, 1.0, 1.0]
    );
    assert_eq!(
        grad(|x| smooth_l1_loss(x, &y, 1.0, Reduction::Sum).unwrap(), &x),
        vec![0.0, 1.0, 1.0]
    );
    assert_eq!(
        grad(|x| huber_loss(x, &y, 1.0, Reduction::Sum).unwrap(), &x),
        vec![0.0, 1.0, 1.0]
    );
}

#[test]
fn focal_with_gamma_zero_is_cross_entropy() {
    let x = random(3, 24, 4.0).reshape((6, 4)).unwrap();
    let y = Tensor::new(&[0i64, 3, 1, 2, 2, 0], &Device::Cpu).unwrap();
    let ce = scalar(&cross_entropy(&x, &y, None, -100, 0.0, Reduction::Mean).unwrap());
    let fl = scalar(&softmax_focal_loss(&x, &y, None, 0.0, -100, Reduction::Mean).unwrap());
    assert!((ce - fl).abs() < 1e-12);
    // Sigmoid focal with gamma 0 and no alpha is BCE with logits.
    let z = random(4, 10, 5.0);
    let tgt = t(&[1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
    let a = vec(&sigmoid_focal_loss(&z, &tgt, -1.0, 0.0, Reduction::None).unwrap());
    let b = vec(&binary_cross_entropy_with_logits(&z, &tgt, None, None, Reduction::None).unwrap());
    for (a, b) in a.iter().zip(&b) {
        assert!((a - b).abs() < 1e-12);
    }
}

#[test]
fn focal_down_weights_easy_examples() {
    // An easy positive (logit 4) loses far more of its CE under focal than a hard one (logit -1).
    let z = t(&[4.0, -1.0]);
    let one = t(&[1.0, 1.0]);
    let ce = vec(&binary_cross_entropy_with_logits(&z, &one, None, None, Reduction::None).unwrap());
    let fl = vec(&sigmoid_focal_loss(&z, &one, -1.0, 2.0, Reduction::None).unwrap());
    assert!(fl[0] / ce[0] < 1e-3 && fl[1] / ce[1] > 0.5, "{fl:?} vs {ce:?}");
}

#[test]
fn logits_of_any_size_stay_finite() {
    let z = t(&[1e4, -1e4, 80.0, -80.0, 0.0]);
    let tgt = t(&[0.0, 1.0, 1.0, 0.0, 1.0]);
    let v = vec(&binary_cross_entropy_with_logits(&z, &tgt, None, None, Reduction::None).unwrap());
    assert_eq!(v[0], 1e4);
    assert_eq!(v[1], 1e4);
    assert!(v[2] < 1e-30 && v[3] < 1e-30);
    assert!((v[4] - std::f64::consts::LN_2).abs() < 1e-15);
    let g = grad(|z| sigmoid_focal_loss(z, &tgt, 0.25, 2.0, Reduction::Sum).unwrap(), &z);
    assert!(g.iter().all(|g| g.is_finite()), "{g:?}");
    let x = t(&[1e4, -1e4, 0.0, 50.0]).reshape((1, 4)).unwrap();
    let y = Tensor::new(&[1u32], &Device::Cpu).unwrap();
    let ce = scalar(&cross_entropy(&x, &y, None, -100, 0.0, Reduction::Mean).unwrap());
    assert_eq!(ce, 2e4);
    let g = grad(
        |x| softmax_focal_loss(x, &y, None, 2.0, -100, Reduction::Sum).unwrap(),
        &x,
    );
    assert!(g.iter().all(|g| g.is_finite()), "{g:?}");
}

#[test]
fn nan_in_gives_nan_out() {
    let x = t(&[f64::NAN, 1.0]);
    let y = t(&[0.0, 0.0]);
    for v in [
        l1_loss(&x, &y, Reduction::Mean).unwrap(),
        mse_loss(&x, &y, Reduction::Mean).unwrap(),
        smooth_l1_loss(&x, &y, 1.0, Reduction::Mean).unwrap(),
        huber_loss(&x, &y, 1.0, Reduction::Mean).unwrap(),
        binary_cross_entropy_with_logits(&x, &y, None, None, Reduction::Mean).unwrap(),
        sigmoid_focal_loss(&x, &y, 0.25, 2.0, Reduction::Sum).unwrap(),
        binary_cross_entropy(&t(&[f64::NAN, 0.5]), &y, None, Reduction::Mean).unwrap(),
        kl_div(&x, &t(&[0.5, 0.5]), false, Reduction::Sum).unwrap(),
    ] {
        assert!(scalar(&v).is_nan());
    }
}

#[test]
fn label_smoothing_one_is_uniform_target() {
    // With ε = 1 the target is uniform: the loss is the mean of −logp over classes.
    let x = random(9, 12, 3.0).reshape((3, 4)).unwrap();
    let y = Tensor::new(&[0i64, 1, 2], &Device::Cpu).unwrap();
    let got = scalar(&cross_entropy(&x, &y, None, -100, 1.0, Reduction::Mean).unwrap());
    let lp = log_softmax(&x, 1).unwrap();
    let want = -scalar(&lp.mean_all().unwrap());
    assert!((got - want).abs() < 1e-12);
}

#[test]
fn f32_and_f64_agree_and_keep_their_dtype() {
    let x = random(11, 30, 2.0);
    let y = random(12, 30, 2.0);
    let (x32, y32) = (x.to_dtype(DType::F32).unwrap(), y.to_dtype(DType::F32).unwrap());
    let a = smooth_l1_loss(&x32, &y32, 0.7, Reduction::Mean).unwrap();
    assert_eq!(a.dtype(), DType::F32);
    let b = smooth_l1_loss(&x, &y, 0.7, Reduction::Mean).unwrap();
    assert!((scalar(&a) - scalar(&b)).abs() < 1e-6);
}

#[test]
fn mean_of_many_f32_values_is_accurate() {
    // 2^24 + 1 cannot be accumulated exactly in f32: a naive f32 sum of 1e6 values of 1.1 drifts.
    let n = 1_000_000;
    let x = Tensor::full(1.1f32, n, &Device::Cpu).unwrap();
    let z = Tensor::zeros(n, DType::F32, &Device::Cpu).unwrap();
    let m = scalar(&l1_loss(&x, &z, Reduction::Mean).unwrap());
    assert!((m - 1.1f32 as f64).abs() < 1e-7, "{m}");
}

#[test]
fn empty_inputs() {
    let e = Tensor::zeros(0, DType::F32, &Device::Cpu).unwrap();
    assert!(scalar(&mse_loss(&e, &e, Reduction::Mean).unwrap()).is_nan());
    assert_eq!(scalar(&mse_loss(&e, &e, Reduction::Sum).unwrap()), 0.0);
    assert_eq!(mse_loss(&e, &e, Reduction::None).unwrap().dims(), &[0]);
}

#[test]
fn losses_as_values() {
    let losses: Vec<Box<dyn Loss>> = vec![
        Box::new(L1Loss::default()),
        Box::new(MseLoss::default()),
        Box::new(SmoothL1Loss::default().with_beta(0.5)),
        Box::new(HuberLoss::default().with_delta(2.0)),
        Box::new(BceWithLogitsLoss::default()),
        Box::new(SigmoidFocalLoss::default().with_reduction(Reduction::Mean)),
        Box::new(KlDivLoss::default().with_reduction(Reduction::BatchMean)),
    ];
    let x = t(&[0.2, -0.4]);
    let y = t(&[0.0, 1.0]);
    for l in &losses {
        let v = l.forward(&x, &y).unwrap();
        assert_eq!(v.dims(), &[] as &[usize], "{}", l.name());
        assert!(scalar(&v).is_finite(), "{}", l.name());
    }
    // Function and value agree.
    let f = scalar(&huber_loss(&x, &y, 2.0, Reduction::Mean).unwrap());
    assert_eq!(scalar(&losses[3].forward(&x, &y).unwrap()), f);
}
