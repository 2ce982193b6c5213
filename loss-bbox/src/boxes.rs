//! Box formats ([`BoxFormat`]), [`box_convert`] and [`box_area`], as `torchvision.ops`.
//!
//! A box is the last dimension (of size 4) of a float tensor. Three formats are known:
//!
//! | format | the four numbers | to `xyxy` |
//! |---|---|---|
//! | `xyxy` | x1, y1, x2, y2 (top-left and bottom-right corners) | itself |
//! | `xywh` | x1, y1, w, h (top-left corner, width, height) | x2 = x1 + w, y2 = y1 + h |
//! | `cxcywh` | cx, cy, w, h (centre, width, height) | x1 = cx − w/2, x2 = cx + w/2 |
//!
//! Every other loss and metric of this crate takes `xyxy` boxes. Inverted boxes (`x2 < x1` or
//! `y2 < y1`) are accepted everywhere, as torchvision accepts them; nothing is clamped.
//! Source: `torchvision.ops.box_convert`, `torchvision.ops.box_area`.

use candle_core::{Result, Tensor, D};
use loss_core::{check, LossError};
use std::fmt;

/// The layout of the four numbers of a box (torchvision's `in_fmt`/`out_fmt` strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BoxFormat {
    /// `(x1, y1, x2, y2)`: top-left and bottom-right corners (the default).
    #[default]
    Xyxy,
    /// `(x1, y1, w, h)`: top-left corner, width and height.
    Xywh,
    /// `(cx, cy, w, h)`: centre, width and height.
    Cxcywh,
}

impl<'de> serde::Deserialize<'de> for BoxFormat {
    /// From torchvision's spelling ([`BoxFormat::parse`]).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        loss_core::config::deserialize_parsed(d, |s| Self::parse("box_format", "fmt", s))
    }
}

impl BoxFormat {
    /// Parses torchvision's spelling: `"xyxy"`, `"xywh"` or `"cxcywh"`.
    ///
    /// # Errors
    /// `LossError::BadOptions` naming `loss` and `arg` for any other string (rotated formats such
    /// as `"xywhr"` are not supported).
    pub fn parse(loss: &'static str, arg: &'static str, s: &str) -> Result<Self> {
        match s {
            "xyxy" => Ok(Self::Xyxy),
            "xywh" => Ok(Self::Xywh),
            "cxcywh" => Ok(Self::Cxcywh),
            _ => Err(LossError::BadOptions {
                loss,
                message: format!("`{arg}` = {s:?} is not a box format, expected \"xyxy\", \"xywh\" or \"cxcywh\""),
            }
            .into()),
        }
    }

    /// torchvision's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xyxy => "xyxy",
            Self::Xywh => "xywh",
            Self::Cxcywh => "cxcywh",
        }
    }
}

impl fmt::Display for BoxFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks that `t` is a float tensor of boxes: rank >= 1 and a last dimension of 4.
///
/// # Errors
/// `BadDType` for a non-float tensor, `BadShape` naming `loss`, `arg` and the shape otherwise.
pub fn check_boxes(loss: &'static str, arg: &'static str, t: &Tensor) -> Result<()> {
    check::float(loss, arg, t)?;
    if t.rank() == 0 || t.dim(D::Minus1)? != 4 {
        return Err(check::bad_shape(loss, arg, t, "[..., 4] boxes"));
    }
    Ok(())
}

/// The four columns of `[..., 4]` boxes, each of shape `[...]` (views, no copy).
pub(crate) fn columns(t: &Tensor) -> Result<[Tensor; 4]> {
    if t.elem_count() == 0 {
        // Candle 0.11 gives a narrowed empty tensor a start offset beyond its (empty) storage,
        // which later ops index out of range: use an empty reduction, still in the graph.
        let e = t.sum_keepdim(D::Minus1)?.squeeze(D::Minus1)?;
        return Ok([e.clone(), e.clone(), e.clone(), e]);
    }
    let c = |i: usize| t.narrow(D::Minus1, i, 1)?.squeeze(D::Minus1);
    Ok([c(0)?, c(1)?, c(2)?, c(3)?])
}

fn stack_columns(c: [Tensor; 4]) -> Result<Tensor> {
    Tensor::stack(&c, D::Minus1)
}

fn to_xyxy(c: [Tensor; 4], from: BoxFormat) -> Result<[Tensor; 4]> {
    let [a, b, w, h] = c;
    Ok(match from {
        BoxFormat::Xyxy => [a, b, w, h],
        BoxFormat::Xywh => {
            let x2 = (&a + &w)?;
            let y2 = (&b + &h)?;
            [a, b, x2, y2]
        }
        BoxFormat::Cxcywh => {
            let hw = w.affine(0.5, 0.0)?;
            let hh = h.affine(0.5, 0.0)?;
            [(&a - &hw)?, (&b - &hh)?, (&a + &hw)?, (&b + &hh)?]
        }
    })
}

fn from_xyxy(c: [Tensor; 4], to: BoxFormat) -> Result<[Tensor; 4]> {
    let [x1, y1, x2, y2] = c;
    Ok(match to {
        BoxFormat::Xyxy => [x1, y1, x2, y2],
        BoxFormat::Xywh => {
            let w = (&x2 - &x1)?;
            let h = (&y2 - &y1)?;
            [x1, y1, w, h]
        }
        BoxFormat::Cxcywh => {
            let cx = midpoint(&x1, &x2)?;
            let cy = midpoint(&y1, &y2)?;
            [cx, cy, (&x2 - &x1)?, (&y2 - &y1)?]
        }
    })
}

/// `(a + b) / 2` that does not overflow where the midpoint is representable: `a/2 + b/2` where
/// the sum overflows (two coordinates near the dtype's maximum), the plain form elsewhere (exact
/// for subnormals too). Gradient ½ w.r.t. each either way.
fn midpoint(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let sum = (a + b)?;
    let finite = sum.sub(&sum)?.eq(0.0)?;
    let halves = (a.affine(0.5, 0.0)? + b.affine(0.5, 0.0)?)?;
    finite.where_cond(&sum.affine(0.5, 0.0)?, &halves)
}

/// `xywh` ↔ `cxcywh` directly (the centre is `x + w/2`): going through `xyxy` would form
/// `x + w`, which can overflow where the centre is representable.
fn between_corner_and_centre(c: [Tensor; 4], to_centre: bool) -> Result<[Tensor; 4]> {
    let [a, b, w, h] = c;
    let s = if to_centre { 0.5 } else { -0.5 };
    let x = (&a + &w.affine(s, 0.0)?)?;
    let y = (&b + &h.affine(s, 0.0)?)?;
    Ok([x, y, w, h])
}

/// Converts `[..., 4]` boxes from `in_fmt` to `out_fmt` (`torchvision.ops.box_convert`).
///
/// The same format returns the input unchanged. No intermediate overflows where the result is
/// representable (torchvision's `(x1 + x2)/2` is inf for two coordinates near `f32::MAX`, and
/// its `xywh` → `cxcywh` through `xyxy` forms `x + w`): the centre is `x1/2 + x2/2` where the
/// sum overflows, and `xywh` ↔ `cxcywh` convert directly (`cx = x + w/2`), equal to
/// torchvision's result wherever that is finite. Differentiable (every conversion is linear). Any float
/// dtype, any device; the output has the input's shape and dtype.
///
/// # Errors
/// A non-float tensor or a last dimension other than 4 (`BadDType`/`BadShape` naming
/// `box_convert`).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use loss_bbox::{box_convert, BoxFormat};
/// let b = Tensor::new(&[[10f32, 20., 4., 6.]], &Device::Cpu)?;
/// let xyxy = box_convert(&b, BoxFormat::Xywh, BoxFormat::Xyxy)?;
/// assert_eq!(xyxy.to_vec2::<f32>()?, [[10., 20., 14., 26.]]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn box_convert(boxes: &Tensor, in_fmt: BoxFormat, out_fmt: BoxFormat) -> Result<Tensor> {
    check_boxes("box_convert", "boxes", boxes)?;
    if in_fmt == out_fmt {
        return Ok(boxes.clone());
    }
    let c = columns(boxes)?;
    stack_columns(match (in_fmt, out_fmt) {
        (BoxFormat::Xywh, BoxFormat::Cxcywh) => between_corner_and_centre(c, true)?,
        (BoxFormat::Cxcywh, BoxFormat::Xywh) => between_corner_and_centre(c, false)?,
        _ => from_xyxy(to_xyxy(c, in_fmt)?, out_fmt)?,
    })
}

/// Converts `[..., 4]` boxes in `fmt` to `xyxy` (no copy when `fmt` is `xyxy`).
///
/// # Errors
/// As [`box_convert`], naming `loss` and `arg`.
pub fn to_xyxy_boxes(loss: &'static str, arg: &'static str, boxes: &Tensor, fmt: BoxFormat) -> Result<Tensor> {
    check_boxes(loss, arg, boxes)?;
    if fmt == BoxFormat::Xyxy {
        return Ok(boxes.clone());
    }
    stack_columns(to_xyxy(columns(boxes)?, fmt)?)
}

/// The area of `[..., 4]` boxes in format `fmt` (`torchvision.ops.box_area`): shape `[...]`.
///
/// `xyxy`: `(x2 − x1)·(y2 − y1)`; `xywh` and `cxcywh`: `w·h`. Nothing is clamped: an inverted box
/// (`x2 < x1` xor `y2 < y1`, or a negative `w` xor `h`) has a **negative** area, one inverted in
/// both directions a positive one, as torchvision. Differentiable; any float dtype and device.
///
/// # Errors
/// A non-float tensor or a last dimension other than 4 (`BadDType`/`BadShape` naming
/// `box_area`).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use loss_bbox::{box_area, BoxFormat};
/// let b = Tensor::new(&[[0f32, 0., 2., 3.], [2., 2., 1., 3.]], &Device::Cpu)?;
/// assert_eq!(box_area(&b, BoxFormat::Xyxy)?.to_vec1::<f32>()?, [6., -1.]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn box_area(boxes: &Tensor, fmt: BoxFormat) -> Result<Tensor> {
    check_boxes("box_area", "boxes", boxes)?;
    let [a, b, c, d] = columns(boxes)?;
    match fmt {
        BoxFormat::Xyxy => {
            // (x2 − x1)·(y2 − y1); where a side overflows (x1 near −MAX, x2 near MAX) but the
            // area is representable (the other side small), the halved sides times 4.
            // The sides are zeroed where they are not finite before their product, so that the
            // unselected branch's gradient is 0, not 0·inf.
            let (w, h) = ((&c - &a)?, (&d - &b)?);
            let ok = w.sub(&w)?.eq(0.0)?.mul(&h.sub(&h)?.eq(0.0)?)?;
            let zero = w.zeros_like()?;
            let area = ok.where_cond(&w, &zero)?.mul(&ok.where_cond(&h, &zero)?)?;
            let half = |hi: &Tensor, lo: &Tensor| -> Result<Tensor> { hi.affine(0.5, 0.0)? - lo.affine(0.5, 0.0)? };
            let quarter = half(&c, &a)?.mul(&half(&d, &b)?)?.affine(4.0, 0.0)?;
            ok.where_cond(&area, &quarter)
        }
        BoxFormat::Xywh | BoxFormat::Cxcywh => c.mul(&d),
    }
}
