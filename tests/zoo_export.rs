//! `zoo export` writes valid ONNX that onnxruntime and candle-onnx's evaluator
//! run to the same outputs, and that maskforge reads back to the same network.

mod common;

use std::collections::HashMap;
use std::process::Command;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn exported_zoo_models_agree_in_onnxruntime_and_candle_onnx() {
    let setup = Command::new("bash")
        .arg(root().join("scripts/setup.sh"))
        .arg("ort")
        .status()
        .unwrap();
    assert!(setup.success(), "scripts/setup.sh ort failed");
    let dir = tempfile::tempdir().unwrap();
    // candle-onnx 0.11 has no padded MaxPool, so the ImageNet ResNets (stem
    // max-pool with pads) are checked in onnxruntime alone.
    let candle_can_run = |n: &str| !n.starts_with("resnet18");
    for name in [
        "lenet300",
        "lenet5",
        "vgg11",
        "resnet20",
        "resnet18",
        "mlp:12-8-3",
    ] {
        let file = dir.path().join(format!("{}.onnx", name.replace(':', "_")));
        let st = Command::new(env!("CARGO_BIN_EXE_maskforge"))
            .args([
                "zoo",
                "export",
                name,
                "-o",
                file.to_str().unwrap(),
                "--seed",
                "5",
            ])
            .status()
            .unwrap();
        assert!(st.success(), "export {name}");

        // Same network back through the ONNX reader.
        let net = maskforge::io::onnx::read(&file).unwrap();
        let orig = maskforge::zoo::build(name, 5).unwrap();
        assert_eq!(net.prunable_count(), orig.prunable_count(), "{name}");
        for (a, b) in net.layers.iter().zip(&orig.layers) {
            assert_eq!((&a.name, &a.shape), (&b.name, &b.shape));
            let (wa, wb) = (
                net.params.get(&a.name).unwrap().to_f32().unwrap(),
                orig.params.get(&b.name).unwrap().to_f32().unwrap(),
            );
            assert_eq!(wa, wb, "{name}: weights of {}", a.name);
        }

        // A batch of 2 seeded inputs through candle-onnx.
        let mut shape = vec![2usize];
        shape.extend(&orig.values[orig.inputs[0]].shape);
        let n: usize = shape.iter().product();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let x: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        let model = maskforge::io::onnx::decode_file(&file).unwrap();
        let input_name = model.graph.as_ref().unwrap().input[0].name.clone();
        let out_name = model.graph.as_ref().unwrap().output[0].name.clone();
        let mut inputs = HashMap::new();
        inputs.insert(
            input_name,
            Tensor::from_vec(x.clone(), shape.clone(), &Device::Cpu).unwrap(),
        );
        let y: Vec<f32> = if candle_can_run(name) {
            let outs = candle_onnx::simple_eval(&model, inputs).unwrap();
            outs[&out_name].flatten_all().unwrap().to_vec1().unwrap()
        } else {
            Vec::new()
        };

        let reference = (!y.is_empty()).then_some(y.as_slice());
        common::ort_check(&file, &x, &shape, reference);
    }
}
