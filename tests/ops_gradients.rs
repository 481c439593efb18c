//! Weight gradients through the modern graph ops (#11): a gated conv net
//! (SiLU written out, a squeeze-and-excite gate, PRelu, a linear Resize,
//! GroupNorm), an attention encoder (dense layers over a sequence, batched
//! MatMul of two activations, a causal mask, softmax, LayerNorm, GELU, a
//! mean over the sequence) and a decomposed LayerNorm with Where, Max, Min,
//! Pow and the unary functions. SNIP's loss gradients and SynFlow's scores
//! against central finite differences in f64, and the reverse pass of
//! `maskforge::autodiff::backward` against candle's autograd over the same
//! forward pass in every mode, with both seeds.

mod common;

use candle_core::{DType, Device, Tensor};
use maskforge::autodiff::backward::{weight_gradients, Seed};
use maskforge::autodiff::executor::{Executor, Mode};
use maskforge::graph::index_map::{self, Branch, CoordMode, Interp};
use maskforge::graph::op::{Activation, Binary, Mix, MixKind, Norm, PoolKind, Reduce, Window};
use maskforge::graph::tensor::ConstTensor;
use maskforge::graph::{Network, NetworkBuilder, ValueId};
use maskforge::mask::MaskSet;
use maskforge::methods::scored::snip::loss_gradients;
use rand::{Rng, SeedableRng};

const CLASSES: usize = 3;

fn randw(shape: Vec<usize>, scale: f32, rng: &mut impl Rng) -> ConstTensor {
    let n = shape.iter().product();
    ConstTensor::f32(
        shape,
        (0..n)
            .map(|_| (rng.random::<f32>() - 0.5) * scale)
            .collect(),
    )
}

/// A dense layer `[.., in] -> [.., out]` with bias, scaled by fan-in.
fn dense(
    b: &mut NetworkBuilder,
    name: &str,
    x: ValueId,
    out: usize,
    rng: &mut impl Rng,
) -> ValueId {
    let fin = *b.shape(x).last().unwrap();
    let s = 2.0 / (fin as f32).sqrt();
    let w = randw(vec![out, fin], s, rng);
    let bias = randw(vec![out], 0.5, rng);
    b.dense(
        name,
        x,
        &format!("{name}.w"),
        w,
        Some((&format!("{name}.b"), bias)),
    )
    .unwrap()
}

fn constant(b: &mut NetworkBuilder, name: &str, shape: Vec<usize>, v: Vec<f32>) -> String {
    b.add_param(name, ConstTensor::f32(shape, v));
    name.to_string()
}

/// conv -> SiLU as x * sigmoid(x) -> squeeze-and-excite gate (global
/// pool, dense, Mish, dense, hard-sigmoid, broadcast Mul) -> PRelu ->
/// linear Resize x2 -> strided conv -> GroupNorm -> Softsign / Exp(-x)
/// Div -> dense.
fn gated() -> Network {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut b = NetworkBuilder::new("gated");
    let x = b.input("x", vec![2, 4, 4]).unwrap();
    let c1 = b
        .conv(
            "c1",
            x,
            "c1.w",
            randw(vec![4, 2, 3, 3], 1.0, &mut rng),
            Some(("c1.b", randw(vec![4], 0.5, &mut rng))),
            Window::same(1, 1),
            1,
        )
        .unwrap();
    let sg = b.activation("sig", c1, Activation::Sigmoid);
    let silu = b.binary("silu", Binary::Mul, c1, sg).unwrap();
    let g = b.global_pool("se.pool", silu, PoolKind::Avg).unwrap();
    let g = b.flatten("se.flat", g);
    let g = dense(&mut b, "se.fc1", g, 2, &mut rng);
    let g = b.activation("se.mish", g, Activation::Mish);
    let g = dense(&mut b, "se.fc2", g, 4, &mut rng);
    let g = b.activation(
        "se.hs",
        g,
        Activation::HardSigmoid {
            alpha: 0.1,
            beta: 0.5,
        },
    );
    let g = b.reshape("se.r", g, vec![4, 1, 1]).unwrap();
    let gated = b.binary("se.mul", Binary::Mul, silu, g).unwrap();
    let slope = constant(&mut b, "prelu", vec![4, 1, 1], vec![0.1, -0.3, 0.2, 0.05]);
    let p = b.norm("prelu", gated, Norm::Prelu(slope)).unwrap();
    let map = index_map::resize(
        &[4, 4, 4],
        &[4, 8, 8],
        &[1.0, 2.0, 2.0],
        CoordMode::HalfPixel,
        Interp::Linear,
    )
    .unwrap();
    let up = b.gather("up", &[p], map, vec![4, 8, 8]).unwrap();
    let c2 = b
        .conv(
            "c2",
            up,
            "c2.w",
            randw(vec![4, 4, 3, 3], 0.6, &mut rng),
            None,
            Window::same(2, 1),
            1,
        )
        .unwrap();
    let scale = constant(&mut b, "gn.s", vec![4, 1, 1], vec![1.0, -0.5, 2.0, 0.7]);
    let bias = constant(&mut b, "gn.b", vec![4, 1, 1], vec![0.1, 0.2, -0.3, 0.0]);
    let gn = b
        .mix(
            "gn",
            c2,
            Mix {
                kind: MixKind::Normalize {
                    eps: 1e-5,
                    scale: Some(scale),
                    bias: Some(bias),
                },
                view: Some(vec![2, 2, 4, 4]),
                axes: vec![1, 2, 3],
            },
        )
        .unwrap();
    let ss = b.activation("softsign", gn, Activation::Softsign);
    let ng = b.activation("neg", gn, Activation::Neg);
    let e = b.activation("exp", ng, Activation::Exp);
    let d = b.binary("div", Binary::Div, ss, e).unwrap();
    let f = b.flatten("flat", d);
    let y = dense(&mut b, "fc", f, CLASSES, &mut rng);
    b.output(y);
    b.finish().unwrap()
}

/// One pre-norm-free encoder block on a sequence of 4 tokens of 6
/// features, two heads of 3, causal mask, then a mean over the sequence.
fn attention() -> Network {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let (seq, d, heads) = (4usize, 6usize, 2usize);
    let hd = d / heads;
    let mut b = NetworkBuilder::new("attention");
    let x = b.input("x", vec![seq, d]).unwrap();
    let split_heads = |b: &mut NetworkBuilder, name: &str, v: ValueId, perm: Vec<usize>| {
        let r = b
            .reshape(&format!("{name}.r"), v, vec![seq, heads, hd])
            .unwrap();
        b.transpose(&format!("{name}.t"), r, perm).unwrap()
    };
    let q = dense(&mut b, "q", x, d, &mut rng);
    let k = dense(&mut b, "k", x, d, &mut rng);
    let v = dense(&mut b, "v", x, d, &mut rng);
    let q = split_heads(&mut b, "q", q, vec![1, 0, 2]); // [h, seq, hd]
    let k = split_heads(&mut b, "k", k, vec![1, 2, 0]); // [h, hd, seq]
    let v = split_heads(&mut b, "v", v, vec![1, 0, 2]);
    let s = b.matmul("qk", q, k).unwrap(); // [h, seq, seq]
    let c = constant(&mut b, "sqrt_d", vec![], vec![(hd as f32).sqrt()]);
    let s = b
        .norm(
            "scale",
            s,
            Norm::Const {
                f: Binary::Div,
                param: c,
                const_first: false,
            },
        )
        .unwrap();
    // Causal mask: a Where with a constant condition, an element map.
    let cond: Vec<bool> = (0..seq * seq).map(|e| e % seq <= e / seq).collect();
    let map = index_map::select(
        &[seq, seq],
        &cond,
        Branch::Act(&[heads, seq, seq]),
        Branch::Const(&[1], &[-1e4]),
        &[heads, seq, seq],
    )
    .unwrap();
    let s = b.gather("mask", &[s], map, vec![heads, seq, seq]).unwrap();
    let p = b.softmax("softmax", s, 2, false).unwrap();
    let o = b.matmul("pv", p, v).unwrap(); // [h, seq, hd]
    let o = b.transpose("o.t", o, vec![1, 0, 2]).unwrap();
    let o = b.reshape("o.r", o, vec![seq, d]).unwrap();
    let o = dense(&mut b, "o", o, d, &mut rng);
    let r = b.add("res1", &[x, o]).unwrap();
    let scale = constant(&mut b, "ln.s", vec![d], vec![1.0, 0.5, -1.5, 2.0, 0.8, 1.2]);
    let bias = constant(
        &mut b,
        "ln.b",
        vec![d],
        vec![0.0, 0.1, -0.2, 0.3, 0.0, -0.1],
    );
    let ln = b
        .mix(
            "ln",
            r,
            Mix {
                kind: MixKind::Normalize {
                    eps: 1e-5,
                    scale: Some(scale),
                    bias: Some(bias),
                },
                view: None,
                axes: vec![1],
            },
        )
        .unwrap();
    let h = dense(&mut b, "ffn1", ln, 8, &mut rng);
    let h = b.activation("gelu", h, Activation::Gelu);
    let h = dense(&mut b, "ffn2", h, d, &mut rng);
    let r = b.add("res2", &[ln, h]).unwrap();
    let m = b
        .mix(
            "pool",
            r,
            Mix {
                kind: MixKind::Reduce {
                    f: Reduce::Mean,
                    keepdims: false,
                },
                view: None,
                axes: vec![0],
            },
        )
        .unwrap();
    let y = dense(&mut b, "head", m, CLASSES, &mut rng);
    b.output(y);
    b.finish().unwrap()
}

/// LayerNorm written out (ReduceMean, Sub, Pow 2, Add eps, Sqrt, Div),
/// then Where, Max, Min, Pow of activations, a lower-rank gate, Erf, Selu,
/// LogSumExp and L2.
fn decomposed() -> Network {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut b = NetworkBuilder::new("decomposed");
    let x = b.input("x", vec![5, 4]).unwrap();
    let h = dense(&mut b, "fc1", x, 4, &mut rng);
    let mean = |b: &mut NetworkBuilder, name: &str, v: ValueId| {
        let kind = MixKind::Reduce {
            f: Reduce::Mean,
            keepdims: true,
        };
        b.mix(
            name,
            v,
            Mix {
                kind,
                view: None,
                axes: vec![1],
            },
        )
        .unwrap()
    };
    let mu = mean(&mut b, "mu", h);
    let c = b.binary("center", Binary::Sub, h, mu).unwrap();
    let two = constant(&mut b, "two", vec![], vec![2.0]);
    let sq = b
        .norm(
            "sq",
            c,
            Norm::Const {
                f: Binary::Pow,
                param: two,
                const_first: false,
            },
        )
        .unwrap();
    let var = mean(&mut b, "var", sq);
    let eps = constant(&mut b, "eps", vec![], vec![1e-5]);
    let ve = b.norm("ve", var, Norm::AddConst(eps)).unwrap();
    let sd = b.activation("sd", ve, Activation::Sqrt);
    let n = b.binary("norm", Binary::Div, c, sd).unwrap();
    let h2 = dense(&mut b, "fc2", n, 4, &mut rng);
    let e = b.activation("erf", h2, Activation::Erf);
    let s = b.activation(
        "selu",
        h2,
        Activation::Selu {
            alpha: 1.673_263_2,
            gamma: 1.050_701,
        },
    );
    let w = b.where_("where", n, e, s).unwrap();
    let mx = b.binary("max", Binary::Max, w, n).unwrap();
    let mn = b.binary("min", Binary::Min, mx, e).unwrap();
    let sg = b.activation("sig", h2, Activation::Sigmoid);
    let pw = b.binary("pow", Binary::Pow, sg, mn).unwrap();
    // A gate of lower rank, first operand: [4] x [5, 4].
    let g = b
        .mix(
            "g.mean",
            h2,
            Mix {
                kind: MixKind::Reduce {
                    f: Reduce::Mean,
                    keepdims: false,
                },
                view: None,
                axes: vec![0],
            },
        )
        .unwrap();
    let g = b.activation("g.sig", g, Activation::Sigmoid);
    let pw = b.binary("gate", Binary::Mul, g, pw).unwrap();
    let lse = b
        .mix(
            "lse",
            pw,
            Mix {
                kind: MixKind::Reduce {
                    f: Reduce::LogSumExp,
                    keepdims: false,
                },
                view: None,
                axes: vec![0],
            },
        )
        .unwrap();
    let l2 = b
        .mix(
            "l2",
            mn,
            Mix {
                kind: MixKind::Reduce {
                    f: Reduce::L2,
                    keepdims: false,
                },
                view: None,
                axes: vec![0],
            },
        )
        .unwrap();
    let cat = b.concat("cat", &[lse, l2], 0).unwrap();
    let y = dense(&mut b, "head", cat, CLASSES, &mut rng);
    b.output(y);
    b.finish().unwrap()
}

fn nets() -> Vec<Network> {
    vec![gated(), attention(), decomposed()]
}

#[test]
fn loss_gradients_match_finite_differences() {
    for net in nets() {
        let ex = Executor::new(&net, &Device::Cpu, DType::F64).unwrap();
        let cal = common::random_calibration(&net, 4, CLASSES, 5);
        let m = common::random_masks(&net, 0.8, 2);
        let g = loss_gradients(&ex, &m, &cal, 1.0).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut nonzero = 0;
        for (l, (layer, gl)) in net.layers.iter().zip(&g).enumerate() {
            // Every layer: a few of its weights, kept or pruned.
            for _ in 0..4 {
                let i = rng.random_range(0..layer.numel());
                let w0 = common::weight_at(&ex, l, i);
                let h = 1e-6;
                common::set_weight(&ex, l, i, w0 + h);
                let up = common::ce_loss(&ex, &m, &cal, 1.0);
                common::set_weight(&ex, l, i, w0 - h);
                let down = common::ce_loss(&ex, &m, &cal, 1.0);
                common::set_weight(&ex, l, i, w0);
                let fd = (up - down) / (2.0 * h);
                if m.layers[l].get(i) {
                    assert!(
                        (gl[i] - fd).abs() <= 1e-6 * (1.0 + fd.abs()),
                        "{} {}[{i}]: {} vs {fd}",
                        net.name,
                        layer.name,
                        gl[i]
                    );
                    nonzero += (fd.abs() > 1e-9) as usize;
                } else {
                    assert_eq!(gl[i], 0.0, "{}: a pruned weight has a gradient", net.name);
                }
            }
        }
        assert!(
            nonzero >= net.layers.len(),
            "{}: gradients vanish",
            net.name
        );
    }
}

/// SynFlow's score `|dR/dw * w|` by central differences of the linearised
/// flow `R = sum(f_linear(1))` (d/dw of R(|w|) is sign(w) dR/d|w|).
#[test]
fn synflow_scores_match_finite_differences() {
    for net in nets() {
        let ex = Executor::new(&net, &Device::Cpu, DType::F64).unwrap();
        let m = common::random_masks(&net, 0.8, 3);
        let s = maskforge::methods::scored::synflow::scores(&ex, &net, &m).unwrap();
        let r = || {
            let mut shape = vec![1];
            shape.extend(&net.values[net.inputs[0]].shape);
            let ones = Tensor::ones(shape, DType::F64, &Device::Cpu).unwrap();
            ex.logits(&ones, Some(&m), Mode::Linear)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        for (l, bits) in m.layers.iter().enumerate() {
            for i in bits.ones().take(3) {
                let w0 = common::weight_at(&ex, l, i);
                // The causal mask's -1e4 makes the attention net's flow
                // about -2e6, so a central difference's rounding is about
                // 2e-16 * 2e6 / h: at h = 1e-6 that is 3e-5 of a score,
                // over the tolerance on an AVX2 machine's summation order
                // (and under it on AVX-512's). At 1e-4 rounding and the
                // truncation error both stay under 1e-6 of a score.
                let h = 1e-4 * (1.0 + w0.abs());
                common::set_weight(&ex, l, i, w0 + h);
                let up = r();
                common::set_weight(&ex, l, i, w0 - h);
                let down = r();
                common::set_weight(&ex, l, i, w0);
                let fd = ((up - down) / (2.0 * h) * w0).abs();
                assert!(
                    (s[l][i] - fd).abs() <= 1e-5 * (1.0 + fd),
                    "{} {}[{i}]: {} vs {fd}",
                    net.name,
                    net.layers[l].name,
                    s[l][i]
                );
            }
        }
    }
}

/// The reverse pass against candle's autograd over the whole forward
/// pass: the largest difference relative to the layer's largest gradient.
/// The seed of [`compare`].
#[derive(Clone, Copy, Debug)]
enum Which {
    CrossEntropy,
    Sum,
    Energy,
}

fn compare(net: &Network, masks: Option<&MaskSet>, mode: Mode, which: Which, what: &str) {
    let ex = Executor::new(net, &Device::Cpu, DType::F64).unwrap();
    let (x, labels) = common::random_calibration(net, 3, CLASSES, 7)
        .batches
        .remove(0);
    let (seed, x) = match which {
        Which::Sum => (Seed::Sum, x.ones_like().unwrap()),
        Which::Energy => (Seed::Energy, x),
        Which::CrossEntropy => (
            Seed::CrossEntropy {
                labels: &labels,
                temperature: 2.0,
            },
            x,
        ),
    };
    let ours = weight_gradients(&ex, &x, masks, mode, seed).unwrap();
    let logits = ex.logits(&x, masks, mode).unwrap();
    let loss = match seed {
        Seed::Sum => logits.sum_all().unwrap(),
        Seed::CrossEntropy { labels, .. } => {
            candle_nn::loss::cross_entropy(&(logits / 2.0).unwrap(), labels).unwrap()
        }
        Seed::Energy => (logits.sqr().unwrap().sum_all().unwrap() * (0.5 / 3.0)).unwrap(),
    };
    let theirs = loss.backward().unwrap();
    let flat = |t: &Tensor| -> Vec<f64> { t.flatten_all().unwrap().to_vec1().unwrap() };
    for (li, (g, w)) in ours.iter().zip(&ex.weights).enumerate() {
        let name = &net.layers[li].name;
        let (a, b) = match (g, theirs.get(w.as_tensor())) {
            (Some(a), Some(b)) => (flat(a), flat(b)),
            (a, b) => panic!(
                "{what} {name}: gradient in ours {} and candle's {}",
                a.is_some(),
                b.is_some()
            ),
        };
        assert!(a.iter().all(|v| v.is_finite()), "{what} {name}: not finite");
        // (With the all-ones input every token is the same, and the
        // queries get no gradient through the softmax: scale 0.)
        common::assert_gradients_agree(&a, &b, 1e-12, &format!("{what} {name}"));
    }
}

#[test]
fn reverse_pass_matches_candles_autograd() {
    for net in nets() {
        let masks = common::random_masks(&net, 0.6, 5);
        for mode in [Mode::Eval, Mode::Train, Mode::Linear] {
            for which in [Which::CrossEntropy, Which::Sum, Which::Energy] {
                let what = format!("{} {mode:?} {which:?}", net.name);
                compare(&net, Some(&masks), mode, which, &what);
            }
        }
        compare(
            &net,
            None,
            Mode::Eval,
            Which::CrossEntropy,
            &format!("{} dense", net.name),
        );
    }
}

/// Ops without a gradient (Floor, Ceil, Round, Sign) pass none: a layer
/// reached only through one gets none, in our pass as in candle's.
#[test]
fn piecewise_constant_functions_pass_no_gradient() {
    for a in [
        Activation::Floor,
        Activation::Ceil,
        Activation::Round,
        Activation::Sign,
    ] {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let mut b = NetworkBuilder::new("step");
        let x = b.input("x", vec![3]).unwrap();
        let h = dense(&mut b, "fc1", x, 3, &mut rng);
        let s = b.activation("step", h, a);
        let y = dense(&mut b, "fc2", s, CLASSES, &mut rng);
        b.output(y);
        let net = b.finish().unwrap();
        let ex = Executor::new(&net, &Device::Cpu, DType::F64).unwrap();
        let x = Tensor::new(&[[0.3f64, -1.2, 2.5]], &Device::Cpu).unwrap();
        let g = weight_gradients(&ex, &x, None, Mode::Eval, Seed::Sum).unwrap();
        assert!(g[0].is_none(), "{a:?}: a gradient through a step function");
        assert!(g[1].is_some(), "{a:?}: the last layer has its gradient");
        let theirs = ex
            .logits(&x, None, Mode::Eval)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(theirs.get(ex.weights[0].as_tensor()).is_none(), "{a:?}");
    }
}
