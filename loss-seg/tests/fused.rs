//! The fused CPU overlap kernel and the composite (any-device) form held equal, in value and in
//! gradient w.r.t. both arguments, on random and degenerate inputs, f32 and f64.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use loss_core::kernel::{with_path, Path};
use loss_seg::overlap::Overlap;
use loss_seg::*;

/// Values of `(I, P, G)` and the gradients w.r.t. `pred` and `target` of `Σ (a·I + b·P + c·G)`
/// with fixed random `a, b, c` (so that each column's gradient is seen).
fn run(pred: &Tensor, target: &Tensor, squared: bool, fused: bool) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (vp, vt) = (Var::from_tensor(pred).unwrap(), Var::from_tensor(target).unwrap());
    let o = if fused {
        with_path(Path::Fused, || {
            Overlap::compute(vp.as_tensor(), vt.as_tensor(), squared)
        })
        .unwrap()
    } else {
        with_path(Path::Composite, || {
            Overlap::compute(vp.as_tensor(), vt.as_tensor(), squared)
        })
        .unwrap()
    };
    let shape = o.intersection.shape().clone();
    let n = shape.elem_count();
    let coef = |k: usize| {
        let v: Vec<f64> = (0..n).map(|i| 0.3 + 0.1 * ((i * 7 + k * 3) % 11) as f64).collect();
        Tensor::from_vec(v, shape.clone(), &Device::Cpu)
            .unwrap()
            .to_dtype(pred.dtype())
            .unwrap()
    };
    let total = o
        .intersection
        .mul(&coef(0))
        .unwrap()
        .add(&o.pred_sum.mul(&coef(1)).unwrap())
        .unwrap()
        .add(&o.target_sum.mul(&coef(2)).unwrap())
        .unwrap();
    let g = total.sum_all().unwrap().backward().unwrap();
    let mut stats = values(&o.intersection);
    stats.extend(values(&o.pred_sum));
    stats.extend(values(&o.target_sum));
    (
        stats,
        values(g.get(vp.as_tensor()).unwrap()),
        values(g.get(vt.as_tensor()).unwrap()),
    )
}

fn assert_paths_equal(what: &str, pred: &Tensor, target: &Tensor) {
    let tol = if pred.dtype() == DType::F32 { 1e-5 } else { 1e-12 };
    for squared in [false, true] {
        let f = run(pred, target, squared, true);
        let c = run(pred, target, squared, false);
        assert_close(&format!("{what} squared={squared}: values"), &f.0, &c.0, tol, tol);
        assert_close(&format!("{what} squared={squared}: d/dpred"), &f.1, &c.1, tol, tol);
        assert_close(&format!("{what} squared={squared}: d/dtarget"), &f.2, &c.2, tol, tol);
    }
}

#[test]
fn fused_equals_composite_on_random_inputs() {
    let mut r = rng(11);
    for shape in [vec![2, 3, 5], vec![2, 3, 4, 5], vec![1, 2, 3, 4, 5], vec![3, 1, 17, 3]] {
        let p = uniform(&mut r, &shape, 0.0, 1.0);
        let t = mask(&mut r, &shape, 0.3);
        assert_paths_equal("f64", &p, &t);
        assert_paths_equal(
            "f32",
            &p.to_dtype(DType::F32).unwrap(),
            &t.to_dtype(DType::F32).unwrap(),
        );
        // Negative and large values (tanh outputs, unnormalised scores).
        let q = uniform(&mut r, &shape, -5.0, 5.0);
        assert_paths_equal("signed", &q, &p);
    }
}

#[test]
fn fused_equals_composite_on_degenerate_inputs() {
    let shape = [2, 3, 4, 4];
    let zeros = Tensor::zeros(&shape, DType::F64, &Device::Cpu).unwrap();
    let ones = Tensor::ones(&shape, DType::F64, &Device::Cpu).unwrap();
    assert_paths_equal("empty on empty", &zeros, &zeros);
    assert_paths_equal("full on empty", &ones, &zeros);
    assert_paths_equal("empty on full", &zeros, &ones);
    assert_paths_equal("full on full", &ones, &ones);
    // No spatial extent at all.
    let flat = Tensor::zeros((2, 3, 0), DType::F64, &Device::Cpu).unwrap();
    assert_paths_equal("zero-size spatial", &flat, &flat);
}

#[test]
fn fused_takes_strided_inputs() {
    // A transposed (non-contiguous) view goes through `contiguous()` first.
    let mut r = rng(12);
    let p = uniform(&mut r, &[2, 3, 5, 4], 0.0, 1.0);
    let t = mask(&mut r, &[2, 3, 5, 4], 0.5);
    let (pt, tt) = (p.transpose(2, 3).unwrap(), t.transpose(2, 3).unwrap());
    assert!(!pt.is_contiguous());
    assert_paths_equal("transposed", &pt, &tt);
    let f = with_path(Path::Fused, || Overlap::compute(&pt, &tt, false)).unwrap();
    let c = with_path(Path::Fused, || Overlap::compute(&p, &t, false)).unwrap();
    assert_close(
        "transposed vs plain",
        &values(&f.intersection),
        &values(&c.intersection),
        1e-12,
        1e-12,
    );
}

#[test]
fn every_loss_agrees_on_both_paths() {
    let mut r = rng(13);
    let z = uniform(&mut r, &[2, 3, 6, 6], -3.0, 3.0);
    let y = labels(&mut r, &[2, 1, 6, 6], 3);
    let m = one_hot(&y, 3);
    type LossFn = Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor>>;
    let (y1, y2, m1) = (y.clone(), y.clone(), m.clone());
    let losses: Vec<(&str, LossFn)> = vec![
        (
            "dice",
            Box::new(move |x| dice_loss(x, &y1, &DiceLoss::default().with_to_onehot_y(true).with_softmax(true))),
        ),
        (
            "tversky",
            Box::new(move |x| tversky_loss(x, &m1, &TverskyLoss::default().with_sigmoid(true))),
        ),
        (
            "generalized dice",
            Box::new(move |x| {
                let o = GeneralizedDiceLoss::default().with_to_onehot_y(true).with_softmax(true);
                generalized_dice_loss(x, &y2, &o)
            }),
        ),
        (
            "dice_focal",
            Box::new(move |x| dice_focal_loss(x, &m, &DiceFocalLoss::default().with_sigmoid(true))),
        ),
    ];
    for (name, f) in &losses {
        let fused = value_and_grad(f, &z);
        let composite = with_path(Path::Composite, || value_and_grad(f, &z));
        assert_close(&format!("{name}: value"), &fused.0, &composite.0, 1e-10, 1e-12);
        assert_close(&format!("{name}: gradient"), &fused.1, &composite.1, 1e-9, 1e-12);
    }
}

/// The fused channel softmax and the composite one: values and gradients (of a weighted sum, so
/// that the `Σ_c s g` term is exercised).
fn assert_softmax_paths_equal(what: &str, x: &Tensor) {
    let tol = if x.dtype() == DType::F32 { 1e-6 } else { 1e-14 };
    let weights = Tensor::arange(0u32, x.elem_count() as u32, &Device::Cpu)
        .unwrap()
        .to_dtype(x.dtype())
        .unwrap()
        .affine(0.37, 0.0)
        .unwrap()
        .sin()
        .unwrap()
        .reshape(x.shape())
        .unwrap();
    let run = |f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>| value_and_grad(|z| f(z)?.mul(&weights), x);
    let fused = run(&|z| loss_seg::prepare::softmax_channels(z));
    let composite = run(&|z| loss_seg::prepare::softmax_channels_composite(z));
    assert_close(&format!("{what}: softmax values"), &fused.0, &composite.0, tol, tol);
    assert_close(&format!("{what}: softmax gradient"), &fused.1, &composite.1, tol, tol);
}

#[test]
fn fused_softmax_equals_composite() {
    let mut r = rng(14);
    for shape in [
        vec![2, 3, 5],
        vec![2, 4, 70, 70],
        vec![1, 2, 3, 4, 5],
        vec![3, 1, 7, 3],
        vec![2, 5, 9000],
    ] {
        let z = uniform(&mut r, &shape, -5.0, 5.0);
        assert_softmax_paths_equal("f64", &z);
        assert_softmax_paths_equal("f32", &z.to_dtype(DType::F32).unwrap());
        assert_softmax_paths_equal("saturated", &z.affine(40.0, 0.0).unwrap());
    }
    // A strided view, and NaN propagation.
    let z = uniform(&mut r, &[2, 3, 4, 5], -5.0, 5.0);
    assert_softmax_paths_equal("transposed", &z.transpose(2, 3).unwrap());
    let nan = Tensor::new(&[[[f64::NAN, 1.0]], [[0.0, 2.0]]], &Device::Cpu).unwrap(); // [2, 1, 2]
    let nan = nan.reshape((1, 2, 2)).unwrap();
    let s = values(&loss_seg::prepare::softmax_channels(&nan).unwrap());
    assert!(s[0].is_nan() && s[2].is_nan(), "{s:?}");
    assert!((s[1] + s[3] - 1.0).abs() < 1e-15);
}

/// The f32 overlap sums of a long row (f32 blocks, f64 across blocks, split over threads) stay
/// within a few f32 ulp of the exact sums, plain and squared.
#[test]
fn fused_overlap_f32_sums_of_a_long_row_are_accurate() {
    let n = 3_000_001usize;
    let p: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 999.0).collect();
    let t: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 3 == 0) as u8 as f32).collect();
    let exact = |f: &dyn Fn(f64, f64) -> f64| p.iter().zip(&t).map(|(&a, &b)| f(a as f64, b as f64)).sum::<f64>();
    let pt = Tensor::from_vec(p.clone(), (1, 1, n), &Device::Cpu).unwrap();
    let tt = Tensor::from_vec(t.clone(), (1, 1, n), &Device::Cpu).unwrap();
    for squared in [false, true] {
        let o = with_path(Path::Fused, || Overlap::compute(&pt, &tt, squared)).unwrap();
        let got = [
            values(&o.intersection)[0],
            values(&o.pred_sum)[0],
            values(&o.target_sum)[0],
        ];
        let want = if squared {
            [exact(&|a, b| a * b), exact(&|a, _| a * a), exact(&|_, b| b * b)]
        } else {
            [exact(&|a, b| a * b), exact(&|a, _| a), exact(&|_, b| b)]
        };
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 4.0 * f32::EPSILON as f64 * w.abs(),
                "squared {squared} column {k}: {g} vs {w}"
            );
        }
    }
}

/// The fused soft skeleton and the composite one: values and gradients of a weighted sum (an
/// upstream gradient ≠ 1), under both paths.
fn assert_skeleton_paths_equal(what: &str, x: &Tensor, iter: usize) {
    let tol = if x.dtype() == DType::F32 { 1e-6 } else { 1e-13 };
    let weights = Tensor::arange(0u32, x.elem_count() as u32, &Device::Cpu)
        .unwrap()
        .to_dtype(x.dtype())
        .unwrap()
        .affine(0.61, 0.2)
        .unwrap()
        .sin()
        .unwrap()
        .reshape(x.shape())
        .unwrap();
    let run = |path: Path| {
        with_path(path, || {
            value_and_grad(|z| loss_seg::cldice::soft_skeleton(z, iter)?.mul(&weights), x)
        })
    };
    let (fused, composite) = (run(Path::Fused), run(Path::Composite));
    assert!(fused.1.iter().any(|g| *g != 0.0), "{what}: the gradient is all zero");
    assert_close(
        &format!("{what} iter {iter}: skeleton values"),
        &fused.0,
        &composite.0,
        0.0,
        0.0,
    );
    assert_close(
        &format!("{what} iter {iter}: skeleton gradient"),
        &fused.1,
        &composite.1,
        tol,
        tol,
    );
}

#[test]
fn fused_soft_skeleton_equals_composite() {
    let mut r = rng(15);
    for shape in [
        vec![2, 2, 9, 7],
        vec![1, 2, 5, 6, 4],
        vec![1, 1, 1, 6],
        vec![1, 1, 5, 1],
        vec![1, 1, 2, 1, 3],
        vec![2, 1, 40, 33],
    ] {
        let z = uniform(&mut r, &shape, 0.0, 1.0);
        // Values on a coarse grid tie between different pixels everywhere.
        let ties = z.affine(4.0, 0.0).unwrap().round().unwrap().affine(0.25, 0.0).unwrap();
        for iter in [0, 1, 3, 5] {
            assert_skeleton_paths_equal(&format!("f64 {shape:?}"), &z, iter);
            assert_skeleton_paths_equal(&format!("f32 {shape:?}"), &z.to_dtype(DType::F32).unwrap(), iter);
            assert_skeleton_paths_equal(&format!("ties f64 {shape:?}"), &ties, iter);
            assert_skeleton_paths_equal(
                &format!("ties f32 {shape:?}"),
                &ties.to_dtype(DType::F32).unwrap(),
                iter,
            );
        }
    }
    // A strided input.
    let z = uniform(&mut r, &[2, 3, 6, 8], 0.0, 1.0);
    assert_skeleton_paths_equal("transposed", &z.transpose(2, 3).unwrap(), 3);
}

#[test]
fn fused_cldice_losses_equal_composite() {
    let mut r = rng(16);
    for shape in [vec![2, 2, 16, 12], vec![2, 3, 6, 7, 5]] {
        let p = uniform(&mut r, &shape, 0.0, 1.0);
        let g = mask(&mut r, &shape, 0.4);
        let logits = uniform(&mut r, &shape, -3.0, 3.0);
        for dtype in [DType::F64, DType::F32] {
            let tol = if dtype == DType::F32 { 2e-5 } else { 1e-11 };
            let (p, g, logits) = (
                p.to_dtype(dtype).unwrap(),
                g.to_dtype(dtype).unwrap(),
                logits.to_dtype(dtype).unwrap(),
            );
            type Case<'a> = (
                &'a str,
                &'a Tensor,
                Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor> + 'a>,
            );
            let cases: Vec<Case> = vec![
                (
                    "cldice",
                    &p,
                    Box::new(|x| soft_cldice_loss(x, &g, &SoftClDiceLoss::default())),
                ),
                (
                    "cldice softmax none",
                    &logits,
                    Box::new(|x| {
                        let o = SoftClDiceLoss::default()
                            .with_softmax(true)
                            .with_include_background(false)
                            .with_reduction(loss_core::Reduction::None);
                        soft_cldice_loss(x, &g, &o)?.affine(1.5, 0.0)
                    }),
                ),
                (
                    "dice cldice sigmoid",
                    &logits,
                    Box::new(|x| {
                        let o = SoftDiceClDiceLoss::default()
                            .with_alpha(0.3)
                            .with_cldice(SoftClDiceLoss::default().with_sigmoid(true).with_iter_(2));
                        soft_dice_cldice_loss(x, &g, &o)
                    }),
                ),
            ];
            for (name, x, f) in &cases {
                let fused = with_path(Path::Fused, || value_and_grad(f, x));
                let composite = with_path(Path::Composite, || value_and_grad(f, x));
                let what = format!("{name} {shape:?} {dtype:?}");
                assert_close(&format!("{what}: value"), &fused.0, &composite.0, tol, tol);
                assert_close(&format!("{what}: gradient"), &fused.1, &composite.1, tol, tol);
            }
        }
    }
}

#[test]
fn fused_multiclass_jaccard_equals_composite() {
    let mut r = rng(17);
    for (shape, scale) in [
        (vec![3, 4, 9, 70], 3.0),
        (vec![2, 3, 5000], 2.0),
        (vec![5, 3], 1.0),
        (vec![2, 2, 3, 4, 5], 40.0),
    ] {
        let logits = uniform(&mut r, &shape, -scale, scale);
        let mut label_shape = shape.clone();
        label_shape.remove(1);
        let y = labels(&mut r, &label_shape, shape[1]);
        // Some pixels relabelled to the ignored values -100 and 1.
        let sel = mask(&mut r, &label_shape, 0.2).to_dtype(DType::U8).unwrap();
        let y_ignored = sel
            .where_cond(&y.ones_like().unwrap().affine(-100.0, 0.0).unwrap(), &y)
            .unwrap();
        let base = JaccardLoss::new(JaccardMode::Multiclass);
        let variants: Vec<(&str, JaccardLoss, &Tensor)> = vec![
            ("default", base.clone(), &y),
            ("ignore -100", base.clone().with_ignore_index(Some(-100)), &y_ignored),
            ("ignore 1", base.clone().with_ignore_index(Some(1)), &y),
            (
                "log smooth classes",
                base.clone()
                    .with_log_loss(true)
                    .with_smooth(0.5)
                    .with_classes(Some(vec![shape[1] - 1, 0])),
                &y,
            ),
        ];
        for dtype in [DType::F64, DType::F32] {
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
            let x = logits.to_dtype(dtype).unwrap();
            let weights = Tensor::arange(1u32, shape[1] as u32 + 1, &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let weighted = ("weights", base.clone().with_class_weights(weights), &y);
            for (name, o, t) in variants.iter().chain(std::iter::once(&weighted)) {
                let f = |z: &Tensor| jaccard_loss(z, t, o)?.affine(1.7, 0.0);
                let fused = with_path(Path::Fused, || value_and_grad(f, &x));
                let composite = with_path(Path::Composite, || value_and_grad(f, &x));
                let what = format!("jaccard {name} {shape:?} {dtype:?}");
                assert!(fused.1.iter().any(|g| *g != 0.0), "{what}: the gradient is all zero");
                assert_close(&format!("{what}: value"), &fused.0, &composite.0, tol, tol);
                assert_close(&format!("{what}: gradient"), &fused.1, &composite.1, tol, tol);
            }
        }
    }
}

/// A second backward through the same multiclass Jaccard graph (the kept softmax is taken by the
/// first; the second recomputes it) gives the same gradient.
#[test]
fn fused_multiclass_jaccard_backward_twice() {
    let mut r = rng(18);
    for dtype in [DType::F64, DType::F32] {
        let x = Var::from_tensor(&uniform(&mut r, &[2, 3, 7, 9], -2.0, 2.0).to_dtype(dtype).unwrap()).unwrap();
        let y = labels(&mut r, &[2, 7, 9], 3);
        let o = JaccardLoss::new(JaccardMode::Multiclass).with_ignore_index(Some(2));
        let loss = with_path(Path::Fused, || jaccard_loss(x.as_tensor(), &y, &o)).unwrap();
        let first = values(loss.backward().unwrap().get(x.as_tensor()).unwrap());
        let second = values(loss.backward().unwrap().get(x.as_tensor()).unwrap());
        assert!(first.iter().any(|g| *g != 0.0));
        let tol = if dtype == DType::F32 { 1e-6 } else { 1e-14 };
        assert_close(&format!("{dtype:?}: second backward"), &second, &first, tol, tol);
    }
}

/// The fused Lovász hinge and the composite form: values and gradients, f32 and f64, per image
/// or not, ignored labels, ties (logits on a coarse grid), all-positive and all-negative images,
/// an upstream gradient other than 1.
#[test]
fn fused_lovasz_hinge_equals_composite() {
    let mut r = rng(19);
    for (shape, grid) in [
        (vec![4, 1, 9, 11], false),
        (vec![3, 2, 7, 5], true),
        (vec![2, 300], true),
        (vec![5, 4], false),
        (vec![7], false),
    ] {
        let raw = uniform(&mut r, &shape, -2.5, 2.5);
        // On a grid of steps of 0.5: many equal errors (ties).
        let logits = if grid {
            raw.affine(2.0, 0.0).unwrap().round().unwrap().affine(0.5, 0.0).unwrap()
        } else {
            raw
        };
        let y = mask(&mut r, &shape, 0.4);
        // Image 0 all positive, image 1 all negative (where there are two images or more).
        let per = shape.iter().product::<usize>() / shape[0];
        let mut yv = values(&y);
        if shape[0] >= 2 {
            yv[..per].iter_mut().for_each(|v| *v = 1.0);
            yv[per..2 * per].iter_mut().for_each(|v| *v = 0.0);
        }
        let y = Tensor::from_vec(yv, shape.as_slice(), &Device::Cpu).unwrap();
        let sel = mask(&mut r, &shape, 0.25).to_dtype(DType::U8).unwrap();
        let y_ignored = sel
            .where_cond(&y.ones_like().unwrap().affine(-100.0, 0.0).unwrap(), &y)
            .unwrap();
        let y_u8 = y.to_dtype(DType::U8).unwrap();
        for dtype in [DType::F64, DType::F32] {
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
            let x = logits.to_dtype(dtype).unwrap();
            for per_image in [false, true] {
                let base = LovaszHingeLoss::default().with_per_image(per_image);
                let variants: Vec<(&str, LovaszHingeLoss, &Tensor)> = vec![
                    ("default", base, &y),
                    ("u8 labels", base, &y_u8),
                    ("ignore -100", base.with_ignore_index(Some(-100)), &y_ignored),
                    ("ignore 1", base.with_ignore_index(Some(1)), &y),
                ];
                for (name, o, t) in &variants {
                    let f = |z: &Tensor| lovasz_hinge_loss(z, t, o)?.affine(1.7, 0.0);
                    let fused = with_path(Path::Fused, || value_and_grad(f, &x));
                    let composite = with_path(Path::Composite, || value_and_grad(f, &x));
                    let what = format!("lovasz hinge {name} per_image {per_image} {shape:?} {dtype:?}");
                    assert!(fused.1.iter().any(|g| *g != 0.0), "{what}: the gradient is all zero");
                    assert_close(&format!("{what}: value"), &fused.0, &composite.0, tol, tol);
                    assert_close(&format!("{what}: gradient"), &fused.1, &composite.1, tol, tol);
                }
            }
        }
    }
}

/// A second backward through the same fused Lovász hinge graph (the kept gradient is taken by
/// the first; the second recomputes it) gives the same gradient.
#[test]
fn fused_lovasz_hinge_backward_twice() {
    let mut r = rng(20);
    for dtype in [DType::F64, DType::F32] {
        let x = Var::from_tensor(&uniform(&mut r, &[3, 1, 6, 5], -2.0, 2.0).to_dtype(dtype).unwrap()).unwrap();
        let y = mask(&mut r, &[3, 1, 6, 5], 0.5);
        let o = LovaszHingeLoss::default().with_per_image(true);
        let loss = with_path(Path::Fused, || lovasz_hinge_loss(x.as_tensor(), &y, &o)).unwrap();
        let first = values(loss.backward().unwrap().get(x.as_tensor()).unwrap());
        let second = values(loss.backward().unwrap().get(x.as_tensor()).unwrap());
        assert!(first.iter().any(|g| *g != 0.0));
        assert_close(&format!("{dtype:?}: second backward"), &second, &first, 0.0, 0.0);
    }
}
