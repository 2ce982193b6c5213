//! # trainer
//!
//! The mini training framework and the experiments of the loss workspace, and the reference-case
//! runner shared by the CLI (`trainer cases DIR...`) and the test suite.

pub mod cases;
pub mod experiments;
pub mod registry;
