//! The executor's forward semantics of the modern graph ops (#11) against
//! ONNX's definitions, computed here by plain loops in f64 (never through
//! candle): every activation function, maps by constants and PRelu,
//! broadcasting binary ops and Where, numpy MatMul (batched, broadcast,
//! 1-D), every reduction and normalisation with and without a view and
//! kept axes, element maps (slices, pads, resizes with interpolation
//! weights, depth/space moves, constants, several inputs) and dense layers
//! over leading axes; each in f64 and f32, and SynFlow's linear mode.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use maskforge::autodiff::executor::{Executor, Mode};
use maskforge::graph::index_map::{
    self, AxisRange, Branch, CoordMode, DepthOrder, Interp, Rounding,
};
use maskforge::graph::op::{Activation, Binary, IndexMap, Mix, MixKind, Norm, Reduce};
use maskforge::graph::tensor::ConstTensor;
use maskforge::graph::{Network, NetworkBuilder, ValueId};
use rand::{Rng, SeedableRng};

mod common;

// ---------------------------------------------------------------- helpers

use common::{strides, unflatten as unflat};

/// The element of shape `s` that numpy broadcasting reads for output
/// multi-index `o` (`s` right-aligned, size-1 axes read at 0).
fn bidx(o: &[usize], s: &[usize]) -> usize {
    let off = o.len() - s.len();
    let st = strides(s);
    (0..s.len())
        .map(|a| if s[a] == 1 { 0 } else { o[a + off] * st[a] })
        .sum()
}

/// `n` samples of `len` values in [-2, 2], exactly representable in f32.
fn sample(n: usize, len: usize, seed: u64) -> Vec<f64> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n * len)
        .map(|_| (rng.random::<f32>() * 4.0 - 2.0) as f64)
        .collect()
}

/// The first output of `net` on the batch `x` (`n` samples), as f64.
fn run(net: &Network, x: &[f64], n: usize, dtype: DType, mode: Mode) -> Vec<f64> {
    let mut shape = vec![n];
    shape.extend(&net.values[net.inputs[0]].shape);
    let xt = Tensor::from_vec(x.to_vec(), shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let ex = Executor::new(net, &Device::Cpu, dtype).unwrap();
    let y = ex.forward(&xt, None, mode).unwrap();
    let mut want = vec![n];
    want.extend(&net.values[net.outputs[0]].shape);
    assert_eq!(y.dims(), want.as_slice(), "{}: output shape", net.name);
    y.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `got` equals `want` within `tol * (1 + |want|)`; NaN where NaN is due,
/// the same infinity where one is due.
fn compare(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: element count");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= tol * (1.0 + w.abs())
        };
        assert!(ok, "{what}: element {i}: got {g}, want {w}");
    }
}

/// The executor on `x` in f64 (within `tol`) and f32 (within 2e-5 or `tol`).
fn check(what: &str, net: &Network, x: &[f64], n: usize, want: &[f64], tol: f64) {
    compare(
        &format!("{what} f64"),
        &run(net, x, n, DType::F64, Mode::Eval),
        want,
        tol,
    );
    compare(
        &format!("{what} f32"),
        &run(net, x, n, DType::F32, Mode::Eval),
        want,
        tol.max(2e-5),
    );
}

/// `f` applied to each sample of `x` (`len` values each).
fn per_sample(x: &[f64], len: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    x.chunks(len).flat_map(f).collect()
}

/// Per-sample pieces of a flat input `[total]`: consecutive slices of the
/// given shapes (each a slice map and a reshape).
fn split(b: &mut NetworkBuilder, x: ValueId, shapes: &[Vec<usize>]) -> Vec<ValueId> {
    let total = b.shape(x)[0];
    let mut start = 0;
    let mut out = Vec::new();
    for (i, s) in shapes.iter().enumerate() {
        let len: usize = s.iter().product();
        let r = AxisRange {
            start,
            step: 1,
            len,
        };
        let (map, flat) = index_map::slice(&[total], &[r]).unwrap();
        let v = b.gather(&format!("part{i}"), &[x], map, flat).unwrap();
        out.push(b.reshape(&format!("part{i}.r"), v, s.clone()).unwrap());
        start += len;
    }
    assert!(start <= total);
    out
}

fn param(b: &mut NetworkBuilder, name: &str, shape: Vec<usize>, v: Vec<f32>) -> String {
    b.add_param(name, ConstTensor::f32(shape, v));
    name.to_string()
}

/// erf by its Maclaurin series (|x| <= 3 here: error ~1e-13).
fn erf(x: f64) -> f64 {
    let (mut term, mut sum) = (x, x);
    for n in 1..120 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

// ---------------------------------------------------------------- elementwise

type Reference = Box<dyn Fn(f64) -> f64>;
type BinaryReference = Box<dyn Fn(f64, f64) -> f64>;

#[test]
fn every_activation_follows_its_onnx_definition() {
    // Sample 0: halves (Round), zeros (Sign, Reciprocal, Log), negatives
    // (Sqrt, Log); sample 1: random.
    let special = [
        -3.0, -2.5, -1.5, -0.5, 0.0, 0.5, 1.5, 2.5, -0.7, 0.3, 1.25, 2.9,
    ];
    let mut x: Vec<f64> = special.to_vec();
    x.extend(sample(1, 12, 1).iter().map(|v| v * 1.5));
    let f = |v: f32| v as f64;
    let (selu_a, selu_g) = (1.673_263_2_f32, 1.050_701_f32);
    let celu_a = 1.3f32;
    let table: Vec<(Activation, Reference)> = vec![
        (Activation::Relu, Box::new(|x| x.max(0.0))),
        (
            Activation::LeakyRelu(0.1),
            Box::new(move |x| if x < 0.0 { f(0.1) * x } else { x }),
        ),
        (Activation::Sigmoid, Box::new(sigmoid)),
        (Activation::Tanh, Box::new(f64::tanh)),
        (
            Activation::Gelu,
            Box::new(|x| 0.5 * x * (1.0 + erf(x / 2f64.sqrt()))),
        ),
        (Activation::Silu, Box::new(|x| x * sigmoid(x))),
        (
            Activation::Elu(0.7),
            Box::new(move |x| if x > 0.0 { x } else { f(0.7) * (x.exp() - 1.0) }),
        ),
        (
            Activation::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            Box::new(move |x| (f(0.2) * x + 0.5).clamp(0.0, 1.0)),
        ),
        (
            Activation::HardSwish,
            Box::new(|x| x * (x / 6.0 + 0.5).clamp(0.0, 1.0)),
        ),
        (
            Activation::Clip(-1.0, 1.5),
            Box::new(|x| x.clamp(-1.0, 1.5)),
        ),
        (Activation::Softplus, Box::new(|x| (1.0 + x.exp()).ln())),
        (Activation::Erf, Box::new(erf)),
        (Activation::Sqrt, Box::new(f64::sqrt)),
        (Activation::Exp, Box::new(f64::exp)),
        (Activation::Log, Box::new(f64::ln)),
        (Activation::Neg, Box::new(|x| -x)),
        (Activation::Abs, Box::new(f64::abs)),
        (Activation::Reciprocal, Box::new(|x| 1.0 / x)),
        (
            Activation::Sign,
            Box::new(|x| {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }),
        ),
        (
            Activation::Mish,
            Box::new(|x| x * (1.0 + x.exp()).ln().tanh()),
        ),
        (
            Activation::Selu {
                alpha: selu_a,
                gamma: selu_g,
            },
            Box::new(move |x| {
                f(selu_g)
                    * if x > 0.0 {
                        x
                    } else {
                        f(selu_a) * x.exp() - f(selu_a)
                    }
            }),
        ),
        (
            Activation::Celu(celu_a),
            Box::new(move |x| {
                let a = f(celu_a);
                x.max(0.0) + (a * ((x / a).exp() - 1.0)).min(0.0)
            }),
        ),
        (Activation::Softsign, Box::new(|x| x / (1.0 + x.abs()))),
        (Activation::Sin, Box::new(f64::sin)),
        (Activation::Cos, Box::new(f64::cos)),
        (Activation::Floor, Box::new(f64::floor)),
        (Activation::Ceil, Box::new(f64::ceil)),
        (Activation::Round, Box::new(f64::round_ties_even)),
    ];
    for (a, reference) in table {
        let mut b = NetworkBuilder::new(format!("{a:?}"));
        let i = b.input("x", vec![3, 4]).unwrap();
        let y = b.activation("a", i, a);
        b.output(y);
        let net = b.finish().unwrap();
        let want: Vec<f64> = x.iter().map(|&v| reference(v)).collect();
        check(&format!("{a:?}"), &net, &x, 2, &want, 1e-11);
    }
}

#[test]
fn constant_maps_and_prelu_broadcast_per_channel() {
    let shape = vec![3, 2, 2];
    let mut x = sample(2, 12, 2);
    x[0] = 0.0;
    x[1] = -2.0;
    let c = [-1.5f32, 2.0, 0.5];
    let e = [2.0f32, 3.0, 0.5];
    for f in [
        Binary::Add,
        Binary::Sub,
        Binary::Mul,
        Binary::Div,
        Binary::Pow,
        Binary::Max,
        Binary::Min,
    ] {
        for const_first in [false, true] {
            // Pow: integer powers of negative bases are real, 0.5 is NaN.
            let cv = if f == Binary::Pow && !const_first {
                e
            } else {
                c
            };
            let mut b = NetworkBuilder::new("const");
            let i = b.input("x", shape.clone()).unwrap();
            let p = param(&mut b, "c", vec![3, 1, 1], cv.to_vec());
            let y = b
                .norm(
                    "n",
                    i,
                    Norm::Const {
                        f,
                        param: p,
                        const_first,
                    },
                )
                .unwrap();
            b.output(y);
            let net = b.finish().unwrap();
            let want = per_sample(&x, 12, |s| {
                (0..12)
                    .map(|k| {
                        let cc = cv[k / 4] as f64;
                        let (l, r) = if const_first { (cc, s[k]) } else { (s[k], cc) };
                        reference_binary(f, l, r)
                    })
                    .collect()
            });
            check(
                &format!("{f:?} const_first={const_first}"),
                &net,
                &x,
                2,
                &want,
                1e-11,
            );
        }
    }
    // A scalar power (candle's powf) and a scalar divisor.
    for (f, v) in [
        (Binary::Pow, 3.0f32),
        (Binary::Pow, -1.0),
        (Binary::Div, -4.0),
    ] {
        let mut b = NetworkBuilder::new("scalar");
        let i = b.input("x", shape.clone()).unwrap();
        let p = param(&mut b, "c", vec![], vec![v]);
        let y = b
            .norm(
                "n",
                i,
                Norm::Const {
                    f,
                    param: p,
                    const_first: false,
                },
            )
            .unwrap();
        b.output(y);
        let net = b.finish().unwrap();
        let want: Vec<f64> = x
            .iter()
            .map(|&s| reference_binary(f, s, v as f64))
            .collect();
        check(&format!("{f:?} scalar {v}"), &net, &x, 2, &want, 1e-11);
    }
    // PRelu: x where positive, slope * x elsewhere.
    let slope = [0.1f32, -0.2, 2.0];
    let mut b = NetworkBuilder::new("prelu");
    let i = b.input("x", shape.clone()).unwrap();
    let p = param(&mut b, "slope", vec![3, 1, 1], slope.to_vec());
    let y = b.norm("n", i, Norm::Prelu(p)).unwrap();
    b.output(y);
    let net = b.finish().unwrap();
    let want = per_sample(&x, 12, |s| {
        (0..12)
            .map(|k| {
                if s[k] > 0.0 {
                    s[k]
                } else {
                    slope[k / 4] as f64 * s[k]
                }
            })
            .collect()
    });
    check("PRelu", &net, &x, 2, &want, 1e-11);
}

/// ONNX's elementwise binary functions on floats.
fn reference_binary(f: Binary, a: f64, b: f64) -> f64 {
    match f {
        Binary::Add => a + b,
        Binary::Sub => a - b,
        Binary::Mul => a * b,
        Binary::Div => a / b,
        Binary::Pow => a.powf(b),
        Binary::Max => a.max(b),
        Binary::Min => a.min(b),
    }
}

#[test]
fn binary_ops_broadcast_as_numpy() {
    // a [2, 3, 4] with zeros and negatives; b [3, 1] and c [4] hold integer,
    // zero, negative and fractional values (Pow's cases).
    let shapes = vec![vec![2, 3, 4], vec![3, 1], vec![4]];
    let mut x = sample(1, 31, 3);
    x[0] = 0.0;
    x[5] = 0.0;
    x[24..27].copy_from_slice(&[2.0, 0.0, -1.0]);
    x[27..31].copy_from_slice(&[3.0, 0.0, -2.0, 1.5]);
    let mut x2 = sample(1, 31, 4);
    x2[24..31].copy_from_slice(&[0.5, 1.0, 4.0, -1.0, 2.0, 0.25, 0.0]);
    x.extend(x2);
    let ops = [
        Binary::Add,
        Binary::Sub,
        Binary::Mul,
        Binary::Div,
        Binary::Pow,
        Binary::Max,
        Binary::Min,
    ];
    // (left, right) pieces: rank-3 by rank-2, rank-2 by rank-1 (both
    // grow), rank-1 by rank-3.
    for (l, r) in [(0usize, 1usize), (1, 2), (2, 0)] {
        for f in ops {
            let mut b = NetworkBuilder::new("binary");
            let i = b.input("x", vec![31]).unwrap();
            let parts = split(&mut b, i, &shapes);
            let y = b.binary("f", f, parts[l], parts[r]).unwrap();
            b.output(y);
            let out = b.shape(y).to_vec();
            let net = b.finish().unwrap();
            let offs = [0usize, 24, 27];
            let want = per_sample(&x, 31, |s| {
                let n: usize = out.iter().product();
                (0..n)
                    .map(|e| {
                        let o = unflat(e, &out);
                        let a = s[offs[l] + bidx(&o, &shapes[l])];
                        let c = s[offs[r] + bidx(&o, &shapes[r])];
                        reference_binary(f, a, c)
                    })
                    .collect()
            });
            check(&format!("{f:?} {l}x{r}"), &net, &x, 2, &want, 1e-11);
        }
    }
}

#[test]
fn where_picks_x_where_the_condition_is_nonzero() {
    // cond [4] (with zeros), x [3, 1], y [2, 3, 4] -> [2, 3, 4].
    let shapes = vec![vec![4], vec![3, 1], vec![2, 3, 4]];
    let mut x = sample(2, 31, 5);
    x[0] = 0.0;
    x[2] = 0.0;
    x[31 + 3] = 0.0;
    let mut b = NetworkBuilder::new("where");
    let i = b.input("x", vec![31]).unwrap();
    let p = split(&mut b, i, &shapes);
    let y = b.where_("w", p[0], p[1], p[2]).unwrap();
    b.output(y);
    let net = b.finish().unwrap();
    let out = [2usize, 3, 4];
    let want = per_sample(&x, 31, |s| {
        (0..24)
            .map(|e| {
                let o = unflat(e, &out);
                if s[bidx(&o, &shapes[0])] != 0.0 {
                    s[4 + bidx(&o, &shapes[1])]
                } else {
                    s[7 + bidx(&o, &shapes[2])]
                }
            })
            .collect()
    });
    check("Where", &net, &x, 2, &want, 0.0);
}

// ---------------------------------------------------------------- MatMul

/// numpy `matmul` by loops: 1-D promotion, batch broadcasting.
fn np_matmul(a: &[f64], sa: &[usize], b: &[f64], sb: &[usize]) -> (Vec<f64>, Vec<usize>) {
    let a2 = if sa.len() == 1 {
        vec![1, sa[0]]
    } else {
        sa.to_vec()
    };
    let b2 = if sb.len() == 1 {
        vec![sb[0], 1]
    } else {
        sb.to_vec()
    };
    let (m, k, p) = (a2[a2.len() - 2], a2[a2.len() - 1], b2[b2.len() - 1]);
    assert_eq!(k, b2[b2.len() - 2]);
    let (ba, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
    let rank = ba.len().max(bb.len());
    let get = |s: &[usize], i: usize| {
        if i + s.len() < rank {
            1
        } else {
            s[i + s.len() - rank]
        }
    };
    let batch: Vec<usize> = (0..rank).map(|i| get(ba, i).max(get(bb, i))).collect();
    let nb: usize = batch.iter().product();
    let mut out = Vec::new();
    for t in 0..nb {
        let o = unflat(t, &batch);
        let (ia, ib) = (bidx(&o, ba), bidx(&o, bb));
        for i in 0..m {
            for j in 0..p {
                let v: f64 = (0..k)
                    .map(|q| a[(ia * m + i) * k + q] * b[(ib * k + q) * p + j])
                    .sum();
                out.push(v);
            }
        }
    }
    let mut shape = batch;
    if sa.len() > 1 {
        shape.push(m);
    }
    if sb.len() > 1 {
        shape.push(p);
    }
    (out, shape)
}

#[test]
fn matmul_broadcasts_batches_and_follows_the_1d_rules() {
    let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![3, 4], vec![4, 2]),
        (vec![2, 1, 3, 4], vec![5, 4, 2]),
        (vec![5, 3, 4], vec![1, 4, 2]),
        (vec![4], vec![3, 4, 2]),
        (vec![2, 3, 4], vec![4]),
        (vec![4], vec![4]),
    ];
    for (sa, sb) in cases {
        let (na, nb): (usize, usize) = (sa.iter().product(), sb.iter().product());
        let x = sample(2, na + nb, 6);
        let mut b = NetworkBuilder::new("matmul");
        let i = b.input("x", vec![na + nb]).unwrap();
        let p = split(&mut b, i, &[sa.clone(), sb.clone()]);
        let y = b.matmul("mm", p[0], p[1]).unwrap();
        b.output(y);
        let (_, want_shape) = np_matmul(&vec![0.0; na], &sa, &vec![0.0; nb], &sb);
        assert_eq!(b.shape(y), want_shape.as_slice(), "{sa:?} x {sb:?}");
        let net = b.finish().unwrap();
        let want = per_sample(&x, na + nb, |s| np_matmul(&s[..na], &sa, &s[na..], &sb).0);
        check(&format!("{sa:?} x {sb:?}"), &net, &x, 2, &want, 1e-11);
    }
}

// ---------------------------------------------------------------- Mix

/// Reduction or normalisation of one sample `s` by loops: the elements of
/// `view` grouped by their coordinates off `axes`.
fn mix_reference(
    s: &[f64],
    shape: &[usize],
    view: &[usize],
    axes: &[usize],
    kind: &MixKind,
    params: &[(Vec<usize>, Vec<f32>)],
) -> Vec<f64> {
    let n = s.len();
    // Group key: the kept coordinates, row-major (the output order).
    let key = |e: usize| -> Vec<usize> {
        let idx = unflat(e, view);
        (0..view.len())
            .filter(|a| !axes.contains(a))
            .map(|a| idx[a])
            .collect()
    };
    let mut groups: std::collections::BTreeMap<Vec<usize>, Vec<usize>> = Default::default();
    for e in 0..n {
        groups.entry(key(e)).or_default().push(e);
    }
    match kind {
        MixKind::Reduce { f, .. } => groups
            .values()
            .map(|g| {
                let v: Vec<f64> = g.iter().map(|&e| s[e]).collect();
                match f {
                    Reduce::Sum => v.iter().sum(),
                    Reduce::Mean => v.iter().sum::<f64>() / v.len() as f64,
                    Reduce::Max => v.iter().cloned().fold(f64::MIN, f64::max),
                    Reduce::Min => v.iter().cloned().fold(f64::MAX, f64::min),
                    Reduce::L2 => v.iter().map(|x| x * x).sum::<f64>().sqrt(),
                    Reduce::SumSquare => v.iter().map(|x| x * x).sum(),
                    Reduce::LogSumExp => v.iter().map(|x| x.exp()).sum::<f64>().ln(),
                }
            })
            .collect(),
        MixKind::Normalize { eps, scale, bias } => {
            let mut y = vec![0.0; n];
            for g in groups.values() {
                let mean = g.iter().map(|&e| s[e]).sum::<f64>() / g.len() as f64;
                let var = g.iter().map(|&e| (s[e] - mean).powi(2)).sum::<f64>() / g.len() as f64;
                for &e in g {
                    y[e] = (s[e] - mean) / (var + *eps as f64).sqrt();
                }
            }
            let mut it = params.iter();
            for (on, add) in [(scale.is_some(), false), (bias.is_some(), true)] {
                if !on {
                    continue;
                }
                let (ps, pv) = it.next().unwrap();
                for (e, v) in y.iter_mut().enumerate() {
                    let c = pv[bidx(&unflat(e, shape), ps)] as f64;
                    *v = if add { *v + c } else { *v * c };
                }
            }
            y
        }
    }
}

#[test]
fn reductions_follow_onnx_with_and_without_view_and_keepdims() {
    let shape = vec![4, 3, 2];
    let x = sample(2, 24, 7);
    let reduces = [
        Reduce::Mean,
        Reduce::Sum,
        Reduce::Max,
        Reduce::Min,
        Reduce::L2,
        Reduce::SumSquare,
        Reduce::LogSumExp,
    ];
    let layouts: Vec<(Option<Vec<usize>>, Vec<usize>)> = vec![
        (None, vec![1]),
        (None, vec![0, 2]),
        (None, vec![0, 1, 2]),
        (Some(vec![2, 2, 3, 2]), vec![1, 3]),
        (Some(vec![24]), vec![0]),
    ];
    for f in reduces {
        for (view, axes) in &layouts {
            for keepdims in [true, false] {
                let kind = MixKind::Reduce { f, keepdims };
                let mut b = NetworkBuilder::new("reduce");
                let i = b.input("x", shape.clone()).unwrap();
                let mix = Mix {
                    kind: kind.clone(),
                    view: view.clone(),
                    axes: axes.clone(),
                };
                let y = b.mix("m", i, mix).unwrap();
                b.output(y);
                let net = b.finish().unwrap();
                let v = view.clone().unwrap_or(shape.clone());
                let want = per_sample(&x, 24, |s| mix_reference(s, &shape, &v, axes, &kind, &[]));
                let what = format!("{f:?} view {view:?} axes {axes:?} keepdims {keepdims}");
                check(&what, &net, &x, 2, &want, 1e-11);
            }
        }
    }
}

#[test]
fn layer_instance_and_group_normalisation_follow_onnx() {
    let shape = vec![4, 3, 2];
    let x = sample(2, 24, 8);
    let chan = (vec![4, 1, 1], vec![0.5f32, -1.0, 2.0, 1.5]);
    let chan_b = (vec![4, 1, 1], vec![0.1f32, 0.0, -0.3, 2.0]);
    let last = (vec![2], vec![1.5f32, -0.5]);
    let last_b = (vec![2], vec![-0.25f32, 0.75]);
    // (what, view, axes, scale, bias)
    type Case = (
        &'static str,
        Option<Vec<usize>>,
        Vec<usize>,
        Option<(Vec<usize>, Vec<f32>)>,
        Option<(Vec<usize>, Vec<f32>)>,
    );
    let cases: Vec<Case> = vec![
        (
            "layer norm",
            None,
            vec![2],
            Some(last.clone()),
            Some(last_b),
        ),
        ("layer norm over 2 axes", None, vec![1, 2], Some(last), None),
        (
            "instance norm",
            None,
            vec![1, 2],
            Some(chan.clone()),
            Some(chan_b.clone()),
        ),
        (
            "group norm",
            Some(vec![2, 2, 3, 2]),
            vec![1, 2, 3],
            Some(chan),
            Some(chan_b),
        ),
        ("plain", None, vec![0, 1, 2], None, None),
    ];
    for (what, view, axes, scale, bias) in cases {
        let mut b = NetworkBuilder::new("norm");
        let i = b.input("x", shape.clone()).unwrap();
        let s = scale
            .as_ref()
            .map(|(sh, v)| param(&mut b, "scale", sh.clone(), v.clone()));
        let bi = bias
            .as_ref()
            .map(|(sh, v)| param(&mut b, "bias", sh.clone(), v.clone()));
        let kind = MixKind::Normalize {
            eps: 1e-3,
            scale: s,
            bias: bi,
        };
        let mix = Mix {
            kind: kind.clone(),
            view: view.clone(),
            axes: axes.clone(),
        };
        let y = b.mix("m", i, mix).unwrap();
        b.output(y);
        let net = b.finish().unwrap();
        let v = view.clone().unwrap_or(shape.clone());
        let params: Vec<_> = scale.into_iter().chain(bias).collect();
        let want = per_sample(&x, 24, |s| {
            mix_reference(s, &shape, &v, &axes, &kind, &params)
        });
        check(what, &net, &x, 2, &want, 1e-10);
    }
}

// ---------------------------------------------------------------- Gather

/// A net of one element map on input `shape` (several inputs: `split`).
fn gather_net(shapes: &[Vec<usize>], map: IndexMap, out: Vec<usize>) -> Network {
    let total: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    let mut b = NetworkBuilder::new("gather");
    let i = b.input("x", vec![total]).unwrap();
    let parts = split(&mut b, i, shapes);
    let y = b.gather("g", &parts, map, out).unwrap();
    b.output(y);
    b.finish().unwrap()
}

#[test]
fn slices_pads_and_index_gathers_read_what_onnx_reads() {
    let s = vec![3usize, 4];
    let x = sample(2, 12, 9);
    let at = |v: &[f64], i: usize, j: usize| v[i * 4 + j];
    // Slice: rows 2, 1 (step -1), columns 1, 3.
    let r = [
        AxisRange {
            start: 2,
            step: -1,
            len: 2,
        },
        AxisRange {
            start: 1,
            step: 2,
            len: 2,
        },
    ];
    let (map, out) = index_map::slice(&s, &r).unwrap();
    let want = per_sample(&x, 12, |v| {
        let mut o = vec![];
        for i in 0..2 {
            for j in 0..2 {
                o.push(at(v, 2 - i, 1 + 2 * j));
            }
        }
        o
    });
    check(
        "slice",
        &gather_net(std::slice::from_ref(&s), map, out),
        &x,
        2,
        &want,
        0.0,
    );
    // Pads: begin [1, 2], end [0, 1] -> [4, 7].
    for mode in [
        index_map::PadMode::Constant(7.0),
        index_map::PadMode::Reflect,
        index_map::PadMode::Edge,
    ] {
        let (map, out) = index_map::pad(&s, &[1, 2], &[0, 1], mode).unwrap();
        assert_eq!(out, vec![4, 7]);
        let src = |q: isize, n: usize| -> Option<usize> {
            let n = n as isize;
            match mode {
                _ if (0..n).contains(&q) => Some(q as usize),
                index_map::PadMode::Constant(_) => None,
                // numpy 'reflect': mirror without repeating the edge.
                index_map::PadMode::Reflect => {
                    Some(if q < 0 { -q } else { 2 * (n - 1) - q } as usize)
                }
                _ => Some(q.clamp(0, n - 1) as usize),
            }
        };
        let want = per_sample(&x, 12, |v| {
            let mut o = vec![];
            for i in 0..4 {
                for j in 0..7 {
                    o.push(match (src(i - 1, 3), src(j - 2, 4)) {
                        (Some(a), Some(b)) => at(v, a, b),
                        _ => 7.0,
                    });
                }
            }
            o
        });
        check(
            &format!("pad {mode:?}"),
            &gather_net(std::slice::from_ref(&s), map, out),
            &x,
            2,
            &want,
            0.0,
        );
    }
    // Gather along axis 1 with [2, 2] indices -> [3, 2, 2].
    let idx = [3usize, 0, 0, 2];
    let (map, out) = index_map::gather(&s, 1, &idx, &[2, 2]).unwrap();
    let want = per_sample(&x, 12, |v| {
        (0..3)
            .flat_map(|i| idx.iter().map(move |&j| (i, j)))
            .map(|(i, j)| at(v, i, j))
            .collect()
    });
    check(
        "gather",
        &gather_net(std::slice::from_ref(&s), map, out),
        &x,
        2,
        &want,
        0.0,
    );
    // Expand [3, 1] -> [2, 3, 4] and Tile [3, 4] x [1, 2].
    let map = index_map::expand(&[3, 1], &[2, 3, 4]).unwrap();
    let want = per_sample(&sample(2, 3, 10), 3, |v| {
        (0..24).map(|e| v[(e / 4) % 3]).collect()
    });
    check(
        "expand",
        &gather_net(&[vec![3, 1]], map, vec![2, 3, 4]),
        &sample(2, 3, 10),
        2,
        &want,
        0.0,
    );
    let (map, out) = index_map::tile(&s, &[1, 2]).unwrap();
    let want = per_sample(&x, 12, |v| {
        (0..24).map(|e| at(v, e / 8, (e % 8) % 4)).collect()
    });
    check(
        "tile",
        &gather_net(std::slice::from_ref(&s), map, out),
        &x,
        2,
        &want,
        0.0,
    );
}

/// Linear interpolation taps of ONNX Resize along one axis (coordinate
/// clamped to the input, as onnxruntime): `(i0, i1, weight of i1)`.
fn linear_taps(o: usize, n_in: usize, n_out: usize, align: bool) -> (usize, usize, f64) {
    let x = if align {
        if n_out > 1 {
            o as f64 * (n_in - 1) as f64 / (n_out - 1) as f64
        } else {
            0.0
        }
    } else {
        (o as f64 + 0.5) * n_in as f64 / n_out as f64 - 0.5
    };
    let x = x.clamp(0.0, (n_in - 1) as f64);
    let i0 = x.floor() as usize;
    (i0, (i0 + 1).min(n_in - 1), x - i0 as f64)
}

#[test]
fn resizes_interpolate_as_onnx() {
    let (c, h, w) = (2usize, 3usize, 4usize);
    let (oh, ow) = (6usize, 6usize);
    let x = sample(2, c * h * w, 11);
    for align in [false, true] {
        let coord = if align {
            CoordMode::AlignCorners
        } else {
            CoordMode::HalfPixel
        };
        let map = index_map::resize(
            &[c, h, w],
            &[c, oh, ow],
            &[1.0, 0.0, 0.0],
            coord,
            Interp::Linear,
        )
        .unwrap();
        assert!(map.weight.is_some() && map.taps == 4);
        let want = per_sample(&x, c * h * w, |v| {
            let mut o = vec![];
            for ch in 0..c {
                for y in 0..oh {
                    let (y0, y1, fy) = linear_taps(y, h, oh, align);
                    for xx in 0..ow {
                        let (x0, x1, fx) = linear_taps(xx, w, ow, align);
                        let p = |i: usize, j: usize| v[(ch * h + i) * w + j];
                        o.push(
                            (1.0 - fy) * ((1.0 - fx) * p(y0, x0) + fx * p(y0, x1))
                                + fy * ((1.0 - fx) * p(y1, x0) + fx * p(y1, x1)),
                        );
                    }
                }
            }
            o
        });
        let net = gather_net(&[vec![c, h, w]], map, vec![c, oh, ow]);
        // The map's weights are f32: 1e-6 of the interpolated value.
        check(
            &format!("linear resize {coord:?}"),
            &net,
            &x,
            2,
            &want,
            1e-6,
        );
    }
    // Nearest, asymmetric, floor: [2, 3, 4] -> [2, 6, 12] reads (y / 2, x / 3).
    let map = index_map::resize(
        &[c, h, w],
        &[c, 6, 12],
        &[1.0, 2.0, 3.0],
        CoordMode::Asymmetric,
        Interp::Nearest(Rounding::Floor),
    )
    .unwrap();
    let want = per_sample(&x, 24, |v| {
        (0..c * 72)
            .map(|e| {
                let (ch, y, xx) = (e / 72, (e / 12) % 6, e % 12);
                v[(ch * h + y / 2) * w + xx / 3]
            })
            .collect()
    });
    check(
        "nearest resize",
        &gather_net(&[vec![c, h, w]], map, vec![c, 6, 12]),
        &x,
        2,
        &want,
        0.0,
    );
}

#[test]
fn depth_space_moves_and_transposed_conv_zero_insertion_follow_onnx() {
    let (c, h, w, bs) = (8usize, 2usize, 3usize, 2usize);
    let x = sample(2, c * h * w, 12);
    let cp = c / (bs * bs);
    for order in [DepthOrder::Dcr, DepthOrder::Crd] {
        let (map, out) = index_map::depth_to_space(&[c, h, w], bs, order).unwrap();
        // ONNX: DCR reshapes to [b, b, C', H, W] and transposes to
        // [C', H, b, W, b]; CRD reshapes to [C', b, b, H, W].
        let want = per_sample(&x, c * h * w, |v| {
            let mut o = vec![0.0; c * h * w];
            for ch in 0..cp {
                for y in 0..h {
                    for i in 0..bs {
                        for xx in 0..w {
                            for j in 0..bs {
                                let src = match order {
                                    DepthOrder::Dcr => (i * bs + j) * cp + ch,
                                    DepthOrder::Crd => ch * bs * bs + i * bs + j,
                                };
                                o[(ch * h * bs + y * bs + i) * w * bs + xx * bs + j] =
                                    v[(src * h + y) * w + xx];
                            }
                        }
                    }
                }
            }
            o
        });
        check(
            &format!("DepthToSpace {order:?}"),
            &gather_net(&[vec![c, h, w]], map, out),
            &x,
            2,
            &want,
            0.0,
        );
    }
    // SpaceToDepth [2, 4, 6] -> [8, 2, 3]: ONNX reshapes to [C, H/b, b, W/b, b]
    // and transposes to [b, b, C, H/b, W/b].
    let (map, out) = index_map::space_to_depth(&[2, 4, 6], 2).unwrap();
    let want = per_sample(&x, 48, |v| {
        let mut o = vec![];
        for i in 0..2 {
            for j in 0..2 {
                for ch in 0..2 {
                    for y in 0..2 {
                        for xx in 0..3 {
                            o.push(v[(ch * 4 + y * 2 + i) * 6 + xx * 2 + j]);
                        }
                    }
                }
            }
        }
        o
    });
    check(
        "SpaceToDepth",
        &gather_net(&[vec![2, 4, 6]], map, out),
        &x,
        2,
        &want,
        0.0,
    );
    // Zero insertion: [1, 2, 3], stride 2, pads begin [1, 0] end [1, 2].
    let (map, out) = index_map::dilate_pad(&[1, 2, 3], [2, 2], [1, 0], [1, 2]).unwrap();
    assert_eq!(out, vec![1, 5, 7]);
    let xs = sample(2, 6, 13);
    let want = per_sample(&xs, 6, |v| {
        let mut o = vec![0.0; 35];
        for y in 0..2 {
            for xx in 0..3 {
                o[(1 + 2 * y) * 7 + 2 * xx] = v[y * 3 + xx];
            }
        }
        o
    });
    check(
        "dilate_pad",
        &gather_net(&[vec![1, 2, 3]], map, out),
        &xs,
        2,
        &want,
        0.0,
    );
}

#[test]
fn element_maps_with_constants_weights_and_several_inputs() {
    // Where with a constant condition [3, 1]: an activation [4] where true,
    // the constant -5 where false -> [3, 4].
    let cond = [true, false, true];
    let map = index_map::select(
        &[3, 1],
        &cond,
        Branch::Act(&[4]),
        Branch::Const(&[1], &[-5.0]),
        &[3, 4],
    )
    .unwrap();
    let x = sample(2, 4, 14);
    let want = per_sample(&x, 4, |v| {
        (0..12)
            .map(|e| if cond[e / 4] { v[e % 4] } else { -5.0 })
            .collect()
    });
    check(
        "select const",
        &gather_net(&[vec![4]], map, vec![3, 4]),
        &x,
        2,
        &want,
        0.0,
    );
    // Two activation branches: x [3, 1] where true, y [4] elsewhere.
    let map = index_map::select(
        &[3, 1],
        &cond,
        Branch::Act(&[3, 1]),
        Branch::Act(&[4]),
        &[3, 4],
    )
    .unwrap();
    let x = sample(2, 7, 15);
    let want = per_sample(&x, 7, |v| {
        (0..12)
            .map(|e| if cond[e / 4] { v[e / 4] } else { v[3 + e % 4] })
            .collect()
    });
    check(
        "select two",
        &gather_net(&[vec![3, 1], vec![4]], map, vec![3, 4]),
        &x,
        2,
        &want,
        0.0,
    );
    // A hand-written weighted map over two inputs and two constants:
    // out[e] = 0.5 a[e] - 2 b[2 - e] + 3 * c0 (+ 0 * c1), taps 3.
    let (na, nb) = (3usize, 3usize);
    let consts = vec![1.5f32, 9.0];
    let mut index = Vec::new();
    let mut weight = Vec::new();
    for e in 0..3 {
        index.extend([e as u32, (na + 2 - e) as u32, (na + nb) as u32]);
        weight.extend([0.5f32, -2.0, 3.0]);
    }
    let map = IndexMap {
        taps: 3,
        index: Arc::new(index),
        weight: Some(Arc::new(weight)),
        consts: consts.clone(),
    };
    let x = sample(2, 6, 16);
    let want = per_sample(&x, 6, |v| {
        (0..3)
            .map(|e| 0.5 * v[e] - 2.0 * v[na + 2 - e] + 3.0 * 1.5)
            .collect()
    });
    check(
        "weighted",
        &gather_net(&[vec![3], vec![3]], map, vec![3]),
        &x,
        2,
        &want,
        1e-12,
    );
    // Unweighted taps sum: out[e] = a[e] + a[(e + 1) % 3] + c.
    let mut index = Vec::new();
    for e in 0..3u32 {
        index.extend([e, (e + 1) % 3, 3]);
    }
    let map = IndexMap {
        taps: 3,
        index: Arc::new(index),
        weight: None,
        consts: vec![0.25],
    };
    let x = sample(2, 3, 17);
    let want = per_sample(&x, 3, |v| {
        (0..3).map(|e| v[e] + v[(e + 1) % 3] + 0.25).collect()
    });
    check(
        "taps sum",
        &gather_net(&[vec![3]], map, vec![3]),
        &x,
        2,
        &want,
        1e-12,
    );
}

// ---------------------------------------------------------------- Dense

#[test]
fn dense_layers_run_over_leading_axes() {
    for lead in [vec![3usize], vec![2, 3]] {
        let (fin, fout) = (4usize, 5usize);
        let rows: usize = lead.iter().product();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(18);
        let w: Vec<f32> = (0..fout * fin).map(|_| rng.random::<f32>() - 0.5).collect();
        let bias: Vec<f32> = (0..fout).map(|_| rng.random::<f32>() - 0.5).collect();
        let mut shape = lead.clone();
        shape.push(fin);
        let mut b = NetworkBuilder::new("dense");
        let i = b.input("x", shape).unwrap();
        let y = b
            .dense(
                "fc",
                i,
                "w",
                ConstTensor::f32(vec![fout, fin], w.clone()),
                Some(("b", ConstTensor::f32(vec![fout], bias.clone()))),
            )
            .unwrap();
        b.output(y);
        let mut out = lead.clone();
        out.push(fout);
        assert_eq!(b.shape(y), out.as_slice());
        let net = b.finish().unwrap();
        let x = sample(2, rows * fin, 19);
        let want = per_sample(&x, rows * fin, |v| {
            let mut o = vec![];
            for r in 0..rows {
                for j in 0..fout {
                    o.push(
                        bias[j] as f64
                            + (0..fin)
                                .map(|k| w[j * fin + k] as f64 * v[r * fin + k])
                                .sum::<f64>(),
                    );
                }
            }
            o
        });
        check(&format!("dense over {lead:?}"), &net, &x, 2, &want, 1e-11);
    }
}

// ---------------------------------------------------------------- linear mode

/// SynFlow's linear mode takes |c| for the coefficients and offsets of
/// constant maps, PRelu slopes and normalisation scales and biases, and
/// keeps powers and thresholds (they define the function) and the
/// functions themselves.
#[test]
/// SynFlow's linear mode: |coefficients| of constant maps, the Pow
/// exponent kept, PRelu with |slope|; smooth activations as the identity
/// and a LayerNorm as the sum over its axes (the path norm).
fn linear_mode_takes_absolute_coefficients_and_reads_the_path_norm() {
    let x = sample(1, 6, 20);
    let c = vec![-1.5f32, 2.0, -0.5];
    let lin = |net: &Network| run(net, &x, 1, DType::F64, Mode::Linear);
    let cases: Vec<(Binary, BinaryReference)> = vec![
        (Binary::Sub, Box::new(|v, c| v - c.abs())),
        (Binary::Div, Box::new(|v, c| v / c.abs())),
        (Binary::Mul, Box::new(|v, c| v * c.abs())),
        (Binary::Add, Box::new(|v, c| v + c.abs())),
        (Binary::Max, Box::new(|v, c| v.max(c))),
        (Binary::Min, Box::new(|v, c| v.min(c))),
    ];
    for (f, reference) in cases {
        let mut b = NetworkBuilder::new("lin");
        let i = b.input("x", vec![3, 2]).unwrap();
        let p = param(&mut b, "c", vec![3, 1], c.clone());
        let y = b
            .norm(
                "n",
                i,
                Norm::Const {
                    f,
                    param: p,
                    const_first: false,
                },
            )
            .unwrap();
        let t = b.activation("t", y, Activation::Tanh);
        b.output(t);
        let net = b.finish().unwrap();
        // tanh is the identity on the path-norm flow.
        let want: Vec<f64> = (0..6).map(|k| reference(x[k], c[k / 2] as f64)).collect();
        compare(&format!("linear {f:?}"), &lin(&net), &want, 1e-12);
    }
    // Pow keeps its exponent (-1 stays a reciprocal).
    let mut b = NetworkBuilder::new("pow");
    let i = b.input("x", vec![3, 2]).unwrap();
    let p = param(&mut b, "c", vec![], vec![-1.0]);
    let y = b
        .norm(
            "n",
            i,
            Norm::Const {
                f: Binary::Pow,
                param: p,
                const_first: false,
            },
        )
        .unwrap();
    b.output(y);
    let want: Vec<f64> = x.iter().map(|v| 1.0 / v).collect();
    compare("linear Pow", &lin(&b.finish().unwrap()), &want, 1e-12);
    // PRelu with |slope|; LayerNorm with |scale| and |bias|.
    let mut b = NetworkBuilder::new("prelu+ln");
    let i = b.input("x", vec![3, 2]).unwrap();
    let p = param(&mut b, "slope", vec![3, 1], c.clone());
    let y = b.norm("p", i, Norm::Prelu(p)).unwrap();
    let s = param(&mut b, "scale", vec![2], vec![-2.0, 0.5]);
    let bi = param(&mut b, "bias", vec![2], vec![-0.25, 1.0]);
    let kind = MixKind::Normalize {
        eps: 1e-5,
        scale: Some(s),
        bias: Some(bi),
    };
    let z = b
        .mix(
            "ln",
            y,
            Mix {
                kind: kind.clone(),
                view: None,
                axes: vec![1],
            },
        )
        .unwrap();
    b.output(z);
    let pre: Vec<f64> = (0..6)
        .map(|k| {
            if x[k] > 0.0 {
                x[k]
            } else {
                (c[k / 2] as f64).abs() * x[k]
            }
        })
        .collect();
    // The LayerNorm over axis 1 reads as the sum over that axis.
    let want: Vec<f64> = (0..6)
        .map(|k| pre[k - k % 2] + pre[k - k % 2 + 1])
        .collect();
    compare(
        "linear PRelu + LayerNorm",
        &lin(&b.finish().unwrap()),
        &want,
        1e-10,
    );
}

/// Linear mode on gates and attention: a product of activations is their
/// sum, `A @ B` is `A @ 1 + 1 @ B`, a softmax is the sum over its axis.
#[test]
fn linear_mode_reads_gates_and_attention_as_the_path_norm() {
    let x = sample(1, 6, 21);
    let lin = |net: &Network| run(net, &x, 1, DType::F64, Mode::Linear);
    let mut b = NetworkBuilder::new("gate");
    let i = b.input("x", vec![2, 3]).unwrap();
    let g = b.activation("g", i, Activation::Sigmoid);
    let y = b.binary("m", Binary::Mul, i, g).unwrap();
    b.output(y);
    let want: Vec<f64> = x.iter().map(|v| 2.0 * v).collect();
    compare("linear SiLU", &lin(&b.finish().unwrap()), &want, 1e-12);

    let mut b = NetworkBuilder::new("attn");
    let i = b.input("x", vec![2, 3]).unwrap();
    let t = b.transpose("t", i, vec![1, 0]).unwrap();
    let s = b.matmul("s", i, t).unwrap();
    let p = b.softmax("p", s, 1, false).unwrap();
    b.output(p);
    // s[m][n] = rowsum(x)[m] + rowsum(x)[n]; softmax: sum over n.
    let r: Vec<f64> = (0..2)
        .map(|m| x[3 * m] + x[3 * m + 1] + x[3 * m + 2])
        .collect();
    let want: Vec<f64> = (0..4)
        .map(|e| {
            let m = e / 2;
            (0..2).map(|n| r[m] + r[n]).sum()
        })
        .collect();
    compare("linear attention", &lin(&b.finish().unwrap()), &want, 1e-12);
}
