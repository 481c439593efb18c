//! The mask file of CONVENTIONS.md: a safetensors file with one tensor per
//! prunable weight, keyed by the weight's own name, in the weight's stored
//! shape, dtype BOOL by default, and provenance in `__metadata__`.
//!
//! ```
//! use maskforge::{zoo, mask::MaskSet, maskfile::{self, MaskDType, Naming}};
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
use crate::mask::MaskSet;
use crate::network::Network;

/// Element type of the written masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MaskDType {
    Bool,
    U8,
    F32,
}

/// How mask tensors are keyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Naming {
    /// The weight's own name.
    Source,
    /// `<prefix>.weight_mask` for `torch.nn.utils.prune.custom_from_mask`.
    TorchPrune,
}

fn key(name: &str, naming: Naming) -> String {
    match naming {
        Naming::Source => name.to_string(),
        Naming::TorchPrune => match name.strip_suffix(".weight") {
            Some(p) => format!("{p}.weight_mask"),
            None => format!("{name}_mask"),
        },
    }
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
    let mut meta = metadata.clone();
    meta.insert("format".into(), "pt".into());
    let (dtype_name, width) = match dtype {
        MaskDType::Bool => ("BOOL", 1),
        MaskDType::U8 => ("U8", 1),
        MaskDType::F32 => ("F32", 4),
    };
    let entries = net
        .layers
        .iter()
        .zip(&masks.layers)
        .map(|(l, m)| {
            let stored = l.stored_from_canonical(m);
            let data = match width {
                1 => stored.to_bytes(),
                _ => (0..stored.len())
                    .flat_map(|i| (stored.get(i) as u8 as f32).to_le_bytes())
                    .collect(),
            };
            crate::stfile::Entry {
                name: key(&l.name, naming),
                dtype: dtype_name,
                shape: l.stored_shape.clone(),
                data,
            }
        })
        .collect();
    Ok(crate::stfile::serialize(entries, &meta))
}

/// Write a mask file atomically.
pub fn write(
    path: &Path,
    inputs: &[&Path],
    net: &Network,
    masks: &MaskSet,
    dtype: MaskDType,
    naming: Naming,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let bytes = to_bytes(net, masks, dtype, naming, metadata)?;
    crate::io::write_atomic(path, inputs, |w| std::io::Write::write_all(w, &bytes))
}

/// Read masks for `net` from a mask file (either naming, any of the dtypes).
pub fn read(net: &Network, path: &Path) -> Result<MaskSet> {
    let bytes = crate::io::mmap(path)?;
    from_bytes(net, (*bytes).as_ref(), &path.display().to_string())
}

pub fn from_bytes(net: &Network, bytes: &[u8], what: &str) -> Result<MaskSet> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::input(format!("{what}: not a valid safetensors file: {e}")))?;
    let layers = net
        .layers
        .iter()
        .map(|l| {
            let view = [Naming::Source, Naming::TorchPrune]
                .iter()
                .find_map(|&n| st.tensor(&key(&l.name, n)).ok())
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
