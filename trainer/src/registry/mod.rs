//! Loss by name: builds a loss call from a name, JSON parameters and named input tensors.
//!
//! Used by the reference-case runner ([`crate::cases`]) and by the CLI. Each loss crate has its
//! own table (`core`, `bbox`, `seg`); [`call`] asks them in turn.

mod bbox;
mod core;
mod seg;

use anyhow::{anyhow, bail, Context};
use candle_core::{DType, Device, Tensor};
use loss_core::Reduction;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Named input tensors of one call (`"input"`, `"target"`, `"logits"`, `"pred"`, ...).
pub type Inputs = BTreeMap<String, Tensor>;

/// The JSON parameters of one call, with typed getters; `null` or a missing key is the default.
///
/// Every getter records the key it was asked for, so that [`Params::check_all_read`] can refuse a
/// parameter the loss does not have (a misspelt or misplaced option must not be ignored).
pub struct Params<'a> {
    /// The loss name, for error messages.
    pub loss: &'static str,
    map: &'a Map<String, Value>,
    read: std::cell::RefCell<std::collections::BTreeSet<String>>,
}

impl<'a> Params<'a> {
    /// Wraps a JSON object of parameters.
    pub fn new(loss: &'static str, map: &'a Map<String, Value>) -> Self {
        Self {
            loss,
            map,
            read: Default::default(),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.read.borrow_mut().insert(key.to_string());
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// An error naming the first parameter that is set (not `null`) but that no getter asked
    /// for: the loss has no parameter of that name.
    ///
    /// # Errors
    /// Such a parameter, with the names the loss did read.
    pub fn check_all_read(&self) -> anyhow::Result<()> {
        let read = self.read.borrow();
        if let Some(key) = self
            .map
            .iter()
            .find(|(k, v)| !v.is_null() && !read.contains(*k))
            .map(|(k, _)| k)
        {
            bail!(
                "{}: unknown parameter `{key}` (this loss takes {})",
                self.loss,
                read.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
            );
        }
        Ok(())
    }

    /// A number (`"nan"`, `"inf"`, `"-inf"` accepted), or `default`.
    pub fn f64(&self, key: &str, default: f64) -> anyhow::Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => number(v).with_context(|| format!("{}: parameter `{key}`", self.loss)),
        }
    }

    /// An optional number.
    pub fn opt_f64(&self, key: &str) -> anyhow::Result<Option<f64>> {
        self.get(key)
            .map(|v| number(v).with_context(|| format!("{}: parameter `{key}`", self.loss)))
            .transpose()
    }

    /// An integer, or `default`.
    pub fn i64(&self, key: &str, default: i64) -> anyhow::Result<i64> {
        Ok(self.opt_i64(key)?.unwrap_or(default))
    }

    /// An optional integer.
    pub fn opt_i64(&self, key: &str) -> anyhow::Result<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| anyhow!("{}: parameter `{key}` must be an integer, got {v}", self.loss)),
        }
    }

    /// A boolean, or `default`.
    pub fn bool(&self, key: &str, default: bool) -> anyhow::Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| anyhow!("{}: parameter `{key}` must be a boolean, got {v}", self.loss)),
        }
    }

    /// A string, or `default`.
    pub fn str(&self, key: &str, default: &'a str) -> anyhow::Result<&'a str> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .ok_or_else(|| anyhow!("{}: parameter `{key}` must be a string, got {v}", self.loss)),
        }
    }

    /// An optional string.
    pub fn opt_str(&self, key: &str) -> anyhow::Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| anyhow!("{}: parameter `{key}` must be a string, got {v}", self.loss)),
        }
    }

    /// The `reduction` parameter, or `default`.
    pub fn reduction(&self, default: Reduction) -> anyhow::Result<Reduction> {
        match self.get("reduction") {
            None => Ok(default),
            Some(v) => {
                let s = v
                    .as_str()
                    .ok_or_else(|| anyhow!("{}: `reduction` must be a string", self.loss))?;
                Ok(Reduction::parse(self.loss, s)?)
            }
        }
    }

    /// A flat list of numbers as a 1-D tensor of `like`'s dtype and device, or `None`.
    pub fn tensor(&self, key: &str, like: &Tensor) -> anyhow::Result<Option<Tensor>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => {
                let v = a.iter().map(number).collect::<anyhow::Result<Vec<f64>>>()?;
                let n = v.len();
                Ok(Some(Tensor::from_vec(v, n, like.device())?.to_dtype(like.dtype())?))
            }
            Some(v) => bail!("{}: parameter `{key}` must be a list of numbers, got {v}", self.loss),
        }
    }
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

/// Runs one table's `run` with the parameters of `params`, then refuses any parameter that `run`
/// did not read ([`Params::check_all_read`]); the call's own error comes first.
fn run_checked(
    loss: &'static str,
    params: &Map<String, Value>,
    inputs: &Inputs,
    run: fn(&'static str, &Params, &Inputs) -> anyhow::Result<Tensor>,
) -> anyhow::Result<Tensor> {
    let p = Params::new(loss, params);
    let out = run(loss, &p, inputs)?;
    p.check_all_read()?;
    Ok(out)
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
