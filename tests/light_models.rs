//! The real model-zoo graphs of the `onnx` wheel: every one reads, inspects
//! and audits, and on ZFNet-512 at 99.9 % random sparsity (where per-position
//! liveness matters) the graph method equals the float definition.

mod common;

use std::process::Command;

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

fn maskforge(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_maskforge"))
        .args(args)
        .output()
        .unwrap()
}

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
                // ConstantOfShape weights are 0.02 everywhere: nothing pruned, all active.
                assert_eq!(v["kept"], v["total"], "{m}");
                assert_eq!(v["active"], v["total"], "{m}");
                assert!(v["total"].as_u64().unwrap() > 1_000_000, "{m}");
            } else {
                assert!(v["prunable_layers"].as_u64().unwrap() >= 5, "{m}");
            }
        }
    }
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
