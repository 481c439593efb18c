//! The last step of MiCA here: move any edge that the construction left
//! inactive to a pair of nodes where it is functional, keeping every layer's
//! count.
//!
//! Node analysis and placement keep every edge functional wherever the
//! graph lets channel-level bookkeeping say so; what they cannot see
//! (positions a strided or padded conv never reaches, a union of two
//! residual demands larger than one consumer can take) can leave a few
//! edges without a path. Two facts make moving them safe: removing inactive
//! edges changes no liveness that matters (the active set of the remaining
//! mask is the same), and adding an edge from a forward-live input position
//! to a backward-live output position of the *functional* part makes it
//! active and can only add liveness (the linearised network is monotone in
//! its mask). So per round: strip the inactive edges, compute the liveness
//! of what is left, and put each layer's stripped edges back at random among
//! its functional pairs, as many as there are; then, for a layer with none
//! left, open new ones ([`super::reroute`]: make an unread output read); the
//! rest go back where they were. Rounds repeat while they help (new liveness can open pairs in other
//! layers). A layer still short after that has fewer functional pairs than
//! edges given the other layers' placements, and the report says so
//! ([`super::guarantee`]).
//!
//! ```
//! use maskforge::{zoo, mask::MaskSet, analysis::effective::effective_masks};
//! use maskforge::methods::random::mica::{channels::Channels, bipartite::View, repair::repair};
//! let net = zoo::build("mlp:6-4-3", 0).unwrap(); // weights [4, 6] and [3, 4]
//! let ch = Channels::of(&net);
//! let views: Vec<View> = (0..2).map(|l| View::of(&net, l, &ch)).collect();
//! let mut m = MaskSet { layers: net.layers.iter().map(|l| maskforge::bitset::BitSet::new(l.numel())).collect() };
//! m.layers[0].set(0, true); // h0 <- x0
//! m.layers[0].set(7, true); // h1 <- x1: inactive, nothing reads h1
//! m.layers[1].set(0, true); // y0 <- h0
//! m.layers[1].set(3, true); // y0 <- h3: inactive, h3 has no input
//! let placed = maskforge::analysis::effective::analyse(&net, &m);
//! let a = repair(&net, &ch, &views, &mut m, placed, 0);
//! assert_eq!(effective_masks(&net, &m), m);
//! assert_eq!((m.layers[0].count_ones(), m.layers[1].count_ones()), (2, 2));
//! assert_eq!(a.active, m);
//! ```

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::analysis::effective::{analyse, Analysis, Live};
use crate::analysis::liveness::PosSet;
use crate::bitset::BitSet;
use crate::graph::Network;
use crate::mask::MaskSet;
use crate::rng::{stream, stream_key};

use super::bipartite::{live_features, View};
use super::channels::Channels;
use super::reroute::Router;

/// Rounds at most; each that moves nothing ends the repair.
const ROUNDS: usize = 8;

/// Candidate pairs are enumerated exhaustively up to this many; past it,
/// sampled (a layer that large has pairs to spare whenever it has any).
const ENUMERATE: usize = 1 << 24;

/// Move inactive edges of `masks` (`a`: their analysis) onto functional
/// pairs; returns the analysis of the result.
pub fn repair(
    net: &Network,
    ch: &Channels,
    views: &[View],
    masks: &mut MaskSet,
    mut a: Analysis,
    seed: u64,
) -> Analysis {
    let mut rngs: Vec<Option<ChaCha8Rng>> = vec![None; views.len()];
    // Built on the first round with edges to move: most runs have none.
    let mut router: Option<Router> = None;
    for _ in 0..ROUNDS {
        let short: Vec<usize> = masks
            .layers
            .iter()
            .zip(&a.active.layers)
            .map(|(m, act)| m.count_ones() - act.count_ones())
            .collect();
        if short.iter().all(|&d| d == 0) {
            break;
        }
        let functional = a.active.clone();
        let fa = analyse(net, &functional);
        let mut work = functional.clone();
        let mut pending = short.clone();
        // Onto pairs that are functional already.
        for (l, &d) in short.iter().enumerate() {
            if d == 0 {
                continue;
            }
            let rng = rngs[l].get_or_insert_with(|| {
                stream(stream_key(seed, "mica-repair", &net.layers[l].name))
            });
            let pairs = Pairs::new(net, &views[l], l, &fa, &functional.layers[l]);
            for k in pairs.sample(d, rng) {
                work.layers[l].set(k, true);
                pending[l] -= 1;
            }
        }
        // Onto outputs nobody reads yet, once a route makes them read.
        for l in 0..views.len() {
            if pending[l] == 0 {
                continue;
            }
            let rng = rngs[l].get_or_insert_with(|| {
                stream(stream_key(seed, "mica-repair", &net.layers[l].name))
            });
            open_outputs(
                net,
                router.get_or_insert_with(|| Router::new(net, ch, views)),
                &views[l],
                l,
                &fa,
                &mut work,
                &mut pending,
                rng,
            );
        }
        // The edges nothing could take stay where they were.
        for (l, &p) in pending.iter().enumerate() {
            let mut stay = p;
            for k in masks.layers[l].ones() {
                if stay == 0 {
                    break;
                }
                if !work.layers[l].get(k) {
                    work.layers[l].set(k, true);
                    stay -= 1;
                }
            }
        }
        let next = analyse(net, &work);
        // Liveness is monotone in the mask, so a round only ever adds active
        // weights; should position-level effects say otherwise, stop there.
        if next.active.count_ones() <= a.active.count_ones() {
            break;
        }
        *masks = work;
        a = next;
    }
    a
}

/// Give layer `l`'s pending edges outputs that no one reads yet, in groups
/// with live inputs, each once [`Router::open`] has made it read.
#[allow(clippy::too_many_arguments)]
fn open_outputs(
    net: &Network,
    router: &Router,
    v: &View,
    l: usize,
    fa: &Analysis,
    work: &mut MaskSet,
    pending: &mut [usize],
    rng: &mut ChaCha8Rng,
) {
    let groups = Pairs::new(net, v, l, fa, &work.layers[l]).groups;
    let mut cands: Vec<(usize, usize)> = Vec::new();
    for (g, (ins, outs)) in groups.iter().enumerate() {
        if ins.is_empty() {
            continue;
        }
        cands.extend((0..v.opg).filter(|o| !outs.contains(o)).map(|o| (g, o)));
    }
    cands.shuffle(rng);
    let taps = v.data_taps();
    for (g, o) in cands {
        if pending[l] == 0 {
            return;
        }
        if router
            .open(fa, work, pending, l, g * v.opg + o, rng)
            .is_none()
        {
            continue;
        }
        let mut positions: Vec<usize> = groups[g]
            .0
            .iter()
            .flat_map(|&i| taps.iter().map(move |&t| i * v.taps + t))
            .collect();
        positions.shuffle(rng);
        for p in positions {
            if pending[l] == 0 {
                break;
            }
            let k = v.weight_index(g, o, p);
            if !work.layers[l].get(k) {
                work.layers[l].set(k, true);
                pending[l] -= 1;
            }
        }
    }
}

/// The pairs of one layer where a new edge would be functional, given the
/// liveness `fa` of the functional part of the mask (`taken`: its edges).
pub(crate) struct Pairs<'a> {
    v: &'a View,
    taken: &'a BitSet,
    /// Per group: forward-live input nodes and backward-live outputs (local).
    pub(crate) groups: Vec<(Vec<usize>, Vec<usize>)>,
    input: &'a Live,
    output: &'a Live,
    data_taps: Vec<usize>,
}

impl<'a> Pairs<'a> {
    pub(crate) fn new(
        net: &Network,
        v: &'a View,
        l: usize,
        fa: &'a Analysis,
        taken: &'a BitSet,
    ) -> Self {
        let node = &net.nodes[net.layers[l].node];
        let input = &fa.forward[node.inputs[0]];
        let output = &fa.backward[node.output];
        let n_in = v.groups * v.ipg;
        let n_out = v.groups * v.opg;
        let (fin, bout): (Vec<bool>, Vec<bool>) = if v.geometry().is_some() {
            (
                input.chans.iter().map(|c| !c.is_none()).collect(),
                output.chans.iter().map(|c| !c.is_none()).collect(),
            )
        } else {
            (live_features(input, n_in), live_features(output, n_out))
        };
        let groups = (0..v.groups)
            .map(|g| {
                (
                    (0..v.ipg).filter(|&i| fin[g * v.ipg + i]).collect(),
                    (0..v.opg).filter(|&o| bout[g * v.opg + o]).collect(),
                )
            })
            .collect();
        Self {
            v,
            taken,
            groups,
            input,
            output,
            data_taps: v.data_taps(),
        }
    }

    /// Some input node is forward-live.
    pub(crate) fn any_input(&self) -> bool {
        self.groups.iter().any(|(i, _)| !i.is_empty())
    }

    /// Some output node is backward-live.
    pub(crate) fn any_output(&self) -> bool {
        self.groups.iter().any(|(_, o)| !o.is_empty())
    }

    /// Pairs to consider: live inputs x data taps x live outputs.
    fn universe(&self) -> usize {
        self.groups
            .iter()
            .map(|(i, o)| i.len() * o.len() * self.data_taps.len())
            .sum()
    }

    /// The weight index of `(g, o, i, t)` when an edge there is functional
    /// and not already kept.
    fn check(&self, g: usize, o: usize, i: usize, t: usize) -> Option<usize> {
        let v = self.v;
        let k = v.weight_index(g, o, i * v.taps + t);
        if self.taken.get(k) {
            return None;
        }
        if let Some(geo) = v.geometry() {
            let f = &self.input.chans[g * v.ipg + i];
            let b = &self.output.chans[g * v.opg + o];
            let both_all = matches!((f, b), (PosSet::All, PosSet::All));
            if !both_all && !geo.connects(f, b, t) {
                return None;
            }
        }
        Some(k)
    }

    /// Every candidate (when the universe is small enough to list).
    fn all(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for (g, (ins, outs)) in self.groups.iter().enumerate() {
            for &o in outs {
                for &i in ins {
                    for &t in &self.data_taps {
                        out.extend(self.check(g, o, i, t));
                    }
                }
            }
        }
        out
    }

    /// Functional pairs not yet kept, at least; exact when enumerable.
    pub(crate) fn count(&self) -> usize {
        if self.universe() <= ENUMERATE {
            self.all().len()
        } else {
            self.universe() - self.taken.count_ones()
        }
    }

    /// Up to `d` distinct candidates, uniformly at random.
    pub(crate) fn sample(&self, d: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
        let universe = self.universe();
        if universe == 0 || d == 0 {
            return Vec::new();
        }
        if universe <= ENUMERATE.min(64 * d) {
            let mut all = self.all();
            all.shuffle(rng);
            all.truncate(d);
            all.sort_unstable();
            return all;
        }
        // Large: rejection sampling over the universe, groups by size.
        let sizes: Vec<usize> = self
            .groups
            .iter()
            .map(|(i, o)| i.len() * o.len() * self.data_taps.len())
            .collect();
        let mut picked = BitSet::new(self.taken.len());
        let mut out = Vec::new();
        let mut tries = 0;
        while out.len() < d && tries < 64 * d + 1024 {
            tries += 1;
            let mut r = rng.random_range(0..universe);
            let g = sizes
                .iter()
                .position(|&s| {
                    if r < s {
                        true
                    } else {
                        r -= s;
                        false
                    }
                })
                .expect("r < universe");
            let (ins, outs) = &self.groups[g];
            let o = outs[rng.random_range(0..outs.len())];
            let i = ins[rng.random_range(0..ins.len())];
            let t = self.data_taps[rng.random_range(0..self.data_taps.len())];
            if let Some(k) = self.check(g, o, i, t) {
                if !picked.get(k) {
                    picked.set(k, true);
                    out.push(k);
                }
            }
        }
        if out.len() < d && universe <= ENUMERATE {
            // Candidates are scarce: list them all instead.
            let mut all: Vec<usize> = self.all().into_iter().filter(|&k| !picked.get(k)).collect();
            all.shuffle(rng);
            out.extend(all.into_iter().take(d - out.len()));
        }
        out.sort_unstable();
        out
    }
}
