//! GraSP (Wang et al. 2020, Synaptic-Flow `Pruners/pruners.py`): score
//! `w * (H g)`, with `g` the loss gradient at temperature 200 and `H g` the
//! Hessian-gradient product, highest kept (the reference's sign convention,
//! REFERENCE.md).
//!
//! `H g` is exact where [`crate::autodiff::hvp`] covers the network (ReLU
//! networks of convolutions, dense layers, pools and sums: the zoo's, the
//! papers'): a forward pass of tangents along `g` and a reverse pass of
//! gradient pairs, in f32 like the reference's double backward. Elsewhere
//! (a sigmoid gate, a normalisation, attention) it is a central finite
//! difference of two gradients in f64, `(grad(w + e g) - grad(w - e g)) /
//! (2 e)`, with `e` scaled to the weights' and the gradient's norms.
//!
//! The difference's step must be small: a larger one moves pre-activations
//! across ReLU's kink and the difference no longer sees the Hessian (ReLU's
//! second derivative is 0 almost everywhere). Against the exact `H g` of
//! `scripts/scorer_reference.py` (float32, the reference code's precision)
//! on LeNet-300-100, a step of norm `1e-7 (1 + |w|)` in f64 agrees to f32
//! rounding and gives its masks at 10x-1000x; `1e-5 (1 + |w|)` was off by
//! 500x in the first layer, and no step works in f32 (at `1e-2 (1 + |w|)`,
//! the f32 default before, the first layer's `H g` correlated 0.07 with
//! the exact one and the 10x masks shared a third of their weights). So
//! [`executor`] picks f64 for the difference; an f32 executor still works
//! there, with the coarse f32 step.
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

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::autodiff::calibration::Calibration;
use crate::autodiff::executor::Executor;
use crate::autodiff::hvp;
use crate::error::Result;
use crate::graph::Network;
use crate::mask::MaskSet;
use crate::methods::scored::snip::{add_into, loss_gradients, weight_values, Objective};

/// The executor GraSP runs on `net` with `cal`: f32 where `H g` is exact
/// ([`hvp::covers`] the network, and the batches' seeds are covered), else
/// f64 for the finite difference.
pub fn executor<'a>(net: &'a Network, device: &Device, cal: &Calibration) -> Result<Executor<'a>> {
    let ex = Executor::new(net, device, DType::F32)?;
    if exact(&ex, cal)? {
        return Ok(ex);
    }
    Executor::new(net, device, DType::F64)
}

/// Whether [`hvp::hessian_vector`] gives `H g` for `ex` and every batch.
fn exact(ex: &Executor, cal: &Calibration) -> Result<bool> {
    let Some((x, _)) = cal.batches.first() else {
        return Ok(false);
    };
    // Token ids: a next-token loss, which the product does not cover.
    let labels_ok = cal.batches.iter().all(|(_, y)| y.rank() == 1);
    Ok(labels_ok && hvp::covers(ex, &x.narrow(0, 0, 1)?)?)
}

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

/// `H g` of the loss at temperature `temp`, with the weights it was taken
/// at: exact where [`hvp`] covers the network, else by central
/// differences of loss gradients.
pub fn hessian_gradient(
    ex: &Executor,
    masks: &MaskSet,
    cal: &Calibration,
    temp: f64,
) -> Result<(LayerValues, LayerValues)> {
    let w = weight_values(ex)?;
    if exact(ex, cal)? {
        if let Some(hg) = exact_hessian_gradient(ex, masks, cal, temp)? {
            return Ok((hg, w));
        }
    }
    let g = loss_gradients(ex, masks, cal, temp)?;
    Ok((
        difference_hessian_gradient(ex, masks, cal, temp, &g, &w)?,
        w,
    ))
}

/// `H g` by [`hvp`]: one recorded pass for the gradient and the product
/// when there is one batch, else the gradient over every batch first and
/// then [`hvp::hessian_vector`] per batch. `None` if a batch is not
/// covered.
fn exact_hessian_gradient(
    ex: &Executor,
    masks: &MaskSet,
    cal: &Calibration,
    temp: f64,
) -> Result<Option<LayerValues>> {
    let objective = Objective::of(ex.network());
    let mut acc: LayerValues = ex
        .weights
        .par_iter()
        .map(|w| vec![0.0; w.elem_count()])
        .collect();
    let mut add = |hv: Vec<Option<Tensor>>| -> Result<()> {
        acc.par_iter_mut()
            .zip(hv)
            .filter_map(|(a, h)| Some((a, h?)))
            .try_for_each(|(a, h)| add_into(a, &h))
    };
    if let [(x, y)] = &cal.batches[..] {
        let seed = objective.seed(y, temp);
        match hvp::gradient_and_hessian_gradient(ex, x, Some(masks), seed)? {
            Some((_, hg)) => add(hg)?,
            None => return Ok(None),
        }
    } else {
        let g = loss_gradients(ex, masks, cal, temp)?;
        let v = ex
            .weights
            .iter()
            .zip(&g)
            .map(|(w, g)| Ok(Tensor::from_slice(g, w.shape(), ex.device())?.to_dtype(ex.dtype())?))
            .collect::<Result<Vec<_>>>()?;
        for (x, y) in &cal.batches {
            let seed = objective.seed(y, temp);
            match hvp::hessian_vector(ex, x, Some(masks), seed, &v)? {
                Some(hv) => add(hv)?,
                None => return Ok(None),
            }
        }
    }
    // The product is with respect to the masked weights; with respect to
    // the weights themselves a pruned one has none (as the difference).
    acc.par_iter_mut().zip(&masks.layers).for_each(|(a, m)| {
        a.iter_mut()
            .enumerate()
            .filter(|(i, _)| !m.get(*i))
            .for_each(|(_, h)| *h = 0.0)
    });
    Ok(Some(acc))
}

/// `H g` by central differences of loss gradients at `w +- e g`, for the
/// gradient `g` at the weights `w` (what [`hessian_gradient`] falls back
/// to).
pub fn difference_hessian_gradient(
    ex: &Executor,
    masks: &MaskSet,
    cal: &Calibration,
    temp: f64,
    g: &[Vec<f64>],
    w: &[Vec<f64>],
) -> Result<LayerValues> {
    let gn = g.iter().flatten().map(|x| x * x).sum::<f64>().sqrt();
    let wn = w.iter().flatten().map(|x| x * x).sum::<f64>().sqrt();
    let step = if ex.dtype() == DType::F64 { 1e-7 } else { 1e-2 };
    let eps = if gn > 0.0 {
        step * (1.0 + wn) / gn
    } else {
        0.0
    };
    if eps == 0.0 {
        return Ok(g.iter().map(|l| vec![0.0; l.len()]).collect());
    }
    shift(ex, w, g, eps)?;
    let plus = loss_gradients(ex, masks, cal, temp)?;
    shift(ex, w, g, -eps)?;
    let minus = loss_gradients(ex, masks, cal, temp)?;
    shift(ex, w, g, 0.0)?;
    Ok(plus
        .iter()
        .zip(&minus)
        .map(|(p, m)| {
            p.iter()
                .zip(m)
                .map(|(a, b)| (a - b) / (2.0 * eps))
                .collect()
        })
        .collect())
}

/// GraSP scores `w * Hg`; pruned weights score `-inf` so they stay pruned.
pub fn scores(ex: &Executor, masks: &MaskSet, cal: &Calibration) -> Result<Vec<Vec<f64>>> {
    let (hg, w) = hessian_gradient(ex, masks, cal, TEMPERATURE)?;
    Ok(hg
        .par_iter()
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
