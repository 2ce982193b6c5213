//! Runs experiments and writes their records: `DIR/<experiment>/{config.json, metrics.csv,
//! *.png, weights.safetensors}`, `DIR/summary.json` and `DIR/report.html`.
//!
//! With `Context::checkpoint`, the training runs of each experiment write checkpoints under
//! `DIR/<experiment>/checkpoints/` and, with `resume`, continue from them (see
//! [`crate::checkpoint`]); temporary files left by a killed process are removed first.
//!
//! An experiment that fails as a whole (an error from its `run`) is recorded in the summary
//! under `"errors"` and the others go on; single runs that stop (a non-finite loss) are listed
//! under `"failures"`. A record that cannot be written stops everything with an error.
//!
//! `summary.json` holds the schema of issue 4; `"seconds"` (wall-clock time per experiment) is
//! the only part that changes between two runs with the same seed and build, and
//! `RunOptions::timings = false` (`--no-timings`) leaves it out so that two runs give
//! byte-identical files.

use crate::experiments::box_regressor::{self, BoxRegressorConfig};
use crate::experiments::boxes::{self, BoxesConfig, BoxesReport};
use crate::experiments::imbalanced::{self, ImbalancedConfig};
use crate::experiments::regression::{self, RegressionConfig};
use crate::experiments::segmentation::{self, SegmentationConfig};
use crate::experiments::{named_weights, Context, Experiment, Failure, Output, RunLabel, Runs};
use crate::plot::{self, Series};
use crate::progress::Progress;
use crate::records::{self, Cell, Csv};
use crate::report::{self, Figure, Section, Table};
use anyhow::Context as _;
use candle_core::Device;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::time::Instant;

/// One experiment with its settings.
#[derive(Debug, Clone)]
pub enum Spec {
    /// Experiment 1.
    Regression(RegressionConfig),
    /// Experiment 2.
    Boxes(BoxesConfig),
    /// Experiment 3.
    Imbalanced(ImbalancedConfig),
    /// Experiment 4.
    Segmentation(SegmentationConfig),
    /// Experiment 5.
    BoxRegressor(BoxRegressorConfig),
    /// The user's CSV file (`trainer run tabular`), already read and checked.
    Tabular(Box<crate::experiments::tabular::Tabular>),
}

impl Spec {
    /// The experiment's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Regression(_) => "regression",
            Self::Boxes(_) => "boxes",
            Self::Imbalanced(_) => "imbalanced",
            Self::Segmentation(_) => "segmentation",
            Self::BoxRegressor(_) => "box-regressor",
            Self::Tabular(_) => "tabular",
        }
    }
}

/// Options shared by every experiment of one invocation.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Output folder.
    pub out: PathBuf,
    /// The seed, device and progress display.
    pub context: Context,
    /// Write `"seconds"` into `summary.json`.
    pub timings: bool,
    /// Print the summary tables on stdout.
    pub print: bool,
}

/// What an invocation produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The summary as written.
    pub summary: Value,
    /// Experiments that failed as a whole, with their messages.
    pub errors: Vec<(String, String)>,
    /// Runs that stopped.
    pub failures: Vec<Failure>,
}

/// The device's name as written in `config.json`.
pub fn device_name(d: &Device) -> String {
    match d {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(_) => "cuda".to_string(),
        Device::Metal(_) => "metal".to_string(),
    }
}

/// Crate versions recorded in `config.json` (from the workspace's Cargo.lock at build time).
pub fn crate_versions() -> Value {
    let mut m = Map::new();
    m.insert("trainer".into(), Value::String(env!("CARGO_PKG_VERSION").into()));
    for line in env!("TRAINER_DEP_VERSIONS").split(';').filter(|s| !s.is_empty()) {
        if let Some((k, v)) = line.split_once('=') {
            m.insert(k.into(), Value::String(v.into()));
        }
    }
    Value::Object(m)
}

/// Runs an [`Experiment`]: its jobs in parallel on the run pool ([`crate::parallel::map`], results
/// in job order), with progress counted in training steps; then the metrics table, the weights and
/// the failures of the runs that stopped, in job order, and the experiment's summary.
///
/// # Errors
/// Only from [`Experiment::summarise`]; a run that stops is listed in [`Output::failures`].
pub fn execute<E: Experiment>(experiment: &E, ctx: &Context) -> anyhow::Result<Output> {
    let name = E::NAME;
    let jobs = experiment.jobs();
    let total: usize = jobs.iter().map(|j| experiment.steps(j)).sum();
    let progress = Progress::new(name, total as u64, ctx.progress);
    let trained = crate::parallel::map(&jobs, |j| experiment.run_job(j, ctx, &progress));
    progress.finish();
    let mut metrics = Csv::new(&experiment.metrics_header());
    let mut weights = Vec::new();
    let mut failures = Vec::new();
    let mut results = Vec::with_capacity(jobs.len());
    for (job, r) in jobs.iter().zip(trained) {
        match &r {
            Ok(t) => {
                experiment.metrics_rows(job, &t.done, &mut metrics);
                weights.extend(named_weights(&job.label(), &t.varmap));
            }
            Err(e) => failures.push(Failure::from_fit(name, &job.label(), e)),
        }
        results.push(r.map(|t| t.done));
    }
    let runs = Runs::<E> {
        jobs: &jobs,
        results: &results,
        failures: &failures,
    };
    let s = experiment.summarise(&runs, ctx)?;
    Ok(Output {
        summary: s.summary,
        config: s.config,
        metrics,
        section: Section {
            name: name.to_string(),
            ..s.section
        },
        weights,
        failures,
    })
}

fn run_one(spec: &Spec, ctx: &Context) -> anyhow::Result<Output> {
    match spec {
        Spec::Regression(c) => execute(&regression::Regression::new(c.clone())?, ctx),
        Spec::Imbalanced(c) => execute(&imbalanced::Imbalanced::new(c.clone())?, ctx),
        Spec::Segmentation(c) => execute(&segmentation::Segmentation::new(c.clone())?, ctx),
        Spec::BoxRegressor(c) => execute(&box_regressor::BoxRegressor::new(c.clone())?, ctx),
        Spec::Tabular(t) => execute(t.as_ref(), ctx),
        Spec::Boxes(c) => {
            let mut c = c.clone();
            c.seed = ctx.seed;
            c.device = ctx.device.clone();
            let report = boxes::run(&c)?;
            boxes_output(&c, &report)
        }
    }
}

/// Records, figure, table and section of a boxes run.
fn boxes_output(cfg: &BoxesConfig, r: &BoxesReport) -> anyhow::Result<Output> {
    let mut csv = Csv::new(&["loss", "t", "error"]);
    let mut series = Vec::new();
    let mut table = Table::new(
        &format!(
            "boxes: total error E(t) over {} cases ({} scale, {} gradients, {})",
            r.cases, r.scale, r.grad, r.dtype
        ),
        &["loss", "E(0)", "E(160)", "E(180)", "E(200)"],
    );
    for (name, curve) in &r.losses {
        for (t, e) in curve.error.iter().enumerate() {
            csv.push(&[Cell::Str(name), Cell::Int(t), Cell::Num(*e)]);
        }
        let at = |t: usize| curve.error.get(t).map_or("n/a".to_string(), |e| format!("{e:.1}"));
        table.push(vec![name.clone(), at(0), at(160), at(180), at(200)]);
        series.push(Series {
            name: name.clone(),
            points: curve.error.iter().enumerate().map(|(t, &e)| (t as f64, e)).collect(),
        });
    }
    let png = plot::line_chart(
        &format!("boxes: E(t), {} gradients", r.grad),
        "iteration t",
        "E(t) (log)",
        &series,
        true,
    )?;
    let section = Section {
        name: "boxes".to_string(),
        question: "Which IoU-family loss moves anchor boxes onto their targets fastest (Zheng et al., AAAI 2020, \
                   Figure 3(b))?"
            .to_string(),
        setup: format!(
            "7 targets of area 1 at (10, 10) with aspect ratios 1:4 .. 4:1; anchors centred uniformly in the disc \
             of radius 3, 7 scales × 7 ratios per target and centre; {} cases; 200 iterations of \
             B += lr (2 − IoU) ∇B with lr 0.1 / 0.01 / 0.001 (iterations 1–160 / 161–180 / 181–200); \
             gradients: {}; {}.",
            r.cases, r.grad, r.dtype
        ),
        tables: vec![table],
        notes: vec![
            "The autograd mode differentiates this workspace's losses; the paper mode uses the authors' closed-form \
             gradients, which reproduce their Figure 3(b). The two rank GIoU and DIoU differently: see \
             docs/losses.md and the docs of trainer::experiments::boxes."
                .to_string(),
        ],
        figures: vec![Figure {
            file: "error_curves.png".to_string(),
            caption: "E(t): sum over cases of |x − xg| + |y − yg| + |w − wg| + |h − hg|".to_string(),
            png,
        }],
        seconds: None,
        error: None,
    };
    let config = json!({
        "settings": {
            "scale": r.scale,
            "grad": r.grad,
            "dtype": r.dtype,
            "anchors": cfg.anchors.as_ref().map(|p| p.display().to_string()),
            "losses": cfg.losses,
        },
    });
    Ok(Output {
        summary: serde_json::to_value(r)?,
        config,
        metrics: csv,
        section,
        weights: Vec::new(),
        failures: Vec::new(),
    })
}

fn write_records(dir: &std::path::Path, out: &Output, ctx: &Context, spec_name: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
    let mut config = out.config.clone();
    if let Value::Object(m) = &mut config {
        m.insert("seed".into(), json!(ctx.seed));
        m.insert("device".into(), json!(device_name(&ctx.device)));
        m.insert("crate_versions".into(), crate_versions());
        m.insert("experiment".into(), json!(spec_name));
    }
    records::write_json(&dir.join("config.json"), &config)?;
    records::write_atomic(&dir.join("metrics.csv"), out.metrics.to_text().as_bytes())?;
    for f in out.figures() {
        records::write_atomic(&dir.join(&f.file), &f.png)?;
    }
    if !out.weights.is_empty() {
        records::write_safetensors(&dir.join("weights.safetensors"), &out.weights)?;
    }
    Ok(())
}

/// Runs `specs` in order and writes every record under `opts.out` (after removing the
/// temporary files of an earlier, killed invocation: [`records::remove_stale_temps`]).
///
/// # Errors
/// Only for records that cannot be written (the folder, a full disk); experiment errors are
/// recorded in the outcome.
pub fn run(specs: &[Spec], opts: &RunOptions) -> anyhow::Result<Outcome> {
    records::ensure_writable_dir(&opts.out)?;
    records::remove_stale_temps(&opts.out);
    let mut summary = Map::new();
    let mut seconds = Map::new();
    let mut errors = Vec::new();
    let mut failures = Vec::new();
    let mut sections = Vec::new();
    for spec in specs {
        let name = spec.name();
        let start = Instant::now();
        let mut ctx = opts.context.clone();
        ctx.checkpoint = ctx.checkpoint.map(|p| p.for_experiment(&opts.out.join(name)));
        let result = run_one(spec, &ctx);
        let secs = start.elapsed().as_secs_f64();
        seconds.insert(name.to_string(), json!((secs * 1000.0).round() / 1000.0));
        match result {
            Ok(mut out) => {
                write_records(&opts.out.join(name), &out, &opts.context, name)?;
                summary.insert(name.to_string(), out.summary.clone());
                out.section.seconds = opts.timings.then_some(secs);
                if opts.print {
                    for t in &out.section.tables {
                        println!("{}", t.to_text());
                    }
                    for f in &out.failures {
                        println!("FAILED RUN {}: {}", f.run, f.message);
                    }
                    println!("{name}: {secs:.1} s\n");
                }
                failures.extend(out.failures.iter().cloned());
                sections.push(out.section);
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if opts.print {
                    println!("{name}: FAILED: {msg}\n");
                }
                errors.push((name.to_string(), msg.clone()));
                sections.push(Section {
                    name: name.to_string(),
                    error: Some(msg),
                    seconds: opts.timings.then_some(secs),
                    ..Section::default()
                });
            }
        }
    }
    if !errors.is_empty() {
        let m: Map<String, Value> = errors.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        summary.insert("errors".into(), Value::Object(m));
    }
    if !failures.is_empty() {
        summary.insert("failures".into(), serde_json::to_value(&failures)?);
    }
    if opts.timings {
        summary.insert("seconds".into(), Value::Object(seconds.clone()));
    }
    let summary = Value::Object(summary);
    records::write_json(&opts.out.join("summary.json"), &summary)?;
    let intro = format!(
        "Loss experiments, seed {}, device {}, trainer {}. Each experiment compares loss variants on the same \
         data, split and initial weights. Records (config.json, metrics.csv, figures, weights.safetensors) are in \
         one folder per experiment beside this page; summary.json holds the numbers.",
        opts.context.seed,
        device_name(&opts.context.device),
        env!("CARGO_PKG_VERSION")
    );
    let html = report::html("Loss experiments", &intro, &sections);
    records::write_atomic(&opts.out.join("report.html"), html.as_bytes())?;
    if opts.print && opts.timings {
        let mut t = Table::new("seconds per experiment", &["experiment", "seconds"]);
        for (k, v) in &seconds {
            t.push(vec![k.clone(), format!("{:.1}", v.as_f64().unwrap_or(f64::NAN))]);
        }
        println!("{}", t.to_text());
    }
    Ok(Outcome {
        summary,
        errors,
        failures,
    })
}
