//! SynFlow (Tanaka et al. 2020, Synaptic-Flow `Pruners/pruners.py`): data-free
//! scores `|dR/dw * w|` of the synaptic flow `R = sum(f(1))` of the network
//! with every parameter replaced by its absolute value (BatchNorm in eval
//! mode, max-pool kept), on an all-ones input of batch 1; pruned
//! iteratively over `rounds` with the exponential schedule
//! `density_k = density^(k / rounds)`. Computed in f64: the flow of a deep
//! net overflows f32.
//!
//! ```no_run
//! # use maskforge::{zoo, synflow};
//! let net = zoo::build("vgg16", 0).unwrap();
//! let (masks, densities) = synflow::prune(&net, 14_716, 100, |_, _| {}).unwrap();
//! assert_eq!(densities.len(), 100);
//! ```

use candle_core::{DType, Device, Tensor};

use crate::backward::{weight_gradients, Seed};
use crate::error::Result;
use crate::executor::{Executor, Mode};
use crate::mask::MaskSet;
use crate::network::Network;

/// SynFlow scores for `masks`.
pub fn scores(ex: &Executor, net: &Network, masks: &MaskSet) -> Result<Vec<Vec<f64>>> {
    scores_at(ex, net, masks, &crate::snip::weight_values(ex)?)
}

/// [`scores`] with the executor's weights already read out as `w` (they do
/// not change between rounds).
fn scores_at(
    ex: &Executor,
    net: &Network,
    masks: &MaskSet,
    w: &[Vec<f64>],
) -> Result<Vec<Vec<f64>>> {
    let mut shape = vec![1];
    shape.extend(&net.values[net.inputs[0]].shape);
    let ones = Tensor::ones(shape, DType::F64, ex.device())?;
    let grads = weight_gradients(ex, &ones, Some(masks), Mode::Linear, Seed::Sum)?;
    grads
        .iter()
        .zip(w)
        .map(|(g, w)| {
            Ok(match g {
                Some(g) => {
                    let g: Vec<f64> = g.flatten_all()?.to_vec1()?;
                    g.iter().zip(w).map(|(a, b)| (a * b).abs()).collect()
                }
                None => vec![0.0; w.len()],
            })
        })
        .collect()
}

/// Iterative SynFlow down to `target` kept weights; returns the masks and
/// the density after each round. `progress(round, rounds)` is called after
/// each round.
pub fn prune(
    net: &Network,
    target: usize,
    rounds: usize,
    progress: impl FnMut(usize, usize),
) -> Result<(MaskSet, Vec<f64>)> {
    prune_with_cut(net, target, rounds, progress, &mut |s| {
        Ok(MaskSet {
            layers: crate::magnitude::keep_top(s, target),
        })
    })
}

/// [`prune`], the last round's scores turned into masks by `cut` (effective
/// pruning keeps as many as reach `target` active weights).
pub fn prune_with_cut(
    net: &Network,
    target: usize,
    rounds: usize,
    mut progress: impl FnMut(usize, usize),
    cut: &mut dyn FnMut(&[Vec<f64>]) -> Result<MaskSet>,
) -> Result<(MaskSet, Vec<f64>)> {
    let ex = Executor::new(net, &Device::Cpu, DType::F64)?;
    let total = net.prunable_count() as f64;
    let density = target as f64 / total;
    let mut masks = MaskSet::dense(net);
    let mut history = Vec::with_capacity(rounds);
    let w = crate::snip::weight_values(&ex)?;
    for k in 1..=rounds.max(1) {
        let s = scores_at(&ex, net, &masks, &w)?;
        masks = if k == rounds.max(1) {
            cut(&s)?
        } else {
            let d = density.powf(k as f64 / rounds.max(1) as f64);
            MaskSet {
                layers: crate::magnitude::keep_top(&s, (total * d).round() as usize),
            }
        };
        history.push(masks.count_ones() as f64 / total);
        progress(k, rounds);
    }
    Ok((masks, history))
}
