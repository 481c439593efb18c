//! Resolving a `MODEL` argument (CONVENTIONS.md, "What goes in") to a network.
//!
//! ```
//! let m = maskforge::io::model::load("zoo:lenet5", None, 0).unwrap();
//! assert_eq!(m.network.layers.len(), 5);
//! assert!(m.sha256().unwrap().len() == 64);
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
    /// Where the model's SHA-256 comes from (computed on first use: a
    /// billion-weight checkpoint takes seconds to hash, and `audit` and
    /// `inspect` never need it).
    hash: Hash,
    /// For a sharded checkpoint: which shard holds each layer's weight, so
    /// mask shards can mirror it.
    pub sharding: Option<crate::io::maskfile::Sharding>,
    /// A text model's token lookup (Hugging Face folders), which turns token
    /// ids into the network's `inputs_embeds`.
    pub tokens: Option<crate::io::hf::tokens::TokenEmbedding>,
    /// A Hugging Face folder's checkpoint, every tensor of it, so that
    /// `--apply` writes a complete `model.safetensors`.
    pub folder_checkpoint: Option<Checkpoint>,
}

/// The source of a model's SHA-256, and the value once computed.
struct Hash {
    source: HashSource,
    value: std::sync::OnceLock<std::result::Result<String, String>>,
}

enum HashSource {
    Ready(String),
    File(PathBuf),
    /// A checkpoint's tensors (a folder's is kept in `folder_checkpoint`).
    Checkpoint(Option<Checkpoint>),
}

impl Hash {
    fn ready(h: String) -> Self {
        Self::of(HashSource::Ready(h))
    }

    fn of(source: HashSource) -> Self {
        Self {
            source,
            value: std::sync::OnceLock::new(),
        }
    }
}

impl Loaded {
    /// SHA-256 of the model: of an ONNX file's bytes; of a safetensors
    /// checkpoint's tensors (names, dtypes, shapes, data, in name order), so a
    /// checkpoint hashes the same however it is sharded; of a zoo spec and seed.
    pub fn sha256(&self) -> Result<String> {
        // get_or_init: a second caller (the CLI hashes on another thread
        // while it prunes) waits for the first instead of hashing again.
        self.hash
            .value
            .get_or_init(|| self.compute_sha256().map_err(|e| e.to_string()))
            .clone()
            .map_err(Error::input)
    }

    fn compute_sha256(&self) -> Result<String> {
        Ok(match &self.hash.source {
            HashSource::Ready(h) => h.clone(),
            HashSource::File(p) => hash_file(p)?,
            HashSource::Checkpoint(Some(c)) => c.content_sha256(),
            HashSource::Checkpoint(None) => self
                .folder_checkpoint
                .as_ref()
                .map(Checkpoint::content_sha256)
                .ok_or_else(|| Error::internal("model hash: no checkpoint kept"))?,
        })
    }

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
            hash: Hash::ready(hex(&h.finalize())),
            sharding: None,
            tokens: None,
            folder_checkpoint: None,
        });
    }
    let path = Path::new(spec);
    if !path.exists() {
        return Err(Error::input(format!("{spec}: no such file")));
    }
    // A folder with config.json is a Hugging Face model, unless `--arch`
    // gives the architecture (then it is a checkpoint, e.g. compressed).
    if let Some(folder) = crate::io::hf::folder_of(path).filter(|_| arch.is_none()) {
        return load_folder(&folder, options);
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
        return Ok(Loaded {
            sharding: sharding_of(&ckpt, &bound.network),
            network: bound.network,
            stored_masks: bound.stored_masks,
            files,
            tokens: None,
            folder_checkpoint: None,
            hash: Hash::of(HashSource::Checkpoint(Some(ckpt))),
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
        hash: Hash::of(HashSource::File(path.to_path_buf())),
        sharding: None,
        tokens: None,
        folder_checkpoint: None,
    })
}

/// Which shard holds each layer's weight, for a sharded checkpoint.
fn sharding_of(ckpt: &Checkpoint, net: &Network) -> Option<crate::io::maskfile::Sharding> {
    (ckpt.shards.len() > 1).then(|| crate::io::maskfile::Sharding {
        shards: ckpt.shards.len(),
        shard_of_layer: net
            .layers
            .iter()
            .map(|l| ckpt.shard_of(&l.name).unwrap_or(0))
            .collect(),
    })
}

/// A Hugging Face folder: the architecture from config.json, the weights
/// (and any `*_mask` partners) from its safetensors.
fn load_folder(folder: &Path, options: &ReadOptions) -> Result<Loaded> {
    let m = crate::io::hf::load(folder, options)?;
    let bound = m.checkpoint.bind(m.network)?;
    let mut files = vec![m.config_path.clone()];
    files.extend(m.checkpoint.shards.iter().cloned());
    if m.checkpoint.shards.len() > 1 {
        files.push(m.checkpoint.path.clone());
    }
    Ok(Loaded {
        sharding: sharding_of(&m.checkpoint, &bound.network),
        network: bound.network,
        stored_masks: bound.stored_masks,
        hash: Hash::of(HashSource::Checkpoint(None)),
        files,
        tokens: m.tokens,
        folder_checkpoint: Some(m.checkpoint),
    })
}
