//! The red wine quality data (Cortez et al., "Modeling wine preferences by data mining from
//! physicochemical properties", Decision Support Systems 2009) as linfa-datasets ships it:
//! 1,599 red wines, 11 physico-chemical features, quality 3–8.

use super::Table;

/// Loads the table (targets: the quality score as f64) from linfa-datasets (bundled, no download).
pub fn load() -> Table {
    let ds = linfa_datasets::winequality();
    let (n, d) = ds.records.dim();
    Table {
        n,
        d,
        x: ds.records.iter().copied().collect(),
        y: ds.targets.iter().map(|&q| q as f64).collect(),
    }
}
