//! Bad input gives a clear `Err` naming the loss, the argument and the shapes; never a panic.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use loss_core::Reduction;
use loss_seg::*;

fn f32s(shape: &[usize]) -> Tensor {
    Tensor::ones(shape, DType::F32, &Device::Cpu).unwrap()
}

fn idx(shape: &[usize], v: i64) -> Tensor {
    Tensor::full(v, shape, &Device::Cpu).unwrap()
}

/// The error's message, which must mention every one of `words`.
fn expect_err(r: candle_core::Result<Tensor>, words: &[&str]) -> String {
    let e = r.expect_err("expected an error");
    let msg = e.to_string();
    for w in words {
        assert!(msg.contains(w), "message {msg:?} lacks {w:?}");
    }
    msg
}

#[test]
fn shapes_that_differ() {
    let e = expect_err(
        dice_loss(&f32s(&[1, 2, 3]), &f32s(&[4, 5, 6]), &DiceLoss::default()),
        &["dice_loss", "target", "[4, 5, 6]", "[1, 2, 3]"],
    );
    assert!(e.contains("must match"), "{e}");
    expect_err(
        tversky_loss(&f32s(&[2, 2, 3]), &f32s(&[2, 2, 4]), &TverskyLoss::default()),
        &["tversky_loss", "target", "[2, 2, 4]"],
    );
    expect_err(
        generalized_dice_loss(&f32s(&[2, 3, 4]), &f32s(&[2, 2, 4]), &GeneralizedDiceLoss::default()),
        &["generalized_dice_loss", "target"],
    );
    // to_onehot_y: the index target must be [N, 1, spatial...].
    let e = expect_err(
        tversky_loss(
            &f32s(&[2, 3, 4, 4]),
            &idx(&[2, 4, 4], 0),
            &TverskyLoss::default().with_to_onehot_y(true),
        ),
        &["tversky_loss", "target", "[2, 4, 4]", "[2, 1, 4, 4]"],
    );
    assert!(e.contains("expected"), "{e}");
    expect_err(
        dice_loss(
            &f32s(&[2, 3, 4, 4]),
            &idx(&[2, 1, 4, 5], 0),
            &DiceLoss::default().with_to_onehot_y(true),
        ),
        &["dice_loss", "target", "[2, 1, 4, 5]"],
    );
    // The combined losses: ranks that differ, channels neither 1 nor C.
    expect_err(
        dice_focal_loss(&f32s(&[1, 2, 3]), &f32s(&[1, 1, 2, 3]), &DiceFocalLoss::default()),
        &["dice_focal_loss", "target", "[1, 1, 2, 3]", "[1, 2, 3]"],
    );
    expect_err(
        dice_ce_loss(&f32s(&[1, 3, 4, 4]), &f32s(&[1, 2, 4, 4]), &DiceCeLoss::default()),
        &["dice_ce_loss", "target", "[1, 2, 4, 4]"],
    );
    // Lovász: the target is [N, d1...].
    expect_err(
        lovasz_softmax_loss(&f32s(&[2, 3, 4, 4]), &idx(&[3, 4, 4], 0), &LovaszSoftmaxLoss::default()),
        &["lovasz_softmax_loss", "target", "[3, 4, 4]", "[2, 4, 4]"],
    );
    expect_err(
        lovasz_softmax_loss(&f32s(&[2, 3, 4, 4]), &idx(&[2, 16], 0), &LovaszSoftmaxLoss::default()),
        &["lovasz_softmax_loss", "target", "[2, 16]"],
    );
}

#[test]
fn fewer_than_three_dimensions() {
    let e = expect_err(
        dice_loss(&f32s(&[4, 5]), &f32s(&[4, 5]), &DiceLoss::default()),
        &["dice_loss", "pred", "[4, 5]"],
    );
    assert!(e.contains("expected"), "{e}");
    expect_err(
        tversky_loss(&f32s(&[4]), &f32s(&[4]), &TverskyLoss::default()),
        &["tversky_loss", "pred"],
    );
    expect_err(
        dice_ce_loss(&f32s(&[4, 5]), &f32s(&[4, 5]), &DiceCeLoss::default()),
        &["dice_ce_loss", "pred", "[4, 5]"],
    );
    expect_err(
        lovasz_softmax_loss(&f32s(&[4]), &idx(&[4], 0), &LovaszSoftmaxLoss::default()),
        &["lovasz_softmax_loss", "logits"],
    );
}

#[test]
fn sigmoid_and_softmax_together() {
    let (p, t) = (f32s(&[1, 2, 3]), f32s(&[1, 2, 3]));
    expect_err(
        dice_loss(&p, &t, &DiceLoss::default().with_sigmoid(true).with_softmax(true)),
        &["dice_loss", "sigmoid", "softmax"],
    );

    expect_err(
        tversky_loss(&p, &t, &TverskyLoss::default().with_sigmoid(true).with_softmax(true)),
        &["tversky_loss", "sigmoid"],
    );
    expect_err(
        focal_tversky_loss(
            &p,
            &t,
            &FocalTverskyLoss::default().with_sigmoid(true).with_softmax(true),
        ),
        &["focal_tversky_loss", "sigmoid"],
    );
    expect_err(
        generalized_dice_loss(
            &p,
            &t,
            &GeneralizedDiceLoss::default().with_sigmoid(true).with_softmax(true),
        ),
        &["generalized_dice_loss", "sigmoid"],
    );
    expect_err(
        dice_ce_loss(&p, &t, &DiceCeLoss::default().with_sigmoid(true).with_softmax(true)),
        &["dice_ce_loss", "sigmoid"],
    );
    expect_err(
        dice_focal_loss(&p, &t, &DiceFocalLoss::default().with_sigmoid(true).with_softmax(true)),
        &["dice_focal_loss", "sigmoid"],
    );
}

#[test]
fn bad_parameters() {
    let (p, t) = (f32s(&[1, 2, 3]), f32s(&[1, 2, 3]));
    for (nr, dr, arg) in [
        (-1e-5, 1e-5, "smooth_nr"),
        (1e-5, -1.0, "smooth_dr"),
        (f64::NAN, 1e-5, "smooth_nr"),
    ] {
        let e = expect_err(
            dice_loss(&p, &t, &DiceLoss::default().with_smooth_nr(nr).with_smooth_dr(dr)),
            &["dice_loss", arg],
        );
        assert!(e.contains("is invalid"), "{e}");
        expect_err(
            tversky_loss(&p, &t, &TverskyLoss::default().with_smooth_nr(nr).with_smooth_dr(dr)),
            &["tversky_loss", arg],
        );
        expect_err(
            generalized_dice_loss(
                &p,
                &t,
                &GeneralizedDiceLoss::default().with_smooth_nr(nr).with_smooth_dr(dr),
            ),
            &["generalized_dice_loss", arg],
        );
        expect_err(
            dice_ce_loss(&p, &t, &DiceCeLoss::default().with_smooth_nr(nr).with_smooth_dr(dr)),
            &["dice_ce_loss", arg],
        );
    }
    expect_err(
        tversky_loss(&p, &t, &TverskyLoss::default().with_alpha(-0.1)),
        &["tversky_loss", "alpha"],
    );
    expect_err(
        tversky_loss(&p, &t, &TverskyLoss::default().with_beta(f64::INFINITY)),
        &["tversky_loss", "beta"],
    );
    for gamma in [0.0, -1.0, f64::NAN] {
        expect_err(
            focal_tversky_loss(&p, &t, &FocalTverskyLoss::default().with_gamma(gamma)),
            &["focal_tversky_loss", "gamma"],
        );
    }
    expect_err(
        dice_ce_loss(&p, &t, &DiceCeLoss::default().with_lambda_ce(-1.0)),
        &["dice_ce_loss", "lambda_ce"],
    );
    expect_err(
        dice_ce_loss(&p, &t, &DiceCeLoss::default().with_lambda_dice(-1.0)),
        &["dice_ce_loss", "lambda_dice"],
    );
    expect_err(
        dice_ce_loss(&p, &t, &DiceCeLoss::default().with_label_smoothing(1.5)),
        &["dice_ce_loss", "label_smoothing"],
    );
    expect_err(
        dice_ce_loss(&p, &t, &DiceCeLoss::default().with_reduction(Reduction::None)),
        &["dice_ce_loss", "none"],
    );
    expect_err(
        dice_focal_loss(&p, &t, &DiceFocalLoss::default().with_lambda_focal(-0.5)),
        &["dice_focal_loss", "lambda_focal"],
    );
    expect_err(
        dice_focal_loss(&p, &t, &DiceFocalLoss::default().with_alpha(Some(1.5))),
        &["dice_focal_loss", "alpha"],
    );
    expect_err(
        dice_loss(&p, &t, &DiceLoss::default().with_reduction(Reduction::BatchMean)),
        &["dice_loss", "batchmean"],
    );
    expect_err(
        Weighting::parse("generalized_dice_loss", "cubic").map(|_| p.clone()),
        &["w_type", "cubic"],
    );
}

#[test]
fn weights_of_the_wrong_length_or_sign() {
    let p = f32s(&[2, 3, 4]);
    let y = idx(&[2, 1, 4], 1);
    let w3 = Tensor::new(&[1f32, 1.0, 1.0], &Device::Cpu).unwrap();
    // Without background the weight has C − 1 = 2 entries.
    let opts = DiceLoss::default()
        .with_include_background(false)
        .with_to_onehot_y(true);
    let e = expect_err(
        dice_loss(&p, &y, &opts.clone().with_weight(w3.clone())),
        &["dice_loss", "weight", "[3]", "[2]"],
    );
    assert!(e.contains("expected"), "{e}");
    let neg = Tensor::new(&[1f32, -1.0], &Device::Cpu).unwrap();
    expect_err(
        dice_loss(&p, &y, &opts.with_weight(neg)),
        &["dice_loss", "weight", "[0, inf)"],
    );
    // dice_ce wants [C] (all classes, for the cross-entropy).
    let w2 = Tensor::new(&[1f32, 1.0], &Device::Cpu).unwrap();
    expect_err(
        dice_ce_loss(&p, &y, &DiceCeLoss::default().with_to_onehot_y(true).with_weight(w2)),
        &["dice_ce_loss", "weight", "[3]"],
    );
    // dtype of the weight must be pred's.
    let w64 = Tensor::new(&[1f64, 1.0, 1.0], &Device::Cpu).unwrap();
    expect_err(
        dice_loss(&p, &y, &DiceLoss::default().with_to_onehot_y(true).with_weight(w64)),
        &["dice_loss", "weight"],
    );
    expect_err(
        dice_focal_loss(
            &p,
            &f32s(&[2, 3, 4]),
            &DiceFocalLoss::default().with_weight(w3.narrow(0, 0, 2).unwrap()),
        ),
        &["dice_focal_loss", "weight"],
    );
}

#[test]
fn class_indices_out_of_range_or_of_the_wrong_kind() {
    let p = f32s(&[1, 3, 2, 2]);
    let y = Tensor::new(&[[[[0i64, 1], [3, 2]]]], &Device::Cpu).unwrap();
    let e = expect_err(
        dice_loss(&p, &y, &DiceLoss::default().with_to_onehot_y(true).with_softmax(true)),
        &["dice_loss", "target", "3", "[1, 1, 2, 2]"],
    );
    assert!(e.contains("outside [0, 3)"), "{e}");
    let neg = Tensor::new(&[[[[0i64, -1], [1, 2]]]], &Device::Cpu).unwrap();
    expect_err(
        generalized_dice_loss(&p, &neg, &GeneralizedDiceLoss::default().with_to_onehot_y(true)),
        &["generalized_dice_loss", "-1"],
    );
    // Index targets without to_onehot_y.
    let e = expect_err(
        dice_loss(&p, &idx(&[1, 3, 2, 2], 0), &DiceLoss::default()),
        &["dice_loss", "target", "to_onehot_y"],
    );
    assert!(e.contains("dtype"), "{e}");
    // A float target with to_onehot_y.
    expect_err(
        dice_loss(&p, &f32s(&[1, 1, 2, 2]), &DiceLoss::default().with_to_onehot_y(true)),
        &["dice_loss", "target", "class indices"],
    );
    // Lovász: out of range unless it is ignore_index.
    let logits = f32s(&[1, 3, 2, 2]);
    let t = Tensor::new(&[[[0i64, 1], [3, 2]]], &Device::Cpu).unwrap();
    expect_err(
        lovasz_softmax_loss(&logits, &t, &LovaszSoftmaxLoss::default()),
        &["lovasz_softmax_loss", "3"],
    );
    assert!(lovasz_softmax_loss(&logits, &t, &LovaszSoftmaxLoss::default().with_ignore_index(Some(3))).is_ok());
    // Float labels for Lovász.
    expect_err(
        lovasz_softmax_loss(&logits, &f32s(&[1, 2, 2]), &LovaszSoftmaxLoss::default()),
        &["lovasz_softmax_loss", "target"],
    );
}

#[test]
fn dtypes_that_differ_or_are_not_float() {
    let p = f32s(&[1, 2, 3]);
    let t64 = Tensor::ones((1, 2, 3), DType::F64, &Device::Cpu).unwrap();
    let e = expect_err(
        dice_loss(&p, &t64, &DiceLoss::default()),
        &["dice_loss", "target", "F64", "F32"],
    );
    assert!(e.contains("dtype"), "{e}");
    let pi = idx(&[1, 2, 3], 0);
    expect_err(dice_loss(&pi, &p, &DiceLoss::default()), &["dice_loss", "pred"]);
}

#[test]
fn random_bad_shapes_never_panic() {
    let mut r = rng(31);
    for _ in 0..200 {
        let dims = |r: &mut _| -> Vec<usize> {
            let rank = (values(&uniform(r, &[1], 0.0, 5.0))[0]) as usize;
            (0..rank)
                .map(|_| 1 + (values(&uniform(r, &[1], 0.0, 3.0))[0]) as usize)
                .collect()
        };
        let (a, b) = (dims(&mut r), dims(&mut r));
        let p = uniform(&mut r, &a, 0.0, 1.0);
        let t = mask(&mut r, &b, 0.5);
        let y = labels(&mut r, &b, 3);
        let _ = dice_loss(&p, &t, &DiceLoss::default());
        let _ = dice_loss(&p, &y, &DiceLoss::default().with_to_onehot_y(true));
        let _ = tversky_loss(&p, &t, &TverskyLoss::default());
        let _ = generalized_dice_loss(&p, &y, &GeneralizedDiceLoss::default().with_to_onehot_y(true));
        let _ = dice_ce_loss(&p, &y, &DiceCeLoss::default().with_to_onehot_y(true));
        let _ = dice_ce_loss(&p, &t, &DiceCeLoss::default());
        let _ = dice_focal_loss(&p, &t, &DiceFocalLoss::default());
        let _ = lovasz_softmax_loss(&p, &y, &LovaszSoftmaxLoss::default());
    }
}
