//! Robustness of the segmentation extras under random input (see
//! `loss_core::testing` (`loss-core/src/testing.rs`) for the three modes and what each asserts): no panic, typed
//! errors, finite value and gradient inside the domain, NaN in → NaN out; on the fused CPU
//! kernels and on the composite path.
//!
//! Covered: `dice_loss` / `tversky_loss` / `focal_tversky_loss` with `soft_label` and
//! `ignore_index`, `masked_dice_loss`, `soft_cldice_loss`, `soft_dice_cldice_loss`,
//! `hausdorff_dt_loss`, `log_hausdorff_dt_loss`, `lovasz_hinge_loss`, `jaccard_loss` (three
//! modes) and `soft_bce_with_logits_loss`.
//!
//! Domain (Valid mode): non-empty shapes (an empty batch or image gives the NaN of a mean over
//! nothing, as torch; those shapes are drawn in Wild mode), f32/f64, logits with `|x| <= 1e15`
//! (with an activation; probabilities in `[0, 1]` without), 0/1 or soft targets in `[0, 1]`, class
//! indices in `[0, C)` or the `ignore_index`, default-sized smoothing terms, Hausdorff's `alpha` in
//! `[0, 3]`, clDice's `iter_` in `0..=5`, soft BCE's `smooth_factor` in `[0, 1]` and weights in
//! `[0, 10]`.

use loss_core::testing as robust;

use candle_core::Tensor;
use loss_core::Reduction;
use loss_seg::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use robust::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ex {
    DiceOptions,
    TverskyOptions,
    FocalTverskyOptions,
    MaskedDice,
    ClDice,
    DiceClDice,
    Hausdorff,
    LogHausdorff,
    LovaszHinge,
    Jaccard,
    SoftBce,
}

impl Ex {
    fn name(self) -> &'static str {
        match self {
            Ex::DiceOptions => "dice_loss",
            Ex::TverskyOptions => "tversky_loss",
            Ex::FocalTverskyOptions => "focal_tversky_loss",
            Ex::MaskedDice => "masked_dice_loss",
            Ex::ClDice => "soft_cldice_loss",
            Ex::DiceClDice => "soft_dice_cldice_loss",
            Ex::Hausdorff => "hausdorff_dt_loss",
            Ex::LogHausdorff => "log_hausdorff_dt_loss",
            Ex::LovaszHinge => "lovasz_hinge_loss",
            Ex::Jaccard => "jaccard_loss",
            Ex::SoftBce => "soft_bce_with_logits_loss",
        }
    }
    fn ranks(self) -> std::ops::RangeInclusive<usize> {
        match self {
            Ex::ClDice | Ex::DiceClDice | Ex::Hausdorff | Ex::LogHausdorff => 4..=5,
            Ex::LovaszHinge | Ex::SoftBce => 1..=5,
            Ex::Jaccard => 2..=5,
            _ => 3..=5,
        }
    }
    /// Index targets `[N, 1, ...]` with `to_onehot_y` are possible.
    fn overlap(self) -> bool {
        !matches!(self, Ex::LovaszHinge | Ex::Jaccard | Ex::SoftBce)
    }
}

#[derive(Debug, Clone)]
struct ExCase {
    loss: Ex,
    mode: Mode,
    composite: bool,
    pred: Spec,
    target: Spec,
    /// The mask of masked Dice; the weight of soft BCE.
    extra: Option<Spec>,
    /// sigmoid, softmax, include_background, to_onehot_y, batch / per_image, soft_label / log_loss.
    f: [bool; 6],
    /// Loss parameters, as each loss reads them.
    p: [f64; 4],
    ignore: Option<i64>,
    /// Jaccard's mode (0 binary, 1 multiclass, 2 multilabel).
    jmode: u8,
    reduction: Reduction,
    want: Want,
}

impl ExCase {
    fn run(&self, pred: &Tensor, target: &Tensor, extra: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let (f, p, r) = (self.f, self.p, self.reduction);
        match self.loss {
            Ex::DiceOptions | Ex::MaskedDice => {
                let o = DiceLoss::default()
                    .with_sigmoid(f[0])
                    .with_softmax(f[1])
                    .with_include_background(f[2])
                    .with_to_onehot_y(f[3])
                    .with_batch(f[4])
                    .with_soft_label(f[5])
                    .with_squared_pred(p[2] > 0.5)
                    .with_jaccard(p[3] > 0.5)
                    .with_smooth_nr(p[0])
                    .with_smooth_dr(p[1])
                    .with_reduction(r);
                match (self.loss, extra) {
                    (Ex::MaskedDice, Some(m)) => masked_dice_loss(pred, target, m, &o),
                    (Ex::MaskedDice, None) => masked_dice_loss(pred, target, &pred.ones_like()?, &o),
                    _ => dice_loss(pred, target, &o.with_ignore_index(self.ignore)),
                }
            }
            Ex::TverskyOptions => {
                let o = TverskyLoss::default()
                    .with_sigmoid(f[0])
                    .with_softmax(f[1])
                    .with_include_background(f[2])
                    .with_to_onehot_y(f[3])
                    .with_batch(f[4])
                    .with_soft_label(f[5])
                    .with_alpha(p[2])
                    .with_beta(p[3])
                    .with_smooth_nr(p[0])
                    .with_smooth_dr(p[1])
                    .with_ignore_index(self.ignore)
                    .with_reduction(r);
                tversky_loss(pred, target, &o)
            }
            Ex::FocalTverskyOptions => {
                let o = FocalTverskyLoss::default()
                    .with_sigmoid(f[0])
                    .with_softmax(f[1])
                    .with_include_background(f[2])
                    .with_to_onehot_y(f[3])
                    .with_batch(f[4])
                    .with_soft_label(f[5])
                    .with_alpha(p[2])
                    .with_beta(p[3])
                    .with_smooth_nr(p[0])
                    .with_smooth_dr(p[1])
                    .with_ignore_index(self.ignore)
                    .with_reduction(r);
                focal_tversky_loss(pred, target, &o)
            }
            Ex::ClDice | Ex::DiceClDice => {
                let o = SoftClDiceLoss::default()
                    .with_sigmoid(f[0])
                    .with_softmax(f[1])
                    .with_include_background(f[2])
                    .with_to_onehot_y(f[3])
                    .with_smooth_nr(p[0])
                    .with_smooth_dr(p[1])
                    .with_smooth(p[2])
                    .with_iter_((p[3].abs().min(8.0)) as usize)
                    .with_reduction(r);
                if self.loss == Ex::ClDice {
                    soft_cldice_loss(pred, target, &o)
                } else {
                    let alpha = if p[3] < 0.0 { p[3] } else { p[3].fract() };
                    soft_dice_cldice_loss(
                        pred,
                        target,
                        &SoftDiceClDiceLoss::default().with_cldice(o).with_alpha(alpha),
                    )
                }
            }
            Ex::Hausdorff | Ex::LogHausdorff => {
                let o = HausdorffDtLoss::default()
                    .with_sigmoid(f[0])
                    .with_softmax(f[1])
                    .with_include_background(f[2])
                    .with_to_onehot_y(f[3])
                    .with_batch(f[4])
                    .with_alpha(p[2])
                    .with_reduction(r);
                if self.loss == Ex::Hausdorff {
                    hausdorff_dt_loss(pred, target, &o)
                } else {
                    log_hausdorff_dt_loss(pred, target, &o)
                }
            }
            Ex::LovaszHinge => lovasz_hinge_loss(
                pred,
                target,
                &LovaszHingeLoss::default()
                    .with_per_image(f[4])
                    .with_ignore_index(self.ignore),
            ),
            Ex::Jaccard => {
                let mode =
                    [JaccardMode::Binary, JaccardMode::Multiclass, JaccardMode::Multilabel][self.jmode as usize % 3];
                let o = JaccardLoss::new(mode)
                    .with_from_logits(!f[1])
                    .with_log_loss(f[5])
                    .with_smooth(p[0])
                    .with_eps(p[1])
                    .with_ignore_index(self.ignore);
                jaccard_loss(pred, target, &o)
            }
            Ex::SoftBce => {
                let mut o = SoftBceWithLogitsLoss::default()
                    .with_smooth_factor(if f[5] { Some(p[2]) } else { None })
                    .with_ignore_index(self.ignore)
                    .with_reduction(r);
                o.pos_weight = extra.cloned();
                o.weight = if f[4] { extra.cloned() } else { None };
                soft_bce_with_logits_loss(pred, target, &o)
            }
        }
    }
}

/// A soft mask value: 0, 1, or in `[1e-6, 1]`.
fn soft() -> BoxedStrategy<f64> {
    prop_oneof![2 => Just(0.0), 2 => Just(1.0), 3 => in_range(1e-6, 1.0)].boxed()
}

/// A 0/1 value.
fn binary() -> BoxedStrategy<f64> {
    prop_oneof![Just(0.0), Just(1.0)].boxed()
}

fn valid(loss: Ex) -> BoxedStrategy<ExCase> {
    (
        float_dtype(),
        index_dtype(),
        shape(loss.ranks(), 48),
        proptest::collection::vec(any::<bool>(), 6),
        0..3u8,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(move |(dt, it, mut s, b, act, composite, with_ignore)| {
            for d in s.iter_mut() {
                *d = (*d).max(1);
            }
            cap(&mut s, 48);
            let c = if s.len() > 1 { s[1] } else { 1 };
            let n = numel(&s);
            let mut f = [act == 1, act == 2, b[0], b[1], b[2], b[3]];
            let jmode = (b[4] as u8) + 2 * (b[5] as u8) % 3;
            let mut jmode = jmode % 3;
            if loss == Ex::Jaccard && jmode == 0 && c != 1 {
                jmode = 2;
            }
            if !loss.overlap() {
                f[3] = false;
            }
            let logits = match loss {
                Ex::LovaszHinge | Ex::SoftBce => true,
                Ex::Jaccard => !f[1],
                _ => f[0] || (f[1] && c > 1),
            };
            let x = if logits { finite(1e15) } else { in_range(0.0, 1.0) };
            let ignore: Option<i64> = match loss {
                Ex::SoftBce => Some(if with_ignore { 255 } else { -100 }),
                Ex::MaskedDice | Ex::ClDice | Ex::DiceClDice | Ex::Hausdorff | Ex::LogHausdorff => None,
                _ if with_ignore => Some(255),
                _ => None,
            };
            let ig = ignore.unwrap_or(0) as f64;
            let mut ts = s.clone();
            let (tdt, tvals) = match loss {
                Ex::Jaccard if jmode == 1 => {
                    ts.remove(1);
                    let k = numel(&ts);
                    let v = prop_oneof![4 => (0..c).prop_map(|v| v as f64), 1 => Just(if ignore.is_some() { ig } else { 0.0 })];
                    (it, values(v.boxed(), k))
                }
                Ex::LovaszHinge | Ex::Jaccard => {
                    let v = prop_oneof![4 => binary(), 1 => Just(if ignore.is_some() { ig } else { 1.0 })];
                    (dt, values(v.boxed(), n))
                }
                Ex::SoftBce => {
                    let v = prop_oneof![4 => soft(), 1 => Just(ig)];
                    (dt, values(v.boxed(), n))
                }
                _ if f[3] && c > 1 => {
                    ts[1] = 1;
                    let k = numel(&ts);
                    let v = prop_oneof![4 => (0..c).prop_map(|v| v as f64), 1 => Just(if ignore.is_some() { ig } else { 0.0 })];
                    (it, values(v.boxed(), k))
                }
                Ex::ClDice | Ex::DiceClDice | Ex::Hausdorff | Ex::LogHausdorff => (dt, values(binary(), n)),
                _ => (dt, values(soft(), n)),
            };
            let last = *s.last().unwrap_or(&1);
            let extra = match loss {
                Ex::MaskedDice => {
                    let mut ms = s.clone();
                    ms[1] = 1;
                    if b[5] {
                        ms[0] = 1;
                    }
                    let k = numel(&ms);
                    values(binary(), k)
                        .prop_map(move |v| Some(Spec::new(dt, ms.clone(), v)))
                        .boxed()
                }
                Ex::SoftBce => prop_oneof![
                    Just(None),
                    values(in_range(0.0, 10.0), last).prop_map(move |v| Some(Spec::new(dt, vec![last], v)))
                ]
                .boxed(),
                _ => Just(None).boxed(),
            };
            let params = match loss {
                Ex::DiceOptions | Ex::MaskedDice => (
                    prop_oneof![Just(1e-5), Just(0.0)],
                    prop_oneof![Just(1e-5), Just(1.0)],
                    0.0..1.0f64,
                    0.0..1.0f64,
                )
                    .boxed(),
                Ex::TverskyOptions | Ex::FocalTverskyOptions => (
                    prop_oneof![Just(1e-5), Just(0.0)],
                    prop_oneof![Just(1e-5), Just(1.0)],
                    in_range(0.0, 10.0),
                    in_range(0.0, 10.0),
                )
                    .boxed(),
                Ex::ClDice | Ex::DiceClDice => (
                    prop_oneof![Just(1.0), Just(1e-5)],
                    Just(1.0),
                    prop_oneof![Just(1e-4), Just(1.0)],
                    prop_oneof![Just(0.0), Just(1.0), Just(3.0), Just(0.5), Just(5.25)],
                )
                    .boxed(),
                Ex::Hausdorff | Ex::LogHausdorff => {
                    (Just(0.0), Just(0.0), in_range(0.0, 3.0), Just(0.0)).boxed()
                }
                Ex::Jaccard => (
                    prop_oneof![Just(0.0), Just(1.0)],
                    prop_oneof![Just(1e-7), Just(1e-3)],
                    Just(0.0),
                    Just(0.0),
                )
                    .boxed(),
                Ex::SoftBce => (Just(0.0), Just(0.0), in_range(0.0, 1.0), Just(0.0)).boxed(),
                Ex::LovaszHinge => (Just(0.0), Just(0.0), Just(0.0), Just(0.0)).boxed(),
            };
            let reductions = if loss == Ex::DiceClDice {
                prop_oneof![Just(Reduction::Mean), Just(Reduction::Sum)].boxed()
            } else {
                reduction()
            };
            let s = s.clone();
            (values(x, n), tvals, extra, params, reductions).prop_map(move |(x, t, extra, (a, b2, g, d), reduction)| {
                // Tversky's γ-free options: focal Tversky's gamma stays at its default.
                ExCase {
                    loss,
                    mode: Mode::Valid,
                    composite,
                    pred: Spec::new(dt, s.clone(), x),
                    target: Spec::new(tdt, ts.clone(), t),
                    extra,
                    f,
                    p: [a, b2, g, d],
                    ignore,
                    jmode,
                    reduction,
                    want: Want::Finite,
                }
            })
        })
        .boxed()
}

fn nan(loss: Ex) -> BoxedStrategy<ExCase> {
    valid(loss)
        .prop_flat_map(|c| {
            let n = numel(&c.pred.shape);
            (Just(c), 0..n)
        })
        .prop_filter_map("a NaN at an element that counts", |(mut c, at)| {
            let s = c.pred.shape.clone();
            let (cc, inner) = if s.len() > 1 { (s[1], numel(&s[2..])) } else { (1, 1) };
            let (nn, ch, k) = (at / (cc * inner), (at / inner) % cc, at % inner);
            // Channel 0 takes no part without the background (the same flag for every loss here).
            let first_dropped = c.loss.overlap() && !c.f[2] && cc > 1;
            // Hausdorff drops the background by default too (its flag is the same field).
            if first_dropped && ch == 0 {
                return None;
            }
            // Ignored elements take no part where the loss zeroes them without a product.
            let tv = &c.target.values;
            let ignored = match c.loss {
                Ex::LovaszHinge | Ex::SoftBce => c.ignore.is_some_and(|ig| tv[at] == ig as f64),
                Ex::Jaccard if c.jmode == 1 => c.ignore.is_some_and(|ig| tv[nn * inner + k] == ig as f64),
                Ex::Jaccard => c.ignore.is_some_and(|ig| tv[at] == ig as f64),
                _ => false,
            };
            if ignored {
                return None;
            }
            c.mode = Mode::Nan;
            c.pred.values[at] = f64::NAN;
            c.want = match c.reduction {
                Reduction::None if !matches!(c.loss, Ex::LovaszHinge | Ex::Jaccard) => Want::SomeNan,
                _ => Want::NanAt(vec![true]),
            };
            Some(c)
        })
        .boxed()
}

fn wild(loss: Ex) -> BoxedStrategy<ExCase> {
    let random = (
        wild_spec(48),
        prop_oneof![Just(None), wild_spec(48).prop_map(Some)],
        prop_oneof![Just(None), wild_spec(8).prop_map(Some)],
        proptest::collection::vec(any::<bool>(), 6),
        proptest::collection::vec(any_param(), 4),
        prop_oneof![Just(None), any_param().prop_map(|v| Some(v as i64))],
        (any_reduction(), any::<bool>(), 0..3u8),
    )
        .prop_flat_map(|(pred, target, extra, b, p, ignore, rest)| {
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
            (Just(pred), target, Just((extra, b, p, ignore, rest)))
        })
        .prop_map(
            move |(pred, target, (extra, b, p, ignore, (reduction, composite, jmode)))| ExCase {
                loss,
                mode: Mode::Wild,
                composite,
                pred,
                target,
                extra,
                f: [b[0], b[1], b[2], b[3], b[4], b[5]],
                p: [p[0], p[1], p[2], p[3]],
                ignore,
                jmode,
                reduction,
                want: Want::Anything,
            },
        );
    let perturbed = (
        valid(loss),
        proptest::collection::vec(any_param(), 4),
        any_reduction(),
        0..3u8,
    )
        .prop_flat_map(|(c, p, r, what)| {
            let (np, nt) = (c.pred.values.len(), c.target.values.len());
            (
                Just((c, p, r, what)),
                values(any_value(), np),
                values(prop_oneof![-3.0..8.0f64, any_value()].boxed(), nt),
            )
        })
        .prop_map(|((mut c, p, r, what), vp, vt)| {
            c.mode = Mode::Wild;
            c.want = Want::Anything;
            match what {
                0 => (c.p, c.reduction) = ([p[0], p[1], p[2], p[3]], r),
                1 => c.pred.values = vp,
                _ => c.target.values = vt.into_iter().map(f64::round).collect(),
            }
            c
        });
    prop_oneof![random, perturbed].boxed()
}

impl Case for ExCase {
    fn mode(&self) -> Mode {
        self.mode
    }
    fn composite(&self) -> bool {
        self.composite
    }
    fn check(&self) -> Result<bool, TestCaseError> {
        let mut args = vec![Arg::var(self.pred.tensor()), Arg::constant(self.target.tensor())];
        if let Some(e) = &self.extra {
            args.push(Arg::constant(e.tensor()));
        }
        let c = self.clone();
        let got = call(self.composite, args, move |t| c.run(&t[0], &t[1], t.get(2)));
        verify(self.loss.name(), &got, &self.want)
    }
}

fn cases(loss: Ex) -> BoxedStrategy<ExCase> {
    prop_oneof![4 => valid(loss), 2 => nan(loss), 4 => wild(loss)].boxed()
}

fn run(loss: Ex) {
    run_property(loss.name(), file!(), cases(loss));
}

#[test]
fn dice_options_are_robust() {
    run(Ex::DiceOptions);
}

#[test]
fn tversky_options_are_robust() {
    run(Ex::TverskyOptions);
}

#[test]
fn focal_tversky_options_are_robust() {
    run(Ex::FocalTverskyOptions);
}

#[test]
fn masked_dice_loss_is_robust() {
    run(Ex::MaskedDice);
}

#[test]
fn soft_cldice_loss_is_robust() {
    run(Ex::ClDice);
}

#[test]
fn soft_dice_cldice_loss_is_robust() {
    run(Ex::DiceClDice);
}

#[test]
fn hausdorff_dt_loss_is_robust() {
    run(Ex::Hausdorff);
}

#[test]
fn log_hausdorff_dt_loss_is_robust() {
    run(Ex::LogHausdorff);
}

#[test]
fn lovasz_hinge_loss_is_robust() {
    run(Ex::LovaszHinge);
}

#[test]
fn jaccard_loss_is_robust() {
    run(Ex::Jaccard);
}

#[test]
fn soft_bce_with_logits_loss_is_robust() {
    run(Ex::SoftBce);
}
