//! A tiny box-regression head trained with loss-bbox's CIoU loss.
//!
//! Each sample is a noisy reading of a box's corners; an MLP predicts (cx, cy, log w, log h),
//! decoded to `xyxy` inside the model, and is trained with `ciou_loss` through the trainer's
//! `fit` (Adam, cosine schedule, mini-batches). The mean IoU on held-out boxes is reported
//! before and after training.
//!
//! `cargo run --release -p examples --example box_head`

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{Module, VarMap};
use loss_bbox::{box_iou, CIoULoss};
use loss_core::Reduction;
use rand::Rng;
use trainer::fit::{fit, FitConfig, FitRun};
use trainer::models::Mlp;
use trainer::optim::{OptimizerConfig, Schedule};

/// The MLP's output (cx, cy, log w, log h) decoded to (x1, y1, x2, y2).
struct BoxHead {
    mlp: Mlp,
}

impl Module for BoxHead {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let out = self.mlp.forward(xs)?;
        let c = out.narrow(D::Minus1, 0, 2)?;
        let half = (out.narrow(D::Minus1, 2, 2)?.exp()? * 0.5)?;
        Tensor::cat(&[(&c - &half)?, (&c + &half)?], D::Minus1)
    }
}

/// `n` random boxes (xyxy) and noisy corner readings of them.
fn data(rng: &mut rand_chacha::ChaCha8Rng, n: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut feats, mut boxes) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let (cx, cy) = (rng.gen_range(-1.0..1.0f32), rng.gen_range(-1.0..1.0f32));
        let (w, h) = (rng.gen_range(0.2..1.0f32), rng.gen_range(0.2..1.0f32));
        let b = [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0];
        boxes.extend(b);
        feats.extend(b.iter().map(|v| v + rng.gen_range(-0.05..0.05f32)));
    }
    (feats, boxes)
}

fn mean_iou(model: &BoxHead, x: &Tensor, target: &Tensor) -> Result<f32> {
    let pred = model.forward(x)?;
    // the diagonal of the pairwise IoU matrix: IoU of each prediction with its own target
    let iou = box_iou(&pred, target)?;
    let n = iou.dim(0)?;
    let eye = Tensor::eye(n, DType::F32, x.device())?;
    (iou * eye)?.sum_all()?.to_scalar::<f32>().map(|s| s / n as f32)
}

fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut rng = trainer::rng::stream(0, &["box_head", "data"]);
    let (f, b) = data(&mut rng, 512);
    let x = Tensor::from_vec(f, (512, 4), &dev)?;
    let y = Tensor::from_vec(b, (512, 4), &dev)?;
    let (f, b) = data(&mut rng, 128);
    let x_test = Tensor::from_vec(f, (128, 4), &dev)?;
    let y_test = Tensor::from_vec(b, (128, 4), &dev)?;

    let varmap = VarMap::new();
    let mut init = trainer::rng::stream(0, &["box_head", "init"]);
    let model = BoxHead {
        mlp: Mlp::new(&varmap, "head", 4, 32, 4, &mut init, DType::F32, &dev)?,
    };
    println!(
        "held-out mean IoU before training: {:.3}",
        mean_iou(&model, &x_test, &y_test)?
    );
    let cfg = FitConfig {
        steps: 600,
        lr: 0.01,
        optimizer: OptimizerConfig::adam(),
        schedule: Schedule::Cosine {
            t_max: 600,
            eta_min: 1e-4,
        },
        clip_norm: Some(5.0),
        batch_size: Some(64),
        log_every: 100,
        seed: 0,
        ..FitConfig::default()
    };
    let loss = CIoULoss::default().with_reduction(Reduction::Mean);
    let run = FitRun::new(&model, &varmap, &loss, &x, &y, &cfg).with_label("box_head");
    let report = fit(run, &mut |t, l| {
        println!("step {t:>4}: CIoU loss {l:.4}");
        Ok(())
    })?;
    println!("final training CIoU loss {:.4}", report.final_loss);
    println!(
        "held-out mean IoU after training: {:.3}",
        mean_iou(&model, &x_test, &y_test)?
    );
    Ok(())
}
