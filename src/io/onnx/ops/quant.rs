//! QDQ quantization: `QuantizeLinear` / `DequantizeLinear`.
//!
//! In a QDQ model a weight is an int8/uint8 initializer read through
//! `DequantizeLinear`; that initializer *is* the prunable weight
//! (CONVENTIONS.md), so its dequantized values keep its name and shape and
//! the mask is keyed by it. On activations the pair is identity for
//! connectivity and, within rounding, for values: the executor skips it.
//! Op-level quantization (QLinearConv, ConvInteger, ...) is not QDQ and is
//! reported unsupported.

use candle_onnx::onnx::NodeProto;

use super::super::attrs::{label, Attrs};
use super::super::consts::Const;
use super::super::reader::Reader;
use crate::error::{Error, Result};
use crate::graph::tensor::ConstTensor;

/// `(x - zero_point) * scale` of a constant `x`, per tensor or per axis.
pub fn dequantize(r: &Reader, n: &NodeProto) -> Result<Const> {
    let at = Attrs::of(n);
    if at.int("block_size", 0)? != 0 {
        return Err(Error::unsupported("blocked DequantizeLinear"));
    }
    let x = r.need_const(n, 0, "quantized input")?;
    if x.index.is_some() {
        return Err(Error::unsupported(
            "DequantizeLinear of a reshaped or transposed quantized tensor",
        ));
    }
    let scale = r.need_const(n, 1, "scale")?.materialize()?.to_f32()?;
    let zero = match r.konst(n, 2) {
        Some(z) => z.materialize()?.to_i64(),
        None => vec![0],
    };
    let q = x.stored.to_i64();
    let len = x.shape.len() as i64;
    let per_axis = scale.len() > 1;
    let (group, period) = if per_axis {
        let axis = at.int("axis", 1)?;
        let a = if axis < 0 { axis + len } else { axis };
        if a < 0
            || a >= len
            || x.shape[a as usize] != scale.len()
            || zero.len() > 1 && zero.len() != scale.len()
        {
            return Err(Error::input(format!(
                "DequantizeLinear '{}': {} scales for axis {axis} of {:?}",
                label(n),
                scale.len(),
                x.shape
            )));
        }
        let inner: usize = x.shape[a as usize + 1..].iter().product();
        (inner, scale.len())
    } else {
        (1, 1)
    };
    let values: Vec<f32> = q
        .iter()
        .enumerate()
        .map(|(e, &v)| {
            let c = (e / group) % period;
            let z = zero[if zero.len() > 1 { c } else { 0 }];
            (v - z) as f32 * scale[c]
        })
        .collect();
    Ok(Const {
        shape: x.shape.clone(),
        stored_name: x.stored_name.clone(),
        stored: ConstTensor::f32(x.shape.clone(), values),
        index: None,
    })
}

/// A Quantize/DequantizeLinear on an activation: identity.
pub fn activation(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    let v = r.b.identity(label, x);
    r.output(n, v);
    Ok(())
}
