//! Effective paths: how many input -> output paths of a masked network run
//! through kept weights only, as a base-10 logarithm.
//!
//! One of the two shape metrics of node-path balancing (Pham et al.,
//! *Understanding pruning at initialization: an effective node-path balancing
//! perspective*, papers/npb-node-path-balancing-abstract.txt; reference code
//! pvh1602/NPB, `Utils/metrics.py`, `measure_node_path`). The other metric,
//! effective nodes, is [`crate::analysis::effective::NodeCounts::functional`]: a unit
//! that lies on some effective path.
//!
//! # What is counted
//! Unroll the network into its element graph: one node per element of every
//! value, and these edges:
//! - Conv: `in[i, q] -> out[o, p]` for every kept tap `(o, i, t)` whose
//!   source `q` of output position `p` is a real input position (zero
//!   padding is no node); Dense: `in[i] -> out[o]` per kept weight;
//! - max and average pools: every real position of the window is an edge,
//!   and global pools every position of the channel (each window position
//!   is a separate route, so a pool adds counts);
//! - BatchNorm, LRN, elementwise maps by constants (Mul, Add, Sub, Div,
//!   Pow, PRelu, ...), activations, Identity: one to one, as in the
//!   effective-sparsity analysis ([`crate::analysis::effective`]), which
//!   reads them the same way;
//! - Reshape, Transpose, Concat: one to one, element to element; Add and
//!   every elementwise function of several activations (Mul, Div, Max,
//!   Where, ...): each operand element to every output element it
//!   broadcasts to, so a product counts as the sum of its operands;
//! - MatMul of two activations: `out[.., m, n]` from every element of row
//!   `m` of the left and of column `n` of the right operand, so its count is
//!   `sum_k A[m, k] + sum_k B[k, n]`;
//! - dead factors (CONVENTIONS; [`crate::analysis::factors`]): at a product
//!   (Mul, Div's denominator, MatMul) the edge from one factor's element
//!   exists only where the other factor's element is alive (reached by a
//!   path, or a non-zero constant in the masked network): a Mul counts
//!   `A * alive(B) + B * alive(A)`, a MatMul
//!   `sum_k A[m, k] alive(B[k, n]) + alive(A[m, k]) B[k, n]`;
//! - normalisations, reductions and Softmax over some axes: every element of
//!   a slice to every output element of that slice (the reduced element, or
//!   every element of the slice when the shape is kept);
//! - element maps (Gather, Slice, Pad, Resize, ...): each stored tap into a
//!   node input is one edge, whatever its interpolation weight, as each
//!   window position of an average pool is (a tap into the map's constants
//!   is no node, as padding is not);
//! - dense layers over leading axes: the dense edges at every position.
//!
//! A path runs from an element of a graph input to an element of a graph
//! output. Biases and constants start no path. The number of paths is the
//! output sum of the network with every kept weight 1 and every pruned one
//! 0, all-ones input, pools summing their windows and everything else the
//! identity: the SynFlow forward with binary weights, which is how the NPB
//! code counts (all parameters set to one, all-ones input, float64).
//!
//! Where the NPB code differs, we follow the graph definition: it sets biases
//! to one too (so it also counts paths that start at a bias), keeps max-pools
//! as maxima (one window position instead of all), multiplies average-pool
//! modules by the kernel size when it is an int and by the sum of its sides
//! when it is a tuple (the window sum only for a `(2, 2)` tuple), and global
//! average pools by `h * w` (the window sum, as here); it removes BatchNorm
//! (as here).
//!
//! # Numerics
//! Counts grow like the product of the layer widths and overflow f64 on deep
//! networks, so every value keeps f64 counts with one power-of-two scale
//! ([`scaled::Scaled`]): exact rescaling, alignment of scales at Adds and
//! Concats, and the final sum taken in log space. The result carries f64
//! rounding only (relative error of order 1e-15 per operation). A
//! convolution is a masked product per group ([`product::Product`]: a GEMM,
//! or a sum of columns for sparse rows), or, when the group keeps every
//! weight, the window sums of its summed input channels.
//!
//! ```
//! use maskforge::{zoo, mask::MaskSet, analysis::paths::effective_paths};
//! // A dense 4-3-2 MLP has 4 * 3 * 2 = 24 input -> output paths.
//! let net = zoo::build("mlp:4-3-2", 0).unwrap();
//! let p = effective_paths(&net, &MaskSet::dense(&net)).unwrap();
//! assert!((p.log10 - 24f64.log10()).abs() < 1e-12);
//! // Cut every weight of the first layer: no path is left.
//! let mut m = MaskSet::dense(&net);
//! m.layers[0] = maskforge::bitset::BitSet::new(12);
//! assert_eq!(effective_paths(&net, &m).unwrap().log10, f64::NEG_INFINITY);
//! ```

pub mod product;
pub mod scaled;

use std::ops::Range;

use crate::analysis::elements::{input_taps, MatMulDims, Slices};
use crate::analysis::factors;
use crate::bitset::BitSet;
use crate::error::Result;
use crate::graph::op::{Conv2d, IndexMap, Op, Pool, Window};
use crate::graph::{Network, Node, ValueId};
use crate::mask::MaskSet;

use scaled::{Scaled, Underflow};

/// The number of effective paths of a masked network.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct PathCount {
    /// log10 of the count; `-inf` when no path is left.
    pub log10: f64,
    /// Element counts that fell more than 2^1022 below the largest count of
    /// their value and lost precision ([`scaled::Underflow`]); when nonzero,
    /// `log10` may be low. Zero on every zoo model.
    pub underflowed: usize,
}

impl PathCount {
    /// True when no input -> output path is left.
    pub fn is_zero(&self) -> bool {
        self.log10 == f64::NEG_INFINITY
    }
}

/// Count the effective paths of `masks` on `net`.
pub fn effective_paths(net: &Network, masks: &MaskSet) -> Result<PathCount> {
    let (vals, lost) = forward(net, masks, None, true)?;
    let log2 = scaled::log2_sum(net.outputs.iter().map(|&o| {
        vals[o]
            .as_ref()
            .map_or(f64::NEG_INFINITY, Scaled::log2_total)
    }));
    Ok(PathCount {
        log10: log2 * std::f64::consts::LOG10_2,
        underflowed: lost.0,
    })
}

/// The path counts of every element of `value`: how many effective paths
/// from the graph inputs end there. The forward stops at the node that
/// produces it, so a value near the input costs little (NPB asks for the
/// input of each layer in turn).
pub fn counts_at(net: &Network, masks: &MaskSet, value: ValueId) -> Result<Scaled> {
    let (mut vals, _) = forward(net, masks, Some(value), true)?;
    vals[value]
        .take()
        .ok_or_else(|| crate::error::Error::internal(format!("no path counts for value {value}")))
}

/// [`counts_at`] with every product read as the sum of its operands (no
/// dead factors): what a constructive method that places by path counts
/// (NPB) reads while the masks after `value` are not placed yet.
pub fn counts_at_sum_rule(net: &Network, masks: &MaskSet, value: ValueId) -> Result<Scaled> {
    let (mut vals, _) = forward(net, masks, Some(value), false)?;
    vals[value]
        .take()
        .ok_or_else(|| crate::error::Error::internal(format!("no path counts for value {value}")))
}

/// The counting forward pass; with `until`, it stops once that value is
/// known and keeps it. `dead_factors`: products follow CONVENTIONS' dead
/// factor rule, else they count as sums.
fn forward(
    net: &Network,
    masks: &MaskSet,
    until: Option<ValueId>,
    dead_factors: bool,
) -> Result<(Vec<Option<Scaled>>, Underflow)> {
    masks.check_fits(net)?;
    let layer_of = net.layer_of_node();
    let kept = |v: ValueId| net.outputs.contains(&v) || until == Some(v);
    let mut uses = vec![0usize; net.values.len()];
    for node in &net.nodes {
        for &v in &node.inputs {
            uses[v] += 1;
        }
    }
    let mut lost = Underflow::default();
    let mut vals: Vec<Option<Scaled>> = vec![None; net.values.len()];
    for &i in &net.inputs {
        vals[i] = Some(Scaled::ones(net.value(i).numel()));
    }
    // The constant values dead factors read: computed at the first product
    // where they can matter (`None` inside: the network cannot run).
    let mut nonzero: Option<Option<Vec<Option<BitSet>>>> = None;
    let stop = until.or_else(|| {
        net.nodes
            .iter()
            .rev()
            .find(|n| factors::Product::of(&n.op).is_some())
            .map(|n| n.output)
    });
    for (ni, node) in net.nodes.iter().enumerate() {
        if until.is_some_and(|v| vals[v].is_some()) {
            break;
        }
        let x = node.inputs[0];
        if passes_through(&node.op) && uses[x] == 1 && !kept(x) {
            // The last reader of `x` changes no count: hand the data over.
            uses[x] = 0;
            vals[node.output] = vals[x].take();
            continue;
        }
        let ins: Vec<&Scaled> = node
            .inputs
            .iter()
            .map(|&v| vals[v].as_ref().expect("nodes are in topological order"))
            .collect();
        let mask = layer_of[ni].map(|l| &masks.layers[l]);
        let product = factors::Product::of(&node.op).filter(|&p| {
            if !dead_factors {
                return false;
            }
            let reached: Vec<BitSet> = ins
                .iter()
                .map(|v| BitSet::from_fn(v.data.len(), |e| v.data[e] > 0.0))
                .collect();
            let shapes = [
                net.value(node.inputs[0]).shape.as_slice(),
                net.value(node.inputs[1]).shape.as_slice(),
            ];
            let out_shape = &net.value(node.output).shape;
            (0..2).any(|k| factors::matters(p, k, shapes, out_shape, &reached[k], &reached[1 - k]))
        });
        if product.is_some() && nonzero.is_none() {
            nonzero = Some(factors::constant_nonzero(
                net,
                masks,
                &factors::factor_values(net),
                stop,
            ));
        }
        let out = match (product, nonzero.as_ref().and_then(|n| n.as_ref())) {
            (Some(p), Some(nz)) => product_counts(net, node, p, &ins, nz, &mut lost),
            _ => step(net, node, &ins, mask, &mut lost)?,
        };
        vals[node.output] = Some(out);
        // Free a value once its last reader has run (outputs stay).
        for &v in &node.inputs {
            uses[v] -= 1;
            if uses[v] == 0 && !kept(v) {
                vals[v] = None;
            }
        }
    }
    Ok((vals, lost))
}

/// Ops whose output element `i` has exactly the paths of input element `i`.
fn passes_through(op: &Op) -> bool {
    matches!(
        op,
        Op::Norm(_) | Op::Activation(_) | Op::Identity | Op::Reshape
    )
}

/// The path counts of a product of two activations under the dead-factor
/// rule: an operand element's counts pass where the other operand's
/// element is alive (has paths, or a non-zero constant value).
fn product_counts(
    net: &Network,
    node: &Node,
    p: factors::Product,
    ins: &[&Scaled],
    nonzero: &[Option<BitSet>],
    lost: &mut Underflow,
) -> Scaled {
    let (parts, exp2) = Scaled::align(ins, lost);
    let shapes: Vec<&[usize]> = (0..2)
        .map(|k| net.value(node.inputs[k]).shape.as_slice())
        .collect();
    // alive(k) as 0/1 (all ones when operand k gates nothing or is never 0).
    let alive: Vec<Vec<f64>> = (0..2)
        .map(|k| {
            let nz = nonzero[node.inputs[k]].as_ref().filter(|_| p.gates(k));
            match nz {
                None => vec![1.0; parts[k].len()],
                Some(nz) => (0..parts[k].len())
                    .map(|e| f64::from(u8::from(parts[k][e] > 0.0 || nz.get(e))))
                    .collect(),
            }
        })
        .collect();
    let out_shape = &net.value(node.output).shape;
    let joined = match p {
        factors::Product::MatMul => {
            let d = MatMulDims::new(shapes[0], shapes[1]);
            let (m, k, n) = (d.m, d.k, d.n);
            let mut out = Vec::with_capacity(d.batches() * m * n);
            for (&ba, &bb) in d.a_of.iter().zip(&d.b_of) {
                for i in 0..m {
                    let row = (ba * m + i) * k;
                    for j in 0..n {
                        let mut c = 0.0;
                        for x in 0..k {
                            let col = (bb * k + x) * n + j;
                            c += parts[0][row + x] * alive[1][col]
                                + alive[0][row + x] * parts[1][col];
                        }
                        out.push(c);
                    }
                }
            }
            out
        }
        _ => {
            let a = broadcast_sum(&[&parts[0][..]], &shapes[..1], out_shape);
            let b = broadcast_sum(&[&parts[1][..]], &shapes[1..], out_shape);
            let al_a = broadcast_sum(&[&alive[0][..]], &shapes[..1], out_shape);
            let al_b = broadcast_sum(&[&alive[1][..]], &shapes[1..], out_shape);
            (0..a.len())
                .map(|e| a[e] * al_b[e] + b[e] * al_a[e])
                .collect()
        }
    };
    Scaled::new(joined, exp2, lost)
}

/// The path counts of one node's output.
fn step(
    net: &Network,
    node: &Node,
    ins: &[&Scaled],
    mask: Option<&BitSet>,
    lost: &mut Underflow,
) -> Result<Scaled> {
    let in_shape = &net.value(node.inputs[0]).shape;
    let out_shape = &net.value(node.output).shape;
    let x = ins[0];
    let data = match &node.op {
        Op::Mix(mix) => Slices::of_mix(in_shape, mix).sums(&x.data),
        Op::Softmax(axis) | Op::LogSoftmax(axis) => Slices::along(in_shape, *axis).sums(&x.data),
        Op::MatMul | Op::Gather(_) => {
            let (parts, exp2) = Scaled::align(ins, lost);
            let joined = match &node.op {
                Op::Gather(map) => gather_counts(map, &parts),
                _ => {
                    let d = MatMulDims::new(in_shape, &net.value(node.inputs[1]).shape);
                    matmul_counts(&d, &parts[0], &parts[1])
                }
            };
            return Ok(Scaled::new(joined, exp2, lost));
        }
        Op::Conv { conv, .. } => {
            conv_counts(conv, mask.expect("conv mask"), x, in_shape, out_shape)?
        }
        Op::Dense { dense, .. } => dense_counts(
            dense.out_features,
            dense.in_features,
            mask.expect("dense mask"),
            &x.data,
        ),
        Op::Pool(pool) => pool_counts(pool, &x.data, in_shape, out_shape),
        Op::GlobalPool(_) => channel_sums(&x.data, in_shape[0]),
        Op::Norm(_) | Op::Activation(_) | Op::Identity | Op::Reshape => {
            debug_assert!(passes_through(&node.op));
            return Ok(x.clone());
        }
        Op::Transpose(perm) => permute(&x.data, in_shape, perm),
        Op::Add | Op::Binary(_) | Op::Where | Op::Concat(_) => {
            let (parts, exp2) = Scaled::align(ins, lost);
            let shapes: Vec<&[usize]> = node
                .inputs
                .iter()
                .map(|&v| net.value(v).shape.as_slice())
                .collect();
            let joined = match &node.op {
                Op::Concat(axis) => concat(&parts, &shapes, *axis, out_shape),
                _ => broadcast_sum(&parts, &shapes, out_shape),
            };
            return Ok(Scaled::new(joined, exp2, lost));
        }
    };
    Ok(Scaled::new(data, x.exp2, lost))
}

/// Where each tap of a sliding window (a conv kernel or a pool) reads: per
/// kernel row the input row of each output row, per kernel column the input
/// column of each output column, `None` in the padding.
struct Taps {
    ys: Vec<Vec<Option<usize>>>,
    xs: Vec<Vec<Option<usize>>>,
    /// Input width and output width.
    w: usize,
    wo: usize,
}

impl Taps {
    fn new(window: &Window, kernel: [usize; 2], in_hw: [usize; 2], out_hw: [usize; 2]) -> Self {
        let axis = |a: usize| -> Vec<Vec<Option<usize>>> {
            (0..kernel[a])
                .map(|k| {
                    (0..out_hw[a])
                        .map(|o| window.source(a, o, k, in_hw[a]))
                        .collect()
                })
                .collect()
        };
        Taps {
            ys: axis(0),
            xs: axis(1),
            w: in_hw[1],
            wo: out_hw[1],
        }
    }

    fn count(&self) -> usize {
        self.ys.len() * self.xs.len()
    }

    /// Output positions of one channel.
    fn outputs(&self) -> usize {
        self.ys[0].len() * self.wo
    }

    /// True when tap `t` reads a real input position for some output.
    fn reads_data(&self, t: usize) -> bool {
        let kw = self.xs.len();
        self.ys[t / kw].iter().any(Option::is_some) && self.xs[t % kw].iter().any(Option::is_some)
    }

    /// Write into `buf` what tap `t` reads from `plane` for the output
    /// positions `ps` (whole output rows); padding leaves `buf` untouched.
    fn gather(&self, plane: &[f64], t: usize, ps: Range<usize>, buf: &mut [f64]) {
        let kw = self.xs.len();
        let (yt, xt) = (&self.ys[t / kw], &self.xs[t % kw]);
        for (row, y) in buf.chunks_mut(self.wo).zip(ps.start / self.wo..) {
            let Some(qy) = yt[y] else { continue };
            let line = &plane[qy * self.w..(qy + 1) * self.w];
            for (b, qx) in row.iter_mut().zip(xt) {
                if let Some(qx) = qx {
                    *b = line[*qx];
                }
            }
        }
    }

    /// `out[p] += sum over taps of what the tap reads from plane` (every
    /// real position of each window is one edge).
    fn add_window_sums(&self, plane: &[f64], out: &mut [f64]) {
        let mut col = vec![0.0; out.len()];
        for t in 0..self.count() {
            col.fill(0.0);
            self.gather(plane, t, 0..out.len(), &mut col);
            for (o, c) in out.iter_mut().zip(&col) {
                *o += c;
            }
        }
    }
}

fn conv_counts(
    conv: &Conv2d,
    mask: &BitSet,
    x: &Scaled,
    in_shape: &[usize],
    out_shape: &[usize],
) -> Result<Vec<f64>> {
    let plane = in_shape[1] * in_shape[2];
    let p_len = out_shape[1] * out_shape[2];
    let taps = Taps::new(
        &conv.window,
        conv.kernel,
        [in_shape[1], in_shape[2]],
        [out_shape[1], out_shape[2]],
    );
    let n_taps = taps.count();
    let (ipg, opg) = (conv.in_per_group(), conv.out_per_group());
    let live: Vec<bool> = x
        .data
        .chunks(plane)
        .map(|c| c.iter().any(|&v| v != 0.0))
        .collect();
    let block_bits = opg * ipg * n_taps;
    let mut out = vec![0.0; conv.out_channels * p_len];
    for g in 0..conv.groups {
        let inputs = &x.data[g * ipg * plane..(g + 1) * ipg * plane];
        let block = &mut out[g * opg * p_len..(g + 1) * opg * p_len];
        if mask.count_ones_in(g * block_bits, (g + 1) * block_bits) == block_bits {
            fully_kept_group(&taps, inputs, plane, block);
            continue;
        }
        let product = product::Product {
            mask,
            row_len: ipg * n_taps,
            rows: g * opg..(g + 1) * opg,
            p_len,
            step: taps.wo,
        };
        product.compute(
            |k| live[g * ipg + k / n_taps] && taps.reads_data(k % n_taps),
            |k, ps, buf| {
                let c = k / n_taps;
                taps.gather(&inputs[c * plane..(c + 1) * plane], k % n_taps, ps, buf)
            },
            block,
        )?;
    }
    Ok(out)
}

/// A group with every weight kept: each output channel reads every tap of
/// every input channel, so all of them are the window sums of one plane, the
/// sum of the input channels (sum first, shift once: the cost of one input
/// channel instead of all of them).
fn fully_kept_group(taps: &Taps, inputs: &[f64], plane: usize, block: &mut [f64]) {
    let mut sum = vec![0.0; plane];
    for channel in inputs.chunks(plane) {
        for (s, v) in sum.iter_mut().zip(channel) {
            *s += v;
        }
    }
    let mut row = vec![0.0; taps.outputs()];
    taps.add_window_sums(&sum, &mut row);
    for dst in block.chunks_mut(row.len()) {
        dst.copy_from_slice(&row);
    }
}

/// `out[p, o] = sum of x[p, i] over the kept weights (o, i)`, at every
/// position `p` of `x` (`[positions, n_in]`, one position for a plain
/// dense layer). A fully kept row (every row of a dense layer) reuses the
/// position's total, summed in the same order. The mask is walked once,
/// not once per position: a transformer's layers see 16 or more.
fn dense_counts(n_out: usize, n_in: usize, mask: &BitSet, x: &[f64]) -> Vec<f64> {
    let positions = x.len() / n_in;
    let totals: Vec<f64> = x.chunks(n_in).map(|row| row.iter().sum()).collect();
    let mut out = vec![0.0; positions * n_out];
    for o in 0..n_out {
        let start = o * n_in;
        let full = mask.count_ones_in(start, start + n_in) == n_in;
        for (p, row) in x.chunks(n_in).enumerate() {
            out[p * n_out + o] = if full {
                totals[p]
            } else {
                mask.ones_in(start, start + n_in)
                    .map(|b| row[b - start])
                    .sum()
            };
        }
    }
    out
}

/// Every real position of each window feeds the window's output.
fn pool_counts(pool: &Pool, x: &[f64], in_shape: &[usize], out_shape: &[usize]) -> Vec<f64> {
    let (plane, p_len) = (in_shape[1] * in_shape[2], out_shape[1] * out_shape[2]);
    let taps = Taps::new(
        &pool.window,
        pool.kernel,
        [in_shape[1], in_shape[2]],
        [out_shape[1], out_shape[2]],
    );
    let mut out = vec![0.0; in_shape[0] * p_len];
    for (src, dst) in x.chunks(plane).zip(out.chunks_mut(p_len)) {
        taps.add_window_sums(src, dst);
    }
    out
}

/// One sum per channel (a global pool: every position is an edge).
fn channel_sums(x: &[f64], channels: usize) -> Vec<f64> {
    let per = x.len() / channels.max(1);
    x.chunks(per.max(1)).map(|c| c.iter().sum()).collect()
}

/// `out[b, m, n] = sum_k a[ba, m, k] + sum_k b[bb, k, n]`.
fn matmul_counts(d: &MatMulDims, a: &[f64], b: &[f64]) -> Vec<f64> {
    let (m, k, n) = (d.m, d.k, d.n);
    let rows: Vec<f64> = a.chunks(k.max(1)).map(|r| r.iter().sum()).collect();
    let mut cols = vec![0.0; d.b_batches * n];
    for (bb, block) in b.chunks((k * n).max(1)).enumerate() {
        for line in block.chunks(n.max(1)) {
            for (c, v) in cols[bb * n..(bb + 1) * n].iter_mut().zip(line) {
                *c += v;
            }
        }
    }
    let mut out = Vec::with_capacity(d.batches() * m * n);
    for (&ba, &bb) in d.a_of.iter().zip(&d.b_of) {
        for i in 0..m {
            let r = rows[ba * m + i];
            out.extend(cols[bb * n..(bb + 1) * n].iter().map(|c| r + c));
        }
    }
    out
}

/// `out[e]` = the sum of the counts of its taps into the node's inputs
/// (`parts`, in order; constants count nothing).
fn gather_counts(map: &IndexMap, parts: &[impl AsRef<[f64]>]) -> Vec<f64> {
    let src: Vec<f64> = parts
        .iter()
        .flat_map(|p| p.as_ref().iter().copied())
        .collect();
    (0..map.len())
        .map(|e| input_taps(map, src.len(), e).map(|i| src[i]).sum())
        .collect()
}

/// Row-major strides of a shape.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Transposed data: output dim `d` is input dim `perm[d]`.
fn permute(x: &[f64], shape: &[usize], perm: &[usize]) -> Vec<f64> {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let (is, os) = (strides(shape), strides(&out_shape));
    (0..x.len())
        .map(|e| {
            let src: usize = (0..perm.len())
                .map(|d| ((e / os[d]) % out_shape[d]) * is[perm[d]])
                .sum();
            x[src]
        })
        .collect()
}

/// Elementwise sum with numpy broadcasting of every part to `out_shape`.
fn broadcast_sum(
    parts: &[impl AsRef<[f64]>],
    shapes: &[&[usize]],
    out_shape: &[usize],
) -> Vec<f64> {
    let n: usize = out_shape.iter().product();
    let os = strides(out_shape);
    let mut out = vec![0.0; n];
    for (part, &shape) in parts.iter().zip(shapes) {
        let part = part.as_ref();
        if shape == out_shape {
            for (o, v) in out.iter_mut().zip(part) {
                *o += v;
            }
            continue;
        }
        // Align dims from the right; a size-1 (or missing) dim repeats.
        let pad = out_shape.len() - shape.len();
        let full: Vec<usize> = std::iter::repeat_n(1, pad)
            .chain(shape.iter().copied())
            .collect();
        let fs = strides(&full);
        for (e, o) in out.iter_mut().enumerate() {
            let src: usize = (0..out_shape.len())
                .filter(|&d| full[d] != 1)
                .map(|d| ((e / os[d]) % out_shape[d]) * fs[d])
                .sum();
            *o += part[src];
        }
    }
    out
}

/// Concatenation of the parts along `axis`.
fn concat(
    parts: &[impl AsRef<[f64]>],
    shapes: &[&[usize]],
    axis: usize,
    out_shape: &[usize],
) -> Vec<f64> {
    // Row-major: for each index of the dims before `axis`, every part
    // contributes one contiguous block in turn.
    let outer: usize = out_shape[..axis].iter().product();
    let inner: usize = out_shape[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(out_shape.iter().product());
    for o in 0..outer {
        for (part, shape) in parts.iter().zip(shapes) {
            let len = shape[axis] * inner;
            out.extend_from_slice(&part.as_ref()[o * len..(o + 1) * len]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::op::{PoolKind, Window};
    use crate::graph::tensor::ConstTensor;
    use crate::graph::NetworkBuilder;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
    }

    #[test]
    fn dense_mlp_is_the_product_of_widths() {
        let net = crate::zoo::build("lenet300", 0).unwrap();
        let p = effective_paths(&net, &MaskSet::dense(&net)).unwrap();
        close(p.log10, (784.0f64 * 300.0 * 100.0 * 10.0).log10());
        assert_eq!(p.underflowed, 0);
    }

    #[test]
    fn deep_mlp_beyond_f64_matches_the_closed_form() {
        // 10 inputs, 160 hidden layers of 100 units, 10 outputs:
        // 10 * 100^160 * 10 = 10^322 paths, past f64's largest value.
        let widths: Vec<String> = std::iter::once("10".to_string())
            .chain(std::iter::repeat_n("100".to_string(), 160))
            .chain(std::iter::once("10".to_string()))
            .collect();
        let net = crate::zoo::build(&format!("mlp:{}", widths.join("-")), 0).unwrap();
        let p = effective_paths(&net, &MaskSet::dense(&net)).unwrap();
        close(p.log10, 322.0);
        assert_eq!(p.underflowed, 0);
    }

    /// A single 3x3 conv, stride 1, pad 1, on an n x n map: every output
    /// position reads as many real positions per axis as 3n - 2 in total.
    #[test]
    fn dense_conv_counts_taps_that_read_data() {
        let (c_in, c_out, n) = (3, 4, 5);
        let mut b = NetworkBuilder::new("conv");
        let x = b.input("x", vec![c_in, n, n]).unwrap();
        let w = ConstTensor::f32(vec![c_out, c_in, 3, 3], vec![1.0; c_out * c_in * 9]);
        let y = b
            .conv("c", x, "c.weight", w, None, Window::same(1, 1), 1)
            .unwrap();
        b.output(y);
        let net = b.finish().unwrap();
        let p = effective_paths(&net, &MaskSet::dense(&net)).unwrap();
        let per_axis = (3 * n - 2) as f64;
        close(
            p.log10,
            (c_out as f64 * c_in as f64 * per_axis * per_axis).log10(),
        );
    }

    #[test]
    fn pools_sum_their_windows() {
        // 4x4 ones, 3x3 max pool, stride 2, pad 1: per axis the windows hold
        // 2 and 3 real positions, so 5 * 5 = 25 paths per channel.
        let mut b = NetworkBuilder::new("pool");
        let x = b.input("x", vec![2, 4, 4]).unwrap();
        let pool = Pool {
            kind: PoolKind::Max,
            kernel: [3, 3],
            window: Window::same(2, 1),
            ceil: false,
        };
        let y = b.pool("p", x, pool).unwrap();
        b.output(y);
        let net = b.finish().unwrap();
        let p = effective_paths(&net, &MaskSet { layers: vec![] }).unwrap();
        close(p.log10, 50f64.log10());
    }

    #[test]
    fn residual_adds_align_scales() {
        // x -> [dense n x n] -> + x, repeated: each element's count grows by
        // a factor n + 1 per block; 200 blocks of width 100 give
        // 100 * 101^200 = 10^402.9 paths, past f64's range.
        let (n, blocks) = (100usize, 200);
        let mut b = NetworkBuilder::new("res");
        let mut x = b.input("x", vec![n]).unwrap();
        for i in 0..blocks {
            let w = ConstTensor::f32(vec![n, n], vec![1.0; n * n]);
            let h = b
                .dense(&format!("fc{i}"), x, &format!("fc{i}.weight"), w, None)
                .unwrap();
            x = b.add(&format!("add{i}"), &[x, h]).unwrap();
        }
        b.output(x);
        let net = b.finish().unwrap();
        let p = effective_paths(&net, &MaskSet::dense(&net)).unwrap();
        close(
            p.log10,
            (n as f64).log10() + blocks as f64 * ((n + 1) as f64).log10(),
        );
    }

    #[test]
    fn counts_too_far_below_their_tensor_are_flagged() {
        // concat(x, deep(x)): 4 elements with one path each next to 100
        // elements with 4 * 100^159 each, more than 2^1022 times as many.
        let mut b = NetworkBuilder::new("spread");
        let x = b.input("x", vec![4]).unwrap();
        let mut h = x;
        for i in 0..160 {
            let n_in = b.shape(h)[0];
            let w = ConstTensor::f32(vec![100, n_in], vec![1.0; 100 * n_in]);
            h = b
                .dense(&format!("fc{i}"), h, &format!("fc{i}.weight"), w, None)
                .unwrap();
        }
        let y = b.concat("cat", &[x, h], 0).unwrap();
        b.output(y);
        let net = b.finish().unwrap();
        let p = effective_paths(&net, &MaskSet::dense(&net)).unwrap();
        assert_eq!(p.underflowed, 4);
        // The four lost paths are invisible next to 4 * 100^160.
        close(p.log10, 4f64.log10() + 320.0);
    }

    #[test]
    fn layout_helpers() {
        // [2, 3] transposed.
        assert_eq!(
            permute(&[1., 2., 3., 4., 5., 6.], &[2, 3], &[1, 0]),
            vec![1., 4., 2., 5., 3., 6.]
        );
        // [2, 2] + [2, 1] broadcast.
        let s: [&[usize]; 2] = [&[2, 2], &[2, 1]];
        assert_eq!(
            broadcast_sum(&[vec![1., 2., 3., 4.], vec![10., 20.]], &s, &[2, 2]),
            vec![11., 12., 23., 24.]
        );
        // [1, 2] ++ [1, 1] on axis 1.
        let s: [&[usize]; 2] = [&[1, 2], &[1, 1]];
        assert_eq!(
            concat(&[vec![1., 2.], vec![3.]], &s, 1, &[1, 3]),
            vec![1., 2., 3.]
        );
    }
}
