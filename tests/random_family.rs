//! RPI and MiCA through the library and the binary: exact counts, functional
//! edges, effective pruning, determinism, masked models.

mod common;

use std::process::Command;

use maskforge::analysis::effective::effective_masks;
use maskforge::methods::prune::{prune, Method, PruneSpec};
use maskforge::methods::quota::{kept_counts, target_from_compression, Quota};
use maskforge::methods::random::mica::MicaChoice;
use maskforge::{methods::random::mica, zoo};

fn spec(method: Method, quota: Quota, kept: usize, effective: bool) -> PruneSpec {
    PruneSpec {
        method,
        quota,
        target_kept: kept,
        seed: 3,
        effective,
    }
}

/// MiCA keeps exactly e_l edges per layer and >= 99 % of them functional on
/// VGG-16 and ResNet-20 from 10^1 to 10^4.5 (ERK and IGQ), wherever every
/// layer's quota is at least its node requirement (one edge: a layer with none
/// disconnects the network whatever the placement). Every one of these
/// quotas is feasible (an error fails the test), and the cases where a
/// layer gets no edge are exactly the expected ones.
#[test]
fn mica_edges_are_exact_and_functional() {
    let mut zero_edge_cases = Vec::new();
    for model in ["vgg16", "resnet20"] {
        let net = zoo::build(model, 0).unwrap();
        let total = net.prunable_count();
        for quota in [Quota::Erk, Quota::Igq] {
            for step in 2..=9 {
                let c = 10f64.powf(step as f64 * 0.5);
                let k = target_from_compression(total, c).unwrap();
                let counts = kept_counts(&net, &quota, k)
                    .unwrap_or_else(|e| panic!("{model} {quota:?} 10^{}: {e}", step as f64 / 2.0));
                assert_eq!(counts.iter().sum::<usize>(), k, "{model} {quota:?}");
                let m = mica::mica(&net, &counts, MicaChoice::Rand, 1).unwrap();
                for (l, (b, &e)) in net.layers.iter().zip(m.layers.iter().zip(&counts)) {
                    assert_eq!(
                        b.count_ones(),
                        e,
                        "{model} {quota:?} 10^{}: {}",
                        step as f64 / 2.0,
                        l.name
                    );
                }
                let eff = effective_masks(&net, &m);
                let ratio = eff.count_ones() as f64 / m.count_ones() as f64;
                // The node requirement: a layer with no edge cuts the network
                // whatever the placement (the paper's special case).
                if counts.iter().all(|&e| e >= 1) {
                    assert!(
                        ratio >= 0.99,
                        "{model} {quota:?} 10^{}: functional {ratio}",
                        step as f64 / 2.0
                    );
                } else {
                    zero_edge_cases.push(format!("{model} {quota:?} {step}"));
                }
                let rpi = maskforge::methods::random::rpi::rpi(&net, &counts, 1);
                let rpi_ratio =
                    effective_masks(&net, &rpi).count_ones() as f64 / rpi.count_ones() as f64;
                assert!(
                    ratio >= rpi_ratio - 1e-9,
                    "{model} {quota:?}: MiCA {ratio} < RPI {rpi_ratio}"
                );
            }
        }
    }
    // Only ResNet-20 at 10^4.5 (9 weights for 22 layers) leaves a layer
    // without an edge, under either quota.
    assert_eq!(zero_edge_cases, ["resnet20 Erk 9", "resnet20 Igq 9"]);
}

/// Effective pruning lands within 1 % of the target effective compression.
#[test]
fn effective_pruning_hits_the_target() {
    for (model, c) in [
        ("lenet300", 100.0),
        ("lenet300", 1000.0),
        ("resnet20", 100.0),
        ("resnet20", 300.0),
    ] {
        let net = zoo::build(model, 0).unwrap();
        let total = net.prunable_count();
        let k = target_from_compression(total, c).unwrap();
        let out = prune(&net, &spec(Method::Rpi, Quota::Igq, k, true)).unwrap();
        let achieved = total as f64 / out.effective().count_ones() as f64;
        assert!(
            (achieved - c).abs() / c <= 0.01,
            "{model} {c}: effective compression {achieved}"
        );
        // It had to keep more than k weights to get there (RPI leaves inactive ones).
        assert!(out.raw.count_ones() >= k);
    }
}

#[test]
fn mica_handles_concat_and_depthwise_graphs() {
    use maskforge::graph::op::{PoolKind, Window};
    use maskforge::graph::tensor::ConstTensor;
    use maskforge::graph::NetworkBuilder;
    let w = |s: Vec<usize>| {
        let n = s.iter().product();
        ConstTensor::f32(s, vec![0.1; n])
    };
    let mut b = NetworkBuilder::new("cat-dw");
    let x = b.input("x", vec![3, 8, 8]).unwrap();
    let a = b
        .conv(
            "a",
            x,
            "wa",
            w(vec![16, 3, 3, 3]),
            None,
            Window::same(1, 1),
            1,
        )
        .unwrap();
    let c = b
        .conv(
            "c",
            x,
            "wc",
            w(vec![8, 3, 1, 1]),
            None,
            Window::same(1, 0),
            1,
        )
        .unwrap();
    let cat = b.concat("cat", &[a, c], 0).unwrap();
    let dw = b
        .conv(
            "dw",
            cat,
            "wdw",
            w(vec![24, 1, 3, 3]),
            None,
            Window::same(1, 1),
            24,
        )
        .unwrap();
    let pw = b
        .conv(
            "pw",
            dw,
            "wpw",
            w(vec![32, 24, 1, 1]),
            None,
            Window::same(1, 0),
            1,
        )
        .unwrap();
    let g = b.global_pool("g", pw, PoolKind::Avg).unwrap();
    let f = b.flatten("f", g);
    let y = b.dense("fc", f, "wfc", w(vec![10, 32]), None).unwrap();
    b.output(y);
    let net = b.finish().unwrap();
    for c in [3.0, 10.0, 30.0] {
        let k = target_from_compression(net.prunable_count(), c).unwrap();
        let counts = kept_counts(&net, &Quota::Igq, k).unwrap();
        let m = mica::mica(&net, &counts, MicaChoice::Rand, 0).unwrap();
        for (bits, &e) in m.layers.iter().zip(&counts) {
            assert_eq!(bits.count_ones(), e);
        }
        let eff = effective_masks(&net, &m);
        let rpi = maskforge::methods::random::rpi::rpi(&net, &counts, 0);
        assert!(
            eff.count_ones() >= effective_masks(&net, &rpi).count_ones(),
            "compression {c}"
        );
    }
}

fn maskforge(args: &[&str], threads: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_maskforge"))
        .args(args)
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .unwrap()
}

/// Same seed, byte-identical mask files, whatever the thread count.
#[test]
fn masks_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    for method in ["rpi", "mica"] {
        let mut files = Vec::new();
        for (i, threads) in ["1", "2", "1"].iter().enumerate() {
            let p = dir.path().join(format!("{method}{i}.safetensors"));
            let out = maskforge(
                &[
                    "prune",
                    "zoo:resnet20",
                    "--method",
                    method,
                    "--quota",
                    "igq",
                    "--compression",
                    "10^2.5",
                    "--seed",
                    "7",
                    "-o",
                    p.to_str().unwrap(),
                ],
                threads,
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            files.push(std::fs::read(&p).unwrap());
        }
        assert_eq!(files[0], files[1]);
        assert_eq!(files[0], files[2]);
        let other = dir.path().join("other.safetensors");
        maskforge(
            &[
                "prune",
                "zoo:resnet20",
                "--method",
                method,
                "--quota",
                "igq",
                "--compression",
                "10^2.5",
                "--seed",
                "8",
                "-o",
                other.to_str().unwrap(),
            ],
            "1",
        );
        assert_ne!(
            std::fs::read(other).unwrap(),
            files[0],
            "{method}: the seed changes nothing"
        );
    }
}

/// `--apply` writes an ONNX model that onnxruntime runs to the same output as
/// the dense model with the pruned weights zeroed by hand (in numpy).
#[test]
fn applied_masks_run_in_onnxruntime() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(Command::new("bash")
        .arg(root.join("scripts/setup.sh"))
        .arg("ort")
        .status()
        .unwrap()
        .success());
    let dir = tempfile::tempdir().unwrap();
    let dense = dir.path().join("dense.onnx");
    assert!(maskforge(
        &["zoo", "export", "lenet5", "-o", dense.to_str().unwrap()],
        "1"
    )
    .status
    .success());
    for (model, name) in [
        (dense.to_str().unwrap().to_string(), "exported"),
        ("zoo:lenet5".to_string(), "zoo"),
    ] {
        let masks = dir.path().join(format!("{name}.masks.safetensors"));
        let applied = dir.path().join(format!("{name}.masked.onnx"));
        let out = maskforge(
            &[
                "prune",
                &model,
                "--method",
                "mica",
                "--compression",
                "20",
                "--keep-inactive",
                "-o",
                masks.to_str().unwrap(),
                "--apply",
                applied.to_str().unwrap(),
            ],
            "1",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let check = Command::new("python3")
            .arg(root.join("scripts/apply_check.py"))
            .args([
                dense.to_str().unwrap(),
                masks.to_str().unwrap(),
                applied.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
}
