//! Every loss of loss-core on decoded arguments: no panic, typed errors (see `src/lib.rs`).
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use loss_core::*;
use loss_fuzz::*;

fn run(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let which = u.int_in_range(0..=12u8)?;
    let composite: bool = u.arbitrary()?;
    let x = tensor(&mut u)?;
    let classes = if x.rank() > 1 {
        x.dims()[1]
    } else {
        x.dims().first().copied().unwrap_or(1)
    };
    let t = if matches!(which, 4 | 6 | 12) {
        class_target(&mut u, &x)?
    } else {
        tensor_like(&mut u, &x)?
    };
    let w = optional(&mut u, classes, x.dtype())?;
    let pw = optional(&mut u, x.dims().last().copied().unwrap_or(1), x.dtype())?;
    let (p, q, ii, r, flag) = (
        param(&mut u)?,
        param(&mut u)?,
        index(&mut u)?,
        reduction(&mut u)?,
        u.arbitrary::<bool>()?,
    );
    on_path(composite, || {
        let (name, out) = match which {
            0 => ("l1_loss", l1_loss(&x, &t, r)),
            1 => ("mse_loss", mse_loss(&x, &t, r)),
            2 => ("smooth_l1_loss", smooth_l1_loss(&x, &t, p, r)),
            3 => ("huber_loss", huber_loss(&x, &t, p, r)),
            4 | 5 => ("cross_entropy", cross_entropy(&x, &t, w.as_ref(), ii, p, r)),
            6 => ("nll_loss", nll_loss(&x, &t, w.as_ref(), ii, r)),
            7 => ("binary_cross_entropy", binary_cross_entropy(&x, &t, w.as_ref(), r)),
            8 => (
                "binary_cross_entropy_with_logits",
                binary_cross_entropy_with_logits(&x, &t, w.as_ref(), pw.as_ref(), r),
            ),
            9 => ("kl_div", kl_div(&x, &t, flag, r)),
            10 => {
                let base = if flag { EntropyBase::Bits } else { EntropyBase::Nats };
                ("entropy", entropy(&x, base, r))
            }
            11 => ("sigmoid_focal_loss", sigmoid_focal_loss(&x, &t, p, q, r)),
            _ => ("softmax_focal_loss", softmax_focal_loss(&x, &t, w.as_ref(), q, ii, r)),
        };
        check(name, out);
    });
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
