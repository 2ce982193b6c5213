//! The sentence under a results table: which loss won on each metric, and by how much against
//! the spread over folds.

use crate::metrics::MeanStd;
use std::fmt::Write as _;

/// Whether a lower value of metric `name` is better (errors: MAE, RMSE, losses), a value
/// nearer 0 (`bias`), or a higher one (every score).
fn better(name: &str, a: f64, b: f64) -> bool {
    let name = name.to_ascii_lowercase();
    if name.contains("bias") {
        a.abs() < b.abs()
    } else if ["mae", "rmse", "loss", "error"].iter().any(|k| name.contains(k)) {
        a < b
    } else {
        a > b
    }
}

/// One sentence: for each metric (column k of every loss's stats), the loss with the best mean,
/// its margin over the runner-up and whether that margin is larger than the spread over folds
/// (the larger sample std of the two) over the repeats named by `over` (`"folds"`, `"seeds"`).
/// Metrics without a finite mean are left out.
///
/// ```
/// use trainer::experiments::verdict;
/// use trainer::metrics::MeanStd;
/// let s = |mean, std| MeanStd { mean, std };
/// let rows = vec![
///     ("ce".to_string(), vec![s(0.60, 0.05), s(0.30, 0.01)]),
///     ("focal".to_string(), vec![s(0.62, 0.04), s(0.20, 0.01)]),
/// ];
/// let v = verdict(&["ap", "rmse"], &rows, "folds");
/// assert_eq!(
///     v,
///     "Best loss per metric: ap focal (0.620) by 0.020 over ce, within the spread over folds (std 0.050); \
///      rmse focal (0.200) by 0.100 over ce, more than the spread over folds (std 0.010)."
/// );
/// ```
pub fn verdict(metrics: &[&str], rows: &[(String, Vec<MeanStd>)], over: &str) -> String {
    let mut parts = Vec::new();
    for (k, name) in metrics.iter().enumerate() {
        let mut ranked: Vec<(&str, MeanStd)> = rows
            .iter()
            .filter_map(|(l, s)| s.get(k).map(|m| (l.as_str(), *m)))
            .filter(|(_, m)| m.mean.is_finite())
            .collect();
        if ranked.is_empty() {
            continue;
        }
        // stable: among equal means the first loss listed wins
        ranked.sort_by(|a, b| {
            if better(name, a.1.mean, b.1.mean) {
                std::cmp::Ordering::Less
            } else if better(name, b.1.mean, a.1.mean) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        let (best, m) = ranked[0];
        let mut p = format!("{name} {best} ({:.3})", m.mean);
        if let Some(&(second, m2)) = ranked.get(1) {
            let margin = (m.mean - m2.mean).abs();
            let spread = [m.std, m2.std]
                .into_iter()
                .filter(|s| s.is_finite())
                .fold(f64::NAN, f64::max);
            let _ = write!(p, " by {margin:.3} over {second}");
            if spread.is_finite() {
                let word = if margin > spread { "more than" } else { "within" };
                let _ = write!(p, ", {word} the spread over {over} (std {spread:.3})");
            }
        }
        parts.push(p);
    }
    if parts.is_empty() {
        "No metric has a finite value: every run failed.".to_string()
    } else {
        format!("Best loss per metric: {}.", parts.join("; "))
    }
}
