//! The reference-case reader on arbitrary bytes: `trainer::cases::load_file` must return `Ok`
//! or `Err`, never panic; every case it accepts then runs through `trainer::cases::run_case`
//! (which turns a loss's panic into a failed case; libfuzzer-sys aborts on the panic itself, so
//! that is a find too).
#![no_main]

use candle_core::Device;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

/// One scratch file per fuzzing process.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("loss-fuzz-case-{}.json", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    std::fs::write(path, data).expect("writing the scratch case file");
    if let Ok(cases) = trainer::cases::load_file(path) {
        for case in &cases {
            let _ = trainer::cases::run_case(case, &Device::Cpu);
        }
    }
});
