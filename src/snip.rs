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

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::executor::{Executor, Mode};
use crate::mask::MaskSet;

/// Calibration batches: inputs `[n, ...]` and `u32` labels `[n]`.
pub struct Calibration {
    pub batches: Vec<(Tensor, Tensor)>,
}

impl Calibration {
    /// The samples `idx` of `data`, in batches of `batch_size`, on `device`.
    pub fn from_dataset(
        data: &crate::data::Dataset,
        idx: &[usize],
        batch_size: usize,
        device: &candle_core::Device,
    ) -> Result<Self> {
        let mut batches = Vec::new();
        for chunk in idx.chunks(batch_size.max(1)) {
            let (x, y) = data.batch(chunk);
            let mut shape = vec![chunk.len()];
            shape.extend(&data.shape);
            batches.push((
                Tensor::from_vec(x, shape, device)?,
                Tensor::from_vec(y, chunk.len(), device)?,
            ));
        }
        Ok(Self { batches })
    }
}

/// Adds a tensor's values to `acc`, widened to f64 on the host: a f64 copy
/// on the device first would be one more weight-sized buffer per layer.
fn add_into(acc: &mut [f64], t: &Tensor) -> Result<()> {
    let t = t.flatten_all()?;
    match t.dtype() {
        DType::F32 => {
            for (s, v) in acc.iter_mut().zip(t.to_vec1::<f32>()?) {
                *s += v as f64;
            }
        }
        _ => {
            for (s, v) in acc
                .iter_mut()
                .zip(t.to_dtype(DType::F64)?.to_vec1::<f64>()?)
            {
                *s += v;
            }
        }
    }
    Ok(())
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
                add_into(a, g)?;
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
            let mut v = vec![0.0; w.elem_count()];
            add_into(&mut v, w.as_tensor())?;
            Ok(v)
        })
        .collect()
}

/// SNIP scores `|g * w|` (normalised to sum 1, which changes no ranking),
/// computed in the gradients' buffers, one layer's weights read at a time.
pub fn scores(ex: &Executor, masks: &MaskSet, cal: &Calibration) -> Result<Vec<Vec<f64>>> {
    let mut s = loss_gradients(ex, masks, cal, 1.0)?;
    for (g, w) in s.iter_mut().zip(&ex.weights) {
        let mut wv = vec![0.0; g.len()];
        add_into(&mut wv, w.as_tensor())?;
        for (a, b) in g.iter_mut().zip(wv) {
            *a = (*a * b).abs();
        }
    }
    let total: f64 = s.iter().flatten().sum();
    if total > 0.0 {
        s.iter_mut().flatten().for_each(|v| *v /= total);
    }
    Ok(s)
}
