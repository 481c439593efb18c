//! The candle executor against candle-onnx's evaluator and onnxruntime, on
//! the zoo models and the real graphs of the `onnx` wheel (with random
//! weights written in place of their constant ones).

mod common;

use std::collections::HashMap;
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use maskforge::autodiff::executor::{Executor, Mode};
use maskforge::graph::tensor::ConstTensor;
use maskforge::mask::MaskSet;
use rand::{Rng, SeedableRng};

fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn random_input(shape: &[usize], seed: u64) -> (Vec<f32>, Tensor) {
    let n: usize = shape.iter().product();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    let t = Tensor::from_vec(x.clone(), shape.to_vec(), &Device::Cpu).unwrap();
    (x, t)
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn ort_agrees(model: &std::path::Path, x: &[f32], shape: &[usize], y: &[f32]) {
    common::ort_check(model, x, shape, Some(y));
}

#[test]
fn zoo_models_match_candle_onnx_and_onnxruntime() {
    assert!(Command::new("bash")
        .arg(root().join("scripts/setup.sh"))
        .arg("ort")
        .status()
        .unwrap()
        .success());
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "lenet300",
        "lenet5",
        "vgg11",
        "resnet20",
        "resnet18",
        "mlp:12-8-3",
    ] {
        let net = maskforge::zoo::build(name, 3).unwrap();
        let file = dir.path().join(format!("{}.onnx", name.replace(':', "_")));
        let bytes = maskforge::io::onnx::writer::encode(
            &maskforge::io::onnx::writer::to_proto(&net).unwrap(),
        );
        std::fs::write(&file, bytes).unwrap();
        let mut shape = vec![2];
        shape.extend(&net.values[net.inputs[0]].shape);
        let (x, xt) = random_input(&shape, 1);
        let ex = Executor::new(&net, &Device::Cpu, DType::F32).unwrap();
        let y: Vec<f32> = ex
            .forward(&xt, None, Mode::Eval)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        if !name.starts_with("resnet18") {
            // candle-onnx 0.11 has no padded MaxPool (ResNet-18's stem).
            let model = maskforge::io::onnx::decode_file(&file).unwrap();
            let g = model.graph.as_ref().unwrap();
            let mut inputs = HashMap::new();
            inputs.insert(g.input[0].name.clone(), xt.clone());
            let out_name = g.output[0].name.clone();
            let r: Vec<f32> = candle_onnx::simple_eval(&model, inputs).unwrap()[&out_name]
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert!(
                max_rel(&y, &r) <= 1e-4,
                "{name}: executor vs candle-onnx {}",
                max_rel(&y, &r)
            );
        }
        ort_agrees(&file, &x, &shape, &y);
        // A mask changes the output exactly as zeroed weights do.
        let m = common::random_masks(&net, 0.3, 5);
        let ym: Vec<f32> = ex
            .forward(&xt, Some(&m), Mode::Eval)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let zeroed = maskforge::io::apply::masked_network(&net, &m).unwrap();
        let ez = Executor::new(&zeroed, &Device::Cpu, DType::F32).unwrap();
        let yz: Vec<f32> = ez
            .forward(&xt, None, Mode::Eval)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(max_rel(&ym, &yz) <= 1e-6, "{name}: masked forward");
        let _ = MaskSet::dense(&net);
    }
}

#[test]
fn real_graphs_match_onnxruntime() {
    assert!(Command::new("bash")
        .arg(root().join("scripts/setup.sh"))
        .arg("ort")
        .status()
        .unwrap()
        .success());
    let light = common::light_models_dir();
    let dir = tempfile::tempdir().unwrap();
    for m in [
        "light_squeezenet",
        "light_shufflenet",
        "light_resnet50",
        "light_bvlc_alexnet",
        "light_densenet121",
        "light_inception_v1",
    ] {
        let src = light.join(format!("{m}.onnx"));
        let mut net = maskforge::io::onnx::read(&src).unwrap();
        // Random weights in place of the constant 0.02 (std by fan-in), so
        // the comparison means something; written into a copy of the graph.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for l in net.layers.clone() {
            let fan_in: usize = l.shape[1..].iter().product();
            let std = (2.0 / fan_in as f32).sqrt();
            let v: Vec<f32> = (0..l.numel())
                .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * std * 1.7)
                .collect();
            net.params
                .insert(&l.name, ConstTensor::f32(l.stored_shape.clone(), v));
        }
        let file = dir.path().join(format!("{m}.onnx"));
        maskforge::io::apply::write(&file, &[], &net, &MaskSet::dense(&net), Some(&src)).unwrap();
        let mut shape = vec![1];
        shape.extend(&net.values[net.inputs[0]].shape);
        let (x, xt) = random_input(&shape, 2);
        let ex = Executor::new(&net, &Device::Cpu, DType::F32).unwrap();
        let y: Vec<f32> = ex
            .forward(&xt, None, Mode::Eval)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        ort_agrees(&file, &x, &shape, &y);
    }
}
