//! The tensors of a Hugging Face folder, looked up by module path.
//!
//! A task model stores its backbone under a prefix (`bert.`, `model.`,
//! `transformer.`, `vit.`) that the bare backbone does not have; the prefix is
//! found once, from the first tensor the family names, so every later lookup
//! is exact and a missing weight is an input error naming it and the folder.
//! Tensors stay memory-mapped in the shards: nothing is read until used.
//!
//! ```no_run
//! use maskforge::io::checkpoint::Checkpoint;
//! use maskforge::io::hf::weights::Weights;
//! let ckpt = Checkpoint::open("llama/model.safetensors.index.json".as_ref()).unwrap();
//! let w = Weights::new(&ckpt, "llama", &["model.", ""], "embed_tokens.weight").unwrap();
//! assert_eq!(w.backbone("norm.weight"), "model.norm.weight");
//! ```

use crate::error::{Error, Result};
use crate::graph::tensor::ConstTensor;
use crate::io::checkpoint::Checkpoint;

pub struct Weights<'a> {
    ckpt: &'a Checkpoint,
    folder: String,
    prefix: String,
}

impl<'a> Weights<'a> {
    /// Find which of `prefixes` the backbone's tensor `probe` is stored under.
    pub fn new(ckpt: &'a Checkpoint, folder: &str, prefixes: &[&str], probe: &str) -> Result<Self> {
        let prefix = prefixes
            .iter()
            .find(|p| ckpt.tensors.contains_key(&format!("{p}{probe}")))
            .ok_or_else(|| {
                Error::input(format!(
                    "{folder}: no tensor '{probe}' (under any of the prefixes {prefixes:?}) \
                     in the safetensors files: not this family's checkpoint?"
                ))
            })?;
        Ok(Self {
            ckpt,
            folder: folder.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// The stored name of backbone tensor `path`.
    pub fn backbone(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// Whether a tensor of that full name is stored (a pruned module's
    /// `<name>_orig` counts).
    pub fn has(&self, name: &str) -> bool {
        self.entry(name).is_some()
    }

    /// The stored tensor, a pruned module's `_orig`, or a compressed-tensors
    /// weight (reconstructed only if its values are read).
    fn entry(&self, name: &str) -> Option<&crate::io::checkpoint::Entry> {
        let t = &self.ckpt.tensors;
        t.get(name)
            .or_else(|| t.get(&format!("{name}_orig")))
            .or_else(|| self.ckpt.compressed.weights.get(name).map(|c| &c.entry))
    }

    /// The tensor of that full name (as stored, still mapped).
    pub fn get(&self, name: &str) -> Result<ConstTensor> {
        self.entry(name).map(|e| e.tensor.clone()).ok_or_else(|| {
            Error::input(format!(
                "{}: weight '{name}' is missing from the safetensors files",
                self.folder
            ))
        })
    }

    /// Like [`Weights::get`], checking the shape.
    pub fn shaped(&self, name: &str, shape: &[usize]) -> Result<ConstTensor> {
        let t = self.get(name)?;
        if t.shape != shape {
            return Err(Error::input(format!(
                "{}: weight '{name}' has shape {:?}, the config implies {shape:?}",
                self.folder, t.shape
            )));
        }
        Ok(t)
    }

    /// A tensor that may be absent (optional biases).
    pub fn optional(&self, name: &str, shape: &[usize]) -> Result<Option<ConstTensor>> {
        if self.has(name) {
            self.shaped(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The tensor as f32 values.
    pub fn values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.shaped(name, shape)?.to_f32()
    }

    pub fn folder(&self) -> &str {
        &self.folder
    }
}
