//! The ONNX front end: the only module that knows ONNX exists.
//!
//! Models are decoded with candle-onnx's prost-generated protobuf types and
//! turned into a [`Network`] at the door ([`read`]). [`write`] goes the other
//! way for `zoo export` and for masked copies of a model.
//!
//! ```no_run
//! let net = maskforge::io::onnx::read(std::path::Path::new("model.onnx")).unwrap();
//! println!("{} prunable layers", net.layers.len());
//! ```

pub mod attrs;
mod consts;
mod ops;
pub mod patch;
mod reader;
mod tensor;
pub mod writer;

use std::path::Path;

use prost::Message;

pub use candle_onnx::onnx::ModelProto;
pub use reader::{ReadOptions, Unsupported};
pub use tensor::{encode, encode_f32};

use crate::error::{Error, Result};
use crate::graph::Network;

/// The version of the default operator set (`""` or `ai.onnx`).
fn default_opset(m: &ModelProto) -> i64 {
    m.opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(13)
}

/// Decode an ONNX file into its protobuf.
pub fn decode_file(path: &Path) -> Result<ModelProto> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::input(format!("{}: cannot read: {e}", path.display())))?;
    decode_bytes(&bytes).map_err(|e| e.context(path.display()))
}

pub fn decode_bytes(bytes: &[u8]) -> Result<ModelProto> {
    if bytes.is_empty() {
        return Err(Error::input("empty file, not an ONNX model"));
    }
    let m = ModelProto::decode(bytes)
        .map_err(|e| Error::input(format!("not an ONNX model (protobuf decoding failed: {e})")))?;
    match &m.graph {
        Some(g) if !g.node.is_empty() && !g.input.is_empty() => Ok(m),
        _ => Err(Error::input(
            "not an ONNX model (no graph with inputs and nodes)",
        )),
    }
}

fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn model_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

/// Read an ONNX model into a [`Network`]; every untranslatable op is named in the error.
pub fn read(path: &Path) -> Result<Network> {
    read_with_files(path, &ReadOptions::default()).map(|(n, _)| n)
}

/// Like [`read`], with `options` (input shapes), also returning every file
/// the model's data comes from (the model and its external-data files), so
/// outputs never overwrite them.
pub fn read_with_files(
    path: &Path,
    options: &ReadOptions,
) -> Result<(Network, Vec<std::path::PathBuf>)> {
    let m = decode_file(path)?;
    let dir = folder(path);
    let mut files = vec![path.to_path_buf()];
    for t in m.graph.iter().flat_map(|g| &g.initializer) {
        if t.data_location == 1 {
            for e in t.external_data.iter().filter(|e| e.key == "location") {
                let f = dir.join(&e.value);
                if !files.contains(&f) {
                    files.push(f);
                }
            }
        }
    }
    let net =
        from_proto(&model_name(path), m, dir, options).map_err(|e| e.context(path.display()))?;
    Ok((net, files))
}

/// Translate a decoded model; `dir` holds any external-data files.
pub fn from_proto(name: &str, m: ModelProto, dir: &Path, options: &ReadOptions) -> Result<Network> {
    let opset = default_opset(&m);
    let (net, unsupported) =
        reader::translate(name, m.graph.unwrap_or_default(), dir, opset, options)?;
    match net {
        Some(n) => Ok(n),
        None => Err(Error::UnsupportedOps { ops: unsupported }),
    }
}

/// The ops of a model maskforge cannot translate (empty when it reads fully).
pub fn unsupported_ops(path: &Path, options: &ReadOptions) -> Result<Vec<Unsupported>> {
    let m = decode_file(path)?;
    let opset = default_opset(&m);
    let (_, u) = reader::translate(
        &model_name(path),
        m.graph.unwrap_or_default(),
        folder(path),
        opset,
        options,
    )
    .map_err(|e| e.context(path.display()))?;
    Ok(u)
}
