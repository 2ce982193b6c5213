//! The command-line tool around the experiments: the runner (parallel map, records, plots,
//! report), the reference-case runner and its registry, the benchmark, progress and the
//! process tuning of the binary.

pub mod bench;
pub mod cases;
pub mod options;
pub mod parallel;
pub mod plot;
pub mod progress;
pub mod registry;
pub mod report;
pub mod runner;
pub mod tuning;
