//! Loss by name: builds a loss call from a name, JSON parameters and named input tensors.
//!
//! Used by the reference-case runner ([`crate::cases`]) and by the CLI. Each loss crate has its
//! own table (`core`, `bbox`, `seg`): a loss name maps to its config type, the parameters
//! deserialize into that config ([`config`]), so a default exists only in the config's
//! declaration and a parameter the loss does not have is an error naming it. [`call`] asks the
//! tables in turn. The parameters are those of the repository's `cases/FORMAT.md`.

mod bbox;
mod core;
mod seg;

pub use bbox::YOLO_BOX_LOSSES;

use anyhow::{anyhow, bail, Context};
use candle_core::{DType, Device, Tensor};
use loss_core::{Loss, LossConfig};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Named input tensors of one call (`"input"`, `"target"`, `"logits"`, `"pred"`, ...).
pub type Inputs = BTreeMap<String, Tensor>;

/// The config `C` of `loss` from JSON `params`: tensor parameters (flat lists of numbers) as
/// 1-D tensors of `like`'s dtype and device through [`LossConfig::set_tensor`], the others
/// deserialized. `null` or a missing key keeps the config's default.
///
/// # Errors
/// A parameter the loss does not have (named, with the ones it takes), a value of the wrong
/// type, a tensor parameter that is not a list of numbers.
pub fn config<C: LossConfig + DeserializeOwned>(
    loss: &str,
    params: &Map<String, Value>,
    like: &Tensor,
) -> anyhow::Result<C> {
    let mut plain = Map::new();
    let mut tensors = Vec::new();
    for (key, value) in params.iter().filter(|(_, v)| !v.is_null()) {
        if C::is_tensor_param(key) {
            tensors.push((key, list_tensor(loss, key, value, like)?));
        } else {
            plain.insert(key.clone(), value.clone());
        }
    }
    let mut c: C = serde_json::from_value(Value::Object(plain)).map_err(|e| anyhow!("{loss}: {e}"))?;
    for (key, t) in tensors {
        c.set_tensor(key, t);
    }
    Ok(c)
}

/// A flat list of numbers as a 1-D tensor of `like`'s dtype and device.
fn list_tensor(loss: &str, key: &str, value: &Value, like: &Tensor) -> anyhow::Result<Tensor> {
    let Value::Array(a) = value else {
        bail!("{loss}: parameter `{key}` must be a list of numbers, got {value}");
    };
    let v = a
        .iter()
        .map(number)
        .collect::<anyhow::Result<Vec<f64>>>()
        .with_context(|| format!("{loss}: parameter `{key}`"))?;
    let n = v.len();
    Ok(Tensor::from_vec(v, n, like.device())?.to_dtype(like.dtype())?)
}

/// Runs the two-input loss `C` of `loss` on the inputs named `a` (the prediction) and `b`.
fn pair<C: Loss + LossConfig + DeserializeOwned>(
    loss: &str,
    params: &Map<String, Value>,
    x: &Inputs,
    [a, b]: [&str; 2],
) -> anyhow::Result<Tensor> {
    let (a, b) = (input(loss, x, a)?, input(loss, x, b)?);
    Ok(config::<C>(loss, params, a)?.forward(a, b)?)
}

/// Reads a JSON number, or one of the strings `"nan"`, `"inf"`, `"-inf"`.
pub fn number(v: &Value) -> anyhow::Result<f64> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| anyhow!("not a number: {n}")),
        Value::String(s) => match s.as_str() {
            "nan" | "NaN" => Ok(f64::NAN),
            "inf" | "Infinity" => Ok(f64::INFINITY),
            "-inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => bail!("not a number: {s:?}"),
        },
        _ => bail!("not a number: {v}"),
    }
}

/// Looks up a named input tensor.
pub fn input<'a>(loss: &str, inputs: &'a Inputs, name: &str) -> anyhow::Result<&'a Tensor> {
    inputs.get(name).ok_or_else(|| {
        anyhow!(
            "{loss}: missing input `{name}` (have {:?})",
            inputs.keys().collect::<Vec<_>>()
        )
    })
}

/// Every loss name the registry knows.
pub fn names() -> Vec<&'static str> {
    let mut v = core::NAMES.to_vec();
    v.extend_from_slice(bbox::NAMES);
    v.extend_from_slice(bbox::YOLO_BOX_LOSSES);
    v.extend_from_slice(seg::NAMES);
    v
}

/// Runs the loss `name` with `params` on `inputs`. `None` when no crate implements `name`;
/// `Some(Err)` when the call itself fails (bad input or bad parameters).
pub fn call(name: &str, params: &Map<String, Value>, inputs: &Inputs) -> Option<anyhow::Result<Tensor>> {
    core::call(name, params, inputs)
        .or_else(|| bbox::call(name, params, inputs))
        .or_else(|| seg::call(name, params, inputs))
}

/// Makes a tensor from flat `data` of `shape` and `dtype` (`"f32"`, `"f64"`, `"u32"`, `"i64"`).
pub fn make_tensor(data: &[f64], shape: &[usize], dtype: &str, device: &Device) -> anyhow::Result<Tensor> {
    // Checked: a case file's shape can be anything (an overflow here panicked under overflow
    // checks, reproduced with `cargo fuzz run case_file`).
    let n = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| anyhow!("shape {shape:?} has more elements than fit in memory"))?;
    if n != data.len() {
        bail!("shape {shape:?} holds {n} values but data has {}", data.len());
    }
    let t = Tensor::from_vec(data.to_vec(), shape, device)?;
    let dt = match dtype {
        "f32" => DType::F32,
        "f64" => DType::F64,
        "u32" => DType::U32,
        "i64" => DType::I64,
        "u8" => DType::U8,
        other => bail!("unknown dtype {other:?} (expected f32, f64, u32 or i64)"),
    };
    if matches!(dt, DType::U32 | DType::I64 | DType::U8) {
        if let Some(bad) = data.iter().find(|x| x.fract() != 0.0 || !x.is_finite()) {
            bail!("dtype {dtype} holds a non-integer value {bad}");
        }
        if dt != DType::I64 && data.iter().any(|&x| x < 0.0) {
            bail!("dtype {dtype} holds a negative value");
        }
        // i64 cannot be converted from f64 by every backend: go through the host.
        return Ok(match dt {
            DType::I64 => Tensor::from_vec(data.iter().map(|&x| x as i64).collect::<Vec<_>>(), shape, device)?,
            DType::U32 => Tensor::from_vec(data.iter().map(|&x| x as u32).collect::<Vec<_>>(), shape, device)?,
            _ => Tensor::from_vec(data.iter().map(|&x| x as u8).collect::<Vec<_>>(), shape, device)?,
        });
    }
    Ok(t.to_dtype(dt)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l1_inputs() -> Inputs {
        let t = Tensor::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        Inputs::from([
            ("input".to_string(), t.clone()),
            ("target".to_string(), t.zeros_like().unwrap()),
        ])
    }

    fn params(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_parameter_the_loss_does_not_have_is_an_error_naming_it() {
        let e = call("l1_loss", &params(r#"{"beta": 0.5}"#), &l1_inputs())
            .unwrap()
            .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("l1_loss: unknown parameter `beta`"), "{msg}");
        assert!(msg.contains("`reduction`"), "names what the loss takes: {msg}");
        // The same for a loss of each table.
        for (loss, key) in [("giou_loss", "delta"), ("dice_loss", "beta_typo")] {
            let t = Tensor::new(&[[[[0.2f32, 0.8]]]], &Device::Cpu).unwrap();
            let boxes = Tensor::new(&[[0.0f32, 0.0, 1.0, 1.0]], &Device::Cpu).unwrap();
            let inputs = if loss == "giou_loss" {
                Inputs::from([("pred".to_string(), boxes.clone()), ("target".to_string(), boxes)])
            } else {
                Inputs::from([("pred".to_string(), t.clone()), ("target".to_string(), t)])
            };
            let p = params(&format!(r#"{{"{key}": 1.0}}"#));
            let e = call(loss, &p, &inputs).unwrap().unwrap_err();
            assert!(
                format!("{e:#}").contains(&format!("unknown parameter `{key}`")),
                "{loss}: {e:#}"
            );
            assert!(call(loss, &Map::new(), &inputs).unwrap().is_ok(), "{loss}");
        }
    }

    #[test]
    fn the_parameters_deserialize_into_the_config_with_its_defaults() {
        // tversky_loss has ignore_index (MONAI 1.6.1): read, not dropped.
        let t = Tensor::new(&[[[[0.2f32, 0.8]]]], &Device::Cpu).unwrap();
        let inputs = Inputs::from([("pred".to_string(), t.clone()), ("target".to_string(), t)]);
        let p = params(r#"{"ignore_index": 0, "alpha": 0.3}"#);
        assert!(call("tversky_loss", &p, &inputs).unwrap().is_ok());
        // generalized_dice_loss has no squared_pred.
        let p = params(r#"{"squared_pred": true}"#);
        let e = call("generalized_dice_loss", &p, &inputs).unwrap().unwrap_err();
        assert!(format!("{e:#}").contains("unknown parameter `squared_pred`"), "{e:#}");
        // A tensor parameter from a list, of the input's dtype.
        let like = &l1_inputs()["input"];
        let w: loss_core::BceLoss = config("binary_cross_entropy", &params(r#"{"weight": [1, 2]}"#), like).unwrap();
        assert_eq!(w.weight.unwrap().to_vec1::<f32>().unwrap(), [1.0, 2.0]);
    }

    #[test]
    fn known_and_null_parameters_pass() {
        let out = call(
            "l1_loss",
            &params(r#"{"reduction": "sum", "unused_default": null}"#),
            &l1_inputs(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(out.to_scalar::<f32>().unwrap(), 3.0);
        let smooth = params(r#"{"beta": 1.0, "reduction": "none"}"#);
        assert!(call("smooth_l1_loss", &smooth, &l1_inputs()).unwrap().is_ok());
    }
}
