//! The box-regression simulation of Zheng et al. (AAAI 2020, Distance-IoU loss), Figure 3(b).
//!
//! Interface fixed by the lead (the CLI codes against it); the body is filled in by its owner.

use candle_core::{DType, Device};
use serde::Serialize;
use std::collections::BTreeMap;
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

/// Runs the simulation.
///
/// # Errors
/// An unreadable or malformed anchors file, an unknown loss name, a tensor error.
pub fn run(_cfg: &BoxesConfig) -> anyhow::Result<BoxesReport> {
    anyhow::bail!("boxes experiment: being implemented")
}
