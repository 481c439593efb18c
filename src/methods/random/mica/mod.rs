//! MiCA, Minimum Connection Assurance (papers/mica-restricted-random-pruning.txt,
//! Algorithms 1-4): restricted random pruning that keeps every allocated edge
//! functional, on any graph maskforge loads, and says where a graph makes
//! that impossible.
//!
//! 1. *Channel identity* ([`channels`]): which output channels of which
//!    layers each input node of a layer reads, followed element by element
//!    through every op without weights (shuffles, gathers, concats, gates,
//!    attention products, normalisations), never assumed to be "channel `i`
//!    is channel `i`".
//! 2. *Node analysis* (Algorithm 1, [`nodes`]), output to input: the last
//!    layer uses `min(n_out, e_L)` output nodes; a layer with `e` edges and
//!    `n` used outputs promises to connect a number of input blocks in
//!    `[ceil(e/n), floor(e/b)]` (Eq. 4; `b` the block size of Eq. 1) picked
//!    by [`MicaChoice`] (`rand` by default, as the official code's configs),
//!    and the channels those blocks read are the outputs its producers use.
//!    Per group for grouped and depthwise convs; shared producers (residual
//!    streams) take the union of their consumers' demands.
//! 3. *Minimum connection and fill* (Algorithms 2-4, [`place`]), input to
//!    output on the forward liveness of each layer's input: every live block
//!    sends an edge to a fresh used output (promised blocks first), the
//!    unconnected nodes are connected, the rest of the edges go at random
//!    among live inputs and used outputs.
//! 4. *Repair* ([`repair`], [`reroute`]): an edge the construction still
//!    left inactive moves to a functional pair of its layer, or to an output
//!    nobody read once a short route (paid for by spare edges) reads it.
//!    Should anything stay inactive, node analysis runs again (at most
//!    [`PASSES`] times) steering demand to the groups that were fed, and
//!    the run with the fewest inactive weights is kept: which groups of a
//!    grouped conv its few-edged producers reach is only known after
//!    placement.
//! 5. *Report* ([`guarantee`]): the layers still keeping inactive weights,
//!    each with the cause (a layer upstream or downstream keeps no weight,
//!    or fewer functional pairs than edges). Everywhere else every kept
//!    weight is functional.
//!
//! Every layer ends with exactly `e_l` edges. A quota can give a layer 0
//! edges at extreme compression (the paper's special case): then the
//! layers around it are reported, not an error.
//!
//! Choices where the paper is silent: the used output nodes are a random
//! subset (the paper numbers them 1..n); blocks are visited in random order,
//! so which blocks get an edge when `e` is smaller than their number is
//! random.
//!
//! ```
//! use maskforge::{zoo, methods::random::mica::{mica_run, MicaChoice}, methods::quota};
//! let net = zoo::build("vgg16", 0).unwrap();
//! let k = quota::target_from_compression(net.prunable_count(), 1000.0).unwrap();
//! let counts = quota::kept_counts(&net, &quota::Quota::Igq, k).unwrap();
//! let r = mica_run(&net, &counts, MicaChoice::Rand, 0).unwrap();
//! assert_eq!(r.masks.count_ones(), k);
//! assert!(r.unguaranteed.is_empty());
//! assert_eq!(r.analysis.active, r.masks); // every kept weight functional
//! ```

pub mod bipartite;
pub mod channels;
pub mod guarantee;
pub mod nodes;
pub mod place;
pub mod repair;
pub mod reroute;

use crate::analysis::effective::{analyse_with_forward, Analysis, Forward};
use crate::bitset::BitSet;
use crate::error::{Error, Result};
use crate::graph::Network;
use crate::mask::MaskSet;
use crate::rng::{stream, stream_key};

use bipartite::View;
use channels::Channels;
pub use guarantee::Unguaranteed;

/// How MiCA picks the previous layer's node count inside its feasible range
/// (Algorithm 1; the official code's `rand`/`min`/`max`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum MicaChoice {
    #[default]
    Rand,
    Min,
    Max,
}

crate::named!(MicaChoice, "MiCA choice" { Rand => "rand", Min => "min", Max => "max" });

/// A MiCA run: the masks, their liveness, and where the guarantee fails.
#[derive(Clone, Debug)]
pub struct Mica {
    pub masks: MaskSet,
    /// The liveness analysis of `masks` (computed by the repair anyway).
    pub analysis: Analysis,
    /// Layers keeping inactive weights, with the cause; empty when every
    /// kept weight is functional.
    pub unguaranteed: Vec<Unguaranteed>,
}

/// MiCA masks with exactly `counts[l]` edges in layer `l`.
pub fn mica(net: &Network, counts: &[usize], choice: MicaChoice, seed: u64) -> Result<MaskSet> {
    mica_run(net, counts, choice, seed).map(|r| r.masks)
}

/// [`mica`] with the liveness of the result and the layers where the
/// guarantee does not hold.
pub fn mica_run(net: &Network, counts: &[usize], choice: MicaChoice, seed: u64) -> Result<Mica> {
    if counts.len() != net.layers.len() {
        return Err(Error::internal("mica: one count per layer expected"));
    }
    let ch = Channels::of(net);
    let views: Vec<View> = (0..net.layers.len())
        .map(|l| View::of(net, l, &ch))
        .collect();
    let mut best = attempt(net, &ch, &views, counts, choice, seed, None)?;
    // Which groups a grouped conv's few-edged producers reach is known only
    // after placement: plan again towards the groups fed so far, a few
    // times, and keep the run that leaves the fewest inactive weights.
    let inactive = |r: &Mica| r.unguaranteed.iter().map(|u| u.inactive).sum::<usize>();
    let mut fed: nodes::Fed = views.iter().map(|v| vec![false; v.groups]).collect();
    let mut last = best.analysis.forward.clone();
    for _ in 0..PASSES {
        // Re-planning steers channel demand; it cannot revive a dead
        // factor (MiCA does not see factor values).
        if best
            .unguaranteed
            .iter()
            .all(|u| u.cause == guarantee::Cause::DeadFactor)
        {
            break;
        }
        for (l, v) in views.iter().enumerate() {
            let live = v.live_positions(&last[net.nodes[net.layers[l].node].inputs[0]]);
            for (g, r) in v.group_blocks.iter().enumerate() {
                fed[l][g] |= r.clone().any(|b| !live[b].is_empty());
            }
        }
        let next = attempt(net, &ch, &views, counts, choice, seed, Some(&fed))?;
        last = next.analysis.forward.clone();
        if inactive(&next) < inactive(&best) {
            best = next;
        }
    }
    Ok(best)
}

/// Re-planning passes at most (see [`mica_run`]); each costs one MiCA run.
pub const PASSES: usize = 3;

/// Node analysis, placement, repair and diagnosis, once.
fn attempt(
    net: &Network,
    ch: &Channels,
    views: &[View],
    counts: &[usize],
    choice: MicaChoice,
    seed: u64,
    fed: Option<&nodes::Fed>,
) -> Result<Mica> {
    let plans = nodes::plan_with(net, ch, views, counts, choice, seed, fed);
    let layer_of = net.layer_of_node();
    let mut layers: Vec<BitSet> = net.layers.iter().map(|l| BitSet::new(l.numel())).collect();
    let mut fw = Forward::new(net);
    for (ni, node) in net.nodes.iter().enumerate() {
        let Some(li) = layer_of[ni] else {
            fw.step(ni, None);
            continue;
        };
        let input = fw.get(node.inputs[0]).expect("topological order");
        let mut rng = stream(stream_key(seed, "mica", &net.layers[li].name));
        layers[li] = place::place(&views[li], &plans[li], input, counts[li], &mut rng);
        if layers[li].count_ones() != counts[li] {
            return Err(Error::internal(format!(
                "mica: layer '{}' got {} edges, quota {}",
                net.layers[li].name,
                layers[li].count_ones(),
                counts[li]
            )));
        }
        fw.step(ni, Some(&layers[li]));
    }
    let mut masks = MaskSet { layers };
    // The forward liveness of the placed masks is known already.
    let placed = analyse_with_forward(net, &masks, fw.finish());
    let analysis = repair::repair(net, ch, views, &mut masks, placed, seed);
    let unguaranteed = guarantee::diagnose(net, ch, views, counts, &masks, &analysis);
    Ok(Mica {
        masks,
        analysis,
        unguaranteed,
    })
}
