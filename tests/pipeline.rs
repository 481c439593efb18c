//! The end-to-end pipeline (`maskforge pipeline`, `train --learn-mask`):
//! a mask-learning step against finite differences through the draw, the
//! regulariser driving every weight to exactly 0, the one command against
//! its four steps run by hand, and the learned mask against vanilla
//! magnitude pruning on real digits.

mod common;

use candle_core::{DType, Device, Tensor};
use maskforge::autodiff::executor::Executor;
use maskforge::train::mask_learning::{sample, MaskLearning};
use maskforge::train::optim::Optimizer;
use maskforge::train::Trainer;
use maskforge::zoo;
use rand::{Rng, SeedableRng};

use common::{maskforge, maskforge_ok, mnist_split, random_biases, s};

/// Every tensor of a safetensors file: name and values.
fn tensors(path: &std::path::Path) -> Vec<(String, Vec<f32>)> {
    common::tensors(path)
        .into_iter()
        .map(|(n, _, _, v)| (n, v))
        .collect()
}

/// One SGD step with mask learning against the paper's loss worked by
/// hand: the data term's gradient at the used weights `theta * m` by
/// central differences, passed straight through the draw `m`.
#[test]
fn a_mask_learning_step_matches_finite_differences_through_the_draw() {
    let net = random_biases(zoo::build("mlp:6-8-5-3", 0).unwrap(), 1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let x: Vec<f64> = (0..7 * 6).map(|_| rng.random_range(-1.0..1.0)).collect();
    let x = Tensor::from_vec(x, (7, 6), &Device::Cpu).unwrap();
    let y: Vec<u32> = (0..7).map(|_| rng.random_range(0..3)).collect();
    let (lr, h, seed) = (0.5, 1e-6, 11);
    let ml = MaskLearning {
        lambda1: 0.3,
        lambda2: 0.2,
        lr: 1.0,
    };
    let sgd = Optimizer::Sgd {
        momentum: 0.0,
        weight_decay: 0.0,
    };
    let mut t = Trainer::<f64>::new(&net, None, sgd).unwrap();
    // The step runs at the base rate: M moves at its own rate ml.lr.
    t.learn_mask(ml, seed, lr).unwrap();
    let theta: Vec<Vec<f64>> = net
        .layers
        .iter()
        .map(|l| t.values(&l.name).unwrap().to_vec())
        .collect();
    let draws: Vec<Vec<bool>> = net
        .layers
        .iter()
        .zip(&theta)
        .map(|(l, th)| sample(&vec![0.5f64; th.len()], seed, &l.name, 1))
        .collect();
    // The probe holds the weights the step uses: theta where drawn, else 0.
    let probe = Executor::new(&net, &Device::Cpu, DType::F64).unwrap();
    for (li, (th, m)) in theta.iter().zip(&draws).enumerate() {
        for (i, (&w, &k)) in th.iter().zip(m).enumerate() {
            common::set_weight(&probe, li, i, if k { w } else { 0.0 });
        }
    }
    t.step(&x, &y, lr, 0.0).unwrap();
    let (mut dropped, mut used) = (0, 0);
    for (li, l) in net.layers.iter().enumerate() {
        let after = t.values(&l.name).unwrap();
        let probs = t.mask_probabilities(li).unwrap();
        for i in 0..after.len() {
            let w = common::weight_at(&probe, li, i);
            common::set_weight(&probe, li, i, w + h);
            let up = common::train_loss(&probe, None, &x, &y, 0.0);
            common::set_weight(&probe, li, i, w - h);
            let down = common::train_loss(&probe, None, &x, &y, 0.0);
            common::set_weight(&probe, li, i, w);
            let g = (up - down) / (2.0 * h);
            let kept = draws[li][i];
            let want_theta = theta[li][i] - lr * g * if kept { 1.0 } else { 0.0 };
            // At M = 1/2 the lambda1 term's gradient 1 - 2M is 0.
            let want_m = (0.5 - ml.lr * (g * theta[li][i] + ml.lambda2)).clamp(0.0, 1.0);
            assert!(
                (after[i] - want_theta).abs() < 1e-8,
                "{} [{i}] theta: {} vs {want_theta}",
                l.name,
                after[i]
            );
            assert!(
                (probs[i] - want_m).abs() < 1e-8,
                "{} [{i}] M: {} vs {want_m}",
                l.name,
                probs[i]
            );
            // Between steps the network holds the expected weights.
            let held = common::weight_at(&t.ex, li, i);
            assert!((held - after[i] * probs[i]).abs() < 1e-12);
            if kept {
                used += 1;
            } else {
                dropped += 1;
            }
        }
    }
    assert!(dropped > 20 && used > 20, "{dropped} dropped, {used} used");
}

const NORM: [&str; 4] = ["--mean", "0.1307", "--std", "0.3081"];

#[test]
fn a_strong_push_to_zero_leaves_every_weight_exactly_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.safetensors");
    let mut args = vec![
        "train",
        "zoo:mlp:20-16-4",
        "--data",
        "synthetic:64",
        // 64 Adam steps of about rate x factor = 0.03 each: M crosses 1/2.
        "--epochs",
        "4",
        "--batch-size",
        "4",
        "--learn-mask",
        "--lambda1",
        "0",
        "--lambda2",
        "10",
        "-o",
        s(&out),
    ];
    args.extend(NORM);
    maskforge_ok(&args);
    let written = tensors(&out);
    let weights: Vec<_> = written
        .iter()
        .filter(|(n, _)| n.ends_with("weight"))
        .collect();
    assert_eq!(weights.len(), 2);
    for (n, v) in weights {
        assert!(v.iter().all(|&w| w == 0.0), "{n} keeps a nonzero weight");
    }
}

#[test]
fn lambda_flags_without_learn_mask_are_an_error() {
    let out = maskforge(&[
        "train",
        "zoo:lenet300",
        "--data",
        "synthetic:10",
        "--lambda2",
        "0.1",
        "-o",
        "/tmp/never-written.safetensors",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--learn-mask"), "{err}");
}

/// `pipeline` writes what `init`, `train --learn-mask`, `prune --method
/// magnitude` and `train --masks` write when run one by one, byte for
/// byte; the masks keep the target and the trained weights keep them.
#[test]
fn the_pipeline_command_equals_its_four_steps() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = mnist_split(dir.path());
    let p = dir.path().join("pipeline");
    let f = |n: &str| dir.path().join(n);
    let common_args = |v: &mut Vec<String>| {
        for a in [
            "--data", &train, "--test", &test, "--epochs", "1", "--seed", "3",
        ] {
            v.push(a.to_string());
        }
        v.extend(NORM.iter().map(|a| a.to_string()));
    };
    let run = |v: Vec<String>| {
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        maskforge_ok(&refs)
    };
    let mut one = vec![
        "pipeline",
        "zoo:lenet300",
        "--init",
        "zero",
        "--density",
        "0.02",
        "-o",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    one.push(s(&p).to_string());
    common_args(&mut one);
    run(one);
    maskforge_ok(&[
        "init",
        "zoo:lenet300",
        "--scheme",
        "zero",
        "-o",
        s(&f("init.safetensors")),
    ]);
    let mut pre = vec![
        "train".to_string(),
        s(&f("init.safetensors")).into(),
        "--arch".into(),
        "zoo:lenet300".into(),
        "--learn-mask".into(),
        "-o".into(),
        s(&f("pre.safetensors")).into(),
    ];
    common_args(&mut pre);
    run(pre);
    maskforge_ok(&[
        "prune",
        s(&f("pre.safetensors")),
        "--arch",
        "zoo:lenet300",
        "--method",
        "magnitude",
        "--density",
        "0.02",
        "--seed",
        "3",
        "-o",
        s(&f("masks.safetensors")),
    ]);
    let mut post = vec![
        "train".to_string(),
        s(&f("pre.safetensors")).into(),
        "--arch".into(),
        "zoo:lenet300".into(),
        "--masks".into(),
        s(&f("masks.safetensors")).into(),
        "-o".into(),
        s(&f("trained.safetensors")).into(),
    ];
    common_args(&mut post);
    run(post);
    for (ours, steps) in [
        ("init.safetensors", "init.safetensors"),
        ("pre-trained.safetensors", "pre.safetensors"),
        ("masks.safetensors", "masks.safetensors"),
        ("trained.safetensors", "trained.safetensors"),
    ] {
        let a = std::fs::read(p.join(ours)).unwrap();
        let b = std::fs::read(f(steps)).unwrap();
        assert!(a == b, "{ours} differs from the step-by-step {steps}");
    }
    let masks = tensors(&p.join("masks.safetensors"));
    let kept: f32 = masks.iter().map(|(_, v)| v.iter().sum::<f32>()).sum();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.join("pipeline.json")).unwrap()).unwrap();
    assert_eq!(summary["active"].as_u64().unwrap() as f32, kept);
    assert_eq!(summary["kept"], 5324); // N - int((1 - 0.02) N) of 266 200
    let trained = tensors(&p.join("trained.safetensors"));
    for (name, m) in &masks {
        let w = &trained.iter().find(|(n, _)| n == name).unwrap().1;
        for (i, (&k, &v)) in m.iter().zip(w).enumerate() {
            assert!(k == 1.0 || v == 0.0, "{name}[{i}] pruned but {v}");
        }
    }
}

/// The paper's main finding at small scale (Table 1, "+ Mask" against
/// "vanilla"): at 1 % density the learned mask trains to a far better
/// network than magnitude pruning of plainly trained weights.
#[test]
fn the_learned_mask_beats_vanilla_magnitude_pruning_at_one_percent() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = mnist_split(dir.path());
    let accuracy = |extra: &[&str], name: &str| -> f64 {
        let out_dir = dir.path().join(name);
        let mut args = vec![
            "pipeline",
            "zoo:lenet300",
            "--data",
            &train,
            "--test",
            &test,
            "--density",
            "0.01",
            "--epochs",
            "6",
            "--json",
            "-o",
            s(&out_dir),
        ];
        args.extend(NORM);
        args.extend(extra);
        let out = maskforge_ok(&args);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let log = v["post_training"].as_array().unwrap();
        log.last().unwrap()["held_out"]["accuracy"]
            .as_f64()
            .unwrap()
    };
    let learned = accuracy(&[], "learned");
    let vanilla = accuracy(&["--no-learn-mask"], "vanilla");
    eprintln!("1 % density: learned mask {learned:.3}, vanilla {vanilla:.3}");
    assert!(learned > 0.85, "learned mask {learned}");
    assert!(
        learned > vanilla + 0.05,
        "learned {learned} vs vanilla {vanilla}"
    );
}
