//! Forward + backward of each aligned loss at 1e3, 1e5 and 1e6 box pairs (f32, CPU), on the
//! fused kernel and on the composite path; and the two mmdetection losses (composite only).
//!
//! `cargo bench -p loss-bbox`; a quick look:
//! `cargo bench -p loss-bbox -- --warm-up-time 1 --measurement-time 3 'giou_loss/fused'`.

use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use loss_bbox::{aligned_loss, extended_iou_loss, siou_loss, AlignedLoss, IouMode};
use loss_core::kernel::{with_path, Path};
use loss_core::Reduction;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];

/// `n` overlapping-or-nearby random box pairs, `[n, 4]` f32 each.
fn pairs(n: usize) -> (Tensor, Tensor) {
    let mut r = ChaCha8Rng::seed_from_u64(7);
    let mut p = Vec::with_capacity(4 * n);
    let mut t = Vec::with_capacity(4 * n);
    for _ in 0..n {
        let (x, y) = (r.gen_range(0.0f32..100.0), r.gen_range(0.0f32..100.0));
        let (w, h) = (r.gen_range(1.0f32..30.0), r.gen_range(1.0f32..30.0));
        p.extend_from_slice(&[x, y, x + w, y + h]);
        let (dx, dy) = (r.gen_range(-5.0f32..5.0), r.gen_range(-5.0f32..5.0));
        let (sw, sh) = (r.gen_range(0.7f32..1.3), r.gen_range(0.7f32..1.3));
        t.extend_from_slice(&[x + dx, y + dy, x + dx + w * sw, y + dy + h * sh]);
    }
    let d = Device::Cpu;
    (
        Tensor::from_vec(p, (n, 4), &d).unwrap(),
        Tensor::from_vec(t, (n, 4), &d).unwrap(),
    )
}

fn forward_backward(f: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>, pred: &Var, target: &Tensor) {
    let loss = f(pred.as_tensor(), target).unwrap();
    let grads = loss.backward().unwrap();
    criterion::black_box(grads.get(pred.as_tensor()).unwrap());
}

fn aligned(c: &mut Criterion) {
    let kinds = [
        AlignedLoss::Iou(IouMode::Linear),
        AlignedLoss::Giou,
        AlignedLoss::Diou,
        AlignedLoss::Ciou,
        AlignedLoss::Eiou,
    ];
    let data: Vec<_> = SIZES.iter().map(|&n| (n, pairs(n))).collect();
    for kind in kinds {
        let mut g = c.benchmark_group(kind.name());
        g.sample_size(10);
        for (n, (p, t)) in &data {
            g.throughput(Throughput::Elements(*n as u64));
            let pred = Var::from_tensor(p).unwrap();
            for (label, kernel) in [("fused", Path::Fused), ("composite", Path::Composite)] {
                g.bench_with_input(BenchmarkId::new(label, n), n, |b, _| {
                    b.iter(|| {
                        forward_backward(
                            |x, y| with_path(kernel, || aligned_loss(kind, x, y, 1e-7, Reduction::Sum)),
                            &pred,
                            t,
                        )
                    })
                });
            }
        }
        g.finish();
    }
}

fn mmdet(c: &mut Criterion) {
    let mut g = c.benchmark_group("mmdet");
    g.sample_size(10);
    for &n in &SIZES {
        let (p, t) = pairs(n);
        let pred = Var::from_tensor(&p).unwrap();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("extended_iou_loss/composite", n), &n, |b, _| {
            b.iter(|| forward_backward(|x, y| extended_iou_loss(x, y, 0.1, 1e-6, Reduction::Sum), &pred, &t))
        });
        g.bench_with_input(BenchmarkId::new("siou_loss/composite", n), &n, |b, _| {
            b.iter(|| forward_backward(|x, y| siou_loss(x, y, false, 1e-6, Reduction::Sum), &pred, &t))
        });
    }
    g.finish();
}

criterion_group!(benches, aligned, mmdet);
criterion_main!(benches);
