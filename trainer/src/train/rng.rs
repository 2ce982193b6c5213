//! Seeds and random generators: every random choice of a run comes from one seed.
//!
//! A run's seed is split into independent streams by name ([`derive_seed`]), so adding a new
//! random choice somewhere never shifts the numbers drawn elsewhere. The generator is
//! [`ChaCha8Rng`], whose output is specified and portable (same numbers on every platform and
//! build), unlike `rand`'s `StdRng`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// SplitMix64 finaliser (Steele, Lea and Flood 2014): a bijective mix of 64 bits.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of the stream named `parts` under `seed`: FNV-1a over the parts (with a separator),
/// mixed with `seed` by SplitMix64. Stable across builds and platforms (no `std` hasher).
///
/// ```
/// use trainer::rng::derive_seed;
/// assert_eq!(derive_seed(7, &["mlp", "init"]), derive_seed(7, &["mlp", "init"]));
/// assert_ne!(derive_seed(7, &["mlp", "init"]), derive_seed(8, &["mlp", "init"]));
/// assert_ne!(derive_seed(7, &["mlp", "init"]), derive_seed(7, &["mlpi", "nit"]));
/// ```
pub fn derive_seed(seed: u64, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    splitmix64(splitmix64(seed) ^ h)
}

/// A ChaCha8 generator for the stream named `parts` under `seed`.
pub fn stream(seed: u64, parts: &[&str]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive_seed(seed, parts))
}

/// `n` draws from U(−bound, bound), as f64.
pub fn uniform(rng: &mut ChaCha8Rng, n: usize, bound: f64) -> Vec<f64> {
    (0..n).map(|_| rng.gen_range(-bound..bound)).collect()
}

/// `n` draws from the standard normal N(0, 1) (Box–Muller on the generator's uniforms).
pub fn normal(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]
        let u2: f64 = rng.gen::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        out.push(r * t.cos());
        out.push(r * t.sin());
    }
    out.truncate(n);
    out
}

/// A permutation of `0..n` (Fisher–Yates, the generator's draws).
pub fn permutation(rng: &mut ChaCha8Rng, n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.gen_range(0..=i);
        idx.swap(i, j);
    }
    idx
}
