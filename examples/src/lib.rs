//! Runnable examples of the loss workspace, in `examples/examples/`:
//!
//! - `quickstart` — a linear regression with outliers, trained with loss-core's MSE, L1, Smooth
//!   L1 and Huber losses in a plain Candle loop (`cargo run -p examples --example quickstart`);
//! - `box_head` — a tiny box-regression head trained with loss-bbox's CIoU loss through the
//!   trainer's `fit`;
//! - `segmentation` — Dice-loss steps on a small mask with loss-seg;
//! - `custom_loop` — a hand-written training loop with the trainer library's optimizer,
//!   schedule, clipping, mini-batches, metrics, plot and records.
