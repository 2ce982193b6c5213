//! The binary as a user runs it: bad input gives one line on stderr and exit status 2; two runs
//! with one seed give byte-identical records; the records are complete.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .output()
        .expect("run trainer")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("trainer-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn assert_usage_error(args: &[&str], needle: &str) {
    let out = trainer(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {stderr:?}"
    );
    assert!(stderr.contains(needle), "{args:?}: {stderr:?} lacks {needle:?}");
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let out = tmp("bad");
    let o = out.to_str().unwrap();
    assert_usage_error(&["run", "nonsense"], "nonsense");
    assert_usage_error(&["frobnicate"], "frobnicate");
    assert_usage_error(
        &["run", "regression", "--losses", "mse,bogus", "--out", o],
        "unknown loss 'bogus'",
    );
    assert_usage_error(
        &["run", "imbalanced", "--tasks", "great", "--out", o],
        "unknown task 'great'",
    );
    assert_usage_error(&["run", "boxes", "--losses", "eiou", "--out", o], "unknown loss 'eiou'");
    assert_usage_error(
        &["run", "segmentation", "--losses", "lovasz", "--out", o],
        "unknown loss",
    );
    assert_usage_error(&["run", "regression", "--steps", "-3", "--out", o], "-3");
    assert_usage_error(&["run", "regression", "--steps", "0", "--out", o], "0");
    assert_usage_error(&["run", "boxes", "--grad", "magic", "--out", o], "magic");
    assert_usage_error(
        &["run", "boxes", "--anchors", "/nonexistent/anchors.csv", "--out", o],
        "anchors",
    );
    assert_usage_error(&["run", "regression", "--device", "tpu", "--out", o], "invalid device");
    if !cfg!(feature = "cuda") {
        assert_usage_error(
            &["run", "regression", "--device", "cuda:1", "--out", o],
            "--features cuda",
        );
    }
    if !cfg!(feature = "metal") {
        assert_usage_error(&["all", "--device", "metal", "--out", o], "--features metal");
    }
    assert!(!out.exists(), "a rejected command must not create --out");
}

#[test]
fn unwritable_out_is_exit_2() {
    let d = tmp("unwritable");
    std::fs::create_dir_all(&d).unwrap();
    let file = d.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let f = file.to_str().unwrap();
    assert_usage_error(
        &["run", "regression", "--steps", "2", "--quiet", "--out", f],
        "not a folder",
    );
    let below = file.join("sub");
    assert_usage_error(
        &[
            "run",
            "regression",
            "--steps",
            "2",
            "--quiet",
            "--out",
            below.to_str().unwrap(),
        ],
        "cannot create",
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"x", "the file is left as it was");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn help_and_cases_still_work() {
    let out = trainer(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["cases", "all", "run"] {
        assert!(text.contains(cmd), "{text}");
    }
    let out = trainer(&["cases"]);
    assert_eq!(out.status.code(), Some(2), "cases without a folder is a usage error");
}

/// Runs an experiment with `threads` run threads; with one, Candle's and Rayon's pools get one
/// thread too (RAYON_NUM_THREADS=1), so the comparison covers every thread count that matters.
fn run_small(dir: &Path, experiment: &[&str], threads: &str) -> Output {
    let mut args = vec!["run"];
    args.extend_from_slice(experiment);
    args.extend_from_slice(&["--seed", "7", "--quiet", "--no-timings", "--out", dir.to_str().unwrap()]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trainer"));
    cmd.args(&args).env("TRAINER_THREADS", threads);
    if threads == "1" {
        cmd.env("RAYON_NUM_THREADS", "1");
    } else {
        cmd.env_remove("RAYON_NUM_THREADS");
    }
    let out = cmd.output().expect("run trainer");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}

#[test]
fn one_seed_gives_byte_identical_records() {
    let cases: [&[&str]; 3] = [
        &["regression", "--steps", "30", "--losses", "mse,huber,mse_clean"],
        &[
            "imbalanced",
            "--steps",
            "20",
            "--losses",
            "ce,focal_g2_a25",
            "--tasks",
            "poor,multi",
        ],
        &["segmentation", "--steps", "3", "--losses", "dice,cross_entropy"],
    ];
    for (i, exp) in cases.iter().enumerate() {
        let a = tmp(&format!("repro-a{i}"));
        let b = tmp(&format!("repro-b{i}"));
        run_small(&a, exp, "1");
        run_small(&b, exp, "2");
        same_file(&a.join("summary.json"), &b.join("summary.json"));
        let name = exp[0];
        for f in ["metrics.csv", "config.json", "weights.safetensors"] {
            same_file(&a.join(name).join(f), &b.join(name).join(f));
        }
        let c = tmp(&format!("repro-c{i}"));
        let mut other_seed: Vec<&str> = exp.to_vec();
        other_seed.extend(["--seed", "8"]);
        let out = Command::new(env!("CARGO_BIN_EXE_trainer"))
            .arg("run")
            .args(&other_seed)
            .args(["--quiet", "--no-timings", "--out", c.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert_ne!(
            std::fs::read(a.join(name).join("weights.safetensors")).unwrap(),
            std::fs::read(c.join(name).join("weights.safetensors")).unwrap(),
            "{name}: another seed gives other weights"
        );
        for d in [a, b, c] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

#[test]
fn records_are_complete_and_self_contained() {
    let d = tmp("records");
    let out = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args([
            "run",
            "regression",
            "--steps",
            "10",
            "--losses",
            "l1,mse_clean",
            "--out",
        ])
        .arg(&d)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("linear / l1") && stdout.contains("seconds per experiment"),
        "{stdout}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("summary.json")).unwrap()).unwrap();
    let lin = &summary["regression"]["models"]["linear"]["l1"];
    for m in ["mae", "rmse", "bias"] {
        assert!(lin[m]["mean"].is_f64() && lin[m]["std"].is_f64(), "{m}: {lin}");
    }
    for shift in ["0", "100", "200", "400", "800"] {
        assert!(
            summary["regression"]["shift_sweep"][shift]["mse_clean"]["mae"].is_f64(),
            "{shift}"
        );
    }
    assert!(summary["seconds"]["regression"].is_f64());
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("regression/config.json")).unwrap()).unwrap();
    assert_eq!(config["seed"], 0);
    assert_eq!(config["device"], "cpu");
    assert!(config["crate_versions"]["candle-core"].is_string(), "{config}");
    let csv = std::fs::read_to_string(d.join("regression/metrics.csv")).unwrap();
    assert!(csv.starts_with("model,loss,shift,fold,step,train_loss,test_mae,test_rmse,test_bias\n"));
    let pngs: Vec<_> = std::fs::read_dir(d.join("regression"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .collect();
    assert!(pngs.len() >= 3);
    for p in &pngs {
        assert_eq!(&std::fs::read(p.path()).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    }
    let w =
        candle_core::safetensors::load(d.join("regression/weights.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert!(
        w.keys().any(|k| k.starts_with("linear/l1/shift400/fold0/")),
        "{:?}",
        w.keys()
    );
    let html = std::fs::read_to_string(d.join("report.html")).unwrap();
    assert!(html.contains("data:image/png;base64,"));
    assert!(
        !html.contains("src=\"http") && !html.contains("<script"),
        "report must be self-contained"
    );
    // no temporary file is left behind
    for e in std::fs::read_dir(&d)
        .unwrap()
        .chain(std::fs::read_dir(d.join("regression")).unwrap())
    {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp-"), "{name}");
    }
    let _ = std::fs::remove_dir_all(&d);
}
