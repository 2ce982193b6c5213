//! Every loss and metric of loss-bbox on decoded arguments: no panic, typed errors (see
//! `src/lib.rs`).
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use loss_bbox::*;
use loss_core::kernel::{with_path, Path};
use loss_fuzz::*;

/// Mostly `[..., 4]` boxes (`[N, 4]` for the pairwise metrics), else any tensor.
fn boxes(u: &mut Unstructured, pairwise: bool) -> Result<candle_core::Tensor> {
    if u.ratio(1, 4)? {
        return tensor(u);
    }
    let mut s = if pairwise {
        vec![u.int_in_range(0..=4usize)?]
    } else {
        shape_of_rank(u, 0, 4)?
    };
    s.truncate(3);
    s.push(4);
    let dt = if u.ratio(1, 8)? { dtype(u)? } else { float_dtype(u)? };
    tensor_of(u, dt, &s)
}

fn format(u: &mut Unstructured) -> Result<BoxFormat> {
    Ok(*u.choose(&[BoxFormat::Xyxy, BoxFormat::Xywh, BoxFormat::Cxcywh])?)
}

fn run(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let which = u.int_in_range(0..=14u8)?;
    let composite: bool = u.arbitrary()?;
    let pairwise = (9..=12).contains(&which);
    let a = boxes(&mut u, pairwise)?;
    let b = if pairwise {
        boxes(&mut u, true)?
    } else {
        tensor_like(&mut u, &a)?
    };
    let (eps, p, r, flag) = (
        param(&mut u)?,
        param(&mut u)?,
        reduction(&mut u)?,
        u.arbitrary::<bool>()?,
    );
    let (fi, fo) = (format(&mut u)?, format(&mut u)?);
    let kernel = *u.choose(&[Path::Auto, Path::Auto, Path::Fused, Path::Composite])?;
    on_path(composite, || {
        let kinds = [
            AlignedLoss::Iou(IouMode::Linear),
            AlignedLoss::Iou(IouMode::Square),
            AlignedLoss::Iou(IouMode::Log),
            AlignedLoss::Giou,
            AlignedLoss::Diou,
            AlignedLoss::Ciou,
            AlignedLoss::Eiou,
        ];
        let (name, out) = match which {
            0..=6 => {
                let k = kinds[which as usize];
                (k.name(), with_path(kernel, || aligned_loss(k, &a, &b, eps, r)))
            }
            7 => ("extended_iou_loss", extended_iou_loss(&a, &b, p, eps, r)),
            8 => ("siou_loss", siou_loss(&a, &b, flag, eps, r)),
            9 => ("box_iou", box_iou(&a, &b)),
            10 => ("generalized_box_iou", generalized_box_iou(&a, &b)),
            11 => ("distance_box_iou", distance_box_iou(&a, &b, eps)),
            12 => ("complete_box_iou", complete_box_iou(&a, &b, eps)),
            13 => ("box_convert", box_convert(&a, fi, fo)),
            _ => ("box_area", box_area(&a, fi)),
        };
        check(name, out);
    });
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
