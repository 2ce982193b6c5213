//! The runner: a failing experiment is recorded and the others go on; a diverging run is
//! recorded with its loss, step and seed, and the summary is still written.
#![cfg(feature = "cli")]

use candle_core::Device;
use trainer::experiments::boxes::{BoxesConfig, GradMode, Scale};
use trainer::experiments::regression::RegressionConfig;
use trainer::experiments::Context;
use trainer::progress::ProgressMode;
use trainer::runner::{run, RunOptions, Spec};

fn opts(name: &str) -> RunOptions {
    let out = std::env::temp_dir().join(format!("trainer-runner-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    RunOptions {
        out,
        context: Context {
            seed: 3,
            device: Device::Cpu,
            progress: ProgressMode::Quiet,
            checkpoint: None,
        },
        timings: false,
        print: false,
    }
}

fn small_regression() -> RegressionConfig {
    RegressionConfig {
        losses: vec!["l1".into()],
        sweep: vec![0.0],
        linear_steps: 5,
        mlp_steps: 5,
        log_every: 5,
        ..RegressionConfig::default()
    }
}

#[test]
fn a_failing_experiment_is_recorded_and_the_others_go_on() {
    let o = opts("failing");
    std::fs::create_dir_all(&o.out).unwrap();
    let anchors = o.out.join("corrupt.csv");
    std::fs::write(&anchors, "1.0,not-a-number\n").unwrap();
    let boxes = BoxesConfig {
        scale: Scale::Tiny,
        grad: GradMode::Paper,
        dtype: candle_core::DType::F64,
        anchors: Some(anchors),
        seed: 0,
        device: Device::Cpu,
        losses: vec!["iou".into()],
    };
    let outcome = run(&[Spec::Boxes(boxes), Spec::Regression(small_regression())], &o).unwrap();
    assert_eq!(outcome.errors.len(), 1);
    assert_eq!(outcome.errors[0].0, "boxes");
    let s = &outcome.summary;
    assert!(s["errors"]["boxes"].is_string(), "{s}");
    assert!(s["regression"]["models"]["mlp"]["l1"]["mae"]["mean"].is_f64(), "{s}");
    assert!(s.get("seconds").is_none(), "timings off");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(o.out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(&written, s);
    let html = std::fs::read_to_string(o.out.join("report.html")).unwrap();
    assert!(html.contains("Failed:"), "the report shows the failure");
    let _ = std::fs::remove_dir_all(&o.out);
}

#[test]
fn a_diverging_run_is_recorded_with_loss_step_and_seed() {
    let o = opts("diverging");
    let cfg = RegressionConfig {
        losses: vec!["mse".into()],
        lr: 1e30,
        ..small_regression()
    };
    let outcome = run(&[Spec::Regression(cfg)], &o).unwrap();
    assert!(outcome.errors.is_empty());
    assert!(!outcome.failures.is_empty());
    for f in &outcome.failures {
        assert_eq!(f.experiment, "regression");
        assert!(
            f.message.contains("mse_loss") && f.message.contains("step") && f.message.contains("seed 3"),
            "{f:?}"
        );
    }
    let failures = outcome.summary["failures"].as_array().unwrap();
    assert_eq!(failures.len(), outcome.failures.len());
    let _ = std::fs::remove_dir_all(&o.out);
}
