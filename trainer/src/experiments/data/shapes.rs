//! Synthetic segmentation images: small bright discs and rectangles on a noisy background.
//!
//! Each image is `size × size`, with one to three objects (a disc of radius 2–5 pixels or an
//! axis-aligned rectangle of sides 3–9 pixels, fully inside the image, possibly overlapping),
//! covering a few percent of the pixels. Pixel value: 1 inside an object, 0 outside, plus
//! Gaussian noise of standard deviation `noise`. Everything comes from the given generator.

use crate::rng;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Settings of the generator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ShapesConfig {
    /// Image side in pixels (64).
    pub size: usize,
    /// Standard deviation of the Gaussian pixel noise (0.8).
    pub noise: f64,
    /// Most objects per image (3; at least one).
    pub max_objects: usize,
}

impl Default for ShapesConfig {
    fn default() -> Self {
        Self {
            size: 48,
            noise: 0.8,
            max_objects: 3,
        }
    }
}

/// A batch of images and their masks.
#[derive(Debug, Clone, PartialEq)]
pub struct Shapes {
    /// Number of images.
    pub n: usize,
    /// Side.
    pub size: usize,
    /// Pixel values, `[n, size, size]` row-major.
    pub images: Vec<f64>,
    /// Masks (1 = object), `[n, size, size]` row-major.
    pub masks: Vec<u8>,
}

impl Shapes {
    /// The share of object pixels.
    pub fn foreground_fraction(&self) -> f64 {
        self.masks.iter().filter(|&&m| m == 1).count() as f64 / self.masks.len().max(1) as f64
    }
}

/// Draws one object inside an `s × s` image and returns its pixels `(x, y)`: with probability ½
/// a disc (radius uniform in [2, 5) px, centre at least its radius from the edges), else a
/// rectangle with sides uniform in 3..=`max_side` px.
pub fn object(rng: &mut ChaCha8Rng, s: i64, max_side: i64) -> Vec<(i64, i64)> {
    let mut pixels = Vec::new();
    if rng.gen_bool(0.5) {
        let r = rng.gen_range(2.0..5.0f64);
        let margin = r.ceil() as i64;
        let cx = rng.gen_range(margin as f64..(s - margin) as f64);
        let cy = rng.gen_range(margin as f64..(s - margin) as f64);
        for y in 0..s {
            for x in 0..s {
                let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
                if dx * dx + dy * dy <= r * r {
                    pixels.push((x, y));
                }
            }
        }
    } else {
        let w = rng.gen_range(3..=max_side);
        let h = rng.gen_range(3..=max_side);
        let x0 = rng.gen_range(0..=s - w);
        let y0 = rng.gen_range(0..=s - h);
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                pixels.push((x, y));
            }
        }
    }
    pixels
}

/// Draws one mask of `cfg.size²` pixels (1 = object): 1 to `max_objects` [`object`]s with
/// rectangle sides up to 9 px.
pub fn mask(rng: &mut ChaCha8Rng, cfg: &ShapesConfig) -> Vec<u8> {
    let s = cfg.size as i64;
    let mut m = vec![0u8; cfg.size * cfg.size];
    let objects = rng.gen_range(1..=cfg.max_objects.max(1));
    for _ in 0..objects {
        for (x, y) in object(rng, s, 9) {
            m[(y * s + x) as usize] = 1;
        }
    }
    m
}

/// Appends the image of mask `m` to `images`: the mask's 0/1 plus `noise` × N(0, 1).
pub fn push_noisy(rng: &mut ChaCha8Rng, m: &[u8], noise: f64, images: &mut Vec<f64>) {
    let e = rng::normal(rng, m.len());
    images.extend(m.iter().zip(e).map(|(&v, e)| f64::from(v) + noise * e));
}

/// Draws `n` images with their masks.
pub fn generate(rng: &mut ChaCha8Rng, n: usize, cfg: &ShapesConfig) -> Shapes {
    let mut images = Vec::with_capacity(n * cfg.size * cfg.size);
    let mut masks = Vec::with_capacity(n * cfg.size * cfg.size);
    for _ in 0..n {
        let m = mask(rng, cfg);
        push_noisy(rng, &m, cfg.noise, &mut images);
        masks.extend(m);
    }
    Shapes {
        n,
        size: cfg.size,
        images,
        masks,
    }
}
