//! Reference values worked out by hand, and identities between the losses.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use loss_core::{cross_entropy, sigmoid_focal_loss, Reduction};
use loss_seg::*;

fn t(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

#[test]
fn dice_by_hand() {
    // I = 1.7, P = 2, G = 2: 1 − (3.4 + 1e-5) / (4 + 1e-5).
    let p = t(&[0.9, 0.1, 0.8, 0.2], &[1, 1, 4]);
    let g = t(&[1.0, 0.0, 1.0, 0.0], &[1, 1, 4]);
    let want = 1.0 - (3.4 + 1e-5) / (4.0 + 1e-5);
    assert!((scalar(&dice_loss(&p, &g, &DiceLoss::default()).unwrap()) - want).abs() < 1e-12);
    // squared_pred: P = 0.81 + 0.01 + 0.64 + 0.04 = 1.5.
    let want = 1.0 - (3.4 + 1e-5) / (3.5 + 1e-5);
    let sq = DiceLoss::default().with_squared_pred(true);
    assert!((scalar(&dice_loss(&p, &g, &sq).unwrap()) - want).abs() < 1e-12);
    // jaccard: 1 − (3.4 + 1e-5) / (2(4 − 1.7) + 1e-5).
    let want = 1.0 - (3.4 + 1e-5) / (4.6 + 1e-5);
    let jac = DiceLoss::default().with_jaccard(true);
    assert!((scalar(&dice_loss(&p, &g, &jac).unwrap()) - want).abs() < 1e-12);
}

#[test]
fn generalized_dice_replaces_infinite_weights() {
    // Class 1 is absent from the target: its weight 1/0² becomes class 0's, 1/G0² = 1/4.
    let p = t(&[0.8, 0.6, 0.3, 0.1], &[1, 2, 2]);
    let g = t(&[1.0, 1.0, 0.0, 0.0], &[1, 2, 2]);
    let v = scalar(&generalized_dice_loss(&p, &g, &GeneralizedDiceLoss::default()).unwrap());
    assert!((v - 0.263_155_124_682_898_1).abs() < 1e-12, "{v}");
    // Every class absent: all weights 0, so 1 − smooth_nr / smooth_dr.
    let z = Tensor::zeros((1, 2, 2), DType::F64, &Device::Cpu).unwrap();
    let o = GeneralizedDiceLoss::default().with_smooth_nr(1e-5).with_smooth_dr(2e-5);
    assert!((scalar(&generalized_dice_loss(&p, &z, &o).unwrap()) - 0.5).abs() < 1e-12);
}

#[test]
fn lovasz_by_hand() {
    // Pixel 0: p = [0.25, 0.75]; pixel 1: p = [0.6, 0.4].
    let z = t(&[0.0, 1.5f64.ln(), 3f64.ln(), 0.0], &[1, 2, 2]);
    // Labels [1, 1]: class 0 absent; class 1 errors [0.25, 0.6], g = [0.5, 0.5].
    let y = Tensor::new(&[[1i64, 1]], &Device::Cpu).unwrap();
    let v = scalar(&lovasz_softmax_loss(&z, &y, &LovaszSoftmaxLoss::default()).unwrap());
    assert!((v - 0.425).abs() < 1e-12, "{v}");
    // Labels [0, 1]: class 0 errors [0.75, 0.6], g = [1, 0] → 0.75; class 1 errors [0.75, 0.6],
    // g = [0.5, 0.5] → 0.675; mean 0.7125.
    let y = Tensor::new(&[[0i64, 1]], &Device::Cpu).unwrap();
    let v = scalar(&lovasz_softmax_loss(&z, &y, &LovaszSoftmaxLoss::default()).unwrap());
    assert!((v - 0.7125).abs() < 1e-12, "{v}");
    // All pixels ignored: 0 with a zero gradient.
    let ign = LovaszSoftmaxLoss::default().with_ignore_index(Some(1));
    let y = Tensor::new(&[[1i64, 1]], &Device::Cpu).unwrap();
    let (v, g) = value_and_grad(|x| lovasz_softmax_loss(x, &y, &ign), &z);
    assert_eq!(v, vec![0.0]);
    assert!(g.iter().all(|&x| x == 0.0));
}

/// Regression: a NaN logit at an ignored pixel made the loss NaN (`NaN · 0` in the weighted sum);
/// ignored pixels take no part, as in smp, so the loss and the other pixels' gradients equal those
/// with a finite logit there. (The ignored pixel's own gradient comes through the softmax over
/// its channels, which smp also takes over every pixel first: NaN there, as in PyTorch.)
#[test]
fn lovasz_nan_logit_at_an_ignored_pixel_takes_no_part() {
    // Pixels 0..3, pixel 2 ignored; its logits NaN, or 0.
    let nan = t(&[0.2, f64::NAN, 1.0, -0.5, 0.3, f64::NAN, 0.1, 0.4], &[1, 2, 4]);
    let zero = t(&[0.2, 0.0, 1.0, -0.5, 0.3, 0.0, 0.1, 0.4], &[1, 2, 4]);
    let y = Tensor::new(&[[0i64, 255, 1, 0]], &Device::Cpu).unwrap();
    let ign = LovaszSoftmaxLoss::default().with_ignore_index(Some(255));
    let (v_nan, g_nan) = value_and_grad(|x| lovasz_softmax_loss(x, &y, &ign), &nan);
    let (v_zero, g_zero) = value_and_grad(|x| lovasz_softmax_loss(x, &y, &ign), &zero);
    assert!(v_nan[0].is_finite() && v_nan[0] > 0.0, "{v_nan:?}");
    assert_eq!(v_nan, v_zero);
    for i in [0, 2, 3, 4, 6, 7] {
        assert_eq!(g_nan[i], g_zero[i], "gradient {i}");
    }
    assert_eq!((g_zero[1], g_zero[5]), (0.0, 0.0));
}

#[test]
fn lovasz_per_image_averages_images() {
    let mut r = rng(41);
    let z = uniform(&mut r, &[3, 3, 4, 4], -2.0, 2.0);
    let y = labels(&mut r, &[3, 4, 4], 3);
    let per = LovaszSoftmaxLoss::default().with_per_image(true);
    let whole = scalar(&lovasz_softmax_loss(&z, &y, &per).unwrap());
    let mean: f64 = (0..3)
        .map(|i| {
            let (zi, yi) = (z.narrow(0, i, 1).unwrap(), y.narrow(0, i, 1).unwrap());
            scalar(&lovasz_softmax_loss(&zi, &yi, &LovaszSoftmaxLoss::default()).unwrap())
        })
        .sum::<f64>()
        / 3.0;
    assert!((whole - mean).abs() < 1e-12);
}

#[test]
fn tversky_at_one_half_is_dice_and_focal_at_gamma_one_is_tversky() {
    let mut r = rng(42);
    let p = uniform(&mut r, &[2, 3, 4, 4], 0.0, 1.0);
    let g = mask(&mut r, &[2, 3, 4, 4], 0.4);
    let none = Reduction::None;
    // Tversky(½, ½) with smoothing s equals Dice with smoothing 2s.
    let tv = values(&tversky_loss(&p, &g, &TverskyLoss::default().with_reduction(none)).unwrap());
    let d = DiceLoss::default()
        .with_smooth_nr(2e-5)
        .with_smooth_dr(2e-5)
        .with_reduction(none);
    assert_close(
        "tversky ½ = dice",
        &tv,
        &values(&dice_loss(&p, &g, &d).unwrap()),
        1e-12,
        1e-12,
    );
    let ft = FocalTverskyLoss::default()
        .with_alpha(0.5)
        .with_beta(0.5)
        .with_gamma(1.0)
        .with_reduction(none);
    assert_close(
        "focal γ=1",
        &values(&focal_tversky_loss(&p, &g, &ft).unwrap()),
        &tv,
        1e-12,
        1e-12,
    );
    let ft2 = ft.with_gamma(2.0);
    let sq: Vec<f64> = tv.iter().map(|x| x * x).collect();
    assert_close(
        "focal γ=2",
        &values(&focal_tversky_loss(&p, &g, &ft2).unwrap()),
        &sq,
        1e-12,
        1e-12,
    );
    // Jaccard score J and Dice score D: D = 2J / (1 + J) without smoothing.
    let zero = DiceLoss::default()
        .with_smooth_nr(0.0)
        .with_smooth_dr(0.0)
        .with_reduction(none);
    let dl = values(&dice_loss(&p, &g, &zero).unwrap());
    let jl = values(&dice_loss(&p, &g, &zero.clone().with_jaccard(true)).unwrap());
    for (d, j) in dl.iter().zip(&jl) {
        let (ds, js) = (1.0 - d, 1.0 - j);
        assert!((ds - 2.0 * js / (1.0 + js)).abs() < 1e-12);
    }
    // Generalized Dice with one class and uniform weights is the Dice loss.
    let g1 = g.narrow(1, 0, 1).unwrap();
    let p1 = p.narrow(1, 0, 1).unwrap();
    let gd = GeneralizedDiceLoss::default()
        .with_w_type(Weighting::Uniform)
        .with_reduction(none);
    let a = values(&generalized_dice_loss(&p1, &g1, &gd).unwrap());
    let b = values(&dice_loss(&p1, &g1, &DiceLoss::default().with_reduction(none)).unwrap());
    assert_close("gdl uniform C=1", &a, &b, 1e-12, 1e-12);
}

#[test]
fn weight_batch_background_and_shapes() {
    let mut r = rng(43);
    let z = uniform(&mut r, &[2, 3, 4, 4], -2.0, 2.0);
    let y = labels(&mut r, &[2, 1, 4, 4], 3);
    let base = DiceLoss::default()
        .with_to_onehot_y(true)
        .with_softmax(true)
        .with_reduction(Reduction::None);
    let all = dice_loss(&z, &y, &base).unwrap();
    assert_eq!(all.dims(), &[2, 3]);
    // Without background: the last two columns of the full result.
    let fg = dice_loss(&z, &y, &base.clone().with_include_background(false)).unwrap();
    assert_eq!(fg.dims(), &[2, 2]);
    assert_close(
        "no background",
        &values(&fg),
        &values(&all.narrow(1, 1, 2).unwrap()),
        1e-12,
        1e-12,
    );
    // Weights multiply each class; the mean stays over N·C'.
    let w = Tensor::new(&[0.5f64, 2.0], &Device::Cpu).unwrap();
    let weighted = base
        .clone()
        .with_include_background(false)
        .with_weight(w)
        .with_reduction(Reduction::Mean);
    let f = values(&fg);
    let want = (f[0] * 0.5 + f[1] * 2.0 + f[2] * 0.5 + f[3] * 2.0) / 4.0;
    assert!((scalar(&dice_loss(&z, &y, &weighted).unwrap()) - want).abs() < 1e-12);
    // batch: one value per class.
    assert_eq!(dice_loss(&z, &y, &base.clone().with_batch(true)).unwrap().dims(), &[3]);
    let gd = GeneralizedDiceLoss::default()
        .with_to_onehot_y(true)
        .with_reduction(Reduction::None);
    assert_eq!(generalized_dice_loss(&z, &y, &gd).unwrap().dims(), &[2, 1]);
    assert_eq!(
        generalized_dice_loss(&z, &y, &gd.with_batch(true)).unwrap().dims(),
        &[1]
    );
    // u8 and u32 index targets give the same values as i64.
    for dt in [DType::U8, DType::U32] {
        let yy = y.to_dtype(dt).unwrap();
        assert_close(
            "index dtype",
            &values(&dice_loss(&z, &yy, &base).unwrap()),
            &values(&all),
            0.0,
            0.0,
        );
    }
    // f32 agrees with f64.
    let z32 = z.to_dtype(DType::F32).unwrap();
    assert_close(
        "f32",
        &values(&dice_loss(&z32, &y, &base).unwrap()),
        &values(&all),
        1e-5,
        1e-6,
    );
}

#[test]
fn combined_losses_are_their_parts() {
    let mut r = rng(44);
    let z = uniform(&mut r, &[2, 3, 4, 4], -2.0, 2.0);
    let y = labels(&mut r, &[2, 1, 4, 4], 3);
    let w = Tensor::new(&[0.5f64, 1.0, 2.0], &Device::Cpu).unwrap();
    // dice_ce = λd·Dice(weight[1:]) + λce·CE(weight).
    let o = DiceCeLoss::default()
        .with_to_onehot_y(true)
        .with_softmax(true)
        .with_include_background(false)
        .with_weight(w.clone())
        .with_lambda_dice(0.7)
        .with_lambda_ce(1.3);
    let dice = DiceLoss::default()
        .with_to_onehot_y(true)
        .with_softmax(true)
        .with_include_background(false)
        .with_weight(w.narrow(0, 1, 2).unwrap());
    let ce = cross_entropy(&z, &y.squeeze(1).unwrap(), Some(&w), -100, 0.0, Reduction::Mean).unwrap();
    let want = 0.7 * scalar(&dice_loss(&z, &y, &dice).unwrap()) + 1.3 * scalar(&ce);
    assert!((scalar(&dice_ce_loss(&z, &y, &o).unwrap()) - want).abs() < 1e-12);

    // dice_focal "none": [N, C', ...] = Dice per (N, C') broadcast + focal elementwise.
    let m = one_hot(&y, 3);
    let o = DiceFocalLoss::default()
        .with_sigmoid(true)
        .with_include_background(false)
        .with_reduction(Reduction::None);
    let out = dice_focal_loss(&z, &m, &o).unwrap();
    assert_eq!(out.dims(), &[2, 2, 4, 4]);
    let d = dice_loss(
        &z,
        &m,
        &DiceLoss::default()
            .with_sigmoid(true)
            .with_include_background(false)
            .with_reduction(Reduction::None),
    )
    .unwrap();
    let (zf, mf) = (z.narrow(1, 1, 2).unwrap(), m.narrow(1, 1, 2).unwrap());
    let fl = sigmoid_focal_loss(&zf, &mf, -1.0, 2.0, Reduction::None).unwrap();
    let want = d.reshape((2, 2, 1, 1)).unwrap().broadcast_add(&fl).unwrap();
    assert_close("dice_focal none", &values(&out), &values(&want), 1e-12, 1e-12);
    // Its "sum": Dice summed plus the focal term's spatial mean summed over (N, C').
    let s = dice_focal_loss(&z, &m, &o.clone().with_reduction(Reduction::Sum)).unwrap();
    let want = scalar(&d.sum_all().unwrap()) + scalar(&fl.mean((2, 3)).unwrap().sum_all().unwrap());
    assert!((scalar(&s) - want).abs() < 1e-12);
}
