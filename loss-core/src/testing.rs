//! Shared machinery of the robustness property tests (`tests/robustness*.rs` of loss-core,
//! loss-bbox and loss-seg), behind the `testing` feature that the three crates' dev-dependencies
//! turn on (it adds proptest); not part of the API.
//!
//! Every property test draws cases in three modes ([`Mode`]) and checks one call per case:
//!
//! - `Valid`: finite inputs inside the loss's domain (magnitudes bounded so that the exact result
//!   is representable in f32), valid parameters. The call must return `Ok` with a finite value and
//!   finite gradients (one backward of the summed output), except where the mathematics itself
//!   is undefined or infinite; each such exception is named by the case and documented on the
//!   loss.
//! - `Nan`: a valid case with NaN written into some entries that the output depends on. The call
//!   must return `Ok`, and the output must be NaN where it depends on them (every such element of
//!   an elementwise loss, the scalar of a reduction) — never a finite number.
//! - `Wild`: anything: random ranks 0 to 5 with empty dimensions, shapes that do not match,
//!   dtypes (f32, f64, u8, u32, i64) where they do not belong, values from the whole f32 range
//!   (0, subnormals, 1e-30, 1e30, f32::MAX, negatives, NaN, ±inf), parameters inside and outside
//!   their valid ranges. The call must not panic, and an `Err` must be a typed `LossError`
//!   (`candle_core::Error::Wrapped`) whose message starts with the loss's name.
//!
//! Every case runs on the default path (the fused CPU kernels) or, chosen at random, inside
//! `crate::kernel::with_path(Path::Composite, ..)` (the plain-Candle path other devices take).
//!
//! The number of cases per loss is [`cases`] (`LOSS_PROPTEST_CASES` overrides it for a longer
//! run); each test counts its calls and fails if fewer than that many ran.
// Test support: its items are documented by the module, not one by one.
#![allow(missing_docs)]

use crate::Reduction;
use candle_core::{DType, Device, Tensor, Var};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

/// How a case was drawn (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Finite, in the domain, valid parameters: finite value and gradient.
    Valid,
    /// A valid case with NaN put into entries the output depends on: NaN out.
    Nan,
    /// Anything: no panic, typed errors.
    Wild,
}

/// The default number of cases per loss: over 100,000.
pub const DEFAULT_CASES: u32 = 100_352;

/// Cases per loss: `LOSS_PROPTEST_CASES` when set (a longer run), else [`DEFAULT_CASES`].
pub fn cases() -> u32 {
    std::env::var("LOSS_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// Counts of one property test: calls per mode and per path.
#[derive(Debug, Default)]
pub struct Tally {
    valid: AtomicUsize,
    nan: AtomicUsize,
    wild: AtomicUsize,
    composite: AtomicUsize,
    ok: AtomicUsize,
}

impl Tally {
    fn add(&self, mode: Mode, composite: bool, ok: bool) {
        let c = match mode {
            Mode::Valid => &self.valid,
            Mode::Nan => &self.nan,
            Mode::Wild => &self.wild,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if composite {
            self.composite.fetch_add(1, Ordering::Relaxed);
        }
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn total(&self) -> usize {
        self.valid.load(Ordering::Relaxed) + self.nan.load(Ordering::Relaxed) + self.wild.load(Ordering::Relaxed)
    }
}

/// A case of any family: what [`run_property`] needs to know about it.
pub trait Case: std::fmt::Debug + Clone {
    /// The mode it was drawn in.
    fn mode(&self) -> Mode;
    /// Whether it runs on the composite path.
    fn composite(&self) -> bool;
    /// Runs the call and checks the properties of its mode.
    fn check(&self) -> Result<bool, TestCaseError>;
}

/// Runs `cases()` cases of `strategy` through [`Case::check`], then prints and checks the count.
///
/// Panics (failing the test) with proptest's minimal failing case.
pub fn run_property<C: Case>(loss: &str, source_file: &'static str, strategy: impl Strategy<Value = C>) {
    let n = cases();
    let config = Config {
        cases: n,
        source_file: Some(source_file),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        max_shrink_iters: 4096,
        // The Nan strategies filter out cases with nothing to poison; a long run must not abort.
        max_local_rejects: u32::MAX,
        max_global_rejects: u32::MAX,
        ..Config::default()
    };
    let tally = Tally::default();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |case| {
        let ok = case.check()?;
        tally.add(case.mode(), case.composite(), ok);
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, case)) => panic!("{loss}: property failed: {why}\nminimal case: {case:#?}"),
        Err(TestError::Abort(why)) => panic!("{loss}: aborted: {why}"),
    }
    let total = tally.total();
    eprintln!(
        "robustness {loss}: {total} inputs (valid {}, nan {}, wild {}; composite path {}; Ok {})",
        tally.valid.load(Ordering::Relaxed),
        tally.nan.load(Ordering::Relaxed),
        tally.wild.load(Ordering::Relaxed),
        tally.composite.load(Ordering::Relaxed),
        tally.ok.load(Ordering::Relaxed),
    );
    assert!(total >= n as usize, "{loss}: only {total} of {n} inputs ran");
}

// ---------------------------------------------------------------------------------------------
// Values and shapes.

/// Special values of the f32 range (finite).
pub const SPECIAL_FINITE: &[f64] = &[
    0.0,
    -0.0,
    1.401_298_5e-45, // smallest f32 subnormal
    -1.401_298_5e-45,
    1e-40, // f32 subnormal
    1.175_494_4e-38,
    1e-30,
    -1e-30,
    1e-7,
    0.5,
    1.0,
    -1.0,
    2.0,
    1e7,
    -1e7,
    1e30,
    -1e30,
    3.402_823_466e38, // f32::MAX
    -3.402_823_466e38,
];

/// A value from anywhere in the f32 range, NaN and ±inf included.
pub fn any_value() -> BoxedStrategy<f64> {
    prop_oneof![
        3 => proptest::sample::select(SPECIAL_FINITE),
        1 => Just(f64::NAN),
        1 => prop_oneof![Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
        4 => -10.0..10.0f64,
        3 => log_uniform(-45.0, 38.5, true),
    ]
    .boxed()
}

/// `±10^U(lo, hi)` (with a random sign when `signed`).
pub fn log_uniform(lo: f64, hi: f64, signed: bool) -> BoxedStrategy<f64> {
    (lo..hi, any::<bool>())
        .prop_map(move |(e, neg)| {
            let v = 10f64.powf(e);
            if signed && neg {
                -v
            } else {
                v
            }
        })
        .boxed()
}

/// A finite value with `|v| <= bound` (special values, uniform and log-uniform).
pub fn finite(bound: f64) -> BoxedStrategy<f64> {
    let special: Vec<f64> = SPECIAL_FINITE.iter().copied().filter(|v| v.abs() <= bound).collect();
    let hi = bound.log10();
    prop_oneof![
        2 => proptest::sample::select(special),
        2 => prop_oneof![Just(bound), Just(-bound)],
        4 => -10f64.min(bound)..10f64.min(bound),
        3 => log_uniform(-45.0, hi, true),
    ]
    .boxed()
}

/// A finite value in `[lo, hi]` with the ends, subnormals near `lo` and values close to `hi`.
pub fn in_range(lo: f64, hi: f64) -> BoxedStrategy<f64> {
    let w = hi - lo;
    prop_oneof![
        2 => prop_oneof![Just(lo), Just(hi)],
        1 => prop_oneof![
            Just(lo + 1.401_298_5e-45 * w),
            Just(lo + 1e-30 * w),
            Just(lo + 1e-7 * w),
            Just(hi - 1e-7 * w),
        ],
        4 => lo..=hi,
        1 => log_uniform(-45.0, 0.0, false).prop_map(move |u| lo + u * w),
    ]
    .boxed()
}

/// `n` values of `v`.
pub fn values(v: BoxedStrategy<f64>, n: usize) -> BoxedStrategy<Vec<f64>> {
    proptest::collection::vec(v, n).boxed()
}

/// A dimension: mostly 1 to 3, sometimes 0 (empty) or 4.
pub fn dim() -> BoxedStrategy<usize> {
    prop_oneof![1 => Just(0usize), 6 => 1..=3usize, 1 => Just(4usize)].boxed()
}

/// A shape of rank in `ranks`, at most `max_elems` elements (larger dims are cut to 1).
pub fn shape(ranks: std::ops::RangeInclusive<usize>, max_elems: usize) -> BoxedStrategy<Vec<usize>> {
    ranks
        .prop_flat_map(|r| proptest::collection::vec(dim(), r))
        .prop_map(move |mut s| {
            cap(&mut s, max_elems);
            s
        })
        .boxed()
}

/// Shrinks dimensions (from the last) to 1 until the product is at most `max_elems`.
pub fn cap(s: &mut [usize], max_elems: usize) {
    let mut i = s.len();
    while s.iter().product::<usize>() > max_elems && i > 0 {
        i -= 1;
        s[i] = s[i].min(1);
    }
}

/// Number of elements of a shape.
pub fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

/// f32 or f64.
pub fn float_dtype() -> BoxedStrategy<DType> {
    prop_oneof![Just(DType::F32), Just(DType::F64)].boxed()
}

/// Any dtype a tensor may come with (floats twice as likely).
pub fn any_dtype() -> BoxedStrategy<DType> {
    prop_oneof![
        4 => float_dtype(),
        1 => prop_oneof![Just(DType::U8), Just(DType::U32), Just(DType::I64)],
    ]
    .boxed()
}

/// u8, u32 or i64.
pub fn index_dtype() -> BoxedStrategy<DType> {
    prop_oneof![Just(DType::U8), Just(DType::U32), Just(DType::I64)].boxed()
}

/// `None`, `Mean` or `Sum`.
pub fn reduction() -> BoxedStrategy<Reduction> {
    prop_oneof![Just(Reduction::None), Just(Reduction::Mean), Just(Reduction::Sum)].boxed()
}

/// Any reduction, `BatchMean` included.
pub fn any_reduction() -> BoxedStrategy<Reduction> {
    prop_oneof![4 => reduction(), 1 => Just(Reduction::BatchMean)].boxed()
}

/// A scalar parameter from anywhere: valid or not, NaN, ±inf, huge, negative, zero.
pub fn any_param() -> BoxedStrategy<f64> {
    prop_oneof![
        2 => any_value(),
        2 => -2.0..2.0f64,
        1 => Just(-1.0),
        1 => Just(f64::MAX),
        1 => Just(1e300),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// Tensors.

/// A tensor description: dtype, shape and values (as f64; indices are rounded and saturated).
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The dtype.
    pub dtype: DType,
    /// The shape.
    pub shape: Vec<usize>,
    /// `numel(shape)` values (cycled or cut when the counts differ).
    pub values: Vec<f64>,
}

impl Spec {
    /// A description; `values` is cycled or cut to the shape's element count.
    pub fn new(dtype: DType, shape: Vec<usize>, values: Vec<f64>) -> Self {
        Self { dtype, shape, values }
    }

    /// The tensor on the CPU.
    pub fn tensor(&self) -> Tensor {
        let n = numel(&self.shape);
        let vals: Vec<f64> = if self.values.is_empty() {
            vec![0.0; n]
        } else {
            self.values.iter().copied().cycle().take(n).collect()
        };
        let dev = &Device::Cpu;
        let shape = self.shape.as_slice();
        match self.dtype {
            DType::F64 => Tensor::from_vec(vals, shape, dev),
            DType::F32 => Tensor::from_vec(vals.iter().map(|&v| v as f32).collect::<Vec<_>>(), shape, dev),
            DType::U8 => Tensor::from_vec(vals.iter().map(|&v| v as u8).collect::<Vec<_>>(), shape, dev),
            DType::U32 => Tensor::from_vec(vals.iter().map(|&v| v as u32).collect::<Vec<_>>(), shape, dev),
            DType::I64 => Tensor::from_vec(vals.iter().map(|&v| v as i64).collect::<Vec<_>>(), shape, dev),
            other => Tensor::from_vec(vals, shape, dev).and_then(|t| t.to_dtype(other)),
        }
        .expect("building a test tensor")
    }
}

/// A wild tensor: any dtype, any shape of rank 0 to 5, any values.
pub fn wild_spec(max_elems: usize) -> BoxedStrategy<Spec> {
    (any_dtype(), shape(0..=5, max_elems))
        .prop_flat_map(|(dt, s)| {
            let n = numel(&s);
            values(any_value(), n).prop_map(move |v| Spec::new(dt, s.clone(), v))
        })
        .boxed()
}

// ---------------------------------------------------------------------------------------------
// Running one call.

/// The result of one call and its backward.
#[derive(Debug)]
pub enum Got {
    /// The call or its backward panicked.
    Panicked(String),
    /// The call returned an error.
    Err(candle_core::Error),
    /// The call returned a value but the backward failed.
    BackwardErr(candle_core::Error),
    /// The value (flattened, as f64) and the gradient of each argument that asked for one.
    Ok {
        /// Output dims.
        dims: Vec<usize>,
        /// Output values.
        value: Vec<f64>,
        /// `(argument index, gradient values)`.
        grads: Vec<(usize, Vec<f64>)>,
    },
}

/// One argument of a call: a tensor, and whether its gradient is wanted (floats only).
pub struct Arg {
    /// The tensor.
    pub tensor: Tensor,
    /// Whether to track it and read its gradient.
    pub grad: bool,
}

impl Arg {
    /// An argument whose gradient is read (when it is a float tensor).
    pub fn var(t: Tensor) -> Self {
        Self { tensor: t, grad: true }
    }
    /// A constant argument.
    pub fn constant(t: Tensor) -> Self {
        Self { tensor: t, grad: false }
    }
}

fn flat(t: &Tensor) -> candle_core::Result<Vec<f64>> {
    t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "<non-string panic payload>".into())
}

/// Runs `f` on `args` (float arguments with `grad` tracked as `Var`s), then one backward of the
/// summed output; on the composite path when `composite`. Panics are caught.
pub fn call(composite: bool, args: Vec<Arg>, f: impl FnOnce(&[Tensor]) -> candle_core::Result<Tensor>) -> Got {
    let run = move || -> Got {
        let mut tracked = Vec::new();
        let tensors: Vec<Tensor> = args
            .iter()
            .enumerate()
            .map(|(i, a)| {
                if a.grad && a.tensor.dtype().is_float() {
                    let v = Var::from_tensor(&a.tensor).expect("var");
                    tracked.push((i, v.as_tensor().clone()));
                    v.as_tensor().clone()
                } else {
                    a.tensor.clone()
                }
            })
            .collect();
        let out = match catch_unwind(AssertUnwindSafe(|| f(&tensors))) {
            Err(p) => return Got::Panicked(panic_text(p)),
            Ok(Err(e)) => return Got::Err(e),
            Ok(Ok(out)) => out,
        };
        let back = catch_unwind(AssertUnwindSafe(|| -> candle_core::Result<_> {
            let value = flat(&out)?;
            let store = out.sum_all()?.backward()?;
            let mut grads = Vec::new();
            for (i, t) in &tracked {
                let g = match store.get(t) {
                    Some(g) => flat(g)?,
                    None => vec![0.0; t.elem_count()],
                };
                grads.push((*i, g));
            }
            Ok((value, grads))
        }));
        match back {
            Err(p) => Got::Panicked(format!("in backward: {}", panic_text(p))),
            Ok(Err(e)) => Got::BackwardErr(e),
            Ok(Ok((value, grads))) => Got::Ok {
                dims: out.dims().to_vec(),
                value,
                grads,
            },
        }
    };
    if composite {
        crate::kernel::with_path(crate::kernel::Path::Composite, run)
    } else {
        run()
    }
}

/// Where the output must be NaN (Nan mode) or finite (Valid mode).
#[derive(Debug, Clone, PartialEq)]
pub enum Want {
    /// Anything (Wild mode): no panic, typed errors.
    Anything,
    /// `Ok`, every value finite, every gradient finite.
    Finite,
    /// `Ok`, every value NaN (a 0/0 the loss documents, e.g. the mean of nothing); gradients
    /// finite.
    AllNan,
    /// `Ok`, NaN at least where the mask is set (flat output positions; the mask has the
    /// output's size).
    NanAt(Vec<bool>),
    /// `Ok`, at least one NaN in the output.
    SomeNan,
    /// `Ok`, at least one NaN in each marked row of `width` consecutive output values.
    NanInRows(Vec<bool>, usize),
}

/// Checks `got` for `loss` against `want`; returns whether the call was `Ok`.
pub fn verify(loss: &str, got: &Got, want: &Want) -> Result<bool, TestCaseError> {
    match got {
        Got::Panicked(msg) => Err(TestCaseError::fail(format!("{loss} panicked: {msg}"))),
        Got::BackwardErr(e) => Err(TestCaseError::fail(format!("{loss}: backward failed: {e}"))),
        Got::Err(e) => {
            typed(loss, e)?;
            if *want != Want::Anything {
                return Err(TestCaseError::fail(format!("{loss}: expected Ok, got error: {e}")));
            }
            Ok(false)
        }
        Got::Ok { dims, value, grads } => {
            match want {
                Want::Anything => {}
                Want::Finite => {
                    if let Some(i) = value.iter().position(|v| !v.is_finite()) {
                        return Err(TestCaseError::fail(format!(
                            "{loss}: value[{i}] = {} is not finite (output {dims:?})",
                            value[i]
                        )));
                    }
                    finite_grads(loss, grads)?;
                }
                Want::AllNan => {
                    if let Some(i) = value.iter().position(|v| !v.is_nan()) {
                        return Err(TestCaseError::fail(format!(
                            "{loss}: value[{i}] = {}, expected NaN (output {dims:?})",
                            value[i]
                        )));
                    }
                    finite_grads(loss, grads)?;
                }
                Want::NanAt(mask) => {
                    if mask.len() != value.len() {
                        return Err(TestCaseError::fail(format!(
                            "{loss}: output has {} values {dims:?}, expected {}",
                            value.len(),
                            mask.len()
                        )));
                    }
                    if let Some(i) = (0..mask.len()).find(|&i| mask[i] && !value[i].is_nan()) {
                        return Err(TestCaseError::fail(format!(
                            "{loss}: NaN input gave value[{i}] = {}, expected NaN (output {dims:?})",
                            value[i]
                        )));
                    }
                }
                Want::NanInRows(rows, width) => {
                    if rows.len() * width != value.len() {
                        return Err(TestCaseError::fail(format!(
                            "{loss}: output has {} values {dims:?}, expected {} rows of {width}",
                            value.len(),
                            rows.len()
                        )));
                    }
                    if let Some(r) =
                        (0..rows.len()).find(|&r| rows[r] && !value[r * width..][..*width].iter().any(|v| v.is_nan()))
                    {
                        return Err(TestCaseError::fail(format!(
                            "{loss}: NaN input gave no NaN in output row {r}: {:?} (output {dims:?})",
                            &value[r * width..][..*width]
                        )));
                    }
                }
                Want::SomeNan => {
                    if !value.iter().any(|v| v.is_nan()) {
                        return Err(TestCaseError::fail(format!(
                            "{loss}: NaN input gave no NaN in the output {value:?} {dims:?}"
                        )));
                    }
                }
            }
            Ok(true)
        }
    }
}

fn finite_grads(loss: &str, grads: &[(usize, Vec<f64>)]) -> Result<(), TestCaseError> {
    for (arg, g) in grads {
        if let Some(i) = g.iter().position(|v| !v.is_finite()) {
            return Err(TestCaseError::fail(format!(
                "{loss}: gradient of argument {arg} at {i} is {}",
                g[i]
            )));
        }
    }
    Ok(())
}

/// An error must be a typed `LossError` (wrapped into `candle_core::Error::Wrapped`) whose
/// message starts with the loss's name.
pub fn typed(loss: &str, e: &candle_core::Error) -> Result<(), TestCaseError> {
    let msg = e.to_string();
    if !matches!(e, candle_core::Error::Wrapped(_)) || !msg.starts_with(&format!("{loss}: ")) {
        return Err(TestCaseError::fail(format!(
            "{loss}: error is not a typed LossError naming the loss: {msg:?} ({e:?})"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Fused == composite for losses of several float inputs (tests/fused*.rs).

/// A loss of several float inputs, each differentiated, with its reduction.
pub type MultiLoss<'a> = &'a dyn Fn(&[Tensor], Reduction) -> candle_core::Result<Tensor>;

fn flat_f64(t: &Tensor) -> Vec<f64> {
    flat(t).expect("a float tensor")
}

/// The value of `f` on `path` and its gradients w.r.t. every input (zeros where the loss gives
/// an input none), after one backward of `Σ upstreamᵢ·outᵢ` with `upstreamᵢ = upstream·(1 + i mod 3)`
/// (an upstream gradient other than 1, different per item of an unreduced loss).
pub fn value_and_grads(
    path: crate::kernel::Path,
    f: MultiLoss<'_>,
    xs: &[Tensor],
    r: Reduction,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    crate::kernel::with_path(path, || {
        let vars: Vec<Var> = xs.iter().map(|x| Var::from_tensor(x).expect("var")).collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = f(&ts, r).expect("the loss");
        let n = out.elem_count();
        let up: Vec<f64> = (0..n).map(|i| 1.5 * (1 + i % 3) as f64).collect();
        let up = Tensor::from_vec(up, out.shape(), out.device())
            .and_then(|u| u.to_dtype(out.dtype()))
            .expect("upstream");
        let g = out
            .mul(&up)
            .and_then(|o| o.sum_all())
            .and_then(|s| s.backward())
            .expect("backward");
        let grads = ts
            .iter()
            .map(|t| g.get(t).map_or_else(|| vec![0.0; t.elem_count()], flat_f64))
            .collect();
        (flat_f64(&out), grads)
    })
}

/// Asserts that `a` and `b` agree within `abs + rel·max(|a|, |b|)` (NaN equals NaN).
pub fn assert_close(what: &str, a: &[f64], b: &[f64], rel: f64, abs: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let ok = x == y || (x.is_nan() && y.is_nan()) || (x - y).abs() <= abs + rel * x.abs().max(y.abs());
        assert!(ok, "{what}[{i}]: fused {x} vs composite {y}");
    }
}

/// Asserts that the fused and the composite path of `f` agree on `xs` in value and in the
/// gradient w.r.t. every input ([`value_and_grads`]), within `rel` and `abs`.
pub fn assert_paths_agree(what: &str, f: MultiLoss<'_>, xs: &[Tensor], r: Reduction, rel: f64, abs: f64) {
    use crate::kernel::Path;
    let fused = value_and_grads(Path::Fused, f, xs, r);
    let comp = value_and_grads(Path::Composite, f, xs, r);
    assert_close(&format!("{what} {r} value"), &fused.0, &comp.0, rel, abs);
    for (k, (a, b)) in fused.1.iter().zip(&comp.1).enumerate() {
        assert_close(&format!("{what} {r} d/dinput{k}"), a, b, rel, abs);
    }
}
