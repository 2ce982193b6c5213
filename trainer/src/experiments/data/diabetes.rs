//! The diabetes data (Efron et al., "Least Angle Regression", 2004) as linfa-datasets ships it:
//! 441 rows as that crate returns them, 10 features, the target a measure of disease
//! progression one year after baseline.

use super::Table;

/// Loads the table from linfa-datasets (bundled in the crate; no download).
pub fn load() -> Table {
    let ds = linfa_datasets::diabetes();
    let (n, d) = ds.records.dim();
    Table {
        n,
        d,
        x: ds.records.iter().copied().collect(),
        y: ds.targets.iter().copied().collect(),
    }
}
