//! Robustness of every loss of loss-core under random input (see `loss_core::testing` for the three
//! modes and what each asserts): no panic, typed errors, finite value and gradient inside the
//! domain, NaN in → NaN out; on the fused CPU path and on the composite path.
//!
//! Domains (Valid mode) and the documented exceptions, per loss:
//!
//! | loss | input | target | exceptions (NaN by definition) |
//! |---|---|---|---|
//! | l1, smooth_l1, huber | finite, \|v\| ≤ 1e15 | same | `Mean` of an empty tensor |
//! | mse | \|v\| ≤ 1e15 | same | as l1 |
//! | binary_cross_entropy | [0, 1] | [0, 1] | as l1 (p = 0 with t = 1 is clamped to 100) |
//! | bce_with_logits | \|x\| ≤ 1e15 | \|t\| ≤ 1e6 | as l1 |
//! | kl_div | \|x\| ≤ 1e12 | [0, 1e6] (log_target: [−1e6, 50]) | as l1; `batchmean` with `dim(0) = 0` |
//! | sigmoid_focal | \|x\| ≤ 1e15 | [0, 1] | as l1 |
//! | cross_entropy, nll, softmax_focal | \|x\| ≤ 1e15 | indices in [0, C) or ignore_index | `Mean` with a zero denominator (every target ignored, zero weights, empty batch) |
//! | cross_entropy (probabilities) | \|x\| ≤ 1e15 | [0, 1] | `Mean` over zero rows |
//! | entropy | [0, 1e15] | — | `Mean` over zero rows |

use loss_core::testing as robust;

use candle_core::{DType, Tensor};
use loss_core::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use robust::*;

// ---------------------------------------------------------------------------------------------
// Pointwise losses: input and target of one shape.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pw {
    L1,
    Mse,
    SmoothL1,
    Huber,
    Bce,
    BceLogits,
    KlDiv,
    SigmoidFocal,
}

impl Pw {
    fn name(self) -> &'static str {
        match self {
            Pw::L1 => "l1_loss",
            Pw::Mse => "mse_loss",
            Pw::SmoothL1 => "smooth_l1_loss",
            Pw::Huber => "huber_loss",
            Pw::Bce => "binary_cross_entropy",
            Pw::BceLogits => "binary_cross_entropy_with_logits",
            Pw::KlDiv => "kl_div",
            Pw::SigmoidFocal => "sigmoid_focal_loss",
        }
    }

    /// The input's domain.
    fn x_dom(self) -> BoxedStrategy<f64> {
        match self {
            Pw::Bce => in_range(0.0, 1.0),
            Pw::KlDiv => finite(1e12),
            _ => finite(1e15),
        }
    }

    /// The target's domain (`flag` is kl_div's `log_target`).
    fn t_dom(self, flag: bool) -> BoxedStrategy<f64> {
        match self {
            Pw::Bce | Pw::SigmoidFocal => in_range(0.0, 1.0),
            Pw::BceLogits => finite(1e6),
            Pw::KlDiv if flag => prop_oneof![finite(50.0), in_range(-1e6, 50.0)].boxed(),
            Pw::KlDiv => prop_oneof![in_range(0.0, 1.0), finite(1e6).prop_map(f64::abs)].boxed(),
            _ => finite(1e15),
        }
    }

    /// Valid `(p, q)`: beta, delta, or focal's (alpha, gamma).
    fn params(self) -> BoxedStrategy<(f64, f64)> {
        match self {
            Pw::SmoothL1 => prop_oneof![Just(0.0), log_uniform(-30.0, 15.0, false)]
                .prop_map(|b| (b, 0.0))
                .boxed(),
            Pw::Huber => log_uniform(-30.0, 15.0, false).prop_map(|d| (d, 0.0)).boxed(),
            Pw::SigmoidFocal => (
                prop_oneof![Just(-1.0), in_range(0.0, 1.0)],
                prop_oneof![Just(0.0), Just(2.0), in_range(0.0, 1.0), 0.0..10.0f64],
            )
                .boxed(),
            _ => Just((0.0, 0.0)).boxed(),
        }
    }

    fn reductions(self) -> BoxedStrategy<Reduction> {
        if self == Pw::KlDiv {
            any_reduction()
        } else {
            reduction()
        }
    }
}

#[derive(Debug, Clone)]
struct PwCase {
    loss: Pw,
    mode: Mode,
    composite: bool,
    input: Spec,
    target: Spec,
    weight: Option<Spec>,
    pos_weight: Option<Spec>,
    p: f64,
    q: f64,
    flag: bool,
    reduction: Reduction,
    grad_target: bool,
    /// Flat positions (of the input's shape) holding NaN in input or target (Nan mode).
    nan: Vec<bool>,
}

/// A weight-like optional tensor for the binary losses: the input's shape, `[last]`, or `[1]`,
/// values in `[0, hi]`.
fn broadcast_weight(dt: DType, shape: &[usize], hi: f64) -> BoxedStrategy<Option<Spec>> {
    let mut shapes = vec![shape.to_vec(), vec![1]];
    if let Some(&last) = shape.last() {
        shapes.push(vec![last]);
    }
    let s = proptest::sample::select(shapes).prop_flat_map(move |s| {
        let n = numel(&s);
        values(in_range(0.0, hi), n).prop_map(move |v| Spec::new(dt, s.clone(), v))
    });
    prop_oneof![Just(None), s.prop_map(Some)].boxed()
}

fn pw_valid(loss: Pw) -> BoxedStrategy<PwCase> {
    (float_dtype(), shape(0..=5, 32), any::<bool>(), any::<bool>())
        .prop_flat_map(move |(dt, s, flag, grad_target)| {
            let n = numel(&s);
            let weights = match loss {
                Pw::Bce => (broadcast_weight(dt, &s, 1e3), Just(None).boxed()).boxed(),
                Pw::BceLogits => (broadcast_weight(dt, &s, 1e3), broadcast_weight(dt, &s, 1e3)).boxed(),
                _ => (Just(None), Just(None)).boxed(),
            };
            (
                values(loss.x_dom(), n),
                values(loss.t_dom(flag), n),
                weights,
                loss.params(),
                loss.reductions(),
                any::<bool>(),
            )
                .prop_map(move |(x, t, (w, pw), (p, q), reduction, composite)| PwCase {
                    loss,
                    mode: Mode::Valid,
                    composite,
                    input: Spec::new(dt, s.clone(), x),
                    target: Spec::new(dt, s.clone(), t),
                    weight: w,
                    pos_weight: pw,
                    p,
                    q,
                    flag,
                    reduction,
                    grad_target,
                    nan: vec![false; n],
                })
        })
        .boxed()
}

/// A NaN mask over `n` positions with at least one NaN when `n > 0`.
fn nan_mask(n: usize) -> BoxedStrategy<Vec<bool>> {
    if n == 0 {
        return Just(vec![]).boxed();
    }
    (proptest::collection::vec(proptest::bool::weighted(0.15), n), 0..n)
        .prop_map(|(mut m, i)| {
            m[i] = true;
            m
        })
        .boxed()
}

fn pw_nan(loss: Pw) -> BoxedStrategy<PwCase> {
    pw_valid(loss)
        .prop_filter("non-empty", |c| !c.nan.is_empty())
        .prop_flat_map(|c| {
            let n = c.nan.len();
            (Just(c), nan_mask(n), nan_mask(n), 0..3u8)
        })
        .prop_map(|(mut c, mx, mt, which)| {
            c.mode = Mode::Nan;
            // NaN in the input (0), the target (1) or both (2).
            let (mx, mt) = match which {
                0 => (mx, vec![false; mt.len()]),
                1 => (vec![false; mx.len()], mt),
                _ => (mx, mt),
            };
            for i in 0..mx.len() {
                if mx[i] {
                    c.input.values[i] = f64::NAN;
                }
                if mt[i] {
                    c.target.values[i] = f64::NAN;
                }
                c.nan[i] = mx[i] || mt[i];
            }
            c
        })
        .boxed()
}

fn pw_wild(loss: Pw) -> BoxedStrategy<PwCase> {
    let random = (
        wild_spec(32),
        prop_oneof![Just(None), wild_spec(32).prop_map(Some)],
        prop_oneof![3 => Just(None), 1 => wild_spec(8).prop_map(Some)],
        prop_oneof![3 => Just(None), 1 => wild_spec(8).prop_map(Some)],
        (
            any_param(),
            any_param(),
            any::<bool>(),
            any_reduction(),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_flat_map(move |(input, target, weight, pos_weight, rest)| {
            // The target: independent, or the input's shape and dtype with any values.
            let same = values(any_value(), numel(&input.shape))
                .prop_map({
                    let input = input.clone();
                    move |v| Spec::new(input.dtype, input.shape.clone(), v)
                })
                .boxed();
            let target = match target {
                Some(t) => Just(t).boxed(),
                None => same,
            };
            (Just(input), target, Just(weight), Just(pos_weight), Just(rest))
        })
        .prop_map(
            move |(input, target, weight, pos_weight, (p, q, flag, reduction, composite, gt))| {
                let n = numel(&input.shape);
                PwCase {
                    loss,
                    mode: Mode::Wild,
                    composite,
                    input,
                    target,
                    weight,
                    pos_weight,
                    p,
                    q,
                    flag,
                    reduction,
                    grad_target: gt,
                    nan: vec![false; n],
                }
            },
        );
    // A valid case with wild values or parameters: reaches the checks past the shapes.
    let perturbed = (pw_valid(loss), any_param(), any_param(), any_reduction(), 0..4u8)
        .prop_flat_map(|(c, p, q, r, what)| {
            let n = c.nan.len();
            (Just((c, p, q, r, what)), values(any_value(), n), values(any_value(), n))
        })
        .prop_map(|((mut c, p, q, r, what), x, t)| {
            c.mode = Mode::Wild;
            match what {
                0 => (c.p, c.q) = (p, q),
                1 => c.input.values = x,
                2 => c.target.values = t,
                _ => {
                    c.reduction = r;
                    c.input.values = x;
                    c.target.values = t;
                }
            }
            c
        });
    prop_oneof![random, perturbed].boxed()
}

fn pw_cases(loss: Pw) -> BoxedStrategy<PwCase> {
    prop_oneof![4 => pw_valid(loss), 2 => pw_nan(loss), 4 => pw_wild(loss)].boxed()
}

impl PwCase {
    fn want(&self) -> Want {
        let n = self.nan.len();
        match self.mode {
            Mode::Wild => Want::Anything,
            Mode::Valid => {
                let empty_mean = self.reduction == Reduction::Mean && n == 0;
                let empty_batch = self.reduction == Reduction::BatchMean && self.input.shape.first() == Some(&0);
                if empty_mean || empty_batch {
                    Want::AllNan
                } else {
                    Want::Finite
                }
            }
            Mode::Nan => match self.reduction {
                Reduction::None => Want::NanAt(self.nan.clone()),
                _ => Want::NanAt(vec![true]),
            },
        }
    }
}

impl Case for PwCase {
    fn mode(&self) -> Mode {
        self.mode
    }
    fn composite(&self) -> bool {
        self.composite
    }
    fn check(&self) -> Result<bool, TestCaseError> {
        let mut args = vec![
            Arg::var(self.input.tensor()),
            Arg {
                tensor: self.target.tensor(),
                grad: self.grad_target,
            },
        ];
        let has_w = self.weight.is_some();
        if let Some(w) = &self.weight {
            args.push(Arg::constant(w.tensor()));
        }
        if let Some(w) = &self.pos_weight {
            args.push(Arg::constant(w.tensor()));
        }
        let c = self.clone();
        let got = call(self.composite, args, move |a| {
            let (x, t, r) = (&a[0], &a[1], c.reduction);
            let w = if has_w { a.get(2) } else { None };
            let pw = a.get(if has_w { 3 } else { 2 });
            match c.loss {
                Pw::L1 => l1_loss(x, t, r),
                Pw::Mse => mse_loss(x, t, r),
                Pw::SmoothL1 => smooth_l1_loss(x, t, c.p, r),
                Pw::Huber => huber_loss(x, t, c.p, r),
                Pw::Bce => binary_cross_entropy(x, t, w, r),
                Pw::BceLogits => binary_cross_entropy_with_logits(x, t, w, pw, r),
                Pw::KlDiv => kl_div(x, t, c.flag, r),
                Pw::SigmoidFocal => sigmoid_focal_loss(x, t, c.p, c.q, r),
            }
        });
        verify(self.loss.name(), &got, &self.want())
    }
}

#[test]
fn l1_loss_is_robust() {
    run_property("l1_loss", file!(), pw_cases(Pw::L1));
}

#[test]
fn mse_loss_is_robust() {
    run_property("mse_loss", file!(), pw_cases(Pw::Mse));
}

#[test]
fn smooth_l1_loss_is_robust() {
    run_property("smooth_l1_loss", file!(), pw_cases(Pw::SmoothL1));
}

#[test]
fn huber_loss_is_robust() {
    run_property("huber_loss", file!(), pw_cases(Pw::Huber));
}

#[test]
fn binary_cross_entropy_is_robust() {
    run_property("binary_cross_entropy", file!(), pw_cases(Pw::Bce));
}

#[test]
fn binary_cross_entropy_with_logits_is_robust() {
    run_property("binary_cross_entropy_with_logits", file!(), pw_cases(Pw::BceLogits));
}

#[test]
fn kl_div_is_robust() {
    run_property("kl_div", file!(), pw_cases(Pw::KlDiv));
}

#[test]
fn sigmoid_focal_loss_is_robust() {
    run_property("sigmoid_focal_loss", file!(), pw_cases(Pw::SigmoidFocal));
}

// ---------------------------------------------------------------------------------------------
// Class-index losses: logits [C] or [N, C, d...], targets [N, d...].

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cls {
    CrossEntropy,
    Nll,
    SoftmaxFocal,
}

impl Cls {
    fn name(self) -> &'static str {
        match self {
            Cls::CrossEntropy => "cross_entropy",
            Cls::Nll => "nll_loss",
            Cls::SoftmaxFocal => "softmax_focal_loss",
        }
    }
}

#[derive(Debug, Clone)]
struct ClsCase {
    loss: Cls,
    mode: Mode,
    composite: bool,
    input: Spec,
    target: Spec,
    /// `weight` (cross_entropy, nll) or `alpha` (softmax_focal).
    weight: Option<Spec>,
    ignore_index: i64,
    /// label_smoothing (cross_entropy) or gamma (softmax_focal).
    p: f64,
    reduction: Reduction,
    /// Output positions that must be NaN (Nan mode).
    nan_rows: Vec<bool>,
}

/// The value an index tensor of `dt` holds for `v` (the casts of [`Spec::tensor`]).
fn as_index(v: f64, dt: DType) -> i64 {
    match dt {
        DType::U8 => v as u8 as i64,
        DType::U32 => v as u32 as i64,
        _ => v as i64,
    }
}

/// `[N, C, d...]` → `(N·d..., C, D)`: rows, classes, and the size of the trailing dims.
fn rows_of(shape: &[usize]) -> (usize, usize, usize) {
    if shape.len() == 1 {
        return (1, shape[0], 1);
    }
    let d: usize = shape[2..].iter().product();
    (shape[0] * d, shape[1], d)
}

/// Flat index of logit `(row, class)` in `[N, C, d...]` (`row = n·D + k`).
fn logit_at(row: usize, class: usize, c: usize, d: usize) -> usize {
    let (n, k) = (row / d.max(1), row % d.max(1));
    (n * c + class) * d + k
}

/// A class weight: 0, or in `[1e-6, 1e6]` (a ratio of 1e12 at most between two classes, so that
/// label smoothing's `Σ_c w_c·ln p_c / Σ w_y` stays within f32).
fn class_weight() -> BoxedStrategy<f64> {
    prop_oneof![1 => Just(0.0), 1 => Just(1.0), 4 => in_range(1e-6, 1e6)].boxed()
}

fn cls_valid(loss: Cls) -> BoxedStrategy<ClsCase> {
    let min_rank = if loss == Cls::SoftmaxFocal { 2 } else { 1 };
    (float_dtype(), index_dtype(), shape(min_rank..=5, 32), any::<bool>())
        .prop_flat_map(move |(dt, it, mut s, composite)| {
            // At least one class.
            let ci = if s.len() == 1 { 0 } else { 1 };
            s[ci] = s[ci].max(1);
            cap(&mut s, 32);
            let (rows, c, _) = rows_of(&s);
            let tshape: Vec<usize> = if s.len() == 1 {
                vec![]
            } else {
                let mut t = s.clone();
                t.remove(1);
                t
            };
            let ignore = prop_oneof![Just(-100i64), Just(-1), Just(c as i64), 0..c as i64];
            let n = numel(&s);
            (
                Just((dt, it, s.clone(), tshape, composite, c)),
                ignore,
                values(finite(1e15), n),
            )
                .prop_flat_map(move |((dt, it, s, tshape, composite, c), ii, x)| {
                    let target = prop_oneof![
                        4 => (0..c).prop_map(|v| v as f64),
                        1 => Just(ii as f64),
                    ];
                    let weight = prop_oneof![
                        Just(None),
                        values(class_weight(), c).prop_map(move |w| Some(Spec::new(dt, vec![c], w))),
                    ];
                    let p = match loss {
                        Cls::CrossEntropy => in_range(0.0, 1.0),
                        Cls::SoftmaxFocal => prop_oneof![Just(0.0), Just(2.0), 0.0..10.0f64].boxed(),
                        Cls::Nll => Just(0.0).boxed(),
                    };
                    let (s, tshape) = (s.clone(), tshape.clone());
                    let x = x.clone();
                    (values(target.boxed(), rows), weight, p, reduction()).prop_map(move |(t, w, p, r)| ClsCase {
                        loss,
                        mode: Mode::Valid,
                        composite,
                        input: Spec::new(dt, s.clone(), x.clone()),
                        target: Spec::new(it, tshape.clone(), t),
                        weight: w,
                        ignore_index: ii,
                        p,
                        reduction: r,
                        nan_rows: vec![],
                    })
                })
        })
        .boxed()
}

impl ClsCase {
    /// Whether each row is kept (its target is not `ignore_index`).
    fn kept(&self) -> Vec<bool> {
        self.target
            .values
            .iter()
            .map(|&v| as_index(v, self.target.dtype) != self.ignore_index)
            .collect()
    }

    /// The mean's denominator: Σ over kept rows of w_y (softmax_focal: the count of kept rows).
    fn denominator(&self) -> f64 {
        let kept = self.kept();
        let w = |y: i64| match (&self.weight, self.loss) {
            (Some(w), Cls::CrossEntropy | Cls::Nll) => {
                let v = w.values[y as usize];
                if w.dtype == DType::F32 {
                    v as f32 as f64
                } else {
                    v
                }
            }
            _ => 1.0,
        };
        (0..kept.len())
            .filter(|&i| kept[i])
            .map(|i| w(as_index(self.target.values[i], self.target.dtype)))
            .sum()
    }

    fn want(&self) -> Want {
        match self.mode {
            Mode::Wild => Want::Anything,
            Mode::Valid => {
                if self.reduction == Reduction::Mean && self.denominator() == 0.0 {
                    Want::AllNan
                } else {
                    Want::Finite
                }
            }
            Mode::Nan => match self.reduction {
                Reduction::None => Want::NanAt(self.nan_rows.clone()),
                _ => Want::NanAt(vec![true]),
            },
        }
    }
}

fn cls_nan(loss: Cls) -> BoxedStrategy<ClsCase> {
    cls_valid(loss)
        .prop_filter("a kept row", |c| c.kept().iter().any(|&k| k))
        .prop_flat_map(|c| {
            let rows = c.kept().len();
            (Just(c), nan_mask(rows), any::<u64>())
        })
        .prop_map(|(mut c, rows_mask, pick)| {
            c.mode = Mode::Nan;
            let kept = c.kept();
            let (_, classes, d) = rows_of(&c.input.shape);
            let mut nan_rows = vec![false; kept.len()];
            for row in 0..kept.len() {
                if !(rows_mask[row] && kept[row]) {
                    continue;
                }
                // nll_loss reads only the target's logit; the softmax losses every logit of the row.
                let class = if c.loss == Cls::Nll {
                    as_index(c.target.values[row], c.target.dtype) as usize
                } else {
                    (pick as usize + row) % classes
                };
                c.input.values[logit_at(row, class, classes, d)] = f64::NAN;
                nan_rows[row] = true;
            }
            if !nan_rows.iter().any(|&b| b) {
                // The mask hit only ignored rows: poison the first kept one.
                let row = kept.iter().position(|&k| k).unwrap();
                let class = as_index(c.target.values[row], c.target.dtype) as usize;
                c.input.values[logit_at(row, class, classes, d)] = f64::NAN;
                nan_rows[row] = true;
            }
            c.nan_rows = nan_rows;
            c
        })
        .boxed()
}

fn cls_wild(loss: Cls) -> BoxedStrategy<ClsCase> {
    let ignore = prop_oneof![
        Just(-100i64),
        Just(-1),
        0..5i64,
        Just(255),
        Just(i64::MIN),
        Just(i64::MAX)
    ];
    let random = (
        wild_spec(32),
        wild_spec(16),
        prop_oneof![Just(None), wild_spec(6).prop_map(Some)],
        ignore.clone(),
        any_param(),
        any_reduction(),
        any::<bool>(),
    )
        .prop_map(
            move |(input, target, weight, ignore_index, p, reduction, composite)| ClsCase {
                loss,
                mode: Mode::Wild,
                composite,
                input,
                target,
                weight,
                ignore_index,
                p,
                reduction,
                nan_rows: vec![],
            },
        );
    let perturbed = (cls_valid(loss), any_param(), any_reduction(), ignore, 0..4u8)
        .prop_flat_map(|(c, p, r, ii, what)| {
            let (nx, nt) = (c.input.values.len(), c.target.values.len());
            (
                Just((c, p, r, ii, what)),
                values(any_value(), nx),
                values(prop_oneof![-300.0..300.0f64, any_value()].boxed(), nt),
            )
        })
        .prop_map(|((mut c, p, r, ii, what), x, t)| {
            c.mode = Mode::Wild;
            match what {
                0 => c.p = p,
                1 => c.input.values = x,
                2 => c.target.values = t.into_iter().map(f64::round).collect(),
                _ => {
                    c.reduction = r;
                    c.ignore_index = ii;
                }
            }
            c
        });
    prop_oneof![random, perturbed].boxed()
}

impl Case for ClsCase {
    fn mode(&self) -> Mode {
        self.mode
    }
    fn composite(&self) -> bool {
        self.composite
    }
    fn check(&self) -> Result<bool, TestCaseError> {
        let mut args = vec![Arg::var(self.input.tensor()), Arg::constant(self.target.tensor())];
        if let Some(w) = &self.weight {
            args.push(Arg::constant(w.tensor()));
        }
        let c = self.clone();
        let got = call(self.composite, args, move |a| {
            let (x, t, w, r) = (&a[0], &a[1], a.get(2), c.reduction);
            match c.loss {
                Cls::CrossEntropy => cross_entropy(x, t, w, c.ignore_index, c.p, r),
                Cls::Nll => nll_loss(x, t, w, c.ignore_index, r),
                Cls::SoftmaxFocal => softmax_focal_loss(x, t, w, c.p, c.ignore_index, r),
            }
        });
        verify(self.loss.name(), &got, &self.want())
    }
}

fn cls_cases(loss: Cls) -> BoxedStrategy<ClsCase> {
    prop_oneof![4 => cls_valid(loss), 2 => cls_nan(loss), 4 => cls_wild(loss)].boxed()
}

#[test]
fn cross_entropy_with_class_indices_is_robust() {
    run_property("cross_entropy", file!(), cls_cases(Cls::CrossEntropy));
}

#[test]
fn nll_loss_is_robust() {
    run_property("nll_loss", file!(), cls_cases(Cls::Nll));
}

#[test]
fn softmax_focal_loss_is_robust() {
    run_property("softmax_focal_loss", file!(), cls_cases(Cls::SoftmaxFocal));
}

// ---------------------------------------------------------------------------------------------
// Row losses over probabilities: cross_entropy with probability targets, entropy.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rows {
    CrossEntropyProbs,
    Entropy,
}

impl Rows {
    fn name(self) -> &'static str {
        match self {
            Rows::CrossEntropyProbs => "cross_entropy",
            Rows::Entropy => "entropy",
        }
    }
}

#[derive(Debug, Clone)]
struct RowsCase {
    loss: Rows,
    mode: Mode,
    composite: bool,
    /// Logits (cross_entropy) or probabilities (entropy).
    input: Spec,
    /// Probability targets (cross_entropy).
    target: Spec,
    weight: Option<Spec>,
    ignore_index: i64,
    /// label_smoothing (cross_entropy); bits if > 0.5 (entropy).
    p: f64,
    reduction: Reduction,
    nan_rows: Vec<bool>,
}

impl RowsCase {
    /// `(rows, classes, row of a flat input position)`.
    fn layout(&self) -> (usize, usize, Box<dyn Fn(usize) -> usize>) {
        let s = self.input.shape.clone();
        match self.loss {
            Rows::Entropy => {
                let c = *s.last().unwrap();
                (numel(&s[..s.len() - 1]), c, Box::new(move |i| i / c.max(1)))
            }
            Rows::CrossEntropyProbs => {
                let (rows, c, d) = rows_of(&s);
                let f = move |i: usize| {
                    if s.len() == 1 {
                        return 0;
                    }
                    let (n, k) = (i / (c * d), i % d.max(1));
                    n * d + k
                };
                (rows, c, Box::new(f))
            }
        }
    }

    fn want(&self) -> Want {
        if self.mode == Mode::Wild {
            return Want::Anything;
        }
        let (rows, _, _) = self.layout();
        match self.mode {
            Mode::Wild => Want::Anything,
            Mode::Valid if self.reduction == Reduction::Mean && rows == 0 => Want::AllNan,
            Mode::Valid => Want::Finite,
            Mode::Nan => match self.reduction {
                Reduction::None => Want::NanAt(self.nan_rows.clone()),
                _ => Want::NanAt(vec![true]),
            },
        }
    }
}

fn rows_valid(loss: Rows) -> BoxedStrategy<RowsCase> {
    (float_dtype(), shape(1..=5, 32), any::<bool>())
        .prop_flat_map(move |(dt, mut s, composite)| {
            if loss == Rows::CrossEntropyProbs {
                // At least one class.
                let ci = usize::from(s.len() > 1);
                s[ci] = s[ci].max(1);
                cap(&mut s, 32);
            }
            let n = numel(&s);
            let c = if loss == Rows::Entropy || s.len() == 1 {
                *s.last().unwrap()
            } else {
                s[1]
            };
            let x = match loss {
                Rows::Entropy => prop_oneof![in_range(0.0, 1.0), finite(1e15).prop_map(f64::abs)].boxed(),
                Rows::CrossEntropyProbs => finite(1e15),
            };
            let weight = match loss {
                Rows::CrossEntropyProbs => prop_oneof![
                    Just(None),
                    values(class_weight(), c).prop_map(move |w| Some(Spec::new(dt, vec![c], w))),
                ]
                .boxed(),
                Rows::Entropy => Just(None).boxed(),
            };
            let s2 = s.clone();
            (
                values(x, n),
                values(in_range(0.0, 1.0), n),
                weight,
                prop_oneof![Just(-100i64), Just(-1)],
                in_range(0.0, 1.0),
                reduction(),
            )
                .prop_map(move |(x, t, weight, ignore_index, p, reduction)| RowsCase {
                    loss,
                    mode: Mode::Valid,
                    composite,
                    input: Spec::new(dt, s2.clone(), x),
                    target: Spec::new(dt, s2.clone(), t),
                    weight,
                    ignore_index,
                    p,
                    reduction,
                    nan_rows: vec![],
                })
        })
        .boxed()
}

fn rows_nan(loss: Rows) -> BoxedStrategy<RowsCase> {
    rows_valid(loss)
        .prop_filter("non-empty", |c| numel(&c.input.shape) > 0)
        .prop_flat_map(|c| {
            let n = numel(&c.input.shape);
            (Just(c), nan_mask(n), any::<bool>())
        })
        .prop_map(|(mut c, mask, in_target)| {
            c.mode = Mode::Nan;
            let (rows, _, row_of) = c.layout();
            let mut nan_rows = vec![false; rows.max(1)];
            for (i, &m) in mask.iter().enumerate() {
                if m {
                    if in_target && c.loss == Rows::CrossEntropyProbs {
                        c.target.values[i] = f64::NAN;
                    } else {
                        c.input.values[i] = f64::NAN;
                    }
                    nan_rows[row_of(i)] = true;
                }
            }
            c.nan_rows = nan_rows;
            c
        })
        .boxed()
}

fn rows_wild(loss: Rows) -> BoxedStrategy<RowsCase> {
    let random = (
        wild_spec(32),
        wild_spec(32),
        prop_oneof![Just(None), wild_spec(6).prop_map(Some)],
        prop_oneof![Just(-100i64), Just(0), Just(3), any::<i64>()],
        any_param(),
        any_reduction(),
        any::<bool>(),
    )
        .prop_map(
            move |(input, target, weight, ignore_index, p, reduction, composite)| RowsCase {
                loss,
                mode: Mode::Wild,
                composite,
                input,
                target,
                weight,
                ignore_index,
                p,
                reduction,
                nan_rows: vec![],
            },
        );
    let perturbed = (rows_valid(loss), any_param(), any_reduction())
        .prop_flat_map(|(c, p, r)| {
            let n = c.input.values.len();
            (Just((c, p, r)), values(any_value(), n), values(any_value(), n))
        })
        .prop_map(|((mut c, p, r), x, t)| {
            c.mode = Mode::Wild;
            (c.p, c.reduction, c.input.values, c.target.values) = (p, r, x, t);
            c
        });
    prop_oneof![random, perturbed].boxed()
}

impl Case for RowsCase {
    fn mode(&self) -> Mode {
        self.mode
    }
    fn composite(&self) -> bool {
        self.composite
    }
    fn check(&self) -> Result<bool, TestCaseError> {
        let mut args = vec![Arg::var(self.input.tensor()), Arg::constant(self.target.tensor())];
        if let Some(w) = &self.weight {
            args.push(Arg::constant(w.tensor()));
        }
        let c = self.clone();
        let got = call(self.composite, args, move |a| {
            let (x, t, w, r) = (&a[0], &a[1], a.get(2), c.reduction);
            match c.loss {
                Rows::CrossEntropyProbs => cross_entropy(x, t, w, c.ignore_index, c.p, r),
                Rows::Entropy => {
                    let base = if c.p > 0.5 {
                        EntropyBase::Bits
                    } else {
                        EntropyBase::Nats
                    };
                    entropy(x, base, r)
                }
            }
        });
        verify(self.loss.name(), &got, &self.want())
    }
}

fn rows_cases(loss: Rows) -> BoxedStrategy<RowsCase> {
    prop_oneof![4 => rows_valid(loss), 2 => rows_nan(loss), 4 => rows_wild(loss)].boxed()
}

#[test]
fn cross_entropy_with_probabilities_is_robust() {
    run_property(
        "cross_entropy (probability targets)",
        file!(),
        rows_cases(Rows::CrossEntropyProbs),
    );
}

#[test]
fn entropy_is_robust() {
    run_property("entropy", file!(), rows_cases(Rows::Entropy));
}

/// The typed-error check itself: a raw Candle error is refused, a `LossError` accepted.
#[test]
fn typed_error_check_tells_loss_errors_from_candle_errors() {
    let a = Tensor::zeros(3, DType::F32, &candle_core::Device::Cpu).unwrap();
    let b = Tensor::zeros(4, DType::F32, &candle_core::Device::Cpu).unwrap();
    let raw = a.add(&b).unwrap_err();
    assert!(typed("l1_loss", &raw).is_err());
    let e = l1_loss(&a, &b, Reduction::Mean).unwrap_err();
    assert!(typed("l1_loss", &e).is_ok());
    assert!(typed("mse_loss", &e).is_err());
}

// ---------------------------------------------------------------------------------------------
// Regression tests: each input below (minimized by proptest where it found it) made a loss
// misbehave before its fix.

fn dev() -> candle_core::Device {
    candle_core::Device::Cpu
}

fn f32s(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &dev()).unwrap()
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// The value and the gradient w.r.t. `x` of `sum(f(x))`.
fn value_grad(f: impl Fn(&Tensor) -> candle_core::Result<Tensor>, x: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let v = candle_core::Var::from_tensor(x).unwrap();
    let out = f(v.as_tensor()).unwrap();
    let g = out.sum_all().unwrap().backward().unwrap();
    let grad = g
        .get(v.as_tensor())
        .map(flat)
        .unwrap_or_else(|| vec![0.0; x.elem_count()]);
    (flat(&out), grad)
}

/// Runs `f` on the fused path and on the composite path.
fn on_both_paths(f: impl Fn(&str)) {
    f("fused");
    loss_core::kernel::with_path(loss_core::kernel::Path::Composite, || f("composite"));
}

fn all_finite(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

/// Found by proptest: the fused kernel returned 0 for a zero target whatever the input, where the
/// composite path gave NaN for a NaN input. Since the zero-mass rule (PyTorch#89558, optax#896)
/// both paths give 0 for an infinite input at a zero target (PyTorch: 0·inf = NaN) and NaN for a
/// NaN one, with a zero input gradient at the infinite ones.
#[test]
fn regression_kl_div_nan_input_at_zero_target_is_nan_inf_is_zero_mass() {
    let x = f32s(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -1.0], &[4]);
    let t = f32s(&[0.0; 4], &[4]);
    on_both_paths(|path| {
        let v = flat(&kl_div(&x, &t, false, Reduction::None).unwrap());
        assert!(v[0].is_nan(), "{path}: {v:?}");
        assert_eq!(&v[1..], &[0.0, 0.0, 0.0], "{path}");
        assert!(
            flat(&kl_div(&x, &t, false, Reduction::Sum).unwrap())[0].is_nan(),
            "{path}"
        );
        let t3 = f32s(&[0.0; 3], &[3]);
        let (value, grad) = value_grad(|x| kl_div(x, &t3, false, Reduction::Sum), &x.narrow(0, 1, 3).unwrap());
        assert_eq!(value, [0.0], "{path}");
        assert_eq!(grad, [0.0, 0.0, 0.0], "{path}");
        // log_target: a log-target of -inf is zero mass too.
        let lt = f32s(&[f32::NEG_INFINITY; 3], &[3]);
        let (value, grad) = value_grad(|x| kl_div(x, &lt, true, Reduction::None), &x.narrow(0, 1, 3).unwrap());
        assert_eq!(value, [0.0, 0.0, 0.0], "{path}");
        assert_eq!(grad, [0.0, 0.0, 0.0], "{path}");
    });
}

/// Found by proptest: a `[1]` weight with a 0-d input was a raw Candle error ("cannot broadcast
/// [1] to []") instead of the one value it is.
#[test]
fn regression_binary_losses_take_a_weight_of_one_value_on_a_0d_input() {
    let x = Tensor::new(0.5f32, &dev()).unwrap();
    let t = Tensor::new(1f32, &dev()).unwrap();
    let w = f32s(&[2.0], &[1]);
    on_both_paths(|path| {
        let l = binary_cross_entropy_with_logits(&x, &t, Some(&w), Some(&w), Reduction::None).unwrap();
        assert_eq!(l.dims(), &[] as &[usize], "{path}");
        let want = 2.0 * 2.0 * (1.0 + (-0.5f64).exp()).ln();
        assert!((flat(&l)[0] - want).abs() < 1e-6, "{path}: {:?} vs {want}", flat(&l));
        let l = binary_cross_entropy(&x, &t, Some(&w), Reduction::Sum).unwrap();
        assert!((flat(&l)[0] - 2.0 * 2f64.ln()).abs() < 1e-6, "{path}");
    });
}

/// Found by proptest (`[0, 1, 0, 0]` logits): an empty batch was a raw Candle error ("empty tensor
/// for reduce" from the max of log_softmax). Now `None` is empty, `Sum` 0 and `Mean` NaN (0/0,
/// as PyTorch).
#[test]
fn regression_class_losses_on_an_empty_batch() {
    let x = Tensor::zeros((0, 1, 0, 0), DType::F32, &dev()).unwrap();
    let y = Tensor::zeros((0, 0, 0), DType::U8, &dev()).unwrap();
    let x2 = Tensor::zeros((0, 3), DType::F64, &dev()).unwrap();
    let y2 = Tensor::zeros(0, DType::I64, &dev()).unwrap();
    on_both_paths(|path| {
        for (x, y) in [(&x, &y), (&x2, &y2)] {
            let none = cross_entropy(x, y, None, -100, 0.1, Reduction::None).unwrap();
            assert_eq!(none.elem_count(), 0, "{path}");
            assert_eq!(
                flat(&cross_entropy(x, y, None, -100, 0.0, Reduction::Sum).unwrap()),
                [0.0],
                "{path}"
            );
            assert!(
                flat(&cross_entropy(x, y, None, -100, 0.0, Reduction::Mean).unwrap())[0].is_nan(),
                "{path}"
            );
            assert_eq!(
                flat(&softmax_focal_loss(x, y, None, 2.0, -100, Reduction::Sum).unwrap()),
                [0.0],
                "{path}"
            );
            assert_eq!(
                flat(&nll_loss(x, y, None, -100, Reduction::Sum).unwrap()),
                [0.0],
                "{path}"
            );
            // Probability targets of the logits' shape.
            let p = cross_entropy(x, &x.zeros_like().unwrap(), None, -100, 0.0, Reduction::Sum).unwrap();
            assert_eq!(flat(&p), [0.0], "{path}");
        }
    });
}

/// Found by proptest: logits with zero classes reached Candle's reshape and gather (raw errors);
/// now a typed error naming the loss, the argument and the shape.
#[test]
fn regression_zero_classes_is_a_typed_error() {
    let x = Tensor::zeros((2, 0), DType::F32, &dev()).unwrap();
    let y = Tensor::new(&[-100i64, -100], &dev()).unwrap();
    on_both_paths(|path| {
        for (loss, r) in [
            ("cross_entropy", cross_entropy(&x, &y, None, -100, 0.0, Reduction::Mean)),
            ("nll_loss", nll_loss(&x, &y, None, -100, Reduction::Mean)),
            (
                "softmax_focal_loss",
                softmax_focal_loss(&x, &y, None, 2.0, -100, Reduction::Mean),
            ),
            ("cross_entropy", cross_entropy(&x, &x, None, -100, 0.0, Reduction::Mean)),
        ] {
            let e = r.unwrap_err();
            assert!(matches!(e, candle_core::Error::Wrapped(_)), "{path}: {e:?}");
            assert_eq!(
                e.to_string(),
                format!("{loss}: `input` has shape [2, 0], expected [N, C, d1, ...] with at least one class (C >= 1)"),
                "{path}"
            );
        }
    });
}

/// Found by proptest: with class weights and `Mean`, the composite gradient went through
/// `1 / Σ w_y`, which overflows f32 for a weight of 1.4e-39: −inf instead of `−w_y / Σ w_y = −1`.
#[test]
fn regression_nll_gradient_with_a_tiny_weight_is_finite() {
    let x = f32s(&[-3.034_091e-5], &[1, 1]);
    let y = Tensor::new(&[0u8], &dev()).unwrap();
    let w = f32s(&[1.401_298e-39], &[1]);
    on_both_paths(|path| {
        let (v, g) = value_grad(|x| nll_loss(x, &y, Some(&w), -1, Reduction::Mean), &x);
        assert!((v[0] - 3.034_091e-5).abs() < 1e-9, "{path}: {v:?}");
        assert!((g[0] + 1.0).abs() < 1e-6, "{path}: {g:?}");
        let (_, g) = value_grad(|x| cross_entropy(x, &y, Some(&w), -1, 0.0, Reduction::Mean), &x);
        assert!(all_finite(&g), "{path}: {g:?}");
    });
}

/// Found by proptest: with every weight of the targets' classes 0 the fused kernel gave a NaN
/// gradient (`0 · inf`), and with label smoothing an infinite mean, where the composite path (and
/// PyTorch) give NaN with the gradient of the sum.
#[test]
fn regression_cross_entropy_zero_denominator() {
    let x = f32s(&[0.0], &[1]);
    let y = Tensor::new(0u8, &dev()).unwrap();
    let w = f32s(&[0.0], &[1]);
    let x4 = f32s(&[0.0, 0.0, 8.559_849, -6.191_918], &[4]);
    let y4 = Tensor::new(1u32, &dev()).unwrap();
    let w4 = f32s(&[0.0, 0.0, 1.0, 0.0], &[4]);
    on_both_paths(|path| {
        let (v, g) = value_grad(|x| cross_entropy(x, &y, Some(&w), -100, 0.0, Reduction::Mean), &x);
        assert!(v[0].is_nan(), "{path}: {v:?}");
        assert_eq!(g, [0.0], "{path}");
        let (v, g) = value_grad(|x| cross_entropy(x, &y4, Some(&w4), -100, 1.0, Reduction::Mean), &x4);
        assert!(v[0].is_nan(), "{path}: {v:?}");
        assert!(all_finite(&g), "{path}: {g:?}");
    });
}

/// Found by proptest: for saturated logits and `gamma < 1`, `γ·q^(γ−1)` overflowed while `dq/dx`
/// was 0: a NaN (fused) or infinite (composite) gradient, where the true one is tiny.
#[test]
fn regression_sigmoid_focal_gradient_for_saturated_logits() {
    let cases = [
        (vec![-1e15f32, 0.0], vec![3.5e-44_f32, 0.0], -1.0, 4.330_18e-13),
        (vec![-100.0, 100.0], vec![0.0, 1.0], 0.25, 0.1),
        (vec![-1e15, 1e15], vec![0.0, 1.0], -1.0, 0.5),
    ];
    on_both_paths(|path| {
        for (x, t, alpha, gamma) in &cases {
            let (x, t) = (f32s(x, &[1, 2]), f32s(t, &[1, 2]));
            let tv = candle_core::Var::from_tensor(&t).unwrap();
            let (v, g) = value_grad(
                |x| sigmoid_focal_loss(x, tv.as_tensor(), *alpha, *gamma, Reduction::None),
                &x,
            );
            assert!(all_finite(&v) && all_finite(&g), "{path}: value {v:?} grad {g:?}");
            assert!(g.iter().all(|g| g.abs() < 1.0), "{path}: {g:?}");
            let xv = candle_core::Var::from_tensor(&x).unwrap();
            let (_, gt) = value_grad(
                |t| sigmoid_focal_loss(xv.as_tensor(), t, *alpha, *gamma, Reduction::Sum),
                &t,
            );
            assert!(all_finite(&gt), "{path}: target grad {gt:?}");
        }
    });
}

/// Found by proptest (one class, logit 0): at `p_t = 1` the derivative of `(1 − p_t)^γ` is
/// infinite for `γ < 1` and autodiff gave `inf · 0 = NaN`; the loss's true derivative is 0.
#[test]
fn regression_softmax_focal_gradient_at_certainty() {
    on_both_paths(|path| {
        for (x, shape) in [
            (vec![0.0f32], [1usize, 1]),
            (vec![100.0, 0.0], [1, 2]),
            (vec![20.0, -5.0], [1, 2]),
        ] {
            let x = f32s(&x, &shape);
            let y = Tensor::new(&[0u8], &dev()).unwrap();
            for gamma in [0.0, 0.3, 0.5, 2.0] {
                let (v, g) = value_grad(|x| softmax_focal_loss(x, &y, None, gamma, -100, Reduction::Mean), &x);
                assert!(all_finite(&v) && all_finite(&g), "{path} gamma {gamma}: {v:?} {g:?}");
            }
        }
    });
    // Away from certainty it is still the focal loss's gradient (finite differences, f64).
    let x = Tensor::new(&[[0.3f64, -0.2, 1.1], [2.0, 0.1, -1.0]], &dev()).unwrap();
    let y = Tensor::new(&[2u32, 0], &dev()).unwrap();
    for gamma in [0.5, 2.0] {
        let r = gradcheck::check_gradient(
            |x| softmax_focal_loss(x, &y, None, gamma, -100, Reduction::Sum),
            &x,
            1e-6,
        )
        .unwrap();
        assert!(r.max_error < 1e-6, "gamma {gamma}: {r:?}");
    }
}

/// `ops::div` (added for the box ratios) has PyTorch's gradient: finite where Candle's `−a/b²`
/// underflows.
#[test]
fn regression_ops_div_gradient_for_a_tiny_denominator() {
    let a = candle_core::Var::new(&[1e-24f32, 3.0], &dev()).unwrap();
    let b = candle_core::Var::new(&[1e-24f32, 2.0], &dev()).unwrap();
    let q = loss_core::ops::div(a.as_tensor(), b.as_tensor()).unwrap();
    assert_eq!(flat(&q), [1.0, 1.5]);
    let g = q.sum_all().unwrap().backward().unwrap();
    let (ga, gb) = (flat(g.get(a.as_tensor()).unwrap()), flat(g.get(b.as_tensor()).unwrap()));
    assert!((ga[0] - 1e24).abs() < 1e18 && (ga[1] - 0.5).abs() < 1e-7, "{ga:?}");
    assert!((gb[0] + 1e24).abs() < 1e18 && (gb[1] + 0.75).abs() < 1e-7, "{gb:?}");
    // Candle's own division gradient is not finite here.
    let raw = a
        .as_tensor()
        .div(b.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(!all_finite(&flat(raw.get(b.as_tensor()).unwrap())));
}

// ---------------------------------------------------------------------------------------------
// The rest of torch.nn and log-cosh (likelihood.rs, margin.rs, embedding.rs, ctc.rs).
//
// Domains (Valid mode):
//
// | loss | inputs | labels / parameters | exceptions |
// |---|---|---|---|
// | poisson_nll (log_input) | \|x\| ≤ 80 | t in [0, 1e6] | `Mean` of an empty tensor |
// | poisson_nll (rate) | x in [0, 1e6] | t in [0, 1e6] | as above |
// | gaussian_nll | \|x\|, \|t\| ≤ 1e6 | var in [0, 1e6] (var's forms at random) | as above |
// | log_cosh, soft_margin, hinge_embedding, margin_ranking | \|x\| ≤ 1e15 | ±1 labels, \|margin\| ≤ 10 | as above |
// | multilabel_soft_margin, multilabel_margin, multi_margin | \|x\| ≤ 1e15, C ≥ 1 | labels in range, weight in [0, 10], p 1 or 2 | `Mean` over N = 0 |
// | cosine_embedding, triplet (p 1, 2, 3), triplet with distance | \|x\| ≤ 1e15 | ±1, margin in (0, 10] | `Mean` over N = 0 |
// | ctc | log_probs in [−1e4, 0] | feasible lengths, labels ≠ blank | — |

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nn {
    PoissonNll,
    GaussianNll,
    LogCosh,
    MarginRanking,
    HingeEmbedding,
    SoftMargin,
    MultilabelSoftMargin,
    MultilabelMargin,
    MultiMargin,
    CosineEmbedding,
    Triplet,
    TripletDistance,
    Ctc,
}

impl Nn {
    fn name(self) -> &'static str {
        match self {
            Nn::PoissonNll => "poisson_nll_loss",
            Nn::GaussianNll => "gaussian_nll_loss",
            Nn::LogCosh => "log_cosh_loss",
            Nn::MarginRanking => "margin_ranking_loss",
            Nn::HingeEmbedding => "hinge_embedding_loss",
            Nn::SoftMargin => "soft_margin_loss",
            Nn::MultilabelSoftMargin => "multilabel_soft_margin_loss",
            Nn::MultilabelMargin => "multilabel_margin_loss",
            Nn::MultiMargin => "multi_margin_loss",
            Nn::CosineEmbedding => "cosine_embedding_loss",
            Nn::Triplet => "triplet_margin_loss",
            Nn::TripletDistance => "triplet_margin_with_distance_loss",
            Nn::Ctc => "ctc_loss",
        }
    }
}

#[derive(Debug, Clone)]
struct NnCase {
    loss: Nn,
    mode: Mode,
    composite: bool,
    /// The tensors in call order; `grads[i]` says whether argument i is tracked.
    args: Vec<Spec>,
    grads: Vec<bool>,
    /// An optional weight (multilabel_soft_margin, multi_margin).
    weight: Option<Spec>,
    p: f64,
    q: f64,
    flag: bool,
    flag2: bool,
    reduction: Reduction,
    want: Want,
}

fn sign_values(n: usize) -> BoxedStrategy<Vec<f64>> {
    values(prop_oneof![Just(1.0), Just(-1.0)].boxed(), n)
}

/// `[N, C]` or `[C]` (N may be 0; C ≥ 1).
fn rows_shape() -> BoxedStrategy<Vec<usize>> {
    prop_oneof![
        (0..=3usize, 1..=4usize).prop_map(|(n, c)| vec![n, c]),
        (1..=4usize).prop_map(|c| vec![c])
    ]
    .boxed()
}

/// The Valid-mode `Want`: finite, or NaN for a `Mean` over nothing.
fn finite_or_nan(count: usize, r: Reduction) -> Want {
    if count == 0 && r == Reduction::Mean {
        Want::AllNan
    } else {
        Want::Finite
    }
}

fn nn_valid(loss: Nn) -> BoxedStrategy<NnCase> {
    let base = (float_dtype(), any::<bool>(), reduction(), any::<bool>(), any::<bool>());
    match loss {
        Nn::PoissonNll | Nn::GaussianNll | Nn::LogCosh | Nn::MarginRanking | Nn::HingeEmbedding | Nn::SoftMargin => {
            (base, shape(0..=3, 24), 0..4usize, -10.0..10.0f64)
                .prop_flat_map(move |((dt, composite, r, flag, flag2), s, var_form, margin)| {
                    let n = numel(&s);
                    let (x_dom, t_dom) = match loss {
                        Nn::PoissonNll if flag => (finite(80.0), in_range(0.0, 1e6)),
                        Nn::PoissonNll => (in_range(0.0, 1e6), in_range(0.0, 1e6)),
                        Nn::GaussianNll => (finite(1e6), finite(1e6)),
                        Nn::LogCosh => (finite(1e15), finite(1e15)),
                        _ => (finite(1e15), prop_oneof![Just(1.0), Just(-1.0)].boxed()),
                    };
                    // gaussian_nll's var: the input's shape, without its last dim, or a dim set to 1.
                    let var_shape = match (var_form, s.len()) {
                        (1, k) if k >= 1 => s[..k - 1].to_vec(),
                        (2, k) if k >= 1 => {
                            let mut v = s.clone();
                            v[0] = 1;
                            v
                        }
                        _ => s.clone(),
                    };
                    let nv = numel(&var_shape);
                    (
                        values(x_dom, n),
                        values(x_dom_clone(loss, flag), n),
                        values(t_dom, n),
                        values(in_range(0.0, 1e6), nv),
                    )
                        .prop_map(move |(x, x2, t, v)| {
                            let mut args = vec![Spec::new(dt, s.clone(), x)];
                            let mut grads = vec![true];
                            if loss == Nn::MarginRanking {
                                args.push(Spec::new(dt, s.clone(), x2));
                                grads.push(true);
                            }
                            args.push(Spec::new(dt, s.clone(), t));
                            grads.push(matches!(loss, Nn::PoissonNll | Nn::GaussianNll | Nn::LogCosh));
                            if loss == Nn::GaussianNll {
                                args.push(Spec::new(dt, var_shape.clone(), v));
                                grads.push(true);
                            }
                            NnCase {
                                loss,
                                mode: Mode::Valid,
                                composite,
                                args,
                                grads,
                                weight: None,
                                p: margin,
                                q: 0.0,
                                flag,
                                flag2,
                                reduction: r,
                                want: finite_or_nan(n, r),
                            }
                        })
                })
                .boxed()
        }
        Nn::MultilabelSoftMargin | Nn::MultilabelMargin | Nn::MultiMargin => (base, rows_shape(), -10.0..10.0f64)
            .prop_flat_map(move |((dt, composite, r, flag, flag2), s, margin)| {
                let n = numel(&s);
                let c = *s.last().unwrap();
                let rows = n / c;
                let target = match loss {
                    Nn::MultilabelSoftMargin => values(in_range(0.0, 1.0), n).prop_map(|v| (DType::F32, v)).boxed(),
                    Nn::MultilabelMargin => values((-1..c as i64).prop_map(|v| v as f64).boxed(), n)
                        .prop_map(|v| (DType::I64, v))
                        .boxed(),
                    _ => values((0..c as i64).prop_map(|v| v as f64).boxed(), rows)
                        .prop_map(|v| (DType::I64, v))
                        .boxed(),
                };
                (values(finite(1e15), n), target, values(in_range(0.0, 10.0), c)).prop_map(move |(x, (tdt, t), w)| {
                    let tdt = if tdt == DType::F32 { dt } else { tdt };
                    let tshape = if loss == Nn::MultiMargin {
                        s[..s.len() - 1].to_vec()
                    } else {
                        s.clone()
                    };
                    NnCase {
                        loss,
                        mode: Mode::Valid,
                        composite,
                        args: vec![Spec::new(dt, s.clone(), x), Spec::new(tdt, tshape, t)],
                        grads: vec![true, false],
                        weight: flag2.then(|| Spec::new(dt, vec![c], w)),
                        p: margin,
                        q: 0.0,
                        flag,
                        flag2,
                        reduction: r,
                        want: finite_or_nan(if s.len() == 1 { 1 } else { s[0] }, r),
                    }
                })
            })
            .boxed(),
        Nn::CosineEmbedding | Nn::Triplet | Nn::TripletDistance => (
            base,
            prop_oneof![
                (0..=3usize, 1..=4usize).prop_map(|(n, d)| vec![n, d]),
                (1..=4usize).prop_map(|d| vec![d])
            ],
            prop_oneof![Just(1.0), Just(2.0), Just(3.0)],
            in_range(1e-3, 10.0),
        )
            .prop_flat_map(move |((dt, composite, r, flag, flag2), s, p, margin)| {
                let n = numel(&s);
                let rows = if s.len() == 1 { 1 } else { s[0] };
                (
                    values(finite(1e15), n),
                    values(finite(1e15), n),
                    values(finite(1e15), n),
                    sign_values(rows),
                )
                    .prop_map(move |(a, b, c, y)| {
                        let mut args = vec![Spec::new(dt, s.clone(), a), Spec::new(dt, s.clone(), b)];
                        let mut grads = vec![true, true];
                        if loss == Nn::CosineEmbedding {
                            args.push(Spec::new(dt, s[..s.len() - 1].to_vec(), y));
                            grads.push(false);
                        } else {
                            args.push(Spec::new(dt, s.clone(), c));
                            grads.push(true);
                        }
                        let m = if loss == Nn::CosineEmbedding {
                            margin - 5.0
                        } else {
                            margin
                        };
                        NnCase {
                            loss,
                            mode: Mode::Valid,
                            composite,
                            args,
                            grads,
                            weight: None,
                            p,
                            q: m,
                            flag,
                            flag2,
                            reduction: r,
                            want: finite_or_nan(if s.len() == 1 { 1 } else { s[0] }, r),
                        }
                    })
            })
            .boxed(),
        Nn::Ctc => (base, 1..=6usize, 1..=3usize, 2..=4usize)
            .prop_flat_map(move |((dt, composite, r, flag, flag2), t, n, c)| {
                let lmax = t.div_ceil(2);
                (
                    values(in_range(-1e4, 0.0), t * n * c),
                    proptest::collection::vec(0..=lmax, n),
                    proptest::collection::vec(1..c, n * lmax),
                    proptest::collection::vec(0..=t, n),
                )
                    .prop_map(move |(lp, tl, labels, il)| {
                        // Feasible: input length ≥ 2L − 1 (labels and the blanks between repeats).
                        let il: Vec<f64> = il
                            .iter()
                            .zip(&tl)
                            .map(|(&i, &l)| i.max((2 * l).saturating_sub(1)).min(t) as f64)
                            .collect();
                        let tl_f: Vec<f64> = tl.iter().map(|&l| l as f64).collect();
                        let targets = if flag2 {
                            Spec::new(DType::I64, vec![n, lmax], labels.iter().map(|&k| k as f64).collect())
                        } else {
                            let mut v = Vec::new();
                            for (b, &l) in tl.iter().enumerate() {
                                v.extend(labels[b * lmax..b * lmax + l].iter().map(|&k| k as f64));
                            }
                            Spec::new(DType::I64, vec![v.len()], v)
                        };
                        NnCase {
                            loss,
                            mode: Mode::Valid,
                            composite,
                            args: vec![
                                Spec::new(dt, vec![t, n, c], lp),
                                targets,
                                Spec::new(DType::I64, vec![n], il),
                                Spec::new(DType::I64, vec![n], tl_f),
                            ],
                            grads: vec![true, false, false, false],
                            weight: None,
                            p: 0.0,
                            q: 0.0,
                            flag,
                            flag2,
                            reduction: r,
                            want: Want::Finite,
                        }
                    })
            })
            .boxed(),
    }
}

/// The second input's domain of margin_ranking_loss (the first's).
fn x_dom_clone(loss: Nn, flag: bool) -> BoxedStrategy<f64> {
    match loss {
        Nn::PoissonNll if flag => finite(80.0),
        Nn::PoissonNll => in_range(0.0, 1e6),
        Nn::GaussianNll => finite(1e6),
        _ => finite(1e15),
    }
}

impl NnCase {
    /// The number of output values with `Reduction::None`, and the output position that flat
    /// index `i` of the first argument feeds (`None` when the output does not depend on it).
    fn poisoned_output(&self, i: usize) -> (usize, Option<usize>) {
        let x = &self.args[0];
        match self.loss {
            Nn::PoissonNll
            | Nn::GaussianNll
            | Nn::LogCosh
            | Nn::MarginRanking
            | Nn::HingeEmbedding
            | Nn::SoftMargin => (numel(&x.shape), Some(i)),
            Nn::MultilabelSoftMargin
            | Nn::MultilabelMargin
            | Nn::MultiMargin
            | Nn::CosineEmbedding
            | Nn::Triplet
            | Nn::TripletDistance => {
                let d = *x.shape.last().unwrap();
                let rows = numel(&x.shape) / d.max(1);
                let row = i / d.max(1);
                let depends = match self.loss {
                    Nn::MultiMargin => d >= 2,
                    Nn::MultilabelMargin => {
                        let t = &self.args[1].values[row * d..(row + 1) * d];
                        let listed: Vec<usize> = t.iter().take_while(|&&v| v != -1.0).map(|&v| v as usize).collect();
                        !listed.is_empty() && listed.len() < d && (0..d).any(|k| !listed.contains(&k))
                    }
                    _ => true,
                };
                (rows, depends.then_some(row))
            }
            Nn::Ctc => {
                let (n, c) = (x.shape[1], x.shape[2]);
                let (t, b, k) = (i / (n * c), (i / c) % n, i % c);
                let il = self.args[2].values[b] as usize;
                let tl: Vec<usize> = self.args[3].values.iter().map(|&v| v as usize).collect();
                let labels: Vec<f64> = if self.args[1].shape.len() == 2 {
                    let s = self.args[1].shape[1];
                    self.args[1].values[b * s..b * s + tl[b]].to_vec()
                } else {
                    let off: usize = tl[..b].iter().sum();
                    self.args[1].values[off..off + tl[b]].to_vec()
                };
                let repeats = labels.windows(2).filter(|w| w[0] == w[1]).count();
                // Frame t of sample b, class blank (0): some alignment puts a blank there when
                // t < il and the input has a frame to spare beyond the labels and the blanks
                // that separate repeats.
                let depends = t < il && k == 0 && il > labels.len() + repeats;
                (n, depends.then_some(b))
            }
        }
    }

    fn run(&self) -> Got {
        let mut args: Vec<Arg> = self
            .args
            .iter()
            .zip(&self.grads)
            .map(|(s, &g)| {
                if g {
                    Arg::var(s.tensor())
                } else {
                    Arg::constant(s.tensor())
                }
            })
            .collect();
        if let Some(w) = &self.weight {
            args.push(Arg::constant(w.tensor()));
        }
        let c = self.clone();
        call(self.composite, args, move |a| {
            let r = c.reduction;
            let w = c.weight.as_ref().map(|_| &a[a.len() - 1]);
            match c.loss {
                Nn::PoissonNll => poisson_nll_loss(&a[0], &a[1], c.flag, c.flag2, 1e-8, r),
                Nn::GaussianNll => gaussian_nll_loss(&a[0], &a[1], &a[2], c.flag, 1e-6, r),
                Nn::LogCosh => log_cosh_loss(&a[0], &a[1], r),
                Nn::MarginRanking => margin_ranking_loss(&a[0], &a[1], &a[2], c.p, r),
                Nn::HingeEmbedding => hinge_embedding_loss(&a[0], &a[1], c.p, r),
                Nn::SoftMargin => soft_margin_loss(&a[0], &a[1], r),
                Nn::MultilabelSoftMargin => multilabel_soft_margin_loss(&a[0], &a[1], w, r),
                Nn::MultilabelMargin => multilabel_margin_loss(&a[0], &a[1], r),
                Nn::MultiMargin => {
                    let p = if c.mode == Mode::Wild {
                        c.q as u32
                    } else {
                        1 + c.flag as u32
                    };
                    multi_margin_loss(&a[0], &a[1], p, c.p, w, r)
                }
                Nn::CosineEmbedding => cosine_embedding_loss(&a[0], &a[1], &a[2], c.q, r),
                Nn::Triplet => triplet_margin_loss(&a[0], &a[1], &a[2], c.q, c.p, 1e-6, c.flag, r),
                Nn::TripletDistance => {
                    let d = if c.flag2 {
                        TripletDistance::Cosine
                    } else {
                        TripletDistance::Euclidean
                    };
                    triplet_margin_with_distance_loss(&a[0], &a[1], &a[2], d, c.q, c.flag, r)
                }
                Nn::Ctc => ctc_loss(&a[0], &a[1], &a[2], &a[3], c.p as usize, c.flag, r),
            }
        })
    }
}

fn nn_nan(loss: Nn) -> BoxedStrategy<NnCase> {
    nn_valid(loss)
        .prop_filter("non-empty", |c| numel(&c.args[0].shape) > 0)
        .prop_flat_map(|c| {
            let n = numel(&c.args[0].shape);
            (Just(c), 0..n)
        })
        .prop_filter_map("the output depends on the entry", |(mut c, i)| {
            let (count, out) = c.poisoned_output(i);
            let out = out?;
            c.mode = Mode::Nan;
            c.args[0].values[i] = f64::NAN;
            c.want = if c.reduction == Reduction::None {
                let mut mask = vec![false; count];
                mask[out] = true;
                Want::NanAt(mask)
            } else {
                Want::NanAt(vec![true])
            };
            Some(c)
        })
        .boxed()
}

fn nn_wild(loss: Nn) -> BoxedStrategy<NnCase> {
    let arity = match loss {
        Nn::Ctc => 4,
        Nn::GaussianNll | Nn::MarginRanking | Nn::CosineEmbedding | Nn::Triplet | Nn::TripletDistance => 3,
        _ => 2,
    };
    (
        proptest::collection::vec(wild_spec(16), arity),
        proptest::option::of(wild_spec(8)),
        (any_param(), any_param(), any::<bool>(), any::<bool>()),
        (any_reduction(), any::<bool>()),
    )
        .prop_map(
            move |(args, weight, (p, q, flag, flag2), (reduction, composite))| NnCase {
                loss,
                mode: Mode::Wild,
                composite,
                grads: vec![true; args.len()],
                args,
                weight,
                p,
                q,
                flag,
                flag2,
                reduction,
                want: Want::Anything,
            },
        )
        .boxed()
}

impl Case for NnCase {
    fn mode(&self) -> Mode {
        self.mode
    }
    fn composite(&self) -> bool {
        self.composite
    }
    fn check(&self) -> Result<bool, TestCaseError> {
        verify(self.loss.name(), &self.run(), &self.want)
    }
}

fn nn_cases(loss: Nn) -> BoxedStrategy<NnCase> {
    prop_oneof![4 => nn_valid(loss), 2 => nn_nan(loss), 4 => nn_wild(loss)].boxed()
}

#[test]
fn poisson_nll_loss_is_robust() {
    run_property("poisson_nll_loss", file!(), nn_cases(Nn::PoissonNll));
}

#[test]
fn gaussian_nll_loss_is_robust() {
    run_property("gaussian_nll_loss", file!(), nn_cases(Nn::GaussianNll));
}

#[test]
fn log_cosh_loss_is_robust() {
    run_property("log_cosh_loss", file!(), nn_cases(Nn::LogCosh));
}

#[test]
fn margin_ranking_loss_is_robust() {
    run_property("margin_ranking_loss", file!(), nn_cases(Nn::MarginRanking));
}

#[test]
fn hinge_embedding_loss_is_robust() {
    run_property("hinge_embedding_loss", file!(), nn_cases(Nn::HingeEmbedding));
}

#[test]
fn soft_margin_loss_is_robust() {
    run_property("soft_margin_loss", file!(), nn_cases(Nn::SoftMargin));
}

#[test]
fn multilabel_soft_margin_loss_is_robust() {
    run_property(
        "multilabel_soft_margin_loss",
        file!(),
        nn_cases(Nn::MultilabelSoftMargin),
    );
}

#[test]
fn multilabel_margin_loss_is_robust() {
    run_property("multilabel_margin_loss", file!(), nn_cases(Nn::MultilabelMargin));
}

#[test]
fn multi_margin_loss_is_robust() {
    run_property("multi_margin_loss", file!(), nn_cases(Nn::MultiMargin));
}

#[test]
fn cosine_embedding_loss_is_robust() {
    run_property("cosine_embedding_loss", file!(), nn_cases(Nn::CosineEmbedding));
}

#[test]
fn triplet_margin_loss_is_robust() {
    run_property("triplet_margin_loss", file!(), nn_cases(Nn::Triplet));
}

#[test]
fn triplet_margin_with_distance_loss_is_robust() {
    run_property(
        "triplet_margin_with_distance_loss",
        file!(),
        nn_cases(Nn::TripletDistance),
    );
}

#[test]
fn ctc_loss_is_robust() {
    run_property("ctc_loss", file!(), nn_cases(Nn::Ctc));
}
