//! `trainer bench`: forward + backward of each loss on the workloads of the repository's
//! `bench/torch_bench.py`, on the fused (CPU kernel) and the composite (plain Candle ops) path,
//! with the same JSON rows as that script; [`against_table`] pairs the two files workload by
//! workload (`trainer bench --against torch.json`).
//!
//! One workload is one loss at one size, f32, reduction mean, gradient w.r.t. the prediction; a
//! repeat builds a fresh graph, runs `backward` and reads the gradient; the figure is the median
//! wall time after three warm-up repeats, over at least 7 repeats and 0.5 s. Effective bandwidth
//! counts the bytes a perfect kernel must move: read prediction and target, write the gradient.

mod custom;

pub use custom::{parse_params, run_custom, Custom};

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var};
use loss_core::Reduction;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// The workload list (`bench/torch_bench.py` times the same ones in PyTorch): `(loss, shape)`.
pub fn workloads() -> Vec<(&'static str, Vec<usize>)> {
    let mut w = Vec::new();
    for l in ["l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss"] {
        for n in [1_000, 100_000, 1_000_000, 10_000_000] {
            w.push((l, vec![n]));
        }
    }
    for l in ["binary_cross_entropy_with_logits", "sigmoid_focal_loss"] {
        for n in [100_000, 1_000_000, 10_000_000] {
            w.push((l, vec![n]));
        }
    }
    for s in [[10_000, 10], [100_000, 100], [10_000, 1000]] {
        w.push(("cross_entropy", s.to_vec()));
    }
    w.push(("kl_div", vec![10_000, 1000]));
    for l in ["iou_loss", "giou_loss", "diou_loss", "ciou_loss"] {
        for n in [1_000, 100_000, 1_000_000] {
            w.push((l, vec![n, 4]));
        }
    }
    for l in ["eiou_loss", "siou_loss"] {
        for n in [1_000, 100_000, 1_000_000] {
            w.push((l, vec![n, 4]));
        }
    }
    w.push(("dice_loss", vec![8, 4, 128, 128]));
    w.push(("dice_loss", vec![2, 4, 64, 128, 128]));
    // The losses added in the second round, timed through the registry (see `named_inputs`).
    for l in [
        "poisson_nll_loss",
        "gaussian_nll_loss",
        "margin_ranking_loss",
        "soft_margin_loss",
        "hinge_embedding_loss",
        "log_cosh_loss",
    ] {
        w.push((l, vec![1_000_000]));
    }
    for l in ["multilabel_soft_margin_loss", "multi_margin_loss"] {
        w.push((l, vec![10_000, 100]));
    }
    for l in ["cosine_embedding_loss", "triplet_margin_loss"] {
        w.push((l, vec![10_000, 128]));
    }
    w.push(("ctc_loss", vec![100, 16, 32, 30]));
    w.push(("soft_cldice_loss", vec![2, 2, 128, 128]));
    w.push(("hausdorff_dt_loss", vec![2, 2, 128, 128]));
    w.push(("lovasz_hinge_loss", vec![8, 1, 128, 128]));
    w.push(("jaccard_loss", vec![8, 4, 128, 128]));
    w.push(("varifocal_loss", vec![10_000, 80]));
    w.push(("quality_focal_loss", vec![10_000, 80]));
    w.push(("distribution_focal_loss", vec![100_000, 17]));
    w.push(("poly1_cross_entropy", vec![10_000, 100]));
    for l in ["gaussian_focal_loss", "balanced_l1_loss", "poly1_focal_loss"] {
        w.push((l, vec![1_000_000]));
    }
    for &l in crate::registry::YOLO_BOX_LOSSES {
        for n in [100_000, 1_000_000] {
            w.push((l, vec![n, 4]));
        }
    }
    w
}

/// The inputs of a workload that runs through [`crate::registry`]: every named tensor, the name
/// of the one the gradient is taken for, and the parameters (reduction mean, the reference's
/// defaults otherwise). The distributions are those of `bench/torch_bench.py`.
struct Named {
    inputs: crate::registry::Inputs,
    grad: &'static str,
    params: serde_json::Map<String, serde_json::Value>,
}

fn bits(r: &mut ChaCha8Rng, n: usize, p_one: f32) -> Vec<f32> {
    bits_where(r, n, |u| u < p_one)
}

/// `n` uniform draws `u` in [0, 1) mapped to 1 where `one(u)`, else 0.
fn bits_where(r: &mut ChaCha8Rng, n: usize, one: impl Fn(f32) -> bool) -> Vec<f32> {
    uniform(r, n)
        .into_iter()
        .map(|u| if one(u) { 1.0 } else { 0.0 })
        .collect()
}

fn signs(r: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    bits(r, n, 0.5).into_iter().map(|b| 2.0 * b - 1.0).collect()
}

fn classes(r: &mut ChaCha8Rng, n: usize, c: usize) -> Vec<u32> {
    (0..n).map(|_| r.gen_range(0..c as u32)).collect()
}

/// An error unless `shape` has at least `dims` dimensions (a generator that reads `shape[1]`
/// must not index past the end of a shorter one).
fn need_dims(loss: &str, shape: &[usize], dims: usize, layout: &str) -> Result<()> {
    if shape.len() < dims {
        bail!("{loss} needs a prediction of at least {dims} dimensions ({layout}), got {shape:?}");
    }
    Ok(())
}

/// The round-two workloads' inputs; `None` for a loss timed by [`call`] instead.
fn named_inputs(loss: &str, shape: &[usize], dev: &Device) -> Result<Option<Named>> {
    let mut r = ChaCha8Rng::seed_from_u64(0);
    let n: usize = shape.iter().product();
    let t = |v: Vec<f32>, s: &[usize]| Tensor::from_vec(v, s, dev);
    let mut params = serde_json::Map::new();
    params.insert("reduction".into(), "mean".into());
    let (grad, inputs): (&'static str, Vec<(&str, Tensor)>) = match loss {
        "poisson_nll_loss" => {
            let x = normal(&mut r, n);
            // Poisson counts of rate 4u, u uniform (Knuth's method): small integers.
            let y = uniform(&mut r, n)
                .into_iter()
                .map(|u| {
                    let limit = (-4.0 * u).exp();
                    let (mut k, mut p) = (0.0f32, 1.0f32);
                    loop {
                        p *= r.gen::<f32>();
                        if p <= limit {
                            break k;
                        }
                        k += 1.0;
                    }
                })
                .collect();
            ("input", vec![("input", t(x, shape)?), ("target", t(y, shape)?)])
        }
        "gaussian_nll_loss" => {
            let (x, y) = (normal(&mut r, n), normal(&mut r, n));
            let v = uniform(&mut r, n).into_iter().map(|u| u + 0.1).collect();
            (
                "input",
                vec![("input", t(x, shape)?), ("target", t(y, shape)?), ("var", t(v, shape)?)],
            )
        }
        "margin_ranking_loss" => {
            let (a, b) = (normal(&mut r, n), normal(&mut r, n));
            let y = signs(&mut r, n);
            (
                "input1",
                vec![
                    ("input1", t(a, shape)?),
                    ("input2", t(b, shape)?),
                    ("target", t(y, shape)?),
                ],
            )
        }
        "soft_margin_loss" | "hinge_embedding_loss" => {
            let x = normal(&mut r, n);
            let y = signs(&mut r, n);
            ("input", vec![("input", t(x, shape)?), ("target", t(y, shape)?)])
        }
        "log_cosh_loss" | "balanced_l1_loss" => {
            let (x, y) = (normal(&mut r, n), normal(&mut r, n));
            let name = if loss == "log_cosh_loss" { "input" } else { "pred" };
            (name, vec![(name, t(x, shape)?), ("target", t(y, shape)?)])
        }
        "multilabel_soft_margin_loss" => {
            let x = normal(&mut r, n);
            let y = bits(&mut r, n, 0.3);
            ("input", vec![("input", t(x, shape)?), ("target", t(y, shape)?)])
        }
        "multi_margin_loss" => {
            need_dims(loss, shape, 2, "[N, C]")?;
            let x = normal(&mut r, n);
            let y = classes(&mut r, shape[0], shape[1]);
            (
                "input",
                vec![("input", t(x, shape)?), ("target", Tensor::from_vec(y, shape[0], dev)?)],
            )
        }
        "cosine_embedding_loss" => {
            let (a, b) = (normal(&mut r, n), normal(&mut r, n));
            let y = signs(&mut r, shape[0]);
            (
                "input1",
                vec![
                    ("input1", t(a, shape)?),
                    ("input2", t(b, shape)?),
                    ("target", t(y, &shape[..1])?),
                ],
            )
        }
        "triplet_margin_loss" => {
            let (a, p, q) = (normal(&mut r, n), normal(&mut r, n), normal(&mut r, n));
            (
                "anchor",
                vec![
                    ("anchor", t(a, shape)?),
                    ("positive", t(p, shape)?),
                    ("negative", t(q, shape)?),
                ],
            )
        }
        "ctc_loss" => {
            need_dims(
                loss,
                shape,
                4,
                "[T, N, C, S]: steps, batch, classes with the blank, target length",
            )?;
            if shape.len() > 4 || shape[2] < 2 {
                bail!("{loss} needs a shape [T, N, C, S] with C >= 2 (the blank and a class), got {shape:?}");
            }
            let (steps, batch, c, s) = (shape[0], shape[1], shape[2], shape[3]);
            let lp = loss_core::log_softmax(&t(normal(&mut r, steps * batch * c), &[steps, batch, c])?, 2)?;
            let targets: Vec<i64> = (0..batch * s).map(|_| r.gen_range(1..c as i64)).collect();
            let inputs = vec![
                ("log_probs", lp),
                ("targets", Tensor::from_vec(targets, (batch, s), dev)?),
                (
                    "input_lengths",
                    Tensor::from_vec(vec![steps as i64; batch], batch, dev)?,
                ),
                ("target_lengths", Tensor::from_vec(vec![s as i64; batch], batch, dev)?),
            ];
            ("log_probs", inputs)
        }
        "soft_cldice_loss" | "hausdorff_dt_loss" => {
            let p = uniform(&mut r, n);
            let y = bits(&mut r, n, 0.5);
            ("pred", vec![("pred", t(p, shape)?), ("target", t(y, shape)?)])
        }
        "lovasz_hinge_loss" => {
            let x = normal(&mut r, n);
            let y = bits(&mut r, n, 0.5);
            params.remove("reduction");
            ("logits", vec![("logits", t(x, shape)?), ("target", t(y, shape)?)])
        }
        "jaccard_loss" => {
            need_dims(loss, shape, 2, "[N, C, ...]")?;
            let x = normal(&mut r, n);
            let mut target_shape = vec![shape[0]];
            target_shape.extend_from_slice(&shape[2..]);
            let y = classes(&mut r, n / shape[1], shape[1]);
            params.remove("reduction");
            params.insert("mode".into(), "multiclass".into());
            (
                "pred",
                vec![
                    ("pred", t(x, shape)?),
                    ("target", Tensor::from_vec(y, target_shape, dev)?),
                ],
            )
        }
        "varifocal_loss" => {
            let x = normal(&mut r, n);
            // An IoU-aware soft target on about one element in ten.
            let y = uniform(&mut r, n)
                .into_iter()
                .zip(uniform(&mut r, n))
                .map(|(u, k)| if k > 0.9 { u } else { 0.0 })
                .collect();
            ("pred", vec![("pred", t(x, shape)?), ("target", t(y, shape)?)])
        }
        "quality_focal_loss" => {
            need_dims(loss, shape, 2, "[N, C]")?;
            let x = normal(&mut r, n);
            let label = classes(&mut r, shape[0], shape[1] + 1); // C = background
            let score = uniform(&mut r, shape[0]);
            let inputs = vec![
                ("pred", t(x, shape)?),
                ("label", Tensor::from_vec(label, shape[0], dev)?),
                ("score", t(score, &shape[..1])?),
            ];
            ("pred", inputs)
        }
        "distribution_focal_loss" => {
            need_dims(loss, shape, 2, "[N, bins]")?;
            let x = normal(&mut r, n);
            let label = uniform(&mut r, shape[0])
                .into_iter()
                .map(|u| u * (shape[1] - 1) as f32)
                .collect();
            ("pred", vec![("pred", t(x, shape)?), ("label", t(label, &shape[..1])?)])
        }
        "poly1_cross_entropy" => {
            need_dims(loss, shape, 2, "[N, C]")?;
            let x = normal(&mut r, n);
            let y = classes(&mut r, shape[0], shape[1]);
            (
                "logits",
                vec![
                    ("logits", t(x, shape)?),
                    ("labels", Tensor::from_vec(y, shape[0], dev)?),
                ],
            )
        }
        "poly1_focal_loss" => {
            let x = normal(&mut r, n);
            let y = bits(&mut r, n, 0.5);
            ("logits", vec![("logits", t(x, shape)?), ("labels", t(y, shape)?)])
        }
        "gaussian_focal_loss" => {
            let p = uniform(&mut r, n).into_iter().map(|u| u * 0.98 + 0.01).collect();
            let g = uniform(&mut r, n).into_iter().map(|u| u.powi(4)).collect();
            ("pred", vec![("pred", t(p, shape)?), ("gaussian_target", t(g, shape)?)])
        }
        "alpha_iou_loss" | "mpdiou_loss" | "inner_iou_loss" | "shape_iou_loss" | "wise_iou_loss"
        | "focaler_iou_loss" | "nwd_loss" => {
            let (p, g) = make_inputs("iou_loss", shape, dev)?;
            match loss {
                "mpdiou_loss" => {
                    params.insert("img_w".into(), 640.into());
                    params.insert("img_h".into(), 640.into());
                }
                "inner_iou_loss" => {
                    params.insert("ratio".into(), 0.7.into());
                }
                _ => {}
            }
            ("pred", vec![("pred", p), ("target", g)])
        }
        _ => return Ok(None),
    };
    let inputs = inputs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Ok(Some(Named { inputs, grad, params }))
}

/// One measured workload, in `torch_bench.py`'s JSON row format.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Loss name.
    pub loss: String,
    /// Prediction shape.
    pub shape: Vec<usize>,
    /// `"fused"` or `"composite"`.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// `"cpu"`, `"cuda:0"`, ...
    pub device: String,
    /// Threads used.
    pub threads: usize,
    /// Median wall time of forward + backward, ms.
    pub median_ms: f64,
    /// Fastest repeat, ms: on a machine shared with other work, the figure least disturbed by it.
    pub min_ms: f64,
    /// Repeats timed.
    pub reps: usize,
    /// Bytes a perfect kernel moves (not in torch's rows).
    #[serde(skip)]
    pub bytes: f64,
    /// Elements of the prediction.
    #[serde(skip)]
    pub elements: usize,
}

/// Options of a bench run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Only these losses (empty: all).
    pub only: Vec<String>,
    /// Which paths: `fused`, `composite`.
    pub impls: Vec<String>,
    /// Threads (rayon and Candle).
    pub threads: usize,
    /// Device.
    pub device: Device,
    /// Minimum seconds of timed repeats per workload.
    pub min_seconds: f64,
}

fn normal(r: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    // Box–Muller.
    (0..n)
        .map(|_| {
            let (u, v): (f64, f64) = (r.gen_range(1e-12..1.0), r.gen());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

fn uniform(r: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| r.gen::<f32>()).collect()
}

/// Prediction and target of a workload, made as `torch_bench.py` makes them (same distributions,
/// seeded ChaCha8 instead of torch's generator).
fn make_inputs(loss: &str, shape: &[usize], dev: &Device) -> Result<(Tensor, Tensor)> {
    let mut r = ChaCha8Rng::seed_from_u64(0);
    let n: usize = shape.iter().product();
    let t = |v: Vec<f32>, s: &[usize]| Tensor::from_vec(v, s, dev);
    Ok(match loss {
        "l1_loss" | "mse_loss" | "smooth_l1_loss" | "huber_loss" => {
            (t(normal(&mut r, n), shape)?, t(normal(&mut r, n), shape)?)
        }
        "binary_cross_entropy_with_logits" | "sigmoid_focal_loss" => {
            let x = normal(&mut r, n);
            let y = bits_where(&mut r, n, |u| u > 0.5);
            (t(x, shape)?, t(y, shape)?)
        }
        "cross_entropy" => {
            need_dims(loss, shape, 2, "[N, C, ...]")?;
            let (rows, c) = (shape[0], shape[1]);
            let y: Vec<u32> = (0..rows).map(|_| r.gen_range(0..c as u32)).collect();
            (t(normal(&mut r, n), shape)?, Tensor::from_vec(y, rows, dev)?)
        }
        "kl_div" => {
            let x = loss_core::log_softmax(&t(normal(&mut r, n), shape)?, 1)?;
            let p = loss_core::log_softmax(&t(normal(&mut r, n), shape)?, 1)?.exp()?;
            (x, p)
        }
        "iou_loss" | "giou_loss" | "diou_loss" | "ciou_loss" | "eiou_loss" | "siou_loss" => {
            let rows = shape[0];
            let (mut p, mut g) = (Vec::with_capacity(4 * rows), Vec::with_capacity(4 * rows));
            for _ in 0..rows {
                let (x, y) = (r.gen::<f32>() * 100.0, r.gen::<f32>() * 100.0);
                let (w, h) = (r.gen::<f32>() * 50.0 + 1.0, r.gen::<f32>() * 50.0 + 1.0);
                g.extend_from_slice(&[x, y, x + w, y + h]);
                let n2 = normal(&mut r, 2);
                let (cx, cy) = (x + w / 2.0 + 5.0 * n2[0], y + h / 2.0 + 5.0 * n2[1]);
                let pw = (w * (0.7 + 0.6 * r.gen::<f32>())).max(0.5);
                let ph = (h * (0.7 + 0.6 * r.gen::<f32>())).max(0.5);
                p.extend_from_slice(&[cx - pw / 2.0, cy - ph / 2.0, cx + pw / 2.0, cy + ph / 2.0]);
            }
            (t(p, shape)?, t(g, shape)?)
        }
        "dice_loss" => {
            let p = uniform(&mut r, n);
            let y = bits_where(&mut r, n, |u| u > 0.5);
            (t(p, shape)?, t(y, shape)?)
        }
        other => bail!("bench: unknown loss {other:?}"),
    })
}

/// The loss of a workload, reduction mean, as the benchmark calls it.
fn call(loss: &str, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let m = Reduction::Mean;
    Ok(match loss {
        "l1_loss" => loss_core::l1_loss(x, y, m)?,
        "mse_loss" => loss_core::mse_loss(x, y, m)?,
        "smooth_l1_loss" => loss_core::smooth_l1_loss(x, y, 1.0, m)?,
        "huber_loss" => loss_core::huber_loss(x, y, 1.0, m)?,
        "binary_cross_entropy_with_logits" => loss_core::binary_cross_entropy_with_logits(x, y, None, None, m)?,
        "sigmoid_focal_loss" => loss_core::sigmoid_focal_loss(x, y, 0.25, 2.0, m)?,
        "cross_entropy" => loss_core::cross_entropy(x, y, None, -100, 0.0, m)?,
        "kl_div" => loss_core::kl_div(x, y, false, Reduction::BatchMean)?,
        "iou_loss" => loss_bbox::iou_loss(x, y, loss_bbox::losses::IouMode::Linear, 1e-7, m)?,
        "giou_loss" => loss_bbox::giou_loss(x, y, 1e-7, m)?,
        "diou_loss" => loss_bbox::diou_loss(x, y, 1e-7, m)?,
        "ciou_loss" => loss_bbox::ciou_loss(x, y, 1e-7, m)?,
        "eiou_loss" => loss_bbox::eiou_loss(x, y, 1e-7, m)?,
        "siou_loss" => loss_bbox::siou_loss(x, y, false, 1e-6, m)?,
        "dice_loss" => loss_seg::dice_loss(
            x,
            y,
            &loss_seg::DiceLoss::default().with_overlap(loss_seg::OverlapOptions::default().with_reduction(m)),
        )?,
        other => bail!("bench: unknown loss {other:?}"),
    })
}

/// Bytes a perfect forward + backward moves: read prediction and target, write the gradient.
fn bytes(x: &Tensor, y: &Tensor) -> f64 {
    let size = |t: &Tensor| (t.elem_count() * t.dtype().size_in_bytes()) as f64;
    2.0 * size(x) + size(y)
}

fn time_workload(loss: &str, shape: &[usize], composite: bool, opts: &BenchOptions) -> Result<Row> {
    if let Some(named) = named_inputs(loss, shape, &opts.device)? {
        return time_named(loss, shape, composite, opts, named);
    }
    let (x0, y) = make_inputs(loss, shape, &opts.device)?;
    let x = Var::from_tensor(&x0)?;
    let forward = || call(loss, x.as_tensor(), &y);
    time_step(loss, shape, composite, opts, &x, &forward, bytes(&x0, &y))
}

/// A workload of [`named_inputs`]: the loss through the registry, the gradient w.r.t. the input
/// `named.grad`. Bytes: every input read once, that input's gradient written.
fn time_named(loss: &str, shape: &[usize], composite: bool, opts: &BenchOptions, named: Named) -> Result<Row> {
    let mut inputs = named.inputs;
    let x = Var::from_tensor(&inputs[named.grad])?;
    // every name the prediction is given under (`input`, `logits`, `pred`) gets the variable
    let id = inputs[named.grad].id();
    for t in inputs.values_mut().filter(|t| t.id() == id) {
        *t = x.as_tensor().clone();
    }
    let forward = || {
        crate::registry::call(loss, &named.params, &inputs)
            .ok_or_else(|| anyhow::anyhow!("bench: {loss} is not in the registry"))?
    };
    let size = |t: &Tensor| (t.elem_count() * t.dtype().size_in_bytes()) as f64;
    let mut seen = std::collections::HashSet::new();
    let bytes = inputs.values().filter(|t| seen.insert(t.id())).map(size).sum::<f64>() + size(x.as_tensor());
    time_step(loss, shape, composite, opts, &x, &forward, bytes)
}

/// Times `forward` + backward to the gradient of `x` (the one timing loop of every workload).
fn time_step(
    loss: &str,
    shape: &[usize],
    composite: bool,
    opts: &BenchOptions,
    x: &Var,
    forward: &dyn Fn() -> Result<Tensor>,
    bytes: f64,
) -> Result<Row> {
    let step = || -> Result<()> {
        // The loss, and with it the graph's intermediate tensors, lives until the gradient is
        // read, as in a training step: freeing the graph before the gradients changes the heap's
        // reuse, and composite workloads then took up to 40 % more page faults.
        let value = forward()?;
        let g = value.backward()?;
        let grad = g
            .get(x.as_tensor())
            .ok_or_else(|| anyhow::anyhow!("{loss}: no gradient"))?;
        // Make sure the device has finished (a no-op on the CPU).
        opts.device.synchronize()?;
        std::hint::black_box(grad);
        Ok(())
    };
    let (median, min, reps) = repeat(&step, composite, opts)?;
    Ok(Row {
        loss: loss.to_string(),
        shape: shape.to_vec(),
        implementation: if composite { "composite" } else { "fused" }.into(),
        device: device_name(&opts.device),
        threads: opts.threads,
        median_ms: median,
        min_ms: min,
        reps,
        bytes,
        elements: x.elem_count(),
    })
}

/// Times `step` (three warm-up repeats, then at least 7 and `opts.min_seconds`), on the composite
/// path if asked: the median and the fastest repeat in ms (rounded to 0.1 µs), and the count.
fn repeat(step: &dyn Fn() -> Result<()>, composite: bool, opts: &BenchOptions) -> Result<(f64, f64, usize)> {
    let run = |f: &dyn Fn() -> Result<()>| {
        if composite {
            loss_core::kernel::with_path(loss_core::kernel::Path::Composite, f)
        } else {
            f()
        }
    };
    for _ in 0..3 {
        run(step)?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 7 || (start.elapsed().as_secs_f64() < opts.min_seconds && times.len() < 2000) {
        let t0 = Instant::now();
        run(step)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = if times.len() % 2 == 1 {
        times[times.len() / 2]
    } else {
        0.5 * (times[times.len() / 2 - 1] + times[times.len() / 2])
    };
    let round = |ms: f64| (ms * 1e4).round() / 1e4;
    Ok((round(median), round(times[0]), times.len()))
}

/// `"cpu"`, `"cuda:N"` or `"metal:N"`.
pub fn device_name(d: &Device) -> String {
    match d.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Runs the selected workloads; `progress` is called after each row.
///
/// # Errors
/// An unknown loss in `only`, an unknown implementation name, a tensor error.
pub fn run(opts: &BenchOptions, mut progress: impl FnMut(&Row)) -> Result<Vec<Row>> {
    check_options(opts)?;
    let all = workloads();
    let mut rows = Vec::new();
    for (loss, shape) in all {
        if !opts.only.is_empty() && !opts.only.iter().any(|o| o == loss) {
            continue;
        }
        for i in &opts.impls {
            let row = time_workload(loss, &shape, i == "composite", opts)?;
            progress(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Checks the loss and implementation names of `opts` (before any timing).
///
/// # Errors
/// A loss of `only` that no workload has, an implementation other than `fused` or `composite`.
pub fn check_options(opts: &BenchOptions) -> Result<()> {
    let all = workloads();
    for o in &opts.only {
        if !all.iter().any(|(l, _)| l == o) {
            bail!("bench: unknown loss {o:?} (known: {})", known(&all));
        }
    }
    for i in &opts.impls {
        if i != "fused" && i != "composite" {
            bail!("bench: unknown implementation {i:?} (expected fused or composite)");
        }
    }
    Ok(())
}

fn known(all: &[(&str, Vec<usize>)]) -> String {
    let mut v: Vec<&str> = all.iter().map(|(l, _)| *l).collect();
    v.dedup();
    v.join(", ")
}

/// Streaming bandwidth `a[i] = b[i]·s + c[i]` over `n` f32 in GB/s (12 bytes an element), into a
/// reused buffer and into a freshly allocated one, with the rayon pool's threads.
pub fn stream_bandwidth(n: usize) -> (f64, f64) {
    use rayon::prelude::*;
    let b = vec![1.5f32; n];
    let c = vec![0.5f32; n];
    let kernel = |a: &mut [f32]| {
        a.par_chunks_mut(1 << 16)
            .zip(b.par_chunks(1 << 16))
            .zip(c.par_chunks(1 << 16))
            .for_each(|((a, b), c)| {
                for i in 0..a.len() {
                    a[i] = b[i] * 3.0 + c[i];
                }
            })
    };
    let mut a = vec![0.0f32; n];
    kernel(&mut a);
    let gbs = |secs: f64| 12.0 * n as f64 / secs / 1e9;
    let best = |f: &mut dyn FnMut() -> f64| (0..5).map(|_| f()).fold(f64::INFINITY, f64::min);
    let reused = best(&mut || {
        let t = Instant::now();
        kernel(&mut a);
        t.elapsed().as_secs_f64()
    });
    let fresh = best(&mut || {
        let t = Instant::now();
        // `vec![0; n]` takes fresh zero pages from the kernel: the first write faults them in,
        // as it does for a freshly allocated gradient.
        let mut f = vec![0.0f32; n];
        kernel(&mut f);
        let s = t.elapsed().as_secs_f64();
        std::hint::black_box(&f);
        s
    });
    std::hint::black_box(&a);
    (gbs(reused), gbs(fresh))
}

/// The headings of the columns that name a workload and give its median time, as
/// [`workload_cells`] fills them.
fn workload_head() -> String {
    format!("{:34} {:>20} {:>10} {:>11}", "loss", "shape", "impl", "median ms")
}

/// A row's loss, shape, implementation and median time, in the columns of [`workload_head`].
fn workload_cells(r: &Row) -> String {
    format!(
        "{:34} {:>20} {:>10} {:>11.3}",
        r.loss,
        format!("{:?}", r.shape),
        r.implementation,
        r.median_ms
    )
}

/// The printed table: ms, elements/s, effective GB/s, fused vs composite, and the distance to the
/// memory floor at `floor_gbs`.
pub fn table(rows: &[Row], floor_gbs: f64) -> String {
    let mut s = format!(
        "{} {:>9} {:>10} {:>9} {:>10} {:>9}\n",
        workload_head(),
        "min ms",
        "Melem/s",
        "GB/s",
        "vs floor",
        "fused x"
    );
    for r in rows {
        let other = rows
            .iter()
            .find(|o| o.loss == r.loss && o.shape == r.shape && o.implementation == "composite");
        let speedup = match (r.implementation.as_str(), other) {
            ("fused", Some(c)) => format!("{:.2}", c.median_ms / r.median_ms),
            _ => "-".into(),
        };
        let secs = r.median_ms / 1e3;
        let floor_ms = r.bytes / (floor_gbs * 1e9) * 1e3;
        s.push_str(&format!(
            "{} {:>9.3} {:>10.1} {:>9.2} {:>9.1}x {:>9}\n",
            workload_cells(r),
            r.min_ms,
            r.elements as f64 / secs / 1e6,
            r.bytes / secs / 1e9,
            r.median_ms / floor_ms,
            speedup
        ));
    }
    s
}

/// Checks that a bench device is usable (the dtype of the workloads is f32).
pub fn check_device(d: &Device) -> Result<()> {
    Tensor::zeros(1, DType::F32, d)?;
    Ok(())
}

/// A row of another benchmark file (`bench/torch_bench.py`'s output, or an earlier
/// `trainer bench --json`): the fields [`against_table`] reads.
#[derive(Debug, Clone, Deserialize)]
pub struct ReferenceRow {
    /// Loss name.
    pub loss: String,
    /// Prediction shape.
    pub shape: Vec<usize>,
    /// Implementation (`"torch"`, `"fused"`, ...).
    #[serde(rename = "impl")]
    pub implementation: String,
    /// Median wall time, ms.
    pub median_ms: f64,
}

/// Reads a benchmark JSON file: a list of rows with at least `loss`, `shape`, `impl` and
/// `median_ms`.
///
/// # Errors
/// The file cannot be read, is not such a list, or holds a time that is not positive.
pub fn load_reference(path: &Path) -> Result<Vec<ReferenceRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let rows: Vec<ReferenceRow> = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a benchmark file (a JSON list of rows with loss, shape, impl, median_ms): {e}",
            path.display()
        )
    })?;
    if let Some(r) = rows.iter().find(|r| !(r.median_ms.is_finite() && r.median_ms > 0.0)) {
        bail!(
            "{}: {} {:?} has median_ms {}, not a positive time",
            path.display(),
            r.loss,
            r.shape,
            r.median_ms
        );
    }
    Ok(rows)
}

/// Each of `rows` beside the reference row of the same loss and shape: the reference's median,
/// and `reference / ours` (above 1: ours is faster). A reference file with several
/// implementations of one workload (a `trainer bench --json` file) is read for the one named
/// `reference_impl`, or for its first row of that workload when `None`. Ends with the geometric
/// mean of the ratios per implementation of ours, and the workloads either side lacks.
pub fn against_table(rows: &[Row], reference: &[ReferenceRow], reference_impl: Option<&str>) -> String {
    let find = |r: &Row| {
        reference
            .iter()
            .filter(|x| reference_impl.is_none_or(|i| x.implementation == i))
            .find(|x| x.loss == r.loss && x.shape == r.shape)
    };
    let mut s = format!(
        "{} {:>10} {:>11} {:>8}\n",
        workload_head(),
        "ref impl",
        "ref ms",
        "ref/ours"
    );
    let mut logs: Vec<(String, f64)> = Vec::new();
    for r in rows {
        let Some(x) = find(r) else { continue };
        let ratio = x.median_ms / r.median_ms;
        logs.push((r.implementation.clone(), ratio.ln()));
        s.push_str(&format!(
            "{} {:>10} {:>11.3} {:>8.2}\n",
            workload_cells(r),
            x.implementation,
            x.median_ms,
            ratio
        ));
    }
    let mut impls: Vec<&String> = logs.iter().map(|(i, _)| i).collect();
    impls.sort();
    impls.dedup();
    for i in impls {
        let l: Vec<f64> = logs.iter().filter(|(j, _)| j == i).map(|(_, l)| *l).collect();
        let wins = l.iter().filter(|&&x| x > 0.0).count();
        s.push_str(&format!(
            "{i}: geometric mean of ref/ours {:.2} over {} workloads, faster on {wins}\n",
            (l.iter().sum::<f64>() / l.len() as f64).exp(),
            l.len()
        ));
    }
    for r in rows.iter().filter(|r| find(r).is_none()) {
        s.push_str(&format!("no reference row for {} {:?}\n", r.loss, r.shape));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(loss: &str, shape: &[usize], implementation: &str, median_ms: f64) -> Row {
        Row {
            loss: loss.into(),
            shape: shape.to_vec(),
            implementation: implementation.into(),
            device: "cpu".into(),
            threads: 2,
            median_ms,
            min_ms: median_ms,
            reps: 7,
            bytes: 0.0,
            elements: 0,
        }
    }

    fn reference(json: &str) -> Vec<ReferenceRow> {
        let dir = std::env::temp_dir().join(format!("trainer-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.json", json.len()));
        std::fs::write(&path, json).unwrap();
        let r = load_reference(&path);
        std::fs::remove_file(&path).unwrap();
        r.unwrap()
    }

    #[test]
    fn ratios_pair_loss_and_shape_and_end_with_the_geometric_mean() {
        let refs = reference(
            r#"[{"loss": "l1_loss", "shape": [1000], "impl": "torch", "device": "cpu", "threads": 2, "median_ms": 0.5, "reps": 9},
                {"loss": "l1_loss", "shape": [100000], "impl": "torch", "median_ms": 2.0},
                {"loss": "mse_loss", "shape": [1000], "impl": "torch", "median_ms": 1.0}]"#,
        );
        let rows = [
            row("l1_loss", &[1000], "fused", 0.25),
            row("l1_loss", &[100000], "fused", 4.0),
            row("huber_loss", &[1000], "fused", 1.0),
        ];
        let t = against_table(&rows, &refs, None);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].starts_with("l1_loss") && lines[1].ends_with("2.00"), "{t}");
        assert!(lines[2].contains("[100000]") && lines[2].ends_with("0.50"), "{t}");
        // sqrt(2 · 0.5) = 1: one faster, one slower.
        assert_eq!(
            lines[3],
            "fused: geometric mean of ref/ours 1.00 over 2 workloads, faster on 1"
        );
        assert_eq!(lines[4], "no reference row for huber_loss [1000]");
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn a_reference_with_several_implementations_is_read_for_the_one_named() {
        let refs = reference(
            r#"[{"loss": "l1_loss", "shape": [10], "impl": "composite", "median_ms": 8.0},
                {"loss": "l1_loss", "shape": [10], "impl": "fused", "median_ms": 2.0}]"#,
        );
        let rows = [row("l1_loss", &[10], "fused", 1.0)];
        assert!(against_table(&rows, &refs, Some("fused"))
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("2.00"));
        assert!(against_table(&rows, &refs, None)
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("8.00"));
        assert!(against_table(&rows, &refs, Some("torch")).contains("no reference row for l1_loss [10]"));
    }

    /// Every workload's inputs are accepted by its loss and give a finite value and gradient
    /// (at a smaller first dimension, so the test stays quick).
    #[test]
    fn every_workload_runs_and_is_finite() {
        let dev = Device::Cpu;
        for (loss, mut shape) in workloads() {
            if shape.iter().product::<usize>() > 100_000 {
                shape[0] = shape[0].min(64);
            }
            let value = match named_inputs(loss, &shape, &dev).unwrap() {
                Some(named) => {
                    let mut inputs = named.inputs;
                    let x = Var::from_tensor(&inputs[named.grad]).unwrap();
                    inputs.insert(named.grad.to_string(), x.as_tensor().clone());
                    let l = crate::registry::call(loss, &named.params, &inputs).unwrap().unwrap();
                    let g = l.backward().unwrap().get(x.as_tensor()).unwrap().clone();
                    assert_eq!(g.dims(), x.dims(), "{loss}");
                    let finite = g
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .all(|v| v.is_finite());
                    assert!(finite, "{loss} {shape:?}: gradient not finite");
                    l
                }
                None => {
                    let (x, y) = make_inputs(loss, &shape, &dev).unwrap();
                    call(loss, &x, &y).unwrap()
                }
            };
            assert_eq!(value.dims(), &[] as &[usize], "{loss}: mean gives a scalar");
            assert!(value.to_scalar::<f32>().unwrap().is_finite(), "{loss} {shape:?}");
        }
    }

    #[test]
    fn a_file_that_is_not_a_benchmark_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("trainer-bench-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in [
            ("object.json", r#"{"loss": "l1_loss"}"#),
            (
                "zero.json",
                r#"[{"loss": "l1_loss", "shape": [1], "impl": "torch", "median_ms": 0}]"#,
            ),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            let e = format!("{:#}", load_reference(&p).unwrap_err());
            assert!(e.contains(name), "{e}");
        }
        let e = format!("{:#}", load_reference(&dir.join("missing.json")).unwrap_err());
        assert!(e.contains("cannot read") && e.contains("missing.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
