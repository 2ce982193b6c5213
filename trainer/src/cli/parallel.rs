//! Independent training runs in parallel, with results in input order (so the records do not
//! depend on the number of threads).
//!
//! The runs share one pool of `TRAINER_THREADS` threads (default: the available cores), apart
//! from Rayon's global pool. Candle's own per-op parallelism is meant to be off
//! (`RAYON_NUM_THREADS=1`, which the `trainer` binary sets, after sizing Rayon's global pool,
//! unless the variable is already set): the models here are small, so one run per core is
//! faster than splitting each small op across cores.

use rayon::prelude::*;
use std::sync::OnceLock;

/// Number of threads of the run pool: `TRAINER_THREADS` if set to a positive integer, else the
/// available parallelism.
pub fn threads() -> usize {
    std::env::var("TRAINER_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = threads();
        (n > 1)
            .then(|| rayon::ThreadPoolBuilder::new().num_threads(n).build().ok())
            .flatten()
    })
    .as_ref()
}

/// `items.map(f)`, the calls spread over the run pool, the results in the order of `items`.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    match pool() {
        Some(p) => p.install(|| items.par_iter().map(&f).collect()),
        None => items.iter().map(f).collect(),
    }
}
