//! Experiment 4 — segmentation of small objects: Dice vs cross-entropy (in progress).

use super::{select_losses, Context, Output};
use serde::Serialize;

/// The loss variants.
pub const LOSSES: [&str; 5] = ["cross_entropy", "dice", "dice_ce", "focal", "tversky"];

/// Settings of the segmentation experiment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SegmentationConfig {
    /// Loss variants.
    pub losses: Vec<String>,
    /// Training steps.
    pub steps: usize,
}

impl SegmentationConfig {
    /// The default settings with `losses` checked against [`LOSSES`] (`None`: all).
    ///
    /// # Errors
    /// An unknown loss name.
    pub fn with_losses(losses: Option<&[String]>) -> anyhow::Result<Self> {
        Ok(Self {
            losses: select_losses("segmentation", losses, &LOSSES)?,
            steps: 150,
        })
    }
}

/// Runs the experiment.
///
/// # Errors
/// Always, for now.
pub fn run(_cfg: &SegmentationConfig, _ctx: &Context) -> anyhow::Result<Output> {
    anyhow::bail!("segmentation: not implemented yet")
}
