//! Every loss of loss-seg on decoded arguments and options: no panic, typed errors (see
//! `src/lib.rs`).
#![no_main]

use arbitrary::{Result, Unstructured};
use candle_core::{DType, Tensor};
use libfuzzer_sys::fuzz_target;
use loss_core::Reduction;
use loss_fuzz::*;
use loss_seg::*;

/// Mostly `[N, C, spatial...]` predictions, else any tensor.
fn pred(u: &mut Unstructured) -> Result<Tensor> {
    if u.ratio(1, 4)? {
        return tensor(u);
    }
    let s = shape_of_rank(u, 2, 5)?;
    let dt = if u.ratio(1, 8)? { dtype(u)? } else { float_dtype(u)? };
    tensor_of(u, dt, &s)
}

/// Mostly class indices `[N, 1, spatial...]` (Lovász: `[N, spatial...]`) or `pred`'s shape.
fn target(u: &mut Unstructured, pred: &Tensor, lovasz: bool) -> Result<Tensor> {
    if pred.rank() < 2 || u.ratio(1, 3)? {
        return tensor_like(u, pred);
    }
    let mut dims = pred.dims().to_vec();
    if lovasz {
        dims.remove(1);
    } else {
        dims[1] = 1;
    }
    let dt = *u.choose(&[DType::U8, DType::U32, DType::I64])?;
    tensor_of(u, dt, &dims)
}

fn run(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let which = u.int_in_range(0..=6u8)?;
    let composite: bool = u.arbitrary()?;
    let x = pred(&mut u)?;
    let t = target(&mut u, &x, which == 6)?;
    let c = if x.rank() > 1 { x.dims()[1] } else { 1 };
    let drop_background = usize::from(u.arbitrary::<bool>()?);
    let w = optional(&mut u, c.saturating_sub(drop_background), x.dtype())?;
    let mut b = [false; 8];
    for v in b.iter_mut() {
        *v = u.arbitrary()?;
    }
    let mut p = [0.0; 7];
    for v in p.iter_mut() {
        *v = if u.ratio(1, 2)? {
            param(&mut u)?
        } else {
            u.int_in_range(0..=4u8)? as f64 * 0.25
        };
    }
    let r: Reduction = reduction(&mut u)?;
    let (ii, w_type) = (
        index(&mut u)?,
        *u.choose(&[Weighting::Square, Weighting::Simple, Weighting::Uniform])?,
    );
    on_path(composite, || {
        let overlap = OverlapOptions {
            include_background: b[0],
            to_onehot_y: b[1],
            sigmoid: b[2],
            softmax: b[3],
            batch: b[6],
            smooth_nr: p[0],
            smooth_dr: p[1],
            reduction: r,
        };
        let dice = DiceLoss {
            squared_pred: b[4],
            jaccard: b[5],
            weight: w.clone(),
            overlap,
            ..Default::default()
        };
        let (name, out) = match which {
            0 => ("dice_loss", dice_loss(&x, &t, &dice)),
            1 => {
                let o = TverskyLoss::default()
                    .with_include_background(b[0])
                    .with_to_onehot_y(b[1])
                    .with_sigmoid(b[2])
                    .with_softmax(b[3])
                    .with_batch(b[6])
                    .with_smooth_nr(p[0])
                    .with_smooth_dr(p[1])
                    .with_alpha(p[2])
                    .with_beta(p[3])
                    .with_reduction(r);
                ("tversky_loss", tversky_loss(&x, &t, &o))
            }
            2 => {
                let o = FocalTverskyLoss::default()
                    .with_include_background(b[0])
                    .with_to_onehot_y(b[1])
                    .with_sigmoid(b[2])
                    .with_softmax(b[3])
                    .with_batch(b[6])
                    .with_smooth_nr(p[0])
                    .with_smooth_dr(p[1])
                    .with_alpha(p[2])
                    .with_beta(p[3])
                    .with_gamma(p[4])
                    .with_reduction(r);
                ("focal_tversky_loss", focal_tversky_loss(&x, &t, &o))
            }
            3 => {
                let o = GeneralizedDiceLoss::default()
                    .with_include_background(b[0])
                    .with_to_onehot_y(b[1])
                    .with_sigmoid(b[2])
                    .with_softmax(b[3])
                    .with_batch(b[6])
                    .with_smooth_nr(p[0])
                    .with_smooth_dr(p[1])
                    .with_w_type(w_type)
                    .with_reduction(r);
                ("generalized_dice_loss", generalized_dice_loss(&x, &t, &o))
            }
            4 => {
                let mut o = DiceCeLoss::default()
                    .with_include_background(b[0])
                    .with_to_onehot_y(b[1])
                    .with_sigmoid(b[2])
                    .with_softmax(b[3])
                    .with_squared_pred(b[4])
                    .with_jaccard(b[5])
                    .with_batch(b[6])
                    .with_smooth_nr(p[0])
                    .with_smooth_dr(p[1])
                    .with_lambda_dice(p[2])
                    .with_lambda_ce(p[3])
                    .with_label_smoothing(p[4])
                    .with_reduction(r);
                o.weight = w.clone();
                ("dice_ce_loss", dice_ce_loss(&x, &t, &o))
            }
            5 => {
                let mut o = DiceFocalLoss::default()
                    .with_include_background(b[0])
                    .with_to_onehot_y(b[1])
                    .with_sigmoid(b[2])
                    .with_softmax(b[3])
                    .with_squared_pred(b[4])
                    .with_jaccard(b[5])
                    .with_batch(b[6])
                    .with_smooth_nr(p[0])
                    .with_smooth_dr(p[1])
                    .with_lambda_dice(p[2])
                    .with_lambda_focal(p[3])
                    .with_gamma(p[4])
                    .with_alpha(if b[7] { Some(p[5]) } else { None })
                    .with_reduction(r);
                o.dice.weight = w.clone();
                ("dice_focal_loss", dice_focal_loss(&x, &t, &o))
            }
            _ => {
                let o = LovaszSoftmaxLoss::default()
                    .with_per_image(b[6])
                    .with_ignore_index(if b[7] { Some(ii) } else { None });
                ("lovasz_softmax_loss", lovasz_softmax_loss(&x, &t, &o))
            }
        };
        check(name, out);
    });
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
