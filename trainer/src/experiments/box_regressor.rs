//! Experiment 5 — a learned box regressor: which box loss trains a small conv net to localise
//! best?
//!
//! Seeded synthetic images (24 × 24, one to three bright rectangles or discs on Gaussian noise
//! σ = 0.5, as the segmentation experiment's shapes); the target is the box of the largest
//! object (its own pixels' extent, in image units `[0, 1]`, `xyxy`). A small conv net (3 × 3
//! convolutions 1→8→16→16 with ReLU, each followed by a 2 × 2 average pool, then a linear layer
//! to 4 numbers) predicts `(cx, cy, w, h)` through a sigmoid, converted to `xyxy`. Every loss gets
//! the same data, split, initial weights, mini-batch order and optimizer (Adam); the metrics on
//! held-out images are the mean IoU, AP50, AP75 and AP@[.5:.95] (one box an image, see
//! [`ap_at`]), mean and sample std over the seeds.

use super::{
    adam_constant, mean_curve, metric, pm, push_logged, select_losses, Context, Experiment, JobOutcome, LossSeed,
    RunLabel, Runs, Summary, Trained,
};
use crate::data::shapes;
use crate::fit::{fit_resumable, FitConfig, FitError, FitRun, LogRow};
use crate::metrics::mean_std;
use crate::models::{Conv2d, Init, Linear};
use crate::plot::{self, BarSeries, Series};
use crate::progress::Progress;
use crate::records::{Cell, Csv};
use crate::report::{Figure, Section, Table as TextTable};
use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{Module, VarMap};
use loss_bbox::*;
use loss_core::{l1_loss, smooth_l1_loss, Loss, Reduction};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{json, Map};

/// The loss variants, in report order.
pub const LOSSES: [&str; 15] = [
    "l1",
    "smooth_l1",
    "iou",
    "giou",
    "diou",
    "ciou",
    "eiou",
    "siou",
    "alpha_iou",
    "mpdiou",
    "inner_iou",
    "shape_iou",
    "wise_iou",
    "focaler_iou",
    "nwd",
];

/// Settings of the box-regressor experiment.
#[derive(Debug, Clone, Serialize)]
pub struct BoxRegressorConfig {
    /// Loss variants (among [`LOSSES`]).
    pub losses: Vec<String>,
    /// Image side in pixels (24; a multiple of 8).
    pub size: usize,
    /// Pixel noise σ (0.5).
    pub noise: f64,
    /// Most objects an image (3).
    pub max_objects: usize,
    /// Training images per seed (256).
    pub train_images: usize,
    /// Held-out images per seed (96).
    pub test_images: usize,
    /// Number of seeds (3).
    pub seeds: usize,
    /// Training steps (200).
    pub steps: usize,
    /// Mini-batch size (16).
    pub batch_size: usize,
    /// Adam learning rate (0.01).
    pub lr: f64,
    /// Evaluate every this many steps (20).
    pub log_every: usize,
}

impl Default for BoxRegressorConfig {
    fn default() -> Self {
        Self {
            losses: LOSSES.iter().map(|s| s.to_string()).collect(),
            size: 24,
            noise: 0.5,
            max_objects: 3,
            train_images: 256,
            test_images: 96,
            seeds: 3,
            steps: 200,
            batch_size: 16,
            lr: 0.01,
            log_every: 20,
        }
    }
}

impl BoxRegressorConfig {
    /// The default settings with `losses` checked against [`LOSSES`] (`None`: all).
    ///
    /// # Errors
    /// An unknown loss name.
    pub fn with_losses(losses: Option<&[String]>) -> anyhow::Result<Self> {
        Ok(Self {
            losses: select_losses("box-regressor", losses, &LOSSES)?,
            ..Self::default()
        })
    }
}

/// Images `[n, size, size]` and the `xyxy` box of each one's largest object (image units).
struct BoxImages {
    n: usize,
    images: Vec<f64>,
    boxes: Vec<f64>,
}

/// Draws `n` images: 1 to `max_objects` rectangles (sides 3–10 px) or discs (radius 2–5 px),
/// fully inside, possibly overlapping; pixel 1 inside an object, 0 outside, plus noise. The
/// target is the extent of the pixels of the object with the most pixels.
fn generate(rng: &mut ChaCha8Rng, n: usize, cfg: &BoxRegressorConfig) -> BoxImages {
    let s = cfg.size as i64;
    let mut images = Vec::with_capacity(n * cfg.size * cfg.size);
    let mut boxes = Vec::with_capacity(4 * n);
    for _ in 0..n {
        let mut m = vec![0u8; cfg.size * cfg.size];
        let objects = rng.gen_range(1..=cfg.max_objects.max(1));
        let mut best: (usize, [i64; 4]) = (0, [0; 4]);
        for _ in 0..objects {
            let pixels = shapes::object(rng, s, 10);
            for &(x, y) in &pixels {
                m[(y * s + x) as usize] = 1;
            }
            if pixels.len() > best.0 {
                let x1 = pixels.iter().map(|p| p.0).min().unwrap_or(0);
                let y1 = pixels.iter().map(|p| p.1).min().unwrap_or(0);
                let x2 = pixels.iter().map(|p| p.0).max().unwrap_or(0) + 1;
                let y2 = pixels.iter().map(|p| p.1).max().unwrap_or(0) + 1;
                best = (pixels.len(), [x1, y1, x2, y2]);
            }
        }
        shapes::push_noisy(rng, &m, cfg.noise, &mut images);
        boxes.extend(best.1.iter().map(|&c| c as f64 / cfg.size as f64));
    }
    BoxImages { n, images, boxes }
}

/// IoU of two `xyxy` boxes (0 for an empty union).
pub fn box_iou_pair(a: &[f64], b: &[f64]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// AP at IoU threshold `t` with one prediction and one ground truth an image: the share of
/// images whose box reaches IoU ≥ `t`.
///
/// COCO's AP ranks detections by confidence; a regressor that outputs exactly one box an image,
/// with no score, has one detection per ground truth, so precision and recall at the threshold
/// are both this share and the ranking step has nothing to order. AP@[.5:.95] is the mean over
/// `t = 0.50, 0.55, …, 0.95`.
pub fn ap_at(ious: &[f64], t: f64) -> f64 {
    if ious.is_empty() {
        return f64::NAN;
    }
    ious.iter().filter(|&&q| q >= t).count() as f64 / ious.len() as f64
}

/// `(mean IoU, AP50, AP75, AP@[.5:.95])`.
fn box_metrics(ious: &[f64]) -> [f64; 4] {
    let coco: f64 = (0..10).map(|i| ap_at(ious, 0.5 + 0.05 * i as f64)).sum::<f64>() / 10.0;
    [
        ious.iter().sum::<f64>() / ious.len().max(1) as f64,
        ap_at(ious, 0.5),
        ap_at(ious, 0.75),
        coco,
    ]
}

/// The net: three conv + ReLU + 2 × 2 average pool stages, then a linear layer to 4 numbers,
/// `(cx, cy, w, h) = σ(·)`, returned as `xyxy`.
struct Net {
    convs: [Conv2d; 3],
    head: Linear,
}

fn pool2(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h / 2, 2, w / 2, 2))?.mean(5)?.mean(3)
}

impl Net {
    fn new(varmap: &VarMap, size: usize, rng: &mut ChaCha8Rng, device: &Device) -> Result<Self> {
        let conv = |name: &str, i: usize, o: usize, rng: &mut ChaCha8Rng| {
            Conv2d::new(varmap, name, i, o, 3, rng, DType::F32, device)
        };
        let convs = [
            conv("conv1", 1, 8, rng)?,
            conv("conv2", 8, 16, rng)?,
            conv("conv3", 16, 16, rng)?,
        ];
        let side = size / 8;
        let head = Linear::new(
            varmap,
            "head",
            16 * side * side,
            4,
            Init::PyTorch,
            rng,
            DType::F32,
            device,
        )?;
        Ok(Self { convs, head })
    }
}

impl Module for Net {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut h = xs.clone();
        for c in &self.convs {
            h = pool2(&c.forward(&h)?.relu()?)?;
        }
        let o = loss_core::ops::sigmoid(&self.head.forward(&h.flatten_from(1)?)?)?;
        let centre = o.narrow(D::Minus1, 0, 2)?;
        let half = o.narrow(D::Minus1, 2, 2)?.affine(0.5, 0.0)?;
        Tensor::cat(&[centre.sub(&half)?, centre.add(&half)?], D::Minus1)
    }
}

/// A box loss by name on `xyxy` `[N, 4]` in image units, reduced by the mean.
struct BoxLoss {
    name: String,
    size: usize,
    wise: WiseIoU,
}

impl Loss for BoxLoss {
    fn name(&self) -> &'static str {
        LOSSES.iter().find(|n| **n == self.name).copied().unwrap_or("box loss")
    }

    fn forward(&self, p: &Tensor, t: &Tensor) -> Result<Tensor> {
        let m = Reduction::Mean;
        match self.name.as_str() {
            "l1" => l1_loss(p, t, m),
            // Detectron's beta 1/9 (Fast R-CNN's σ = 3), in pixels: beta in image units
            "smooth_l1" => smooth_l1_loss(p, t, 1.0 / 9.0, m),
            "iou" => iou_loss(p, t, IouMode::Linear, DEFAULT_EPS, m),
            "giou" => giou_loss(p, t, DEFAULT_EPS, m),
            "diou" => diou_loss(p, t, DEFAULT_EPS, m),
            "ciou" => ciou_loss(p, t, DEFAULT_EPS, m),
            "eiou" => eiou_loss(p, t, DEFAULT_EPS, m),
            // the paper's sign of the distance exponent: mmdetection's default (false) makes the
            // distance cost reward moving the box away (it collapsed every run here)
            "siou" => siou_loss(p, t, true, 1e-6, m),
            "alpha_iou" => alpha_iou_loss(p, t, 3.0, AlphaIouBase::Ciou, 1e-9, m),
            // image units: the image is 1 × 1
            "mpdiou" => mpdiou_loss(p, t, 1.0, 1.0, 1e-7, m),
            "inner_iou" => inner_iou_loss(p, t, 0.8, InnerIouBase::Ciou, 1e-7, m),
            "shape_iou" => shape_iou_loss(p, t, 0.0, 1e-7, m),
            "wise_iou" => self.wise.forward(p, t),
            "focaler_iou" => focaler_iou_loss(p, t, 0.0, 0.95, 1e-7, m),
            // AI-TOD's 12.8 px, in image units
            _ => nwd_loss(p, t, 12.8 / self.size as f64, 1e-6, m),
        }
    }
}

/// One run's logged rows and final metrics.
pub struct JobResult {
    /// (step, train loss, [test mean IoU])
    rows: Vec<LogRow>,
    /// Final `(mean IoU, AP50, AP75, AP)` on the held-out images.
    final_metrics: [f64; 4],
}

fn fit_config(cfg: &BoxRegressorConfig, seed: u64) -> FitConfig {
    adam_constant(cfg.steps, cfg.lr, Some(cfg.batch_size), cfg.log_every, seed)
}

fn tensors(b: &BoxImages, size: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let x = crate::data::tensor(b.images.clone(), &[b.n, 1, size, size], DType::F32, device)?;
    let y = crate::data::tensor(b.boxes.clone(), &[b.n, 4], DType::F32, device)?;
    Ok((x, y))
}

fn ious(pred: &Tensor, truth: &[f64]) -> Result<Vec<f64>> {
    let p = crate::data::values(pred)?;
    Ok(p.chunks(4)
        .zip(truth.chunks(4))
        .map(|(a, b)| box_iou_pair(a, b))
        .collect())
}

fn run_job(cfg: &BoxRegressorConfig, ctx: &Context, job: &LossSeed, progress: &Progress) -> JobOutcome<JobResult> {
    let label = job.label();
    let wrap = FitError::in_run(&label);
    let mut data_rng = job.stream(ctx.seed, BoxRegressor::NAME, "data");
    let train = generate(&mut data_rng, cfg.train_images, cfg);
    let test = generate(&mut data_rng, cfg.test_images, cfg);
    let (x, y) = tensors(&train, cfg.size, &ctx.device).map_err(wrap)?;
    let (x_test, _) = tensors(&test, cfg.size, &ctx.device).map_err(wrap)?;
    let varmap = VarMap::new();
    let mut init_rng = job.stream(ctx.seed, BoxRegressor::NAME, "init");
    let net = Net::new(&varmap, cfg.size, &mut init_rng, &ctx.device).map_err(wrap)?;
    let loss = BoxLoss {
        name: job.loss.clone(),
        size: cfg.size,
        wise: WiseIoU::default().with_reduction(Reduction::Mean),
    };
    let batch_seed = job.derive_seed(ctx.seed, BoxRegressor::NAME, "batches");
    let mut on_log = |_: usize, _: f64| -> Result<Vec<f64>> {
        let q = ious(&net.forward(&x_test)?, &test.boxes)?;
        Ok(vec![box_metrics(&q)[0]])
    };
    let fit_cfg = fit_config(cfg, batch_seed);
    let run = FitRun::new(&net, &varmap, &loss, &x, &y, &fit_cfg).with_label(&label);
    let (_, rows) = fit_resumable(
        run.with_progress(progress),
        &mut on_log,
        // The checkpoints hold weights, optimizer and batch order, not a loss's state: a resumed
        // wise_iou run would restart its running mean at 1. It is rerun from the start instead
        // (deterministic, so the records match an uninterrupted run).
        if job.loss == "wise_iou" {
            None
        } else {
            ctx.checkpoint.as_ref()
        },
    )?;
    let q = ious(&net.forward(&x_test).map_err(wrap)?, &test.boxes).map_err(wrap)?;
    Ok(Trained {
        done: JobResult {
            rows,
            final_metrics: box_metrics(&q),
        },
        varmap,
    })
}

/// The box-regressor experiment, ready for [`crate::runner::execute`].
pub struct BoxRegressor {
    cfg: BoxRegressorConfig,
}

impl BoxRegressor {
    /// Checks the settings.
    ///
    /// # Errors
    /// Bad settings.
    pub fn new(cfg: BoxRegressorConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(cfg.seeds >= 1, "box-regressor: seeds must be >= 1");
        anyhow::ensure!(
            cfg.size >= 16 && cfg.size.is_multiple_of(8),
            "box-regressor: image size must be a multiple of 8, >= 16"
        );
        Ok(Self { cfg })
    }
}

impl Experiment for BoxRegressor {
    type Job = LossSeed;
    type Done = JobResult;
    const NAME: &'static str = "box-regressor";

    fn jobs(&self) -> Vec<LossSeed> {
        LossSeed::all(&self.cfg.losses, self.cfg.seeds)
    }

    fn steps(&self, _: &LossSeed) -> usize {
        self.cfg.steps
    }

    fn run_job(&self, job: &LossSeed, ctx: &Context, progress: &Progress) -> JobOutcome<JobResult> {
        run_job(&self.cfg, ctx, job, progress)
    }

    fn metrics_header(&self) -> Vec<&'static str> {
        vec!["loss", "seed", "step", "train_loss", "test_mean_iou"]
    }

    fn metrics_rows(&self, job: &LossSeed, r: &JobResult, csv: &mut Csv) {
        push_logged(csv, &[Cell::Str(&job.loss), Cell::Int(job.seed)], &r.rows);
    }

    fn summarise(&self, runs: &Runs<'_, Self>, _: &Context) -> anyhow::Result<Summary> {
        summarise(&self.cfg, runs)
    }
}

fn summarise(cfg: &BoxRegressorConfig, runs: &Runs<'_, BoxRegressor>) -> anyhow::Result<Summary> {
    let names = ["mean IoU", "AP50", "AP75", "AP@[.5:.95]"];
    let mut table = TextTable::new(
        &format!(
            "box-regressor: held-out box quality on {} images, mean ± std over {} seeds",
            cfg.test_images, cfg.seeds
        ),
        &["loss", names[0], names[1], names[2], names[3]],
    );
    let mut bars = BarSeries::empty_each(&names);
    let mut losses_json = Map::new();
    let mut curves = Vec::new();
    let mut best: Option<(String, f64)> = None;
    let mut verdict_rows = Vec::new();
    for name in &cfg.losses {
        let rs: Vec<&JobResult> = runs.done_where(|j| &j.loss == name);
        let stats: Vec<_> = (0..4)
            .map(|k| mean_std(&rs.iter().map(|r| r.final_metrics[k]).collect::<Vec<_>>()))
            .collect();
        losses_json.insert(
            name.clone(),
            json!({"mean_iou": stats[0], "ap50": stats[1], "ap75": stats[2], "ap": stats[3]}),
        );
        let mut row = vec![name.clone()];
        row.extend(stats.iter().map(|s| pm(*s)));
        table.push(row);
        verdict_rows.push((name.clone(), stats.clone()));
        for (b, s) in bars.iter_mut().zip(&stats) {
            b.values.push((s.mean, s.std));
        }
        if stats[3].mean.is_finite() && best.as_ref().is_none_or(|b| stats[3].mean > b.1) {
            best = Some((name.clone(), stats[3].mean));
        }
        let logged: Vec<&[LogRow]> = rs.iter().map(|r| r.rows.as_slice()).collect();
        let points = mean_curve(&logged, |r| r.0, |r| metric(r, 0));
        curves.push(Series {
            name: name.clone(),
            points,
        });
    }
    let figures = vec![
        Figure {
            file: "test_mean_iou.png".into(),
            caption: "Held-out mean IoU vs training step, mean over seeds".into(),
            png: plot::line_chart("box-regressor: held-out mean IoU", "step", "mean IoU", &curves, false)?,
        },
        Figure {
            file: "final_metrics.png".into(),
            caption: "Held-out mean IoU, AP50, AP75 and AP@[.5:.95] after training (mean ± std over seeds)".into(),
            png: plot::bar_chart("box-regressor: final metrics", "value", &cfg.losses, &bars)?,
        },
    ];
    let mut notes = vec![
        super::verdict(&names, &verdict_rows, "seeds"),
        "AP with one predicted box and one ground truth an image and no confidence score is the share of \
         held-out images whose box reaches the IoU threshold (precision = recall there; COCO's ranking has \
         nothing to order). AP@[.5:.95] averages it over the ten thresholds 0.50, 0.55, …, 0.95."
            .to_string(),
        "Loss settings: smooth_l1 β = 1/9 (Detectron); alpha_iou α = 3 on CIoU; mpdiou with the image as 1 × 1 \
         (boxes in image units); inner_iou ratio 0.8 on CIoU; shape_iou scale 0; wise_iou v3 with the stateful \
         running mean (momentum 0.01; not in the checkpoints, so --resume reruns that loss from the start); siou with the paper's γ = Λ − 2 (neg_gamma); focaler_iou d = 0, u = 0.95 alone (the paper adds it to another IoU \
         loss); nwd constant 12.8 px."
            .to_string(),
    ];
    if let Some((name, ap)) = &best {
        notes.push(format!(
            "Highest mean AP@[.5:.95] in this run: {name} ({ap:.3}); compare it with the std columns before \
             reading a ranking into differences smaller than one std."
        ));
    }
    notes.extend(runs.failure_notes());
    let section = Section {
        question: "When a network (not a free box) regresses the box, which loss — coordinate (L1, Smooth L1), \
                   IoU-based, or one of the IoU successors — gives the best boxes on held-out images?"
            .into(),
        setup: format!(
            "{n} training and {t} held-out {s}×{s} images per seed with 1–{m} rectangles or discs (noise σ = {noise}); \
             target: the box of the largest object; conv net 1→8→16→16 (3×3, ReLU, 2×2 average pool) + linear → \
             σ(cx, cy, w, h); Adam lr {lr}, batches of {b}, {steps} steps; {seeds} seeds (images, initial weights \
             and batch order per seed, shared by all losses).",
            n = cfg.train_images,
            t = cfg.test_images,
            s = cfg.size,
            m = cfg.max_objects,
            noise = cfg.noise,
            lr = cfg.lr,
            b = cfg.batch_size,
            steps = cfg.steps,
            seeds = cfg.seeds
        ),
        tables: vec![table],
        notes,
        figures,
        ..Section::default()
    };
    let fit = json!({ "fit": fit_config(cfg, 0) });
    Ok(Summary::of_training(
        json!({ "losses": losses_json }),
        cfg,
        fit,
        section,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;

    #[test]
    fn ap_is_the_hit_rate_at_the_threshold() {
        let q = [0.2, 0.5, 0.74, 0.8, 0.96];
        assert_eq!(ap_at(&q, 0.5), 0.8);
        assert_eq!(ap_at(&q, 0.75), 0.4);
        let m = box_metrics(&q);
        assert!((m[0] - 0.64).abs() < 1e-12);
        // thresholds .50 .55 ... .95: 4, 3, 3, 3, 3, 2, 2, 1, 1, 1 hits of 5
        assert!((m[3] - 23.0 / 50.0).abs() < 1e-12, "{}", m[3]);
    }

    #[test]
    fn the_target_is_the_largest_object() {
        let cfg = BoxRegressorConfig::default();
        let mut r = rng::stream(1, &["test"]);
        let b = generate(&mut r, 50, &cfg);
        for i in 0..b.n {
            let bx = &b.boxes[4 * i..4 * i + 4];
            assert!(bx[0] < bx[2] && bx[1] < bx[3] && bx[0] >= 0.0 && bx[3] <= 1.0, "{bx:?}");
            // at least 3 px a side, and the object's pixels are bright: the box's mean exceeds the noise floor
            assert!((bx[2] - bx[0]) * 24.0 >= 3.0 - 1e-9);
        }
        assert_eq!(box_iou_pair(&[0., 0., 1., 1.], &[0.5, 0., 1.5, 1.]), 1.0 / 3.0);
    }
}
