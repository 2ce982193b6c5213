//! # trainer
//!
//! A small training framework on Candle's tape autodiff, and (with the default `cli` feature)
//! the convergence experiments, the reference-case runner and the `trainer` command-line tool of
//! the loss workspace.
//!
//! The library part needs only candle-core, candle-nn and loss-core (and serde, rand, anyhow):
//! - [`fit`]: the training loop (any Candle model, any [`loss_core::Loss`]), with the
//!   optimizers, schedules and clipping of [`optim`], seeded through [`rng`], checkpointed and
//!   resumable through [`checkpoint`] (files written atomically by [`records`]);
//! - [`models`]: small models with seeded initial weights ([`im2col`] for their convolutions);
//! - [`metrics`]: AP, ROC-AUC, recall, precision, F1, balanced accuracy, Dice, IoU, ...
//!
//! With `default-features = false` that is all this crate builds. The `cli` feature (on by
//! default) adds [`data`] (data sets and folds), [`experiments`] (the five convergence
//! experiments), [`runner`] (runs them and writes records, [`plot`]s and the [`report`]),
//! [`progress`], [`tuning`] (thread pools and allocator of the binary), [`cases`] and [`registry`] (the reference-case runner), [`bench`](mod@bench), [`options`] (the command-line options of the commands that train on the user's data), and the
//! `trainer` binary.
//!
//! ```toml
//! [dependencies]
//! trainer = { version = "0.1", default-features = false }
//! ```
#![warn(missing_docs)]

pub mod checkpoint;
pub mod fit;
pub mod im2col;
pub mod metrics;
pub mod models;
pub mod optim;
pub mod records;
pub mod rng;

#[cfg(feature = "cli")]
pub mod bench;
#[cfg(feature = "cli")]
pub mod cases;
#[cfg(feature = "cli")]
pub mod data;
#[cfg(feature = "cli")]
pub mod experiments;
#[cfg(feature = "cli")]
pub mod options;
#[cfg(feature = "cli")]
pub mod parallel;
#[cfg(feature = "cli")]
pub mod plot;
#[cfg(feature = "cli")]
pub mod progress;
#[cfg(feature = "cli")]
pub mod registry;
#[cfg(feature = "cli")]
pub mod report;
#[cfg(feature = "cli")]
pub mod runner;
#[cfg(feature = "cli")]
pub mod tuning;

// The README's example is compiled and run with the doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;
