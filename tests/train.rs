//! `maskforge train` and the training library: a step against finite
//! differences, pruned weights exactly 0 in the file written, byte-identical
//! reruns, and LeNet-300-100 on real digits.

mod common;

use candle_core::{DType, Device, Tensor};
use maskforge::autodiff::executor::Executor;
use maskforge::graph::Network;
use maskforge::mask::MaskSet;
use maskforge::train::optim::Optimizer;
use maskforge::train::Trainer;
use maskforge::zoo;
use rand::{Rng, SeedableRng};
use safetensors::SafeTensors;

use common::{maskforge_ok, mnist_split, random_biases, s};

/// One SGD step (no momentum, no decay) on `net` in f64 against
/// `w - lr * g` with `g` the central difference of the loss, on the
/// weight entries `pick(layer)` and every bias entry.
fn check_step(
    net: &Network,
    masks: Option<&MaskSet>,
    x: &Tensor,
    y: &[u32],
    pick: usize,
    pswish: Option<f64>,
) {
    let (lr, alpha, h) = (0.5, 0.1, 1e-6);
    let sgd = Optimizer::Sgd {
        momentum: 0.0,
        weight_decay: 0.0,
    };
    let mut t = Trainer::<f64>::new(net, masks, sgd).unwrap();
    let mut probe = Executor::new(net, &Device::Cpu, DType::F64).unwrap();
    t.ex.set_pswish(pswish);
    probe.set_pswish(pswish);
    let before: Vec<Vec<f64>> = net
        .layers
        .iter()
        .map(|l| t.values(&l.name).unwrap().to_vec())
        .collect();
    // The probe starts where the trainer does (pruned entries zeroed).
    for (li, w) in before.iter().enumerate() {
        let dims = probe.weights[li].dims().to_vec();
        probe.weights[li]
            .set(&Tensor::from_slice(w, dims, &Device::Cpu).unwrap())
            .unwrap();
    }
    t.step(x, y, lr, alpha).unwrap();
    let mut checked = 0;
    let mut worst = 0.0f64;
    for (li, l) in net.layers.iter().enumerate() {
        let after = t.values(&l.name).unwrap();
        let n = after.len();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(li as u64);
        for _ in 0..pick {
            let i = rng.random_range(0..n);
            let kept = masks.is_none_or(|m| m.layers[li].get(i));
            if !kept {
                assert_eq!(after[i], 0.0, "{} [{i}] pruned", l.name);
                continue;
            }
            let w0 = before[li][i];
            common::set_weight(&probe, li, i, w0 + h);
            let up = common::train_loss(&probe, masks, x, y, alpha);
            common::set_weight(&probe, li, i, w0 - h);
            let down = common::train_loss(&probe, masks, x, y, alpha);
            common::set_weight(&probe, li, i, w0);
            let want = w0 - lr * (up - down) / (2.0 * h);
            let err = (after[i] - want).abs();
            worst = worst.max(err);
            assert!(err < 1e-8, "{} [{i}]: {} vs {want}", l.name, after[i]);
            checked += 1;
        }
        let Some(b) = maskforge::init::bias_of(net, li) else {
            continue;
        };
        let b0: Vec<f64> = probe
            .parameter(&b)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let after = t.values(&b).unwrap();
        let dims = probe.parameter(&b).unwrap().dims().to_vec();
        for i in 0..b0.len() {
            let set = |probe: &mut Executor, v: f64| {
                let mut vals = b0.clone();
                vals[i] = v;
                let t = Tensor::from_vec(vals, dims.clone(), &Device::Cpu).unwrap();
                probe.set_parameter(&b, &t).unwrap();
            };
            set(&mut probe, b0[i] + h);
            let up = common::train_loss(&probe, masks, x, y, alpha);
            set(&mut probe, b0[i] - h);
            let down = common::train_loss(&probe, masks, x, y, alpha);
            set(&mut probe, b0[i]);
            let want = b0[i] - lr * (up - down) / (2.0 * h);
            let err = (after[i] - want).abs();
            worst = worst.max(err);
            assert!(err < 1e-8, "{b} [{i}]: {} vs {want}", after[i]);
            checked += 1;
        }
    }
    eprintln!(
        "{} (PSwish {pswish:?}): {checked} entries, worst |step - finite difference| {worst:.2e}",
        net.name
    );
}

fn batch(shape: &[usize], n: usize, classes: u32, seed: u64) -> (Tensor, Vec<u32>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let per: usize = shape.iter().product();
    let x: Vec<f64> = (0..n * per).map(|_| rng.random_range(-1.0..1.0)).collect();
    let y: Vec<u32> = (0..n).map(|_| rng.random_range(0..classes)).collect();
    let mut dims = vec![n];
    dims.extend(shape);
    (Tensor::from_vec(x, dims, &Device::Cpu).unwrap(), y)
}

#[test]
fn an_sgd_step_matches_finite_differences_of_the_loss() {
    let mlp = random_biases(zoo::build("mlp:6-8-5-3", 0).unwrap(), 1);
    let (x, y) = batch(&[6], 7, 3, 2);
    let (x_mlp, y_mlp) = (x.clone(), y.clone());
    check_step(&mlp, None, &x, &y, 12, None);
    // Masked: pruned entries stay 0, kept ones follow the masked loss.
    let masks = common::random_masks(&mlp, 0.6, 3);
    check_step(&mlp, Some(&masks), &x, &y, 12, None);
    // Convolutions with their fused bias and ReLU, max pools.
    let lenet5 = random_biases(zoo::build("lenet5", 0).unwrap(), 4);
    let (x, y) = batch(&[1, 28, 28], 3, 10, 5);
    let masks = common::random_masks(&lenet5, 0.5, 6);
    check_step(&lenet5, Some(&masks), &x, &y, 6, None);
    // Every ReLU as PSwish (the conv no longer absorbs it).
    check_step(&lenet5, Some(&masks), &x, &y, 6, Some(2.0));
    check_step(&mlp, None, &x_mlp, &y_mlp, 12, Some(0.5));
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every F32 tensor of a safetensors file.
fn tensors(path: &std::path::Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    common::tensors(path)
        .into_iter()
        .map(|(n, dtype, shape, v)| {
            assert_eq!(dtype, safetensors::Dtype::F32, "{n}");
            (n, shape, v)
        })
        .collect()
}

#[test]
fn masked_training_keeps_pruned_weights_at_exactly_zero_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (train, _) = mnist_split(dir.path());
    let masks = dir.path().join("m.safetensors");
    let out = dir.path().join("t.safetensors");
    maskforge_ok(&[
        "prune",
        "zoo:lenet300",
        "--method",
        "rpi",
        "--quota",
        "erk",
        "--compression",
        "10",
        "--keep-inactive",
        "-o",
        s(&masks),
    ]);
    // SGD with momentum and weight decay: the terms that would move a
    // pruned weight if its gradient and state were not forced to 0.
    maskforge_ok(&[
        "train",
        "zoo:lenet300",
        "--masks",
        s(&masks),
        "--data",
        &train,
        "--epochs",
        "1",
        "--optimizer",
        "sgd",
        "--lr",
        "0.05",
        "--weight-decay",
        "5e-4",
        "-o",
        s(&out),
    ]);
    let mbytes = std::fs::read(&masks).unwrap();
    let mfile = SafeTensors::deserialize(&mbytes).unwrap();
    let trained = tensors(&out);
    let init = zoo::build("lenet300", 0).unwrap();
    let mut names: Vec<&str> = trained.iter().map(|t| t.0.as_str()).collect();
    names.sort();
    let mut want: Vec<&str> = init.params.iter().map(|(n, _)| n.as_str()).collect();
    want.sort();
    assert_eq!(names, want, "the source's tensor names");
    let (mut pruned, mut kept_moved) = (0, 0);
    for l in &init.layers {
        let (_, shape, w) = trained.iter().find(|t| t.0 == l.name).unwrap();
        assert_eq!(shape, &init.params.get(&l.name).unwrap().shape);
        let m = mfile.tensor(&l.name).unwrap();
        let w0 = init.params.get(&l.name).unwrap().to_f32().unwrap();
        for (i, (&v, &k)) in w.iter().zip(m.data()).enumerate() {
            if k == 0 {
                assert_eq!(v.to_bits(), 0, "{} [{i}] pruned but {v}", l.name);
                pruned += 1;
            } else if v != w0[i] {
                kept_moved += 1;
            }
        }
    }
    eprintln!("{pruned} pruned weights all 0.0; {kept_moved} kept weights trained");
    assert!(pruned > 200_000 && kept_moved > 20_000);
}

#[test]
fn the_same_seed_gives_byte_identical_weights_and_another_seed_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (train, _) = mnist_split(dir.path());
    // A safetensors source, whose weights do not depend on --seed: only
    // the batch order does.
    let init = dir.path().join("init.safetensors");
    maskforge_ok(&[
        "init",
        "zoo:lenet300",
        "--scheme",
        "kaiming",
        "-o",
        s(&init),
    ]);
    let run = |seed: &str, name: &str| {
        let out = dir.path().join(name);
        maskforge_ok(&[
            "train",
            s(&init),
            "--data",
            &train,
            "--epochs",
            "1",
            "--seed",
            seed,
            "-o",
            s(&out),
        ]);
        std::fs::read(out).unwrap()
    };
    let a = run("1", "a.safetensors");
    let b = run("1", "b.safetensors");
    let c = run("2", "c.safetensors");
    assert!(a == b, "same seed, different bytes");
    assert!(a != c, "another seed, the same bytes");
    // The source's names, shapes and dtype.
    let src = tensors(&init);
    let got = tensors(&dir.path().join("a.safetensors"));
    let layout = |t: &[(String, Vec<usize>, Vec<f32>)]| {
        t.iter()
            .map(|(n, s, _)| (n.clone(), s.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(layout(&src), layout(&got));
}

/// The bar: dense LeNet-300-100 with the default options reaches
/// 93 % on the 1 000 held-out digits; `eval` of the file written agrees.
#[test]
fn dense_lenet300_reaches_93_percent_on_held_out_digits_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = mnist_split(dir.path());
    let out = dir.path().join("lenet300.onnx");
    let start = std::time::Instant::now();
    let o = maskforge_ok(&[
        "train",
        "zoo:lenet300",
        "--data",
        &train,
        "--test",
        &test,
        "--json",
        "-o",
        s(&out),
    ]);
    let secs = start.elapsed().as_secs_f64();
    let r = json(&o);
    assert!(r["epochs"][0].get("pswish_beta").is_none());
    let last = r["epochs"].as_array().unwrap().last().unwrap().clone();
    let acc = last["held_out"]["accuracy"].as_f64().unwrap();
    eprintln!(
        "LeNet-300-100, {} epochs: test accuracy {acc:.4} in {secs:.1} s",
        r["epochs"].as_array().unwrap().len()
    );
    assert_eq!(r["train_samples"], 4000);
    assert_eq!(r["held_out_samples"], 1000);
    assert!(acc >= 0.93, "test accuracy {acc}");
    let e = json(&maskforge_ok(&["eval", s(&out), "--data", &test, "--json"]));
    let eacc = e["accuracy"].as_f64().unwrap();
    assert!(
        (eacc - acc).abs() < 1e-12,
        "eval of the file: {eacc} vs {acc}"
    );
}

#[test]
fn pswish_label_smoothing_and_step_schedule_follow_their_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.safetensors");
    let r = json(&maskforge_ok(&[
        "train",
        "zoo:mlp:784-30-10",
        "--data",
        "synthetic:64",
        "--val-fraction",
        "0.25",
        "--epochs",
        "4",
        "--optimizer",
        "sgd",
        "--lr",
        "0.1",
        "--schedule",
        "step",
        "--milestones",
        "2,3",
        "--label-smoothing",
        "0.2",
        "--smoothing-epochs",
        "2",
        "--activation",
        "pswish",
        "--beta0",
        "1",
        "--beta-max",
        "5",
        "--json",
        "-o",
        s(&out),
    ]));
    let col = |k: &str| -> Vec<f64> {
        r["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e[k].as_f64().unwrap())
            .collect()
    };
    assert_eq!(col("pswish_beta"), [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(col("label_smoothing"), [0.2, 0.1, 0.0, 0.0]);
    let lr = col("lr");
    assert!((lr[0] - 0.1).abs() < 1e-15 && (lr[1] - 0.1).abs() < 1e-15);
    assert!((lr[2] - 0.01).abs() < 1e-15 && (lr[3] - 0.001).abs() < 1e-15);
    assert_eq!(r["train_samples"], 48);
    assert_eq!(r["held_out_samples"], 16);
    assert_eq!(r["held_out"], "validation");
}

/// An ONNX source keeps its graph: the trained initializers are patched
/// in, and `eval` of the file reproduces the run's last held-out figures.
#[test]
fn an_onnx_source_is_written_back_with_its_trained_initializers() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = mnist_split(dir.path());
    let src = dir.path().join("m.onnx");
    let out = dir.path().join("t.onnx");
    maskforge_ok(&["zoo", "export", "lenet300", "-o", s(&src)]);
    let r = json(&maskforge_ok(&[
        "train",
        s(&src),
        "--data",
        &train,
        "--test",
        &test,
        "--epochs",
        "1",
        "--json",
        "-o",
        s(&out),
    ]));
    let held = &r["epochs"][0]["held_out"];
    let e = json(&maskforge_ok(&["eval", s(&out), "--data", &test, "--json"]));
    assert_eq!(e["accuracy"], held["accuracy"]);
    assert!((e["loss"].as_f64().unwrap() - held["loss"].as_f64().unwrap()).abs() < 1e-9);
    let before = json(&maskforge_ok(&["eval", s(&src), "--data", &test, "--json"]));
    assert!(
        before["accuracy"].as_f64().unwrap() < 0.5,
        "untrained: {}",
        before["accuracy"]
    );
}
