//! MiCA's edge placement in one layer (Algorithms 2-4), input to output,
//! once the forward liveness of the layer's input is known.
//!
//! Per group: every live block sends one edge to a fresh used output
//! (Algorithm 2; the blocks a producer counts on first, so they are never the
//! ones left out when edges are few), then the still unconnected input
//! positions and used outputs are connected (Algorithm 3), then the
//! remaining edges go uniformly at random among pairs of live input
//! positions and used outputs (Algorithm 4). Every layer ends with exactly
//! its quota: should those pairs be too few, the rest go to live inputs and
//! any output, then to any pair of the group (the official code's tiers;
//! such edges may be inactive, and [`super::repair`] moves them if it can).
//! `V_in` of a conv holds only the `(channel, tap)` pairs that read live
//! data: a tap that only ever sees zero padding is excluded, as in the
//! official code's `get_degree_weight`.
//!
//! ```
//! use maskforge::{zoo, analysis::effective::Live};
//! use maskforge::methods::random::mica::{channels::Channels, bipartite::View, nodes::Plan, place::place};
//! let net = zoo::build("lenet300", 0).unwrap();
//! let ch = Channels::of(&net);
//! let v = View::of(&net, 2, &ch); // 10 x 100
//! let plan = Plan { outs: vec![0, 1, 2], edges: vec![12], must: vec![false; 100] };
//! let mut input = Live::none(&[100]);
//! for i in 0..4 { input.chans[i] = maskforge::analysis::liveness::PosSet::All; }
//! let mut rng = maskforge::rng::stream([0; 32]);
//! let m = place(&v, &plan, &input, 12, &mut rng);
//! assert_eq!(m.count_ones(), 12); // 3 used outputs x 4 live inputs, all taken
//! assert!(m.ones().all(|k| k / 100 < 3 && k % 100 < 4));
//! ```

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::analysis::effective::Live;
use crate::bitset::BitSet;

use super::bipartite::View;
use super::nodes::{split, Plan};

/// Exactly `e` edges for the layer of `v`, following `plan`.
pub fn place(v: &View, plan: &Plan, input: &Live, e: usize, rng: &mut ChaCha8Rng) -> BitSet {
    let live = v.live_positions(input);
    let n_pos = v.positions();
    let mut mask = BitSet::new(v.groups * v.opg * n_pos);
    let outs_of = |g: usize| -> Vec<usize> {
        plan.outs
            .iter()
            .filter(|&&c| c / v.opg == g)
            .map(|&c| c - g * v.opg)
            .collect()
    };
    let live_in: Vec<usize> = v
        .group_blocks
        .iter()
        .map(|r| r.clone().map(|b| live[b].len()).sum())
        .collect();
    // The planned split, unless the live inputs turned out fewer than node
    // analysis expected: then what each group can really hold.
    let hold: Vec<usize> = (0..v.groups)
        .map(|g| outs_of(g).len() * live_in[g])
        .collect();
    let fits = plan.edges.iter().sum::<usize>() == e
        && plan.edges.iter().zip(&hold).all(|(&x, &h)| x <= h);
    let edges = if fits {
        plan.edges.clone()
    } else {
        split(e, &hold, v.opg * n_pos)
    };
    for (g, &eg) in edges.iter().enumerate() {
        if eg == 0 {
            continue;
        }
        let mut outs = outs_of(g);
        if outs.is_empty() {
            // No used output in a group that must take edges: any output
            // (the edges are likely inactive; repair and the report follow).
            outs = (0..v.opg).collect();
            outs.shuffle(rng);
            outs.truncate(eg.min(v.opg));
        }
        outs.shuffle(rng);
        // Promised blocks first, each tier in random order.
        let (mut first, mut then): (Vec<usize>, Vec<usize>) = v.group_blocks[g]
            .clone()
            .filter(|&b| !live[b].is_empty())
            .partition(|&b| plan.must.get(b).copied().unwrap_or(false));
        first.shuffle(rng);
        then.shuffle(rng);
        let blocks: Vec<&[usize]> = first.iter().chain(&then).map(|&b| &live[b][..]).collect();
        let mut group = Group {
            n_in: n_pos,
            n_out: v.opg,
            edges: BitSet::new(n_pos * v.opg),
        };
        group.construct(eg, &blocks, &outs, rng);
        for k in group.edges.ones() {
            mask.set(v.weight_index(g, k / n_pos, k % n_pos), true);
        }
    }
    mask
}

/// The construction inside one group.
struct Group {
    n_in: usize,
    n_out: usize,
    /// Placed edges, `[o][i]` bits.
    edges: BitSet,
}

impl Group {
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

    /// `blocks`: live input positions per block, in visiting order; `outs`:
    /// the used outputs, in the order fresh ones are taken.
    fn construct(
        &mut self,
        mut e: usize,
        blocks: &[&[usize]],
        outs: &[usize],
        rng: &mut ChaCha8Rng,
    ) {
        let v_in: Vec<usize> = blocks.iter().flat_map(|b| b.iter().copied()).collect();
        let mut next_out = 0;
        let pick_out = |rng: &mut ChaCha8Rng, next_out: &mut usize| {
            if *next_out < outs.len() {
                *next_out += 1;
                outs[*next_out - 1]
            } else {
                outs[rng.random_range(0..outs.len())]
            }
        };
        if !v_in.is_empty() {
            // Algorithm 2: one input position of every block to a fresh output.
            let mut used_in = BitSet::new(self.n_in);
            for block in blocks {
                if e == 0 {
                    break;
                }
                let i = block[rng.random_range(0..block.len())];
                let o = pick_out(rng, &mut next_out);
                if self.connect(o, i) {
                    used_in.set(i, true);
                    e -= 1;
                }
            }
            // Algorithm 3: connect the positions and outputs still unconnected.
            let mut unused: Vec<usize> =
                v_in.iter().copied().filter(|&i| !used_in.get(i)).collect();
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
        // Algorithm 4: the rest among used nodes, then (only if they are full) wider.
        e = self.fill(e, &v_in, &outs[..next_out], rng);
        let all_out: Vec<usize> = (0..self.n_out).collect();
        if e > 0 {
            e = self.fill(e, &v_in, &all_out, rng);
        }
        if e > 0 {
            let all_in: Vec<usize> = (0..self.n_in).collect();
            self.fill(e, &all_in, &all_out, rng);
        }
    }

    /// Place up to `e` new edges uniformly among `ins x outs`; returns how
    /// many could not be placed.
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
