//! Node-path balancing (NPB): a data-agnostic pruner that, layer by layer
//! from the input, solves a small integer programme trading effective nodes
//! against effective paths.
//!
//! Pham et al., *Towards data-agnostic pruning at initialization: what
//! makes a good sparse mask?* (NeurIPS 2023; papers/npb-node-path-balancing-
//! abstract.txt), reference code pvh1602/NPB (`Pruners/pruners.py`,
//! `Optimization_Pruner.prune`; `Pruners/utils.py`, `optimize_layerwise`
//! and `fine_tune_mask`). For each prunable layer in topological order:
//! 1. [`inflow`]: the path count reaching each input channel, a ones
//!    forward through the layers already masked (later layers dense);
//! 2. the layer's budget from the quota (ERK by default), split over
//!    chunks of output channels when the layer is wide;
//! 3. per chunk, the [`programme`] solved exactly (objective: `alpha`
//!    times nodes plus `1 - alpha` times paths plus `beta` times channel
//!    pairs, at most `max_taps` taps per kernel), [`allot`]ted to channel
//!    pairs, its taps placed at random inside each kernel;
//! 4. at the end, [`reinvest`]: weights that serve no input -> output path
//!    are moved into the kernels that already carry the most active taps.
//!
//! # Where we follow the reference code's arbitrary choices
//! - the first layer may stack every tap of a kernel (`max_taps = kh *
//!   kw`, their `max_param_per_kernel=None`); dense layers get `beta = 0`
//!   and one tap per pair. (Their 1 x 1 shortcuts get `beta = 0.001`; with
//!   one tap per pair every tap is a pair, so `beta` cannot change their
//!   optimum and we pass the same `beta` everywhere else);
//! - chunks: a conv layer is cut into chunks of `chunk` output channels
//!   when `C_in * C_out` exceeds 128 x 128, or 64 x 32 for a residual
//!   network on 32 x 32 inputs (their ResNet-20 case); a dense layer into
//!   chunks of 10 outputs above 512 x 10; the first layer never. Chunks are
//!   solved in order, each with the whole input; the last chunk takes the
//!   remainder (theirs leaves it dense);
//! - budgets: a chunk keeps `ceil(d * size)` with `d` the layer's quota
//!   density, so a chunked layer may keep a few more than its quota;
//! - taps inside a kernel: uniformly at random (their `np.random.shuffle`),
//!   from a seeded stream per layer;
//! - the cap: their code lowers `max_p` by 2 after each ResNet shortcut
//!   (not below 5) and after fixed VGG layer indices (down to 3);
//!   [`caps::TapSchedule::Reference`] applies those rules to any graph.
//!   A lower cap weighs paths more against nodes, which matters most at
//!   VGG-16's 10^-3 ([`caps`]). `--max-taps-schedule constant` and
//!   `--max-taps-step` are the alternatives;
//! - the reinvestment step, as [`reinvest`] describes (one difference
//!   below).
//!
//! # Where we differ
//! - which outputs the optimum's open pairs go to: theirs is whatever
//!   their solver returns; ours is a rule fitted to reproduce their whole
//!   masks ([`allot`]);
//! - a lone inactive weight in a layer is reinvested too (theirs leaves
//!   it);
//! - `max_taps` too small for a layer's budget is an error naming the
//!   layer (theirs raises it silently), as is a layer no path reaches;
//! - their code reads the input of some VGG layers from the wrong hook
//!   after a pooling stage (a layer's own dense output); we read every
//!   layer's true input;
//! - path counts follow [`crate::analysis::paths`] (a max pool sums its
//!   window, theirs keeps the maximum); only their ratios matter here;
//! - grouped convolutions (theirs has none) are one programme per group,
//!   the layer's count split exactly over groups.
//!
//! ```
//! use maskforge::{zoo, methods::npb::{npb, NpbSettings}, methods::quota::{kept_counts, Quota}};
//! let net = zoo::build("lenet5", 0).unwrap();
//! let counts = kept_counts(&net, &Quota::Erk, 600).unwrap();
//! let masks = npb(&net, &counts, &NpbSettings::default(), 0).unwrap();
//! let effective = maskforge::analysis::effective::effective_masks(&net, &masks);
//! // Every kept weight lies on an input -> output path.
//! assert_eq!(effective.count_ones(), masks.count_ones());
//! ```

pub mod allot;
pub mod caps;
pub mod inflow;
pub mod programme;
pub mod reinvest;

use rand::Rng;

use crate::bitset::BitSet;
use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::{LayerKind, Network};
use crate::mask::MaskSet;
use crate::rng::{stream, stream_key};

use programme::Programme;

/// The knobs of NPB; the defaults are the reference's `run.sh` settings
/// for ResNet-20, with the reference's cap schedule.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct NpbSettings {
    /// Weight of effective nodes against paths.
    pub alpha: f64,
    /// Weight of used channel pairs.
    pub beta: f64,
    /// Kept taps per kernel at most.
    pub max_taps: usize,
    /// Output channels per chunk of a wide layer.
    pub chunk: usize,
    /// Chunk conv layers with more channel pairs than this; `None`: the
    /// reference code's rule (see the module doc).
    pub chunk_above: Option<usize>,
    /// How `max_taps` changes along the network.
    pub schedule: caps::TapSchedule,
}

// alpha and beta are checked finite by `check`, so equality is total.
impl Eq for NpbSettings {}

impl Default for NpbSettings {
    fn default() -> Self {
        Self {
            alpha: 0.01,
            beta: 1.0,
            max_taps: 9,
            chunk: 32,
            chunk_above: None,
            schedule: caps::TapSchedule::Reference,
        }
    }
}

impl NpbSettings {
    /// Refuse settings the programme cannot use.
    pub fn check(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(Error::input(format!(
                "--alpha must lie in [0, 1], not {}",
                self.alpha
            )));
        }
        if !self.beta.is_finite() || self.beta < 0.0 {
            return Err(Error::input(format!(
                "--beta must be finite and >= 0, not {}",
                self.beta
            )));
        }
        if self.max_taps == 0 || self.chunk == 0 {
            return Err(Error::input("--max-taps and --chunk must be at least 1"));
        }
        Ok(())
    }
}

/// The reference's dense-layer chunking: above 512 x 10 pairs, 10 outputs.
const DENSE_CHUNK_ABOVE: usize = 512 * 10;
const DENSE_CHUNK: usize = 10;

/// One programme's place in a layer: the group, its outputs, its budget.
#[derive(Clone, Debug)]
struct Chunk {
    group: usize,
    /// Output channels within the group.
    outputs: std::ops::Range<usize>,
    budget: usize,
}

/// A prunable layer as NPB sees it.
struct Shape {
    groups: usize,
    out_per_group: usize,
    in_per_group: usize,
    taps: usize,
}

impl Shape {
    fn of(net: &Network, li: usize) -> Self {
        let layer = &net.layers[li];
        match (&net.nodes[layer.node].op, layer.kind) {
            (Op::Conv { conv, .. }, LayerKind::Conv) => Shape {
                groups: conv.groups,
                out_per_group: conv.out_channels / conv.groups,
                in_per_group: conv.in_channels / conv.groups,
                taps: conv.kernel[0] * conv.kernel[1],
            },
            _ => Shape {
                groups: 1,
                out_per_group: layer.shape[0],
                in_per_group: layer.shape[1],
                taps: 1,
            },
        }
    }
}

/// NPB masks keeping about `counts[l]` weights per layer (see the module
/// doc for the rounding), deterministic for `seed`.
pub fn npb(net: &Network, counts: &[usize], settings: &NpbSettings, seed: u64) -> Result<MaskSet> {
    settings.check()?;
    let order = inflow::layer_order(net);
    let chunk_above = settings
        .chunk_above
        .unwrap_or_else(|| reference_chunk_above(net));
    let caps = caps::caps(net, &order, settings);
    let mut masks = MaskSet::dense(net);
    for (rank, &li) in order.iter().enumerate() {
        let name = &net.layers[li].name;
        let in_layer = |e: Error| match e {
            Error::Infeasible {
                layer: None,
                detail,
            } => Error::infeasible(Some(name), detail),
            e => e.context(name),
        };
        let paths = inflow::paths_into(net, &masks, li).map_err(in_layer)?;
        if !paths.iter().any(|&p| p > 0.0) {
            return Err(in_layer(Error::infeasible(
                None,
                "no input channel carries a path (every layer before it is cut off)",
            )));
        }
        let rule = LayerRule::of(net, li, rank == 0, caps[rank], settings, chunk_above);
        masks.layers[li] = rule
            .place(net, li, counts[li], &paths, settings.alpha, seed)
            .map_err(in_layer)?;
    }
    reinvest::reinvest(net, &mut masks, &order);
    Ok(masks)
}

/// How one layer's programmes are posed: the reference's per-layer rules.
struct LayerRule {
    shape: Shape,
    max_taps: usize,
    beta: f64,
    /// Output channels per chunk.
    width: usize,
}

impl LayerRule {
    /// The first layer may stack every tap and is never chunked; dense
    /// layers get one tap per pair, `beta = 0` and chunks of 10 outputs
    /// when wide; conv layers the schedule's `cap` and chunks when wider
    /// than `chunk_above` pairs.
    fn of(
        net: &Network,
        li: usize,
        first: bool,
        cap: usize,
        settings: &NpbSettings,
        chunk_above: usize,
    ) -> Self {
        let shape = Shape::of(net, li);
        let pairs = shape.in_per_group * shape.out_per_group;
        let whole = shape.out_per_group;
        let (max_taps, beta, width) = match net.layers[li].kind {
            _ if first => (shape.taps, settings.beta, whole),
            LayerKind::Dense => (
                1,
                0.0,
                if pairs > DENSE_CHUNK_ABOVE {
                    DENSE_CHUNK
                } else {
                    whole
                },
            ),
            LayerKind::Conv => (
                cap.min(shape.taps),
                settings.beta,
                if pairs > chunk_above {
                    settings.chunk
                } else {
                    whole
                },
            ),
        };
        Self {
            shape,
            max_taps,
            beta,
            width,
        }
    }

    /// Solve and place every programme of layer `li`.
    fn place(
        &self,
        net: &Network,
        li: usize,
        count: usize,
        paths: &[f64],
        alpha: f64,
        seed: u64,
    ) -> Result<BitSet> {
        let layer = &net.layers[li];
        let shape = &self.shape;
        let mut mask = BitSet::new(layer.numel());
        let mut rng = stream(stream_key(seed, "npb", &layer.name));
        for chunk in self.chunks(count) {
            let inputs = chunk.group * shape.in_per_group..(chunk.group + 1) * shape.in_per_group;
            let programme = Programme {
                path_in: paths[inputs].to_vec(),
                outputs: chunk.outputs.len(),
                budget: chunk.budget,
                max_taps: self.max_taps,
                alpha,
                beta: self.beta,
            };
            let plan = programme.solve()?;
            let taps = allot::allot(&programme, &plan, &mut rng);
            let first_out = chunk.group * shape.out_per_group + chunk.outputs.start;
            place_taps(
                &mut mask,
                shape,
                first_out,
                &taps,
                chunk.outputs.len(),
                &mut rng,
            );
        }
        Ok(mask)
    }

    /// The programmes of a layer: per group, its outputs cut into chunks of
    /// `width`, each with its budget.
    fn chunks(&self, count: usize) -> Vec<Chunk> {
        let shape = &self.shape;
        let group_size = shape.in_per_group * shape.out_per_group * shape.taps;
        let mut out = Vec::new();
        for g in 0..shape.groups {
            // The count split exactly over groups, the remainder to the first.
            let group_count = count / shape.groups + usize::from(g < count % shape.groups);
            let mut start = 0;
            while start < shape.out_per_group {
                let end = (start + self.width).min(shape.out_per_group);
                let size = shape.in_per_group * (end - start) * shape.taps;
                let budget = if end - start == shape.out_per_group {
                    group_count
                } else {
                    (group_count * size).div_ceil(group_size)
                };
                out.push(Chunk {
                    group: g,
                    outputs: start..end,
                    budget,
                });
                start = end;
            }
        }
        out
    }
}

/// Their chunking threshold: 64 x 32 pairs for a residual network on 32 x
/// 32 inputs (`is_resnet20`), 128 x 128 otherwise.
fn reference_chunk_above(net: &Network) -> usize {
    let residual = caps::has_residual_sum(net);
    let cifar = net
        .inputs
        .iter()
        .any(|&v| matches!(net.value(v).shape.as_slice(), [_, 32, 32]));
    if residual && cifar {
        64 * 32
    } else {
        128 * 128
    }
}

/// Set `taps[i * width + j]` random taps of kernel (output `first_out + j`,
/// input `i`) for every pair of a chunk.
fn place_taps(
    mask: &mut BitSet,
    shape: &Shape,
    first_out: usize,
    taps: &[u32],
    width: usize,
    rng: &mut impl Rng,
) {
    let mut order: Vec<usize> = (0..shape.taps).collect();
    for (cell, &count) in taps.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let (i, j) = (cell / width, cell % width);
        let kernel = ((first_out + j) * shape.in_per_group + i) * shape.taps;
        for t in 0..count as usize {
            let pick = rng.random_range(t..shape.taps);
            order.swap(t, pick);
            mask.set(kernel + order[t], true);
        }
    }
}
