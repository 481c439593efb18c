//! Node-path balancing metrics (effective paths and effective nodes) checked
//! against brute force: every input -> output path of the unrolled element
//! graph enumerated one by one, on small hand-built networks with random
//! masks; and, on VGG-19 and ResNet-50, against an f64 forward pass in candle
//! (the way the NPB code counts) and for the properties a count must have.

mod common;

use candle_core::{DType, Device, Tensor};
use maskforge::analysis::effective::{analyse, effective_masks, node_counts};
use maskforge::analysis::paths::effective_paths;
use maskforge::bitset::BitSet;
use maskforge::graph::op::{Activation, Op, Pool, PoolKind, Window};
use maskforge::graph::tensor::ConstTensor;
use maskforge::graph::{Network, NetworkBuilder, ValueId};
use maskforge::mask::MaskSet;
use maskforge::zoo;

// ---------------------------------------------------------------------------
// The unrolled element graph, built from the definitions with plain loops
// (no code shared with the library's liveness or path passes).

/// One node per element of every value; `succ` lists the edges out of it.
struct Unrolled {
    offset: Vec<usize>,
    succ: Vec<Vec<usize>>,
    is_output: Vec<bool>,
}

use common::{flatten, unflatten};

/// The input coordinate read by output coordinate `o` through tap `k`.
fn src(o: usize, k: usize, stride: usize, dil: usize, pad: usize, n: usize) -> Option<usize> {
    let q = (o * stride + k * dil) as isize - pad as isize;
    (q >= 0 && (q as usize) < n).then_some(q as usize)
}

/// The input position `(y, x)` output `o` reads through tap `k` of window
/// `w` over a `[C, H, W]` input, or `None` in the padding.
fn src2(w: &Window, o: [usize; 2], k: [usize; 2], xs: &[usize]) -> Option<(usize, usize)> {
    let at = |a: usize| src(o[a], k[a], w.stride[a], w.dilation[a], w.pads[a], xs[a + 1]);
    Some((at(0)?, at(1)?))
}

impl Unrolled {
    fn new(net: &Network, masks: &MaskSet) -> Self {
        let mut offset = Vec::new();
        let mut n = 0;
        for v in &net.values {
            offset.push(n);
            n += v.numel();
        }
        let mut g = Unrolled {
            offset,
            succ: vec![Vec::new(); n],
            is_output: vec![false; n],
        };
        for &o in &net.outputs {
            for e in 0..net.value(o).numel() {
                g.is_output[g.offset[o] + e] = true;
            }
        }
        let layer_of = net.layer_of_node();
        for (ni, node) in net.nodes.iter().enumerate() {
            let shape = |v: ValueId| net.value(v).shape.clone();
            let (x, y) = (node.inputs[0], node.output);
            let (xs, ys) = (shape(x), shape(y));
            let mut edge = |a: (ValueId, usize), b: (ValueId, usize)| {
                g.succ[g.offset[a.0] + a.1].push(g.offset[b.0] + b.1);
            };
            match &node.op {
                Op::Conv { conv, .. } => {
                    let m = &masks.layers[layer_of[ni].unwrap()];
                    let (ipg, opg) = (
                        conv.in_channels / conv.groups,
                        conv.out_channels / conv.groups,
                    );
                    let [kh, kw] = conv.kernel;
                    let w = conv.window;
                    for o in 0..conv.out_channels {
                        for ci in 0..ipg {
                            let i = (o / opg) * ipg + ci;
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    if !m.get(((o * ipg + ci) * kh + ky) * kw + kx) {
                                        continue;
                                    }
                                    for oy in 0..ys[1] {
                                        for ox in 0..ys[2] {
                                            if let Some((qy, qx)) =
                                                src2(&w, [oy, ox], [ky, kx], &xs)
                                            {
                                                edge(
                                                    (x, flatten(&[i, qy, qx], &xs)),
                                                    (y, flatten(&[o, oy, ox], &ys)),
                                                );
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                Op::Dense { dense, .. } => {
                    let m = &masks.layers[layer_of[ni].unwrap()];
                    for o in 0..dense.out_features {
                        for i in 0..dense.in_features {
                            if m.get(o * dense.in_features + i) {
                                edge((x, i), (y, o));
                            }
                        }
                    }
                }
                Op::Pool(p) => {
                    let w = p.window;
                    for c in 0..xs[0] {
                        for oy in 0..ys[1] {
                            for ox in 0..ys[2] {
                                for ky in 0..p.kernel[0] {
                                    for kx in 0..p.kernel[1] {
                                        if let Some((qy, qx)) = src2(&w, [oy, ox], [ky, kx], &xs) {
                                            edge(
                                                (x, flatten(&[c, qy, qx], &xs)),
                                                (y, flatten(&[c, oy, ox], &ys)),
                                            );
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                Op::GlobalPool(_) => {
                    let per = net.value(x).numel() / xs[0];
                    for e in 0..net.value(x).numel() {
                        edge((x, e), (y, e / per));
                    }
                }
                Op::Transpose(perm) => {
                    for e in 0..net.value(x).numel() {
                        let i = unflatten(e, &xs);
                        let j: Vec<usize> = perm.iter().map(|&p| i[p]).collect();
                        edge((x, e), (y, flatten(&j, &ys)));
                    }
                }
                Op::Add => {
                    for &v in &node.inputs {
                        let vs = shape(v);
                        let pad = ys.len() - vs.len();
                        for e in 0..net.value(y).numel() {
                            let j = unflatten(e, &ys);
                            let i: Vec<usize> = (0..vs.len())
                                .map(|d| if vs[d] == 1 { 0 } else { j[d + pad] })
                                .collect();
                            edge((v, flatten(&i, &vs)), (y, e));
                        }
                    }
                }
                Op::Concat(axis) => {
                    let mut at = 0;
                    for &v in &node.inputs {
                        let vs = shape(v);
                        for e in 0..net.value(v).numel() {
                            let mut i = unflatten(e, &vs);
                            i[*axis] += at;
                            edge((v, e), (y, flatten(&i, &ys)));
                        }
                        at += vs[*axis];
                    }
                }
                // Reshape keeps the row-major order; the rest are elementwise.
                _ => {
                    for e in 0..net.value(x).numel() {
                        edge((x, e), (y, e));
                    }
                }
            }
        }
        g
    }

    /// Enumerate every path from an input element to an output element, one
    /// at a time; return how many, and which elements lie on one.
    fn enumerate(&self, net: &Network) -> (u64, Vec<bool>) {
        let mut on_path = vec![false; self.succ.len()];
        let mut count = 0u64;
        let mut stack: Vec<usize> = Vec::new();
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
            for &s in stack.iter() {
                on_path[s] = true;
            }
            assert!(
                *count < 20_000_000,
                "test network too large for brute force"
            );
        }
        for &next in &self.succ[at] {
            self.walk(next, stack, count, on_path);
        }
        stack.pop();
    }
}

/// Check the library's path count and effective nodes against brute force.
fn check_against_brute_force(net: &Network, masks: &MaskSet) -> u64 {
    let g = Unrolled::new(net, masks);
    let (count, on_path) = g.enumerate(net);
    let p = effective_paths(net, masks).unwrap();
    if count == 0 {
        assert!(p.is_zero(), "{}: expected no path, got {p:?}", net.name);
    } else {
        let want = (count as f64).log10();
        assert!(
            (p.log10 - want).abs() <= 1e-9 * want.max(1.0),
            "{}: log10 {} vs brute force {count} (log10 {want})",
            net.name,
            p.log10
        );
    }
    assert_eq!(p.underflowed, 0);
    // Effective nodes: output units of each layer with an element on a path.
    let nodes = node_counts(net, &analyse(net, masks));
    for (li, l) in net.layers.iter().enumerate() {
        let v = net.nodes[l.node].output;
        let shape = &net.value(v).shape;
        let per = net.value(v).numel() / shape[0];
        let effective = (0..shape[0])
            .filter(|c| (0..per).any(|e| on_path[g.offset[v] + c * per + e]))
            .count();
        assert_eq!(
            nodes[li].functional, effective,
            "{}: layer {} effective nodes",
            net.name, l.name
        );
    }
    count
}

/// Random masks at several densities (dense included) for every network.
fn check_random_masks(net: &Network) {
    let mut biggest = 0;
    for (k, density) in [1.0, 0.9, 0.6, 0.35, 0.15].into_iter().enumerate() {
        for seed in 0..4 {
            let m = common::random_masks(net, density, 100 * k as u64 + seed);
            let c = check_against_brute_force(net, &m);
            biggest = biggest.max(c);
        }
    }
    // The cases must not be trivial.
    assert!(biggest > 300, "{}: largest count {biggest}", net.name);
}

// ---------------------------------------------------------------------------
// Small networks.

fn ones(shape: Vec<usize>) -> ConstTensor {
    let n = shape.iter().product();
    ConstTensor::f32(shape, vec![1.0; n])
}

fn conv(
    b: &mut NetworkBuilder,
    name: &str,
    x: ValueId,
    shape: [usize; 4],
    window: Window,
    groups: usize,
) -> ValueId {
    b.conv(
        name,
        x,
        &format!("{name}.w"),
        ones(shape.to_vec()),
        None,
        window,
        groups,
    )
    .unwrap()
}

fn dense(b: &mut NetworkBuilder, name: &str, x: ValueId, out: usize) -> ValueId {
    let n_in = b.shape(x)[0];
    b.dense(name, x, &format!("{name}.w"), ones(vec![out, n_in]), None)
        .unwrap()
}

fn window(stride: [usize; 2], pads: [usize; 4], dilation: [usize; 2]) -> Window {
    Window {
        stride,
        pads,
        dilation,
    }
}

fn mlp() -> Network {
    let mut b = NetworkBuilder::new("mlp");
    let x = b.input("x", vec![5]).unwrap();
    let h = dense(&mut b, "fc1", x, 6);
    let h = b.activation("relu", h, Activation::Relu);
    let h = dense(&mut b, "fc2", h, 4);
    let y = dense(&mut b, "fc3", h, 3);
    b.output(y);
    b.finish().unwrap()
}

/// Non-square input; stride 2 with padding, a non-square stride and kernel
/// with asymmetric padding, a dilated conv; Flatten into a dense layer.
fn conv_net() -> Network {
    let mut b = NetworkBuilder::new("conv");
    let x = b.input("x", vec![2, 6, 5]).unwrap();
    let h = conv(&mut b, "c1", x, [3, 2, 3, 3], Window::same(2, 1), 1);
    let h = b.activation("relu", h, Activation::Relu);
    let h = conv(
        &mut b,
        "c2",
        h,
        [2, 3, 2, 3],
        window([1, 2], [0, 1, 1, 0], [1, 1]),
        1,
    );
    let h = conv(
        &mut b,
        "c3",
        h,
        [2, 2, 3, 3],
        window([1, 1], [2, 2, 2, 2], [2, 2]),
        1,
    );
    let f = b.flatten("flat", h);
    let y = dense(&mut b, "fc", f, 2);
    b.output(y);
    b.finish().unwrap()
}

/// A residual block with a projection shortcut, then one with an identity
/// shortcut after a strided conv; global average pool and a classifier.
fn residual() -> Network {
    let mut b = NetworkBuilder::new("residual");
    let x = b.input("x", vec![2, 5, 5]).unwrap();
    let h = conv(&mut b, "a", x, [3, 2, 3, 3], Window::same(1, 1), 1);
    let h = b.activation("relu", h, Activation::Relu);
    let h = conv(&mut b, "b", h, [3, 3, 3, 3], Window::same(1, 1), 1);
    let s = conv(&mut b, "short", x, [3, 2, 1, 1], Window::same(1, 0), 1);
    let h = b.add("add1", &[h, s]).unwrap();
    let h = conv(&mut b, "c", h, [2, 3, 3, 3], Window::same(2, 1), 1);
    let r = conv(&mut b, "d", h, [2, 2, 3, 3], Window::same(1, 1), 1);
    let h = b.add("add2", &[h, r]).unwrap();
    let g = b.global_pool("gap", h, PoolKind::Avg).unwrap();
    let f = b.flatten("flat", g);
    let y = dense(&mut b, "fc", f, 2);
    b.output(y);
    b.finish().unwrap()
}

/// Overlapping padded max pool, a ceil-mode average pool whose last window
/// hangs over the edge, a global max pool.
fn pools() -> Network {
    let mut b = NetworkBuilder::new("pools");
    let x = b.input("x", vec![2, 9, 9]).unwrap();
    let h = conv(&mut b, "c1", x, [2, 2, 3, 3], Window::same(1, 1), 1);
    let pool = |kind, k, s, p, ceil| Pool {
        kind,
        kernel: [k, k],
        window: Window::same(s, p),
        ceil,
    };
    let h = b
        .pool("max", h, pool(PoolKind::Max, 3, 2, 1, false))
        .unwrap();
    let h = b
        .pool("avg", h, pool(PoolKind::Avg, 2, 2, 0, true))
        .unwrap();
    assert_eq!(b.shape(h), &[2, 3, 3]);
    let h = conv(&mut b, "c2", h, [3, 2, 2, 2], Window::same(1, 0), 1);
    let g = b.global_pool("gmp", h, PoolKind::Max).unwrap();
    let f = b.flatten("flat", g);
    let y = dense(&mut b, "fc", f, 2);
    b.output(y);
    b.finish().unwrap()
}

/// Concat on the channel and on a spatial axis, a grouped conv, a
/// Transpose, a broadcasting Add, an Add of a value to itself, and two
/// graph outputs.
fn branches() -> Network {
    let mut b = NetworkBuilder::new("branches");
    let x = b.input("x", vec![2, 3, 3]).unwrap();
    let a = conv(&mut b, "a", x, [2, 2, 3, 3], Window::same(1, 1), 1);
    let g = conv(&mut b, "grouped", x, [4, 1, 1, 1], Window::same(1, 0), 2);
    let z = b.concat("cat0", &[a, g], 0).unwrap();
    let t = b.transpose("t", z, vec![0, 2, 1]).unwrap();
    let gp = b.global_pool("gp", t, PoolKind::Avg).unwrap();
    let s = b.add("bcast", &[t, gp]).unwrap();
    let p = conv(&mut b, "p", s, [6, 6, 1, 2], Window::same(1, 0), 1);
    let w = b.concat("cat2", &[s, p], 2).unwrap();
    assert_eq!(b.shape(w), &[6, 3, 5]);
    let d = b.add("double", &[w, w]).unwrap();
    let f = b.flatten("flat", d);
    let y = dense(&mut b, "fc", f, 2);
    b.output(y);
    b.output(gp);
    b.finish().unwrap()
}

#[test]
fn mlp_paths_and_nodes_match_brute_force() {
    check_random_masks(&mlp());
}

#[test]
fn conv_paths_and_nodes_match_brute_force() {
    check_random_masks(&conv_net());
}

#[test]
fn residual_paths_and_nodes_match_brute_force() {
    check_random_masks(&residual());
}

#[test]
fn pool_paths_and_nodes_match_brute_force() {
    check_random_masks(&pools());
}

#[test]
fn concat_transpose_broadcast_paths_and_nodes_match_brute_force() {
    check_random_masks(&branches());
}

#[test]
fn dense_mlp_has_the_product_of_its_widths() {
    let net = mlp();
    let c = check_against_brute_force(&net, &MaskSet::dense(&net));
    assert_eq!(c, 5 * 6 * 4 * 3);
}

#[test]
fn a_fully_pruned_layer_leaves_no_path_and_no_effective_node() {
    let net = residual();
    let mut m = MaskSet::dense(&net);
    let fc = net.layer_index("fc.w").unwrap();
    m.layers[fc] = BitSet::new(m.layers[fc].len());
    assert_eq!(check_against_brute_force(&net, &m), 0);
    let p = effective_paths(&net, &m).unwrap();
    assert_eq!(p.log10, f64::NEG_INFINITY);
    let nodes = node_counts(&net, &analyse(&net, &m));
    assert!(nodes.iter().all(|n| n.functional == 0), "{nodes:?}");
}

#[test]
fn cutting_only_the_main_branch_leaves_the_shortcut_paths() {
    // Pruning all of conv b leaves the projection shortcut: paths remain, and
    // the count equals brute force.
    let net = residual();
    let mut m = MaskSet::dense(&net);
    let li = net.layer_index("b.w").unwrap();
    m.layers[li] = BitSet::new(m.layers[li].len());
    assert!(check_against_brute_force(&net, &m) > 0);
    let nodes = node_counts(&net, &analyse(&net, &m));
    assert_eq!(nodes[li].functional, 0);
    let a = net.layer_index("a.w").unwrap();
    assert_eq!(nodes[a].functional, 0, "conv a now leads nowhere");
}

// ---------------------------------------------------------------------------
// VGG-19 and ResNet-50.

/// The count the NPB code computes, with its pools corrected to window sums
/// and no biases: an f64 forward in candle of the network with binary
/// weights, all-ones input, normalisations and activations as identities.
/// Only valid while the count stays inside f64 (true for these two models).
fn candle_log10_paths(net: &Network, masks: &MaskSet) -> f64 {
    let dev = Device::Cpu;
    let layer_of = net.layer_of_node();
    let mut vals: Vec<Option<Tensor>> = vec![None; net.values.len()];
    let mut shape = vec![1];
    shape.extend(&net.value(net.inputs[0]).shape);
    vals[net.inputs[0]] = Some(Tensor::ones(shape, DType::F64, &dev).unwrap());
    for (ni, node) in net.nodes.iter().enumerate() {
        let x = vals[node.inputs[0]].clone().unwrap();
        let binary = |li: usize| {
            let l = &net.layers[li];
            let m = &masks.layers[li];
            let v: Vec<f64> = (0..m.len()).map(|i| m.get(i) as u8 as f64).collect();
            Tensor::from_vec(v, l.shape.clone(), &dev).unwrap()
        };
        let y = match &node.op {
            Op::Conv { conv, .. } => {
                let w = conv.window;
                assert!(w.pads.iter().all(|&p| p == w.pads[0]) && w.stride[0] == w.stride[1]);
                x.conv2d(
                    &binary(layer_of[ni].unwrap()),
                    w.pads[0],
                    w.stride[0],
                    1,
                    conv.groups,
                )
                .unwrap()
            }
            Op::Dense { .. } => x
                .matmul(&binary(layer_of[ni].unwrap()).t().unwrap())
                .unwrap(),
            Op::Pool(p) => {
                // Window sum: a depthwise conv with a ones kernel on the zero-padded input.
                let c = x.dim(1).unwrap();
                let k = Tensor::ones((c, 1, p.kernel[0], p.kernel[1]), DType::F64, &dev).unwrap();
                assert!(!p.ceil && p.window.pads.iter().all(|&q| q == p.window.pads[0]));
                x.conv2d(&k, p.window.pads[0], p.window.stride[0], 1, c)
                    .unwrap()
            }
            Op::GlobalPool(_) => x.sum_keepdim(3).unwrap().sum_keepdim(2).unwrap(),
            Op::Reshape => {
                let mut s = vec![1];
                s.extend(&net.value(node.output).shape);
                x.reshape(s).unwrap()
            }
            Op::Add => {
                let mut acc = x;
                for &v in &node.inputs[1..] {
                    acc = acc.broadcast_add(vals[v].as_ref().unwrap()).unwrap();
                }
                acc
            }
            Op::Norm(_) | Op::Activation(_) | Op::Identity => x,
            other => panic!("not in the zoo models: {other:?}"),
        };
        vals[node.output] = Some(y);
    }
    let r: f64 = vals[net.outputs[0]]
        .as_ref()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(r.is_finite());
    r.log10()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1.0)
}

#[test]
fn vgg19_and_resnet50_match_an_f64_forward_and_stay_finite() {
    for (name, dense_at_least) in [("vgg19", 50.0), ("resnet50", 130.0)] {
        let net = zoo::build(name, 0).unwrap();
        let dense = MaskSet::dense(&net);
        let t = std::time::Instant::now();
        let full = effective_paths(&net, &dense).unwrap();
        eprintln!(
            "{name} dense: log10 paths {:.6} in {:?}",
            full.log10,
            t.elapsed()
        );
        assert!(
            full.log10.is_finite() && full.log10 > dense_at_least,
            "{full:?}"
        );
        assert_eq!(full.underflowed, 0);
        assert!(close(full.log10, candle_log10_paths(&net, &dense), 1e-9));
        let mut previous = full.log10;
        for density in [0.1, 0.01] {
            let m = common::random_masks(&net, density, 7);
            let t = std::time::Instant::now();
            let p = effective_paths(&net, &m).unwrap();
            eprintln!(
                "{name} density {density}: log10 paths {:.6} in {:?}",
                p.log10,
                t.elapsed()
            );
            assert!(
                p.log10.is_finite() && p.log10 < previous,
                "{p:?} after {previous}"
            );
            assert!(close(p.log10, candle_log10_paths(&net, &m), 1e-9));
            previous = p.log10;
        }
    }
}

#[test]
fn inactive_weights_carry_no_path() {
    // Removing the inactive weights changes no count; removing more never
    // raises it.
    for name in ["resnet20", "vgg11"] {
        let net = zoo::build(name, 0).unwrap();
        for (seed, density) in [(1, 0.3), (2, 0.02), (3, 0.004)] {
            let m = common::random_masks(&net, density, seed);
            let active = effective_masks(&net, &m);
            let raw = effective_paths(&net, &m).unwrap();
            let eff = effective_paths(&net, &active).unwrap();
            assert!(
                close(raw.log10, eff.log10, 1e-12),
                "{name} {density}: {raw:?} {eff:?}"
            );
            let mut fewer = active.clone();
            for l in &mut fewer.layers {
                for i in l.ones().step_by(3).collect::<Vec<_>>() {
                    l.set(i, false);
                }
            }
            let less = effective_paths(&net, &fewer).unwrap();
            assert!(
                less.log10 < raw.log10 || less.is_zero(),
                "{name}: {less:?} {raw:?}"
            );
        }
    }
}

#[test]
fn a_fully_pruned_zoo_layer_gives_zero_paths() {
    let net = zoo::build("vgg19", 0).unwrap();
    let mut m = MaskSet::dense(&net);
    m.layers[8] = BitSet::new(m.layers[8].len());
    let p = effective_paths(&net, &m).unwrap();
    assert!(p.is_zero());
    // JSON has no -inf: it becomes null.
    assert_eq!(serde_json::to_string(&p.log10).unwrap(), "null");
}

// ---------------------------------------------------------------------------
// The command line: audit and sweep report the figures.

fn maskforge(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_maskforge"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn audit_reports_paths_and_nodes() {
    // Dense LeNet-300-100: 784 * 300 * 100 * 10 paths, 410 effective nodes.
    let out = maskforge(&["audit", "zoo:lenet300", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = (784.0f64 * 300.0 * 100.0 * 10.0).log10();
    assert!(
        close(v["log10_effective_paths"].as_f64().unwrap(), want, 1e-12),
        "{v}"
    );
    assert_eq!(v["effective_nodes"], 410);
    assert_eq!(v["total_nodes"], 410);
    assert_eq!(v["paths_underflowed"], 0);
    // Per layer the effective nodes are the functional ones.
    assert_eq!(v["layers"][1]["nodes"]["functional"], 100);
    let table = maskforge(&["audit", "zoo:lenet300"]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains("node-path balancing: 10^8.371 effective paths, 410 of 410 nodes effective"),
        "{table}"
    );

    // Pruned so far that nothing is left: null paths, no effective node.
    let dir = tempfile::tempdir().unwrap();
    let masks = dir.path().join("cut.safetensors");
    let masks = masks.to_str().unwrap();
    maskforge(&[
        "prune",
        "zoo:lenet300",
        "--method",
        "rpi",
        "--quota",
        "uniform",
        "--compression",
        "1e5",
        "-o",
        masks,
    ]);
    let out = maskforge(&["audit", "zoo:lenet300", "--masks", masks, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["log10_effective_paths"].is_null(), "{v}");
    assert_eq!(v["effective_nodes"], 0);
    let table = maskforge(&["audit", "zoo:lenet300", "--masks", masks]);
    assert!(String::from_utf8(table.stdout)
        .unwrap()
        .contains("node-path balancing: no effective path, 0 of 410 nodes effective"));
}

#[test]
fn sweep_csv_has_the_npb_columns() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("s.csv");
    maskforge(&[
        "sweep",
        "zoo:lenet5",
        "--methods",
        "rpi",
        "--quotas",
        "igq",
        "--compressions",
        "10,1e4",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header[12], "error",
        "the original columns keep their places"
    );
    assert_eq!(&header[13..], ["log10_effective_paths", "effective_nodes"]);
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    assert_eq!(rows.len(), 2);
    let paths: Vec<f64> = rows.iter().map(|r| r[13].parse().unwrap()).collect();
    let nodes: Vec<usize> = rows.iter().map(|r| r[14].parse().unwrap()).collect();
    // 10x keeps paths and every node; 10^4x (6 weights) has fewer of both.
    assert!(paths[0].is_finite() && paths[0] > paths[1], "{paths:?}");
    assert_eq!(nodes[0], 236);
    assert!(nodes[1] < nodes[0]);
}
