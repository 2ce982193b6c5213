//! Checkpoints with a real child process: a run killed with SIGKILL at a random (seeded) moment
//! after its first checkpoint, then resumed with `--resume`, gives the same records, byte for
//! byte, as an uninterrupted run with the same seed, and no half-written or temporary file.

use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STEPS: &str = "300";
const EVERY: &str = "30";

fn args(out: &Path, resume: bool) -> Vec<String> {
    let mut a: Vec<String> = [
        "run",
        "regression",
        "--losses",
        "mse",
        "--steps",
        STEPS,
        "--checkpoint-every",
        EVERY,
        "--seed",
        "5",
        "--quiet",
        "--no-timings",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(out.display().to_string());
    if resume {
        a.push("--resume".into());
    }
    a
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("trainer-resume-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn is_temp(p: &Path) -> bool {
    let name = p.file_name().unwrap().to_string_lossy();
    name.starts_with('.') && (name.contains(".tmp-") || name.contains(".write-probe-"))
}

/// Every finished file under `dir` is whole: JSON parses, checkpoints and weights load.
fn assert_whole(dir: &Path, allow_temps: bool) {
    for p in files(dir) {
        if is_temp(&p) {
            assert!(allow_temps, "temporary file left: {}", p.display());
            continue;
        }
        let ext = p
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        match ext.as_str() {
            "json" => {
                let bytes = std::fs::read(&p).unwrap();
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .unwrap_or_else(|e| panic!("{} does not parse: {e}", p.display()));
            }
            "safetensors" if p.parent().is_some_and(|d| d.ends_with("checkpoints")) => {
                trainer::checkpoint::load(&p).unwrap_or_else(|e| panic!("{e:#}"));
            }
            "safetensors" => {
                candle_core::safetensors::load(&p, &candle_core::Device::Cpu)
                    .unwrap_or_else(|e| panic!("{} does not load: {e}", p.display()));
            }
            _ => {}
        }
    }
}

fn has_checkpoint(out: &Path) -> bool {
    !trainer::checkpoint::find_all(out).is_empty()
}

/// Starts the run and kills it `delay` after its first checkpoint appears (or lets it finish
/// when it is faster). Returns whether it was killed.
fn run_and_kill(out: &Path, resume: bool, delay: Duration) -> bool {
    let before = trainer::checkpoint::find_all(out);
    let mut child = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args(out, resume))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start trainer");
    let start = Instant::now();
    // wait for a (new) checkpoint
    while start.elapsed() < Duration::from_secs(120) {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        let now = trainer::checkpoint::find_all(out);
        if has_checkpoint(out) && (now != before || resume) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(delay);
    if child.try_wait().unwrap().is_some() {
        return false;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    true
}

#[test]
fn killed_and_resumed_run_matches_an_uninterrupted_one() {
    let reference = tmp("reference");
    let status = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args(&reference, false))
        .status()
        .unwrap();
    assert!(status.success());
    assert_whole(&reference, false);

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2024);
    let out = tmp("killed");
    let mut kills = 0;
    for round in 0..2 {
        let delay = Duration::from_millis(rng.gen_range(0..400));
        if run_and_kill(&out, round > 0, delay) {
            kills += 1;
            // whatever was on disk at the kill is whole; only temporary files may be partial
            assert_whole(&out, true);
            assert!(has_checkpoint(&out), "a checkpoint exists after the kill");
        }
    }
    eprintln!("killed {kills} time(s)");
    assert!(kills >= 1, "the run was never interrupted");
    let resumed = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args(&out, true))
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_whole(&out, false);
    for name in [
        "summary.json",
        "regression/metrics.csv",
        "regression/config.json",
        "report.html",
    ] {
        let a = std::fs::read(reference.join(name)).unwrap();
        let b = std::fs::read(out.join(name)).unwrap();
        assert!(a == b, "{name} differs after kill + resume");
    }
    let w =
        |d: &Path| candle_core::safetensors::load(d.join("regression/weights.safetensors"), &candle_core::Device::Cpu);
    let (wa, wb) = (w(&reference).unwrap(), w(&out).unwrap());
    assert_eq!(wa.len(), wb.len());
    for (k, a) in &wa {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = wb[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{k} differs");
    }
    let _ = std::fs::remove_dir_all(&reference);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn resuming_a_finished_run_redoes_nothing_and_changes_nothing() {
    let out = tmp("finished");
    let first = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args(&out, false))
        .status()
        .unwrap();
    assert!(first.success());
    let summary = std::fs::read(out.join("summary.json")).unwrap();
    let checkpoints: Vec<(PathBuf, Vec<u8>)> = trainer::checkpoint::find_all(&out)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    for (p, _) in &checkpoints {
        let s = trainer::checkpoint::load(p).unwrap();
        assert!(s.done, "{} is not marked done", p.display());
        assert_eq!(s.step, s.rows.last().unwrap().0);
    }
    let again = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args(&out, true))
        .status()
        .unwrap();
    assert!(again.success());
    assert_eq!(std::fs::read(out.join("summary.json")).unwrap(), summary);
    for (p, b) in &checkpoints {
        assert_eq!(&std::fs::read(p).unwrap(), b, "{} rewritten", p.display());
    }
    let _ = std::fs::remove_dir_all(&out);
}
