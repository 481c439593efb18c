//! What MiCA promises and where a graph makes the promise impossible: every
//! kept weight functional (on an input-to-output path through kept
//! weights), except in the layers listed here, each with the reason.
//!
//! A layer is listed only when, after placement and repair, some of its
//! kept weights are still inactive; the cause is read off the liveness of
//! the final mask, the output side first (the cut is usually downstream):
//! - no output reaches the graph output (a layer downstream keeps no
//!   weight, or its readers spend their few edges elsewhere);
//! - no input position is reached from the graph input (a layer upstream
//!   keeps no weight, or everything upstream leads elsewhere);
//! - the layer has more edges than weights whose kernel tap ever reads
//!   data at this input size (a 7x7 kernel on a 2x2 map: 9 of 49 taps);
//! - fewer (input, output) pairs can carry a functional edge (in the
//!   functional part of the mask) than the layer has edges: the quotas of the layers around it leave too few live
//!   channels (a depthwise conv holds at most `kh * kw` edges per channel);
//! - the kept weights would all be functional if products joined their
//!   operands as sums do, but some lie only on paths through a product
//!   whose other factor is identically zero in the masked network
//!   (CONVENTIONS, "Dead factors": a query dimension whose key dimension
//!   keeps no weight and has no bias). MiCA places edges by channel
//!   identity and does not see factor values.
//!
//! ```
//! use maskforge::{zoo, methods::random::mica::{mica_run, MicaChoice, guarantee::Cause}};
//! let net = zoo::build("lenet300", 0).unwrap();
//! // fc2 keeps no weight: fc1 cannot reach the output, fc3 has no input.
//! let r = mica_run(&net, &[500, 0, 50], MicaChoice::Rand, 0).unwrap();
//! let causes: Vec<(&str, Cause)> = r.unguaranteed.iter().map(|u| (u.layer.as_str(), u.cause)).collect();
//! assert_eq!(causes, [("fc1.weight", Cause::NoLiveOutput), ("fc3.weight", Cause::NoLiveInput)]);
//! assert!(r.unguaranteed[0].reason.contains("fc2.weight keeps no weight"));
//! ```

use std::collections::BTreeSet;

use crate::analysis::effective::{analyse, analyse_sum_rule, Analysis};
use crate::graph::Network;
use crate::mask::MaskSet;

use super::bipartite::View;
use super::channels::{source, Channels, Source};
use super::repair::Pairs;

/// Why a layer's kept weights cannot all be functional.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// No input position is reached from the graph input.
    NoLiveInput,
    /// No output reaches the graph output.
    NoLiveOutput,
    /// Fewer functional (input, output) pairs than edges.
    TooFewPairs,
    /// More edges than weights whose kernel tap ever reads data at this
    /// input size (the others only ever see padding).
    PaddingOnly,
    /// Every kept weight would be functional under the rule of a sum, but
    /// some reach the output only through a product whose other factor is
    /// identically zero (a dead factor).
    DeadFactor,
}

/// A layer where MiCA's guarantee does not hold, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Unguaranteed {
    /// The weight's name.
    pub layer: String,
    /// Kept weights of the layer that are inactive.
    pub inactive: usize,
    pub cause: Cause,
    /// The cause in words, naming the layers involved.
    pub reason: String,
}

/// The layers of `masks` (with `analysis`, its liveness) that keep
/// inactive weights, each with its cause.
pub fn diagnose(
    net: &Network,
    ch: &Channels,
    views: &[View],
    counts: &[usize],
    masks: &MaskSet,
    analysis: &Analysis,
) -> Vec<Unguaranteed> {
    let short: Vec<usize> = masks
        .layers
        .iter()
        .zip(&analysis.active.layers)
        .map(|(m, a)| m.count_ones() - a.count_ones())
        .collect();
    if short.iter().all(|&s| s == 0) {
        return Vec::new();
    }
    let fa = analyse(net, &analysis.active);
    let producers = producers(ch, views);
    let name = |l: usize| net.layers[l].name.clone();
    let active = |l: usize| analysis.active.layers[l].count_ones();
    let consumers: Vec<BTreeSet<usize>> = (0..views.len())
        .map(|l| {
            (0..views.len())
                .filter(|&c| producers[c].contains(&l))
                .collect()
        })
        .collect();
    // Why the layers on one side (`next`: producers or consumers; `role`:
    // "feeding", "reading") leave this one without a path: the nearest
    // layers on that side that keep no weight, else the direct neighbours.
    let describe = |l: usize, next: &[BTreeSet<usize>], role: &str, what: &str| -> String {
        let mut seen = BTreeSet::new();
        let mut frontier: Vec<usize> = next[l].iter().copied().collect();
        let mut empty = BTreeSet::new();
        while let Some(p) = frontier.pop() {
            if !seen.insert(p) {
                continue;
            }
            if counts[p] == 0 {
                empty.insert(p);
            } else {
                frontier.extend(next[p].iter().copied());
            }
        }
        if !empty.is_empty() {
            let names: Vec<String> = empty.iter().map(|&p| name(p)).collect();
            return format!("{} keeps no weight", names.join(", "));
        }
        if next[l].is_empty() {
            return format!("no layer is {role} it");
        }
        let all: Vec<String> = next[l]
            .iter()
            .map(|&p| {
                format!(
                    "{} ({} of {} kept weights functional)",
                    name(p),
                    active(p),
                    counts[p]
                )
            })
            .collect();
        format!("the layers {role} it, {}, {what}", all.join(", "))
    };
    // What dead factors alone make inactive (only where products exist).
    let sum_rule =
        crate::analysis::factors::has_products(net).then(|| analyse_sum_rule(net, masks).active);
    let mut out = Vec::new();
    for (l, &inactive) in short.iter().enumerate() {
        if inactive == 0 {
            continue;
        }
        // The sides are read off the whole mask (what reaches this layer at
        // all, what it could reach), the pairs off its functional part.
        let sides = Pairs::new(net, &views[l], l, analysis, &masks.layers[l]);
        let v = &views[l];
        let reads_data = v.groups * v.opg * v.ipg * v.data_taps().len();
        let (cause, reason) = if counts[l] > reads_data {
            (
                Cause::PaddingOnly,
                format!(
                    "only {reads_data} weights of this layer ever read data at this input size (its other kernel taps see padding only), for {} edges",
                    counts[l]
                ),
            )
        } else if sum_rule
            .as_ref()
            .is_some_and(|s| s.layers[l].count_ones() == masks.layers[l].count_ones())
        {
            (
                Cause::DeadFactor,
                format!(
                    "{inactive} kept weights of this layer reach the output only through a product whose other factor is identically zero in the masked network (e.g. a query dimension whose key dimension keeps no weight and has no bias)"
                ),
            )
        } else if !sides.any_output() {
            (
                Cause::NoLiveOutput,
                format!(
                    "no output of this layer reaches the graph output through kept weights: {}",
                    describe(l, &consumers, "reading", "read none of its outputs")
                ),
            )
        } else if !sides.any_input() {
            (
                Cause::NoLiveInput,
                format!(
                    "no input of this layer is reached from the graph input through kept weights: {}",
                    describe(l, &producers, "feeding", "reach none of its inputs")
                ),
            )
        } else {
            let pairs = Pairs::new(net, &views[l], l, &fa, &analysis.active.layers[l]);
            let functional = analysis.active.layers[l].count_ones() + pairs.count();
            (
                Cause::TooFewPairs,
                format!(
                    "only {functional} (input, output) pairs of this layer can carry a functional edge, for {} edges: the layers around it keep too few live channels",
                    counts[l]
                ),
            )
        };
        out.push(Unguaranteed {
            layer: name(l),
            inactive,
            cause,
            reason,
        });
    }
    out
}

/// The layers each layer reads (through ops without weights).
fn producers(ch: &Channels, views: &[View]) -> Vec<BTreeSet<usize>> {
    views
        .iter()
        .enumerate()
        .map(|(l, v)| {
            let mut ps = BTreeSet::new();
            for b in &v.blocks {
                for &lab in ch.labels(b.set) {
                    if let Source::Channel { layer, .. } | Source::AllOf { layer } = source(lab) {
                        if layer != l {
                            ps.insert(layer);
                        }
                    }
                }
            }
            ps
        })
        .collect()
}
