//! Every kind of bad input is an `Err` whose message names the loss, the argument and the shapes.

use candle_core::{DType, Device, Tensor};
use loss_core::*;

fn t(v: &[f32]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

fn err(r: candle_core::Result<Tensor>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got a value of shape {:?}", v.dims()),
        Err(e) => e.to_string(),
    }
}

fn has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} lacks {p:?}");
    }
}

#[test]
fn shape_mismatch_is_not_broadcast() {
    let a = t(&[1.0, 2.0, 3.0]).reshape((3, 1)).unwrap();
    let b = t(&[1.0, 2.0, 3.0]);
    has(
        &err(mse_loss(&a, &b, Reduction::Mean)),
        &["mse_loss", "`target`", "[3]", "[3, 1]"],
    );
    has(&err(l1_loss(&a, &b, Reduction::Mean)), &["l1_loss", "[3]", "[3, 1]"]);
    has(&err(kl_div(&a, &b, false, Reduction::Mean)), &["kl_div"]);
}

#[test]
fn dtypes() {
    let a = t(&[1.0, 2.0]);
    let b = a.to_dtype(DType::F64).unwrap();
    has(
        &err(mse_loss(&a, &b, Reduction::Mean)),
        &["mse_loss", "dtype", "F64", "F32"],
    );
    let i = Tensor::new(&[1u32, 0], &Device::Cpu).unwrap();
    has(
        &err(l1_loss(&i, &i, Reduction::Sum)),
        &["l1_loss", "`input`", "U32", "float"],
    );
    let logits = t(&[0.1, 0.2, 0.3, 0.4]).reshape((2, 2)).unwrap();
    let float_target = t(&[0.0, 1.0]);
    has(
        &err(nll_loss(&logits, &float_target, None, -100, Reduction::Mean)),
        &["nll_loss", "`target`", "F32", "class indices"],
    );
}

#[test]
fn parameters() {
    let a = t(&[1.0, 2.0]);
    has(
        &err(smooth_l1_loss(&a, &a, -0.5, Reduction::Mean)),
        &["smooth_l1_loss", "`beta`", "-0.5", ">= 0"],
    );
    has(
        &err(huber_loss(&a, &a, 0.0, Reduction::Mean)),
        &["huber_loss", "`delta`", "> 0"],
    );
    has(
        &err(sigmoid_focal_loss(&a, &a, 0.25, -1.0, Reduction::Mean)),
        &["sigmoid_focal_loss", "`gamma`"],
    );
    has(
        &err(sigmoid_focal_loss(&a, &a, 1.5, 2.0, Reduction::Mean)),
        &["sigmoid_focal_loss", "`alpha`", "1.5", "-1"],
    );
    assert!(sigmoid_focal_loss(&a, &a, -1.0, 2.0, Reduction::Mean).is_ok());
    let logits = t(&[0.1, 0.2, 0.3, 0.4]).reshape((2, 2)).unwrap();
    let y = Tensor::new(&[0i64, 1], &Device::Cpu).unwrap();
    has(
        &err(cross_entropy(&logits, &y, None, -100, 1.5, Reduction::Mean)),
        &["cross_entropy", "`label_smoothing`", "[0, 1]"],
    );
    let w = t(&[1.0, 2.0, 3.0]);
    has(
        &err(cross_entropy(&logits, &y, Some(&w), -100, 0.0, Reduction::Mean)),
        &["cross_entropy", "`weight`", "[3]", "[2]"],
    );
    has(
        &err(softmax_focal_loss(&logits, &y, Some(&w), 2.0, -100, Reduction::Mean)),
        &["softmax_focal_loss", "`alpha`"],
    );
}

#[test]
fn class_indices_out_of_range() {
    let logits = t(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]).reshape((2, 3)).unwrap();
    let y = Tensor::new(&[0i64, 3], &Device::Cpu).unwrap();
    has(
        &err(cross_entropy(&logits, &y, None, -100, 0.0, Reduction::Mean)),
        &["cross_entropy", "`target`", "index 3", "[0, 3)"],
    );
    let y = Tensor::new(&[-1i64, 0], &Device::Cpu).unwrap();
    has(
        &err(nll_loss(&logits, &y, None, -100, Reduction::Mean)),
        &["nll_loss", "index -1"],
    );
    // ... unless it is ignore_index.
    assert!(nll_loss(&logits, &y, None, -1, Reduction::Mean).is_ok());
    let y = Tensor::new(&[0i64, 1, 2], &Device::Cpu).unwrap();
    has(
        &err(cross_entropy(&logits, &y, None, -100, 0.0, Reduction::Mean)),
        &["cross_entropy", "`target`", "[3]", "[2]"],
    );
}

#[test]
fn values_and_reductions() {
    let p = t(&[0.5, 1.5]);
    let y = t(&[0.0, 1.0]);
    has(
        &err(binary_cross_entropy(&p, &y, None, Reduction::Mean)),
        &["binary_cross_entropy", "`input`", "[0, 1]"],
    );
    has(
        &err(mse_loss(&y, &y, Reduction::BatchMean)),
        &["mse_loss", "batchmean", "kl_div"],
    );
    has(
        &err(Reduction::parse("l1_loss", "avg").map(|_| y.clone())),
        &["l1_loss", "`avg`"],
    );
    let probs = t(&[0.5, 0.5, 0.2, 0.8]).reshape((2, 2)).unwrap();
    has(
        &err(cross_entropy(&probs, &probs, None, 0, 0.0, Reduction::Mean)),
        &["cross_entropy", "ignore_index"],
    );
    let pw = t(&[2.0, 3.0]);
    let x = t(&[0.0; 6]).reshape((2, 3)).unwrap();
    has(
        &err(binary_cross_entropy_with_logits(
            &x,
            &x,
            None,
            Some(&pw),
            Reduction::Mean,
        )),
        &["pos_weight", "[2]", "[3]"],
    );
}

#[test]
fn typed_error_converts_into_candle_error() {
    let e: candle_core::Error = LossError::BadParam {
        loss: "huber_loss",
        arg: "delta",
        value: -1.0,
        expected: "a finite value > 0",
    }
    .into();
    assert_eq!(
        e.to_string(),
        "huber_loss: `delta` = -1 is invalid, expected a finite value > 0"
    );
}

/// Every kind of `LossError` that loss-core's losses return, with its whole message: the loss,
/// the argument and the shapes (or the value) are in it, and the error is the typed `LossError`
/// wrapped into `candle_core::Error::Wrapped` (not a raw Candle error).
#[test]
fn every_error_kind_has_its_full_message() {
    let d = Device::Cpu;
    let z = |s: &[usize], dt: DType| Tensor::zeros(s, dt, &d).unwrap();
    let (a31, b3, b3d, i3) = (
        z(&[3, 1], DType::F32),
        z(&[3], DType::F32),
        z(&[3], DType::F64),
        z(&[3], DType::U32),
    );
    let (s, l23, pp) = (
        t(&[1.0]).reshape(()).unwrap(),
        z(&[2, 3], DType::F32),
        z(&[2, 2], DType::F32),
    );
    let y = Tensor::new(&[0i64, 3], &d).unwrap();
    let pr = t(&[0.5, 1.5]);
    let cases: Vec<(&str, candle_core::Result<Tensor>, &str)> = vec![
        (
            "ShapeMismatch",
            mse_loss(&a31, &b3, Reduction::Mean),
            "mse_loss: `target` has shape [3] but must match `input` of shape [3, 1]",
        ),
        (
            "BadShape",
            cross_entropy(&s, &y, None, -100, 0.0, Reduction::Mean),
            "cross_entropy: `input` has shape [], expected [N, C], [N, C, d1, ...] or unbatched [C]",
        ),
        (
            "BadDType",
            l1_loss(&i3, &i3, Reduction::Sum),
            "l1_loss: `input` has dtype U32, expected a float dtype (f32 or f64)",
        ),
        (
            "DTypeMismatch",
            mse_loss(&b3, &b3d, Reduction::Mean),
            "mse_loss: `target` has dtype F64 but `input` has dtype F32",
        ),
        (
            "BadParam",
            smooth_l1_loss(&b3, &b3, -0.5, Reduction::Mean),
            "smooth_l1_loss: `beta` = -0.5 is invalid, expected a finite value >= 0",
        ),
        (
            "IndexOutOfRange",
            cross_entropy(&l23, &y, None, -100, 0.0, Reduction::Mean),
            "cross_entropy: `target` holds class index 3, outside [0, 3) (target shape [2])",
        ),
        (
            "BadValues",
            binary_cross_entropy(&pr, &pr, None, Reduction::Mean),
            "binary_cross_entropy: `input` has values outside [0, 1] (probabilities) (shape [2])",
        ),
        (
            "BadReduction",
            mse_loss(&b3, &b3, Reduction::BatchMean),
            "mse_loss: reduction `batchmean` is not supported, expected one of \"none\", \"mean\" or \"sum\" \
             (\"batchmean\" is for kl_div alone)",
        ),
        (
            "BadOptions",
            cross_entropy(&pp, &pp, None, 0, 0.0, Reduction::Mean),
            "cross_entropy: `ignore_index` = 0 is only for class-index targets; probability targets [2, 2] \
             need it negative (default -100)",
        ),
        (
            "BadOptions",
            EntropyBase::parse("10").map(|_| s.clone()),
            "entropy: `base` = \"10\" is invalid, expected \"e\" or \"2\"",
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
