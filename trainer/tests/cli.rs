//! The binary as a user runs it: bad input gives one line on stderr and exit status 2; two runs
//! with one seed give byte-identical records; the records are complete.
#![cfg(feature = "cli")]

mod common;

use common::trainer;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("trainer-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A two-step regression run into `out` (the checks that refuse `out`).
fn two_steps_into(out: &str) -> [&str; 7] {
    ["run", "regression", "--steps", "2", "--quiet", "--out", out]
}

fn assert_usage_error(args: &[&str], needle: &str) {
    common::assert_one_line_error(&trainer(args), &format!("{args:?}"), &[needle]);
}

/// [`assert_usage_error`], and every file under `dir` is as it was.
fn assert_refused_and_intact(dir: &Path, args: &[&str], needle: &str) {
    let before = snapshot(dir);
    assert_usage_error(args, needle);
    assert!(snapshot(dir) == before, "{args:?} changed the records");
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
    assert_usage_error(&two_steps_into(f), "not a folder");
    let below = file.join("sub");
    assert_usage_error(&two_steps_into(below.to_str().unwrap()), "cannot create");
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
    // Without a folder: the repository's own cases, every one of which must pass.
    let out = trainer(&["cases"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let last = text.lines().last().unwrap_or("");
    assert!(
        last.starts_with("cases: ") && last.ends_with(" passed, 0 failed, 0 skipped"),
        "{last}"
    );
    let out = trainer(&["cases", "--device", "tpu"]);
    assert_eq!(out.status.code(), Some(2), "an unknown device is a usage error");
}

/// `--path composite` runs a case through the plain-Candle path; a wrong expected value fails
/// with exit status 1 and names the case, on either path.
#[test]
fn cases_on_either_path_report_a_wrong_value() {
    let d = std::env::temp_dir().join(format!("trainer-cli-cases-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let case = |id: &str, want: f64| {
        format!(
            r#"{{"id": "{id}", "loss": "l1_loss", "params": {{"reduction": "mean"}},
                "inputs": {{"input": {{"shape": [2], "data": [1.0, -2.0]}},
                            "target": {{"shape": [2], "data": [0.0, 0.0]}}}},
                "expected": {{"shape": [], "data": [{want}]}},
                "grad": {{"input": {{"shape": [2], "data": [0.5, -0.5]}}}}}}"#
        )
    };
    std::fs::write(
        d.join("l1.json"),
        format!("[{}, {}]", case("right", 1.5), case("wrong", 1.25)),
    )
    .unwrap();
    for path in ["fused", "composite"] {
        let out = trainer(&["cases", "--path", path, d.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{path}: {text}");
        assert!(text.contains("FAIL wrong:"), "{path}: {text}");
        assert!(!text.contains("FAIL right"), "{path}: {text}");
        assert!(
            text.trim_end().ends_with("cases: 1 passed, 1 failed, 0 skipped"),
            "{path}: {text}"
        );
    }
    let _ = std::fs::remove_dir_all(&d);
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
    let cases: [&[&str]; 4] = [
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
        &["box-regressor", "--steps", "3", "--losses", "giou,wise_iou"],
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

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    common::files(dir)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

/// The arguments of [`small_checkpointed_run`] before its output options.
const SMALL_CHECKPOINTED: [&str; 8] = [
    "run",
    "regression",
    "--losses",
    "l1",
    "--steps",
    "4",
    "--checkpoint-every",
    "2",
];

/// A small finished run with checkpoints in `dir`.
fn small_checkpointed_run(dir: &Path) {
    let mut args = SMALL_CHECKPOINTED.to_vec();
    args.extend(["--quiet", "--no-timings", "--out", dir.to_str().unwrap()]);
    let out = trainer(&args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn corrupt_anchors_or_bad_checkpoint_options_are_exit_2() {
    let d = tmp("anchors");
    std::fs::create_dir_all(&d).unwrap();
    let out = d.join("out");
    let o = out.to_str().unwrap();
    for (name, text, needle) in [
        ("letters.csv", "1.0,2.0\n3.0,abc\n", "line 2"),
        ("three.csv", "1,2,3\n", "line 1"),
        ("inf.csv", "inf,2\n", "line 1"),
        ("empty.csv", "# only a comment\n", "no `x,y` line"),
    ] {
        let f = d.join(name);
        std::fs::write(&f, text).unwrap();
        assert_usage_error(&["run", "boxes", "--anchors", f.to_str().unwrap(), "--out", o], needle);
    }
    let binary = d.join("binary.csv");
    std::fs::write(&binary, [0xffu8, 0xfe, 0x00, 0x80]).unwrap();
    assert_usage_error(
        &["run", "boxes", "--anchors", binary.to_str().unwrap(), "--out", o],
        "anchors",
    );
    assert_usage_error(&["run", "regression", "--checkpoint-every", "0", "--out", o], "0");
    assert_usage_error(&["run", "regression", "--checkpoint-every", "-5", "--out", o], "-5");
    assert_usage_error(&["all", "--checkpoint-every", "x", "--out", o], "x");
    for (lr, needle) in [("0", "--lr"), ("-1", "-1"), ("nan", "--lr"), ("inf", "--lr")] {
        assert_usage_error(&["run", "regression", "--lr", lr, "--out", o], needle);
    }
    assert_usage_error(&["run", "regression", "--resume", "--out", o], "no checkpoint");
    assert!(!out.exists(), "a rejected command must not create --out");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn missing_or_corrupt_checkpoints_are_exit_2_and_leave_the_records_intact() {
    let d = tmp("resume-bad");
    small_checkpointed_run(&d);
    let o = d.to_str().unwrap();
    let resume = SMALL_CHECKPOINTED;
    let with_out = |extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = resume.iter().map(|s| s.to_string()).collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend([
            "--quiet".to_string(),
            "--no-timings".into(),
            "--out".into(),
            o.to_string(),
        ]);
        a
    };
    // a resume of a finished run succeeds and changes nothing
    let before = snapshot(&d);
    let args = with_out(&["--resume"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(trainer(&args).status.code(), Some(0));
    assert!(snapshot(&d) == before, "resuming a finished run rewrote records");
    // corrupt checkpoints: truncated, garbage, a foreign safetensors file
    let files = trainer::checkpoint::find_all(&d);
    assert!(!files.is_empty());
    let victim = &files[files.len() / 2];
    let good = std::fs::read(victim).unwrap();
    let weights = std::fs::read(d.join("regression/weights.safetensors")).unwrap();
    for bad in [&good[..good.len() / 2], b"not a checkpoint".as_slice(), &weights[..]] {
        std::fs::write(victim, bad).unwrap();
        assert_refused_and_intact(&d, &args, "corrupt checkpoint");
    }
    // no checkpoint at all
    std::fs::remove_dir_all(d.join("regression/checkpoints")).unwrap();
    assert_refused_and_intact(&d, &args, "no checkpoint");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_read_only_out_is_exit_2_and_left_intact() {
    use std::os::unix::fs::PermissionsExt;
    let d = tmp("read-only");
    small_checkpointed_run(&d);
    let before = snapshot(&d);
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o555)).unwrap();
    let probe = d.join("probe");
    if std::fs::write(&probe, b"x").is_ok() {
        // running as root: permissions do not stop writes, nothing to test here
        let _ = std::fs::remove_file(&probe);
    } else {
        assert_usage_error(&two_steps_into(d.to_str().unwrap()), "not writable");
    }
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(snapshot(&d) == before);
    let _ = std::fs::remove_dir_all(&d);
}

/// A full disk, simulated with a file-size limit (`ulimit -f`, SIGXFSZ ignored so that writes
/// fail with EFBIG instead of killing the process): one line, exit 2, no temporary file, and
/// every record whole (summary.json still the earlier one).
#[test]
fn a_full_disk_is_exit_2_and_leaves_whole_records() {
    let d = tmp("full-disk");
    small_checkpointed_run(&d);
    let summary = std::fs::read(d.join("summary.json")).unwrap();
    let script = format!(
        "trap '' XFSZ; ulimit -f 4 || exit 99; exec '{}' run regression --losses l1 --steps 4 --seed 9 --quiet --out '{}'",
        env!("CARGO_BIN_EXE_trainer"),
        d.display()
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    if out.status.code() == Some(99) {
        return; // no ulimit in this shell
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("cannot write"), "{stderr}");
    assert_eq!(std::fs::read(d.join("summary.json")).unwrap(), summary);
    for (p, bytes) in snapshot(&d) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "temporary file left: {}", p.display());
        if name.ends_with(".json") {
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_diverging_run_is_named_on_stderr_and_the_others_go_on() {
    let d = tmp("diverging");
    let out = trainer(&[
        "run",
        "regression",
        "--losses",
        "mse,l1",
        "--lr",
        "1e19",
        "--steps",
        "5",
        "--seed",
        "11",
        "--checkpoint-every",
        "2",
        "--quiet",
        "--no-timings",
        "--out",
        d.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(
            l.contains("stopped") && l.contains("_loss") && l.contains("at step") && l.contains("seed 11"),
            "{l}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("linear/mse") && l.contains("mse_loss")),
        "{stderr}"
    );
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["failures"].as_array().unwrap().len(), lines.len());
    // the l1 runs (Adam's steps stay bounded) went on to the end
    assert!(s["regression"]["models"]["linear"]["l1"]["mae"]["mean"].is_f64(), "{s}");
    let _ = std::fs::remove_dir_all(&d);
}

/// A case of a loss no crate has (a typo in "loss") is reported and fails the run; a folder
/// without case files is a usage error, not a pass.
#[test]
fn cases_of_an_unknown_loss_or_an_empty_folder_do_not_pass() {
    let d = std::env::temp_dir().join(format!("trainer-cli-skip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("empty")).unwrap();
    std::fs::create_dir_all(d.join("typo")).unwrap();
    std::fs::write(
        d.join("typo/c.json"),
        r#"[{"id": "t", "loss": "l1_los", "inputs": {"input": {"shape": [1], "data": [1]},
             "target": {"shape": [1], "data": [0]}}, "expected": {"shape": [], "data": [1]}}]"#,
    )
    .unwrap();
    let out = trainer(&["cases", d.join("typo").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("SKIP t: no crate implements \"l1_los\""), "{text}");
    let out = trainer(&["cases", d.join("empty").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("holds no case file"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}
