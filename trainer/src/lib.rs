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
//! [`progress`], [`tuning`] (thread pools and allocator of the binary), [`cases`] and
//! [`registry`] (the reference-case runner), [`bench`](mod@bench), [`options`] (the command-line
//! options of the commands that train on the user's data), and the `trainer` binary.
//!
//! ```toml
//! [dependencies]
//! trainer = { version = "0.1", default-features = false }
//! ```
//!
//! # Layout
//! The source has three parts, one folder each, while the public paths stay flat
//! (`trainer::fit`, `trainer::runner`, ...): `src/train/` is the training library above (it
//! depends on nothing of the other two parts); `src/experiments/` holds the experiments and their
//! data sets; `src/cli/` the tool around them (the runner with its parallel map, records, plots
//! and report; the reference-case runner and registry; the benchmark; the command-line options;
//! progress; the process tuning of the binary); `src/main.rs` parses arguments and maps errors to
//! exit codes.
#![warn(missing_docs)]

mod train;
pub use train::{checkpoint, fit, im2col, metrics, models, optim, records, rng};

#[cfg(feature = "cli")]
mod cli;
#[cfg(feature = "cli")]
pub use cli::{bench, cases, options, parallel, plot, progress, registry, report, runner, tuning};
#[cfg(feature = "cli")]
pub mod experiments;
#[cfg(feature = "cli")]
pub use experiments::data;

// The README's example is compiled and run with the doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;
