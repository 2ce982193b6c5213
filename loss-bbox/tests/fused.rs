//! The fused CPU kernel and the composite path agree: values and gradients (w.r.t. both boxes),
//! rel. 1e-5 in f64, on random and on degenerate boxes; f32 runs the fused kernel too.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use loss_bbox::{aligned_loss, AlignedLoss, IouMode};
use loss_core::kernel::{with_path, Path};
use loss_core::Reduction;

const KINDS: [AlignedLoss; 7] = [
    AlignedLoss::Iou(IouMode::Linear),
    AlignedLoss::Iou(IouMode::Square),
    AlignedLoss::Iou(IouMode::Log),
    AlignedLoss::Giou,
    AlignedLoss::Diou,
    AlignedLoss::Ciou,
    AlignedLoss::Eiou,
];

fn check_equal(kind: AlignedLoss, p: &[f64], t: &[f64], eps: f64, dtype: DType, rtol: f64, atol: f64) {
    let (a, b) = (boxes(p, dtype), boxes(t, dtype));
    let run = |k: Path| {
        value_and_grads(
            |x: &Tensor, y: &Tensor| with_path(k, || aligned_loss(kind, x, y, eps, Reduction::None)),
            &a,
            &b,
        )
    };
    let (vf, gpf, gtf) = run(Path::Fused);
    let (vc, gpc, gtc) = run(Path::Composite);
    let what = format!("{kind:?} eps {eps} {dtype:?}");
    assert_close(&format!("{what}: value"), &vf, &vc, rtol, atol);
    assert_close(&format!("{what}: grad pred"), &gpf, &gpc, rtol, atol);
    assert_close(&format!("{what}: grad target"), &gtf, &gtc, rtol, atol);
}

#[test]
fn fused_equals_composite_on_random_boxes_f64() {
    let (p, t) = generic_pairs(1, 500);
    for kind in KINDS {
        for eps in [1e-7, 0.1] {
            check_equal(kind, &p, &t, eps, DType::F64, 1e-5, 1e-12);
        }
    }
}

#[test]
fn fused_equals_composite_on_degenerate_boxes_f64() {
    // Every degenerate kind many times over (ties, zero extents, points, touching boxes).
    let mut r = rng(2);
    let (mut p, mut t) = (Vec::new(), Vec::new());
    for i in 0..14 * 40 {
        let (a, b) = pair_of_kind(&mut r, i);
        p.extend_from_slice(&a);
        t.extend_from_slice(&b);
        // and the reversed roles
        p.extend_from_slice(&b);
        t.extend_from_slice(&a);
    }
    for kind in KINDS {
        check_equal(kind, &p, &t, 1e-7, DType::F64, 1e-5, 1e-12);
    }
}

#[test]
fn fused_equals_composite_in_f32() {
    let (p, t) = mixed_pairs(3, 400);
    for kind in KINDS {
        // Both compute in f32 (the fused kernel's f32 block kernel, the composite path's ops), with
        // different roundings: fused `atan`, reciprocals, the order of the gradient's terms.
        check_equal(kind, &p, &t, 1e-7, DType::F32, 2e-3, 2e-4);
    }
}

#[test]
fn fused_keeps_dtype_and_shape_of_batched_boxes() {
    let (p, t) = mixed_pairs(4, 6);
    for dtype in [DType::F32, DType::F64] {
        let a = boxes(&p, dtype).reshape((2, 3, 4)).unwrap();
        let b = boxes(&t, dtype).reshape((2, 3, 4)).unwrap();
        for kind in KINDS {
            let f = with_path(Path::Fused, || aligned_loss(kind, &a, &b, 1e-7, Reduction::None)).unwrap();
            let c = with_path(Path::Composite, || aligned_loss(kind, &a, &b, 1e-7, Reduction::None)).unwrap();
            assert_eq!(f.dims(), &[2, 3]);
            assert_eq!(f.dtype(), dtype);
            assert_close("batched", &flat(&f), &flat(&c), 1e-4, 1e-5);
        }
    }
}

#[test]
fn fused_reads_non_contiguous_boxes() {
    // Boxes as the columns of a [4, n] tensor: a transposed (strided) view.
    let (p, t) = generic_pairs(5, 7);
    let a = boxes(&p, DType::F64).t().unwrap().contiguous().unwrap().t().unwrap();
    let b = boxes(&t, DType::F64);
    assert!(!a.is_contiguous());
    for kind in KINDS {
        let (vf, gf, _) = value_and_grads(
            |x: &Tensor, y: &Tensor| with_path(Path::Fused, || aligned_loss(kind, x, y, 1e-7, Reduction::Sum)),
            &a,
            &b,
        );
        let (vc, gc, _) = value_and_grads(
            |x: &Tensor, y: &Tensor| with_path(Path::Composite, || aligned_loss(kind, x, y, 1e-7, Reduction::Sum)),
            &a,
            &b,
        );
        assert_close("strided value", &vf, &vc, 1e-10, 1e-12);
        assert_close("strided grad", &gf, &gc, 1e-8, 1e-12);
    }
}

#[test]
fn fused_gradient_under_mean_and_scaled_upstream() {
    let (p, t) = generic_pairs(6, 50);
    let (a, b) = (boxes(&p, DType::F64), boxes(&t, DType::F64));
    for kind in KINDS {
        let run = |k: Path| {
            value_and_grads(
                |x: &Tensor, y: &Tensor| {
                    with_path(k, || aligned_loss(kind, x, y, 1e-7, Reduction::Mean))?.affine(3.0, 0.0)
                },
                &a,
                &b,
            )
        };
        let (vf, gf, tf) = run(Path::Fused);
        let (vc, gc, tc) = run(Path::Composite);
        assert_close("mean value", &vf, &vc, 1e-10, 1e-12);
        assert_close("mean grad pred", &gf, &gc, 1e-8, 1e-12);
        assert_close("mean grad target", &tf, &tc, 1e-8, 1e-12);
    }
}

#[test]
fn fused_kernel_refuses_other_dtypes() {
    let a = Tensor::zeros((2, 4), DType::BF16, &Device::Cpu).unwrap();
    let err = with_path(Path::Fused, || {
        aligned_loss(AlignedLoss::Giou, &a, &a, 1e-7, Reduction::None)
    })
    .unwrap_err();
    assert!(err.to_string().contains("fused kernel"), "{err}");
    // Auto falls back to the composite path for bf16 and keeps the dtype.
    let l = with_path(Path::Auto, || {
        aligned_loss(AlignedLoss::Giou, &a, &a, 1e-7, Reduction::None)
    })
    .unwrap();
    assert_eq!(l.dtype(), DType::BF16);
}

#[test]
fn fused_gradient_of_one_tracked_argument() {
    // The kernel computes only the gradients Candle asks for: pred alone, target alone.
    let (p, t) = mixed_pairs(7, 300);
    let (a, b) = (boxes(&p, DType::F64), boxes(&t, DType::F64));
    for kind in KINDS {
        let (_, gp_both, gt_both) = value_and_grads(
            |x: &Tensor, y: &Tensor| with_path(Path::Composite, || aligned_loss(kind, x, y, 1e-7, Reduction::Sum)),
            &a,
            &b,
        );
        let var = candle_core::Var::from_tensor(&a).unwrap();
        let l = with_path(Path::Fused, || {
            aligned_loss(kind, var.as_tensor(), &b, 1e-7, Reduction::Sum)
        })
        .unwrap();
        let g = l.backward().unwrap();
        assert_close(
            "pred only",
            &flat(g.get(var.as_tensor()).unwrap()),
            &gp_both,
            1e-5,
            1e-12,
        );
        assert!(g.get(&b).is_none());
        let var = candle_core::Var::from_tensor(&b).unwrap();
        let l = with_path(Path::Fused, || {
            aligned_loss(kind, &a, var.as_tensor(), 1e-7, Reduction::Sum)
        })
        .unwrap();
        let g = l.backward().unwrap();
        assert_close(
            "target only",
            &flat(g.get(var.as_tensor()).unwrap()),
            &gt_both,
            1e-5,
            1e-12,
        );
    }
}

#[test]
fn f32_gradient_saved_by_the_forward_equals_the_recomputed_one() {
    // A reduced f32 loss computes its gradient during the forward and hands it to the first
    // backward with upstream 1; a second backward (or any other upstream) recomputes it. Both
    // are the same bits, and a scaled upstream scales it.
    let (p, t) = mixed_pairs(8, 40_000); // above the parallel threshold
    let (a, b) = (boxes(&p, DType::F32), boxes(&t, DType::F32));
    for kind in KINDS {
        for reduction in [Reduction::Sum, Reduction::Mean] {
            let (x, y) = (
                candle_core::Var::from_tensor(&a).unwrap(),
                candle_core::Var::from_tensor(&b).unwrap(),
            );
            let l = with_path(Path::Fused, || {
                aligned_loss(kind, x.as_tensor(), y.as_tensor(), 1e-7, reduction)
            })
            .unwrap();
            let first = l.backward().unwrap();
            let second = l.backward().unwrap();
            let scaled = l.affine(4.0, 0.0).unwrap().backward().unwrap();
            for v in [&x, &y] {
                let g1 = flat(first.get(v.as_tensor()).unwrap());
                let g2 = flat(second.get(v.as_tensor()).unwrap());
                let g4 = flat(scaled.get(v.as_tensor()).unwrap());
                let what = format!("{kind:?} {reduction:?}");
                assert!(
                    g1.iter().zip(&g2).all(|(u, w)| u.to_bits() == w.to_bits()),
                    "{what}: saved vs recomputed"
                );
                let g1x4: Vec<f64> = g1.iter().map(|u| 4.0 * u).collect();
                assert_close(&format!("{what}: scaled upstream"), &g4, &g1x4, 1e-6, 1e-12);
                assert!(g1.iter().any(|u| *u != 0.0), "{what}: a real gradient");
            }
        }
    }
}

#[test]
fn fused_empty_input_and_strided_f32_boxes() {
    // Empty: `None` gives [0], `Sum` and `Mean` give 0, and the gradients are [0, 4].
    for dtype in [DType::F32, DType::F64] {
        let e = candle_core::Var::from_tensor(&Tensor::zeros((0, 4), dtype, &Device::Cpu).unwrap()).unwrap();
        for kind in KINDS {
            for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean] {
                let l = with_path(Path::Fused, || {
                    aligned_loss(kind, e.as_tensor(), e.as_tensor(), 1e-7, reduction)
                })
                .unwrap();
                let total = l.sum_all().unwrap();
                assert_eq!(total.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap(), 0.0);
                let g = total.backward().unwrap();
                assert_eq!(
                    g.get(e.as_tensor()).unwrap().dims(),
                    &[0, 4],
                    "{kind:?} {reduction:?} {dtype:?}"
                );
            }
        }
    }
    // Strided f32 boxes (a transposed view) through the f32 kernel, reduced and not.
    let (p, t) = generic_pairs(9, 40_000);
    let a = boxes(&p, DType::F32).t().unwrap().contiguous().unwrap().t().unwrap();
    let b = boxes(&t, DType::F32);
    assert!(!a.is_contiguous());
    let a_contiguous = boxes(&p, DType::F32);
    for kind in KINDS {
        for reduction in [Reduction::None, Reduction::Mean] {
            let run = |x: &Tensor| {
                value_and_grads(
                    |x: &Tensor, y: &Tensor| {
                        with_path(Path::Fused, || aligned_loss(kind, x, y, 1e-7, reduction))?.sum_all()
                    },
                    x,
                    &b,
                )
            };
            let (vs, gs, ts) = run(&a);
            let (vc, gc, tc) = run(&a_contiguous);
            assert_close("strided f32 value", &vs, &vc, 0.0, 0.0);
            assert_close("strided f32 grad pred", &gs, &gc, 0.0, 0.0);
            assert_close("strided f32 grad target", &ts, &tc, 0.0, 0.0);
        }
    }
}
