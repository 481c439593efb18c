//! Baking masks into weights (`prune --apply OUT`): a masked safetensors file,
//! or the same ONNX graph with masked initializers, that runs unchanged in
//! onnxruntime or PyTorch.
//!
//! ```no_run
//! use maskforge::{zoo, mask::MaskSet, apply};
//! let net = zoo::build("lenet300", 0).unwrap();
//! apply::write(std::path::Path::new("masked.safetensors"), &[], &net, &MaskSet::dense(&net), None).unwrap();
//! ```

use std::path::Path;

use candle_onnx::onnx::TensorProto;

use crate::error::{Error, Result};
use crate::mask::MaskSet;
use crate::network::Network;
use crate::tensor::ConstTensor;

/// Each layer's weight in stored layout with pruned entries set to zero.
/// A weight's name, stored shape and masked values.
type MaskedWeight = (String, Vec<usize>, Vec<f32>);

fn masked_weights(net: &Network, masks: &MaskSet) -> Result<Vec<MaskedWeight>> {
    masks.check_fits(net)?;
    net.layers
        .iter()
        .zip(&masks.layers)
        .map(|(l, m)| {
            let t = net
                .params
                .get(&l.name)
                .ok_or_else(|| Error::internal(format!("weight '{}' missing", l.name)))?;
            let mut v = t.to_f32()?;
            let stored = l.stored_from_canonical(m);
            for (i, x) in v.iter_mut().enumerate() {
                if !stored.get(i) {
                    *x = 0.0;
                }
            }
            Ok((l.name.clone(), l.stored_shape.clone(), v))
        })
        .collect()
}

/// The network's parameters with the masks applied.
pub fn masked_network(net: &Network, masks: &MaskSet) -> Result<Network> {
    let mut out = net.clone();
    for (name, shape, v) in masked_weights(net, masks)? {
        out.params.insert(name, ConstTensor::f32(shape, v));
    }
    Ok(out)
}

/// Write the masked model to `path` (`.safetensors` or `.onnx`); `onnx_source`
/// is the original ONNX file when the model came from one (its graph is kept).
pub fn write(
    path: &Path,
    inputs: &[&Path],
    net: &Network,
    masks: &MaskSet,
    onnx_source: Option<&Path>,
) -> Result<()> {
    let lower = path.to_string_lossy().to_ascii_lowercase();
    let bytes = if lower.ends_with(".safetensors") {
        safetensors_bytes(&masked_network(net, masks)?)?
    } else if lower.ends_with(".onnx") {
        match onnx_source {
            Some(src) => patched_onnx(src, net, masks)?,
            None => {
                let m = crate::onnx::writer::to_proto(&masked_network(net, masks)?)?;
                crate::onnx::writer::encode(&m)
            }
        }
    } else {
        return Err(Error::input(format!(
            "--apply {}: expected a .safetensors or .onnx path",
            path.display()
        )));
    };
    crate::io::write_atomic(path, inputs, |w| std::io::Write::write_all(w, &bytes))
}

fn safetensors_bytes(net: &Network) -> Result<Vec<u8>> {
    let mut entries = Vec::new();
    for (name, t) in net.params.iter() {
        if !t.dtype().is_float() {
            continue;
        }
        entries.push(crate::stfile::Entry {
            name: name.clone(),
            dtype: "F32",
            shape: t.shape.clone(),
            data: t.to_f32()?.iter().flat_map(|x| x.to_le_bytes()).collect(),
        });
    }
    Ok(crate::stfile::serialize(entries, &Default::default()))
}

/// The source ONNX with each weight replaced by its masked values: an
/// initializer is rewritten in place; a weight produced by a `Constant` or
/// `ConstantOfShape` node becomes an initializer of the same name.
fn patched_onnx(src: &Path, net: &Network, masks: &MaskSet) -> Result<Vec<u8>> {
    let mut model = crate::onnx::decode_file(src)?;
    let ir_version = model.ir_version;
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| Error::input("ONNX model without a graph"))?;
    for (name, shape, v) in masked_weights(net, masks)? {
        let t: TensorProto = crate::onnx::encode_f32(&name, &shape, &v);
        if let Some(init) = graph.initializer.iter_mut().find(|i| i.name == name) {
            *init = t;
            continue;
        }
        let producer = graph.node.iter().position(|n| n.output.contains(&name));
        match producer {
            Some(p)
                if matches!(
                    graph.node[p].op_type.as_str(),
                    "Constant" | "ConstantOfShape"
                ) =>
            {
                graph.node.remove(p);
                graph.initializer.push(t);
                // Before IR version 4 every initializer must also be a graph input.
                if ir_version < 4 && !graph.input.iter().any(|i| i.name == name) {
                    graph
                        .input
                        .push(crate::onnx::writer::tensor_value_info(&name, &shape));
                }
            }
            _ => {
                return Err(Error::input(format!(
                    "--apply: weight '{name}' is neither an initializer nor a Constant output"
                )))
            }
        }
    }
    Ok(crate::onnx::writer::encode(&model))
}
