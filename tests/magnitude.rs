//! Magnitude and LAMP pruning of trained weights through the binary, checked
//! against independent computations on the same weights.

mod common;
use common::maskforge;

use maskforge::bitset::BitSet;
use maskforge::{io::maskfile, zoo};

fn prune(dir: &std::path::Path, args: &[&str]) -> maskforge::mask::MaskSet {
    let out = dir.join("m.safetensors");
    let mut all = vec!["prune"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--keep-inactive", "-o", out.to_str().unwrap()]);
    let o = maskforge(&all);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let net = zoo::build("lenet300", 0).unwrap();
    maskfile::read(&net, &out).unwrap()
}

fn weights(net: &maskforge::graph::Network) -> Vec<Vec<f32>> {
    net.layers
        .iter()
        .map(|l| net.params.get(&l.name).unwrap().to_f32().unwrap())
        .collect()
}

#[test]
fn global_magnitude_keeps_the_largest_weights_of_the_whole_net() {
    let dir = tempfile::tempdir().unwrap();
    let net = zoo::build("lenet300", 0).unwrap();
    let m = prune(
        dir.path(),
        &[
            "zoo:lenet300",
            "--method",
            "magnitude",
            "--compression",
            "10",
        ],
    );
    let w = weights(&net);
    let mut all: Vec<f32> = w.iter().flatten().map(|x| x.abs()).collect();
    all.sort_by(|a, b| b.total_cmp(a));
    let k = (266_200f64 / 10.0).round() as usize;
    let cut = all[k - 1];
    for (layer, bits) in w.iter().zip(&m.layers) {
        for (i, x) in layer.iter().enumerate() {
            assert_eq!(bits.get(i), x.abs() >= cut, "weight {x} vs cut {cut}");
        }
    }
    assert_eq!(m.count_ones(), k);
}

#[test]
fn per_layer_magnitude_follows_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let net = zoo::build("lenet300", 0).unwrap();
    let m = prune(
        dir.path(),
        &[
            "zoo:lenet300",
            "--method",
            "magnitude",
            "--scope",
            "layer",
            "--quota",
            "uniform",
            "--compression",
            "20",
        ],
    );
    let total = 266_200usize;
    let counts = maskforge::methods::quota::kept_counts(
        &net,
        &maskforge::methods::quota::Quota::Uniform,
        (total as f64 / 20.0).round() as usize,
    )
    .unwrap();
    for ((layer, bits), &k) in weights(&net).iter().zip(&m.layers).zip(&counts) {
        assert_eq!(bits.count_ones(), k);
        let mut v: Vec<f32> = layer.iter().map(|x| x.abs()).collect();
        v.sort_by(|a, b| b.total_cmp(a));
        for (i, x) in layer.iter().enumerate() {
            assert_eq!(bits.get(i), x.abs() >= v[k - 1]);
        }
    }
}

#[test]
fn lamp_keeps_every_layer_alive() {
    let dir = tempfile::tempdir().unwrap();
    let net = zoo::build("lenet300", 0).unwrap();
    // At 2000x a global magnitude cut empties the last layer's fan-in…
    let m = prune(
        dir.path(),
        &["zoo:lenet300", "--method", "lamp", "--compression", "2000"],
    );
    // …LAMP's top score is 1 in every layer, so each keeps its largest weight.
    for (layer, bits) in weights(&net).iter().zip(&m.layers) {
        let (imax, _) = layer
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap();
        assert!(bits.get(imax));
    }
    // The reference code's count: 266 200 - int((1 - 1/2000) 266 200) = 134
    // (round(266 200 / 2000) would be 133; src/methods/select.rs).
    assert_eq!(m.count_ones(), 134);
}

#[test]
fn pruned_weights_stay_pruned_and_nan_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let net = zoo::build("mlp:6-4-2", 0).unwrap();
    let mut tensors = Vec::new();
    for l in &net.layers {
        let mut v = net.params.get(&l.name).unwrap().to_f32().unwrap();
        for (i, x) in v.iter_mut().enumerate() {
            if i % 2 == 0 {
                *x = 0.0;
            }
        }
        tensors.push((l.name.clone(), l.shape.clone(), v));
    }
    let write = |p: &std::path::Path, t: &[(String, Vec<usize>, Vec<f32>)]| {
        let entries = t
            .iter()
            .map(|(n, s, v)| maskforge::io::stfile::Entry {
                name: n.clone(),
                dtype: "F32",
                shape: s.clone(),
                data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            })
            .collect();
        std::fs::write(
            p,
            maskforge::io::stfile::serialize(entries, &Default::default()),
        )
        .unwrap();
    };
    let ckpt = dir.path().join("c.safetensors");
    write(&ckpt, &tensors);
    // Keep 90 %: more than the nonzeros (50 %), yet no zero comes back.
    let out = dir.path().join("m.safetensors");
    let o = maskforge(&[
        "prune",
        ckpt.to_str().unwrap(),
        "--arch",
        "zoo:mlp:6-4-2",
        "--method",
        "magnitude",
        "--density",
        "0.9",
        "--keep-inactive",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = maskfile::read(&net, &out).unwrap();
    for (bits, (_, _, v)) in m.layers.iter().zip(&tensors) {
        assert_eq!(*bits, BitSet::from_fn(v.len(), |i| v[i] != 0.0));
    }
    tensors[0].2[1] = f32::NAN;
    write(&ckpt, &tensors);
    let o = maskforge(&[
        "prune",
        ckpt.to_str().unwrap(),
        "--arch",
        "zoo:mlp:6-4-2",
        "--method",
        "magnitude",
        "--density",
        "0.5",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("fc1.weight"));
}

#[test]
fn effective_magnitude_pruning_hits_the_target() {
    let net = zoo::build("lenet300", 0).unwrap();
    for method in [
        maskforge::methods::magnitude::Ranking::Magnitude,
        maskforge::methods::magnitude::Ranking::Lamp,
    ] {
        let spec = maskforge::methods::prune::PruneSpec {
            method: maskforge::methods::prune::Method::Ranked(
                method,
                maskforge::methods::select::Scope::Global,
            ),
            quota: maskforge::methods::quota::Quota::Uniform,
            target_kept: 266,
            seed: 0,
            effective: true,
        };
        let out = maskforge::methods::prune::prune(&net, &spec).unwrap();
        let achieved = out.effective().count_ones() as f64;
        assert!(
            (achieved - 266.0).abs() / 266.0 <= 0.01,
            "{method:?}: {achieved}"
        );
    }
}
