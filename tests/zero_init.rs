//! ZerO initialisation end to end: `maskforge init` and `zoo export --init
//! zero|zero-growing` write exactly the matrices of Algorithm 1 (identity,
//! partial identity, `2^{-(m-1)/2}·H_m` truncated; the Hadamard on shrinking
//! layers for `zero`, the pipeline paper's reading, on growing ones for
//! `zero-growing`, the ZerO authors' code), in the source's names, layout and
//! dtype, and the written ONNX files run in onnxruntime to the outputs those
//! matrices imply. Expected values are built here independently of
//! `maskforge::init::zero` (Hadamard matrices as Kronecker powers of `[[1,1],[1,-1]]`).

mod common;
use common::{maskforge, s};
use std::process::Command;

use std::path::{Path, PathBuf};

use candle_onnx::onnx::{
    tensor_shape_proto, type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use maskforge::graph::op::Window;
use maskforge::graph::tensor::ConstTensor;
use maskforge::graph::NetworkBuilder;
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

fn ok(args: &[&str]) -> String {
    let out = maskforge(args);
    assert!(
        out.status.success(),
        "maskforge {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `H_m` as the m-fold Kronecker power of `H_1`, row-major.
fn kron_hadamard(m: u32) -> Vec<f32> {
    let mut h = vec![1.0f32];
    let mut n = 1;
    for _ in 0..m {
        let mut next = vec![0.0; 4 * n * n];
        for (a, b, sign) in [(0, 0, 1.0), (0, 1, 1.0), (1, 0, 1.0), (1, 1, -1.0)] {
            for r in 0..n {
                for c in 0..n {
                    next[(a * n + r) * 2 * n + b * n + c] = sign * h[r * n + c];
                }
            }
        }
        h = next;
        n *= 2;
    }
    h
}

/// `c · H_m[0..out][0..in]` with `c = 2^{-(m-1)/2}`.
fn scaled_hadamard_block(m: u32, out: usize, inp: usize) -> Vec<f32> {
    let n = 1usize << m;
    let h = kron_hadamard(m);
    let c = 2f64.powf(-(m as f64 - 1.0) / 2.0) as f32;
    (0..out)
        .flat_map(|o| (0..inp).map(move |i| (o, i)))
        .map(|(o, i)| c * h[o * n + i])
        .collect()
}

/// `[out, in]` with ones on the main diagonal.
fn eye(out: usize, inp: usize) -> Vec<f32> {
    (0..out * inp)
        .map(|k| if k / inp == k % inp { 1.0 } else { 0.0 })
        .collect()
}

fn f32s(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("{name} missing"));
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    let v = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), v)
}

/// `maskforge init MODEL --scheme SCHEME -o DIR/w.safetensors --json`: the
/// written file's bytes and the printed summary.
fn init_json(dir: &Path, model: &str, scheme: &str) -> (Vec<u8>, serde_json::Value) {
    let out = dir.join("w.safetensors");
    let json = ok(&["init", model, "--scheme", scheme, "-o", s(&out), "--json"]);
    (
        std::fs::read(&out).unwrap(),
        serde_json::from_str(&json).unwrap(),
    )
}

/// Each layer's `(rule, m)` in an `init --json` summary.
fn rules(v: &serde_json::Value) -> Vec<(&str, Option<u64>)> {
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["rule"].as_str().unwrap(), l["m"].as_u64()))
        .collect()
}

#[test]
fn kronecker_hadamard_is_orthogonal() {
    // The reference itself: H_m H_m^T = 2^m I.
    for m in 0..=4 {
        let n = 1usize << m;
        let h = kron_hadamard(m);
        for r in 0..n {
            for c in 0..n {
                let dot: f32 = (0..n).map(|k| h[r * n + k] * h[c * n + k]).sum();
                assert_eq!(dot, if r == c { n as f32 } else { 0.0 });
            }
        }
    }
    assert_eq!(maskforge::init::zero::hadamard(3), kron_hadamard(3));
}

#[test]
fn lenet300_zero_growing_weights_are_partial_identities() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = init_json(dir.path(), "zoo:lenet300", "zero-growing");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(
        names,
        [
            "fc1.bias",
            "fc1.weight",
            "fc2.bias",
            "fc2.weight",
            "fc3.bias",
            "fc3.weight"
        ]
    );
    // 784 -> 300 -> 100 -> 10 all shrink, so ZerO's code gives (I_out, 0),
    // weights stored [out, in].
    for (name, o, i) in [
        ("fc1.weight", 300, 784),
        ("fc2.weight", 100, 300),
        ("fc3.weight", 10, 100),
    ] {
        let (shape, v) = f32s(&st, name);
        assert_eq!(shape, vec![o, i], "{name}");
        assert_eq!(v, eye(o, i), "{name}");
    }
    for (name, o) in [("fc1.bias", 300), ("fc2.bias", 100), ("fc3.bias", 10)] {
        assert_eq!(f32s(&st, name), (vec![o], vec![0.0; o]), "{name}");
    }
}

#[test]
fn zero_growing_puts_the_scaled_truncated_hadamard_on_growing_layers() {
    let dir = tempfile::tempdir().unwrap();
    // Growing orientation. 3 -> 5 (m = 3, c = 1/2, H_3 is 8x8 truncated),
    // 5 -> 8 (m = 3, c = 1/2), 8 -> 8 (identity), 8 -> 2 (partial
    // identity), 2 -> 4 (m = 2, c = 2^{-1/2}).
    let (bytes, v) = init_json(dir.path(), "zoo:mlp:3-5-8-8-2-4", "zero-growing");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let half = 0.5f32;
    #[rustfmt::skip]
    let fc1 = vec![
        half,  half,  half,
        half, -half,  half,
        half,  half, -half,
        half, -half, -half,
        half,  half,  half,
    ];
    assert_eq!(f32s(&st, "fc1.weight"), (vec![5, 3], fc1));
    assert_eq!(
        f32s(&st, "fc2.weight"),
        (vec![8, 5], scaled_hadamard_block(3, 8, 5))
    );
    assert_eq!(f32s(&st, "fc3.weight"), (vec![8, 8], eye(8, 8)));
    assert_eq!(f32s(&st, "fc4.weight"), (vec![2, 8], eye(2, 8)));
    let r = std::f32::consts::FRAC_1_SQRT_2;
    assert_eq!(
        f32s(&st, "fc5.weight"),
        (vec![4, 2], vec![r, r, r, -r, r, r, r, -r])
    );
    // The summary names each layer's rule.
    assert_eq!(
        rules(&v),
        [
            ("hadamard", Some(3)),
            ("hadamard", Some(3)),
            ("identity", None),
            ("partial-identity", None),
            ("hadamard", Some(2)),
        ]
    );
    assert_eq!(v["layers"][0]["scale"].as_f64(), Some(0.5));
    assert_eq!(v["scheme"], "zero-growing");
    assert_eq!(v["biases_zeroed"], 5);
}

/// `c = 2^{-(m-1)/2}` for the `m` of LeNet-300-100's layers, by hand.
const C10: f32 = 0.0625 * std::f32::consts::FRAC_1_SQRT_2; // 2^{-4.5}
const C9: f32 = 0.0625; // 2^{-4}
const C7: f32 = 0.125; // 2^{-3}

#[test]
fn lenet300_default_zero_gives_scaled_hadamard_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, v) = init_json(dir.path(), "zoo:lenet300", "zero");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    // Every layer shrinks: W[o][i] = c·H_m[o][i] with m = ceil(log2 in):
    // 784 -> 300: m = 10, 300 -> 100: m = 9, 100 -> 10: m = 7.
    for (name, o, i, m, c) in [
        ("fc1.weight", 300, 784, 10, C10),
        ("fc2.weight", 100, 300, 9, C9),
        ("fc3.weight", 10, 100, 7, C7),
    ] {
        let (shape, v) = f32s(&st, name);
        assert_eq!(shape, vec![o, i], "{name}");
        assert_eq!(v, scaled_hadamard_block(m, o, i), "{name}");
        // The scale by hand: row 0 of H_m is all ones, row 1 alternates.
        assert_eq!((v[0], v[i], v[i + 1]), (c, c, -c), "{name}");
    }
    for (name, o) in [("fc1.bias", 300), ("fc2.bias", 100), ("fc3.bias", 10)] {
        assert_eq!(f32s(&st, name), (vec![o], vec![0.0; o]), "{name}");
    }
    assert_eq!(v["scheme"], "zero");
    for (l, (m, c)) in v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip([(10, C10), (9, C9), (7, C7)])
    {
        assert_eq!(l["rule"], "hadamard", "{l}");
        assert_eq!(l["m"].as_u64(), Some(m), "{l}");
        assert_eq!(l["scale"].as_f64().map(|x| x as f32), Some(c), "{l}");
    }
}

#[test]
fn default_zero_puts_the_hadamard_on_shrinking_layers_only() {
    let dir = tempfile::tempdir().unwrap();
    // 3 -> 5 and 5 -> 8 grow (partial identity), 8 -> 8 (identity), 8 -> 2
    // shrinks (m = ceil(log2 8) = 3 from the input width, c = 1/2), 2 -> 4
    // grows (partial identity).
    let (bytes, v) = init_json(dir.path(), "zoo:mlp:3-5-8-8-2-4", "zero");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(f32s(&st, "fc1.weight"), (vec![5, 3], eye(5, 3)));
    assert_eq!(f32s(&st, "fc2.weight"), (vec![8, 5], eye(8, 5)));
    assert_eq!(f32s(&st, "fc3.weight"), (vec![8, 8], eye(8, 8)));
    let h = 0.5f32;
    #[rustfmt::skip]
    let fc4 = vec![
        h,  h, h,  h, h,  h, h,  h,
        h, -h, h, -h, h, -h, h, -h,
    ];
    assert_eq!(f32s(&st, "fc4.weight"), (vec![2, 8], fc4));
    assert_eq!(f32s(&st, "fc5.weight"), (vec![4, 2], eye(4, 2)));
    assert_eq!(
        rules(&v),
        [
            ("partial-identity", None),
            ("partial-identity", None),
            ("identity", None),
            ("hadamard", Some(3)),
            ("partial-identity", None),
        ]
    );
    assert_eq!(v["layers"][3]["scale"].as_f64(), Some(0.5));
    assert_eq!(v["scheme"], "zero");
}

#[test]
fn lenet5_default_zero_convs_grow_by_partial_identity_and_the_head_is_hadamard() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = init_json(dir.path(), "zoo:lenet5", "zero");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    // conv1 1 -> 6 and conv2 6 -> 16 grow: the partial identity at the
    // centre tap (2, 2) of the 5x5 kernel, zeros elsewhere.
    for (name, o, i) in [("conv1.weight", 6, 1), ("conv2.weight", 16, 6)] {
        let (shape, v) = f32s(&st, name);
        assert_eq!(shape, vec![o, i, 5, 5]);
        for oc in 0..o {
            for ic in 0..i {
                for tap in 0..25 {
                    let want = if tap == 12 && oc == ic { 1.0 } else { 0.0 };
                    assert_eq!(
                        v[(oc * i + ic) * 25 + tap],
                        want,
                        "{name}[{oc}][{ic}] {tap}"
                    );
                }
            }
        }
    }
    // The dense head shrinks: 400 -> 120 (m = 9), 120 -> 84 (m = 7), 84 -> 10 (m = 7).
    for (name, o, i, m) in [
        ("fc1.weight", 120, 400, 9),
        ("fc2.weight", 84, 120, 7),
        ("fc3.weight", 10, 84, 7),
    ] {
        assert_eq!(
            f32s(&st, name),
            (vec![o, i], scaled_hadamard_block(m, o, i))
        );
    }
}

#[test]
fn lenet5_convs_carry_the_channel_matrix_at_the_kernel_centre_only() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = init_json(dir.path(), "zoo:lenet5", "zero-growing");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    // Growing orientation. conv1: 1 -> 6 channels (m = 3, c = 1/2), conv2: 6 -> 16 (m = 4, c = 2^{-3/2}); 5x5.
    for (name, o, i, m) in [("conv1.weight", 6, 1, 3), ("conv2.weight", 16, 6, 4)] {
        let (shape, v) = f32s(&st, name);
        assert_eq!(shape, vec![o, i, 5, 5]);
        let centre = scaled_hadamard_block(m, o, i);
        for oc in 0..o {
            for ic in 0..i {
                for tap in 0..25 {
                    let got = v[(oc * i + ic) * 25 + tap];
                    let want = if tap == 2 * 5 + 2 {
                        centre[oc * i + ic]
                    } else {
                        0.0
                    };
                    assert_eq!(got, want, "{name}[{oc}][{ic}] tap {tap}");
                }
            }
        }
    }
    // The dense head: 400 -> 120 -> 84 -> 10, partial identities.
    assert_eq!(f32s(&st, "fc1.weight").1, eye(120, 400));
}

#[test]
fn grouped_depthwise_and_even_kernel_convs() {
    let mut b = NetworkBuilder::new("grouped");
    let x = b.input("x", vec![4, 6, 6]).unwrap();
    let w = |shape: Vec<usize>| {
        let n = shape.iter().product();
        ConstTensor::f32(shape, vec![9.0; n])
    };
    // 4 -> 6 channels in 2 groups: per group 2 -> 3 (m = 2, c = 2^{-1/2}).
    let y = b
        .conv(
            "g",
            x,
            "g.weight",
            w(vec![6, 2, 3, 3]),
            None,
            Window::same(1, 1),
            2,
        )
        .unwrap();
    // Depthwise 6 -> 6, bias 7s that must become zeros.
    let bias = ("dw.bias", ConstTensor::f32(vec![6], vec![7.0; 6]));
    let y = b
        .conv(
            "dw",
            y,
            "dw.weight",
            w(vec![6, 1, 3, 3]),
            Some(bias),
            Window::same(1, 1),
            6,
        )
        .unwrap();
    // Even 2x2 kernel, 6 -> 6: the identity at tap (1, 1).
    let y = b
        .conv(
            "ev",
            y,
            "ev.weight",
            w(vec![6, 6, 2, 2]),
            None,
            Window::same(1, 0),
            1,
        )
        .unwrap();
    b.output(y);
    let net = b.finish().unwrap();
    let growing = maskforge::init::Scheme::Zero(maskforge::init::zero::Orientation::Growing);
    let r = maskforge::init::reinitialise(&net, growing).unwrap();
    let get = |n: &str| r.network.params.get(n).unwrap().to_f32().unwrap();

    let c = std::f32::consts::FRAC_1_SQRT_2;
    let block = [[c, c], [c, -c], [c, c]];
    let g = get("g.weight");
    for o in 0..6 {
        for i in 0..2 {
            for tap in 0..9 {
                let want = if tap == 4 { block[o % 3][i] } else { 0.0 };
                assert_eq!(g[(o * 2 + i) * 9 + tap], want, "g[{o}][{i}] tap {tap}");
            }
        }
    }
    let dw = get("dw.weight");
    for o in 0..6 {
        for tap in 0..9 {
            assert_eq!(dw[o * 9 + tap], if tap == 4 { 1.0 } else { 0.0 });
        }
    }
    assert_eq!(get("dw.bias"), vec![0.0; 6]);
    let ev = get("ev.weight");
    for o in 0..6 {
        for i in 0..6 {
            for tap in 0..4 {
                let want = if tap == 3 && o == i { 1.0 } else { 0.0 };
                assert_eq!(ev[(o * 6 + i) * 4 + tap], want, "ev[{o}][{i}] tap {tap}");
            }
        }
    }
    let groups: Vec<usize> = r.layers.iter().map(|l| l.groups).collect();
    assert_eq!(groups, vec![2, 6, 1]);
}

#[test]
fn kaiming_scheme_reproduces_the_zoo_weights_of_that_seed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k.safetensors");
    ok(&[
        "init",
        "zoo:lenet5",
        "--scheme",
        "kaiming",
        "--seed",
        "7",
        "-o",
        s(&out),
    ]);
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let zoo7 = maskforge::zoo::build("lenet5", 7).unwrap();
    let zoo8 = maskforge::zoo::build("lenet5", 8).unwrap();
    for l in &zoo7.layers {
        let (_, got) = f32s(&st, &l.name);
        assert_eq!(got, zoo7.params.get(&l.name).unwrap().to_f32().unwrap());
        assert_ne!(got, zoo8.params.get(&l.name).unwrap().to_f32().unwrap());
    }
}

/// x [N, 4] -> MatMul W1 (stored [in, out] = [4, 6]) -> Relu -> MatMul W2 ([6, 3]).
/// [`matmul_mlp`] written into `dir` and initialised with `scheme`; the
/// output file.
fn init_matmul_mlp(dir: &Path, scheme: &str) -> std::path::PathBuf {
    let src = dir.join("mm.onnx");
    matmul_mlp(&src);
    let out = dir.join("mm-zero.onnx");
    ok(&["init", s(&src), "--scheme", scheme, "-o", s(&out)]);
    out
}

fn matmul_mlp(path: &Path) {
    use tensor_shape_proto::{dimension::Value, Dimension};
    let vi = |name: &str, width: i64| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: vec![
                        Dimension {
                            value: Some(Value::DimParam("N".into())),
                            ..Default::default()
                        },
                        Dimension {
                            value: Some(Value::DimValue(width)),
                            ..Default::default()
                        },
                    ],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let node = |op: &str, inputs: &[&str], out: &str| NodeProto {
        op_type: op.into(),
        name: out.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        ..Default::default()
    };
    let w1: Vec<f32> = (0..24).map(|k| k as f32 * 0.1 - 1.0).collect();
    let w2: Vec<f32> = (0..18).map(|k| 0.5 - k as f32 * 0.05).collect();
    let graph = GraphProto {
        name: "matmul-mlp".into(),
        node: vec![
            node("MatMul", &["x", "W1"], "h"),
            node("Relu", &["h"], "a"),
            node("MatMul", &["a", "W2"], "y"),
        ],
        initializer: vec![
            maskforge::io::onnx::encode_f32("W1", &[4, 6], &w1),
            maskforge::io::onnx::encode_f32("W2", &[6, 3], &w2),
        ],
        input: vec![vi("x", 4)],
        output: vec![vi("y", 3)],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(graph),
        ..Default::default()
    };
    std::fs::write(path, prost::Message::encode_to_vec(&model)).unwrap();
}

fn onnx_initializer(path: &Path, name: &str) -> (Vec<i64>, Vec<f32>) {
    let m = maskforge::io::onnx::decode_file(path).unwrap();
    let t = m
        .graph
        .unwrap()
        .initializer
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("{name} missing"));
    assert_eq!(t.data_type, 1, "{name} is float");
    let v = t
        .raw_data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (t.dims, v)
}

fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols * rows)
        .map(|k| v[(k % rows) * cols + k / rows])
        .collect()
}

fn ort_setup() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let st = Command::new("bash")
        .arg(root.join("scripts/setup.sh"))
        .arg("ort")
        .status()
        .unwrap();
    assert!(st.success(), "scripts/setup.sh ort failed");
}

/// Seeded inputs in [-1, 1).
fn inputs(n: usize, seed: u64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect()
}

#[test]
fn onnx_matmul_weights_are_rewritten_in_their_stored_layout_and_run() {
    ort_setup();
    let dir = tempfile::tempdir().unwrap();
    let out = init_matmul_mlp(dir.path(), "zero-growing");
    // Growing orientation. W1: canonical [6, 4] grows (m = 3, c = 1/2), stored transposed [4, 6].
    let w1 = scaled_hadamard_block(3, 6, 4);
    assert_eq!(
        onnx_initializer(&out, "W1"),
        (vec![4, 6], transpose(&w1, 6, 4))
    );
    // W2: canonical [3, 6] shrinks, stored [6, 3].
    assert_eq!(
        onnx_initializer(&out, "W2"),
        (vec![6, 3], transpose(&eye(3, 6), 3, 6))
    );
    // In onnxruntime: y = relu(W1c x)[0..3].
    let x = inputs(2 * 4, 3);
    let mut y = Vec::new();
    for xs in x.chunks(4) {
        let h: Vec<f32> = (0..3)
            .map(|o| (0..4).map(|i| w1[o * 4 + i] * xs[i]).sum::<f32>().max(0.0))
            .collect();
        y.extend(h);
    }
    common::ort_check(&out, &x, &[2, 4], Some(&y));

    // A Gemm bias in an ONNX file is zeroed in place.
    let mut b = NetworkBuilder::new("biased");
    let xin = b.input("x", vec![3]).unwrap();
    let w = ConstTensor::f32(vec![2, 3], vec![0.25; 6]);
    let bias = ("fc.bias", ConstTensor::f32(vec![2], vec![7.0, -7.0]));
    let y = b.dense("fc", xin, "fc.weight", w, Some(bias)).unwrap();
    b.output(y);
    let biased = dir.path().join("biased.onnx");
    let proto = maskforge::io::onnx::writer::to_proto(&b.finish().unwrap()).unwrap();
    std::fs::write(&biased, maskforge::io::onnx::writer::encode(&proto)).unwrap();
    let unbiased = dir.path().join("unbiased.onnx");
    ok(&[
        "init",
        s(&biased),
        "--scheme",
        "zero-growing",
        "-o",
        s(&unbiased),
    ]);
    assert_eq!(onnx_initializer(&biased, "fc.bias").1, vec![7.0, -7.0]);
    assert_eq!(
        onnx_initializer(&unbiased, "fc.bias"),
        (vec![2], vec![0.0; 2])
    );
    assert_eq!(onnx_initializer(&unbiased, "fc.weight").1, eye(2, 3));

    // Kaiming from the same ONNX: the zoo's canonical stream, stored transposed.
    let k = dir.path().join("mm-kaiming.safetensors");
    ok(&[
        "init",
        s(&dir.path().join("mm.onnx")),
        "--scheme",
        "kaiming",
        "--seed",
        "2",
        "-o",
        s(&k),
    ]);
    let bytes = std::fs::read(&k).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let key = maskforge::rng::stream_key(2, "kaiming", "W1");
    let canon = maskforge::rng::normal_vec(key, (2.0f32 / 4.0).sqrt(), 24);
    assert_eq!(f32s(&st, "W1"), (vec![4, 6], transpose(&canon, 6, 4)));
}

/// LeNet-300-100 under `zero-growing` computes `relu(x)[0..10]`: every layer
/// shrinks, so passes its first outputs through, biases are zero, and the
/// head has no ReLU after it.
fn lenet300_zero_growing_output(x: &[f32]) -> Vec<f32> {
    x.chunks(784)
        .flat_map(|s| s[..10].iter().map(|v| v.max(0.0)))
        .collect()
}

#[test]
fn zero_growing_onnx_files_run_in_onnxruntime_to_the_outputs_algorithm_1_implies() {
    ort_setup();
    let dir = tempfile::tempdir().unwrap();
    let x = inputs(2 * 784, 11);

    // zoo export --init zero-growing.
    let exported = dir.path().join("lenet300-zero.onnx");
    ok(&[
        "zoo",
        "export",
        "lenet300",
        "--init",
        "zero-growing",
        "-o",
        s(&exported),
    ]);
    common::ort_check(
        &exported,
        &x,
        &[2, 1, 28, 28],
        Some(&lenet300_zero_growing_output(&x)),
    );

    // init of an ONNX model to .onnx: the same graph with new initializers.
    let kaiming = dir.path().join("lenet300.onnx");
    ok(&[
        "zoo",
        "export",
        "lenet300",
        "--seed",
        "4",
        "-o",
        s(&kaiming),
    ]);
    let patched = dir.path().join("lenet300-init.onnx");
    ok(&[
        "init",
        s(&kaiming),
        "--scheme",
        "zero-growing",
        "-o",
        s(&patched),
    ]);
    common::ort_check(
        &patched,
        &x,
        &[2, 1, 28, 28],
        Some(&lenet300_zero_growing_output(&x)),
    );
    let (a, b) = (
        maskforge::io::onnx::decode_file(&kaiming)
            .unwrap()
            .graph
            .unwrap(),
        maskforge::io::onnx::decode_file(&patched)
            .unwrap()
            .graph
            .unwrap(),
    );
    assert_eq!(a.node, b.node, "the graph's nodes are kept");

    // A conv model keeps running too, and reads back as ZerO weights.
    let l5 = dir.path().join("lenet5.onnx");
    ok(&["zoo", "export", "lenet5", "-o", s(&l5)]);
    let l5z = dir.path().join("lenet5-zero.onnx");
    ok(&["init", s(&l5), "--scheme", "zero-growing", "-o", s(&l5z)]);
    common::ort_check(&l5z, &inputs(2 * 784, 12), &[2, 1, 28, 28], None);
    let net = maskforge::io::onnx::read(&l5z).unwrap();
    let zoo = maskforge::zoo::build("lenet5", 0).unwrap();
    let growing = maskforge::init::Scheme::Zero(maskforge::init::zero::Orientation::Growing);
    let fresh = maskforge::init::reinitialise(&zoo, growing).unwrap();
    for l in &net.layers {
        assert_eq!(
            net.params.get(&l.name).unwrap().to_f32().unwrap(),
            fresh.network.params.get(&l.name).unwrap().to_f32().unwrap(),
            "{}",
            l.name
        );
    }
}

/// `y = W x` (optionally ReLU'd) per sample, `W` `[out, in]` row-major.
fn dense(w: &[f32], out: usize, inp: usize, x: &[f32], relu: bool) -> Vec<f32> {
    x.chunks(inp)
        .flat_map(|xs| {
            (0..out).map(move |o| {
                let y: f32 = (0..inp).map(|i| w[o * inp + i] * xs[i]).sum();
                if relu {
                    y.max(0.0)
                } else {
                    y
                }
            })
        })
        .collect()
}

/// LeNet-300-100 under the default `zero`: three c·H_m blocks, zero biases,
/// ReLU after the hidden layers, by plain matrix products.
fn lenet300_zero_output(x: &[f32]) -> Vec<f32> {
    let h1 = dense(&scaled_hadamard_block(10, 300, 784), 300, 784, x, true);
    let h2 = dense(&scaled_hadamard_block(9, 100, 300), 100, 300, &h1, true);
    dense(&scaled_hadamard_block(7, 10, 100), 10, 100, &h2, false)
}

#[test]
fn default_zero_onnx_files_run_in_onnxruntime_to_plain_matrix_products() {
    ort_setup();
    let dir = tempfile::tempdir().unwrap();
    let x = inputs(2 * 784, 13);
    let want = lenet300_zero_output(&x);
    assert_ne!(want, lenet300_zero_growing_output(&x));

    // zoo export --init zero.
    let exported = dir.path().join("lenet300-zero.onnx");
    ok(&[
        "zoo",
        "export",
        "lenet300",
        "--init",
        "zero",
        "-o",
        s(&exported),
    ]);
    common::ort_check(&exported, &x, &[2, 1, 28, 28], Some(&want));

    // init of an ONNX model to .onnx.
    let kaiming = dir.path().join("lenet300.onnx");
    ok(&["zoo", "export", "lenet300", "-o", s(&kaiming)]);
    let patched = dir.path().join("lenet300-init.onnx");
    ok(&["init", s(&kaiming), "--scheme", "zero", "-o", s(&patched)]);
    common::ort_check(&patched, &x, &[2, 1, 28, 28], Some(&want));

    // MatMul weights stored [in, out]: W1 (4 -> 6) grows, partial identity;
    // W2 (6 -> 3) shrinks, m = ceil(log2 6) = 3, c = 1/2. The pipeline paper's
    // [in, out] kernel is exactly what the file stores: W2[i][o] = c·H_3[i][o].
    let out = init_matmul_mlp(dir.path(), "zero");
    let w2 = scaled_hadamard_block(3, 3, 6);
    assert_eq!(
        onnx_initializer(&out, "W1"),
        (vec![4, 6], transpose(&eye(6, 4), 6, 4))
    );
    assert_eq!(
        onnx_initializer(&out, "W2"),
        (vec![6, 3], transpose(&w2, 3, 6))
    );
    let h = kron_hadamard(3);
    let (_, stored) = onnx_initializer(&out, "W2");
    for i in 0..6 {
        for o in 0..3 {
            assert_eq!(stored[i * 3 + o], 0.5 * h[i * 8 + o], "W2[{i}][{o}]");
        }
    }
    let xm = inputs(2 * 4, 5);
    let a = dense(&eye(6, 4), 6, 4, &xm, true);
    common::ort_check(&out, &xm, &[2, 4], Some(&dense(&w2, 3, 6, &a, false)));
}

fn f16_bits(st: &SafeTensors, name: &str) -> Vec<u16> {
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), Dtype::F16, "{name} keeps the source dtype");
    t.data()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

#[test]
fn half_precision_checkpoints_keep_their_dtype() {
    let dir = tempfile::tempdir().unwrap();
    // A 2 -> 4 -> 4 MLP checkpoint in f16 (values arbitrary: 0x4400 = 4.0).
    let mk = |shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        (shape, [0x00u8, 0x44].repeat(n))
    };
    let tensors = [
        ("fc1.weight", mk(vec![4, 2])),
        ("fc1.bias", mk(vec![4])),
        ("fc2.weight", mk(vec![4, 4])),
        ("fc2.bias", mk(vec![4])),
    ];
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, (shape, data))| {
            let v = safetensors::tensor::TensorView::new(Dtype::F16, shape.clone(), data).unwrap();
            (n.to_string(), v)
        })
        .collect();
    let ckpt = dir.path().join("half.safetensors");
    std::fs::write(&ckpt, safetensors::serialize(views, None).unwrap()).unwrap();
    let out = dir.path().join("half-zero.safetensors");
    ok(&[
        "init",
        s(&ckpt),
        "--arch",
        "zoo:mlp:2-4-4",
        "--scheme",
        "zero-growing",
        "-o",
        s(&out),
    ]);
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    // Growing orientation. fc1 grows 2 -> 4: 2^{-1/2} rounds to the f16 0x39a8 (0.70703125).
    let (p, n) = (0x39a8u16, 0xb9a8u16);
    assert_eq!(f16_bits(&st, "fc1.weight"), vec![p, p, p, n, p, p, p, n]);
    let one = 0x3c00u16;
    let id: Vec<u16> = (0..16).map(|k| if k % 5 == 0 { one } else { 0 }).collect();
    assert_eq!(f16_bits(&st, "fc2.weight"), id);
    assert_eq!(f16_bits(&st, "fc1.bias"), vec![0; 4]);
}

#[test]
fn refuses_to_overwrite_its_input_or_guess_the_format() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.onnx");
    ok(&["zoo", "export", "mlp:4-3", "-o", s(&src)]);
    let before = std::fs::read(&src).unwrap();
    let one_line_error = |args: &[&str], needle: &str| {
        let out = maskforge(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{err}");
    };
    one_line_error(
        &["init", s(&src), "--scheme", "zero", "-o", s(&src)],
        "overwrite an input",
    );
    assert_eq!(std::fs::read(&src).unwrap(), before);
    let txt: PathBuf = dir.path().join("w.txt");
    one_line_error(
        &["init", s(&src), "--scheme", "zero", "-o", s(&txt)],
        ".safetensors or .onnx",
    );
    assert!(!txt.exists());
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no other file, no stray temporary file");
}
