//! Edge cases of the fused overlap statistics: rows of length 0 and 1, rows crossing the 64K
//! span and the 512-element block, `N·C = 1` with a large spatial size, empty batches, strided
//! inputs, one side tracking, upstream gradients ≠ 1; fused against composite in f64.

use candle_core::{DType, Device, Tensor, Var};
use loss_core::kernel::{with_path, Path};
use loss_seg::overlap::Overlap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// `|a − b| ≤ abs + rel·max(|a|, |b|)` elementwise, where `abs` also grows with the largest
/// finite `|b|` of the vector (f32 gradients cancel).
fn assert_close(what: &str, a: &[f64], b: &[f64], rel: f64, abs: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let big = b.iter().filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(v.abs()));
    let abs = abs + rel * 0.1 * big;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let ok = x == y || (x.is_nan() && y.is_nan()) || (x - y).abs() <= abs + rel * x.abs().max(y.abs());
        assert!(ok, "{what}[{i}]: fused {x} vs composite {y}");
    }
}

fn random(seed: u64, dims: &[usize], dtype: DType) -> Tensor {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    let v: Vec<f64> = (0..n).map(|_| r.gen_range(0.0..1.0)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// `(I, P, G)` and the gradients of `Σ (a·I + b·P + c·G)·k` (or its square) w.r.t. pred, target.
fn run(p: &Tensor, t: &Tensor, squared: bool, fused: bool, track: (bool, bool), sq: bool) -> [Vec<f64>; 3] {
    let (vp, vt) = (Var::from_tensor(p).unwrap(), Var::from_tensor(t).unwrap());
    let a = if track.0 { vp.as_tensor().clone() } else { p.clone() };
    let b = if track.1 { vt.as_tensor().clone() } else { t.clone() };
    let o = if fused {
        with_path(Path::Fused, || Overlap::compute(&a, &b, squared))
    } else {
        with_path(Path::Composite, || Overlap::compute(&a, &b, squared))
    }
    .unwrap();
    let total = (o.intersection.affine(0.7, 0.0).unwrap() + o.pred_sum.affine(-1.3, 0.0).unwrap()).unwrap();
    let total = (total + o.target_sum.affine(2.1, 0.0).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let total = if sq {
        total.sqr().unwrap()
    } else {
        total.affine(3.0, 0.0).unwrap()
    };
    let g = total.backward().unwrap();
    let mut stats = flat(&o.intersection);
    stats.extend(flat(&o.pred_sum));
    stats.extend(flat(&o.target_sum));
    let get = |v: &Var| g.get(v.as_tensor()).map(flat).unwrap_or_default();
    [stats, get(&vp), get(&vt)]
}

fn check(what: &str, p: &Tensor, t: &Tensor) {
    let tol = if p.dtype() == DType::F32 { 2e-5 } else { 1e-11 };
    for squared in [false, true] {
        for track in [(true, true), (true, false), (false, true)] {
            for sq in [false, true] {
                let f = run(p, t, squared, true, track, sq);
                let c = run(p, t, squared, false, track, sq);
                let w = format!("{what} squared={squared} track={track:?} sq={sq}");
                for (k, name) in ["stats", "d/dpred", "d/dtarget"].iter().enumerate() {
                    // Gradients of the square scale with the (large) sum: relative only.
                    assert_close(&format!("{w} {name}"), &f[k], &c[k], tol, if sq { 0.0 } else { tol });
                }
            }
        }
    }
}

#[test]
fn shapes_around_spans_and_blocks() {
    for dims in [
        vec![1usize, 1, 1],
        vec![2, 3, 1],
        vec![1, 1, 511],
        vec![1, 1, 513],
        vec![3, 2, 1, 1],
        vec![1, 1, 65535],
        vec![1, 1, 65536],
        vec![1, 1, 65537],
        vec![2, 1, 65537],
        vec![1, 3, 131073],
        vec![1, 2, 16384],
        vec![0, 3, 7],
        vec![2, 0, 7],
        vec![2, 3, 0],
        vec![4, 5, 3, 0],
    ] {
        for dtype in [DType::F64, DType::F32] {
            let p = random(1, &dims, dtype);
            let t = random(2, &dims, dtype);
            check(&format!("{dims:?} {dtype:?}"), &p, &t);
        }
    }
}

#[test]
fn large_single_row_f64_reference() {
    // N·C = 1, 3·2^17 + 5 elements: f64 sums against a plain f64 loop.
    let n = 3 * (1 << 17) + 5;
    let p = random(3, &[1, 1, n], DType::F32);
    let t = random(4, &[1, 1, n], DType::F32);
    let o = with_path(Path::Fused, || Overlap::compute(&p, &t, false)).unwrap();
    let (pv, tv) = (flat(&p), flat(&t));
    let i: f64 = pv.iter().zip(&tv).map(|(a, b)| a * b).sum();
    let ps: f64 = pv.iter().sum();
    let ts: f64 = tv.iter().sum();
    for (name, got, want) in [
        ("I", flat(&o.intersection)[0], i),
        ("P", flat(&o.pred_sum)[0], ps),
        ("G", flat(&o.target_sum)[0], ts),
    ] {
        assert!(
            (got - want).abs() <= 2e-7 * want.abs(),
            "{name}: fused {got} vs f64 {want}"
        );
    }
}

#[test]
fn strided_inputs() {
    for dtype in [DType::F64, DType::F32] {
        // [N, C, H, W] seen through a transpose of the spatial dims and through a narrow.
        let p = random(5, &[2, 3, 40, 30], dtype);
        let t = random(6, &[2, 3, 40, 30], dtype);
        let go = |fused: bool| {
            let (vp, vt) = (Var::from_tensor(&p).unwrap(), Var::from_tensor(&t).unwrap());
            let a = vp.as_tensor().transpose(2, 3).unwrap();
            let b = vt.as_tensor().narrow(2, 0, 30).unwrap().transpose(2, 3).unwrap();
            let a = a.narrow(3, 5, 30).unwrap();
            let o = if fused {
                with_path(Path::Fused, || Overlap::compute(&a, &b, true))
            } else {
                with_path(Path::Composite, || Overlap::compute(&a, &b, true))
            }
            .unwrap();
            let total = (o.intersection + o.pred_sum.affine(2.0, 0.0).unwrap()).unwrap();
            let total = (total - o.target_sum).unwrap().sum_all().unwrap();
            let g = total.backward().unwrap();
            (
                flat(g.get(vp.as_tensor()).unwrap()),
                flat(g.get(vt.as_tensor()).unwrap()),
            )
        };
        let (f, c) = (go(true), go(false));
        let tol = if dtype == DType::F32 { 2e-5 } else { 1e-11 };
        assert_close(&format!("{dtype:?} strided d/dpred"), &f.0, &c.0, tol, tol);
        assert_close(&format!("{dtype:?} strided d/dtarget"), &f.1, &c.1, tol, tol);
    }
}
