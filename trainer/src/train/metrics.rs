//! Evaluation metrics, computed on the host in f64, with scikit-learn's definitions.
//!
//! Binary metrics take labels as `bool` (true = positive) and scores where larger means more
//! positive (logits or probabilities: AP and ROC-AUC only use their order).

use serde::Serialize;

/// Mean and sample standard deviation (divisor n − 1) of a set of values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanStd {
    /// The mean (NaN for no values; serialised as `null`).
    pub mean: f64,
    /// The sample standard deviation (NaN for fewer than two values; serialised as `null`).
    pub std: f64,
}

/// Mean and sample standard deviation (n − 1) of `values`.
///
/// ```
/// let s = trainer::metrics::mean_std(&[1.0, 2.0, 3.0, 4.0]);
/// assert_eq!(s.mean, 2.5);
/// assert!((s.std - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
/// ```
pub fn mean_std(values: &[f64]) -> MeanStd {
    let n = values.len() as f64;
    if values.is_empty() {
        return MeanStd {
            mean: f64::NAN,
            std: f64::NAN,
        };
    }
    let mean = values.iter().sum::<f64>() / n;
    let std = if values.len() < 2 {
        f64::NAN
    } else {
        (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0)).sqrt()
    };
    MeanStd { mean, std }
}

/// Mean absolute error `mean |p − y|`.
pub fn mae(pred: &[f64], y: &[f64]) -> f64 {
    mean(pred.iter().zip(y).map(|(p, y)| (p - y).abs()), pred.len())
}

/// Root mean squared error `√(mean (p − y)²)`.
pub fn rmse(pred: &[f64], y: &[f64]) -> f64 {
    mean(pred.iter().zip(y).map(|(p, y)| (p - y) * (p - y)), pred.len()).sqrt()
}

/// Bias `mean (p − y)`: positive when the predictions are too high.
pub fn bias(pred: &[f64], y: &[f64]) -> f64 {
    mean(pred.iter().zip(y).map(|(p, y)| p - y), pred.len())
}

fn mean(it: impl Iterator<Item = f64>, n: usize) -> f64 {
    if n == 0 {
        f64::NAN
    } else {
        it.sum::<f64>() / n as f64
    }
}

/// Indices sorted by decreasing score (stable: ties keep row order).
fn by_score_desc(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

/// Average precision, `Σₖ (Rₖ − Rₖ₋₁) Pₖ` over the distinct score thresholds in decreasing
/// order (`sklearn.metrics.average_precision_score`: no interpolation, tied scores form one
/// threshold). NaN when there is no positive.
///
/// ```
/// // scores 0.9 (pos), 0.8 (neg), 0.7 (pos): P@1 = 1, P@3 = 2/3 → AP = ½·1 + ½·⅔
/// let ap = trainer::metrics::average_precision(&[0.9, 0.8, 0.7], &[true, false, true]);
/// assert!((ap - 5.0 / 6.0).abs() < 1e-15);
/// ```
pub fn average_precision(scores: &[f64], labels: &[bool]) -> f64 {
    let pos = labels.iter().filter(|&&l| l).count();
    if pos == 0 {
        return f64::NAN;
    }
    let idx = by_score_desc(scores);
    let (mut tp, mut fp, mut ap, mut prev_recall) = (0usize, 0usize, 0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let s = scores[idx[i]];
        while i < idx.len() && scores[idx[i]] == s {
            if labels[idx[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let recall = tp as f64 / pos as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    ap
}

/// Area under the ROC curve: the probability that a random positive scores above a random
/// negative, ties counting ½ (Mann–Whitney U / (P·N), equal to
/// `sklearn.metrics.roc_auc_score`). NaN when either class is absent.
///
/// ```
/// // pairs (pos, neg): (0.9, 0.8) ✓, (0.7, 0.8) ✗, (0.8 tie) ½ → with a tie at 0.8
/// let auc = trainer::metrics::roc_auc(&[0.9, 0.8, 0.7, 0.8], &[true, false, true, true]);
/// assert!((auc - 1.5 / 3.0).abs() < 1e-15);
/// ```
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let pos = labels.iter().filter(|&&l| l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return f64::NAN;
    }
    // average ranks (1-based, ascending), ties share their mean rank
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j < idx.len() && scores[idx[j]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum_pos += avg_rank * idx[i..j].iter().filter(|&&r| labels[r]).count() as f64;
        i = j;
    }
    (rank_sum_pos - (pos * (pos + 1)) as f64 / 2.0) / (pos as f64 * neg as f64)
}

/// Counts of a binary decision: predicted positive where `score >= threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Confusion {
    /// True positives.
    pub tp: usize,
    /// False positives.
    pub fp: usize,
    /// True negatives.
    pub tn: usize,
    /// False negatives.
    pub fn_: usize,
}

impl Confusion {
    /// Counts the decisions `score >= threshold` against `labels`.
    pub fn at(scores: &[f64], labels: &[bool], threshold: f64) -> Self {
        let mut c = Self::default();
        for (&s, &l) in scores.iter().zip(labels) {
            match (s >= threshold, l) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.fn_ += 1,
            }
        }
        c
    }

    /// Recall (TPR) `tp / (tp + fn)`; 0 when there is no positive (scikit-learn's zero_division).
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// Precision `tp / (tp + fp)`; 0 when nothing is predicted positive.
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// F1 `2tp / (2tp + fp + fn)`; 0 when the denominator is 0.
    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }

    /// Balanced accuracy `(TPR + TNR) / 2`.
    pub fn balanced_accuracy(&self) -> f64 {
        (ratio(self.tp, self.tp + self.fn_) + ratio(self.tn, self.tn + self.fp)) / 2.0
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Share of predictions equal to the label.
pub fn accuracy(pred: &[usize], labels: &[usize]) -> f64 {
    ratio(pred.iter().zip(labels).filter(|(p, l)| p == l).count(), labels.len())
}

/// Mean over the classes present in `labels` of each class's recall
/// (`sklearn.metrics.balanced_accuracy_score`).
///
/// ```
/// // class 0: 2 of 2 right, class 1: 1 of 2 right → (1 + ½) / 2
/// let b = trainer::metrics::balanced_accuracy(&[0, 0, 1, 0], &[0, 0, 1, 1]);
/// assert_eq!(b, 0.75);
/// ```
pub fn balanced_accuracy(pred: &[usize], labels: &[usize]) -> f64 {
    let mut classes: Vec<usize> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    if classes.is_empty() {
        return f64::NAN;
    }
    let recalls: f64 = classes
        .iter()
        .map(|&c| {
            let n = labels.iter().filter(|&&l| l == c).count();
            let hit = pred.iter().zip(labels).filter(|(&p, &l)| l == c && p == c).count();
            ratio(hit, n)
        })
        .sum();
    recalls / classes.len() as f64
}

/// Dice coefficient `2|P ∩ G| / (|P| + |G|)` of two masks; 1 when both are empty.
///
/// ```
/// let d = trainer::metrics::dice(&[true, true, false, false], &[true, false, true, false]);
/// assert_eq!(d, 0.5);
/// ```
pub fn dice(pred: &[bool], truth: &[bool]) -> f64 {
    let (inter, p, g) = overlap(pred, truth);
    if p + g == 0 {
        1.0
    } else {
        2.0 * inter as f64 / (p + g) as f64
    }
}

/// Intersection over union `|P ∩ G| / |P ∪ G|` of two masks; 1 when both are empty.
///
/// ```
/// let j = trainer::metrics::iou(&[true, true, false, false], &[true, false, true, false]);
/// assert!((j - 1.0 / 3.0).abs() < 1e-15);
/// ```
pub fn iou(pred: &[bool], truth: &[bool]) -> f64 {
    let (inter, p, g) = overlap(pred, truth);
    let union = p + g - inter;
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

fn overlap(pred: &[bool], truth: &[bool]) -> (usize, usize, usize) {
    let inter = pred.iter().zip(truth).filter(|(&p, &g)| p && g).count();
    (
        inter,
        pred.iter().filter(|&&p| p).count(),
        truth.iter().filter(|&&g| g).count(),
    )
}
