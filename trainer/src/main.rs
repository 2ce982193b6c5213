//! The `trainer` command line: argument parsing and exit codes, nothing else.
//!
//! Exit status: 0 on success; 1 when reference cases fail or an experiment fails as a whole
//! (its error is in `summary.json`); 2 for bad input (an unknown experiment, loss or option, a
//! device this build lacks, a missing or corrupt `--anchors` file, `--resume` without a readable
//! checkpoint, an unwritable `--out`, a record that cannot be written), reported on one line.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use trainer::data::images::ImageFiles;
use trainer::experiments::box_regressor::{self, BoxRegressorConfig};
use trainer::experiments::boxes::{BoxesConfig, GradMode, Scale};
use trainer::experiments::imbalanced::{self, ImbalancedConfig};
use trainer::experiments::regression::{self, RegressionConfig};
use trainer::experiments::segmentation::{self, SegmentationConfig};
use trainer::experiments::{self, Context};
use trainer::progress::ProgressMode;
use trainer::runner::{self, RunOptions, Spec};
use trainer::tuning::{self, Workload};

#[derive(Parser)]
#[command(
    name = "trainer",
    version,
    about = "Loss experiments, reference cases and benchmarks for the loss workspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every reference case (*.json, format in cases/FORMAT.md) in the given folders
    /// (default: the repository's own `cases/`, plus the folders of LOSS_CASES_DIR).
    Cases {
        /// Folders holding case files (default: the repository's `cases/`).
        dirs: Vec<PathBuf>,
        /// Which implementation runs on the CPU: `fused` (the CPU kernels where a loss has one)
        /// or `composite` (plain Candle ops, the path CUDA and Metal take).
        #[arg(long, default_value = "fused", value_parser = ["fused", "composite"])]
        path: String,
        /// Device: cpu, cuda, cuda:N or metal (off the CPU every loss takes the composite path).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Run all five experiments with their default settings (boxes at the reduced scale).
    All {
        #[command(flatten)]
        common: Common,
    },
    /// Run one experiment.
    Run {
        #[command(subcommand)]
        experiment: Experiment,
    },
    /// Benchmark forward + backward of each loss on the workloads of bench/torch_bench.py.
    Bench(BenchArgs),
}

/// Options of `trainer bench`.
#[derive(Args)]
struct BenchArgs {
    /// Only these losses (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Implementations to time (comma-separated): fused, composite.
    #[arg(long = "impl", value_delimiter = ',', default_value = "fused,composite")]
    impls: Vec<String>,
    /// Threads for rayon and Candle (at least 1).
    #[arg(long, default_value_t = 2, value_parser = threads_arg)]
    threads: usize,
    /// Device: cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Write the rows as JSON (torch_bench.py's format) to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print each workload's time against this benchmark file (bench/torch_bench.py's output, or
    /// an earlier --json file): its median and the ratio ref/ours (above 1: ours is faster).
    #[arg(long, value_name = "FILE")]
    against: Option<PathBuf>,
    /// With --against: the implementation of the reference file to compare with (default: its
    /// first row of each workload; `torch` for torch_bench.py's files).
    #[arg(long, value_name = "IMPL")]
    against_impl: Option<String>,
    /// Minimum seconds of timed repeats per workload.
    #[arg(long, default_value_t = 0.5, value_parser = seconds_arg)]
    min_seconds: f64,
    /// Skip the memory-bandwidth measurement (the floor is then taken as 46 GB/s).
    #[arg(long)]
    no_floor: bool,
    /// Time this loss of the registry (any loss of the three crates) instead of the workload
    /// list; needs --shape.
    #[arg(long, conflicts_with = "only")]
    loss: Option<String>,
    /// With --loss: the prediction's shape, comma-separated (e.g. 4096,80).
    #[arg(long, value_delimiter = ',', requires = "loss")]
    shape: Vec<usize>,
    /// With --loss: a loss parameter key=value (repeatable; the value is read as JSON).
    #[arg(long = "param", value_name = "KEY=VALUE", requires = "loss")]
    params: Vec<String>,
    /// With --loss: the float type of the inputs.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    dtype: DTypeArg,
}

fn seconds_arg(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("expected a number of seconds >= 0, got {s:?}")),
    }
}

fn threads_arg(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a thread count of at least 1, got {s:?}")),
    }
}

/// `trainer bench`: prints the table, writes the JSON rows.
fn bench(a: BenchArgs) -> ExitCode {
    let device = match parse_device(&a.device) {
        Ok(d) => d,
        Err(e) => return usage_error(e),
    };
    // Read the reference first: a bad file is an error before minutes of timing.
    let reference = match a.against.as_deref().map(trainer::bench::load_reference).transpose() {
        Ok(r) => r,
        Err(e) => return usage_error(format!("{e:#}")),
    };
    if let (Some(reference), Some(i)) = (&reference, &a.against_impl) {
        if !reference.iter().any(|r| &r.implementation == i) {
            let mut have: Vec<&str> = reference.iter().map(|r| r.implementation.as_str()).collect();
            have.sort_unstable();
            have.dedup();
            return usage_error(format!(
                "--against-impl {i}: the file has no rows of it (it has: {})",
                have.join(", ")
            ));
        }
    }
    // The JSON file's folder must exist before the timing starts.
    if let Some(path) = &a.json {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !parent.is_dir() {
            return usage_error(format!(
                "--json {}: folder {} does not exist",
                path.display(),
                parent.display()
            ));
        }
    }
    let opts = trainer::bench::BenchOptions {
        only: a.only,
        impls: a.impls,
        threads: a.threads,
        device,
        min_seconds: a.min_seconds,
    };
    if let Err(e) = trainer::bench::check_options(&opts) {
        return usage_error(format!("{e:#}"));
    }
    let custom = match &a.loss {
        None => None,
        Some(loss) if a.shape.is_empty() => {
            return usage_error(format!("bench --loss {loss}: give the shape with --shape A,B,..."))
        }
        Some(loss) => match trainer::bench::parse_params(&a.params) {
            Ok(params) => Some(trainer::bench::Custom {
                loss: loss.clone(),
                shape: a.shape.clone(),
                params,
                dtype: match a.dtype {
                    DTypeArg::F32 => candle_core::DType::F32,
                    DTypeArg::F64 => candle_core::DType::F64,
                },
            }),
            Err(e) => return usage_error(format!("{e:#}")),
        },
    };
    let progress = |r: &trainer::bench::Row| {
        eprintln!(
            "{:34} {:>20} {:>10} {:>10.3} ms",
            r.loss,
            format!("{:?}", r.shape),
            r.implementation,
            r.median_ms
        )
    };
    // A user workload is checked and timed first: a refused shape is an error before the floor.
    let custom_rows = match custom.as_ref().map(|c| trainer::bench::run_custom(c, &opts, progress)) {
        Some(Err(e)) => return usage_error(format!("{e:#}")),
        Some(Ok(rows)) => Some(rows),
        None => None,
    };
    let floor = if a.no_floor {
        46.0
    } else {
        let (reused, fresh) = trainer::bench::stream_bandwidth(100_000_000);
        println!(
            "memory floor: a[i] = b[i]*s + c[i] over 1e8 f32 with {} threads: {reused:.1} GB/s into a reused buffer, {fresh:.1} GB/s into a fresh one",
            a.threads
        );
        reused
    };
    let result = match custom_rows {
        Some(rows) => Ok(rows),
        None => trainer::bench::run(&opts, progress),
    };
    let rows = match result {
        Ok(rows) => rows,
        Err(e) => return usage_error(format!("{e:#}")),
    };
    print!("{}", trainer::bench::table(&rows, floor));
    if let Some(reference) = &reference {
        println!();
        print!(
            "{}",
            trainer::bench::against_table(&rows, reference, a.against_impl.as_deref())
        );
    }
    if let Some(path) = a.json {
        let text = serde_json::to_string_pretty(&rows).expect("rows serialise");
        if let Err(e) = trainer::records::write_atomic(&path, text.as_bytes()) {
            return usage_error(format!("{e:#}"));
        }
    }
    ExitCode::SUCCESS
}

/// Options shared by every experiment.
#[derive(Args, Clone)]
struct Common {
    /// The seed every random choice comes from.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Device: cpu, cuda, cuda:N or metal (cuda and metal need a build with that feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Output folder for records, summary.json and report.html.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// No progress display and no printed tables.
    #[arg(long)]
    quiet: bool,
    /// Leave the wall-clock "seconds" out of summary.json (then two runs with one seed give
    /// byte-identical files).
    #[arg(long)]
    no_timings: bool,
    /// Write a checkpoint of every training run (weights, optimizer and random-generator
    /// state, logged rows) every N updates, under OUT/<experiment>/checkpoints.
    #[arg(long, value_name = "N", value_parser = trainer::options::count_arg::<1>)]
    checkpoint_every: Option<u64>,
    /// Continue every run from its checkpoint under --out (a finished run is not redone).
    #[arg(long)]
    resume: bool,
}

/// Options of an experiment that trains loss variants: the shared options, the variants and the
/// number of steps (their help names the experiment's variants and default: [`variants_help`],
/// [`steps_help`]).
#[derive(Args, Clone)]
struct Training {
    #[command(flatten)]
    common: Common,
    /// Comma-separated loss variants (default: all).
    #[arg(long, value_delimiter = ',')]
    losses: Option<Vec<String>>,
    /// Override the number of training steps.
    #[arg(long, value_parser = trainer::options::count_arg::<1>)]
    steps: Option<u64>,
}

/// `--losses` help of an experiment with the variants `known`.
fn variants_help(known: &[&str]) -> String {
    format!(
        "Comma-separated loss variants among {} (default: all)",
        known.join(", ")
    )
}

/// `--steps` help of an experiment of `default` steps.
fn steps_help(default: usize) -> String {
    format!("Override the number of training steps (default {default})")
}

/// `--steps` help of the regression experiment (both models).
fn regression_steps_help() -> String {
    let d = RegressionConfig::default();
    format!(
        "Override the number of training steps of both models (default {} linear, {} MLP)",
        d.linear_steps, d.mlp_steps
    )
}

#[derive(Subcommand)]
enum Experiment {
    /// Loss variants compared on your CSV file (k-fold, records, figures and report as the
    /// built-in experiments).
    Tabular {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: Box<trainer::options::TabularArgs>,
    },
    /// Experiment 1: L1 vs L2 vs Smooth L1 vs Huber with outliers (diabetes).
    #[command(mut_arg("losses", |a| a.help(variants_help(&regression::LOSSES))))]
    #[command(mut_arg("steps", |a| a.help(regression_steps_help())))]
    Regression {
        #[command(flatten)]
        training: Training,
        /// Shift added to the outlier training targets.
        #[arg(long, default_value_t = 400.0)]
        shift: f64,
        /// Override the Adam learning rate of both models (default 0.01; a huge one makes the
        /// runs diverge, which they report with their step, loss and seed).
        #[arg(long)]
        lr: Option<f64>,
    },
    /// Experiment 2: the box-regression simulation of the DIoU paper.
    Boxes {
        #[command(flatten)]
        common: Common,
        /// Comma-separated losses among iou, giou, diou, ciou.
        #[arg(long, value_delimiter = ',')]
        losses: Option<Vec<String>>,
        /// Where the gradient comes from.
        #[arg(long, value_enum, default_value_t = GradArg::Autograd)]
        grad: GradArg,
        /// Number of anchor centres: tiny 20, reduced 500, full 5,000.
        #[arg(long, value_enum, default_value_t = ScaleArg::Reduced)]
        scale: ScaleArg,
        /// Float type of the simulation.
        #[arg(long, value_enum, default_value_t = DTypeArg::F64)]
        dtype: DTypeArg,
        /// CSV of anchor centres (x,y a line) instead of sampling them.
        #[arg(long)]
        anchors: Option<PathBuf>,
    },
    /// Experiment 3: cross-entropy vs focal loss on imbalanced classes (red wine quality).
    #[command(mut_arg("losses", |a| a.help(variants_help(&imbalanced::BINARY_LOSSES))))]
    #[command(mut_arg("steps", |a| a.help(steps_help(ImbalancedConfig::default().steps))))]
    Imbalanced {
        #[command(flatten)]
        training: Training,
        /// Comma-separated tasks among good, poor, multi.
        #[arg(long, value_delimiter = ',')]
        tasks: Option<Vec<String>>,
    },
    /// Experiment 4: Dice vs cross-entropy on small objects (synthetic images).
    #[command(mut_arg("losses", |a| a.help(variants_help(&segmentation::LOSSES))))]
    #[command(mut_arg("steps", |a| a.help(steps_help(SegmentationConfig::default().steps))))]
    Segmentation {
        #[command(flatten)]
        training: Training,
        /// Your PNG images (grey or colour) instead of the synthetic shapes; needs --masks.
        #[arg(long, value_name = "DIR", requires = "masks")]
        images: Option<PathBuf>,
        /// Your PNG masks, one per image with the same file name (0/255 or class indices).
        #[arg(long, value_name = "DIR", requires = "images")]
        masks: Option<PathBuf>,
        /// With --images: the share of the pairs held out for the metrics (drawn per seed).
        #[arg(long, default_value_t = 0.25, requires = "images")]
        holdout: f64,
        /// With --images: the number of classes of the masks (2: background and object).
        #[arg(long, default_value_t = 2, requires = "images")]
        classes: usize,
        /// Number of seeds (each its split, initial weights and batch order).
        #[arg(long, value_parser = trainer::options::count_arg::<1>)]
        seeds: Option<u64>,
    },
    /// Experiment 5: a small conv net regressing the largest object's box, one run per box loss.
    #[command(name = "box-regressor")]
    #[command(mut_arg("losses", |a| a.help(variants_help(&box_regressor::LOSSES))))]
    #[command(mut_arg("steps", |a| a.help(steps_help(BoxRegressorConfig::default().steps))))]
    BoxRegressor {
        #[command(flatten)]
        training: Training,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum GradArg {
    Autograd,
    Paper,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScaleArg {
    Tiny,
    Reduced,
    Full,
}

#[derive(Clone, Copy, ValueEnum)]
enum DTypeArg {
    F32,
    F64,
}

/// A bad-input error: printed on one line, exit status 2.
/// Clap's message on one line: its lines before the usage, joined, so that "the following
/// required arguments were not provided:" keeps the arguments it lists on the next lines.
fn clap_one_line(rendered: &str) -> String {
    rendered
        .trim_start_matches("error: ")
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    let text = msg.to_string();
    let line = text.lines().next().unwrap_or("").trim();
    eprintln!("trainer: error: {line}");
    ExitCode::from(2)
}

/// `--device` as a Candle device, or why this build cannot use it.
fn parse_device(s: &str) -> Result<candle_core::Device, String> {
    let s = s.trim().to_ascii_lowercase();
    let ordinal = |rest: &str| -> Result<usize, String> {
        if rest.is_empty() {
            Ok(0)
        } else {
            rest.strip_prefix(':')
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| format!("invalid device '{s}' (expected cpu, cuda, cuda:N or metal)"))
        }
    };
    if s == "cpu" {
        Ok(candle_core::Device::Cpu)
    } else if let Some(rest) = s.strip_prefix("cuda") {
        let n = ordinal(rest)?;
        if !cfg!(feature = "cuda") {
            return Err(format!(
                "device cuda:{n} needs a trainer built with the cuda feature (cargo run --release -p trainer --features cuda -- ...)"
            ));
        }
        candle_core::Device::new_cuda(n).map_err(|e| format!("cannot open cuda:{n}: {e}"))
    } else if let Some(rest) = s.strip_prefix("metal") {
        let n = ordinal(rest)?;
        if !cfg!(feature = "metal") {
            return Err(format!(
                "device metal:{n} needs a trainer built with the metal feature (cargo run --release -p trainer --features metal -- ...)"
            ));
        }
        candle_core::Device::new_metal(n).map_err(|e| format!("cannot open metal:{n}: {e}"))
    } else {
        Err(format!("invalid device '{s}' (expected cpu, cuda, cuda:N or metal)"))
    }
}

fn options(common: &Common) -> Result<RunOptions, String> {
    let device = parse_device(&common.device)?;
    if common.resume {
        trainer::checkpoint::check_resumable(&common.out).map_err(|e| format!("{e:#}"))?;
    }
    let checkpoint = (common.resume || common.checkpoint_every.is_some()).then(|| trainer::checkpoint::Plan {
        dir: common.out.clone(),
        every: common.checkpoint_every.map(|n| n as usize),
        resume: common.resume,
    });
    Ok(RunOptions {
        out: common.out.clone(),
        context: Context {
            seed: common.seed,
            device,
            progress: ProgressMode::detect(common.quiet),
            checkpoint,
        },
        timings: !common.no_timings,
        print: !common.quiet,
    })
}

fn boxes_config(
    losses: Option<&[String]>,
    grad: GradArg,
    scale: ScaleArg,
    dtype: DTypeArg,
    anchors: Option<PathBuf>,
) -> anyhow::Result<BoxesConfig> {
    const KNOWN: [&str; 4] = ["iou", "giou", "diou", "ciou"];
    let losses = experiments::select_losses("boxes", losses, &KNOWN)?;
    if let Some(a) = &anchors {
        anyhow::ensure!(a.is_file(), "--anchors {}: no such file", a.display());
        trainer::experiments::boxes::load_anchors(a).map_err(|e| anyhow::anyhow!("--anchors: {e:#}"))?;
    }
    Ok(BoxesConfig {
        scale: match scale {
            ScaleArg::Tiny => Scale::Tiny,
            ScaleArg::Reduced => Scale::Reduced,
            ScaleArg::Full => Scale::Full,
        },
        grad: match grad {
            GradArg::Autograd => GradMode::Autograd,
            GradArg::Paper => GradMode::Paper,
        },
        dtype: match dtype {
            DTypeArg::F32 => candle_core::DType::F32,
            DTypeArg::F64 => candle_core::DType::F64,
        },
        anchors,
        seed: 0,
        device: candle_core::Device::Cpu,
        losses,
    })
}

/// The experiments and the common options of an `all` or `run` command.
fn plan(command: Command) -> anyhow::Result<(Vec<Spec>, Common)> {
    let steps = |s: Option<u64>| s.map(|s| s as usize);
    Ok(match command {
        Command::Cases { .. } | Command::Bench(_) => unreachable!("handled in main"),
        Command::All { common } => (
            vec![
                Spec::Regression(RegressionConfig::default()),
                Spec::Boxes(boxes_config(
                    None,
                    GradArg::Autograd,
                    ScaleArg::Reduced,
                    DTypeArg::F64,
                    None,
                )?),
                Spec::Imbalanced(ImbalancedConfig::default()),
                Spec::Segmentation(SegmentationConfig::with_losses(None)?),
                Spec::BoxRegressor(BoxRegressorConfig::with_losses(None)?),
            ],
            common,
        ),
        Command::Run { experiment } => match experiment {
            Experiment::Tabular { common, args } => (vec![Spec::Tabular(Box::new(args.prepare()?))], common),
            Experiment::Regression {
                training:
                    Training {
                        common,
                        losses,
                        steps: s,
                    },
                shift,
                lr,
            } => {
                anyhow::ensure!(shift.is_finite(), "--shift must be finite, got {shift}");
                let mut cfg = RegressionConfig::with_losses(losses.as_deref())?;
                cfg.shift = shift;
                if let Some(lr) = lr {
                    anyhow::ensure!(lr.is_finite() && lr > 0.0, "--lr must be finite and > 0, got {lr}");
                    cfg.lr = lr;
                }
                if let Some(s) = steps(s) {
                    cfg.linear_steps = s;
                    cfg.mlp_steps = s;
                    cfg.log_every = (s / 20).max(1);
                }
                (vec![Spec::Regression(cfg)], common)
            }
            Experiment::Boxes {
                common,
                losses,
                grad,
                scale,
                dtype,
                anchors,
            } => (
                vec![Spec::Boxes(boxes_config(
                    losses.as_deref(),
                    grad,
                    scale,
                    dtype,
                    anchors,
                )?)],
                common,
            ),
            Experiment::Imbalanced {
                training:
                    Training {
                        common,
                        losses,
                        steps: s,
                    },
                tasks,
            } => {
                let mut cfg = ImbalancedConfig::with_selection(losses.as_deref(), tasks.as_deref())?;
                if let Some(s) = steps(s) {
                    cfg.steps = s;
                    cfg.log_every = (s / 20).max(1);
                }
                (vec![Spec::Imbalanced(cfg)], common)
            }
            Experiment::Segmentation {
                training:
                    Training {
                        common,
                        losses,
                        steps: s,
                    },
                images,
                masks,
                holdout,
                classes,
                seeds,
            } => {
                let mut cfg = SegmentationConfig::with_losses(losses.as_deref())?;
                if let Some(s) = steps(s) {
                    cfg.steps = s;
                }
                if let Some(n) = seeds {
                    cfg.seeds = n as usize;
                }
                if let (Some(i), Some(m)) = (images, masks) {
                    let files = ImageFiles::load(&i, &m, classes, holdout)?;
                    if classes > 2 && losses.is_none() {
                        cfg.losses.retain(|l| l != "lovasz_hinge");
                    }
                    cfg.test_images = files.held_out();
                    cfg.train_images = files.pairs - cfg.test_images;
                    cfg.files = Some(files);
                }
                trainer::experiments::segmentation::Segmentation::new(cfg.clone())?;
                (vec![Spec::Segmentation(cfg)], common)
            }
            Experiment::BoxRegressor {
                training:
                    Training {
                        common,
                        losses,
                        steps: s,
                    },
            } => {
                let mut cfg = BoxRegressorConfig::with_losses(losses.as_deref())?;
                if let Some(s) = steps(s) {
                    cfg.steps = s;
                    cfg.log_every = (s / 12).max(1);
                }
                (vec![Spec::BoxRegressor(cfg)], common)
            }
        },
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    ExitCode::from(2)
                }
                _ => usage_error(clap_one_line(&e.render().to_string())),
            };
        }
    };
    // Thread pools and allocator, before any pool starts.
    let workload = match &cli.command {
        Command::Bench(a) => Workload::Bench { threads: a.threads },
        _ => Workload::Runs,
    };
    if let Err(e) = tuning::init(workload) {
        return usage_error(format!("{e:#}"));
    }
    if let Command::Cases { dirs, path, device } = cli.command {
        let dirs = if dirs.is_empty() {
            let own = trainer::cases::repository_dir();
            if !own.is_dir() {
                return usage_error(format!(
                    "no case folder given, and the repository's cases/ is not at {} (a trainer installed \
                     from a registry has none): name a folder of case files",
                    own.display()
                ));
            }
            trainer::cases::default_dirs()
        } else {
            dirs
        };
        let device = match parse_device(&device) {
            Ok(d) => d,
            Err(e) => return usage_error(e),
        };
        let run = || trainer::cases::run_dirs(&dirs, &device);
        // `fused`: the CPU kernels where a loss has one (the composite path off the CPU).
        let path = if path == "composite" {
            loss_core::kernel::Path::Composite
        } else {
            loss_core::kernel::Path::Auto
        };
        let result = loss_core::kernel::with_path(path, run);
        return match result {
            Ok(report) => {
                for (id, msg) in &report.failed {
                    println!("FAIL {id}: {msg}");
                }
                for (id, loss) in &report.skipped {
                    println!("SKIP {id}: no crate implements {loss:?}");
                }
                println!("{}", report.summary());
                // A case of an unknown loss (a typo in "loss", say) must not pass unnoticed.
                if report.failed.is_empty() && report.skipped.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => usage_error(format!("{e:#}")),
        };
    }
    if let Command::Bench(args) = cli.command {
        return tuning::on_pool(|| bench(args));
    }
    let (specs, common) = match plan(cli.command) {
        Ok(p) => p,
        Err(e) => return usage_error(format!("{e:#}")),
    };
    for spec in &specs {
        if let Spec::Tabular(t) = spec {
            if t.data.default_features && !t.data.ignored.is_empty() {
                eprintln!(
                    "trainer: tabular: column(s) {} of {} left out of the features: a cell is not a number (--features names the columns to use, and then any such cell)",
                    t.data.ignored.join(", "),
                    t.cfg.data.display()
                );
            }
            if t.data.dropped > 0 {
                eprintln!(
                    "trainer: tabular: dropped {} of {} rows with a missing cell from {} (--drop-missing)",
                    t.data.dropped,
                    t.data.dropped + t.data.table.n,
                    t.cfg.data.display()
                );
            }
        }
    }
    let opts = match options(&common) {
        Ok(o) => o,
        Err(e) => return usage_error(e),
    };
    match runner::run(&specs, &opts) {
        Ok(outcome) => {
            for f in &outcome.failures {
                // The message names the run already (FitError's display starts with it).
                eprintln!("trainer: {}: stopped {}", f.experiment, f.message);
            }
            if outcome.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                for (name, msg) in &outcome.errors {
                    let first = msg.lines().next().unwrap_or("");
                    eprintln!("trainer: experiment {name} failed: {first}");
                }
                ExitCode::from(1)
            }
        }
        Err(e) => usage_error(format!("{e:#}")),
    }
}
