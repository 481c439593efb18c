//! SynFlow (Tanaka et al. 2020, Synaptic-Flow `Pruners/pruners.py`): data-free
//! scores `|dR/dw * w|` of the synaptic flow `R = sum(f(1))` of the network
//! with every parameter replaced by its absolute value (BatchNorm in eval
//! mode, max-pool kept), on an all-ones input of batch 1; pruned
//! iteratively over `rounds` with the exponential schedule
//! `density_k = density^(k / rounds)`. Computed in f64: the flow of a deep
//! net overflows f32.
//!
//! ```no_run
//! # use maskforge::{zoo, methods::scored::synflow};
//! let net = zoo::build("vgg16", 0).unwrap();
//! let (masks, densities) = synflow::prune(&net, 14_716, 100, |_, _| {}).unwrap();
//! assert_eq!(densities.len(), 100);
//! ```

use candle_core::{DType, Device, Tensor};

use crate::autodiff::backward::{weight_gradients, Seed};
use crate::autodiff::executor::{Executor, Mode};
use crate::error::Result;
use crate::graph::Network;
use crate::mask::MaskSet;

/// SynFlow scores for `masks`.
pub fn scores(ex: &Executor, net: &Network, masks: &MaskSet) -> Result<Vec<Vec<f64>>> {
    scores_at(
        ex,
        net,
        masks,
        &crate::methods::scored::snip::weight_values(ex)?,
    )
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

/// SynFlow's scorer for one network: its f64 executor, and the weights
/// read out once (they do not change between rounds).
pub struct Flow<'a> {
    ex: Executor<'a>,
    w: Vec<Vec<f64>>,
}

impl<'a> Flow<'a> {
    pub fn new(net: &'a Network) -> Result<Self> {
        let ex = Executor::new(net, &Device::Cpu, DType::F64)?;
        let w = crate::methods::scored::snip::weight_values(&ex)?;
        Ok(Self { ex, w })
    }

    /// SynFlow scores for `masks`.
    pub fn scores(&self, masks: &MaskSet) -> Result<Vec<Vec<f64>>> {
        scores_at(&self.ex, self.ex.network(), masks, &self.w)
    }
}

/// Iterative SynFlow down to `target` kept weights; returns the masks and
/// the density after each round. `progress(round, rounds)` is called after
/// each round.
pub fn prune(
    net: &Network,
    target: usize,
    rounds: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<(MaskSet, Vec<f64>)> {
    let flow = Flow::new(net)?;
    crate::methods::scored::iterate(
        net,
        target,
        rounds,
        &mut |m| flow.scores(m),
        &mut |s| {
            Ok(MaskSet {
                layers: crate::methods::magnitude::keep_top(s, target),
            })
        },
        &mut progress,
    )
}
