//! Built-in architectures with seeded Kaiming-normal weights: the embedded
//! default models that need no file (CONVENTIONS.md, `zoo:NAME`).
//!
//! Parameter names follow the PyTorch state dicts of the reference code
//! (Synaptic-Flow's `lottery_vgg` / `lottery_resnet`, torchvision's ResNets),
//! so a checkpoint trained there maps onto `--arch zoo:NAME` by name.
//! Weights are Kaiming-normal (fan-in, ReLU gain: std = sqrt(2 / fan_in)),
//! generated lazily from a per-layer stream of `(seed, weight name)`; biases
//! and BatchNorm shifts are 0, BatchNorm scales and variances 1.
//!
//! ```
//! let net = maskforge::zoo::build("vgg16", 0).unwrap();
//! assert_eq!(net.layers.len(), 14);
//! // 13 3x3 convs (64,64,128,128,256x3,512x6 filters) + a 512x10 classifier.
//! assert_eq!(net.prunable_count(), 14_715_584);
//! ```

mod builders;

pub(crate) use builders::kaiming;

use crate::error::{Error, Result};
use crate::graph::Network;

/// Names `zoo list` shows, with a one-line description.
pub const MODELS: &[(&str, &str)] = &[
    (
        "lenet300",
        "LeNet-300-100, MNIST 28x28 (784-300-100-10 MLP)",
    ),
    ("lenet5", "LeNet-5, MNIST 28x28 (2 conv + 3 dense)"),
    (
        "vgg11",
        "VGG-11 with BN, CIFAR 32x32 (Synaptic-Flow lottery_vgg)",
    ),
    (
        "vgg16",
        "VGG-16 with BN, CIFAR 32x32 (Synaptic-Flow lottery_vgg)",
    ),
    (
        "vgg19",
        "VGG-19 with BN, CIFAR 32x32 (Synaptic-Flow lottery_vgg)",
    ),
    (
        "resnet20",
        "ResNet-20, CIFAR 32x32 (Synaptic-Flow lottery_resnet)",
    ),
    (
        "resnet18",
        "ResNet-18, ImageNet 224x224 (torchvision layout)",
    ),
    (
        "resnet50",
        "ResNet-50, ImageNet 224x224 (torchvision layout)",
    ),
    (
        "mlp:A-B-...-Z[:ACT][:INIT]",
        "custom MLP with the given widths; ACT relu (default), tanh or sigmoid; INIT kaiming (default) or uniform",
    ),
];

/// Widths and style of `mlp:784-1000-10[:tanh][:uniform]`.
fn parse_mlp(spec: &str) -> Result<(Vec<usize>, builders::MlpStyle)> {
    let mut parts = spec.split(':');
    let widths = parts
        .next()
        .unwrap_or("")
        .split('-')
        .map(|w| w.trim().parse::<usize>().ok().filter(|&w| w > 0))
        .collect::<Option<Vec<_>>>()
        .filter(|w| w.len() >= 2)
        .ok_or_else(|| {
            Error::input(format!(
                "zoo:mlp:{spec}: expected positive layer widths like mlp:784-300-100-10"
            ))
        })?;
    let mut style = builders::MlpStyle::default();
    for p in parts {
        match p {
            "relu" => style.activation = crate::graph::op::Activation::Relu,
            "tanh" => style.activation = crate::graph::op::Activation::Tanh,
            "sigmoid" => style.activation = crate::graph::op::Activation::Sigmoid,
            "kaiming" => style.uniform = false,
            "uniform" => style.uniform = true,
            other => {
                return Err(Error::input(format!(
                    "zoo:mlp:{spec}: unknown option '{other}' (activations relu, tanh, sigmoid; inits kaiming, uniform)"
                )))
            }
        }
    }
    Ok((widths, style))
}

/// Build a zoo model by name (`vgg16`, `mlp:784-300-100-10`, ...).
pub fn build(name: &str, seed: u64) -> Result<Network> {
    let name = name.strip_prefix("zoo:").unwrap_or(name);
    if let Some(spec) = name.strip_prefix("mlp:") {
        let (widths, style) = parse_mlp(spec)?;
        return builders::mlp(name, &widths, style, seed);
    }
    match name {
        "lenet300" => builders::mlp(
            "lenet300",
            &[784, 300, 100, 10],
            builders::MlpStyle::default(),
            seed,
        ),
        "lenet5" => builders::lenet5(seed),
        "vgg11" => builders::vgg(11, seed),
        "vgg16" => builders::vgg(16, seed),
        "vgg19" => builders::vgg(19, seed),
        "resnet20" => builders::resnet_cifar(20, seed),
        "resnet18" => builders::resnet_imagenet(18, seed),
        "resnet50" => builders::resnet_imagenet(50, seed),
        _ => Err(Error::input(format!(
            "unknown zoo model '{name}'; `maskforge zoo list` shows the choices"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameter counts of the prunable weights, from the architectures' definitions.
    #[test]
    fn prunable_counts_match_the_reference_architectures() {
        // LeNet-300-100: 784*300 + 300*100 + 100*10.
        assert_eq!(build("lenet300", 0).unwrap().prunable_count(), 266_200);
        // ResNet-20 with 1x1 conv shortcuts, by hand: stem 432, stage 1 6*2304,
        // stage 2 4608+9216+512+4*9216, stage 3 18432+36864+2048+4*36864, fc 640.
        assert_eq!(build("resnet20", 0).unwrap().prunable_count(), 270_896);
        // torchvision ResNet-50: 25.557 M parameters, of which weights of conv/fc = 25,502,912.
        assert_eq!(build("resnet50", 0).unwrap().prunable_count(), 25_502_912);
        // torchvision ResNet-18: 11.69 M parameters; conv+fc weights = 11,678,912.
        assert_eq!(build("resnet18", 0).unwrap().prunable_count(), 11_678_912);
    }

    #[test]
    fn weights_are_seeded_per_layer() {
        let a = build("lenet300", 3).unwrap();
        let b = build("lenet300", 3).unwrap();
        let c = build("lenet300", 4).unwrap();
        let w = |n: &Network| n.params.get("fc1.weight").unwrap().to_f32().unwrap();
        assert_eq!(w(&a), w(&b));
        assert_ne!(w(&a), w(&c));
        // Kaiming fan-in std for 784 inputs.
        let v = w(&a);
        let std = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
        assert!((std - (2.0f32 / 784.0).sqrt()).abs() < 0.002, "{std}");
    }

    #[test]
    fn bad_names_are_input_errors() {
        assert!(!build("vgg17", 0).unwrap_err().is_internal());
        assert!(!build("mlp:10-x", 0).unwrap_err().is_internal());
        assert!(!build("mlp:10", 0).unwrap_err().is_internal());
    }
}
