//! Optimizer steps, schedules and clipping against hand-computed values (f64).

use candle_core::{DType, Device, Tensor, Var};
use std::collections::HashMap;
use trainer::optim::{clip_grad_norm, global_grad_norm, OptimizerConfig, Schedule};

/// One parameter vector `p` with the loss `Σ c·p + ½ Σ p²` (gradient `c + p`).
fn grads_of(p: &Var, c: &[f64]) -> candle_core::backprop::GradStore {
    let c = Tensor::new(c, &Device::Cpu).unwrap();
    let loss = (p.as_tensor().mul(&c).unwrap().sum_all().unwrap()
        + (p.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap())
    .unwrap();
    loss.backward().unwrap()
}

fn values(p: &Var) -> Vec<f64> {
    p.as_tensor().to_vec1::<f64>().unwrap()
}

fn close(a: &[f64], b: &[f64]) {
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-12, "{a:?} != {b:?}");
    }
}

fn param(v: &[f64]) -> (Var, Vec<(String, Var)>) {
    let p = Var::new(v, &Device::Cpu).unwrap();
    (p.clone(), vec![("p".to_string(), p)])
}

#[test]
fn adam_two_steps_by_hand() {
    let (p, params) = param(&[1.0, -2.0]);
    let c = [0.5, 1.0];
    let mut opt = OptimizerConfig::adam().build(params).unwrap();
    let (b1, b2, eps, lr) = (0.9f64, 0.999f64, 1e-8, 0.1);
    let (mut m, mut v, mut x) = ([0.0; 2], [0.0; 2], [1.0, -2.0]);
    for t in 1..=2 {
        let g = [c[0] + x[0], c[1] + x[1]];
        let grads = grads_of(&p, &c);
        opt.step(&grads, lr).unwrap();
        for i in 0..2 {
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            let mh = m[i] / (1.0 - b1.powi(t));
            let vh = v[i] / (1.0 - b2.powi(t));
            x[i] -= lr * mh / (vh.sqrt() + eps);
        }
        close(&values(&p), &x);
    }
    // the first step moves each coordinate by lr·sign(g) (up to ε)
    assert_eq!(opt.steps(), 2);
}

#[test]
fn adam_l2_vs_adamw_decoupled() {
    let c = [0.5];
    let (lr, wd) = (0.1, 0.5);
    // p after the first step from p = 1, weight decay in the gradient (Adam) or decoupled (AdamW)
    let first_step = |decoupled_weight_decay: bool| {
        let (p, params) = param(&[1.0]);
        let mut opt = OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 0.0,
            weight_decay: wd,
            decoupled_weight_decay,
        }
        .build(params)
        .unwrap();
        opt.step(&grads_of(&p, &c), lr).unwrap();
        values(&p)
    };
    // Adam: g = c + p + wd·p = 0.5 + 1 + 0.5 = 2 → first step p − lr·sign(g)
    close(&first_step(false), &[0.9]);
    // AdamW: p(1 − lr·wd) − lr·sign(c + p) = 0.95 − 0.1
    close(&first_step(true), &[0.85]);
}

#[test]
fn sgd_nesterov_with_weight_decay_two_steps_by_hand() {
    let (p, params) = param(&[1.0, -1.0]);
    let c = [0.2, 0.4];
    let (lr, mu, wd) = (0.1, 0.9, 0.01);
    let sgd = OptimizerConfig::Sgd {
        momentum: mu,
        dampening: 0.0,
        nesterov: true,
        weight_decay: wd,
    };
    let mut opt = sgd.build(params).unwrap();
    let mut x = [1.0, -1.0];
    let mut buf = [0.0; 2];
    for t in 1..=2 {
        opt.step(&grads_of(&p, &c), lr).unwrap();
        for i in 0..2 {
            let g = c[i] + x[i] + wd * x[i];
            buf[i] = if t == 1 { g } else { mu * buf[i] + g };
            x[i] -= lr * (g + mu * buf[i]);
        }
        close(&values(&p), &x);
    }
    // step 1 by hand for coordinate 0: g = 0.2 + 1 + 0.01 = 1.21, buf = 1.21,
    // update 1.21 + 0.9·1.21 = 2.299, p = 1 − 0.2299
    let (p, params) = param(&[1.0]);
    let mut opt = sgd.build(params).unwrap();
    opt.step(&grads_of(&p, &[0.2]), lr).unwrap();
    close(&values(&p), &[1.0 - 0.2299]);
}

#[test]
fn sgd_plain_momentum_and_dampening() {
    let (p, params) = param(&[0.0]);
    let c = [1.0];
    let mut opt = OptimizerConfig::Sgd {
        momentum: 0.5,
        dampening: 0.5,
        nesterov: false,
        weight_decay: 0.0,
    }
    .build(params)
    .unwrap();
    // t=1: g = 1, buf = g = 1, p = −0.1
    opt.step(&grads_of(&p, &c), 0.1).unwrap();
    close(&values(&p), &[-0.1]);
    // t=2: g = 1 − 0.1 = 0.9, buf = 0.5·1 + 0.5·0.9 = 0.95, p = −0.1 − 0.095
    opt.step(&grads_of(&p, &c), 0.1).unwrap();
    close(&values(&p), &[-0.195]);
}

#[test]
fn bad_hyper_parameters_are_errors() {
    let bad = [
        OptimizerConfig::Sgd {
            momentum: 0.0,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 0.0,
        },
        OptimizerConfig::Sgd {
            momentum: -0.1,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        },
        OptimizerConfig::Adam {
            beta1: 1.0,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
        },
        OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: f64::NAN,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
        },
    ];
    for cfg in bad {
        let (_, params) = param(&[1.0]);
        let e = cfg.build(params).err().unwrap_or_else(|| panic!("{cfg:?} accepted"));
        let msg = e.to_string();
        assert!(msg.contains("SGD") || msg.contains("Adam"), "{msg}");
    }
}

#[test]
fn optimizer_state_round_trip() {
    let (p, params) = param(&[1.0, 2.0]);
    let mut opt = OptimizerConfig::adam().build(params).unwrap();
    opt.step(&grads_of(&p, &[0.3, -0.3]), 0.01).unwrap();
    let state: HashMap<String, Tensor> = opt.state().into_iter().collect();
    assert!(state.contains_key("p.exp_avg") && state.contains_key("p.exp_avg_sq"));
    // a fresh optimizer loaded with the state takes the same next step
    let (q, qparams) = param(&values(&p));
    let mut opt2 = OptimizerConfig::adam().build(qparams).unwrap();
    opt2.load_state(&state, opt.steps()).unwrap();
    opt.step(&grads_of(&p, &[0.3, -0.3]), 0.01).unwrap();
    opt2.step(&grads_of(&q, &[0.3, -0.3]), 0.01).unwrap();
    close(&values(&p), &values(&q));
    let missing = HashMap::new();
    assert!(opt2.load_state(&missing, 1).is_err());
}

#[test]
fn schedules() {
    let step = Schedule::Step {
        step_size: 10,
        gamma: 0.5,
    };
    assert_eq!(step.lr(1.0, 0), 1.0);
    assert_eq!(step.lr(1.0, 9), 1.0);
    assert_eq!(step.lr(1.0, 10), 0.5);
    assert_eq!(step.lr(1.0, 25), 0.25);
    let cos = Schedule::Cosine {
        t_max: 100,
        eta_min: 0.1,
    };
    assert!((cos.lr(1.0, 0) - 1.0).abs() < 1e-15);
    assert!((cos.lr(1.0, 50) - 0.55).abs() < 1e-15);
    assert!((cos.lr(1.0, 100) - 0.1).abs() < 1e-15);
    assert!((cos.lr(1.0, 150) - 0.1).abs() < 1e-15);
    assert_eq!(Schedule::Constant.lr(0.3, 1000), 0.3);
}

#[test]
fn clipping_by_global_norm() {
    let a = Var::new(&[3.0f64, 0.0], &Device::Cpu).unwrap();
    let b = Var::new(&[4.0f64], &Device::Cpu).unwrap();
    let params = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
    // loss = Σ a·(3, 0)... gradient of ½Σa² + ½Σb² is (a, b): global norm 5
    let loss = (a.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap()
        + (b.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
    let mut grads = loss.unwrap().backward().unwrap();
    assert!((global_grad_norm(&grads, &params).unwrap() - 5.0).abs() < 1e-12);
    let n = clip_grad_norm(&mut grads, &params, 1.0).unwrap();
    assert!((n - 5.0).abs() < 1e-12);
    let ga = grads.get(a.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
    let gb = grads.get(b.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
    let k = 1.0 / (5.0 + 1e-6);
    close(&ga, &[3.0 * k, 0.0]);
    close(&gb, &[4.0 * k]);
    // below the limit nothing changes
    let n2 = clip_grad_norm(&mut grads, &params, 10.0).unwrap();
    assert!((n2 - 5.0 * k).abs() < 1e-12);
    close(&grads.get(b.as_tensor()).unwrap().to_vec1::<f64>().unwrap(), &[4.0 * k]);
    assert!(clip_grad_norm(&mut grads, &params, -1.0).is_err());
    let _ = DType::F64;
}
