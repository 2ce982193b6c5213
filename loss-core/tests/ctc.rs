//! `ctc_loss` against the textbook recursion: α and β over every cell of the extended sequence
//! in log space with libm (no band, no extended-range numbers), in value and in PyTorch's
//! gradient, on seeded random cases (repeats, any blank, padded and concatenated targets,
//! short inputs, empty targets, zero-length inputs), long peaky inputs whose probabilities leave
//! f64's range, `−inf` log-probabilities, per-sample upstream gradients and a second backward.

use candle_core::{DType, Device, Tensor, Var};
use loss_core::{ctc_loss, log_softmax, Reduction};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const NEG: f64 = f64::NEG_INFINITY;

fn lse(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    if m == NEG {
        NEG
    } else {
        m + ((a - m).exp() + (b - m).exp()).ln()
    }
}

/// One call's inputs on the host.
struct Case {
    t: usize,
    n: usize,
    c: usize,
    blank: usize,
    /// `[T, N, C]`, row-major.
    lp: Vec<f64>,
    labels: Vec<Vec<usize>>,
    input_lengths: Vec<usize>,
}

impl Case {
    fn y(&self, t: usize, b: usize, k: usize) -> f64 {
        self.lp[(t * self.n + b) * self.c + k]
    }

    /// Per-sample losses and the unscaled gradient `[T, N, C]` (PyTorch's convention: `exp(lp) −
    /// Σ_{s: l′_s = k} α_t(s)β_t(s) / (p·y_t(k))` for `t < Tn`, 0 after and for an infinite
    /// loss), from full α and β matrices; and the widest spread `max − min` of the finite
    /// `ln α_t(s)` of one frame.
    fn reference(&self) -> (Vec<f64>, Vec<f64>, f64) {
        let mut losses = Vec::new();
        let mut spread = 0.0f64;
        let mut grad = vec![0.0; self.t * self.n * self.c];
        for b in 0..self.n {
            let tn = self.input_lengths[b];
            let l = &self.labels[b];
            let len = 2 * l.len() + 1;
            let ext = |s: usize| if s.is_multiple_of(2) { self.blank } else { l[s / 2] };
            if tn == 0 {
                losses.push(if l.is_empty() { 0.0 } else { f64::INFINITY });
                continue;
            }
            let mut a = vec![vec![NEG; len]; tn];
            let mut be = vec![vec![NEG; len]; tn];
            a[0][0] = self.y(0, b, ext(0));
            if len > 1 {
                a[0][1] = self.y(0, b, ext(1));
            }
            for t in 1..tn {
                for s in 0..len {
                    let mut v = a[t - 1][s];
                    if s >= 1 {
                        v = lse(v, a[t - 1][s - 1]);
                    }
                    if s >= 2 && ext(s) != self.blank && ext(s) != ext(s - 2) {
                        v = lse(v, a[t - 1][s - 2]);
                    }
                    a[t][s] = if v == NEG { NEG } else { v + self.y(t, b, ext(s)) };
                }
            }
            let ll = if len > 1 {
                lse(a[tn - 1][len - 1], a[tn - 1][len - 2])
            } else {
                a[tn - 1][0]
            };
            for row in &a {
                let live = row.iter().filter(|v| v.is_finite());
                let (lo, hi) = live.fold((f64::INFINITY, NEG), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                spread = spread.max(hi - lo);
            }
            losses.push(-ll);
            if !ll.is_finite() {
                continue;
            }
            be[tn - 1][len - 1] = self.y(tn - 1, b, ext(len - 1));
            if len > 1 {
                be[tn - 1][len - 2] = self.y(tn - 1, b, ext(len - 2));
            }
            for t in (0..tn - 1).rev() {
                for s in 0..len {
                    let mut v = be[t + 1][s];
                    if s + 1 < len {
                        v = lse(v, be[t + 1][s + 1]);
                    }
                    if s + 2 < len && ext(s) != self.blank && ext(s + 2) != ext(s) {
                        v = lse(v, be[t + 1][s + 2]);
                    }
                    be[t][s] = if v == NEG { NEG } else { v + self.y(t, b, ext(s)) };
                }
            }
            for t in 0..tn {
                let row = &mut grad[(t * self.n + b) * self.c..][..self.c];
                for (k, g) in row.iter_mut().enumerate() {
                    *g = self.y(t, b, k).exp();
                }
                for s in 0..len {
                    let ab = a[t][s] + be[t][s];
                    if ab != NEG {
                        row[ext(s)] -= (ab - ll - self.y(t, b, ext(s))).exp();
                    }
                }
            }
        }
        (losses, grad, spread)
    }

    /// Padded `[N, S]` targets (junk past each length) or the concatenated 1-D ones.
    fn targets(&self, padded: bool, rng: &mut ChaCha8Rng) -> Tensor {
        if padded {
            let s = self.labels.iter().map(Vec::len).max().unwrap_or(0) + 1;
            let mut v = vec![0i64; self.n * s];
            for (b, l) in self.labels.iter().enumerate() {
                for j in 0..s {
                    v[b * s + j] = l.get(j).map_or(rng.gen_range(-5..50), |&k| k as i64);
                }
            }
            Tensor::from_vec(v, (self.n, s), &Device::Cpu).unwrap()
        } else {
            let v: Vec<i64> = self.labels.iter().flatten().map(|&k| k as i64).collect();
            let len = v.len();
            Tensor::from_vec(v, len, &Device::Cpu).unwrap()
        }
    }

    /// The per-sample losses (reduction none) and the gradient of `Σ w_n·loss_n`, for `lp` in
    /// `dtype`, read back in f64.
    fn run(&self, dtype: DType, padded: bool, w: &[f64], rng: &mut ChaCha8Rng) -> (Vec<f64>, Vec<f64>) {
        let lp = Tensor::from_vec(self.lp.clone(), (self.t, self.n, self.c), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let var = Var::from_tensor(&lp).unwrap();
        let targets = self.targets(padded, rng);
        let il: Vec<i64> = self.input_lengths.iter().map(|&v| v as i64).collect();
        let tl: Vec<i64> = self.labels.iter().map(|l| l.len() as i64).collect();
        let il = Tensor::from_vec(il, self.n, &Device::Cpu).unwrap();
        let tl = Tensor::from_vec(tl, self.n, &Device::Cpu).unwrap();
        let losses = ctc_loss(var.as_tensor(), &targets, &il, &tl, self.blank, false, Reduction::None).unwrap();
        let weights = Tensor::from_vec(w.to_vec(), self.n, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let total = losses.mul(&weights).unwrap().sum_all().unwrap();
        let grads = total.backward().unwrap();
        let g = grads.get(var.as_tensor()).unwrap();
        let f = |t: &Tensor| {
            t.to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        (f(&losses), f(g))
    }
}

/// A random case: lengths from 0 to past feasibility, repeats, an empty target now and then.
fn random_case(r: &mut ChaCha8Rng, scale: f64) -> Case {
    let t = r.gen_range(1..24);
    let n = r.gen_range(1..5);
    let c = r.gen_range(2..7);
    let blank = r.gen_range(0..c);
    let logits: Vec<f64> = (0..t * n * c).map(|_| scale * r.gen_range(-1.0..1.0)).collect();
    let lp = log_softmax(&Tensor::from_vec(logits, (t, n, c), &Device::Cpu).unwrap(), 2)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let mut labels = Vec::new();
    let mut input_lengths = Vec::new();
    for _ in 0..n {
        let tn = r.gen_range(0..=t);
        let len = r.gen_range(0..=(tn / 2 + 2));
        let mut l: Vec<usize> = Vec::new();
        for _ in 0..len {
            // Every other label repeats the previous one now and then.
            let k = match l.last() {
                Some(&p) if r.gen_bool(0.3) => p,
                _ => (blank + r.gen_range(1..c)) % c,
            };
            l.push(k);
        }
        labels.push(l);
        input_lengths.push(tn);
    }
    Case {
        t,
        n,
        c,
        blank,
        lp,
        labels,
        input_lengths,
    }
}

fn assert_close(what: &str, got: &[f64], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_finite() {
            (g - w).abs() <= atol + rtol * w.abs()
        } else {
            g == w || (g.is_nan() && w.is_nan())
        };
        assert!(ok, "{what}[{i}]: got {g}, want {w}");
    }
}

fn weights(r: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| r.gen_range(-2.0..2.0)).collect()
}

/// The scaled reference gradient: sample n's rows times `w[n]`.
fn scaled(case: &Case, grad: &[f64], w: &[f64]) -> Vec<f64> {
    grad.iter()
        .enumerate()
        .map(|(i, &g)| {
            let b = (i / case.c) % case.n;
            g * w[b]
        })
        .collect()
}

#[test]
fn ctc_matches_the_full_log_space_recursion() {
    let mut r = ChaCha8Rng::seed_from_u64(2006);
    let mut infinite = 0;
    for i in 0..300 {
        let case = random_case(&mut r, [1.0, 4.0, 12.0][i % 3]);
        let (losses, grad, _) = case.reference();
        infinite += losses.iter().filter(|l| l.is_infinite()).count();
        let w = weights(&mut r, case.n);
        let want = scaled(&case, &grad, &w);
        let padded = i % 2 == 0;
        let (got_l, got_g) = case.run(DType::F64, padded, &w, &mut r);
        assert_close(&format!("case {i}: f64 losses"), &got_l, &losses, 1e-11, 1e-12);
        assert_close(&format!("case {i}: f64 gradient"), &got_g, &want, 1e-9, 1e-10);
        // f32 log-probabilities are read as they are, the recursion runs in f64: the result is
        // the reference of the rounded inputs, rounded.
        let case = Case {
            lp: case.lp.iter().map(|&v| v as f32 as f64).collect(),
            ..case
        };
        let (losses, grad, _) = case.reference();
        let w: Vec<f64> = w.iter().map(|&v| v as f32 as f64).collect();
        let (got_l, got_g) = case.run(DType::F32, padded, &w, &mut r);
        assert_close(&format!("case {i}: f32 losses"), &got_l, &losses, 1e-6, 1e-7);
        assert_close(
            &format!("case {i}: f32 gradient"),
            &got_g,
            &scaled(&case, &grad, &w),
            1e-6,
            2e-7,
        );
    }
    // The cases hold infeasible targets (T shorter than the target and its repeats).
    assert!(infinite > 20, "only {infinite} infinite losses");
}

/// Long inputs with peaky frames: p is far below f64's smallest number (e^−40000), the cells of
/// one frame span thousands of orders of magnitude, and the forward and backward variables must
/// keep every one of them (a rescaled linear recursion loses the paths that win later).
#[test]
fn ctc_keeps_its_range_on_long_peaky_inputs() {
    let mut r = ChaCha8Rng::seed_from_u64(7);
    let (t, n, c) = (1500usize, 2usize, 5usize);
    let mut lp = Vec::with_capacity(t * n * c);
    for i in 0..t * n {
        // A frame of log-probabilities down to −1e4 (not normalised), blank-heavy; in sample 1 an
        // unused class is masked with −inf.
        for k in 0..c {
            let v = if k == 0 {
                r.gen_range(-3.0..0.0)
            } else {
                r.gen_range(-1e4..-10.0)
            };
            lp.push(if i % n == 1 && k == 4 { NEG } else { v });
        }
    }
    let labels = vec![
        (0..300).map(|j| 1 + (j % 3)).collect::<Vec<usize>>(),
        (0..200).map(|j| 1 + (j * 7 % 3)).collect(),
    ];
    let case = Case {
        t,
        n,
        c,
        blank: 0,
        lp,
        labels,
        input_lengths: vec![t, t - 100],
    };
    let (losses, grad, spread) = case.reference();
    assert!(losses.iter().all(|l| l.is_finite() && *l > 1e5), "{losses:?}");
    // Cells of one frame more than f64's range apart (e^745 is 2^1075).
    assert!(spread > 1e4, "{spread}");
    let w = [0.5, -1.5];
    let (got_l, got_g) = case.run(DType::F64, true, &w, &mut r);
    // The reference's logs near −6e5 hold 1e-10 absolute each, summed over 1500 frames.
    assert_close("peaky losses", &got_l, &losses, 1e-12, 0.0);
    assert_close("peaky gradient", &got_g, &scaled(&case, &grad, &w), 1e-6, 1e-6);
}

/// A target whose only alignments run through a `−inf` log-probability has an infinite loss and
/// no gradient; NaN in a frame the sample reads gives NaN; a zero upstream weight gives zeros
/// even there; a second backward through the same graph gives the same gradient.
#[test]
fn ctc_masked_nan_and_second_backward() {
    let (t, n, c) = (6usize, 3usize, 4usize);
    let mut r = ChaCha8Rng::seed_from_u64(3);
    let logits: Vec<f64> = (0..t * n * c).map(|_| r.gen_range(-2.0..2.0)).collect();
    let mut lp = log_softmax(&Tensor::from_vec(logits, (t, n, c), &Device::Cpu).unwrap(), 2)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    // Sample 0: label 2 is masked in every frame; sample 1 reads a NaN; sample 2 is ordinary.
    for tt in 0..t {
        lp[(tt * n) * c + 2] = NEG;
    }
    lp[(3 * n + 1) * c] = f64::NAN;
    let labels = vec![vec![1, 2], vec![3, 1], vec![1, 1, 3]];
    let case = Case {
        t,
        n,
        c,
        blank: 0,
        lp: lp.clone(),
        labels,
        input_lengths: vec![6, 5, 6],
    };
    let (losses, grad, _) = case.reference();
    assert_eq!(losses[0], f64::INFINITY);
    assert!(losses[1].is_nan() && losses[2].is_finite());
    for w in [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]] {
        let (got_l, got_g) = case.run(DType::F64, false, &w, &mut r);
        assert_close("losses", &got_l, &losses, 1e-12, 1e-12);
        let mut want = scaled(&case, &grad, &w);
        // Sample 1's NaN reaches its gradient unless its weight is 0.
        for tt in 0..5 {
            for k in 0..c {
                want[(tt * n + 1) * c + k] = if w[1] == 0.0 { 0.0 } else { f64::NAN };
            }
        }
        assert_close("gradient", &got_g, &want, 1e-10, 1e-12);
    }
    // Two backward passes through one graph.
    let lp = Tensor::from_vec(
        case.lp
            .iter()
            .map(|v| if v.is_nan() { -1.0 } else { *v })
            .collect::<Vec<f64>>(),
        (t, n, c),
        &Device::Cpu,
    )
    .unwrap();
    let var = Var::from_tensor(&lp).unwrap();
    let targets = Tensor::new(&[1i64, 2, 3, 1, 1, 1, 3], &Device::Cpu).unwrap();
    let il = Tensor::new(&[6i64, 5, 6], &Device::Cpu).unwrap();
    let tl = Tensor::new(&[2i64, 2, 3], &Device::Cpu).unwrap();
    let loss = ctc_loss(var.as_tensor(), &targets, &il, &tl, 0, true, Reduction::Mean).unwrap();
    let read = |g: candle_core::backprop::GradStore| {
        g.get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    };
    let first = read(loss.backward().unwrap());
    let second = read(loss.backward().unwrap());
    assert!(first.iter().any(|&v| v != 0.0));
    assert_eq!(first, second);
}
