//! The mask file of CONVENTIONS.md: a safetensors file with one tensor per
//! prunable weight, keyed by the weight's own name, in the weight's stored
//! shape, dtype BOOL by default, and provenance in `__metadata__`.
//!
//! ```
//! use maskforge::{zoo, mask::MaskSet, io::maskfile::{self, MaskDType, Naming}};
//! use std::collections::BTreeMap;
//! let net = zoo::build("lenet300", 0).unwrap();
//! let masks = MaskSet::dense(&net);
//! let bytes = maskfile::to_bytes(&net, &masks, MaskDType::Bool, Naming::Source, &BTreeMap::new()).unwrap();
//! let back = maskfile::from_bytes(&net, &bytes, "m").unwrap();
//! assert_eq!(back, masks);
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors};

use crate::bitset::BitSet;
use crate::error::{Error, Result};
use crate::graph::Network;
use crate::mask::MaskSet;

/// Element type of the written masks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MaskDType {
    #[default]
    Bool,
    U8,
    F32,
}

crate::named!(MaskDType, "mask dtype" { Bool => "bool", U8 => "u8", F32 => "f32" });

/// How a mask file is encoded: element type and keys.
#[derive(Clone, Copy, Debug, Default)]
pub struct MaskFormat {
    pub mask_dtype: MaskDType,
    pub naming: Naming,
}

/// How mask tensors are keyed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Naming {
    /// The weight's own name.
    #[default]
    Source,
    /// `<prefix>.weight_mask` for `torch.nn.utils.prune.custom_from_mask`.
    TorchPrune,
}

crate::named!(Naming, "mask naming" { Source => "source", TorchPrune => "torch-prune" });

fn key(name: &str, naming: Naming) -> String {
    match naming {
        Naming::Source => name.to_string(),
        Naming::TorchPrune => match name.strip_suffix(".weight") {
            Some(p) => format!("{p}.weight_mask"),
            None => format!("{name}_mask"),
        },
    }
}

/// How the masks of a sharded checkpoint are split: shard file names and,
/// per layer, the shard it belongs to.
#[derive(Clone, Debug)]
pub struct Sharding {
    pub shards: usize,
    pub shard_of_layer: Vec<usize>,
}

fn dtype_info(dtype: MaskDType) -> (&'static str, usize) {
    match dtype {
        MaskDType::Bool => ("BOOL", 1),
        MaskDType::U8 => ("U8", 1),
        MaskDType::F32 => ("F32", 4),
    }
}

/// Write one layer's mask bytes (stored order) to `w`.
fn write_layer<W: std::io::Write>(
    w: &mut W,
    l: &crate::graph::Layer,
    m: &BitSet,
    width: usize,
) -> std::io::Result<()> {
    let stored = l.stored_from_canonical(m);
    if width == 1 {
        return stored.write_bytes(w);
    }
    let bytes: Vec<u8> = (0..stored.len())
        .flat_map(|i| (stored.get(i) as u8 as f32).to_le_bytes())
        .collect();
    w.write_all(&bytes)
}

/// The provenance every mask file's header carries (CONVENTIONS, "What
/// comes out"), whichever command wrote it; commands add their own keys to
/// the map it becomes.
pub struct Provenance {
    pub method: String,
    pub quota: String,
    pub target_compression: String,
    pub seed: String,
    pub direct_compression: f64,
    pub effective_compression: f64,
    pub model_sha256: String,
    pub input_shape: String,
}

impl Provenance {
    /// The header's string map, with this build's `maskforge_version`.
    pub fn into_metadata(self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("maskforge_version".into(), env!("CARGO_PKG_VERSION").into()),
            ("method".into(), self.method),
            ("quota".into(), self.quota),
            ("target_compression".into(), self.target_compression),
            ("seed".into(), self.seed),
            (
                "direct_compression".into(),
                self.direct_compression.to_string(),
            ),
            (
                "effective_compression".into(),
                self.effective_compression.to_string(),
            ),
            ("model_sha256".into(), self.model_sha256),
            ("input_shape".into(), self.input_shape),
        ])
    }
}

/// Stream the mask file for `layers` (indices into `net.layers`).
fn write_file_streamed<W: std::io::Write>(
    w: &mut W,
    net: &Network,
    masks: &MaskSet,
    layers: &[usize],
    dtype: MaskDType,
    naming: Naming,
    metadata: &BTreeMap<String, String>,
) -> std::io::Result<()> {
    let mut meta = metadata.clone();
    meta.insert("format".into(), "pt".into());
    let (dtype_name, width) = dtype_info(dtype);
    let specs: Vec<crate::io::stfile::Spec> = layers
        .iter()
        .map(|&li| {
            let l = &net.layers[li];
            crate::io::stfile::Spec {
                name: key(&l.name, naming),
                dtype: dtype_name,
                shape: l.stored_shape.clone(),
                len: l.numel() * width,
            }
        })
        .collect();
    crate::io::stfile::write_streamed(w, &specs, &meta, |i, w| {
        let li = layers[i];
        write_layer(w, &net.layers[li], &masks.layers[li], width)
    })
}

/// Serialise masks (canonical order in `masks`, stored order on disk).
pub fn to_bytes(
    net: &Network,
    masks: &MaskSet,
    dtype: MaskDType,
    naming: Naming,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    masks.check_fits(net)?;
    let all: Vec<usize> = (0..net.layers.len()).collect();
    let mut out = Vec::new();
    write_file_streamed(&mut out, net, masks, &all, dtype, naming, metadata)
        .map_err(|e| Error::internal(format!("serialising masks: {e}")))?;
    Ok(out)
}

/// Write a mask file atomically, streaming one layer at a time. A path
/// ending in `.index.json` writes mask shards mirroring `sharding` (or one
/// shard) beside it, named `<stem>-NNNNN-of-MMMMM.safetensors`, then the
/// index (`weight_map` from mask key to shard file, and the metadata).
pub fn write(
    path: &Path,
    inputs: &[&Path],
    net: &Network,
    masks: &MaskSet,
    format: MaskFormat,
    metadata: &BTreeMap<String, String>,
    sharding: Option<&Sharding>,
) -> Result<()> {
    let MaskFormat {
        mask_dtype: dtype,
        naming,
    } = format;
    masks.check_fits(net)?;
    let name = path.to_string_lossy();
    let Some(stem) = name
        .strip_suffix(".safetensors.index.json")
        .or_else(|| name.strip_suffix(".index.json"))
    else {
        let all: Vec<usize> = (0..net.layers.len()).collect();
        return crate::io::fs::write_atomic(path, inputs, |w| {
            write_file_streamed(w, net, masks, &all, dtype, naming, metadata)
        });
    };
    let (n, shard_of) = match sharding {
        Some(s) => (s.shards.max(1), s.shard_of_layer.clone()),
        None => (1, vec![0; net.layers.len()]),
    };
    let mut weight_map = serde_json::Map::new();
    for k in 0..n {
        let layers: Vec<usize> = (0..net.layers.len())
            .filter(|&l| shard_of[l] == k)
            .collect();
        let file = format!("{stem}-{:05}-of-{n:05}.safetensors", k + 1);
        let file_name = Path::new(&file)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.clone());
        for &l in &layers {
            weight_map.insert(key(&net.layers[l].name, naming), file_name.clone().into());
        }
        crate::io::fs::write_atomic(Path::new(&file), inputs, |w| {
            write_file_streamed(w, net, masks, &layers, dtype, naming, metadata)
        })?;
    }
    let mut meta: serde_json::Map<String, serde_json::Value> = metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    meta.insert("format".into(), "pt".into());
    let index = serde_json::json!({"metadata": meta, "weight_map": weight_map});
    let text = serde_json::to_string_pretty(&index).map_err(|e| Error::internal(e.to_string()))?;
    crate::io::fs::write_atomic(path, inputs, |w| {
        std::io::Write::write_all(w, text.as_bytes())
    })
}

/// Read masks for `net` from a mask file (either naming, any of the dtypes),
/// or from the `*.index.json` of mask shards.
pub fn read(net: &Network, path: &Path) -> Result<MaskSet> {
    let what = path.display().to_string();
    if what.to_ascii_lowercase().ends_with(".json") {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::input(format!("{what}: cannot read: {e}")))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let maps = crate::io::checkpoint::parse_index(&text, &what)?
            .iter()
            .map(|f| crate::io::fs::mmap(&dir.join(f)).map(|b| (dir.join(f), b)))
            .collect::<Result<Vec<_>>>()?;
        let parsed = maps
            .iter()
            .map(|(p, b)| {
                SafeTensors::deserialize(b.bytes()).map_err(|e| {
                    Error::input(format!(
                        "{}: not a valid safetensors file: {e}",
                        p.display()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        return from_views(net, &what, |k| {
            parsed.iter().find_map(|st| st.tensor(k).ok())
        });
    }
    let bytes = crate::io::fs::mmap(path)?;
    from_bytes(net, bytes.bytes(), &what)
}

pub fn from_bytes(net: &Network, bytes: &[u8], what: &str) -> Result<MaskSet> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::input(format!("{what}: not a valid safetensors file: {e}")))?;
    from_views(net, what, |k| st.tensor(k).ok())
}

fn from_views<'a>(
    net: &Network,
    what: &str,
    get: impl Fn(&str) -> Option<safetensors::tensor::TensorView<'a>>,
) -> Result<MaskSet> {
    let layers = net
        .layers
        .iter()
        .map(|l| {
            let view = [Naming::Source, Naming::TorchPrune]
                .iter()
                .find_map(|&n| get(&key(&l.name, n)))
                .ok_or_else(|| Error::input(format!("{what}: no mask for weight '{}'", l.name)))?;
            if view.shape() != l.stored_shape.as_slice() {
                return Err(Error::input(format!(
                    "{what}: mask '{}' has shape {:?}, the weight has {:?}",
                    l.name,
                    view.shape(),
                    l.stored_shape
                )));
            }
            let data = view.data();
            let n = l.numel();
            let stored = match view.dtype() {
                Dtype::BOOL | Dtype::U8 | Dtype::I8 => BitSet::from_fn(n, |i| data[i] != 0),
                Dtype::F32 => BitSet::from_fn(n, |i| {
                    f32::from_le_bytes([
                        data[4 * i],
                        data[4 * i + 1],
                        data[4 * i + 2],
                        data[4 * i + 3],
                    ]) != 0.0
                }),
                Dtype::F16 | Dtype::BF16 => BitSet::from_fn(n, |i| {
                    u16::from_le_bytes([data[2 * i], data[2 * i + 1]]) & 0x7fff != 0
                }),
                d => {
                    return Err(Error::input(format!(
                        "{what}: mask '{}' has unsupported dtype {d:?}",
                        l.name
                    )))
                }
            };
            Ok(l.canonical_from_stored(&stored))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(MaskSet { layers })
}
