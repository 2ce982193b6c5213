//! A segmentation data set of the user's (`trainer run segmentation --images DIR --masks DIR`):
//! PNG images and masks paired by file name.
//!
//! Rules (each broken one is a one-line error naming the file):
//! - every `*.png` in the image folder has a mask of the same file name in the mask folder, and
//!   every mask an image; at least two pairs;
//! - images are grey or colour (8 or 16 bits, palette and alpha accepted; alpha is dropped,
//!   16 bits are cut to 8): pixel values are scaled to [0, 1]; when one image is in colour,
//!   the grey ones are repeated over three channels;
//! - masks are grey (8 or 16 bits: a 16-bit value is the class index as is), the size of
//!   their image; a pixel is a class index `0..classes`, and with
//!   two classes 255 also means class 1 (0/255 masks); any other value is out of range;
//! - at least one mask pixel is not background (class 0);
//! - sizes: every pair is cropped about its centre to the smallest height and the smallest
//!   width in the set (the crop starts at `(h − H) / 2`, `(w − W) / 2`, rounded down), so that
//!   the images stack into one batch.

use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};

/// Images and masks, cropped to one size.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// The file names, sorted.
    pub names: Vec<String>,
    /// Channels of every image (1 or 3).
    pub channels: usize,
    /// Height after the crop.
    pub height: usize,
    /// Width after the crop.
    pub width: usize,
    /// Number of classes of the masks.
    pub classes: usize,
    /// Pixels in [0, 1], `[n, channels, height, width]` row-major.
    pub pixels: Vec<f64>,
    /// Class index of each mask pixel, `[n, height, width]` row-major.
    pub masks: Vec<u8>,
}

impl ImageSet {
    /// Number of image/mask pairs.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the set has no pair.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The pairs `rows` (indices into [`names`](Self::names)), in that order: pixels and masks.
    pub fn select(&self, rows: &[usize]) -> (Vec<f64>, Vec<u8>) {
        let (per_image, per_mask) = (self.channels * self.height * self.width, self.height * self.width);
        let pixels = rows
            .iter()
            .flat_map(|&r| self.pixels[r * per_image..(r + 1) * per_image].iter().copied())
            .collect();
        let masks = rows
            .iter()
            .flat_map(|&r| self.masks[r * per_mask..(r + 1) * per_mask].iter().copied())
            .collect();
        (pixels, masks)
    }
}

/// One decoded PNG: channels (1 grey, 3 colour), height, width, values (8-bit, or 16-bit for
/// a 16-bit mask).
struct Decoded {
    channels: usize,
    height: usize,
    width: usize,
    values: Vec<u16>,
}

/// Decodes `path`; an image's 16 bits are cut to 8, a mask's (`mask`) are kept: a 16-bit
/// mask holds class indices, which the cut would all turn into 0.
fn decode(path: &Path, mask: bool) -> Result<Decoded> {
    let file = std::fs::File::open(path).map_err(|e| anyhow!("{}: cannot read: {e}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(if mask {
        png::Transformations::EXPAND
    } else {
        png::Transformations::normalize_to_color8()
    });
    let mut reader = decoder
        .read_info()
        .map_err(|e| anyhow!("{}: not a PNG file: {e}", path.display()))?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| anyhow!("{}: not a PNG file: {e}", path.display()))?;
    let (stride, channels) = match info.color_type {
        png::ColorType::Grayscale => (1, 1),
        png::ColorType::GrayscaleAlpha => (2, 1),
        png::ColorType::Rgb => (3, 3),
        png::ColorType::Rgba => (4, 3),
        png::ColorType::Indexed => bail!("{}: palette image not expanded", path.display()),
    };
    let (width, height) = (info.width as usize, info.height as usize);
    let bytes = if info.bit_depth == png::BitDepth::Sixteen { 2 } else { 1 };
    let mut values = Vec::with_capacity(width * height * channels);
    for y in 0..height {
        let row = &buf[y * info.line_size..y * info.line_size + width * stride * bytes];
        for px in row.chunks(stride * bytes) {
            values.extend(px[..channels * bytes].chunks(bytes).map(|b| {
                if bytes == 2 {
                    u16::from_be_bytes([b[0], b[1]])
                } else {
                    u16::from(b[0])
                }
            }));
        }
    }
    Ok(Decoded {
        channels,
        height,
        width,
        values,
    })
}

fn pngs(dir: &Path, what: &str) -> Result<Vec<String>> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| anyhow!("{what} {}: cannot read the folder: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.to_ascii_lowercase().ends_with(".png") && !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names)
}

/// Reads the pairs of `images` and `masks` (see the module's rules).
///
/// # Errors
/// A folder that cannot be read, an image without a mask (or a mask without an image), a
/// file that is not a PNG, a mask in colour or of another size than its image, a mask value
/// out of range, fewer than two pairs; one line naming the file.
pub fn load(images: &Path, masks: &Path, classes: usize) -> Result<ImageSet> {
    if !(2..=255).contains(&classes) {
        bail!("--classes must be in 2..=255, got {classes}");
    }
    let names = pngs(images, "--images")?;
    let mask_names = pngs(masks, "--masks")?;
    for n in &names {
        if !mask_names.contains(n) {
            bail!(
                "{}: no mask {} for it",
                images.join(n).display(),
                masks.join(n).display()
            );
        }
    }
    if let Some(n) = mask_names.iter().find(|n| !names.contains(n)) {
        bail!(
            "{}: no image {} for it",
            masks.join(n).display(),
            images.join(n).display()
        );
    }
    if names.len() < 2 {
        bail!(
            "--images {}: {} PNG file(s), at least two image/mask pairs are needed",
            images.display(),
            names.len()
        );
    }
    let mut pairs = Vec::with_capacity(names.len());
    for n in &names {
        let (ip, mp): (PathBuf, PathBuf) = (images.join(n), masks.join(n));
        let image = decode(&ip, false)?;
        let mask = decode(&mp, true)?;
        if mask.channels != 1 {
            bail!(
                "{}: a mask must be a grey PNG (class index per pixel), this one is in colour",
                mp.display()
            );
        }
        if (mask.height, mask.width) != (image.height, image.width) {
            bail!(
                "{}: mask is {}×{} but its image {} is {}×{} (width × height)",
                mp.display(),
                mask.width,
                mask.height,
                ip.display(),
                image.width,
                image.height
            );
        }
        let mut labels = Vec::with_capacity(mask.values.len());
        for (i, &v) in mask.values.iter().enumerate() {
            let c = if classes == 2 && v == 255 { 1 } else { v };
            if usize::from(c) >= classes {
                bail!(
                    "{}: pixel (x {}, y {}) has value {v}, out of range for {classes} classes (0..{}{})",
                    mp.display(),
                    i % mask.width,
                    i / mask.width,
                    classes - 1,
                    if classes == 2 { ", or 255" } else { "" }
                );
            }
            labels.push(c as u8);
        }
        pairs.push((image, labels, mask.width));
    }
    if pairs.iter().all(|p| p.1.iter().all(|&c| c == 0)) {
        // e.g. masks whose foreground the reader could not see: Dice on empty masks is 1,
        // so the run would look perfect
        bail!(
            "--masks {}: every pixel of every mask is class 0 (background): nothing to segment",
            masks.display()
        );
    }
    let height = pairs.iter().map(|p| p.0.height).min().unwrap_or(0);
    let width = pairs.iter().map(|p| p.0.width).min().unwrap_or(0);
    let channels = pairs.iter().map(|p| p.0.channels).max().unwrap_or(1);
    let mut pixels = Vec::with_capacity(pairs.len() * channels * height * width);
    let mut masks_out = Vec::with_capacity(pairs.len() * height * width);
    for (image, labels, w) in &pairs {
        let (y0, x0) = ((image.height - height) / 2, (image.width - width) / 2);
        for c in 0..channels {
            let src = c.min(image.channels - 1);
            for y in y0..y0 + height {
                for x in x0..x0 + width {
                    pixels.push(f64::from(image.values[(y * image.width + x) * image.channels + src]) / 255.0);
                }
            }
        }
        for y in y0..y0 + height {
            masks_out.extend_from_slice(&labels[y * w + x0..y * w + x0 + width]);
        }
    }
    Ok(ImageSet {
        names,
        channels,
        height,
        width,
        classes,
        pixels,
        masks: masks_out,
    })
}

/// The user's PNG images and masks ([`load`]), with the share held out: what
/// `trainer run segmentation --images DIR --masks DIR` trains on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageFiles {
    /// The image folder.
    pub images: PathBuf,
    /// The mask folder.
    pub masks: PathBuf,
    /// Share of the pairs held out for the metrics, drawn per seed.
    pub holdout: f64,
    /// Number of pairs.
    pub pairs: usize,
    /// Channels, height and width after the crop.
    pub shape: [usize; 3],
    /// Classes of the masks.
    pub classes: usize,
    /// The pixels and masks.
    #[serde(skip)]
    pub set: std::sync::Arc<ImageSet>,
}

impl ImageFiles {
    /// Reads the pairs ([`load`]) and checks `holdout` in (0, 1).
    ///
    /// # Errors
    /// A bad file (one line naming it) or a bad share.
    pub fn load(images: &Path, masks: &Path, classes: usize, holdout: f64) -> Result<Self> {
        if !(holdout > 0.0 && holdout < 1.0) {
            bail!("--holdout must be a share in (0, 1), got {holdout}");
        }
        let set = load(images, masks, classes)?;
        Ok(Self {
            images: images.to_path_buf(),
            masks: masks.to_path_buf(),
            holdout,
            pairs: set.len(),
            shape: [set.channels, set.height, set.width],
            classes: set.classes,
            set: std::sync::Arc::new(set),
        })
    }

    /// Number of pairs held out per seed: `round(holdout · n)`, at least 1, at most n − 1.
    pub fn held_out(&self) -> usize {
        let n = self.set.len();
        ((self.holdout * n as f64).round() as usize).clamp(1, n.max(2) - 1)
    }

    /// The training and held-out pairs (indices, each in name order) for the generator `rng`:
    /// its permutation's first [`held_out`](Self::held_out) pairs are held out.
    pub fn split(&self, rng: &mut rand_chacha::ChaCha8Rng) -> (Vec<usize>, Vec<usize>) {
        let perm = crate::rng::permutation(rng, self.set.len());
        let k = self.held_out();
        let (mut test, mut train) = (perm[..k].to_vec(), perm[k..].to_vec());
        test.sort_unstable();
        train.sort_unstable();
        (train, test)
    }
}
