//! The training library without the experiments: build it with
//! `cargo run -p trainer --no-default-features --example library_only`, which compiles trainer on
//! candle-core, candle-nn and loss-core alone (no plotters, clap or data sets).
//!
//! A two-layer candle-nn network learns `y = sin(3x₁) + x₂²` from 512 seeded points, one epoch of
//! mini-batches of 32 with AdamW, a cosine schedule and gradient clipping,
//! under the Huber loss; the loss before and after the epoch is printed.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear, seq, Activation, VarBuilder, VarMap};
use loss_core::HuberLoss;
use rand::Rng;
use trainer::fit::{fit, FitConfig, FitRun};
use trainer::optim::{OptimizerConfig, Schedule};

fn main() -> anyhow::Result<()> {
    let device = Device::Cpu;
    let (n, batch) = (512, 32);
    // Data: every random number comes from the run's seed (trainer::rng).
    let mut rng = trainer::rng::stream(0, &["library_only", "data"]);
    let x: Vec<f32> = (0..2 * n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let y: Vec<f32> = x.chunks(2).map(|p| (3.0 * p[0]).sin() + p[1] * p[1]).collect();
    let x = Tensor::from_vec(x, (n, 2), &device)?;
    let y = Tensor::from_vec(y, (n, 1), &device)?;

    // Any candle-nn model: its variables live in the VarMap that fit() optimises.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let model = seq()
        .add(linear(2, 32, vb.pp("fc1"))?)
        .add(Activation::Relu)
        .add(linear(32, 1, vb.pp("fc2"))?);

    let loss = HuberLoss::default();
    let before = loss_core::Loss::forward(&loss, &model.forward(&x)?, &y)?.to_scalar::<f32>()?;
    let steps = n.div_ceil(batch); // one epoch
    let cfg = FitConfig {
        steps,
        lr: 0.02,
        optimizer: OptimizerConfig::adamw(0.01),
        schedule: Schedule::Cosine {
            t_max: steps,
            eta_min: 0.002,
        },
        clip_norm: Some(1.0),
        batch_size: Some(batch),
        log_every: 4,
        seed: 0,
        ..FitConfig::default()
    };
    let run = FitRun::new(&model, &varmap, &loss, &x, &y, &cfg).with_label("library_only");
    let report = fit(run, &mut |t, l| {
        println!("step {t:>2}: training loss {l:.4}");
        Ok(())
    })?;
    println!(
        "one epoch ({steps} updates of {batch} rows): Huber loss {before:.4} -> {:.4}",
        report.final_loss
    );
    Ok(())
}
