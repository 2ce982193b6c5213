//! Exact Euclidean distance transform of a boolean mask of any rank, on the host.
//!
//! `edt(M)(i)` is the Euclidean distance (unit spacing) from pixel `i` to the nearest pixel where
//! `M` is false, and 0 where `M` is false: `scipy.ndimage.distance_transform_edt(M)`. Computed
//! as the squared distance by the separable algorithm of Felzenszwalb & Huttenlocher ("Distance
//! Transforms of Sampled Functions", Theory of Computing 8, 2012): one pass along each axis of
//! the 1-D lower envelope of parabolas `f(q) + (p − q)²`, `O(n)` per line, exact in f64 for
//! any image that fits in memory (the squared distances are integers below 2⁵³).

/// The squared distance of every pixel of a row-major mask of shape `dims` to the nearest
/// pixel where `mask` is false (0 there). A mask without any false pixel gives `+inf`
/// everywhere.
///
/// # Panics
/// Never for consistent input; `mask.len()` must equal the product of `dims` (a shorter mask is
/// read only as far as it goes).
pub fn squared_edt(mask: &[bool], dims: &[usize]) -> Vec<f64> {
    let mut d: Vec<f64> = mask.iter().map(|&m| if m { f64::INFINITY } else { 0.0 }).collect();
    let total: usize = dims.iter().product();
    if total == 0 || d.len() != total {
        return d;
    }
    let longest = dims.iter().copied().max().unwrap_or(0);
    let mut f = vec![0.0; longest];
    let mut out = vec![0.0; longest];
    let mut v = vec![0usize; longest];
    let mut z = vec![0.0; longest + 1];
    for axis in 0..dims.len() {
        let n = dims[axis];
        let stride: usize = dims[axis + 1..].iter().product();
        let outer = total / (n * stride);
        for o in 0..outer {
            for inner in 0..stride {
                let base = o * n * stride + inner;
                for (q, fq) in f.iter_mut().enumerate().take(n) {
                    *fq = d[base + q * stride];
                }
                lower_envelope(&f[..n], &mut out[..n], &mut v, &mut z);
                for (q, &value) in out.iter().enumerate().take(n) {
                    d[base + q * stride] = value;
                }
            }
        }
    }
    d
}

/// The Euclidean distance transform, `√` of [`squared_edt`].
pub fn edt(mask: &[bool], dims: &[usize]) -> Vec<f64> {
    squared_edt(mask, dims).into_iter().map(f64::sqrt).collect()
}

/// One 1-D pass: `out(p) = min_q f(q) + (p − q)²` over the finite `f(q)` (`+inf` when there is
/// none), by the lower envelope of the parabolas rooted at the finite samples.
fn lower_envelope(f: &[f64], out: &mut [f64], v: &mut [usize], z: &mut [f64]) {
    let n = f.len();
    let mut k: usize = 0;
    let mut any = false;
    for q in 0..n {
        if !f[q].is_finite() {
            continue;
        }
        if !any {
            any = true;
            v[0] = q;
            z[0] = f64::NEG_INFINITY;
            z[1] = f64::INFINITY;
            k = 0;
            continue;
        }
        let qf = q as f64;
        loop {
            let r = v[k];
            let rf = r as f64;
            let s = ((f[q] + qf * qf) - (f[r] + rf * rf)) / (2.0 * qf - 2.0 * rf);
            if s <= z[k] && k > 0 {
                k -= 1;
                continue;
            }
            if s <= z[k] {
                // k == 0 and the new parabola dominates from −inf: it replaces the first.
                v[0] = q;
                z[0] = f64::NEG_INFINITY;
                z[1] = f64::INFINITY;
                break;
            }
            k += 1;
            v[k] = q;
            z[k] = s;
            z[k + 1] = f64::INFINITY;
            break;
        }
    }
    if !any {
        out.iter_mut().for_each(|o| *o = f64::INFINITY);
        return;
    }
    let mut j = 0;
    for (p, o) in out.iter_mut().enumerate() {
        let pf = p as f64;
        while z[j + 1] < pf {
            j += 1;
        }
        let r = v[j] as f64;
        *o = (pf - r) * (pf - r) + f[v[j]];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force: the distance to the nearest false pixel.
    fn brute(mask: &[bool], dims: &[usize]) -> Vec<f64> {
        let coords = |mut i: usize| -> Vec<f64> {
            let mut c = vec![0.0; dims.len()];
            for a in (0..dims.len()).rev() {
                c[a] = (i % dims[a]) as f64;
                i /= dims[a];
            }
            c
        };
        (0..mask.len())
            .map(|i| {
                let ci = coords(i);
                (0..mask.len())
                    .filter(|&j| !mask[j])
                    .map(|j| coords(j).iter().zip(&ci).map(|(a, b)| (a - b) * (a - b)).sum::<f64>())
                    .fold(f64::INFINITY, f64::min)
            })
            .collect()
    }

    #[test]
    fn matches_brute_force_in_1_2_and_3_d() {
        let mut seed = 12345u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as f64 / (1u64 << 31) as f64
        };
        for dims in [vec![9], vec![7, 5], vec![1, 6], vec![4, 3, 5], vec![2, 1, 7]] {
            for density in [0.1, 0.5, 0.9, 1.0] {
                let n: usize = dims.iter().product();
                let mask: Vec<bool> = (0..n).map(|_| next() < density).collect();
                let got = squared_edt(&mask, &dims);
                let want = brute(&mask, &dims);
                assert_eq!(got, want, "dims {dims:?}, density {density}, mask {mask:?}");
            }
        }
    }

    #[test]
    fn known_values() {
        // One false pixel in the middle of a 3x3 image: distances 1 and sqrt(2).
        let mut mask = vec![true; 9];
        mask[4] = false;
        let d = edt(&mask, &[3, 3]);
        let r2 = 2f64.sqrt();
        assert_eq!(d, vec![r2, 1.0, r2, 1.0, 0.0, 1.0, r2, 1.0, r2]);
    }
}
