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

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use rayon::prelude::*;

use crate::autodiff::backward::{masked_weight_gradients, Seed};
use crate::autodiff::executor::{Executor, Mode};
use crate::bitset::{ones_of_words, BitSet};
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
    let w = crate::methods::scored::snip::weight_values(ex)?;
    Ok(kept_scores_at(ex, net, masks, &w)?.dense(masks))
}

/// The scores of the weights `masks` keeps (the pruned ones carry no
/// flow and score 0), with the executor's weights already read out as `w`
/// (they do not change between rounds).
fn kept_scores_at(ex: &Executor, net: &Network, masks: &MaskSet, w: &[Vec<f64>]) -> Result<Kept> {
    let mut shape = vec![1];
    shape.extend(&net.values[net.inputs[0]].shape);
    let ones = Tensor::ones(shape, ex.dtype(), ex.device())?;
    // At the masked weights: read only at kept ones, where it is the
    // weight's gradient up to the sign the absolute value drops.
    let grads = masked_weight_gradients(ex, &ones, Some(masks), Mode::Linear, Seed::Sum)?;
    let f32 = ex.dtype() == DType::F32;
    let layers = grads
        .par_iter()
        .zip(w)
        .zip(&masks.layers)
        .map(|((g, w), m)| match g {
            Some(g) => kept_products(g, w, m, f32),
            None => Ok(vec![0.0; m.count_ones()]),
        })
        .collect::<Result<Vec<Vec<f64>>>>()?;
    if layers.iter().flatten().any(|x| !x.is_finite()) {
        return Err(Error::input(format!(
            "SynFlow: the synaptic flow of '{}' overflows {:?} (infinite or NaN scores); \
             compute it in f64 (synflow precision f64)",
            net.name,
            ex.dtype()
        )));
    }
    Ok(Kept::new(layers))
}

/// `|g_i * w_i|` for the weights `i` that `mask` keeps, in index order,
/// rounded to f32 when `f32` (an f32 product is exact in f64: rounding it
/// gives the f32 product the reference computes). The gradient is read in
/// place where it is contiguous on the CPU (no weight-sized host copy).
fn kept_products(g: &Tensor, w: &[f64], mask: &BitSet, f32: bool) -> Result<Vec<f64>> {
    fn run<T: Copy + Into<f64>>(g: &[T], w: &[f64], mask: &BitSet, f32: bool) -> Vec<f64> {
        let product = |i: usize| {
            let p = g[i].into() * w[i];
            if f32 {
                (p as f32).abs() as f64
            } else {
                p.abs()
            }
        };
        let mut out = Vec::with_capacity(mask.count_ones());
        for (wi, &word) in mask.words().iter().enumerate() {
            let base = wi * 64;
            if word == u64::MAX {
                // Whole words of kept weights (the early rounds): a
                // straight loop the compiler vectorises.
                out.extend((base..base + 64).map(product));
            } else {
                out.extend(ones_of_words(&[word]).map(|j| product(base + j)));
            }
        }
        out
    }
    let (storage, layout) = g.storage_and_layout();
    if let (Storage::Cpu(cpu), Some((lo, hi))) = (&*storage, layout.contiguous_offsets()) {
        match cpu {
            CpuStorage::F32(v) => return Ok(run(&v[lo..hi], w, mask, f32)),
            CpuStorage::F64(v) => return Ok(run(&v[lo..hi], w, mask, f32)),
            _ => {}
        }
    }
    drop(storage);
    let v: Vec<f64> = g.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
    Ok(run(&v, w, mask, f32))
}

/// SynFlow's scorer for one network: its executor (f32 or f64), and the
/// weights read out once (they do not change between rounds).
pub struct Flow<'a> {
    ex: Executor<'a>,
    w: Vec<Vec<f64>>,
}

impl<'a> Flow<'a> {
    pub fn new(net: &'a Network, precision: Precision) -> Result<Self> {
        let ex = Executor::new(net, &Device::Cpu, precision.dtype())?;
        let w = crate::methods::scored::snip::weight_values(&ex)?;
        Ok(Self { ex, w })
    }

    /// SynFlow scores for `masks` (every weight's).
    pub fn scores(&self, masks: &MaskSet) -> Result<Vec<Vec<f64>>> {
        Ok(self.kept_scores(masks)?.dense(masks))
    }

    /// SynFlow scores of the weights `masks` keeps (the pruned score 0):
    /// what the rounds cut ([`crate::methods::scored::rounds::RoundScores`]).
    pub fn kept_scores(&self, masks: &MaskSet) -> Result<Kept> {
        kept_scores_at(&self.ex, self.ex.network(), masks, &self.w)
    }
}
