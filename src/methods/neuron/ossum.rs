//! OSSuM, One-Shot Supermasking: gradient-free neuron scores from one forward
//! pass over the calibration data (papers/ossum-gradient-free-neuron-pruning.txt),
//! and the neuron-pruning baselines it is compared with (norm, random).
//!
//! For a hidden neuron `j` read by an output layer `W` (`K x d`, `K` classes),
//! with `A[a, j]` the sum of `j`'s activations over the samples of class `a`:
//! - Eq. 3, class-wise: `s(j, a) = A[a, j] * (K * W[a, j] - sum_k W[k, j])`;
//! - Eq. 2, OSSuM: `score(j) = sum_a s(j, a)`;
//! - Eq. 4, Linear OSSuM: `-sum_a rank_a(j)`; Eq. 5, Log OSSuM:
//!   `-sum_a ln rank_a(j)`, where `rank_a` ranks the neurons by `s(., a)`,
//!   1 for the highest (tied neurons share their mean rank).
//!
//! Deeper networks (Sec. 3, after Algorithm 2): **OSSuM+Norm** prunes the
//! earlier hidden layers by the L2 norm of each neuron's incoming weights
//! and the last hidden layer by OSSuM; **OSSuM+PAB** (Algorithm 2, prune and
//! build) scores every hidden layer by OSSuM in order, each against a
//! freshly built random read-out layer (`U(-r, r)`, `r = 1/sqrt(fan_in)`, the
//! paper's initialisation, from a per-layer seeded stream) except the last,
//! which is read by the network's own output layer. On a given network the
//! "build" step is the network's own next layers, which are random at
//! initialisation; the read-out is what Algorithm 2 adds and removes.
//! Every layer is scored with the earlier layers' pruning in place
//! (Algorithm 1, applied layer by layer). A hidden layer's neurons are the
//! groups of [`crate::methods::neuron`]; for a conv channel flattened into the
//! read-out, `A` and `W` sum over the channel's `H x W` features (Eq. 2 is
//! linear in the features, so this is the score of removing them together).
//!
//! ```
//! use maskforge::methods::neuron::ossum::{class_scores, combine, Rank};
//! // Two neurons, two classes: A = per-class activation sums, W = read-out.
//! let a = [1.0, 0.0, /* class 1 */ 0.0, 1.0];
//! let w = [1.0, -1.0, /* class 1 */ -1.0, 1.0];
//! let s = class_scores(&a, &w, 2, 2, 1);
//! // Neuron 0 helps class 0: s(0,0) = 1 * (2*1 - 0) = 2.
//! assert_eq!(s[0], vec![2.0, 0.0]);
//! assert_eq!(combine(Rank::Sum, &s), vec![2.0, 2.0]);
//! ```

use candle_core::{DType, Device};

use crate::autodiff::calibration::Calibration;
use crate::autodiff::executor::{Executor, Mode};
use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::{Network, ValueId};
use crate::mask::MaskSet;
use crate::methods::neuron::{apply_group, keep_top, NeuronGroup};
use crate::rng::{stream, stream_key, uniform_vec};

/// How class-wise scores are combined (Eqs. 2, 4, 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Rank {
    /// Eq. 2: the sum of the class-wise scores.
    Sum,
    /// Eq. 4: minus the sum of the class-wise ranks.
    Linear,
    /// Eq. 5: minus the sum of the logs of the class-wise ranks.
    Log,
}

/// How hidden layers before the last are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Deep {
    /// OSSuM+Norm: by the norm of their incoming weights.
    Norm,
    /// OSSuM+PAB (Algorithm 2): by OSSuM against a random read-out layer.
    Pab,
}

impl NeuronMethod {
    /// Every name [`NeuronMethod::parse`] reads.
    pub const NAMES: &'static [&'static str] = &["ossum", "neuron-norm", "neuron-random"];

    /// The neuron method `name` names, OSSuM with the given combination
    /// and scoring of deeper layers; `None` for any other name.
    pub fn parse(name: &str, rank: Rank, deep: Deep) -> Option<Self> {
        match name {
            "ossum" => Some(NeuronMethod::Ossum { rank, deep }),
            "neuron-norm" => Some(NeuronMethod::Norm),
            "neuron-random" => Some(NeuronMethod::Random),
            _ => None,
        }
    }
}

crate::named!(Rank, "OSSuM rank combination" { Sum => "sum", Linear => "linear", Log => "log" });
crate::named!(Deep, "OSSuM scoring of deeper layers" { Norm => "norm", Pab => "pab" });

/// A neuron-pruning method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum NeuronMethod {
    /// Seeded random neurons (the paper's random baseline).
    Random,
    /// Norm-based: the L2 norm of each neuron's incoming weights (Hagiwara 1993).
    Norm,
    Ossum {
        rank: Rank,
        deep: Deep,
    },
}

impl NeuronMethod {
    pub fn needs_data(self) -> bool {
        matches!(self, NeuronMethod::Ossum { .. })
    }
}

/// The masks and the kept neurons of a neuron-pruning run.
#[derive(Clone, Debug)]
pub struct NeuronOutcome {
    pub masks: MaskSet,
    pub groups: Vec<NeuronGroup>,
    /// Keep flags per group.
    pub kept: Vec<Vec<bool>>,
    /// The score each group was ranked by (`ossum`, `norm`, `random`).
    pub scored_by: Vec<&'static str>,
}

/// Prune `counts[g]` neurons to keep in each of `groups`, in order, each
/// scored with the earlier groups' pruning in place.
pub fn prune_neurons(
    net: &Network,
    groups: &[NeuronGroup],
    method: NeuronMethod,
    counts: &[usize],
    calibration: Option<&Calibration>,
    device: &Device,
    seed: u64,
) -> Result<NeuronOutcome> {
    let readout = readout_group(net, groups);
    if let NeuronMethod::Ossum { .. } = method {
        if readout.is_none() {
            return Err(Error::input(
                "ossum: no hidden layer is read directly by the output layer (OSSuM scores the neurons the classifier reads)",
            ));
        }
    }
    let ex = match method {
        NeuronMethod::Ossum { .. } => Some(Executor::new(net, device, DType::F32)?),
        _ => None,
    };
    let classes = net.values[net.outputs[0]].numel();
    let mut masks = MaskSet::dense(net);
    let mut kept = Vec::with_capacity(groups.len());
    let mut scored_by = Vec::with_capacity(groups.len());
    for (gi, g) in groups.iter().enumerate() {
        let (scores, by) = match method {
            NeuronMethod::Random => (random_scores(net, g, seed), "random"),
            NeuronMethod::Norm => (norm_scores(net, &masks, g)?, "norm"),
            NeuronMethod::Ossum { rank, deep } => {
                let cal =
                    calibration.ok_or_else(|| crate::methods::scored::missing_data("ossum"))?;
                let ex = ex.as_ref().expect("executor built for OSSuM");
                // The read-out the group's neurons are scored against: the
                // network's own output layer, or Algorithm 2's random one.
                let head = if Some(gi) == readout {
                    Some((masked_weights(net, &masks, g.consumer)?, "ossum"))
                } else if deep == Deep::Pab {
                    Some((readout_weights(net, g, classes, seed), "ossum-pab"))
                } else {
                    None
                };
                match head {
                    Some((w, by)) => {
                        let a = class_feature_sums(ex, &masks, cal, g.features, classes)?;
                        let s = class_scores(&a, &w, classes, g.width, g.block);
                        (combine(rank, &s), by)
                    }
                    None => (norm_scores(net, &masks, g)?, "norm"),
                }
            }
        };
        let keep = keep_top(&scores, counts[gi]);
        apply_group(net, &mut masks, g, &keep);
        kept.push(keep);
        scored_by.push(by);
    }
    Ok(NeuronOutcome {
        masks,
        groups: groups.to_vec(),
        kept,
        scored_by,
    })
}

/// The group read by the output layer: its consumer's output reaches the
/// network output through one-to-one operations only.
pub(crate) fn readout_group(net: &Network, groups: &[NeuronGroup]) -> Option<usize> {
    let consumers = net.consumers();
    groups.iter().position(|g| {
        let mut v = net.nodes[net.layers[g.consumer].node].output;
        loop {
            if net.outputs.contains(&v) {
                return true;
            }
            let [c] = consumers[v][..] else {
                return false;
            };
            let node = &net.nodes[c];
            let one_to_one = matches!(
                node.op,
                Op::Activation(_) | Op::Identity | Op::Softmax(_) | Op::LogSoftmax(_) | Op::Norm(_)
            );
            if !one_to_one || node.inputs.len() != 1 {
                return false;
            }
            v = node.output;
        }
    })
}

/// Eq. 3 for every neuron: `s[j][a]`, from per-class feature sums `a`
/// (`K x F`, row-major) and read-out weights `w` (`K x F`), `F = width * block`.
pub fn class_scores(a: &[f64], w: &[f64], k: usize, width: usize, block: usize) -> Vec<Vec<f64>> {
    let f = width * block;
    let col_sum: Vec<f64> = (0..f).map(|x| (0..k).map(|c| w[c * f + x]).sum()).collect();
    (0..width)
        .map(|j| {
            (0..k)
                .map(|c| {
                    (j * block..(j + 1) * block)
                        .map(|x| a[c * f + x] * (k as f64 * w[c * f + x] - col_sum[x]))
                        .sum()
                })
                .collect()
        })
        .collect()
}

/// Eqs. 2, 4, 5: one score per neuron from the class-wise scores.
pub fn combine(rank: Rank, s: &[Vec<f64>]) -> Vec<f64> {
    let k = s.first().map_or(0, Vec::len);
    match rank {
        Rank::Sum => s.iter().map(|row| row.iter().sum()).collect(),
        Rank::Linear | Rank::Log => {
            let mut out = vec![0.0; s.len()];
            for c in 0..k {
                let col: Vec<f64> = s.iter().map(|row| row[c]).collect();
                for (j, r) in descending_ranks(&col).into_iter().enumerate() {
                    out[j] -= if rank == Rank::Log { r.ln() } else { r };
                }
            }
            out
        }
    }
}

/// 1-based ranks, 1 for the largest value; tied values share their mean rank.
pub(crate) fn descending_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[b].total_cmp(&x[a]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        order[i..=j].iter().for_each(|&o| ranks[o] = mean);
        i = j + 1;
    }
    ranks
}

/// Per-class sums of the values of `features` (`K x F`, row-major) over the
/// calibration batches, with `masks` applied.
fn class_feature_sums(
    ex: &Executor,
    masks: &MaskSet,
    cal: &Calibration,
    features: ValueId,
    classes: usize,
) -> Result<Vec<f64>> {
    let mut sums: Vec<f64> = Vec::new();
    for (x, y) in &cal.batches {
        let a = ex.value(x, Some(masks), Mode::Eval, features)?;
        let n = a.dim(0)?;
        let a = a.reshape((n, ()))?.to_dtype(DType::F64)?;
        let f = a.dim(1)?;
        if sums.is_empty() {
            sums = vec![0.0; classes * f];
        }
        let a: Vec<f64> = a.flatten_all()?.to_vec1()?;
        let labels: Vec<u32> = y.to_vec1()?;
        for (i, &label) in labels.iter().enumerate() {
            let row = &mut sums[label as usize * f..(label as usize + 1) * f];
            row.iter_mut()
                .zip(&a[i * f..(i + 1) * f])
                .for_each(|(s, v)| *s += v);
        }
    }
    if sums.is_empty() {
        return Err(Error::input("OSSuM: the calibration data has no samples"));
    }
    Ok(sums)
}

/// Layer `li`'s canonical weights with `masks` applied, as f64.
fn masked_weights(net: &Network, masks: &MaskSet, li: usize) -> Result<Vec<f64>> {
    let w = net.canonical_weights(li)?;
    let m = &masks.layers[li];
    Ok(w.iter()
        .enumerate()
        .map(|(i, &v)| if m.get(i) { v as f64 } else { 0.0 })
        .collect())
}

/// The L2 norm of each neuron's kept incoming weights.
pub(crate) fn norm_scores(net: &Network, masks: &MaskSet, g: &NeuronGroup) -> Result<Vec<f64>> {
    let w = masked_weights(net, masks, g.producer)?;
    let row = w.len() / g.width;
    Ok(w.chunks(row)
        .map(|r| r.iter().map(|v| v * v).sum::<f64>().sqrt())
        .collect())
}

/// Uniform random scores from the group's own seeded stream.
pub(crate) fn random_scores(net: &Network, g: &NeuronGroup, seed: u64) -> Vec<f64> {
    use rand::Rng;
    let mut rng = stream(stream_key(
        seed,
        "neuron-random",
        &net.layers[g.producer].name,
    ));
    (0..g.width).map(|_| rng.random::<f64>()).collect()
}

/// Algorithm 2's freshly built read-out for group `g`: `K x F`, uniform.
fn readout_weights(net: &Network, g: &NeuronGroup, classes: usize, seed: u64) -> Vec<f64> {
    let f = g.width * g.block;
    let key = stream_key(seed, "ossum-pab-readout", &net.layers[g.producer].name);
    uniform_vec(key, 1.0 / (f as f32).sqrt(), classes * f)
        .into_iter()
        .map(f64::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_share_ties_and_start_at_one() {
        assert_eq!(
            descending_ranks(&[0.5, 2.0, 0.5, -1.0]),
            vec![2.5, 1.0, 2.5, 4.0]
        );
    }

    #[test]
    fn linear_and_log_combine_class_ranks() {
        // Neuron 0 is best for class 0 and worst for class 1; neuron 1 the
        // reverse; neuron 2 second for both.
        let s = vec![vec![3.0, 0.0], vec![0.0, 3.0], vec![1.0, 1.0]];
        assert_eq!(combine(Rank::Linear, &s), vec![-4.0, -4.0, -4.0]);
        let log = combine(Rank::Log, &s);
        // -(ln 1 + ln 3) vs -(2 ln 2): the balanced neuron loses under logs.
        assert!((log[0] + 3f64.ln()).abs() < 1e-12);
        assert!((log[2] + 2.0 * 2f64.ln()).abs() < 1e-12);
        assert!(log[2] < log[0]);
    }

    #[test]
    fn block_scores_sum_their_features() {
        // One neuron owning two features, two classes.
        let a = [1.0, 2.0, 3.0, 4.0];
        let w = [0.5, -1.0, 1.5, 1.0];
        let s = class_scores(&a, &w, 2, 1, 2);
        // col sums: 2.0, 0.0; class 0: 1*(1-2) + 2*(-2-0) = -5; class 1: 3*(3-2) + 4*(2-0) = 11.
        assert_eq!(s, vec![vec![-5.0, 11.0]]);
    }
}
