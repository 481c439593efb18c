//! Exact effective masks: which kept weights the output actually depends on.
//!
//! Implements the definition of effective sparsity of Vysogorets & Kempe,
//! *Connectivity Matters* (papers/effective-sparsity-igq.txt, Sec. 3): take
//! the linearised network (activations, normalisations and biases removed,
//! max-pool read as avg-pool, weights `|w| * mask`), feed an all-ones input,
//! and call a kept weight *active* iff `dR/dw != 0` for `R = sum(output)`.
//! In that network every activation and every back-propagated sensitivity is
//! non-negative, so `dR/dw` for conv tap `W[o,i,ky,kx]` is a sum of products
//! `g[o,p] * a[i, src(p, tap)]` with no cancellation: it is nonzero iff some
//! output position `p` is *backward-live* in channel `o` and its source is
//! *forward-live* in channel `i`. This module computes those two liveness
//! maps exactly, per channel and, where they can differ, per position
//! ([`crate::analysis::liveness`]), so no floats are needed and nothing can underflow.
//!
//! Element-level bookkeeping is used only where channels do not map to
//! channels: shape-shuffling ops (Reshape, Transpose, broadcasting Add and
//! elementwise functions of several activations, Concat off the channel
//! axis) and the rules of [`crate::analysis::elements`] (MatMul of two
//! activations, axis mixing, element maps, dense layers over leading axes).
//! A function of several activations joins its operands, as a sum does,
//! except at a product of two activations (Mul, Div's denominator, MatMul):
//! there a path through one factor continues only where the other factor
//! is *alive*, reached from the input or a non-zero constant of the masked
//! network (CONVENTIONS, "What effective means on any graph", "Dead
//! factors"; [`crate::analysis::factors`]). Forward reach at a product is
//! computed with the alive sets of its operands, in topological order, and
//! backward reach through it with the same sets, so a weight is active when
//! a path through it satisfies the rule end to end. The constant values
//! come from one zero-input forward of the masked network, run only when a
//! product has a factor element no path reaches opposite one a path
//! reaches.
//!
//! ```
//! use maskforge::{zoo, analysis::effective, mask::MaskSet};
//! let net = zoo::build("mlp:4-3-2", 0).unwrap();
//! let mut m = MaskSet::dense(&net);
//! // Cut every input of hidden neuron 0: its outgoing weights become inactive.
//! for i in 0..4 { m.layers[0].set(i, false); }
//! let eff = effective::effective_masks(&net, &m);
//! assert!(!eff.layers[1].get(0) && !eff.layers[1].get(3)); // W2[0,0], W2[1,0]
//! ```

use foldhash::{HashMap, HashMapExt};

use crate::analysis::elements::{
    broadcast_source, gather_backward, gather_forward, last_axis_features, DenseRows, MatMulDims,
    Slices,
};
use crate::analysis::factors::{Constants, Product};
use crate::analysis::liveness::{Geometry, Plane, PosSet};
use crate::bitset::{ones_of_words as ones_of, BitSet};
use crate::graph::index_map::strides;
use crate::graph::op::{Conv2d, Op, Pool};
use crate::graph::{LayerKind, Network, Node, ValueId};
use crate::mask::MaskSet;

/// Liveness of every position of one value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    pub plane: Plane,
    pub chans: Vec<PosSet>,
}

impl Live {
    pub fn none(shape: &[usize]) -> Self {
        Self {
            plane: Plane::of_shape(shape),
            chans: vec![PosSet::None; shape.first().copied().unwrap_or(1)],
        }
    }

    pub fn all(shape: &[usize]) -> Self {
        Self {
            plane: Plane::of_shape(shape),
            chans: vec![PosSet::All; shape.first().copied().unwrap_or(1)],
        }
    }

    /// Live elements in total.
    pub fn count(&self) -> usize {
        self.chans.iter().map(|c| c.count(self.plane)).sum()
    }

    fn union_with(&mut self, other: &Live) {
        let p = self.plane;
        for (a, b) in self.chans.iter_mut().zip(&other.chans) {
            a.union_with(b, p);
        }
    }

    /// Every element, row-major over the value's shape.
    pub(crate) fn to_elements(&self) -> BitSet {
        let p = self.plane;
        let per = p.len();
        let mut out = BitSet::new(self.chans.len() * per);
        for (c, s) in self.chans.iter().enumerate() {
            if s.is_none() {
                continue;
            }
            // A row's bitmap words are the elements' bits, 64 at a time.
            let rows = s.rows(p);
            for y in 0..p.h {
                for (k, &word) in rows[y * p.rw()..(y + 1) * p.rw()].iter().enumerate() {
                    let n = (p.w - k * 64).min(64);
                    out.or_bits_at(c * per + y * p.w + k * 64, n, word);
                }
            }
        }
        out
    }

    pub(crate) fn from_elements(shape: &[usize], bits: &BitSet) -> Self {
        let p = Plane::of_shape(shape);
        let per = p.len();
        let rw = p.rw();
        let chans = (0..shape.first().copied().unwrap_or(1))
            .map(|c| {
                let mut rows = vec![0u64; p.h * rw];
                for y in 0..p.h {
                    for x in 0..p.w {
                        if bits.get(c * per + y * p.w + x) {
                            rows[y * rw + x / 64] |= 1 << (x % 64);
                        }
                    }
                }
                PosSet::from_rows(rows, p)
            })
            .collect();
        Self { plane: p, chans }
    }
}

/// Forward and backward liveness of every value, and the active masks.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// Reached from the input through kept weights.
    pub forward: Vec<Live>,
    /// Reaching the output through kept weights.
    pub backward: Vec<Live>,
    /// Kept weights the output depends on.
    pub active: MaskSet,
}

/// The effective (active) masks of `masks` on `net`.
pub fn effective_masks(net: &Network, masks: &MaskSet) -> MaskSet {
    analyse(net, masks).active
}

/// Run both liveness passes and derive the active masks.
pub fn analyse(net: &Network, masks: &MaskSet) -> Analysis {
    let layer_of = net.layer_of_node();
    let mut fw = Forward::with_masks(net, masks);
    for (ni, layer) in layer_of.iter().enumerate() {
        fw.step(ni, layer.map(|l| &masks.layers[l]));
    }
    let alive = std::mem::take(&mut fw.alive);
    let forward = fw.finish();
    finish_analysis(net, masks, forward, &alive)
}

/// [`analyse`] with every factor of a product counted as alive: a product
/// joins its operands as a sum does, the rule before dead factors. The
/// difference to [`analyse`] is what dead factors alone make inactive.
pub fn analyse_sum_rule(net: &Network, masks: &MaskSet) -> Analysis {
    let layer_of = net.layer_of_node();
    let mut fw = Forward::with_constants(net, Constants::sum_rule(net));
    for (ni, layer) in layer_of.iter().enumerate() {
        fw.step(ni, layer.map(|l| &masks.layers[l]));
    }
    let alive = std::mem::take(&mut fw.alive);
    let forward = fw.finish();
    finish_analysis(net, masks, forward, &alive)
}

/// [`analyse`] when the forward liveness of `masks` is already known (a
/// constructive method computes it while placing edges, with
/// [`Forward::new`]). That forward reads products as sums, so on a network
/// with products of two activations the forward pass is run again, with
/// dead factors.
pub fn analyse_with_forward(net: &Network, masks: &MaskSet, forward: Vec<Live>) -> Analysis {
    if crate::analysis::factors::has_products(net) {
        return analyse(net, masks);
    }
    let alive = vec![None; net.nodes.len()];
    finish_analysis(net, masks, forward, &alive)
}

/// The alive elements of a product's two operands (`None`: all of them, or
/// none that matters), per CONVENTIONS' dead-factor rule
/// ([`crate::analysis::factors`]).
pub(crate) type Alive = [Option<BitSet>; 2];

fn finish_analysis(
    net: &Network,
    masks: &MaskSet,
    forward: Vec<Live>,
    alive: &[Option<Alive>],
) -> Analysis {
    let layer_of = net.layer_of_node();
    let backward = backward_pass(net, masks, &layer_of, alive);
    let active = MaskSet {
        layers: net
            .layers
            .iter()
            .enumerate()
            .map(|(li, l)| {
                let node = &net.nodes[l.node];
                let fwd = &forward[node.inputs[0]];
                let back = &backward[node.output];
                match &node.op {
                    Op::Conv { conv, .. } => conv_active(conv, &masks.layers[li], fwd, back),
                    Op::Dense { .. } if shape(net, node.inputs[0]).len() > 1 => DenseRows {
                        n_out: l.shape[0],
                        n_in: l.shape[1],
                        mask: &masks.layers[li],
                    }
                    .active(&fwd.to_elements(), &back.to_elements()),
                    Op::Dense { .. } => {
                        dense_active(l.shape[0], l.shape[1], &masks.layers[li], fwd, back)
                    }
                    _ => unreachable!("layers are conv or dense"),
                }
            })
            .collect(),
    };
    Analysis {
        forward,
        backward,
        active,
    }
}

fn shape(net: &Network, v: ValueId) -> &[usize] {
    &net.values[v].shape
}

/// Forward liveness computed node by node, so a constructive method (MiCA)
/// can place a layer's mask just before that layer is evaluated.
pub struct Forward<'a> {
    net: &'a Network,
    live: Vec<Option<Live>>,
    /// The constant values the dead-factor rule reads.
    consts: Constants<'a>,
    /// Per product node, the alive elements of its operands.
    alive: Vec<Option<Alive>>,
}

impl<'a> Forward<'a> {
    /// Stepped with each layer's mask as it is placed (a constructive
    /// method, MiCA). The masks of later layers are not known, and the
    /// constant values of factors depend on them only through the layers
    /// before, but evaluating them after every placement would cost a
    /// forward pass each: this forward reads every product as a sum (every
    /// factor alive), an upper bound of the exact liveness, and
    /// [`analyse_with_forward`] redoes the forward with dead factors.
    pub fn new(net: &'a Network) -> Self {
        Self::with_constants(net, Constants::sum_rule(net))
    }

    /// Stepped with the layers of `masks`, known in advance.
    pub fn with_masks(net: &'a Network, masks: &'a MaskSet) -> Self {
        Self::with_constants(net, Constants::of_masks(net, masks))
    }

    fn with_constants(net: &'a Network, consts: Constants<'a>) -> Self {
        let mut live: Vec<Option<Live>> = vec![None; net.values.len()];
        for &i in &net.inputs {
            live[i] = Some(Live::all(shape(net, i)));
        }
        Self {
            net,
            live,
            consts,
            alive: vec![None; net.nodes.len()],
        }
    }

    /// Liveness of value `v`, once its producer has been stepped.
    pub fn get(&self, v: ValueId) -> Option<&Live> {
        self.live[v].as_ref()
    }

    /// Evaluate node `ni` (nodes must be stepped in order); `mask` is the
    /// node's layer mask when it is prunable.
    pub fn step(&mut self, ni: usize, mask: Option<&BitSet>) {
        let net = self.net;
        let node = &net.nodes[ni];
        let ins: Vec<&Live> = node
            .inputs
            .iter()
            .map(|&v| self.live[v].as_ref().expect("topological order"))
            .collect();
        let out_shape = shape(net, node.output);
        let in_shape = shape(net, node.inputs[0]);
        if let Some(p) = Product::of(&node.op) {
            let alive = factor_alive(net, ni, p, &ins, &mut self.consts);
            let out = match p {
                Product::MatMul => {
                    let d = MatMulDims::new(in_shape, shape(net, node.inputs[1]));
                    let bits = d.forward_alive(
                        &ins[0].to_elements(),
                        &ins[1].to_elements(),
                        alive[0].as_ref(),
                        alive[1].as_ref(),
                    );
                    Live::from_elements(out_shape, &bits)
                }
                _ => product_forward(net, node, &ins, &alive, out_shape),
            };
            self.alive[ni] = Some(alive);
            self.live[node.output] = Some(out);
            return;
        }
        let out = match &node.op {
            Op::MatMul => unreachable!("a product"),
            Op::Mix(mix) => {
                let bits = Slices::of_mix(in_shape, mix).forward(&ins[0].to_elements());
                Live::from_elements(out_shape, &bits)
            }
            Op::Softmax(axis) | Op::LogSoftmax(axis) => {
                let bits = Slices::along(in_shape, *axis).forward(&ins[0].to_elements());
                Live::from_elements(out_shape, &bits)
            }
            Op::Gather(map) => {
                let elems: Vec<BitSet> = ins.iter().map(|l| l.to_elements()).collect();
                let refs: Vec<&BitSet> = elems.iter().collect();
                Live::from_elements(out_shape, &gather_forward(map, &refs))
            }
            Op::Conv { conv, .. } => {
                conv_forward(conv, mask.expect("conv mask"), ins[0], out_shape)
            }
            Op::Dense { dense, .. } if in_shape.len() > 1 => {
                let d = DenseRows {
                    n_out: dense.out_features,
                    n_in: dense.in_features,
                    mask: mask.expect("dense mask"),
                };
                Live::from_elements(out_shape, &d.forward(&ins[0].to_elements()))
            }
            Op::Dense { dense, .. } => dense_forward(
                dense.out_features,
                dense.in_features,
                mask.expect("dense mask"),
                ins[0],
            ),
            Op::Pool(pool) => pool_forward(pool, ins[0], out_shape),
            Op::GlobalPool(_) => global_forward(ins[0], out_shape),
            Op::Norm(_) | Op::Activation(_) | Op::Identity => ins[0].clone(),
            // Every operand reaches the output elements it broadcasts to,
            // whatever the function: a sum's rule.
            Op::Add | Op::Binary(_) | Op::Where => add_forward(net, node, &ins, out_shape),
            Op::Concat(axis) => concat_forward(net, node, &ins, *axis, out_shape),
            Op::Reshape => Live::from_elements(out_shape, &ins[0].to_elements()),
            Op::Transpose(perm) => {
                let bits =
                    permute_elements(shape(net, node.inputs[0]), perm, &ins[0].to_elements());
                Live::from_elements(out_shape, &bits)
            }
        };
        self.live[node.output] = Some(out);
    }

    pub fn finish(self) -> Vec<Live> {
        let net = self.net;
        self.live
            .into_iter()
            .enumerate()
            .map(|(v, l)| l.unwrap_or_else(|| Live::none(shape(net, v))))
            .collect()
    }
}

fn backward_pass(
    net: &Network,
    masks: &MaskSet,
    layer_of: &[Option<usize>],
    alive: &[Option<Alive>],
) -> Vec<Live> {
    let mut live: Vec<Live> = net.values.iter().map(|v| Live::none(&v.shape)).collect();
    for &o in &net.outputs {
        live[o] = Live::all(shape(net, o));
    }
    for (ni, node) in net.nodes.iter().enumerate().rev() {
        let out = &live[node.output];
        if out.chans.iter().all(PosSet::is_none) {
            continue;
        }
        let in_shape = shape(net, node.inputs[0]);
        let contributions: Vec<Live> = match &node.op {
            Op::MatMul => {
                let b_shape = shape(net, node.inputs[1]);
                let none = [None, None];
                let al = alive[ni].as_ref().unwrap_or(&none);
                let (a, b) = MatMulDims::new(in_shape, b_shape).backward_alive(
                    &out.to_elements(),
                    al[0].as_ref(),
                    al[1].as_ref(),
                );
                vec![
                    Live::from_elements(in_shape, &a),
                    Live::from_elements(b_shape, &b),
                ]
            }
            Op::Mix(mix) => {
                let bits = Slices::of_mix(in_shape, mix).backward(&out.to_elements());
                vec![Live::from_elements(in_shape, &bits)]
            }
            Op::Softmax(axis) | Op::LogSoftmax(axis) => {
                let bits = Slices::along(in_shape, *axis).backward(&out.to_elements());
                vec![Live::from_elements(in_shape, &bits)]
            }
            Op::Gather(map) => {
                let sizes: Vec<usize> = node.inputs.iter().map(|&v| net.value(v).numel()).collect();
                gather_backward(map, &out.to_elements(), &sizes)
                    .iter()
                    .zip(&node.inputs)
                    .map(|(b, &v)| Live::from_elements(shape(net, v), b))
                    .collect()
            }
            Op::Dense { dense, .. } if in_shape.len() > 1 => {
                let d = DenseRows {
                    n_out: dense.out_features,
                    n_in: dense.in_features,
                    mask: &masks.layers[layer_of[ni].unwrap()],
                };
                vec![Live::from_elements(
                    in_shape,
                    &d.backward(&out.to_elements()),
                )]
            }
            Op::Conv { conv, .. } => {
                let m = &masks.layers[layer_of[ni].unwrap()];
                vec![conv_backward(conv, m, out, shape(net, node.inputs[0]))]
            }
            Op::Dense { dense, .. } => {
                let m = &masks.layers[layer_of[ni].unwrap()];
                vec![dense_backward(
                    dense.out_features,
                    dense.in_features,
                    m,
                    out,
                )]
            }
            Op::Pool(pool) => vec![pool_backward(pool, out, shape(net, node.inputs[0]))],
            Op::GlobalPool(_) => {
                let s = shape(net, node.inputs[0]);
                let mut l = Live::none(s);
                for (c, ch) in out.chans.iter().enumerate() {
                    if !ch.is_none() {
                        l.chans[c] = PosSet::All;
                    }
                }
                vec![l]
            }
            Op::Norm(_) | Op::Activation(_) | Op::Identity => vec![out.clone()],
            Op::Add | Op::Binary(_) | Op::Where => {
                let none = [None, None];
                let al = alive[ni].as_ref().unwrap_or(&none);
                let out_shape = shape(net, node.output);
                node.inputs
                    .iter()
                    .enumerate()
                    .map(|(k, &v)| {
                        // A path through operand k continues where its
                        // partner is alive.
                        let partner = if k < 2 { al[1 - k].as_ref() } else { None };
                        match partner {
                            Some(partner) => {
                                let pshape = shape(net, node.inputs[1 - k]);
                                let mut bits = out.to_elements();
                                bits.and_with(&crate::analysis::factors::bcast(
                                    partner, pshape, out_shape,
                                ));
                                let gated = Live::from_elements(out_shape, &bits);
                                unbroadcast(&gated, out_shape, shape(net, v))
                            }
                            _ => unbroadcast(out, out_shape, shape(net, v)),
                        }
                    })
                    .collect()
            }
            Op::Concat(axis) => concat_backward(net, node, out, *axis),
            Op::Reshape => vec![Live::from_elements(
                shape(net, node.inputs[0]),
                &out.to_elements(),
            )],
            Op::Transpose(perm) => {
                let inverse = invert(perm);
                let bits = permute_elements(shape(net, node.output), &inverse, &out.to_elements());
                vec![Live::from_elements(shape(net, node.inputs[0]), &bits)]
            }
        };
        for (&v, c) in node.inputs.iter().zip(&contributions) {
            live[v].union_with(c);
        }
    }
    live
}

/// Tap bits of kernel `(o, ci)` in a canonical conv mask, as words.
fn kernel_bits(m: &BitSet, conv: &Conv2d, o: usize, ci: usize, out: &mut [u64]) {
    let taps = conv.taps();
    let base = (o * conv.in_per_group() + ci) * taps;
    for (w, word) in out.iter_mut().enumerate() {
        let start = w * 64;
        let n = (taps - start).min(64);
        *word = m.bits_at(base + start, n);
    }
}

/// Call `f(ci, taps)` for every kernel of output row `o` with a kept tap.
/// Sparse rows are scanned bit by bit, dense ones kernel by kernel, so both
/// cost about the row's kept count or its kernel count, whichever is less.
fn for_each_kernel(
    m: &BitSet,
    conv: &Conv2d,
    o: usize,
    bits: &mut [u64],
    mut f: impl FnMut(usize, &[u64]),
) {
    let taps = conv.taps();
    let ipg = conv.in_per_group();
    let start = o * ipg * taps;
    let end = start + ipg * taps;
    if m.count_ones_in(start, end) < ipg / 2 {
        let mut current: Option<usize> = None;
        for idx in m.ones_in(start, end) {
            let (ci, t) = ((idx - start) / taps, (idx - start) % taps);
            if current != Some(ci) {
                if let Some(c) = current {
                    f(c, bits);
                }
                bits.fill(0);
                current = Some(ci);
            }
            bits[t / 64] |= 1 << (t % 64);
        }
        if let Some(c) = current {
            f(c, bits);
        }
    } else {
        for ci in 0..ipg {
            kernel_bits(m, conv, o, ci, bits);
            if bits.iter().any(|&b| b != 0) {
                f(ci, bits);
            }
        }
    }
}

fn conv_geometry(conv: &Conv2d, in_shape_hw: [usize; 2]) -> Geometry {
    Geometry::new(in_shape_hw, conv.kernel, conv.window, false)
}

fn conv_forward(conv: &Conv2d, m: &BitSet, input: &Live, out_shape: &[usize]) -> Live {
    let g = conv_geometry(conv, [input.plane.h, input.plane.w]);
    let words = conv.taps().div_ceil(64);
    let (ipg, opg) = (conv.in_per_group(), conv.out_per_group());
    let mut cache: HashMap<Vec<u64>, PosSet> = HashMap::new();
    let mut full_taps = vec![0u64; words];
    let mut bits = vec![0u64; words];
    // 1x1 convs (most of a ResNet's weights): a row of the mask is a plain
    // bitset over input channels, handled a word at a time.
    let pointwise = conv.taps() == 1;
    let all_in = BitSet::from_fn(input.chans.len(), |i| input.chans[i].is_all());
    let chans = (0..conv.out_channels)
        .map(|o| {
            let group = o / opg;
            if pointwise {
                return pointwise_forward(m, o, group, ipg, &all_in, input, &g);
            }
            full_taps.fill(0);
            let mut partial = Vec::new();
            for_each_kernel(m, conv, o, &mut bits, |ci, kb| {
                let i = group * ipg + ci;
                match &input.chans[i] {
                    PosSet::None => {}
                    PosSet::All => {
                        for (f, b) in full_taps.iter_mut().zip(kb) {
                            *f |= b;
                        }
                    }
                    PosSet::Some(_) => partial.push((i, kb.to_vec())),
                }
            });
            let mut set = match cache.get(&full_taps) {
                Some(s) => s.clone(),
                None => {
                    let s = union_forward(&g, &PosSet::All, &full_taps);
                    cache.insert(full_taps.clone(), s.clone());
                    s
                }
            };
            for (i, b) in &partial {
                if set.is_all() {
                    break;
                }
                set.union_with(&union_forward(&g, &input.chans[*i], b), g.output);
            }
            set
        })
        .collect();
    debug_assert_eq!(Plane::of_shape(out_shape), g.output);
    Live {
        plane: g.output,
        chans,
    }
}

/// Row `o` of a 1x1 conv's mask as words over the group's input channels.
fn row_words(m: &BitSet, o: usize, ipg: usize) -> impl Iterator<Item = (usize, u64)> + '_ {
    (0..ipg.div_ceil(64)).map(move |w| {
        let n = (ipg - w * 64).min(64);
        (w, m.bits_at(o * ipg + w * 64, n))
    })
}

/// Input-channel word `w` of group `group` from a channel bitset.
fn group_word(b: &BitSet, group: usize, ipg: usize, w: usize) -> u64 {
    let n = (ipg - w * 64).min(64);
    b.bits_at(group * ipg + w * 64, n)
}

fn pointwise_forward(
    m: &BitSet,
    o: usize,
    group: usize,
    ipg: usize,
    all_in: &BitSet,
    input: &Live,
    g: &Geometry,
) -> PosSet {
    let mut set = PosSet::None;
    let mut any_full = false;
    for (w, row) in row_words(m, o, ipg) {
        if row & group_word(all_in, group, ipg, w) != 0 {
            any_full = true;
            break;
        }
    }
    if any_full {
        set = g.forward(&PosSet::All, 0);
        if set.is_all() {
            return set;
        }
    }
    for (w, row) in row_words(m, o, ipg) {
        let mut partial = row & !group_word(all_in, group, ipg, w);
        while partial != 0 {
            let i = group * ipg + w * 64 + partial.trailing_zeros() as usize;
            partial &= partial - 1;
            if !input.chans[i].is_none() {
                set.union_with(&g.forward(&input.chans[i], 0), g.output);
            }
        }
    }
    set
}

/// Output positions reached from `s` through any tap in `taps`.
fn union_forward(g: &Geometry, s: &PosSet, taps: &[u64]) -> PosSet {
    let mut rows = vec![0u64; g.output.h * g.output.rw()];
    for t in ones_of(taps) {
        g.forward_into(s, t, &mut rows);
    }
    PosSet::from_rows(rows, g.output)
}

/// Input positions feeding `s` through any tap in `taps`.
fn union_backward(g: &Geometry, s: &PosSet, taps: &[u64]) -> PosSet {
    let mut rows = vec![0u64; g.input.h * g.input.rw()];
    for t in ones_of(taps) {
        g.backward_into(s, t, &mut rows);
    }
    PosSet::from_rows(rows, g.input)
}

fn conv_backward(conv: &Conv2d, m: &BitSet, out: &Live, in_shape: &[usize]) -> Live {
    let g = conv_geometry(conv, [in_shape[1], in_shape[2]]);
    let words = conv.taps().div_ceil(64);
    let (ipg, opg) = (conv.in_per_group(), conv.out_per_group());
    let mut full_taps = vec![vec![0u64; words]; conv.in_channels];
    let mut partial: Vec<Vec<u64>> = vec![Vec::new(); conv.in_channels];
    let mut bits = vec![0u64; words];
    for (o, back) in out.chans.iter().enumerate() {
        if back.is_none() {
            continue;
        }
        let group = o / opg;
        if conv.taps() == 1 && back.is_all() {
            for (w, row) in row_words(m, o, ipg) {
                let mut r = row;
                while r != 0 {
                    let i = group * ipg + w * 64 + r.trailing_zeros() as usize;
                    r &= r - 1;
                    full_taps[i][0] |= 1;
                }
            }
            continue;
        }
        for_each_kernel(m, conv, o, &mut bits, |ci, kb| {
            let i = group * ipg + ci;
            if back.is_all() {
                for (f, b) in full_taps[i].iter_mut().zip(kb) {
                    *f |= b;
                }
            } else {
                let rows = &mut partial[i];
                if rows.is_empty() {
                    rows.resize(g.input.h * g.input.rw(), 0);
                }
                for t in ones_of(kb) {
                    g.backward_into(back, t, rows);
                }
            }
        });
    }
    let mut cache: HashMap<Vec<u64>, PosSet> = HashMap::new();
    let chans = (0..conv.in_channels)
        .map(|i| {
            let mut set = cache
                .entry(full_taps[i].clone())
                .or_insert_with(|| union_backward(&g, &PosSet::All, &full_taps[i]))
                .clone();
            if !partial[i].is_empty() {
                let p = PosSet::from_rows(std::mem::take(&mut partial[i]), g.input);
                set.union_with(&p, g.input);
            }
            set
        })
        .collect();
    Live {
        plane: g.input,
        chans,
    }
}

fn conv_active(conv: &Conv2d, m: &BitSet, fwd: &Live, back: &Live) -> BitSet {
    let g = conv_geometry(conv, [fwd.plane.h, fwd.plane.w]);
    let taps = conv.taps();
    let (ipg, opg) = (conv.in_per_group(), conv.out_per_group());
    let mut reads_words = vec![0u64; taps.div_ceil(64)];
    for t in (0..taps).filter(|&t| g.tap_reads_data(t)) {
        reads_words[t / 64] |= 1 << (t % 64);
    }
    let mut out = BitSet::new(m.len());
    let mut bits = vec![0u64; taps.div_ceil(64)];
    let all_in = BitSet::from_fn(fwd.chans.len(), |i| fwd.chans[i].is_all());
    let pointwise = taps == 1 && reads_words[0] == 1;
    for (o, b) in back.chans.iter().enumerate() {
        if b.is_none() {
            continue;
        }
        let group = o / opg;
        if pointwise && b.is_all() {
            for (w, row) in row_words(m, o, ipg) {
                let n = (ipg - w * 64).min(64);
                let full = group_word(&all_in, group, ipg, w);
                out.or_bits_at(o * ipg + w * 64, n, row & full);
                let mut partial = row & !full;
                while partial != 0 {
                    let ci = w * 64 + partial.trailing_zeros() as usize;
                    partial &= partial - 1;
                    if g.connects(&fwd.chans[group * ipg + ci], b, 0) {
                        out.set(o * ipg + ci, true);
                    }
                }
            }
            continue;
        }
        for_each_kernel(m, conv, o, &mut bits, |ci, kb| {
            let f = &fwd.chans[group * ipg + ci];
            let base = (o * ipg + ci) * taps;
            if f.is_none() {
                return;
            }
            if f.is_all() && b.is_all() {
                for (w, (&k, &r)) in kb.iter().zip(&reads_words).enumerate() {
                    let n = (taps - w * 64).min(64);
                    out.or_bits_at(base + w * 64, n, k & r);
                }
                return;
            }
            for t in ones_of(kb) {
                if g.connects(f, b, t) {
                    out.set(base + t, true);
                }
            }
        });
    }
    out
}

/// Feature liveness of a flat value as a bitset.
fn features(l: &Live) -> BitSet {
    BitSet::from_fn(l.chans.len(), |i| !l.chans[i].is_none())
}

fn from_features(b: &BitSet) -> Live {
    Live {
        plane: Plane::new(1, 1),
        chans: (0..b.len())
            .map(|i| if b.get(i) { PosSet::All } else { PosSet::None })
            .collect(),
    }
}

/// True when row `o` of a dense mask shares a set bit with `f`.
fn row_meets(m: &BitSet, o: usize, n_in: usize, f: &BitSet) -> bool {
    let base = o * n_in;
    let fw = f.words();
    (0..n_in.div_ceil(64)).any(|w| {
        let n = (n_in - w * 64).min(64);
        m.bits_at(base + w * 64, n) & fw[w] != 0
    })
}

fn dense_forward(n_out: usize, n_in: usize, m: &BitSet, input: &Live) -> Live {
    let f = features(input);
    from_features(&BitSet::from_fn(n_out, |o| row_meets(m, o, n_in, &f)))
}

fn dense_backward(n_out: usize, n_in: usize, m: &BitSet, out: &Live) -> Live {
    let mut acc = vec![0u64; n_in.div_ceil(64)];
    for o in 0..n_out {
        if out.chans[o].is_none() {
            continue;
        }
        for (w, a) in acc.iter_mut().enumerate() {
            let n = (n_in - w * 64).min(64);
            *a |= m.bits_at(o * n_in + w * 64, n);
        }
    }
    from_features(&BitSet::from_fn(n_in, |i| {
        (acc[i / 64] >> (i % 64)) & 1 == 1
    }))
}

fn dense_active(n_out: usize, n_in: usize, m: &BitSet, fwd: &Live, back: &Live) -> BitSet {
    let f = features(fwd);
    let mut out = BitSet::new(m.len());
    for o in 0..n_out {
        if back.chans[o].is_none() {
            continue;
        }
        let base = o * n_in;
        for w in 0..n_in.div_ceil(64) {
            let n = (n_in - w * 64).min(64);
            out.or_bits_at(base + w * 64, n, m.bits_at(base + w * 64, n) & f.words()[w]);
        }
    }
    out
}

fn pool_geometry(pool: &Pool, in_plane: Plane) -> Geometry {
    Geometry::new(
        [in_plane.h, in_plane.w],
        pool.kernel,
        pool.window,
        pool.ceil,
    )
}

fn all_taps(g: &Geometry) -> Vec<u64> {
    let mut t = vec![0u64; g.taps().div_ceil(64)];
    for i in 0..g.taps() {
        t[i / 64] |= 1 << (i % 64);
    }
    t
}

fn pool_forward(pool: &Pool, input: &Live, out_shape: &[usize]) -> Live {
    let g = pool_geometry(pool, input.plane);
    debug_assert_eq!(Plane::of_shape(out_shape), g.output);
    let taps = all_taps(&g);
    let from_all = union_forward(&g, &PosSet::All, &taps);
    let chans = input
        .chans
        .iter()
        .map(|s| match s {
            PosSet::None => PosSet::None,
            PosSet::All => from_all.clone(),
            s => union_forward(&g, s, &taps),
        })
        .collect();
    Live {
        plane: g.output,
        chans,
    }
}

fn pool_backward(pool: &Pool, out: &Live, in_shape: &[usize]) -> Live {
    let g = pool_geometry(pool, Plane::of_shape(in_shape));
    let taps = all_taps(&g);
    let from_all = union_backward(&g, &PosSet::All, &taps);
    let chans = out
        .chans
        .iter()
        .map(|s| match s {
            PosSet::None => PosSet::None,
            PosSet::All => from_all.clone(),
            s => union_backward(&g, s, &taps),
        })
        .collect();
    Live {
        plane: g.input,
        chans,
    }
}

fn global_forward(input: &Live, out_shape: &[usize]) -> Live {
    let mut l = Live::none(out_shape);
    for (c, s) in input.chans.iter().enumerate() {
        if !s.is_none() {
            l.chans[c] = PosSet::All;
        }
    }
    l
}

/// The alive elements of the operands of product node `ni` that the
/// dead-factor rule reads: operand `k`'s are needed where a path reaches
/// the other operand and none reaches `k` (elsewhere either both carry
/// paths, and a reached element is alive, or the other carries none).
/// `None` for an operand whose every element counts as alive there.
fn factor_alive(
    net: &Network,
    ni: usize,
    p: Product,
    ins: &[&Live],
    consts: &mut Constants<'_>,
) -> Alive {
    let node = &net.nodes[ni];
    let out_shape = shape(net, node.output);
    let mut alive: Alive = [None, None];
    let full = |l: &Live| l.chans.iter().all(PosSet::is_all);
    let empty = |l: &Live| l.chans.iter().all(PosSet::is_none);
    let (s0, s1) = (shape(net, node.inputs[0]), shape(net, node.inputs[1]));
    if p != Product::MatMul && s0 == s1 && ins[0] == ins[1] {
        // x * sigmoid(x) and the like: both operands reached alike.
        return alive;
    }
    for k in 0..2 {
        if !p.gates(k) || full(ins[k]) || empty(ins[1 - k]) {
            continue;
        }
        let mine = ins[k].to_elements();
        let other = ins[1 - k].to_elements();
        let needed = crate::analysis::factors::matters(p, k, [s0, s1], out_shape, &mine, &other);
        if !needed {
            continue;
        }
        let Some(nz) = consts.nonzero(node.inputs[k]) else {
            continue;
        };
        let mut a = mine;
        a.or_with(nz);
        if a.count_ones() < a.len() {
            alive[k] = Some(a);
        }
    }
    alive
}

/// Output elements of an elementwise product reached: through operand `k`
/// where it is reached and its partner alive.
fn product_forward(
    net: &Network,
    node: &Node,
    ins: &[&Live],
    alive: &Alive,
    out_shape: &[usize],
) -> Live {
    if alive.iter().all(Option::is_none) {
        return add_forward(net, node, ins, out_shape);
    }
    let mut out = BitSet::new(out_shape.iter().product());
    for k in 0..2 {
        let sk = shape(net, node.inputs[k]);
        let mut t = crate::analysis::factors::bcast(&ins[k].to_elements(), sk, out_shape);
        if let Some(partner) = &alive[1 - k] {
            let so = shape(net, node.inputs[1 - k]);
            t.and_with(&crate::analysis::factors::bcast(partner, so, out_shape));
        }
        out.or_with(&t);
    }
    Live::from_elements(out_shape, &out)
}

fn add_forward(net: &Network, node: &Node, ins: &[&Live], out_shape: &[usize]) -> Live {
    let mut out = Live::none(out_shape);
    for (&v, l) in node.inputs.iter().zip(ins) {
        if shape(net, v) == out_shape {
            out.union_with(l);
        } else {
            out.union_with(&broadcast_live(l, shape(net, v), out_shape));
        }
    }
    out
}

/// True when `from` is `[C, 1, ..., 1]` broadcast onto `to = [C, ...]` (a
/// squeeze-and-excite gate, a per-channel scale): channels map to channels.
fn per_channel(from: &[usize], to: &[usize]) -> bool {
    !from.is_empty()
        && from.len() == to.len()
        && from[0] == to[0]
        && from[1..].iter().all(|&d| d == 1)
}

fn broadcast_live(l: &Live, from: &[usize], to: &[usize]) -> Live {
    if per_channel(from, to) {
        let mut out = Live::none(to);
        for (o, c) in out.chans.iter_mut().zip(&l.chans) {
            if !c.is_none() {
                *o = PosSet::All;
            }
        }
        return out;
    }
    let bits = l.to_elements();
    let src = broadcast_source(from, to);
    let n: usize = to.iter().product();
    Live::from_elements(to, &BitSet::from_fn(n, |e| bits.get(src(e))))
}

/// Backward through a broadcast: an input element is live if any output element it feeds is.
fn unbroadcast(out: &Live, out_shape: &[usize], in_shape: &[usize]) -> Live {
    if out_shape == in_shape {
        return out.clone();
    }
    if per_channel(in_shape, out_shape) {
        let mut l = Live::none(in_shape);
        for (i, c) in l.chans.iter_mut().zip(&out.chans) {
            if !c.is_none() {
                *i = PosSet::All;
            }
        }
        return l;
    }
    let bits = out.to_elements();
    let src = broadcast_source(in_shape, out_shape);
    let mut acc = BitSet::new(in_shape.iter().product());
    for e in bits.ones() {
        acc.set(src(e), true);
    }
    Live::from_elements(in_shape, &acc)
}

fn concat_forward(
    net: &Network,
    node: &Node,
    ins: &[&Live],
    axis: usize,
    out_shape: &[usize],
) -> Live {
    if axis == 0 {
        return Live {
            plane: Plane::of_shape(out_shape),
            chans: ins.iter().flat_map(|l| l.chans.iter().cloned()).collect(),
        };
    }
    let n: usize = out_shape.iter().product();
    let mut out = BitSet::new(n);
    let mut offset = 0;
    for (&v, l) in node.inputs.iter().zip(ins) {
        let s = shape(net, v);
        for e in l.to_elements().ones() {
            out.set(concat_index(s, out_shape, axis, offset, e), true);
        }
        offset += s[axis];
    }
    Live::from_elements(out_shape, &out)
}

/// The element of the concatenation `whole` that element `e` of `part`
/// (placed at `offset` along `axis`) becomes. Row-major, a part is `outer`
/// contiguous blocks of `part[axis..]` elements, each landing at its own
/// place in a block of `whole[axis..]`.
fn concat_index(part: &[usize], whole: &[usize], axis: usize, offset: usize, e: usize) -> usize {
    let inner: usize = part[axis + 1..].iter().product();
    let (block, whole_block) = (part[axis] * inner, whole[axis] * inner);
    (e / block) * whole_block + offset * inner + e % block
}

fn concat_backward(net: &Network, node: &Node, out: &Live, axis: usize) -> Vec<Live> {
    let out_shape = shape(net, node.output);
    if axis == 0 {
        let mut start = 0;
        return node
            .inputs
            .iter()
            .map(|&v| {
                let s = shape(net, v);
                let l = Live {
                    plane: out.plane,
                    chans: out.chans[start..start + s[0]].to_vec(),
                };
                start += s[0];
                l
            })
            .collect();
    }
    let bits = out.to_elements();
    let mut offset = 0;
    node.inputs
        .iter()
        .map(|&v| {
            let s = shape(net, v);
            let n: usize = s.iter().product();
            let b = BitSet::from_fn(n, |e| bits.get(concat_index(s, out_shape, axis, offset, e)));
            offset += s[axis];
            Live::from_elements(s, &b)
        })
        .collect()
}

fn invert(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

/// Elements of a tensor of `shape` transposed by `perm` (output dim d = input dim perm[d]).
fn permute_elements(shape: &[usize], perm: &[usize], bits: &BitSet) -> BitSet {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let (is, os) = (strides(shape), strides(&out_shape));
    BitSet::from_fn(bits.len(), |e| {
        let src: usize = (0..perm.len())
            .map(|d| ((e / os[d]) % out_shape[d]) * is[perm[d]])
            .sum();
        bits.get(src)
    })
}

/// Per-layer node statistics: output units reached from the input, and those
/// that also reach the output (the functional nodes of MiCA Sec. 5, Fig. 9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeCounts {
    pub total: usize,
    pub reached: usize,
    pub functional: usize,
}

/// Node counts per layer: a unit (output channel or neuron) is *reached* when
/// some position of it is forward-live, *functional* when one position is
/// both forward- and backward-live. Functional is therefore "on some
/// input -> output path through kept weights": the *effective node* of
/// node-path balancing (papers/npb-node-path-balancing-abstract.txt). A
/// dense layer over leading axes has one unit per output feature (its
/// positions share the weights), live or functional at some position.
pub fn node_counts(net: &Network, a: &Analysis) -> Vec<NodeCounts> {
    net.layers
        .iter()
        .map(|l| {
            let v = net.nodes[l.node].output;
            let (f, b) = (&a.forward[v], &a.backward[v]);
            if l.kind == LayerKind::Dense && shape(net, v).len() > 1 {
                return feature_counts(l.shape[0], &f.to_elements(), &b.to_elements());
            }
            let p = f.plane;
            NodeCounts {
                total: f.chans.len(),
                reached: f.chans.iter().filter(|c| !c.is_none()).count(),
                functional: f
                    .chans
                    .iter()
                    .zip(&b.chans)
                    .filter(|(x, y)| x.intersects(y, p))
                    .count(),
            }
        })
        .collect()
}

/// [`NodeCounts`] of `n` features repeated at every leading position.
fn feature_counts(n: usize, fwd: &BitSet, back: &BitSet) -> NodeCounts {
    let mut both = fwd.clone();
    both.and_with(back);
    NodeCounts {
        total: n,
        reached: last_axis_features(fwd, n).count_ones(),
        functional: last_axis_features(&both, n).count_ones(),
    }
}
