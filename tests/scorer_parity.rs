//! Magnitude, SNIP and GraSP masks against the reference code's, as
//! transcribed in numpy by `scripts/scorer_reference.py` (Synaptic-Flow's
//! `Mag`, `SNIP` and `GraSP` scores, float32, and its global cut: `int((1 -
//! d) N)` pruned with ties, `d = 1 / compression`) at 10x, 100x and 1000x:
//!
//! * magnitude on the zoo's LeNet-300-100 and LeNet-5 exported as ONNX:
//!   equal masks;
//! * SNIP and GraSP on LeNet-300-100 with 100 fixed random images in two
//!   batches of 50: equal masks up to near-ties, see [`near_ties_only`].
//!
//! Needs python3 with numpy and onnx (`scripts/setup.sh ort` installs them
//! from PyPI when missing).

mod common;

use std::path::Path;
use std::process::Command;

use common::{check, describe, maskforge_ok as maskforge, root, s};
use maskforge::graph::Network;
use maskforge::io::maskfile;
use maskforge::mask::MaskSet;

fn python(args: &[&str]) -> std::process::Output {
    check(
        &format!("scripts/scorer_reference.py {}", args.join(" ")),
        Command::new("python3")
            .arg(root().join("scripts/scorer_reference.py"))
            .args(args)
            .output()
            .expect("run python3"),
    )
}

fn export(dir: &Path, model: &str) -> (String, Network) {
    let onnx = dir.join(format!("{model}.onnx"));
    maskforge(&["zoo", "export", model, "-o", s(&onnx)]);
    let net = maskforge::io::model::load(s(&onnx), None, 0)
        .unwrap()
        .network;
    (s(&onnx).to_string(), net)
}

/// Our mask of `method` at compression `c` and the reference's, with the
/// reference's JSON report (kept counts, k, threshold).
fn both_masks(
    dir: &Path,
    onnx: &str,
    net: &Network,
    method: &str,
    c: &str,
    data: Option<&Path>,
) -> (MaskSet, MaskSet, serde_json::Value) {
    let stem = format!("{}-{method}-{c}", net.name);
    let (reference, ours, scores) = (
        dir.join(format!("{stem}-ref.safetensors")),
        dir.join(format!("{stem}.safetensors")),
        dir.join(format!("{stem}-scores.safetensors")),
    );
    let mut args = vec![
        onnx,
        "--method",
        method,
        "--compression",
        c,
        "-o",
        s(&reference),
        "--scores",
        s(&scores),
    ];
    let mut prune = vec![
        "prune",
        onnx,
        "--method",
        method,
        "--compression",
        c,
        "--keep-inactive",
        "-o",
        s(&ours),
    ];
    if let Some(d) = data {
        args.extend(["--data", s(d), "--batch-size", "50"]);
        prune.extend([
            "--data",
            s(d),
            "--samples-per-class",
            "0",
            "--batch-size",
            "50",
        ]);
    }
    let report: serde_json::Value = serde_json::from_slice(&python(&args).stdout).unwrap();
    maskforge(&prune);
    (
        maskfile::read(net, &ours).unwrap(),
        maskfile::read(net, &reference).unwrap(),
        report,
    )
}

#[test]
fn magnitude_masks_equal_the_reference_code() {
    common::setup_ort();
    let dir = tempfile::tempdir().unwrap();
    let mut mismatches = Vec::new();
    for model in ["lenet300", "lenet5"] {
        let (onnx, net) = export(dir.path(), model);
        for c in ["10", "100", "1000"] {
            let (o, r, _) = both_masks(dir.path(), &onnx, &net, "magnitude", c, None);
            if o != r {
                mismatches.push(format!("{model} at {c}x: {}", describe(&net, &o, &r)));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "magnitude departs from the reference:\n{}",
        mismatches.join("\n")
    );
}

/// The reference's float32 scores, per layer in the mask's (canonical)
/// order, from the file `--scores` wrote next to the mask.
fn reference_scores(net: &Network, dir: &Path, method: &str, c: &str) -> Vec<Vec<f32>> {
    let path = dir.join(format!("{}-{method}-{c}-scores.safetensors", net.name));
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    net.layers
        .iter()
        .map(|l| {
            let t = st.tensor(&l.name).unwrap();
            let stored: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            match &l.stored_index {
                None => stored,
                Some(ix) => ix.iter().map(|&i| stored[i as usize]).collect(),
            }
        })
        .collect()
}

/// Relative distance from the threshold below which a score counts as a
/// near-tie.
const NEAR_TIE: f64 = 1e-4;

/// `None` when the masks are equal, or keep as many weights and every
/// weight on which they disagree is a near-tie: its reference score within [`NEAR_TIE`] of the
/// reference's threshold, relatively (float summation order differs between
/// our f64-accumulated gradients and the reference's float32 sums, and
/// GraSP's Hg is a finite difference in ours, exact in the reference);
/// otherwise a description of the disagreement.
fn near_ties_only(
    net: &Network,
    ours: &MaskSet,
    reference: &MaskSet,
    scores: &[Vec<f32>],
    threshold: f64,
) -> (usize, f64, Option<String>) {
    let (mut differ, mut worst) = (0, 0.0f64);
    for ((a, b), s) in ours.layers.iter().zip(&reference.layers).zip(scores) {
        for (i, &x) in s.iter().enumerate() {
            if a.get(i) != b.get(i) {
                differ += 1;
                worst = worst.max((x as f64 - threshold).abs() / threshold.abs());
            }
        }
    }
    // Near-ties trade places; they do not change how many are kept.
    let bad = (worst > NEAR_TIE || ours.count_ones() != reference.count_ones()).then(|| {
        format!(
            "{differ} weights differ, the farthest from the threshold {threshold:e} by {worst:e} relatively: {}",
            describe(net, ours, reference)
        )
    });
    (differ, worst, bad)
}

#[test]
fn snip_and_grasp_masks_equal_the_reference_code_up_to_near_ties() {
    common::setup_ort();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("calibration.safetensors");
    python(&["--make-data", s(&data), "--samples", "100", "--seed", "0"]);
    let (onnx, net) = export(dir.path(), "lenet300");
    let mut failures = Vec::new();
    for method in ["snip", "grasp"] {
        for c in ["10", "100", "1000"] {
            let (o, r, report) = both_masks(dir.path(), &onnx, &net, method, c, Some(&data));
            let threshold = report["threshold"].as_f64().unwrap();
            let scores = reference_scores(&net, dir.path(), method, c);
            let (differ, worst, bad) = near_ties_only(&net, &o, &r, &scores, threshold);
            eprintln!(
                "{method} at {c}x: ours {} reference {} differ {differ} worst {worst:e}",
                o.count_ones(),
                r.count_ones()
            );
            if let Some(b) = bad {
                failures.push(format!("{method} at {c}x: {b}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "SNIP/GraSP depart from the reference beyond near-ties:\n{}",
        failures.join("\n")
    );
}
