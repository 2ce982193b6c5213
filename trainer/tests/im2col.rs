//! The CPU im2col kernel against the plain-Candle version and Candle's own conv2d.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Module, VarMap};
use trainer::im2col::{im2col, im2col_composite};
use trainer::models::Conv2d;
use trainer::optim::sorted_params;

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = trainer::rng::stream(seed, &["im2col"]);
    let n = shape.iter().product();
    Tensor::from_vec(trainer::rng::normal(&mut rng, n), shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn fused_equals_composite_values_and_gradients() {
    for (shape, k) in [
        ([2, 3, 5, 4], 3),
        ([1, 2, 6, 6], 5),
        ([1, 1, 2, 3], 3),
        ([1, 1, 1, 1], 1),
    ] {
        let x = Var::from_tensor(&random(&shape, 1)).unwrap();
        let a = im2col(x.as_tensor(), k).unwrap();
        let b = im2col_composite(x.as_tensor(), k).unwrap();
        assert_eq!(a.dims(), b.dims());
        assert_eq!(max_diff(&a, &b), 0.0, "{shape:?} k={k}");
        let w = random(a.dims(), 2);
        let ga = (a * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let (ga, gb) = (ga.get(x.as_tensor()).unwrap(), gb.get(x.as_tensor()).unwrap());
        assert!(max_diff(ga, gb) < 1e-12, "{shape:?} k={k}");
    }
    // f32 too
    let x = random(&[1, 2, 4, 4], 3).to_dtype(DType::F32).unwrap();
    let a = im2col(&x, 3).unwrap();
    let b = im2col_composite(&x, 3).unwrap();
    assert_eq!(
        max_diff(&a.to_dtype(DType::F64).unwrap(), &b.to_dtype(DType::F64).unwrap()),
        0.0
    );
    // non-contiguous input
    let t = random(&[1, 4, 3, 2], 4).transpose(2, 3).unwrap();
    assert_eq!(
        max_diff(&im2col(&t, 3).unwrap(), &im2col_composite(&t, 3).unwrap()),
        0.0
    );
}

#[test]
fn bad_input_is_an_error() {
    assert!(im2col(&random(&[2, 3, 4], 1), 3).is_err());
    assert!(im2col(&random(&[1, 1, 4, 4], 1), 2).is_err());
    let ints = Tensor::zeros((1, 1, 2, 2), DType::U32, &Device::Cpu).unwrap();
    assert!(im2col(&ints, 3).is_err());
}

#[test]
fn conv_layer_matches_candle_conv2d() {
    let varmap = VarMap::new();
    let mut rng = trainer::rng::stream(9, &["conv"]);
    let conv = Conv2d::new(&varmap, "c", 3, 4, 3, &mut rng, DType::F64, &Device::Cpu).unwrap();
    let x = random(&[2, 3, 7, 5], 5);
    let ours = conv.forward(&x).unwrap();
    let p = sorted_params(&varmap);
    let (bias, weight) = (p[0].1.as_tensor().clone(), p[1].1.as_tensor().clone());
    let cfg = candle_nn::Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    let reference = candle_nn::Conv2d::new(weight, Some(bias), cfg).forward(&x).unwrap();
    assert_eq!(ours.dims(), &[2, 4, 7, 5]);
    assert!(max_diff(&ours, &reference) < 1e-12);
}
