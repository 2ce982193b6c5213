//! # trainer
//!
//! The mini training framework and the experiments of the loss workspace, and the reference-case
//! runner shared by the CLI (`trainer cases DIR...`) and the test suite.
//!
//! - [`fit`]: the training loop (any Candle model, any [`loss_core::Loss`]), with the
//!   optimizers, schedules and clipping of [`optim`], seeded through [`rng`];
//! - [`models`]: small models with seeded initial weights; [`data`]: data sets and folds;
//! - [`metrics`]: AP, ROC-AUC, recall, precision, F1, balanced accuracy, Dice, IoU, ...;
//! - [`experiments`]: the four convergence experiments; [`runner`]: runs them and writes
//!   [`records`], [`plot`]s and the [`report`]; [`checkpoint`]: checkpoints and resumption.

pub mod bench;
pub mod cases;
pub mod checkpoint;
pub mod data;
pub mod experiments;
pub mod fit;
pub mod im2col;
pub mod metrics;
pub mod models;
pub mod optim;
pub mod parallel;
pub mod plot;
pub mod progress;
pub mod records;
pub mod registry;
pub mod report;
pub mod rng;
pub mod runner;
