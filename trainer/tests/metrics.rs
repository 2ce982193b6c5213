//! Metric definitions against hand-computed values.

use trainer::metrics::{self, mean_std, Confusion};

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} != {b}");
}

#[test]
fn mean_and_sample_std() {
    let s = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
    close(s.mean, 5.0);
    // Σ(x − 5)² = 32, n − 1 = 7
    close(s.std, (32.0f64 / 7.0).sqrt());
    assert!(mean_std(&[3.0]).std.is_nan());
    assert!(mean_std(&[]).mean.is_nan());
}

#[test]
fn regression_metrics() {
    let pred = [1.0, 2.0, 6.0];
    let y = [2.0, 2.0, 2.0];
    close(metrics::mae(&pred, &y), 5.0 / 3.0);
    close(metrics::rmse(&pred, &y), (17.0f64 / 3.0).sqrt());
    close(metrics::bias(&pred, &y), 1.0);
}

#[test]
fn average_precision_by_hand() {
    // ranked: 0.9 pos, 0.8 neg, 0.7 pos, 0.6 neg, 0.5 pos
    // precision at each positive: 1/1, 2/3, 3/5; recall steps of 1/3
    let scores = [0.5, 0.9, 0.6, 0.8, 0.7];
    let labels = [true, true, false, false, true];
    close(
        metrics::average_precision(&scores, &labels),
        (1.0 + 2.0 / 3.0 + 3.0 / 5.0) / 3.0,
    );
    // a tie between a positive and a negative at the top forms one threshold: P = 1/2 at R = 1/2
    let ap = metrics::average_precision(&[0.9, 0.9, 0.1, 0.5], &[true, false, false, true]);
    close(ap, 0.5 * 0.5 + 0.5 * (2.0 / 3.0));
    assert!(metrics::average_precision(&[0.3, 0.2], &[false, false]).is_nan());
    close(metrics::average_precision(&[0.1, 0.9], &[false, true]), 1.0);
}

#[test]
fn roc_auc_by_hand() {
    let scores = [0.5, 0.9, 0.6, 0.8, 0.7];
    let labels = [true, true, false, false, true];
    // positives 0.9, 0.7, 0.5 vs negatives 0.8, 0.6: wins (0.9:2) + (0.7:1) + (0.5:0) = 3 of 6
    close(metrics::roc_auc(&scores, &labels), 0.5);
    close(
        metrics::roc_auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
        1.0,
    );
    close(
        metrics::roc_auc(&[0.1, 0.2, 0.8, 0.9], &[true, true, false, false]),
        0.0,
    );
    // all tied: 1/2
    close(metrics::roc_auc(&[0.4; 4], &[true, false, true, false]), 0.5);
    assert!(metrics::roc_auc(&[0.1, 0.2], &[true, true]).is_nan());
}

#[test]
fn threshold_metrics_by_hand() {
    // scores ≥ 0.5 predicted positive: tp 2 (0.9, 0.6), fp 1 (0.8), fn 1 (0.4), tn 2 (0.1, 0.2)
    let scores = [0.9, 0.6, 0.8, 0.4, 0.1, 0.2];
    let labels = [true, true, false, true, false, false];
    let c = Confusion::at(&scores, &labels, 0.5);
    assert_eq!((c.tp, c.fp, c.fn_, c.tn), (2, 1, 1, 2));
    close(c.recall(), 2.0 / 3.0);
    close(c.precision(), 2.0 / 3.0);
    close(c.f1(), 4.0 / 6.0);
    close(c.balanced_accuracy(), (2.0 / 3.0 + 2.0 / 3.0) / 2.0);
    // the threshold is inclusive
    assert_eq!(Confusion::at(&[0.5], &[true], 0.5).tp, 1);
    // nothing predicted positive: precision and F1 are 0 (scikit-learn's zero_division)
    let none = Confusion::at(&[0.1, 0.2], &[true, false], 0.5);
    assert_eq!((none.precision(), none.f1(), none.recall()), (0.0, 0.0, 0.0));
    close(none.balanced_accuracy(), 0.5);
}

#[test]
fn multiclass_metrics_by_hand() {
    let labels = [0, 0, 0, 1, 2, 2];
    let pred = [0, 0, 1, 1, 0, 2];
    close(metrics::accuracy(&pred, &labels), 4.0 / 6.0);
    // recalls: class 0 2/3, class 1 1/1, class 2 1/2
    close(
        metrics::balanced_accuracy(&pred, &labels),
        (2.0 / 3.0 + 1.0 + 0.5) / 3.0,
    );
    // a predicted class absent from the labels does not count as a class
    close(metrics::balanced_accuracy(&[5, 0], &[0, 0]), 0.5);
}

#[test]
fn dice_and_iou_by_hand() {
    let p = [true, true, true, false, false];
    let g = [true, false, false, true, false];
    // |P ∩ G| = 1, |P| = 3, |G| = 2: Dice 2/5, IoU 1/4
    close(metrics::dice(&p, &g), 0.4);
    close(metrics::iou(&p, &g), 0.25);
    close(metrics::dice(&[false; 3], &[false; 3]), 1.0);
    close(metrics::iou(&[false; 3], &[false; 3]), 1.0);
    close(metrics::dice(&[true, false], &[false, true]), 0.0);
    // Dice = 2 IoU / (1 + IoU)
    let (d, j) = (metrics::dice(&p, &g), metrics::iou(&p, &g));
    close(d, 2.0 * j / (1.0 + j));
}
