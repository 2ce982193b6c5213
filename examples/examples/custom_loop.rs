//! A hand-written training loop with the trainer library's parts instead of `fit`: a seeded
//! MLP, SGD with Nesterov momentum and weight decay, a step schedule, gradient clipping,
//! seeded mini-batches, test metrics, a PNG plot and atomic records.
//!
//! The task: classify points inside / outside a circle with a focal loss.
//!
//! `cargo run --release -p examples --example custom_loop` (writes to `runs/custom_loop/`)

use candle_core::{DType, Device, Tensor};
use candle_nn::{Module, VarMap};
use loss_core::{sigmoid_focal_loss, Reduction};
use serde_json::json;
use trainer::fit::Batcher;
use trainer::metrics::{average_precision, roc_auc, Confusion};
use trainer::models::Mlp;
use trainer::optim::{clip_grad_norm, sorted_params, OptimizerConfig, Schedule};
use trainer::plot::{line_chart, Series};
use trainer::records::{write_atomic, write_json, write_safetensors};

fn points(seed: u64, n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = trainer::rng::stream(seed, &["custom_loop"]);
    let xy = trainer::rng::uniform(&mut rng, 2 * n, 1.0);
    // positives: inside the circle x² + y² < ½ (π/8 ≈ 39 % of the square)
    let labels = xy
        .chunks(2)
        .map(|p| f32::from(u8::from(p[0] * p[0] + p[1] * p[1] < 0.5)))
        .collect();
    (xy.iter().map(|&v| v as f32).collect(), labels)
}

fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let (xs, ys) = points(1, 2000);
    let x = Tensor::from_vec(xs, (2000, 2), &dev)?;
    let y = Tensor::from_vec(ys, (2000, 1), &dev)?;
    let (xs, ys) = points(2, 500);
    let x_test = Tensor::from_vec(xs, (500, 2), &dev)?;
    let labels: Vec<bool> = ys.iter().map(|&v| v == 1.0).collect();

    let varmap = VarMap::new();
    let mut init = trainer::rng::stream(0, &["custom_loop", "init"]);
    let model = Mlp::new(&varmap, "mlp", 2, 32, 1, &mut init, DType::F32, &dev)?;
    let params = sorted_params(&varmap);
    let mut opt = OptimizerConfig::Sgd {
        momentum: 0.9,
        dampening: 0.0,
        nesterov: true,
        weight_decay: 1e-4,
    }
    .build(params.clone())?;
    let schedule = Schedule::Step {
        step_size: 600,
        gamma: 0.3,
    };
    let mut batches = Batcher::new(2000, 64, 0);
    let mut curve = Vec::new();
    for t in 0..1500 {
        let idx = Tensor::new(batches.next_batch().as_slice(), &dev)?;
        let (xb, yb) = (x.index_select(&idx, 0)?, y.index_select(&idx, 0)?);
        let loss = sigmoid_focal_loss(&model.forward(&xb)?, &yb, 0.25, 2.0, Reduction::Mean)?;
        let mut grads = loss.backward()?;
        clip_grad_norm(&mut grads, &params, 1.0)?;
        opt.step(&grads, schedule.lr(0.1, t))?;
        if t % 50 == 0 {
            curve.push((t as f64, loss.to_scalar::<f32>()? as f64));
        }
    }
    let z: Vec<f64> = model.forward(&x_test)?.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
    let c = Confusion::at(&z, &labels, 0.0);
    let metrics = json!({
        "ap": average_precision(&z, &labels),
        "roc_auc": roc_auc(&z, &labels),
        "recall": c.recall(),
        "precision": c.precision(),
        "f1": c.f1(),
    });
    println!("test metrics: {metrics}");

    let dir = std::path::Path::new("runs/custom_loop");
    std::fs::create_dir_all(dir)?;
    write_json(&dir.join("metrics.json"), &metrics)?;
    let png = line_chart(
        "custom loop: focal loss",
        "step",
        "mini-batch loss (log)",
        &[Series {
            name: "sigmoid focal (α 0.25, γ 2)".into(),
            points: curve,
        }],
        true,
    )?;
    write_atomic(&dir.join("loss.png"), &png)?;
    let weights: Vec<(String, Tensor)> = params.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
    write_safetensors(&dir.join("weights.safetensors"), &weights)?;
    println!("records in {}", dir.display());
    Ok(())
}
