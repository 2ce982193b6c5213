//! Gradients against central finite differences in f64, for every loss (w.r.t. `pred` and
//! `target`, on both kernels) and every pairwise metric (w.r.t. `boxes1` and `boxes2`), on
//! generic boxes away from kinks. CIoU's `α` is a constant of the gradient (torchvision), so its
//! expected gradient is `FD(DIoU) + α·FD(v)` with `α` taken at the point.

mod common;

use candle_core::{DType, Result, Tensor};
use common::*;
use loss_bbox::*;
use loss_core::kernel::{with_path, Path};
use loss_core::Reduction;

const RTOL: f64 = 1e-5;
const ATOL: f64 = 1e-6;

fn grads_match(what: &str, f: impl Fn(&Tensor, &Tensor) -> Result<Tensor> + Copy, p: &[f64], t: &[f64]) {
    let (a, b) = (boxes(p, DType::F64), boxes(t, DType::F64));
    let (_, gp, gt) = value_and_grads(f, &a, &b);
    let fd_p = fd_grad(f, p, t, t.len() / 4);
    let fd_t = fd_grad(|y: &Tensor, x: &Tensor| f(x, y), t, p, p.len() / 4);
    assert_close(&format!("{what}: d/d first"), &gp, &fd_p, RTOL, ATOL);
    assert_close(&format!("{what}: d/d second"), &gt, &fd_t, RTOL, ATOL);
}

#[test]
fn aligned_losses_match_finite_differences_on_both_kernels() {
    let (p, t) = generic_pairs(11, 40);
    let kinds = [
        AlignedLoss::Iou(IouMode::Linear),
        AlignedLoss::Iou(IouMode::Square),
        AlignedLoss::Iou(IouMode::Log),
        AlignedLoss::Giou,
        AlignedLoss::Diou,
        AlignedLoss::Eiou,
    ];
    for kind in kinds {
        for kernel in [Path::Fused, Path::Composite] {
            for eps in [1e-7, 0.05] {
                grads_match(
                    &format!("{kind:?} {kernel:?} eps {eps}"),
                    |x: &Tensor, y: &Tensor| with_path(kernel, || aligned_loss(kind, x, y, eps, Reduction::Sum)),
                    &p,
                    &t,
                );
            }
        }
    }
}

/// CIoU's aspect term `4/π²(atan(w_b/h_b) − atan(w_a/h_a))²` of one pair (positive heights).
fn v_pair(a: &[f64], b: &[f64]) -> f64 {
    let k = 4.0 / (std::f64::consts::PI * std::f64::consts::PI);
    let ang = |x: &[f64]| ((x[2] - x[0]) / (x[3] - x[1])).atan();
    k * (ang(b) - ang(a)).powi(2)
}

/// Central differences of `f(row)` w.r.t. the 4 entries of `row`.
fn fd4(f: impl Fn(&[f64]) -> f64, row: &[f64]) -> [f64; 4] {
    let h = 1e-6;
    let mut out = [0.0; 4];
    for (k, o) in out.iter_mut().enumerate() {
        let mut up = row.to_vec();
        let mut dn = row.to_vec();
        up[k] += h;
        dn[k] -= h;
        *o = (f(&up) - f(&dn)) / (2.0 * h);
    }
    out
}

#[test]
fn ciou_gradient_is_diou_plus_constant_alpha_times_dv() {
    let (p, t) = generic_pairs(12, 40);
    let eps = 1e-7;
    let (a, b) = (boxes(&p, DType::F64), boxes(&t, DType::F64));
    let iou = flat(&iou_loss(&a, &b, IouMode::Linear, eps, Reduction::None).unwrap())
        .iter()
        .map(|l| 1.0 - l)
        .collect::<Vec<_>>();
    let diou_fd_p = fd_grad(|x, y| diou_loss(x, y, eps, Reduction::Sum), &p, &t, t.len() / 4);
    let diou_fd_t = fd_grad(|y, x| diou_loss(x, y, eps, Reduction::Sum), &t, &p, p.len() / 4);
    let mut want_p = diou_fd_p.clone();
    let mut want_t = diou_fd_t.clone();
    for i in 0..p.len() / 4 {
        let (pi, ti) = (&p[4 * i..4 * i + 4], &t[4 * i..4 * i + 4]);
        let v = v_pair(pi, ti);
        let alpha = v / (1.0 - iou[i] + v + eps);
        let dp = fd4(|x| v_pair(x, ti), pi);
        let dt = fd4(|x| v_pair(pi, x), ti);
        for k in 0..4 {
            want_p[4 * i + k] += alpha * dp[k];
            want_t[4 * i + k] += alpha * dt[k];
        }
    }
    for kernel in [Path::Fused, Path::Composite] {
        let (_, gp, gt) = value_and_grads(
            |x: &Tensor, y: &Tensor| with_path(kernel, || aligned_loss(AlignedLoss::Ciou, x, y, eps, Reduction::Sum)),
            &a,
            &b,
        );
        assert_close(&format!("ciou {kernel:?} d/dpred"), &gp, &want_p, RTOL, ATOL);
        assert_close(&format!("ciou {kernel:?} d/dtarget"), &gt, &want_t, RTOL, ATOL);
    }
}

#[test]
fn mmdet_losses_match_finite_differences() {
    let (p, t) = generic_pairs(13, 40);
    for sp in [0.1, 0.5] {
        grads_match(
            &format!("extended_iou smooth_point {sp}"),
            |x: &Tensor, y: &Tensor| extended_iou_loss(x, y, sp, 1e-6, Reduction::Sum),
            &p,
            &t,
        );
    }
    // disjoint pairs: the extended intersection is negative and still has a gradient
    let (p2, t2) = (
        vec![0.0, 0.0, 1.0, 1.5, 3.0, 2.0, 5.0, 4.0],
        vec![2.0, 0.5, 3.5, 1.0, 0.0, -1.0, 1.0, 0.5],
    );
    grads_match(
        "extended_iou disjoint",
        |x: &Tensor, y: &Tensor| extended_iou_loss(x, y, 0.1, 1e-6, Reduction::Sum),
        &p2,
        &t2,
    );
    for neg_gamma in [false, true] {
        grads_match(
            &format!("siou neg_gamma {neg_gamma}"),
            |x: &Tensor, y: &Tensor| siou_loss(x, y, neg_gamma, 1e-6, Reduction::Sum),
            &p,
            &t,
        );
    }
}

#[test]
fn pairwise_metrics_match_finite_differences() {
    let mut r = rng(14);
    let b1: Vec<f64> = (0..6).flat_map(|_| random_box(&mut r)).collect();
    let b2: Vec<f64> = (0..5).flat_map(|_| random_box(&mut r)).collect();
    grads_match("box_iou", |x: &Tensor, y: &Tensor| box_iou(x, y), &b1, &b2);
    grads_match(
        "generalized_box_iou",
        |x: &Tensor, y: &Tensor| generalized_box_iou(x, y),
        &b1,
        &b2,
    );
    grads_match(
        "distance_box_iou",
        |x: &Tensor, y: &Tensor| distance_box_iou(x, y, 1e-7),
        &b1,
        &b2,
    );
}

#[test]
fn complete_box_iou_gradient_holds_alpha_constant() {
    let mut r = rng(15);
    let b1: Vec<f64> = (0..4).flat_map(|_| random_box(&mut r)).collect();
    let b2: Vec<f64> = (0..3).flat_map(|_| random_box(&mut r)).collect();
    let eps = 1e-7;
    let (a, b) = (boxes(&b1, DType::F64), boxes(&b2, DType::F64));
    let iou = flat(&box_iou(&a, &b).unwrap());
    let (n, m) = (4, 3);
    let mut want1 = fd_grad(|x, y| distance_box_iou(x, y, eps), &b1, &b2, m);
    let mut want2 = fd_grad(|y, x| distance_box_iou(x, y, eps), &b2, &b1, n);
    for i in 0..n {
        for j in 0..m {
            let (bi, bj) = (&b1[4 * i..4 * i + 4], &b2[4 * j..4 * j + 4]);
            let v = v_pair(bi, bj);
            let alpha = v / (1.0 - iou[i * m + j] + v + eps);
            let d1 = fd4(|x| v_pair(x, bj), bi);
            let d2 = fd4(|x| v_pair(bi, x), bj);
            for k in 0..4 {
                want1[4 * i + k] -= alpha * d1[k];
                want2[4 * j + k] -= alpha * d2[k];
            }
        }
    }
    let (_, g1, g2) = value_and_grads(|x: &Tensor, y: &Tensor| complete_box_iou(x, y, eps), &a, &b);
    assert_close("complete_box_iou d/dboxes1", &g1, &want1, RTOL, ATOL);
    assert_close("complete_box_iou d/dboxes2", &g2, &want2, RTOL, ATOL);
}

#[test]
fn box_convert_and_area_match_finite_differences() {
    let mut r = rng(16);
    let b: Vec<f64> = (0..5).flat_map(|_| random_box(&mut r)).collect();
    let formats = [BoxFormat::Xyxy, BoxFormat::Xywh, BoxFormat::Cxcywh];
    for fmt in formats {
        let area = |x: &Tensor, _: &Tensor| box_area(x, fmt);
        grads_match(&format!("box_area {fmt}"), area, &b, &b);
        for out in formats {
            // a weighted sum makes every output coordinate count differently
            let w = Tensor::new(&[1.0f64, -2.0, 3.0, 0.5], &candle_core::Device::Cpu).unwrap();
            let conv = |x: &Tensor, _: &Tensor| box_convert(x, fmt, out)?.broadcast_mul(&w);
            grads_match(&format!("box_convert {fmt} -> {out}"), conv, &b, &b);
        }
    }
}
