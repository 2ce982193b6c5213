//! The primitives of `loss_core::ops`: CPU kernels and the composite (any-device) forms agree in
//! value and gradient, and the kinks follow PyTorch's rules.

use candle_core::{Device, Tensor, Var};
use loss_core::ops::{self, composite, Unary};

fn t(v: &[f64]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

fn vec(x: &Tensor) -> Vec<f64> {
    x.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

fn value_and_grad(f: impl Fn(&Tensor) -> Tensor, x: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let v = Var::from_tensor(x).unwrap();
    let y = f(v.as_tensor());
    let g = y.sum_all().unwrap().backward().unwrap();
    (vec(&y), vec(g.get(v.as_tensor()).unwrap()))
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-300)
}

const ALL: [Unary; 9] = [
    Unary::Atan,
    Unary::Log1p,
    Unary::Softplus,
    Unary::LogSigmoid,
    Unary::Sigmoid,
    Unary::Abs,
    Unary::Pow { exponent: 2.0 },
    Unary::Pow { exponent: 0.75 },
    Unary::Clamp { lo: -1.0, hi: 2.0 },
];

#[test]
fn cpu_kernel_equals_composite() {
    let xs: [f64; 14] = [
        -1e6, -30.0, -2.5, -1.0, -0.3, -1e-9, 0.0, 1e-9, 0.3, 1.0, 2.0, 2.5, 30.0, 1e6,
    ];
    for f in ALL {
        let x: Vec<f64> = match f {
            Unary::Log1p => xs.iter().map(|v| v.abs() / (1.0 + v.abs()) - 0.5).collect(),
            Unary::Pow { .. } => xs.iter().map(|v| v.abs()).collect(),
            _ => xs.to_vec(),
        };
        let x = t(&x);
        let (v1, g1) = value_and_grad(|x| f.apply(x).unwrap(), &x);
        let (v2, g2) = value_and_grad(|x| composite::apply(f, x).unwrap(), &x);
        for i in 0..v1.len() {
            assert!(close(v1[i], v2[i], 1e-13), "{f:?} value at {i}: {} vs {}", v1[i], v2[i]);
            // An infinite derivative (x^0.75 at 0) becomes f64::MAX in the composite form.
            let g2i = if g1[i].is_infinite() && g2[i].abs() == f64::MAX {
                g1[i]
            } else {
                g2[i]
            };
            assert!(close(g1[i], g2i, 1e-12), "{f:?} grad at {i}: {} vs {}", g1[i], g2[i]);
        }
    }
}

#[test]
fn atan_matches_libm() {
    let x: Vec<f64> = (-400..=400).map(|i| (i as f64 / 40.0).powi(3)).collect();
    let got = vec(&composite::value(Unary::Atan, &t(&x)).unwrap());
    for (g, x) in got.iter().zip(&x) {
        assert!((g - x.atan()).abs() <= 2e-15 * x.atan().abs(), "atan({x}) = {g}");
    }
}

#[test]
fn kinks_follow_pytorch() {
    let (_, g) = value_and_grad(|x| ops::abs(x).unwrap(), &t(&[-2.0, 0.0, 3.0]));
    assert_eq!(g, vec![-1.0, 0.0, 1.0]);
    let (v, g) = value_and_grad(|x| ops::clamp(x, 0.0, 1.0).unwrap(), &t(&[-0.5, 0.0, 0.5, 1.0, 1.5]));
    assert_eq!(v, vec![0.0, 0.0, 0.5, 1.0, 1.0]);
    assert_eq!(g, vec![0.0, 1.0, 1.0, 1.0, 0.0]);
    let (v, g) = value_and_grad(|x| ops::powf(x, 2.0).unwrap(), &t(&[0.0, 3.0]));
    assert_eq!((v, g), (vec![0.0, 9.0], vec![0.0, 6.0]));
    let (v, g) = value_and_grad(|x| ops::powf(x, 0.0).unwrap(), &t(&[0.0, 3.0]));
    assert_eq!((v, g), (vec![1.0, 1.0], vec![0.0, 0.0]));
}

#[test]
fn nan_and_inf_propagate() {
    for f in ALL {
        let v = vec(&f.apply(&t(&[f64::NAN])).unwrap());
        assert!(v[0].is_nan(), "{f:?}");
    }
    assert_eq!(vec(&ops::softplus(&t(&[f64::INFINITY])).unwrap()), vec![f64::INFINITY]);
    assert_eq!(vec(&ops::abs(&t(&[f64::NEG_INFINITY])).unwrap()), vec![f64::INFINITY]);
    assert_eq!(vec(&ops::log_sigmoid(&t(&[-800.0])).unwrap()), vec![-800.0]);
}

#[test]
fn f32_and_strided_inputs() {
    let x = Tensor::new(&[[0.5f32, -2.0], [3.0, 0.0]], &Device::Cpu)
        .unwrap()
        .t()
        .unwrap();
    let v = ops::atan(&x).unwrap();
    assert_eq!(v.dtype(), candle_core::DType::F32);
    let got = v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(got, vec![0.5f32.atan(), 3.0f32.atan(), (-2.0f32).atan(), 0.0]);
}

#[test]
fn xlogy_is_zero_where_x_is_zero() {
    let x = t(&[0.0, 0.0, 0.5]);
    let y = t(&[0.0, 2.0, 0.25]);
    let (v, g) = value_and_grad(|x| ops::xlogy(x, &y).unwrap(), &x);
    assert_eq!(v, vec![0.0, 0.0, 0.5 * 0.25f64.ln()]);
    assert!(g.iter().all(|g| g.is_finite()));
}

/// The path switch is scoped: the guard restores the previous path when dropped, also after a
/// panic, so a failed test (or a caught panic in a user's code) cannot leave the fused kernels
/// switched off on that thread; a forced path is an error where no kernel fits.
#[test]
fn path_is_restored_after_a_panic() {
    use loss_core::kernel::{choose, force, path, with_path, Path};
    let x = candle_core::Tensor::new(&[1.0f32], &candle_core::Device::Cpu).unwrap();
    assert_eq!(path(), Path::Auto);
    assert!(choose("l", &x).unwrap());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _path = force(Path::Composite);
        assert!(!choose("l", &x).unwrap());
        panic!("inside");
    }));
    assert!(caught.is_err());
    assert_eq!(path(), Path::Auto);
    // Nested: the inner scope restores the outer one's state.
    with_path(Path::Composite, || {
        with_path(Path::Fused, || assert!(choose("l", &x).unwrap()));
        assert!(!choose("l", &x).unwrap());
    });
    // Path::Fused where no kernel runs (f16) is an error naming the loss; Auto falls back.
    let h = x.to_dtype(candle_core::DType::F16).unwrap();
    assert!(!choose("l", &h).unwrap());
    let e = with_path(Path::Fused, || choose("my_loss", &h))
        .unwrap_err()
        .to_string();
    assert!(e.contains("my_loss"), "{e}");
}
