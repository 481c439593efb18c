//! How many taps one kernel may keep, layer by layer: NPB's `max_p`
//! schedule.
//!
//! The cap is more than a bound. The programme's path normaliser is the
//! paths of the budget stacked `max_taps` deep on the richest inputs, and
//! when a chunk keeps fewer taps than `C_out * max_taps` the reference's
//! numpy slice `sort(P)[-0:]` takes *every* input into it
//! ([`super::programme::Programme::max_path`]): the paths term all but
//! vanishes and the programme spreads its budget over as many nodes as it
//! can. At or above that count the paths term weighs in full and the
//! programme concentrates on the richest inputs. Lowering the cap in the
//! late layers crosses that line (docs/npb.md, "Why the cap matters").
//!
//! Three schedules:
//! - [`TapSchedule::Constant`]: `max_taps` everywhere;
//! - [`TapSchedule::PerHalving`]: lowered by a step per halving of a conv
//!   layer's input height since the first layer's, to no less than 3;
//! - [`TapSchedule::Reference`] (the default): the reference code's own
//!   rules (`Optimization_Pruner.prune`), which depend on the
//!   architecture. On a residual network it lowers the cap by 2 after each projection
//!   shortcut while the cap is above 5. On a plain chain (their `VGG`
//!   class: no residual sum, no concatenation) it counts prunable layers
//!   in a `layer_id` that is meant to index their `layers` list (pools
//!   included) and, when the count reaches 4, 9 or 14, lowers the cap by 2
//!   and skips one index (at 1 it skips without lowering). The skips land
//!   one layer off the pools, so on VGG-16 the cap is 9 for the first
//!   three convs, 7 from the fourth, 5 from the eighth and 3 from the
//!   twelfth: what their VGG-16 runs record. Other graphs keep the cap.
//!
//! The first layer and dense layers ignore the cap (see [`super`]).
//!
//! ```
//! use maskforge::{zoo, methods::npb::{caps::{caps, TapSchedule}, inflow::layer_order, NpbSettings}};
//! let net = zoo::build("vgg16", 0).unwrap();
//! let settings = NpbSettings { schedule: TapSchedule::Reference, ..NpbSettings::default() };
//! let convs: Vec<usize> = caps(&net, &layer_order(&net), &settings).into_iter().take(13).collect();
//! assert_eq!(convs, [9, 9, 9, 7, 7, 7, 7, 5, 5, 5, 5, 3, 3]);
//! ```

use crate::graph::op::Op;
use crate::graph::{LayerKind, Network, ValueId};

use super::NpbSettings;

/// How `max_taps` changes along the network (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TapSchedule {
    /// The same cap on every layer.
    Constant,
    /// Lowered by this step per halving of a conv layer's input height.
    PerHalving(usize),
    /// The reference code's architecture-dependent rules.
    #[default]
    Reference,
}

/// Where the reference's plain-chain rule acts on its `layer_id`: at 1 it
/// only skips an index, at the others it also lowers the cap.
const CHAIN_MARKS: [usize; 4] = [1, 4, 9, 14];

/// The reference's floor for its shortcut rule: it lowers only above it.
const SHORTCUT_FLOOR: usize = 5;

/// The cap of each layer of `order` (in that order), before the first
/// layer's and dense layers' own rules.
pub fn caps(net: &Network, order: &[usize], settings: &NpbSettings) -> Vec<usize> {
    match settings.schedule {
        TapSchedule::Constant => vec![settings.max_taps; order.len()],
        TapSchedule::PerHalving(step) => order
            .iter()
            .map(|&li| per_halving(net, li, order[0], settings.max_taps, step))
            .collect(),
        TapSchedule::Reference => reference(net, order, settings.max_taps),
    }
}

/// `max_taps` lowered by `step` for every halving of `li`'s input height
/// since the first layer's, to no less than 3 (or `max_taps` when lower).
fn per_halving(net: &Network, li: usize, first: usize, max_taps: usize, step: usize) -> usize {
    let height = |l: usize| {
        let v = net.nodes[net.layers[l].node].inputs[0];
        match (net.layers[l].kind, net.value(v).shape.as_slice()) {
            (LayerKind::Conv, [_, h, _]) => Some(*h as f64),
            _ => None,
        }
    };
    let (Some(h0), Some(h)) = (height(first), height(li)) else {
        return max_taps;
    };
    let halvings = (h0 / h).log2().round().max(0.0) as usize;
    max_taps
        .saturating_sub(step * halvings)
        .max(max_taps.min(3))
}

/// The reference's rules, layer by layer: each layer runs with the cap as
/// it stands, then the cap moves for the layers after it.
fn reference(net: &Network, order: &[usize], max_taps: usize) -> Vec<usize> {
    let residual = has_residual_sum(net);
    let chain = !residual && !joins(net, |op| matches!(op, Op::Concat(_)));
    let wiring = residual.then(|| Wiring::of(net));
    let mut cap = max_taps;
    let mut layer_id = 0;
    let mut out = Vec::with_capacity(order.len());
    for &li in order {
        out.push(cap);
        let shortcut = wiring
            .as_ref()
            .is_some_and(|w| w.is_projection_shortcut(net, li));
        if shortcut && cap > SHORTCUT_FLOOR {
            cap -= 2;
        }
        layer_id += 1;
        if chain && CHAIN_MARKS.contains(&layer_id) {
            if layer_id != 1 {
                cap = cap.saturating_sub(2).max(1);
            }
            layer_id += 1;
        }
    }
    out
}

/// Whether the network sums branches (a residual network, as the
/// reference's per-architecture rules tell them apart).
pub(super) fn has_residual_sum(net: &Network) -> bool {
    joins(net, |op| matches!(op, Op::Add))
}

/// Whether some node of an op `kind` joins two or more activations.
fn joins(net: &Network, kind: impl Fn(&Op) -> bool) -> bool {
    net.nodes.iter().any(|n| kind(&n.op) && n.inputs.len() > 1)
}

/// Who reads each value, and which nodes are prunable layers: built once
/// per network for the shortcut test.
struct Wiring {
    consumers: Vec<Vec<usize>>,
    is_layer: Vec<bool>,
}

impl Wiring {
    fn of(net: &Network) -> Self {
        let mut is_layer = vec![false; net.nodes.len()];
        for l in &net.layers {
            is_layer[l.node] = true;
        }
        Wiring {
            consumers: net.consumers(),
            is_layer,
        }
    }

    /// A conv layer on a skip connection: it reads a value another
    /// prunable layer also reads (the block's input), and its output
    /// reaches a residual sum through ops that are not layers (a
    /// BatchNorm).
    fn is_projection_shortcut(&self, net: &Network, li: usize) -> bool {
        let layer = &net.layers[li];
        if layer.kind != LayerKind::Conv {
            return false;
        }
        let node = &net.nodes[layer.node];
        let shares_input = self.consumers[node.inputs[0]]
            .iter()
            .any(|&n| n != layer.node && self.is_layer[n]);
        shares_input && self.reaches_sum(net, node.output)
    }

    /// Whether `v` flows into an `Add` through nodes that are not layers.
    fn reaches_sum(&self, net: &Network, v: ValueId) -> bool {
        let mut frontier = vec![v];
        // A shortcut's path to its sum is a BatchNorm or two; the bound
        // only keeps a pathological graph from being walked whole.
        for _ in 0..8 {
            let mut next = Vec::new();
            for v in frontier {
                for &n in &self.consumers[v] {
                    if matches!(net.nodes[n].op, Op::Add) {
                        return true;
                    }
                    if !self.is_layer[n] {
                        next.push(net.nodes[n].output);
                    }
                }
            }
            if next.is_empty() {
                return false;
            }
            frontier = next;
        }
        false
    }
}
