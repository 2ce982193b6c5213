//! Small models with seeded initial weights, their variables registered in a [`VarMap`].
//!
//! Candle's CPU generator cannot be seeded, so initial weights are drawn here from a ChaCha8
//! stream ([`crate::rng`]) and inserted into the `VarMap` under their names (`"<prefix>.weight"`,
//! `"<prefix>.bias"`), which is also how they are saved as safetensors.

use crate::rng;
use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{Module, VarMap};
use rand_chacha::ChaCha8Rng;

/// How a layer's weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// Every weight and bias 0.
    Zeros,
    /// PyTorch's default for `nn.Linear` and `nn.Conv2d`: weight and bias from
    /// U(−1/√fan_in, 1/√fan_in) (`kaiming_uniform_(a = √5)` gives this bound for the weight).
    PyTorch,
}

/// Creates a variable of `shape` with the given values (f64, cast to `dtype`) and registers it.
///
/// # Errors
/// A name already in the map, or a tensor error.
pub fn new_var(
    varmap: &VarMap,
    name: &str,
    shape: &[usize],
    values: Vec<f64>,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let t = Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?;
    let var = Var::from_tensor(&t)?;
    let tensor = var.as_tensor().clone();
    let mut data = varmap.data().lock().expect("VarMap lock poisoned");
    if data.contains_key(name) {
        return Err(candle_core::Error::Msg(format!("variable {name} already exists")));
    }
    data.insert(name.to_string(), var);
    Ok(tensor)
}

fn init_values(init: Init, rng: &mut ChaCha8Rng, n: usize, fan_in: usize) -> Vec<f64> {
    match init {
        Init::Zeros => vec![0.0; n],
        Init::PyTorch => rng::uniform(rng, n, 1.0 / (fan_in.max(1) as f64).sqrt()),
    }
}

/// A fully connected layer `y = x Wᵀ + b`, W of shape `[out, in]`, on inputs `[..., in]`.
pub struct Linear {
    inner: candle_nn::Linear,
}

impl Linear {
    /// Registers `"<prefix>.weight"` `[out, in]` and `"<prefix>.bias"` `[out]` in `varmap`,
    /// drawn from `rng` (weight first, then bias) as `init` says.
    ///
    /// # Errors
    /// Names already in the map, or a tensor error.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        varmap: &VarMap,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        init: Init,
        rng: &mut ChaCha8Rng,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let w = init_values(init, rng, d_in * d_out, d_in);
        let b = init_values(init, rng, d_out, d_in);
        let w = new_var(varmap, &format!("{prefix}.weight"), &[d_out, d_in], w, dtype, device)?;
        let b = new_var(varmap, &format!("{prefix}.bias"), &[d_out], b, dtype, device)?;
        Ok(Self {
            inner: candle_nn::Linear::new(w, Some(b)),
        })
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.inner.forward(xs)
    }
}

/// A two-layer perceptron `in → hidden → ReLU → out` (`"<prefix>.fc1"`, `"<prefix>.fc2"`).
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    /// Registers both layers with [`Init::PyTorch`] weights drawn from `rng`.
    ///
    /// # Errors
    /// Names already in the map, or a tensor error.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        varmap: &VarMap,
        prefix: &str,
        d_in: usize,
        hidden: usize,
        d_out: usize,
        rng: &mut ChaCha8Rng,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let fc1 = Linear::new(
            varmap,
            &format!("{prefix}.fc1"),
            d_in,
            hidden,
            Init::PyTorch,
            rng,
            dtype,
            device,
        )?;
        let fc2 = Linear::new(
            varmap,
            &format!("{prefix}.fc2"),
            hidden,
            d_out,
            Init::PyTorch,
            rng,
            dtype,
            device,
        )?;
        Ok(Self { fc1, fc2 })
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(xs)?.relu()?)
    }
}

/// A 2-D convolution (cross-correlation, as `torch.nn.Conv2d`) with a square odd kernel `k`,
/// stride 1 and zero padding `k / 2` (output the input's size), PyTorch's default
/// initialisation; variables `"<prefix>.weight"` `[out, in, k, k]` and `"<prefix>.bias"` `[out]`.
///
/// Computed as [`crate::im2col::im2col`] (`[N, in·k², H·W]`) and one matrix product with the
/// weight `[out, in·k²]`; on the CPU this trains much faster than Candle's direct `conv2d`,
/// whose backward goes through a naive `conv_transpose2d`.
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    k: usize,
}

impl Conv2d {
    /// Registers the layer's variables drawn from `rng` (weight first, then bias).
    ///
    /// # Errors
    /// An even `k`, names already in the map, or a tensor error.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        varmap: &VarMap,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        rng: &mut ChaCha8Rng,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if k & 1 == 0 {
            return Err(candle_core::Error::Msg(format!(
                "Conv2d {prefix}: kernel size {k} must be odd"
            )));
        }
        let fan_in = c_in * k * k;
        let w = init_values(Init::PyTorch, rng, c_out * fan_in, fan_in);
        let b = init_values(Init::PyTorch, rng, c_out, fan_in);
        let weight = new_var(
            varmap,
            &format!("{prefix}.weight"),
            &[c_out, c_in, k, k],
            w,
            dtype,
            device,
        )?;
        let bias = new_var(varmap, &format!("{prefix}.bias"), &[c_out], b, dtype, device)?;
        Ok(Self { weight, bias, k })
    }
}

impl Module for Conv2d {
    /// `[N, in, H, W]` to `[N, out, H, W]`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (n, c_in, h, w) = xs.dims4()?;
        let (c_out, ..) = self.weight.dims4()?;
        let cols = crate::im2col::im2col(xs, self.k)?;
        let wmat = self.weight.reshape((c_out, c_in * self.k * self.k))?;
        let out = wmat.broadcast_matmul(&cols)?.reshape((n, c_out, h, w))?;
        out.broadcast_add(&self.bias.reshape((1, c_out, 1, 1))?)
    }
}

/// The model of the tabular experiments: a zero-initialised linear layer `"linear"` (`hidden` is
/// `None`) or an [`Mlp`] `"mlp"` with `hidden` units, f32, `[n, d_in] → [n, d_out]`.
///
/// # Errors
/// Names already in the map, or a tensor error.
pub fn linear_or_mlp(
    varmap: &VarMap,
    hidden: Option<usize>,
    d_in: usize,
    d_out: usize,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<Box<dyn Module + Send + Sync>> {
    Ok(match hidden {
        None => Box::new(Linear::new(
            varmap,
            "linear",
            d_in,
            d_out,
            Init::Zeros,
            rng,
            DType::F32,
            device,
        )?),
        Some(h) => Box::new(Mlp::new(varmap, "mlp", d_in, h, d_out, rng, DType::F32, device)?),
    })
}
