//! Resolving a `MODEL` argument (CONVENTIONS.md, "What goes in") to a network.
//!
//! ```
//! let m = maskforge::io::model::load("zoo:lenet5", None, 0).unwrap();
//! assert_eq!(m.network.layers.len(), 5);
//! assert!(m.sha256.len() == 64);
//! ```

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::graph::Network;
use crate::io::checkpoint::Checkpoint;
use crate::io::onnx::ReadOptions;
use crate::mask::MaskSet;

/// A loaded model and where it came from.
pub struct Loaded {
    pub network: Network,
    /// Masks stored in the checkpoint (`*_mask` tensors), if any.
    pub stored_masks: Option<MaskSet>,
    /// Files the model was read from (outputs must not overwrite them).
    pub files: Vec<PathBuf>,
    /// SHA-256 of the model: of an ONNX file's bytes; of a safetensors
    /// checkpoint's tensors (names, dtypes, shapes, data, in name order), so a
    /// checkpoint hashes the same however it is sharded; of a zoo spec and seed.
    pub sha256: String,
    /// For a sharded checkpoint: which shard holds each layer's weight, so
    /// mask shards can mirror it.
    pub sharding: Option<crate::io::maskfile::Sharding>,
}

impl Loaded {
    /// The masks a command works on: those of the mask file `file` when
    /// one is given, else those stored in the checkpoint, if any.
    pub fn masks(&self, file: Option<&Path>) -> Result<Option<MaskSet>> {
        Ok(match file {
            Some(p) => Some(crate::io::maskfile::read(&self.network, p)?),
            None => self.stored_masks.clone(),
        })
    }
}

fn hash_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::input(format!("{}: cannot open: {e}", path.display())))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)
        .map_err(|e| Error::input(format!("{}: cannot read: {e}", path.display())))?;
    Ok(hex(&h.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn architecture(spec: &str, seed: u64, options: &ReadOptions) -> Result<(Network, Vec<PathBuf>)> {
    if spec.starts_with("zoo:") {
        return Ok((crate::zoo::build(spec, seed)?, vec![]));
    }
    let p = Path::new(spec);
    if spec.ends_with(".onnx") {
        return crate::io::onnx::read_with_files(p, options);
    }
    Err(Error::Architecture(format!(
        "architecture '{spec}': expected a .onnx file or zoo:NAME"
    )))
}

const ARCH_FOR_CHECKPOINTS: &str =
    "a separate architecture is only for safetensors checkpoints (an ONNX or zoo model carries its own)";

/// Load `spec` (`zoo:NAME`, `x.onnx`, `x.safetensors`, `x.safetensors.index.json`,
/// or a folder holding `model.safetensors` or its index beside `config.json`).
pub fn load(spec: &str, arch: Option<&str>, seed: u64) -> Result<Loaded> {
    load_with(spec, arch, seed, &ReadOptions::default())
}

/// [`load`] with reading options (the shapes of symbolic ONNX inputs).
pub fn load_with(
    spec: &str,
    arch: Option<&str>,
    seed: u64,
    options: &ReadOptions,
) -> Result<Loaded> {
    if spec.starts_with("zoo:") {
        if !options.input_shapes.is_empty() {
            return Err(Error::input(
                "--input-shape is for ONNX models; zoo models have fixed input shapes",
            ));
        }
        if arch.is_some() {
            return Err(Error::Architecture(ARCH_FOR_CHECKPOINTS.into()));
        }
        let network = crate::zoo::build(spec, seed)?;
        let mut h = Sha256::new();
        h.update(format!("{spec}@{seed}"));
        return Ok(Loaded {
            network,
            stored_masks: None,
            files: vec![],
            sha256: hex(&h.finalize()),
            sharding: None,
        });
    }
    let path = Path::new(spec);
    if !path.exists() {
        return Err(Error::input(format!("{spec}: no such file")));
    }
    let lower = spec.to_ascii_lowercase();
    // A folder: config.json + model.safetensors (or its index), e.g. a
    // compressed-tensors checkpoint; its architecture comes from `--arch`.
    if lower.ends_with(".safetensors") || lower.ends_with(".json") || path.is_dir() {
        let ckpt = Checkpoint::open(path)?;
        let (bound, mut files) = match arch {
            Some(a) => {
                let (net, files) = architecture(a, seed, options)?;
                (ckpt.bind(net)?, files)
            }
            None => (ckpt.infer_chain()?, vec![]),
        };
        files.push(path.to_path_buf());
        files.extend(ckpt.shards.iter().cloned());
        let sharding = (ckpt.shards.len() > 1).then(|| crate::io::maskfile::Sharding {
            shards: ckpt.shards.len(),
            shard_of_layer: bound
                .network
                .layers
                .iter()
                .map(|l| ckpt.shard_of(&l.name).unwrap_or(0))
                .collect(),
        });
        return Ok(Loaded {
            network: bound.network,
            stored_masks: bound.stored_masks,
            sha256: ckpt.content_sha256(),
            files,
            sharding,
        });
    }
    if arch.is_some() {
        return Err(Error::Architecture(ARCH_FOR_CHECKPOINTS.into()));
    }
    let (network, files) = crate::io::onnx::read_with_files(path, options)?;
    Ok(Loaded {
        network,
        stored_masks: None,
        files,
        sha256: hash_file(path)?,
        sharding: None,
    })
}
