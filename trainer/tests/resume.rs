//! Checkpoints with a real child process: a run killed with SIGKILL at a random (seeded) moment
//! after its first checkpoint, then resumed with `--resume`, gives the same records, byte for
//! byte, as an uninterrupted run with the same seed, and no half-written or temporary file.
#![cfg(feature = "cli")]

mod common;

use common::files;
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

/// The run of [`args`] into `out`, to its end; it must succeed.
fn run_to_end(out: &Path, resume: bool) {
    let o = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args(out, resume))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("trainer-resume-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
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
    run_to_end(&reference, false);
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
    run_to_end(&out, true);
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
    run_to_end(&out, false);
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
    run_to_end(&out, true);
    assert_eq!(std::fs::read(out.join("summary.json")).unwrap(), summary);
    for (p, b) in &checkpoints {
        assert_eq!(&std::fs::read(p).unwrap(), b, "{} rewritten", p.display());
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// The report, the logged rows and the final weights of [`line_run`].
type LineRun = (trainer::fit::FitReport, Vec<trainer::fit::LogRow>, Vec<Vec<f64>>);

/// One run of an MLP on a line with mini-batches (seeded batcher), SGD with Nesterov momentum
/// and a step schedule, checkpointed every 3 updates; `crash_at`: `on_log` fails there, as a
/// crash would, after the checkpoint of that step is written.
fn line_run(dir: &Path, resume: bool, crash_at: Option<usize>) -> Result<LineRun, trainer::fit::FitError> {
    use candle_core::{DType, Device, Tensor};
    use trainer::fit::{fit_resumable, FitConfig, FitRun};
    use trainer::optim::{sorted_params, OptimizerConfig, Schedule};
    let x: Vec<f64> = (0..20).map(|i| f64::from(i) / 10.0 - 1.0).collect();
    let y: Vec<f64> = x.iter().map(|v| (3.0 * v).sin()).collect();
    let x = Tensor::from_vec(x, (20, 1), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(y, (20, 1), &Device::Cpu).unwrap();
    let varmap = candle_nn::VarMap::new();
    let mut rng = trainer::rng::stream(9, &["line"]);
    let m = trainer::models::Mlp::new(&varmap, "mlp", 1, 8, 1, &mut rng, DType::F64, &Device::Cpu).unwrap();
    let cfg = FitConfig {
        steps: 20,
        lr: 0.05,
        optimizer: OptimizerConfig::sgd(0.9, true),
        schedule: Schedule::Step {
            step_size: 7,
            gamma: 0.5,
        },
        clip_norm: Some(1.0),
        batch_size: Some(6),
        log_every: 2,
        seed: 4,
        ..FitConfig::default()
    };
    let plan = trainer::checkpoint::Plan {
        dir: dir.to_path_buf(),
        every: Some(3),
        resume,
    };
    let mut on_log = |t: usize, l: f64| -> candle_core::Result<Vec<f64>> {
        if Some(t) == crash_at {
            return Err(candle_core::Error::Msg("simulated crash".into()));
        }
        Ok(vec![l * 2.0, t as f64])
    };
    let loss = loss_core::MseLoss::default();
    let run = FitRun::new(&m, &varmap, &loss, &x, &y, &cfg).with_label("line");
    let (report, rows) = fit_resumable(run, &mut on_log, Some(&plan))?;
    let weights = sorted_params(&varmap)
        .iter()
        .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap())
        .collect();
    Ok((report, rows, weights))
}

#[test]
fn an_interrupted_mini_batch_fit_resumes_bit_for_bit() {
    let whole_dir = tmp("line-whole");
    let (report, rows, weights) = line_run(&whole_dir, false, None).unwrap();
    for crash in [4, 10, 18] {
        let dir = tmp(&format!("line-crash{crash}"));
        assert!(line_run(&dir, false, Some(crash)).is_err());
        let plan = trainer::checkpoint::Plan {
            dir: dir.clone(),
            every: Some(3),
            resume: true,
        };
        let state = trainer::checkpoint::load(&plan.path("line")).unwrap();
        assert!(!state.done);
        assert_eq!(state.step, crash / 3 * 3, "the last checkpoint before the crash");
        assert!(state.batcher.is_some());
        let files = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(files, 1, "one checkpoint file per run, no temporary file");
        let (r2, rows2, w2) = line_run(&dir, true, None).unwrap();
        assert_eq!(r2.final_loss.to_bits(), report.final_loss.to_bits(), "crash at {crash}");
        assert_eq!(r2.history, report.history, "crash at {crash}");
        assert_eq!(rows2, rows, "crash at {crash}");
        assert_eq!(w2, weights, "crash at {crash}");
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&whole_dir);
}

#[test]
fn a_checkpoint_of_other_settings_or_a_corrupt_one_is_refused() {
    let dir = tmp("line-refused");
    line_run(&dir, false, None).unwrap();
    let file = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    // other settings: the same file under another run's name
    let plan = trainer::checkpoint::Plan {
        dir: dir.clone(),
        every: Some(3),
        resume: true,
    };
    assert_eq!(plan.path("line"), file);
    let mut state = trainer::checkpoint::load(&file).unwrap();
    state.fingerprint.push('x');
    trainer::checkpoint::save(&file, &state).unwrap();
    let e = line_run(&dir, true, None).unwrap_err().to_string();
    assert!(e.contains("other settings"), "{e}");
    // truncated file
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let e = format!("{:#}", trainer::checkpoint::load(&file).unwrap_err());
    assert!(e.contains("corrupt checkpoint"), "{e}");
    assert!(line_run(&dir, true, None).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Plain SGD past its stability limit on a line, in f32: the loss grows geometrically until it
/// overflows.
fn diverging_run(dir: &Path, resume: bool) -> Result<trainer::fit::FitReport, trainer::fit::FitError> {
    use candle_core::{DType, Device, Tensor};
    use trainer::fit::{fit_resumable, FitConfig, FitRun};
    use trainer::optim::{OptimizerConfig, Schedule};
    let x: Vec<f32> = (0..16).map(|i| i as f32 / 8.0 - 1.0).collect();
    let y: Vec<f32> = x.iter().map(|v| 2.0 * v + 0.5).collect();
    let x = Tensor::from_vec(x, (16, 1), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(y, (16, 1), &Device::Cpu).unwrap();
    let varmap = candle_nn::VarMap::new();
    let mut rng = trainer::rng::stream(0, &["diverge"]);
    let m = trainer::models::Linear::new(
        &varmap,
        "l",
        1,
        1,
        trainer::models::Init::Zeros,
        &mut rng,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let cfg = FitConfig {
        steps: 1000,
        lr: 5.0,
        optimizer: OptimizerConfig::sgd(0.0, false),
        schedule: Schedule::Constant,
        clip_norm: None,
        batch_size: None,
        log_every: 5,
        seed: 77,
        ..FitConfig::default()
    };
    let plan = trainer::checkpoint::Plan {
        dir: dir.to_path_buf(),
        every: Some(10),
        resume,
    };
    let loss = loss_core::MseLoss::default();
    let run = FitRun::new(&m, &varmap, &loss, &x, &y, &cfg).with_label("diverging");
    fit_resumable(run, &mut |_, _| Ok(Vec::new()), Some(&plan)).map(|(r, _)| r)
}

#[test]
fn a_diverging_run_names_step_loss_and_seed_and_keeps_its_last_good_checkpoint() {
    let dir = tmp("diverging");
    let e = diverging_run(&dir, false).unwrap_err();
    let trainer::fit::FitError::NonFinite {
        step, seed, ref loss, ..
    } = e
    else {
        panic!("expected a non-finite loss, got {e}");
    };
    assert_eq!(seed, 77);
    assert_eq!(loss, "mse_loss");
    assert!(step > 10 && step < 1000, "diverged at step {step}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("step {step}")) && msg.contains("seed 77") && msg.contains("mse_loss"),
        "{msg}"
    );
    let files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let state = trainer::checkpoint::load(&files[0]).unwrap();
    assert!(!state.done);
    assert_eq!(
        state.step,
        (step - 1) / 10 * 10,
        "the last checkpoint before step {step}"
    );
    assert!(
        state.rows.iter().all(|r| r.1.is_finite()),
        "only finite losses were logged"
    );
    for (_, t) in &state.params {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "the checkpoint holds good weights");
    }
    // resuming from it diverges again, at the same step
    let e2 = diverging_run(&dir, true).unwrap_err();
    assert_eq!(e2.to_string(), msg);
    let _ = std::fs::remove_dir_all(&dir);
}
