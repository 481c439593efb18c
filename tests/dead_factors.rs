//! Issue #12, item 3: dead factors (CONVENTIONS, "What effective means on
//! any graph", "Dead factors"). At a product of two activations a path
//! through one factor continues only where the other factor is not
//! identically zero in the masked network, judged with the real biases and
//! activation values.
//!
//! Every case is derived by hand and checked against both the graph method
//! and the float definition; random masks then check the two against each
//! other on the same networks.

mod common;

use maskforge::analysis::effective::effective_masks;
use maskforge::analysis::oracle;
use maskforge::bitset::BitSet;
use maskforge::graph::op::{Activation, Binary, IndexMap, Norm, PoolKind};
use maskforge::graph::tensor::ConstTensor;
use maskforge::graph::{Network, NetworkBuilder, ValueId};
use maskforge::mask::MaskSet;
use std::sync::Arc;

/// Deterministic non-zero values of both signs in +-[0.1, 1].
fn values(n: usize, salt: u64) -> Vec<f32> {
    let mut s = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let m = 0.1 + 0.9 * ((s >> 40) as f32 / (1u64 << 24) as f32);
            if (s >> 20) & 1 == 1 {
                m
            } else {
                -m
            }
        })
        .collect()
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

    /// A dense layer `name.w` with a non-zero bias `name.b` when `bias`.
    fn dense(&mut self, name: &str, x: ValueId, out: usize, bias: bool) -> ValueId {
        self.salt += 1;
        let n_in = *self.b.shape(x).last().unwrap();
        let w = ConstTensor::f32(vec![out, n_in], values(out * n_in, self.salt));
        let b = ConstTensor::f32(vec![out], values(out, self.salt + 1000));
        let bname = format!("{name}.b");
        let bias = bias.then_some((bname.as_str(), b));
        self.b
            .dense(name, x, &format!("{name}.w"), w, bias)
            .unwrap()
    }

    fn constant(&mut self, name: &str, shape: Vec<usize>, v: Vec<f32>) -> String {
        self.b.add_param(name, ConstTensor::f32(shape, v));
        name.to_string()
    }

    fn finish(mut self, y: ValueId) -> Network {
        self.b.output(y);
        self.b.finish().unwrap()
    }
}

fn layer(net: &Network, name: &str) -> usize {
    net.layer_index(&format!("{name}.w")).unwrap()
}

use common::assert_effective as check;

/// Random masks, and the same masks with whole rows pruned: both
/// definitions agree, the result is a subset and a fixed point.
fn crosscheck(net: &Network) {
    for (k, density) in [0.7, 0.3, 0.1].into_iter().enumerate() {
        for seed in 0..4 {
            let mut m = common::random_masks(net, density, 100 * k as u64 + seed);
            if seed % 2 == 1 {
                prune_random_rows(net, &mut m, 0.4, seed);
            }
            let graph = effective_masks(net, &m);
            let float = oracle::effective_masks(net, &m).unwrap();
            assert!(
                graph == float,
                "{} density {density} seed {seed}: {}",
                net.name,
                common::describe(net, &graph, &float)
            );
            assert!(graph.is_subset_of(&m));
            assert_eq!(effective_masks(net, &graph), graph, "{}", net.name);
        }
    }
}

/// Prune each output row (neuron or channel) of every layer with
/// probability `p`: the structured pruning that makes factors constant.
fn prune_random_rows(net: &Network, m: &mut MaskSet, p: f64, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xdead);
    for (li, l) in net.layers.iter().enumerate() {
        let (rows, per) = (l.shape[0], l.numel() / l.shape[0]);
        for r in 0..rows {
            if rng.random::<f64>() < p {
                (r * per..(r + 1) * per).for_each(|i| m.layers[li].set(i, false));
            }
        }
    }
}

fn prune_rows(m: &mut MaskSet, li: usize, n_in: usize, rows: &[usize]) {
    for &r in rows {
        (r * n_in..(r + 1) * n_in).for_each(|i| m.layers[li].set(i, false));
    }
}

// ---------------------------------------------------------------------------
// SwiGLU: down(silu(gate x) * up x).

const D: usize = 4;
const HIDDEN: usize = 3;

fn swiglu(gate_bias: bool, written_out: bool) -> Network {
    let mut n = Net::new("swiglu");
    let x = n.b.input("x", vec![2, D]).unwrap();
    let g = n.dense("gate", x, HIDDEN, gate_bias);
    let u = n.dense("up", x, HIDDEN, true);
    let s = if written_out {
        let sig = n.b.activation("gate/sigmoid", g, Activation::Sigmoid);
        n.b.binary("gate/silu", Binary::Mul, g, sig).unwrap()
    } else {
        n.b.activation("gate/silu", g, Activation::Silu)
    };
    let h = n.b.binary("glu", Binary::Mul, s, u).unwrap();
    let y = n.dense("down", h, D, true);
    n.finish(y)
}

#[test]
fn a_pruned_swiglu_gate_row_kills_its_up_row_and_down_column() {
    for written_out in [false, true] {
        let net = swiglu(false, written_out);
        let (gate, up, down) = (layer(&net, "gate"), layer(&net, "up"), layer(&net, "down"));
        let mut m = MaskSet::dense(&net);
        prune_rows(&mut m, gate, D, &[1]);
        // silu(0) = 0: unit 1 of the product is 0 whatever the input.
        let mut e = m.clone();
        prune_rows(&mut e, up, D, &[1]);
        (0..D).for_each(|o| e.layers[down].set(o * HIDDEN + 1, false));
        check(&net, &m, &e);
        crosscheck(&net);
    }
}

#[test]
fn a_gate_bias_keeps_the_swiglu_unit_alive() {
    // silu(b) != 0 for the row's bias b: nothing dies.
    let net = swiglu(true, false);
    let gate = layer(&net, "gate");
    let mut m = MaskSet::dense(&net);
    prune_rows(&mut m, gate, D, &[1]);
    check(&net, &m, &m);
    crosscheck(&net);
}

#[test]
fn a_pruned_up_row_kills_its_gate_row_and_down_column() {
    // The rule is symmetric: the up projection is a factor too.
    let net = swiglu(true, false);
    let up = layer(&net, "up");
    let mut m = MaskSet::dense(&net);
    // up has a bias: a pruned row is the bias, alive. Drop the bias from
    // the picture by pruning the row on a net whose up has none.
    prune_rows(&mut m, up, D, &[2]);
    check(&net, &m, &m);
    let mut n = Net::new("glu-no-up-bias");
    let x = n.b.input("x", vec![D]).unwrap();
    let g = n.dense("gate", x, HIDDEN, true);
    let u = n.dense("up", x, HIDDEN, false);
    let s = n.b.activation("gate/silu", g, Activation::Silu);
    let h = n.b.binary("glu", Binary::Mul, s, u).unwrap();
    let y = n.dense("down", h, D, true);
    let net2 = n.finish(y);
    let (gate, up, down) = (
        layer(&net2, "gate"),
        layer(&net2, "up"),
        layer(&net2, "down"),
    );
    let mut m = MaskSet::dense(&net2);
    prune_rows(&mut m, up, D, &[2]);
    let mut e = m.clone();
    prune_rows(&mut e, gate, D, &[2]);
    (0..D).for_each(|o| e.layers[down].set(o * HIDDEN + 2, false));
    check(&net2, &m, &e);
}

// ---------------------------------------------------------------------------
// Attention with RoPE and grouped-query attention, written in ops.

const S: usize = 3; // sequence
const DM: usize = 4; // model width
const DH: usize = 4; // head dim: RoPE pairs (0, 2) and (1, 3)
const HQ: usize = 4; // query heads
const HKV: usize = 2; // key/value heads: query heads 0, 1 read kv head 0
const G: usize = HQ / HKV;

/// `x * cos + rotate_half(x) * sin` on `[heads, S, DH]`: rotate_half as an
/// element map with weights -1 (first half, reading the second) and +1.
fn rope(n: &mut Net, name: &str, x: ValueId, heads: usize) -> ValueId {
    let half = DH / 2;
    let theta = |s: usize, i: usize| (s as f32 + 1.0) / 10f32.powf((i % half) as f32 / half as f32);
    let cos: Vec<f32> = (0..S * DH).map(|e| theta(e / DH, e % DH).cos()).collect();
    let sin: Vec<f32> = (0..S * DH).map(|e| theta(e / DH, e % DH).sin()).collect();
    let cos = n.constant(&format!("{name}.cos"), vec![S, DH], cos);
    let sin = n.constant(&format!("{name}.sin"), vec![S, DH], sin);
    let len = heads * S * DH;
    let index: Vec<u32> = (0..len)
        .map(|e| {
            let i = e % DH;
            (e - i + (i + half) % DH) as u32
        })
        .collect();
    let weight: Vec<f32> = (0..len)
        .map(|e| if e % DH < half { -1.0 } else { 1.0 })
        .collect();
    let map = IndexMap {
        taps: 1,
        index: Arc::new(index),
        weight: Some(Arc::new(weight)),
        consts: vec![],
    };
    let shape = vec![heads, S, DH];
    let rot =
        n.b.gather(&format!("{name}/rotate_half"), &[x], map, shape)
            .unwrap();
    let a =
        n.b.norm(&format!("{name}/cos"), x, Norm::MulConst(cos))
            .unwrap();
    let r =
        n.b.norm(&format!("{name}/sin"), rot, Norm::MulConst(sin))
            .unwrap();
    n.b.add(name, &[a, r]).unwrap()
}

fn gqa(q_bias: bool, k_bias: bool) -> Network {
    let mut n = Net::new("gqa-rope");
    let x = n.b.input("x", vec![S, DM]).unwrap();
    let q = n.dense("q", x, HQ * DH, q_bias);
    let k = n.dense("k", x, HKV * DH, k_bias);
    let v = n.dense("v", x, HKV * DH, true);
    let q = n.b.reshape("q/split", q, vec![S, HQ, DH]).unwrap();
    let q = n.b.transpose("q/heads", q, vec![1, 0, 2]).unwrap();
    let q = rope(&mut n, "q/rope", q, HQ);
    let q = n.b.reshape("q/groups", q, vec![HKV, G, S, DH]).unwrap();
    let k = n.b.reshape("k/split", k, vec![S, HKV, DH]).unwrap();
    let k = n.b.transpose("k/heads", k, vec![1, 0, 2]).unwrap();
    let k = rope(&mut n, "k/rope", k, HKV);
    let kt = n.b.transpose("k/t", k, vec![0, 2, 1]).unwrap();
    let kt = n.b.reshape("k/groups", kt, vec![HKV, 1, DH, S]).unwrap();
    let s = n.b.matmul("scores", q, kt).unwrap();
    let scale = n.constant("scale", vec![1], vec![0.5]);
    let s = n.b.norm("scale", s, Norm::MulConst(scale)).unwrap();
    let p = n.b.softmax("softmax", s, 3, false).unwrap();
    let v = n.b.reshape("v/split", v, vec![S, HKV, DH]).unwrap();
    let v = n.b.transpose("v/heads", v, vec![1, 0, 2]).unwrap();
    let v = n.b.reshape("v/groups", v, vec![HKV, 1, S, DH]).unwrap();
    let o = n.b.matmul("attend", p, v).unwrap();
    let o = n.b.reshape("merge/heads", o, vec![HQ, S, DH]).unwrap();
    let o = n.b.transpose("merge/t", o, vec![1, 0, 2]).unwrap();
    let o = n.b.reshape("merge", o, vec![S, HQ * DH]).unwrap();
    let y = n.dense("out", o, DM, true);
    n.finish(y)
}

/// Projection rows of dimensions `dims` of heads `heads`.
fn head_rows(heads: &[usize], dims: &[usize]) -> Vec<usize> {
    heads
        .iter()
        .flat_map(|h| dims.iter().map(move |d| h * DH + d))
        .collect()
}

#[test]
fn a_pruned_key_dimension_kills_the_query_dimensions_of_its_group() {
    let net = gqa(true, false);
    let (q, k) = (layer(&net, "q"), layer(&net, "k"));
    // Key dimension 1 and its RoPE partner 3 of kv head 0, entirely.
    let mut m = MaskSet::dense(&net);
    prune_rows(&mut m, k, DM, &head_rows(&[0], &[1, 3]));
    // Rotated, they stay 0, so q . k reads nothing from query dimensions 1
    // and 3 of query heads 0 and 1 (the group of kv head 0); heads 2 and 3
    // read kv head 1 and keep theirs.
    let mut e = m.clone();
    prune_rows(&mut e, q, DM, &head_rows(&[0, 1], &[1, 3]));
    check(&net, &m, &e);
}

#[test]
fn rope_keeps_a_key_dimension_alive_through_its_partner() {
    // Only dimension 1 pruned: rotated, it reads dimension 3, still live.
    let net = gqa(true, false);
    let k = layer(&net, "k");
    let mut m = MaskSet::dense(&net);
    prune_rows(&mut m, k, DM, &head_rows(&[0], &[1]));
    check(&net, &m, &m);
}

#[test]
fn a_key_bias_keeps_a_pruned_key_dimension_alive() {
    let net = gqa(true, true);
    let k = layer(&net, "k");
    let mut m = MaskSet::dense(&net);
    prune_rows(&mut m, k, DM, &head_rows(&[0], &[1, 3]));
    check(&net, &m, &m);
}

#[test]
fn a_pruned_query_dimension_kills_the_key_dimension_when_the_whole_group_lacks_it() {
    let net = gqa(false, true);
    let (q, k) = (layer(&net, "q"), layer(&net, "k"));
    // Query head 0 alone: head 1 still reads key dimensions 0 and 2.
    let mut m = MaskSet::dense(&net);
    prune_rows(&mut m, q, DM, &head_rows(&[0], &[0, 2]));
    check(&net, &m, &m);
    // Both query heads of kv head 0: its key dimensions 0 and 2 die.
    prune_rows(&mut m, q, DM, &head_rows(&[1], &[0, 2]));
    let mut e = m.clone();
    prune_rows(&mut e, k, DM, &head_rows(&[0], &[0, 2]));
    check(&net, &m, &e);
    // With a query bias nothing dies.
    let net = gqa(true, true);
    check(&net, &m, &m);
}

#[test]
fn attention_with_rope_and_gqa_agrees_with_the_float_definition() {
    for (qb, kb) in [(false, false), (true, false), (false, true)] {
        crosscheck(&gqa(qb, kb));
    }
}

// ---------------------------------------------------------------------------
// Squeeze-and-excite: x * sigmoid(fc2(relu(fc1(pool(x))))).

fn se(gate: Activation) -> Network {
    let mut n = Net::new("se");
    let x = n.b.input("x", vec![3, 4, 4]).unwrap();
    n.salt += 1;
    let w = ConstTensor::f32(vec![4, 3, 3, 3], values(4 * 27, 77));
    let h =
        n.b.conv(
            "c0",
            x,
            "c0.w",
            w,
            None,
            maskforge::graph::op::Window::same(1, 1),
            1,
        )
        .unwrap();
    let p = n.b.global_pool("pool", h, PoolKind::Avg).unwrap();
    let p = n.b.flatten("pool/flat", p);
    let f = n.dense("fc1", p, 2, false);
    let f = n.b.activation("relu", f, Activation::Relu);
    let f = n.dense("fc2", f, 4, false);
    let f = n.b.activation("gate", f, gate);
    let f = n.b.reshape("gate/shape", f, vec![4, 1, 1]).unwrap();
    let y = n.b.binary("excite", Binary::Mul, h, f).unwrap();
    let w = ConstTensor::f32(vec![2, 4, 1, 1], values(8, 78));
    let y =
        n.b.conv(
            "c1",
            y,
            "c1.w",
            w,
            None,
            maskforge::graph::op::Window::same(1, 0),
            1,
        )
        .unwrap();
    n.finish(y)
}

#[test]
fn an_se_gate_whose_branch_is_pruned_kills_nothing() {
    let net = se(Activation::Sigmoid);
    let (fc1, fc2) = (layer(&net, "fc1"), layer(&net, "fc2"));
    let mut m = MaskSet::dense(&net);
    m.layers[fc1] = BitSet::new(m.layers[fc1].len());
    // sigmoid(0) = 0.5: the gate is a constant coefficient. fc2 reads
    // nothing from the input, as usual.
    let mut e = m.clone();
    e.layers[fc2] = BitSet::new(e.layers[fc2].len());
    check(&net, &m, &e);
    crosscheck(&net);
}

#[test]
fn a_relu_gate_whose_branch_is_pruned_kills_the_gated_path() {
    // relu(0) = 0: the gate is identically 0, and so is the gated value.
    let net = se(Activation::Relu);
    let fc1 = layer(&net, "fc1");
    let mut m = MaskSet::dense(&net);
    m.layers[fc1] = BitSet::new(m.layers[fc1].len());
    let e = MaskSet {
        layers: m.layers.iter().map(|l| BitSet::new(l.len())).collect(),
    };
    check(&net, &m, &e);
    crosscheck(&net);
}

// ---------------------------------------------------------------------------
// Real exported graphs.

/// The same network with the biases of its layers and its added constants
/// set to 0: a pruned row is then identically 0, so products see dead
/// factors wherever rows are pruned.
fn without_biases(net: &Network) -> Network {
    use maskforge::graph::op::Op;
    let mut out = net.clone();
    for node in &net.nodes {
        let name = match &node.op {
            Op::Conv { bias: Some(b), .. } | Op::Dense { bias: Some(b), .. } => b,
            Op::Norm(Norm::AddConst(p)) => p,
            _ => continue,
        };
        let t = net.params.get(name).unwrap();
        let n: usize = t.shape.iter().product();
        out.params.insert(
            name.clone(),
            ConstTensor::f32(t.shape.clone(), vec![0.0; n]),
        );
    }
    out
}

#[test]
fn fixtures_with_products_agree_with_the_float_definition_under_dead_factors() {
    let wanted = [
        "efficientnet_b0_tiny",
        "mobilenetv3_small",
        "vit_tiny",
        "bert_tiny_embeds",
    ];
    let graphs: Vec<_> = common::fixtures()
        .into_iter()
        .filter(|g| wanted.contains(&g.name.as_str()))
        .collect();
    assert_eq!(graphs.len(), wanted.len(), "fixtures missing");
    for g in graphs {
        let net = g.load().network;
        for net in [without_biases(&net), net] {
            for (k, density) in [0.5, 0.1].into_iter().enumerate() {
                let mut m = common::random_masks(&net, density, 31 + k as u64);
                prune_random_rows(&net, &mut m, 0.3, k as u64);
                let graph = effective_masks(&net, &m);
                let float = oracle::effective_masks(&net, &m).unwrap();
                assert!(
                    graph == float,
                    "{} density {density}: {}",
                    g.name,
                    common::describe(&net, &graph, &float)
                );
                assert_eq!(effective_masks(&net, &graph), graph, "{}", g.name);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Effective paths (node-path balancing) follow the same rule.

#[test]
fn effective_paths_skip_dead_factors() {
    use maskforge::analysis::paths::effective_paths;
    // x [4] -> gate, up (3 units each) -> silu(gate) * up -> down [4]. Each
    // unit carries 4 paths from the gate and 4 from up, each continuing to
    // 4 outputs: 3 * 8 * 4 = 96 paths.
    let glu = |gate_bias: bool| {
        let mut n = Net::new("glu-paths");
        let x = n.b.input("x", vec![D]).unwrap();
        let g = n.dense("gate", x, HIDDEN, gate_bias);
        let u = n.dense("up", x, HIDDEN, false);
        let s = n.b.activation("gate/silu", g, Activation::Silu);
        let h = n.b.binary("glu", Binary::Mul, s, u).unwrap();
        let y = n.dense("down", h, D, false);
        n.finish(y)
    };
    let log = |net: &Network, m: &MaskSet| effective_paths(net, m).unwrap().log10;
    let net = glu(false);
    assert!((log(&net, &MaskSet::dense(&net)) - 96f64.log10()).abs() < 1e-12);
    // Gate row 1 pruned, no bias: unit 1 is 0, its 4 up paths die too.
    let mut m = MaskSet::dense(&net);
    prune_rows(&mut m, layer(&net, "gate"), D, &[1]);
    assert!((log(&net, &m) - 64f64.log10()).abs() < 1e-12);
    // With a gate bias they continue: 64 + 4 * 4.
    let net = glu(true);
    assert!((log(&net, &m) - 80f64.log10()).abs() < 1e-12);
}
