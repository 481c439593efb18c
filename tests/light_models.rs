//! The real model-zoo graphs of the `onnx` wheel: every one reads, inspects
//! and audits, and on ZFNet-512 at 99.9 % random sparsity (where per-position
//! liveness matters) the graph method equals the float definition.

mod common;
use common::maskforge;

use maskforge::analysis::effective::effective_masks;
use maskforge::analysis::oracle;

const MODELS: &[&str] = &[
    "light_bvlc_alexnet",
    "light_densenet121",
    "light_inception_v1",
    "light_inception_v2",
    "light_resnet50",
    "light_shufflenet",
    "light_squeezenet",
    "light_vgg19",
    "light_zfnet512",
];

#[test]
fn every_light_model_inspects_and_audits() {
    let dir = common::light_models_dir();
    for m in MODELS {
        let p = dir.join(format!("{m}.onnx"));
        let p = p.to_str().unwrap();
        for cmd in ["inspect", "audit"] {
            let out = maskforge(&[cmd, p, "--json"]);
            assert!(
                out.status.success(),
                "{cmd} {m}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if cmd == "audit" {
                // ConstantOfShape weights are 0.02 everywhere, so kept ==
                // total holds by construction; what must be right is which
                // tensors count as prunable weights and their sizes, counted
                // here from the raw protobuf.
                let want = weight_sizes(&dir.join(format!("{m}.onnx")));
                let total: u64 = want.values().sum();
                assert_eq!(v["total"].as_u64().unwrap(), total, "{m}: total");
                let layers = v["layers"].as_array().unwrap();
                assert_eq!(layers.len(), want.len(), "{m}: prunable layers");
                for l in layers {
                    let name = l["name"].as_str().unwrap();
                    assert_eq!(l["total"].as_u64(), want.get(name).copied(), "{m}: {name}");
                    // Dense: every weight is on an input-output path (no
                    // kernel tap reads only padding at these sizes), every
                    // output unit functional.
                    assert_eq!(l["active"], l["total"], "{m}: {name}");
                    assert_eq!(l["nodes"]["functional"], l["nodes"]["total"], "{m}: {name}");
                }
                assert_eq!(v["active"], v["total"], "{m}");
                assert_eq!(v["effective_nodes"], v["total_nodes"], "{m}");
                // The published weight counts (parameters less biases and BN).
                let published = match *m {
                    "light_bvlc_alexnet" => Some(60_954_656),
                    "light_vgg19" => Some(143_652_544),
                    "light_resnet50" => Some(25_502_912),
                    _ => None,
                };
                if let Some(p) = published {
                    assert_eq!(total, p, "{m}");
                }
            } else {
                assert!(v["prunable_layers"].as_u64().unwrap() >= 5, "{m}");
            }
        }
    }
}

/// Element counts of every Conv/Gemm/MatMul weight (second input) of an
/// ONNX file, from the raw protobuf: an initializer's dims, or the shape
/// a ConstantOfShape node is given (an initializer or a Constant node).
fn weight_sizes(path: &std::path::Path) -> std::collections::BTreeMap<String, u64> {
    let m = maskforge::io::onnx::decode_file(path).unwrap();
    let g = m.graph.unwrap();
    let ints = |t: &candle_onnx::onnx::TensorProto| -> Vec<i64> {
        if !t.int64_data.is_empty() {
            t.int64_data.clone()
        } else {
            t.raw_data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect()
        }
    };
    let constant = |name: &str| -> Option<Vec<i64>> {
        if let Some(t) = g.initializer.iter().find(|t| t.name == name) {
            return Some(ints(t));
        }
        let n = g.node.iter().find(|n| n.output.iter().any(|o| o == name))?;
        (n.op_type == "Constant").then(|| ints(n.attribute[0].t.as_ref().unwrap()))
    };
    let mut out = std::collections::BTreeMap::new();
    for n in g
        .node
        .iter()
        .filter(|n| ["Conv", "Gemm", "MatMul"].contains(&n.op_type.as_str()))
    {
        // Through data movement to the stored tensor (which names the weight).
        let mut w = n.input[1].clone();
        let dims: Vec<i64> = loop {
            if let Some(t) = g.initializer.iter().find(|t| t.name == w) {
                break t.dims.clone();
            }
            let p = g
                .node
                .iter()
                .find(|p| p.output.contains(&w))
                .unwrap_or_else(|| panic!("{w}: no producer"));
            match p.op_type.as_str() {
                "Reshape" | "Identity" | "Transpose" | "Cast" => w = p.input[0].clone(),
                "ConstantOfShape" => {
                    break constant(&p.input[0]).unwrap_or_else(|| panic!("{w}: shape"))
                }
                op => panic!("{w}: made by {op}"),
            }
        };
        out.insert(w, dims.iter().product::<i64>() as u64);
    }
    out
}

#[test]
fn position_level_exactness_on_real_graphs() {
    let dir = common::light_models_dir();
    for (m, density) in [
        ("light_zfnet512", 0.001),
        ("light_squeezenet", 0.02),
        ("light_shufflenet", 0.05),
    ] {
        let net = maskforge::io::onnx::read(&dir.join(format!("{m}.onnx"))).unwrap();
        let masks = common::random_masks(&net, density, 7);
        let graph = effective_masks(&net, &masks);
        let float = oracle::effective_masks(&net, &masks).unwrap();
        assert_eq!(graph, float, "{m}");
        assert!(
            graph.count_ones() < masks.count_ones(),
            "{m}: nothing inactive"
        );
    }
}

/// MiCA and RPI run on every real graph (Concat, grouped convs, channel
/// shuffles included) with exact counts, and MiCA leaves at least as many
/// weights functional as RPI with the same quota counts.
#[test]
fn random_family_runs_on_every_light_model() {
    use maskforge::methods::quota::{kept_counts, target_from_compression, Quota};
    use maskforge::methods::random::mica::MicaChoice;
    let dir = common::light_models_dir();
    for m in MODELS {
        let net = maskforge::io::onnx::read(&dir.join(format!("{m}.onnx"))).unwrap();
        let k = target_from_compression(net.prunable_count(), 100.0).unwrap();
        let counts = kept_counts(&net, &Quota::Igq, k).unwrap();
        let mica =
            maskforge::methods::random::mica::mica(&net, &counts, MicaChoice::Rand, 0).unwrap();
        let rpi = maskforge::methods::random::rpi::rpi(&net, &counts, 0);
        for (l, (a, b)) in mica.layers.iter().zip(&rpi.layers).enumerate() {
            assert_eq!(
                (a.count_ones(), b.count_ones()),
                (counts[l], counts[l]),
                "{m}"
            );
        }
        let fm = effective_masks(&net, &mica).count_ones();
        let fr = effective_masks(&net, &rpi).count_ones();
        assert!(fm >= fr, "{m}: MiCA {fm} functional < RPI {fr}");
    }
}

/// The dense audit above would pass with an audit that calls everything
/// active; with SqueezeNet's first conv (its only way in) masked out,
/// nothing may be active, while the other layers keep every weight.
#[test]
fn cutting_the_stem_of_a_real_graph_leaves_nothing_active() {
    use maskforge::io::maskfile::{self, MaskDType, Naming};
    let dir = common::light_models_dir();
    let model = dir.join("light_squeezenet.onnx");
    let net = maskforge::io::onnx::read(&model).unwrap();
    let mut masks = maskforge::mask::MaskSet::dense(&net);
    let stem = net.layers[0].numel();
    assert_eq!(net.layers[0].name, "conv1_w_0");
    masks.layers[0] = maskforge::bitset::BitSet::new(stem);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("m.safetensors");
    let bytes = maskfile::to_bytes(
        &net,
        &masks,
        MaskDType::Bool,
        Naming::Source,
        &Default::default(),
    )
    .unwrap();
    std::fs::write(&file, bytes).unwrap();
    let out = maskforge(&[
        "audit",
        model.to_str().unwrap(),
        "--masks",
        file.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let total = v["total"].as_u64().unwrap();
    assert_eq!(v["kept"].as_u64().unwrap(), total - stem as u64);
    assert_eq!(v["active"], 0);
    assert_eq!(v["effective_nodes"], 0);
}
