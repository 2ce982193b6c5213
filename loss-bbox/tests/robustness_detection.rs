//! Robustness of the dense-detection losses and the IoU successors under random input (the
//! three modes of `loss_core::testing` (`loss-core/src/testing.rs`)): no panic, typed errors, finite value and
//! gradient inside the domain, NaN in → NaN out; on the CPU primitives and on the composite path.
//!
//! Domains (Valid mode):
//! - IoU successors: `xyxy` boxes that are not inverted, coordinates 0 or `1e-10 <= |v| <= 1e15`,
//!   extents 0 or in `[1e-10, 1e15]` (degenerate boxes included: zero width or height, points,
//!   identical, touching, nested, disjoint, integer grids full of ties), `eps` in `[1e-12, 1e3]`.
//!   `alpha_iou_loss` raises the squared enclosing diagonal to `alpha` (up to 3), so its boxes
//!   stay within `1e4` and `alpha` is 1, 2 or 3 (for `alpha < 1` the penalty `(ρ²)^α` has an
//!   infinite slope at coincident centres). `shape_iou_loss`'s `scale` is 0 or in `[1, 2]`
//!   (`w^s` has an infinite slope at `w = 0` for `0 < s < 1`).
//! - Dense losses: logits with `|x| <= 1e15`, probabilities and soft targets in `[0, 1]`, labels
//!   in range; the focusing exponents (`gamma` of varifocal, `beta` of QFL, `alpha`/`gamma` of the
//!   Gaussian focal loss) 0 or in `[1, 4]`: for an exponent in `(0, 1)`, `|σ − t|^γ` has an
//!   infinite slope where `σ = t`. Balanced L1: `gamma/alpha <= 20` (`b = e^(γ/α) − 1` fits f32).

use loss_core::testing as robust;

use candle_core::{DType, Tensor};
use loss_bbox::*;
use loss_core::Reduction;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use robust::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Det {
    AlphaIou,
    Mpdiou,
    InnerIou,
    ShapeIou,
    WiseIou,
    FocalerIou,
    Nwd,
    Varifocal,
    QflLabel,
    QflDense,
    Dfl,
    Gaussian,
    BalancedL1,
    Poly1Ce,
    Poly1Focal,
}

impl Det {
    fn name(self) -> &'static str {
        match self {
            Det::AlphaIou => "alpha_iou_loss",
            Det::Mpdiou => "mpdiou_loss",
            Det::InnerIou => "inner_iou_loss",
            Det::ShapeIou => "shape_iou_loss",
            Det::WiseIou => "wise_iou_loss",
            Det::FocalerIou => "focaler_iou_loss",
            Det::Nwd => "nwd_loss",
            Det::Varifocal => "varifocal_loss",
            Det::QflLabel | Det::QflDense => "quality_focal_loss",
            Det::Dfl => "distribution_focal_loss",
            Det::Gaussian => "gaussian_focal_loss",
            Det::BalancedL1 => "balanced_l1_loss",
            Det::Poly1Ce => "poly1_cross_entropy",
            Det::Poly1Focal => "poly1_focal_loss",
        }
    }

    fn is_box(self) -> bool {
        matches!(
            self,
            Det::AlphaIou | Det::Mpdiou | Det::InnerIou | Det::ShapeIou | Det::WiseIou | Det::FocalerIou | Det::Nwd
        )
    }

    fn bound(self) -> f64 {
        if self == Det::AlphaIou {
            1e4
        } else {
            1e15
        }
    }
}

#[derive(Debug, Clone)]
struct DetCase {
    loss: Det,
    mode: Mode,
    composite: bool,
    /// pred / logits.
    a: Spec,
    /// target / score / label (DFL) / labels.
    b: Spec,
    /// QFL's class labels (a constant).
    c: Spec,
    /// Up to four numeric parameters, in the order of the function's arguments.
    p: [f64; 4],
    /// A variant choice (base, version) or a flag.
    k: usize,
    reduction: Reduction,
    grad_b: bool,
    want: Want,
}

// ---------------------------------------------------------------------------------------------
// Valid inputs

fn coordinate(bound: f64) -> BoxedStrategy<f64> {
    prop_oneof![
        2 => (0..4i32).prop_map(f64::from),
        1 => prop_oneof![Just(0.0), Just(bound), Just(-bound), Just(1e-10), Just(0.5)],
        2 => -10.0..10.0f64,
        2 => log_uniform(-10.0, bound.log10(), true),
    ]
    .boxed()
}

fn extent(bound: f64) -> BoxedStrategy<f64> {
    prop_oneof![
        1 => Just(0.0),
        2 => (0..4i32).prop_map(f64::from),
        1 => prop_oneof![Just(1e-10), Just(1e-7), Just(0.5), Just(bound)],
        2 => log_uniform(-10.0, bound.log10(), false),
    ]
    .boxed()
}

fn valid_boxes(n: usize, dt: DType, bound: f64) -> BoxedStrategy<Vec<f64>> {
    proptest::collection::vec((coordinate(bound), coordinate(bound), extent(bound), extent(bound)), n)
        .prop_map(move |v| {
            let r = |x: f64| if dt == DType::F32 { x as f32 as f64 } else { x };
            v.into_iter()
                .flat_map(|(x, y, w, h)| {
                    let (x, y) = (r(x), r(y));
                    [x, y, r(x + r(w)).max(x), r(y + r(h)).max(y)]
                })
                .collect()
        })
        .boxed()
}

fn eps() -> BoxedStrategy<f64> {
    prop_oneof![Just(1e-7), Just(1e-9), Just(1e-12), log_uniform(-12.0, 3.0, false)].boxed()
}

/// An exponent 0 or in `[1, 4]`.
fn exponent() -> BoxedStrategy<f64> {
    prop_oneof![Just(0.0), Just(1.0), Just(2.0), 1.0..4.0f64].boxed()
}

/// `(p, k)` of the box losses.
fn box_params(loss: Det) -> BoxedStrategy<([f64; 4], usize)> {
    match loss {
        Det::AlphaIou => (prop_oneof![Just(1.0), Just(2.0), Just(3.0)], eps(), 0..4usize)
            .prop_map(|(a, e, k)| ([a, e, 0.0, 0.0], k))
            .boxed(),
        Det::Mpdiou => (log_uniform(0.0, 4.0, false), log_uniform(0.0, 4.0, false), eps())
            .prop_map(|(w, h, e)| ([w, h, e, 0.0], 0))
            .boxed(),
        Det::InnerIou => (log_uniform(-1.0, 1.0, false), eps(), 0..2usize)
            .prop_map(|(r, e, k)| ([r, e, 0.0, 0.0], k))
            .boxed(),
        Det::ShapeIou => (prop_oneof![Just(0.0), 1.0..2.0f64], eps())
            .prop_map(|(s, e)| ([s, e, 0.0, 0.0], 0))
            .boxed(),
        Det::WiseIou => (log_uniform(-3.0, 1.0, false), 1.1..3.0f64, 1.0..5.0f64, 0..3usize)
            .prop_map(|(m, a, d, k)| ([m, a, d, 0.0], k))
            .boxed(),
        Det::FocalerIou => (0.0..0.9f64, 0.01..1.0f64, eps())
            .prop_map(|(d, w, e)| ([d, (d + w).min(1.0), e, 0.0], 0))
            .boxed(),
        _ => (log_uniform(-3.0, 3.0, false), eps())
            .prop_map(|(c, e)| ([c, e, 0.0, 0.0], 0))
            .boxed(),
    }
}

fn valid_box_case(loss: Det) -> BoxedStrategy<DetCase> {
    (
        float_dtype(),
        shape(0..=3, 8),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(move |(dt, lead, composite, same, grad_b)| {
            let n = numel(&lead);
            let mut s = lead.clone();
            s.push(4);
            (
                valid_boxes(n, dt, loss.bound()),
                valid_boxes(n, dt, loss.bound()),
                box_params(loss),
                reduction(),
            )
                .prop_map(move |(a, b, (p, k), reduction)| {
                    let b = if same { a.clone() } else { b };
                    DetCase {
                        loss,
                        mode: Mode::Valid,
                        composite,
                        a: Spec::new(dt, s.clone(), a),
                        b: Spec::new(dt, s.clone(), b),
                        c: Spec::new(DType::I64, vec![0], vec![]),
                        p,
                        k,
                        reduction,
                        grad_b,
                        want: Want::Finite,
                    }
                })
        })
        .boxed()
}

fn probs(n: usize) -> BoxedStrategy<Vec<f64>> {
    values(in_range(0.0, 1.0), n)
}

/// Strategies of `(pred, second input, QFL labels, params)` and whether the second input gets a
/// gradient.
type DenseStrategies = (
    BoxedStrategy<Vec<f64>>,
    BoxedStrategy<Vec<f64>>,
    BoxedStrategy<Vec<f64>>,
    BoxedStrategy<[f64; 4]>,
    bool,
);

fn valid_dense_case(loss: Det) -> BoxedStrategy<DetCase> {
    (
        float_dtype(),
        0..=4usize,
        1..=5usize,
        any::<bool>(),
        any::<bool>(),
        reduction(),
    )
        .prop_flat_map(move |(dt, n, c, composite, flag, reduction)| {
            let logits = values(finite(1e15), n * c);
            let (a, b, lab, p, grad_b): DenseStrategies = match loss {
                Det::Varifocal => (
                    logits,
                    probs(n * c),
                    Just(vec![]).boxed(),
                    (0.0..5.0f64, exponent()).prop_map(|(a, g)| [a, g, 0.0, 0.0]).boxed(),
                    true,
                ),
                Det::QflLabel | Det::QflDense => (
                    if flag { probs(n * c) } else { logits },
                    if loss == Det::QflLabel {
                        probs(n)
                    } else {
                        values(prop_oneof![Just(0.0), in_range(0.0, 1.0)].boxed(), n * c)
                    },
                    values((0..=c).prop_map(|v| v as f64).boxed(), n),
                    exponent().prop_map(|b| [b, 0.0, 0.0, 0.0]).boxed(),
                    loss == Det::QflLabel,
                ),
                Det::Dfl => (
                    logits,
                    values(in_range(0.0, (c - 1) as f64), n),
                    Just(vec![]).boxed(),
                    Just([0.0; 4]).boxed(),
                    true,
                ),
                Det::Gaussian => (
                    probs(n * c),
                    probs(n * c),
                    Just(vec![]).boxed(),
                    (exponent(), exponent(), -2.0..2.0f64, -2.0..2.0f64)
                        .prop_map(|(a, g, pw, nw)| [a, g, pw, nw])
                        .boxed(),
                    true,
                ),
                Det::BalancedL1 => (
                    logits,
                    values(finite(1e15), n * c),
                    Just(vec![]).boxed(),
                    (0.25..5.0f64, 0.1..5.0f64, log_uniform(-3.0, 3.0, false))
                        .prop_map(|(a, g, b)| [a, g, b, 0.0])
                        .boxed(),
                    true,
                ),
                Det::Poly1Ce => (
                    logits,
                    if flag {
                        probs(n * c)
                    } else {
                        values((0..c).prop_map(|v| v as f64).boxed(), n)
                    },
                    Just(vec![]).boxed(),
                    (-1.0..10.0f64, in_range(0.0, 1.0))
                        .prop_map(|(e, l)| [e, l, 0.0, 0.0])
                        .boxed(),
                    flag,
                ),
                _ => (
                    logits,
                    values(prop_oneof![Just(0.0), Just(1.0)].boxed(), n * c),
                    Just(vec![]).boxed(),
                    (-1.0..10.0f64, prop_oneof![Just(-1.0), in_range(0.0, 1.0)], 0.0..4.0f64)
                        .prop_map(|(e, a, g)| [e, a, g, 0.0])
                        .boxed(),
                    false,
                ),
            };
            (a, b, lab, p).prop_map(move |(a, b, lab, p)| {
                let nc = vec![n, c];
                let b_spec = match loss {
                    Det::QflLabel | Det::Dfl => Spec::new(dt, vec![n], b),
                    Det::Poly1Ce if !flag => Spec::new(DType::I64, vec![n], b),
                    _ => Spec::new(dt, nc.clone(), b),
                };
                DetCase {
                    loss,
                    mode: Mode::Valid,
                    composite,
                    a: Spec::new(dt, nc.clone(), a),
                    b: b_spec,
                    c: Spec::new(DType::I64, vec![lab.len()], lab),
                    p,
                    k: usize::from(flag),
                    reduction,
                    grad_b,
                    // torch's mean of nothing (balanced L1 gives 0, as mmdetection)
                    want: if n == 0 && reduction == Reduction::Mean && loss != Det::BalancedL1 {
                        Want::AllNan
                    } else {
                        Want::Finite
                    },
                }
            })
        })
        .boxed()
}

fn valid(loss: Det) -> BoxedStrategy<DetCase> {
    if loss.is_box() {
        valid_box_case(loss)
    } else {
        valid_dense_case(loss)
    }
}

/// NaN in some entries of the prediction (a box coordinate or a logit) that the output reads.
fn nan(loss: Det) -> BoxedStrategy<DetCase> {
    valid(loss)
        .prop_filter("an element", |c| !c.a.values.is_empty())
        .prop_flat_map(|c| {
            let n = c.a.values.len();
            (
                Just(c),
                proptest::collection::vec(proptest::bool::weighted(0.2), n),
                0..n,
            )
        })
        .prop_map(|(mut c, mask, i)| {
            c.mode = Mode::Nan;
            for (j, v) in c.a.values.iter_mut().enumerate() {
                if mask[j] || j == i {
                    *v = f64::NAN;
                }
            }
            c.want = if c.loss.is_box() && c.reduction == Reduction::None {
                let rows = c.a.values.len() / 4;
                Want::NanAt(
                    (0..rows)
                        .map(|r| c.a.values[4 * r..4 * r + 4].iter().any(|v| v.is_nan()))
                        .collect(),
                )
            } else {
                Want::SomeNan
            };
            c
        })
        .boxed()
}

fn wild(loss: Det) -> BoxedStrategy<DetCase> {
    let random = (
        wild_spec(24),
        wild_spec(24),
        wild_spec(8),
        (any_param(), any_param(), any_param(), any_param()),
        (0..4usize, any_reduction(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            move |(a, b, c, (p0, p1, p2, p3), (k, reduction, composite, grad_b))| DetCase {
                loss,
                mode: Mode::Wild,
                composite,
                a,
                b,
                c,
                p: [p0, p1, p2, p3],
                k,
                reduction,
                grad_b,
                want: Want::Anything,
            },
        );
    let perturbed = (valid(loss), any_param(), any_param(), 0..3u8)
        .prop_flat_map(|(c, x, y, what)| {
            let (na, nb) = (c.a.values.len(), c.b.values.len());
            (Just((c, x, y, what)), values(any_value(), na), values(any_value(), nb))
        })
        .prop_map(|((mut c, x, y, what), va, vb)| {
            c.mode = Mode::Wild;
            c.want = Want::Anything;
            match what {
                0 => (c.p[0], c.p[1]) = (x, y),
                1 => c.a.values = va,
                _ => (c.a.values, c.b.values) = (va, vb),
            }
            c
        });
    prop_oneof![random, perturbed].boxed()
}

fn run_loss(c: &DetCase, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let (p, k, r) = (c.p, c.k, c.reduction);
    let label = c.c.tensor();
    match c.loss {
        Det::AlphaIou => {
            let base = [
                AlphaIouBase::Iou,
                AlphaIouBase::Giou,
                AlphaIouBase::Diou,
                AlphaIouBase::Ciou,
            ][k % 4];
            alpha_iou_loss(a, b, p[0], base, p[1], r)
        }
        Det::Mpdiou => mpdiou_loss(a, b, p[0], p[1], p[2], r),
        Det::InnerIou => {
            let base = [InnerIouBase::Iou, InnerIouBase::Ciou][k % 2];
            inner_iou_loss(a, b, p[0], base, p[1], r)
        }
        Det::ShapeIou => shape_iou_loss(a, b, p[0], p[1], r),
        Det::WiseIou => {
            let v = [WiseIouVersion::V1, WiseIouVersion::V2, WiseIouVersion::V3][k % 3];
            wise_iou_loss(a, b, v, p[0], p[1], p[2], r)
        }
        Det::FocalerIou => focaler_iou_loss(a, b, p[0], p[1], p[2], r),
        Det::Nwd => nwd_loss(a, b, p[0], p[1], r),
        Det::Varifocal => varifocal_loss(a, b, p[0], p[1], k % 2 == 0, r),
        Det::QflLabel => quality_focal_loss(a, &label, b, p[0], k % 2 == 1, r),
        Det::QflDense => quality_focal_loss_tensor_target(a, b, p[0], k % 2 == 1, r),
        Det::Dfl => distribution_focal_loss(a, b, r),
        Det::Gaussian => gaussian_focal_loss(a, b, p[0], p[1], p[2], p[3], r),
        Det::BalancedL1 => balanced_l1_loss(a, b, p[0], p[1], p[2], r),
        Det::Poly1Ce => poly1_cross_entropy(a, b, p[0], p[1], r),
        Det::Poly1Focal => poly1_focal_loss(a, b, p[0], p[1], p[2], r),
    }
}

impl Case for DetCase {
    fn mode(&self) -> Mode {
        self.mode
    }
    fn composite(&self) -> bool {
        self.composite
    }
    fn check(&self) -> Result<bool, TestCaseError> {
        let grad_b = self.grad_b && matches!(self.b.dtype, DType::F32 | DType::F64);
        let args = vec![
            Arg::var(self.a.tensor()),
            Arg {
                tensor: self.b.tensor(),
                grad: grad_b,
            },
        ];
        let c = self.clone();
        let got = call(self.composite, args, move |t| run_loss(&c, &t[0], &t[1]));
        verify(self.loss.name(), &got, &self.want)
    }
}

fn run(loss: Det) {
    let strategy = prop_oneof![4 => valid(loss), 2 => nan(loss), 4 => wild(loss)];
    run_property(loss.name(), file!(), strategy);
}

#[test]
fn alpha_iou_loss_is_robust() {
    run(Det::AlphaIou);
}

#[test]
fn mpdiou_loss_is_robust() {
    run(Det::Mpdiou);
}

#[test]
fn inner_iou_loss_is_robust() {
    run(Det::InnerIou);
}

#[test]
fn shape_iou_loss_is_robust() {
    run(Det::ShapeIou);
}

#[test]
fn wise_iou_loss_is_robust() {
    run(Det::WiseIou);
}

#[test]
fn focaler_iou_loss_is_robust() {
    run(Det::FocalerIou);
}

#[test]
fn nwd_loss_is_robust() {
    run(Det::Nwd);
}

#[test]
fn varifocal_loss_is_robust() {
    run(Det::Varifocal);
}

#[test]
fn quality_focal_loss_label_form_is_robust() {
    run(Det::QflLabel);
}

#[test]
fn quality_focal_loss_tensor_target_is_robust() {
    run(Det::QflDense);
}

#[test]
fn distribution_focal_loss_is_robust() {
    run(Det::Dfl);
}

#[test]
fn gaussian_focal_loss_is_robust() {
    run(Det::Gaussian);
}

#[test]
fn balanced_l1_loss_is_robust() {
    run(Det::BalancedL1);
}

#[test]
fn poly1_cross_entropy_is_robust() {
    run(Det::Poly1Ce);
}

#[test]
fn poly1_focal_loss_is_robust() {
    run(Det::Poly1Focal);
}
