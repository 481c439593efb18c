//! Baking masks into weights (`prune --apply OUT`): a masked safetensors file,
//! or the same ONNX graph with masked initializers, that runs unchanged in
//! onnxruntime or PyTorch.
//!
//! ```no_run
//! use maskforge::{zoo, mask::MaskSet, io::apply};
//! let net = zoo::build("lenet300", 0).unwrap();
//! apply::write(std::path::Path::new("masked.safetensors"), &[], &net, &MaskSet::dense(&net), None).unwrap();
//! ```

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::graph::tensor::ConstTensor;
use crate::graph::Network;
use crate::mask::MaskSet;

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
                let m = crate::io::onnx::writer::to_proto(&masked_network(net, masks)?)?;
                crate::io::onnx::writer::encode(&m)
            }
        }
    } else {
        return Err(Error::input(format!(
            "{}: expected a .safetensors or .onnx path",
            path.display()
        )));
    };
    crate::io::fs::write_atomic(path, inputs, |w| std::io::Write::write_all(w, &bytes))
}

fn safetensors_bytes(net: &Network) -> Result<Vec<u8>> {
    let mut entries = Vec::new();
    for (name, t) in net.params.iter() {
        if !t.dtype().is_float() {
            continue;
        }
        entries.push(crate::io::stfile::Entry {
            name: name.clone(),
            dtype: "F32",
            shape: t.shape.clone(),
            data: t.to_f32()?.iter().flat_map(|x| x.to_le_bytes()).collect(),
        });
    }
    Ok(crate::io::stfile::serialize(entries, &Default::default()))
}

/// Write every tensor of the source checkpoint `ckpt` to `path`, each in
/// its stored dtype, with the pruned elements of the network's layers set to
/// zero (zero bytes are 0.0 in every float format): a drop-in
/// `model.safetensors` for the folder the checkpoint came from.
pub fn write_checkpoint(
    path: &Path,
    inputs: &[&Path],
    ckpt: &crate::io::checkpoint::Checkpoint,
    net: &Network,
    masks: &MaskSet,
) -> Result<()> {
    if !path
        .to_string_lossy()
        .to_ascii_lowercase()
        .ends_with(".safetensors")
    {
        return Err(Error::input(format!(
            "{}: a Hugging Face folder's weights are written as .safetensors",
            path.display()
        )));
    }
    masks.check_fits(net)?;
    let names: Vec<&String> = ckpt.tensors.keys().collect();
    let mut specs = Vec::with_capacity(names.len());
    for name in &names {
        let t = &ckpt.tensors[*name].tensor;
        specs.push(crate::io::stfile::Spec {
            name: (*name).clone(),
            dtype: t.dtype().safetensors_name(),
            shape: t.shape.clone(),
            len: t.numel() * t.dtype().size(),
        });
    }
    crate::io::fs::write_atomic(path, inputs, |w| {
        crate::io::stfile::write_streamed(w, &specs, &Default::default(), |i, w| {
            let t = &ckpt.tensors[names[i]].tensor;
            let mut bytes = t.le_bytes().map_err(std::io::Error::other)?;
            if let Some(li) = net.layer_index(names[i]) {
                let size = t.dtype().size();
                let kept = net.layers[li].stored_from_canonical(&masks.layers[li]);
                for (e, chunk) in bytes.chunks_exact_mut(size).enumerate() {
                    if !kept.get(e) {
                        chunk.fill(0);
                    }
                }
            }
            w.write_all(&bytes)
        })
    })
}

/// The source ONNX with each weight replaced by its masked values.
fn patched_onnx(src: &Path, net: &Network, masks: &MaskSet) -> Result<Vec<u8>> {
    let tensors: Vec<(String, ConstTensor)> = masked_weights(net, masks)?
        .into_iter()
        .map(|(name, shape, v)| (name, ConstTensor::f32(shape, v)))
        .collect();
    let weights: Vec<(&str, &ConstTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    crate::io::onnx::patch::replace_weights(src, &weights)
}
