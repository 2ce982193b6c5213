//! The stateful Wise-IoU ([`WiseIoU`]): the running mean of `L_IoU` as the authors' `IouLoss`
//! keeps it (updated before each training call with momentum 1e-2, frozen in evaluation), its
//! export and restore for checkpoints, and the first training step of a fresh module against the
//! reference case `wise-iou-loss-v3-first-training-step-none` of `cases/detection.json`.

use candle_core::{Device, Tensor, Var};
use loss_bbox::*;
use loss_core::{Loss, Reduction};

const PRED: [f32; 20] = [
    4.913342, 13.96134, 8.273145, 22.129011, 2.5447505, 4.348994, 8.3421135, 8.939549, 6.9764676, 17.595804, 13.414555,
    18.73369, 1.6137842, 1.2446471, 7.8540616, 2.7791944, 14.71176, 8.335994, 23.272535, 15.502564,
];
const TARGET: [f32; 20] = [
    3.0624971, 17.038418, 6.847953, 22.803663, 4.0028358, 3.9859905, 9.340948, 6.8882265, 7.7044516, 17.227352,
    11.77021, 18.284958, 2.8976383, 2.024801, 10.354354, 3.3267622, 16.258114, 9.258563, 23.353168, 14.753391,
];
/// The reference's output of the first training call (torch port of Instinct323/wiou).
const EXPECTED: [f64; 5] = [
    0.623420825351,
    0.479945570291,
    0.508702416377,
    0.630095682952,
    0.181420707497,
];
const GRAD_PRED: [f64; 20] = [
    0.100812685779,
    -0.0288001169743,
    0.0527184760906,
    -0.0443828579151,
    -0.0472477164497,
    0.0996068160212,
    -0.0516745185548,
    0.0573325850879,
    -0.0251916573344,
    0.284574040604,
    0.0358544173101,
    0.177451781524,
    -0.0344661604212,
    -0.0852880792578,
    -0.0450141956329,
    -0.253224817549,
    -0.0360484627793,
    -0.0417874303256,
    -0.0359088793863,
    0.0415378332001,
];
/// The buffer after that call: `0.99·1 + 0.01·mean(L_IoU)`.
const MEAN_AFTER: f64 = 0.9964278336427663;

fn boxes(v: &[f32]) -> Tensor {
    Tensor::from_vec(v.to_vec(), (v.len() / 4, 4), &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

fn close(what: &str, got: &[f64], want: &[f64]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "{what}[{i}]: got {g}, want {w}");
    }
}

#[test]
fn first_training_step_of_a_fresh_module_matches_the_reference() {
    let loss = WiseIoU::default();
    assert!(loss.is_training());
    assert_eq!(loss.iou_mean(), 1.0);
    let pred = Var::from_tensor(&boxes(&PRED)).unwrap();
    let out = loss.forward(pred.as_tensor(), &boxes(&TARGET)).unwrap();
    close("value", &flat(&out), &EXPECTED);
    let g = out.sum_all().unwrap().backward().unwrap();
    close("grad pred", &flat(g.get(pred.as_tensor()).unwrap()), &GRAD_PRED);
    assert!((loss.iou_mean() - MEAN_AFTER).abs() < 1e-7, "{}", loss.iou_mean());
}

#[test]
fn the_mean_moves_with_its_momentum_in_training_only() {
    let (p, t) = (boxes(&PRED), boxes(&TARGET));
    let l_iou = flat(&wise_iou_loss(&p, &t, WiseIouVersion::V1, 1.0, 1.7, 2.7, Reduction::None).unwrap());
    // v1 = R·L_IoU with R >= 1; recover mean(L_IoU) from the first step instead
    let batch = (MEAN_AFTER - 0.99) / 0.01;
    assert!(l_iou.iter().sum::<f64>() / 5.0 >= batch - 1e-6);
    let mut loss = WiseIoU::default().with_momentum(0.5);
    loss.forward(&p, &t).unwrap();
    let m1 = loss.iou_mean();
    assert!((m1 - (0.5 + 0.5 * batch)).abs() < 1e-6, "{m1}");
    loss.forward(&p, &t).unwrap();
    let m2 = loss.iou_mean();
    assert!((m2 - (0.5 * m1 + 0.5 * batch)).abs() < 1e-6, "{m2}");
    // evaluation: the mean stays, and the output is the stateless call's with that mean
    loss.eval();
    let out = loss.forward(&p, &t).unwrap();
    assert_eq!(loss.iou_mean(), m2);
    let want = wise_iou_loss(&p, &t, WiseIouVersion::V3, m2, 1.7, 2.7, Reduction::None).unwrap();
    assert_eq!(flat(&out), flat(&want));
    loss.train();
    loss.forward(&p, &t).unwrap();
    assert!(loss.iou_mean() != m2);
    // an empty batch leaves the mean alone
    let before = loss.iou_mean();
    let empty = Tensor::zeros((0, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    loss.forward(&empty, &empty).unwrap();
    assert_eq!(loss.iou_mean(), before);
}

#[test]
fn the_state_saves_and_restores() {
    let (p, t) = (boxes(&PRED), boxes(&TARGET));
    let a = WiseIoU::default();
    a.forward(&p, &t).unwrap();
    // a checkpoint saves one number; a fresh module restored from it continues identically
    let saved = a.iou_mean();
    let b = WiseIoU::default();
    b.set_iou_mean(saved).unwrap();
    let (oa, ob) = (a.forward(&p, &t).unwrap(), b.forward(&p, &t).unwrap());
    assert_eq!(flat(&oa), flat(&ob));
    assert_eq!(a.iou_mean(), b.iou_mean());
    // a clone carries the state
    let c = a.clone();
    assert_eq!(c.iou_mean(), a.iou_mean());
    // bad states and options are typed errors naming the loss
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = b.set_iou_mean(bad).unwrap_err().to_string();
        assert!(e.starts_with("wise_iou_loss"), "{e}");
    }
    let e = Loss::forward(&WiseIoU::default().with_momentum(0.0), &p, &t)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("wise_iou_loss") && e.contains("momentum"), "{e}");
}

#[test]
fn paper_momentum_reaches_five_percent_after_n_t_steps() {
    let m = WiseIoU::paper_momentum(890, 34);
    let left = (1.0 - m).powf(890.0 * 34.0);
    assert!((left - 0.05).abs() < 1e-9, "{left}");
}
