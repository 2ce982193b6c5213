//! The training library: the fit loop, optimizers and schedules, checkpoints, models, metrics,
//! seeded random streams and atomic records. Depends on nothing of `experiments/` or `cli/`.

pub mod checkpoint;
pub mod fit;
pub mod im2col;
pub mod metrics;
pub mod models;
pub mod optim;
pub mod records;
pub mod rng;
