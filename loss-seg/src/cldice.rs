//! Soft clDice, a topology-preserving loss for tubular structures (Shit et al., "clDice – a
//! Novel Topology-Preserving Loss Function for Tubular Structure Segmentation", CVPR 2021), as
//! MONAI 1.6.1's `SoftclDiceLoss` and `SoftDiceclDiceLoss`.
//!
//! Soft morphology on `[N, C, H, W]` or `[N, C, D, H, W]`, neighbours outside the image ignored:
//!
//! ```text
//! erode(x)  = min over the axis-aligned 3-neighbourhood (min of the 3×1 and 1×3 minima in 2-d;
//!             of 3×1×1, 1×3×1, 1×1×3 in 3-d)
//! dilate(x) = max over the 3×3 (3×3×3) window
//! open(x)   = dilate(erode(x))
//! skel(x):  s = relu(x − open(x)); iter_ times { x = erode(x); δ = relu(x − open(x));
//!                                                 s = s + relu(δ − s·δ) }
//! ```
//!
//! With `S_p = skel(p)`, `S_g = skel(g)` and sums over the channels *and* space of one item:
//!
//! ```text
//! tprec = (Σ S_p·g + smooth_nr) / (Σ S_p + smooth_dr)
//! tsens = (Σ S_g·p + smooth_nr) / (Σ S_g + smooth_dr)
//! cldice[n] = 1 − 2·tprec·tsens / (tprec + tsens + smooth)
//! soft_dice_cldice = (1 − α)·dice + α·cldice
//! ```
//!
//! The composite form ([`soft_skeleton_composite`]) builds the morphology from Candle's
//! `minimum` / `maximum` of shifted copies (edge-replicated shifts: a replicated neighbour equals
//! the pixel itself, which the window holds anyway), so it runs on every device with autodiff;
//! `relu` has PyTorch's gradient 0 at 0. Where two *different* pixels tie for a minimum or
//! maximum, the gradient is split between them (Candle's `minimum` / `maximum`: halves at each
//! tied pair; PyTorch's pooling picks one); the value never depends on it. On the CPU (f32/f64)
//! [`soft_skeleton`] is one fused kernel per `(sample, channel)` plane, in parallel over the
//! planes, with the same values bit for bit and the composite form's gradient, ties included
//! (its backward recomputes the erosions and openings); the ratios' sums come from the shared
//! overlap step ([`Overlap`]), fused on the CPU too.

use crate::dice::{dice_per_class, DiceLoss};
use crate::fused::SkeletonOp;
use crate::options::OverlapBuilders;
use crate::overlap::Overlap;
use crate::prepare::{check_activation, prepare, Prepare};
use candle_core::{Result, Tensor};
use loss_core::{check, kernel, ops, reduce, LossError, Reduction};

loss_core::loss_config! {
    /// MONAI's `SoftclDiceLoss` options (1.6.1 API), with MONAI's defaults; also the loss as a
    /// [`Loss`](loss_core::Loss) value.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct SoftClDiceLoss {
        /// Erosion steps of the soft skeleton (MONAI's `iter_`).
        iter_: usize = 3,
        /// Added to the numerators of `tprec` and `tsens` (finite, `>= 0`).
        smooth_nr: f64 = 1.0,
        /// Added to the denominators of `tprec` and `tsens` (finite, `>= 0`).
        smooth_dr: f64 = 1.0,
        /// Added to the denominator of the final ratio (finite, `> 0`).
        smooth: f64 = 1e-4,
        /// Keep channel 0 (ignored when `C = 1`).
        include_background: bool = true,
        /// The target holds class indices `[N, 1, spatial...]` (ignored when `C = 1`).
        to_onehot_y: bool = false,
        /// Sigmoid on `pred` first.
        sigmoid: bool = false,
        /// Softmax over the channels of `pred` first (ignored when `C = 1`).
        softmax: bool = false,
        /// `None` gives `[N]`, `Mean` / `Sum` a 0-d tensor.
        reduction: Reduction = Reduction::Mean,
    }
    builders SoftClDiceBuilders;
    loss_of_config soft_cldice_loss;
}

loss_core::loss_config! {
    /// MONAI's `SoftDiceclDiceLoss` options: [`SoftClDiceLoss`]'s (same defaults, read from the
    /// same flat map) and `alpha`; also the loss as a [`Loss`](loss_core::Loss) value. The reduction is `Mean` or
    /// `Sum`.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct SoftDiceClDiceLoss {
        /// Weight of the clDice term, in `[0, 1]`; the Dice term gets `1 − alpha`.
        alpha: f64 = 0.5,
    }
    parts {
        /// The clDice options (and the Dice term's `smooth_nr`, `smooth_dr` and flags).
        cldice: SoftClDiceLoss => SoftClDiceBuilders,
    }
    loss_of_config soft_dice_cldice_loss;
}

impl SoftClDiceLoss {
    fn prepare_options(&self) -> Prepare {
        Prepare {
            include_background: self.include_background,
            to_onehot_y: self.to_onehot_y,
            sigmoid: self.sigmoid,
            softmax: self.softmax,
        }
    }
    fn check(&self, loss: &'static str) -> Result<()> {
        check::non_negative(loss, "smooth_nr", self.smooth_nr)?;
        check::non_negative(loss, "smooth_dr", self.smooth_dr)?;
        check::positive(loss, "smooth", self.smooth)?;
        check_activation(loss, self.sigmoid, self.softmax)
    }
}

/// `x` shifted by one along `dim` (`+1`: each pixel sees its successor), the edge replicated.
fn shifted(x: &Tensor, dim: usize, forward: bool) -> Result<Tensor> {
    let n = x.dim(dim)?;
    if n <= 1 {
        return Ok(x.clone());
    }
    if forward {
        Tensor::cat(&[ops::narrow(x, dim, 1, n - 1)?, ops::narrow(x, dim, n - 1, 1)?], dim)
    } else {
        Tensor::cat(&[ops::narrow(x, dim, 0, 1)?, ops::narrow(x, dim, 0, n - 1)?], dim)
    }
}

/// Minimum (or maximum) over the 3-window along `dim`, neighbours outside ignored.
fn window3(x: &Tensor, dim: usize, max: bool) -> Result<Tensor> {
    let (a, b) = (shifted(x, dim, true)?, shifted(x, dim, false)?);
    if max {
        x.maximum(&a)?.maximum(&b)
    } else {
        x.minimum(&a)?.minimum(&b)
    }
}

/// Soft erosion: the minimum of the 3-minima along each spatial axis.
pub fn soft_erode(x: &Tensor) -> Result<Tensor> {
    let mut out: Option<Tensor> = None;
    for dim in 2..x.rank() {
        let m = window3(x, dim, false)?;
        out = Some(match out {
            None => m,
            Some(o) => o.minimum(&m)?,
        });
    }
    Ok(out.unwrap_or_else(|| x.clone()))
}

/// Soft dilation: the maximum over the full 3×3 (3×3×3) window, separably.
pub fn soft_dilate(x: &Tensor) -> Result<Tensor> {
    let mut out = x.clone();
    for dim in 2..x.rank() {
        out = window3(&out, dim, true)?;
    }
    Ok(out)
}

/// `relu` with PyTorch's gradient: 1 where `x > 0`, 0 elsewhere (also at 0).
fn relu(x: &Tensor) -> Result<Tensor> {
    x.gt(0.0)?.where_cond(x, &x.zeros_like()?)
}

/// The soft skeleton of `x` (`[N, C, H, W]` or `[N, C, D, H, W]`) with `iter_` erosion steps
/// (see the module docs): the fused CPU kernel for f32/f64 where
/// [`loss_core::kernel::choose`] takes it (the same values, and the composite form's gradient,
/// ties included), else [`soft_skeleton_composite`].
///
/// # Errors
/// `Path::Fused` for another device or dtype; a rank other than 4 or 5 on the fused path.
pub fn soft_skeleton(x: &Tensor, iter_: usize) -> Result<Tensor> {
    if (x.rank() == 4 || x.rank() == 5) && kernel::choose("soft_skeleton", x)? {
        return kernel::apply1(SkeletonOp { iter: iter_ }, &x.contiguous()?);
    }
    soft_skeleton_composite(x, iter_)
}

/// [`soft_skeleton`] from plain Candle ops (any device, any float dtype, any rank ≥ 3), with
/// Candle's autodiff.
///
/// # Errors
/// Candle's, for a tensor of rank below 3.
pub fn soft_skeleton_composite(x: &Tensor, iter_: usize) -> Result<Tensor> {
    let open = |t: &Tensor| soft_dilate(&soft_erode(t)?);
    let mut img = x.clone();
    let mut skel = relu(&img.sub(&open(&img)?)?)?;
    for _ in 0..iter_ {
        img = soft_erode(&img)?;
        let delta = relu(&img.sub(&open(&img)?)?)?;
        skel = skel.add(&relu(&delta.sub(&skel.mul(&delta)?)?)?)?;
    }
    Ok(skel)
}

/// Prepared `(p, g)` of the kept channels, after the checks of the clDice losses.
fn prepared(loss: &'static str, pred: &Tensor, target: &Tensor, o: &SoftClDiceLoss) -> Result<(Tensor, Tensor)> {
    o.check(loss)?;
    check::float(loss, "pred", pred)?;
    if pred.rank() != 4 && pred.rank() != 5 {
        return Err(check::bad_shape(loss, "pred", pred, "[N, C, H, W] or [N, C, D, H, W]"));
    }
    let p = prepare(loss, pred, target, o.prepare_options())?;
    let c = p.pred.dim(1)?;
    let first = p.first_class;
    Ok((
        ops::narrow(&p.pred, 1, first, c - first)?,
        ops::narrow(&p.target, 1, first, c - first)?,
    ))
}

/// The unreduced clDice `[N]` of prepared `p`, `g`.
fn cldice_per_item(p: &Tensor, g: &Tensor, o: &SoftClDiceLoss) -> Result<Tensor> {
    let skel_p = soft_skeleton(p, o.iter_)?;
    let skel_g = soft_skeleton(&g.detach(), o.iter_)?;
    // `(Σ S·t, Σ S)` over channels and space from the shared overlap step ([N, C] → [N]).
    let ratio_of = |skel: &Tensor, t: &Tensor| -> Result<Tensor> {
        let s = Overlap::compute(skel, t, false)?;
        ops::div(
            &s.intersection.sum(1)?.affine(1.0, o.smooth_nr)?,
            &s.pred_sum.sum(1)?.affine(1.0, o.smooth_dr)?,
        )
    };
    let tprec = ratio_of(&skel_p, g)?;
    let tsens = ratio_of(&skel_g, p)?;
    let ratio = ops::div(
        &tprec.mul(&tsens)?.affine(2.0, 0.0)?,
        &tprec.add(&tsens)?.affine(1.0, o.smooth)?,
    )?;
    ratio.affine(-1.0, 1.0)
}

/// Soft clDice loss of `pred` against `target` (MONAI's `SoftclDiceLoss`, 1.6.1 API).
///
/// - `pred`: `[N, C, H, W]` or `[N, C, D, H, W]`, f32 or f64: probabilities, or logits with
///   `sigmoid` / `softmax`.
/// - `target`: `pred`'s shape and dtype (0/1 masks), or class indices `[N, 1, spatial...]` with
///   `to_onehot_y`. The target's skeleton is a constant.
/// - Output: `[N]` for `Reduction::None`, else 0-d.
///
/// # Errors
/// `pred` of a rank other than 4 or 5; `smooth <= 0`; a negative or non-finite `smooth_nr` /
/// `smooth_dr`; `sigmoid` with `softmax`; and the input errors of [`crate::dice_loss`].
pub fn soft_cldice_loss(pred: &Tensor, target: &Tensor, opts: &SoftClDiceLoss) -> Result<Tensor> {
    const LOSS: &str = "soft_cldice_loss";
    opts.reduction.standard(LOSS)?;
    let (p, g) = prepared(LOSS, pred, target, opts)?;
    reduce(LOSS, &cldice_per_item(&p, &g, opts)?, opts.reduction)
}

/// `(1 − alpha)·dice_loss + alpha·soft_cldice_loss` (MONAI's `SoftDiceclDiceLoss`), a 0-d tensor.
///
/// The Dice term is [`crate::dice_loss`] with this loss's flags and its `smooth_nr` /
/// `smooth_dr` (default 1, not 1e-5), reduced over `(N, C')`; the clDice term is
/// [`soft_cldice_loss`], reduced over `N`. Shapes as [`soft_cldice_loss`].
///
/// # Errors
/// `Reduction::None` (MONAI's sum of a `[N, C', 1...]` and an `[N]` tensor has no meaning);
/// `alpha` outside `[0, 1]`; a target whose rank differs from `pred`'s or with neither 1 nor `C`
/// channels; and the errors of [`soft_cldice_loss`].
pub fn soft_dice_cldice_loss(pred: &Tensor, target: &Tensor, opts: &SoftDiceClDiceLoss) -> Result<Tensor> {
    const LOSS: &str = "soft_dice_cldice_loss";
    let o = &opts.cldice;
    if o.reduction.standard(LOSS)? == Reduction::None {
        return Err(LossError::BadReduction {
            loss: LOSS,
            got: "none".into(),
            expected: "\"mean\" or \"sum\"",
        }
        .into());
    }
    check::unit_interval(LOSS, "alpha", opts.alpha)?;
    check::float(LOSS, "pred", pred)?;
    if pred.rank() >= 2 && (target.rank() != pred.rank() || (target.dim(1)? != 1 && target.dim(1)? != pred.dim(1)?)) {
        return Err(check::bad_shape(
            LOSS,
            "target",
            target,
            &format!("pred's rank with 1 or C channels (pred {:?})", pred.dims()),
        ));
    }
    let (p, g) = prepared(LOSS, pred, target, o)?;
    let cl = reduce(LOSS, &cldice_per_item(&p, &g, o)?, o.reduction)?;
    let dice_opts = DiceLoss::default()
        .with_include_background(o.include_background)
        .with_to_onehot_y(o.to_onehot_y)
        .with_sigmoid(o.sigmoid)
        .with_softmax(o.softmax)
        .with_smooth_nr(o.smooth_nr)
        .with_smooth_dr(o.smooth_dr)
        .with_reduction(o.reduction);
    let dice = reduce(LOSS, &dice_per_class(LOSS, pred, target, &dice_opts)?, o.reduction)?;
    dice.affine(1.0 - opts.alpha, 0.0)?.add(&cl.affine(opts.alpha, 0.0)?)
}
