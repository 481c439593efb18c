//! The reverse pass of `maskforge::autodiff::backward` against candle's autograd over
//! the same forward pass: the zoo models and real ONNX graphs (concat,
//! LRN, standalone BatchNorm and ReLU, average pools, transposes: the ops
//! it differentiates node by node through candle), with masks, in every
//! mode and for both seeds, in f64.

mod common;

use candle_core::{DType, Device, Tensor};
use maskforge::autodiff::backward::{weight_gradients, Seed};
use maskforge::autodiff::executor::{Executor, Mode};
use maskforge::graph::Network;
use maskforge::mask::MaskSet;
use rand::{Rng, SeedableRng};

fn input(net: &Network, n: usize, seed: u64) -> Tensor {
    let mut shape = vec![n];
    shape.extend(&net.values[net.inputs[0]].shape);
    let len: usize = shape.iter().product();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f64> = (0..len).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect();
    Tensor::from_vec(x, shape, &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Largest difference between ours and candle's gradients, relative to
/// the largest gradient of the layer.
fn compare(net: &Network, masks: Option<&MaskSet>, mode: Mode, sum_seed: bool, what: &str) {
    let ex = Executor::new(net, &Device::Cpu, DType::F64).unwrap();
    let x = input(net, 3, 7);
    let classes = ex.logits(&x, None, mode).unwrap().dim(1).unwrap() as u32;
    let flat_logits = |t: Tensor| t.flatten_from(1).unwrap();
    let labels = Tensor::new(&[0u32, 1 % classes, 2 % classes], &Device::Cpu).unwrap();
    let (seed, x) = if sum_seed {
        (Seed::Sum, x.ones_like().unwrap())
    } else {
        (
            Seed::CrossEntropy {
                labels: &labels,
                temperature: 2.0,
            },
            x,
        )
    };
    let ours = weight_gradients(&ex, &x, masks, mode, seed).unwrap();
    let logits = ex.logits(&x, masks, mode).unwrap();
    let loss = match seed {
        Seed::Sum => logits.sum_all().unwrap(),
        Seed::CrossEntropy { labels, .. } => {
            candle_nn::loss::cross_entropy(&(flat_logits(logits) / 2.0).unwrap(), labels).unwrap()
        }
        // Not reached: this file's comparisons seed with Sum and
        // CrossEntropy (tests/ops_gradients.rs covers Energy).
        Seed::Energy => unreachable!("the energy seed is checked in ops_gradients"),
    };
    let theirs = loss.backward().unwrap();
    for (li, (g, w)) in ours.iter().zip(&ex.weights).enumerate() {
        let name = &net.layers[li].name;
        let (a, b) = match (g, theirs.get(w.as_tensor())) {
            (Some(a), Some(b)) => (flat(a), flat(b)),
            (None, None) => continue,
            (a, _) => panic!(
                "{what} {name}: gradient only in {}",
                if a.is_some() { "ours" } else { "candle's" }
            ),
        };
        common::assert_gradients_agree(&a, &b, 1e-300, &format!("{what} {name}"));
    }
}

#[test]
fn zoo_models_match_candles_autograd() {
    for name in ["lenet300", "lenet5", "vgg11", "resnet20", "mlp:7-5-4:tanh"] {
        let net = maskforge::zoo::build(name, 3).unwrap();
        let masks = common::random_masks(&net, 0.6, 5);
        for mode in [Mode::Eval, Mode::Train, Mode::Linear] {
            for sum_seed in [false, true] {
                let what = format!("{name} {mode:?} sum={sum_seed}");
                compare(&net, Some(&masks), mode, sum_seed, &what);
            }
        }
        compare(&net, None, Mode::Eval, false, &format!("{name} dense"));
    }
}

#[test]
fn real_graphs_match_candles_autograd() {
    let light = common::light_models_dir();
    for m in [
        "light_squeezenet",
        "light_densenet121",
        "light_inception_v1",
        "light_bvlc_alexnet",
        "light_shufflenet",
    ] {
        let net = maskforge::io::onnx::read(&light.join(format!("{m}.onnx"))).unwrap();
        let masks = common::random_masks(&net, 0.7, 2);
        compare(&net, Some(&masks), Mode::Eval, false, m);
    }
}

/// A ReLU whose input is exactly 0 passes no gradient (PyTorch's rule, as
/// the reference code runs; candle's own ReLU passes it): with the first
/// layer's weights and bias 0, its weights get no gradient at all.
#[test]
fn relu_at_zero_passes_no_gradient() {
    use maskforge::graph::op::Activation;
    use maskforge::graph::tensor::ConstTensor;
    use maskforge::graph::NetworkBuilder;
    let mut b = NetworkBuilder::new("relu0");
    let x = b.input("x", vec![2]).unwrap();
    let h = b
        .dense(
            "fc1",
            x,
            "w1",
            ConstTensor::f32(vec![2, 2], vec![0.0; 4]),
            None,
        )
        .unwrap();
    let r = b.activation("r", h, Activation::Relu);
    let y = b
        .dense(
            "fc2",
            r,
            "w2",
            ConstTensor::f32(vec![1, 2], vec![1.0, -2.0]),
            None,
        )
        .unwrap();
    b.output(y);
    let net = b.finish().unwrap();
    let ex = Executor::new(&net, &Device::Cpu, DType::F64).unwrap();
    let x = Tensor::new(&[[1.0f64, 2.0]], &Device::Cpu).unwrap();
    let g = weight_gradients(&ex, &x, None, Mode::Eval, Seed::Sum).unwrap();
    assert_eq!(flat(g[0].as_ref().unwrap()), [0.0; 4]);
    assert_eq!(flat(g[1].as_ref().unwrap()), [0.0; 2], "ReLU outputs are 0");
}
