//! Jaccard (soft IoU) loss in `segmentation_models_pytorch`'s form (smp 0.6.0 `JaccardLoss`),
//! with its three modes; the soft Jaccard index goes back to Rahman & Wang, "Optimizing
//! Intersection-Over-Union in Deep Neural Networks for Image Segmentation", ISVC 2016.
//!
//! Per class `c`, summing over the batch *and* space:
//!
//! ```text
//! S_p = Σp,  S_g = Σg,  D = Σ|p − g|,  I = (S_p + S_g − D) / 2
//! score_c = (I + smooth) / max(S_p + S_g − I + smooth, eps)
//! loss_c  = 1 − score_c            (log_loss: −log(max(score_c, eps)))
//! loss_c  = 0 where S_g = 0        (the class still counts in the mean)
//! loss    = mean over the classes kept by `classes`, or Σ w_c loss_c / Σ w_c with class_weights
//! ```
//!
//! `|·|` has gradient `sign(u)` with `sign(0) = 0` and the `max(·, eps)` clamps PyTorch's `clamp`
//! gradient (1 on the bound), so values and gradients match smp's autograd.
//!
//! Multiclass from logits on the CPU (f32/f64), the sums `S_p`, `S_g`, `D` come from one fused
//! pass of the shared overlap kernel (softmax over the channels, one-hot labels, `ignore_index`;
//! its backward is one more pass); the other modes, and other devices, build them from Candle ops.

use crate::fused::{OverlapForm, OverlapOp};
use crate::prepare::softmax_channels;
use candle_core::{DType, Result, Tensor};
use loss_core::{check, kernel, ops, LossError};

/// smp's three modes of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JaccardMode {
    /// One foreground channel: `pred` `[N, 1, d1...]`, target 0/1 of the same shape; sigmoid.
    Binary,
    /// Exclusive classes: `pred` `[N, C, d1...]`, target class indices `[N, d1...]`; softmax.
    Multiclass,
    /// Independent channels: `pred` and target 0/1 `[N, C, d1...]`; sigmoid.
    Multilabel,
}

impl<'de> serde::Deserialize<'de> for JaccardMode {
    /// From smp's names ([`JaccardMode::parse`]).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        loss_core::config::deserialize_parsed(d, |s| Self::parse("jaccard_loss", s))
    }
}

impl JaccardMode {
    /// Parses smp's names `"binary"`, `"multiclass"`, `"multilabel"`.
    ///
    /// # Errors
    /// Any other name.
    pub fn parse(loss: &'static str, s: &str) -> Result<Self> {
        match s {
            "binary" => Ok(Self::Binary),
            "multiclass" => Ok(Self::Multiclass),
            "multilabel" => Ok(Self::Multilabel),
            other => Err(LossError::BadOptions {
                loss,
                message: format!("unknown mode {other:?} (expected \"binary\", \"multiclass\" or \"multilabel\")"),
            }
            .into()),
        }
    }
}

loss_core::loss_config! {
    /// smp's `JaccardLoss` options with smp's defaults; also the loss as a [`Loss`](loss_core::Loss) value.
    /// `mode` has no default: the loss is an error until it is set ([`JaccardLoss::new`]).
    #[derive(Debug, Clone)]
    pub struct JaccardLoss {
        /// The class indices that enter the mean (`None`: all); not with `Binary`.
        classes: Option<Vec<usize>> = None,
        /// `−log(score)` instead of `1 − score`.
        log_loss: bool = false,
        /// `pred` holds logits: softmax (multiclass) or sigmoid (binary, multilabel) first.
        from_logits: bool = true,
        /// Added to the numerator and denominator (finite, `>= 0`).
        smooth: f64 = 0.0,
        /// Target value of pixels (elements with `Multilabel`) left out (`None`: none).
        ignore_index: Option<i64> = None,
        /// Lower bound of the denominator and of the score under the log (finite, `> 0`).
        eps: f64 = 1e-7,
    }
    optional {
        /// How the target is read (required).
        mode: JaccardMode,
    }
    tensors {
        /// `[C]` weights of a weighted mean over the classes (`>= 0`, `pred`'s dtype); not with
        /// `Binary`.
        class_weights,
    }
    loss_of_config jaccard_loss;
}

impl JaccardLoss {
    /// smp's defaults for `mode`.
    pub fn new(mode: JaccardMode) -> Self {
        Self::default().with_mode(mode)
    }

    /// The mode, required by [`jaccard_loss`].
    ///
    /// # Errors
    /// `BadOptions` when `mode` is not set.
    pub fn mode(&self) -> Result<JaccardMode> {
        self.mode.ok_or_else(|| {
            LossError::BadOptions {
                loss: "jaccard_loss",
                message: "`mode` is required (\"binary\", \"multiclass\" or \"multilabel\")".into(),
            }
            .into()
        })
    }
}

/// The checks of a multiclass target: class indices `[N, d1...]` in `[0, C)` or `ignore_index`.
fn check_labels(loss: &'static str, pred: &Tensor, target: &Tensor, o: &JaccardLoss) -> Result<()> {
    check::index(loss, "target", target)?;
    let mut want = pred.dims().to_vec();
    want.remove(1);
    if target.dims() != want.as_slice() {
        return Err(check::bad_shape(
            loss,
            "target",
            target,
            &format!("{want:?} (class indices [N, d1...] of pred {:?})", pred.dims()),
        ));
    }
    check::class_indices(loss, "target", target, pred.dim(1)?, o.ignore_index)
}

/// The fused multiclass sums from logits: `(S_p, S_g, D)`, each `[C]`, in one pass over `pred`
/// (softmax, one-hot and the three sums; [`OverlapForm::SoftmaxLabels`]).
fn fused_multiclass_sums(loss: &'static str, pred: &Tensor, target: &Tensor, o: &JaccardLoss) -> Result<[Tensor; 3]> {
    check::float(loss, "pred", pred)?;
    check::min_rank(loss, "pred", pred, 2, "[N, C, d1...]")?;
    check_labels(loss, pred, target, o)?;
    // A [N, C] pred is read as [N, C, 1] (the reshape costs a pass in the backward: only then).
    let x = if pred.rank() == 2 {
        pred.unsqueeze(2)?
    } else {
        pred.contiguous()?
    };
    let y = target.to_dtype(pred.dtype())?;
    let op = OverlapOp {
        squared: false,
        form: OverlapForm::SoftmaxLabels {
            ignore: o.ignore_index.map(|i| i as f64),
        },
        probs: Default::default(),
    };
    let sums = kernel::apply2(op, &x, &y)?.sum(0)?;
    let column = |k: usize| ops::narrow(&sums, 1, k, 1)?.squeeze(1);
    Ok([column(1)?, column(2)?, column(0)?])
}

/// Per-class sums over batch and space `(S_p, S_g, D)`, each `[C]`: fused for multiclass logits
/// on the CPU (f32/f64, [`kernel::choose`]), else from the prepared `p`, `g` of [`prepare`].
fn class_sums(loss: &'static str, pred: &Tensor, target: &Tensor, o: &JaccardLoss) -> Result<[Tensor; 3]> {
    let fused = o.mode()? == JaccardMode::Multiclass
        && o.from_logits
        && pred.rank() >= 2
        && pred.elem_count() > 0
        && kernel::choose(loss, pred)?;
    if fused {
        return fused_multiclass_sums(loss, pred, target, o);
    }
    let (p, g) = prepare(loss, pred, target, o)?;
    let total = |t: &Tensor| -> Result<Tensor> { t.sum(2)?.sum(0) };
    Ok([total(&p)?, total(&g)?, total(&ops::abs(&p.sub(&g)?)?)?])
}

/// Probabilities `[N, C, S]` and targets `[N, C, S]` (masked) of pred's dtype.
fn prepare(loss: &'static str, pred: &Tensor, target: &Tensor, o: &JaccardLoss) -> Result<(Tensor, Tensor)> {
    check::float(loss, "pred", pred)?;
    check::min_rank(loss, "pred", pred, 2, "[N, C, d1...]")?;
    let (n, c) = (pred.dim(0)?, pred.dim(1)?);
    let s = pred.elem_count() / (n * c).max(1);
    let ignore = o.ignore_index.map(|i| i as f64);
    let mode = o.mode()?;
    match mode {
        JaccardMode::Multiclass => {
            check_labels(loss, pred, target, o)?;
            let p = if o.from_logits {
                softmax_channels(pred)?
            } else {
                pred.clone()
            };
            let p = p.reshape((n, c, s))?;
            let y = target.reshape((n, 1, s))?;
            let ids = Tensor::arange(0u32, c as u32, target.device())?
                .to_dtype(target.dtype())?
                .reshape((1, c, 1))?;
            // An ignored label matches no class: its one-hot row is all zero.
            let g = y.broadcast_eq(&ids)?.to_dtype(pred.dtype())?;
            match ignore {
                Some(ii) => {
                    let keep = y.to_dtype(DType::F64)?.ne(ii)?.to_dtype(pred.dtype())?;
                    Ok((p.broadcast_mul(&keep)?, g.broadcast_mul(&keep)?))
                }
                None => Ok((p, g)),
            }
        }
        JaccardMode::Binary | JaccardMode::Multilabel => {
            check::float_pair(loss, "pred", pred, "target", target)?;
            if mode == JaccardMode::Binary && c != 1 {
                return Err(check::bad_shape(loss, "pred", pred, "[N, 1, d1...] (mode \"binary\")"));
            }
            let p = if o.from_logits {
                ops::sigmoid(pred)?
            } else {
                pred.clone()
            };
            let p = p.reshape((n, c, s))?;
            let g = target.reshape((n, c, s))?;
            match ignore {
                Some(ii) => {
                    let keep = g.ne(ii)?;
                    let zeros = g.zeros_like()?;
                    Ok((keep.where_cond(&p, &p.zeros_like()?)?, keep.where_cond(&g, &zeros)?))
                }
                None => Ok((p, g)),
            }
        }
    }
}

/// Jaccard loss of `pred` against `target` in smp's form (see the module docs): a 0-d tensor.
///
/// - `pred`: `[N, C, d1...]` (rank ≥ 2), f32 or f64: logits with `from_logits` (the default),
///   else probabilities. `Binary` needs `C = 1`.
/// - `target`: `Binary` / `Multilabel`: 0/1 floats of `pred`'s shape and dtype (or
///   `ignore_index`); `Multiclass`: class indices `[N, d1...]` (u8, u32, i64) in `[0, C)` or
///   `ignore_index`.
///
/// # Errors
/// `classes` or `class_weights` with `Binary`; a class of `classes` outside `[0, C)`;
/// `class_weights` not `[C]`, negative, or of another dtype; `smooth` negative or not finite;
/// `eps` not finite and `> 0`; a target of the wrong shape or dtype; a class index out of range.
pub fn jaccard_loss(pred: &Tensor, target: &Tensor, opts: &JaccardLoss) -> Result<Tensor> {
    const LOSS: &str = "jaccard_loss";
    if opts.mode()? == JaccardMode::Binary && (opts.classes.is_some() || opts.class_weights.is_some()) {
        return Err(LossError::BadOptions {
            loss: LOSS,
            message: "`classes` and `class_weights` are not options of the binary mode".into(),
        }
        .into());
    }
    check::non_negative(LOSS, "smooth", opts.smooth)?;
    check::positive(LOSS, "eps", opts.eps)?;
    let [sp, sg, d] = class_sums(LOSS, pred, target, opts)?;
    let c = sp.dim(0)?;
    let inter = sp.add(&sg)?.sub(&d)?.affine(0.5, 0.0)?;
    let union = sp.add(&sg)?.sub(&inter)?.affine(1.0, opts.smooth)?;
    let score = ops::div(
        &inter.affine(1.0, opts.smooth)?,
        &ops::clamp(&union, opts.eps, f64::INFINITY)?,
    )?;
    let per_class = if opts.log_loss {
        ops::clamp(&score, opts.eps, f64::INFINITY)?.log()?.neg()?
    } else {
        score.affine(-1.0, 1.0)?
    };
    // smp multiplies by the mask: a NaN of an absent class still shows.
    let present = sg.gt(0.0)?.to_dtype(per_class.dtype())?;
    let per_class = per_class.mul(&present)?;
    let weights = match &opts.class_weights {
        Some(w) => {
            check::weight_vector(LOSS, "class_weights", w, c, pred)?;
            check::values_in(LOSS, "class_weights", w, 0.0, f64::INFINITY, "[0, inf)")?;
            Some(w.to_device(pred.device())?)
        }
        None => None,
    };
    let (per_class, weights) = match &opts.classes {
        Some(list) => {
            if let Some(&bad) = list.iter().find(|&&k| k >= c) {
                return Err(LossError::BadOptions {
                    loss: LOSS,
                    message: format!("`classes` holds {bad}, outside [0, {c})"),
                }
                .into());
            }
            let idx = Tensor::from_vec(
                list.iter().map(|&k| k as u32).collect::<Vec<_>>(),
                list.len(),
                pred.device(),
            )?;
            (
                per_class.index_select(&idx, 0)?,
                weights.map(|w| w.index_select(&idx, 0)).transpose()?,
            )
        }
        None => (per_class, weights),
    };
    match weights {
        Some(w) => ops::div(&per_class.mul(&w)?.sum_all()?, &w.sum_all()?),
        None => {
            let k = per_class.elem_count();
            per_class.sum_all()?.affine(1.0 / k as f64, 0.0)
        }
    }
}
