//! Every reference case in the repository's `cases/` (and `LOSS_CASES_DIR` when set) must pass.
//!
//! Every case's loss must exist: a case whose loss no crate implements is listed as skipped and
//! fails the test, as does any failed case.
#![cfg(feature = "cli")]

use std::path::PathBuf;
use trainer::cases::{default_dirs, run_dirs};

fn case_dirs() -> Vec<PathBuf> {
    default_dirs()
}

#[test]
fn reference_cases_pass() {
    let dirs = case_dirs();
    assert!(dirs[0].is_dir(), "reference cases not found at {}", dirs[0].display());
    let report = run_dirs(&dirs, &candle_core::Device::Cpu).expect("case files load");
    for (id, msg) in &report.failed {
        eprintln!("FAIL {id}: {msg}");
    }
    for (id, loss) in &report.skipped {
        eprintln!("SKIP {id}: {loss} is not implemented");
    }
    eprintln!("{}", report.summary());
    assert!(report.passed > 0, "no case ran");
    assert!(
        report.skipped.is_empty(),
        "{} reference cases skipped",
        report.skipped.len()
    );
    assert!(
        report.failed.is_empty(),
        "{} reference cases failed",
        report.failed.len()
    );
}

/// The same cases through the composite (any-device) path of every primitive and fused kernel,
/// as CUDA and Metal run them.
#[test]
fn reference_cases_pass_on_the_composite_path() {
    let dirs = case_dirs();
    let report = loss_core::kernel::with_path(loss_core::kernel::Path::Composite, || {
        run_dirs(&dirs, &candle_core::Device::Cpu)
    })
    .expect("case files load");
    for (id, msg) in &report.failed {
        eprintln!("FAIL (composite) {id}: {msg}");
    }
    eprintln!("composite {}", report.summary());
    assert!(
        report.failed.is_empty(),
        "{} reference cases failed on the composite path",
        report.failed.len()
    );
}
