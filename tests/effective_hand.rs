//! Effective masks of small networks whose answer is worked out by hand.

use maskforge::analysis::effective::effective_masks;
use maskforge::analysis::oracle;
use maskforge::bitset::BitSet;
use maskforge::graph::op::{Activation, PoolKind, Window};
use maskforge::graph::tensor::ConstTensor;
use maskforge::graph::{Network, NetworkBuilder};
use maskforge::mask::MaskSet;

fn w(shape: Vec<usize>) -> ConstTensor {
    let n = shape.iter().product();
    ConstTensor::f32(shape, (0..n).map(|i| 0.5 + (i % 7) as f32 * 0.1).collect())
}

fn bits(n: usize, ones: &[usize]) -> BitSet {
    BitSet::from_fn(n, |i| ones.contains(&i))
}

fn all_but(n: usize, zeros: &[usize]) -> BitSet {
    BitSet::from_fn(n, |i| !zeros.contains(&i))
}

/// Check both methods give `expected`.
fn check(net: &Network, masks: &MaskSet, expected: &MaskSet) {
    let graph = effective_masks(net, masks);
    assert_eq!(&graph, expected, "graph method");
    assert_eq!(
        &oracle::effective_masks(net, masks).unwrap(),
        expected,
        "float method"
    );
}

/// 3 -> 2 -> 2 MLP; weights W1 [2,3], W2 [2,2].
fn mlp() -> Network {
    let mut b = NetworkBuilder::new("mlp");
    let x = b.input("x", vec![3]).unwrap();
    let h = b.dense("fc1", x, "w1", w(vec![2, 3]), None).unwrap();
    let h = b.activation("relu", h, Activation::Relu);
    let y = b.dense("fc2", h, "w2", w(vec![2, 2]), None).unwrap();
    b.output(y);
    b.finish().unwrap()
}

#[test]
fn neuron_without_inputs_kills_its_outgoing_weights() {
    let net = mlp();
    // Hidden neuron 1 loses all its inputs (row 1 of W1 = elements 3,4,5).
    let m = MaskSet {
        layers: vec![all_but(6, &[3, 4, 5]), BitSet::full(4)],
    };
    // W2[o, 1] (elements 1 and 3) become inactive.
    let e = MaskSet {
        layers: vec![all_but(6, &[3, 4, 5]), all_but(4, &[1, 3])],
    };
    check(&net, &m, &e);
}

#[test]
fn neuron_without_outputs_kills_its_incoming_weights() {
    let net = mlp();
    // Hidden neuron 0 loses its outputs (column 0 of W2 = elements 0, 2).
    let m = MaskSet {
        layers: vec![BitSet::full(6), all_but(4, &[0, 2])],
    };
    let e = MaskSet {
        layers: vec![all_but(6, &[0, 1, 2]), all_but(4, &[0, 2])],
    };
    check(&net, &m, &e);
}

#[test]
fn dead_residual_branch_is_bypassed_by_the_shortcut() {
    // x[2,4,4] -> c1 (3x3, 2->2) -> c2 (3x3, 2->2) ; y = c2 + c1 ; then c3 (1x1, 2->1)
    let mut b = NetworkBuilder::new("res");
    let x = b.input("x", vec![2, 4, 4]).unwrap();
    let c1 = b
        .conv(
            "c1",
            x,
            "w1",
            w(vec![2, 2, 3, 3]),
            None,
            Window::same(1, 1),
            1,
        )
        .unwrap();
    let r = b
        .conv(
            "rb",
            c1,
            "wb",
            w(vec![2, 2, 3, 3]),
            None,
            Window::same(1, 1),
            1,
        )
        .unwrap();
    let s = b.add("add", &[r, c1]).unwrap();
    let y = b
        .conv(
            "c3",
            s,
            "w3",
            w(vec![1, 2, 1, 1]),
            None,
            Window::same(1, 0),
            1,
        )
        .unwrap();
    b.output(y);
    let net = b.finish().unwrap();
    // The branch conv keeps weights but its input channel 0 is dead: c1 row 0 pruned.
    let mut w1 = BitSet::full(36);
    for i in 0..18 {
        w1.set(i, false);
    }
    let m = MaskSet {
        layers: vec![w1.clone(), BitSet::full(36), BitSet::full(2)],
    };
    // Branch weights reading dead channel 0 (ci=0: elements o*18 + 0..9) are inactive;
    // c3 still reads channel 0 of the sum (alive through the branch from channel 1).
    let wb = BitSet::from_fn(36, |i| (i % 18) >= 9);
    let e = MaskSet {
        layers: vec![w1.clone(), wb, BitSet::full(2)],
    };
    check(&net, &m, &e);
    // Now kill the branch entirely: all its weights inactive, c1 stays active via the shortcut.
    let m2 = MaskSet {
        layers: vec![BitSet::full(36), BitSet::new(36), BitSet::full(2)],
    };
    let e2 = MaskSet {
        layers: vec![BitSet::full(36), BitSet::new(36), BitSet::full(2)],
    };
    check(&net, &m2, &e2);
}

#[test]
fn concat_routes_liveness_by_channel_block() {
    // Two 1x1 conv branches (1 channel each) concatenated, then a dense layer on 2*2*2 features.
    let mut b = NetworkBuilder::new("cat");
    let x = b.input("x", vec![1, 2, 2]).unwrap();
    let a = b
        .conv(
            "a",
            x,
            "wa",
            w(vec![1, 1, 1, 1]),
            None,
            Window::same(1, 0),
            1,
        )
        .unwrap();
    let c = b
        .conv(
            "c",
            x,
            "wc",
            w(vec![1, 1, 1, 1]),
            None,
            Window::same(1, 0),
            1,
        )
        .unwrap();
    let cat = b.concat("cat", &[a, c], 0).unwrap();
    let f = b.flatten("flat", cat);
    let y = b.dense("fc", f, "wf", w(vec![1, 8]), None).unwrap();
    b.output(y);
    let net = b.finish().unwrap();
    // The dense layer ignores branch c's features (4..8): wc becomes inactive.
    let m = MaskSet {
        layers: vec![BitSet::full(1), BitSet::full(1), bits(8, &[0, 1, 2, 3])],
    };
    let e = MaskSet {
        layers: vec![BitSet::full(1), BitSet::new(1), bits(8, &[0, 1, 2, 3])],
    };
    check(&net, &m, &e);
}

#[test]
fn flatten_after_conv_maps_channels_to_feature_blocks() {
    // conv 1->2 channels on 3x3 (pad 1), flatten 18 features, dense to 1.
    let mut b = NetworkBuilder::new("flat");
    let x = b.input("x", vec![1, 3, 3]).unwrap();
    let c = b
        .conv(
            "c",
            x,
            "wc",
            w(vec![2, 1, 3, 3]),
            None,
            Window::same(1, 1),
            1,
        )
        .unwrap();
    let f = b.flatten("flat", c);
    let y = b.dense("fc", f, "wf", w(vec![1, 18]), None).unwrap();
    b.output(y);
    let net = b.finish().unwrap();
    // Channel 1 loses every kernel tap: dense weights 9..18 become inactive.
    let wc = BitSet::from_fn(18, |i| i < 9);
    let m = MaskSet {
        layers: vec![wc.clone(), BitSet::full(18)],
    };
    let e = MaskSet {
        layers: vec![wc, BitSet::from_fn(18, |i| i < 9)],
    };
    check(&net, &m, &e);
}

#[test]
fn three_by_three_conv_on_a_one_by_one_map_uses_only_its_centre() {
    let mut b = NetworkBuilder::new("1x1map");
    let x = b.input("x", vec![2, 1, 1]).unwrap();
    let c = b
        .conv(
            "c",
            x,
            "wc",
            w(vec![3, 2, 3, 3]),
            None,
            Window::same(1, 1),
            1,
        )
        .unwrap();
    let f = b.flatten("flat", c);
    let y = b.dense("fc", f, "wf", w(vec![1, 3]), None).unwrap();
    b.output(y);
    let net = b.finish().unwrap();
    let m = MaskSet::dense(&net);
    // Only tap 4 (the centre) of each of the 6 kernels is active.
    let e = MaskSet {
        layers: vec![BitSet::from_fn(54, |i| i % 9 == 4), BitSet::full(3)],
    };
    check(&net, &m, &e);
}

#[test]
fn positions_that_read_only_padding_make_dense_weights_inactive() {
    // 1 channel 4x4, conv 3x3 stride 2 pad 1 -> 2x2 output. Keep only tap (0,0):
    // output (y,x) reads input (2y-1, 2x-1): only (1,1) reads data, (0,*) and (*,0) read padding.
    let mut b = NetworkBuilder::new("pos");
    let x = b.input("x", vec![1, 4, 4]).unwrap();
    let c = b
        .conv(
            "c",
            x,
            "wc",
            w(vec![1, 1, 3, 3]),
            None,
            Window::same(2, 1),
            1,
        )
        .unwrap();
    let f = b.flatten("flat", c);
    let y = b.dense("fc", f, "wf", w(vec![1, 4]), None).unwrap();
    b.output(y);
    let net = b.finish().unwrap();
    let m = MaskSet {
        layers: vec![bits(9, &[0]), BitSet::full(4)],
    };
    // Channel-level reachability would call all four dense weights active; only feature 3 is.
    let e = MaskSet {
        layers: vec![bits(9, &[0]), bits(4, &[3])],
    };
    check(&net, &m, &e);
}

#[test]
fn max_pool_and_global_pool_spread_liveness_over_their_windows() {
    let mut b = NetworkBuilder::new("pool");
    let x = b.input("x", vec![1, 4, 4]).unwrap();
    let c = b
        .conv(
            "c",
            x,
            "wc",
            w(vec![2, 1, 3, 3]),
            None,
            Window::same(2, 1),
            1,
        )
        .unwrap();
    let p = b
        .pool(
            "p",
            c,
            maskforge::graph::op::Pool {
                kind: PoolKind::Max,
                kernel: [2, 2],
                window: Window::same(1, 0),
                ceil: false,
            },
        )
        .unwrap();
    let g = b.global_pool("g", p, PoolKind::Avg).unwrap();
    let f = b.flatten("flat", g);
    let y = b.dense("fc", f, "wf", w(vec![1, 2]), None).unwrap();
    b.output(y);
    let net = b.finish().unwrap();
    // Channel 0 keeps only the padding-only tap pattern of the previous test: still live at (1,1).
    let m = MaskSet {
        layers: vec![bits(18, &[0, 9 + 4]), BitSet::full(2)],
    };
    check(&net, &m, &m.clone());
    // Dead channel 1: its dense weight goes.
    let m2 = MaskSet {
        layers: vec![bits(18, &[0]), BitSet::full(2)],
    };
    let e2 = MaskSet {
        layers: vec![bits(18, &[0]), bits(2, &[0])],
    };
    check(&net, &m2, &e2);
}

#[test]
fn depthwise_conv_reads_only_its_own_channel() {
    let mut b = NetworkBuilder::new("dw");
    let x = b.input("x", vec![2, 3, 3]).unwrap();
    let c1 = b
        .conv(
            "pw",
            x,
            "w1",
            w(vec![2, 2, 1, 1]),
            None,
            Window::same(1, 0),
            1,
        )
        .unwrap();
    let dw = b
        .conv(
            "dw",
            c1,
            "w2",
            w(vec![2, 1, 3, 3]),
            None,
            Window::same(1, 1),
            2,
        )
        .unwrap();
    let g = b.global_pool("g", dw, PoolKind::Avg).unwrap();
    let f = b.flatten("flat", g);
    let y = b.dense("fc", f, "wf", w(vec![1, 2]), None).unwrap();
    b.output(y);
    let net = b.finish().unwrap();
    // Output channel 1 of the pointwise conv loses its inputs: depthwise filter 1 is inactive,
    // and so is the dense weight reading it.
    let m = MaskSet {
        layers: vec![bits(4, &[0, 1]), BitSet::full(18), BitSet::full(2)],
    };
    let e = MaskSet {
        layers: vec![
            bits(4, &[0, 1]),
            BitSet::from_fn(18, |i| i < 9),
            bits(2, &[0]),
        ],
    };
    check(&net, &m, &e);
}
