//! The IoU successors' fused pair kernel and their composite forms agree: values and gradients
//! (w.r.t. both boxes) on random and on degenerate boxes, in f64 and f32, per pair and reduced
//! (where the forward computes the gradient on its way).

mod common;

use candle_core::{DType, Tensor};
use common::*;
use loss_bbox::{
    alpha_iou_loss, focaler_iou_loss, inner_iou_loss, mpdiou_loss, nwd_loss, shape_iou_loss, siou_loss, wise_iou_loss,
    AlphaIouBase, InnerIouBase, WiseIouVersion,
};
use loss_core::kernel::{with_path, Path};
use loss_core::Reduction;

type LossFn = Box<dyn Fn(&Tensor, &Tensor, Reduction) -> candle_core::Result<Tensor>>;

/// Every successor with the option values that take each branch of its kernel.
fn losses() -> Vec<(String, LossFn)> {
    let mut v: Vec<(String, LossFn)> = Vec::new();
    for base in [
        AlphaIouBase::Iou,
        AlphaIouBase::Giou,
        AlphaIouBase::Diou,
        AlphaIouBase::Ciou,
    ] {
        for alpha in [3.0, 1.0, 0.5] {
            v.push((
                format!("alpha_iou {base} {alpha}"),
                Box::new(move |p, t, r| alpha_iou_loss(p, t, alpha, base, 1e-9, r)),
            ));
        }
    }
    v.push((
        "mpdiou".into(),
        Box::new(|p, t, r| mpdiou_loss(p, t, 640.0, 480.0, 1e-7, r)),
    ));
    for base in [InnerIouBase::Iou, InnerIouBase::Ciou] {
        for ratio in [0.7, 1.0, 1.3] {
            v.push((
                format!("inner_iou {base} {ratio}"),
                Box::new(move |p, t, r| inner_iou_loss(p, t, ratio, base, 1e-7, r)),
            ));
        }
    }
    for scale in [0.0, 1.0, 0.5] {
        v.push((
            format!("shape_iou {scale}"),
            Box::new(move |p, t, r| shape_iou_loss(p, t, scale, 1e-7, r)),
        ));
    }
    for version in [WiseIouVersion::V1, WiseIouVersion::V2, WiseIouVersion::V3] {
        v.push((
            format!("wise_iou {version}"),
            Box::new(move |p, t, r| wise_iou_loss(p, t, version, 0.6, 1.7, 2.7, r)),
        ));
    }
    for (d, u) in [(0.0, 0.95), (0.2, 0.6)] {
        v.push((
            format!("focaler {d} {u}"),
            Box::new(move |p, t, r| focaler_iou_loss(p, t, d, u, 1e-7, r)),
        ));
    }
    v.push(("nwd".into(), Box::new(|p, t, r| nwd_loss(p, t, 12.8, 1e-6, r))));
    for neg_gamma in [false, true] {
        v.push((
            format!("siou {neg_gamma}"),
            Box::new(move |p, t, r| siou_loss(p, t, neg_gamma, 1e-6, r)),
        ));
    }
    v
}

/// Fused in `dtype` against composite in f64 on the same (rounded) boxes: the kernel computes
/// a pair in f64 for both dtypes and rounds its results once, so f32 ties of the composite's
/// own roundings (nested boxes whose `eps` terms vanish in f32) do not move it.
fn check(p: &[f64], t: &[f64], dtype: DType, reduction: Reduction, rtol: f64, atol: f64) {
    let (a, b) = (boxes(p, dtype), boxes(t, dtype));
    let wide = |x: &Tensor| x.to_dtype(DType::F64).unwrap();
    let (a64, b64) = (wide(&a), wide(&b));
    for (name, f) in losses() {
        let run = |k: Path, a: &Tensor, b: &Tensor| {
            value_and_grads(|x: &Tensor, y: &Tensor| with_path(k, || f(x, y, reduction)), a, b)
        };
        let (vf, gpf, gtf) = run(Path::Fused, &a, &b);
        let (vc, gpc, gtc) = run(Path::Composite, &a64, &b64);
        // The f64 results as the dtype holds them (beyond f32's range: its infinity). An
        // infinite slope (Shape-IoU's `w^s`, `s < 1`, at a zero width) is the largest number
        // times the upstream gradient: past 1e300 the two orders of that product may differ in
        // overflowing, so both count as the infinity.
        let held = |v: Vec<f64>| -> Vec<f64> {
            let inf = |x: f64| if x.abs() > 1e300 { x.signum() * f64::INFINITY } else { x };
            match dtype {
                DType::F32 => v.into_iter().map(|x| x as f32 as f64).collect(),
                _ => v.into_iter().map(inf).collect(),
            }
        };
        let (gpf, gtf) = (held(gpf), held(gtf));
        let (vc, gpc, gtc) = (held(vc), held(gpc), held(gtc));
        let what = format!("{name} {dtype:?} {reduction:?}");
        assert_close(&format!("{what}: value"), &vf, &vc, rtol, atol);
        assert_close(&format!("{what}: grad pred"), &gpf, &gpc, rtol, atol);
        assert_close(&format!("{what}: grad target"), &gtf, &gtc, rtol, atol);
    }
}

/// Random pairs and every degenerate kind of `pair_of_kind`, both roles.
fn pairs() -> (Vec<f64>, Vec<f64>) {
    let (mut p, mut t) = generic_pairs(11, 300);
    let mut r = rng(12);
    for i in 0..14 * 10 {
        let (a, b) = pair_of_kind(&mut r, i);
        p.extend_from_slice(&a);
        t.extend_from_slice(&b);
        p.extend_from_slice(&b);
        t.extend_from_slice(&a);
    }
    (p, t)
}

#[test]
fn successors_fused_equal_composite_f64() {
    let (p, t) = pairs();
    check(&p, &t, DType::F64, Reduction::None, 1e-6, 1e-9);
    check(&p, &t, DType::F64, Reduction::Mean, 1e-6, 1e-12);
    check(&p, &t, DType::F64, Reduction::Sum, 1e-6, 1e-9);
}

#[test]
fn successors_fused_equal_composite_f32() {
    let (p, t) = mixed_pairs(13, 300);
    check(&p, &t, DType::F32, Reduction::None, 1e-5, 1e-6);
    check(&p, &t, DType::F32, Reduction::Mean, 1e-5, 1e-8);
}

/// Sizes that end inside a block of the f32 kernel (64 pairs) and that cross the parallel
/// threshold (8192 pairs a task): every lane of every block, and every chunk, agrees.
#[test]
fn successors_fused_equal_composite_f32_across_blocks_and_chunks() {
    for n in [63, 65, 129, 20_001] {
        let (p, t) = mixed_pairs(14 + n as u64, n);
        check(&p, &t, DType::F32, Reduction::None, 1e-5, 1e-6);
        check(&p, &t, DType::F32, Reduction::Sum, 1e-5, 1e-2);
    }
}

/// NWD's f32 lanes on close boxes far from the origin (coordinates near 1e4, corner offsets of
/// 1e-3 to 1): its distance is a sum of squared corner offsets, each one exact f32 subtraction,
/// so value and gradients follow the f64 composite form to f32 precision with no f64 recompute.
#[test]
fn nwd_f32_is_precise_for_close_boxes_far_from_the_origin() {
    let mut r = rng(21);
    let (mut p, mut t) = (Vec::new(), Vec::new());
    for i in 0..200 {
        let a = random_box(&mut r).map(|x| x + 1e4);
        let s = [1e-3, 1e-2, 0.1, 1.0][i % 4];
        let b = [0, 1, 2, 3].map(|k| a[k] + s * (((i * 7 + k * 3) % 11) as f64 - 5.0) / 5.0);
        p.extend_from_slice(&a);
        t.extend_from_slice(&b);
    }
    // The f32 boxes, and the same values in f64 for the composite form.
    let (a, b) = (boxes(&p, DType::F32), boxes(&t, DType::F32));
    let wide = |x: &Tensor| x.to_dtype(DType::F64).unwrap();
    let f = |x: &Tensor, y: &Tensor| nwd_loss(x, y, 12.8, 1e-6, Reduction::None);
    let (vf, gpf, gtf) = value_and_grads(|x: &Tensor, y: &Tensor| with_path(Path::Fused, || f(x, y)), &a, &b);
    let (vc, gpc, gtc) = value_and_grads(
        |x: &Tensor, y: &Tensor| with_path(Path::Composite, || f(x, y)),
        &wide(&a),
        &wide(&b),
    );
    assert_close("nwd far: value", &vf, &vc, 1e-5, 1e-7);
    assert_close("nwd far: grad pred", &gpf, &gpc, 1e-5, 1e-7);
    assert_close("nwd far: grad target", &gtf, &gtc, 1e-5, 1e-7);
}
