//! Dice-loss steps with loss-seg: logits for a 16 × 16 image with a small square object are
//! optimised directly (the logits are the parameters) with MONAI's `DiceLoss(softmax=True,
//! to_onehot_y=True, include_background=False)` by plain gradient descent, and the soft Dice
//! rises towards 1. The step is large (300) because each pixel's share of the Dice gradient is
//! of order 1 / (Σp + Σt), small for a 256-pixel image.
//!
//! `cargo run --release -p examples --example segmentation`

use candle_core::{DType, Device, Result, Tensor, Var};
use loss_core::Loss;
use loss_seg::{DiceLoss, OverlapBuilders};

fn main() -> Result<()> {
    let dev = Device::Cpu;
    // the target: class indices [N = 1, 1, 16, 16], a 4 × 4 object (6 % of the pixels)
    let mut mask = vec![0u32; 256];
    for y in 6..10 {
        for x in 9..13 {
            mask[y * 16 + x] = 1;
        }
    }
    let target = Tensor::from_vec(mask, (1, 1, 16, 16), &dev)?;
    // the "model": free logits [1, 2, 16, 16], starting at 0 (p = ½ everywhere)
    let logits = Var::zeros((1, 2, 16, 16), DType::F32, &dev)?;
    let dice = DiceLoss::default()
        .with_softmax(true)
        .with_to_onehot_y(true)
        .with_include_background(false);
    let lr = 300.0;
    for step in 0..=50 {
        let loss = dice.forward(logits.as_tensor(), &target)?;
        if step % 10 == 0 {
            println!("step {step:>2}: Dice loss {:.4}", loss.to_scalar::<f32>()?);
        }
        let grads = loss.backward()?;
        let g = grads.get(logits.as_tensor()).expect("logits take part in the loss");
        logits.set(&(logits.as_tensor() - (g * lr)?)?)?;
    }
    let pred = logits.as_tensor().argmax(1)?; // [1, 16, 16]
    let hits = pred.flatten_all()?.to_vec1::<u32>()?;
    let found = hits.iter().filter(|&&c| c == 1).count();
    println!("pixels predicted as object: {found} (the object has 16)");
    Ok(())
}
