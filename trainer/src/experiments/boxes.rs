//! The box-regression simulation of Zheng et al. (AAAI 2020, "Distance-IoU Loss: Faster and
//! Better Learning for Bounding Box Regression"), Figure 3(b).
//!
//! # The experiment
//! Seven targets of area 1 centred at (10, 10), of aspect ratios (w:h) 1:4, 1:3, 1:2, 1:1, 2:1,
//! 3:1, 4:1 (`w = 0.5, √3/3, √2/2, 1, √2, √3, 2` and `h = 1/w`, written as the authors do). Anchor
//! centres are uniform in the disc of radius 3 around (10, 10) (`r = 3√u`, `θ = 2πv`, all `u`
//! drawn before all `v`, from a seeded ChaCha8 generator), or read from a CSV file. At each
//! centre, for each target, 7 scales × 7 aspect ratios: the anchor's **area** is
//! `scale · wg · hg` (scales 0.5, 0.67, 0.75, 1, 1.33, 1.5, 2, so area, not side, as the authors'
//! `S = scale·gt_w·gt_h`) and its sides are the ratio's `(w, h)` times `√area`. That is 343 cases
//! a centre, ordered centre, then target ratio, then scale, then anchor ratio.
//!
//! Boxes are `(x, y, w, h)` (centre, width, height). Each of 200 iterations moves every anchor by
//! `B += lr (2 − IoU(B)) s`, where `s` is the ascent direction of the score (the negative
//! gradient of the loss) w.r.t. `(x, y, w, h)` and the factor `2 − IoU` is a constant (no
//! gradient flows through it); `lr` is 0.1 for iterations 1–160, 0.01 for 161–180 and 0.001 for
//! 181–200 ([`learning_rate`]). The curve is `E(t) = Σ |x − xg| + |y − yg| + |w − wg| + |h − hg|`
//! over all cases, for t = 0 (the anchors) to 200. Scales: tiny 20 centres (6,860 cases),
//! reduced 500 (171,500), full 5,000 (1,715,000, the paper's).
//!
//! # The two gradient modes
//! - [`GradMode::Autograd`] differentiates the workspace's own losses (`loss_bbox::iou_loss`
//!   linear `1 − IoU`, `giou_loss`, `diou_loss`, `ciou_loss`: torchvision's formulas with
//!   `eps = 1e-7`, CIoU's `α` held constant) with Candle's autodiff. The boxes are converted
//!   from `(x, y, w, h)` to `xyxy` inside the graph ([`kernels::xywh_to_xyxy`]), so one backward
//!   of the loss summed over the cases gives each case's true gradient w.r.t. `(x, y, w, h)`.
//!   The `IoU` of the step factor is `I / U` (0 for disjoint boxes).
//! - [`GradMode::Paper`] uses the authors' closed-form gradients from their MATLAB code
//!   ([`paper`]), which is what produced the paper's Figure 3(b). They are *not* the gradients of
//!   the losses: the IoU term's `w`, `h` derivatives are twice the chain rule's (`dw = dr − dl`
//!   with no ½); GIoU keeps, for disjoint boxes, the unclamped "intersection" (a product of one
//!   or two negative sides) in `U` and `dU`; the DIoU/CIoU distance term gives the enclosing
//!   box's width and height one shared derivative vector, sets the width's `w` entry to −1 when
//!   the anchor sticks out on both sides, and subtracts the enclosing box's share in `dx`, `dy`;
//!   CIoU drops the `1/(w² + h²)` of `∂v/∂(w, h)`.
//!
//! # Why the two modes rank the losses differently
//! At the tiny scale (reference centres, f64), E(200) and Σₜ E(t) for t = 1..200:
//!
//! | loss | paper E(200) | paper ΣE | autograd E(200) | autograd ΣE |
//! |---|---|---|---|---|
//! | IoU | 25,822 | 5.22 M | 25,826 | 5.23 M |
//! | GIoU | 7,012 | 2.33 M | 114 | 1.08 M |
//! | DIoU | 16 | 0.67 M | 200 | 1.38 M |
//! | CIoU | 17 | 0.59 M | 30 | 1.22 M |
//!
//! Both modes agree that IoU barely moves (no gradient for the many anchors that do not overlap
//! their target) and that CIoU ends best or near best. They disagree on GIoU against DIoU: with
//! the authors' gradients DIoU and CIoU converge far faster than GIoU (the paper's figure); with
//! the true gradients GIoU converges fastest on average and ends below DIoU. Switching the
//! authors' conventions off one at a time (measured with this code) accounts for all of it:
//!
//! - GIoU is held back by its disjoint-box branch. With the intersection clamped at 0 for disjoint
//!   boxes (as the loss defines it) the paper-mode GIoU ends at E(200) ≈ 100 instead of 7,012
//!   (ΣE 1.32 M instead of 2.33 M): the unclamped product distorts the penalty's gradient exactly
//!   where GIoU's penalty is supposed to do its work.
//! - DIoU and CIoU are sped up by their distance-term conventions. The true gradient of `ρ²/c²`
//!   also pushes the anchor to *enlarge* the enclosing box (a larger `c²` lowers the penalty
//!   without moving the centre), which works against the centre's approach; the authors' signs
//!   remove that part. With the true distance gradient the paper-mode DIoU's ΣE rises from
//!   0.67 M to 1.29 M (E(50) from 2,119 to 10,031).
//! - The doubled `w`, `h` step matters little (ΣE within 10 % either way).
//! - With all three conventions corrected the paper-mode curves of IoU, GIoU and DIoU coincide
//!   with the autograd curves (ΣE within 1e-4; CIoU still differs by the missing `1/(w² + h²)`).
//!
//! So the paper's ordering (DIoU/CIoU ≫ GIoU ≫ IoU) is partly a product of the gradient
//! conventions of its simulation; with the losses' true gradients GIoU and CIoU lead and DIoU
//! trails them, and CIoU's lead at t = 200 survives in both modes. `trainer run boxes
//! --grad paper|autograd` shows both.
//!
//! # How it runs
//! On the CPU (f32/f64), paper mode runs each case's 200 updates in registers ([`paper`]'s
//! scalar form), chunks of cases in parallel; autograd mode runs blocks of 8,192 cases, each
//! block doing its 200 iterations (convert to `xyxy`, loss-bbox loss summed, one backward,
//! update) with tensors small enough to stay in cache, blocks in parallel. On other devices both
//! modes run one batch of plain Candle ops per iteration over all cases. E(t) is accumulated in
//! f64 as per-chunk partial sums added in case order, so the curves do not depend on the number
//! of threads.
//!
//! Reference curves of both modes at the tiny scale (an independent PyTorch implementation, f64)
//! are in `trainer/tests/data/boxes_repro/`; `tests/boxes.rs` checks them (paper mode to ~1e-12; autograd mode to
//! 1e-6 except GIoU after t = 60, whose trajectories are chaotic: a one-ulp change of the
//! gradient's rounding moves its curve by ~1e-3, see the test's notes).

mod autograd;
pub mod kernels;
pub mod paper;
mod sim;

pub use sim::{autograd_gradient, simulate, step};

use anyhow::Context as _;
use candle_core::Tensor;
use candle_core::{DType, Device};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;

/// Number of anchor centres: tiny 20, reduced 500, full 5,000 (343 cases each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// 20 centres, 6,860 cases.
    Tiny,
    /// 500 centres, 171,500 cases.
    Reduced,
    /// 5,000 centres, 1,715,000 cases.
    Full,
}

/// Where the gradient dScore/dB comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GradMode {
    /// Candle autodiff of the loss-bbox losses (1 − IoU, GIoU, DIoU, CIoU).
    Autograd,
    /// The authors' closed-form gradients from their MATLAB code.
    Paper,
}

/// Settings of one boxes run.
#[derive(Debug, Clone)]
pub struct BoxesConfig {
    /// Scale (ignored when `anchors` is given).
    pub scale: Scale,
    /// Gradient mode.
    pub grad: GradMode,
    /// f32 or f64.
    pub dtype: DType,
    /// CSV of anchor centres (`x,y` a line) instead of sampling them.
    pub anchors: Option<PathBuf>,
    /// Seed of the anchor-centre sampling.
    pub seed: u64,
    /// Device to run on.
    pub device: Device,
    /// Loss variants, among `iou`, `giou`, `diou`, `ciou`.
    pub losses: Vec<String>,
}

/// The result: `summary.json`'s `"boxes"` part.
#[derive(Debug, Clone, Serialize)]
pub struct BoxesReport {
    /// `"tiny"`, `"reduced"`, `"full"` or `"anchors"`.
    pub scale: String,
    /// Number of cases (anchor boxes).
    pub cases: usize,
    /// `"autograd"` or `"paper"`.
    pub grad: String,
    /// `"f32"` or `"f64"`.
    pub dtype: String,
    /// Per loss: `{"error": [E(0), ..., E(200)]}`.
    pub losses: BTreeMap<String, LossCurve>,
}

/// E(t) of one loss for t = 0..=200.
#[derive(Debug, Clone, Serialize)]
pub struct LossCurve {
    /// Sum over cases of |x − xg| + |y − yg| + |w − wg| + |h − hg| after each iteration.
    pub error: Vec<f64>,
}

/// Number of updates.
pub const ITERATIONS: usize = 200;

/// Centre of every target.
pub const TARGET_CENTRE: (f64, f64) = (10.0, 10.0);

/// Radius of the disc the anchor centres are drawn from.
pub const RADIUS: f64 = 3.0;

/// Anchor scales: the anchor's area over the target's (1).
pub const SCALES: [f64; 7] = [0.5, 0.67, 0.75, 1.0, 1.33, 1.5, 2.0];

/// Cases per anchor centre (7 target ratios × 7 scales × 7 anchor ratios).
pub const CASES_PER_CENTRE: usize = 343;

/// Learning rate of iteration `k` (1-based): 0.1 for 1–160, 0.01 for 161–180, 0.001 after.
pub fn learning_rate(k: usize) -> f64 {
    match k {
        0..=160 => 0.1,
        161..=180 => 0.01,
        _ => 0.001,
    }
}

/// The seven aspect ratios 1:4, 1:3, 1:2, 1:1, 2:1, 3:1, 4:1 as `(w, h)` of area 1, written as
/// the authors do (`√3/3` rather than `1/√3`, so the rounding matches theirs).
pub fn aspect_ratios() -> [(f64, f64); 7] {
    let (c1, c2) = (3f64.sqrt(), 2f64.sqrt());
    [
        (0.5, 2.0),
        (c1 / 3.0, c1),
        (c2 / 2.0, c2),
        (1.0, 1.0),
        (c2, c2 / 2.0),
        (c1, c1 / 3.0),
        (2.0, 0.5),
    ]
}

impl Scale {
    /// Number of anchor centres: 20, 500 or 5,000.
    pub fn centres(self) -> usize {
        match self {
            Scale::Tiny => 20,
            Scale::Reduced => 500,
            Scale::Full => 5_000,
        }
    }

    /// `"tiny"`, `"reduced"` or `"full"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scale::Tiny => "tiny",
            Scale::Reduced => "reduced",
            Scale::Full => "full",
        }
    }
}

impl GradMode {
    /// `"autograd"` or `"paper"`.
    pub fn as_str(self) -> &'static str {
        match self {
            GradMode::Autograd => "autograd",
            GradMode::Paper => "paper",
        }
    }
}

/// The four loss variants of the experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BoxLoss {
    /// `1 − IoU` (score IoU).
    Iou,
    /// `1 − GIoU` (Rezatofighi et al. 2019).
    Giou,
    /// `1 − IoU + ρ²/c²` (Zheng et al. 2020).
    Diou,
    /// DIoU `+ α v` (Zheng et al. 2020).
    Ciou,
}

impl BoxLoss {
    /// All four, in the paper's order.
    pub const ALL: [BoxLoss; 4] = [BoxLoss::Iou, BoxLoss::Giou, BoxLoss::Diou, BoxLoss::Ciou];

    /// `"iou"`, `"giou"`, `"diou"` or `"ciou"`.
    pub fn name(self) -> &'static str {
        match self {
            BoxLoss::Iou => "iou",
            BoxLoss::Giou => "giou",
            BoxLoss::Diou => "diou",
            BoxLoss::Ciou => "ciou",
        }
    }

    /// Parses a name of [`BoxLoss::name`].
    ///
    /// # Errors
    /// Any other name (the message lists the known ones).
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|l| l.name() == name)
            .ok_or_else(|| anyhow::anyhow!("boxes: unknown loss {name:?} (expected iou, giou, diou or ciou)"))
    }
}

/// The regression cases: anchors and their targets, `(x, y, w, h)`, in case order.
#[derive(Debug, Clone, PartialEq)]
pub struct Cases {
    /// The anchor (initial) boxes.
    pub anchors: Vec<[f64; 4]>,
    /// The target box of each case.
    pub targets: Vec<[f64; 4]>,
}

impl Cases {
    /// Number of cases.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// Anchors and targets as two `[N, 4]` tensors of `dtype` on `device`.
    ///
    /// # Errors
    /// A dtype the device lacks, a tensor error.
    pub fn tensors(&self, dtype: DType, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let t = |v: &[[f64; 4]]| {
            let flat: Vec<f64> = v.iter().flatten().copied().collect();
            Tensor::from_vec(flat, (v.len(), 4), &Device::Cpu)?
                .to_dtype(dtype)?
                .to_device(device)
        };
        Ok((t(&self.anchors)?, t(&self.targets)?))
    }
}

/// The 343 cases of every centre, in case order (centre, target ratio, scale, anchor ratio).
///
/// Target `c`: `(10, 10, wc, hc)`. Anchor: area `S = scale · wc · hc`, sides `(wl √S, hl √S)`
/// for anchor ratio `l`, centred at the centre.
pub fn generate_cases(centres: &[(f64, f64)]) -> Cases {
    let ratios = aspect_ratios();
    let n = centres.len() * CASES_PER_CENTRE;
    let (mut anchors, mut targets) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for &(x, y) in centres {
        for &(gw, gh) in &ratios {
            for &scale in &SCALES {
                let root = (scale * gw * gh).sqrt();
                for &(rw, rh) in &ratios {
                    anchors.push([x, y, rw * root, rh * root]);
                    targets.push([TARGET_CENTRE.0, TARGET_CENTRE.1, gw, gh]);
                }
            }
        }
    }
    Cases { anchors, targets }
}

/// `n` anchor centres uniform in the disc of radius [`RADIUS`] around [`TARGET_CENTRE`], from
/// ChaCha8 seeded with `seed`: first `n` radii `3√u`, then `n` angles `2πv` (the authors'
/// order), `u, v` uniform in [0, 1).
pub fn sample_centres(n: usize, seed: u64) -> Vec<(f64, f64)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let radii: Vec<f64> = (0..n).map(|_| RADIUS * rng.gen::<f64>().sqrt()).collect();
    let angles: Vec<f64> = (0..n).map(|_| 2.0 * std::f64::consts::PI * rng.gen::<f64>()).collect();
    radii
        .iter()
        .zip(&angles)
        .map(|(r, a)| (TARGET_CENTRE.0 + r * a.cos(), TARGET_CENTRE.1 + r * a.sin()))
        .collect()
}

/// Reads anchor centres from a CSV file: `x,y` a line (blank lines and lines starting with `#`
/// are skipped; no header).
///
/// # Errors
/// An unreadable file, a line that is not two finite numbers, or no centre at all; the message
/// names the file (and the line, 1-based).
pub fn load_anchors(path: &Path) -> anyhow::Result<Vec<(f64, f64)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("boxes: cannot read the anchors file {}", path.display()))?;
    let mut centres = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = match line
            .split(',')
            .map(|f| f.trim().parse::<f64>())
            .collect::<Vec<_>>()
            .as_slice()
        {
            [Ok(x), Ok(y)] if x.is_finite() && y.is_finite() => Some((*x, *y)),
            _ => None,
        };
        let Some(c) = parsed else {
            anyhow::bail!(
                "boxes: anchors file {}, line {}: expected `x,y` (two finite numbers), got {line:?}",
                path.display(),
                i + 1
            );
        };
        centres.push(c);
    }
    if centres.is_empty() {
        anyhow::bail!("boxes: anchors file {} holds no `x,y` line", path.display());
    }
    Ok(centres)
}

fn dtype_name(dtype: DType) -> anyhow::Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::F64 => Ok("f64"),
        other => anyhow::bail!("boxes: dtype must be f32 or f64, got {other:?}"),
    }
}

/// Runs the simulation: the cases of `cfg` (anchors file, or `scale`'s centres sampled with
/// `seed`), then E(t) of every loss of `cfg.losses` in `cfg.grad` mode, in `cfg.dtype` on
/// `cfg.device` (CPU fast kernels on the CPU, plain Candle ops elsewhere).
///
/// # Errors
/// An unreadable or malformed anchors file, an unknown loss name, an empty loss list, a dtype
/// other than f32/f64, a tensor error.
pub fn run(cfg: &BoxesConfig) -> anyhow::Result<BoxesReport> {
    let dtype = dtype_name(cfg.dtype)?;
    if cfg.losses.is_empty() {
        anyhow::bail!("boxes: no loss given (expected some of iou, giou, diou, ciou)");
    }
    let losses = cfg
        .losses
        .iter()
        .map(|l| BoxLoss::parse(l))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (centres, scale) = match &cfg.anchors {
        Some(path) => (load_anchors(path)?, "anchors".to_string()),
        None => (
            sample_centres(cfg.scale.centres(), cfg.seed),
            cfg.scale.as_str().to_string(),
        ),
    };
    let cases = generate_cases(&centres);
    let (anchors, targets) = cases.tensors(cfg.dtype, &cfg.device)?;
    let mut curves = BTreeMap::new();
    for loss in losses {
        let error = simulate(loss, cfg.grad, &anchors, &targets, true)
            .with_context(|| format!("boxes: {} ({} mode)", loss.name(), cfg.grad.as_str()))?;
        curves.insert(loss.name().to_string(), LossCurve { error });
    }
    Ok(BoxesReport {
        scale,
        cases: cases.len(),
        grad: cfg.grad.as_str().to_string(),
        dtype: dtype.to_string(),
        losses: curves,
    })
}
