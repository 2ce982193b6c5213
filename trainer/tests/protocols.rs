//! The experiments' protocols on small inputs: fold assignment, outlier rows, task labels,
//! z-scoring, the focal diagnostic, the synthetic shapes.
#![cfg(feature = "cli")]

use trainer::data::{self, folds, shapes, ZScore};
use trainer::experiments::imbalanced::{diagnostic, labels};
use trainer::experiments::regression::corrupted_targets;

#[test]
fn regression_folds_are_row_mod_5() {
    let f = folds::by_position(12, 5);
    assert_eq!(f, vec![0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]);
    let (train, test) = folds::split(&f, 1);
    assert_eq!(test, vec![1, 6, 11]);
    assert_eq!(train, vec![0, 2, 3, 4, 5, 7, 8, 9, 10]);
}

#[test]
fn diabetes_shape_and_fold_sizes() {
    let t = data::diabetes::load();
    assert_eq!((t.n, t.d), (441, 10));
    let f = folds::by_position(t.n, 5);
    let sizes: Vec<usize> = (0..5).map(|k| f.iter().filter(|&&x| x == k).count()).collect();
    assert_eq!(sizes, vec![89, 88, 88, 88, 88]);
}

#[test]
fn outliers_at_positions_0_mod_10_of_the_training_fold() {
    assert_eq!(folds::outlier_positions(21, 10), vec![0, 10, 20]);
    assert!(folds::outlier_positions(0, 10).is_empty());
    let y: Vec<f64> = (0..12).map(f64::from).collect();
    let c = corrupted_targets(&y, 400.0, 10);
    for (i, (a, b)) in y.iter().zip(&c).enumerate() {
        let expected = if i % 10 == 0 { a + 400.0 } else { *a };
        assert_eq!(*b, expected, "row {i}");
    }
    // positions are within the training fold: with fold 0 held out of 0..20, the training rows
    // are 1,2,3,4,6,...; positions 0 and 10 are rows 1 and 13
    let f = folds::by_position(20, 5);
    let (train, _) = folds::split(&f, 0);
    let rows: Vec<usize> = folds::outlier_positions(train.len(), 10)
        .iter()
        .map(|&i| train[i])
        .collect();
    assert_eq!(rows, vec![1, 13]);
}

#[test]
fn stratified_folds_within_each_class_in_file_order() {
    let y = [1, 0, 0, 1, 0, 1, 0, 0, 1, 1, 1, 0];
    let f = folds::stratified(&y, 5);
    // class 1 rows 0,3,5,8,9,10 → folds 0,1,2,3,4,0; class 0 rows 1,2,4,6,7,11 → 0,1,2,3,4,0
    assert_eq!(f, vec![0, 0, 1, 1, 2, 2, 3, 4, 3, 4, 0, 0]);
}

#[test]
fn winequality_tasks() {
    let t = data::winequality::load();
    assert_eq!((t.n, t.d), (1599, 11));
    let good = labels(&t.y, "good");
    let poor = labels(&t.y, "poor");
    let multi = labels(&t.y, "multi");
    assert_eq!(good.iter().sum::<usize>(), 217); // 13.6 %
    assert_eq!(poor.iter().sum::<usize>(), 63); // 3.9 %
    assert_eq!(*multi.iter().max().unwrap(), 5);
    // every fold gets a fifth (±1) of each class
    for y in [&good, &poor, &multi] {
        let f = folds::stratified(y, 5);
        for c in 0..=*y.iter().max().unwrap() {
            let n_c = y.iter().filter(|&&v| v == c).count();
            for k in 0..5 {
                let in_fold = y.iter().zip(&f).filter(|(&v, &fk)| v == c && fk == k).count();
                assert!(
                    in_fold == n_c / 5 || in_fold == n_c / 5 + 1,
                    "class {c} fold {k}: {in_fold} of {n_c}"
                );
            }
        }
    }
}

#[test]
fn zscore_uses_population_std() {
    // columns: (1, 2, 3) and (5, 5, 5)
    let x = [1.0, 5.0, 2.0, 5.0, 3.0, 5.0];
    let z = ZScore::fit(&x, 2);
    assert_eq!(z.mean, vec![2.0, 5.0]);
    assert!((z.std[0] - (2.0f64 / 3.0).sqrt()).abs() < 1e-15);
    assert_eq!(z.std[1], 1.0, "a constant column is left unscaled");
    let a = z.apply(&[2.0, 7.0]);
    assert_eq!(a, vec![0.0, 2.0]);
}

#[test]
fn focal_diagnostic_by_hand() {
    // logits and labels: a positive at 0, easy negatives at −4 and −3, a hard negative at 1
    let z = [0.0, -4.0, -3.0, 1.0];
    let y = [1, 0, 0, 0];
    let sp = |x: f64| (1.0 + x.exp()).ln();
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    // CE: positive softplus(−0), negatives softplus(z)
    let ce = [sp(0.0), sp(-4.0), sp(-3.0), sp(1.0)];
    let pt = [sig(0.0), sig(4.0), sig(3.0), sig(-1.0)];
    let fl: Vec<f64> = ce.iter().zip(&pt).map(|(c, p)| (1.0 - p).powi(2) * c).collect();
    let d = diagnostic(&z, &y);
    let total: f64 = ce.iter().sum();
    assert!((d.easy_negative_share_ce - (ce[1] + ce[2]) / total).abs() < 1e-12);
    let ftotal: f64 = fl.iter().sum();
    assert!((d.easy_negative_share_focal - (fl[1] + fl[2]) / ftotal).abs() < 1e-12);
    // 3 negatives: the hardest ⌈0.3⌉ = 1 is z = 1
    assert!((d.hardest10_share_ce - ce[3] / (ce[1] + ce[2] + ce[3])).abs() < 1e-12);
    assert!((d.hardest10_share_focal - fl[3] / (fl[1] + fl[2] + fl[3])).abs() < 1e-12);
    assert!(d.easy_negative_share_focal < d.easy_negative_share_ce);
}

#[test]
fn shapes_are_seeded_and_small() {
    let cfg = shapes::ShapesConfig::default();
    let a = shapes::generate(&mut trainer::rng::stream(3, &["t"]), 20, &cfg);
    let b = shapes::generate(&mut trainer::rng::stream(3, &["t"]), 20, &cfg);
    assert_eq!(a, b);
    let f = a.foreground_fraction();
    assert!(f > 0.005 && f < 0.15, "foreground fraction {f}");
    for i in 0..a.n {
        let px = cfg.size * cfg.size;
        assert!(a.masks[i * px..(i + 1) * px].contains(&1), "image {i} has no object");
    }
}
