//! The training loop: convergence, mini-batches, non-finite losses, seeded models.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use loss_core::{Loss, MseLoss};
use trainer::fit::{fit, Batcher, FitConfig, FitError, FitRun};
use trainer::models::{Init, Linear, Mlp};
use trainer::optim::{sorted_params, OptimizerConfig, Schedule};

fn line_data() -> (Tensor, Tensor) {
    let x: Vec<f64> = (0..16).map(|i| f64::from(i) / 8.0 - 1.0).collect();
    let y: Vec<f64> = x.iter().map(|v| 2.0 * v + 0.5).collect();
    (
        Tensor::from_vec(x, (16, 1), &Device::Cpu).unwrap(),
        Tensor::from_vec(y, (16, 1), &Device::Cpu).unwrap(),
    )
}

#[test]
fn full_batch_and_mini_batch_fit_a_line() {
    let (x, y) = line_data();
    for (batch, opt) in [
        (None, OptimizerConfig::adam()),
        (Some(4), OptimizerConfig::sgd(0.9, true)),
        (Some(5), OptimizerConfig::adamw(0.0)),
    ] {
        let varmap = VarMap::new();
        let mut rng = trainer::rng::stream(0, &["t"]);
        let m = Linear::new(&varmap, "l", 1, 1, Init::Zeros, &mut rng, DType::F64, &Device::Cpu).unwrap();
        let cfg = FitConfig {
            steps: 400,
            lr: 0.05,
            optimizer: opt,
            schedule: Schedule::Cosine {
                t_max: 400,
                eta_min: 0.0,
            },
            clip_norm: Some(10.0),
            batch_size: batch,
            log_every: 100,
            seed: 1,
            ..FitConfig::default()
        };
        let mut logged = Vec::new();
        let loss = MseLoss::default();
        let run = FitRun::new(&m, &varmap, &loss, &x, &y, &cfg).with_label("line");
        let r = fit(run, &mut |t, l| {
            logged.push((t, l));
            Ok(())
        })
        .unwrap();
        assert!(r.final_loss < 1e-4, "{batch:?} {opt:?}: {}", r.final_loss);
        let steps: Vec<usize> = r.history.iter().map(|h| h.0).collect();
        assert_eq!(steps, vec![0, 100, 200, 300, 400]);
        assert_eq!(logged, r.history);
        let w = sorted_params(&varmap);
        assert_eq!(
            w.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
            vec!["l.bias", "l.weight"]
        );
    }
}

#[test]
fn batcher_visits_every_row_once_per_epoch_and_is_seeded() {
    let mut b = Batcher::new(10, 4, 7);
    let mut epoch: Vec<u32> = Vec::new();
    for _ in 0..3 {
        epoch.extend(b.next_batch());
    }
    assert_eq!(epoch.len(), 10, "batches of 4, 4, 2");
    let mut sorted = epoch.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..10).collect::<Vec<u32>>());
    let mut b2 = Batcher::new(10, 4, 7);
    assert_eq!(b2.next_batch(), epoch[..4].to_vec());
    let mut b3 = Batcher::new(10, 4, 8);
    let other: Vec<u32> = (0..3).flat_map(|_| b3.next_batch()).collect();
    assert_ne!(other, epoch);
}

/// A loss that becomes NaN once the prediction leaves [−1e3, 1e3]: an exploding run.
struct Fragile;

impl Loss for Fragile {
    fn name(&self) -> &'static str {
        "fragile_loss"
    }
    fn forward(&self, input: &Tensor, target: &Tensor) -> candle_core::Result<Tensor> {
        let l = loss_core::mse_loss(input, target, loss_core::Reduction::Mean)?;
        let v = l.to_scalar::<f64>()?;
        if v > 1e6 {
            (l * f64::NAN)?.sum_all()
        } else {
            Ok(l)
        }
    }
}

#[test]
fn non_finite_loss_stops_the_run_naming_loss_step_and_seed() {
    let (x, y) = line_data();
    let varmap = VarMap::new();
    let mut rng = trainer::rng::stream(0, &["t"]);
    let m = Linear::new(&varmap, "l", 1, 1, Init::Zeros, &mut rng, DType::F64, &Device::Cpu).unwrap();
    let cfg = FitConfig {
        steps: 100,
        lr: 10.0,
        optimizer: OptimizerConfig::sgd(0.0, false),
        seed: 1234,
        ..FitConfig::default()
    };
    let run = FitRun::new(&m, &varmap, &Fragile, &x, &y, &cfg).with_label("diverging");
    let e = fit(run, &mut |_, _| Ok(())).unwrap_err();
    match &e {
        FitError::NonFinite { loss, step, seed, .. } => {
            assert_eq!(loss, "fragile_loss");
            assert_eq!(*seed, 1234);
            assert!(*step > 0 && *step < 100);
        }
        other => panic!("unexpected {other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("fragile_loss") && msg.contains("step") && msg.contains("seed 1234"),
        "{msg}"
    );
}

#[test]
fn seeded_models_are_reproducible() {
    let make = |seed| {
        let varmap = VarMap::new();
        let mut rng = trainer::rng::stream(seed, &["mlp"]);
        Mlp::new(&varmap, "mlp", 3, 4, 2, &mut rng, DType::F32, &Device::Cpu).unwrap();
        sorted_params(&varmap)
            .into_iter()
            .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(make(5), make(5));
    assert_ne!(make(5), make(6));
    // PyTorch's default bound 1/√fan_in
    let w = make(5);
    assert!(w[1].iter().all(|v| v.abs() <= 1.0 / 3f32.sqrt()));
}
