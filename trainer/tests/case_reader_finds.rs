//! Inputs that broke the case-file reader, found while fuzzing it (`cargo fuzz run case_file`, see
//! `fuzz/`) and kept as regression tests: each must give a failed case with a message, never a
//! panic.
#![cfg(feature = "cli")]

use candle_core::Device;
use trainer::cases::{load_file, run_case, Outcome};

fn run(json: &str) -> Vec<Outcome> {
    let path = std::env::temp_dir().join(format!("case-reader-finds-{}.json", std::process::id()));
    std::fs::write(&path, json).unwrap();
    let cases = load_file(&path).unwrap();
    std::fs::remove_file(&path).ok();
    cases.iter().map(|c| run_case(c, &Device::Cpu)).collect()
}

/// A shape whose element count overflows `usize`: the product panicked under overflow checks
/// (and wrapped to 0 without them, giving a `[2^32, 2^32]` tensor of no element).
#[test]
fn a_shape_too_large_to_count_is_an_error() {
    let json = r#"[{"id": "overflow", "loss": "mse_loss", "params": {},
        "inputs": {"input": {"shape": [4294967296, 4294967296], "data": []},
                   "target": {"shape": [4294967296, 4294967296], "data": []}},
        "expected": {"shape": [], "data": [0]}}]"#;
    match &run(json)[..] {
        [Outcome::Fail(msg)] => {
            assert!(!msg.contains("panicked"), "{msg}");
            assert!(msg.contains("more elements than fit"), "{msg}");
        }
        other => panic!("expected one failed case, got {other:?}"),
    }
}
