//! Process-wide tuning of the `trainer` binary: Rayon's global pool, Candle's CPU threads and
//! the allocator, set once by [`init`] at the start of `main`, before any thread pool exists
//! (environment variables are read by Candle and Rayon when their pools start, and changing
//! them while other threads run is a data race).
//!
//! - [`Workload::Runs`] (experiments, reference cases): Rayon's global pool (the fused kernels'
//!   and the box simulation's data-parallel loops) gets every core, and `RAYON_NUM_THREADS=1`
//!   turns off Candle's per-op threads: the training runs go in parallel instead
//!   ([`crate::parallel`]), which is faster for small models, and Candle no longer looks up the
//!   CPU topology on every matmul. A `RAYON_NUM_THREADS` set by the user is left as it is.
//! - [`Workload::Bench`]: Rayon's global pool and Candle's per-op threads both get the chosen
//!   number of threads, and Candle's pool parks after a short spin
//!   (`CANDLE_BARRIER_POOL_SPIN_LIMIT=100` unless set): its default 25,000 spin rounds take the
//!   cores from the loss kernels (on 2 cores that doubled the median of the 1e5-element
//!   workloads).
//! - Both: glibc's malloc keeps freed memory instead of returning it to the kernel eagerly,
//!   which made every training step page-fault it back in (most of the run time with small
//!   models).

/// What the process is about to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Experiments or reference cases: many small runs in parallel.
    Runs,
    /// `trainer bench` with this many threads (at least 1).
    Bench {
        /// Threads of Rayon's pool and of Candle's per-op parallelism.
        threads: usize,
    },
}

/// Sets the thread pools and the allocator for `workload`. Call once, first thing in `main`,
/// before any thread is started.
///
/// # Errors
/// Rayon's global pool cannot be built (already built, or the threads cannot start).
pub fn init(workload: Workload) -> anyhow::Result<()> {
    tune_allocator();
    match workload {
        Workload::Runs => {
            if std::env::var_os("RAYON_NUM_THREADS").is_none() {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                build_global_pool(cores)?;
                std::env::set_var("RAYON_NUM_THREADS", "1");
            }
        }
        Workload::Bench { threads } => {
            anyhow::ensure!(threads >= 1, "--threads must be at least 1");
            std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
            if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
                std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "100");
            }
            build_global_pool(threads)?;
        }
    }
    Ok(())
}

/// Runs `f` on a worker thread of Rayon's global pool, the calling thread waiting (what
/// `ThreadPool::install` does for a local pool). `trainer bench` times its workloads this way, as
/// the training runs are timed on the run pool's workers: a kernel's parallel loop then has the
/// calling thread as one of its workers instead of waking every worker from outside the pool (on
/// 2 cores, 1e5-element fused workloads measured 15-45 % slower from the main thread), and the
/// timed code allocates from a worker's malloc arena as a training run does (composite workloads
/// with large temporaries measured up to 3x slower from the main thread's arena).
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

fn build_global_pool(threads: usize) -> anyhow::Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| anyhow::anyhow!("cannot start {threads} threads: {e}"))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator tunables; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}
