//! Neuron pruning (OSSuM, norm, random) and `eval`: checked against the
//! paper's derivation, a physically smaller network, hand-computed
//! accuracies, and OSSuM's own experiment on real digits.

mod common;

use std::process::Command;

use candle_core::{DType, Device, Tensor};
use maskforge::autodiff::calibration::Calibration;
use maskforge::autodiff::executor::{Executor, Mode};
use maskforge::graph::tensor::ConstTensor;
use maskforge::graph::{Network, NetworkBuilder};
use maskforge::io::data::Dataset;
use maskforge::methods::neuron::ossum::{
    self, class_scores, combine, prune_neurons, NeuronMethod, Rank,
};
use maskforge::methods::neuron::{self, structured_masks};
use maskforge::report::eval::evaluate;
use maskforge::zoo;

fn bin(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_maskforge"))
        .args(args)
        .output()
        .unwrap()
}

/// The proof of Theorem 3.1: under the first-order approximations the loss
/// of a neuron subset S is `N(K-1) - sum_i (K o~_{y_i} - sum_k o~_k)`, and
/// the second term equals `sum_{j in S} score(j)` (Eq. 2). Check that
/// identity with logits computed by the executor on the masked network:
/// it ties the scores, the activations read and the structured masks.
#[test]
fn ossum_scores_sum_to_the_linearised_loss_term_of_the_kept_subset() {
    let net = zoo::build("mlp:12-16-4:tanh:uniform", 3).unwrap();
    let data = Dataset::load("synthetic:40", &[12], 4, 1).unwrap();
    let idx: Vec<usize> = (0..data.len()).collect();
    let cal = Calibration::from_dataset(&data, &idx, 16, &Device::Cpu).unwrap();
    let groups = neuron::groups(&net);
    assert_eq!(groups.len(), 1);
    // Per-class activation sums by hand (tanh of x W1^T, zero biases).
    let w1 = net.canonical_weights(0).unwrap();
    let w2: Vec<f64> = net
        .canonical_weights(1)
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect();
    let mut a = vec![0.0f64; 4 * 16];
    for i in 0..data.len() {
        let x = &data.x[i * 12..(i + 1) * 12];
        for j in 0..16 {
            let z: f64 = (0..12).map(|p| w1[j * 12 + p] as f64 * x[p] as f64).sum();
            a[data.y[i] as usize * 16 + j] += z.tanh();
        }
    }
    let scores = combine(Rank::Sum, &class_scores(&a, &w2, 4, 16, 1));
    // The library's scores: keep the top 5 by OSSuM...
    let out = prune_neurons(
        &net,
        &groups,
        NeuronMethod::Ossum {
            rank: Rank::Sum,
            deep: ossum::Deep::Norm,
        },
        &[5],
        Some(&cal),
        &Device::Cpu,
        0,
    )
    .unwrap();
    let top = neuron::keep_top(&scores, 5);
    assert_eq!(
        out.kept[0], top,
        "the hand-computed scores pick the same neurons"
    );
    // ...and for several subsets S, sum_{j in S} score(j) equals the
    // linearised term computed from the masked network's logits.
    let ex = Executor::new(&net, &Device::Cpu, DType::F64).unwrap();
    let x = Tensor::from_vec(data.x.clone(), (data.len(), 12), &Device::Cpu).unwrap();
    for keep in [
        top.clone(),
        (0..16).map(|j| j % 3 == 0).collect::<Vec<_>>(),
        vec![true; 16],
    ] {
        let masks = structured_masks(&net, &groups, std::slice::from_ref(&keep));
        let o: Vec<Vec<f64>> = ex
            .logits(&x, Some(&masks), Mode::Eval)
            .unwrap()
            .to_vec2()
            .unwrap();
        let term: f64 = o
            .iter()
            .zip(&data.y)
            .map(|(row, &y)| 4.0 * row[y as usize] - row.iter().sum::<f64>())
            .sum();
        let by_scores: f64 = (0..16).filter(|&j| keep[j]).map(|j| scores[j]).sum();
        assert!(
            (term - by_scores).abs() < 1e-4 * (1.0 + term.abs()),
            "{term} vs {by_scores}"
        );
    }
}

/// A masked network with pruned neurons computes exactly what the smaller
/// network built from the kept rows and columns computes.
#[test]
fn structured_masks_equal_the_physically_smaller_network() {
    let net = zoo::build("mlp:10-8-6-3:tanh:uniform", 5).unwrap();
    let groups = neuron::groups(&net);
    let keep = vec![
        vec![true, false, true, true, false, false, true, true],
        vec![false, true, true, false, true, false],
    ];
    let masks = structured_masks(&net, &groups, &keep);
    let small = smaller(&net, &keep);
    let data = Dataset::load("synthetic:7", &[10], 3, 2).unwrap();
    let x = Tensor::from_vec(data.x.clone(), (7, 10), &Device::Cpu).unwrap();
    let big = Executor::new(&net, &Device::Cpu, DType::F64).unwrap();
    let little = Executor::new(&small, &Device::Cpu, DType::F64).unwrap();
    let a: Vec<Vec<f64>> = big
        .forward(&x, Some(&masks), Mode::Eval)
        .unwrap()
        .to_vec2()
        .unwrap();
    let b: Vec<Vec<f64>> = little
        .forward(&x, None, Mode::Eval)
        .unwrap()
        .to_vec2()
        .unwrap();
    for (ra, rb) in a.iter().zip(&b) {
        for (p, q) in ra.iter().zip(rb) {
            assert!((p - q).abs() < 1e-9, "{p} vs {q}");
        }
    }
    // Weights kept: 5 rows of 10, 3 x 5 of the middle, 3 columns of the last.
    assert_eq!(masks.count_ones(), 5 * 10 + 3 * 5 + 3 * 3);
}

/// The MLP with only the kept neurons, its weights sliced from `net`.
fn smaller(net: &Network, keep: &[Vec<bool>]) -> Network {
    let mut b = NetworkBuilder::new("small");
    let mut x = b.input("x", vec![10]).unwrap();
    let mut prev: Vec<usize> = (0..10).collect();
    for li in 0..net.layers.len() {
        let w = net.canonical_weights(li).unwrap();
        let n_in = net.layers[li].shape[1];
        let rows: Vec<usize> = match keep.get(li) {
            Some(k) => (0..k.len()).filter(|&j| k[j]).collect(),
            None => (0..net.layers[li].shape[0]).collect(),
        };
        let vals: Vec<f32> = rows
            .iter()
            .flat_map(|&r| prev.iter().map(move |&c| (r, c)))
            .map(|(r, c)| w[r * n_in + c])
            .collect();
        let name = format!("fc{li}.weight");
        x = b
            .dense(
                &name,
                x,
                &name,
                ConstTensor::f32(vec![rows.len(), prev.len()], vals),
                None,
            )
            .unwrap();
        if li + 1 < net.layers.len() {
            x = b.activation(&format!("t{li}"), x, maskforge::graph::op::Activation::Tanh);
        }
        prev = rows;
    }
    b.output(x);
    b.finish().unwrap()
}

/// Accuracy and cross-entropy of a hand-made classifier: logits = x
/// (identity weights), so the prediction is the larger input.
#[test]
fn eval_counts_hits_and_mean_cross_entropy_by_hand() {
    let mut b = NetworkBuilder::new("id");
    let x = b.input("x", vec![2]).unwrap();
    let y = b
        .dense(
            "fc",
            x,
            "fc.weight",
            ConstTensor::f32(vec![2, 2], vec![1.0, 0.0, 0.0, 1.0]),
            None,
        )
        .unwrap();
    b.output(y);
    let net = b.finish().unwrap();
    let data = Dataset {
        shape: vec![2],
        x: vec![2.0, 0.0, 0.0, 1.0, 3.0, 1.0, 0.5, 0.5],
        y: vec![0, 1, 1, 0],
    };
    let r = evaluate(&net, None, &data, 3, &Device::Cpu).unwrap();
    // Predictions: 0, 1, 0, 0 (tie -> lower class): hits on samples 0, 1, 3.
    assert_eq!((r.samples, r.correct), (4, 3));
    let ce = |z: [f64; 2], y: usize| -(z[y] - (z[0].exp() + z[1].exp()).ln());
    let want =
        (ce([2.0, 0.0], 0) + ce([0.0, 1.0], 1) + ce([3.0, 1.0], 1) + ce([0.5, 0.5], 0)) / 4.0;
    assert!((r.loss - want).abs() < 1e-9, "{} vs {want}", r.loss);
    assert_eq!(r.class_accuracy, vec![Some(1.0), Some(0.5)]);
}

/// OSSuM's experiment at small scale (Sec. 4.2, Fig. 1, FC-1000 on MNIST):
/// 784-1000-10, tanh, uniform init, real digits (4 000 to score, 1 000 to
/// test); pruning hidden neurons at init by OSSuM beats random and
/// norm-based neuron pruning by a wide margin, which stay near chance.
#[test]
fn ossum_beats_random_and_norm_at_init_on_real_digits() {
    let net = zoo::build("mlp:784-1000-10:tanh:uniform", 0).unwrap();
    let mut data = Dataset::load(&common::mnist_csv(), &[784], 10, 0).unwrap();
    data.normalize(&[0.13066], &[0.30810]).unwrap();
    let train: Vec<usize> = (0..data.len()).filter(|i| i % 5 != 4).collect();
    let test_idx: Vec<usize> = (0..data.len()).filter(|i| i % 5 == 4).collect();
    let (tx, ty) = data.batch(&test_idx);
    let test = Dataset {
        shape: vec![784],
        x: tx,
        y: ty,
    };
    let cal = Calibration::from_dataset(&data, &train, 500, &Device::Cpu).unwrap();
    let groups = neuron::groups(&net);
    let acc = |method| {
        let out =
            prune_neurons(&net, &groups, method, &[100], Some(&cal), &Device::Cpu, 0).unwrap();
        evaluate(&net, Some(&out.masks), &test, 500, &Device::Cpu)
            .unwrap()
            .accuracy
    };
    let dense = evaluate(&net, None, &test, 500, &Device::Cpu)
        .unwrap()
        .accuracy;
    let o = acc(NeuronMethod::Ossum {
        rank: Rank::Sum,
        deep: ossum::Deep::Norm,
    });
    let n = acc(NeuronMethod::Norm);
    let r = acc(NeuronMethod::Random);
    eprintln!("dense {dense:.3} ossum {o:.3} norm {n:.3} random {r:.3}");
    assert!(dense < 0.2, "the full net at init is near chance: {dense}");
    assert!(o > 0.35, "OSSuM at 90 % neuron sparsity: {o}");
    assert!(
        o > n + 0.2 && o > r + 0.2,
        "ossum {o}, norm {n}, random {r}"
    );
}

#[test]
fn cli_ossum_reports_kept_neurons_and_writes_structured_masks() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.safetensors");
    let rep = dir.path().join("r.json");
    let o = bin(&[
        "prune",
        "zoo:mlp:20-12-6-3:tanh:uniform",
        "--method",
        "ossum",
        "--deep",
        "pab",
        "--widths",
        "5,2",
        "--data",
        "synthetic:60",
        "--samples-per-class",
        "0",
        "-o",
        m.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
    let ns = r["neurons"].as_array().unwrap();
    assert_eq!(ns.len(), 2);
    assert_eq!(ns[0]["kept"], 5);
    assert_eq!(ns[0]["scored_by"], "ossum-pab");
    assert_eq!(ns[1]["scored_by"], "ossum");
    assert_eq!(ns[1]["kept_indices"].as_array().unwrap().len(), 2);
    // Mask file: fc1 keeps exactly the reported rows.
    let net = zoo::build("mlp:20-12-6-3:tanh:uniform", 0).unwrap();
    let masks = maskforge::io::maskfile::read(&net, &m).unwrap();
    let rows: Vec<usize> = ns[0]["kept_indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    for j in 0..12 {
        let kept = (0..20).filter(|&p| masks.layers[0].get(j * 20 + p)).count();
        assert_eq!(kept, if rows.contains(&j) { 20 } else { 0 }, "row {j}");
    }
    assert_eq!(masks.count_ones(), 5 * 20 + 2 * 5 + 3 * 2);
    // eval of those masks runs and reports a fraction.
    let e = bin(&[
        "eval",
        "zoo:mlp:20-12-6-3:tanh:uniform",
        "--masks",
        m.to_str().unwrap(),
        "--data",
        "synthetic:30",
        "--json",
    ]);
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let v: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    assert_eq!(v["samples"], 30);
}

#[test]
fn neuron_methods_refuse_what_they_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.safetensors");
    let m = m.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["zoo:mlp:8-4-2", "--method", "ossum", "--sparsity", "0.5"],
            "--data",
        ),
        (
            &[
                "zoo:mlp:8-4-2",
                "--method",
                "neuron-norm",
                "--widths",
                "4,2",
            ],
            "2 widths but the model has 1",
        ),
        (
            &["zoo:mlp:8-4-2", "--method", "neuron-norm", "--widths", "9"],
            "cannot keep 9",
        ),
        (
            &[
                "zoo:mlp:8-4-2",
                "--method",
                "neuron-norm",
                "--sparsity",
                "0.5",
                "--effective",
            ],
            "--effective",
        ),
        (
            &[
                "zoo:mlp:8-2",
                "--method",
                "neuron-norm",
                "--sparsity",
                "0.5",
            ],
            "no hidden layer",
        ),
        (
            &[
                "zoo:resnet20",
                "--method",
                "ossum",
                "--sparsity",
                "0.5",
                "--data",
                "synthetic:10",
            ],
            "read directly by the output layer",
        ),
        (
            &["zoo:mlp:8-4-2", "--method", "rpi", "--widths", "2"],
            "--widths applies",
        ),
    ];
    for (args, want) in cases {
        let mut a = vec!["prune"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", m]);
        let o = bin(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!std::path::Path::new(m).exists());
    }
}

/// Norm-based pruning keeps the neurons with the largest incoming-weight
/// norms; random pruning is seeded and keeps the asked count.
#[test]
fn norm_and_random_baselines() {
    let net = zoo::build("mlp:30-20-5", 4).unwrap();
    let groups = neuron::groups(&net);
    let w = net.canonical_weights(0).unwrap();
    let norms: Vec<f64> = w
        .chunks(30)
        .map(|r| r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt())
        .collect();
    let mut order: Vec<usize> = (0..20).collect();
    order.sort_by(|&a, &b| norms[b].total_cmp(&norms[a]));
    let out = prune_neurons(
        &net,
        &groups,
        NeuronMethod::Norm,
        &[6],
        None,
        &Device::Cpu,
        0,
    )
    .unwrap();
    for (rank, &j) in order.iter().enumerate() {
        assert_eq!(out.kept[0][j], rank < 6, "neuron {j} of norm rank {rank}");
    }
    let random = |seed| {
        prune_neurons(
            &net,
            &groups,
            NeuronMethod::Random,
            &[6],
            None,
            &Device::Cpu,
            seed,
        )
        .unwrap()
    };
    let r1 = random(9);
    let r2 = random(9);
    let r3 = random(10);
    assert_eq!(r1.kept, r2.kept);
    assert_ne!(r1.kept, r3.kept);
    assert_eq!(r1.kept[0].iter().filter(|&&k| k).count(), 6);
}
