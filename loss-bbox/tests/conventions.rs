//! Reference values worked by hand, the gradient rules at kinks (PyTorch's: ties of max/min
//! split ½/½, clamp passes at its bound, torchvision's masked intersection), the `atan(w/h)`
//! convention at `h = 0` and for point boxes, empty inputs, defaults, and every bad input.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use loss_bbox::*;
use loss_core::kernel::{with_path, Path};
use loss_core::{Loss, Reduction};
use std::f64::consts::PI;

const BOTH: [Path; 2] = [Path::Fused, Path::Composite];

fn t64(rows: &[[f64; 4]]) -> Tensor {
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), 4), &Device::Cpu).unwrap()
}

fn run(kind: AlignedLoss, p: &[[f64; 4]], t: &[[f64; 4]], eps: f64, k: Path) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    value_and_grads(
        |x: &Tensor, y: &Tensor| with_path(k, || aligned_loss(kind, x, y, eps, Reduction::None)),
        &t64(p),
        &t64(t),
    )
}

#[test]
fn hand_worked_values() {
    let b1 = [-1.0, -1.0, 1.0, 1.0];
    let b2 = [0.0, 0.0, 1.0, 1.0];
    let b4 = [1.0, 1.0, 2.0, 2.0];
    for k in BOTH {
        // IoU 1/4, the enclosing box is box1 (area 4 = union): GIoU loss 0.75.
        let (v, _, _) = run(AlignedLoss::Giou, &[b1], &[b2], 1e-7, k);
        assert_close("giou b1 b2", &v, &[0.75], 1e-6, 1e-7);
        // Disjoint diagonal neighbours: enclosing 2x2, union 2 -> 1 + 2/4.
        let (v, _, _) = run(AlignedLoss::Giou, &[b2], &[b4], 1e-7, k);
        assert_close("giou b2 b4", &v, &[1.5], 1e-6, 1e-7);
        // DIoU b1 vs b2: 1 - 1/4 + (0.5² + 0.5²)/(2² + 2²) = 0.8125.
        let (v, _, _) = run(AlignedLoss::Diou, &[b1], &[b2], 1e-7, k);
        assert_close("diou b1 b2", &v, &[0.8125], 1e-6, 1e-7);
        // Both squares: v = 0, CIoU = DIoU (torchvision's test value 0.8125).
        let (v, _, _) = run(AlignedLoss::Ciou, &[b1], &[b2], 1e-7, k);
        assert_close("ciou b1 b2", &v, &[0.8125], 1e-6, 1e-7);
        // EIoU b1 vs b2: DIoU + (2-1)²/4 + (2-1)²/4.
        let (v, _, _) = run(AlignedLoss::Eiou, &[b1], &[b2], 1e-7, k);
        assert_close("eiou b1 b2", &v, &[0.8125 + 0.5], 1e-6, 1e-7);
        // Log and square modes at IoU 1/4.
        let (v, _, _) = run(AlignedLoss::Iou(IouMode::Log), &[b1], &[b2], 1e-7, k);
        assert_close("iou log", &v, &[4f64.ln()], 1e-6, 1e-7);
        let (v, _, _) = run(AlignedLoss::Iou(IouMode::Square), &[b1], &[b2], 1e-7, k);
        assert_close("iou square", &v, &[1.0 - 1.0 / 16.0], 1e-6, 1e-7);
    }
    let (a, b) = (t64(&[b1, b2]), t64(&[b2, b4]));
    let m = box_iou(&a, &b).unwrap();
    assert_close("box_iou", &flat(&m), &[0.25, 0.0, 1.0, 0.0], 1e-12, 0.0);
    let m = generalized_box_iou(&a, &b).unwrap();
    assert_close(
        "generalized_box_iou",
        &flat(&m),
        &[0.25, -(9.0 - 5.0) / 9.0, 1.0, -0.5],
        1e-12,
        0.0,
    );
}

#[test]
fn ties_split_the_gradient_in_half() {
    // Identical boxes: every max/min of the intersection and enclosing box is a tie. With the
    // ½/½ rule, d(1 − IoU)/dx1 = (1 − IoU)/(U + eps) = eps/(4 + eps)²; a rule giving the whole
    // gradient to one argument would give 2/(4 + eps) to that one instead.
    let eps = 0.1;
    let b = [0.0, 0.0, 2.0, 2.0];
    let g = eps / (4.0 + eps) / (4.0 + eps);
    for k in BOTH {
        let (v, gp, gt) = run(AlignedLoss::Iou(IouMode::Linear), &[b], &[b], eps, k);
        assert_close("identical value", &v, &[eps / (4.0 + eps)], 1e-12, 0.0);
        assert_close("identical grad pred", &gp, &[g, g, -g, -g], 1e-9, 1e-15);
        assert_close("identical grad target", &gt, &[g, g, -g, -g], 1e-9, 1e-15);
        // GIoU/DIoU add nothing at identity: the enclosing and centre terms have zero gradient.
        for kind in [AlignedLoss::Giou, AlignedLoss::Diou, AlignedLoss::Ciou] {
            let (_, gp, _) = run(kind, &[b], &[b], eps, k);
            assert_close(&format!("identical {kind:?}"), &gp, &[g, g, -g, -g], 1e-6, 1e-12);
        }
    }
}

#[test]
fn touching_boxes_masked_in_losses_clamped_in_pairwise_metrics() {
    let a = [0.0, 0.0, 1.0, 1.0];
    let b = [1.0, 0.0, 2.0, 1.0]; // shares the edge x = 1
    for k in BOTH {
        // torchvision's losses: intersection only where both extents are > 0, so no gradient.
        let (v, gp, gt) = run(AlignedLoss::Iou(IouMode::Linear), &[a], &[b], 1e-7, k);
        assert_eq!(v, [1.0]);
        assert_eq!(gp, [0.0; 4]);
        assert_eq!(gt, [0.0; 4]);
    }
    // box_iou: clamp(w, min = 0) passes the gradient at w = 0 (torch.clamp's rule), so moving
    // boxes1's right edge outwards would create overlap: d IoU / d x2 = h / union = 1/2.
    let (v, g1, g2) = value_and_grads(|x: &Tensor, y: &Tensor| box_iou(x, y), &t64(&[a]), &t64(&[b]));
    assert_eq!(v, [0.0]);
    assert_close("box_iou edge grad boxes1", &g1, &[0.0, 0.0, 0.5, 0.0], 1e-12, 0.0);
    assert_close("box_iou edge grad boxes2", &g2, &[-0.5, 0.0, 0.0, 0.0], 1e-12, 0.0);
}

#[test]
fn log_and_square_modes_clamp_iou_at_eps() {
    // IoU 0.005 < eps = 0.01: the clamp is active, value −ln(eps), gradient 0 (mmdetection).
    let p = [0.0, 0.0, 1.0, 0.005];
    let t = [0.0, 0.0, 1.0, 1.0];
    for k in BOTH {
        let (v, gp, _) = run(AlignedLoss::Iou(IouMode::Log), &[p], &[t], 0.01, k);
        assert_close("log clamped", &v, &[-(0.01f64).ln()], 1e-9, 0.0);
        assert_eq!(gp, [0.0; 4]);
        let (v, gp, _) = run(AlignedLoss::Iou(IouMode::Square), &[p], &[t], 0.01, k);
        assert_close("square clamped", &v, &[1.0 - 1e-4], 1e-9, 0.0);
        assert_eq!(gp, [0.0; 4]);
    }
}

#[test]
fn ciou_zero_height_and_point_boxes_are_finite() {
    let k4 = 4.0 / (PI * PI);
    let t = [0.0, 0.0, 4.0, 4.0];
    for k in BOTH {
        // Zero height: atan(4/0) = π/2, v = 4/π²·(π/4)² = 1/4, alpha = 0.25/1.25 = 0.2;
        // IoU 0, ρ²/c² = 4/32: loss = 1 + 0.125 + 0.05.
        let (v, gp, gt) = run(AlignedLoss::Ciou, &[[0.0, 0.0, 4.0, 0.0]], &[t], 1e-7, k);
        assert_close("zero height value", &v, &[1.175], 1e-6, 0.0);
        assert_finite("zero height grads", &gp);
        assert_finite("zero height grads", &gt);
        // d/dy2 of pred: centre term −0.0625 plus the aspect term alpha·dv/dθ·dθ/dh with
        // dθ/dh = −w/(w² + h²) = −1/4 (the one-sided derivative at h = 0+).
        let aspect = 2.0 * k4 * (PI / 4.0) * 0.2 * (-0.25);
        assert_close("zero height d/dy2", &gp[3..4], &[-0.0625 + aspect], 1e-6, 1e-9);
        // Point box: angle 0 by convention, v = 1/4 again; centre (1,1) vs (2,2): 2/32.
        let (v, gp, _) = run(AlignedLoss::Ciou, &[[1.0, 1.0, 1.0, 1.0]], &[t], 1e-7, k);
        assert_close("point value", &v, &[1.0 + 0.0625 + 0.05], 1e-6, 0.0);
        assert_finite("point grads", &gp);
        // Point box against itself: IoU = 0/(0 + eps) = 0, loss 1, zero gradient.
        let pt = [3.0, 4.0, 3.0, 4.0];
        for kind in [AlignedLoss::Giou, AlignedLoss::Diou, AlignedLoss::Ciou] {
            let (v, gp, _) = run(kind, &[pt], &[pt], 1e-7, k);
            assert_close(&format!("{kind:?} point self"), &v, &[1.0], 1e-12, 0.0);
            assert_eq!(gp, [0.0; 4]);
        }
    }
    // The pairwise metric uses the same angle convention.
    let m = complete_box_iou(&t64(&[[0.0, 0.0, 4.0, 0.0]]), &t64(&[t]), 1e-7).unwrap();
    assert_close("complete_box_iou zero height", &flat(&m), &[-0.175], 1e-6, 0.0);
}

#[test]
fn pairwise_zero_over_zero_is_zero() {
    let p = t64(&[[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]]);
    let (v, g, _) = value_and_grads(|x: &Tensor, y: &Tensor| box_iou(x, y), &p, &p);
    assert_eq!(v, [0.0; 4]);
    assert_finite("box_iou points", &g);
    let (v, g, _) = value_and_grads(|x: &Tensor, y: &Tensor| generalized_box_iou(x, y), &p, &p);
    assert_finite("giou points", &v);
    assert_finite("giou points grads", &g);
    // Two distinct points: enclosing box 1x1, union 0: GIoU = 0 − (1 − 0)/1.
    assert_close("giou distinct points", &v[1..2], &[-1.0], 1e-12, 0.0);
}

#[test]
fn empty_inputs() {
    for dtype in [DType::F32, DType::F64] {
        let e = Tensor::zeros((0, 4), dtype, &Device::Cpu).unwrap();
        let kinds = [
            AlignedLoss::Iou(IouMode::Log),
            AlignedLoss::Giou,
            AlignedLoss::Diou,
            AlignedLoss::Ciou,
            AlignedLoss::Eiou,
        ];
        for kind in kinds {
            for k in [Path::Auto, Path::Composite] {
                let none = with_path(k, || aligned_loss(kind, &e, &e, 1e-7, Reduction::None)).unwrap();
                assert_eq!(none.dims(), &[0]);
                for r in [Reduction::Sum, Reduction::Mean] {
                    let (v, g, _) = value_and_grads(
                        |x: &Tensor, y: &Tensor| with_path(k, || aligned_loss(kind, x, y, 1e-7, r)),
                        &e,
                        &e,
                    );
                    assert_eq!(v, [0.0], "{kind:?} {r} {k:?}");
                    assert!(g.is_empty());
                }
            }
        }
        for r in [Reduction::Sum, Reduction::Mean] {
            assert_eq!(flat(&extended_iou_loss(&e, &e, 0.1, 1e-6, r).unwrap()), [0.0]);
            assert_eq!(flat(&siou_loss(&e, &e, false, 1e-6, r).unwrap()), [0.0]);
        }
        let b = Tensor::ones((3, 4), dtype, &Device::Cpu).unwrap();
        assert_eq!(box_iou(&e, &b).unwrap().dims(), &[0, 3]);
        assert_eq!(complete_box_iou(&b, &e, 1e-7).unwrap().dims(), &[3, 0]);
        assert_eq!(box_area(&e, BoxFormat::Xyxy).unwrap().dims(), &[0]);
        assert_eq!(
            box_convert(&e, BoxFormat::Xyxy, BoxFormat::Cxcywh).unwrap().dims(),
            &[0, 4]
        );
    }
}

#[test]
fn inverted_boxes_are_accepted() {
    let b = t64(&[[2.0, 2.0, 1.0, 3.0], [5.0, 5.0, 4.0, 4.0]]);
    assert_eq!(flat(&box_area(&b, BoxFormat::Xyxy).unwrap()), [-1.0, 1.0]);
    let t = t64(&[[0.0, 0.0, 3.0, 3.0], [0.0, 0.0, 3.0, 3.0]]);
    for k in BOTH {
        let (v, g, _) = value_and_grads(
            |x: &Tensor, y: &Tensor| with_path(k, || aligned_loss(AlignedLoss::Ciou, x, y, 1e-7, Reduction::None)),
            &b,
            &t,
        );
        assert_finite("inverted", &v);
        assert_finite("inverted grads", &g);
    }
}

#[test]
fn formats_round_trip() {
    let b = t64(&[[1.0, 2.0, 4.0, 8.0], [-3.0, 0.5, -1.0, 0.75]]);
    let f = [BoxFormat::Xyxy, BoxFormat::Xywh, BoxFormat::Cxcywh];
    assert_eq!(
        flat(&box_convert(&b, BoxFormat::Xyxy, BoxFormat::Xywh).unwrap()),
        [1.0, 2.0, 3.0, 6.0, -3.0, 0.5, 2.0, 0.25]
    );
    assert_eq!(
        flat(&box_convert(&b, BoxFormat::Xyxy, BoxFormat::Cxcywh).unwrap()),
        [2.5, 5.0, 3.0, 6.0, -2.0, 0.625, 2.0, 0.25]
    );
    for a in f {
        for c in f {
            let there = box_convert(&b, BoxFormat::Xyxy, a).unwrap();
            let back = box_convert(&box_convert(&there, a, c).unwrap(), c, BoxFormat::Xyxy).unwrap();
            assert_close(&format!("{a} -> {c}"), &flat(&back), &flat(&b), 1e-12, 1e-12);
            assert_close(
                &format!("area {a}"),
                &flat(&box_area(&there, a).unwrap()),
                &[18.0, 0.5],
                1e-12,
                0.0,
            );
        }
    }
    assert_eq!(BoxFormat::parse("x", "fmt", "cxcywh").unwrap(), BoxFormat::Cxcywh);
}

#[test]
fn loss_structs_have_the_reference_defaults() {
    assert_eq!(IoULoss::default().reduction, Reduction::None);
    assert_eq!(IoULoss::default().mode, IouMode::Linear);
    assert_eq!(GIoULoss::default().eps, 1e-7);
    assert_eq!(CIoULoss::default().reduction, Reduction::None);
    assert_eq!(ExtendedIoULoss::default().reduction, Reduction::Mean);
    assert_eq!(ExtendedIoULoss::default().smooth_point, 0.1);
    assert_eq!(ExtendedIoULoss::default().eps, 1e-6);
    assert_eq!(SIoULoss::default().reduction, Reduction::Mean);
    assert!(!SIoULoss::default().neg_gamma);
    let (p, t) = generic_pairs(31, 5);
    let (a, b) = (boxes(&p, DType::F32), boxes(&t, DType::F32));
    let losses: Vec<(Box<dyn Loss>, Tensor)> = vec![
        (
            Box::new(IoULoss::default().with_mode(IouMode::Log)),
            iou_loss(&a, &b, IouMode::Log, 1e-7, Reduction::None).unwrap(),
        ),
        (
            Box::new(GIoULoss::default().with_reduction(Reduction::Sum)),
            giou_loss(&a, &b, 1e-7, Reduction::Sum).unwrap(),
        ),
        (
            Box::new(DIoULoss::default().with_eps(0.1)),
            diou_loss(&a, &b, 0.1, Reduction::None).unwrap(),
        ),
        (
            Box::new(CIoULoss::default()),
            ciou_loss(&a, &b, 1e-7, Reduction::None).unwrap(),
        ),
        (
            Box::new(EfficientIoULoss::default()),
            eiou_loss(&a, &b, 1e-7, Reduction::None).unwrap(),
        ),
        (
            Box::new(ExtendedIoULoss::default().with_smooth_point(0.5)),
            extended_iou_loss(&a, &b, 0.5, 1e-6, Reduction::Mean).unwrap(),
        ),
        (
            Box::new(SIoULoss::default().with_neg_gamma(true)),
            siou_loss(&a, &b, true, 1e-6, Reduction::Mean).unwrap(),
        ),
    ];
    for (l, want) in losses {
        let got = l.forward(&a, &b).unwrap();
        assert_eq!(flat(&got), flat(&want), "{}", l.name());
    }
}

fn err_text(r: candle_core::Result<Tensor>) -> String {
    match r {
        Ok(t) => panic!("expected an error, got a tensor of shape {:?}", t.dims()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let d = Device::Cpu;
    let ok = Tensor::ones((2, 4), DType::F32, &d).unwrap();
    let three = Tensor::ones((2, 3), DType::F32, &d).unwrap();
    let five = Tensor::ones((2, 5), DType::F32, &d).unwrap();
    let more = Tensor::ones((3, 4), DType::F32, &d).unwrap();
    let nested = Tensor::ones((2, 1, 4), DType::F32, &d).unwrap();
    let scalar = Tensor::new(1f32, &d).unwrap();
    let ints = Tensor::ones((2, 4), DType::U32, &d).unwrap();
    let f64s = Tensor::ones((2, 4), DType::F64, &d).unwrap();
    let kinds = [
        AlignedLoss::Iou(IouMode::Linear),
        AlignedLoss::Giou,
        AlignedLoss::Diou,
        AlignedLoss::Ciou,
        AlignedLoss::Eiou,
    ];
    for kind in kinds {
        let name = kind.name();
        let call =
            |a: &Tensor, b: &Tensor, eps: f64| with_path(Path::Auto, || aligned_loss(kind, a, b, eps, Reduction::Mean));
        let e = err_text(call(&three, &three, 1e-7));
        assert!(e.contains(name) && e.contains("pred") && e.contains("[2, 3]"), "{e}");
        let e = err_text(call(&ok, &five, 1e-7));
        assert!(e.contains("target") && e.contains("[2, 5]"), "{e}");
        let e = err_text(call(&ok, &more, 1e-7));
        assert!(e.contains(name) && e.contains("[3, 4]") && e.contains("[2, 4]"), "{e}");
        let e = err_text(call(&nested, &ok, 1e-7));
        assert!(e.contains("[2, 1, 4]"), "{e}");
        let e = err_text(call(&scalar, &scalar, 1e-7));
        assert!(e.contains("pred"), "{e}");
        let e = err_text(call(&ints, &ints, 1e-7));
        assert!(e.contains("dtype") && e.contains("U32"), "{e}");
        let e = err_text(call(&ok, &f64s, 1e-7));
        assert!(e.contains("F64") && e.contains("F32"), "{e}");
        for eps in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = err_text(call(&ok, &ok, eps));
            assert!(e.contains("eps"), "{e}");
        }
        let e = err_text(with_path(Path::Auto, || {
            aligned_loss(kind, &ok, &ok, 1e-7, Reduction::BatchMean)
        }));
        assert!(e.contains("batchmean"), "{e}");
    }
    let e = err_text(extended_iou_loss(&ok, &ok, 0.0, 1e-6, Reduction::Mean));
    assert!(e.contains("extended_iou_loss") && e.contains("smooth_point"), "{e}");
    let e = err_text(extended_iou_loss(&ok, &more, 0.1, 1e-6, Reduction::Mean));
    assert!(e.contains("extended_iou_loss"), "{e}");
    let e = err_text(siou_loss(&three, &three, false, 1e-6, Reduction::Mean));
    assert!(e.contains("siou_loss") && e.contains("[2, 3]"), "{e}");
    let e = err_text(siou_loss(&ok, &ok, false, 0.0, Reduction::Mean));
    assert!(e.contains("eps"), "{e}");
    assert!(IouMode::parse("cubic").unwrap_err().to_string().contains("cubic"));
    let e = BoxFormat::parse("box_iou", "fmt", "yxyx").unwrap_err().to_string();
    assert!(e.contains("box_iou") && e.contains("yxyx"), "{e}");
    // pairwise
    let e = err_text(box_iou(&three, &ok));
    assert!(e.contains("box_iou") && e.contains("boxes1"), "{e}");
    let e = err_text(generalized_box_iou(&ok, &nested));
    assert!(
        e.contains("generalized_box_iou") && e.contains("boxes2") && e.contains("[N, 4]"),
        "{e}"
    );
    let e = err_text(distance_box_iou(&ok, &f64s, 1e-7));
    assert!(e.contains("distance_box_iou"), "{e}");
    let e = err_text(complete_box_iou(&ok, &ok, 0.0));
    assert!(e.contains("complete_box_iou") && e.contains("eps"), "{e}");
    let e = err_text(box_iou(&ints, &ints));
    assert!(e.contains("dtype"), "{e}");
    let e = err_text(box_area(&three, BoxFormat::Xyxy));
    assert!(e.contains("box_area") && e.contains("[2, 3]"), "{e}");
    let e = err_text(box_convert(&ints, BoxFormat::Xyxy, BoxFormat::Xywh));
    assert!(e.contains("box_convert"), "{e}");
}
