//! Wanda (issue #12, item 5) against a hand computation, and token ids as
//! calibration data for a Hugging Face text model.

mod common;

use std::sync::Arc;

use candle_core::{Device, Tensor};
use common::{maskforge_ok, root, s};
use maskforge::autodiff::calibration::Calibration;
use maskforge::graph::op::Activation;
use maskforge::graph::tensor::ConstTensor;
use maskforge::graph::NetworkBuilder;
use maskforge::methods::scored::{one_shot_scores, Context, Scorer};

/// x -> fc1 (3x4, bias) -> relu -> fc2 (2x3): the first layer's feature
/// norms are the data's, the second's those of relu(W1 x + b1), worked out
/// here without the executor.
#[test]
fn scores_are_weight_times_feature_norm_and_rows_compete_alone() {
    let w1: Vec<f32> = vec![
        0.5, -1.0, 0.2, 0.0, 1.5, 0.3, -0.7, 0.9, -0.2, 0.4, 1.1, -0.6,
    ];
    let b1: Vec<f32> = vec![0.1, -0.2, 0.3];
    let w2: Vec<f32> = vec![1.0, -2.0, 0.5, 0.25, 3.0, -1.0];
    let mut b = NetworkBuilder::new("two-layer");
    let x = b.input("x", vec![4]).unwrap();
    let h = b
        .dense(
            "fc1",
            x,
            "fc1.weight",
            ConstTensor::f32(vec![3, 4], w1.clone()),
            Some(("fc1.bias", ConstTensor::f32(vec![3], b1.clone()))),
        )
        .unwrap();
    let h = b.activation("relu", h, Activation::Relu);
    let y = b
        .dense(
            "fc2",
            h,
            "fc2.weight",
            ConstTensor::f32(vec![2, 3], w2.clone()),
            None,
        )
        .unwrap();
    b.output(y);
    let net = b.finish().unwrap();
    let data: Vec<f32> = vec![
        1.0, 2.0, -1.0, 0.5, -0.5, 1.0, 3.0, 2.0, 0.0, -1.0, 1.0, 1.0,
    ];
    let cal = Calibration {
        batches: vec![
            (
                Tensor::from_vec(data[..8].to_vec(), (2, 4), &Device::Cpu).unwrap(),
                Tensor::from_vec(vec![0u32, 1], 2, &Device::Cpu).unwrap(),
            ),
            (
                Tensor::from_vec(data[8..].to_vec(), (1, 4), &Device::Cpu).unwrap(),
                Tensor::from_vec(vec![0u32], 1, &Device::Cpu).unwrap(),
            ),
        ],
    };
    // By hand.
    let samples: Vec<&[f32]> = data.chunks(4).collect();
    let hidden: Vec<Vec<f64>> = samples
        .iter()
        .map(|x| {
            (0..3)
                .map(|o| {
                    let z: f64 = (0..4)
                        .map(|i| w1[o * 4 + i] as f64 * x[i] as f64)
                        .sum::<f64>()
                        + b1[o] as f64;
                    z.max(0.0)
                })
                .collect()
        })
        .collect();
    let norm = |f: &dyn Fn(usize) -> f64, n: usize| -> f64 {
        (0..n).map(|k| f(k) * f(k)).sum::<f64>().sqrt()
    };
    let n1: Vec<f64> = (0..4).map(|j| norm(&|k| samples[k][j] as f64, 3)).collect();
    let n2: Vec<f64> = (0..3).map(|j| norm(&|k| hidden[k][j], 3)).collect();
    let want1: Vec<f64> = (0..12).map(|e| (w1[e] as f64).abs() * n1[e % 4]).collect();
    let want2: Vec<f64> = (0..6).map(|e| (w2[e] as f64).abs() * n2[e % 3]).collect();

    let ctx = Context {
        calibration: Some(Arc::new(cal)),
        ..Context::default()
    };
    let got = one_shot_scores(&net, Scorer::Wanda, &ctx, &mut |_, _| {}).unwrap();
    for (g, w) in got.iter().zip([&want1, &want2]) {
        for (a, b) in g.iter().zip(w.iter()) {
            assert!((a - b).abs() < 1e-5 * b.max(1.0), "{g:?} vs {w:?}");
        }
    }
    // Per-row selection: 2 of each fc1 row; the global top 6 would differ.
    let kept = maskforge::methods::scored::wanda::keep_per_row(&[3, 2], &got, &[6, 2]).unwrap();
    for (row, chunk) in want1.chunks(4).enumerate() {
        let mut order: Vec<usize> = (0..4).collect();
        order.sort_by(|&a, &b| chunk[b].total_cmp(&chunk[a]));
        let mut top: Vec<usize> = order[..2].iter().map(|j| row * 4 + j).collect();
        top.sort();
        let ours: Vec<usize> = kept[0].ones().filter(|e| e / 4 == row).collect();
        assert_eq!(ours, top, "row {row}");
    }
    assert_eq!(kept[1].count_ones(), 2);
    assert_eq!(kept[1].ones().map(|e| e / 3).collect::<Vec<_>>(), [0, 1]);
}

/// On a Hugging Face folder with token ids: every output row of every
/// layer keeps the same share, and 2:4 conforms in every group.
#[test]
fn wanda_on_a_text_model_with_token_ids() {
    let dir = tempfile::tempdir().unwrap();
    let llama = root().join("fixtures/hf/llama");
    let out = dir.path().join("w.safetensors");
    maskforge_ok(&[
        "prune",
        s(&llama),
        "--method",
        "wanda",
        "--data",
        "synthetic-tokens:4:16",
        "--sparsity",
        "0.5",
        "--keep-inactive",
        "-o",
        s(&out),
    ]);
    for (name, _, shape, v) in common::tensors(&out) {
        let width = shape[1];
        // The LM head stays dense unless --include names it.
        let want = if name == "lm_head.weight" {
            width
        } else {
            width / 2
        };
        for row in v.chunks(width) {
            let kept = row.iter().filter(|&&b| b != 0.0).count();
            assert_eq!(kept, want, "{name}");
        }
    }
    let nm = dir.path().join("nm.safetensors");
    maskforge_ok(&[
        "prune",
        s(&llama),
        "--method",
        "wanda",
        "--data",
        "synthetic-tokens:4:16",
        "--pattern",
        "2:4",
        "-o",
        s(&nm),
    ]);
    let audit = maskforge_ok(&[
        "audit",
        s(&llama),
        "--masks",
        s(&nm),
        "--pattern",
        "2:4",
        "--json",
    ]);
    let j: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(j["pattern"]["conforms"], true, "{j}");
}

#[test]
fn token_data_of_the_wrong_length_or_vocabulary_is_refused() {
    let llama = root().join("fixtures/hf/llama");
    let out = common::maskforge(&[
        "prune",
        s(&llama),
        "--method",
        "snip",
        "--data",
        "synthetic-tokens:2:9",
        "--sparsity",
        "0.5",
        "-o",
        "/dev/null",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("input_ids=1x9"), "{err}");
}
