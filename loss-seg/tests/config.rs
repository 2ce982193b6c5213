//! The segmentation configs deserialize from MONAI's flat argument names, parts included.

use loss_core::{LossConfig, Reduction};
use loss_seg::*;

#[test]
fn dice_ce_reads_its_dice_part_and_the_shared_options_from_one_flat_map() {
    let json = r#"{"softmax": true, "to_onehot_y": true, "squared_pred": true,
                   "lambda_ce": 0.5, "smooth_nr": 0.0, "reduction": "sum", "batch": null}"#;
    let c: DiceCeLoss = serde_json::from_str(json).unwrap();
    assert!(c.dice.overlap.softmax && c.dice.overlap.to_onehot_y && c.dice.squared_pred);
    assert_eq!((c.lambda_ce, c.lambda_dice), (0.5, 1.0));
    assert_eq!(c.dice.overlap.smooth_nr, 0.0);
    assert_eq!(c.dice.overlap.smooth_dr, 1e-5, "a missing key keeps the default");
    assert!(!c.dice.overlap.batch, "null keeps the default");
    assert_eq!(c.dice.overlap.reduction, Reduction::Sum);
    // The builders of the parts reach the same fields.
    let b = DiceCeLoss::default()
        .with_softmax(true)
        .with_to_onehot_y(true)
        .with_squared_pred(true)
        .with_lambda_ce(0.5)
        .with_smooth_nr(0.0)
        .with_reduction(Reduction::Sum);
    assert_eq!(format!("{b:?}"), format!("{c:?}"));
}

#[test]
fn an_unknown_or_misplaced_parameter_is_an_error_naming_it() {
    let e = serde_json::from_str::<GeneralizedDiceLoss>(r#"{"squared_pred": true}"#).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("unknown parameter `squared_pred`"), "{msg}");
    assert!(
        msg.contains("`w_type`") && msg.contains("`smooth_nr`"),
        "names what it takes: {msg}"
    );
    let e = serde_json::from_str::<TverskyLoss>(r#"{"alpha": "big"}"#).unwrap_err();
    assert!(e.to_string().contains("invalid type"), "{e}");
    // A tensor parameter is set, not deserialized.
    let e = serde_json::from_str::<DiceLoss>(r#"{"weight": [1.0, 2.0]}"#).unwrap_err();
    assert!(e.to_string().contains("`weight` is a tensor"), "{e}");
    assert!(DiceCeLoss::is_tensor_param("weight") && !DiceCeLoss::is_tensor_param("softmax"));
}

#[test]
fn enums_deserialize_from_their_monai_and_smp_spellings() {
    let g: GeneralizedDiceLoss = serde_json::from_str(r#"{"w_type": "simple"}"#).unwrap();
    assert_eq!(g.w_type, Weighting::Simple);
    let j: JaccardLoss = serde_json::from_str(r#"{"mode": "multiclass", "classes": [0, 2]}"#).unwrap();
    assert_eq!((j.mode, j.classes), (Some(JaccardMode::Multiclass), Some(vec![0, 2])));
    assert!(serde_json::from_str::<JaccardLoss>(r#"{"mode": "multiclas"}"#).is_err());
    assert!(serde_json::from_str::<DiceLoss>(r#"{"reduction": "avg"}"#).is_err());
}

#[test]
fn the_combined_losses_refuse_the_dice_options_they_do_not_take() {
    let x = candle_core::Tensor::new(&[[[0.2f32, 0.8]]], &candle_core::Device::Cpu).unwrap();
    let c = DiceCeLoss::default().with_soft_label(true);
    let e = dice_ce_loss(&x, &x, &c).unwrap_err().to_string();
    assert!(e.contains("dice_ce_loss") && e.contains("soft_label"), "{e}");
    let f = DiceFocalLoss::default().with_ignore_index(Some(0));
    let e = dice_focal_loss(&x, &x, &f).unwrap_err().to_string();
    assert!(e.contains("dice_focal_loss") && e.contains("ignore_index"), "{e}");
}
