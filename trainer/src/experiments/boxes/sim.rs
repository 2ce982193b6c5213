//! The simulation loop: 200 updates `B += lr (2 − IoU) s` of every case and the error curve
//! E(t), in both gradient modes, with a CPU fast path and a plain-Candle path for any device.

use super::kernels::{par_chunks, with_cpu_slice, xywh_to_xyxy_with, Real, CHUNK};
use super::paper::{iou, iou_tensor, paper_gradient, paper_gradient_tensor};
use super::{autograd, learning_rate, BoxLoss, GradMode, ITERATIONS};
use candle_core::{bail, DType, Result, Tensor, Var};
use rayon::prelude::*;

/// E(t) for t = 0..=200 of one loss: the sum over cases of `|x − xg| + |y − yg| + |w − wg| +
/// |h − hg|` before the first update and after each update.
///
/// `anchors` and `targets` are `[N, 4]` `(x, y, w, h)` tensors of one float dtype on one device.
/// With `fast` (and a CPU f32/f64 tensor) the CPU kernels run; otherwise plain Candle ops on the
/// tensors' device. Both give the same curve (to rounding).
///
/// # Errors
/// Mismatched shapes or dtypes, a dtype other than f32/f64, a tensor error.
pub fn simulate(loss: BoxLoss, grad: GradMode, anchors: &Tensor, targets: &Tensor, fast: bool) -> Result<Vec<f64>> {
    check(anchors, targets)?;
    let fast = fast && anchors.device().is_cpu();
    match (grad, fast, anchors.dtype()) {
        (GradMode::Paper, true, DType::F32) => paper_cpu::<f32>(loss, anchors, targets),
        (GradMode::Paper, true, _) => paper_cpu::<f64>(loss, anchors, targets),
        (GradMode::Paper, false, _) => paper_composite(loss, anchors, targets),
        (GradMode::Autograd, true, DType::F32) => autograd_cpu::<f32>(loss, anchors, targets),
        (GradMode::Autograd, true, _) => autograd_cpu::<f64>(loss, anchors, targets),
        (GradMode::Autograd, false, _) => autograd_batch(loss, anchors, targets),
    }
}

fn check(boxes: &Tensor, targets: &Tensor) -> Result<()> {
    if boxes.dims() != targets.dims() || boxes.rank() != 2 || boxes.dim(1)? != 4 {
        bail!(
            "boxes: boxes {:?} and targets {:?} must both be [N, 4]",
            boxes.dims(),
            targets.dims()
        );
    }
    if boxes.dtype() != targets.dtype() || !matches!(boxes.dtype(), DType::F32 | DType::F64) {
        bail!(
            "boxes: boxes ({:?}) and targets ({:?}) must share dtype f32 or f64",
            boxes.dtype(),
            targets.dtype()
        );
    }
    if !boxes.device().same_device(targets.device()) {
        bail!("boxes: boxes and targets must be on one device");
    }
    Ok(())
}

/// Σ |b − g| over one case, accumulated in f64.
#[inline]
fn case_error<T: Real>(b: &[T], g: &[T]) -> f64 {
    (0..4).map(|j| (b[j] - g[j]).abs().f64()).sum()
}

/// Adds per-chunk curves in chunk order.
fn add_partials(parts: Vec<Vec<f64>>) -> Vec<f64> {
    let mut e = vec![0.0; ITERATIONS + 1];
    for p in parts {
        for (a, b) in e.iter_mut().zip(p) {
            *a += b;
        }
    }
    e
}

/// Paper mode on the CPU: each case runs its 200 updates in registers.
fn paper_cpu<T: Real>(loss: BoxLoss, anchors: &Tensor, targets: &Tensor) -> Result<Vec<f64>> {
    let lrs: Vec<T> = (1..=ITERATIONS).map(|k| T::of(learning_rate(k))).collect();
    with_cpu_slice::<T, _>(anchors, |a| {
        with_cpu_slice::<T, _>(targets, |g| {
            let n = a.len() / 4;
            let parts = par_chunks(n, &mut [] as &mut [u8], 0, |cases, _| {
                let mut e = vec![0.0; ITERATIONS + 1];
                for i in cases {
                    let gt = [g[4 * i], g[4 * i + 1], g[4 * i + 2], g[4 * i + 3]];
                    let mut b = [a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]];
                    e[0] += case_error(&b, &gt);
                    for (k, &lr) in lrs.iter().enumerate() {
                        let (s, iou) = paper_gradient(loss, b, gt);
                        let f = lr * (T::of(2.0) - iou);
                        for j in 0..4 {
                            b[j] += f * s[j];
                        }
                        e[k + 1] += case_error(&b, &gt);
                    }
                }
                e
            });
            add_partials(parts)
        })
    })?
}

/// The error E of `[N, 4]` boxes against the targets (per-chunk f64 sums on the CPU, plain
/// Candle ops elsewhere).
fn error_tensor(b: &Tensor, targets: &Tensor) -> Result<f64> {
    if b.device().is_cpu() {
        let parts = match b.dtype() {
            DType::F32 => chunk_errors::<f32>(b, targets)?,
            _ => chunk_errors::<f64>(b, targets)?,
        };
        return Ok(parts.into_iter().sum());
    }
    let s = loss_core::reduction::sum_all(&b.sub(targets)?.abs()?)?;
    match s.dtype() {
        DType::F32 => Ok(s.to_scalar::<f32>()? as f64),
        _ => s.to_scalar::<f64>(),
    }
}

/// Paper mode in plain Candle ops: one tensor update of all cases per iteration.
fn paper_composite(loss: BoxLoss, anchors: &Tensor, targets: &Tensor) -> Result<Vec<f64>> {
    let mut b = anchors.clone();
    let mut e = vec![error_tensor(&b, targets)?];
    for k in 1..=ITERATIONS {
        let (s, iou) = paper_gradient_tensor(loss, &b, targets)?;
        let lr = learning_rate(k);
        let f = iou.affine(-lr, 2.0 * lr)?.unsqueeze(1)?;
        b = b.add(&s.broadcast_mul(&f)?)?;
        e.push(error_tensor(&b, targets)?);
    }
    Ok(e)
}

/// One update `b − lr (2 − IoU(b)) g` of every case on the CPU (`g` the loss gradient), and E
/// after it, one partial sum per [`CHUNK`] of cases.
fn descend_cpu<T: Real>(b: &Tensor, g: &Tensor, targets: &Tensor, lr: f64) -> Result<(Tensor, Vec<f64>)> {
    let lr = T::of(lr);
    let (next, err) = with_cpu_slice::<T, _>(b, |bs| {
        with_cpu_slice::<T, _>(g, |gs| {
            with_cpu_slice::<T, _>(targets, |ts| {
                let n = bs.len() / 4;
                let mut out = vec![T::zero(); 4 * n];
                let parts = par_chunks(n, &mut out, 4, |cases, o| {
                    let mut e = 0.0;
                    for (local, i) in cases.enumerate() {
                        let p = [bs[4 * i], bs[4 * i + 1], bs[4 * i + 2], bs[4 * i + 3]];
                        let t = [ts[4 * i], ts[4 * i + 1], ts[4 * i + 2], ts[4 * i + 3]];
                        let f = lr * (T::of(2.0) - iou(p, t));
                        let o = &mut o[4 * local..4 * local + 4];
                        for j in 0..4 {
                            o[j] = p[j] - f * gs[4 * i + j];
                        }
                        e += case_error(o, &t);
                    }
                    e
                });
                (out, parts)
            })
        })
    })???;
    // Born a variable: the next iteration differentiates w.r.t. it without a copy.
    Ok((Var::from_vec(next, b.shape(), b.device())?.as_tensor().clone(), err))
}

/// `b − lr (2 − IoU(b)) g` and E after it: the CPU kernel, or plain Candle ops.
fn descend(b: &Tensor, g: &Tensor, targets: &Tensor, lr: f64, fast: bool) -> Result<(Tensor, f64)> {
    let total = |(t, parts): (Tensor, Vec<f64>)| (t, parts.into_iter().sum::<f64>());
    match (fast && b.device().is_cpu(), b.dtype()) {
        (true, DType::F32) => descend_cpu::<f32>(b, g, targets, lr).map(total),
        (true, DType::F64) => descend_cpu::<f64>(b, g, targets, lr).map(total),
        _ => {
            let f = iou_tensor(b, targets)?.affine(-lr, 2.0 * lr)?.unsqueeze(1)?;
            let next = b.sub(&g.broadcast_mul(&f)?)?.detach();
            let err = error_tensor(&next, targets)?;
            Ok((next, err))
        }
    }
}

/// The gradient w.r.t. `[N, 4]` boxes `(x, y, w, h)` of the loss-bbox loss summed over the cases,
/// against `target_xyxy`: the conversion to `xyxy` is part of the graph, one backward.
/// `fast = false` forces the composite path of the conversion and of the loss.
///
/// # Errors
/// A loss-bbox error, a tensor error.
pub fn autograd_gradient(loss: BoxLoss, boxes: &Tensor, target_xyxy: &Tensor, fast: bool) -> Result<Tensor> {
    let b = Var::from_tensor(boxes)?;
    let forward = || -> Result<Tensor> {
        let xyxy = xywh_to_xyxy_with(b.as_tensor(), fast)?;
        autograd::loss_sum(loss, &xyxy, target_xyxy)
    };
    let total = if fast {
        forward()?
    } else {
        loss_core::kernel::with_path(loss_core::kernel::Path::Composite, forward)?
    };
    let grads = total.backward()?;
    match grads.get(b.as_tensor()) {
        Some(g) => Ok(g.clone()),
        None => bail!("boxes: no gradient reached the boxes ({})", loss.name()),
    }
}

/// One update of every case: `boxes + lr (2 − IoU) s`, with `s` the negative loss gradient
/// (autograd mode) or the authors' direction (paper mode). `[N, 4]` `(x, y, w, h)` in and out.
/// `fast = false` forces the plain-Candle path on the CPU.
///
/// # Errors
/// Mismatched shapes, a dtype other than f32/f64, a loss-bbox or tensor error.
pub fn step(loss: BoxLoss, grad: GradMode, boxes: &Tensor, targets: &Tensor, lr: f64, fast: bool) -> Result<Tensor> {
    check(boxes, targets)?;
    let fast = fast && boxes.device().is_cpu();
    match grad {
        GradMode::Autograd => {
            let target_xyxy = xywh_to_xyxy_with(targets, fast)?.detach();
            let g = autograd_gradient(loss, boxes, &target_xyxy, fast)?;
            Ok(descend(boxes, &g, targets, lr, fast)?.0)
        }
        GradMode::Paper if fast => match boxes.dtype() {
            DType::F32 => paper_step_cpu::<f32>(loss, boxes, targets, lr),
            _ => paper_step_cpu::<f64>(loss, boxes, targets, lr),
        },
        GradMode::Paper => {
            let (s, iou) = paper_gradient_tensor(loss, boxes, targets)?;
            let f = iou.affine(-lr, 2.0 * lr)?.unsqueeze(1)?;
            boxes.add(&s.broadcast_mul(&f)?)
        }
    }
}

fn paper_step_cpu<T: Real>(loss: BoxLoss, boxes: &Tensor, targets: &Tensor, lr: f64) -> Result<Tensor> {
    let lr = T::of(lr);
    let out = with_cpu_slice::<T, _>(boxes, |a| {
        with_cpu_slice::<T, _>(targets, |g| {
            let mut out = a.to_vec();
            for (b, gt) in out.chunks_exact_mut(4).zip(g.chunks_exact(4)) {
                let p = [b[0], b[1], b[2], b[3]];
                let (s, iou) = paper_gradient(loss, p, [gt[0], gt[1], gt[2], gt[3]]);
                let f = lr * (T::of(2.0) - iou);
                for j in 0..4 {
                    b[j] += f * s[j];
                }
            }
            out
        })
    })??;
    Tensor::from_vec(out, boxes.shape(), boxes.device())
}

/// Cases per block of the CPU autograd path (a multiple of [`CHUNK`]).
const BLOCK: usize = 2 * CHUNK;

/// Autograd mode on the CPU, block by block: the cases are independent, so each block of
/// [`BLOCK`] cases runs its 200 iterations on its own (one backward of the block's summed loss
/// per iteration), with its tensors small enough to stay in cache and be recycled by the
/// allocator; blocks run in parallel on rayon's pool. Every case's arithmetic is the same as in
/// one batch of all cases, and E(t) adds the per-chunk sums in case order, so the curve does not
/// depend on the block size or the number of threads.
fn autograd_cpu<T: Real>(loss: BoxLoss, anchors: &Tensor, targets: &Tensor) -> Result<Vec<f64>> {
    let n = anchors.dim(0)?;
    let per_block = (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .map(|blk| {
            let (start, len) = (blk * BLOCK, BLOCK.min(n - blk * BLOCK));
            autograd_block::<T>(loss, &anchors.narrow(0, start, len)?, &targets.narrow(0, start, len)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut e = vec![0.0; ITERATIONS + 1];
    for block in &per_block {
        for (et, parts) in e.iter_mut().zip(block) {
            for p in parts {
                *et += p;
            }
        }
    }
    Ok(e)
}

/// E of `b` against `targets`, one partial sum per [`CHUNK`] of cases (CPU).
fn chunk_errors<T: Real>(b: &Tensor, targets: &Tensor) -> Result<Vec<f64>> {
    with_cpu_slice::<T, _>(b, |bs| {
        with_cpu_slice::<T, _>(targets, |ts| {
            bs.chunks(4 * CHUNK)
                .zip(ts.chunks(4 * CHUNK))
                .map(|(bc, tc)| {
                    bc.chunks(4)
                        .zip(tc.chunks(4))
                        .map(|(p, t)| case_error(p, t))
                        .sum::<f64>()
                })
                .collect()
        })
    })?
}

/// The 200 iterations of one block: per t, the per-chunk partial sums of E(t).
fn autograd_block<T: Real>(loss: BoxLoss, anchors: &Tensor, targets: &Tensor) -> Result<Vec<Vec<f64>>> {
    let target_xyxy = xywh_to_xyxy_with(targets, true)?.detach();
    let mut e = Vec::with_capacity(ITERATIONS + 1);
    e.push(chunk_errors::<T>(anchors, targets)?);
    let mut b = anchors.clone();
    for k in 1..=ITERATIONS {
        let g = autograd_gradient(loss, &b, &target_xyxy, true)?;
        let (next, parts) = descend_cpu::<T>(&b, &g, targets, learning_rate(k))?;
        b = next;
        e.push(parts);
    }
    Ok(e)
}

/// Autograd mode in one batch of plain Candle ops: per iteration, one backward of the summed
/// loss-bbox loss over all cases (the path for other devices, and the composite reference on the
/// CPU).
fn autograd_batch(loss: BoxLoss, anchors: &Tensor, targets: &Tensor) -> Result<Vec<f64>> {
    let fast = false;
    let target_xyxy = xywh_to_xyxy_with(targets, fast)?.detach();
    let mut b = anchors.detach();
    let mut e = vec![error_tensor(&b, targets)?];
    for k in 1..=ITERATIONS {
        let g = autograd_gradient(loss, &b, &target_xyxy, fast)?;
        let (next, err) = descend(&b, &g, targets, learning_rate(k), fast)?;
        b = next;
        e.push(err);
    }
    Ok(e)
}
