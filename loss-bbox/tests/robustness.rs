//! Robustness of every loss and metric of loss-bbox under random input (see
//! `loss_core::testing` (`loss-core/src/testing.rs`) for the three modes and what each asserts): no panic, typed
//! errors, finite value and gradient inside the domain, NaN in → NaN out; on the fused CPU kernel
//! and on the composite path.
//!
//! Domain (Valid mode): `xyxy` boxes that are not inverted (`x2 >= x1`, `y2 >= y1`), coordinates
//! 0 or `1e-10 <= |v| <= 1e15`, extents 0 or in `[1e-10, 1e15]` (degenerate boxes included: zero
//! width or height, points, identical, touching, nested, disjoint, grids full of ties), `eps` in
//! `[1e-12, 1e3]`, `smooth_point` in `[1e-6, 1e6]`; any format for `box_convert` / `box_area`
//! (any finite values, `|v| <= 1e15`). No exception inside it: an empty input gives an empty
//! output, or 0 for `Mean` / `Sum`. Outside it the gradients of degenerate pairs grow like `1/eps`
//! and `1/area` (and CIoU's like `1/h` near a point box) and leave f32's range (see the crate docs).

use loss_core::testing as robust;

use candle_core::DType;
use loss_bbox::*;
use loss_core::kernel::{with_path, Path};
use loss_core::Reduction;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use robust::*;

const BOUND: f64 = 1e15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bx {
    Aligned(AlignedLoss),
    Extended,
    Siou,
    BoxIou,
    GeneralizedBoxIou,
    DistanceBoxIou,
    CompleteBoxIou,
    Convert,
    Area,
}

impl Bx {
    fn name(self) -> &'static str {
        match self {
            Bx::Aligned(k) => k.name(),
            Bx::Extended => "extended_iou_loss",
            Bx::Siou => "siou_loss",
            Bx::BoxIou => "box_iou",
            Bx::GeneralizedBoxIou => "generalized_box_iou",
            Bx::DistanceBoxIou => "distance_box_iou",
            Bx::CompleteBoxIou => "complete_box_iou",
            Bx::Convert => "box_convert",
            Bx::Area => "box_area",
        }
    }

    fn pairwise(self) -> bool {
        matches!(
            self,
            Bx::BoxIou | Bx::GeneralizedBoxIou | Bx::DistanceBoxIou | Bx::CompleteBoxIou
        )
    }

    fn single(self) -> bool {
        matches!(self, Bx::Convert | Bx::Area)
    }
}

#[derive(Debug, Clone)]
struct BxCase {
    loss: Bx,
    mode: Mode,
    composite: bool,
    /// pred / boxes1 / boxes.
    a: Spec,
    /// target / boxes2.
    b: Spec,
    eps: f64,
    /// smooth_point (extended_iou_loss).
    p: f64,
    /// neg_gamma (siou_loss).
    flag: bool,
    fmt_in: BoxFormat,
    fmt_out: BoxFormat,
    reduction: Reduction,
    grad_b: bool,
    want: Want,
}

fn format() -> BoxedStrategy<BoxFormat> {
    prop_oneof![Just(BoxFormat::Xyxy), Just(BoxFormat::Xywh), Just(BoxFormat::Cxcywh)].boxed()
}

/// A coordinate: a small integer grid (ties, shared edges), or 0 or `±[1e-10, bound]` (two
/// distinct coordinates then differ by at least ~1e-17 in f32, so no area of the pair falls out of
/// f32's normal range).
fn coordinate() -> BoxedStrategy<f64> {
    prop_oneof![
        2 => (0..4i32).prop_map(f64::from),
        1 => prop_oneof![Just(0.0), Just(BOUND), Just(-BOUND), Just(1e-10), Just(0.5)],
        2 => -10.0..10.0f64,
        2 => log_uniform(-10.0, BOUND.log10(), true),
    ]
    .boxed()
}

/// An extent: 0, a small integer, or anything in `[1e-10, bound]`. Smaller non-zero extents
/// leave the domain: an area below f32's normal range makes `d IoU / d I = 1/U` overflow, and
/// near a point box CIoU's aspect gradient `1/h` is unbounded as `h → 0` (extents of 1e-41
/// overflow f32 there).
fn extent() -> BoxedStrategy<f64> {
    prop_oneof![
        1 => Just(0.0),
        2 => (0..4i32).prop_map(f64::from),
        1 => prop_oneof![Just(1e-10), Just(1e-7), Just(0.5), Just(BOUND)],
        2 => log_uniform(-10.0, BOUND.log10(), false),
    ]
    .boxed()
}

/// `n` valid `xyxy` boxes (as flat values), in the dtype's arithmetic (`x2 = x1 + w` rounded).
fn valid_boxes(n: usize, dt: DType) -> BoxedStrategy<Vec<f64>> {
    proptest::collection::vec((coordinate(), coordinate(), extent(), extent()), n)
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

/// Valid params: `(eps, smooth_point)`.
fn params() -> BoxedStrategy<(f64, f64)> {
    (
        prop_oneof![Just(1e-7), Just(1e-6), Just(1e-12), log_uniform(-12.0, 3.0, false)],
        prop_oneof![Just(0.1), log_uniform(-6.0, 6.0, false)],
    )
        .boxed()
}

fn valid(loss: Bx) -> BoxedStrategy<BxCase> {
    let lead = if loss.pairwise() {
        (0..=4usize, 0..=4usize).prop_map(|(n, m)| (vec![n], vec![m])).boxed()
    } else {
        shape(0..=4, 8).prop_map(|s| (s.clone(), s)).boxed()
    };
    (float_dtype(), lead, any::<bool>(), any::<bool>(), any::<bool>())
        .prop_flat_map(move |(dt, (la, lb), composite, flag, grad_b)| {
            let (na, nb) = (numel(&la), numel(&lb));
            let mut sa = la.clone();
            sa.push(4);
            let mut sb = lb.clone();
            sb.push(4);
            let a = if loss.single() {
                values(finite(BOUND), 4 * na)
            } else {
                valid_boxes(na, dt)
            };
            (
                a,
                valid_boxes(nb, dt),
                any::<bool>(),
                params(),
                format(),
                format(),
                reduction(),
            )
                .prop_map(move |(a, b, same, (eps, p), fmt_in, fmt_out, reduction)| {
                    // Identical pairs now and then (aligned losses).
                    let b = if same && !loss.pairwise() && !loss.single() {
                        a.clone()
                    } else {
                        b
                    };
                    BxCase {
                        loss,
                        mode: Mode::Valid,
                        composite,
                        a: Spec::new(dt, sa.clone(), a),
                        b: Spec::new(dt, sb.clone(), b),
                        eps,
                        p,
                        flag,
                        fmt_in,
                        fmt_out,
                        reduction,
                        grad_b,
                        want: Want::Finite,
                    }
                })
        })
        .boxed()
}

fn rows(s: &Spec) -> usize {
    numel(&s.shape) / 4
}

/// Puts NaN into some coordinates that the output depends on, and says where NaN must come out.
fn nan(loss: Bx) -> BoxedStrategy<BxCase> {
    valid(loss)
        .prop_filter("a box", move |c| rows(&c.a) > 0 && (loss.single() || rows(&c.b) > 0))
        .prop_flat_map(|c| {
            let (na, nb) = (rows(&c.a), rows(&c.b));
            (Just(c), nan_rows(na), nan_rows(nb), 0..4usize, any::<bool>())
        })
        .prop_map(|(mut c, ra, rb, col, in_b)| {
            c.mode = Mode::Nan;
            let (na, nb) = (rows(&c.a), rows(&c.b));
            // box_area in xywh / cxcywh reads only w and h.
            let col = if c.loss == Bx::Area && c.fmt_in != BoxFormat::Xyxy {
                2 + col % 2
            } else {
                col
            };
            let in_b = in_b && !c.loss.single();
            let (ra, rb) = if in_b {
                (vec![false; na], rb)
            } else {
                (ra, vec![false; nb])
            };
            for (i, &r) in ra.iter().enumerate() {
                if r {
                    c.a.values[4 * i + col] = f64::NAN;
                }
            }
            for (j, &r) in rb.iter().enumerate() {
                if r {
                    c.b.values[4 * j + col] = f64::NAN;
                }
            }
            c.want = match c.loss {
                Bx::Convert => Want::NanInRows(ra, 4),
                Bx::Area => Want::NanAt(ra),
                l if l.pairwise() => {
                    let mut m = vec![false; na * nb];
                    for i in 0..na {
                        for j in 0..nb {
                            m[i * nb + j] = ra[i] || rb[j];
                        }
                    }
                    Want::NanAt(m)
                }
                _ if c.reduction == Reduction::None => Want::NanAt((0..na).map(|i| ra[i] || rb[i]).collect()),
                _ => Want::NanAt(vec![true]),
            };
            c
        })
        .boxed()
}

/// A row mask with at least one row set.
fn nan_rows(n: usize) -> BoxedStrategy<Vec<bool>> {
    if n == 0 {
        return Just(vec![]).boxed();
    }
    (proptest::collection::vec(proptest::bool::weighted(0.2), n), 0..n)
        .prop_map(|(mut m, i)| {
            m[i] = true;
            m
        })
        .boxed()
}

fn wild(loss: Bx) -> BoxedStrategy<BxCase> {
    let random = (
        wild_spec(24),
        prop_oneof![Just(None), wild_spec(24).prop_map(Some)],
        (any_param(), any_param(), any::<bool>()),
        (format(), format(), any_reduction(), any::<bool>(), any::<bool>()),
    )
        .prop_flat_map(|(a, b, params, rest)| {
            let same = values(any_value(), numel(&a.shape))
                .prop_map({
                    let a = a.clone();
                    move |v| Spec::new(a.dtype, a.shape.clone(), v)
                })
                .boxed();
            let b = match b {
                Some(b) => Just(b).boxed(),
                None => same,
            };
            (Just(a), b, Just(params), Just(rest))
        })
        .prop_map(
            move |(a, b, (eps, p, flag), (fmt_in, fmt_out, reduction, composite, grad_b))| BxCase {
                loss,
                mode: Mode::Wild,
                composite,
                a,
                b,
                eps,
                p,
                flag,
                fmt_in,
                fmt_out,
                reduction,
                grad_b,
                want: Want::Anything,
            },
        );
    // Valid boxes with wild values (inverted boxes, NaN, ±inf, f32::MAX) or parameters.
    let perturbed = (valid(loss), any_param(), any_param(), any_reduction(), 0..3u8)
        .prop_flat_map(|(c, eps, p, r, what)| {
            let (na, nb) = (c.a.values.len(), c.b.values.len());
            (
                Just((c, eps, p, r, what)),
                values(any_value(), na),
                values(any_value(), nb),
            )
        })
        .prop_map(|((mut c, eps, p, r, what), va, vb)| {
            c.mode = Mode::Wild;
            c.want = Want::Anything;
            match what {
                0 => (c.eps, c.p, c.reduction) = (eps, p, r),
                1 => c.a.values = va,
                _ => (c.a.values, c.b.values) = (va, vb),
            }
            c
        });
    prop_oneof![random, perturbed].boxed()
}

impl Case for BxCase {
    fn mode(&self) -> Mode {
        self.mode
    }
    fn composite(&self) -> bool {
        self.composite
    }
    fn check(&self) -> Result<bool, TestCaseError> {
        let args = vec![
            Arg::var(self.a.tensor()),
            Arg {
                tensor: self.b.tensor(),
                grad: self.grad_b,
            },
        ];
        let c = self.clone();
        let got = call(self.composite, args, move |t| {
            let (a, b, r, eps) = (&t[0], &t[1], c.reduction, c.eps);
            match c.loss {
                Bx::Aligned(kind) => with_path(Path::Auto, || aligned_loss(kind, a, b, eps, r)),
                Bx::Extended => extended_iou_loss(a, b, c.p, eps, r),
                Bx::Siou => siou_loss(a, b, c.flag, eps, r),
                Bx::BoxIou => box_iou(a, b),
                Bx::GeneralizedBoxIou => generalized_box_iou(a, b),
                Bx::DistanceBoxIou => distance_box_iou(a, b, eps),
                Bx::CompleteBoxIou => complete_box_iou(a, b, eps),
                Bx::Convert => box_convert(a, c.fmt_in, c.fmt_out),
                Bx::Area => box_area(a, c.fmt_in),
            }
        });
        verify(self.loss.name(), &got, &self.want)
    }
}

fn cases(loss: Bx) -> BoxedStrategy<BxCase> {
    prop_oneof![4 => valid(loss), 2 => nan(loss), 4 => wild(loss)].boxed()
}

fn run(loss: Bx, label: &str) {
    run_property(label, file!(), cases(loss));
}

#[test]
fn iou_loss_linear_is_robust() {
    run(Bx::Aligned(AlignedLoss::Iou(IouMode::Linear)), "iou_loss (linear)");
}

#[test]
fn iou_loss_square_is_robust() {
    run(Bx::Aligned(AlignedLoss::Iou(IouMode::Square)), "iou_loss (square)");
}

#[test]
fn iou_loss_log_is_robust() {
    run(Bx::Aligned(AlignedLoss::Iou(IouMode::Log)), "iou_loss (log)");
}

#[test]
fn giou_loss_is_robust() {
    run(Bx::Aligned(AlignedLoss::Giou), "giou_loss");
}

#[test]
fn diou_loss_is_robust() {
    run(Bx::Aligned(AlignedLoss::Diou), "diou_loss");
}

#[test]
fn ciou_loss_is_robust() {
    run(Bx::Aligned(AlignedLoss::Ciou), "ciou_loss");
}

#[test]
fn eiou_loss_is_robust() {
    run(Bx::Aligned(AlignedLoss::Eiou), "eiou_loss");
}

#[test]
fn extended_iou_loss_is_robust() {
    run(Bx::Extended, "extended_iou_loss");
}

#[test]
fn siou_loss_is_robust() {
    run(Bx::Siou, "siou_loss");
}

#[test]
fn box_iou_is_robust() {
    run(Bx::BoxIou, "box_iou");
}

#[test]
fn generalized_box_iou_is_robust() {
    run(Bx::GeneralizedBoxIou, "generalized_box_iou");
}

#[test]
fn distance_box_iou_is_robust() {
    run(Bx::DistanceBoxIou, "distance_box_iou");
}

#[test]
fn complete_box_iou_is_robust() {
    run(Bx::CompleteBoxIou, "complete_box_iou");
}

#[test]
fn box_convert_is_robust() {
    run(Bx::Convert, "box_convert");
}

#[test]
fn box_area_is_robust() {
    run(Bx::Area, "box_area");
}

// ---------------------------------------------------------------------------------------------
// Regression tests: each input below made a loss misbehave before its fix.

fn t32(v: &[[f32; 4]]) -> candle_core::Tensor {
    let flat: Vec<f32> = v.iter().flatten().copied().collect();
    candle_core::Tensor::from_vec(flat, (v.len(), 4), &candle_core::Device::Cpu).unwrap()
}

fn flat(t: &candle_core::Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// Value and the gradients w.r.t. both arguments of `sum(f(a, b))`.
fn value_grads(
    f: impl Fn(&candle_core::Tensor, &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor>,
    a: &candle_core::Tensor,
    b: &candle_core::Tensor,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (va, vb) = (
        candle_core::Var::from_tensor(a).unwrap(),
        candle_core::Var::from_tensor(b).unwrap(),
    );
    let out = f(va.as_tensor(), vb.as_tensor()).unwrap();
    let g = out.sum_all().unwrap().backward().unwrap();
    let grad = |v: &candle_core::Var| g.get(v.as_tensor()).map(flat).unwrap_or_else(|| vec![0.0; 4]);
    (flat(&out), grad(&va), grad(&vb))
}

fn all_finite(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

/// Found by proptest (boxes of area 5.7e-40 against a point): Candle's division gradient
/// `−a/b²` underflows to `0/0 = NaN` for a tiny union; the ratios now use `ops::div`
/// (`−(a/b)/b`, PyTorch's). Boxes of 1e-12 × 1e-12 in f32 have `U² = 1e-48 → 0`.
#[test]
fn regression_pairwise_metrics_gradient_for_tiny_boxes() {
    let a = t32(&[[0.0, 0.0, 1e-12, 1e-12], [0.0, 0.0, 1.0, 1.0]]);
    let b = t32(&[[0.0, 0.0, 1e-12, 1e-12], [5e-13, 0.0, 1.5e-12, 1e-12]]);
    type Metric = Box<dyn Fn(&candle_core::Tensor, &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor>>;
    let metrics: [(&str, Metric); 4] = [
        ("box_iou", Box::new(box_iou)),
        ("generalized_box_iou", Box::new(generalized_box_iou)),
        ("distance_box_iou", Box::new(|x, y| distance_box_iou(x, y, 1e-7))),
        ("complete_box_iou", Box::new(|x, y| complete_box_iou(x, y, 1e-7))),
    ];
    for (name, f) in metrics {
        let (v, ga, gb) = value_grads(|x, y| f(x, y), &a, &b);
        assert!(
            all_finite(&v) && all_finite(&ga) && all_finite(&gb),
            "{name}: {v:?} {ga:?} {gb:?}"
        );
        assert!((v[0] - 1.0).abs() < 1e-6, "{name}: identical tiny boxes: {v:?}");
    }
    for kind in [AlignedLoss::Iou(IouMode::Linear), AlignedLoss::Giou, AlignedLoss::Eiou] {
        let (v, ga, gb) = loss_core::kernel::with_path(loss_core::kernel::Path::Composite, || {
            value_grads(
                |x, y| with_path(Path::Composite, || aligned_loss(kind, x, y, 1e-30, Reduction::Sum)),
                &a,
                &b,
            )
        });
        assert!(
            all_finite(&v) && all_finite(&ga) && all_finite(&gb),
            "{kind:?}: {v:?} {ga:?} {gb:?}"
        );
    }
}

/// Found by proptest: CIoU's `α = v / ((v − IoU) + (1 + eps))` rounded `1 + eps` to 1 in f32 for
/// `eps < 1.2e-7`, giving `0/0 = NaN` for identical boxes; now `((1 − IoU) + v) + eps`.
#[test]
fn regression_ciou_alpha_of_identical_boxes_with_a_tiny_eps() {
    let b = t32(&[[6.764_334_4e-9, 0.0, 1.067_643_3e-7, 1e-7]]);
    for kernel in [Path::Fused, Path::Composite] {
        let (v, ga, gb) = value_grads(
            |x, y| with_path(kernel, || aligned_loss(AlignedLoss::Ciou, x, y, 1e-30, Reduction::None)),
            &b,
            &b,
        );
        assert!(
            all_finite(&v) && all_finite(&ga) && all_finite(&gb),
            "{kernel:?}: {v:?}"
        );
        assert!(v[0].abs() < 1e-6, "{kernel:?}: {v:?}");
    }
    let v = flat(&complete_box_iou(&b, &b, 1e-30).unwrap());
    assert!((v[0] - 1.0).abs() < 1e-6, "{v:?}");
}

/// Found while holding the two paths equal after `ops::div`: the fused GIoU derivative of the
/// enclosing term is now `(1 − q)/(A_c + eps)` as the composite division computes it, so a point
/// box against a zero-height box gets exactly 0 on both (the fused kernel had −1.9e-9 from
/// `ue/(A_c + eps)²`).
#[test]
fn regression_giou_fused_and_composite_agree_at_degenerate_boxes() {
    let p = candle_core::Tensor::new(&[[2f64, 4., 3., 4.]], &candle_core::Device::Cpu).unwrap();
    let t = candle_core::Tensor::new(&[[1f64, 4., 1., 4.]], &candle_core::Device::Cpu).unwrap();
    let run = |k| {
        value_grads(
            |x, y| with_path(k, || aligned_loss(AlignedLoss::Giou, x, y, 1e-7, Reduction::Sum)),
            &p,
            &t,
        )
    };
    let (fused, composite) = (run(Path::Fused), run(Path::Composite));
    assert_eq!(fused, composite);
    assert_eq!(fused.1, [0.0; 4]);
}

/// Every kind of `LossError` that loss-bbox returns, with its whole message (loss, argument,
/// shapes or value), as the typed error wrapped into `candle_core::Error::Wrapped`.
#[test]
fn every_error_kind_has_its_full_message() {
    let d = candle_core::Device::Cpu;
    let z = |s: &[usize], dt: DType| candle_core::Tensor::zeros(s, dt, &d).unwrap();
    let (bx, bx3, bxd, bxi, b5) = (
        z(&[2, 4], DType::F32),
        z(&[3, 4], DType::F32),
        z(&[2, 4], DType::F64),
        z(&[2, 4], DType::U32),
        z(&[2, 5], DType::F32),
    );
    let h = z(&[2, 4], DType::F16);
    let cases: Vec<(&str, candle_core::Result<candle_core::Tensor>, &str)> = vec![
        (
            "ShapeMismatch",
            giou_loss(&bx, &bx3, 1e-7, Reduction::None),
            "giou_loss: `target` has shape [3, 4] but must match `pred` of shape [2, 4]",
        ),
        (
            "BadShape",
            giou_loss(&b5, &b5, 1e-7, Reduction::None),
            "giou_loss: `pred` has shape [2, 5], expected [..., 4] boxes",
        ),
        (
            "BadShape",
            box_iou(&bx.unsqueeze(0).unwrap(), &bx),
            "box_iou: `boxes1` has shape [1, 2, 4], expected [N, 4] boxes",
        ),
        (
            "BadDType",
            box_iou(&bxi, &bxi),
            "box_iou: `boxes1` has dtype U32, expected a float dtype (f32 or f64)",
        ),
        (
            "DTypeMismatch",
            diou_loss(&bx, &bxd, 1e-7, Reduction::None),
            "diou_loss: `target` has dtype F64 but `pred` has dtype F32",
        ),
        (
            "BadParam",
            ciou_loss(&bx, &bx, 0.0, Reduction::None),
            "ciou_loss: `eps` = 0 is invalid, expected a finite value > 0",
        ),
        (
            "BadReduction",
            eiou_loss(&bx, &bx, 1e-7, Reduction::BatchMean),
            "eiou_loss: reduction `batchmean` is not supported, expected one of \"none\", \"mean\" or \"sum\" \
             (\"batchmean\" is for kl_div alone)",
        ),
        (
            "BadOptions",
            IouMode::parse("cubic").map(|_| bx.clone()),
            "iou_loss: `mode` = \"cubic\" is unknown, expected \"linear\", \"square\" or \"log\"",
        ),
        (
            "BadOptions",
            with_path(Path::Fused, || {
                aligned_loss(AlignedLoss::Giou, &h, &h, 1e-7, Reduction::None)
            }),
            "giou_loss: the fused kernel runs on the CPU for f32/f64, got F16 on Cpu",
        ),
    ];
    for (kind, r, want) in cases {
        let e = r.expect_err(kind);
        assert!(
            matches!(e, candle_core::Error::Wrapped(_)),
            "{kind}: not a LossError: {e:?}"
        );
        assert_eq!(e.to_string(), want, "{kind}");
    }
}
