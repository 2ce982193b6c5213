//! Properties on many boxes: on 10,000 seeded random box pairs, half of them degenerate (zero
//! width or height, points, identical, disjoint, nested, shared edges and corners, integer grids
//! full of ties), every loss and every gradient is finite on both kernels, and the fused kernel
//! equals the composite path; proptest then searches the same properties on its own boxes.

mod common;

use candle_core::{DType, Result, Tensor};
use common::*;
use loss_bbox::*;
use loss_core::kernel::{with_path, Path};
use loss_core::Reduction;
use proptest::prelude::*;

const N: usize = 10_000;

const KINDS: [AlignedLoss; 7] = [
    AlignedLoss::Iou(IouMode::Linear),
    AlignedLoss::Iou(IouMode::Square),
    AlignedLoss::Iou(IouMode::Log),
    AlignedLoss::Giou,
    AlignedLoss::Diou,
    AlignedLoss::Ciou,
    AlignedLoss::Eiou,
];

fn finite_everywhere(what: &str, f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>, a: &Tensor, b: &Tensor) {
    let (v, gp, gt) = value_and_grads(f, a, b);
    assert_finite(&format!("{what}: value"), &v);
    assert_finite(&format!("{what}: grad of the first argument"), &gp);
    assert_finite(&format!("{what}: grad of the second argument"), &gt);
}

#[test]
fn every_aligned_loss_and_gradient_is_finite_on_10k_pairs() {
    let (p, t) = mixed_pairs(21, N);
    for dtype in [DType::F64, DType::F32] {
        let (a, b) = (boxes(&p, dtype), boxes(&t, dtype));
        for kind in KINDS {
            for kernel in [Path::Fused, Path::Composite] {
                finite_everywhere(
                    &format!("{kind:?} {kernel:?} {dtype:?}"),
                    |x: &Tensor, y: &Tensor| with_path(kernel, || aligned_loss(kind, x, y, 1e-7, Reduction::None)),
                    &a,
                    &b,
                );
            }
        }
        finite_everywhere(
            &format!("extended_iou_loss {dtype:?}"),
            |x: &Tensor, y: &Tensor| extended_iou_loss(x, y, 0.1, 1e-6, Reduction::None),
            &a,
            &b,
        );
        for neg_gamma in [false, true] {
            finite_everywhere(
                &format!("siou_loss neg_gamma {neg_gamma} {dtype:?}"),
                |x: &Tensor, y: &Tensor| siou_loss(x, y, neg_gamma, 1e-6, Reduction::None),
                &a,
                &b,
            );
        }
    }
}

#[test]
fn fused_equals_composite_on_10k_pairs() {
    let (p, t) = mixed_pairs(22, N);
    let (a, b) = (boxes(&p, DType::F64), boxes(&t, DType::F64));
    for kind in KINDS {
        let run = |k: Path| {
            value_and_grads(
                |x: &Tensor, y: &Tensor| with_path(k, || aligned_loss(kind, x, y, 1e-7, Reduction::None)),
                &a,
                &b,
            )
        };
        let (vf, pf, tf) = run(Path::Fused);
        let (vc, pc, tc) = run(Path::Composite);
        assert_close(&format!("{kind:?} value"), &vf, &vc, 1e-5, 1e-12);
        assert_close(&format!("{kind:?} grad pred"), &pf, &pc, 1e-5, 1e-12);
        assert_close(&format!("{kind:?} grad target"), &tf, &tc, 1e-5, 1e-12);
    }
}

#[test]
fn pairwise_metrics_are_finite_on_10k_pairs() {
    // 100 x 100 = 10,000 pairs drawn from the mixed set (points against points included).
    let (p, t) = mixed_pairs(23, 100);
    let (a, b) = (boxes(&p, DType::F64), boxes(&t, DType::F64));
    finite_everywhere("box_iou", |x: &Tensor, y: &Tensor| box_iou(x, y), &a, &b);
    finite_everywhere(
        "generalized_box_iou",
        |x: &Tensor, y: &Tensor| generalized_box_iou(x, y),
        &a,
        &b,
    );
    finite_everywhere(
        "distance_box_iou",
        |x: &Tensor, y: &Tensor| distance_box_iou(x, y, 1e-7),
        &a,
        &b,
    );
    finite_everywhere(
        "complete_box_iou",
        |x: &Tensor, y: &Tensor| complete_box_iou(x, y, 1e-7),
        &a,
        &b,
    );
    // and every pair with itself
    finite_everywhere("box_iou self", |x: &Tensor, _: &Tensor| box_iou(x, x), &a, &b);
}

#[test]
fn value_ranges_hold_on_10k_pairs() {
    let (p, t) = mixed_pairs(24, N);
    let (a, b) = (boxes(&p, DType::F64), boxes(&t, DType::F64));
    let get = |kind| flat(&with_path(Path::Auto, || aligned_loss(kind, &a, &b, 1e-7, Reduction::None)).unwrap());
    let iou = get(AlignedLoss::Iou(IouMode::Linear));
    let giou = get(AlignedLoss::Giou);
    let diou = get(AlignedLoss::Diou);
    let ciou = get(AlignedLoss::Ciou);
    for i in 0..N {
        assert!(
            (0.0..=1.0).contains(&iou[i]),
            "1 - IoU out of [0, 1] at {i}: {}",
            iou[i]
        );
        assert!(
            (0.0..2.0).contains(&giou[i]),
            "GIoU loss out of [0, 2) at {i}: {}",
            giou[i]
        );
        assert!(giou[i] >= iou[i] - 1e-12, "GIoU loss below 1 - IoU at {i}");
        assert!(
            diou[i] >= iou[i] - 1e-12 && diou[i] < 2.0,
            "DIoU loss out of range at {i}"
        );
        assert!(ciou[i] >= diou[i] - 1e-12, "CIoU loss below DIoU loss at {i}");
    }
}

fn coord() -> impl Strategy<Value = f64> {
    // integers (ties, shared edges, points) and reals
    prop_oneof![(-4i32..5).prop_map(|v| v as f64), -5.0f64..5.0]
}

fn a_box() -> impl Strategy<Value = [f64; 4]> {
    (coord(), coord(), 0.0f64..4.0, 0.0f64..4.0, any::<bool>()).prop_map(|(x, y, w, h, round)| {
        let (w, h) = if round { (w.floor(), h.floor()) } else { (w, h) };
        [x, y, x + w, y + h]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn proptest_fused_equals_composite_and_finite(pairs in prop::collection::vec((a_box(), a_box()), 1..24)) {
        let p: Vec<f64> = pairs.iter().flat_map(|(a, _)| *a).collect();
        let t: Vec<f64> = pairs.iter().flat_map(|(_, b)| *b).collect();
        let (a, b) = (boxes(&p, DType::F64), boxes(&t, DType::F64));
        for kind in KINDS {
            let run = |k: Path| value_and_grads(
                |x: &Tensor, y: &Tensor| with_path(k, || aligned_loss(kind, x, y, 1e-7, Reduction::Sum)), &a, &b);
            let (vf, pf, tf) = run(Path::Fused);
            let (vc, pc, tc) = run(Path::Composite);
            for v in vf.iter().chain(&pf).chain(&tf) {
                prop_assert!(v.is_finite(), "{kind:?}: non-finite {v}");
            }
            assert_close("value", &vf, &vc, 1e-5, 1e-12);
            assert_close("grad pred", &pf, &pc, 1e-5, 1e-12);
            assert_close("grad target", &tf, &tc, 1e-5, 1e-12);
        }
        let (v, gp, gt) = value_and_grads(|x: &Tensor, y: &Tensor| siou_loss(x, y, false, 1e-6, Reduction::Sum), &a, &b);
        for x in v.iter().chain(&gp).chain(&gt) {
            prop_assert!(x.is_finite(), "siou: non-finite {x}");
        }
        let (v, gp, gt) = value_and_grads(|x: &Tensor, y: &Tensor| extended_iou_loss(x, y, 0.1, 1e-6, Reduction::Sum), &a, &b);
        for x in v.iter().chain(&gp).chain(&gt) {
            prop_assert!(x.is_finite(), "extended_iou: non-finite {x}");
        }
    }
}
