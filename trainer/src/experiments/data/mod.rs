//! Data sets and splits: the real tables (diabetes, red wine quality, from linfa-datasets, which
//! ships them inside the crate), a user's CSV file ([`csv`]) and PNG images and masks
//! ([`images`]), synthetic segmentation images, fold assignment and z-scoring, a fold's tensors
//! ([`fold`]).

pub mod csv;
pub mod diabetes;
pub mod fold;
pub mod folds;
pub mod images;
pub mod shapes;
pub mod winequality;

use candle_core::{DType, Device, Result, Tensor};

/// A table of `n` rows and `d` feature columns (row-major) with one target per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Number of rows.
    pub n: usize,
    /// Number of features.
    pub d: usize,
    /// Features, row-major, `n * d` values.
    pub x: Vec<f64>,
    /// Targets, `n` values.
    pub y: Vec<f64>,
}

impl Table {
    /// The features of `rows`, in that order, row-major.
    pub fn rows_x(&self, rows: &[usize]) -> Vec<f64> {
        rows.iter()
            .flat_map(|&r| self.x[r * self.d..(r + 1) * self.d].iter().copied())
            .collect()
    }

    /// The targets of `rows`, in that order.
    pub fn rows_y(&self, rows: &[usize]) -> Vec<f64> {
        rows.iter().map(|&r| self.y[r]).collect()
    }
}

/// Per-feature mean and population standard deviation (divisor n) of a training set.
#[derive(Debug, Clone, PartialEq)]
pub struct ZScore {
    /// Mean of each feature.
    pub mean: Vec<f64>,
    /// Population standard deviation of each feature (a zero deviation is stored as 1).
    pub std: Vec<f64>,
}

impl ZScore {
    /// Fits the statistics on `x` (row-major, `d` columns).
    pub fn fit(x: &[f64], d: usize) -> Self {
        let n = (x.len() / d.max(1)).max(1) as f64;
        let mut mean = vec![0.0; d];
        for row in x.chunks(d) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; d];
        for row in x.chunks(d) {
            for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v - m) * (v - m);
            }
        }
        let std = var
            .iter()
            .map(|s| (s / n).sqrt())
            .map(|s| if s > 0.0 { s } else { 1.0 })
            .collect();
        Self { mean, std }
    }

    /// `(x − mean) / std`, column by column.
    pub fn apply(&self, x: &[f64]) -> Vec<f64> {
        let d = self.mean.len();
        x.chunks(d)
            .flat_map(|row| row.iter().zip(&self.mean).zip(&self.std).map(|((v, m), s)| (v - m) / s))
            .collect()
    }
}

/// A tensor of `shape` from f64 values, cast to `dtype`, on `device`.
///
/// # Errors
/// A length that does not match the shape, or a device error.
pub fn tensor(values: Vec<f64>, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
    Tensor::from_vec(values, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

/// A tensor's values as f64 on the host, flattened.
///
/// # Errors
/// A device error.
pub fn values(t: &Tensor) -> Result<Vec<f64>> {
    t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()
}
