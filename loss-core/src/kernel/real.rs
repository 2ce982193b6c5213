//! [`Real`], the float type every fused kernel is written over, and `exp` / `ln` for f32 that
//! vectorise.
//!
//! libm's `expf` and `logf` are function calls, which stop a loop from vectorising. The f32
//! versions here are branch-free polynomial evaluations on the bits of the argument (no
//! float-to-int conversions, no table look-ups), so that LLVM turns a loop over a slice into
//! 8-lane AVX2 code; f64 keeps libm (the f64 kernels are the exact reference, not the fast path).
//! [`exp_parts_f64`] is an f64 exponential that vectorises and keeps any range (`m·2ᵏ`), for
//! CTC's recursion.

use candle_core::WithDType;
use num_traits::Float;

/// The float every fused kernel is written over: f32 (fast, vectorisable transcendental
/// functions) or f64 (libm).
///
/// It is `num_traits::Float` (`abs`, `sqrt`, `atan`, `max`, `powf`, ...) and Candle's
/// `WithDType` (`T::from_f64`, the CPU storage of the dtype), plus the functions below. Write
/// `x.f64()` for the value in f64: `to_f64` is named by both supertraits.
pub trait Real: Float + WithDType + Send + Sync + 'static {
    /// `eˣ`: within 2 ulp for f32 ([`exp_f32`]), libm for f64.
    fn fast_exp(self) -> Self;
    /// `ln x`: within 2 ulp for f32 ([`ln_f32`]), libm for f64.
    fn fast_ln(self) -> Self;
    /// `ln(1 + e)` for `e` in `[0, 1]`: within 2 ulp for f32 ([`ln1p_unit_f32`]), libm for f64.
    fn ln1p_unit(self) -> Self;
    /// The value as f64 (exact).
    fn f64(self) -> f64;
    /// `v` rounded to this type.
    fn of(v: f64) -> Self;
    /// The slice as f32 when `Self` is f32 (`None` for f64): for a kernel whose f32 path is a
    /// different loop (8 f32 lanes) from its f64 one.
    fn as_f32(v: &[Self]) -> Option<&[f32]>;
    /// `v` as a vector of `Self` when `Self` is f32 (`None` for f64): the output of such a loop.
    fn from_f32_vec(v: Vec<f32>) -> Option<Vec<Self>>;
}

impl Real for f32 {
    #[inline(always)]
    fn fast_exp(self) -> Self {
        exp_f32(self)
    }
    #[inline(always)]
    fn fast_ln(self) -> Self {
        ln_f32(self)
    }
    #[inline(always)]
    fn ln1p_unit(self) -> Self {
        ln1p_unit_f32(self)
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn of(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn as_f32(v: &[Self]) -> Option<&[f32]> {
        Some(v)
    }
    #[inline(always)]
    fn from_f32_vec(v: Vec<f32>) -> Option<Vec<Self>> {
        Some(v)
    }
}

impl Real for f64 {
    #[inline(always)]
    fn fast_exp(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn fast_ln(self) -> Self {
        self.ln()
    }
    #[inline(always)]
    fn ln1p_unit(self) -> Self {
        self.ln_1p()
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn of(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    #[inline(always)]
    fn from_f32_vec(_: Vec<f32>) -> Option<Vec<Self>> {
        None
    }
}

/// `e^x` for f32 without a libm call, so that row loops vectorise: Cody–Waite range reduction
/// and Cephes' degree-7 minimax polynomial (Moshier, *Cephes* `expf`), within 2 ulp of
/// `f32::exp`; exact 0 below −103.97, +inf from 88.72284 (the first f32 whose exponential rounds
/// past `f32::MAX`), NaN for NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to the nearest integer without a libm `floor` call (which baseline
    // x86-64 lacks as an instruction and which would stop the loop from vectorising).
    const SHIFT: f32 = 12_582_912.0;
    let xc = x.clamp(-103.0, 88.722_83);
    let tk = xc * LOG2E + SHIFT;
    let kf = tk - SHIFT;
    let r = xc - kf * C1 - kf * C2;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^k in two factors so that k down to −150 stays representable (subnormals).
    // k is in the low mantissa bits of tk (no float-to-int conversion, which vectorises badly).
    let k = (tk.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
    let k1 = k >> 1;
    let s1 = f32::from_bits(((k1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((k - k1 + 127) as u32) << 23);
    let v = e * s1 * s2;
    if x.is_nan() {
        x
    } else if x > 88.722_83 {
        f32::INFINITY
    } else if x < -103.97 {
        0.0
    } else {
        v
    }
}

/// `2·atanh(s) = ln((1 + s)/(1 − s))` for `|s| ≤ 1/3`: the odd series to `s¹⁵`, whose first
/// omitted term is below `2·s¹⁷/17 ≤ 1.6e-9·|s|` (a tenth of an f32 ulp).
#[inline(always)]
fn two_atanh_f32(s: f32) -> f32 {
    let z = s * s;
    let p = ((((((z * (1.0 / 15.0) + 1.0 / 13.0) * z + 1.0 / 11.0) * z + 1.0 / 9.0) * z + 1.0 / 7.0) * z + 1.0 / 5.0)
        * z
        + 1.0 / 3.0)
        * z;
    let s2 = s + s;
    s2 + s2 * p
}

/// `ln(1 + e)` for f32 `e` in `[0, 1]` (the `softplus` term `ln(1 + e^{−|x|})`) without a libm
/// call: `2·atanh(e / (2 + e))`, which keeps full relative precision for tiny `e` (no `1 + e`
/// is rounded). Within 2 ulp of `f32::ln_1p` on `[0, 1]`; NaN for NaN.
#[inline(always)]
pub fn ln1p_unit_f32(e: f32) -> f32 {
    two_atanh_f32(e / (2.0 + e))
}

/// `ln x` for f32 without a libm call: `x = m·2ᵏ` with `m` in `[√½, √2)` read from the bits, then
/// `k·ln 2 + 2·atanh((m − 1)/(m + 1))`. Within 2 ulp of `f32::ln` for positive finite `x`
/// (subnormals included); `−inf` at 0, `+inf` at `+inf`, NaN for negative `x` and NaN.
#[inline(always)]
pub fn ln_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Subnormals are scaled into the normal range first (2²³).
    let tiny = x < f32::MIN_POSITIVE;
    let xs = if tiny { x * 8_388_608.0 } else { x };
    let bits = xs.to_bits() as i32;
    // Exponent such that the mantissa lands in [√½, √2): offset the bits by those of √½.
    let off = bits.wrapping_sub(0x3f35_04f3);
    let k = (off >> 23) - if tiny { 23 } else { 0 };
    let m = f32::from_bits((bits.wrapping_sub(off & !0x007f_ffff)) as u32);
    let kf = k as f32;
    let v = kf * LN2_HI + (two_atanh_f32((m - 1.0) / (m + 1.0)) + kf * LN2_LO);
    if x.is_nan() || x < 0.0 {
        f32::NAN
    } else if x == 0.0 {
        f32::NEG_INFINITY
    } else if x == f32::INFINITY {
        x
    } else {
        v
    }
}

/// `eˣ = m·2ᵏ` for f64 without a libm call and without overflow or underflow, so that a loop
/// over f64 slices vectorises (4 lanes with AVX2) and a product of many exponentials keeps its
/// range (CTC's recursion, whose values leave f64's range): `(m, k)` with `m` in `[√½, √2]` and
/// `k` an integer-valued f64. Cody–Waite reduction `x = k·ln 2 + r` with `|r| ≤ ½ ln 2`
/// (fdlibm's split of `ln 2`), then the Taylor polynomial of `eʳ` to degree 13 (truncation below
/// 5e-18 relative): `m·2ᵏ` is within 2 ulp of `eˣ` for `|x| ≤ 1.4e6` (exact `k·ln 2`), and its
/// `ln` within `|x|·2⁻⁷⁵` beyond. `x` is clamped to `±2⁵⁰`, infinities included (a caller that
/// needs `e^−∞ = 0` tests for it); NaN gives NaN in `m`.
#[inline(always)]
pub fn exp_parts_f64(x: f64) -> (f64, f64) {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    // fdlibm's ln2_hi (its low 21 bits zero, so that k·LN2_HI is exact) and ln2_lo.
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    // Adding 1.5·2⁵² rounds to the nearest integer (no libm `round`, which baseline x86-64 lacks
    // as an instruction).
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    const LIMIT: f64 = 1_125_899_906_842_624.0;
    const C: [f64; 12] = [
        1.0 / 6_227_020_800.0,
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
    ];
    let xc = x.clamp(-LIMIT, LIMIT);
    let k = (xc * LOG2E + SHIFT) - SHIFT;
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    let mut p = C[0];
    for c in &C[1..] {
        p = p * r + c;
    }
    (1.0 + (r + r * r * p), k)
}

/// `if c { a } else { b }` with both arms already computed (a select, not a branch).
#[inline(always)]
pub fn select<F: Real>(c: bool, a: F, b: F) -> F {
    if c {
        a
    } else {
        b
    }
}

/// `(σ(x), σ(−x), softplus(−x))` from one `e^{−|x|}`, stable for every `x` (`softplus(−x) =
/// ln(1 + e^{−x})`); NaN gives NaN.
#[inline(always)]
pub fn logistic<F: Real>(x: F) -> (F, F, F) {
    let e = (-x.abs()).fast_exp();
    let one = F::one();
    let big = one / (one + e);
    let small = e * big;
    let sp = num_traits::Float::max(-x, F::zero()) + e.ln1p_unit();
    if x >= F::zero() {
        (big, small, sp)
    } else {
        (small, big, sp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        if a == b {
            return 0;
        }
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_f32_within_2_ulp_of_libm() {
        let mut worst = 0;
        let mut x = -103.9f32;
        while x < 88.7 {
            let want = ((x as f64).exp()) as f32;
            worst = worst.max(ulps(exp_f32(x), want));
            x += 0.000_731;
        }
        assert!(worst <= 2, "max error {worst} ulp");
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-200.0), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn ln_f32_within_2_ulp_over_every_binade() {
        let mut worst = (0, 0.0f32);
        // Every 97th f32 bit pattern from the smallest subnormal to the largest finite value.
        let mut b = 1u32;
        while b < f32::MAX.to_bits() {
            let x = f32::from_bits(b);
            let want = (x as f64).ln() as f32;
            let u = ulps(ln_f32(x), want);
            if u > worst.0 {
                worst = (u, x);
            }
            b += 97;
        }
        assert!(worst.0 <= 2, "max error {} ulp at {}", worst.0, worst.1);
        assert_eq!(ln_f32(1.0), 0.0);
        assert_eq!(ln_f32(0.0), f32::NEG_INFINITY);
        assert_eq!(ln_f32(-0.0), f32::NEG_INFINITY);
        assert_eq!(ln_f32(f32::INFINITY), f32::INFINITY);
        assert!(ln_f32(-1.0).is_nan());
        assert!(ln_f32(f32::NAN).is_nan());
    }

    fn ulps64(a: f64, b: f64) -> u64 {
        if a == b {
            return 0;
        }
        (a.to_bits() as i128 - b.to_bits() as i128).unsigned_abs() as u64
    }

    #[test]
    fn exp_parts_f64_within_2_ulp_of_libm() {
        use std::f64::consts::{FRAC_1_SQRT_2, SQRT_2};
        let mut worst = (0, 0.0f64);
        // Dense steps over the range of normal results, and small arguments.
        let mut x = -708.0f64;
        while x < 709.0 {
            for y in [x, x * (1.0 + 1e-9), -1e-3 * x] {
                let (m, k) = exp_parts_f64(y);
                assert!(
                    (0.999_999 * FRAC_1_SQRT_2..=1.000_001 * SQRT_2).contains(&m) && k == k.round(),
                    "{y}: {m} · 2^{k}"
                );
                let u = ulps64(m * 2f64.powi(k as i32), y.exp());
                if u > worst.0 {
                    worst = (u, y);
                }
            }
            x += 0.000_913_7;
        }
        assert!(worst.0 <= 2, "max error {} ulp at {}", worst.0, worst.1);
        assert_eq!(exp_parts_f64(0.0), (1.0, 0.0));
        assert!(exp_parts_f64(f64::NAN).0.is_nan());
        // Far outside f64's range: m·2ᵏ still holds eˣ (its log to 1e-15 relative).
        for x in [-1e4, -123_456.789, 5e3, -1e6] {
            let (m, k) = exp_parts_f64(x);
            let ln = m.ln() + k * std::f64::consts::LN_2;
            assert!(((ln - x) / x).abs() < 1e-15, "{x}: {ln}");
        }
    }

    #[test]
    fn ln1p_unit_f32_within_2_ulp_on_0_1() {
        let mut worst = (0, 0.0f32);
        let mut e = 1.0f32;
        // Down through the binades to the subnormals, and densely on [0, 1].
        while e > 0.0 {
            for k in 0..64 {
                let x = e * (1.0 - k as f32 / 128.0);
                let u = ulps(ln1p_unit_f32(x), (x as f64).ln_1p() as f32);
                if u > worst.0 {
                    worst = (u, x);
                }
            }
            e *= 0.5;
        }
        assert!(worst.0 <= 2, "max error {} ulp at {}", worst.0, worst.1);
        assert_eq!(ln1p_unit_f32(0.0), 0.0);
        assert!(ln1p_unit_f32(f32::NAN).is_nan());
    }
}
