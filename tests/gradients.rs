//! Scorer gradients against central finite differences in f64, and the GraSP
//! Hessian-gradient product against the analytic Hessian of softmax
//! cross-entropy on a linear model.

mod common;

use candle_core::{DType, Device, Tensor};
use maskforge::autodiff::executor::{Executor, Mode};
use maskforge::graph::op::{Activation, PoolKind, Window};
use maskforge::graph::tensor::ConstTensor;
use maskforge::graph::{Network, NetworkBuilder};
use maskforge::mask::MaskSet;
use maskforge::methods::scored::snip::loss_gradients;
use rand::{Rng, SeedableRng};

fn randw(shape: Vec<usize>, rng: &mut impl Rng) -> ConstTensor {
    let n = shape.iter().product();
    ConstTensor::f32(shape, (0..n).map(|_| rng.random::<f32>() - 0.5).collect())
}

fn nets() -> Vec<Network> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mlp = maskforge::zoo::build("mlp:6-5-4-3", 1).unwrap();
    // conv (bias) -> batchnorm -> relu -> maxpool -> conv (residual add)
    // -> global pool -> dense; the executor runs the first three as one op.
    let mut b = NetworkBuilder::new("res");
    let x = b.input("x", vec![2, 6, 6]).unwrap();
    let c1 = b
        .conv(
            "c1",
            x,
            "w1",
            randw(vec![3, 2, 3, 3], &mut rng),
            Some(("b1", randw(vec![3], &mut rng))),
            Window::same(1, 1),
            1,
        )
        .unwrap();
    // Signed scale, bias and mean, so that SynFlow's |parameter| matters.
    let var = ConstTensor::f32(vec![3], vec![0.5, 1.0, 1.5]);
    let bn = b
        .batch_norm(
            "bn",
            c1,
            [
                ("bn.scale", randw(vec![3], &mut rng)),
                ("bn.bias", randw(vec![3], &mut rng)),
                ("bn.mean", randw(vec![3], &mut rng)),
                ("bn.var", var),
            ],
            1e-5,
        )
        .unwrap();
    let r = b.activation("r", bn, Activation::Relu);
    let p = b
        .pool(
            "p",
            r,
            maskforge::graph::op::Pool {
                kind: PoolKind::Max,
                kernel: [3, 3],
                window: Window::same(2, 1),
                ceil: false,
            },
        )
        .unwrap();
    let c2 = b
        .conv(
            "c2",
            p,
            "w2",
            randw(vec![3, 3, 3, 3], &mut rng),
            None,
            Window::same(1, 1),
            1,
        )
        .unwrap();
    let s = b.add("add", &[c2, p]).unwrap();
    let g = b.global_pool("g", s, PoolKind::Avg).unwrap();
    let f = b.flatten("f", g);
    let y = b
        .dense("fc", f, "wf", randw(vec![4, 3], &mut rng), None)
        .unwrap();
    b.output(y);
    vec![mlp, b.finish().unwrap()]
}

#[test]
fn loss_gradients_match_finite_differences() {
    for net in nets() {
        let classes = net.values[net.outputs[0]].shape[0];
        let ex = Executor::new(&net, &Device::Cpu, DType::F64).unwrap();
        let cal = common::random_calibration(&net, 5, classes, 5);
        let m = common::random_masks(&net, 0.7, 2);
        let g = loss_gradients(&ex, &m, &cal, 1.0).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for _ in 0..12 {
            let l = rng.random_range(0..net.layers.len());
            let i = rng.random_range(0..net.layers[l].numel());
            let w0 = common::weight_at(&ex, l, i);
            let h = 1e-6;
            common::set_weight(&ex, l, i, w0 + h);
            let up = common::ce_loss(&ex, &m, &cal, 1.0);
            common::set_weight(&ex, l, i, w0 - h);
            let down = common::ce_loss(&ex, &m, &cal, 1.0);
            common::set_weight(&ex, l, i, w0);
            let fd = (up - down) / (2.0 * h);
            assert!(
                (g[l][i] - fd).abs() <= 1e-6 * (1.0 + fd.abs()),
                "{}: layer {l} [{i}] {} vs {fd}",
                net.name,
                g[l][i]
            );
            if !m.layers[l].get(i) {
                assert_eq!(g[l][i], 0.0, "a pruned weight has a gradient");
            }
        }
    }
}

/// SynFlow's score of weight `i` of layer `l` by central differences of
/// `R = sum(f_linear(1))` under `m`: d/dw of R(|w|) is sign(w) dR/d|w|, so
/// the score `|dR/d|w| * w|` is `|dR/dw * w|`.
fn synflow_by_differences(ex: &Executor, net: &Network, m: &MaskSet, l: usize, i: usize) -> f64 {
    let r = || {
        let mut shape = vec![1];
        shape.extend(&net.values[net.inputs[0]].shape);
        let ones = Tensor::ones(shape, DType::F64, &Device::Cpu).unwrap();
        ex.logits(&ones, Some(m), Mode::Linear)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let w0 = common::weight_at(ex, l, i);
    let h = 1e-6 * (1.0 + w0.abs());
    common::set_weight(ex, l, i, w0 + h);
    let up = r();
    common::set_weight(ex, l, i, w0 - h);
    let down = r();
    common::set_weight(ex, l, i, w0);
    ((up - down) / (2.0 * h) * w0).abs()
}

#[test]
fn synflow_gradients_match_finite_differences() {
    for net in nets() {
        let ex = Executor::new(&net, &Device::Cpu, DType::F64).unwrap();
        let m = MaskSet::dense(&net);
        let s = maskforge::methods::scored::synflow::scores(&ex, &net, &m).unwrap();
        for (l, layer) in net.layers.iter().enumerate() {
            for i in [0, layer.numel() / 2] {
                let fd = synflow_by_differences(&ex, &net, &m, l, i);
                assert!(
                    (s[l][i] - fd).abs() <= 1e-5 * (1.0 + fd),
                    "{} layer {l}: {} vs {fd}",
                    net.name,
                    s[l][i]
                );
            }
        }
    }
}

/// Under a mask, every pruned weight scores exactly 0 for SNIP and SynFlow
/// and -inf for GraSP (so no threshold keeps it: pruned weights stay
/// pruned), while kept ones keep a score; SynFlow's kept scores still match
/// finite differences of the masked linearised network.
#[test]
fn pruned_weights_score_zero_under_a_mask() {
    for net in nets() {
        let classes = net.values[net.outputs[0]].shape[0];
        let ex = Executor::new(&net, &Device::Cpu, DType::F64).unwrap();
        let cal = common::random_calibration(&net, 5, classes, 5);
        let m = common::random_masks(&net, 0.5, 4);
        let snip = maskforge::methods::scored::snip::scores(&ex, &m, &cal).unwrap();
        let synflow = maskforge::methods::scored::synflow::scores(&ex, &net, &m).unwrap();
        let grasp = maskforge::methods::scored::grasp::scores(&ex, &m, &cal).unwrap();
        for l in 0..net.layers.len() {
            for i in 0..net.layers[l].numel() {
                if m.layers[l].get(i) {
                    assert!(grasp[l][i].is_finite(), "{} kept GraSP score", net.name);
                } else {
                    assert_eq!(snip[l][i], 0.0, "{} SNIP layer {l} [{i}]", net.name);
                    assert_eq!(synflow[l][i], 0.0, "{} SynFlow layer {l} [{i}]", net.name);
                    assert_eq!(grasp[l][i], f64::NEG_INFINITY, "{} GraSP", net.name);
                }
            }
        }
        let kept_scores = |s: &[Vec<f64>]| s.iter().flatten().filter(|&&v| v > 0.0).count();
        assert!(kept_scores(&snip) > m.count_ones() / 2, "{}", net.name);
        for (l, bits) in m.layers.iter().enumerate() {
            for i in bits.ones().take(2) {
                let fd = synflow_by_differences(&ex, &net, &m, l, i);
                let s = synflow[l][i];
                assert!(
                    (s - fd).abs() <= 1e-5 * (1.0 + fd),
                    "{} layer {l}: {s} vs {fd}",
                    net.name
                );
            }
        }
    }
}

/// SynFlow's linearised forward (the conv op with BatchNorm and ReLU folded
/// in, |parameters|) equals the plain forward of the network whose every
/// parameter is replaced by its absolute value.
#[test]
fn linear_mode_is_the_forward_on_absolute_parameters() {
    let net = nets().remove(1);
    let mut abs = net.clone();
    let names: Vec<String> = net.params.iter().map(|(n, _)| n.clone()).collect();
    for name in names {
        let t = net.params.get(&name).unwrap();
        let v: Vec<f32> = t.to_f32().unwrap().iter().map(|x| x.abs()).collect();
        abs.params
            .insert(name, ConstTensor::f32(t.shape.clone(), v));
    }
    let x = common::random_calibration(&net, 3, 4, 5)
        .batches
        .remove(0)
        .0;
    let run = |n: &Network, mode: Mode| -> Vec<f64> {
        let ex = Executor::new(n, &Device::Cpu, DType::F64).unwrap();
        ex.logits(&x, None, mode)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (linear, plain) = (run(&net, Mode::Linear), run(&abs, Mode::Eval));
    assert_ne!(run(&net, Mode::Eval), plain, "some parameter is negative");
    for (a, b) in linear.iter().zip(&plain) {
        assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{a} vs {b}");
    }
}

/// Linear model logits = W x: the Hessian of mean cross-entropy at
/// temperature T is (1/n) sum_x (diag(p) - p p^T)/T^2 (x) x x^T.
#[test]
fn grasp_hessian_gradient_matches_the_analytic_hessian() {
    let (d, k, n, temp) = (4usize, 3usize, 6usize, 2.0f64);
    let mut b = NetworkBuilder::new("linear");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let x = b.input("x", vec![d]).unwrap();
    let y = b
        .dense("fc", x, "w", randw(vec![k, d], &mut rng), None)
        .unwrap();
    b.output(y);
    let net = b.finish().unwrap();
    let ex = Executor::new(&net, &Device::Cpu, DType::F64).unwrap();
    let cal = common::random_calibration(&net, n, k, 5);
    let m = MaskSet::dense(&net);
    let (hg, w) = maskforge::methods::scored::grasp::hessian_gradient(&ex, &m, &cal, temp).unwrap();
    let g = loss_gradients(&ex, &m, &cal, temp).unwrap();
    // Analytic H g.
    let xs: Vec<f64> = cal.batches[0].0.flatten_all().unwrap().to_vec1().unwrap();
    let w = &w[0];
    let g = &g[0];
    let mut expect = vec![0.0; k * d];
    for s in 0..n {
        let xv = &xs[s * d..(s + 1) * d];
        let z: Vec<f64> = (0..k)
            .map(|o| (0..d).map(|i| w[o * d + i] * xv[i]).sum::<f64>() / temp)
            .collect();
        let mx = z.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - mx).exp()).collect();
        let sum: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|v| v / sum).collect();
        // (H g)[o,i] = sum_{o',i'} A[o,o'] x_i x_i' g[o',i'] with A = (diag p - p p^T)/T^2 / n
        let gx: Vec<f64> = (0..k)
            .map(|o| (0..d).map(|i| g[o * d + i] * xv[i]).sum())
            .collect();
        for o in 0..k {
            let a: f64 = (0..k)
                .map(|o2| ((if o == o2 { p[o] } else { 0.0 }) - p[o] * p[o2]) * gx[o2])
                .sum::<f64>()
                / (temp * temp * n as f64);
            for i in 0..d {
                expect[o * d + i] += a * xv[i];
            }
        }
    }
    for (a, b) in hg[0].iter().zip(&expect) {
        assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
    }
}

/// GraSP's exact `H g` (forward tangents and reverse pairs, f64) against
/// the f64 central difference of two gradients, on ReLU networks with max
/// pools (LeNet-5, VGG-11), BatchNorm epilogues (VGG-11, ResNet-20),
/// residual sums and a global average pool (ResNet-20) and plain dense
/// layers, with half the weights pruned; and the f32 product against the
/// f64 one. (The difference is the fragile side: with two samples through
/// ResNet-20 its step carries a pre-activation across ReLU's kink and it is
/// off by 30x, so the deep nets get one sample, and ResNet-20 no pruning: half
/// its weights pruned moves another pre-activation across. The symmetry
/// test below checks ResNet-20 pruned.)
#[test]
fn exact_hessian_gradient_equals_the_central_difference() {
    use maskforge::methods::scored::grasp;
    for (name, n, density) in [
        ("mlp:30-20-10", 8, 0.5),
        ("lenet5", 4, 0.5),
        ("vgg11", 1, 0.5),
        ("resnet20", 1, 1.0),
    ] {
        let net = maskforge::zoo::build(name, 3).unwrap();
        let cal = common::random_calibration(&net, n, 10, 9);
        let m = common::random_masks(&net, density, 4);
        let ex = Executor::new(&net, &Device::Cpu, DType::F64).unwrap();
        let (exact, w) = grasp::hessian_gradient(&ex, &m, &cal, 2.0).unwrap();
        let g = loss_gradients(&ex, &m, &cal, 2.0).unwrap();
        let diff = grasp::difference_hessian_gradient(&ex, &m, &cal, 2.0, &g, &w).unwrap();
        let dist = |a: &[Vec<f64>], b: &[Vec<f64>]| {
            let (mut num, mut den) = (0.0, 0.0);
            for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
                num += (x - y) * (x - y);
                den += y * y;
            }
            assert!(den > 0.0, "{name}: H g is zero");
            (num / den).sqrt()
        };
        let e = dist(&diff, &exact);
        assert!(e < 1e-6, "{name}: central difference off by {e:e}");
        // Two batches: the gradient over both first, then a product per
        // batch (one batch reuses the gradient's recorded pass).
        if n >= 2 {
            let (x, y) = &cal.batches[0];
            let half = |i: usize| {
                (
                    x.narrow(0, i * n / 2, n / 2).unwrap(),
                    y.narrow(0, i * n / 2, n / 2).unwrap(),
                )
            };
            let two = maskforge::autodiff::calibration::Calibration {
                batches: vec![half(0), half(1)],
            };
            let (exact2, w2) = grasp::hessian_gradient(&ex, &m, &two, 2.0).unwrap();
            let g2 = loss_gradients(&ex, &m, &two, 2.0).unwrap();
            let diff2 = grasp::difference_hessian_gradient(&ex, &m, &two, 2.0, &g2, &w2).unwrap();
            let e2 = dist(&diff2, &exact2);
            assert!(
                e2 < 1e-6,
                "{name}, two batches: central difference off by {e2:e}"
            );
        }
        let ex32 = grasp::executor(&net, &Device::Cpu, &cal).unwrap();
        assert_eq!(ex32.dtype(), DType::F32, "{name}: exact, so f32");
        let (exact32, _) = grasp::hessian_gradient(&ex32, &m, &cal, 2.0).unwrap();
        let e32 = dist(&exact32, &exact);
        assert!(e32 < 1e-4, "{name}: f32 off by {e32:e}");
    }
}

/// A Hessian is symmetric: `u . (H v) == v . (H u)` for the exact product
/// on pruned ResNet-20 (residual sums, BatchNorm epilogues, a global pool)
/// and LeNet-5 (max pools), to rounding; a rule applied on one side of the
/// forward-reverse pair and not the other breaks it.
#[test]
fn exact_hessian_vector_products_are_symmetric() {
    use maskforge::autodiff::{backward::Seed, hvp};
    for name in ["lenet5", "resnet20"] {
        let net = maskforge::zoo::build(name, 5).unwrap();
        let cal = common::random_calibration(&net, 3, 10, 2);
        let m = common::random_masks(&net, 0.5, 6);
        let ex = Executor::new(&net, &Device::Cpu, DType::F64).unwrap();
        let (x, y) = &cal.batches[0];
        let seed = Seed::CrossEntropy {
            labels: y,
            temperature: 3.0,
        };
        let direction = |s: u64| -> Vec<Tensor> {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(s);
            ex.weights
                .iter()
                .zip(&m.layers)
                .map(|(w, mask)| {
                    let v: Vec<f64> = (0..mask.len())
                        .map(|i| {
                            if mask.get(i) {
                                rng.random::<f64>() - 0.5
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    Tensor::from_vec(v, w.shape(), &Device::Cpu).unwrap()
                })
                .collect()
        };
        let (u, v) = (direction(1), direction(2));
        let hv = hvp::hessian_vector(&ex, x, Some(&m), seed, &v)
            .unwrap()
            .unwrap();
        let hu = hvp::hessian_vector(&ex, x, Some(&m), seed, &u)
            .unwrap()
            .unwrap();
        let dot = |a: &[Tensor], b: &[Option<Tensor>]| -> f64 {
            a.iter()
                .zip(b)
                .map(|(a, b)| {
                    let b = b.as_ref().unwrap();
                    (a * b)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f64>()
                        .unwrap()
                })
                .sum()
        };
        let (uhv, vhu) = (dot(&u, &hv), dot(&v, &hu));
        assert!(uhv.abs() > 1e-6, "{name}: u.Hv = {uhv}");
        assert!(
            (uhv - vhu).abs() <= 1e-9 * uhv.abs(),
            "{name}: u.Hv = {uhv}, v.Hu = {vhu}"
        );
    }
}

/// The exact `H g` against the f64 central difference on every committed
/// exporter fixture the product covers (ShuffleNetV2's channel split and
/// shuffle, a global mean, ...), one sample each.
#[test]
fn exact_hessian_gradient_on_exported_graphs() {
    use maskforge::autodiff::hvp;
    use maskforge::methods::scored::grasp;
    let mut covered = Vec::new();
    for graph in common::fixtures() {
        let net = graph.load().network;
        let ex = Executor::new(&net, &Device::Cpu, DType::F64).unwrap();
        let cal = common::random_calibration(&net, 1, 1, 3);
        if !hvp::covers(&ex, &cal.batches[0].0).unwrap() {
            continue;
        }
        let m = MaskSet::dense(&net);
        let (exact, w) = grasp::hessian_gradient(&ex, &m, &cal, 2.0).unwrap();
        let g = loss_gradients(&ex, &m, &cal, 2.0).unwrap();
        let diff = grasp::difference_hessian_gradient(&ex, &m, &cal, 2.0, &g, &w).unwrap();
        let (mut num, mut den) = (0.0, 0.0);
        for (x, y) in exact.iter().flatten().zip(diff.iter().flatten()) {
            num += (x - y) * (x - y);
            den += y * y;
        }
        let e = (num / den).sqrt();
        assert!(
            den > 0.0 && e < 1e-6,
            "{}: central difference off by {e:e}",
            graph.name
        );
        covered.push(graph.name.clone());
        eprintln!("{}: exact against the difference {e:e}", graph.name);
    }
    assert!(
        covered.iter().any(|n| n.contains("shufflenet")),
        "covered: {covered:?}"
    );
}
