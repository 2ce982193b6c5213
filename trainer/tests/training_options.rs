//! Warm-up schedules, reduce-on-plateau, gradient accumulation and early stopping in the fit
//! loop: values against their formulas, and runs that are resumed bit for bit.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use loss_core::MseLoss;
use std::path::{Path, PathBuf};
use trainer::fit::{
    fit, fit_resumable, split_rows, EarlyStopping, FitConfig, FitError, FitReport, FitRun, LogRow, Plateau, Validation,
    ValidationState,
};
use trainer::models::{Init, Linear, Mlp};
use trainer::optim::{sorted_params, OptimizerConfig, Schedule};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

#[test]
fn warmup_schedules_follow_their_formulas() {
    let c = Schedule::WarmupConstant { warmup: 4 };
    let got: Vec<f64> = (0..7).map(|t| c.lr(0.2, t)).collect();
    let want = [0.0, 0.05, 0.1, 0.15, 0.2, 0.2, 0.2];
    assert!(got.iter().zip(want).all(|(g, w)| close(*g, w)), "{got:?}");
    assert_eq!(Schedule::WarmupConstant { warmup: 0 }.lr(0.2, 0), 0.2);

    let s = Schedule::WarmupCosine {
        warmup: 10,
        t_max: 110,
        eta_min: 0.01,
    };
    let base = 0.5;
    for t in [0usize, 3, 9] {
        assert!(close(s.lr(base, t), base * t as f64 / 10.0), "t = {t}");
    }
    // after the warm-up: η_min + (lr₀ − η_min)(1 + cos(π (t − W)/(T − W)))/2
    for t in [10usize, 35, 60, 85, 109, 110, 500] {
        let p = ((t - 10).min(100)) as f64 / 100.0;
        let want = 0.01 + (base - 0.01) * (1.0 + (std::f64::consts::PI * p).cos()) / 2.0;
        assert!(close(s.lr(base, t), want), "t = {t}: {} vs {want}", s.lr(base, t));
    }
    assert!(close(s.lr(base, 10), base));
    assert!(close(s.lr(base, 60), (base + 0.01) / 2.0));
    assert!(close(s.lr(base, 110), 0.01));
}

#[test]
fn reduce_on_plateau_counts_like_pytorch() {
    let cfg = Validation {
        fraction: 0.2,
        every: 1,
        plateau: Some(Plateau {
            factor: 0.5,
            patience: 2,
            threshold: 0.1,
            cooldown: 1,
            min_lr: 0.03,
        }),
        early_stopping: None,
    };
    let mut s = ValidationState::default();
    // 1.0 best; 0.95 is not 10 % better; three bad ones in a row (> patience 2) halve the rate
    let losses = [1.0, 0.95, 0.92, 0.91, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6];
    let mut scales = Vec::new();
    for (t, &v) in losses.iter().enumerate() {
        assert!(!s.observe(&cfg, t, v));
        scales.push(s.scale);
    }
    // t=3: third bad → 0.5, cooldown 1; t=4 improves (best 0.5) and uses up the cooldown;
    // t=5, 6, 7 bad → reduce at t=7 (0.25), cooldown 1; t=8 bad but in cooldown (not
    // counted); t=9 bad: one so far
    assert_eq!(scales, [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]);
    let mut once_more = s.clone();
    once_more.observe(&cfg, 10, 0.6);
    once_more.observe(&cfg, 11, 0.6);
    assert_eq!(once_more.scale, 0.125, "t = 11: the third bad one after the cooldown");
    assert!(close(s.lr(&cfg, 0.4), 0.1));
    assert!(close(s.lr(&cfg, 0.1), 0.03), "the floor min_lr");
    let back = ValidationState::from_slice(&s.to_vec()).unwrap();
    assert_eq!(back, s);
    assert!(ValidationState::from_slice(&[1.0, 2.0]).is_err());
}

#[test]
fn the_validation_split_is_seeded_and_disjoint() {
    let cfg = Validation {
        fraction: 0.25,
        every: 5,
        plateau: None,
        early_stopping: None,
    };
    let (train, val) = split_rows(&cfg, 20, 3).unwrap();
    assert_eq!((train.len(), val.len()), (15, 5));
    let mut all: Vec<u32> = train.iter().chain(&val).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..20).collect::<Vec<u32>>());
    assert!(train.windows(2).all(|w| w[0] < w[1]) && val.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(split_rows(&cfg, 20, 3).unwrap(), (train.clone(), val.clone()));
    assert_ne!(split_rows(&cfg, 20, 4).unwrap().1, val);
    let bad = Validation { fraction: 1.0, ..cfg };
    assert!(split_rows(&bad, 20, 3).unwrap_err().to_string().contains("fraction"));
}

fn line(n: usize) -> (Vec<f64>, Vec<f64>) {
    let x: Vec<f64> = (0..n).map(|i| i as f64 / (n as f64 / 2.0) - 1.0).collect();
    let y = x.iter().map(|v| 2.0 * v + 0.5).collect();
    (x, y)
}

fn tensors(x: Vec<f64>, y: Vec<f64>) -> (Tensor, Tensor) {
    let n = x.len();
    (
        Tensor::from_vec(x, (n, 1), &Device::Cpu).unwrap(),
        Tensor::from_vec(y, (n, 1), &Device::Cpu).unwrap(),
    )
}

/// A 1 → 1 linear model with zero weights, in f64.
fn zero_line() -> (VarMap, Linear) {
    let varmap = VarMap::new();
    let mut rng = trainer::rng::stream(0, &["line"]);
    let m = Linear::new(&varmap, "l", 1, 1, Init::Zeros, &mut rng, DType::F64, &Device::Cpu).unwrap();
    (varmap, m)
}

/// [`fit`] with the MSE loss and nothing logged.
fn fit_mse(m: &Linear, varmap: &VarMap, x: &Tensor, y: &Tensor, cfg: &FitConfig) -> Result<FitReport, FitError> {
    let loss = MseLoss::default();
    fit(
        FitRun::new(m, varmap, &loss, x, y, cfg).with_label("line"),
        &mut |_, _| Ok(()),
    )
}

fn weights(varmap: &VarMap) -> Vec<Vec<f64>> {
    sorted_params(varmap)
        .iter()
        .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap())
        .collect()
}

#[test]
fn two_accumulated_half_batches_make_the_full_batch_update() {
    let (x, y) = line(16);
    let (x, y) = tensors(x, y);
    let run = |batch: Option<usize>, accumulate: usize| {
        let (varmap, m) = zero_line();
        let cfg = FitConfig {
            steps: 25,
            lr: 0.1,
            optimizer: OptimizerConfig::sgd(0.0, false),
            batch_size: batch,
            accumulate,
            ..FitConfig::default()
        };
        let r = fit_mse(&m, &varmap, &x, &y, &cfg).unwrap();
        (r, weights(&varmap))
    };
    let (full, w_full) = run(None, 1);
    // each epoch of 16 rows is cut into two batches of 8: their mean gradient is the full one
    let (acc, w_acc) = run(Some(8), 2);
    for (a, b) in w_full.iter().flatten().zip(w_acc.iter().flatten()) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    assert!((full.final_loss - acc.final_loss).abs() < 1e-12);
    // one batch of 8 per update is another trajectory
    let (_, w_half) = run(Some(8), 1);
    assert!(w_half
        .iter()
        .flatten()
        .zip(w_full.iter().flatten())
        .any(|(a, b)| (a - b).abs() > 1e-6));
    // accumulation without mini-batches is refused
    let (varmap, m) = zero_line();
    let cfg = FitConfig {
        accumulate: 2,
        ..FitConfig::default()
    };
    let e = fit_mse(&m, &varmap, &x, &y, &cfg).unwrap_err();
    assert!(e.to_string().contains("batch_size"), "{e}");
}

/// A line whose validation rows follow y = 0.5·x + 0.5 while the training rows follow
/// y = 2x + 0.5: from zero weights, the validation loss falls while the slope passes 0.5 and
/// rises after.
fn overfitting_data(cfg: &Validation, seed: u64) -> (Tensor, Tensor) {
    let (x, mut y) = line(40);
    let (_, val) = split_rows(cfg, 40, seed).unwrap();
    for &r in &val {
        y[r as usize] = 0.5 * x[r as usize] + 0.5;
    }
    tensors(x, y)
}

#[test]
fn early_stopping_stops_where_the_validation_loss_stopped_improving() {
    let v = Validation {
        fraction: 0.25,
        every: 5,
        plateau: None,
        early_stopping: Some(EarlyStopping {
            patience: 3,
            min_delta: 0.0,
        }),
    };
    let (x, y) = overfitting_data(&v, 7);
    let (varmap, m) = zero_line();
    let cfg = FitConfig {
        steps: 2000,
        lr: 0.02,
        optimizer: OptimizerConfig::sgd(0.0, false),
        log_every: 50,
        seed: 7,
        validation: Some(v),
        ..FitConfig::default()
    };
    let r = fit_mse(&m, &varmap, &x, &y, &cfg).unwrap();
    let stopped = r.stopped_at.expect("the run stops early");
    let (best_t, best_v) = r.validation.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    // it stops at the third evaluation after the best one, every one since no better
    assert_eq!(stopped, best_t + 3 * 5, "{:?}", r.validation);
    assert_eq!(r.validation.last().unwrap().0, stopped);
    assert!(r.validation.iter().filter(|h| h.0 > best_t).all(|h| h.1 >= best_v));
    // before the best the validation loss fell at every evaluation
    let before: Vec<f64> = r.validation.iter().filter(|h| h.0 <= best_t).map(|h| h.1).collect();
    assert!(before.windows(2).all(|w| w[1] < w[0]), "{before:?}");
    assert!(stopped > 20 && stopped < 2000, "stopped at {stopped}");
    assert_eq!(r.history.last().unwrap().0, stopped, "the last logged row is the stop");
    // without early stopping the same run goes on to the end
    let (varmap, m) = zero_line();
    let cfg = FitConfig {
        validation: Some(Validation {
            early_stopping: None,
            ..v
        }),
        ..cfg
    };
    let r2 = fit_mse(&m, &varmap, &x, &y, &cfg).unwrap();
    assert_eq!(r2.stopped_at, None);
    assert_eq!(r2.validation.len(), 2000 / 5 - 1);
    assert_eq!(r2.validation[..r.validation.len()], r.validation[..]);
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("trainer-options-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

type Run = (FitReport, Vec<LogRow>, Vec<Vec<f64>>);

/// An MLP with every option on: warm-up + cosine, plateau, early stopping, mini-batches with
/// accumulation, checkpointed every 4 updates; `crash_at`: `on_log` fails there.
fn options_run(dir: &Path, resume: bool, crash_at: Option<usize>) -> Result<Run, trainer::fit::FitError> {
    let v = Validation {
        fraction: 0.25,
        every: 3,
        plateau: Some(Plateau {
            factor: 0.5,
            patience: 1,
            ..Plateau::default()
        }),
        early_stopping: Some(EarlyStopping {
            patience: 4,
            min_delta: 0.0,
        }),
    };
    let (x, y) = overfitting_data(&v, 11);
    let varmap = VarMap::new();
    let mut rng = trainer::rng::stream(9, &["opts"]);
    let m = Mlp::new(&varmap, "mlp", 1, 8, 1, &mut rng, DType::F64, &Device::Cpu).unwrap();
    let cfg = FitConfig {
        steps: 300,
        lr: 0.05,
        optimizer: OptimizerConfig::adam(),
        schedule: Schedule::WarmupCosine {
            warmup: 5,
            t_max: 300,
            eta_min: 0.0,
        },
        batch_size: Some(7),
        accumulate: 2,
        log_every: 2,
        seed: 11,
        validation: Some(v),
        ..FitConfig::default()
    };
    let plan = trainer::checkpoint::Plan {
        dir: dir.to_path_buf(),
        every: Some(4),
        resume,
    };
    let mut on_log = |t: usize, l: f64| -> candle_core::Result<Vec<f64>> {
        if Some(t) == crash_at {
            return Err(candle_core::Error::Msg("simulated crash".into()));
        }
        Ok(vec![l * 3.0])
    };
    let loss = MseLoss::default();
    let run = FitRun::new(&m, &varmap, &loss, &x, &y, &cfg).with_label("opts");
    let (report, rows) = fit_resumable(run, &mut on_log, Some(&plan))?;
    Ok((report, rows, weights(&varmap)))
}

#[test]
fn a_run_with_every_option_resumes_bit_for_bit() {
    let whole = tmp("whole");
    let (report, rows, w) = options_run(&whole, false, None).unwrap();
    let stopped = report.stopped_at.expect("this run stops early");
    assert!(report.validation.len() > 3);
    for crash in [6, 14, stopped - 2] {
        let dir = tmp(&format!("crash{crash}"));
        assert!(options_run(&dir, false, Some(crash)).is_err());
        let (r2, rows2, w2) = options_run(&dir, true, None).unwrap();
        assert_eq!(r2.final_loss.to_bits(), report.final_loss.to_bits(), "crash at {crash}");
        assert_eq!(r2.validation, report.validation, "crash at {crash}");
        assert_eq!(r2.stopped_at, report.stopped_at);
        assert_eq!(rows2, rows, "crash at {crash}");
        assert_eq!(w2, w, "crash at {crash}");
        // resuming the finished run returns the same report
        let (r3, _, w3) = options_run(&dir, true, None).unwrap();
        assert_eq!(r3.validation, report.validation);
        assert_eq!(r3.stopped_at, report.stopped_at);
        assert_eq!(w3, w);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&whole);
}

#[cfg(feature = "cli")]
#[test]
fn bounded_metrics_keep_their_range_in_bar_charts() {
    use trainer::plot::metric_range;
    for m in [
        "ap",
        "ROC_AUC",
        "recall",
        "precision",
        "f1",
        "accuracy",
        "Dice",
        "IoU",
        "AP50",
        "mean IoU",
    ] {
        assert_eq!(metric_range(m), Some((0.0, 1.0)), "{m}");
    }
    for m in ["mae", "rmse", "bias", "share"] {
        assert_eq!(metric_range(m), None, "{m}");
    }
    // error bars past 1 and below 0 are drawn (clipped), not an error
    let bars = vec![trainer::plot::BarSeries {
        name: "recall".into(),
        values: vec![(0.95, 0.2), (0.05, 0.3)],
    }];
    let png = trainer::plot::bar_chart("t", "value", &["a".into(), "b".into()], &bars).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
}
