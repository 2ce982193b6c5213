//! The training library as a crate built with `default-features = false` sees it: a small Candle
//! model (the library's seeded MLP, a `candle_nn::Module`) trained for one epoch of mini-batches
//! by `fit` with the library's optimizers, schedule and clipping.
//! CI runs this file with `cargo test -p trainer --no-default-features --test library_only`, so
//! it must use nothing of the `cli` feature.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarMap;
use loss_core::{Loss, MseLoss};
use rand::Rng;
use trainer::fit::{fit, FitConfig, FitRun, StepCounter};
use trainer::models::Mlp;
use trainer::optim::{OptimizerConfig, Schedule};

struct Count(std::sync::atomic::AtomicU64);
impl StepCounter for Count {
    fn add_steps(&self, n: u64) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

fn data(n: usize, device: &Device) -> (Tensor, Tensor) {
    let mut rng = trainer::rng::stream(7, &["library_only"]);
    let x: Vec<f32> = (0..2 * n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let y: Vec<f32> = x.chunks(2).map(|p| 2.0 * p[0] - p[1] + 0.5).collect();
    (
        Tensor::from_vec(x, (n, 2), device).unwrap(),
        Tensor::from_vec(y, (n, 1), device).unwrap(),
    )
}

fn one_epoch(optimizer: OptimizerConfig, lr: f64) -> (f32, f64, Vec<(usize, f64)>, u64) {
    let device = Device::Cpu;
    let (n, batch) = (256, 16);
    let (x, y) = data(n, &device);
    let varmap = VarMap::new();
    let mut init = trainer::rng::stream(7, &["library_only", "init"]);
    let model = Mlp::new(&varmap, "mlp", 2, 16, 1, &mut init, DType::F32, &device).unwrap();
    let before = MseLoss::default()
        .forward(&model.forward(&x).unwrap(), &y)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let cfg = FitConfig {
        steps: n / batch,
        lr,
        optimizer,
        schedule: Schedule::Cosine {
            t_max: n / batch,
            eta_min: lr / 10.0,
        },
        clip_norm: Some(5.0),
        batch_size: Some(batch),
        log_every: 4,
        seed: 3,
        ..FitConfig::default()
    };
    let counter = Count(Default::default());
    let loss = MseLoss::default();
    let run = FitRun::new(&model, &varmap, &loss, &x, &y, &cfg).with_label("epoch");
    let report = fit(run.with_progress(&counter), &mut |_, _| Ok(())).unwrap();
    // The final loss is that of the trained model on the whole set.
    let after = MseLoss::default()
        .forward(&model.forward(&x).unwrap(), &y)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!((f64::from(after) - report.final_loss).abs() <= 1e-6 * report.final_loss.max(1.0));
    (before, report.final_loss, report.history, counter.0.into_inner())
}

#[test]
fn one_epoch_of_adamw_reduces_the_loss() {
    let (before, after, history, steps) = one_epoch(OptimizerConfig::adamw(0.01), 0.03);
    assert_eq!(steps, 16, "one update per batch of the epoch");
    assert_eq!(history.iter().map(|h| h.0).collect::<Vec<_>>(), vec![0, 4, 8, 12, 16]);
    assert!(after < 0.5 * f64::from(before), "MSE {before} -> {after}");
}

#[test]
fn one_epoch_of_sgd_with_momentum_reduces_the_loss() {
    let (before, after, _, _) = one_epoch(OptimizerConfig::sgd(0.9, true), 0.05);
    assert!(after < 0.5 * f64::from(before), "MSE {before} -> {after}");
}

#[test]
fn the_epoch_is_reproducible() {
    let a = one_epoch(OptimizerConfig::adam(), 0.01);
    let b = one_epoch(OptimizerConfig::adam(), 0.01);
    assert_eq!(a.1.to_bits(), b.1.to_bits());
}
