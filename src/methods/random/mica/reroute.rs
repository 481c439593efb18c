//! Opening functional pairs for a layer that has none left: route a short
//! path from one of its unconsumed outputs to the graph output, each new
//! edge paid for by an edge its layer can spare.
//!
//! [`super::repair`] moves inactive edges onto pairs that are already
//! functional. When a layer has none free (say a 1x1 conv feeding a
//! depthwise conv whose few channels are all taken), an output of it that
//! nobody reads can be made consumed: one edge in a consumer from the block
//! reading that output to an output that already reaches the graph output
//! (or, through a depthwise or grouped conv, two such hops). Every layer
//! keeps its count: a new edge in a consumer takes the place of one of its
//! own edges still waiting to be placed, or of a *redundant* one, an edge
//! whose output has another incoming edge and whose input has another
//! outgoing edge in that layer, so removing it changes no node's liveness.
//!
//! ```
//! use maskforge::{zoo, mask::MaskSet, bitset::BitSet, analysis::effective::analyse};
//! use maskforge::methods::random::mica::{channels::Channels, bipartite::View, reroute::Router};
//! let net = zoo::build("mlp:4-3-2", 0).unwrap(); // h = W0 x ([3, 4]), y = W1 h ([2, 3])
//! let ch = Channels::of(&net);
//! let views: Vec<View> = (0..2).map(|l| View::of(&net, l, &ch)).collect();
//! let mut m = MaskSet { layers: net.layers.iter().map(|l| BitSet::new(l.numel())).collect() };
//! m.layers[0].set(0, true); // h0 <- x0
//! m.layers[1].set(0, true); // y0 <- h0
//! let fa = analyse(&net, &m);
//! let router = Router::new(&net, &ch, &views);
//! let mut rng = maskforge::rng::stream([0; 32]);
//! // Nobody reads h2, and layer 1's one edge is all that keeps h0 read: no route.
//! let mut pending = vec![0, 0];
//! assert!(router.open(&fa, &mut m, &mut pending, 0, 2, &mut rng).is_none());
//! // With one of its edges waiting to be placed, layer 1 reads h2.
//! pending[1] = 1;
//! let route = router.open(&fa, &mut m, &mut pending, 0, 2, &mut rng).unwrap();
//! assert_eq!((route.len(), pending[1], m.layers[1].count_ones()), (1, 0, 2));
//! assert_eq!(route[0].1 % 3, 2); // an edge from h2
//! // If h0 fed both outputs, one of those edges could move to h2 instead,
//! // paying nothing: h0 stays read, that output stays fed.
//! let mut m = MaskSet { layers: net.layers.iter().map(|l| BitSet::new(l.numel())).collect() };
//! m.layers[0].set(0, true); // h0 <- x0
//! m.layers[1].set(0, true); // y0 <- h0
//! m.layers[1].set(3, true); // y1 <- h0
//! let fa = analyse(&net, &m);
//! let mut pending = vec![0, 0];
//! let route = router.open(&fa, &mut m, &mut pending, 0, 2, &mut rng).unwrap();
//! assert!(route[0].2.is_some()); // a redirection
//! assert_eq!(m.layers[1].count_ones(), 2);
//! ```

use foldhash::{HashMap, HashMapExt};

use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::analysis::effective::Analysis;
use crate::bitset::BitSet;
use crate::graph::Network;
use crate::mask::MaskSet;

use super::bipartite::{live_features, View};
use super::channels::{label, source, Channels, Label, Source};

/// Hops at most: one consumer, or a depthwise/grouped conv and the next.
const HOPS: usize = 2;
/// Outputs tried per hop when the first one reached does not reach the
/// graph output (keeps the search linear).
const BRANCH: usize = 8;

/// Consumers of every layer channel, for routing.
pub struct Router<'a> {
    net: &'a Network,
    views: &'a [View],
    /// Blocks reading each channel: `(layer, block)`.
    readers: HashMap<Label, Vec<(usize, usize)>>,
}

/// One new edge of a route: layer, weight index, and the edge it replaces
/// when it is a redirection (see [`Router::search`]).
type Hop = (usize, usize, Option<usize>);

impl<'a> Router<'a> {
    pub fn new(net: &'a Network, ch: &Channels, views: &'a [View]) -> Self {
        let mut readers: HashMap<Label, Vec<(usize, usize)>> = HashMap::new();
        for (m, v) in views.iter().enumerate() {
            for (b, blk) in v.blocks.iter().enumerate() {
                for &lab in ch.labels(blk.set) {
                    if let Source::Channel { .. } = source(lab) {
                        readers.entry(lab).or_default().push((m, b));
                    }
                }
            }
        }
        Self {
            net,
            views,
            readers,
        }
    }

    /// Make output `o` of layer `l` consumed: find a route from it to a
    /// backward-live node (liveness `fa` of the functional part), place its
    /// edges in `masks` and pay for each with a pending edge of its layer
    /// (`pending[m] -= 1`) or a redundant one. Returns the route's edges.
    pub fn open(
        &self,
        fa: &Analysis,
        masks: &mut MaskSet,
        pending: &mut [usize],
        l: usize,
        o: usize,
        rng: &mut ChaCha8Rng,
    ) -> Option<Vec<Hop>> {
        let route = self.search(fa, masks, pending, l, o, HOPS, rng)?;
        // Pay for every edge before changing anything: a route that cannot
        // be paid for in full leaves the masks as they were.
        let mut layers: Vec<(usize, BitSet)> = Vec::new();
        let mut paid = pending.to_vec();
        for &(m, k, replaces) in &route {
            let i = match layers.iter().position(|x| x.0 == m) {
                Some(i) => i,
                None => {
                    layers.push((m, masks.layers[m].clone()));
                    layers.len() - 1
                }
            };
            let mask = &mut layers[i].1;
            match replaces {
                Some(old) => mask.set(old, false),
                None if paid[m] > 0 => paid[m] -= 1,
                None => {
                    let spare = redundant(&self.views[m], mask, &route, m)?;
                    mask.set(spare, false);
                }
            }
            mask.set(k, true);
        }
        for (m, mask) in layers {
            masks.layers[m] = mask;
        }
        pending.copy_from_slice(&paid);
        Some(route)
    }

    /// A route of at most `hops` new edges from output `o` of layer `l`:
    /// in a consumer, an edge from the block reading `o` to an output that
    /// reaches the graph output, paid by a pending or redundant edge, or
    /// *redirected*: an existing edge into such an output whose input has
    /// another outgoing edge moves to the new block (its input stays
    /// consumed, its output stays fed); else, through an output that does
    /// not reach the graph output yet, one hop further.
    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        fa: &Analysis,
        masks: &MaskSet,
        pending: &[usize],
        l: usize,
        o: usize,
        hops: usize,
        rng: &mut ChaCha8Rng,
    ) -> Option<Vec<Hop>> {
        if hops == 0 {
            return None;
        }
        let mut readers = self.readers.get(&label(l, o)).cloned().unwrap_or_default();
        readers.shuffle(rng);
        for (m, b) in readers {
            let can_pay =
                pending[m] > 0 || redundant(&self.views[m], &masks.layers[m], &[], m).is_some();
            let v = &self.views[m];
            let g = v.blocks[b].group;
            let Some(pos) = self.free_position(v, b, &masks.layers[m], g, rng) else {
                continue;
            };
            let back = self.backward_live(fa, m);
            let mut outs: Vec<usize> = (0..v.opg).collect();
            outs.shuffle(rng);
            // An output that already reaches the graph output ends the route.
            let done = outs.iter().copied().find(|&oo| {
                back[g * v.opg + oo] && !masks.layers[m].get(v.weight_index(g, oo, pos))
            });
            if let (true, Some(oo)) = (can_pay, done) {
                return Some(vec![(m, v.weight_index(g, oo, pos), None)]);
            }
            if let Some((oo, old)) = redirectable(v, &masks.layers[m], g, &back, rng) {
                let k = v.weight_index(g, oo, pos);
                if !masks.layers[m].get(k) {
                    return Some(vec![(m, k, Some(old))]);
                }
            }
            if !can_pay {
                continue;
            }
            for &oo in outs
                .iter()
                .filter(|&&oo| !back[g * v.opg + oo])
                .take(BRANCH)
            {
                if let Some(mut rest) =
                    self.search(fa, masks, pending, m, g * v.opg + oo, hops - 1, rng)
                {
                    rest.push((m, v.weight_index(g, oo, pos), None));
                    return Some(rest);
                }
            }
        }
        None
    }

    /// A group-local input position of block `b` (a data tap) not yet kept
    /// towards every output: any one will do, the route picks the output.
    fn free_position(
        &self,
        v: &View,
        b: usize,
        mask: &BitSet,
        g: usize,
        rng: &mut ChaCha8Rng,
    ) -> Option<usize> {
        let blk = &v.blocks[b];
        let taps = v.data_taps();
        let mut cands: Vec<usize> = blk
            .nodes
            .clone()
            .flat_map(|n| taps.iter().map(move |&t| (n - g * v.ipg) * v.taps + t))
            .collect();
        cands.shuffle(rng);
        cands
            .into_iter()
            .find(|&p| (0..v.opg).any(|o| !mask.get(v.weight_index(g, o, p))))
    }

    /// Per output node of layer `m`: backward-live in `fa`.
    fn backward_live(&self, fa: &Analysis, m: usize) -> Vec<bool> {
        let out = &fa.backward[self.net.nodes[self.net.layers[m].node].output];
        let v = &self.views[m];
        let n_out = v.groups * v.opg;
        if v.geometry().is_some() {
            out.chans.iter().map(|c| !c.is_none()).collect()
        } else {
            live_features(out, n_out)
        }
    }
}

/// In-degree of every output and out-degree of every input channel of a
/// layer's mask; and the `(output, input channel)` of a weight index.
fn degrees(v: &View, mask: &BitSet) -> (Vec<usize>, Vec<usize>) {
    let mut indeg = vec![0usize; v.groups * v.opg];
    let mut outdeg = vec![0usize; v.groups * v.ipg];
    for k in mask.ones() {
        let (o, i) = nodes_of(v, k);
        indeg[o] += 1;
        outdeg[i] += 1;
    }
    (indeg, outdeg)
}

fn nodes_of(v: &View, k: usize) -> (usize, usize) {
    let row = k / v.positions();
    let g = row / v.opg;
    (row, g * v.ipg + (k % v.positions()) / v.taps)
}

/// An edge of group `g` into an output that reaches the graph output,
/// whose input channel has another outgoing edge: `(local output, edge)`.
fn redirectable(
    v: &View,
    mask: &BitSet,
    g: usize,
    back: &[bool],
    rng: &mut ChaCha8Rng,
) -> Option<(usize, usize)> {
    let (_, outdeg) = degrees(v, mask);
    let lo = v.weight_index(g, 0, 0);
    let hi = v.weight_index(g + 1, 0, 0);
    let mut cands: Vec<usize> = mask
        .ones_in(lo, hi)
        .filter(|&k| {
            let (o, i) = nodes_of(v, k);
            back[o] && outdeg[i] >= 2
        })
        .collect();
    cands.shuffle(rng);
    cands.first().map(|&k| (nodes_of(v, k).0 - g * v.opg, k))
}

/// An edge of `mask` (layer `m` of view `v`) whose output has another
/// incoming edge and whose input channel another outgoing edge, not one of
/// `route`'s: removing it changes no node's liveness.
fn redundant(v: &View, mask: &BitSet, route: &[Hop], m: usize) -> Option<usize> {
    let (indeg, outdeg) = degrees(v, mask);
    mask.ones().find(|&k| {
        let (o, i) = nodes_of(v, k);
        indeg[o] >= 2 && outdeg[i] >= 2 && !route.iter().any(|h| h.0 == m && h.1 == k)
    })
}
