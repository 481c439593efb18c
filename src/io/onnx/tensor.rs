//! ONNX `TensorProto` to [`ConstTensor`], including external-data files.

use std::path::Path;
use std::sync::Arc;

use candle_onnx::onnx::{tensor_proto::DataType as Pdt, TensorProto};

use crate::error::{Error, Result};
use crate::graph::tensor::{ConstTensor, DType, SharedBytes};

pub fn dtype_of(code: i32, what: &str) -> Result<DType> {
    Ok(match Pdt::try_from(code) {
        Ok(Pdt::Float) => DType::F32,
        Ok(Pdt::Double) => DType::F64,
        Ok(Pdt::Float16) => DType::F16,
        Ok(Pdt::Bfloat16) => DType::BF16,
        Ok(Pdt::Int64) => DType::I64,
        Ok(Pdt::Int32) => DType::I32,
        Ok(Pdt::Int8) => DType::I8,
        Ok(Pdt::Uint8) => DType::U8,
        Ok(Pdt::Bool) => DType::Bool,
        _ => {
            return Err(Error::input(format!(
                "{what}: unsupported tensor element type code {code}"
            )))
        }
    })
}

pub(crate) fn dims_of(t: &TensorProto) -> Result<Vec<usize>> {
    t.dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| {
                Error::input(format!("tensor '{}' has a negative dimension {d}", t.name))
            })
        })
        .collect()
}

/// Decode a tensor; `dir` is where external-data files are looked up.
pub fn decode(mut t: TensorProto, dir: &Path) -> Result<ConstTensor> {
    let what = format!("tensor '{}'", t.name);
    let shape = dims_of(&t)?;
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::input(format!("{what}: element count overflows")))?;
    let dtype = dtype_of(t.data_type, &what)?;
    if t.data_location == 1 {
        return external(&t, shape, dtype, dir);
    }
    if !t.raw_data.is_empty() {
        let buf: SharedBytes = Arc::new(std::mem::take(&mut t.raw_data));
        return ConstTensor::from_bytes(shape, dtype, buf, 0, &what);
    }
    let check = |n: usize| {
        if n == numel {
            Ok(())
        } else {
            Err(Error::input(format!(
                "{what}: has {n} values for shape {shape:?}"
            )))
        }
    };
    match dtype {
        DType::F32 => {
            check(t.float_data.len())?;
            Ok(ConstTensor::f32(shape, t.float_data))
        }
        DType::I64 => {
            check(t.int64_data.len())?;
            Ok(ConstTensor::i64(shape, t.int64_data))
        }
        DType::F64 => {
            check(t.double_data.len())?;
            Ok(ConstTensor::f32(
                shape,
                t.double_data.iter().map(|&x| x as f32).collect(),
            ))
        }
        DType::I32 | DType::I8 | DType::U8 | DType::Bool => {
            check(t.int32_data.len())?;
            Ok(ConstTensor::i64(
                shape,
                t.int32_data.iter().map(|&x| x as i64).collect(),
            ))
        }
        DType::F16 | DType::BF16 => {
            check(t.int32_data.len())?;
            let bytes: Vec<u8> = t
                .int32_data
                .iter()
                .flat_map(|&x| (x as u16).to_le_bytes())
                .collect();
            ConstTensor::from_bytes(shape, dtype, Arc::new(bytes), 0, &what)
        }
    }
}

/// Data stored in a file beside the model, memory-mapped.
fn external(t: &TensorProto, shape: Vec<usize>, dtype: DType, dir: &Path) -> Result<ConstTensor> {
    let what = format!("tensor '{}'", t.name);
    let get = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.as_str())
    };
    let location = get("location")
        .ok_or_else(|| Error::input(format!("{what}: external data without a location")))?;
    let rel = Path::new(location);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(Error::input(format!(
            "{what}: external data location '{location}' must be a relative path inside the model's folder"
        )));
    }
    let parse = |k: &str| -> Result<Option<usize>> {
        get(k)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| Error::input(format!("{what}: bad external-data {k} '{v}'")))
            })
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let path = dir.join(rel);
    let map = crate::io::fs::mmap(&path)?;
    let t = ConstTensor::from_bytes(
        shape,
        dtype,
        map,
        offset,
        &format!("{what} in {}", path.display()),
    )?;
    if let Some(len) = parse("length")? {
        if len != t.numel() * dtype.size() {
            return Err(Error::input(format!(
                "{what}: external length {len} does not match shape {:?}",
                t.shape
            )));
        }
    }
    Ok(t)
}

/// Encode a float tensor as raw little-endian data.
pub fn encode_f32(name: &str, shape: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: Pdt::Float as i32,
        raw_data: values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// Encode a tensor in its own element type (raw little-endian data).
pub fn encode(name: &str, t: &ConstTensor) -> Result<TensorProto> {
    let data_type = match t.dtype() {
        DType::F32 => Pdt::Float,
        DType::F64 => Pdt::Double,
        DType::F16 => Pdt::Float16,
        DType::BF16 => Pdt::Bfloat16,
        DType::I64 => Pdt::Int64,
        DType::I32 => Pdt::Int32,
        DType::I8 => Pdt::Int8,
        DType::U8 => Pdt::Uint8,
        DType::Bool => Pdt::Bool,
    };
    Ok(TensorProto {
        name: name.to_string(),
        dims: t.shape.iter().map(|&d| d as i64).collect(),
        data_type: data_type as i32,
        raw_data: t.le_bytes()?,
        ..Default::default()
    })
}

pub fn encode_i64(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: vec![values.len() as i64],
        data_type: Pdt::Int64 as i32,
        raw_data: values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}
