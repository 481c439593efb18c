//! MiCA's node analysis (Algorithm 1) on any DAG: which output nodes each
//! layer uses, how its edges split over its groups, and which input blocks
//! it must connect, decided from the output back to the input.
//!
//! The paper works with counts on a chain: the last layer uses
//! `min(n_out, e)` outputs, and a layer with `e` edges on `n` used outputs
//! asks its producer for a count in `[ceil(e/n), floor(e/b)]` (Eq. 4). Here
//! the count becomes a *set*: a layer picks that many input blocks, and the
//! channels those blocks read (found by [`super::channels`], through
//! shuffles, gathers, concats and joins) are the outputs its producers must
//! use. Whatever connects the graph, every used output is then read by a
//! block some consumer has promised to connect, which is what keeps every
//! edge functional:
//! - a producer read by several consumers (a residual stream) uses the union
//!   of their demands, and a consumer prefers blocks already demanded by the
//!   others, so the union stays near the largest demand (the paper's
//!   "larger requirement of the two branches");
//! - a join (Add, a gate) passes one demand to both operands;
//! - a layer whose demanded outputs cannot hold its edges (a depthwise conv
//!   holds at most `kh * kw` edges per channel) takes more outputs, each one
//!   a block that a consumer with spare edges adopts;
//! - grouped convs split their edges over the groups that have used outputs,
//!   in proportion to what each group can hold, and run Eq. 4 per group;
//! - a producer with `e` edges makes at most `min(e, n_out)` outputs live,
//!   so consumers together ask it for no more, and a grouped consumer puts
//!   that supply into the groups with the most used outputs;
//! - a layer no consumer asked anything of (a concat's reader picked other
//!   layers' channels) takes outputs that consumers with spare edges adopt.
//!
//! ```
//! use maskforge::{zoo, methods::quota};
//! use maskforge::methods::random::mica::{channels::Channels, bipartite::View, nodes::plan, MicaChoice};
//! let net = zoo::build("lenet300", 0).unwrap();
//! let ch = Channels::of(&net);
//! let views: Vec<View> = (0..net.layers.len()).map(|l| View::of(&net, l, &ch)).collect();
//! let counts = vec![2000, 500, 50];
//! let p = plan(&net, &ch, &views, &counts, MicaChoice::Min, 0);
//! // The last layer uses min(10, 50) outputs and asks for ceil(50/10) = 5 inputs.
//! assert_eq!(p[2].outs.len(), 10);
//! assert_eq!(p[1].outs.len(), 5);
//! ```

use std::collections::BTreeSet;

use foldhash::{HashMap, HashMapExt};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::graph::Network;
use crate::rng::{stream, stream_key};

use super::bipartite::View;
use super::channels::{label, source, Channels, Label, Source};
use super::MicaChoice;

/// What node analysis decided for one layer.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Output nodes (layer-wide ids) the layer uses, ascending.
    pub outs: Vec<usize>,
    /// Edges of each group.
    pub edges: Vec<usize>,
    /// Per block: a producer counts on this block being connected.
    pub must: Vec<bool>,
}

/// Node analysis of every layer for the quota `counts`.
pub fn plan(
    net: &Network,
    ch: &Channels,
    views: &[View],
    counts: &[usize],
    choice: MicaChoice,
    seed: u64,
) -> Vec<Plan> {
    plan_with(net, ch, views, counts, choice, seed, None)
}

/// Per layer and group: whether some input of the group was live in an
/// earlier placement. A second analysis steers demand towards groups that
/// can be fed: which groups of a grouped conv its few-edged producers reach
/// is only known once they are placed.
pub type Fed = Vec<Vec<bool>>;

/// [`plan`], preferring outputs in groups `fed` says can be fed.
pub fn plan_with(
    net: &Network,
    ch: &Channels,
    views: &[View],
    counts: &[usize],
    choice: MicaChoice,
    seed: u64,
    fed: Option<&Fed>,
) -> Vec<Plan> {
    let n = net.layers.len();
    let mut s = State {
        fed: fed.cloned(),
        opg: views.iter().map(|v| v.opg).collect(),
        demand: vec![BTreeSet::new(); n],
        mixed: vec![0; n],
        absorbers: HashMap::new(),
        slack: views.iter().map(|v| vec![0; v.groups]).collect(),
        must: views.iter().map(|v| vec![false; v.blocks.len()]).collect(),
        done: vec![false; n],
        supply: views
            .iter()
            .zip(counts)
            .map(|(v, &e)| e.min(v.groups * v.opg))
            .collect(),
    };
    let mut plans: Vec<Plan> = views
        .iter()
        .map(|v| Plan {
            edges: vec![0; v.groups],
            ..Plan::default()
        })
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&l| std::cmp::Reverse(net.layers[l].node));
    for l in order {
        s.done[l] = true;
        if counts[l] == 0 {
            continue;
        }
        let mut rng = stream(stream_key(seed, "mica-nodes", &net.layers[l].name));
        let (outs, edges, fed) = outputs(l, views, ch, counts[l], &mut s, &mut rng);
        demand_inputs(
            l, &views[l], ch, &outs, &edges, &fed, choice, &mut s, &mut rng,
        );
        plans[l].outs = outs;
        plans[l].edges = edges;
    }
    for (p, m) in plans.iter_mut().zip(s.must) {
        p.must = m;
    }
    plans
}

struct State {
    /// Output channels each layer's consumers count on.
    demand: Vec<BTreeSet<usize>>,
    /// Read through a channel-mixing op: any output is consumed; the value
    /// is the count asked for.
    mixed: Vec<usize>,
    /// Blocks a consumer left unpromised, by the channel they read: where a
    /// producer that needs more outputs can send them.
    absorbers: HashMap<Label, Vec<(usize, usize)>>,
    /// Per layer and group: edges beyond one per promised block.
    slack: Vec<Vec<usize>>,
    /// Per layer and block: promised.
    must: Vec<Vec<bool>>,
    /// Layers already analysed (every consumer precedes its producers).
    done: Vec<bool>,
    /// Outputs each layer can make live at most: `min(e, n_out)`.
    supply: Vec<usize>,
    /// See [`Fed`].
    fed: Option<Fed>,
    /// Output nodes per group, per layer.
    opg: Vec<usize>,
}

impl State {
    /// Promise block `b` of layer `l`: its sources become demands.
    fn promise(&mut self, l: usize, b: usize, ch: &Channels, view: &View, asked: usize) {
        self.must[l][b] = true;
        for &lab in ch.labels(view.blocks[b].set) {
            match source(lab) {
                Source::Channel { layer, channel } if !self.done[layer] => {
                    self.demand[layer].insert(channel);
                }
                Source::AllOf { layer } if !self.done[layer] => {
                    self.mixed[layer] = self.mixed[layer].max(asked);
                }
                _ => {}
            }
        }
    }

    /// Whether output `c` of layer `p` lies in a group known not to be
    /// fed (see [`Fed`]).
    fn unfed(&self, p: usize, c: usize) -> bool {
        self.fed.as_ref().is_some_and(|f| !f[p][c / self.opg[p]])
    }

    /// Sources of a set in groups known not to be fed.
    fn unfed_in(&self, ch: &Channels, set: u32) -> usize {
        ch.labels(set)
            .iter()
            .filter(|&&lab| match source(lab) {
                Source::Channel { layer, channel } => self.unfed(layer, channel),
                _ => false,
            })
            .count()
    }

    /// What asking for block `set`'s data costs: nothing when it is
    /// already asked for (or comes from the graph input, or through a
    /// mixing op), one output of a producer with outputs to spare, or it
    /// cannot be had (every producer's supply is taken, or its group is
    /// known not to be fed).
    fn cost(&self, ch: &Channels, set: u32, spent: &HashMap<usize, usize>) -> Cost {
        let mut from = None;
        for &lab in ch.labels(set) {
            match source(lab) {
                Source::Input => return Cost::Free,
                Source::AllOf { layer } if self.supply[layer] > 0 => return Cost::Free,
                Source::Channel { layer, channel }
                    if self.supply[layer] > 0 && !self.unfed(layer, channel) =>
                {
                    if self.demand[layer].contains(&channel) {
                        return Cost::Free;
                    }
                    let left = self.supply[layer].saturating_sub(self.demand[layer].len());
                    if from.is_none()
                        && !self.done[layer]
                        && left > spent.get(&layer).copied().unwrap_or(0)
                    {
                        from = Some(layer);
                    }
                }
                _ => {}
            }
        }
        from.map_or(Cost::Never, Cost::From)
    }
}

/// What a block's data costs its producers (see [`State::cost`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cost {
    Free,
    From(usize),
    Never,
}

/// The used outputs of layer `l` and its edges per group.
fn outputs(
    l: usize,
    views: &[View],
    ch: &Channels,
    e: usize,
    s: &mut State,
    rng: &mut ChaCha8Rng,
) -> (Vec<usize>, Vec<usize>, Vec<Vec<usize>>) {
    let v = &views[l];
    let n_out = v.groups * v.opg;
    let consumed = |c: usize, s: &State| s.mixed[l] > 0 || ch.is_free(l, c);
    let demanded: Vec<usize> = s.demand[l].iter().copied().collect();
    let free = (0..n_out).filter(|&c| consumed(c, s)).count();
    // Algorithm 1: as many outputs as the consumers asked for; the last
    // layer (nothing asks, the graph output consumes) min(n_out, e).
    // No consumer asked for any output (a concat's reader picked channels
    // of other layers): take none here; `widen` below finds outputs that
    // consumers with spare edges adopt.
    let target = if !demanded.is_empty() {
        demanded.len()
    } else if s.mixed[l] > 0 {
        s.mixed[l]
    } else {
        free
    };
    let target = target.min(n_out).min(e);
    let mut outs = demanded;
    outs.shuffle(rng);
    outs.sort_by_key(|&c| s.unfed(l, c));
    outs.truncate(target);
    if outs.len() < target {
        let mut extra: Vec<usize> = (0..n_out)
            .filter(|&c| consumed(c, s) && !s.demand[l].contains(&c))
            .collect();
        extra.shuffle(rng);
        extra.truncate(target - outs.len());
        outs.extend(extra);
        if outs.len() < target {
            let mut any: Vec<usize> = (0..n_out).filter(|c| !outs.contains(c)).collect();
            any.shuffle(rng);
            outs.extend(any.into_iter().take(target - outs.len()));
        }
    }
    // The input blocks each group can have, within the producers' supply;
    // an output of a group with none stays dead: drop it.
    let mut used_per_group = vec![0usize; v.groups];
    for &c in &outs {
        used_per_group[c / v.opg] += 1;
    }
    let alloc = allocate(v, ch, &used_per_group, e, s, rng);
    let fed: Vec<usize> = alloc
        .iter()
        .map(|bs| bs.iter().map(|&b| v.potential(&v.blocks[b], ch)).sum())
        .collect();
    outs.retain(|&c| fed[c / v.opg] > 0);
    let mut used = vec![false; n_out];
    for &c in &outs {
        used[c] = true;
    }
    let cap: usize = outs.iter().map(|&c| fed[c / v.opg]).sum();
    if cap < e {
        widen(l, views, ch, e - cap, &fed, &mut used, s, rng);
    }
    let outs: Vec<usize> = (0..n_out).filter(|&c| used[c]).collect();
    let per_group: Vec<usize> = (0..v.groups)
        .map(|g| outs.iter().filter(|&&c| c / v.opg == g).count() * fed[g])
        .collect();
    let edges = split(e, &per_group, v.opg * v.positions());
    (outs, edges, alloc)
}

/// The input blocks each group of `v` may promise, within the producers'
/// supply: blocks that cost nothing always; the others shared out one per
/// group in turn, groups with more used outputs first (so a producer with
/// few outputs feeds the groups that need them), then moved from groups with
/// few used outputs to groups with more while that is what it takes for the
/// used outputs to hold `e` edges (capacity = blocks x block size x used
/// outputs, per group).
fn allocate(
    v: &View,
    ch: &Channels,
    used: &[usize],
    e: usize,
    s: &State,
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<usize>> {
    let spent_none = HashMap::new();
    let mut alloc: Vec<Vec<usize>> = vec![Vec::new(); v.groups];
    let mut costly: Vec<Vec<(usize, usize)>> = vec![Vec::new(); v.groups];
    for g in 0..v.groups {
        let mut blocks: Vec<usize> = v.group_blocks[g]
            .clone()
            .filter(|&b| v.potential(&v.blocks[b], ch) > 0)
            .collect();
        blocks.shuffle(rng);
        for b in blocks {
            match s.cost(ch, v.blocks[b].set, &spent_none) {
                Cost::Free => alloc[g].push(b),
                Cost::From(p) => costly[g].push((b, p)),
                Cost::Never => {}
            }
        }
    }
    let mut order: Vec<usize> = (0..v.groups).collect();
    order.shuffle(rng);
    order.sort_by_key(|&g| std::cmp::Reverse(used[g]));
    let left = |p: usize, spent: &HashMap<usize, usize>| {
        s.supply[p].saturating_sub(s.demand[p].len()) > spent.get(&p).copied().unwrap_or(0)
    };
    let mut spent: HashMap<usize, usize> = HashMap::new();
    let mut next = vec![0usize; v.groups];
    loop {
        let mut gave = false;
        for &g in &order {
            while next[g] < costly[g].len() {
                let (b, p) = costly[g][next[g]];
                next[g] += 1;
                if left(p, &spent) {
                    *spent.entry(p).or_default() += 1;
                    alloc[g].push(b);
                    gave = true;
                    break;
                }
            }
        }
        if !gave {
            break;
        }
    }
    let block_size = |g: usize| -> usize {
        let n = v.group_blocks[g].len().max(1);
        (v.group_blocks[g]
            .clone()
            .map(|b| v.blocks[b].nodes.len())
            .sum::<usize>()
            / n)
            .max(1)
            * v.data_taps().len()
    };
    let capacity = |alloc: &[Vec<usize>]| -> usize {
        (0..v.groups)
            .map(|g| alloc[g].len() * block_size(g) * used[g])
            .sum()
    };
    // Move supply towards the groups with more used outputs while short.
    while capacity(&alloc) < e {
        let mut moved = false;
        'outer: for &hi in &order {
            for &lo in order.iter().rev() {
                if used[lo] * block_size(lo) >= used[hi] * block_size(hi) {
                    continue;
                }
                // A costly block of `lo` whose producer also feeds an
                // unallocated block of `hi`.
                let taken: Vec<usize> = costly[lo][..next[lo]]
                    .iter()
                    .filter(|(b, _)| alloc[lo].contains(b))
                    .map(|&(b, _)| b)
                    .collect();
                for b in taken {
                    let p = costly[lo].iter().find(|x| x.0 == b).unwrap().1;
                    if let Some(&(nb, _)) = costly[hi]
                        .iter()
                        .find(|&&(nb, np)| np == p && !alloc[hi].contains(&nb))
                    {
                        alloc[lo].retain(|&x| x != b);
                        alloc[hi].push(nb);
                        moved = true;
                        break 'outer;
                    }
                }
            }
        }
        if !moved {
            break;
        }
    }
    alloc
}

/// Take more outputs until they hold `short` more edges: first ones
/// consumed anyway (graph outputs, mixing ops), then ones that an
/// unpromised consumer block with spare edges adopts, then any (edges there
/// may be inactive; the report says so if they stay so).
#[allow(clippy::too_many_arguments)]
fn widen(
    l: usize,
    views: &[View],
    ch: &Channels,
    mut short: usize,
    fed: &[usize],
    used: &mut [bool],
    s: &mut State,
    rng: &mut ChaCha8Rng,
) {
    let opg = views[l].opg;
    let open: Vec<usize> = (0..used.len())
        .filter(|&c| !used[c] && fed[c / opg] > 0)
        .collect();
    let (mut consumed, rest): (Vec<usize>, Vec<usize>) = open
        .into_iter()
        .partition(|&c| s.mixed[l] > 0 || ch.is_free(l, c));
    let (mut adoptable, mut other): (Vec<usize>, Vec<usize>) = rest
        .into_iter()
        .partition(|&c| s.absorbers.contains_key(&label(l, c)));
    consumed.shuffle(rng);
    adoptable.shuffle(rng);
    other.shuffle(rng);
    let take = |c: usize, used: &mut [bool], short: &mut usize| {
        used[c] = true;
        *short = short.saturating_sub(fed[c / opg]);
    };
    for c in consumed {
        if short == 0 {
            return;
        }
        take(c, used, &mut short);
    }
    let mut unadopted = Vec::new();
    for c in adoptable {
        if short == 0 {
            return;
        }
        let found = s.absorbers[&label(l, c)]
            .iter()
            .copied()
            .find(|&(cl, b)| !s.must[cl][b] && s.slack[cl][views[cl].blocks[b].group] > 0);
        match found {
            Some((cl, b)) => {
                // The block is fed by `l` itself: no other producer needs
                // to supply it.
                s.slack[cl][views[cl].blocks[b].group] -= 1;
                s.must[cl][b] = true;
                take(c, used, &mut short);
            }
            None => unadopted.push(c),
        }
    }
    other.extend(unadopted);
    for c in other {
        if short == 0 {
            return;
        }
        take(c, used, &mut short);
    }
}

/// Eq. 4 per group: how many input blocks layer `l` promises to connect,
/// and which (among those `allocate` gave the group: blocks already asked
/// for by other consumers first).
#[allow(clippy::too_many_arguments)]
fn demand_inputs(
    l: usize,
    v: &View,
    ch: &Channels,
    outs: &[usize],
    edges: &[usize],
    alloc: &[Vec<usize>],
    choice: MicaChoice,
    s: &mut State,
    rng: &mut ChaCha8Rng,
) {
    for g in 0..v.groups {
        let used = outs.iter().filter(|&&c| c / v.opg == g).count();
        let e = edges[g];
        if e == 0 || used == 0 || alloc[g].is_empty() {
            continue;
        }
        let positions: usize = alloc[g]
            .iter()
            .map(|&b| v.potential(&v.blocks[b], ch))
            .sum();
        let b_size = (positions / alloc[g].len()).max(1);
        let (lo, hi) = (e.div_ceil(used), e / b_size);
        let r = if lo <= hi {
            match choice {
                MicaChoice::Min => lo,
                MicaChoice::Max => hi,
                MicaChoice::Rand => rng.random_range(lo..=hi),
            }
        } else {
            lo
        };
        let r = r.clamp(1, alloc[g].len().min(e));
        // Blocks whose channels other consumers already demand first: a
        // shared producer's outputs then stay near the largest demand.
        // Blocks that can be fed first.
        let mut ranked: Vec<(usize, usize, u64, usize)> = alloc[g]
            .iter()
            .map(|&b| {
                let set = v.blocks[b].set;
                (
                    s.unfed_in(ch, set),
                    uncovered(ch, set, s),
                    rng.random::<u64>(),
                    b,
                )
            })
            .collect();
        ranked.sort_unstable();
        for &(_, _, _, b) in &ranked[..r] {
            s.promise(l, b, ch, v, r);
        }
        // Every other block with data may adopt a producer's extra output.
        let promised: Vec<usize> = ranked[..r].iter().map(|x| x.3).collect();
        for b in v.group_blocks[g].clone().filter(|b| !promised.contains(b)) {
            for &lab in ch.labels(v.blocks[b].set) {
                if let Source::Channel { .. } = source(lab) {
                    s.absorbers.entry(lab).or_default().push((l, b));
                }
            }
        }
        s.slack[l][g] = e - r;
    }
}

/// Channels in a set that no consumer has demanded yet.
fn uncovered(ch: &Channels, set: u32, s: &State) -> usize {
    ch.labels(set)
        .iter()
        .filter(|&&lab| match source(lab) {
            Source::Channel { layer, channel } => {
                s.mixed[layer] == 0 && !s.demand[layer].contains(&channel)
            }
            _ => false,
        })
        .count()
}

/// Split `e` over groups in proportion to what each can hold (`weights`),
/// each at most its weight, then (only if they are all full) up to `hard`.
pub(crate) fn split(e: usize, weights: &[usize], hard: usize) -> Vec<usize> {
    let total: usize = weights.iter().sum();
    let w: Vec<f64> = if total == 0 {
        vec![1.0; weights.len()]
    } else {
        weights.iter().map(|&x| x as f64).collect()
    };
    let soft: Vec<usize> = if total == 0 {
        vec![hard; weights.len()]
    } else {
        weights.iter().map(|&x| x.min(hard)).collect()
    };
    let mut parts = largest_remainder(&w, e.min(soft.iter().sum()), &soft);
    let mut rest = e - parts.iter().sum::<usize>();
    // Past what the used nodes hold: fill the groups to their full size.
    for (p, _) in parts.iter_mut().zip(weights).filter(|(_, &x)| x > 0) {
        let add = (hard - *p).min(rest);
        *p += add;
        rest -= add;
    }
    for p in parts.iter_mut() {
        let add = (hard - *p).min(rest);
        *p += add;
        rest -= add;
    }
    parts
}

/// Split `total` over `weights` with largest remainders, part `i` at most `cap[i]`.
fn largest_remainder(weights: &[f64], total: usize, cap: &[usize]) -> Vec<usize> {
    let sum: f64 = weights.iter().sum();
    let ideal = |i: usize| total as f64 * weights[i] / sum;
    let mut parts: Vec<usize> = (0..weights.len())
        .map(|i| (ideal(i).floor() as usize).min(cap[i]))
        .collect();
    let mut rest = total.saturating_sub(parts.iter().sum::<usize>());
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = ideal(a) - parts[a] as f64;
        let fb = ideal(b) - parts[b] as f64;
        fb.partial_cmp(&fa).unwrap().then(a.cmp(&b))
    });
    while rest > 0 {
        let before = rest;
        for &i in &order {
            if rest > 0 && parts[i] < cap[i] {
                parts[i] += 1;
                rest -= 1;
            }
        }
        if rest == before {
            break;
        }
    }
    parts
}
