//! SNIP (Lee et al. 2019) and iterative SNIP (de Jorge et al. 2021):
//! connection sensitivity `|dL/dw * w|` of the cross-entropy loss summed
//! over the calibration batches (Synaptic-Flow `Pruners/pruners.py`, `SNIP`),
//! BatchNorm in eval mode. Pruned weights have zero gradient (the mask
//! multiplies the weight in the forward pass), so they score 0 and stay pruned.
//!
//! ```
//! use maskforge::{zoo, executor::Executor, snip, mask::MaskSet};
//! use candle_core::{Device, DType, Tensor};
//! let net = zoo::build("mlp:4-3-2", 0).unwrap();
//! let ex = Executor::new(&net, &Device::Cpu, DType::F32).unwrap();
//! let x = Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap();
//! let y = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
//! let cal = snip::Calibration { batches: vec![(x, y)] };
//! let scores = snip::scores(&ex, &MaskSet::dense(&net), &cal).unwrap();
//! let total: f64 = scores.iter().flatten().sum();
//! assert!((total - 1.0).abs() < 1e-9);
//! ```

use candle_core::Tensor;

use crate::error::Result;
use crate::executor::{Executor, Mode};
use crate::mask::MaskSet;

/// Calibration batches: inputs `[n, ...]` and `u32` labels `[n]`.
pub struct Calibration {
    pub batches: Vec<(Tensor, Tensor)>,
}

/// Sum over the batches of `dL/dw` for every layer (canonical order), with
/// the loss on `logits / temperature`.
pub fn loss_gradients(
    ex: &Executor,
    masks: &MaskSet,
    cal: &Calibration,
    temperature: f64,
) -> Result<Vec<Vec<f64>>> {
    let mut acc: Vec<Vec<f64>> = ex
        .weights
        .iter()
        .map(|w| vec![0.0; w.elem_count()])
        .collect();
    for (x, y) in &cal.batches {
        let logits = (ex.logits(x, Some(masks), Mode::Eval)? / temperature)?;
        let loss = candle_nn::loss::cross_entropy(&logits, y)?;
        let grads = loss.backward()?;
        for (a, w) in acc.iter_mut().zip(&ex.weights) {
            if let Some(g) = grads.get(w.as_tensor()) {
                let g: Vec<f64> = g
                    .flatten_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_vec1()?;
                for (s, v) in a.iter_mut().zip(g) {
                    *s += v;
                }
            }
        }
    }
    Ok(acc)
}

/// Current weight values (canonical) as f64.
pub fn weight_values(ex: &Executor) -> Result<Vec<Vec<f64>>> {
    ex.weights
        .iter()
        .map(|w| {
            Ok(w.as_tensor()
                .flatten_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_vec1()?)
        })
        .collect()
}

/// SNIP scores `|g * w|` (normalised to sum 1, which changes no ranking).
pub fn scores(ex: &Executor, masks: &MaskSet, cal: &Calibration) -> Result<Vec<Vec<f64>>> {
    let g = loss_gradients(ex, masks, cal, 1.0)?;
    let w = weight_values(ex)?;
    let mut s: Vec<Vec<f64>> = g
        .iter()
        .zip(&w)
        .map(|(g, w)| g.iter().zip(w).map(|(a, b)| (a * b).abs()).collect())
        .collect();
    let total: f64 = s.iter().flatten().sum();
    if total > 0.0 {
        s.iter_mut().flatten().for_each(|v| *v /= total);
    }
    Ok(s)
}
