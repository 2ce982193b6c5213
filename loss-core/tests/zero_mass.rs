//! Zero mass is zero: where a target probability is exactly 0, a log-probability or logit of
//! `-inf` (a masked class) changes nothing. On seeded random rows with random masks, on both paths
//! and in f32 and f64, each loss at `-inf` gives the value and the input gradient it gives with a
//! very negative finite stand-in (`-1e30`, whose probability is 0 too), the gradient at the masked
//! entries is 0, and everything is finite. Rows that `ignore_index` removes are held to the same
//! with all their logits `-inf` against all 0.

use candle_core::{DType, Device, Result, Tensor, Var};
use loss_core::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const N: usize = 6;
const C: usize = 5;

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// Value and gradient w.r.t. `x` of `sum(f(x))`.
fn value_grad(f: &dyn Fn(&Tensor) -> Result<Tensor>, x: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let v = Var::from_tensor(x).unwrap();
    let out = f(v.as_tensor()).unwrap();
    let g = out.sum_all().unwrap().backward().unwrap();
    let grad = g
        .get(v.as_tensor())
        .map(flat)
        .unwrap_or_else(|| vec![0.0; x.elem_count()]);
    (flat(&out), grad)
}

fn tensor(v: &[f64], dt: DType) -> Tensor {
    Tensor::from_vec(v.to_vec(), (N, C), &Device::Cpu)
        .unwrap()
        .to_dtype(dt)
        .unwrap()
}

/// Random logits, a mask with at least one unmasked class per row, and probabilities that are 0
/// exactly on the mask.
fn problem(rng: &mut ChaCha8Rng) -> (Vec<f64>, Vec<bool>, Vec<f64>) {
    let logits: Vec<f64> = (0..N * C).map(|_| rng.gen_range(-3.0..3.0)).collect();
    let mut mask: Vec<bool> = (0..N * C).map(|_| rng.gen_bool(0.4)).collect();
    let mut probs = vec![0.0; N * C];
    for r in 0..N {
        let keep = rng.gen_range(0..C);
        mask[r * C + keep] = false;
        let w: Vec<f64> = (0..C)
            .map(|c| if mask[r * C + c] { 0.0 } else { rng.gen_range(0.1..1.0) })
            .collect();
        let s: f64 = w.iter().sum();
        for c in 0..C {
            probs[r * C + c] = w[c] / s;
        }
    }
    (logits, mask, probs)
}

fn masked(v: &[f64], mask: &[bool], fill: f64) -> Vec<f64> {
    v.iter().zip(mask).map(|(&x, &m)| if m { fill } else { x }).collect()
}

/// Runs `check` on the fused path and on the composite path, in f32 and f64.
fn everywhere(check: impl Fn(DType, &str)) {
    for dt in [DType::F32, DType::F64] {
        check(dt, "fused");
        loss_core::kernel::with_path(loss_core::kernel::Path::Composite, || check(dt, "composite"));
    }
}

fn assert_same(name: &str, inf: &(Vec<f64>, Vec<f64>), stand_in: &(Vec<f64>, Vec<f64>), mask: &[bool]) {
    assert!(
        inf.0.iter().chain(&inf.1).all(|v| v.is_finite()),
        "{name}: not finite: {inf:?}"
    );
    for (a, b) in inf.0.iter().zip(&stand_in.0) {
        assert!(
            (a - b).abs() <= 1e-5 * b.abs().max(1.0),
            "{name}: value {a} at -inf, {b} at -1e30"
        );
    }
    for (i, (a, b)) in inf.1.iter().zip(&stand_in.1).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5,
            "{name}: gradient {a} at -inf, {b} at -1e30 (flat {i})"
        );
        if mask.get(i).copied().unwrap_or(false) {
            assert_eq!(*a, 0.0, "{name}: gradient at a masked entry (flat {i})");
        }
    }
}

#[test]
fn cross_entropy_with_probability_targets_ignores_masked_logits() {
    let mut rng = ChaCha8Rng::seed_from_u64(89558);
    for _ in 0..20 {
        let (logits, mask, probs) = problem(&mut rng);
        everywhere(|dt, path| {
            let t = tensor(&probs, dt);
            for r in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                let f = |x: &Tensor| cross_entropy(x, &t, None, IGNORE_INDEX, 0.0, r);
                let inf = value_grad(&f, &tensor(&masked(&logits, &mask, f64::NEG_INFINITY), dt));
                let stand_in = value_grad(&f, &tensor(&masked(&logits, &mask, -1e30), dt));
                assert_same(&format!("cross_entropy {path} {dt:?} {r}"), &inf, &stand_in, &mask);
            }
        });
    }
}

#[test]
fn kl_div_ignores_masked_log_probabilities_in_both_modes() {
    let mut rng = ChaCha8Rng::seed_from_u64(896);
    for _ in 0..20 {
        let (logits, mask, probs) = problem(&mut rng);
        everywhere(|dt, path| {
            let t = tensor(&probs, dt);
            let log_t_inf = tensor(
                &masked(
                    &probs.iter().map(|p| p.ln()).collect::<Vec<_>>(),
                    &mask,
                    f64::NEG_INFINITY,
                ),
                dt,
            );
            let log_t_fin = tensor(
                &masked(&probs.iter().map(|p| p.ln()).collect::<Vec<_>>(), &mask, -1e30),
                dt,
            );
            for r in [Reduction::None, Reduction::BatchMean, Reduction::Sum] {
                let lp = |fill: f64| log_softmax(&tensor(&masked(&logits, &mask, fill), dt), 1).unwrap();
                let f = |x: &Tensor| kl_div(x, &t, false, r);
                assert_same(
                    &format!("kl_div {path} {dt:?} {r}"),
                    &value_grad(&f, &lp(f64::NEG_INFINITY)),
                    &value_grad(&f, &lp(-1e30)),
                    &mask,
                );
                // log_target: the masked classes have log-target -inf (against -1e30).
                let inf = value_grad(&|x: &Tensor| kl_div(x, &log_t_inf, true, r), &lp(f64::NEG_INFINITY));
                let fin = value_grad(&|x: &Tensor| kl_div(x, &log_t_fin, true, r), &lp(-1e30));
                assert_same(&format!("kl_div log_target {path} {dt:?} {r}"), &inf, &fin, &mask);
            }
        });
    }
}

#[test]
fn ignored_rows_of_minus_inf_logits_change_nothing() {
    let mut rng = ChaCha8Rng::seed_from_u64(11551);
    for _ in 0..20 {
        let (logits, _, _) = problem(&mut rng);
        let ignored: Vec<bool> = (0..N).map(|_| rng.gen_bool(0.4)).collect();
        let y: Vec<i64> = (0..N)
            .map(|r| if ignored[r] { -100 } else { rng.gen_range(0..C as i64) })
            .collect();
        let row_mask: Vec<bool> = (0..N * C).map(|i| ignored[i / C]).collect();
        let y = Tensor::new(y, &Device::Cpu).unwrap();
        let w = Tensor::new(&[1.0f64, 2.0, 0.5, 1.0, 3.0], &Device::Cpu).unwrap();
        everywhere(|dt, path| {
            let w = w.to_dtype(dt).unwrap();
            for r in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                for (weight, ls) in [(None, 0.0), (Some(&w), 0.0), (None, 0.2), (Some(&w), 0.1)] {
                    let f = |x: &Tensor| cross_entropy(x, &y, weight, IGNORE_INDEX, ls, r);
                    let inf = value_grad(&f, &tensor(&masked(&logits, &row_mask, f64::NEG_INFINITY), dt));
                    let zero = value_grad(&f, &tensor(&masked(&logits, &row_mask, 0.0), dt));
                    if ignored.iter().all(|&i| i) && r == Reduction::Mean {
                        continue; // 0/0, NaN by definition
                    }
                    assert_same(
                        &format!("cross_entropy ignore {path} {dt:?} {r} ls {ls}"),
                        &inf,
                        &zero,
                        &row_mask,
                    );
                }
            }
        });
    }
}

#[test]
fn entropy_of_zero_mass_is_zero_with_zero_gradient() {
    let mut rng = ChaCha8Rng::seed_from_u64(9594);
    for _ in 0..20 {
        let (_, mask, probs) = problem(&mut rng);
        everywhere(|dt, path| {
            let (v, g) = value_grad(
                &|p: &Tensor| entropy(p, EntropyBase::Nats, Reduction::None),
                &tensor(&probs, dt),
            );
            let want: Vec<f64> = probs
                .chunks(C)
                .map(|row| -row.iter().filter(|&&p| p > 0.0).map(|p| p * p.ln()).sum::<f64>())
                .collect();
            for (a, b) in v.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "entropy {path} {dt:?}: {a} vs {b}");
            }
            for (i, &m) in mask.iter().enumerate() {
                if m {
                    assert_eq!(g[i], 0.0, "entropy {path} {dt:?}: gradient at p = 0");
                }
            }
            assert!(g.iter().all(|x| x.is_finite()));
        });
    }
}
