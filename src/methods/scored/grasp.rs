//! GraSP (Wang et al. 2020, Synaptic-Flow `Pruners/pruners.py`): score
//! `w * (H g)`, with `g` the loss gradient at temperature 200 and `H g` the
//! Hessian-gradient product, highest kept (the reference's sign convention,
//! REFERENCE.md). candle's autograd does not differentiate through a
//! gradient, so `H g` is a central finite difference of two gradients:
//! `(grad(w + e g) - grad(w - e g)) / (2 e)`, with `e` scaled to the weights'
//! and the gradient's norms.
//!
//! The step must be small: a larger one moves pre-activations across ReLU's
//! kink and the difference no longer sees the Hessian (ReLU's second
//! derivative is 0 almost everywhere). Against the exact `H g` of
//! `scripts/scorer_reference.py` (float32, the reference code's precision)
//! on LeNet-300-100, a step of norm `1e-7 (1 + |w|)` in f64 agrees to f32
//! rounding and gives its masks at 10x-1000x; `1e-5 (1 + |w|)` was off by
//! 500x in the first layer, and no step works in f32 (at `1e-2 (1 + |w|)`,
//! the f32 default before, the first layer's `H g` correlated 0.07 with
//! the exact one and the 10x masks shared a third of their weights). So
//! [`crate::methods::scored::prune_scored`] runs GraSP in f64; an f32
//! executor still works here, with the coarse f32 step.
//!
//! ```
//! use maskforge::{zoo, autodiff::executor::Executor, methods::scored::grasp, mask::MaskSet, autodiff::calibration::Calibration};
//! use candle_core::{Device, DType, Tensor};
//! let net = zoo::build("mlp:4-3-2", 0).unwrap();
//! let ex = Executor::new(&net, &Device::Cpu, DType::F64).unwrap();
//! let x = Tensor::ones((2, 4), DType::F64, &Device::Cpu).unwrap();
//! let y = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
//! let cal = Calibration { batches: vec![(x, y)] };
//! let s = grasp::scores(&ex, &MaskSet::dense(&net), &cal).unwrap();
//! assert_eq!(s[0].len(), 12);
//! ```

use candle_core::Tensor;

use crate::autodiff::calibration::Calibration;
use crate::autodiff::executor::Executor;
use crate::error::Result;
use crate::mask::MaskSet;
use crate::methods::scored::snip::{loss_gradients, weight_values};

/// The reference's temperature on the logits.
pub const TEMPERATURE: f64 = 200.0;

/// Shift every weight by `alpha * dir` (canonical order).
fn shift(ex: &Executor, base: &[Vec<f64>], dir: &[Vec<f64>], alpha: f64) -> Result<()> {
    for ((w, b), d) in ex.weights.iter().zip(base).zip(dir) {
        let v: Vec<f64> = b.iter().zip(d).map(|(x, y)| x + alpha * y).collect();
        let t = Tensor::from_vec(v, w.shape(), ex.device())?.to_dtype(ex.dtype())?;
        w.set(&t)?;
    }
    Ok(())
}

/// Per-layer values in canonical order.
pub type LayerValues = Vec<Vec<f64>>;

/// `H g` by central differences of loss gradients at temperature `temp`,
/// with the weights it was taken at.
pub fn hessian_gradient(
    ex: &Executor,
    masks: &MaskSet,
    cal: &Calibration,
    temp: f64,
) -> Result<(LayerValues, LayerValues)> {
    let g = loss_gradients(ex, masks, cal, temp)?;
    let w = weight_values(ex)?;
    let gn = g.iter().flatten().map(|x| x * x).sum::<f64>().sqrt();
    let wn = w.iter().flatten().map(|x| x * x).sum::<f64>().sqrt();
    let step = if ex.dtype() == candle_core::DType::F64 {
        1e-7
    } else {
        1e-2
    };
    let eps = if gn > 0.0 {
        step * (1.0 + wn) / gn
    } else {
        0.0
    };
    if eps == 0.0 {
        return Ok((g.iter().map(|l| vec![0.0; l.len()]).collect(), w));
    }
    shift(ex, &w, &g, eps)?;
    let plus = loss_gradients(ex, masks, cal, temp)?;
    shift(ex, &w, &g, -eps)?;
    let minus = loss_gradients(ex, masks, cal, temp)?;
    shift(ex, &w, &g, 0.0)?;
    let hg = plus
        .iter()
        .zip(&minus)
        .map(|(p, m)| {
            p.iter()
                .zip(m)
                .map(|(a, b)| (a - b) / (2.0 * eps))
                .collect()
        })
        .collect();
    Ok((hg, w))
}

/// GraSP scores `w * Hg`; pruned weights score `-inf` so they stay pruned.
pub fn scores(ex: &Executor, masks: &MaskSet, cal: &Calibration) -> Result<Vec<Vec<f64>>> {
    let (hg, w) = hessian_gradient(ex, masks, cal, TEMPERATURE)?;
    Ok(hg
        .iter()
        .zip(&w)
        .zip(&masks.layers)
        .map(|((h, w), m)| {
            h.iter()
                .zip(w)
                .enumerate()
                .map(|(i, (a, b))| if m.get(i) { a * b } else { f64::NEG_INFINITY })
                .collect()
        })
        .collect())
}
