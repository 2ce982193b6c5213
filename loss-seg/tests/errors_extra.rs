//! Bad input to the segmentation extras gives a clear `Err` naming the loss, the argument and the
//! shapes (or the parameter); never a panic.

use candle_core::{DType, Device, Tensor};
use loss_core::Reduction;
use loss_seg::*;

fn f32s(shape: &[usize]) -> Tensor {
    Tensor::ones(shape, DType::F32, &Device::Cpu).unwrap()
}

fn idx(shape: &[usize], v: i64) -> Tensor {
    Tensor::full(v, shape, &Device::Cpu).unwrap()
}

/// The error's message, which must mention every one of `words`.
fn expect_err(r: candle_core::Result<Tensor>, words: &[&str]) {
    let e = r.expect_err("expected an error");
    let msg = e.to_string();
    for w in words {
        assert!(msg.contains(w), "message {msg:?} lacks {w:?}");
    }
}

#[test]
fn ignore_index_keeps_other_labels_checked() {
    let mut y = vec![255i64; 4];
    y[1] = 7;
    let y = Tensor::from_vec(y, (1, 1, 2, 2), &Device::Cpu).unwrap();
    let o = DiceLoss::default()
        .with_to_onehot_y(true)
        .with_softmax(true)
        .with_ignore_index(Some(255));
    expect_err(dice_loss(&f32s(&[1, 3, 2, 2]), &y, &o), &["dice_loss", "target", "7"]);
    // Without the ignore_index, 255 itself is out of range.
    let y = idx(&[1, 1, 2, 2], 255);
    let o = TverskyLoss::default().with_to_onehot_y(true);
    expect_err(
        tversky_loss(&f32s(&[1, 3, 2, 2]), &y, &o),
        &["tversky_loss", "target", "255"],
    );
}

#[test]
fn masked_dice_mask_shapes() {
    let o = MaskedDiceLoss::default();
    let p = f32s(&[2, 2, 3, 3]);
    expect_err(
        masked_dice_loss(&p, &p, &f32s(&[2, 2, 3, 3]), &o),
        &["masked_dice_loss", "mask", "[2, 2, 3, 3]"],
    );
    expect_err(
        masked_dice_loss(&p, &p, &f32s(&[3, 1, 3, 3]), &o),
        &["masked_dice_loss", "mask", "[3, 1, 3, 3]"],
    );
    expect_err(
        masked_dice_loss(&p, &p, &f32s(&[2, 1, 3, 4]), &o),
        &["masked_dice_loss", "mask", "[2, 1, 3, 4]"],
    );
    let y = idx(&[2, 1, 3, 4], 0);
    expect_err(
        masked_dice_loss(&p, &y, &f32s(&[2, 1, 3, 3]), &o.clone().with_to_onehot_y(true)),
        &["masked_dice_loss", "target", "[2, 1, 3, 4]"],
    );
    expect_err(
        masked_dice_loss(&p, &p, &f32s(&[2, 1, 3, 3]), &o.clone().with_ignore_index(Some(1))),
        &["masked_dice_loss", "ignore_index"],
    );
    expect_err(
        masked_dice_loss(&p, &p, &f32s(&[2, 1, 3, 3]), &o.with_sigmoid(true).with_softmax(true)),
        &["masked_dice_loss", "sigmoid"],
    );
}

#[test]
fn cldice_and_hausdorff_ranks_and_parameters() {
    let p3 = f32s(&[1, 1, 4]);
    expect_err(
        soft_cldice_loss(&p3, &p3, &SoftClDiceLoss::default()),
        &["soft_cldice_loss", "pred", "[1, 1, 4]"],
    );
    let p = f32s(&[1, 1, 4, 4]);
    expect_err(
        soft_cldice_loss(&p, &p, &SoftClDiceLoss::default().with_smooth(0.0)),
        &["soft_cldice_loss", "smooth"],
    );
    expect_err(
        soft_dice_cldice_loss(&p, &p, &SoftDiceClDiceLoss::default().with_alpha(1.5)),
        &["soft_dice_cldice_loss", "alpha"],
    );
    expect_err(
        soft_dice_cldice_loss(
            &p,
            &p,
            &SoftDiceClDiceLoss::default().with_cldice(SoftClDiceLoss::default().with_reduction(Reduction::None)),
        ),
        &["soft_dice_cldice_loss", "none"],
    );
    expect_err(
        soft_dice_cldice_loss(
            &f32s(&[2, 3, 4, 4]),
            &f32s(&[2, 2, 4, 4]),
            &SoftDiceClDiceLoss::default(),
        ),
        &["soft_dice_cldice_loss", "target", "[2, 2, 4, 4]"],
    );
    expect_err(
        hausdorff_dt_loss(&p3, &p3, &HausdorffDtLoss::default()),
        &["hausdorff_dt_loss", "pred", "[1, 1, 4]"],
    );
    expect_err(
        hausdorff_dt_loss(&p, &f32s(&[1, 4, 5, 6]), &HausdorffDtLoss::default()),
        &["hausdorff_dt_loss", "target", "[1, 4, 5, 6]"],
    );
    expect_err(
        log_hausdorff_dt_loss(&p, &p, &HausdorffDtLoss::default().with_alpha(-1.0)),
        &["log_hausdorff_dt_loss", "alpha"],
    );
}

#[test]
fn lovasz_hinge_jaccard_and_soft_bce_arguments() {
    let x = f32s(&[2, 1, 3, 3]);
    let bad = (f32s(&[2, 1, 3, 3]) * 2.0).unwrap();
    expect_err(
        lovasz_hinge_loss(&x, &bad, &LovaszHingeLoss::default()),
        &["lovasz_hinge_loss", "target", "0 or 1"],
    );
    expect_err(
        lovasz_hinge_loss(&x, &f32s(&[2, 3, 3]), &LovaszHingeLoss::default()),
        &["lovasz_hinge_loss", "target", "[2, 3, 3]"],
    );
    let j = JaccardLoss::new(JaccardMode::Binary).with_classes(Some(vec![0]));
    expect_err(jaccard_loss(&x, &x, &j), &["jaccard_loss", "classes"]);
    expect_err(
        JaccardMode::parse("jaccard_loss", "multiclas").map(|_| x.clone()),
        &["jaccard_loss", "multiclas"],
    );
    let mc = JaccardLoss::new(JaccardMode::Multiclass);
    expect_err(
        jaccard_loss(&f32s(&[1, 3, 2, 2]), &idx(&[1, 2, 2], 3), &mc),
        &["jaccard_loss", "target", "3"],
    );
    expect_err(
        jaccard_loss(&f32s(&[1, 3, 2, 2]), &idx(&[1, 1, 2, 2], 0), &mc),
        &["jaccard_loss", "target", "[1, 1, 2, 2]"],
    );
    expect_err(
        jaccard_loss(
            &f32s(&[1, 3, 2, 2]),
            &idx(&[1, 2, 2], 0),
            &mc.clone().with_class_weights(f32s(&[2])),
        ),
        &["jaccard_loss", "class_weights", "[2]"],
    );
    let o = SoftBceWithLogitsLoss::default();
    expect_err(
        soft_bce_with_logits_loss(&x, &f32s(&[2, 3, 3]), &o),
        &["soft_bce_with_logits_loss", "target", "[2, 3, 3]"],
    );
    expect_err(
        soft_bce_with_logits_loss(&x, &x, &o.clone().with_pos_weight(f32s(&[2]))),
        &["soft_bce_with_logits_loss", "pos_weight", "[2]"],
    );
    expect_err(
        soft_bce_with_logits_loss(&x, &x, &o.clone().with_reduction(Reduction::BatchMean)),
        &["soft_bce_with_logits_loss"],
    );
    expect_err(
        soft_bce_with_logits_loss(&x, &x, &o.with_smooth_factor(Some(1.5))),
        &["soft_bce_with_logits_loss", "smooth_factor"],
    );
}

#[test]
fn values_of_simple_inputs() {
    // Hausdorff on a 1x5 line: pred 1 at x = 0 only, target 1 at x = 4 only.
    let dev = &Device::Cpu;
    let p = Tensor::new(&[[[[1.0f64, 0.0, 0.0, 0.0, 0.0]]]], dev).unwrap();
    let g = Tensor::new(&[[[[0.0f64, 0.0, 0.0, 0.0, 1.0]]]], dev).unwrap();
    let o = HausdorffDtLoss::default()
        .with_alpha(1.0)
        .with_reduction(Reduction::Sum);
    // F(p) = [1, 1, 2, 3, 4], F(g) = [4, 3, 2, 1, 1]; (p − g)² = [1, 0, 0, 0, 1]; mean over 5.
    let v = hausdorff_dt_loss(&p, &g, &o).unwrap().to_scalar::<f64>().unwrap();
    assert!((v - (5.0 + 5.0) / 5.0).abs() < 1e-12, "{v}");
    // Lovász hinge of one positive pixel with logit 0.25: relu(1 − 0.25)·1.
    let x = Tensor::new(&[[0.25f64]], dev).unwrap();
    let y = Tensor::new(&[[1.0f64]], dev).unwrap();
    let v = lovasz_hinge_loss(&x, &y, &LovaszHingeLoss::default())
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!((v - 0.75).abs() < 1e-12, "{v}");
    // soft_label Dice: pred equal to a soft target scores 0 (the plain form does not).
    let t = Tensor::new(&[[[0.3f64, 0.6, 0.9]]], dev).unwrap();
    let soft = DiceLoss::default()
        .with_soft_label(true)
        .with_smooth_nr(0.0)
        .with_smooth_dr(0.0);
    let v = dice_loss(&t, &t, &soft).unwrap().to_scalar::<f64>().unwrap();
    assert!(v.abs() < 1e-12, "{v}");
    let v = dice_loss(&t, &t, &soft.with_soft_label(false))
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(v > 0.1, "{v}");
}

#[test]
fn dice_ce_label_smoothing_is_checked_only_with_classes() {
    // C = 1: the BCE path has no label smoothing; MONAI does not even read it.
    let x = f32s(&[2, 1, 3, 3]);
    let o = DiceCeLoss::default().with_sigmoid(true).with_label_smoothing(1.5);
    let a = dice_ce_loss(&x, &x, &o).unwrap().to_scalar::<f32>().unwrap();
    let b = dice_ce_loss(&x, &x, &o.with_label_smoothing(0.0))
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(a, b);
    // C = 3: an error naming the parameter.
    let o = DiceCeLoss::default().with_to_onehot_y(true).with_label_smoothing(1.5);
    expect_err(
        dice_ce_loss(&f32s(&[1, 3, 2, 2]), &idx(&[1, 1, 2, 2], 0), &o),
        &["dice_ce_loss", "label_smoothing"],
    );
}
