//! Finite-difference gradient checks (f64) of every loss-seg loss, on seeded random inputs, through
//! both the fused CPU path and the composite (any-device) path.

mod common;

use candle_core::{Result, Tensor};
use common::*;
use loss_core::gradcheck::check_gradient;
use loss_core::kernel::{with_path, Path};
use loss_core::Reduction;
use loss_seg::*;

const TOL: f64 = 1e-6;

/// Checks `f` against central differences on both paths.
fn assert_grad(name: &str, f: impl Fn(&Tensor) -> Result<Tensor>, x: &Tensor) {
    let fused = check_gradient(&f, x, 1e-6).unwrap();
    assert!(
        fused.max_error < TOL,
        "{name} (fused): gradient differs from finite differences: {fused:?}"
    );
    let composite = with_path(Path::Composite, || check_gradient(&f, x, 1e-6)).unwrap();
    assert!(
        composite.max_error < TOL,
        "{name} (composite): gradient differs from finite differences: {composite:?}"
    );
}

const REDUCTIONS: [Reduction; 3] = [Reduction::Mean, Reduction::Sum, Reduction::None];

#[test]
fn dice_gradients() {
    let mut r = rng(1);
    for red in REDUCTIONS {
        // Probabilities against soft and hard targets, 2-D and 3-D.
        let p = uniform(&mut r, &[2, 3, 4, 5], 0.05, 0.95);
        let t = mask(&mut r, &[2, 3, 4, 5], 0.4);
        let soft = uniform(&mut r, &[2, 3, 4, 5], 0.0, 1.0);
        let base = DiceLoss::default().with_reduction(red);
        assert_grad("dice", |x| dice_loss(x, &t, &base), &p);
        assert_grad("dice soft target", |x| dice_loss(x, &soft, &base), &p);
        assert_grad("dice w.r.t. target", |y| dice_loss(&p, y, &base), &soft);
        assert_grad(
            "dice squared",
            |x| dice_loss(x, &t, &base.clone().with_squared_pred(true)),
            &p,
        );
        assert_grad(
            "dice jaccard",
            |x| dice_loss(x, &t, &base.clone().with_jaccard(true)),
            &p,
        );
        assert_grad(
            "dice squared jaccard batch",
            |x| {
                dice_loss(
                    x,
                    &t,
                    &base.clone().with_squared_pred(true).with_jaccard(true).with_batch(true),
                )
            },
            &p,
        );
        let w = Tensor::new(&[0.5f64, 2.0, 1.0], p.device()).unwrap();
        assert_grad(
            "dice weight",
            |x| dice_loss(x, &t, &base.clone().with_weight(w.clone())),
            &p,
        );
        let p3 = uniform(&mut r, &[2, 2, 3, 3, 4], 0.05, 0.95);
        let t3 = mask(&mut r, &[2, 2, 3, 3, 4], 0.5);
        assert_grad("dice 3-D", |x| dice_loss(x, &t3, &base), &p3);

        // Logits with activations and index targets.
        let z = uniform(&mut r, &[2, 3, 4, 4], -3.0, 3.0);
        let y = labels(&mut r, &[2, 1, 4, 4], 3);
        let onehot = base.clone().with_to_onehot_y(true);
        assert_grad(
            "dice softmax",
            |x| dice_loss(x, &y, &onehot.clone().with_softmax(true)),
            &z,
        );
        assert_grad(
            "dice sigmoid",
            |x| dice_loss(x, &y, &onehot.clone().with_sigmoid(true)),
            &z,
        );
        assert_grad(
            "dice softmax no background weight",
            |x| {
                let w = Tensor::new(&[2.0f64, 0.5], x.device())?;
                dice_loss(
                    x,
                    &y,
                    &onehot
                        .clone()
                        .with_softmax(true)
                        .with_include_background(false)
                        .with_weight(w),
                )
            },
            &z,
        );
    }
}

#[test]
fn tversky_gradients() {
    let mut r = rng(2);
    for red in REDUCTIONS {
        let p = uniform(&mut r, &[2, 3, 4, 5], 0.05, 0.95);
        let t = mask(&mut r, &[2, 3, 4, 5], 0.4);
        let base = TverskyLoss::default().with_reduction(red);
        assert_grad("tversky", |x| tversky_loss(x, &t, &base), &p);
        assert_grad(
            "tversky 0.3/0.7",
            |x| tversky_loss(x, &t, &base.with_alpha(0.3).with_beta(0.7)),
            &p,
        );
        assert_grad(
            "tversky 1/0 batch",
            |x| tversky_loss(x, &t, &base.with_alpha(1.0).with_beta(0.0).with_batch(true)),
            &p,
        );
        let z = uniform(&mut r, &[2, 3, 2, 3, 4], -3.0, 3.0);
        let y = labels(&mut r, &[2, 1, 2, 3, 4], 3);
        let opts = base
            .with_to_onehot_y(true)
            .with_softmax(true)
            .with_include_background(false);
        assert_grad("tversky 3-D softmax no background", |x| tversky_loss(x, &y, &opts), &z);
    }
}

#[test]
fn focal_tversky_gradients() {
    let mut r = rng(3);
    for red in REDUCTIONS {
        let p = uniform(&mut r, &[2, 3, 4, 5], 0.05, 0.95);
        let t = mask(&mut r, &[2, 3, 4, 5], 0.4);
        let base = FocalTverskyLoss::default().with_reduction(red);
        for gamma in [0.75, 1.0, 1.5, 3.0] {
            assert_grad(
                "focal tversky",
                |x| focal_tversky_loss(x, &t, &base.with_gamma(gamma)),
                &p,
            );
        }
        let z = uniform(&mut r, &[2, 1, 5, 5], -3.0, 3.0);
        let m = mask(&mut r, &[2, 1, 5, 5], 0.5);
        let keras = base
            .with_sigmoid(true)
            .with_batch(true)
            .with_smooth_nr(1.0)
            .with_smooth_dr(1.0);
        assert_grad("focal tversky sigmoid batch", |x| focal_tversky_loss(x, &m, &keras), &z);
    }
}

#[test]
fn generalized_dice_gradients() {
    let mut r = rng(4);
    for red in REDUCTIONS {
        for w_type in [Weighting::Square, Weighting::Simple, Weighting::Uniform] {
            for batch in [false, true] {
                let p = uniform(&mut r, &[2, 3, 4, 5], 0.05, 0.95);
                let t = mask(&mut r, &[2, 3, 4, 5], 0.4);
                let opts = GeneralizedDiceLoss::default()
                    .with_reduction(red)
                    .with_w_type(w_type)
                    .with_batch(batch);
                assert_grad("generalized dice", |x| generalized_dice_loss(x, &t, &opts), &p);
                // An absent class (its weight replaced by the largest finite one).
                let z = uniform(&mut r, &[2, 3, 4, 4], -3.0, 3.0);
                let y = labels(&mut r, &[2, 1, 4, 4], 2);
                let soft = opts.with_to_onehot_y(true).with_softmax(true);
                assert_grad(
                    "generalized dice absent class",
                    |x| generalized_dice_loss(x, &y, &soft),
                    &z,
                );
            }
        }
    }
}

#[test]
fn dice_ce_gradients() {
    let mut r = rng(5);
    for red in [Reduction::Mean, Reduction::Sum] {
        let z = uniform(&mut r, &[2, 3, 4, 4], -3.0, 3.0);
        let y = labels(&mut r, &[2, 1, 4, 4], 3);
        let w = Tensor::new(&[0.5f64, 1.0, 2.0], z.device()).unwrap();
        let base = DiceCeLoss::default().with_reduction(red).with_to_onehot_y(true);
        assert_grad("dice_ce index", |x| dice_ce_loss(x, &y, &base), &z);
        assert_grad(
            "dice_ce softmax weight lambdas",
            |x| {
                let o = base
                    .clone()
                    .with_softmax(true)
                    .with_weight(w.clone())
                    .with_lambda_dice(0.7)
                    .with_lambda_ce(1.3);
                dice_ce_loss(x, &y, &o)
            },
            &z,
        );
        assert_grad(
            "dice_ce sigmoid squared no background",
            |x| {
                let o = base
                    .clone()
                    .with_sigmoid(true)
                    .with_squared_pred(true)
                    .with_include_background(false);
                dice_ce_loss(x, &y, &o)
            },
            &z,
        );
        let onehot = one_hot(&y, 3);
        let soft = DiceCeLoss::default()
            .with_reduction(red)
            .with_softmax(true)
            .with_jaccard(true)
            .with_batch(true)
            .with_label_smoothing(0.1);
        assert_grad(
            "dice_ce one-hot label smoothing",
            |x| dice_ce_loss(x, &onehot, &soft),
            &z,
        );
        // One channel: binary cross-entropy with pos_weight.
        let z1 = uniform(&mut r, &[2, 1, 6], -3.0, 3.0);
        let m1 = mask(&mut r, &[2, 1, 6], 0.5);
        let w1 = Tensor::new(&[0.5f64], z.device()).unwrap();
        let single = DiceCeLoss::default()
            .with_reduction(red)
            .with_sigmoid(true)
            .with_weight(w1);
        assert_grad("dice_ce one channel", |x| dice_ce_loss(x, &m1, &single), &z1);
    }
}

#[test]
fn dice_focal_gradients() {
    let mut r = rng(6);
    for red in REDUCTIONS {
        let z = uniform(&mut r, &[2, 3, 4, 4], -3.0, 3.0);
        let m = mask(&mut r, &[2, 3, 4, 4], 0.4);
        let w = Tensor::new(&[1.0f64, 1.0, 2.0], z.device()).unwrap();
        let base = DiceFocalLoss::default().with_reduction(red);
        assert_grad("dice_focal", |x| dice_focal_loss(x, &m, &base), &z);
        assert_grad(
            "dice_focal sigmoid weight alpha gamma 1",
            |x| {
                let o = base
                    .clone()
                    .with_sigmoid(true)
                    .with_weight(w.clone())
                    .with_alpha(Some(0.25))
                    .with_gamma(1.0);
                dice_focal_loss(x, &m, &o)
            },
            &z,
        );
        assert_grad(
            "dice_focal jaccard batch lambdas",
            |x| {
                let o = base
                    .clone()
                    .with_sigmoid(true)
                    .with_jaccard(true)
                    .with_batch(true)
                    .with_lambda_dice(0.6)
                    .with_lambda_focal(1.5);
                dice_focal_loss(x, &m, &o)
            },
            &z,
        );
        let y = labels(&mut r, &[2, 1, 4, 4], 3);
        assert_grad(
            "dice_focal index no background softmax",
            |x| {
                let w = Tensor::new(&[1.0f64, 2.0], x.device())?;
                let o = base
                    .clone()
                    .with_to_onehot_y(true)
                    .with_softmax(true)
                    .with_include_background(false)
                    .with_weight(w);
                dice_focal_loss(x, &y, &o)
            },
            &z,
        );
    }
}

#[test]
fn lovasz_gradients() {
    let mut r = rng(7);
    for per_image in [false, true] {
        for ignore in [None, Some(-1i64), Some(1)] {
            let z = uniform(&mut r, &[2, 3, 4, 4], -3.0, 3.0);
            let mut y = common::values(&labels(&mut r, &[2, 4, 4], 3));
            if ignore == Some(-1) {
                for v in y.iter_mut().step_by(5) {
                    *v = -1.0;
                }
            }
            let y = Tensor::from_vec(y.iter().map(|&v| v as i64).collect::<Vec<_>>(), (2, 4, 4), z.device()).unwrap();
            let opts = LovaszSoftmaxLoss::default()
                .with_per_image(per_image)
                .with_ignore_index(ignore);
            assert_grad("lovasz", |x| lovasz_softmax_loss(x, &y, &opts), &z);
        }
    }
    let z3 = uniform(&mut r, &[1, 4, 2, 3, 4], -3.0, 3.0);
    let y3 = labels(&mut r, &[1, 2, 3, 4], 3);
    assert_grad(
        "lovasz 3-D absent class",
        |x| lovasz_softmax_loss(x, &y3, &LovaszSoftmaxLoss::default()),
        &z3,
    );
}
