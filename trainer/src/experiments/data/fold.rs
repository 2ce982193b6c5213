//! One fold of a table as tensors: the training and test rows of a fold assignment, features
//! z-scored with the training rows' statistics, targets in the form the task's losses take.

use super::{folds, tensor, Table, ZScore};
use candle_core::{DType, Device, Result, Tensor};

/// The targets of a table's rows, by task.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a> {
    /// Numbers: an f32 `[n, 1]` target.
    Values(&'a [f64]),
    /// Classes 0/1: an f32 `[n, 1]` target of 0.0 / 1.0.
    Binary(&'a [usize]),
    /// Class indices: a u32 `[n]` target.
    Classes(&'a [usize]),
}

/// The tensors of one fold (f32 features).
pub struct FoldTensors {
    /// Training features `[n_train, d]`.
    pub x_train: Tensor,
    /// Training targets (see [`Targets`]).
    pub t_train: Tensor,
    /// Test features `[n_test, d]`.
    pub x_test: Tensor,
    /// The training rows of the table, in row order.
    pub train: Vec<usize>,
    /// The test rows of the table, in row order.
    pub test: Vec<usize>,
}

/// The fold `fold` of `assignment` (the fold of each row): features z-scored on the training
/// rows when `standardize` ([`ZScore`]), as f32 tensors on `device`.
///
/// # Errors
/// A device error.
pub fn fold_tensors(
    table: &Table,
    assignment: &[usize],
    fold: usize,
    targets: Targets<'_>,
    standardize: bool,
    device: &Device,
) -> Result<FoldTensors> {
    let (train, test) = folds::split(assignment, fold);
    let (x_train, x_test) = (table.rows_x(&train), table.rows_x(&test));
    let (x_train, x_test) = if standardize {
        let z = ZScore::fit(&x_train, table.d);
        (z.apply(&x_train), z.apply(&x_test))
    } else {
        (x_train, x_test)
    };
    let column = |v: Vec<f64>| tensor(v, &[train.len(), 1], DType::F32, device);
    let t_train = match targets {
        Targets::Values(y) => column(train.iter().map(|&r| y[r]).collect())?,
        Targets::Binary(y) => column(train.iter().map(|&r| y[r] as f64).collect())?,
        Targets::Classes(y) => {
            let idx: Vec<u32> = train.iter().map(|&r| y[r] as u32).collect();
            Tensor::new(idx.as_slice(), &Device::Cpu)?.to_device(device)?
        }
    };
    Ok(FoldTensors {
        x_train: tensor(x_train, &[train.len(), table.d], DType::F32, device)?,
        t_train,
        x_test: tensor(x_test, &[test.len(), table.d], DType::F32, device)?,
        train,
        test,
    })
}
