//! Fold assignment and the outlier rows of the regression experiment.

/// Row j goes to fold `j mod k` (the regression experiment's rule).
///
/// ```
/// assert_eq!(trainer::data::folds::by_position(7, 5), vec![0, 1, 2, 3, 4, 0, 1]);
/// ```
pub fn by_position(n: usize, k: usize) -> Vec<usize> {
    (0..n).map(|j| j % k.max(1)).collect()
}

/// Stratified folds: within each class, in row order, the j-th row of that class goes to fold
/// `j mod k` (the imbalanced experiment's rule).
///
/// ```
/// // classes 0 1 0 0 1 0  → within class 0 the rows are 0, 2, 3, 5; within class 1: 1, 4
/// assert_eq!(trainer::data::folds::stratified(&[0, 1, 0, 0, 1, 0], 2), vec![0, 0, 1, 0, 1, 1]);
/// ```
pub fn stratified(labels: &[usize], k: usize) -> Vec<usize> {
    let k = k.max(1);
    let mut seen: std::collections::BTreeMap<usize, usize> = std::collections::BTreeMap::new();
    labels
        .iter()
        .map(|&c| {
            let j = seen.entry(c).or_insert(0);
            let fold = *j % k;
            *j += 1;
            fold
        })
        .collect()
}

/// The training rows (fold ≠ `test`) and the test rows (fold = `test`), each in row order.
pub fn split(folds: &[usize], test: usize) -> (Vec<usize>, Vec<usize>) {
    (0..folds.len()).partition(|&r| folds[r] != test)
}

/// The positions i (0-based, within the training fold in row order) with `i mod every == 0`:
/// the rows whose target gets the outlier shift in the regression experiment.
///
/// ```
/// assert_eq!(trainer::data::folds::outlier_positions(25, 10), vec![0, 10, 20]);
/// ```
pub fn outlier_positions(n_train: usize, every: usize) -> Vec<usize> {
    (0..n_train).step_by(every.max(1)).collect()
}
