//! Re-initialising a model's prunable weights (`maskforge init`,
//! `zoo export --init`): ZerO ([`crate::init::zero`], in either
//! [`crate::init::zero::Orientation`]) or seeded Kaiming-normal.
//!
//! Every prunable weight gets new values in its stored name, layout and
//! dtype; the bias of every prunable layer is set to zero (ZerO initialises
//! biases to zero, and the zoo's Kaiming models have zero biases too). Every
//! other tensor (BatchNorm, constants) is left as the source has it.
//! Kaiming-normal is the zoo's: std `sqrt(2 / fan_in)`, from the stream of
//! `(seed, "kaiming", weight name)`, so `init zoo:X --scheme kaiming --seed S`
//! reproduces the zoo's own weights for seed `S`.
//!
//! ```
//! use maskforge::{init::{reinitialise, Scheme}, init::zero::Orientation, zoo};
//! let net = zoo::build("mlp:2-3", 0).unwrap();
//! let fc1 = |o| {
//!     let r = reinitialise(&net, Scheme::Zero(o)).unwrap();
//!     r.network.params.get("fc1.weight").unwrap().to_f32().unwrap()
//! };
//! // 2 -> 3 grows. Default (shrinking) orientation: the partial identity.
//! assert_eq!(fc1(Orientation::Shrinking), vec![1., 0., 0., 1., 0., 0.]);
//! // ZerO's code: m = 2, c = 2^{-1/2}, rows 0..3 and columns 0..2 of H_2.
//! let c = 0.5f32.sqrt();
//! assert_eq!(fc1(Orientation::Growing), vec![c, c, c, -c, c, c]);
//! ```

pub mod zero;

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::graph::tensor::{ConstTensor, Data};
use crate::graph::{Layer, LayerKind, Network, Op};
use zero::Orientation;

/// Which initialisation to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// ZerO, with the Hadamard on the layers `Orientation` names.
    Zero(Orientation),
    /// Kaiming-normal (fan-in, ReLU gain) from per-layer streams of `seed`.
    Kaiming { seed: u64 },
}

/// What one layer received.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Applied {
    /// ZerO's rule for the (per-group) channel matrix.
    Zero(zero::Rule),
    Kaiming {
        rule: &'static str,
        std: f32,
    },
}

/// One re-initialised layer.
#[derive(Clone, Debug, Serialize)]
pub struct LayerInit {
    pub name: String,
    pub kind: LayerKind,
    /// Canonical shape `[out, in/groups, kh, kw]` or `[out, in]`.
    pub shape: Vec<usize>,
    pub groups: usize,
    #[serde(flatten)]
    pub applied: Applied,
    /// The bias set to zero, if the layer has one.
    pub bias: Option<String>,
}

/// A network with new prunable weights and zero biases.
pub struct Reinit {
    pub network: Network,
    pub layers: Vec<LayerInit>,
    /// Names of every stored tensor that was rewritten (weights, then biases).
    pub rewritten: Vec<String>,
}

/// `net` with every prunable weight re-initialised by `scheme` and every
/// prunable layer's bias set to zero.
pub fn reinitialise(net: &Network, scheme: Scheme) -> Result<Reinit> {
    let mut out = net.clone();
    let mut layers = Vec::with_capacity(net.layers.len());
    let mut rewritten = Vec::new();
    for (li, l) in net.layers.iter().enumerate() {
        let groups = groups_of(net, l);
        let (canon, applied) = canonical_values(l, groups, scheme)?;
        let source = stored_tensor(net, &l.name)?;
        let values = to_stored_order(l, &canon);
        out.params.insert(
            &l.name,
            ConstTensor::from_f32_as(source.shape.clone(), source.dtype(), &values)?,
        );
        rewritten.push(l.name.clone());
        layers.push(LayerInit {
            name: l.name.clone(),
            kind: l.kind,
            shape: l.shape.clone(),
            groups,
            applied,
            bias: bias_of(net, li),
        });
    }
    for b in layers.iter().filter_map(|l| l.bias.as_deref()) {
        // Two layers may share one stored bias: zero it once.
        if rewritten.iter().any(|r| r == b) {
            continue;
        }
        let t = stored_tensor(net, b)?;
        let zeros = vec![0.0f32; t.numel()];
        out.params.insert(
            b,
            ConstTensor::from_f32_as(t.shape.clone(), t.dtype(), &zeros)?,
        );
        rewritten.push(b.to_string());
    }
    Ok(Reinit {
        network: out,
        layers,
        rewritten,
    })
}

fn stored_tensor<'a>(net: &'a Network, name: &str) -> Result<&'a ConstTensor> {
    net.params
        .get(name)
        .ok_or_else(|| Error::internal(format!("parameter '{name}' missing")))
}

/// A conv's group count (1 for dense layers).
fn groups_of(net: &Network, l: &Layer) -> usize {
    match &net.nodes[l.node].op {
        Op::Conv { conv, .. } => conv.groups,
        _ => 1,
    }
}

/// The stored bias of layer `li`, if it has one.
pub fn bias_of(net: &Network, li: usize) -> Option<String> {
    match &net.nodes[net.layers[li].node].op {
        Op::Conv { bias, .. } | Op::Dense { bias, .. } => bias.clone(),
        _ => None,
    }
}

/// The layer's new weight in canonical layout, and the rule used.
fn canonical_values(l: &Layer, groups: usize, scheme: Scheme) -> Result<(Vec<f32>, Applied)> {
    Ok(match scheme {
        Scheme::Zero(or) => match l.kind {
            LayerKind::Dense => (
                zero::matrix(l.shape[0], l.shape[1], or),
                Applied::Zero(zero::rule(l.shape[0], l.shape[1], or)),
            ),
            LayerKind::Conv => (
                zero::conv_kernel(l.shape[0], l.shape[1], [l.shape[2], l.shape[3]], groups, or),
                Applied::Zero(zero::conv_rule(l.shape[0], l.shape[1], groups, or)),
            ),
        },
        Scheme::Kaiming { seed } => {
            let t = crate::zoo::kaiming(seed, &l.name, l.shape.clone());
            let Data::Normal { std, .. } = t.data else {
                return Err(Error::internal(
                    "the zoo's Kaiming weights are not lazy samples",
                ));
            };
            let rule = "kaiming-normal";
            (t.to_f32()?, Applied::Kaiming { rule, std })
        }
    })
}

/// Canonical values rearranged into the order the source stores them.
pub(crate) fn to_stored_order(l: &Layer, canon: &[f32]) -> Vec<f32> {
    match &l.stored_index {
        None => canon.to_vec(),
        Some(ix) => {
            let mut stored = vec![0.0f32; canon.len()];
            for (c, &s) in ix.iter().enumerate() {
                stored[s as usize] = canon[c];
            }
            stored
        }
    }
}

/// The kinds of file `init` writes, told by the output's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Safetensors,
    Onnx,
}

impl Format {
    /// The format of `path`, checked before any work is done.
    pub fn of(path: &Path) -> Result<Self> {
        let lower = path.to_string_lossy().to_ascii_lowercase();
        if lower.ends_with(".safetensors") {
            Ok(Format::Safetensors)
        } else if lower.ends_with(".onnx") {
            Ok(Format::Onnx)
        } else {
            Err(Error::input(format!(
                "-o {}: expected a .safetensors or .onnx path",
                path.display()
            )))
        }
    }
}

/// Write the re-initialised model to `path`: `.safetensors` (every float
/// tensor of the model, each in its source dtype) or `.onnx` (`onnx_source`
/// with the rewritten initializers when the model came from an ONNX file,
/// else the network exported as ONNX). Never overwrites one of `inputs`.
pub fn write(path: &Path, inputs: &[&Path], r: &Reinit, onnx_source: Option<&Path>) -> Result<()> {
    write_network(path, inputs, &r.network, &r.rewritten, onnx_source)
}

/// Write `net`, whose stored tensors `rewritten` have new values, as
/// [`write()`] does (`maskforge train` writes its trained weights so).
pub fn write_network(
    path: &Path,
    inputs: &[&Path],
    net: &Network,
    rewritten: &[String],
    onnx_source: Option<&Path>,
) -> Result<()> {
    let bytes = match (Format::of(path)?, onnx_source) {
        (Format::Safetensors, _) => safetensors_bytes(net)?,
        (Format::Onnx, Some(src)) => {
            let weights = rewritten
                .iter()
                .map(|n| Ok((n.as_str(), stored_tensor(net, n)?)))
                .collect::<Result<Vec<_>>>()?;
            crate::io::onnx::patch::replace_weights(src, &weights)?
        }
        (Format::Onnx, None) => {
            crate::io::onnx::writer::encode(&crate::io::onnx::writer::to_proto(net)?)
        }
    };
    crate::io::fs::write_atomic(path, inputs, |w| std::io::Write::write_all(w, &bytes))
}

/// Every float parameter under its own name, shape and dtype.
fn safetensors_bytes(net: &Network) -> Result<Vec<u8>> {
    let mut entries = Vec::new();
    for (name, t) in net.params.iter() {
        let Some(dtype) = t.dtype().is_float().then(|| t.dtype().safetensors_name()) else {
            continue;
        };
        entries.push(crate::io::stfile::Entry {
            name: name.clone(),
            dtype,
            shape: t.shape.clone(),
            data: t.le_bytes()?,
        });
    }
    Ok(crate::io::stfile::serialize(entries, &Default::default()))
}
