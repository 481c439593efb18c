//! SynFlow (Tanaka et al. 2020, "Pruning neural networks without any data
//! by iteratively conserving synaptic flow"; reference code
//! ganguli-lab/Synaptic-Flow `Pruners/pruners.py` and `prune.py`, and its
//! MiCA fork Hikari43/minimum_connection_assurance): data-free scores
//! `|dR/dw * w|` of the synaptic flow `R = sum(f(1))` of the network with
//! every parameter (weights, biases, BatchNorm parameters and statistics)
//! replaced by its absolute value (BatchNorm in eval mode, max-pool kept),
//! on an all-ones input of batch 1; pruned iteratively over `rounds` with
//! the exponential schedule `density_k = density^(k / rounds)`.
//!
//! By default the masks are the reference code's (checked bit for bit
//! against `scripts/synflow_reference.py`, a numpy transcription of its
//! rules, in `tests/synflow_parity.rs`):
//!
//! - **Precision** ([`Precision::F32`]): scores in float32, as the
//!   reference (its `model.double()` is commented out): the products
//!   `dR/dw * |w|` are rounded to f32, which decides ties and near-ties.
//!   [`Precision::F64`] computes in f64 instead, for networks whose flow
//!   overflows f32 (an f32 run that overflows stops with an error naming
//!   the option rather than rank infinities).
//! - **Counts per round** ([`Counts::Reference`]): round `k` prunes
//!   `int((1 - d^(k/R)) * N)` of all `N` prunable weights (already pruned
//!   ones score 0 and count among them): the threshold is that order
//!   statistic of all scores and every weight scoring at or below it is
//!   pruned, ties included, so a round can prune more than its count; a
//!   round whose count is below 1 changes nothing. The last round follows
//!   the same rule, so the kept count can differ from `round(N * d)` by
//!   one (`int` truncates) or by the ties. `d` is the density asked for:
//!   `1 / compression` (the reference's `10**(-c)` for a compression
//!   written `10^c`), see [`crate::methods::scored::Context::density`].
//!   [`Counts::Nearest`] is maskforge's earlier rule: `round(N * d_k)` per
//!   round with `d = target / N`, and exactly the target count in the last
//!   round (ties still pruned); the masks then differ from the reference's
//!   (at 100 rounds on LeNet-300-100, 100x: 1325/745/592 kept per layer
//!   against the reference's 1321/752/589).
//!
//! With `--effective` the last round is cut for the effective target
//! instead ([`crate::methods::select::effective_top`]), whatever the counts.
//!
//! This file computes the scores ([`Flow`]); the rounds are the shared loop
//! of the iterative methods, [`crate::methods::scored::iterate`].
//!
//! ```
//! use maskforge::{zoo, mask::MaskSet, methods::scored::synflow};
//! let net = zoo::build("mlp:4-3-2", 0).unwrap();
//! let flow = synflow::Flow::new(&net, synflow::Precision::F32).unwrap();
//! let mut masks = MaskSet::dense(&net);
//! masks.layers[0].set(0, false);
//! let s = flow.scores(&masks).unwrap();
//! assert_eq!(s.len(), net.layers.len());
//! // A pruned weight carries no flow; every kept one does.
//! assert_eq!(s[0][0], 0.0);
//! assert!(s.iter().flatten().skip(1).all(|&x| x > 0.0));
//! ```

use std::sync::Mutex;

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use rayon::prelude::*;

use crate::autodiff::backward::{masked_weight_gradients, Seed};
use crate::autodiff::executor::{Executor, Mode};
use crate::autodiff::masked_weights::MaskedWeights;
use crate::bitset::BitSet;
use crate::error::{Error, Result};
use crate::graph::Network;
use crate::mask::MaskSet;
use crate::methods::scored::kept::Kept;
use crate::methods::scored::rounds::Counts;

/// The float type SynFlow's flow and scores are computed in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum Precision {
    /// float32, as the reference code (the default: its masks exactly).
    #[default]
    F32,
    /// float64: no overflow on deep nets; rankings can differ from the
    /// reference's where f32 rounding ties or reorders scores.
    F64,
}

crate::named!(Precision, "precision" { F32 => "f32", F64 => "f64" });

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F64 => DType::F64,
        }
    }
}

/// SynFlow's options (the defaults reproduce the reference code).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub precision: Precision,
    pub counts: Counts,
}

/// SynFlow scores for `masks`, in the executor's dtype (f32: each product
/// rounded to f32 as the reference computes it).
pub fn scores(ex: &Executor, net: &Network, masks: &MaskSet) -> Result<Vec<Vec<f64>>> {
    let w: Vec<Tensor> = ex.weights.iter().map(|w| w.as_tensor().clone()).collect();
    Ok(kept_scores_at(ex, net, masks, &w)?.dense(masks))
}

/// The scores of the weights `masks` keeps (the pruned ones carry no
/// flow and score 0), with the weights `w` (their signs do not matter).
fn kept_scores_at(ex: &Executor, net: &Network, masks: &MaskSet, w: &[Tensor]) -> Result<Kept> {
    let mut shape = vec![1];
    shape.extend(&net.values[net.inputs[0]].shape);
    let ones = Tensor::ones(shape, ex.dtype(), ex.device())?;
    // At the masked weights: read only at kept ones, where it is the
    // weight's gradient up to the sign the absolute value drops.
    let grads = masked_weight_gradients(ex, &ones, Some(masks), Mode::Linear, Seed::Sum)?;
    let layers = grads
        .par_iter()
        .zip(w)
        .zip(&masks.layers)
        .map(|((g, w), m)| {
            let products = match g {
                Some(g) => kept_products(g, w, m)?,
                None => vec![0.0; m.count_ones()],
            };
            if !products.iter().all(|x| x.is_finite()) {
                return Err(Error::input(format!(
                    "SynFlow: the synaptic flow of '{}' overflows {:?} (infinite or NaN \
                     scores); compute it in f64 (synflow precision f64)",
                    net.name,
                    ex.dtype()
                )));
            }
            Ok(products)
        })
        .collect::<Result<Vec<Vec<f64>>>>()?;
    Ok(Kept::new(layers))
}

/// `|g_i * w_i|` for the weights `i` that `mask` keeps, in index order,
/// computed in the tensors' dtype (in f32 the product is rounded to f32,
/// as the reference computes it). Both are read in place where they are
/// contiguous on the CPU (no weight-sized host copy).
fn kept_products(g: &Tensor, w: &Tensor, mask: &BitSet) -> Result<Vec<f64>> {
    fn run<T>(g: &[T], w: &[T], mask: &BitSet) -> Vec<f64>
    where
        T: Copy + std::ops::Mul<Output = T> + Into<f64>,
    {
        let product = |i: usize| (g[i] * w[i]).into().abs();
        let mut out = Vec::with_capacity(mask.count_ones());
        let spare = &mut out.spare_capacity_mut()[..mask.count_ones()];
        let mut n = 0;
        for (wi, &word) in mask.words().iter().enumerate() {
            let base = wi * 64;
            if word == u64::MAX {
                // Whole words of kept weights (the early rounds): a
                // straight loop the compiler vectorises.
                for (d, i) in spare[n..n + 64].iter_mut().zip(base..) {
                    d.write(product(i));
                }
                n += 64;
            } else {
                let mut bits = word;
                while bits != 0 {
                    spare[n].write(product(base + bits.trailing_zeros() as usize));
                    bits &= bits - 1;
                    n += 1;
                }
            }
        }
        assert_eq!(n, spare.len());
        // SAFETY: the loop wrote one product per kept weight, the first
        // `n` elements, and `n` is the capacity taken.
        unsafe { out.set_len(n) };
        out
    }
    let (gs, gl) = g.storage_and_layout();
    let (ws, wl) = w.storage_and_layout();
    if let (Storage::Cpu(gc), Storage::Cpu(wc), Some((g0, g1)), Some((w0, w1))) =
        (&*gs, &*ws, gl.contiguous_offsets(), wl.contiguous_offsets())
    {
        match (gc, wc) {
            (CpuStorage::F32(g), CpuStorage::F32(w)) => {
                return Ok(run(&g[g0..g1], &w[w0..w1], mask))
            }
            (CpuStorage::F64(g), CpuStorage::F64(w)) => {
                return Ok(run(&g[g0..g1], &w[w0..w1], mask))
            }
            _ => {}
        }
    }
    drop((gs, ws));
    let host =
        |t: &Tensor| -> Result<Vec<f64>> { Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?) };
    Ok(run(&host(g)?, &host(w)?, mask))
}

/// SynFlow's scorer for one network: its executor (f32 or f64), whose
/// masked weights `|w| * mask` are kept from round to round and updated
/// where the masks changed ([`MaskedWeights`]).
pub struct Flow<'a> {
    ex: Executor<'a>,
    masked: Mutex<MaskedWeights>,
}

impl<'a> Flow<'a> {
    pub fn new(net: &'a Network, precision: Precision) -> Result<Self> {
        let mut ex = Executor::new(net, &Device::Cpu, precision.dtype())?;
        let w: Vec<Tensor> = ex.weights.iter().map(|w| w.as_tensor().clone()).collect();
        let masked = MaskedWeights::new(&w, &MaskSet::dense(net), true)?;
        ex.use_masked_weights(masked.tensors().to_vec());
        Ok(Self {
            ex,
            masked: Mutex::new(masked),
        })
    }

    /// SynFlow scores for `masks` (every weight's).
    pub fn scores(&self, masks: &MaskSet) -> Result<Vec<Vec<f64>>> {
        Ok(self.kept_scores(masks)?.dense(masks))
    }

    /// SynFlow scores of the weights `masks` keeps (the pruned score 0):
    /// what the rounds cut ([`crate::methods::scored::rounds::RoundScores`]).
    pub fn kept_scores(&self, masks: &MaskSet) -> Result<Kept> {
        let mut masked = self
            .masked
            .lock()
            .map_err(|_| Error::internal("SynFlow: a round panicked"))?;
        masked.update(masks)?;
        kept_scores_at(&self.ex, self.ex.network(), masks, masked.tensors())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The scorer that keeps its masked weights across calls scores as a
    /// fresh executor does, over masks that shrink, grow back and repeat.
    #[test]
    fn kept_weights_across_calls_score_as_a_fresh_pass() {
        let net = crate::zoo::build("lenet5", 3).unwrap();
        let flow = Flow::new(&net, Precision::F32).unwrap();
        let fresh = Executor::new(&net, &Device::Cpu, DType::F32).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut masks = MaskSet::dense(&net);
        for keep in [1.0, 0.6, 0.3, 0.8, 0.8, 0.05] {
            for m in &mut masks.layers {
                *m = BitSet::from_fn(m.len(), |_| rng.random_bool(keep));
            }
            assert_eq!(
                flow.scores(&masks).unwrap(),
                scores(&fresh, &net, &masks).unwrap(),
                "keep {keep}"
            );
        }
    }
}
