//! MiCA, Minimum Connection Assurance (papers/mica-restricted-random-pruning.txt,
//! Algorithms 1-4): restricted random pruning that keeps every allocated edge
//! functional where the quota allows it.
//!
//! 1. *Node analysis* (Algorithm 1), output to input: the last layer uses
//!    `min(n_out, e_L)` output nodes; a layer with `e` edges and `n` used output
//!    nodes asks its producer for a node count in `[ceil(e/n), floor(e/b)]`
//!    (Eq. 4; `b` the block size of Eq. 1), picked by [`MicaChoice`] (`rand`
//!    by default, as the official code's configs), else `ceil(e/n)`, clamped to
//!    the channels available. Residual branches: a producer takes the largest
//!    requirement of its consumers, so the shortcut and the branch both count.
//! 2. *Minimum connection* (Algorithms 2-3), input to output: every block (the
//!    input nodes fed by one live channel of the previous layer) sends one
//!    edge to a fresh output node, then unconnected nodes are connected.
//!    `V_in` of a conv holds only the `(channel, tap)` pairs that read live
//!    data: a tap that only ever sees zero padding is excluded, as in the
//!    official code's `get_degree_weight`.
//! 3. *Fill* (Algorithm 4): the remaining edges go uniformly at random among
//!    pairs of used nodes. Every layer ends with exactly `e_l` edges: should
//!    the used nodes have too few free pairs, the rest go first to live inputs
//!    and any output, then to any pair of the layer (as the official code's
//!    tiers; those may be inactive, and no placement could avoid it).
//!
//! Choices where the paper is silent: the used output nodes are a random
//! subset (the paper numbers them 1..n); blocks are visited in random order,
//! so which blocks get an edge when `e` is smaller than their number is
//! random. Extensions beyond the paper: a Concat splits a requirement over
//! its inputs by channel share; a grouped (or depthwise) conv splits its
//! edges over the groups whose inputs are live, in proportion to their live
//! input nodes, and runs the construction inside each group.
//!
//! ```
//! use maskforge::{zoo, methods::random::mica::mica, methods::random::mica::MicaChoice, methods::quota};
//! let net = zoo::build("vgg16", 0).unwrap();
//! let k = quota::target_from_compression(net.prunable_count(), 1000.0).unwrap();
//! let counts = quota::kept_counts(&net, &quota::Quota::Igq, k).unwrap();
//! let m = mica(&net, &counts, MicaChoice::Rand, 0).unwrap();
//! let eff = maskforge::analysis::effective::effective_masks(&net, &m);
//! assert_eq!(m.count_ones(), k);
//! assert!(eff.count_ones() as f64 >= 0.99 * k as f64);
//! ```

pub mod channels;

use std::collections::HashSet;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::analysis::effective::Forward;
use crate::analysis::liveness::{Geometry, PosSet};
use crate::bitset::BitSet;
use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::{Network, ValueId};
use crate::mask::MaskSet;
use crate::rng::{stream, stream_key};

/// MiCA masks with exactly `counts[l]` edges in layer `l`.
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

pub fn mica(net: &Network, counts: &[usize], choice: MicaChoice, seed: u64) -> Result<MaskSet> {
    mica_traced(net, counts, choice, seed).map(|(m, _)| m)
}

/// [`mica`], also returning the forward liveness of the result (computed
/// during construction anyway), for [`crate::analysis::effective::analyse_with_forward`].
pub fn mica_traced(
    net: &Network,
    counts: &[usize],
    choice: MicaChoice,
    seed: u64,
) -> Result<(MaskSet, Vec<crate::analysis::effective::Live>)> {
    if counts.len() != net.layers.len() {
        return Err(Error::internal("mica: one count per layer expected"));
    }
    let ideal = node_analysis(net, counts, choice, seed);
    let layer_of = net.layer_of_node();
    let mut masks: Vec<BitSet> = net.layers.iter().map(|l| BitSet::new(l.numel())).collect();
    let mut fw = Forward::new(net);
    for (ni, node) in net.nodes.iter().enumerate() {
        let Some(li) = layer_of[ni] else {
            fw.step(ni, None);
            continue;
        };
        let input = fw.get(node.inputs[0]).expect("topological order");
        let mut rng = stream(stream_key(seed, "mica", &net.layers[li].name));
        let layer = Bipartite::of(net, li, input);
        let preferred = residual_partners(net, node.output, &fw);
        masks[li] = layer.place(counts[li], ideal[li], &preferred, &mut rng);
        if masks[li].count_ones() != counts[li] {
            return Err(Error::internal(format!(
                "mica: layer '{}' got {} edges, quota {}",
                net.layers[li].name,
                masks[li].count_ones(),
                counts[li]
            )));
        }
        fw.step(ni, Some(&masks[li]));
    }
    Ok((MaskSet { layers: masks }, fw.finish()))
}

/// Channels already live in the other inputs of the residual Add that `v`
/// (through shape-preserving ops) feeds, if any: a layer choosing its output
/// nodes among them keeps the live channels of the sum at the larger of the
/// two branches' counts rather than their union, so the next layer's
/// requirement (computed for that count by node analysis) still holds.
fn residual_partners(net: &Network, v: ValueId, fw: &Forward) -> Vec<bool> {
    let mut cur = v;
    let mut seen = 0;
    while seen < net.nodes.len() {
        seen += 1;
        let Some(next) = net.nodes.iter().find(|n| n.inputs.contains(&cur)) else {
            break;
        };
        match &next.op {
            Op::Norm(_) | Op::Activation(_) | Op::Identity => cur = next.output,
            Op::Add => {
                let c = net.values[v].shape[0];
                let mut live = vec![false; c];
                for &other in next.inputs.iter().filter(|&&x| x != cur) {
                    if let Some(l) = fw.get(other) {
                        if l.chans.len() == c {
                            for (k, ch) in l.chans.iter().enumerate() {
                                live[k] |= !ch.is_none();
                            }
                        }
                    }
                }
                return live;
            }
            _ => break,
        }
    }
    Vec::new()
}

/// Where a value's channels come from: prunable layers with the share of the
/// value's channels they feed (walking back through non-prunable ops).
fn producers(
    net: &Network,
    layer_of: &[Option<usize>],
    v: ValueId,
    share: f64,
    out: &mut Vec<(usize, f64)>,
) {
    let Some(ni) = net.nodes.iter().position(|n| n.output == v) else {
        return; // a graph input
    };
    if let Some(li) = layer_of[ni] {
        out.push((li, share));
        return;
    }
    let node = &net.nodes[ni];
    match &node.op {
        Op::Concat(0) => {
            let total = net.values[v].shape[0] as f64;
            for &x in &node.inputs {
                let part = net.values[x].shape[0] as f64 / total;
                producers(net, layer_of, x, share * part, out);
            }
        }
        _ => {
            for &x in &node.inputs {
                producers(net, layer_of, x, share, out);
            }
        }
    }
}

/// Block size `b` of Eq. (1): input nodes per channel of the previous layer.
fn block_size(net: &Network, li: usize) -> usize {
    let l = &net.layers[li];
    let node = &net.nodes[l.node];
    match &node.op {
        Op::Conv { conv, .. } => conv.taps(),
        _ => {
            // A dense layer after Flatten: one block per channel of the last
            // spatial value (H*W features each); otherwise single features.
            let mut v = node.inputs[0];
            loop {
                let shape = &net.values[v].shape;
                if shape.len() >= 2 {
                    return (l.shape[1] / shape[0]).max(1);
                }
                match net.nodes.iter().find(|n| n.output == v) {
                    Some(n)
                        if matches!(
                            n.op,
                            Op::Reshape | Op::Identity | Op::Norm(_) | Op::Activation(_)
                        ) =>
                    {
                        v = n.inputs[0]
                    }
                    _ => return 1,
                }
            }
        }
    }
}

/// Algorithm 1 on the DAG: the number of output nodes each layer should use.
fn node_analysis(net: &Network, counts: &[usize], choice: MicaChoice, seed: u64) -> Vec<usize> {
    let n = net.layers.len();
    let layer_of = net.layer_of_node();
    let mut required: Vec<Option<usize>> = vec![None; n];
    let mut ideal = vec![0usize; n];
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&l| std::cmp::Reverse(net.layers[l].node));
    for li in order {
        let l = &net.layers[li];
        let (n_out, _) = l.fan();
        let e = counts[li];
        ideal[li] = match required[li] {
            Some(r) => r.min(n_out).min(e),
            None => n_out.min(e),
        };
        if e == 0 || ideal[li] == 0 {
            continue;
        }
        let b = block_size(net, li);
        let lo = e.div_ceil(ideal[li]);
        let hi = e / b;
        let r = if lo <= hi {
            match choice {
                MicaChoice::Min => lo,
                MicaChoice::Max => hi,
                MicaChoice::Rand => {
                    let mut rng = stream(stream_key(seed, "mica-nodes", &l.name));
                    rng.random_range(lo..=hi)
                }
            }
        } else {
            lo
        };
        let input = net.nodes[l.node].inputs[0];
        let c_in = net.values[input].shape[0];
        let r = r.clamp(1, c_in.max(1));
        let mut ps = Vec::new();
        producers(net, &layer_of, input, 1.0, &mut ps);
        for (p, share) in ps {
            let want = ((r as f64 * share).ceil() as usize).max(1);
            required[p] = Some(required[p].map_or(want, |x| x.max(want)));
        }
    }
    ideal
}

/// One layer as bipartite groups of input and output nodes.
struct Bipartite {
    /// Per group: blocks of live input nodes (local ids).
    groups: Vec<Vec<Vec<usize>>>,
    /// Input nodes per group (local id range).
    in_per_group: usize,
    out_per_group: usize,
}

impl Bipartite {
    fn of(net: &Network, li: usize, input: &crate::analysis::effective::Live) -> Self {
        let l = &net.layers[li];
        match &net.nodes[l.node].op {
            Op::Conv { conv, .. } => {
                let g = Geometry::new(
                    [input.plane.h, input.plane.w],
                    conv.kernel,
                    conv.window,
                    false,
                );
                let taps = conv.taps();
                let ipg = conv.in_per_group();
                let reads_all: Vec<bool> = (0..taps).map(|t| g.tap_reads_data(t)).collect();
                let groups = (0..conv.groups)
                    .map(|gi| {
                        (0..ipg)
                            .map(|ci| {
                                let s = &input.chans[gi * ipg + ci];
                                (0..taps)
                                    .filter(|&t| match s {
                                        PosSet::None => false,
                                        PosSet::All => reads_all[t],
                                        s => !g.forward(s, t).is_none(),
                                    })
                                    .map(|t| ci * taps + t)
                                    .collect::<Vec<_>>()
                            })
                            .filter(|b| !b.is_empty())
                            .collect()
                    })
                    .collect();
                Self {
                    groups,
                    in_per_group: ipg * taps,
                    out_per_group: conv.out_per_group(),
                }
            }
            _ => {
                let (n_out, n_in) = l.fan();
                let b = block_size(net, li);
                let mut blocks: Vec<Vec<usize>> = Vec::new();
                for i in (0..n_in).filter(|&i| !input.chans[i].is_none()) {
                    match blocks.last_mut() {
                        Some(last) if last[0] / b == i / b => last.push(i),
                        _ => blocks.push(vec![i]),
                    }
                }
                Self {
                    groups: vec![blocks],
                    in_per_group: n_in,
                    out_per_group: n_out,
                }
            }
        }
    }

    /// Edges per group: split `e` over groups with live inputs, in proportion
    /// to their live input nodes (largest remainder), capped by capacity.
    fn split(&self, e: usize) -> Vec<usize> {
        let live: Vec<usize> = self
            .groups
            .iter()
            .map(|g| g.iter().map(Vec::len).sum())
            .collect();
        let total: usize = live.iter().sum();
        let weights: Vec<f64> = if total == 0 {
            vec![1.0; self.groups.len()]
        } else {
            live.iter().map(|&x| x as f64).collect()
        };
        let cap = self.in_per_group * self.out_per_group;
        largest_remainder(&weights, e, cap)
    }

    fn place(&self, e: usize, ideal: usize, preferred: &[bool], rng: &mut ChaCha8Rng) -> BitSet {
        let ng = self.groups.len();
        let mut mask = BitSet::new(ng * self.out_per_group * self.in_per_group);
        let per_group = self.split(e);
        let active_groups = per_group.iter().filter(|&&x| x > 0).count().max(1);
        for (gi, &eg) in per_group.iter().enumerate() {
            if eg == 0 {
                continue;
            }
            let ideal_g = if ng == 1 {
                ideal
            } else {
                ideal.div_ceil(active_groups)
            }
            .clamp(1, self.out_per_group)
            .min(eg);
            let mut group = Group {
                blocks: &self.groups[gi],
                n_in: self.in_per_group,
                n_out: self.out_per_group,
                edges: BitSet::new(self.in_per_group * self.out_per_group),
            };
            let base_out = gi * self.out_per_group;
            let prefer: Vec<bool> = (0..self.out_per_group)
                .map(|o| preferred.get(base_out + o).copied().unwrap_or(false))
                .collect();
            group.construct(eg, ideal_g, &prefer, rng);
            // Group-local [o][i] is a contiguous slice of the layer's [o][i].
            let base = gi * self.out_per_group * self.in_per_group;
            for k in group.edges.ones() {
                mask.set(base + k, true);
            }
        }
        mask
    }
}

/// Split `total` over `weights` with largest remainders, each part <= `cap`.
fn largest_remainder(weights: &[f64], total: usize, cap: usize) -> Vec<usize> {
    let sum: f64 = weights.iter().sum();
    let mut parts: Vec<usize> = weights
        .iter()
        .map(|w| ((total as f64 * w / sum).floor() as usize).min(cap))
        .collect();
    let mut rest = total - parts.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = total as f64 * weights[a] / sum - parts[a] as f64;
        let fb = total as f64 * weights[b] / sum - parts[b] as f64;
        fb.partial_cmp(&fa).unwrap().then(a.cmp(&b))
    });
    while rest > 0 {
        let before = rest;
        for &i in &order {
            if rest > 0 && parts[i] < cap {
                parts[i] += 1;
                rest -= 1;
            }
        }
        if rest == before {
            break; // every part full: the caller's count exceeds the layer
        }
    }
    parts
}

/// The construction inside one group.
struct Group<'a> {
    blocks: &'a [Vec<usize>],
    n_in: usize,
    n_out: usize,
    /// Placed edges, `[o][i]` bits.
    edges: BitSet,
}

impl Group<'_> {
    fn connect(&mut self, o: usize, i: usize) -> bool {
        let k = o * self.n_in + i;
        if self.edges.get(k) {
            false
        } else {
            self.edges.set(k, true);
            true
        }
    }

    fn has(&self, o: usize, i: usize) -> bool {
        self.edges.get(o * self.n_in + i)
    }

    fn construct(&mut self, mut e: usize, ideal: usize, prefer: &[bool], rng: &mut ChaCha8Rng) {
        let v_in: Vec<usize> = self.blocks.iter().flatten().copied().collect();
        // The used output nodes: a random subset of size `ideal`, drawn first
        // from the preferred channels (see `residual_partners`).
        let (mut outs, mut rest): (Vec<usize>, Vec<usize>) =
            (0..self.n_out).partition(|&o| prefer.get(o).copied().unwrap_or(false));
        outs.shuffle(rng);
        rest.shuffle(rng);
        outs.extend(rest);
        outs.truncate(ideal);
        let mut next_out = 0;
        let pick_out = |rng: &mut ChaCha8Rng, next_out: &mut usize| {
            if *next_out < outs.len() {
                *next_out += 1;
                outs[*next_out - 1]
            } else {
                outs[rng.random_range(0..outs.len())]
            }
        };
        // Algorithm 2: one input node of every block to a fresh output node.
        let mut used_in: HashSet<usize> = HashSet::new();
        if !v_in.is_empty() {
            let mut order: Vec<usize> = (0..self.blocks.len()).collect();
            order.shuffle(rng);
            for b in order {
                if e == 0 {
                    break;
                }
                let block = &self.blocks[b];
                let i = block[rng.random_range(0..block.len())];
                let o = pick_out(rng, &mut next_out);
                if self.connect(o, i) {
                    used_in.insert(i);
                    e -= 1;
                }
            }
            // Algorithm 3: connect the nodes still unconnected.
            let mut unused: Vec<usize> = v_in
                .iter()
                .copied()
                .filter(|i| !used_in.contains(i))
                .collect();
            unused.shuffle(rng);
            let mut tries = 0usize;
            while e > 0
                && (!unused.is_empty() || next_out < outs.len())
                && tries < 64 * (v_in.len() + outs.len())
            {
                tries += 1;
                let i = match unused.last() {
                    Some(&i) => i,
                    None => v_in[rng.random_range(0..v_in.len())],
                };
                let o = pick_out(rng, &mut next_out);
                if self.connect(o, i) {
                    if unused.last() == Some(&i) {
                        unused.pop();
                    }
                    e -= 1;
                }
            }
        }
        // Algorithm 4: the rest among used nodes, then (only if they are full) anywhere.
        let used_outs = outs[..next_out].to_vec();
        e = self.fill(e, &v_in, &used_outs, rng);
        // Overflow in tiers, as the official code does: live inputs to any
        // output first (those edges can still be functional), then anywhere.
        let all_out: Vec<usize> = (0..self.n_out).collect();
        if e > 0 {
            e = self.fill(e, &v_in, &all_out, rng);
        }
        if e > 0 {
            let all_in: Vec<usize> = (0..self.n_in).collect();
            self.fill(e, &all_in, &all_out, rng);
        }
    }

    /// Place up to `e` new edges uniformly among `ins x outs`; returns how many could not be placed.
    fn fill(&mut self, e: usize, ins: &[usize], outs: &[usize], rng: &mut ChaCha8Rng) -> usize {
        if e == 0 || ins.is_empty() || outs.is_empty() {
            return e;
        }
        let universe = ins.len() * outs.len();
        let taken = outs
            .iter()
            .map(|&o| ins.iter().filter(|&&i| self.has(o, i)).count())
            .sum::<usize>();
        let free = universe - taken;
        if e * 3 <= free {
            // Sparse: rejection sampling is fast and uniform over free pairs.
            let mut left = e;
            while left > 0 {
                let o = outs[rng.random_range(0..outs.len())];
                let i = ins[rng.random_range(0..ins.len())];
                if self.connect(o, i) {
                    left -= 1;
                }
            }
            return 0;
        }
        // Dense: pick the free pairs to leave out (fewer than two thirds of
        // them, so rejection sampling stays fast), then take all the others.
        // One bit per pair: no list of pairs, whatever the layer's size.
        let k = e.min(free);
        let mut skip = free - k;
        let mut excluded = BitSet::new(universe);
        while skip > 0 {
            let (oi, ii) = (
                rng.random_range(0..outs.len()),
                rng.random_range(0..ins.len()),
            );
            let slot = oi * ins.len() + ii;
            if !excluded.get(slot) && !self.has(outs[oi], ins[ii]) {
                excluded.set(slot, true);
                skip -= 1;
            }
        }
        for (oi, &o) in outs.iter().enumerate() {
            for (ii, &i) in ins.iter().enumerate() {
                if !excluded.get(oi * ins.len() + ii) && !self.has(o, i) {
                    self.connect(o, i);
                }
            }
        }
        e - k
    }
}
