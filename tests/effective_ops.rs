//! Effective masks and path counts through the op classes of modern graphs
//! (#11): elementwise functions of several activations (SiLU, SE gates,
//! hard-swish written out, Where), MatMul of two activations (attention),
//! axis mixing (LayerNorm, GroupNorm, Reduce, Softmax), element maps
//! (Slice, Pad, Resize, DepthToSpace, Where with a constant branch, the zero
//! insertion of a transposed convolution) and dense layers over leading axes.
//!
//! Three independent checks: the graph method against the float definition
//! (candle autograd) at random sparsities; hand-computed masks where the
//! union semantics of CONVENTIONS decide; and path counts against a
//! brute-force enumeration of the unrolled element graph, written here with
//! plain loops from the definitions.

mod common;

use maskforge::analysis::effective::{analyse, effective_masks, node_counts};
use maskforge::analysis::oracle;
use maskforge::analysis::paths::effective_paths;
use maskforge::bitset::BitSet;
use maskforge::graph::index_map::{
    self, AxisRange, Branch, CoordMode, DepthOrder, Interp, PadMode, Rounding,
};
use maskforge::graph::op::{
    Activation, Binary, IndexMap, Mix, MixKind, Norm, Op, PoolKind, Reduce, Window,
};
use maskforge::graph::tensor::ConstTensor;
use maskforge::graph::{Network, NetworkBuilder, ValueId};
use maskforge::mask::MaskSet;
use std::sync::Arc;

// ---------------------------------------------------------------------------
// Building blocks.

/// Deterministic weights of both signs, none zero (the float definition
/// takes |w|, so a sign must change nothing).
fn weights(shape: Vec<usize>, salt: u64) -> ConstTensor {
    let n: usize = shape.iter().product();
    let mut s = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            let m = 0.1 + 0.9 * u;
            if (s >> 20) & 1 == 1 {
                m
            } else {
                -m
            }
        })
        .collect();
    ConstTensor::f32(shape, v)
}

struct Net {
    b: NetworkBuilder,
    salt: u64,
}

impl Net {
    fn new(name: &str) -> Self {
        Self {
            b: NetworkBuilder::new(name),
            salt: 0,
        }
    }

    fn conv(&mut self, name: &str, x: ValueId, out: usize, k: usize, window: Window) -> ValueId {
        self.salt += 1;
        let c_in = self.b.shape(x)[0];
        let w = weights(vec![out, c_in, k, k], self.salt);
        self.b
            .conv(name, x, &format!("{name}.w"), w, None, window, 1)
            .unwrap()
    }

    fn dense(&mut self, name: &str, x: ValueId, out: usize) -> ValueId {
        self.salt += 1;
        let n_in = *self.b.shape(x).last().unwrap();
        let w = weights(vec![out, n_in], self.salt);
        let bias = (format!("{name}.b"), weights(vec![out], self.salt + 1000));
        self.b
            .dense(name, x, &format!("{name}.w"), w, Some((&bias.0, bias.1)))
            .unwrap()
    }

    fn param(&mut self, name: &str, t: ConstTensor) -> String {
        self.b.add_param(name, t);
        name.to_string()
    }

    fn act(&mut self, name: &str, x: ValueId, a: Activation) -> ValueId {
        self.b.activation(name, x, a)
    }

    fn bin(&mut self, name: &str, f: Binary, a: ValueId, b: ValueId) -> ValueId {
        self.b.binary(name, f, a, b).unwrap()
    }

    /// `x * sigmoid(x)`, written out as exporters do.
    fn silu(&mut self, name: &str, x: ValueId) -> ValueId {
        let s = self.act(&format!("{name}/sigmoid"), x, Activation::Sigmoid);
        self.bin(name, Binary::Mul, x, s)
    }

    fn mix(
        &mut self,
        name: &str,
        x: ValueId,
        kind: MixKind,
        view: Option<Vec<usize>>,
        axes: Vec<usize>,
    ) -> ValueId {
        self.b.mix(name, x, Mix { kind, view, axes }).unwrap()
    }

    fn map(&mut self, name: &str, xs: &[ValueId], map: IndexMap, shape: Vec<usize>) -> ValueId {
        self.b.gather(name, xs, map, shape).unwrap()
    }

    fn finish(mut self, outputs: &[ValueId]) -> Network {
        for &o in outputs {
            self.b.output(o);
        }
        self.b.finish().unwrap()
    }
}

fn normalize() -> MixKind {
    MixKind::Normalize {
        eps: 1e-5,
        scale: None,
        bias: None,
    }
}

fn reduce(f: Reduce, keepdims: bool) -> MixKind {
    MixKind::Reduce { f, keepdims }
}

fn same(k: usize) -> Window {
    Window::same(1, k / 2)
}

// ---------------------------------------------------------------------------
// The graph method against the float definition.

/// Random masks at 50, 90 and 99 % sparsity, five seeds each: the graph
/// method equals the float definition bit for bit, the effective mask is a
/// subset of the kept one and a fixed point; and the network must be worth
/// testing: some case leaves inactive weights, some case active ones.
fn crosscheck(net: &Network) {
    let (mut pruned_some, mut kept_some) = (false, false);
    for (k, density) in [0.5, 0.1, 0.01].into_iter().enumerate() {
        for seed in 0..5 {
            let m = common::random_masks(net, density, 1000 * k as u64 + seed);
            let graph = effective_masks(net, &m);
            let float = oracle::effective_masks(net, &m).unwrap();
            assert!(
                graph == float,
                "{} density {density} seed {seed}: {}",
                net.name,
                common::describe(net, &graph, &float)
            );
            assert!(graph.is_subset_of(&m));
            assert_eq!(
                effective_masks(net, &graph),
                graph,
                "{}: not a fixed point",
                net.name
            );
            pruned_some |= graph.count_ones() < m.count_ones();
            kept_some |= graph.count_ones() > 0;
        }
    }
    assert!(pruned_some, "{}: no case left an inactive weight", net.name);
    assert!(kept_some, "{}: no case kept an active weight", net.name);
}

fn silu_convnet() -> Network {
    let mut n = Net::new("silu");
    let x = n.b.input("x", vec![2, 6, 6]).unwrap();
    let h = n.conv("c1", x, 4, 3, same(3));
    let h = n.silu("silu1", h);
    let h = n.conv("c2", h, 4, 3, Window::same(2, 1));
    let h = n.silu("silu2", h);
    let y = n.conv("c3", h, 3, 1, same(1));
    n.finish(&[y])
}

#[test]
fn silu_as_x_times_sigmoid_x() {
    crosscheck(&silu_convnet());
}

/// conv -> SiLU -> [global pool -> fc -> ReLU -> fc -> sigmoid] gating the
/// SiLU output by broadcasting `[C, 1, 1]` -> conv.
fn se_net() -> Network {
    let mut n = Net::new("se");
    let x = n.b.input("x", vec![3, 5, 5]).unwrap();
    let h = n.conv("c1", x, 8, 3, same(3));
    let h = n.silu("silu", h);
    let g = n.b.global_pool("gap", h, PoolKind::Avg).unwrap();
    let g = n.b.reshape("squeeze", g, vec![8]).unwrap();
    let g = n.dense("fc1", g, 2);
    let g = n.act("relu", g, Activation::Relu);
    let g = n.dense("fc2", g, 8);
    let g = n.act("gate", g, Activation::Sigmoid);
    let g = n.b.reshape("unsqueeze", g, vec![8, 1, 1]).unwrap();
    let h = n.bin("excite", Binary::Mul, h, g);
    let y = n.conv("c2", h, 4, 1, same(1));
    n.finish(&[y])
}

#[test]
fn squeeze_and_excite_gate() {
    crosscheck(&se_net());
}

/// MobileNetV3's hard-swish as exported op by op:
/// `x * clip(x + 3, 0, 6) / 6`, plus PRelu and a constant-first Sub.
fn hard_swish_net() -> Network {
    let mut n = Net::new("hard-swish");
    let x = n.b.input("x", vec![2, 5, 5]).unwrap();
    let h = n.conv("c1", x, 4, 3, same(3));
    let three = n.param("three", ConstTensor::f32(vec![1], vec![3.0]));
    let six = n.param("six", ConstTensor::f32(vec![1], vec![6.0]));
    let t = n.b.norm("plus3", h, Norm::AddConst(three)).unwrap();
    let t = n.act("relu6", t, Activation::Clip(0.0, 6.0));
    let t =
        n.b.norm(
            "div6",
            t,
            Norm::Const {
                f: Binary::Div,
                param: six,
                const_first: false,
            },
        )
        .unwrap();
    let h = n.bin("hswish", Binary::Mul, h, t);
    let h = n.conv("c2", h, 4, 3, Window::same(2, 1));
    let slope = n.param(
        "slope",
        ConstTensor::f32(vec![4, 1, 1], vec![0.25, 0.0, 0.1, 0.5]),
    );
    let h = n.b.norm("prelu", h, Norm::Prelu(slope)).unwrap();
    let one = n.param("one", ConstTensor::f32(vec![1], vec![1.0]));
    let h =
        n.b.norm(
            "one_minus",
            h,
            Norm::Const {
                f: Binary::Sub,
                param: one,
                const_first: true,
            },
        )
        .unwrap();
    let h = n.act(
        "hsig",
        h,
        Activation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
    );
    let y = n.conv("c3", h, 3, 1, same(1));
    n.finish(&[y])
}

#[test]
fn hard_swish_written_out_prelu_and_constant_maps() {
    crosscheck(&hard_swish_net());
}

/// Decomposed LayerNorm over the last axis of `[seq, d]`, broadcasting
/// `[seq, 1]` statistics, then Where(cond, x, y) of three activations and
/// Max/Pow of activations of different ranks.
fn decomposed_layernorm_net() -> Network {
    let mut n = Net::new("decomposed-ln");
    let x = n.b.input("x", vec![4, 6]).unwrap();
    let h = n.dense("fc1", x, 6);
    let mu = n.mix("mean", h, reduce(Reduce::Mean, true), None, vec![1]);
    let c = n.bin("centre", Binary::Sub, h, mu);
    let sq = n.bin("square", Binary::Mul, c, c);
    let var = n.mix("var", sq, reduce(Reduce::Mean, true), None, vec![1]);
    let eps = n.param("eps", ConstTensor::f32(vec![1], vec![1e-5]));
    let var = n.b.norm("plus_eps", var, Norm::AddConst(eps)).unwrap();
    let sd = n.act("sqrt", var, Activation::Sqrt);
    let h = n.bin("normed", Binary::Div, c, sd);
    let g = n.dense("gate", x, 6);
    let cond = n.dense("cond", x, 1);
    let alt = n.dense("alt", x, 6);
    let h = n.b.where_("where", cond, h, alt).unwrap();
    // [6] against [4, 6]: a row vector broadcast over the positions.
    let row = n.mix("colmax", g, reduce(Reduce::Max, false), None, vec![0]);
    let h = n.bin("max", Binary::Max, h, row);
    let h = n.bin("pow", Binary::Pow, h, g);
    let y = n.dense("out", h, 3);
    n.finish(&[y])
}

#[test]
fn decomposed_layernorm_where_and_broadcast_binaries() {
    crosscheck(&decomposed_layernorm_net());
}

/// A pre-norm transformer block over `[seq, d]`: LayerNorm (Mix), q/k/v
/// dense over leading axes, two heads (Reshape/Transpose), scores MatMul,
/// scale, Softmax over the last axis, MatMul with the values, output
/// projection, residual, LayerNorm, GELU MLP, residual.
fn transformer_block(seq: usize, d: usize, heads: usize) -> Network {
    let dh = d / heads;
    let mut n = Net::new("transformer");
    let x = n.b.input("x", vec![seq, d]).unwrap();
    let h = n.mix("ln1", x, normalize(), None, vec![1]);
    let q = n.dense("q", h, d);
    let k = n.dense("k", h, d);
    let v = n.dense("v", h, d);
    let q = n.b.reshape("q/split", q, vec![seq, heads, dh]).unwrap();
    let q = n.b.transpose("q/heads", q, vec![1, 0, 2]).unwrap();
    let k = n.b.reshape("k/split", k, vec![seq, heads, dh]).unwrap();
    let kt = n.b.transpose("k/heads", k, vec![1, 2, 0]).unwrap();
    let v = n.b.reshape("v/split", v, vec![seq, heads, dh]).unwrap();
    let v = n.b.transpose("v/heads", v, vec![1, 0, 2]).unwrap();
    let s = n.b.matmul("scores", q, kt).unwrap();
    let scale = n.param("scale", ConstTensor::f32(vec![1], vec![0.5]));
    let s = n.b.norm("scale", s, Norm::MulConst(scale)).unwrap();
    let p = n.b.softmax("softmax", s, 2, false).unwrap();
    let o = n.b.matmul("attend", p, v).unwrap();
    let o = n.b.transpose("merge/t", o, vec![1, 0, 2]).unwrap();
    let o = n.b.reshape("merge", o, vec![seq, d]).unwrap();
    let o = n.dense("proj", o, d);
    let x = n.b.add("res1", &[x, o]).unwrap();
    let h = n.mix("ln2", x, normalize(), None, vec![1]);
    let h = n.dense("mlp1", h, 2 * d);
    let h = n.act("gelu", h, Activation::Gelu);
    let h = n.dense("mlp2", h, d);
    let y = n.b.add("res2", &[x, h]).unwrap();
    n.finish(&[y])
}

#[test]
fn attention_block() {
    crosscheck(&transformer_block(5, 8, 2));
}

/// Single-head attention without a residual: every path runs through the
/// MatMuls, so they decide liveness.
fn attention(seq: usize, d: usize) -> Network {
    let mut n = Net::new("attention");
    let x = n.b.input("x", vec![seq, d]).unwrap();
    let q = n.dense("q", x, d);
    let k = n.dense("k", x, d);
    let v = n.dense("v", x, d);
    let kt = n.b.transpose("kt", k, vec![1, 0]).unwrap();
    let s = n.b.matmul("scores", q, kt).unwrap();
    let p = n.b.softmax("softmax", s, 1, false).unwrap();
    let o = n.b.matmul("attend", p, v).unwrap();
    let y = n.dense("out", o, 3);
    n.finish(&[y])
}

#[test]
fn single_head_attention() {
    crosscheck(&attention(4, 6));
}

/// MatMul's batch broadcasting and 1-D rules: `[2, 3, 4] @ [4]`,
/// `[3] @ [2, 3, 4]`, `[1, 4, 3] @ [2, 3, 4]`, `[2, 3, 4] @ [4, 5]` and
/// `[4] @ [4]` (a scalar).
fn matmul_shapes_net() -> Network {
    let mut n = Net::new("matmul-shapes");
    let x = n.b.input("x", vec![2, 3, 4]).unwrap();
    let z = n.b.input("z", vec![4]).unwrap();
    let a = n.dense("a", x, 4);
    let col = n.dense("col", z, 4);
    let row = n.dense("row", z, 3);
    let r1 = n.b.matmul("mv", a, col).unwrap();
    let r2 = n.b.matmul("vm", row, a).unwrap();
    let p = n.dense("p", z, 12);
    let p = n.b.reshape("p/3d", p, vec![1, 4, 3]).unwrap();
    let r3 = n.b.matmul("bmm", p, a).unwrap();
    let m = n.dense("m", z, 20);
    let m = n.b.reshape("m/2d", m, vec![4, 5]).unwrap();
    let r4 = n.b.matmul("mm", a, m).unwrap();
    let other = n.dense("other", z, 4);
    let dot = n.b.matmul("dot", col, other).unwrap();
    let shapes: Vec<Vec<usize>> = [r1, r2, r3, r4, dot]
        .iter()
        .map(|&v| n.b.shape(v).to_vec())
        .collect();
    assert_eq!(
        shapes,
        vec![vec![2, 3], vec![2, 4], vec![2, 4, 4], vec![2, 3, 5], vec![]]
    );
    let parts: Vec<ValueId> = [r1, r2, r3, r4, dot]
        .iter()
        .enumerate()
        .map(|(i, &v)| n.b.flatten(&format!("flat{i}"), v))
        .collect();
    let f = n.b.concat("cat", &parts, 0).unwrap();
    let y = n.dense("out", f, 3);
    n.finish(&[y])
}

#[test]
fn matmul_batch_broadcasting_and_vector_rules() {
    crosscheck(&matmul_shapes_net());
}

/// GroupNorm (a view `[G, C/G, H, W]`), InstanceNorm, LayerNorm over
/// `[C, H, W]`, Reduce over the rows with keepdims and over all positions
/// without, LogSoftmax over the channels.
fn mixing_convnet() -> Network {
    let mut n = Net::new("mixing");
    let x = n.b.input("x", vec![2, 5, 5]).unwrap();
    let h = n.conv("c1", x, 4, 3, Window::same(1, 0));
    let h = n.mix(
        "groupnorm",
        h,
        normalize(),
        Some(vec![2, 2, 3, 3]),
        vec![1, 2, 3],
    );
    let h = n.conv("c2", h, 4, 1, same(1));
    let h = n.mix("instancenorm", h, normalize(), None, vec![1, 2]);
    let h = n.conv("c3", h, 6, 1, same(1));
    let r = n.mix("rowmax", h, reduce(Reduce::Max, true), None, vec![1]); // [6, 1, 3]
    let r = n.conv("c4", r, 4, 1, same(1));
    let r = n.b.softmax("chan_logsoftmax", r, 0, true).unwrap();
    let r = n.b.flatten("flat", r);
    let s = n.mix("sum", h, reduce(Reduce::SumSquare, false), None, vec![1, 2]); // [6]
    let s = n.dense("fc_s", s, 4);
    let r = n.dense("fc_r", r, 4);
    let y = n.b.add("join", &[r, s]).unwrap();
    let y = n.mix("layernorm", y, normalize(), None, vec![0]);
    let y = n.dense("out", y, 3);
    n.finish(&[y])
}

#[test]
fn group_instance_and_layer_norms_and_reductions() {
    crosscheck(&mixing_convnet());
}

/// Every element map of `index_map` between convolutions.
fn gather_convnet() -> Network {
    let mut n = Net::new("gathers");
    let x = n.b.input("x", vec![2, 6, 6]).unwrap();
    let h = n.conv("c1", x, 8, 3, Window::same(1, 0)); // [8, 4, 4]
                                                       // Slice every other row, cols 1..4.
    let (m, s) = index_map::slice(
        &[8, 4, 4],
        &[
            AxisRange::all(8),
            AxisRange {
                start: 0,
                step: 2,
                len: 2,
            },
            AxisRange {
                start: 1,
                step: 1,
                len: 3,
            },
        ],
    )
    .unwrap();
    let sl = n.map("slice", &[h], m, s); // [8, 2, 3]
    let (m, s) = index_map::pad(&[8, 2, 3], &[0, 1, 2], &[0, 1, 0], PadMode::Reflect).unwrap();
    let sl = n.map("pad_reflect", &[sl], m, s); // [8, 4, 5]
    let (m, s) = index_map::depth_to_space(&[8, 4, 5], 2, DepthOrder::Crd).unwrap();
    let d = n.map("d2s", &[sl], m, s); // [2, 8, 10]
    let d = n.conv("c2", d, 2, 3, Window::same(2, 0)); // [2, 3, 4]
    let (m, s) =
        index_map::pad(&[2, 3, 4], &[0, 1, 1], &[0, 1, 1], PadMode::Constant(0.5)).unwrap();
    let d = n.map("pad_const", &[d], m, s); // [2, 5, 6]
    let up = index_map::resize(
        &[2, 5, 6],
        &[2, 10, 12],
        &[1.0, 2.0, 2.0],
        CoordMode::Asymmetric,
        Interp::Nearest(Rounding::Floor),
    )
    .unwrap();
    let u = n.map("upsample", &[d], up, vec![2, 10, 12]);
    let u = n.conv("c3", u, 3, 3, Window::same(3, 1)); // [3, 4, 4]
    let lin = index_map::resize(
        &[3, 4, 4],
        &[3, 7, 7],
        &[0.0, 0.0, 0.0],
        CoordMode::AlignCorners,
        Interp::Linear,
    )
    .unwrap();
    let u = n.map("linear", &[u], lin, vec![3, 7, 7]);
    // Where with a constant condition and a constant branch: a checkerboard
    // of activations and zeros.
    let cond: Vec<bool> = (0..49).map(|e| (e / 7 + e % 7) % 2 == 0).collect();
    let sel = index_map::select(
        &[1, 7, 7],
        &cond,
        Branch::Act(&[3, 7, 7]),
        Branch::Const(&[1], &[0.0]),
        &[3, 7, 7],
    )
    .unwrap();
    let u = n.map("select", &[u], sel, vec![3, 7, 7]);
    let u = n.conv("c4", u, 4, 3, Window::same(2, 0)); // [4, 3, 3]
                                                       // Transposed conv: zero insertion (stride 2) and padding, then a conv.
    let (m, s) = index_map::dilate_pad(&[4, 3, 3], [2, 2], [2, 2], [2, 2]).unwrap();
    let t = n.map("dilate", &[u], m, s); // [4, 9, 9]
    let t = n.conv("deconv", t, 3, 3, Window::same(1, 0)); // [3, 7, 7]
    let (m, s) = index_map::space_to_depth(&[3, 6, 6], 2).unwrap();
    let (crop, cs) = index_map::slice(
        &[3, 7, 7],
        &[
            AxisRange::all(3),
            AxisRange::all(6),
            AxisRange {
                start: 1,
                step: 1,
                len: 6,
            },
        ],
    )
    .unwrap();
    let t = n.map("crop", &[t], crop, cs);
    let t = n.map("s2d", &[t], m, s); // [12, 3, 3]
    let (m, s) = index_map::gather(&[12, 3, 3], 0, &[11, 0, 5, 5], &[4]).unwrap();
    let t = n.map("take", &[t], m, s); // [4, 3, 3]
    let (m, s) = index_map::tile(&[4, 3, 3], &[1, 1, 2]).unwrap();
    let t = n.map("tile", &[t], m, s); // [4, 3, 6]
    let y = n.conv("c5", t, 2, 3, Window::same(1, 0)); // [2, 1, 4]
    n.finish(&[y])
}

#[test]
fn element_maps_between_convolutions() {
    crosscheck(&gather_convnet());
}

/// A hand-made map over two inputs: taps from both, interpolation weights
/// of both signs, a zero-weight tap and taps into constants.
fn two_input_map(a: usize, b: usize) -> IndexMap {
    let sources = a + b;
    let taps = 3;
    let mut index = Vec::new();
    let mut weight = Vec::new();
    for e in 0..a {
        // out[e] = 0.5 a[e] - 0.25 b[(e * 3) % b] + 2 * const
        index.extend([e as u32, (a + (e * 3) % b) as u32, sources as u32 + 1]);
        weight.extend([0.5, -0.25, 2.0]);
        if e == 1 {
            // A zero-weight tap connects nothing.
            index[3 * e] = (a + 1) as u32;
            weight[3 * e + 1] = 0.0;
        }
    }
    IndexMap {
        taps,
        index: Arc::new(index),
        weight: Some(Arc::new(weight)),
        consts: vec![0.0, 3.0],
    }
}

fn two_input_gather_net() -> Network {
    let mut n = Net::new("two-input-map");
    let x = n.b.input("x", vec![3, 4]).unwrap();
    let a = n.dense("a", x, 4);
    let b = n.dense("b", x, 2);
    let h = n.map("mix", &[a, b], two_input_map(12, 6), vec![3, 4]);
    let y = n.dense("out", h, 2);
    n.finish(&[y])
}

#[test]
fn element_map_over_two_inputs_with_weights_and_constants() {
    crosscheck(&two_input_gather_net());
}

/// Dense layers over `[seq, features]` (weights shared across positions),
/// with position-dependent liveness from a slice and a Transpose between.
fn dense_nd_net() -> Network {
    let mut n = Net::new("dense-nd");
    let x = n.b.input("x", vec![4, 6]).unwrap();
    let h = n.dense("fc1", x, 5);
    let h = n.act("relu", h, Activation::Relu);
    let h = n.dense("fc2", h, 4); // [4, 4]
    let t = n.b.transpose("t", h, vec![1, 0]).unwrap();
    let t = n.dense("fc3", t, 3); // [4, 3]
    let (m, s) = index_map::slice(
        &[4, 3],
        &[
            AxisRange {
                start: 1,
                step: 2,
                len: 2,
            },
            AxisRange::all(3),
        ],
    )
    .unwrap();
    let t = n.map("rows", &[t], m, s); // [2, 3]
    let y = n.dense("out", t, 2);
    n.finish(&[y])
}

#[test]
fn dense_over_leading_axes() {
    crosscheck(&dense_nd_net());
}

// ---------------------------------------------------------------------------
// Hand-computed cases: where the rules of CONVENTIONS decide.

fn full(net: &Network) -> MaskSet {
    MaskSet::dense(net)
}

fn layer(net: &Network, name: &str) -> usize {
    net.layer_index(&format!("{name}.w")).unwrap()
}

use common::assert_effective as check;

/// `x[1, 1, 1]` padded by one on each side of the width, then a `1 x 3`
/// conv: its outer taps read only the padding.
fn padded_tap_net(mode: PadMode) -> Network {
    let mut n = Net::new("pad-taps");
    let x = n.b.input("x", vec![1, 1, 1]).unwrap();
    let (m, s) = index_map::pad(&[1, 1, 1], &[0, 0, 1], &[0, 0, 1], mode).unwrap();
    let p = n.map("pad", &[x], m, s);
    let w = weights(vec![1, 1, 1, 3], 7);
    let y =
        n.b.conv("c", p, "c.w", w, None, Window::same(1, 0), 1)
            .unwrap();
    n.finish(&[y])
}

#[test]
fn constant_padding_keeps_no_weight_alive_and_edge_padding_does() {
    let net = padded_tap_net(PadMode::Constant(1.0));
    let expected = MaskSet {
        layers: vec![BitSet::from_fn(3, |t| t == 1)],
    };
    check(&net, &full(&net), &expected);
    assert!((effective_paths(&net, &full(&net)).unwrap().log10 - 0.0).abs() < 1e-12);
    // Edge padding reads the input in every tap: three paths, all active.
    let net = padded_tap_net(PadMode::Edge);
    check(&net, &full(&net), &full(&net));
    let p = effective_paths(&net, &full(&net)).unwrap();
    assert!((p.log10 - 3f64.log10()).abs() < 1e-12);
}

#[test]
fn pruned_keys_kill_nothing_on_the_value_side() {
    let net = attention(4, 6);
    let k = layer(&net, "k");
    // One key feature pruned: every other kept weight stays active.
    let mut m = full(&net);
    (0..6).for_each(|i| m.layers[k].set(i, false));
    check(&net, &m, &m);
    // Every key weight pruned: queries, values and the output projection
    // stay active. Dead factors kill nothing here: the key bias keeps every
    // key dimension non-zero (tests/dead_factors.rs has the cases without).
    m.layers[k] = BitSet::new(36);
    check(&net, &m, &m);
}

#[test]
fn matmul_reads_rows_of_the_left_and_columns_of_the_right() {
    // The output projection reads only feature 2 of `p @ v`: out[m, 2]
    // reads every row of p (all scores, so all of q and k) but only column
    // 2 of v, so only row 2 of Wv stays active.
    let net = attention(4, 6);
    let (v, out) = (layer(&net, "v"), layer(&net, "out"));
    let mut m = full(&net);
    m.layers[out] = BitSet::from_fn(18, |e| e % 6 == 2);
    let mut e = m.clone();
    e.layers[v] = BitSet::from_fn(36, |i| i / 6 == 2);
    check(&net, &m, &e);
}

#[test]
fn a_dense_weight_needs_its_input_and_output_live_at_the_same_position() {
    // x [2, 2] -> select: (1, 1) replaced by a constant -> dense 2 -> 2
    // (shared by both positions) -> select: (0, 1) replaced by a constant.
    // Input feature 1 is live at position 0 only and output 1 reaches the
    // output at position 1 only, so W[1, 1] is inactive although both its
    // feature and its neuron are live somewhere; the other three are active.
    let mut n = Net::new("dense-positions");
    let x = n.b.input("x", vec![2, 2]).unwrap();
    let hole = |at: usize| {
        let cond: Vec<bool> = (0..4).map(|e| e != at).collect();
        index_map::select(
            &[2, 2],
            &cond,
            Branch::Act(&[2, 2]),
            Branch::Const(&[1], &[0.0]),
            &[2, 2],
        )
        .unwrap()
    };
    let h = n.map("in_hole", &[x], hole(3), vec![2, 2]);
    let h = n.dense("fc", h, 2);
    let y = n.map("out_hole", &[h], hole(1), vec![2, 2]);
    let net = n.finish(&[y]);
    let expected = MaskSet {
        layers: vec![BitSet::from_fn(4, |e| e != 3)],
    };
    check(&net, &full(&net), &expected);
    // Per feature, nothing is dead: the unit counts see both neurons.
    let c = node_counts(&net, &analyse(&net, &full(&net)));
    assert_eq!((c[0].total, c[0].reached, c[0].functional), (2, 2, 2));
}

#[test]
fn a_pruned_squeeze_and_excite_branch_kills_nothing_else() {
    let net = se_net();
    let fc1 = layer(&net, "fc1");
    let fc2 = layer(&net, "fc2");
    let mut m = full(&net);
    m.layers[fc1] = BitSet::new(m.layers[fc1].len());
    let mut e = m.clone();
    e.layers[fc2] = BitSet::new(e.layers[fc2].len());
    check(&net, &m, &e);
}

#[test]
fn group_norm_joins_the_channels_of_a_group_only() {
    // c1: 1 -> 4 channels (1x1), only channel 0 kept; GroupNorm with two
    // groups of two channels; c2: 4 -> 1 (1x1). Channels 0 and 1 carry
    // paths after the norm, 2 and 3 do not.
    let mut n = Net::new("groupnorm");
    let x = n.b.input("x", vec![1, 2, 2]).unwrap();
    let h = n.conv("c1", x, 4, 1, same(1));
    let h = n.mix("gn", h, normalize(), Some(vec![2, 2, 2, 2]), vec![1, 2, 3]);
    let y = n.conv("c2", h, 1, 1, same(1));
    let net = n.finish(&[y]);
    let m = MaskSet {
        layers: vec![BitSet::from_fn(4, |o| o == 0), BitSet::full(4)],
    };
    let e = MaskSet {
        layers: vec![
            BitSet::from_fn(4, |o| o == 0),
            BitSet::from_fn(4, |i| i < 2),
        ],
    };
    check(&net, &m, &e);
}

#[test]
fn softmax_mixes_along_its_axis_only() {
    // [2, 3] -> dense 3 -> 3 with only W[0, 0] kept -> softmax over axis 1
    // -> dense 3 -> 3. After the softmax every feature of both positions is
    // live (the input is live at both), so all of the second layer is active;
    // softmax over axis 0 instead would leave features 1 and 2 dead.
    for (axis, live) in [(1, vec![0, 1, 2]), (0, vec![0])] {
        let mut n = Net::new("softmax");
        let x = n.b.input("x", vec![2, 3]).unwrap();
        let h = n.dense("fc1", x, 3);
        let h = n.b.softmax("softmax", h, axis, false).unwrap();
        let y = n.dense("fc2", h, 3);
        let net = n.finish(&[y]);
        let m = MaskSet {
            layers: vec![BitSet::from_fn(9, |e| e == 0), BitSet::full(9)],
        };
        let e = MaskSet {
            layers: vec![
                BitSet::from_fn(9, |e| e == 0),
                BitSet::from_fn(9, |e| live.contains(&(e % 3))),
            ],
        };
        check(&net, &m, &e);
    }
}

// ---------------------------------------------------------------------------
// Path counts against brute force: the unrolled element graph built from
// the definitions with plain loops, every input -> output path enumerated.

use common::{flatten, unflatten};

/// The element of an operand of shape `from` that output index `o`
/// (of a broadcast result) reads: dims aligned right, size 1 repeats.
fn broadcast_from(o: &[usize], from: &[usize]) -> usize {
    let pad = o.len() - from.len();
    let i: Vec<usize> = (0..from.len())
        .map(|d| if from[d] == 1 { 0 } else { o[d + pad] })
        .collect();
    flatten(&i, from)
}

struct Unrolled {
    offset: Vec<usize>,
    succ: Vec<Vec<usize>>,
    is_output: Vec<bool>,
}

impl Unrolled {
    fn new(net: &Network, masks: &MaskSet) -> Self {
        let mut offset = Vec::new();
        let mut total = 0;
        for v in &net.values {
            offset.push(total);
            total += v.numel();
        }
        let mut succ = vec![Vec::new(); total];
        let mut is_output = vec![false; total];
        for &o in &net.outputs {
            (0..net.value(o).numel()).for_each(|e| is_output[offset[o] + e] = true);
        }
        let layer_of = net.layer_of_node();
        for (ni, node) in net.nodes.iter().enumerate() {
            let shape = |v: ValueId| net.value(v).shape.clone();
            let y = node.output;
            let ys = shape(y);
            let n_out = net.value(y).numel();
            let mut edge = |a: ValueId, i: usize, e: usize| succ[offset[a] + i].push(offset[y] + e);
            match &node.op {
                Op::Dense { dense, .. } => {
                    let m = &masks.layers[layer_of[ni].unwrap()];
                    let (n_i, n_o) = (dense.in_features, dense.out_features);
                    for p in 0..n_out / n_o {
                        for o in 0..n_o {
                            for i in (0..n_i).filter(|&i| m.get(o * n_i + i)) {
                                edge(node.inputs[0], p * n_i + i, p * n_o + o);
                            }
                        }
                    }
                }
                Op::Add | Op::Binary(_) | Op::Where => {
                    for &v in &node.inputs {
                        for e in 0..n_out {
                            edge(v, broadcast_from(&unflatten(e, &ys), &shape(v)), e);
                        }
                    }
                }
                Op::MatMul => {
                    let (a, b) = (shape(node.inputs[0]), shape(node.inputs[1]));
                    let a2 = if a.len() == 1 {
                        vec![1, a[0]]
                    } else {
                        a.clone()
                    };
                    let b2 = if b.len() == 1 {
                        vec![b[0], 1]
                    } else {
                        b.clone()
                    };
                    let (m, k, n) = (a2[a2.len() - 2], a2[a2.len() - 1], b2[b2.len() - 1]);
                    let batch = n_out / (m * n);
                    let rank = (a2.len() - 2).max(b2.len() - 2);
                    // The batch shape, rebuilt from the operands (numpy rules).
                    let dim = |s: &[usize], d: usize| {
                        let pad = rank - (s.len() - 2);
                        if d < pad {
                            1
                        } else {
                            s[d - pad]
                        }
                    };
                    let bshape: Vec<usize> =
                        (0..rank).map(|d| dim(&a2, d).max(dim(&b2, d))).collect();
                    assert_eq!(bshape.iter().product::<usize>(), batch);
                    for bi in 0..batch {
                        let bidx = unflatten(bi, &bshape);
                        let ab = broadcast_from(&bidx, &a2[..a2.len() - 2]);
                        let bb = broadcast_from(&bidx, &b2[..b2.len() - 2]);
                        for i in 0..m {
                            for j in 0..n {
                                let e = (bi * m + i) * n + j;
                                for kk in 0..k {
                                    edge(node.inputs[0], (ab * m + i) * k + kk, e);
                                    edge(node.inputs[1], (bb * k + kk) * n + j, e);
                                }
                            }
                        }
                    }
                }
                Op::Mix(_) | Op::Softmax(_) | Op::LogSoftmax(_) => {
                    let xs = shape(node.inputs[0]);
                    let (view, axes, keeps) = match &node.op {
                        Op::Mix(mix) => (
                            mix.view.clone().unwrap_or(xs.clone()),
                            mix.axes.clone(),
                            matches!(mix.kind, MixKind::Normalize { .. }),
                        ),
                        Op::Softmax(a) | Op::LogSoftmax(a) => (xs.clone(), vec![*a], true),
                        _ => unreachable!(),
                    };
                    let slice = |e: usize| -> Vec<usize> {
                        let mut i = unflatten(e, &view);
                        axes.iter().for_each(|&a| i[a] = 0);
                        i
                    };
                    let n_in = net.value(node.inputs[0]).numel();
                    for e in 0..n_in {
                        if keeps {
                            for f in (0..n_in).filter(|&f| slice(f) == slice(e)) {
                                edge(node.inputs[0], e, f);
                            }
                        } else {
                            let mut kept = view.clone();
                            axes.iter().for_each(|&a| kept[a] = 1);
                            edge(node.inputs[0], e, flatten(&slice(e), &kept));
                        }
                    }
                }
                Op::Gather(map) => {
                    let sizes: Vec<usize> =
                        node.inputs.iter().map(|&v| net.value(v).numel()).collect();
                    for e in 0..n_out {
                        for (mut i, w) in map.taps_of(e) {
                            if w == 0.0 {
                                continue;
                            }
                            for (k, &n) in sizes.iter().enumerate() {
                                if i < n {
                                    edge(node.inputs[k], i, e);
                                    break;
                                }
                                i -= n;
                            }
                        }
                    }
                }
                Op::Transpose(perm) => {
                    let xs = shape(node.inputs[0]);
                    for e in 0..net.value(node.inputs[0]).numel() {
                        let i = unflatten(e, &xs);
                        let j: Vec<usize> = perm.iter().map(|&p| i[p]).collect();
                        edge(node.inputs[0], e, flatten(&j, &ys));
                    }
                }
                Op::Conv { .. } | Op::Pool(_) | Op::GlobalPool(_) | Op::Concat(_) => {
                    panic!("not used in these networks")
                }
                // Reshape keeps the row-major order; the rest are elementwise.
                _ => (0..n_out).for_each(|e| edge(node.inputs[0], e, e)),
            }
        }
        Self {
            offset,
            succ,
            is_output,
        }
    }

    /// Every path from an input element to an output element, one at a
    /// time: how many, and which elements lie on one.
    fn enumerate(&self, net: &Network) -> (u64, Vec<bool>) {
        let mut on_path = vec![false; self.succ.len()];
        let mut count = 0;
        let mut stack = Vec::new();
        for &i in &net.inputs {
            for e in 0..net.value(i).numel() {
                self.walk(self.offset[i] + e, &mut stack, &mut count, &mut on_path);
            }
        }
        (count, on_path)
    }

    fn walk(&self, at: usize, stack: &mut Vec<usize>, count: &mut u64, on_path: &mut [bool]) {
        stack.push(at);
        if self.is_output[at] {
            *count += 1;
            stack.iter().for_each(|&s| on_path[s] = true);
            assert!(*count < 20_000_000, "too large for brute force");
        }
        for &next in &self.succ[at] {
            self.walk(next, stack, count, on_path);
        }
        stack.pop();
    }
}

/// The library's path count and effective nodes equal brute force at
/// several densities; some count must be large enough to mean something.
fn check_paths(net: &Network) {
    let mut biggest = 0;
    for (k, density) in [1.0, 0.7, 0.4, 0.2].into_iter().enumerate() {
        for seed in 0..4 {
            let m = common::random_masks(net, density, 10 * k as u64 + seed);
            let g = Unrolled::new(net, &m);
            let (count, on_path) = g.enumerate(net);
            let p = effective_paths(net, &m).unwrap();
            if count == 0 {
                assert!(p.is_zero(), "{}: expected no path, got {p:?}", net.name);
            } else {
                let want = (count as f64).log10();
                assert!(
                    (p.log10 - want).abs() <= 1e-9 * want.max(1.0),
                    "{} density {density} seed {seed}: log10 {} vs brute force {count}",
                    net.name,
                    p.log10
                );
            }
            // A unit of a dense layer is functional when one of its
            // elements, at any position, lies on a path.
            let nodes = node_counts(net, &analyse(net, &m));
            for (li, l) in net.layers.iter().enumerate() {
                let v = net.nodes[l.node].output;
                let n_o = l.shape[0];
                let functional = (0..n_o)
                    .filter(|&o| {
                        (0..net.value(v).numel() / n_o).any(|p| on_path[g.offset[v] + p * n_o + o])
                    })
                    .count();
                assert_eq!(nodes[li].functional, functional, "{}: {}", net.name, l.name);
            }
            biggest = biggest.max(count);
        }
    }
    assert!(biggest > 300, "{}: largest count {biggest}", net.name);
}

#[test]
fn attention_path_counts_equal_brute_force() {
    check_paths(&attention(3, 2));
}

#[test]
fn matmul_shape_rule_path_counts_equal_brute_force() {
    let mut n = Net::new("tiny-matmuls");
    let x = n.b.input("x", vec![2, 2, 2]).unwrap();
    let z = n.b.input("z", vec![2]).unwrap();
    let a = n.dense("a", x, 2); // [2, 2, 2]
    let col = n.dense("col", z, 2);
    let r1 = n.b.matmul("mv", a, col).unwrap(); // [2, 2]
    let p = n.dense("p", z, 6);
    let p = n.b.reshape("p/3d", p, vec![1, 3, 2]).unwrap();
    let r2 = n.b.matmul("bmm", p, a).unwrap(); // [2, 3, 2]
    let r1 = n.b.reshape("r1/3d", r1, vec![2, 1, 2]).unwrap();
    let s = n.bin("sum", Binary::Mul, r2, r1); // [2, 3, 2]
    let y = n.dense("out", s, 2);
    check_paths(&n.finish(&[y]));
}

#[test]
fn binary_and_where_path_counts_equal_brute_force() {
    let mut n = Net::new("tiny-binaries");
    let x = n.b.input("x", vec![2, 3]).unwrap();
    let h = n.dense("fc1", x, 3);
    let h = n.silu("silu", h);
    let c = n.dense("cond", x, 1); // [2, 1]
    let alt = n.dense("alt", x, 3);
    let g = n.mix("mean", alt, reduce(Reduce::Mean, false), None, vec![0]); // [3]
    let h = n.b.where_("where", c, h, g).unwrap();
    let h = n.bin("div", Binary::Div, h, alt);
    let h = n.mix("ln", h, normalize(), None, vec![1]);
    let y = n.dense("out", h, 2);
    check_paths(&n.finish(&[y]));
}

#[test]
fn gather_path_counts_equal_brute_force() {
    let mut n = Net::new("tiny-gathers");
    let x = n.b.input("x", vec![2, 3]).unwrap();
    let a = n.dense("a", x, 3);
    let (m, s) = index_map::pad(&[2, 3], &[0, 1], &[0, 2], PadMode::Reflect).unwrap();
    let a = n.map("reflect", &[a], m, s); // [2, 6]
    let lin = index_map::resize(
        &[2, 6],
        &[2, 8],
        &[1.0, 0.0],
        CoordMode::HalfPixel,
        Interp::Linear,
    )
    .unwrap();
    let a = n.map("linear", &[a], lin, vec![2, 8]);
    let (m, s) = index_map::pad(&[2, 8], &[1, 0], &[0, 0], PadMode::Constant(2.0)).unwrap();
    let a = n.map("pad_row", &[a], m, s); // [3, 8]
    let a = n.dense("a2", a, 4); // [3, 4]
    let b = n.dense("b", x, 2); // [2, 2]
    let b = n.b.reshape("b/flat", b, vec![4]).unwrap();
    let b = n.b.reshape("b/2d", b, vec![2, 2]).unwrap();
    let h = n.map("two", &[a, b], two_input_map(12, 4), vec![3, 4]);
    let y = n.dense("out", h, 2);
    check_paths(&n.finish(&[y]));
}
