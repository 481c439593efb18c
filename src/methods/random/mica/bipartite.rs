//! One prunable layer as MiCA's bipartite graph: groups of input nodes and
//! output nodes, the input nodes gathered into *blocks* (Eq. 1 of the
//! paper: the input nodes fed by one output node of the previous layer).
//!
//! An input node is a `(channel, tap)` pair of a conv or a feature of a dense
//! layer; a block is one input channel of a conv (its `kh * kw` taps), or a
//! run of consecutive dense features that read the same single channel of
//! one layer (a Flatten's `H * W` features of a channel). Which channel that
//! is comes from [`super::channels`], so blocks follow channel identity
//! through shuffles and gathers. A grouped conv (depthwise included) is one
//! bipartite graph per group.
//!
//! ```
//! use maskforge::zoo;
//! use maskforge::methods::random::mica::{bipartite::View, channels::Channels};
//! let net = zoo::build("lenet5", 0).unwrap();
//! let ch = Channels::of(&net);
//! // LeNet-5's first dense layer reads 16 flattened 5x5 maps: 16 blocks of 25.
//! let fc = net.layers.iter().position(|l| l.shape.len() == 2).unwrap();
//! let v = View::of(&net, fc, &ch);
//! assert_eq!(v.blocks.len(), 16);
//! assert_eq!(v.blocks[3].nodes, 75..100);
//! ```

use std::ops::Range;

use crate::analysis::effective::Live;
use crate::analysis::liveness::{Geometry, PosSet};
use crate::graph::op::Op;
use crate::graph::Network;

use super::channels::{source, Channels, Source};

/// Input nodes that read one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub group: usize,
    /// Input channels (conv) or features (dense), as layer-wide ids.
    pub nodes: Range<usize>,
    /// The interned source set of the block's nodes.
    pub(crate) set: u32,
}

/// A layer's bipartite structure.
pub struct View {
    pub groups: usize,
    /// Input channels (conv) or features (dense) per group.
    pub ipg: usize,
    /// Output nodes per group.
    pub opg: usize,
    /// Kernel taps per input channel (1 for a dense layer).
    pub taps: usize,
    /// Blocks in group order.
    pub blocks: Vec<Block>,
    /// Block index range of each group.
    pub group_blocks: Vec<Range<usize>>,
    /// The conv's sliding window on its input (taps that only read padding
    /// are never input nodes: they see no data).
    geometry: Option<Geometry>,
}

impl View {
    pub fn of(net: &Network, li: usize, ch: &Channels) -> Self {
        let l = &net.layers[li];
        let node = &net.nodes[l.node];
        let sets = ch.input_sets(li);
        match &node.op {
            Op::Conv { conv, .. } => {
                let s = &net.values[node.inputs[0]].shape;
                let ipg = conv.in_per_group();
                let blocks: Vec<Block> = (0..conv.in_channels)
                    .map(|c| Block {
                        group: c / ipg,
                        nodes: c..c + 1,
                        set: sets[c],
                    })
                    .collect();
                Self {
                    groups: conv.groups,
                    ipg,
                    opg: conv.out_per_group(),
                    taps: conv.taps(),
                    group_blocks: (0..conv.groups).map(|g| g * ipg..(g + 1) * ipg).collect(),
                    blocks,
                    geometry: Some(Geometry::new([s[1], s[2]], conv.kernel, conv.window, false)),
                }
            }
            _ => {
                let (n_out, n_in) = l.fan();
                let mut blocks: Vec<Block> = Vec::new();
                for f in 0..n_in {
                    let single = single_channel(ch, sets[f]);
                    match blocks.last_mut() {
                        Some(b) if single.is_some() && sets[b.nodes.start] == sets[f] => {
                            b.nodes.end = f + 1
                        }
                        _ => blocks.push(Block {
                            group: 0,
                            nodes: f..f + 1,
                            set: sets[f],
                        }),
                    }
                }
                // One group: every block.
                let all = 0..blocks.len();
                Self {
                    groups: 1,
                    ipg: n_in,
                    opg: n_out,
                    taps: 1,
                    group_blocks: vec![all],
                    blocks,
                    geometry: None,
                }
            }
        }
    }

    /// Input positions per group: every `(channel, tap)` of a conv group,
    /// every feature of a dense layer. A weight is `[out][position]` within
    /// its group.
    pub fn positions(&self) -> usize {
        self.ipg * self.taps
    }

    /// Taps that read data for some output position (all, for dense).
    pub fn data_taps(&self) -> Vec<usize> {
        match &self.geometry {
            Some(g) => (0..self.taps).filter(|&t| g.tap_reads_data(t)).collect(),
            None => vec![0],
        }
    }

    /// Input positions a block could ever feed: none when it reads only
    /// constants, else its nodes times the data-reading taps.
    pub fn potential(&self, b: &Block, ch: &Channels) -> usize {
        if ch.labels(b.set).is_empty() {
            0
        } else {
            b.nodes.len() * self.data_taps().len()
        }
    }

    /// The layer-wide weight index of group `g`, local output `o`, local
    /// input position `p`.
    pub fn weight_index(&self, g: usize, o: usize, p: usize) -> usize {
        (g * self.opg + o) * self.positions() + p
    }

    /// The sliding window of a conv.
    pub(crate) fn geometry(&self) -> Option<&Geometry> {
        self.geometry.as_ref()
    }

    /// Forward-live input positions of each block (group-local position ids
    /// `node * taps + tap`), from the liveness of the layer's input value.
    pub fn live_positions(&self, input: &Live) -> Vec<Vec<usize>> {
        match &self.geometry {
            Some(g) => {
                let reads: Vec<bool> = (0..self.taps).map(|t| g.tap_reads_data(t)).collect();
                self.blocks
                    .iter()
                    .map(|b| {
                        let c = b.nodes.start;
                        let local = c - b.group * self.ipg;
                        let s = &input.chans[c];
                        (0..self.taps)
                            .filter(|&t| match s {
                                PosSet::None => false,
                                PosSet::All => reads[t],
                                s => !g.forward(s, t).is_none(),
                            })
                            .map(|t| local * self.taps + t)
                            .collect()
                    })
                    .collect()
            }
            None => {
                let live = live_features(input, self.ipg);
                self.blocks
                    .iter()
                    .map(|b| b.nodes.clone().filter(|&f| live[f]).collect())
                    .collect()
            }
        }
    }
}

/// Per input feature of a dense layer (the last axis of its input), whether
/// any element carrying it is live.
pub(crate) fn live_features(input: &Live, n_in: usize) -> Vec<bool> {
    if input.chans.len() == n_in && input.plane.len() == 1 {
        return input.chans.iter().map(|c| !c.is_none()).collect();
    }
    let mut live = vec![false; n_in];
    for e in input.to_elements().ones() {
        live[e % n_in] = true;
    }
    live
}

/// The one channel a set is made of, if it is one layer channel.
fn single_channel(ch: &Channels, set: u32) -> Option<Source> {
    match ch.labels(set) {
        [l] => match source(*l) {
            s @ Source::Channel { .. } => Some(s),
            _ => None,
        },
        _ => None,
    }
}
