//! Forward + backward of the pointwise losses and cross-entropy (f32, CPU, reduction mean), on
//! the fused kernels and on the composite path, plus the forward alone and the cost Candle's
//! tape adds to every gradient (`zeros_like` + `add`, `candle_core::backprop`), for reading the
//! fused figures against.
//!
//! `cargo bench -p loss-core`; a quick look:
//! `cargo bench -p loss-core -- --warm-up-time 1 --measurement-time 3 'mse_loss/fused'`.

use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use loss_core::Reduction;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SIZES: [usize; 2] = [100_000, 1_000_000];
type LossFn = fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>;

fn uniform(n: usize, lo: f32, hi: f32, seed: u64) -> Tensor {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n).map(|_| r.gen_range(lo..hi)).collect();
    Tensor::from_vec(v, n, &Device::Cpu).unwrap()
}

fn step(f: LossFn, pred: &Var, target: &Tensor) {
    let loss = f(pred.as_tensor(), target).unwrap();
    let grads = loss.backward().unwrap();
    criterion::black_box(grads.get(pred.as_tensor()).unwrap());
}

fn pointwise(c: &mut Criterion) {
    let losses: [(&str, LossFn, (f32, f32)); 6] = [
        ("l1_loss", |x, y| loss_core::l1_loss(x, y, Reduction::Mean), (-1.0, 1.0)),
        (
            "mse_loss",
            |x, y| loss_core::mse_loss(x, y, Reduction::Mean),
            (-1.0, 1.0),
        ),
        (
            "smooth_l1_loss",
            |x, y| loss_core::smooth_l1_loss(x, y, 1.0, Reduction::Mean),
            (-1.0, 1.0),
        ),
        (
            "binary_cross_entropy_with_logits",
            |x, y| loss_core::binary_cross_entropy_with_logits(x, y, None, None, Reduction::Mean),
            (0.0, 1.0),
        ),
        (
            "sigmoid_focal_loss",
            |x, y| loss_core::sigmoid_focal_loss(x, y, 0.25, 2.0, Reduction::Mean),
            (0.0, 1.0),
        ),
        (
            "kl_div",
            |x, y| loss_core::kl_div(x, y, false, Reduction::Mean),
            (0.0, 1.0),
        ),
    ];
    for (name, f, (lo, hi)) in losses {
        let mut g = c.benchmark_group(name);
        g.sample_size(20);
        for n in SIZES {
            g.throughput(Throughput::Elements(n as u64));
            let x = uniform(n, -3.0, 3.0, 1);
            let t = uniform(n, lo, hi, 2);
            let pred = Var::from_tensor(&x).unwrap();
            g.bench_with_input(BenchmarkId::new("fused", n), &n, |b, _| b.iter(|| step(f, &pred, &t)));
            g.bench_with_input(BenchmarkId::new("fused-forward", n), &n, |b, _| {
                b.iter(|| criterion::black_box(f(&x, &t).unwrap()))
            });
            g.bench_with_input(BenchmarkId::new("composite", n), &n, |b, _| {
                b.iter(|| loss_core::kernel::with_path(loss_core::kernel::Path::Composite, || step(f, &pred, &t)))
            });
        }
        g.finish();
    }
}

fn cross_entropy(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross_entropy");
    g.sample_size(10);
    for (n, classes) in [(10_000usize, 10usize), (100_000, 100), (10_000, 1000)] {
        g.throughput(Throughput::Elements((n * classes) as u64));
        let x = uniform(n * classes, -3.0, 3.0, 3).reshape((n, classes)).unwrap();
        let mut r = ChaCha8Rng::seed_from_u64(4);
        let y: Vec<i64> = (0..n).map(|_| r.gen_range(0..classes as i64)).collect();
        let y = Tensor::from_vec(y, n, &Device::Cpu).unwrap();
        let pred = Var::from_tensor(&x).unwrap();
        let f = |x: &Tensor, y: &Tensor| loss_core::cross_entropy(x, y, None, -100, 0.0, Reduction::Mean);
        let id = format!("{n}x{classes}");
        g.bench_function(BenchmarkId::new("fused", &id), |b| {
            b.iter(|| {
                let grads = f(pred.as_tensor(), &y).unwrap().backward().unwrap();
                criterion::black_box(grads.get(pred.as_tensor()).unwrap());
            })
        });
    }
    g.finish();
}

/// What Candle's `backward` spends on each gradient besides the loss's own kernels: a
/// `zeros_like` of the input and an `add` of the kernel's gradient into it.
fn tape_overhead(c: &mut Criterion) {
    let mut g = c.benchmark_group("tape_accumulate");
    for n in SIZES {
        g.throughput(Throughput::Elements(n as u64));
        let x = uniform(n, -1.0, 1.0, 5);
        g.bench_with_input(BenchmarkId::new("zeros_like+add", n), &n, |b, _| {
            b.iter(|| criterion::black_box(x.zeros_like().unwrap().add(&x).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, pointwise, cross_entropy, tape_overhead);
criterion_main!(benches);
