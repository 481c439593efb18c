//! Rewriting weights inside an existing ONNX file, keeping its graph: how
//! `prune --apply` and `init` write a model that runs unchanged wherever
//! the source did.
//!
//! An initializer is rewritten in place (keeping its dims, which may differ
//! from the view maskforge read through a Reshape); a tensor produced by a
//! `Constant` or `ConstantOfShape` node becomes an initializer of the same
//! name (and, before IR version 4, a graph input too). A quantized (int8 or
//! uint8) weight of a QDQ model keeps its type and values: only its pruned
//! entries (zeros of the masked float tensor) become the zero point of its
//! `DequantizeLinear`, so they dequantize to exactly 0.
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
//! let model = onnx::decode_bytes(&bytes).unwrap();
//! let back = onnx::from_proto("m", model, dir.path(), &Default::default()).unwrap();
//! assert!(back.params.get(&name).unwrap().to_f32().unwrap().iter().all(|&w| w == 0.0));
//! ```

use std::path::Path;

use candle_onnx::onnx::{GraphProto, TensorProto};

use crate::error::{Error, Result};
use crate::graph::tensor::{ConstTensor, DType};

/// The ONNX file `src` with each named weight replaced by its tensor.
pub fn replace_weights(src: &Path, weights: &[(&str, &ConstTensor)]) -> Result<Vec<u8>> {
    let mut model = super::decode_file(src)?;
    let dir = src.parent().unwrap_or(Path::new("."));
    let ir_version = model.ir_version;
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| Error::input("ONNX model without a graph"))?;
    for &(name, tensor) in weights {
        let mut t = super::encode(name, tensor)?;
        if let Some(q) = quantized(graph, name, tensor, dir)? {
            let init = graph
                .initializer
                .iter_mut()
                .find(|i| i.name == name)
                .unwrap();
            *init = q;
            continue;
        }
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

/// The int8/uint8 initializer `name` with the entries that are 0 in the
/// masked `values` set to its zero point; `None` when `name` is not a
/// quantized initializer read by a `DequantizeLinear`.
fn quantized(
    graph: &GraphProto,
    name: &str,
    values: &ConstTensor,
    dir: &Path,
) -> Result<Option<TensorProto>> {
    let Some(init) = graph.initializer.iter().find(|i| i.name == name) else {
        return Ok(None);
    };
    let q = super::tensor::decode(init.clone(), dir)?;
    if !matches!(q.dtype(), DType::I8 | DType::U8) {
        return Ok(None);
    }
    let Some(dq) = graph
        .node
        .iter()
        .find(|n| n.op_type == "DequantizeLinear" && n.input.first().is_some_and(|i| i == name))
    else {
        return Ok(None);
    };
    let zero: Vec<i64> = match dq.input.get(2).filter(|s| !s.is_empty()) {
        None => vec![0],
        Some(z) => {
            let t = graph
                .initializer
                .iter()
                .find(|i| &i.name == z)
                .ok_or_else(|| {
                    Error::input(format!(
                        "zero point '{z}' of '{name}' is not an initializer"
                    ))
                })?;
            super::tensor::decode(t.clone(), dir)?.to_i64()
        }
    };
    let axis = super::attrs::Attrs::of(dq).int("axis", 1)?;
    let rank = q.shape.len() as i64;
    let axis = (if axis < 0 { axis + rank } else { axis }).clamp(0, (rank - 1).max(0)) as usize;
    let inner: usize = q.shape.get(axis + 1..).map_or(1, |s| s.iter().product());
    let masked = values.to_f32()?;
    let old = q.to_i64();
    if masked.len() != old.len() {
        return Err(Error::input(format!(
            "cannot rewrite '{name}': it holds {} elements, maskforge read {}",
            old.len(),
            masked.len()
        )));
    }
    let new: Vec<u8> = old
        .iter()
        .enumerate()
        .map(|(e, &v)| {
            let z = if zero.len() > 1 {
                zero[(e / inner) % zero.len()]
            } else {
                zero[0]
            };
            (if masked[e] == 0.0 { z } else { v }) as u8
        })
        .collect();
    Ok(Some(TensorProto {
        name: name.to_string(),
        dims: init.dims.clone(),
        data_type: init.data_type,
        raw_data: new,
        ..Default::default()
    }))
}
