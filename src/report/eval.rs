//! Accuracy of a (masked) network without training: top-1 accuracy and mean
//! cross-entropy over a labelled dataset (`maskforge eval`). OSSuM's claim
//! is about this figure: a neuron subnetwork at initialisation that beats
//! the full network's ~10 %.
//!
//! ```
//! use maskforge::{zoo, report::eval, io::data::Dataset};
//! use candle_core::Device;
//! let net = zoo::build("mlp:4-8-3", 0).unwrap();
//! let data = Dataset::load("synthetic:30", &[4], 3, 0).unwrap();
//! let r = eval::evaluate(&net, None, &data, 16, &Device::Cpu).unwrap();
//! assert_eq!(r.samples, 30);
//! assert!(r.correct <= 30 && r.loss.is_finite());
//! ```

use candle_core::{DType, Device, Tensor, D};

use crate::autodiff::executor::{Executor, Mode};
use crate::error::Result;
use crate::graph::Network;
use crate::io::data::Dataset;
use crate::mask::MaskSet;

/// What `eval` reports.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EvalReport {
    pub samples: usize,
    pub correct: usize,
    /// correct / samples.
    pub accuracy: f64,
    /// Mean cross-entropy of the logits (natural log).
    pub loss: f64,
    /// Accuracy per class (`None` for a class with no samples).
    pub class_accuracy: Vec<Option<f64>>,
}

/// Run every sample of `data` through `net` (BatchNorm in eval mode) with
/// `masks` applied; a tie in the logits goes to the lower class.
pub fn evaluate(
    net: &Network,
    masks: Option<&MaskSet>,
    data: &Dataset,
    batch_size: usize,
    device: &Device,
) -> Result<EvalReport> {
    let ex = Executor::new(net, device, DType::F32)?;
    let classes = net.values[net.outputs[0]].numel();
    let (mut hits, mut seen) = (vec![0usize; classes], vec![0usize; classes]);
    let mut loss = 0.0f64;
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let (x, y) = data.batch(chunk);
        let mut shape = vec![chunk.len()];
        shape.extend(&data.shape);
        let x = Tensor::from_vec(x, shape, device)?;
        let logits = ex.logits(&x, masks, Mode::Eval)?.to_dtype(DType::F64)?;
        let logp: Vec<Vec<f64>> = candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2()?;
        for (row, &label) in logp.iter().zip(&y) {
            let label = label as usize;
            seen[label] += 1;
            hits[label] += usize::from(argmax(row) == label);
            loss -= row[label];
        }
    }
    let samples = data.len();
    let correct = hits.iter().sum();
    Ok(EvalReport {
        samples,
        correct,
        accuracy: correct as f64 / samples.max(1) as f64,
        loss: loss / samples.max(1) as f64,
        class_accuracy: hits
            .iter()
            .zip(&seen)
            .map(|(&h, &n)| (n > 0).then(|| h as f64 / n as f64))
            .collect(),
    })
}

/// Index of the largest value, the first on ties.
fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}
