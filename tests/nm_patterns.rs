//! N:M semi-structured masks (`prune --pattern`, `audit --pattern`): every
//! group of every written mask keeps exactly N, checked by regrouping the
//! written tensors here; magnitude keeps the N largest |w| of each group;
//! audit flags a checkpoint whose zeros break the pattern.

mod common;

use std::path::Path;

use common::{maskforge, maskforge_ok, s};

/// Every tensor of a safetensors file: name, shape, values as f32.
fn tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    common::tensors(path)
        .into_iter()
        .map(|(n, _, shape, v)| (n, shape, v))
        .collect()
}

/// Kept counts of every group of `m` along dimension 1 of a `[O, C, ...]`
/// tensor (taps fixed), or `None` when C is not a multiple of `m`.
fn group_counts(shape: &[usize], kept: &[f32], m: usize) -> Option<Vec<usize>> {
    let (o, c) = (shape[0], shape[1]);
    let taps: usize = shape[2..].iter().product();
    if c % m != 0 {
        return None;
    }
    let mut out = Vec::new();
    for oi in 0..o {
        for t in 0..taps {
            for g in 0..c / m {
                let n = (0..m)
                    .filter(|j| kept[(oi * c + g * m + j) * taps + t] != 0.0)
                    .count();
                out.push(n);
            }
        }
    }
    Some(out)
}

#[test]
fn every_group_of_every_written_mask_keeps_exactly_n() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str, &[&str])] = &[
        ("zoo:lenet300", "rpi", "2:4", &[]),
        ("zoo:lenet300", "magnitude", "1:4", &[]),
        ("zoo:lenet300", "lamp", "4:8", &[]),
        ("zoo:resnet20", "rpi", "2:4", &[]),
        ("zoo:resnet20", "snip", "2:4", &["--data", "synthetic:20"]),
        ("zoo:resnet20", "grasp", "2:4", &["--data", "synthetic:20"]),
        ("zoo:resnet20", "synflow", "2:4", &["--rounds", "10"]),
        ("zoo:lenet5", "synflow", "3:8", &[]),
    ];
    for (i, (model, method, pattern, extra)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("{i}.safetensors"));
        let mut args = vec![
            "prune",
            model,
            "--method",
            method,
            "--pattern",
            pattern,
            "--json",
            "-o",
        ];
        args.push(s(&out));
        args.extend(*extra);
        let report: serde_json::Value =
            serde_json::from_slice(&maskforge_ok(&args).stdout).unwrap();
        let (n, m): (usize, usize) = {
            let (a, b) = pattern.split_once(':').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        };
        let dense: Vec<&str> = report["pattern"]["dense_layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["layer"].as_str().unwrap())
            .collect();
        let mut fitting = 0;
        for (name, shape, kept) in tensors(&out) {
            match group_counts(&shape, &kept, m) {
                Some(counts) => {
                    assert!(!dense.contains(&name.as_str()), "{model} {name}");
                    assert!(
                        counts.iter().all(|&c| c == n),
                        "{model} {method} {pattern}: {name} has a group keeping {:?}",
                        counts.iter().find(|&&c| c != n)
                    );
                    fitting += 1;
                }
                None => {
                    assert!(
                        dense.contains(&name.as_str()),
                        "{model} {name} not reported"
                    );
                    assert!(kept.iter().all(|&k| k == 1.0), "{name} must stay dense");
                }
            }
        }
        assert!(fitting > 0, "{model}: no layer fits {pattern}");
        if *method == "synflow" {
            let rounds = report["round_densities"].as_array().unwrap();
            let last = rounds.last().unwrap().as_f64().unwrap();
            assert_eq!(last, n as f64 / m as f64);
        }
    }
}

/// Magnitude 2:4 on LeNet-300-100 keeps the two largest |w| of every group
/// (the zoo's weights read back from an export).
#[test]
fn magnitude_keeps_the_two_largest_of_every_group() {
    let dir = tempfile::tempdir().unwrap();
    let masks = dir.path().join("m.safetensors");
    let weights = dir.path().join("w.safetensors");
    maskforge_ok(&[
        "prune",
        "zoo:lenet300",
        "--method",
        "magnitude",
        "--pattern",
        "2:4",
        "-o",
        s(&masks),
    ]);
    maskforge_ok(&[
        "init",
        "zoo:lenet300",
        "--scheme",
        "kaiming",
        "-o",
        s(&weights),
    ]);
    let w = tensors(&weights);
    let mut checked = 0;
    for (name, shape, kept) in tensors(&masks) {
        let (_, _, values) = w.iter().find(|(n, _, _)| *n == name).unwrap();
        let cols = shape[1];
        for (r, (row, vals)) in kept.chunks(cols).zip(values.chunks(cols)).enumerate() {
            for g in 0..cols / 4 {
                let mut idx: Vec<usize> = (g * 4..g * 4 + 4).collect();
                idx.sort_by(|&a, &b| vals[b].abs().total_cmp(&vals[a].abs()));
                let want: Vec<bool> = (g * 4..g * 4 + 4).map(|i| idx[..2].contains(&i)).collect();
                let got: Vec<bool> = (g * 4..g * 4 + 4).map(|i| row[i] == 1.0).collect();
                assert_eq!(
                    got,
                    want,
                    "{name} row {r} group {g}: {:?}",
                    &vals[g * 4..g * 4 + 4]
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 266_200 / 4);
}

/// A 2:4 checkpoint conforms; one weight revived in one group breaks it,
/// and audit says which layer and how many groups.
#[test]
fn audit_flags_a_checkpoint_that_breaks_the_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let masks = dir.path().join("m.safetensors");
    let ckpt = dir.path().join("pruned.safetensors");
    maskforge_ok(&[
        "prune",
        "zoo:lenet300",
        "--method",
        "rpi",
        "--pattern",
        "2:4",
        "-o",
        s(&masks),
        "--apply",
        s(&ckpt),
    ]);
    let audit = |path: &Path| -> serde_json::Value {
        let out = maskforge_ok(&[
            "audit",
            s(path),
            "--arch",
            "zoo:lenet300",
            "--pattern",
            "2:4",
            "--json",
        ]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let ok = audit(&ckpt);
    assert_eq!(ok["pattern"]["conforms"], true);
    // Revive a pruned weight of fc2 (the first zero): its group keeps 3.
    let bytes = std::fs::read(&ckpt).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut entries: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    let fc2 = entries
        .iter_mut()
        .find(|(n, _, _)| n == "fc2.weight")
        .unwrap();
    let zero = fc2.2.chunks(4).position(|b| b == [0u8; 4]).unwrap();
    fc2.2[zero * 4..zero * 4 + 4].copy_from_slice(&0.5f32.to_le_bytes());
    let views: Vec<(String, safetensors::tensor::TensorView)> = entries
        .iter()
        .map(|(n, shape, data)| {
            let v =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .unwrap();
            (n.clone(), v)
        })
        .collect();
    let broken = dir.path().join("broken.safetensors");
    safetensors::serialize_to_file(views, None, &broken).unwrap();
    let bad = audit(&broken);
    assert_eq!(bad["pattern"]["conforms"], false);
    let layers = bad["pattern"]["layers"].as_array().unwrap();
    for l in layers {
        let breaking = l["violating"].as_u64().unwrap();
        assert_eq!(breaking, u64::from(l["layer"] == "fc2.weight"), "{l}");
    }
    let text = String::from_utf8(
        maskforge_ok(&[
            "audit",
            s(&broken),
            "--arch",
            "zoo:lenet300",
            "--pattern",
            "2:4",
        ])
        .stdout,
    )
    .unwrap();
    assert!(text.contains("1 layers break 2:4: fc2.weight"), "{text}");
}

#[test]
fn patterns_refuse_what_they_cannot_honour() {
    for (args, says) in [
        (
            vec![
                "--method",
                "magnitude",
                "--pattern",
                "2:4",
                "--compression",
                "10",
            ],
            "drop --compression",
        ),
        (
            vec!["--method", "mica", "--pattern", "2:4"],
            "applies to rpi",
        ),
        (vec!["--method", "rpi", "--pattern", "4:2"], "1 <= N < M"),
        (
            vec!["--method", "rpi", "--pattern", "2:4", "--effective"],
            "--effective",
        ),
    ] {
        let mut all = vec![
            "prune",
            "zoo:lenet300",
            "-o",
            "/tmp/never-written-nm.safetensors",
        ];
        all.extend(&args);
        let out = maskforge(&all);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// A real export whose MatMul weights are stored `[in, out]`: the groups
/// run along the stored rows there (the input dimension), along dimension
/// 1 for the `[out, in]` ones, and the weights the pattern cannot fit (the
/// RGB patch embedding) stay dense.
#[test]
fn groups_follow_the_input_dimension_of_the_stored_layout() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::root().join("fixtures/vit_tiny.onnx");
    let out = dir.path().join("m.safetensors");
    maskforge_ok(&[
        "prune",
        s(&model),
        "--method",
        "magnitude",
        "--pattern",
        "2:4",
        "-o",
        s(&out),
    ]);
    let net = maskforge::io::model::load(s(&model), None, 0)
        .unwrap()
        .network;
    let (mut transposed, mut plain) = (0, 0);
    for (name, shape, kept) in tensors(&out) {
        let l = net.layers.iter().find(|l| l.name == name).unwrap();
        let counts = if l.stored_index.is_some() && shape.len() == 2 {
            transposed += 1;
            // Stored [in, out]: regroup as [out, in] first.
            let (rows, cols) = (shape[0], shape[1]);
            let t: Vec<f32> = (0..rows * cols)
                .map(|i| kept[(i % rows) * cols + i / rows])
                .collect();
            group_counts(&[cols, rows], &t, 4)
        } else {
            plain += 1;
            group_counts(&shape, &kept, 4)
        };
        match counts {
            Some(c) => assert!(c.iter().all(|&k| k == 2), "{name}"),
            None => assert!(kept.iter().all(|&k| k == 1.0), "{name} must stay dense"),
        }
    }
    assert!(
        transposed > 0 && plain > 0,
        "{transposed} transposed, {plain} plain"
    );
}
