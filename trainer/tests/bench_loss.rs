//! `trainer bench --loss NAME --shape ...`: any loss of the registry at the user's shape,
//! parameters and float type, as JSON rows of the workload list's format; a bad loss, shape or
//! parameter is one line and exit status 2.
#![cfg(feature = "cli")]

mod common;

use common::{assert_one_line_error, trainer};

#[test]
fn a_user_workload_gives_the_rows_of_the_workload_list() {
    let dir = common::tmp("bench-loss", "rows");
    let json = dir.join("rows.json");
    for (loss, shape, param, dtype) in [
        ("huber_loss", "1000", "delta=2", "f32"),
        ("sigmoid_focal_loss", "64,8", "gamma=1.5", "f64"),
        ("tversky_loss", "2,3,8,8", "alpha=0.3", "f32"),
        ("nll_loss", "32,5", "ignore_index=1", "f32"),
    ] {
        let o = trainer(&[
            "bench",
            "--loss",
            loss,
            "--shape",
            shape,
            "--param",
            param,
            "--dtype",
            dtype,
            "--no-floor",
            "--min-seconds",
            "0",
            "--json",
            json.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{loss}: {}", String::from_utf8_lossy(&o.stderr));
        let rows: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 2, "fused and composite");
        let dims: Vec<u64> = shape.split(',').map(|d| d.parse().unwrap()).collect();
        for (r, imp) in rows.iter().zip(["fused", "composite"]) {
            assert_eq!(r["loss"], loss);
            assert_eq!(r["shape"], serde_json::json!(dims));
            assert_eq!(r["impl"], imp);
            assert!(r["median_ms"].as_f64().unwrap() > 0.0);
            assert!(r["reps"].as_u64().unwrap() >= 7);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_loss_shape_or_parameter_is_one_line_and_exit_2() {
    for (args, needle) in [
        (
            vec!["--loss", "nope_loss", "--shape", "10"],
            "unknown loss \"nope_loss\"",
        ),
        (
            vec!["--loss", "giou_loss", "--shape", "10,3"],
            "giou_loss refuses shape [10, 3]",
        ),
        (
            vec!["--loss", "huber_loss", "--shape", "10", "--param", "deltaa=2"],
            "unknown parameter `deltaa`",
        ),
        (vec!["--loss", "huber_loss", "--shape", "0"], "--shape"),
        // shapes of too few dimensions for the generators that read a class count or a box
        // width (these panicked on an index out of bounds)
        (vec!["--loss", "cross_entropy", "--shape", "7"], "at least 2 dimensions"),
        (
            vec!["--loss", "poly1_cross_entropy", "--shape", "7"],
            "at least 2 dimensions",
        ),
        (
            vec!["--loss", "quality_focal_loss", "--shape", "7"],
            "at least 2 dimensions",
        ),
        (vec!["--loss", "ctc_loss", "--shape", "3,4"], "at least 4 dimensions"),
        (vec!["--loss", "ctc_loss", "--shape", "1,1,1,1"], "C >= 2"),
        (
            vec!["--loss", "tversky_loss", "--shape", "7"],
            "tversky_loss refuses shape [7]",
        ),
        (vec!["--loss", "box_iou", "--shape", "1"], "box_iou refuses shape [1]"),
        // a product of dimensions past memory, or past usize (this aborted on the allocation)
        (
            vec!["--loss", "mse_loss", "--shape", "100000000000,100000000000"],
            "more than 2147483648 elements",
        ),
        (
            vec!["--loss", "mse_loss", "--shape", "4294967296,4294967296,4294967296"],
            "--shape",
        ),
        (vec!["--loss", "huber_loss"], "--shape"),
    ] {
        let mut a = vec!["bench", "--no-floor", "--min-seconds", "0"];
        a.extend(&args);
        assert_one_line_error(&trainer(&a), &format!("{args:?}"), &[needle]);
    }
}

#[test]
fn every_loss_of_the_registry_can_be_timed() {
    // these ten were refused at every shape: their inputs have other names (boxes, boxes1,
    // anchor, mask), integer labels of another layout, or no `reduction`
    for (loss, shape, params) in [
        ("multilabel_margin_loss", "8,4", &[][..]),
        ("triplet_margin_with_distance_loss", "8,4", &[]),
        ("box_iou", "8,4", &[]),
        ("generalized_box_iou", "8,4", &[]),
        ("distance_box_iou", "8,4", &[]),
        ("complete_box_iou", "8,4", &[]),
        ("box_area", "8,4", &[]),
        (
            "box_convert",
            "8,4",
            &["--param", "in_fmt=xyxy", "--param", "out_fmt=cxcywh"],
        ),
        ("lovasz_softmax_loss", "2,3,8,8", &[]),
        ("masked_dice_loss", "2,3,8,8", &[]),
    ] {
        let mut a = vec![
            "bench",
            "--no-floor",
            "--min-seconds",
            "0",
            "--impl",
            "fused",
            "--loss",
            loss,
        ];
        a.extend(["--shape", shape]);
        a.extend(params);
        let o = trainer(&a);
        assert!(o.status.success(), "{loss}: {}", String::from_utf8_lossy(&o.stderr));
        let table = String::from_utf8_lossy(&o.stdout);
        assert!(
            table.lines().any(|l| l.starts_with(loss) && l.contains("fused")),
            "{loss}: {table}"
        );
    }
}
