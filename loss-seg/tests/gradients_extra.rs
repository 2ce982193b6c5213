//! Finite-difference gradient checks (f64) of the losses and options of the segmentation extras
//! (soft labels, ignore_index, masked Dice, clDice, Hausdorff-DT, Lovász hinge, Jaccard, soft
//! BCE), on seeded random inputs away from kinks, through the fused CPU path and the composite
//! (any-device) path.

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
fn dice_and_tversky_soft_label_and_ignore_index() {
    let mut r = rng(21);
    for red in REDUCTIONS {
        let z = uniform(&mut r, &[2, 3, 4, 5], -3.0, 3.0);
        let soft = uniform(&mut r, &[2, 3, 4, 5], 0.0, 1.0);
        let dice = DiceLoss::default().with_reduction(red).with_soft_label(true);
        assert_grad(
            "dice soft_label sigmoid",
            |x| dice_loss(x, &soft, &dice.clone().with_sigmoid(true)),
            &z,
        );
        assert_grad(
            "dice soft_label jaccard batch softmax",
            |x| {
                dice_loss(
                    x,
                    &soft,
                    &dice.clone().with_softmax(true).with_jaccard(true).with_batch(true),
                )
            },
            &z,
        );
        let tv = TverskyLoss::default()
            .with_reduction(red)
            .with_soft_label(true)
            .with_alpha(0.3)
            .with_beta(0.7)
            .with_sigmoid(true);
        assert_grad("tversky soft_label", |x| tversky_loss(x, &soft, &tv), &z);
        let ft = FocalTverskyLoss::default()
            .with_reduction(red)
            .with_soft_label(true)
            .with_sigmoid(true);
        assert_grad("focal tversky soft_label", |x| focal_tversky_loss(x, &soft, &ft), &z);

        // ignore_index: a label outside [0, C), a real class, and a one-hot target.
        let mut y = values(&labels(&mut r, &[2, 1, 4, 5], 3));
        for (i, v) in y.iter_mut().enumerate() {
            if i % 5 == 0 {
                *v = 255.0;
            }
        }
        let y = Tensor::from_vec(
            y.iter().map(|&v| v as i64).collect::<Vec<_>>(),
            (2, 1, 4, 5),
            z.device(),
        )
        .unwrap();
        let ig = DiceLoss::default()
            .with_reduction(red)
            .with_to_onehot_y(true)
            .with_softmax(true)
            .with_ignore_index(Some(255));
        assert_grad("dice ignore 255", |x| dice_loss(x, &y, &ig), &z);
        let tvi = TverskyLoss::default()
            .with_reduction(red)
            .with_to_onehot_y(true)
            .with_softmax(true)
            .with_include_background(false)
            .with_ignore_index(Some(255));
        assert_grad("tversky ignore 255 no background", |x| tversky_loss(x, &y, &tvi), &z);
        let y3 = labels(&mut r, &[2, 1, 4, 5], 3);
        let onehot = one_hot(&y3, 3);
        let ic = DiceLoss::default()
            .with_reduction(red)
            .with_softmax(true)
            .with_ignore_index(Some(1));
        assert_grad("dice one-hot ignore class 1", |x| dice_loss(x, &onehot, &ic), &z);
    }
}

#[test]
fn masked_dice_gradients() {
    let mut r = rng(22);
    for red in REDUCTIONS {
        let z = uniform(&mut r, &[2, 3, 4, 4], -3.0, 3.0);
        let t = mask(&mut r, &[2, 3, 4, 4], 0.4);
        let m = mask(&mut r, &[2, 1, 4, 4], 0.7);
        let m1 = mask(&mut r, &[1, 1, 4, 4], 0.6);
        let o = MaskedDiceLoss::default().with_reduction(red).with_sigmoid(true);
        assert_grad("masked dice", |x| masked_dice_loss(x, &t, &m, &o), &z);
        assert_grad(
            "masked dice batch-1 mask, batch, squared",
            |x| masked_dice_loss(x, &t, &m1, &o.clone().with_batch(true).with_squared_pred(true)),
            &z,
        );
        let y = labels(&mut r, &[2, 1, 4, 4], 3);
        let oh = MaskedDiceLoss::default()
            .with_reduction(red)
            .with_softmax(true)
            .with_to_onehot_y(true)
            .with_include_background(false);
        assert_grad("masked dice one-hot", |x| masked_dice_loss(x, &y, &m, &oh), &z);
    }
}

#[test]
fn soft_cldice_gradients() {
    let mut r = rng(23);
    for red in REDUCTIONS {
        let z = uniform(&mut r, &[2, 2, 6, 7], -3.0, 3.0);
        let t = mask(&mut r, &[2, 2, 6, 7], 0.5);
        let o = SoftClDiceLoss::default().with_reduction(red).with_sigmoid(true);
        assert_grad("soft cldice", |x| soft_cldice_loss(x, &t, &o), &z);
        assert_grad(
            "soft cldice iter 1",
            |x| soft_cldice_loss(x, &t, &o.with_iter_(1).with_smooth_nr(1e-3).with_smooth_dr(1e-3)),
            &z,
        );
        let z3 = uniform(&mut r, &[1, 2, 4, 5, 5], -3.0, 3.0);
        let y3 = labels(&mut r, &[1, 1, 4, 5, 5], 2);
        let o3 = SoftClDiceLoss::default()
            .with_reduction(red)
            .with_softmax(true)
            .with_to_onehot_y(true);
        assert_grad("soft cldice 3-D softmax", |x| soft_cldice_loss(x, &y3, &o3), &z3);
        if red != Reduction::None {
            let dc = SoftDiceClDiceLoss::default()
                .with_alpha(0.3)
                .with_cldice(o.with_reduction(red));
            assert_grad("soft dice cldice", |x| soft_dice_cldice_loss(x, &t, &dc), &z);
        }
    }
}

#[test]
fn hausdorff_gradients() {
    let mut r = rng(24);
    for red in REDUCTIONS {
        let z = uniform(&mut r, &[2, 3, 6, 6], -3.0, 3.0);
        let y = labels(&mut r, &[2, 1, 6, 6], 3);
        for alpha in [0.0, 1.0, 2.0, 3.0] {
            let o = HausdorffDtLoss::default()
                .with_reduction(red)
                .with_alpha(alpha)
                .with_softmax(true)
                .with_to_onehot_y(true);
            assert_grad("hausdorff", |x| hausdorff_dt_loss(x, &y, &o), &z);
            assert_grad("log hausdorff", |x| log_hausdorff_dt_loss(x, &y, &o), &z);
            let b = o.with_batch(true).with_include_background(true);
            assert_grad("hausdorff batch", |x| hausdorff_dt_loss(x, &y, &b), &z);
        }
        let z3 = uniform(&mut r, &[1, 1, 3, 4, 5], -3.0, 3.0);
        let t3 = mask(&mut r, &[1, 1, 3, 4, 5], 0.4);
        let o3 = HausdorffDtLoss::default().with_reduction(red).with_sigmoid(true);
        assert_grad("hausdorff 3-D", |x| hausdorff_dt_loss(x, &t3, &o3), &z3);
    }
}

#[test]
fn lovasz_hinge_gradients() {
    let mut r = rng(25);
    let z = uniform(&mut r, &[3, 1, 5, 5], -2.0, 2.0);
    let t = mask(&mut r, &[3, 1, 5, 5], 0.4);
    let mut ti = values(&t);
    for v in ti.iter_mut().step_by(4) {
        *v = 255.0;
    }
    let ti = Tensor::from_vec(ti, (3, 1, 5, 5), z.device()).unwrap();
    for per_image in [false, true] {
        let o = LovaszHingeLoss::default().with_per_image(per_image);
        assert_grad("lovasz hinge", |x| lovasz_hinge_loss(x, &t, &o), &z);
        let oi = o.with_ignore_index(Some(255));
        assert_grad("lovasz hinge ignore", |x| lovasz_hinge_loss(x, &ti, &oi), &z);
    }
}

#[test]
fn jaccard_gradients() {
    let mut r = rng(26);
    let z = uniform(&mut r, &[2, 3, 4, 5], -3.0, 3.0);
    let y = labels(&mut r, &[2, 4, 5], 3);
    let w = Tensor::new(&[1.0f64, 2.0, 0.5], z.device()).unwrap();
    for log_loss in [false, true] {
        let mc = JaccardLoss::new(JaccardMode::Multiclass).with_log_loss(log_loss);
        assert_grad("jaccard multiclass", |x| jaccard_loss(x, &y, &mc), &z);
        let sub = mc
            .clone()
            .with_classes(Some(vec![0, 2]))
            .with_class_weights(w.clone())
            .with_smooth(0.5);
        assert_grad("jaccard multiclass classes weights", |x| jaccard_loss(x, &y, &sub), &z);
        let ml = JaccardLoss::new(JaccardMode::Multilabel).with_log_loss(log_loss);
        let t = mask(&mut r, &[2, 3, 4, 5], 0.4);
        assert_grad("jaccard multilabel", |x| jaccard_loss(x, &t, &ml), &z);
        let zb = uniform(&mut r, &[2, 1, 4, 5], -3.0, 3.0);
        let tb = mask(&mut r, &[2, 1, 4, 5], 0.4);
        let mut tbi = values(&tb);
        for v in tbi.iter_mut().step_by(3) {
            *v = 255.0;
        }
        let tbi = Tensor::from_vec(tbi, (2, 1, 4, 5), z.device()).unwrap();
        let bin = JaccardLoss::new(JaccardMode::Binary)
            .with_log_loss(log_loss)
            .with_ignore_index(Some(255));
        assert_grad("jaccard binary ignore", |x| jaccard_loss(x, &tbi, &bin), &zb);
    }
}

#[test]
fn soft_bce_gradients() {
    let mut r = rng(27);
    for red in REDUCTIONS {
        let z = uniform(&mut r, &[2, 3, 4], -4.0, 4.0);
        let mut t = values(&uniform(&mut r, &[2, 3, 4], 0.0, 1.0));
        for v in t.iter_mut().step_by(5) {
            *v = -100.0;
        }
        let t = Tensor::from_vec(t, (2, 3, 4), z.device()).unwrap();
        let w = Tensor::new(&[1.0f64, 0.5, 2.0, 0.0], z.device()).unwrap();
        let pw = Tensor::new(&[1.0f64, 4.0, 0.5, 2.0], z.device()).unwrap();
        let o = SoftBceWithLogitsLoss::default()
            .with_reduction(red)
            .with_smooth_factor(Some(0.1))
            .with_weight(w)
            .with_pos_weight(pw);
        assert_grad("soft bce", |x| soft_bce_with_logits_loss(x, &t, &o), &z);
    }
}
