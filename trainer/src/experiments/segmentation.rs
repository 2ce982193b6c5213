//! Experiment 4 — segmentation of small objects: Dice vs cross-entropy.
//!
//! Seeded synthetic images ([`crate::data::shapes`]: 64 × 64, one to three small discs or
//! rectangles covering a few percent of the pixels, Gaussian noise σ = 0.8), a small fully
//! convolutional net (3 × 3 convolutions 1→8→8→2 with ReLU, same padding), two output
//! channels (background, object) as logits. Losses: `cross_entropy`, `dice` (MONAI
//! `DiceLoss(softmax, to_onehot_y, include_background=False)`), `dice_ce` (Dice + CE, 1:1),
//! `focal` (softmax focal, γ = 2), `tversky` (α = 0.3 on false positives, β = 0.7 on false
//! negatives, Salehi et al. 2017), `soft_cldice` (MONAI `SoftclDiceLoss`, Shit et al. 2021,
//! softmax, no background), `hausdorff_dt` (MONAI `HausdorffDTLoss`, Karimi & Salcudean 2019,
//! α = 2, softmax, no background), `lovasz_hinge` (smp's binary Lovász hinge on the logit margin
//! `z_object − z_background`, Berman et al. 2018). Adam lr 0.01, mini-batches of 8 from 64 training images,
//! 150 steps. Metric: foreground Dice and IoU of the arg-max prediction on 32 held-out images
//! (per image, then averaged), mean and sample std over 3 seeds (each seed draws its own
//! images and initial weights, shared by every loss).

use super::{
    adam_constant, mean_curve, metric, pm, push_logged, select_losses, Context, Experiment, JobOutcome, LossSeed,
    RunLabel, Runs, Summary, Trained,
};
use crate::data::images::ImageFiles;
use crate::data::shapes::{self, Shapes, ShapesConfig};
use crate::fit::{fit_resumable, FitConfig, FitError, FitRun, LogRow};
use crate::metrics::{self, mean_std};
use crate::models::Conv2d;
use crate::plot::{self, BarSeries, Series};
use crate::progress::Progress;
use crate::records::{Cell, Csv};
use crate::report::{Figure, Section, Table as TextTable};
use crate::rng;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{Module, VarMap};
use loss_core::{CrossEntropyLoss, Loss, SoftmaxFocalLoss};
use loss_seg::{DiceCeLoss, DiceLoss, HausdorffDtLoss, LovaszHingeLoss, OverlapOptions, SoftClDiceLoss, TverskyLoss};
use serde::Serialize;
use serde_json::{json, Map};

/// The loss variants, in report order.
pub const LOSSES: [&str; 8] = [
    "cross_entropy",
    "dice",
    "dice_ce",
    "focal",
    "tversky",
    "soft_cldice",
    "hausdorff_dt",
    "lovasz_hinge",
];

/// The variants added with the segmentation extras, compared with `dice` in the report's notes.
const EXTRAS: [&str; 3] = ["soft_cldice", "hausdorff_dt", "lovasz_hinge"];

/// Settings of the segmentation experiment.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentationConfig {
    /// Loss variants (among [`LOSSES`]).
    pub losses: Vec<String>,
    /// The image generator.
    pub shapes: ShapesConfig,
    /// Training images per seed (64).
    pub train_images: usize,
    /// Held-out images per seed (32).
    pub test_images: usize,
    /// Number of seeds (3).
    pub seeds: usize,
    /// Training steps (150).
    pub steps: usize,
    /// Mini-batch size (8).
    pub batch_size: usize,
    /// Adam learning rate (0.01).
    pub lr: f64,
    /// Width of the hidden convolutions (8).
    pub channels: usize,
    /// Log and evaluate every this many steps (10).
    pub log_every: usize,
    /// The user's images and masks instead of the synthetic shapes (`--images`, `--masks`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<ImageFiles>,
}

impl Default for SegmentationConfig {
    fn default() -> Self {
        Self {
            losses: LOSSES.iter().map(|s| s.to_string()).collect(),
            shapes: ShapesConfig::default(),
            train_images: 64,
            test_images: 32,
            seeds: 3,
            steps: 200,
            batch_size: 8,
            lr: 0.02,
            channels: 8,
            log_every: 20,
            files: None,
        }
    }
}

impl SegmentationConfig {
    /// Classes of the masks: 2 (background, object) unless the user's masks have more.
    pub fn classes(&self) -> usize {
        self.files.as_ref().map_or(2, |f| f.classes)
    }

    /// The default settings with `losses` checked against [`LOSSES`] (`None`: all).
    ///
    /// # Errors
    /// An unknown loss name.
    pub fn with_losses(losses: Option<&[String]>) -> anyhow::Result<Self> {
        Ok(Self {
            losses: select_losses("segmentation", losses, &LOSSES)?,
            ..Self::default()
        })
    }
}

/// How a loss reads the class-index target `[N, H, W]` and the logits `[N, 2, H, W]`.
#[derive(Clone, Copy)]
enum Form {
    /// As they are (cross-entropy, focal).
    Indices,
    /// The target with a channel dimension `[N, 1, H, W]` (the overlap losses, `to_onehot_y`).
    OneChannel,
    /// The binary logit of the object, its channel's margin over the background's (Lovász hinge).
    Margin,
}

/// A loss on logits `[N, 2, H, W]` and class indices `[N, H, W]` (u32): the library's config,
/// built once from the loss name.
struct SegLoss {
    loss: Box<dyn Loss>,
    form: Form,
}

impl SegLoss {
    fn new(name: &str) -> Self {
        let overlap = OverlapOptions::default()
            .with_softmax(true)
            .with_to_onehot_y(true)
            .with_include_background(false);
        let (loss, form): (Box<dyn Loss>, Form) = match name {
            "cross_entropy" => (Box::new(CrossEntropyLoss::default()), Form::Indices),
            "focal" => (Box::new(SoftmaxFocalLoss::default()), Form::Indices),
            "dice" => (Box::new(DiceLoss::default().with_overlap(overlap)), Form::OneChannel),
            "dice_ce" => {
                let dice = DiceLoss::default().with_overlap(overlap);
                (Box::new(DiceCeLoss::default().with_dice(dice)), Form::OneChannel)
            }
            "soft_cldice" => {
                let c = SoftClDiceLoss::default().with_softmax(true).with_to_onehot_y(true);
                (Box::new(c.with_include_background(false)), Form::OneChannel)
            }
            "hausdorff_dt" => {
                let c = HausdorffDtLoss::default().with_softmax(true).with_to_onehot_y(true);
                (Box::new(c), Form::OneChannel)
            }
            "lovasz_hinge" => (Box::new(LovaszHingeLoss::default()), Form::Margin),
            _ => {
                let c = TverskyLoss::default()
                    .with_overlap(overlap)
                    .with_alpha(0.3)
                    .with_beta(0.7);
                (Box::new(c), Form::OneChannel)
            }
        };
        Self { loss, form }
    }
}

impl Loss for SegLoss {
    fn name(&self) -> &'static str {
        self.loss.name()
    }

    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        match self.form {
            Form::Indices => self.loss.forward(input, target),
            Form::OneChannel => self.loss.forward(input, &target.unsqueeze(1)?),
            Form::Margin => {
                let margin = input.narrow(1, 1, 1)?.sub(&input.narrow(1, 0, 1)?)?.squeeze(1)?;
                self.loss.forward(&margin, target)
            }
        }
    }
}

/// The net: conv channels→c, ReLU, conv c→c, ReLU, conv c→classes (3 × 3, same padding).
struct Net {
    c1: Conv2d,
    c2: Conv2d,
    c3: Conv2d,
}

impl Net {
    fn new(
        varmap: &VarMap,
        [channels, c, classes]: [usize; 3],
        rng: &mut rand_chacha::ChaCha8Rng,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            c1: Conv2d::new(varmap, "conv1", channels, c, 3, rng, DType::F32, device)?,
            c2: Conv2d::new(varmap, "conv2", c, c, 3, rng, DType::F32, device)?,
            c3: Conv2d::new(varmap, "conv3", c, classes, 3, rng, DType::F32, device)?,
        })
    }
}

impl Module for Net {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.c1.forward(xs)?.relu()?;
        let h = self.c2.forward(&h)?.relu()?;
        self.c3.forward(&h)
    }
}

/// Foreground Dice and IoU of the arg-max of `logits` `[N, C, H, W]`, per image (with more
/// than two classes, the mean over the foreground classes 1..C), averaged over images.
fn evaluate(logits: &Tensor, masks: &[u8]) -> Result<(f64, f64)> {
    let pred: Vec<u32> = logits.argmax(1)?.flatten_all()?.to_vec1::<u32>()?;
    let (n, classes) = (logits.dim(0)?, logits.dim(1)?);
    let per = pred.len() / n.max(1);
    let (mut d, mut j) = (0.0, 0.0);
    for i in 0..n {
        let (mut di, mut ji) = (0.0, 0.0);
        for k in 1..classes {
            let p: Vec<bool> = pred[i * per..(i + 1) * per].iter().map(|&c| c as usize == k).collect();
            let g: Vec<bool> = masks[i * per..(i + 1) * per].iter().map(|&c| c as usize == k).collect();
            di += metrics::dice(&p, &g);
            ji += metrics::iou(&p, &g);
        }
        let fg = (classes - 1) as f64;
        d += di / fg;
        j += ji / fg;
    }
    Ok((d / n as f64, j / n as f64))
}

/// Images `[n, channels, height, width]` (pixel values) and their masks (class indices).
struct Batch {
    n: usize,
    channels: usize,
    height: usize,
    width: usize,
    pixels: Vec<f64>,
    masks: Vec<u8>,
}

impl From<Shapes> for Batch {
    fn from(s: Shapes) -> Self {
        Self {
            n: s.n,
            channels: 1,
            height: s.size,
            width: s.size,
            pixels: s.images,
            masks: s.masks,
        }
    }
}

impl Batch {
    /// The pairs `rows` of the user's files.
    fn of_files(f: &ImageFiles, rows: &[usize]) -> Self {
        let (pixels, masks) = f.set.select(rows);
        Self {
            n: rows.len(),
            channels: f.set.channels,
            height: f.set.height,
            width: f.set.width,
            pixels,
            masks,
        }
    }
}

fn images(s: &Batch, device: &Device) -> Result<(Tensor, Tensor)> {
    let x = crate::data::tensor(
        s.pixels.clone(),
        &[s.n, s.channels, s.height, s.width],
        DType::F32,
        device,
    )?;
    let y: Vec<u32> = s.masks.iter().map(|&m| u32::from(m)).collect();
    let y = Tensor::from_vec(y, (s.n, s.height, s.width), &Device::Cpu)?.to_device(device)?;
    Ok((x, y))
}

/// One run's logged rows.
pub struct JobResult {
    /// (step, train loss, [dice, iou])
    rows: Vec<LogRow>,
}

fn fit_config(cfg: &SegmentationConfig, seed: u64) -> FitConfig {
    adam_constant(cfg.steps, cfg.lr, Some(cfg.batch_size), cfg.log_every, seed)
}

fn run_job(cfg: &SegmentationConfig, ctx: &Context, job: &LossSeed, progress: &Progress) -> JobOutcome<JobResult> {
    let label = job.label();
    let wrap = FitError::in_run(&label);
    let (train, test): (Batch, Batch) = match &cfg.files {
        None => {
            let mut data_rng = job.stream(ctx.seed, Segmentation::NAME, "data");
            let train = shapes::generate(&mut data_rng, cfg.train_images, &cfg.shapes);
            (
                train.into(),
                shapes::generate(&mut data_rng, cfg.test_images, &cfg.shapes).into(),
            )
        }
        Some(f) => {
            let (train, test) = f.split(&mut job.stream(ctx.seed, Segmentation::NAME, "split"));
            (Batch::of_files(f, &train), Batch::of_files(f, &test))
        }
    };
    let (x, y) = images(&train, &ctx.device).map_err(wrap)?;
    let (x_test, _) = images(&test, &ctx.device).map_err(wrap)?;
    let varmap = VarMap::new();
    let mut init_rng = job.stream(ctx.seed, Segmentation::NAME, "init");
    let shape = [train.channels, cfg.channels, cfg.classes()];
    let net = Net::new(&varmap, shape, &mut init_rng, &ctx.device).map_err(wrap)?;
    let loss = SegLoss::new(&job.loss);
    let batch_seed = job.derive_seed(ctx.seed, Segmentation::NAME, "batches");
    let mut on_log = |_: usize, _: f64| -> Result<Vec<f64>> {
        let (d, j) = evaluate(&net.forward(&x_test)?, &test.masks)?;
        Ok(vec![d, j])
    };
    let fit_cfg = fit_config(cfg, batch_seed);
    let run = FitRun::new(&net, &varmap, &loss, &x, &y, &fit_cfg).with_label(&label);
    let (_, rows) = fit_resumable(run.with_progress(progress), &mut on_log, ctx.checkpoint.as_ref())?;
    Ok(Trained {
        done: JobResult { rows },
        varmap,
    })
}

/// The segmentation experiment, ready for [`crate::runner::execute`].
pub struct Segmentation {
    cfg: SegmentationConfig,
}

impl Segmentation {
    /// Checks the settings.
    ///
    /// # Errors
    /// Bad settings.
    pub fn new(cfg: SegmentationConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(cfg.seeds >= 1, "segmentation: seeds must be >= 1");
        anyhow::ensure!(
            cfg.files.is_some() || cfg.shapes.size >= 12,
            "segmentation: image size must be >= 12"
        );
        anyhow::ensure!(
            cfg.classes() == 2 || !cfg.losses.iter().any(|l| l == "lovasz_hinge"),
            "segmentation: lovasz_hinge is a binary loss and the masks have {} classes (leave it out of --losses)",
            cfg.classes()
        );
        Ok(Self { cfg })
    }
}

impl Experiment for Segmentation {
    type Job = LossSeed;
    type Done = JobResult;
    const NAME: &'static str = "segmentation";

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
        vec!["loss", "seed", "step", "train_loss", "test_dice", "test_iou"]
    }

    fn metrics_rows(&self, job: &LossSeed, r: &JobResult, csv: &mut Csv) {
        push_logged(csv, &[Cell::Str(&job.loss), Cell::Int(job.seed)], &r.rows);
    }

    fn summarise(&self, runs: &Runs<'_, Self>, ctx: &Context) -> anyhow::Result<Summary> {
        summarise(&self.cfg, runs, ctx)
    }
}

fn summarise(cfg: &SegmentationConfig, runs: &Runs<'_, Segmentation>, ctx: &Context) -> anyhow::Result<Summary> {
    let mut losses_json = Map::new();
    let mut table = TextTable::new(
        &format!(
            "segmentation: foreground Dice and IoU on {} held-out images, mean ± std over {} seeds",
            cfg.test_images, cfg.seeds
        ),
        &["loss", "Dice", "IoU"],
    );
    let mut bars = BarSeries::empty_each(&["Dice", "IoU"]);
    let mut curves_loss = Vec::new();
    let mut curves_dice = Vec::new();
    let mut finals = Vec::new();
    for name in &cfg.losses {
        let rs: Vec<&JobResult> = runs.done_where(|j| &j.loss == name);
        let last = |k: usize| -> Vec<f64> { rs.iter().filter_map(|r| r.rows.last()).map(|r| metric(r, k)).collect() };
        let (d, j) = (mean_std(&last(0)), mean_std(&last(1)));
        losses_json.insert(name.clone(), json!({"dice": d, "iou": j}));
        table.push(vec![name.clone(), pm(d), pm(j)]);
        finals.push((name.clone(), d, j));
        bars[0].values.push((d.mean, d.std));
        bars[1].values.push((j.mean, j.std));
        let logged: Vec<&[LogRow]> = rs.iter().map(|r| r.rows.as_slice()).collect();
        let curve = |col: fn(&LogRow) -> f64| mean_curve(&logged, |r| r.0, col);
        curves_loss.push(Series {
            name: name.clone(),
            points: curve(|r| r.1),
        });
        curves_dice.push(Series {
            name: name.clone(),
            points: curve(|r| metric(r, 0)),
        });
    }
    let figures = vec![
        Figure {
            file: "convergence.png".into(),
            caption: "Training loss (mini-batch, each loss in its own units) vs step, mean over seeds".into(),
            png: plot::line_chart(
                "segmentation: training loss",
                "step",
                "training loss (log)",
                &curves_loss,
                true,
            )?,
        },
        Figure {
            file: "test_dice.png".into(),
            caption: "Held-out foreground Dice vs step, mean over seeds".into(),
            png: plot::line_chart(
                "segmentation: held-out Dice",
                "step",
                "foreground Dice",
                &curves_dice,
                false,
            )?,
        },
        Figure {
            file: "final_metrics.png".into(),
            caption: "Held-out foreground Dice and IoU after training (mean ± std over seeds)".into(),
            png: plot::bar_chart("segmentation: final metrics", "value", &cfg.losses, &bars)?,
        },
    ];
    let (fg, of) = match &cfg.files {
        None => {
            let mut probe = rng::stream(ctx.seed, &["segmentation", "seed0", "data"]);
            let fg = shapes::generate(&mut probe, cfg.train_images, &cfg.shapes).foreground_fraction();
            (fg, "the training images of seed 0")
        }
        Some(f) => {
            let m = &f.set.masks;
            (
                m.iter().filter(|&&c| c != 0).count() as f64 / m.len().max(1) as f64,
                "all masks",
            )
        }
    };
    let stats: Vec<(String, Vec<crate::metrics::MeanStd>)> =
        finals.iter().map(|(n, d, j)| (n.clone(), vec![*d, *j])).collect();
    let mut notes = vec![
        super::verdict(&["Dice", "IoU"], &stats, "seeds"),
        format!(
            "Object pixels: {:.1} % of {of}. Dice, dice_ce, tversky, soft_cldice and hausdorff_dt leave the \
             background channel out of the overlap term (MONAI include_background=False).",
            100.0 * fg
        ),
    ];
    if cfg.losses.iter().any(|l| EXTRAS.contains(&l.as_str())) {
        notes.push(
            "The three boundary/topology losses are used alone here, which is not how they are meant to be used: \
             soft_cldice alone has a degenerate optimum (an all-object prediction has an empty soft skeleton, so \
             topology precision is 1 by its smoothing, and sensitivity is 1 too), hausdorff_dt alone mostly \
             punishes false positives far from the objects and settles on all background, and lovasz_hinge from \
             random weights either finds the objects (one seed in three with the defaults, above Dice there) or \
             stays on its plateau of zero margins. Pair the first two with Dice (soft_dice_cldice_loss, \
             Dice + λ·hausdorff) and warm lovasz_hinge up with BCE or Dice."
                .to_string(),
        );
    }
    // What each of the segmentation extras changed against plain Dice, when both ran.
    if let Some((_, dd, dj)) = finals.iter().find(|(n, _, _)| n == "dice") {
        for (name, d, j) in finals.iter().filter(|(n, _, _)| EXTRAS.contains(&n.as_str())) {
            notes.push(format!(
                "{name}: held-out Dice {} and IoU {}, {:+.3} and {:+.3} against dice ({} / {}).",
                pm(*d),
                pm(*j),
                d.mean - dd.mean,
                j.mean - dj.mean,
                pm(*dd),
                pm(*dj)
            ));
        }
    }
    notes.extend(runs.failure_notes());
    let setup = match &cfg.files {
        None => synthetic_setup(cfg),
        Some(f) => format!(
            "{} image/mask pairs from {} and {} ({} channel(s), cropped about the centre to {}×{} pixels, {} classes); \
             per seed {:.0} % of the pairs held out (seeded); conv net {}→{c}→{c}→{} (3×3, ReLU); Adam lr {}, batches \
             of {}, {} steps; {} seeds; the losses' settings as in the built-in experiment.",
            f.pairs,
            f.images.display(),
            f.masks.display(),
            f.shape[0],
            f.shape[2],
            f.shape[1],
            f.classes,
            100.0 * f.holdout,
            f.shape[0],
            f.classes,
            cfg.lr,
            cfg.batch_size,
            cfg.steps,
            cfg.seeds,
            c = cfg.channels,
        ),
    };
    let section = Section {
        question: if cfg.files.is_some() {
            "Which loss segments these images best (foreground Dice and IoU on held-out images)?".into()
        } else {
            "When the objects are small (a few percent of the pixels), do the overlap losses (Dice, Tversky) \
             segment them better than per-pixel cross-entropy or focal loss?"
                .into()
        },
        setup,
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

fn synthetic_setup(cfg: &SegmentationConfig) -> String {
    format!(
            "{n} training and {t} held-out {s}×{s} images per seed with 1–{m} discs or rectangles, noise σ = {noise}; \
             conv net 1→{c}→{c}→2 (3×3, ReLU); Adam lr {lr}, batches of {b}, {steps} steps; {seeds} seeds \
             (images and initial weights per seed, shared by all losses); tversky α = 0.3, β = 0.7; focal γ = 2; soft_cldice iter 3, \
             smooth 1; hausdorff_dt α = 2; lovasz_hinge on the logit margin.",
            n = cfg.train_images,
            t = cfg.test_images,
            s = cfg.shapes.size,
            m = cfg.shapes.max_objects,
            noise = cfg.shapes.noise,
            c = cfg.channels,
            lr = cfg.lr,
            b = cfg.batch_size,
            steps = cfg.steps,
            seeds = cfg.seeds
    )
}
