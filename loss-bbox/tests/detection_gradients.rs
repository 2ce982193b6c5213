//! Gradients of the dense-detection losses and the IoU successors against central finite
//! differences in f64, w.r.t. the prediction and every float target the reference propagates to,
//! on the CPU primitives and on the composite path, at generic points (away from kinks, jumps and
//! ties). Terms the references detach (Alpha-IoU's and Inner-IoU's CIoU weight, Wise-IoU's
//! enclosing diagonal and `β`) are constants of the gradient: their expected gradient is the finite
//! difference of a scalar re-implementation with those terms frozen at the point.

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::*;
use loss_bbox::*;
use loss_core::kernel::{with_path, Path};
use loss_core::Reduction;
use rand::Rng;

const RTOL: f64 = 1e-5;
const ATOL: f64 = 1e-6;

fn t64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

/// Autodiff gradients of `sum(f(a, b))` w.r.t. `a` and `b` (zeros where absent).
fn autodiff(f: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>, a: &Tensor, b: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let (va, vb) = (Var::from_tensor(a).unwrap(), Var::from_tensor(b).unwrap());
    let out = f(va.as_tensor(), vb.as_tensor()).unwrap();
    let g = out.sum_all().unwrap().backward().unwrap();
    let grad = |v: &Var| match g.get(v.as_tensor()) {
        Some(t) => flat(t),
        None => vec![0.0; v.elem_count()],
    };
    (grad(&va), grad(&vb))
}

/// Central differences of `s(x)` w.r.t. every entry of `x`.
fn central(s: impl Fn(&[f64]) -> f64, x: &[f64]) -> Vec<f64> {
    let h = 1e-6;
    (0..x.len())
        .map(|i| {
            let (mut up, mut dn) = (x.to_vec(), x.to_vec());
            up[i] += h;
            dn[i] -= h;
            (s(&up) - s(&dn)) / (2.0 * h)
        })
        .collect()
}

/// Checks both gradients of `f` (on both paths) against finite differences of `f` itself;
/// `grad_b = false` skips the second argument.
fn check(
    what: &str,
    f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    a: &[f64],
    sa: &[usize],
    b: &[f64],
    sb: &[usize],
    grad_b: bool,
) {
    let sum = |x: &[f64], y: &[f64]| -> f64 { flat(&f(&t64(x, sa), &t64(y, sb)).unwrap()).iter().sum() };
    let fd_a = central(|x| sum(x, b), a);
    let fd_b = if grad_b { central(|y| sum(a, y), b) } else { Vec::new() };
    for composite in [false, true] {
        let (ga, gb) = if composite {
            with_path(Path::Composite, || autodiff(&f, &t64(a, sa), &t64(b, sb)))
        } else {
            autodiff(&f, &t64(a, sa), &t64(b, sb))
        };
        assert_close(
            &format!("{what} (composite {composite}): d/d first"),
            &ga,
            &fd_a,
            RTOL,
            ATOL,
        );
        if grad_b {
            assert_close(
                &format!("{what} (composite {composite}): d/d second"),
                &gb,
                &fd_b,
                RTOL,
                ATOL,
            );
        }
    }
}

/// As [`check`] for `[n, 4]` boxes, with the expected gradient from the scalar `frozen(p, t, p0, t0)`
/// (its detached terms taken at `(p0, t0)`), summed over the rows.
fn check_frozen(
    what: &str,
    f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    frozen: impl Fn(&[f64], &[f64], &[f64], &[f64]) -> f64,
    p: &[f64],
    t: &[f64],
) {
    let n = p.len() / 4;
    let s = [n, 4];
    let total = |x: &[f64], y: &[f64]| -> f64 {
        (0..n)
            .map(|i| {
                frozen(
                    &x[4 * i..4 * i + 4],
                    &y[4 * i..4 * i + 4],
                    &p[4 * i..4 * i + 4],
                    &t[4 * i..4 * i + 4],
                )
            })
            .sum()
    };
    // the scalar form is the loss itself at the point
    let v: f64 = flat(&f(&t64(p, &s), &t64(t, &s)).unwrap()).iter().sum();
    assert!(
        (v - total(p, t)).abs() < 1e-9 * (1.0 + v.abs()),
        "{what}: value {v} vs {}",
        total(p, t)
    );
    let fd_p = central(|x| total(x, t), p);
    let fd_t = central(|y| total(p, y), t);
    for composite in [false, true] {
        let (gp, gt) = if composite {
            with_path(Path::Composite, || autodiff(&f, &t64(p, &s), &t64(t, &s)))
        } else {
            autodiff(&f, &t64(p, &s), &t64(t, &s))
        };
        assert_close(
            &format!("{what} (composite {composite}): d/dpred"),
            &gp,
            &fd_p,
            RTOL,
            ATOL,
        );
        assert_close(
            &format!("{what} (composite {composite}): d/dtarget"),
            &gt,
            &fd_t,
            RTOL,
            ATOL,
        );
    }
}

// ------------------------------------------------------------------------------------------
// Scalar geometry of one pair (x1, y1, x2, y2), for the frozen forms.

fn inter(a: &[f64], b: &[f64]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    w * h
}

fn rho2(a: &[f64], b: &[f64]) -> f64 {
    let dx = (b[0] + b[2] - a[0] - a[2]) / 2.0;
    let dy = (b[1] + b[3] - a[1] - a[3]) / 2.0;
    dx * dx + dy * dy
}

fn diag2(a: &[f64], b: &[f64]) -> f64 {
    let cw = a[2].max(b[2]) - a[0].min(b[0]);
    let ch = a[3].max(b[3]) - a[1].min(b[1]);
    cw * cw + ch * ch
}

fn aspect_v(p: &[f64], t: &[f64], eps_h: f64) -> f64 {
    let k = 4.0 / (std::f64::consts::PI * std::f64::consts::PI);
    let ang = |x: &[f64]| ((x[2] - x[0]) / (x[3] - x[1] + eps_h)).atan();
    k * (ang(t) - ang(p)).powi(2)
}

fn area(a: &[f64]) -> f64 {
    (a[2] - a[0]) * (a[3] - a[1])
}

// ------------------------------------------------------------------------------------------
// IoU successors

#[test]
fn iou_successors_match_finite_differences() {
    let (p, t) = generic_pairs(13, 24);
    let s = [p.len() / 4, 4];
    let r = Reduction::Sum;
    for base in [AlphaIouBase::Iou, AlphaIouBase::Giou, AlphaIouBase::Diou] {
        for alpha in [1.0, 3.0, 0.5] {
            check(
                &format!("alpha_iou_loss {base} alpha {alpha}"),
                |a, b| alpha_iou_loss(a, b, alpha, base, 1e-9, r),
                &p,
                &s,
                &t,
                &s,
                true,
            );
        }
    }
    check(
        "mpdiou_loss",
        |a, b| mpdiou_loss(a, b, 64.0, 48.0, 1e-7, r),
        &p,
        &s,
        &t,
        &s,
        true,
    );
    for ratio in [0.7, 1.0, 1.3] {
        check(
            &format!("inner_iou_loss iou ratio {ratio}"),
            |a, b| inner_iou_loss(a, b, ratio, InnerIouBase::Iou, 1e-7, r),
            &p,
            &s,
            &t,
            &s,
            true,
        );
    }
    for scale in [0.0, 0.5, 1.5] {
        check(
            &format!("shape_iou_loss scale {scale}"),
            |a, b| shape_iou_loss(a, b, scale, 1e-7, r),
            &p,
            &s,
            &t,
            &s,
            true,
        );
    }
    // d = 0, u = 1: no IoU of these pairs sits on a clamp bound
    check(
        "focaler_iou_loss",
        |a, b| focaler_iou_loss(a, b, 0.0, 1.0, 1e-7, r),
        &p,
        &s,
        &t,
        &s,
        true,
    );
    for constant in [12.8, 2.0] {
        check(
            &format!("nwd_loss constant {constant}"),
            |a, b| nwd_loss(a, b, constant, 1e-6, r),
            &p,
            &s,
            &t,
            &s,
            true,
        );
    }
}

#[test]
fn focaler_iou_loss_is_flat_outside_its_interval() {
    let (p, t) = generic_pairs(3, 24);
    let s = [p.len() / 4, 4];
    let iou = flat(&box_iou(&t64(&p, &s), &t64(&t, &s)).unwrap());
    let n = p.len() / 4;
    let (d, u) = (0.3, 0.6);
    let (gp, _) = autodiff(
        &|a, b| focaler_iou_loss(a, b, d, u, 1e-7, Reduction::Sum),
        &t64(&p, &s),
        &t64(&t, &s),
    );
    let mut outside = 0;
    for i in 0..n {
        let q = iou[i * n + i];
        if !(d - 1e-3..=u + 1e-3).contains(&q) {
            outside += 1;
            assert_eq!(&gp[4 * i..4 * i + 4], &[0.0; 4], "pair {i}, IoU {q}");
        }
    }
    assert!(outside > 2, "too few pairs outside [d, u]: {outside}");
}

#[test]
fn alpha_iou_ciou_gradient_holds_its_weight_constant() {
    let (p, t) = generic_pairs(17, 16);
    for alpha in [1.0, 3.0] {
        let eps = 1e-9;
        check_frozen(
            &format!("alpha_iou_loss ciou alpha {alpha}"),
            |a, b| alpha_iou_loss(a, b, alpha, AlphaIouBase::Ciou, eps, Reduction::Sum),
            |p, t, p0, t0| {
                let u = |p: &[f64], t: &[f64]| {
                    (p[2] - p[0]) * (p[3] - p[1] + eps) + (t[2] - t[0]) * (t[3] - t[1] + eps) - inter(p, t) + eps
                };
                let v0 = aspect_v(p0, t0, eps);
                let a0 = v0 / ((1.0 + eps) - inter(p0, t0) / u(p0, t0) + v0);
                let iou = (inter(p, t) / u(p, t) + eps).powf(alpha);
                let dist = rho2(p, t).powf(alpha) / (diag2(p, t).powf(alpha) + eps);
                1.0 - (iou - (dist + (aspect_v(p, t, eps) * a0 + eps).powf(alpha)))
            },
            &p,
            &t,
        );
    }
}

#[test]
fn inner_iou_ciou_gradient_holds_its_weight_constant() {
    let (p, t) = generic_pairs(19, 16);
    let eps = 1e-7;
    for ratio in [0.8, 1.2] {
        check_frozen(
            &format!("inner_iou_loss ciou ratio {ratio}"),
            |a, b| inner_iou_loss(a, b, ratio, InnerIouBase::Ciou, eps, Reduction::Sum),
            |p, t, p0, t0| {
                let scaled = |b: &[f64]| {
                    let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
                    let (hw, hh) = ((b[2] - b[0]) * ratio / 2.0, (b[3] - b[1]) * ratio / 2.0);
                    [cx - hw, cy - hh, cx + hw, cy + hh]
                };
                let i_in = inter(&scaled(p), &scaled(t));
                let u_in = ratio * ratio * (area(p) + area(t)) - i_in + eps;
                let iou0 = inter(p0, t0) / (area(p0) + area(t0) - inter(p0, t0) + eps);
                let v0 = aspect_v(p0, t0, 0.0);
                let a0 = v0 / (v0 - iou0 + 1.0 + eps);
                1.0 - i_in / u_in + rho2(p, t) / (diag2(p, t) + eps) + a0 * aspect_v(p, t, 0.0)
            },
            &p,
            &t,
        );
    }
}

#[test]
fn wise_iou_gradient_holds_its_diagonal_and_beta_constant() {
    let (p, t) = generic_pairs(23, 16);
    let (alpha, delta, mean) = (1.7, 2.7, 0.4);
    for version in [WiseIouVersion::V1, WiseIouVersion::V2, WiseIouVersion::V3] {
        check_frozen(
            &format!("wise_iou_loss {version}"),
            |a, b| wise_iou_loss(a, b, version, mean, alpha, delta, Reduction::Sum),
            |p, t, p0, t0| {
                let l = |p: &[f64], t: &[f64]| 1.0 - inter(p, t) / (area(p) + area(t) - inter(p, t));
                let beta = l(p0, t0) / mean;
                let v1 = (rho2(p, t) / diag2(p0, t0)).exp() * l(p, t);
                match version {
                    WiseIouVersion::V1 => v1,
                    WiseIouVersion::V2 => v1 * beta.sqrt(),
                    WiseIouVersion::V3 => v1 * beta / (delta * alpha.powf(beta - delta)),
                }
            },
            &p,
            &t,
        );
    }
}

// ------------------------------------------------------------------------------------------
// Dense-detection losses

fn uniform(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    let mut r = rng(seed);
    (0..n).map(|_| r.gen_range(lo..hi)).collect()
}

#[test]
fn varifocal_loss_matches_finite_differences() {
    let x = uniform(1, 20, -3.0, 3.0);
    // mixed targets: pred gradient only (the loss jumps at t = 0)
    let mut t = uniform(2, 20, 0.1, 0.9);
    for v in t.iter_mut().step_by(3) {
        *v = 0.0;
    }
    for (alpha, gamma, w) in [(0.75, 2.0, true), (0.25, 1.5, false), (1.0, 0.0, true)] {
        check(
            &format!("varifocal_loss {alpha} {gamma} {w}"),
            |a, b| varifocal_loss(a, b, alpha, gamma, w, Reduction::Sum),
            &x,
            &[5, 4],
            &t,
            &[5, 4],
            false,
        );
    }
    // all-positive targets: both gradients
    let tp = uniform(3, 20, 0.1, 0.9);
    check(
        "varifocal_loss positives",
        |a, b| varifocal_loss(a, b, 0.75, 2.0, true, Reduction::Mean),
        &x,
        &[5, 4],
        &tp,
        &[5, 4],
        true,
    );
}

#[test]
fn quality_focal_loss_matches_finite_differences() {
    let labels = Tensor::new(&[0i64, 2, 3, 1, 3, 2], &Device::Cpu).unwrap();
    let x = uniform(4, 18, -3.0, 3.0);
    let score = uniform(5, 6, 0.05, 0.95);
    for beta in [2.0, 1.0, 0.5] {
        check(
            &format!("quality_focal_loss beta {beta}"),
            |a, s| quality_focal_loss(a, &labels, s, beta, false, Reduction::Sum),
            &x,
            &[6, 3],
            &score,
            &[6],
            true,
        );
    }
    let probs = uniform(6, 18, 0.05, 0.95);
    check(
        "quality_focal_loss activated",
        |a, s| quality_focal_loss(a, &labels, s, 2.0, true, Reduction::Mean),
        &probs,
        &[6, 3],
        &score,
        &[6],
        true,
    );
    let mut dense = uniform(7, 18, 0.05, 0.95);
    for (i, v) in dense.iter_mut().enumerate() {
        if i % 4 != 0 {
            *v = 0.0;
        }
    }
    check(
        "quality_focal_loss_tensor_target",
        |a, t| quality_focal_loss_tensor_target(a, t, 2.0, false, Reduction::Sum),
        &x,
        &[6, 3],
        &dense,
        &[6, 3],
        false,
    );
}

#[test]
fn quality_focal_loss_forms_agree() {
    let d = Device::Cpu;
    let labels = Tensor::new(&[0i64, 2, 3, 1], &d).unwrap();
    let score = Tensor::new(&[0.3f64, 0.9, 0.5, 0.7], &d).unwrap();
    let x = t64(&uniform(8, 12, -3.0, 3.0), &[4, 3]);
    let dense = t64(&[0.3, 0., 0., 0., 0., 0.9, 0., 0., 0., 0., 0.7, 0.], &[4, 3]);
    for activated in [false, true] {
        let x = if activated {
            loss_core::ops::sigmoid(&x).unwrap()
        } else {
            x.clone()
        };
        let a = flat(&quality_focal_loss(&x, &labels, &score, 2.0, activated, Reduction::None).unwrap());
        let b = flat(&quality_focal_loss_tensor_target(&x, &dense, 2.0, activated, Reduction::None).unwrap());
        assert_close(&format!("activated {activated}"), &a, &b, 1e-12, 1e-12);
    }
}

#[test]
fn distribution_focal_loss_matches_finite_differences() {
    let x = uniform(9, 40, -3.0, 3.0);
    let mut label = uniform(10, 5, 0.05, 6.95);
    for v in label.iter_mut() {
        // keep away from integers (kinks)
        if (*v - v.round()).abs() < 0.05 {
            *v += 0.1;
        }
    }
    check(
        "distribution_focal_loss",
        |a, l| distribution_focal_loss(a, l, Reduction::Sum),
        &x,
        &[5, 8],
        &label,
        &[5],
        true,
    );
}

#[test]
fn distribution_focal_loss_at_the_last_bin_is_its_cross_entropy() {
    let x = t64(&[0.5, -1.0, 2.0, 0.0], &[1, 4]);
    let l = flat(&distribution_focal_loss(&x, &t64(&[3.0], &[1]), Reduction::None).unwrap())[0];
    let lse = [0.5f64, -1.0, 2.0, 0.0].iter().map(|v| v.exp()).sum::<f64>().ln();
    assert!((l - (lse - 0.0)).abs() < 1e-12, "{l}");
    // continuity from below
    let below = flat(&distribution_focal_loss(&x, &t64(&[3.0 - 1e-9], &[1]), Reduction::None).unwrap())[0];
    assert!((below - l).abs() < 1e-6);
}

#[test]
fn gaussian_focal_loss_matches_finite_differences() {
    let p = uniform(11, 12, 0.05, 0.95);
    let mut t = uniform(12, 12, 0.0, 0.95);
    check(
        "gaussian_focal_loss no peak",
        |a, b| gaussian_focal_loss(a, b, 2.0, 4.0, 1.0, 1.0, Reduction::Sum),
        &p,
        &[3, 4],
        &t,
        &[3, 4],
        true,
    );
    t[1] = 1.0;
    t[7] = 1.0;
    check(
        "gaussian_focal_loss with peaks",
        |a, b| gaussian_focal_loss(a, b, 1.5, 2.0, 2.0, 0.5, Reduction::Mean),
        &p,
        &[3, 4],
        &t,
        &[3, 4],
        false,
    );
}

#[test]
fn balanced_l1_loss_matches_finite_differences() {
    let p = uniform(13, 24, -3.0, 3.0);
    let mut t = uniform(14, 24, -3.0, 3.0);
    for (pi, ti) in p.iter().zip(t.iter_mut()) {
        let d = (pi - *ti).abs();
        if d < 0.01 || (d - 1.0).abs() < 0.01 || (d - 0.5).abs() < 0.01 {
            *ti += 0.05;
        }
    }
    for (alpha, gamma, beta) in [(0.5, 1.5, 1.0), (1.0, 1.0, 0.5)] {
        check(
            &format!("balanced_l1_loss {alpha} {gamma} {beta}"),
            |a, b| balanced_l1_loss(a, b, alpha, gamma, beta, Reduction::Sum),
            &p,
            &[6, 4],
            &t,
            &[6, 4],
            true,
        );
    }
}

#[test]
fn balanced_l1_loss_is_continuous_at_beta() {
    // value and slope agree on both sides of x = beta (the construction of b)
    let (alpha, gamma, beta) = (0.5, 1.5, 1.0);
    let at = |x: f64| {
        flat(&balanced_l1_loss(&t64(&[x], &[1]), &t64(&[0.0], &[1]), alpha, gamma, beta, Reduction::Sum).unwrap())[0]
    };
    assert!((at(beta - 1e-9) - at(beta + 1e-9)).abs() < 1e-7);
    let slope = |x: f64| (at(x + 1e-7) - at(x - 1e-7)) / 2e-7;
    assert!((slope(beta - 1e-5) - slope(beta + 1e-5)).abs() < 1e-3);
    assert!((slope(beta + 1e-5) - gamma).abs() < 1e-6);
}

#[test]
fn poly1_losses_match_finite_differences() {
    let x = uniform(15, 24, -3.0, 3.0);
    let idx = Tensor::new(&[0u32, 3, 5, 1], &Device::Cpu).unwrap();
    for (eps, ls) in [(1.0, 0.0), (2.0, 0.1), (-1.0, 0.0)] {
        check(
            &format!("poly1_cross_entropy {eps} {ls}"),
            |a, _| poly1_cross_entropy(a, &idx, eps, ls, Reduction::Sum),
            &x,
            &[4, 6],
            &[0.0],
            &[1],
            false,
        );
    }
    let mut probs = uniform(16, 24, 0.0, 1.0);
    for row in probs.chunks_mut(6) {
        let s: f64 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= s);
    }
    check(
        "poly1_cross_entropy probability labels",
        |a, y| poly1_cross_entropy(a, y, 1.0, 0.2, Reduction::Mean),
        &x,
        &[4, 6],
        &probs,
        &[4, 6],
        true,
    );
    let labels: Vec<f64> = uniform(17, 24, 0.0, 1.0).iter().map(|v| f64::from(*v > 0.7)).collect();
    for (eps, alpha, gamma) in [(1.0, 0.25, 2.0), (2.0, -1.0, 0.0), (-1.0, 0.5, 3.0)] {
        check(
            &format!("poly1_focal_loss {eps} {alpha} {gamma}"),
            |a, y| poly1_focal_loss(a, y, eps, alpha, gamma, Reduction::Sum),
            &x,
            &[4, 6],
            &labels,
            &[4, 6],
            false,
        );
    }
    // binary labels get no gradient
    let (_, gy) = autodiff(
        &|a, y| poly1_focal_loss(a, y, 1.0, 0.25, 2.0, Reduction::Sum),
        &t64(&x, &[4, 6]),
        &t64(&labels, &[4, 6]),
    );
    assert!(gy.iter().all(|&g| g == 0.0));
}

#[test]
fn poly1_cross_entropy_is_ce_plus_epsilon_one_minus_pt() {
    let x = t64(&uniform(18, 12, -3.0, 3.0), &[3, 4]);
    let idx = Tensor::new(&[2i64, 0, 3], &Device::Cpu).unwrap();
    let poly = flat(&poly1_cross_entropy(&x, &idx, 0.7, 0.0, Reduction::None).unwrap());
    let ce = flat(&loss_core::cross_entropy(&x, &idx, None, -100, 0.0, Reduction::None).unwrap());
    let pt = flat(
        &candle_nn_free_softmax(&x)
            .gather(&idx.to_dtype(DType::U32).unwrap().unsqueeze(1).unwrap(), 1)
            .unwrap(),
    );
    for i in 0..3 {
        assert!((poly[i] - (ce[i] + 0.7 * (1.0 - pt[i]))).abs() < 1e-12);
    }
}

fn candle_nn_free_softmax(x: &Tensor) -> Tensor {
    loss_core::log_softmax(x, 1).unwrap().exp().unwrap()
}
