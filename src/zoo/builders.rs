//! The architecture definitions of the zoo.

use crate::error::Result;
use crate::graph::op::{Activation, Pool, PoolKind, Window};
use crate::graph::tensor::{ConstTensor, DType, Data};
use crate::graph::{Network, NetworkBuilder, ValueId};
use crate::rng::stream_key;

/// Kaiming-normal weight of `shape` (fan-in = product of all dims but the first).
pub(crate) fn kaiming(seed: u64, name: &str, shape: Vec<usize>) -> ConstTensor {
    let fan_in: usize = shape[1..].iter().product();
    ConstTensor {
        shape,
        data: Data::Normal {
            seed: stream_key(seed, "kaiming", name),
            std: (2.0 / fan_in as f32).sqrt(),
        },
    }
}

/// Uniform weight `U(-r, r)` with `r = 1 / sqrt(fan_in)`, the OSSuM paper's
/// initialisation (its Appendix A.1).
fn uniform(seed: u64, name: &str, shape: Vec<usize>) -> ConstTensor {
    let fan_in: usize = shape[1..].iter().product();
    ConstTensor {
        shape,
        data: Data::Uniform {
            seed: stream_key(seed, "uniform", name),
            bound: 1.0 / (fan_in as f32).sqrt(),
        },
    }
}

fn zeros(n: usize) -> ConstTensor {
    ConstTensor::splat(vec![n], 0.0, DType::F32)
}

fn ones(n: usize) -> ConstTensor {
    ConstTensor::splat(vec![n], 1.0, DType::F32)
}

/// Builder state shared by the definitions.
struct Zoo {
    b: NetworkBuilder,
    seed: u64,
}

impl Zoo {
    fn new(name: &str, seed: u64) -> Self {
        Self {
            b: NetworkBuilder::new(name),
            seed,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        prefix: &str,
        x: ValueId,
        out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        bias: bool,
    ) -> Result<ValueId> {
        let c_in = self.b.shape(x)[0];
        let wname = format!("{prefix}.weight");
        let w = kaiming(self.seed, &wname, vec![out, c_in, k, k]);
        let bname = format!("{prefix}.bias");
        let bias = bias.then(|| (bname.as_str(), zeros(out)));
        self.b
            .conv(prefix, x, &wname, w, bias, Window::same(stride, pad), 1)
    }

    fn bn(&mut self, prefix: &str, x: ValueId) -> Result<ValueId> {
        let c = self.b.shape(x)[0];
        let names =
            ["weight", "bias", "running_mean", "running_var"].map(|s| format!("{prefix}.{s}"));
        self.b.batch_norm(
            prefix,
            x,
            [
                (names[0].as_str(), ones(c)),
                (names[1].as_str(), zeros(c)),
                (names[2].as_str(), zeros(c)),
                (names[3].as_str(), ones(c)),
            ],
            1e-5,
        )
    }

    fn relu(&mut self, name: &str, x: ValueId) -> ValueId {
        self.b.activation(name, x, Activation::Relu)
    }

    fn dense(&mut self, prefix: &str, x: ValueId, out: usize) -> Result<ValueId> {
        self.dense_with(prefix, x, out, kaiming)
    }

    fn dense_with(
        &mut self,
        prefix: &str,
        x: ValueId,
        out: usize,
        init: fn(u64, &str, Vec<usize>) -> ConstTensor,
    ) -> Result<ValueId> {
        let n_in = self.b.shape(x)[0];
        let wname = format!("{prefix}.weight");
        let bname = format!("{prefix}.bias");
        let w = init(self.seed, &wname, vec![out, n_in]);
        self.b
            .dense(prefix, x, &wname, w, Some((bname.as_str(), zeros(out))))
    }

    fn pool(
        &mut self,
        name: &str,
        x: ValueId,
        kind: PoolKind,
        k: usize,
        s: usize,
        p: usize,
    ) -> Result<ValueId> {
        self.b.pool(
            name,
            x,
            Pool {
                kind,
                kernel: [k, k],
                window: Window::same(s, p),
                ceil: false,
            },
        )
    }

    fn finish(mut self, y: ValueId) -> Result<Network> {
        self.b.output(y);
        self.b.finish()
    }
}

/// Activation and initialisation of a zoo MLP.
#[derive(Clone, Copy, Debug)]
pub struct MlpStyle {
    pub activation: Activation,
    /// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` instead of Kaiming-normal.
    pub uniform: bool,
}

impl Default for MlpStyle {
    fn default() -> Self {
        Self {
            activation: Activation::Relu,
            uniform: false,
        }
    }
}

pub fn mlp(name: &str, widths: &[usize], style: MlpStyle, seed: u64) -> Result<Network> {
    let mut z = Zoo::new(name, seed);
    // LeNet-300-100 reads 28x28 images; custom MLPs read flat vectors.
    let mut x = if name == "lenet300" {
        let img = z.b.input("input", vec![1, 28, 28])?;
        z.b.flatten("flatten", img)
    } else {
        z.b.input("input", vec![widths[0]])?
    };
    let last = widths.len() - 1;
    for (i, &w) in widths[1..].iter().enumerate() {
        let prefix = format!("fc{}", i + 1);
        x = if style.uniform {
            z.dense_with(&prefix, x, w, uniform)?
        } else {
            z.dense(&prefix, x, w)?
        };
        if i + 1 < last {
            let act = format!("{}{}", activation_name(style.activation), i + 1);
            x = z.b.activation(&act, x, style.activation);
        }
    }
    z.finish(x)
}

fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::Tanh => "tanh",
        Activation::Sigmoid => "sigmoid",
        _ => "relu",
    }
}

pub fn lenet5(seed: u64) -> Result<Network> {
    let mut z = Zoo::new("lenet5", seed);
    let x = z.b.input("input", vec![1, 28, 28])?;
    let x = z.conv("conv1", x, 6, 5, 1, 2, true)?;
    let x = z.relu("relu1", x);
    let x = z.pool("pool1", x, PoolKind::Max, 2, 2, 0)?;
    let x = z.conv("conv2", x, 16, 5, 1, 0, true)?;
    let x = z.relu("relu2", x);
    let x = z.pool("pool2", x, PoolKind::Max, 2, 2, 0)?;
    let x = z.b.flatten("flatten", x);
    let x = z.dense("fc1", x, 120)?;
    let x = z.relu("relu3", x);
    let x = z.dense("fc2", x, 84)?;
    let x = z.relu("relu4", x);
    let x = z.dense("fc3", x, 10)?;
    z.finish(x)
}

/// Synaptic-Flow `lottery_vgg` plans; 0 stands for a 2x2 max pool.
fn vgg_plan(depth: usize) -> &'static [usize] {
    match depth {
        11 => &[64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512],
        16 => &[
            64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512,
        ],
        _ => &[
            64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512,
            512,
        ],
    }
}

pub fn vgg(depth: usize, seed: u64) -> Result<Network> {
    let mut z = Zoo::new(&format!("vgg{depth}"), seed);
    let mut x = z.b.input("input", vec![3, 32, 32])?;
    for (i, &spec) in vgg_plan(depth).iter().enumerate() {
        x = if spec == 0 {
            z.pool(&format!("layers.{i}"), x, PoolKind::Max, 2, 2, 0)?
        } else {
            let c = z.conv(&format!("layers.{i}.conv"), x, spec, 3, 1, 1, true)?;
            let c = z.bn(&format!("layers.{i}.bn"), c)?;
            z.relu(&format!("layers.{i}.relu"), c)
        };
    }
    let x = z.pool("avgpool", x, PoolKind::Avg, 2, 2, 0)?;
    let x = z.b.flatten("flatten", x);
    let x = z.dense("fc", x, 10)?;
    z.finish(x)
}

pub fn resnet_cifar(depth: usize, seed: u64) -> Result<Network> {
    let per_stage = (depth - 2) / 6;
    let mut z = Zoo::new(&format!("resnet{depth}"), seed);
    let x = z.b.input("input", vec![3, 32, 32])?;
    let x = z.conv("conv", x, 16, 3, 1, 1, false)?;
    let x = z.bn("bn", x)?;
    let mut x = z.relu("relu", x);
    let mut block = 0;
    for (stage, width) in [16usize, 32, 64].into_iter().enumerate() {
        for i in 0..per_stage {
            let p = format!("blocks.{block}");
            let down = stage > 0 && i == 0;
            let stride = if down { 2 } else { 1 };
            let c_in = z.b.shape(x)[0];
            let h = z.conv(&format!("{p}.conv1"), x, width, 3, stride, 1, false)?;
            let h = z.bn(&format!("{p}.bn1"), h)?;
            let h = z.relu(&format!("{p}.relu1"), h);
            let h = z.conv(&format!("{p}.conv2"), h, width, 3, 1, 1, false)?;
            let h = z.bn(&format!("{p}.bn2"), h)?;
            let short = if down || c_in != width {
                let s = z.conv(&format!("{p}.shortcut.0"), x, width, 1, 2, 0, false)?;
                z.bn(&format!("{p}.shortcut.1"), s)?
            } else {
                x
            };
            let sum = z.b.add(&format!("{p}.add"), &[h, short])?;
            x = z.relu(&format!("{p}.relu2"), sum);
            block += 1;
        }
    }
    let x = z.b.global_pool("avgpool", x, PoolKind::Avg)?;
    let x = z.b.flatten("flatten", x);
    let x = z.dense("fc", x, 10)?;
    z.finish(x)
}

pub fn resnet_imagenet(depth: usize, seed: u64) -> Result<Network> {
    let (blocks, bottleneck): (&[usize], bool) = match depth {
        18 => (&[2, 2, 2, 2], false),
        _ => (&[3, 4, 6, 3], true),
    };
    let mut z = Zoo::new(&format!("resnet{depth}"), seed);
    let x = z.b.input("input", vec![3, 224, 224])?;
    let x = z.conv("conv1", x, 64, 7, 2, 3, false)?;
    let x = z.bn("bn1", x)?;
    let x = z.relu("relu", x);
    let mut x = z.pool("maxpool", x, PoolKind::Max, 3, 2, 1)?;
    for (stage, &n) in blocks.iter().enumerate() {
        let width = 64 << stage;
        let out_ch = if bottleneck { width * 4 } else { width };
        for i in 0..n {
            let p = format!("layer{}.{i}", stage + 1);
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            let c_in = z.b.shape(x)[0];
            let h = if bottleneck {
                let h = z.conv(&format!("{p}.conv1"), x, width, 1, 1, 0, false)?;
                let h = z.bn(&format!("{p}.bn1"), h)?;
                let h = z.relu(&format!("{p}.relu1"), h);
                let h = z.conv(&format!("{p}.conv2"), h, width, 3, stride, 1, false)?;
                let h = z.bn(&format!("{p}.bn2"), h)?;
                let h = z.relu(&format!("{p}.relu2"), h);
                let h = z.conv(&format!("{p}.conv3"), h, out_ch, 1, 1, 0, false)?;
                z.bn(&format!("{p}.bn3"), h)?
            } else {
                let h = z.conv(&format!("{p}.conv1"), x, width, 3, stride, 1, false)?;
                let h = z.bn(&format!("{p}.bn1"), h)?;
                let h = z.relu(&format!("{p}.relu1"), h);
                let h = z.conv(&format!("{p}.conv2"), h, width, 3, 1, 1, false)?;
                z.bn(&format!("{p}.bn2"), h)?
            };
            let short = if stride != 1 || c_in != out_ch {
                let s = z.conv(&format!("{p}.downsample.0"), x, out_ch, 1, stride, 0, false)?;
                z.bn(&format!("{p}.downsample.1"), s)?
            } else {
                x
            };
            let sum = z.b.add(&format!("{p}.add"), &[h, short])?;
            x = z.relu(&format!("{p}.relu"), sum);
        }
    }
    let x = z.b.global_pool("avgpool", x, PoolKind::Avg)?;
    let x = z.b.flatten("flatten", x);
    let x = z.dense("fc", x, 1000)?;
    z.finish(x)
}
