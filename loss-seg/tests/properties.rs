//! Properties that hold for any input: finite values and gradients for random probabilities,
//! logits and masks (empty ones included, zero smoothing included), bounds, perfect predictions,
//! and MONAI's empty-mask rule.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use loss_core::Reduction;
use loss_seg::*;
use proptest::prelude::*;

type LossFn = Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor>>;

/// Every overlap loss under several option sets, as functions of `pred`, for dense targets `t`
/// and index targets `y` (`[N, 1, ...]`).
fn overlap_losses(t: &Tensor, y: &Tensor, logits: bool) -> Vec<(String, LossFn)> {
    let mut out: Vec<(String, LossFn)> = Vec::new();
    let c = t.dim(1).unwrap();
    for (smooth_nr, smooth_dr) in [(1e-5, 1e-5), (0.0, 0.0), (0.0, 1e-5), (1e-5, 0.0)] {
        // smooth_nr > 0 = smooth_dr is unbounded as a denominator tends to 0 (documented): with
        // saturated logits the denominator can underflow to 1e-35 and the true gradient overflow.
        if logits && smooth_nr > 0.0 && smooth_dr == 0.0 {
            continue;
        }
        for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            let act = |sig: bool| (logits && sig, logits && !sig);
            for (sigmoid, softmax) in [act(true), act(false)] {
                let tag = format!("nr={smooth_nr} dr={smooth_dr} {red} sigmoid={sigmoid} softmax={softmax}");
                let d = DiceLoss::default()
                    .with_smooth_nr(smooth_nr)
                    .with_smooth_dr(smooth_dr)
                    .with_reduction(red)
                    .with_sigmoid(sigmoid)
                    .with_softmax(softmax);
                for (sq, jac, batch) in [(false, false, false), (true, false, true), (false, true, false)] {
                    let o = d.clone().with_squared_pred(sq).with_jaccard(jac).with_batch(batch);
                    let tt = t.clone();
                    out.push((
                        format!("dice sq={sq} jac={jac} batch={batch} {tag}"),
                        Box::new(move |x| dice_loss(x, &tt, &o)),
                    ));
                }
                let o = d.clone().with_to_onehot_y(true).with_include_background(false);
                let yy = y.clone();
                out.push((
                    format!("dice onehot nobg {tag}"),
                    Box::new(move |x| dice_loss(x, &yy, &o)),
                ));

                let tv = TverskyLoss::default()
                    .with_smooth_nr(smooth_nr)
                    .with_smooth_dr(smooth_dr)
                    .with_reduction(red)
                    .with_sigmoid(sigmoid)
                    .with_softmax(softmax);
                for (a, b) in [(0.5, 0.5), (0.0, 0.0), (1.0, 0.0)] {
                    let (o, tt) = (tv.with_alpha(a).with_beta(b), t.clone());
                    out.push((
                        format!("tversky {a}/{b} {tag}"),
                        Box::new(move |x| tversky_loss(x, &tt, &o)),
                    ));
                }
                for gamma in [0.75, 2.0] {
                    let o = FocalTverskyLoss::default()
                        .with_gamma(gamma)
                        .with_smooth_nr(smooth_nr)
                        .with_smooth_dr(smooth_dr)
                        .with_reduction(red)
                        .with_sigmoid(sigmoid)
                        .with_softmax(softmax);
                    let tt = t.clone();
                    out.push((
                        format!("focal tversky {gamma} {tag}"),
                        Box::new(move |x| focal_tversky_loss(x, &tt, &o)),
                    ));
                }
                for w_type in [Weighting::Square, Weighting::Simple, Weighting::Uniform] {
                    for batch in [false, true] {
                        let o = GeneralizedDiceLoss::default()
                            .with_w_type(w_type)
                            .with_batch(batch)
                            .with_smooth_nr(smooth_nr)
                            .with_smooth_dr(smooth_dr)
                            .with_reduction(red)
                            .with_sigmoid(sigmoid)
                            .with_softmax(softmax);
                        let tt = t.clone();
                        out.push((
                            format!("generalized dice {w_type:?} batch={batch} {tag}"),
                            Box::new(move |x| generalized_dice_loss(x, &tt, &o)),
                        ));
                    }
                }
                if logits {
                    let o = DiceFocalLoss::default()
                        .with_smooth_nr(smooth_nr)
                        .with_smooth_dr(smooth_dr)
                        .with_reduction(red)
                        .with_sigmoid(sigmoid)
                        .with_softmax(softmax)
                        .with_alpha(Some(0.25));
                    let tt = t.clone();
                    out.push((
                        format!("dice_focal {tag}"),
                        Box::new(move |x| dice_focal_loss(x, &tt, &o)),
                    ));
                    if red != Reduction::None {
                        let o = DiceCeLoss::default()
                            .with_to_onehot_y(true)
                            .with_smooth_nr(smooth_nr)
                            .with_smooth_dr(smooth_dr)
                            .with_reduction(red)
                            .with_sigmoid(sigmoid)
                            .with_softmax(softmax);
                        let yy = y.clone();
                        out.push((
                            format!("dice_ce {tag} C={c}"),
                            Box::new(move |x| dice_ce_loss(x, &yy, &o)),
                        ));
                    }
                }
            }
        }
    }
    out
}

fn all_finite(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random probabilities (or logits), masks with every density (empty and full included)
    /// and every smoothing (zero included): finite values and gradients, and losses of
    /// probabilities in [0, 1].
    #[test]
    fn finite_values_and_gradients(
        n in 1usize..3, c in 1usize..4, h in 1usize..4, w in 1usize..4, seed in any::<u64>(),
        density in prop_oneof![Just(0.0), Just(0.3), Just(1.0)],
        kind in 0u8..3, f32 in any::<bool>(),
    ) {
        let mut r = rng(seed);
        let shape = [n, c, h, w];
        let pred = match kind {
            0 => uniform(&mut r, &shape, 0.0, 1.0),
            1 => Tensor::zeros(&shape, DType::F64, &Device::Cpu).unwrap(),
            _ => uniform(&mut r, &shape, -30.0, 30.0),
        };
        let t = mask(&mut r, &shape, density);
        let y = labels(&mut r, &[n, 1, h, w], c);
        let dt = if f32 { DType::F32 } else { DType::F64 };
        let (pred, t) = (pred.to_dtype(dt).unwrap(), t.to_dtype(dt).unwrap());
        for (name, f) in overlap_losses(&t, &y, kind == 2) {
            let (v, g) = value_and_grad(&f, &pred);
            prop_assert!(all_finite(&v), "{name}: value {v:?}");
            prop_assert!(all_finite(&g), "{name}: gradient {g:?}");
            // Dice of probabilities lies in [0, 1] (its sum in [0, N·C]) unless smooth_nr > 0 = smooth_dr.
            let unbounded = (name.contains("nr=0.00001") && name.contains("dr=0 ")) || name.contains(" sum ");
            if kind != 2 && name.starts_with("dice ") && !unbounded {
                prop_assert!(v.iter().all(|&x| (-1e-6..=1.0 + 1e-6).contains(&x)), "{name}: {v:?} outside [0, 1]");
            }
        }
    }

    /// Lovász-Softmax: finite, in [0, 1], for any logits and labels, some or all ignored.
    #[test]
    fn lovasz_finite_and_bounded(
        n in 1usize..3, c in 1usize..4, h in 1usize..5, seed in any::<u64>(),
        ignore_every in 0usize..4, per_image in any::<bool>(), scale in prop_oneof![Just(1.0), Just(50.0)],
    ) {
        let mut r = rng(seed);
        let z = uniform(&mut r, &[n, c, h, 3], -scale, scale);
        let mut y: Vec<i64> = values(&labels(&mut r, &[n, h, 3], c)).iter().map(|&v| v as i64).collect();
        if ignore_every > 0 {
            for v in y.iter_mut().step_by(ignore_every) {
                *v = 255;
            }
        }
        let y = Tensor::from_vec(y, (n, h, 3), &Device::Cpu).unwrap();
        let opts = LovaszSoftmaxLoss::default().with_per_image(per_image).with_ignore_index(Some(255));
        let (v, g) = value_and_grad(|x| lovasz_softmax_loss(x, &y, &opts), &z);
        prop_assert!(all_finite(&v) && all_finite(&g), "{v:?} {g:?}");
        prop_assert!((-1e-9..=1.0 + 1e-9).contains(&v[0]), "{v:?}");
    }

    /// A perfect prediction of a binary mask scores 0 (up to the smoothing) for the Dice family.
    #[test]
    fn perfect_prediction_scores_zero(n in 1usize..3, c in 1usize..4, seed in any::<u64>(), density in 0.0f64..1.0) {
        let mut r = rng(seed);
        let t = mask(&mut r, &[n, c, 4, 5], density);
        for (name, v) in [
            ("dice", dice_loss(&t, &t, &DiceLoss::default())),
            ("jaccard", dice_loss(&t, &t, &DiceLoss::default().with_jaccard(true))),
            ("tversky", tversky_loss(&t, &t, &TverskyLoss::default())),
            ("focal tversky", focal_tversky_loss(&t, &t, &FocalTverskyLoss::default())),
            ("generalized dice", generalized_dice_loss(&t, &t, &GeneralizedDiceLoss::default())),
            ("dice smooth 0", dice_loss(&t, &t, &DiceLoss::default().with_smooth_nr(0.0).with_smooth_dr(0.0))),
        ] {
            let v = scalar(&v.unwrap());
            prop_assert!(v.abs() < 1e-6, "{name}: {v}");
        }
    }
}

#[test]
fn empty_prediction_on_empty_target() {
    let zeros = Tensor::zeros((2, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
    // Default smoothing: 1 − 1e-5/1e-5 = 0 (MONAI), gradient smooth_nr / smooth_dr² per pixel.
    let (v, g) = value_and_grad(
        |x| dice_loss(x, &zeros, &DiceLoss::default().with_reduction(Reduction::Sum)),
        &zeros,
    );
    assert_eq!(v, vec![0.0]);
    assert!(g.iter().all(|&x| (x - 1e5).abs() < 1.0), "{g:?}");
    // Both smoothing terms 0: documented as 0 with a zero gradient (MONAI gives NaN).
    let none = DiceLoss::default()
        .with_smooth_nr(0.0)
        .with_smooth_dr(0.0)
        .with_reduction(Reduction::None);
    let (v, g) = value_and_grad(|x| dice_loss(x, &zeros, &none), &zeros);
    assert!(v.iter().all(|&x| x == 0.0) && v.len() == 6, "{v:?}");
    assert!(g.iter().all(|&x| x == 0.0));
    // Only numerator smoothing 0: 1 − 0/1e-5 = 1 (mmocr#408 / MONAI#7883), gradient 0.
    let nr0 = DiceLoss::default().with_smooth_nr(0.0);
    let (v, g) = value_and_grad(|x| dice_loss(x, &zeros, &nr0), &zeros);
    assert_eq!(v, vec![1.0]);
    assert!(g.iter().all(|&x| x == 0.0));
    // Only denominator smoothing 0 with smooth_nr > 0: 0, not MONAI's −inf.
    let dr0 = DiceLoss::default().with_smooth_dr(0.0);
    assert_eq!(scalar(&dice_loss(&zeros, &zeros, &dr0).unwrap()), 0.0);
    // The same rule in Tversky, generalized Dice and focal Tversky.
    let t0 = TverskyLoss::default().with_smooth_nr(0.0).with_smooth_dr(0.0);
    assert_eq!(scalar(&tversky_loss(&zeros, &zeros, &t0).unwrap()), 0.0);
    let g0 = GeneralizedDiceLoss::default().with_smooth_nr(0.0).with_smooth_dr(0.0);
    assert_eq!(scalar(&generalized_dice_loss(&zeros, &zeros, &g0).unwrap()), 0.0);
    assert_eq!(
        scalar(&focal_tversky_loss(&zeros, &zeros, &FocalTverskyLoss::default()).unwrap()),
        0.0
    );
}

#[test]
fn dice_is_invariant_to_spatial_permutation_and_symmetric_in_its_arguments() {
    let mut r = rng(21);
    let p = uniform(&mut r, &[2, 3, 4, 5], 0.0, 1.0);
    let t = uniform(&mut r, &[2, 3, 4, 5], 0.0, 1.0);
    let none = DiceLoss::default().with_reduction(Reduction::None);
    let a = values(&dice_loss(&p, &t, &none).unwrap());
    let b = values(&dice_loss(&t, &p, &none).unwrap());
    assert_close("symmetric", &a, &b, 1e-12, 1e-12);
    let (pt, tt) = (
        p.transpose(2, 3).unwrap().contiguous().unwrap(),
        t.transpose(2, 3).unwrap().contiguous().unwrap(),
    );
    let c = values(&dice_loss(&pt, &tt, &none).unwrap());
    assert_close("permuted", &a, &c, 1e-12, 1e-12);
}
