//! Issue #11: modern exported graphs (SiLU, hard-swish, squeeze-excite gates,
//! attention, LayerNorm, FPN upsampling, PRelu, transposed convolutions,
//! QDQ) read, audit, prune and score exactly.
//!
//! The graphs are the committed fixtures (exporter output at random init,
//! fixtures/make_fixtures.py) and trained models from PyPI wheels
//! (scripts/fetch-real-models.sh).

mod common;
use common::{maskforge_ok, s, Graph};

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
