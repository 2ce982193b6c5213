//! Checkpoints of training runs: one safetensors file per run, rewritten atomically every N
//! updates, from which [`crate::fit::fit_resumable`] continues a run exactly where it stopped.
//!
//! A checkpoint holds, in one file (so its parts never disagree):
//! - `param.<name>`: the model's variables (same dtype as the model);
//! - `optim.<key>`: the optimizer's state ([`crate::optim::Optimizer::state`]);
//! - `rows`: the logged rows so far, f64 `[n · w]` (`t`, training loss, then the experiment's
//!   own columns), stored as tensors so that every bit survives;
//! - `validation`: the validation split's state ([`crate::fit::ValidationState`]), f64, only
//!   for runs with validation;
//! - `meta`: u8 bytes of a JSON object: format version, run label, a fingerprint of the run's
//!   settings, the number of updates applied, whether the run is done, the optimizer's step
//!   count, the mini-batch generator's state (ChaCha8 word position, the current permutation
//!   and the position in it; the seed is recreated from the run's seed) and the final loss
//!   (as f64 bits).
//!
//! Files live in `<out>/<experiment>/checkpoints/<run>-<hash>.safetensors`. They are written to
//! a temporary file, synced, renamed over the previous checkpoint and the folder is synced
//! ([`crate::records::write_atomic_with`]), so a crash leaves either the old or the new
//! checkpoint, never a half-written one.

use crate::records;
use anyhow::Context as _;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Format version written into every checkpoint.
pub const VERSION: u32 = 1;

/// How runs are checkpointed and resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Folder of the checkpoint files (the runner sets it to `<out>/<experiment>/checkpoints`).
    pub dir: PathBuf,
    /// Write a checkpoint every this many updates (`None`: only when a run finishes).
    pub every: Option<usize>,
    /// Continue each run from its checkpoint when there is one (a finished run is not redone).
    pub resume: bool,
}

impl Plan {
    /// The same plan with its files under `<experiment_dir>/checkpoints`.
    pub fn for_experiment(&self, experiment_dir: &Path) -> Self {
        Self {
            dir: experiment_dir.join("checkpoints"),
            ..self.clone()
        }
    }

    /// The checkpoint file of run `run` (its label with characters other than ASCII letters,
    /// digits, `-` and `.` replaced by `_`, and a hash of the exact label).
    pub fn path(&self, run: &str) -> PathBuf {
        let clean: String = run
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let hash = crate::rng::derive_seed(0, &["checkpoint", run]);
        self.dir.join(format!("{clean}-{hash:016x}.safetensors"))
    }
}

/// State of a [`crate::fit::Batcher`]: its generator's word position, the current permutation
/// and the position in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatcherState {
    /// `ChaCha8Rng::get_word_pos`, as a decimal string (a u128).
    pub word_pos: String,
    /// The current permutation.
    pub order: Vec<usize>,
    /// Rows of it already used.
    pub pos: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    version: u32,
    run: String,
    fingerprint: String,
    step: usize,
    done: bool,
    optim_steps: usize,
    batcher: Option<BatcherState>,
    rows: usize,
    row_width: usize,
    final_loss_bits: Option<u64>,
}

/// Everything needed to continue a run.
#[derive(Debug, Clone)]
pub struct State {
    /// The run's label.
    pub run: String,
    /// A fingerprint of the run's settings (a checkpoint of other settings is refused).
    pub fingerprint: String,
    /// Updates applied.
    pub step: usize,
    /// The run finished (then `final_loss` is set and `rows` is complete).
    pub done: bool,
    /// The model's variables by name.
    pub params: Vec<(String, Tensor)>,
    /// The optimizer's state.
    pub optim: Vec<(String, Tensor)>,
    /// The optimizer's step count.
    pub optim_steps: usize,
    /// The mini-batch generator (`None` with full batches).
    pub batcher: Option<BatcherState>,
    /// Logged rows so far: `(t, training loss, the experiment's columns)`.
    pub rows: Vec<(usize, f64, Vec<f64>)>,
    /// The validation state ([`crate::fit::ValidationState::to_vec`]; empty without validation).
    pub validation: Vec<f64>,
    /// The final training loss of a finished run.
    pub final_loss: Option<f64>,
}

/// Writes `state` to `path` atomically.
///
/// # Errors
/// A tensor that cannot be copied to the CPU, rows of unequal width, or a write error (full
/// disk, unwritable folder); the message names the path.
pub fn save(path: &Path, state: &State) -> anyhow::Result<()> {
    let width = state.rows.first().map_or(2, |r| 2 + r.2.len());
    anyhow::ensure!(
        state.rows.iter().all(|r| 2 + r.2.len() == width),
        "checkpoint {}: logged rows of unequal width",
        path.display()
    );
    let meta = Meta {
        version: VERSION,
        run: state.run.clone(),
        fingerprint: state.fingerprint.clone(),
        step: state.step,
        done: state.done,
        optim_steps: state.optim_steps,
        batcher: state.batcher.clone(),
        rows: state.rows.len(),
        row_width: width,
        final_loss_bits: state.final_loss.map(f64::to_bits),
    };
    let cpu = Device::Cpu;
    let mut map: HashMap<String, Tensor> = HashMap::new();
    let meta_bytes = serde_json::to_vec(&meta)?;
    let n = meta_bytes.len();
    map.insert("meta".into(), Tensor::from_vec(meta_bytes, n, &cpu)?);
    for (k, t) in &state.params {
        map.insert(format!("param.{k}"), t.to_device(&cpu)?);
    }
    for (k, t) in &state.optim {
        map.insert(format!("optim.{k}"), t.to_device(&cpu)?);
    }
    if !state.rows.is_empty() {
        let mut flat = Vec::with_capacity(state.rows.len() * width);
        for (t, l, extra) in &state.rows {
            flat.push(*t as f64);
            flat.push(*l);
            flat.extend_from_slice(extra);
        }
        let len = flat.len();
        map.insert("rows".into(), Tensor::from_vec(flat, len, &cpu)?);
    }
    if !state.validation.is_empty() {
        let len = state.validation.len();
        map.insert(
            "validation".into(),
            Tensor::from_vec(state.validation.clone(), len, &cpu)?,
        );
    }
    records::write_atomic_with(path, |tmp| {
        candle_core::safetensors::save(&map, tmp).map_err(std::io::Error::other)
    })
    .with_context(|| format!("cannot write checkpoint {}", path.display()))
}

/// Reads a checkpoint written by [`save`] (tensors on the CPU).
///
/// # Errors
/// The file is missing, not safetensors, lacks or has a malformed `meta`, has another format
/// version, or has rows that do not match `meta`; the message names the path.
pub fn load(path: &Path) -> anyhow::Result<State> {
    let bad = |what: String| anyhow::anyhow!("corrupt checkpoint {}: {what}", path.display());
    let map = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| bad(format!("{e}")))?;
    let meta = map.get("meta").ok_or_else(|| bad("no meta entry".into()))?;
    if meta.dtype() != DType::U8 || meta.rank() != 1 {
        return Err(bad("meta is not a u8 vector".into()));
    }
    let meta: Meta =
        serde_json::from_slice(&meta.to_vec1::<u8>()?).map_err(|e| bad(format!("meta is not valid: {e}")))?;
    if meta.version != VERSION {
        return Err(bad(format!("format version {}, expected {VERSION}", meta.version)));
    }
    let mut params = Vec::new();
    let mut optim = Vec::new();
    for (k, t) in &map {
        if let Some(name) = k.strip_prefix("param.") {
            params.push((name.to_string(), t.clone()));
        } else if let Some(name) = k.strip_prefix("optim.") {
            optim.push((name.to_string(), t.clone()));
        }
    }
    params.sort_by(|a, b| a.0.cmp(&b.0));
    optim.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rows = Vec::with_capacity(meta.rows);
    if meta.rows > 0 {
        let flat = map.get("rows").ok_or_else(|| bad("no rows entry".into()))?;
        if flat.dtype() != DType::F64 || flat.rank() != 1 || meta.row_width < 2 {
            return Err(bad("rows is not an f64 vector".into()));
        }
        let flat = flat.to_vec1::<f64>()?;
        if flat.len() != meta.rows * meta.row_width {
            return Err(bad(format!(
                "{} row values, expected {} x {}",
                flat.len(),
                meta.rows,
                meta.row_width
            )));
        }
        for r in flat.chunks(meta.row_width) {
            if !(r[0] >= 0.0 && r[0].fract() == 0.0) {
                return Err(bad(format!("row step {} is not a step", r[0])));
            }
            rows.push((r[0] as usize, r[1], r[2..].to_vec()));
        }
    }
    let validation = match map.get("validation") {
        None => Vec::new(),
        Some(v) if v.dtype() == DType::F64 && v.rank() == 1 => v.to_vec1::<f64>()?,
        Some(_) => return Err(bad("validation is not an f64 vector".into())),
    };
    if meta.done && meta.final_loss_bits.is_none() {
        return Err(bad("finished run without a final loss".into()));
    }
    if let Some(b) = &meta.batcher {
        b.word_pos
            .parse::<u128>()
            .map_err(|_| bad(format!("batcher word position {:?}", b.word_pos)))?;
    }
    Ok(State {
        run: meta.run,
        fingerprint: meta.fingerprint,
        step: meta.step,
        done: meta.done,
        params,
        optim,
        optim_steps: meta.optim_steps,
        batcher: meta.batcher,
        rows,
        validation,
        final_loss: meta.final_loss_bits.map(f64::from_bits),
    })
}

/// Every checkpoint file under `out` (`<out>/*/checkpoints/*.safetensors`), sorted.
pub fn find_all(out: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(experiments) = std::fs::read_dir(out) else {
        return found;
    };
    for e in experiments.flatten() {
        let Ok(files) = std::fs::read_dir(e.path().join("checkpoints")) else {
            continue;
        };
        for f in files.flatten() {
            let p = f.path();
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if p.extension().is_some_and(|x| x == "safetensors") && !name.starts_with('.') {
                found.push(p);
            }
        }
    }
    found.sort();
    found
}

/// Checks that `out` has something to resume and that every checkpoint under it reads.
///
/// # Errors
/// No checkpoint under `out`, or the first one that does not read (see [`load`]).
pub fn check_resumable(out: &Path) -> anyhow::Result<usize> {
    let files = find_all(out);
    anyhow::ensure!(
        !files.is_empty(),
        "--resume: no checkpoint under {} (run with --checkpoint-every N first)",
        out.display()
    );
    for f in &files {
        load(f)?;
    }
    Ok(files.len())
}
