//! Forward + backward of the overlap losses at `[8, 4, 128, 128]` and `[2, 4, 64, 128, 128]` (f32,
//! CPU): the shared overlap step on its fused and composite paths, and each loss end to end.
//!
//! `cargo bench -p loss-seg` (add `-- --quick` or a filter such as `overlap/` for a short run).

use candle_core::{DType, Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use loss_core::kernel::{with_path, Path};
use loss_seg::overlap::Overlap;
use loss_seg::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

const SHAPES: [&[usize]; 2] = [&[8, 4, 128, 128], &[2, 4, 64, 128, 128]];

struct Inputs {
    logits: Var,
    probs: Var,
    labels: Tensor,
    onehot: Tensor,
    labels_flat: Tensor,
}

fn inputs(shape: &[usize]) -> Inputs {
    let mut r = ChaCha8Rng::seed_from_u64(0);
    let n: usize = shape.iter().product();
    let c = shape[1];
    let dev = Device::Cpu;
    let logits: Vec<f32> = (0..n).map(|_| r.gen_range(-3.0..3.0)).collect();
    let logits = Tensor::from_vec(logits, shape, &dev).unwrap();
    let probs = loss_seg::prepare::softmax_channels(&logits).unwrap();
    let mut lshape = shape.to_vec();
    lshape[1] = 1;
    let m: usize = lshape.iter().product();
    let labels: Vec<u32> = (0..m).map(|_| r.gen_range(0..c as u32)).collect();
    let labels = Tensor::from_vec(labels, lshape.as_slice(), &dev).unwrap();
    let mut oshape = vec![1usize; shape.len()];
    oshape[1] = c;
    let ids = Tensor::arange(0u32, c as u32, &dev).unwrap().reshape(oshape).unwrap();
    let onehot = labels.broadcast_eq(&ids).unwrap().to_dtype(DType::F32).unwrap();
    Inputs {
        logits: Var::from_tensor(&logits).unwrap(),
        probs: Var::from_tensor(&probs).unwrap(),
        labels_flat: labels.squeeze(1).unwrap(),
        labels,
        onehot,
    }
}

fn name(shape: &[usize]) -> String {
    format!("{shape:?}").replace(' ', "")
}

fn backward(loss: candle_core::Result<Tensor>) {
    let g = loss.unwrap().sum_all().unwrap().backward().unwrap();
    std::hint::black_box(g);
}

fn overlap_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("overlap");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for shape in SHAPES {
        let x = inputs(shape);
        let step = |o: Overlap| {
            let total = o.intersection.add(&o.pred_sum).unwrap().add(&o.target_sum).unwrap();
            backward(Ok(total));
        };
        g.bench_function(BenchmarkId::new("fused", name(shape)), |b| {
            b.iter(|| step(with_path(Path::Fused, || Overlap::compute(x.probs.as_tensor(), &x.onehot, false)).unwrap()))
        });
        g.bench_function(BenchmarkId::new("composite", name(shape)), |b| {
            b.iter(|| {
                step(
                    with_path(Path::Composite, || {
                        Overlap::compute(x.probs.as_tensor(), &x.onehot, false)
                    })
                    .unwrap(),
                )
            })
        });
    }
    g.finish();
}

fn losses(c: &mut Criterion) {
    let mut g = c.benchmark_group("loss");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for shape in SHAPES {
        let x = inputs(shape);
        let z = x.logits.as_tensor();
        let dice = DiceLoss::default().with_to_onehot_y(true).with_softmax(true);
        g.bench_function(BenchmarkId::new("dice_softmax/fused", name(shape)), |b| {
            b.iter(|| backward(dice_loss(z, &x.labels, &dice)))
        });
        g.bench_function(BenchmarkId::new("dice_softmax/composite", name(shape)), |b| {
            b.iter(|| with_path(Path::Composite, || backward(dice_loss(z, &x.labels, &dice))))
        });
        let p = x.probs.as_tensor();
        g.bench_function(BenchmarkId::new("dice_probs/fused", name(shape)), |b| {
            b.iter(|| backward(dice_loss(p, &x.onehot, &DiceLoss::default())))
        });
        g.bench_function(BenchmarkId::new("dice_probs/composite", name(shape)), |b| {
            b.iter(|| {
                with_path(Path::Composite, || {
                    backward(dice_loss(p, &x.onehot, &DiceLoss::default()))
                })
            })
        });
        let tv = TverskyLoss::default().with_to_onehot_y(true).with_softmax(true);
        g.bench_function(BenchmarkId::new("tversky_softmax", name(shape)), |b| {
            b.iter(|| backward(tversky_loss(z, &x.labels, &tv)))
        });
        let gd = GeneralizedDiceLoss::default().with_to_onehot_y(true).with_softmax(true);
        g.bench_function(BenchmarkId::new("generalized_dice_softmax", name(shape)), |b| {
            b.iter(|| backward(generalized_dice_loss(z, &x.labels, &gd)))
        });
        let ce = DiceCeLoss::default().with_to_onehot_y(true).with_softmax(true);
        g.bench_function(BenchmarkId::new("dice_ce", name(shape)), |b| {
            b.iter(|| backward(dice_ce_loss(z, &x.labels, &ce)))
        });
        let fo = DiceFocalLoss::default().with_sigmoid(true);
        g.bench_function(BenchmarkId::new("dice_focal", name(shape)), |b| {
            b.iter(|| backward(dice_focal_loss(z, &x.onehot, &fo)))
        });
        g.bench_function(BenchmarkId::new("lovasz_softmax", name(shape)), |b| {
            b.iter(|| backward(lovasz_softmax_loss(z, &x.labels_flat, &LovaszSoftmaxLoss::default())))
        });
    }
    g.finish();
}

criterion_group!(benches, overlap_step, losses);
criterion_main!(benches);
