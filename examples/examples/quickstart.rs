//! Quick start with loss-core: fit y = 3x − 1 on data with a few gross outliers, once per loss,
//! in a plain Candle loop (candle-nn's AdamW, no trainer), and compare the fitted lines.
//!
//! `cargo run --release -p examples --example quickstart`

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use loss_core::{HuberLoss, L1Loss, Loss, MseLoss, SmoothL1Loss};

fn main() -> Result<()> {
    let dev = Device::Cpu;
    // 50 points on y = 3x − 1 with a little deterministic noise; every 10th point is an outlier
    let xs: Vec<f32> = (0..50).map(|i| i as f32 / 25.0 - 1.0).collect();
    let ys: Vec<f32> = xs
        .iter()
        .enumerate()
        .map(|(i, &x)| 3.0 * x - 1.0 + 0.05 * ((i * 7 % 11) as f32 - 5.0) / 5.0 + if i % 10 == 0 { 20.0 } else { 0.0 })
        .collect();
    let x = Tensor::from_vec(xs, (50, 1), &dev)?;
    let y = Tensor::from_vec(ys, (50, 1), &dev)?;

    let losses: Vec<Box<dyn Loss>> = vec![
        Box::new(MseLoss::default()),
        Box::new(L1Loss::default()),
        Box::new(SmoothL1Loss::default().with_beta(1.0)),
        Box::new(HuberLoss::default().with_delta(1.0)),
    ];
    println!("true line: y = 3x − 1; every 10th target is shifted by +20");
    for loss in &losses {
        let w = Var::zeros((1, 1), DType::F32, &dev)?;
        let b = Var::zeros(1, DType::F32, &dev)?;
        let mut opt = AdamW::new(
            vec![w.clone(), b.clone()],
            ParamsAdamW {
                lr: 0.05,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        for _ in 0..2000 {
            let pred = x.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
            let l = loss.forward(&pred, &y)?;
            opt.backward_step(&l)?;
        }
        let (w, b) = (
            w.as_tensor().flatten_all()?.to_vec1::<f32>()?[0],
            b.as_tensor().to_vec1::<f32>()?[0],
        );
        println!(
            "{:>16}: y = {w:.3}x {} {:.3}",
            loss.name(),
            if b < 0.0 { '−' } else { '+' },
            b.abs()
        );
    }
    println!("MSE is pulled up by the outliers; L1, Smooth L1 and Huber stay near the true line.");
    Ok(())
}
