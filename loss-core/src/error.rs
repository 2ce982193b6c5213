//! The typed error of every loss, and its conversion into [`candle_core::Error`].
//!
//! Every check in [`crate::check`] returns a [`LossError`]; it names the loss, the argument and
//! the shapes involved so that all messages read alike. Losses return `candle_core::Result`, so
//! the error is wrapped into `candle_core::Error::Wrapped`, whose message is this error's
//! `Display` (Candle's `Wrapped` holds a `dyn Display`, so the typed value itself cannot be
//! downcast back out of it; match on the message or call the checks of [`crate::check`]).

use candle_core::{DType, Shape};

/// What was wrong with a loss call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LossError {
    /// Two tensors that must have exactly the same shape do not (no broadcasting is done).
    #[error("{loss}: `{arg}` has shape {got:?} but must match `{other}` of shape {expected:?}")]
    ShapeMismatch {
        /// The loss that refused the call (PyTorch's function name).
        loss: &'static str,
        /// The argument at fault.
        arg: &'static str,
        /// What the argument has.
        got: Shape,
        /// The argument it must agree with.
        other: &'static str,
        /// What was expected.
        expected: Shape,
    },
    /// A tensor has the wrong rank or layout of dimensions.
    #[error("{loss}: `{arg}` has shape {got:?}, expected {expected}")]
    BadShape {
        /// The loss that refused the call (PyTorch's function name).
        loss: &'static str,
        /// The argument at fault.
        arg: &'static str,
        /// What the argument has.
        got: Shape,
        /// What was expected.
        expected: String,
    },
    /// A tensor has a dtype the loss does not accept.
    #[error("{loss}: `{arg}` has dtype {got:?}, expected {expected}")]
    BadDType {
        /// The loss that refused the call (PyTorch's function name).
        loss: &'static str,
        /// The argument at fault.
        arg: &'static str,
        /// What the argument has.
        got: DType,
        /// What was expected.
        expected: &'static str,
    },
    /// Two float tensors of one call have different dtypes (no silent conversion is done).
    #[error("{loss}: `{arg}` has dtype {got:?} but `{other}` has dtype {expected:?}")]
    DTypeMismatch {
        /// The loss that refused the call (PyTorch's function name).
        loss: &'static str,
        /// The argument at fault.
        arg: &'static str,
        /// What the argument has.
        got: DType,
        /// The argument it must agree with.
        other: &'static str,
        /// What was expected.
        expected: DType,
    },
    /// A scalar parameter is outside its valid range.
    #[error("{loss}: `{arg}` = {value} is invalid, expected {expected}")]
    BadParam {
        /// The loss that refused the call (PyTorch's function name).
        loss: &'static str,
        /// The argument at fault.
        arg: &'static str,
        /// The value given.
        value: f64,
        /// What was expected.
        expected: &'static str,
    },
    /// A class index lies outside `[0, C)` and is not `ignore_index`.
    #[error("{loss}: `{arg}` holds class index {index}, outside [0, {classes}) (target shape {shape:?})")]
    IndexOutOfRange {
        /// The loss that refused the call (PyTorch's function name).
        loss: &'static str,
        /// The argument at fault.
        arg: &'static str,
        /// The offending class index.
        index: i64,
        /// The number of classes C.
        classes: usize,
        /// The shape of the tensor holding the values.
        shape: Shape,
    },
    /// Tensor values outside the domain the loss is defined on (e.g. probabilities outside [0, 1]).
    #[error("{loss}: `{arg}` has values outside {expected} (shape {shape:?})")]
    BadValues {
        /// The loss that refused the call (PyTorch's function name).
        loss: &'static str,
        /// The argument at fault.
        arg: &'static str,
        /// What was expected.
        expected: &'static str,
        /// The shape of the tensor holding the values.
        shape: Shape,
    },
    /// A reduction the loss does not support (e.g. `batchmean` outside `kl_div`).
    #[error("{loss}: reduction `{got}` is not supported, expected one of {expected}")]
    BadReduction {
        /// The loss that refused the call (PyTorch's function name).
        loss: &'static str,
        /// What the argument has.
        got: String,
        /// What was expected.
        expected: &'static str,
    },
    /// Options that cannot be combined.
    #[error("{loss}: {message}")]
    BadOptions {
        /// The loss that refused the call (PyTorch's function name).
        loss: &'static str,
        /// What cannot be combined, in words.
        message: String,
    },
}

impl From<LossError> for candle_core::Error {
    fn from(e: LossError) -> Self {
        candle_core::Error::Wrapped(Box::new(e))
    }
}

/// `Result` of a loss call: the crate returns `candle_core::Result` so losses compose with `?`.
pub type Result<T> = candle_core::Result<T>;
