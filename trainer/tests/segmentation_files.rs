//! `trainer run segmentation --images DIR --masks DIR` on tiny PNG sets written here: a set
//! the net can learn is learnt, colour and multi-class sets run, and every bad pair is one line
//! on stderr naming the file, exit status 2, nothing under --out.
#![cfg(feature = "cli")]

mod common;

use common::{assert_one_line_error, trainer};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

fn tmp(name: &str) -> PathBuf {
    let d = common::tmp("segfiles", name);
    std::fs::create_dir_all(d.join("images")).unwrap();
    std::fs::create_dir_all(d.join("masks")).unwrap();
    d
}

/// Writes an 8-bit PNG of `w × h` pixels of `channels` (1 grey, 3 colour) values each.
fn write_png(path: &Path, w: u32, h: u32, channels: usize, values: &[u8]) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(if channels == 1 {
        png::ColorType::Grayscale
    } else {
        png::ColorType::Rgb
    });
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(values).unwrap();
}

/// Eight 16 × 16 pairs: a 5 × 5 square at a place that moves with i; the image is the mask
/// dimmed plus a fixed pattern, the mask 0/255 (`classes` 2) or 0/1/2 (the right half of each
/// square is class 2).
fn squares(dir: &Path, channels: usize, classes: u8) {
    for i in 0..8u32 {
        let (x0, y0) = ((i * 3) % 11, (i * 5) % 11);
        let mut mask = Vec::new();
        let mut image = Vec::new();
        for y in 0..16u32 {
            for x in 0..16u32 {
                let inside = (x0..x0 + 5).contains(&x) && (y0..y0 + 5).contains(&y);
                let m = match (inside, classes) {
                    (false, _) => 0,
                    (true, 2) => 255,
                    (true, _) => 1 + u8::from(x >= x0 + 3),
                };
                mask.push(m);
                let v = if inside { 200 } else { 20 } + ((x * 7 + y * 3) % 20) as u8;
                image.extend(std::iter::repeat_n(v, channels));
            }
        }
        let name = format!("p{i}.png");
        write_png(&dir.join("images").join(&name), 16, 16, channels, &image);
        write_png(&dir.join("masks").join(&name), 16, 16, 1, &mask);
    }
}

fn run(dir: &Path, extra: &[&str]) -> Output {
    let (i, m, o) = (dir.join("images"), dir.join("masks"), dir.join("out"));
    let mut args = vec![
        "run",
        "segmentation",
        "--images",
        i.to_str().unwrap(),
        "--masks",
        m.to_str().unwrap(),
        "--out",
        o.to_str().unwrap(),
        "--quiet",
        "--no-timings",
        "--seeds",
        "1",
    ];
    args.extend(extra);
    trainer(&args)
}

fn summary(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("out/summary.json")).unwrap()).unwrap()
}

#[test]
fn a_tiny_png_set_is_learnt() {
    let dir = tmp("grey");
    squares(&dir, 1, 2);
    let o = run(&dir, &["--losses", "dice,cross_entropy", "--steps", "80"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = summary(&dir);
    for loss in ["dice", "cross_entropy"] {
        let d = s["segmentation"]["losses"][loss]["dice"]["mean"].as_f64().unwrap();
        assert!(d > 0.9, "{loss}: held-out Dice {d}");
    }
    let config: Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/segmentation/config.json")).unwrap()).unwrap();
    let files = &config["settings"]["files"];
    assert_eq!(files["pairs"], 8);
    assert_eq!(files["shape"], serde_json::json!([1, 16, 16]));
    assert_eq!(config["settings"]["test_images"], 2, "round(0.25 · 8) held out");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn colour_and_three_class_sets_run() {
    let dir = tmp("colour3");
    squares(&dir, 3, 3);
    let o = run(&dir, &["--classes", "3", "--losses", "dice,focal", "--steps", "5"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = summary(&dir);
    let d = s["segmentation"]["losses"]["focal"]["dice"]["mean"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&d));
    // a three-class set refuses the binary Lovász hinge, before anything is written
    let o = run(&dir, &["--classes", "3", "--losses", "lovasz_hinge"]);
    assert_eq!(o.status.code(), Some(2));
    // and its masks are out of range for two classes, naming the file and the pixel
    let _ = std::fs::remove_dir_all(dir.join("out"));
    let o = run(&dir, &["--losses", "dice"]);
    assert_one_line_error(&o, "3-class masks as 2", &["p0.png", "value 2, out of range"]);
    assert!(!dir.join("out").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

fn assert_bad(dir: &Path, needles: &[&str]) {
    assert_one_line_error(&run(dir, &["--losses", "dice", "--steps", "2"]), "bad pair", needles);
    assert!(!dir.join("out").exists(), "nothing under --out");
}

#[test]
fn every_bad_pair_is_one_line_naming_the_file() {
    let dir = tmp("bad");
    squares(&dir, 1, 2);
    // a missing mask
    std::fs::remove_file(dir.join("masks/p3.png")).unwrap();
    assert_bad(&dir, &["p3.png", "no mask"]);
    // a mask of another size than its image
    write_png(&dir.join("masks/p3.png"), 8, 16, 1, &[0; 128]);
    assert_bad(&dir, &["masks/p3.png", "8×16", "16×16"]);
    // a value out of range for two classes
    let mut m = vec![0u8; 256];
    m[17] = 7;
    write_png(&dir.join("masks/p3.png"), 16, 16, 1, &m);
    assert_bad(&dir, &["masks/p3.png", "pixel (x 1, y 1)", "value 7"]);
    // not a PNG
    std::fs::write(dir.join("masks/p3.png"), b"not a png").unwrap();
    assert_bad(&dir, &["masks/p3.png", "not a PNG"]);
    // a colour mask
    write_png(&dir.join("masks/p3.png"), 16, 16, 3, &[0; 768]);
    assert_bad(&dir, &["masks/p3.png", "grey"]);
    // every mask all background: the run trained to a perfect Dice of 1 on nothing
    for i in 0..8 {
        write_png(&dir.join(format!("masks/p{i}.png")), 16, 16, 1, &[0; 256]);
    }
    assert_bad(&dir, &["--masks", "every pixel of every mask is class 0"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn file_options_without_images_are_one_line_naming_what_is_missing() {
    // --holdout and --classes were silently ignored on the synthetic shapes
    for (args, needle) in [
        (vec!["--holdout", "0.5"], "--images <DIR>"),
        (vec!["--classes", "3"], "--images <DIR>"),
        // clap's message lists the missing argument on its next line: it was cut off
        (vec!["--images", "imgs"], "--masks <DIR>"),
    ] {
        let mut a = vec!["run", "segmentation", "--steps", "1", "--out", "/nonexistent/out"];
        a.extend(&args);
        assert_one_line_error(&trainer(&a), &format!("{args:?}"), &["not provided", needle]);
    }
}

/// Writes a 16-bit grey PNG (big-endian samples, as PNG stores them).
fn write_png16(path: &Path, w: u32, h: u32, values: &[u16]) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Sixteen);
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
    enc.write_header().unwrap().write_image_data(&bytes).unwrap();
}

#[test]
fn a_16_bit_mask_keeps_its_class_indices() {
    let dir = tmp("mask16");
    squares(&dir, 1, 3);
    // p0's mask as 16 bits: 0 outside, 1 and 2 inside; cutting 16 bits to 8 (the high byte)
    // made every pixel class 0, silently
    let mut m = vec![0u16; 256];
    m[0] = 1;
    m[1] = 2;
    m[255] = 1;
    write_png16(&dir.join("masks/p0.png"), 16, 16, &m);
    let set = trainer::data::images::load(&dir.join("images"), &dir.join("masks"), 3).unwrap();
    assert_eq!(set.names[0], "p0.png");
    assert_eq!(&set.masks[..3], &[1, 2, 0]);
    assert_eq!(set.masks[255], 1);
    assert_eq!(set.masks[..256].iter().filter(|&&c| c != 0).count(), 3);
    // a 16-bit value past the classes is out of range, named as in 8 bits
    m[17] = 300;
    write_png16(&dir.join("masks/p0.png"), 16, 16, &m);
    let o = run(&dir, &["--classes", "3", "--losses", "dice", "--steps", "2"]);
    assert_one_line_error(&o, "16-bit 300", &["masks/p0.png", "pixel (x 1, y 1)", "value 300"]);
    assert!(!dir.join("out").exists(), "nothing under --out");
    let _ = std::fs::remove_dir_all(&dir);
}
