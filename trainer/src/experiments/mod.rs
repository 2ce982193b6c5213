//! The convergence experiments: each compares loss variants on the same data, split and
//! initial weights.

pub mod boxes;
