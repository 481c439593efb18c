//! SynFlow's masks equal the reference code's, bit for bit: the official
//! loop (Synaptic-Flow and its MiCA fork, float32, `int((1 - d^(k/R)) N)`
//! pruned per round with ties) as transcribed in numpy by
//! `scripts/synflow_reference.py`, at 100 rounds on the zoo's LeNet-300-100
//! and LeNet-5 exported as ONNX, at 10x, 100x and 1000x.
//!
//! Needs python3 with numpy and onnx (`scripts/setup.sh ort` installs them
//! from PyPI when missing).

mod common;

use std::process::Command;

use common::{check, describe, maskforge_ok as maskforge, root};

use maskforge::io::maskfile;

#[test]
fn synflow_masks_equal_the_reference_code() {
    common::setup_ort();
    let dir = tempfile::tempdir().unwrap();
    let mut mismatches = Vec::new();
    for model in ["lenet300", "lenet5"] {
        let onnx = dir.path().join(format!("{model}.onnx"));
        let onnx_s = onnx.to_str().unwrap();
        maskforge(&["zoo", "export", model, "-o", onnx_s]);
        let net = maskforge::io::model::load(onnx_s, None, 0).unwrap().network;
        for c in ["10", "100", "1000"] {
            let reference = dir.path().join(format!("{model}-{c}-ref.safetensors"));
            let ours = dir.path().join(format!("{model}-{c}.safetensors"));
            check(
                "scripts/synflow_reference.py",
                Command::new("python3")
                    .arg(root().join("scripts/synflow_reference.py"))
                    .args([onnx_s, "--compression", c, "--rounds", "100", "-o"])
                    .arg(&reference)
                    .output()
                    .expect("run python3"),
            );
            maskforge(&[
                "prune",
                onnx_s,
                "--method",
                "synflow",
                "--compression",
                c,
                "--rounds",
                "100",
                "--keep-inactive",
                "-o",
                ours.to_str().unwrap(),
            ]);
            let (r, o) = (
                maskfile::read(&net, &reference).unwrap(),
                maskfile::read(&net, &ours).unwrap(),
            );
            if r != o {
                mismatches.push(format!("{model} at {c}x: {}", describe(&net, &o, &r)));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "SynFlow departs from the reference:\n{}",
        mismatches.join("\n")
    );
}
