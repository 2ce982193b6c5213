//! `trainer run tabular` on CSV files written here: each task trains and gives the metrics its
//! data allows; the red-wine data as a CSV gives the built-in imbalanced experiment's numbers;
//! every bad file is one line on stderr, exit status 2, and nothing under --out.
#![cfg(feature = "cli")]

mod common;

use common::{assert_one_line_error, trainer};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    common::tmp("tabular", name)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn run_ok(args: &[&str]) -> String {
    let out = trainer(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The binary task on column `t`, 2 folds.
const BINARY_T: [&str; 6] = ["--task", "binary", "--target", "t", "--folds", "2"];

/// `run tabular` of the binary task on column `t` of `data`, 2 folds, quiet, into `out`, with
/// `extra` (`--steps`, ...): its stderr.
fn run_binary_t(data: &str, out: &Path, extra: &[&str]) -> String {
    let mut a = vec!["run", "tabular", "--data", data];
    a.extend(BINARY_T);
    a.extend(["--quiet", "--out", out.to_str().unwrap()]);
    a.extend(extra);
    run_ok(&a)
}

fn summary(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

fn metric(s: &Value, path: &[&str]) -> f64 {
    let mut v = s;
    for p in path {
        v = &v[p];
    }
    v.as_f64().unwrap_or_else(|| panic!("{path:?} in {s}"))
}

/// 60 rows: x1 in [−1, 1], x2 a second feature, a text column, a numeric target 3·x1 − x2 + 1,
/// a binary label (x1 > 0: "yes") and three classes by x1's third.
fn synthetic(dir: &Path) -> String {
    let mut text = String::from("x1,x2,name,y,label,kind\n");
    for i in 0..60 {
        let x1 = f64::from(i) / 29.5 - 1.0;
        let x2 = f64::from((i * 7) % 11) / 10.0;
        let y = 3.0 * x1 - x2 + 1.0;
        let label = if x1 > 0.0 { "yes" } else { "no" };
        let kind = ["low", "mid", "high"][(i / 20) as usize];
        writeln!(text, "{x1},{x2},row{i},{y},{label},{kind}").unwrap();
    }
    write(dir, "synthetic.csv", &text)
}

/// `run tabular` on `data` with 3 folds and `args`, into `dir/name`: its summary.
fn run_task(dir: &Path, name: &str, data: &str, args: &[&str]) -> Value {
    let out = dir.join(name);
    let mut a = vec![
        "run",
        "tabular",
        "--folds",
        "3",
        "--quiet",
        "--no-timings",
        "--data",
        data,
    ];
    a.extend(["--out", out.to_str().unwrap()]);
    a.extend(args);
    run_ok(&a);
    summary(&out)
}

#[test]
fn each_task_trains_on_a_csv_file() {
    let dir = tmp("tasks");
    let data = synthetic(&dir);
    // regression: an exact linear target, learnt to a small error
    let s = run_task(
        &dir,
        "reg",
        &data,
        &[
            "--task",
            "regression",
            "--target",
            "y",
            "--features",
            "x1,x2",
            "--losses",
            "mse_loss,huber_loss:delta=0.5",
            "--steps",
            "300",
            "--lr",
            "0.1",
        ],
    );
    for loss in ["mse_loss", "huber_loss:delta=0.5"] {
        let mae = metric(&s, &["tabular", "losses", loss, "mae", "mean"]);
        assert!(mae < 0.05, "{loss}: MAE {mae}");
    }
    assert_eq!(s["tabular"]["features"], serde_json::json!(["x1", "x2"]));
    let out = dir.join("reg");
    let config: Value = serde_json::from_slice(&std::fs::read(out.join("tabular/config.json")).unwrap()).unwrap();
    assert_eq!(config["settings"]["losses"][1]["params"]["delta"], 0.5);
    for f in ["metrics.csv", "convergence.png", "metrics.png", "weights.safetensors"] {
        assert!(out.join("tabular").join(f).is_file(), "{f}");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Best loss per metric"), "the report says which loss won");

    // binary: "yes" (the larger label) is the positive class; separable by x1
    let s = run_task(
        &dir,
        "bin",
        &data,
        &[
            "--task",
            "binary",
            "--target",
            "label",
            "--features",
            "x1",
            "--steps",
            "100",
            "--lr",
            "0.1",
            "--param",
            "sigmoid_focal_loss.gamma=1",
        ],
    );
    assert_eq!(s["tabular"]["classes"], serde_json::json!(["no", "yes"]));
    for loss in [
        "binary_cross_entropy_with_logits",
        "alpha_balanced_bce",
        "sigmoid_focal_loss",
    ] {
        for m in ["roc_auc", "ap"] {
            assert_eq!(metric(&s, &["tabular", "losses", loss, m, "mean"]), 1.0, "{loss} {m}");
        }
    }

    // multiclass with the default features (every numeric column: x1, x2, y; the text columns
    // are ignored), an MLP
    let s = run_task(
        &dir,
        "multi",
        &data,
        &[
            "--task",
            "multiclass",
            "--target",
            "kind",
            "--model",
            "mlp",
            "--hidden",
            "8",
            "--steps",
            "300",
            "--lr",
            "0.05",
        ],
    );
    assert_eq!(s["tabular"]["classes"], serde_json::json!(["high", "low", "mid"]));
    assert_eq!(s["tabular"]["features"], serde_json::json!(["x1", "x2", "y"]));
    let acc = metric(&s, &["tabular", "losses", "cross_entropy", "accuracy", "mean"]);
    assert!(acc > 0.9, "accuracy {acc}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn red_wine_as_a_csv_gives_the_imbalanced_experiments_numbers() {
    let dir = tmp("wine");
    let t = trainer::data::winequality::load();
    let mut text = (0..t.d).map(|j| format!("f{j}")).collect::<Vec<_>>().join(",") + ",good\n";
    for r in 0..t.n {
        for v in &t.x[r * t.d..(r + 1) * t.d] {
            write!(text, "{v},").unwrap();
        }
        writeln!(text, "{}", u8::from(t.y[r] >= 7.0)).unwrap();
    }
    let data = write(&dir, "wine.csv", &text);
    let (a, b) = (dir.join("tabular"), dir.join("imbalanced"));
    run_ok(&[
        "run",
        "tabular",
        "--data",
        &data,
        "--target",
        "good",
        "--task",
        "binary",
        "--losses",
        "binary_cross_entropy_with_logits,sigmoid_focal_loss:alpha=-1",
        "--steps",
        "40",
        "--quiet",
        "--no-timings",
        "--out",
        a.to_str().unwrap(),
    ]);
    run_ok(&[
        "run",
        "imbalanced",
        "--tasks",
        "good",
        "--losses",
        "ce,focal_g2",
        "--steps",
        "40",
        "--quiet",
        "--no-timings",
        "--out",
        b.to_str().unwrap(),
    ]);
    let (sa, sb) = (summary(&a), summary(&b));
    for (ours, theirs) in [
        ("binary_cross_entropy_with_logits", "ce"),
        ("sigmoid_focal_loss:alpha=-1", "focal_g2"),
    ] {
        for m in ["ap", "roc_auc", "recall", "precision", "f1", "balanced_accuracy"] {
            for part in ["mean", "std"] {
                let x = metric(&sa, &["tabular", "losses", ours, m, part]);
                let y = metric(&sb, &["imbalanced", "tasks", "good", "linear", theirs, m, part]);
                assert_eq!(x.to_bits(), y.to_bits(), "{ours} {m} {part}: {x} vs {y}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One line on stderr naming `needles`, exit status 2, nothing under --out.
fn assert_bad(data: &str, extra: &[&str], needles: &[&str]) {
    let out = PathBuf::from(format!("{data}.out"));
    let mut args = vec![
        "run",
        "tabular",
        "--data",
        data,
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ];
    args.extend(extra);
    assert_one_line_error(&trainer(&args), data, needles);
    assert!(!out.exists(), "{} was created", out.display());
}

#[test]
fn every_bad_file_is_one_line_exit_2_and_nothing_written() {
    let dir = tmp("bad");
    let bin = ["--task", "binary", "--target", "t"];
    let good_rows = "1,0\n2,1\n3,0\n4,1\n5,0\n6,1\n";
    let f = write(&dir, "missing-col.csv", &format!("a,t\n{good_rows}"));
    assert_bad(
        &f,
        &["--task", "binary", "--target", "nope"],
        &["missing-col.csv", "no column \"nope\""],
    );
    assert_bad(
        &f,
        &["--task", "binary", "--target", "t", "--features", "a,b"],
        &["no column \"b\""],
    );
    let f = write(&dir, "dup.csv", &format!("a,a,t\n{}", good_rows.replace(',', ",0,")));
    assert_bad(&f, &bin, &["dup.csv", "line 1", "column \"a\" appears twice"]);
    let f = write(&dir, "text.csv", "a,t\n1,0\n2,1\nabc,0\n4,1\n");
    assert_bad(
        &f,
        &["--task", "binary", "--target", "t", "--features", "a"],
        &["text.csv", "row 3 (line 4)", "column \"a\"", "\"abc\" is not a number"],
    );
    let f = write(&dir, "empty.csv", "");
    assert_bad(&f, &bin, &["empty.csv", "empty file"]);
    let f = write(&dir, "header-only.csv", "a,t\n");
    assert_bad(&f, &bin, &["header-only.csv", "no data rows"]);
    let f = write(&dir, "one-class.csv", "a,t\n1,0\n2,0\n3,0\n");
    assert_bad(&f, &bin, &["one-class.csv", "column \"t\"", "one class"]);
    let f = write(&dir, "small-class.csv", "a,t\n1,0\n2,1\n3,0\n4,0\n5,0\n6,0\n");
    assert_bad(
        &f,
        &bin,
        &["small-class.csv", "column \"t\"", "class \"1\" has 1 row(s)", "5 folds"],
    );
    let f = write(&dir, "nan.csv", &format!("a,t\n{good_rows}NaN,1\n7,0\n,1\n"));
    assert_bad(
        &f,
        &bin,
        &[
            "nan.csv",
            "row 7 (line 8)",
            "column \"a\"",
            "missing value",
            "--drop-missing",
        ],
    );
    let f = write(&dir, "ragged.csv", "a,t\n1,0\n2\n");
    assert_bad(&f, &bin, &["ragged.csv", "row 2 (line 3)", "1 cells"]);
    // a bad loss parameter is refused before anything is written, naming it
    let f = write(&dir, "ok.csv", &format!("a,t\n{good_rows}{good_rows}"));
    assert_bad(
        &f,
        &[&BINARY_T[..], &["--losses", "sigmoid_focal_loss:gamm=2"]].concat(),
        &["gamm"],
    );
    assert_bad(
        &f,
        &["--task", "binary", "--target", "t", "--losses", "mse_loss"],
        &["unknown loss 'mse_loss'"],
    );
    // --drop-missing drops the rows and says how many
    let f = write(&dir, "drop.csv", &format!("a,t\n{good_rows}{good_rows}NaN,1\n7,NA\n"));
    let out = dir.join("drop-out");
    let stderr = run_binary_t(&f, &out, &["--drop-missing", "--steps", "5", "--no-timings"]);
    assert!(stderr.contains("dropped 2 of 14 rows"), "{stderr}");
    assert_eq!(summary(&out)["tabular"]["dropped_rows"], 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_options_and_rows_after_a_blank_line_are_named_exactly() {
    let dir = tmp("options");
    let rows = "1,0\n2,1\n3,0\n4,1\n5,0\n6,1\n";
    // the reader skips a blank line: the row's line is still the file's (was "line 4")
    let f = write(&dir, "blank.csv", "a,t\n1,0\n\n2,1\nabc,0\n4,1\n");
    assert_bad(
        &f,
        &["--task", "binary", "--target", "t", "--features", "a"],
        &["blank.csv", "row 3 (line 5)", "\"abc\" is not a number"],
    );
    let f = write(&dir, "ok.csv", &format!("a,t\n{rows}{rows}"));
    for (extra, needle) in [
        // each of these ran, every run "stopped" or silently ignoring the option, exit 0
        (
            vec!["--optimizer", "sgd", "--momentum", "NaN"],
            "--momentum must be finite",
        ),
        (
            vec!["--optimizer", "sgd", "--nesterov"],
            "--nesterov needs --momentum > 0",
        ),
        (vec!["--momentum", "0.9"], "apply to --optimizer sgd"),
        (vec!["--clip-norm", "NaN"], "--clip-norm must be finite and > 0"),
        (vec!["--clip-norm", "0"], "--clip-norm must be finite and > 0"),
        (
            vec!["--schedule", "cosine", "--eta-min", "NaN"],
            "--eta-min must be in [0, --lr 0.01]",
        ),
        (
            vec!["--schedule", "cosine", "--eta-min", "1"],
            "--eta-min must be in [0, --lr 0.01]",
        ),
        (vec!["--eta-min", "0.001"], "--eta-min applies to --schedule cosine"),
        (vec!["--warmup", "600"], "--warmup 600 must be below --steps 500"),
        (
            vec!["--patience", "1", "--min-delta", "NaN"],
            "--min-delta must be finite",
        ),
        (
            vec!["--plateau-patience", "1", "--min-lr=-1"],
            "--min-lr must be finite and >= 0",
        ),
        (
            vec!["--patience", "1", "--eval-every", "501"],
            "--eval-every 501 is more than --steps 500",
        ),
        (vec!["--hidden", "8"], "--hidden applies to --model mlp"),
        // the variant's label said gamma=1, the run used --param's 3
        (
            vec![
                "--losses",
                "sigmoid_focal_loss:gamma=1",
                "--param",
                "sigmoid_focal_loss.gamma=3",
            ],
            "both set `gamma`",
        ),
        // a --param of a loss left out of --losses was ignored
        (
            vec![
                "--losses",
                "binary_cross_entropy_with_logits",
                "--param",
                "sigmoid_focal_loss.gamma=3",
            ],
            "sigmoid_focal_loss is not among --losses",
        ),
    ] {
        let mut a = BINARY_T.to_vec();
        a.extend(&extra);
        assert_bad(&f, &a, &[needle]);
    }
    // a count below its minimum says the minimum (clap's range said "1 is not in
    // 2..18446744073709551615")
    for (flag, value, min) in [("--folds", "1", "2"), ("--steps", "0", "1"), ("--batch-size", "0", "1")] {
        assert_bad(
            &f,
            &["--task", "binary", "--target", "t", flag, value],
            &[
                flag,
                &format!("expected a whole number of at least {min}, got \"{value}\""),
            ],
        );
    }
    // clap's error for a missing argument names it on the one line (it was cut after the colon)
    let o = trainer(&["run", "tabular", "--data", &f, "--target", "t"]);
    assert_one_line_error(
        &o,
        "no --task",
        &["required arguments were not provided", "--task <TASK>"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cells_beyond_f32_and_columns_left_out_are_told() {
    let dir = tmp("range");
    let rows = "1,0\n2,1\n3,0\n4,1\n";
    // 1e300 is a finite f64 but infinite in the f32 the model computes in: the metrics were
    // all n/a (null) with exit 0; with default features the column is still chosen and named
    let f = write(&dir, "big.csv", &format!("a,t\n{rows}1e300,0\n5,1\n"));
    for extra in [&["--features", "a"][..], &[][..]] {
        let mut a = BINARY_T.to_vec();
        a.extend(extra);
        assert_bad(
            &f,
            &a,
            &["big.csv", "row 5 (line 6)", "column \"a\"", "beyond the f32 range"],
        );
    }
    // a Latin-1 byte in a text column stopped the run ("invalid utf-8"); in a feature it is a
    // cell that is not a number, named
    let latin = dir.join("latin.csv");
    std::fs::write(&latin, b"a,name,t\n1,caf\xe9,0\n2,x,1\n3,y,0\n4,z,1\n").unwrap();
    let latin = latin.display().to_string();
    let out = dir.join("latin-out");
    let stderr = run_binary_t(&latin, &out, &["--steps", "2"]);
    assert!(stderr.contains("column(s) name of"), "{stderr}");
    assert_bad(
        &latin,
        &[&BINARY_T[..], &["--features", "a,name"]].concat(),
        &["row 1 (line 2)", "column \"name\"", "is not a number"],
    );
    // a column left out of the default features is said on stderr, not only in config.json
    let f = write(&dir, "text.csv", &format!("a,name,t\n{}", rows.replace(',', ",x,")));
    let out = dir.join("text-out");
    let stderr = run_binary_t(&f, &out, &["--steps", "2"]);
    assert!(stderr.contains("column(s) name of"), "{stderr}");
    assert_eq!(summary(&out)["tabular"]["features"], serde_json::json!(["a"]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_report_says_the_schedule_in_words() {
    let dir = tmp("schedule");
    let f = write(&dir, "ok.csv", "a,t\n1,0\n2,1\n3,0\n4,1\n");
    let out = dir.join("out");
    run_binary_t(&f, &out, &["--steps", "5", "--schedule", "cosine", "--warmup", "2"]);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    // it was Rust's Debug form: "schedule WarmupCosine { warmup: 2, t_max: 5, eta_min: 0.0 }"
    assert!(html.contains("linear warm-up over 2 updates, then cosine to 0 at update 5"));
    assert!(!html.contains("WarmupCosine"));
    let _ = std::fs::remove_dir_all(&dir);
}
