//! Edge cases of the fused box losses: pair counts around the 64-pair block and the parallel
//! chunk, degenerate boxes at block boundaries, upstream gradients ≠ 1, a second backward, one
//! side tracking, strided inputs; fused against composite.

use candle_core::{DType, Device, Result, Tensor, Var};
use loss_bbox::{aligned_loss, AlignedLoss, IouMode};
use loss_core::kernel::{with_path, Path};
use loss_core::Reduction;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const KINDS: [AlignedLoss; 5] = [
    AlignedLoss::Iou(IouMode::Linear),
    AlignedLoss::Giou,
    AlignedLoss::Diou,
    AlignedLoss::Ciou,
    AlignedLoss::Eiou,
];

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// Random xyxy pairs, with degenerate boxes (zero width, zero height, a point, identical pair,
/// disjoint pair) at pairs 0, 63, 64, 65, 127, 128 and the last.
fn pairs(seed: u64, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let b = |r: &mut ChaCha8Rng| {
        let (x, y) = (r.gen_range(-10.0..10.0), r.gen_range(-10.0..10.0));
        [x, y, x + r.gen_range(0.1..5.0), y + r.gen_range(0.1..5.0)]
    };
    let mut p: Vec<[f64; 4]> = (0..n).map(|_| b(&mut r)).collect();
    let mut t: Vec<[f64; 4]> = (0..n).map(|_| b(&mut r)).collect();
    let special = [0, 63, 64, 65, 127, 128, n.saturating_sub(1)];
    for (k, &i) in special.iter().enumerate() {
        if i >= n {
            continue;
        }
        match k % 5 {
            0 => p[i][2] = p[i][0],
            1 => t[i][3] = t[i][1],
            2 => {
                p[i] = [1.0, 1.0, 1.0, 1.0];
                t[i] = [1.0, 1.0, 1.0, 1.0];
            }
            3 => t[i] = p[i],
            _ => t[i] = [p[i][2] + 3.0, p[i][3] + 3.0, p[i][2] + 4.0, p[i][3] + 5.0],
        }
    }
    (p.concat(), t.concat())
}

fn tensor(v: &[f64], dtype: DType) -> Tensor {
    Tensor::from_vec(v.to_vec(), (v.len() / 4, 4), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn go(
    kind: AlignedLoss,
    p: &Tensor,
    t: &Tensor,
    r: Reduction,
    k: Path,
    track: (bool, bool),
    head: fn(&Tensor) -> Result<Tensor>,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (vp, vt) = (Var::from_tensor(p).unwrap(), Var::from_tensor(t).unwrap());
    let a = if track.0 { vp.as_tensor().clone() } else { p.clone() };
    let b = if track.1 { vt.as_tensor().clone() } else { t.clone() };
    let out = with_path(k, || aligned_loss(kind, &a, &b, 1e-7, r)).unwrap();
    let g = head(&out).unwrap().backward().unwrap();
    let get = |v: &Var| g.get(v.as_tensor()).map(flat).unwrap_or_default();
    (flat(&out), get(&vp), get(&vt))
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

fn compare(
    what: &str,
    kind: AlignedLoss,
    p: &Tensor,
    t: &Tensor,
    r: Reduction,
    track: (bool, bool),
    head: fn(&Tensor) -> Result<Tensor>,
) {
    let f = go(kind, p, t, r, Path::Fused, track, head);
    let c = go(kind, p, t, r, Path::Composite, track, head);
    let (rel, abs) = if p.dtype() == DType::F64 {
        (1e-8, 1e-10)
    } else {
        (2e-4, 2e-5)
    };
    assert_close(&format!("{what} value"), &f.0, &c.0, rel, abs);
    assert_close(&format!("{what} d/dpred"), &f.1, &c.1, rel, abs);
    assert_close(&format!("{what} d/dtarget"), &f.2, &c.2, rel, abs);
}

#[test]
fn pair_counts_around_blocks_and_chunks() {
    let sum: fn(&Tensor) -> Result<Tensor> = |l| l.sum_all();
    for n in [0usize, 1, 63, 64, 65, 127, 128, 129, 8191, 8193, 16383, 16384, 16385] {
        let (p, t) = pairs(n as u64, n);
        for dtype in [DType::F32, DType::F64] {
            let (p, t) = (tensor(&p, dtype), tensor(&t, dtype));
            for kind in KINDS {
                for r in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                    compare(
                        &format!("{kind:?} n={n} {dtype:?} {r}"),
                        kind,
                        &p,
                        &t,
                        r,
                        (true, true),
                        sum,
                    );
                }
            }
        }
    }
}

#[test]
fn upstream_not_one_and_one_side_tracking() {
    type Head = fn(&Tensor) -> Result<Tensor>;
    let heads: [(&str, Head); 4] = [
        ("x3", |l| l.sum_all()?.affine(3.0, 0.0)),
        ("sqr", |l| l.sum_all()?.sqr()),
        ("twice", |l| {
            let s = l.sum_all()?;
            s.add(&s)
        }),
        ("x1 after sum of two", |l| {
            l.affine(0.5, 0.0)?.add(&l.affine(0.5, 0.0)?)?.sum_all()
        }),
    ];
    for n in [70usize, 16390] {
        let (p, t) = pairs(5, n);
        for dtype in [DType::F32, DType::F64] {
            let (p, t) = (tensor(&p, dtype), tensor(&t, dtype));
            for kind in KINDS {
                for r in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                    for track in [(true, true), (true, false), (false, true)] {
                        for (h, head) in heads {
                            let what = format!("{kind:?} n={n} {dtype:?} {r} {track:?} {h}");
                            compare(&what, kind, &p, &t, r, track, head);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn backward_twice_and_strided_boxes() {
    for dtype in [DType::F32, DType::F64] {
        let (p, t) = pairs(8, 130);
        let (p, t) = (tensor(&p, dtype), tensor(&t, dtype));
        for kind in KINDS {
            for r in [Reduction::Mean, Reduction::Sum] {
                let vp = Var::from_tensor(&p).unwrap();
                let out = with_path(Path::Fused, || aligned_loss(kind, vp.as_tensor(), &t, 1e-7, r)).unwrap();
                let g1 = flat(out.backward().unwrap().get(vp.as_tensor()).unwrap());
                let g2 = flat(out.backward().unwrap().get(vp.as_tensor()).unwrap());
                assert_close(&format!("{kind:?} {dtype:?} {r} second backward"), &g2, &g1, 1e-6, 1e-9);
            }
            // Boxes as a strided view: every second row of a [2n, 4] tensor, and a transposed [4, n].
            let go = |k: Path| {
                let big = Tensor::cat(&[&p, &t], 1).unwrap().reshape((260, 4)).unwrap();
                let v = Var::from_tensor(&big).unwrap();
                let rows = v.as_tensor().reshape((130, 8)).unwrap();
                let (a, b) = (rows.narrow(1, 0, 4).unwrap(), rows.narrow(1, 4, 4).unwrap());
                let out = with_path(k, || aligned_loss(kind, &a, &b, 1e-7, Reduction::None)).unwrap();
                let g = out.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                (flat(&out), flat(g.get(v.as_tensor()).unwrap()))
            };
            let (f, c) = (go(Path::Fused), go(Path::Composite));
            let (rel, abs) = if dtype == DType::F64 {
                (1e-8, 1e-10)
            } else {
                (2e-4, 2e-5)
            };
            assert_close(&format!("{kind:?} {dtype:?} strided value"), &f.0, &c.0, rel, abs);
            assert_close(&format!("{kind:?} {dtype:?} strided grad"), &f.1, &c.1, rel, abs);
        }
    }
}
