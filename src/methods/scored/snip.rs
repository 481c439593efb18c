//! SNIP (Lee et al. 2019) and iterative SNIP (de Jorge et al. 2021):
//! connection sensitivity `|dL/dw * w|` of the cross-entropy loss summed
//! over the calibration batches (Synaptic-Flow `Pruners/pruners.py`, `SNIP`),
//! BatchNorm in eval mode. Pruned weights have zero gradient (the mask
//! multiplies the weight in the forward pass), so they score 0 and stay pruned.
//!
//! ```
//! use maskforge::{zoo, autodiff::{calibration::Calibration, executor::Executor}, methods::scored::snip, mask::MaskSet};
//! use candle_core::{Device, DType, Tensor};
//! let net = zoo::build("mlp:4-3-2", 0).unwrap();
//! let ex = Executor::new(&net, &Device::Cpu, DType::F32).unwrap();
//! let x = Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap();
//! let y = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
//! let cal = Calibration { batches: vec![(x, y)] };
//! let scores = snip::scores(&ex, &MaskSet::dense(&net), &cal).unwrap();
//! let total: f64 = scores.iter().flatten().sum();
//! assert!((total - 1.0).abs() < 1e-9);
//! ```

use candle_core::{CpuStorage, DType, Storage, Tensor};
use rayon::prelude::*;

use crate::autodiff::backward::{weight_gradients, Seed};
use crate::autodiff::calibration::Calibration;
use crate::autodiff::executor::{Executor, Mode};
use crate::error::Result;
use crate::mask::MaskSet;

/// Runs `f` on a tensor's values, read in place where they are contiguous
/// f32 or f64 on the CPU (no host or f64 copy of a weight-sized tensor),
/// else through a copy converted to f64.
fn with_values<R>(t: &Tensor, f: impl FnOnce(Values<'_>) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    if let (Storage::Cpu(cpu), Some((lo, hi))) = (&*storage, layout.contiguous_offsets()) {
        match cpu {
            CpuStorage::F32(v) => return Ok(f(Values::F32(&v[lo..hi]))),
            CpuStorage::F64(v) => return Ok(f(Values::F64(&v[lo..hi]))),
            _ => {}
        }
    }
    drop(storage);
    let v = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    Ok(f(Values::F64(&v)))
}

/// A tensor's values on the host, in their own precision: the loops over
/// them are written once, generic over `Into<f64>`, and compiled per type
/// (a `dyn Iterator` of widened values cost a virtual call per weight:
/// 15 M of them twice per SNIP run on VGG-16).
enum Values<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

/// Adds a tensor's values to `acc` (or, when `acc` is empty, sets it),
/// widened to f64 on the host: a f64 copy on the device first would be one
/// more weight-sized buffer per layer, and a zero-filled `acc` one more pass.
pub(crate) fn add_into(acc: &mut Vec<f64>, t: &Tensor) -> Result<()> {
    fn add<T: Copy + Into<f64>>(acc: &mut Vec<f64>, v: &[T]) {
        if acc.is_empty() {
            acc.extend(v.iter().map(|&x| x.into()));
        } else {
            acc.iter_mut().zip(v).for_each(|(s, &x)| *s += x.into());
        }
    }
    with_values(t, |v| match v {
        Values::F32(v) => add(acc, v),
        Values::F64(v) => add(acc, v),
    })
}

/// What the loss-based scorers (SNIP, GraSP, SNIP-it) differentiate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    /// Cross-entropy against the labels: the output is class scores
    /// (`[C]`, or `[C, 1, 1]` after a global pool).
    CrossEntropy,
    /// Half the squared output: the output is a map or a sequence (a
    /// detector's boxes, an encoder's states), which labels do not describe.
    OutputEnergy,
}

impl Objective {
    /// The seed of a batch with labels `y` (token ids `[n, len]`: a
    /// language model's next-token loss, whatever the objective).
    pub fn seed(self, y: &Tensor, temperature: f64) -> Seed<'_> {
        match self {
            Objective::OutputEnergy if y.rank() != 2 => Seed::Energy,
            _ => Seed::CrossEntropy {
                labels: y,
                temperature,
            },
        }
    }

    /// The objective for `net`'s output: class scores get the cross-entropy.
    pub fn of(net: &crate::graph::Network) -> Self {
        let out = net.outputs[0];
        // The logits are read before a trailing softmax (the loss applies its own).
        let logits = match net.nodes.iter().find(|n| n.output == out) {
            Some(n)
                if matches!(
                    n.op,
                    crate::graph::Op::Softmax(_) | crate::graph::Op::LogSoftmax(_)
                ) =>
            {
                n.inputs[0]
            }
            _ => out,
        };
        let shape = &net.values[logits].shape;
        if shape.iter().skip(1).all(|&d| d == 1) {
            Objective::CrossEntropy
        } else {
            Objective::OutputEnergy
        }
    }

    /// Why the scores differ from the paper's, when they do.
    pub fn note(self, net: &crate::graph::Network) -> Option<String> {
        (self == Objective::OutputEnergy).then(|| {
            format!(
                "the model's output {:?} is not class scores, so the loss-based scores are \
                 the sensitivity of half its squared norm (label-free), not of a cross-entropy",
                net.values[net.outputs[0]].shape
            )
        })
    }
}

/// Sum over the batches of `dL/dw` for every layer (canonical order), with
/// the loss on `logits / temperature` ([`Objective::of`] the network).
pub fn loss_gradients(
    ex: &Executor,
    masks: &MaskSet,
    cal: &Calibration,
    temperature: f64,
) -> Result<Vec<Vec<f64>>> {
    let mut acc: Vec<Vec<f64>> = vec![Vec::new(); ex.weights.len()];
    let objective = Objective::of(ex.network());
    for (x, y) in &cal.batches {
        let seed = objective.seed(y, temperature);
        let grads = weight_gradients(ex, x, Some(masks), Mode::Eval, seed)?;
        acc.par_iter_mut()
            .zip(grads)
            .filter_map(|(a, g)| Some((a, g?)))
            .try_for_each(|(a, g)| add_into(a, &g))?;
    }
    // Layers no gradient reached (and an empty calibration set): zeros.
    for (a, w) in acc.iter_mut().zip(&ex.weights) {
        if a.is_empty() {
            *a = vec![0.0; w.elem_count()];
        }
    }
    Ok(acc)
}

/// Current weight values (canonical) as f64.
pub fn weight_values(ex: &Executor) -> Result<Vec<Vec<f64>>> {
    ex.weights
        .par_iter()
        .map(|w| {
            let mut v = Vec::new();
            add_into(&mut v, w.as_tensor())?;
            Ok(v)
        })
        .collect()
}

/// SNIP scores `|g * w|` (normalised to sum 1, which changes no ranking),
/// computed in the gradients' buffers, one layer's weights read at a time.
pub fn scores(ex: &Executor, masks: &MaskSet, cal: &Calibration) -> Result<Vec<Vec<f64>>> {
    let mut s = loss_gradients(ex, masks, cal, 1.0)?;
    s.par_iter_mut()
        .zip(ex.weights.par_iter())
        .try_for_each(|(g, w)| {
            fn times<T: Copy + Into<f64>>(g: &mut [f64], w: &[T]) {
                g.iter_mut()
                    .zip(w)
                    .for_each(|(a, &b)| *a = (*a * b.into()).abs())
            }
            with_values(w.as_tensor(), |w| match w {
                Values::F32(w) => times(g, w),
                Values::F64(w) => times(g, w),
            })
        })?;
    // Each layer summed in order on its own thread, the layers' sums then
    // in order: the same total, bit for bit, as one serial sum.
    let per_layer: Vec<f64> = s.par_iter().map(|l| l.iter().sum::<f64>()).collect();
    let total: f64 = per_layer.iter().sum();
    if total > 0.0 {
        s.par_iter_mut()
            .for_each(|l| l.iter_mut().for_each(|v| *v /= total));
    }
    Ok(s)
}
