//! Which loss and which form: the option enums that the loss functions ([`crate::losses`],
//! [`crate::iou_successors`]) and the fused pair kernel (module `fused`) share. They live here so
//! that the dependencies run one way: the functions use the kernel, and both use these types.

use candle_core::Result;
use loss_core::LossError;
use std::fmt;

/// `LossError::BadOptions` naming `loss`.
pub(crate) fn bad_option(loss: &'static str, message: String) -> candle_core::Error {
    LossError::BadOptions { loss, message }.into()
}

/// The form of [`iou_loss`](crate::losses::iou_loss) (mmdetection's `IoULoss(mode=...)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IouMode {
    /// `1 − IoU` (the default).
    #[default]
    Linear,
    /// `1 − max(IoU, eps)²`.
    Square,
    /// `−ln max(IoU, eps)` (UnitBox).
    Log,
}

impl<'de> serde::Deserialize<'de> for IouMode {
    /// From mmdetection's spelling ([`IouMode::parse`]).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        loss_core::config::deserialize_parsed(d, Self::parse)
    }
}

impl IouMode {
    /// Parses `"linear"`, `"square"` or `"log"`.
    ///
    /// # Errors
    /// `LossError::BadOptions` naming `iou_loss` for any other string.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "linear" => Ok(Self::Linear),
            "square" => Ok(Self::Square),
            "log" => Ok(Self::Log),
            _ => Err(LossError::BadOptions {
                loss: "iou_loss",
                message: format!("`mode` = {s:?} is unknown, expected \"linear\", \"square\" or \"log\""),
            }
            .into()),
        }
    }

    /// The spelling [`IouMode::parse`] reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::Square => "square",
            Self::Log => "log",
        }
    }
}

impl fmt::Display for IouMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which aligned loss: the variants of the fused kernel and of [`aligned_loss`](crate::losses::aligned_loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlignedLoss {
    /// [`iou_loss`](crate::losses::iou_loss) in the given mode.
    Iou(IouMode),
    /// [`giou_loss`](crate::losses::giou_loss).
    Giou,
    /// [`diou_loss`](crate::losses::diou_loss).
    Diou,
    /// [`ciou_loss`](crate::losses::ciou_loss).
    Ciou,
    /// [`eiou_loss`](crate::losses::eiou_loss) (Efficient-IoU).
    Eiou,
}

impl AlignedLoss {
    /// The loss's function name (`"giou_loss"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Iou(_) => "iou_loss",
            Self::Giou => "giou_loss",
            Self::Diou => "diou_loss",
            Self::Ciou => "ciou_loss",
            Self::Eiou => "eiou_loss",
        }
    }
}

/// The IoU form that [`alpha_iou_loss`](crate::iou_successors::alpha_iou_loss) raises to the power `alpha`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AlphaIouBase {
    /// `(I/U + eps)^α` alone.
    Iou,
    /// With GIoU's penalty `((C − U)/C + eps)^α`.
    Giou,
    /// With DIoU's penalty `(ρ²)^α/((C_w² + C_h²)^α + eps)`.
    Diou,
    /// With DIoU's penalty and CIoU's `(a·v + eps)^α` (the default, as the authors' training code).
    #[default]
    Ciou,
}

impl<'de> serde::Deserialize<'de> for AlphaIouBase {
    /// From the authors' spelling ([`AlphaIouBase::parse`]).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        loss_core::config::deserialize_parsed(d, Self::parse)
    }
}

impl AlphaIouBase {
    /// Parses `"iou"`, `"giou"`, `"diou"` or `"ciou"`.
    ///
    /// # Errors
    /// `LossError::BadOptions` naming `alpha_iou_loss` for any other string.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "iou" => Ok(Self::Iou),
            "giou" => Ok(Self::Giou),
            "diou" => Ok(Self::Diou),
            "ciou" => Ok(Self::Ciou),
            _ => Err(bad_option(
                "alpha_iou_loss",
                format!("`base` = {s:?} is unknown, expected \"iou\", \"giou\", \"diou\" or \"ciou\""),
            )),
        }
    }

    /// The spelling [`AlphaIouBase::parse`] reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Iou => "iou",
            Self::Giou => "giou",
            Self::Diou => "diou",
            Self::Ciou => "ciou",
        }
    }
}

impl fmt::Display for AlphaIouBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The loss that [`inner_iou_loss`](crate::iou_successors::inner_iou_loss) computes on its auxiliary boxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum InnerIouBase {
    /// `1 − I_in/U_in` (the default).
    #[default]
    Iou,
    /// `1 − I_in/U_in` plus CIoU's distance and aspect terms of the real boxes.
    Ciou,
}

impl<'de> serde::Deserialize<'de> for InnerIouBase {
    /// From the authors' spelling ([`InnerIouBase::parse`]).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        loss_core::config::deserialize_parsed(d, Self::parse)
    }
}

impl InnerIouBase {
    /// Parses `"iou"` or `"ciou"`.
    ///
    /// # Errors
    /// `LossError::BadOptions` naming `inner_iou_loss` for any other string.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "iou" => Ok(Self::Iou),
            "ciou" => Ok(Self::Ciou),
            _ => Err(bad_option(
                "inner_iou_loss",
                format!("`base` = {s:?} is unknown, expected \"iou\" or \"ciou\""),
            )),
        }
    }

    /// The spelling [`InnerIouBase::parse`] reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Iou => "iou",
            Self::Ciou => "ciou",
        }
    }
}

impl fmt::Display for InnerIouBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The focusing mechanism of [`wise_iou_loss`](crate::iou_successors::wise_iou_loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WiseIouVersion {
    /// `R·L_IoU`, the distance attention alone.
    V1,
    /// `R·L_IoU·√β`, monotonic focusing.
    V2,
    /// `R·L_IoU·β/(δ·α^(β−δ))`, non-monotonic focusing (the default).
    #[default]
    V3,
}

impl<'de> serde::Deserialize<'de> for WiseIouVersion {
    /// From the authors' spelling ([`WiseIouVersion::parse`]).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        loss_core::config::deserialize_parsed(d, Self::parse)
    }
}

impl WiseIouVersion {
    /// Parses `"v1"`, `"v2"` or `"v3"`.
    ///
    /// # Errors
    /// `LossError::BadOptions` naming `wise_iou_loss` for any other string.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "v1" => Ok(Self::V1),
            "v2" => Ok(Self::V2),
            "v3" => Ok(Self::V3),
            _ => Err(bad_option(
                "wise_iou_loss",
                format!("`version` = {s:?} is unknown, expected \"v1\", \"v2\" or \"v3\""),
            )),
        }
    }

    /// The spelling [`WiseIouVersion::parse`] reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
            Self::V3 => "v3",
        }
    }
}

impl fmt::Display for WiseIouVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
