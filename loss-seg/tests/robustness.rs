//! Robustness of every loss of loss-seg under random input (see
//! `loss_core::testing` (`loss-core/src/testing.rs`) for the three modes and what each asserts): no panic, typed
//! errors, finite value and gradient inside the domain, NaN in → NaN out; on the fused CPU
//! kernels and on the composite path.
//!
//! Domain (Valid mode): `pred` `[N, C, spatial...]` (rank 3 to 5, empty dimensions included):
//! probabilities in `[0, 1]`, or logits with `|x| <= 1e15` with `sigmoid` / `softmax` (always
//! logits for `dice_ce_loss`, `dice_focal_loss` and Lovász); targets: masks of 0, 1 or soft
//! values in `[1e-6, 1]`, or class indices in `[0, C)` with `to_onehot_y` (Lovász: indices or
//! `ignore_index`); `0 <= smooth_nr <= smooth_dr`, each 0 or in `[1e-30, 1e3]` (the crate docs
//! explain why `smooth_nr > smooth_dr = 0` is unbounded, and why statistics below f32's normal
//! range can overflow the gradient), Tversky's `alpha`, `beta` 0 or in `[1e-6, 1e3]`, focal
//! Tversky's `gamma` in `[0.2, 10]`
//! (below ~0.14 the derivative `γ·t^(γ−1)` of a near-perfect class leaves f32's range), class
//! weights 0 or in `[1e-6, 1e6]`, the combined losses' lambdas in `[0, 10]`, `label_smoothing` in
//! `[0, 1]`, focal `gamma` in `[0, 5]`, focal `alpha` in `[0, 1]`. Exception: `Mean` over zero
//! values (an empty batch or no class kept) is NaN, as `torch.mean` of an empty tensor.

use loss_core::testing as robust;

use candle_core::DType;
use loss_core::Reduction;
use loss_seg::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use robust::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sg {
    Dice,
    Tversky,
    FocalTversky,
    GeneralizedDice,
    DiceCe,
    DiceFocal,
    Lovasz,
}

impl Sg {
    fn name(self) -> &'static str {
        match self {
            Sg::Dice => "dice_loss",
            Sg::Tversky => "tversky_loss",
            Sg::FocalTversky => "focal_tversky_loss",
            Sg::GeneralizedDice => "generalized_dice_loss",
            Sg::DiceCe => "dice_ce_loss",
            Sg::DiceFocal => "dice_focal_loss",
            Sg::Lovasz => "lovasz_softmax_loss",
        }
    }

    /// Whether `pred` always holds logits.
    fn logits(self) -> bool {
        matches!(self, Sg::DiceCe | Sg::DiceFocal | Sg::Lovasz)
    }
}

/// The boolean options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flags {
    include_background: bool,
    to_onehot_y: bool,
    sigmoid: bool,
    softmax: bool,
    squared_pred: bool,
    jaccard: bool,
    batch: bool,
}

fn flags() -> BoxedStrategy<Flags> {
    (proptest::collection::vec(any::<bool>(), 7), 0..3u8)
        .prop_map(|(b, act)| Flags {
            include_background: b[0],
            to_onehot_y: b[1],
            sigmoid: act == 1,
            softmax: act == 2,
            squared_pred: b[4],
            jaccard: b[5],
            batch: b[6],
        })
        .boxed()
}

#[derive(Debug, Clone)]
struct SgCase {
    loss: Sg,
    mode: Mode,
    composite: bool,
    pred: Spec,
    target: Spec,
    weight: Option<Spec>,
    f: Flags,
    /// smooth_nr, smooth_dr, then alpha/beta/gamma/lambdas/label_smoothing as the loss reads them.
    p: [f64; 6],
    /// dice_focal's alpha (`None`: none); Lovász's ignore_index.
    opt: Option<f64>,
    w_type: Weighting,
    reduction: Reduction,
    grad_target: bool,
    want: Want,
}

impl SgCase {
    fn run(
        &self,
        pred: &candle_core::Tensor,
        target: &candle_core::Tensor,
        w: Option<&candle_core::Tensor>,
    ) -> candle_core::Result<candle_core::Tensor> {
        let (f, p, r) = (self.f, self.p, self.reduction);
        let overlap = OverlapOptions {
            include_background: f.include_background,
            to_onehot_y: f.to_onehot_y,
            sigmoid: f.sigmoid,
            softmax: f.softmax,
            batch: f.batch,
            smooth_nr: p[0],
            smooth_dr: p[1],
            reduction: r,
        };
        match self.loss {
            Sg::Dice => {
                let o = DiceLoss {
                    squared_pred: f.squared_pred,
                    jaccard: f.jaccard,
                    weight: w.cloned(),
                    overlap,
                    ..Default::default()
                };
                dice_loss(pred, target, &o)
            }
            Sg::Tversky => tversky_loss(
                pred,
                target,
                &TverskyLoss {
                    alpha: p[2],
                    beta: p[3],
                    overlap,
                    ..Default::default()
                },
            ),
            Sg::FocalTversky => focal_tversky_loss(
                pred,
                target,
                &FocalTverskyLoss {
                    alpha: p[2],
                    beta: p[3],
                    gamma: p[4],
                    overlap,
                    ..Default::default()
                },
            ),
            Sg::GeneralizedDice => generalized_dice_loss(
                pred,
                target,
                &GeneralizedDiceLoss {
                    w_type: self.w_type,
                    overlap,
                },
            ),
            Sg::DiceCe => {
                let mut o = DiceCeLoss::default()
                    .with_include_background(f.include_background)
                    .with_to_onehot_y(f.to_onehot_y)
                    .with_sigmoid(f.sigmoid)
                    .with_softmax(f.softmax)
                    .with_squared_pred(f.squared_pred)
                    .with_jaccard(f.jaccard)
                    .with_batch(f.batch)
                    .with_smooth_nr(p[0])
                    .with_smooth_dr(p[1])
                    .with_lambda_dice(p[2])
                    .with_lambda_ce(p[3])
                    .with_label_smoothing(p[4])
                    .with_reduction(r);
                o.weight = w.cloned();
                dice_ce_loss(pred, target, &o)
            }
            Sg::DiceFocal => {
                let mut o = DiceFocalLoss::default()
                    .with_include_background(f.include_background)
                    .with_to_onehot_y(f.to_onehot_y)
                    .with_sigmoid(f.sigmoid)
                    .with_softmax(f.softmax)
                    .with_squared_pred(f.squared_pred)
                    .with_jaccard(f.jaccard)
                    .with_batch(f.batch)
                    .with_smooth_nr(p[0])
                    .with_smooth_dr(p[1])
                    .with_lambda_dice(p[2])
                    .with_lambda_focal(p[3])
                    .with_gamma(p[4])
                    .with_alpha(self.opt)
                    .with_reduction(r);
                o.dice.weight = w.cloned();
                dice_focal_loss(pred, target, &o)
            }
            Sg::Lovasz => lovasz_softmax_loss(
                pred,
                target,
                &LovaszSoftmaxLoss {
                    per_image: f.batch,
                    ignore_index: self.opt.map(|v| v as i64),
                },
            ),
        }
    }

    /// The channels that enter the loss: `first..C`.
    fn first(&self) -> usize {
        let c = self.pred.shape[1];
        usize::from(!self.f.include_background && c > 1 && self.loss != Sg::Lovasz)
    }

    /// Whether a valid case is NaN by definition: a mean over nothing (`Mean` of zero values, a
    /// cross-entropy mean whose weights sum to 0, dice_focal's spatial mean of an empty image).
    fn nan_by_definition(&self) -> bool {
        let s = &self.pred.shape;
        let (n, c, spatial) = (s[0], s[1], numel(&s[2..]));
        let kept = c - self.first();
        let dice_values = match self.loss {
            Sg::GeneralizedDice if self.f.batch => 1,
            Sg::GeneralizedDice => n,
            Sg::Lovasz => return false,
            _ if self.f.batch => kept,
            _ => n * kept,
        };
        match (self.loss, self.reduction) {
            (Sg::DiceFocal, Reduction::Mean) => dice_values == 0 || n * kept * spatial == 0,
            (Sg::DiceFocal, Reduction::Sum) => spatial == 0 && n * kept > 0,
            (Sg::DiceCe, Reduction::Mean) => {
                let ce_zero = match &self.weight {
                    Some(w) if self.f.to_onehot_y && c > 1 => {
                        let wv = |y: f64| {
                            let v = w.values[y as usize];
                            if w.dtype == DType::F32 {
                                v as f32 as f64
                            } else {
                                v
                            }
                        };
                        self.target.values.iter().map(|&y| wv(y)).sum::<f64>() == 0.0
                    }
                    _ => false,
                };
                dice_values == 0 || n * spatial == 0 || ce_zero
            }
            (_, Reduction::Mean) => dice_values == 0,
            _ => false,
        }
    }
}

/// A soft mask value: 0, 1, or in `[1e-6, 1]`.
fn soft() -> BoxedStrategy<f64> {
    prop_oneof![2 => Just(0.0), 2 => Just(1.0), 3 => in_range(1e-6, 1.0)].boxed()
}

/// A smoothing term: 0 or in `[1e-30, 1]`.
fn small() -> BoxedStrategy<f64> {
    prop_oneof![Just(0.0), Just(1e-30), log_uniform(-30.0, 0.0, false)].boxed()
}

/// Class indices in `[0, c)` as f64.
fn indices(c: usize, n: usize) -> BoxedStrategy<Vec<f64>> {
    values((0..c.max(1)).prop_map(|v| v as f64).boxed(), n)
}

fn valid(loss: Sg) -> BoxedStrategy<SgCase> {
    let min_rank = if loss == Sg::Lovasz { 2 } else { 3 };
    (
        float_dtype(),
        index_dtype(),
        shape(min_rank..=5, 32),
        flags(),
        (any::<bool>(), any::<bool>()),
    )
        .prop_flat_map(move |(dt, it, mut s, mut f, (composite, grad_target))| {
            s[1] = s[1].max(1);
            cap(&mut s, 32);
            let (c, n) = (s[1], numel(&s));
            if loss.logits() && !f.sigmoid && !f.softmax && loss != Sg::DiceCe {
                f.softmax = loss == Sg::Lovasz;
            }
            if loss == Sg::DiceCe && !f.sigmoid && !f.softmax {
                f.softmax = true;
            }
            // With C = 1 the softmax is skipped (MONAI): pred then holds probabilities.
            let logits = f.sigmoid || (f.softmax && c > 1);
            let x = if logits { finite(1e15) } else { in_range(0.0, 1.0) };
            // The target: soft masks, or indices [N, 1, spatial...] with to_onehot_y ([N, spatial...]
            // for Lovász).
            let mut ts = s.clone();
            let (tdt, tvals) = if loss == Sg::Lovasz {
                ts.remove(1);
                (it, indices(c, numel(&ts)))
            } else if f.to_onehot_y {
                ts[1] = 1;
                (it, indices(c, numel(&ts)))
            } else {
                (dt, values(soft(), n))
            };
            let classes_kept = c - usize::from(!f.include_background && c > 1);
            let wlen = if loss == Sg::DiceCe { c } else { classes_kept };
            let weight = prop_oneof![
                Just(None),
                values(prop_oneof![Just(0.0), Just(1.0), in_range(1e-6, 1e6)].boxed(), wlen)
                    .prop_map(move |w| Some(Spec::new(dt, vec![wlen], w))),
            ];
            let smooth = prop_oneof![
                Just((1e-5, 1e-5)),
                Just((0.0, 0.0)),
                (small(), small()).prop_map(|(a, b)| (a.min(b), a.max(b))),
                log_uniform(-30.0, 3.0, false).prop_map(|v| (0.0, v)),
            ];
            let params = match loss {
                Sg::Tversky | Sg::FocalTversky => (
                    prop_oneof![Just(0.0), in_range(1e-6, 1e3)],
                    prop_oneof![Just(0.0), in_range(1e-6, 1e3)],
                    prop_oneof![Just(0.75), Just(1.0), in_range(0.2, 10.0)].boxed(),
                )
                    .boxed(),
                Sg::DiceCe => (in_range(0.0, 10.0), in_range(0.0, 10.0), in_range(0.0, 1.0)).boxed(),
                Sg::DiceFocal => (in_range(0.0, 10.0), in_range(0.0, 10.0), in_range(0.0, 5.0)).boxed(),
                _ => (Just(0.0), Just(0.0), Just(0.0)).boxed(),
            };
            let opt = match loss {
                Sg::DiceFocal => prop_oneof![Just(None), in_range(0.0, 1.0).prop_map(Some)].boxed(),
                Sg::Lovasz => prop_oneof![Just(None), (0..c as i64 + 1).prop_map(|v| Some(v as f64))].boxed(),
                _ => Just(None).boxed(),
            };
            let reductions = if loss == Sg::DiceCe {
                prop_oneof![Just(Reduction::Mean), Just(Reduction::Sum)].boxed()
            } else {
                reduction()
            };
            let w_type = prop_oneof![
                Just(Weighting::Square),
                Just(Weighting::Simple),
                Just(Weighting::Uniform)
            ];
            let with_weight = matches!(loss, Sg::Dice | Sg::DiceCe | Sg::DiceFocal);
            let s = s.clone();
            (values(x, n), tvals, weight, smooth, params, opt, (reductions, w_type)).prop_map(
                move |(x, t, w, (nr, dr), (a, b, g), opt, (reduction, w_type))| {
                    // Lovász: ignore_index values among the targets.
                    SgCase {
                        loss,
                        mode: Mode::Valid,
                        composite,
                        pred: Spec::new(dt, s.clone(), x),
                        target: Spec::new(tdt, ts.clone(), t),
                        weight: if with_weight { w } else { None },
                        f,
                        p: [nr, dr, a, b, g, 0.0],
                        opt,
                        w_type,
                        reduction,
                        grad_target,
                        want: Want::Finite,
                    }
                },
            )
        })
        .prop_map(|mut c| {
            if c.nan_by_definition() {
                c.want = Want::AllNan;
            }
            c
        })
        .boxed()
}

fn nan(loss: Sg) -> BoxedStrategy<SgCase> {
    valid(loss)
        .prop_filter("a value that counts", |c| {
            !c.nan_by_definition() && numel(&c.pred.shape) > 0 && c.pred.shape[1] > c.first()
        })
        .prop_flat_map(|c| {
            let n = numel(&c.pred.shape);
            (Just(c), 0..n, any::<bool>())
        })
        .prop_filter_map("a NaN at a pixel that counts", |(mut c, at, in_target)| {
            c.mode = Mode::Nan;
            let s = c.pred.shape.clone();
            let (cc, inner) = (s[1], numel(&s[2..]));
            // Move the position into a kept channel.
            let (nn, ch, k) = (at / (cc * inner), (at / inner) % cc, at % inner);
            let ch = ch.max(c.first());
            let i = (nn * cc + ch) * inner + k;
            // Lovász-Softmax leaves ignored pixels out (as smp): a NaN there does not count.
            if c.loss == Sg::Lovasz && c.opt.is_some_and(|ig| c.target.values[nn * inner + k] == ig) {
                return None;
            }
            let float_target = c.target.dtype.is_float() && c.target.shape == s;
            if in_target && float_target {
                c.target.values[i] = f64::NAN;
            } else {
                c.pred.values[i] = f64::NAN;
            }
            c.want = match c.reduction {
                Reduction::None => Want::SomeNan,
                _ => Want::NanAt(vec![true]),
            };
            Some(c)
        })
        .boxed()
}

fn wild(loss: Sg) -> BoxedStrategy<SgCase> {
    let random = (
        wild_spec(32),
        prop_oneof![Just(None), wild_spec(32).prop_map(Some)],
        prop_oneof![Just(None), wild_spec(6).prop_map(Some)],
        flags(),
        proptest::collection::vec(any_param(), 6),
        prop_oneof![Just(None), any_param().prop_map(Some)],
        (any_reduction(), any::<bool>(), any::<bool>()),
    )
        .prop_flat_map(|(pred, target, weight, f, p, opt, rest)| {
            // The target: independent, or of pred's shape and dtype with any values.
            let same = values(any_value(), numel(&pred.shape))
                .prop_map({
                    let pred = pred.clone();
                    move |v| Spec::new(pred.dtype, pred.shape.clone(), v)
                })
                .boxed();
            let target = match target {
                Some(t) => Just(t).boxed(),
                None => same,
            };
            (
                Just(pred),
                target,
                Just(weight),
                Just(f),
                Just(p),
                Just(opt),
                Just(rest),
            )
        })
        .prop_map(
            move |(pred, target, weight, f, p, opt, (reduction, composite, grad_target))| SgCase {
                loss,
                mode: Mode::Wild,
                composite,
                pred,
                target,
                weight,
                f,
                p: [p[0], p[1], p[2], p[3], p[4], p[5]],
                opt,
                w_type: Weighting::Square,
                reduction,
                grad_target,
                want: Want::Anything,
            },
        );
    let perturbed = (
        valid(loss),
        proptest::collection::vec(any_param(), 6),
        flags(),
        any_reduction(),
        0..4u8,
    )
        .prop_flat_map(|(c, p, f, r, what)| {
            let (np, nt) = (c.pred.values.len(), c.target.values.len());
            (
                Just((c, p, f, r, what)),
                values(any_value(), np),
                values(prop_oneof![-3.0..8.0f64, any_value()].boxed(), nt),
            )
        })
        .prop_map(|((mut c, p, f, r, what), vp, vt)| {
            c.mode = Mode::Wild;
            c.want = Want::Anything;
            match what {
                0 => c.p = [p[0], p[1], p[2], p[3], p[4], p[5]],
                1 => (c.f, c.reduction) = (f, r),
                2 => c.pred.values = vp,
                _ => c.target.values = vt.into_iter().map(f64::round).collect(),
            }
            c
        });
    prop_oneof![random, perturbed].boxed()
}

impl Case for SgCase {
    fn mode(&self) -> Mode {
        self.mode
    }
    fn composite(&self) -> bool {
        self.composite
    }
    fn check(&self) -> Result<bool, TestCaseError> {
        let mut args = vec![
            Arg::var(self.pred.tensor()),
            Arg {
                tensor: self.target.tensor(),
                grad: self.grad_target,
            },
        ];
        if let Some(w) = &self.weight {
            args.push(Arg::constant(w.tensor()));
        }
        let c = self.clone();
        let got = call(self.composite, args, move |t| c.run(&t[0], &t[1], t.get(2)));
        verify(self.loss.name(), &got, &self.want)
    }
}

fn cases(loss: Sg) -> BoxedStrategy<SgCase> {
    prop_oneof![4 => valid(loss), 2 => nan(loss), 4 => wild(loss)].boxed()
}

#[test]
fn dice_loss_is_robust() {
    run_property("dice_loss", file!(), cases(Sg::Dice));
}

#[test]
fn tversky_loss_is_robust() {
    run_property("tversky_loss", file!(), cases(Sg::Tversky));
}

#[test]
fn focal_tversky_loss_is_robust() {
    run_property("focal_tversky_loss", file!(), cases(Sg::FocalTversky));
}

#[test]
fn generalized_dice_loss_is_robust() {
    run_property("generalized_dice_loss", file!(), cases(Sg::GeneralizedDice));
}

#[test]
fn dice_ce_loss_is_robust() {
    run_property("dice_ce_loss", file!(), cases(Sg::DiceCe));
}

#[test]
fn dice_focal_loss_is_robust() {
    run_property("dice_focal_loss", file!(), cases(Sg::DiceFocal));
}

#[test]
fn lovasz_softmax_loss_is_robust() {
    run_property("lovasz_softmax_loss", file!(), cases(Sg::Lovasz));
}

// ---------------------------------------------------------------------------------------------
// Regression tests: each input below (minimized by proptest) made a loss misbehave before its fix.

use candle_core::{Device, Tensor, Var};

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

fn all_finite(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

/// The value and the gradient w.r.t. `x` of `sum(f(x))`.
fn value_grad(f: impl Fn(&Tensor) -> candle_core::Result<Tensor>, x: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let v = Var::from_tensor(x).unwrap();
    let out = f(v.as_tensor()).unwrap();
    let g = out.sum_all().unwrap().backward().unwrap();
    let grad = g
        .get(v.as_tensor())
        .map(flat)
        .unwrap_or_else(|| vec![0.0; x.elem_count()]);
    (flat(&out), grad)
}

fn on_both_paths(f: impl Fn(&str)) {
    f("fused");
    loss_core::kernel::with_path(loss_core::kernel::Path::Composite, || f("composite"));
}

/// Found by proptest: an empty batch (`N = 0`) made Candle 0.11's CPU kernels index out of range
/// and **panic** after a narrow of the empty statistics (`[0, C, 3]`) or of the empty prediction;
/// now `None` gives an empty `[0, C']`, `Sum` 0 and `Mean` NaN (the mean of nothing).
#[test]
fn regression_empty_batch_does_not_panic() {
    let p = Tensor::zeros((0, 2, 3, 2), DType::F32, &Device::Cpu).unwrap();
    let y = Tensor::zeros((0, 1, 3, 2), DType::U32, &Device::Cpu).unwrap();
    on_both_paths(|path| {
        for bg in [true, false] {
            for r in [Reduction::None, Reduction::Sum, Reduction::Mean] {
                let outs = [
                    dice_loss(
                        &p,
                        &p,
                        &DiceLoss::default().with_include_background(bg).with_reduction(r),
                    ),
                    tversky_loss(
                        &p,
                        &p,
                        &TverskyLoss::default().with_include_background(bg).with_reduction(r),
                    ),
                    focal_tversky_loss(
                        &p,
                        &p,
                        &FocalTverskyLoss::default()
                            .with_include_background(bg)
                            .with_reduction(r),
                    ),
                    generalized_dice_loss(
                        &p,
                        &y,
                        &GeneralizedDiceLoss::default()
                            .with_to_onehot_y(true)
                            .with_include_background(bg)
                            .with_reduction(r),
                    ),
                    dice_focal_loss(
                        &p,
                        &p,
                        &DiceFocalLoss::default().with_include_background(bg).with_reduction(r),
                    ),
                ];
                for out in outs {
                    let v = flat(&out.unwrap());
                    match r {
                        Reduction::None => assert!(v.is_empty(), "{path}"),
                        Reduction::Sum => assert_eq!(v, [0.0], "{path}"),
                        _ => assert!(v[0].is_nan(), "{path}"),
                    }
                }
            }
        }
    });
}

/// Found by proptest: the composite channel softmax and generalized Dice's class weights took the
/// max of an empty tensor, a raw Candle error ("empty tensor for reduce").
#[test]
fn regression_empty_tensors_are_not_raw_candle_errors() {
    let p = Tensor::zeros((0, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let y = Tensor::zeros((0, 1, 2), DType::U8, &Device::Cpu).unwrap();
    let g = Tensor::zeros((0, 1, 0), DType::F32, &Device::Cpu).unwrap();
    on_both_paths(|path| {
        let o = DiceCeLoss::default()
            .with_to_onehot_y(true)
            .with_softmax(true)
            .with_reduction(Reduction::Sum);
        assert_eq!(flat(&dice_ce_loss(&p, &y, &o).unwrap()), [0.0], "{path}");
        let o = GeneralizedDiceLoss::default()
            .with_include_background(false)
            .with_reduction(Reduction::None);
        assert_eq!(generalized_dice_loss(&g, &g, &o).unwrap().dims(), &[0, 1], "{path}");
        assert_eq!(prepare::softmax_channels(&p).unwrap().dims(), &[0, 2, 2], "{path}");
    });
}

/// Found by proptest: dice_focal's `Sum` of an empty batch was NaN (a mean of nothing times 0)
/// instead of 0.
#[test]
fn regression_dice_focal_sum_of_an_empty_batch_is_zero() {
    let p = Tensor::zeros((0, 1, 2), DType::F32, &Device::Cpu).unwrap();
    on_both_paths(|path| {
        let o = DiceFocalLoss::default().with_reduction(Reduction::Sum);
        assert_eq!(flat(&dice_focal_loss(&p, &p, &o).unwrap()), [0.0], "{path}");
    });
}

/// Found by proptest: an empty target class whose prediction sum is tiny (here 1.4e-45, 2.3e-36)
/// with `smooth_dr = 0` made the ratio's `1/den` overflow once multiplied by a λ of 10 or an α of
/// 1000, and `inf · 0 = NaN` in the gradient; the true gradient is 0 there.
#[test]
fn regression_overlap_gradient_for_a_tiny_denominator() {
    let p = Tensor::new(&[[[0f32, 1e-45]]], &Device::Cpu).unwrap();
    let t = p.zeros_like().unwrap();
    let dice = DiceFocalLoss::default()
        .with_softmax(true)
        .with_batch(true)
        .with_smooth_nr(0.0)
        .with_smooth_dr(0.0)
        .with_lambda_dice(9.999_999)
        .with_lambda_focal(0.0)
        .with_gamma(0.0)
        .with_reduction(Reduction::None);
    let ft = FocalTverskyLoss::default()
        .with_smooth_nr(0.0)
        .with_smooth_dr(0.0)
        .with_alpha(1000.0)
        .with_beta(0.0)
        .with_gamma(0.75)
        .with_reduction(Reduction::Sum);
    let mut x = vec![0f32; 9];
    x[6] = 2.300_142_7e-36;
    let p3 = Tensor::from_vec(x, (3, 3, 1, 1, 1), &Device::Cpu).unwrap();
    let y3 = Tensor::zeros((3, 1, 1, 1, 1), DType::U8, &Device::Cpu).unwrap();
    let tv = TverskyLoss::default()
        .with_to_onehot_y(true)
        .with_smooth_nr(0.0)
        .with_smooth_dr(0.0)
        .with_alpha(1000.0)
        .with_beta(0.0)
        .with_reduction(Reduction::Sum);
    on_both_paths(|path| {
        let (v, g) = value_grad(|x| dice_focal_loss(x, &t, &dice), &p);
        assert!(all_finite(&v) && all_finite(&g), "{path}: {v:?} {g:?}");
        let (v, g) = value_grad(|x| focal_tversky_loss(x, &t, &ft), &p);
        assert!(all_finite(&v) && all_finite(&g), "{path}: {v:?} {g:?}");
        let (v, g) = value_grad(|x| tversky_loss(x, &y3, &tv), &p3);
        assert!(all_finite(&v) && all_finite(&g), "{path}: {v:?} {g:?}");
    });
}

/// Every kind of `LossError` that loss-seg returns, with its whole message (loss, argument,
/// shapes or value), as the typed error wrapped into `candle_core::Error::Wrapped`.
#[test]
fn every_error_kind_has_its_full_message() {
    let d = Device::Cpu;
    let z = |s: &[usize], dt: DType| Tensor::zeros(s, dt, &d).unwrap();
    let (sp, st, l23) = (
        z(&[1, 2, 3], DType::F32),
        z(&[1, 2, 4], DType::F32),
        z(&[2, 3], DType::F32),
    );
    let sy = Tensor::new(&[[[0i64, 1, 2]]], &d).unwrap();
    let neg = Tensor::new(&[1f32, -1.0], &d).unwrap();
    let cases: Vec<(&str, candle_core::Result<Tensor>, &str)> = vec![
        (
            "ShapeMismatch",
            dice_loss(&sp, &st, &DiceLoss::default()),
            "dice_loss: `target` has shape [1, 2, 4] but must match `pred` of shape [1, 2, 3]",
        ),
        (
            "BadShape",
            dice_loss(&l23, &l23, &DiceLoss::default()),
            "dice_loss: `pred` has shape [2, 3], expected [N, C, spatial...] with at least one spatial dimension",
        ),
        (
            "DTypeMismatch",
            dice_loss(&sp, &sp.to_dtype(DType::F64).unwrap(), &DiceLoss::default()),
            "dice_loss: `target` has dtype F64 but `pred` has dtype F32",
        ),
        (
            "BadDType",
            dice_loss(&sp, &sy, &DiceLoss::default()),
            "dice_loss: `target` has dtype I64, expected a float dtype like pred's (class indices need `to_onehot_y`)",
        ),
        (
            "BadParam",
            tversky_loss(&sp, &sp, &TverskyLoss::default().with_alpha(-1.0)),
            "tversky_loss: `alpha` = -1 is invalid, expected a finite value >= 0",
        ),
        (
            "IndexOutOfRange",
            dice_loss(&sp, &sy, &DiceLoss::default().with_to_onehot_y(true)),
            "dice_loss: `target` holds class index 2, outside [0, 2) (target shape [1, 1, 3])",
        ),
        (
            "BadValues",
            dice_loss(&sp, &sp, &DiceLoss::default().with_weight(neg)),
            "dice_loss: `weight` has values outside [0, inf) (shape [2])",
        ),
        (
            "BadReduction",
            dice_ce_loss(&sp, &sp, &DiceCeLoss::default().with_reduction(Reduction::None)),
            "dice_ce_loss: reduction `none` is not supported, expected one of \"mean\" or \"sum\"",
        ),
        (
            "BadOptions",
            dice_loss(&sp, &sp, &DiceLoss::default().with_sigmoid(true).with_softmax(true)),
            "dice_loss: `sigmoid` and `softmax` cannot both be set (choose one activation)",
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

/// Found by `cargo fuzz run seg_losses` (pred `[4, 0, 0]`): with no class the error came from the
/// inner `cross_entropy` and named it instead of `dice_ce_loss`.
#[test]
fn regression_dice_ce_without_classes_names_dice_ce() {
    let p = Tensor::zeros((4, 0, 0), DType::F32, &Device::Cpu).unwrap();
    for t in [p.clone(), Tensor::zeros((4, 1, 0), DType::U8, &Device::Cpu).unwrap()] {
        let e = dice_ce_loss(&p, &t, &DiceCeLoss::default().with_to_onehot_y(!t.dtype().is_float())).unwrap_err();
        assert!(matches!(e, candle_core::Error::Wrapped(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "dice_ce_loss: `pred` has shape [4, 0, 0], expected [N, C, spatial...] with at least one class (C >= 1)"
        );
    }
}
