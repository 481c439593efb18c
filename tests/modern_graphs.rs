//! Issue #11: modern exported graphs (SiLU, hard-swish, squeeze-excite gates,
//! attention, LayerNorm, FPN upsampling, PRelu, transposed convolutions,
//! QDQ) read, audit, prune and score exactly.
//!
//! The graphs are the committed fixtures (exporter output at random init,
//! fixtures/make_fixtures.py) and trained models from PyPI wheels
//! (scripts/fetch-real-models.sh).

mod common;
use common::{maskforge_ok, s, Graph};
use maskforge::analysis::effective::analyse_sum_rule;

use std::collections::HashSet;

fn all_graphs() -> Vec<Graph> {
    let mut g = common::fixtures();
    g.extend(common::real_models());
    g
}

/// Prunable layers counted from the protobuf alone, by data flow: every
/// Conv, ConvTranspose and Gemm, and every MatMul of an activation by a
/// constant (a value computed from initializers and Constant nodes only).
fn weight_ops_in_protobuf(path: &std::path::Path) -> usize {
    let m = maskforge::io::onnx::decode_file(path).unwrap();
    let g = m.graph.unwrap();
    let mut constant: HashSet<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
    // Nodes are stored in dependency order by every exporter used here.
    for n in &g.node {
        if n.input
            .iter()
            .filter(|i| !i.is_empty())
            .all(|i| constant.contains(i))
        {
            constant.extend(n.output.iter().cloned());
        }
    }
    g.node
        .iter()
        .filter(|n| match n.op_type.as_str() {
            "Conv" | "ConvTranspose" | "Gemm" => true,
            "MatMul" => !constant.contains(&n.input[0]) && constant.contains(&n.input[1]),
            _ => false,
        })
        .count()
}

#[test]
fn every_graph_reads_with_each_weight_op_a_prunable_layer() {
    for g in all_graphs() {
        let m = g.load();
        assert_eq!(
            m.network.layers.len(),
            weight_ops_in_protobuf(&g.path),
            "{}: prunable layers",
            g.name
        );
        // The shape used is recorded as given.
        for (name, dims) in &g.shapes {
            let d: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
            let want = format!("{name}={}", d.join("x"));
            assert!(
                m.network.input_signature().split(';').any(|p| p == want),
                "{}: {} lacks {want}",
                g.name,
                m.network.input_signature()
            );
        }
    }
}

#[test]
fn qdq_weights_are_keyed_by_their_quantized_initializers() {
    let g = common::fixtures()
        .into_iter()
        .find(|g| g.name.contains("qdq"))
        .expect("a QDQ fixture");
    let m = g.load();
    let proto = maskforge::io::onnx::decode_file(&g.path).unwrap();
    let int8: HashSet<String> = proto
        .graph
        .unwrap()
        .initializer
        .iter()
        .filter(|t| t.data_type == 3 || t.data_type == 2)
        .map(|t| t.name.clone())
        .collect();
    for l in &m.network.layers {
        assert!(
            int8.contains(&l.name),
            "{} is not a quantized initializer",
            l.name
        );
    }
    // The float model it was quantized from has the same layers.
    let float = common::fixtures()
        .into_iter()
        .find(|f| format!("{}_qdq", f.name) == g.name)
        .expect("the float fixture")
        .load();
    assert_eq!(float.network.layers.len(), m.network.layers.len());
    for (a, b) in float.network.layers.iter().zip(&m.network.layers) {
        assert_eq!(a.stored_shape, b.stored_shape, "{} vs {}", a.name, b.name);
    }
}

#[test]
fn inspect_runs_on_every_fixture_from_the_binary() {
    for g in common::fixtures() {
        let mut args = vec![
            "inspect".to_string(),
            s(&g.path).to_string(),
            "--json".into(),
        ];
        args.extend(g.shape_args());
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = maskforge_ok(&a);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            v["prunable_layers"].as_u64().is_some_and(|l| l > 0),
            "{}",
            g.name
        );
    }
}

/// Graph method vs the float definition (CONVENTIONS: products of
/// activations count as the sum of their operands), bit for bit.
#[test]
fn graph_effective_masks_equal_the_float_definition_on_every_graph() {
    use maskforge::analysis::{effective, oracle};
    for g in all_graphs() {
        let net = g.load().network;
        for (k, density) in [0.5, 0.1, 0.01].into_iter().enumerate() {
            let masks = common::random_masks(&net, density, 7 + k as u64);
            let graph = effective::effective_masks(&net, &masks);
            let float = oracle::effective_masks(&net, &masks).unwrap();
            assert!(
                graph == float,
                "{} at density {density}: {}",
                g.name,
                common::describe(&net, &graph, &float)
            );
        }
    }
}

/// The executor's forward pass equals onnxruntime within 1e-4 on every
/// graph (the QDQ fixture's activations are quantized in onnxruntime, which
/// the executor skips, so it is compared through its float twin).
#[test]
fn executor_matches_onnxruntime_on_every_graph() {
    use candle_core::{DType, Device, Tensor};
    use maskforge::autodiff::executor::{Executor, Mode};
    use rand::{Rng, SeedableRng};
    common::setup_ort();
    for g in all_graphs().into_iter().filter(|g| !g.name.contains("qdq")) {
        let net = g.load().network;
        let mut shape = vec![1];
        shape.extend(&net.values[net.inputs[0]].shape);
        let n: usize = shape.iter().product();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let x: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        let xt = Tensor::from_vec(x.clone(), shape.clone(), &Device::Cpu).unwrap();
        let ex = Executor::new(&net, &Device::Cpu, DType::F32).unwrap();
        let y: Vec<f32> = ex
            .forward(&xt, None, Mode::Eval)
            .unwrap_or_else(|e| panic!("{}: {e}", g.name))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        common::ort_check(&g.path, &x, &shape, Some(&y));
    }
}

/// `--apply` on the QDQ model: onnxruntime runs it, and it equals the model
/// with the pruned int8 entries set to their zero point by hand.
#[test]
fn qdq_apply_prunes_to_the_zero_point() {
    common::setup_ort();
    let g = common::fixtures()
        .into_iter()
        .find(|g| g.name.contains("qdq"))
        .unwrap();
    prune_apply_and_check(&g, &["--method", "magnitude", "--compression", "4"]);
}

/// SNIP and SynFlow score a detector (YOLOv8: SiLU, C2f splits, FPN
/// upsampling, DFL softmax), a mobile net (hard-swish, SE gates) and a
/// transformer encoder (attention, LayerNorm, GELU) through the reverse pass;
/// the gradients of each new op are checked against finite differences in
/// tests/ops_gradients.rs. A detector's or encoder's output is no class
/// scores: SNIP then scores the label-free output energy, and says so.
#[test]
fn snip_and_synflow_run_on_detectors_mobile_nets_and_encoders() {
    for name in ["yolov8_tiny", "mobilenetv3_small", "bert_tiny_embeds"] {
        let g = common::fixtures()
            .into_iter()
            .find(|g| g.name == name)
            .unwrap();
        let total = g.load().network.prunable_count();
        let dir = tempfile::tempdir().unwrap();
        for (method, extra) in [
            ("snip", vec!["--data", "synthetic:4"]),
            (
                "synflow",
                vec!["--synflow-precision", "f64", "--rounds", "20"],
            ),
        ] {
            let (masks, report) = (dir.path().join("m.safetensors"), dir.path().join("r.json"));
            let mut args: Vec<String> =
                vec!["prune".into(), s(&g.path).into(), "--keep-inactive".into()];
            args.extend(g.shape_args());
            for a in [
                "--method",
                method,
                "--compression",
                "10",
                "-o",
                s(&masks),
                "--report",
                s(&report),
            ]
            .into_iter()
            .chain(extra)
            {
                args.push(a.to_string());
            }
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = maskforge_ok(&a);
            let r: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
            let kept = r["kept"].as_u64().unwrap() as usize;
            // The reference count: N - int(0.9 N), ties kept.
            assert!(
                kept >= total - (total as f64 * 0.9) as usize,
                "{name} {method}: {kept}"
            );
            assert!(kept <= total / 9, "{name} {method}: kept {kept} of {total}");
            let note = String::from_utf8_lossy(&out.stderr).contains("label-free");
            let classifier = name == "mobilenetv3_small";
            assert_eq!(
                note,
                method == "snip" && !classifier,
                "{name} {method}: note"
            );
            if method == "synflow" {
                // SynFlow keeps the network connected (its paper's point):
                // nearly all kept weights are active. (Whole parallel
                // branches may go: YOLO's lower-flow detection heads do.)
                // Its path norm reads a product as the sum of its operands,
                // so connected means: under the rule of a sum. With dead
                // factors BERT at random init (zero attention biases) can
                // lose everything: a value projection SynFlow prunes
                // entirely is 0, and so is its attention output, whatever
                // the queries and keys SynFlow kept.
                let net = g.load().network;
                let raw = maskforge::io::maskfile::read(&net, &masks).unwrap();
                assert_eq!(raw.count_ones(), kept, "{name}: the raw mask");
                let sum_rule = analyse_sum_rule(&net, &raw).active.count_ones() as f64;
                assert!(
                    sum_rule >= 0.99 * kept as f64,
                    "{name}: {sum_rule} of {kept} active under the rule of a sum"
                );
                let active = r["active"].as_u64().unwrap() as f64;
                if name != "bert_tiny_embeds" {
                    assert!(
                        active >= 0.99 * kept as f64,
                        "{name}: {active} of {kept} active"
                    );
                }
            }
        }
    }
}

/// A real model with a recurrent layer (Silero VAD from its wheel) is
/// refused with one line naming op and node, nothing written; a model with
/// operator-level quantization (ddddocr) likewise. (Control flow is checked
/// on an edited export in tests/bad_inputs.rs: Silero's If model also has a
/// scalar input, refused before its ops are read.)
#[test]
fn real_models_with_state_or_subgraphs_are_refused_by_name() {
    let dir = common::fetched_dir("fetch-real-models.sh");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.safetensors");
    for (file, shape, needles) in [
        (
            "silero_vad_16k_sequence.onnx",
            None,
            &["LSTM", "/recurrent/LSTM"][..],
        ),
        (
            "ddddocr_common_old.onnx",
            Some("input1=1x1x64x128"),
            &["DynamicQuantizeLinear", "QDQ"][..],
        ),
    ] {
        let path = dir.join(file);
        let mut args = vec!["audit", s(&path), "-o", s(&out)];
        if let Some(sh) = shape {
            args.extend(["--input-shape", sh]);
        }
        let o = common::maskforge(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{file}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{file}: {err}");
        for n in needles {
            assert!(err.contains(n), "{file}: {err} lacks {n}");
        }
        assert!(!out.exists(), "{file}: wrote a mask file");
    }
}

/// `--apply` on a trained model whose weights are Constant nodes (PP-OCR,
/// a PaddlePaddle export): onnxruntime runs the written model and it equals
/// the model with the pruned weights zeroed by hand.
#[test]
fn apply_on_a_model_with_constant_node_weights_runs_in_onnxruntime() {
    common::setup_ort();
    let g = common::real_models()
        .into_iter()
        .find(|g| g.name == "ch_PP-OCRv4_det_infer")
        .unwrap();
    let how = ["--method", "mica", "--quota", "erk", "--compression", "20"];
    prune_apply_and_check(&g, &how);
}

/// `prune G <how> -o masks --apply out.onnx`, then scripts/apply_check.py:
/// the written model runs in onnxruntime and equals `g` pruned by hand.
fn prune_apply_and_check(g: &Graph, how: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (masks, out) = (dir.path().join("m.safetensors"), dir.path().join("p.onnx"));
    let mut args: Vec<String> = vec!["prune".into(), s(&g.path).into()];
    args.extend(how.iter().map(|a| a.to_string()));
    args.extend(g.shape_args());
    for a in ["-o", s(&masks), "--apply", s(&out)] {
        args.push(a.to_string());
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    maskforge_ok(&a);
    let dims: Vec<String> = g.shapes[0].1.iter().map(|d| d.to_string()).collect();
    common::check(
        "apply_check",
        std::process::Command::new("python3")
            .arg(common::root().join("scripts/apply_check.py"))
            .args([s(&g.path), s(&masks), s(&out), &dims.join("x")])
            .output()
            .unwrap(),
    );
}
