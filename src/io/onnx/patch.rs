//! Rewriting weights inside an existing ONNX file, keeping its graph: how
//! `prune --apply` and `init` write a model that runs unchanged wherever
//! the source did.
//!
//! An initializer is rewritten in place (keeping its dims, which may differ
//! from the view maskforge read through a Reshape); a tensor produced by a
//! `Constant` or `ConstantOfShape` node becomes an initializer of the same
//! name (and, before IR version 4, a graph input too).
//!
//! ```
//! use maskforge::graph::tensor::ConstTensor;
//! use maskforge::io::onnx::{self, patch::replace_weights, writer};
//! let net = maskforge::zoo::build("mlp:3-2", 0).unwrap();
//! let dir = tempfile::tempdir().unwrap();
//! let src = dir.path().join("m.onnx");
//! std::fs::write(&src, writer::encode(&writer::to_proto(&net).unwrap())).unwrap();
//! let name = net.layers[0].name.clone();
//! let zeros = ConstTensor::f32(net.layers[0].stored_shape.clone(), vec![0.0; 6]);
//! let bytes = replace_weights(&src, &[(name.as_str(), &zeros)]).unwrap();
//! let back = onnx::from_proto("m", onnx::decode_bytes(&bytes).unwrap(), dir.path()).unwrap();
//! assert!(back.params.get(&name).unwrap().to_f32().unwrap().iter().all(|&w| w == 0.0));
//! ```

use std::path::Path;

use crate::error::{Error, Result};
use crate::graph::tensor::ConstTensor;

/// The ONNX file `src` with each named weight replaced by its tensor.
pub fn replace_weights(src: &Path, weights: &[(&str, &ConstTensor)]) -> Result<Vec<u8>> {
    let mut model = super::decode_file(src)?;
    let ir_version = model.ir_version;
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| Error::input("ONNX model without a graph"))?;
    for &(name, tensor) in weights {
        let mut t = super::encode(name, tensor)?;
        if let Some(init) = graph.initializer.iter_mut().find(|i| i.name == name) {
            let numel = |d: &[i64]| d.iter().product::<i64>();
            if numel(&init.dims) != numel(&t.dims) {
                return Err(Error::input(format!(
                    "cannot rewrite '{name}': it holds {} elements, maskforge read {}",
                    numel(&init.dims),
                    numel(&t.dims)
                )));
            }
            t.dims = init.dims.clone();
            *init = t;
            continue;
        }
        let producer = graph
            .node
            .iter()
            .position(|n| n.output.iter().any(|o| o == name));
        match producer {
            Some(p)
                if matches!(
                    graph.node[p].op_type.as_str(),
                    "Constant" | "ConstantOfShape"
                ) =>
            {
                graph.node.remove(p);
                if ir_version < 4 && !graph.input.iter().any(|i| i.name == name) {
                    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
                    graph
                        .input
                        .push(super::writer::tensor_value_info(name, &shape));
                }
                graph.initializer.push(t);
            }
            _ => {
                return Err(Error::input(format!(
                    "weight '{name}' is neither an initializer nor a Constant output"
                )))
            }
        }
    }
    Ok(super::writer::encode(&model))
}
