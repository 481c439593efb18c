//! Helpers shared by the integration tests.
#![allow(dead_code)]

use maskforge::bitset::BitSet;
use maskforge::mask::MaskSet;
use maskforge::network::Network;
use rand::{Rng, SeedableRng};

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
