//! Channel identity between prunable layers: for every input node of a layer
//! (a conv's input channel, a dense layer's input feature), which output
//! channels of which layers it reads, followed element by element through
//! every op without weights.
//!
//! MiCA reasons in channels: a layer uses some output nodes, so the layers
//! reading them must connect exactly those inputs. On a chain, output channel
//! `i` is the next layer's input channel `i`; through a channel shuffle
//! (Reshape -> Transpose -> Reshape), a Gather, a Concat, a broadcast gate or
//! an attention product it is not, so the correspondence is derived here
//! from each op's element map rather than assumed. Every op kind has an arm
//! (nothing panics on a graph the reader accepts): data movement carries each
//! element's sources, joins (Add, gates, Where, MatMul of activations) take
//! the union of their operands', and ops that mix along axes (softmax,
//! normalisations, reductions, LRN) the union over the mixed slice. A set
//! that grows past [`CAP`] sources collapses a layer's channels into "every
//! channel of that layer", which is what a channel-mixing op means anyway.
//!
//! Sets are interned (one `u32` per element) and a value whose channels are
//! each uniform is stored per channel, so conv nets cost one entry per
//! channel; element-level work happens only behind Reshape, Transpose,
//! Gather and broadcasting.
//!
//! ```
//! use maskforge::graph::NetworkBuilder;
//! use maskforge::graph::op::Window;
//! use maskforge::graph::tensor::ConstTensor;
//! use maskforge::methods::random::mica::channels::{Channels, Source};
//! let w = |s: Vec<usize>| { let n = s.iter().product(); ConstTensor::f32(s, vec![0.1; n]) };
//! let mut b = NetworkBuilder::new("shuffle");
//! let x = b.input("x", vec![3, 4, 4]).unwrap();
//! let a = b.conv("a", x, "wa", w(vec![4, 3, 1, 1]), None, Window::same(1, 0), 1).unwrap();
//! // A channel shuffle of 2 groups: [4,H,W] -> [2,2,H,W] -> swap -> [4,H,W].
//! let r = b.reshape("r", a, vec![2, 2, 4, 4]).unwrap();
//! let t = b.transpose("t", r, vec![1, 0, 2, 3]).unwrap();
//! let s = b.reshape("s", t, vec![4, 4, 4]).unwrap();
//! let c = b.conv("c", s, "wc", w(vec![2, 4, 1, 1]), None, Window::same(1, 0), 1).unwrap();
//! b.output(c);
//! let net = b.finish().unwrap();
//! let ch = Channels::of(&net);
//! // Input channel 1 of `c` is output channel 2 of `a`, not channel 1.
//! assert_eq!(ch.reads(1, 1).collect::<Vec<_>>(), vec![Source::Channel { layer: 0, channel: 2 }]);
//! assert_eq!(ch.reads(0, 0).collect::<Vec<_>>(), vec![Source::Input]);
//! assert!(ch.is_free(1, 0)); // c's outputs are the graph's
//! ```

use std::borrow::Cow;

use foldhash::{HashMap, HashMapExt};

use crate::graph::index_map::strides;
use crate::graph::op::{MixKind, Norm, Op};
use crate::graph::{Network, Node};

/// Where an input node's data comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// A graph input (always live; nobody to ask for it).
    Input,
    /// One output channel of a prunable layer.
    Channel { layer: usize, channel: usize },
    /// Every output channel of a layer, mixed by an op without weights.
    AllOf { layer: usize },
}

/// A source packed in one word: layer in the high half, channel in the low
/// half; [`INPUT`] and [`ALL`] are reserved values.
pub(crate) type Label = u64;
pub(crate) const INPUT: Label = u64::MAX;
const ALL: u64 = u32::MAX as u64;

/// Sets larger than this collapse a layer's channels into [`Source::AllOf`]:
/// past a few dozen sources an element is a mix, and keeping every channel
/// would make unions quadratic on softmaxes and reductions over channels.
pub const CAP: usize = 32;

pub(crate) fn label(layer: usize, channel: usize) -> Label {
    ((layer as u64) << 32) | channel as u64
}

fn all_of(layer: u64) -> Label {
    (layer << 32) | ALL
}

pub(crate) fn source(l: Label) -> Source {
    if l == INPUT {
        Source::Input
    } else if l & ALL == ALL {
        Source::AllOf {
            layer: (l >> 32) as usize,
        }
    } else {
        Source::Channel {
            layer: (l >> 32) as usize,
            channel: (l & ALL) as usize,
        }
    }
}

/// Interned label sets; id 0 is the empty set (constants only).
struct Sets {
    sets: Vec<Vec<Label>>,
    ids: HashMap<Vec<Label>, u32>,
    unions: HashMap<(u32, u32), u32>,
}

impl Sets {
    fn new() -> Self {
        let mut s = Self {
            sets: Vec::new(),
            ids: HashMap::new(),
            unions: HashMap::new(),
        };
        s.intern(Vec::new());
        s
    }

    fn intern(&mut self, mut v: Vec<Label>) -> u32 {
        v.sort_unstable();
        v.dedup();
        normalise(&mut v);
        if let Some(&id) = self.ids.get(&v) {
            return id;
        }
        let id = self.sets.len() as u32;
        self.sets.push(v.clone());
        self.ids.insert(v, id);
        id
    }

    fn union(&mut self, a: u32, b: u32) -> u32 {
        if a == b || b == 0 {
            return a;
        }
        if a == 0 {
            return b;
        }
        let key = (a.min(b), a.max(b));
        if let Some(&u) = self.unions.get(&key) {
            return u;
        }
        let mut v = self.sets[a as usize].clone();
        v.extend_from_slice(&self.sets[b as usize]);
        let u = self.intern(v);
        self.unions.insert(key, u);
        u
    }

    fn union_all(&mut self, ids: impl IntoIterator<Item = u32>) -> u32 {
        ids.into_iter().fold(0, |acc, x| self.union(acc, x))
    }
}

/// Drop channels covered by an `AllOf` of their layer; past [`CAP`], mix
/// every layer with more than one channel in the set (then every layer).
fn normalise(v: &mut Vec<Label>) {
    let alls: Vec<u64> = v
        .iter()
        .filter(|&&l| l != INPUT && l & ALL == ALL)
        .map(|&l| l >> 32)
        .collect();
    if !alls.is_empty() {
        v.retain(|&l| l == INPUT || l & ALL == ALL || !alls.contains(&(l >> 32)));
    }
    if v.len() <= CAP {
        return;
    }
    let mut per_layer: HashMap<u64, usize> = HashMap::new();
    for &l in v.iter().filter(|&&l| l != INPUT) {
        *per_layer.entry(l >> 32).or_default() += 1;
    }
    let mix = |v: &mut Vec<Label>, pick: &dyn Fn(usize) -> bool| {
        let mut out: Vec<Label> = v
            .iter()
            .map(|&l| match l {
                INPUT => INPUT,
                l if pick(per_layer[&(l >> 32)]) => all_of(l >> 32),
                l => l,
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        *v = out;
    };
    mix(v, &|n| n > 1);
    if v.len() > CAP {
        mix(v, &|_| true);
    }
}

/// Per-value sources: one set per axis-0 slice when every slice is uniform
/// (the common case: a conv's output), else one per element.
#[derive(Clone, Debug)]
enum Tags {
    Chan(Vec<u32>),
    Elem(Vec<u32>),
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Elements per axis-0 slice.
fn inner(shape: &[usize]) -> usize {
    if shape.len() <= 1 {
        1
    } else {
        numel(&shape[1..])
    }
}

impl Tags {
    fn elements(&self, shape: &[usize]) -> Cow<'_, [u32]> {
        match self {
            Tags::Elem(v) => Cow::Borrowed(v),
            Tags::Chan(v) => {
                let per = inner(shape);
                Cow::Owned(
                    v.iter()
                        .flat_map(|&s| std::iter::repeat_n(s, per))
                        .collect(),
                )
            }
        }
    }

    /// Store per channel when each axis-0 slice carries one set.
    fn compress(shape: &[usize], v: Vec<u32>) -> Self {
        let per = inner(shape);
        if per == 0 || v.is_empty() {
            return Tags::Elem(v);
        }
        if v.chunks(per).all(|c| c.iter().all(|&x| x == c[0])) {
            Tags::Chan(v.chunks(per).map(|c| c[0]).collect())
        } else {
            Tags::Elem(v)
        }
    }

    /// The set of each axis-0 slice (the union over the slice).
    fn per_channel(&self, shape: &[usize], sets: &mut Sets) -> Vec<u32> {
        match self {
            Tags::Chan(v) => v.clone(),
            Tags::Elem(v) => {
                let per = inner(shape).max(1);
                v.chunks(per)
                    .map(|c| sets.union_all(c.iter().copied()))
                    .collect()
            }
        }
    }
}

/// What each input node of every layer reads, and what reaches the outputs.
pub struct Channels {
    sets: Vec<Vec<Label>>,
    /// Per layer, the set read by each input node (channel or feature).
    inputs: Vec<Vec<u32>>,
    /// Sources that reach a graph output through ops without weights.
    free: Vec<Label>,
}

impl Channels {
    /// Follow every element of `net` from the layers' outputs to the next
    /// layers' inputs and the graph outputs.
    pub fn of(net: &Network) -> Self {
        let layer_of = net.layer_of_node();
        let mut sets = Sets::new();
        let mut uses = vec![0usize; net.values.len()];
        for n in &net.nodes {
            for &v in &n.inputs {
                uses[v] += 1;
            }
        }
        for &o in &net.outputs {
            uses[o] += 1;
        }
        let mut tags: Vec<Option<Tags>> = vec![None; net.values.len()];
        let input = sets.intern(vec![INPUT]);
        for &i in &net.inputs {
            let c = net.values[i].shape.first().copied().unwrap_or(1);
            tags[i] = Some(Tags::Chan(vec![input; c]));
        }
        let mut inputs = vec![Vec::new(); net.layers.len()];
        for (ni, node) in net.nodes.iter().enumerate() {
            let empty = |v: usize| Tags::Elem(vec![0; numel(&net.values[v].shape)]);
            let ins: Vec<Tags> = node
                .inputs
                .iter()
                .map(|&v| tags[v].clone().unwrap_or_else(|| empty(v)))
                .collect();
            let out = match layer_of[ni] {
                Some(li) => {
                    inputs[li] = layer_inputs(net, node, &ins[0], &mut sets);
                    layer_output(net, node, li, &mut sets)
                }
                None => propagate(net, node, &ins, &mut sets),
            };
            tags[node.output] = Some(out);
            // Free a value once its last reader is done: only the values
            // between two layers are ever held.
            for &v in &node.inputs {
                uses[v] -= 1;
                if uses[v] == 0 {
                    tags[v] = None;
                }
            }
        }
        let mut free = Vec::new();
        for &o in &net.outputs {
            if let Some(t) = &tags[o] {
                let all = t.per_channel(&net.values[o].shape, &mut sets);
                let id = sets.union_all(all);
                free.extend_from_slice(&sets.sets[id as usize]);
            }
        }
        free.sort_unstable();
        free.dedup();
        Self {
            sets: sets.sets,
            inputs,
            free,
        }
    }

    /// The sources of input node `node` of layer `layer`.
    pub fn reads(&self, layer: usize, node: usize) -> impl Iterator<Item = Source> + '_ {
        self.labels(self.inputs[layer][node])
            .iter()
            .map(|&l| source(l))
    }

    /// True when output channel `channel` of `layer` reaches a graph output
    /// through ops without weights (so it is consumed whatever is placed).
    pub fn is_free(&self, layer: usize, channel: usize) -> bool {
        let l = label(layer, channel);
        self.free.binary_search(&l).is_ok()
            || self.free.binary_search(&all_of(layer as u64)).is_ok()
    }

    /// Interned set id of every input node of `layer`.
    pub(crate) fn input_sets(&self, layer: usize) -> &[u32] {
        &self.inputs[layer]
    }

    pub(crate) fn labels(&self, id: u32) -> &[Label] {
        &self.sets[id as usize]
    }
}

/// The set each input node of a layer reads: a conv's input channels
/// (axis 0), a dense layer's input features (the last axis, over every
/// leading position).
fn layer_inputs(net: &Network, node: &Node, input: &Tags, sets: &mut Sets) -> Vec<u32> {
    let shape = &net.values[node.inputs[0]].shape;
    match &node.op {
        Op::Dense { dense, .. } if shape.len() != 1 => {
            let f = dense.in_features;
            let el = input.elements(shape);
            let mut acc = vec![0u32; f];
            for (e, &s) in el.iter().enumerate() {
                acc[e % f] = sets.union(acc[e % f], s);
            }
            acc
        }
        _ => input.per_channel(shape, sets),
    }
}

/// A layer's output: its own channels (axis 0 of a conv, the last axis of
/// a dense layer).
fn layer_output(net: &Network, node: &Node, li: usize, sets: &mut Sets) -> Tags {
    let shape = &net.values[node.output].shape;
    match &node.op {
        Op::Dense { dense, .. } if shape.len() != 1 => {
            let f = dense.out_features;
            let ids: Vec<u32> = (0..f).map(|c| sets.intern(vec![label(li, c)])).collect();
            Tags::Elem((0..numel(shape)).map(|e| ids[e % f]).collect())
        }
        _ => {
            let c = shape.first().copied().unwrap_or(1);
            Tags::Chan((0..c).map(|c| sets.intern(vec![label(li, c)])).collect())
        }
    }
}

/// The sources of a non-weight op's output, from its inputs'.
fn propagate(net: &Network, node: &Node, ins: &[Tags], sets: &mut Sets) -> Tags {
    let shape_of = |v: usize| net.values[v].shape.as_slice();
    let is = shape_of(node.inputs[0]);
    let os = shape_of(node.output);
    match &node.op {
        // Layers are handled by the caller.
        Op::Conv { .. } | Op::Dense { .. } => unreachable!("layers have their own arm"),
        Op::Norm(Norm::Lrn { size, .. }) => lrn(&ins[0], is, *size, sets),
        Op::Norm(_) | Op::Activation(_) | Op::Identity => ins[0].clone(),
        Op::Pool(p) => match &ins[0] {
            // A window stays inside its channel.
            Tags::Chan(v) => Tags::Chan(v.clone()),
            Tags::Elem(v) => pool(v, is, os, p, sets),
        },
        Op::GlobalPool(_) => Tags::Chan(ins[0].per_channel(is, sets)),
        Op::Reshape => Tags::compress(os, ins[0].elements(is).into_owned()),
        Op::Transpose(perm) => {
            let el = ins[0].elements(is);
            let (ist, ost) = (strides(is), strides(os));
            let v = (0..numel(os))
                .map(|e| {
                    let src: usize = (0..perm.len())
                        .map(|d| ((e / ost[d]) % os[d]) * ist[perm[d]])
                        .sum();
                    el[src]
                })
                .collect();
            Tags::compress(os, v)
        }
        Op::Add | Op::Binary(_) | Op::Where => {
            let shapes: Vec<&[usize]> = node.inputs.iter().map(|&v| shape_of(v)).collect();
            join(ins, &shapes, os, sets)
        }
        Op::Concat(axis) => {
            let shapes: Vec<&[usize]> = node.inputs.iter().map(|&v| shape_of(v)).collect();
            concat(ins, &shapes, os, *axis)
        }
        Op::Softmax(axis) | Op::LogSoftmax(axis) => {
            let v = mix_axes(&ins[0].elements(is), is, &[*axis], sets);
            let el = expand_reduced(&v, is, &[*axis]);
            Tags::compress(os, el)
        }
        Op::Mix(mix) => {
            let view = mix.view.clone().unwrap_or_else(|| is.to_vec());
            let reduced = mix_axes(&ins[0].elements(is), &view, &mix.axes, sets);
            match mix.kind {
                // Reduced shape, with or without the unit axes: same order.
                MixKind::Reduce { .. } => Tags::compress(os, reduced),
                MixKind::Normalize { .. } => {
                    Tags::compress(os, expand_reduced(&reduced, &view, &mix.axes))
                }
            }
        }
        Op::MatMul => matmul(
            ins,
            shape_of(node.inputs[0]),
            shape_of(node.inputs[1]),
            os,
            sets,
        ),
        Op::Gather(map) => {
            let mut src: Vec<u32> = Vec::new();
            for (t, &v) in ins.iter().zip(&node.inputs) {
                src.extend_from_slice(&t.elements(shape_of(v)));
            }
            let v = (0..map.len())
                .map(|e| {
                    // Indices past the inputs are constants: no source.
                    let ids: Vec<u32> = map
                        .taps_of(e)
                        .filter(|&(i, w)| i < src.len() && w != 0.0)
                        .map(|(i, _)| src[i])
                        .collect();
                    sets.union_all(ids)
                })
                .collect();
            Tags::compress(os, v)
        }
    }
}

/// LRN: channel `c` reads channels `c - (size-1)/2 ..= c + size/2`.
fn lrn(t: &Tags, shape: &[usize], size: usize, sets: &mut Sets) -> Tags {
    let c = shape.first().copied().unwrap_or(1);
    let before = size.saturating_sub(1) / 2;
    let after = size / 2;
    let window = |ch: usize| ch.saturating_sub(before)..(ch + after + 1).min(c);
    match t {
        Tags::Chan(v) => Tags::Chan(
            (0..c)
                .map(|ch| sets.union_all(window(ch).map(|k| v[k])))
                .collect(),
        ),
        Tags::Elem(v) => {
            let per = inner(shape);
            let out = (0..v.len())
                .map(|e| {
                    let (ch, r) = (e / per, e % per);
                    sets.union_all(window(ch).map(|k| v[k * per + r]))
                })
                .collect();
            Tags::compress(shape, out)
        }
    }
}

/// A windowed pool over `[C, H, W]` elements: each output reads its window.
fn pool(
    v: &[u32],
    is: &[usize],
    os: &[usize],
    p: &crate::graph::op::Pool,
    sets: &mut Sets,
) -> Tags {
    let (c, h, w) = (is[0], is[1], is[2]);
    let (oh, ow) = (os[1], os[2]);
    let mut out = Vec::with_capacity(c * oh * ow);
    for ch in 0..c {
        for y in 0..oh {
            for x in 0..ow {
                let mut acc = 0;
                for ky in 0..p.kernel[0] {
                    let Some(qy) = p.window.source(0, y, ky, h) else {
                        continue;
                    };
                    for kx in 0..p.kernel[1] {
                        if let Some(qx) = p.window.source(1, x, kx, w) {
                            acc = sets.union(acc, v[(ch * h + qy) * w + qx]);
                        }
                    }
                }
                out.push(acc);
            }
        }
    }
    Tags::compress(os, out)
}

/// Elementwise joins (Add, gates, Where): each output element reads the
/// elements of every operand that produce it.
fn join(ins: &[Tags], shapes: &[&[usize]], os: &[usize], sets: &mut Sets) -> Tags {
    let c = os.first().copied().unwrap_or(1);
    // Per channel when every operand is, with the channel axis aligned.
    let aligned = ins.iter().zip(shapes).all(|(t, s)| {
        matches!(t, Tags::Chan(_))
            && s.len() == os.len()
            && (s.first() == Some(&c) || s.first() == Some(&1))
    });
    if aligned && !os.is_empty() {
        let out = (0..c)
            .map(|ch| {
                let ids: Vec<u32> = ins
                    .iter()
                    .map(|t| match t {
                        Tags::Chan(v) => v[if v.len() == 1 { 0 } else { ch }],
                        Tags::Elem(_) => unreachable!("checked above"),
                    })
                    .collect();
                sets.union_all(ids)
            })
            .collect();
        return Tags::Chan(out);
    }
    let n = numel(os);
    let mut acc = vec![0u32; n];
    for (t, s) in ins.iter().zip(shapes) {
        let el = t.elements(s);
        let src = crate::analysis::elements::broadcast_source(s, os);
        for (e, a) in acc.iter_mut().enumerate() {
            *a = sets.union(*a, el[src(e)]);
        }
    }
    Tags::compress(os, acc)
}

fn concat(ins: &[Tags], shapes: &[&[usize]], os: &[usize], axis: usize) -> Tags {
    if axis == 0 && ins.iter().all(|t| matches!(t, Tags::Chan(_))) {
        return Tags::Chan(
            ins.iter()
                .flat_map(|t| match t {
                    Tags::Chan(v) => v.clone(),
                    Tags::Elem(_) => unreachable!("checked above"),
                })
                .collect(),
        );
    }
    let mut out = vec![0u32; numel(os)];
    let ws = strides(os);
    let mut offset = 0;
    for (t, s) in ins.iter().zip(shapes) {
        let el = t.elements(s);
        let ps = strides(s);
        for (e, &id) in el.iter().enumerate() {
            let at: usize = (0..s.len())
                .map(|d| {
                    let i = (e / ps[d]) % s[d];
                    (if d == axis { i + offset } else { i }) * ws[d]
                })
                .sum();
            out[at] = id;
        }
        offset += s[axis];
    }
    Tags::compress(os, out)
}

/// The union over `axes` of `view`: one set per element of the reduced
/// shape (reduced axes of size 1), row-major.
fn mix_axes(el: &[u32], view: &[usize], axes: &[usize], sets: &mut Sets) -> Vec<u32> {
    let reduced: Vec<usize> = view
        .iter()
        .enumerate()
        .map(|(d, &n)| if axes.contains(&d) { 1 } else { n })
        .collect();
    let mut acc = vec![0u32; numel(&reduced)];
    let key = crate::analysis::elements::broadcast_source(&reduced, view);
    for (e, &id) in el.iter().enumerate() {
        let k = key(e);
        acc[k] = sets.union(acc[k], id);
    }
    acc
}

/// Every element of `view` gets the set of its slice.
fn expand_reduced(reduced: &[u32], view: &[usize], axes: &[usize]) -> Vec<u32> {
    let rs: Vec<usize> = view
        .iter()
        .enumerate()
        .map(|(d, &n)| if axes.contains(&d) { 1 } else { n })
        .collect();
    let key = crate::analysis::elements::broadcast_source(&rs, view);
    (0..numel(view)).map(|e| reduced[key(e)]).collect()
}

/// `out[.., m, n]` reads row `m` of the left operand and column `n` of the
/// right one (numpy `matmul`: a 1-D operand is a row or column vector).
fn matmul(ins: &[Tags], a: &[usize], b: &[usize], os: &[usize], sets: &mut Sets) -> Tags {
    let (ea, eb) = (ins[0].elements(a), ins[1].elements(b));
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let n = b2[b2.len() - 1];
    // Row unions of the left operand, column unions of the right one, per batch.
    let rows: Vec<u32> = ea
        .chunks(k.max(1))
        .map(|r| sets.union_all(r.iter().copied()))
        .collect();
    let kb = b2[b2.len() - 2];
    let mut cols = Vec::with_capacity(ea.len());
    for batch in eb.chunks((kb * n).max(1)) {
        for j in 0..n {
            let ids: Vec<u32> = (0..kb).map(|i| batch[i * n + j]).collect();
            cols.push(sets.union_all(ids));
        }
    }
    let (ba, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
    let batch_len = os
        .len()
        .saturating_sub(usize::from(a.len() > 1) + usize::from(b.len() > 1));
    let batch: Vec<usize> = os[..batch_len].to_vec();
    let (ia, ib) = (
        crate::analysis::elements::broadcast_source(ba, &batch),
        crate::analysis::elements::broadcast_source(bb, &batch),
    );
    let nb = numel(&batch);
    let mut out = Vec::with_capacity(nb * m * n);
    for bi in 0..nb {
        let (pa, pb) = (ia(bi), ib(bi));
        for i in 0..m {
            for j in 0..n {
                out.push(sets.union(rows[pa * m + i], cols[pb * n + j]));
            }
        }
    }
    Tags::compress(os, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::index_map;
    use crate::graph::op::{Binary, Mix, MixKind, PoolKind, Reduce, Window};
    use crate::graph::tensor::ConstTensor;
    use crate::graph::NetworkBuilder;

    fn w(s: Vec<usize>) -> ConstTensor {
        let n = s.iter().product();
        ConstTensor::f32(s, vec![0.1; n])
    }

    fn conv(b: &mut NetworkBuilder, name: &str, x: usize, out: usize, inp: usize) -> usize {
        b.conv(
            name,
            x,
            &format!("w{name}"),
            w(vec![out, inp, 1, 1]),
            None,
            Window::same(1, 0),
            1,
        )
        .unwrap()
    }

    fn chan(layer: usize, channel: usize) -> Source {
        Source::Channel { layer, channel }
    }

    #[test]
    fn gate_joins_both_operands_channel_by_channel() {
        // Squeeze-and-excite: x * sigmoid(fc(pool(x))) broadcast over H, W.
        let mut b = NetworkBuilder::new("se");
        let x = b.input("x", vec![2, 4, 4]).unwrap();
        let a = conv(&mut b, "a", x, 3, 2);
        let g = b.global_pool("g", a, PoolKind::Avg).unwrap();
        let f = b.flatten("f", g);
        let s = b.dense("s", f, "ws", w(vec![3, 3]), None).unwrap();
        let s = b.reshape("r", s, vec![3, 1, 1]).unwrap();
        let y = b.binary("mul", Binary::Mul, a, s).unwrap();
        let c = conv(&mut b, "c", y, 2, 3);
        b.output(c);
        let net = b.finish().unwrap();
        let ch = Channels::of(&net);
        // The dense layer's feature 2 is `a`'s channel 2.
        assert_eq!(ch.reads(1, 2).collect::<Vec<_>>(), vec![chan(0, 2)]);
        // `c`'s input channel 1 reads `a`'s channel 1 and the gate's row 1.
        assert_eq!(
            ch.reads(2, 1).collect::<Vec<_>>(),
            vec![chan(0, 1), chan(1, 1)]
        );
        assert!(ch.is_free(2, 1) && !ch.is_free(0, 1));
    }

    #[test]
    fn gather_maps_move_channels_and_constants_start_nothing() {
        let mut b = NetworkBuilder::new("gather");
        let x = b.input("x", vec![2, 3, 3]).unwrap();
        let a = conv(&mut b, "a", x, 4, 2);
        // Take channels [3, 1] of `a`.
        let (m, shape) = index_map::gather(&[4, 3, 3], 0, &[3, 1], &[2]).unwrap();
        let gth = b.gather("g", &[a], m, shape).unwrap();
        // Zero-pad the spatial plane: padding reads constants.
        let (m, shape) = index_map::pad(
            &[2, 3, 3],
            &[0, 1, 1],
            &[0, 1, 1],
            index_map::PadMode::Constant(0.0),
        )
        .unwrap();
        let p = b.gather("p", &[gth], m, shape).unwrap();
        let c = conv(&mut b, "c", p, 2, 2);
        b.output(c);
        let net = b.finish().unwrap();
        let ch = Channels::of(&net);
        assert_eq!(ch.reads(1, 0).collect::<Vec<_>>(), vec![chan(0, 3)]);
        assert_eq!(ch.reads(1, 1).collect::<Vec<_>>(), vec![chan(0, 1)]);
    }

    #[test]
    fn mixing_ops_collapse_to_every_channel_past_the_cap() {
        let mut b = NetworkBuilder::new("mix");
        let x = b.input("x", vec![3, 2, 2]).unwrap();
        let a = conv(&mut b, "a", x, 40, 3);
        // Softmax over channels: every element reads all 40 channels.
        let s = b.softmax("s", a, 0, false).unwrap();
        let c = conv(&mut b, "c", s, 2, 40);
        // A mean over the plane keeps channels apart.
        let r = b
            .mix(
                "m",
                a,
                Mix {
                    kind: MixKind::Reduce {
                        f: Reduce::Mean,
                        keepdims: false,
                    },
                    view: None,
                    axes: vec![1, 2],
                },
            )
            .unwrap();
        let d = b.dense("d", r, "wd", w(vec![2, 40]), None).unwrap();
        b.output(c);
        b.output(d);
        let net = b.finish().unwrap();
        let ch = Channels::of(&net);
        assert_eq!(
            ch.reads(1, 5).collect::<Vec<_>>(),
            vec![Source::AllOf { layer: 0 }]
        );
        assert_eq!(ch.reads(2, 7).collect::<Vec<_>>(), vec![chan(0, 7)]);
    }

    #[test]
    fn attention_product_reads_a_row_and_a_column() {
        // Tokens [4, 6] -> q, k (dense over the last axis); scores = q k^T.
        let mut b = NetworkBuilder::new("attn");
        let x = b.input("x", vec![4, 6]).unwrap();
        let q = b.dense("q", x, "wq", w(vec![3, 6]), None).unwrap();
        let k = b.dense("k", x, "wk", w(vec![3, 6]), None).unwrap();
        let kt = b.transpose("kt", k, vec![1, 0]).unwrap();
        let s = b.matmul("s", q, kt).unwrap();
        let o = b.dense("o", s, "wo", w(vec![2, 4]), None).unwrap();
        b.output(o);
        let net = b.finish().unwrap();
        let ch = Channels::of(&net);
        // Each score column j reads every q feature and every k feature.
        let got: Vec<Source> = ch.reads(2, 0).collect();
        assert!(
            got.contains(&chan(0, 2)) && got.contains(&chan(1, 0)),
            "{got:?}"
        );
        assert_eq!(got.len(), 6);
    }
}
