//! safetensors checkpoints: single files and sharded `*.safetensors.index.json`,
//! memory-mapped, bound onto an architecture (`--arch`).
//!
//! Binding is by name first (PyTorch state-dict keys, ONNX initializer names);
//! when no layer name matches, weights are bound in storage order and every
//! shape must agree, so a mismatch is reported instead of guessed around.
//! Pruned PyTorch modules (`<p>.weight_orig` + `<p>.weight_mask`) are read as
//! weight and mask. Without an architecture, a plain MLP chain is inferred
//! when the tensors leave no doubt about it.
//!
//! Sparse weights compressed by compressed-tensors (`sparse-bitmask`,
//! `sparse-24-bitmask`; the format from the `config.json` beside the
//! checkpoint, else from the tensors) are bound under their dense names, with
//! their bitmask as the mask: see [`crate::io::compressed_tensors`]. A folder
//! holding `config.json` and `model.safetensors` (or its
//! `model.safetensors.index.json`) opens like the file.
//!
//! ```no_run
//! use std::path::Path;
//! let ckpt = maskforge::io::checkpoint::Checkpoint::open(Path::new("model.safetensors")).unwrap();
//! let arch = maskforge::zoo::build("lenet300", 0).unwrap();
//! let bound = ckpt.bind(arch).unwrap();
//! println!("{} layers bound", bound.network.layers.len());
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::graph::op::Activation;
use crate::graph::tensor::{ConstTensor, DType, SharedBytes};
use crate::graph::{Network, NetworkBuilder};
use crate::io::compressed_tensors::{self, Compressed};
use crate::mask::MaskSet;

/// One stored tensor: data plus its position in storage order.
#[derive(Clone, Debug)]
pub struct Entry {
    pub tensor: ConstTensor,
    /// (shard number, byte offset): the order tensors were written in.
    pub order: (usize, usize),
}

/// All tensors of a checkpoint, by key.
pub struct Checkpoint {
    pub path: PathBuf,
    /// The files holding the data (the file itself, or every shard).
    pub shards: Vec<PathBuf>,
    pub tensors: BTreeMap<String, Entry>,
    /// Weights stored compressed (compressed-tensors), by dense name; their
    /// parts stay in `tensors` too.
    pub compressed: Compressed,
}

/// A checkpoint bound to an architecture.
pub struct Bound {
    pub network: Network,
    /// Masks stored next to the weights (`*_mask`), if the checkpoint had them.
    pub stored_masks: Option<MaskSet>,
}

fn dtype(d: Dtype, what: &str) -> Result<DType> {
    Ok(match d {
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        Dtype::I8 => DType::I8,
        Dtype::U8 => DType::U8,
        Dtype::BOOL => DType::Bool,
        other => return Err(Error::input(format!("{what}: unsupported dtype {other:?}"))),
    })
}

impl Checkpoint {
    /// Open a `.safetensors` file, a `*.safetensors.index.json` or a folder
    /// with `model.safetensors` (or `model.safetensors.index.json`); a
    /// `config.json` beside it declares any compressed-tensors sparse format.
    pub fn open(path: &Path) -> Result<Self> {
        let file = if path.is_dir() {
            folder_checkpoint(path)?
        } else {
            path.to_path_buf()
        };
        let beside = file.parent().unwrap_or(Path::new(".")).join("config.json");
        // A config.json that does not parse matters only to a checkpoint
        // with compressed weights.
        let (config, unreadable) = match beside.is_file().then(|| read_json(&beside)) {
            Some(Ok(v)) => (Some(v), None),
            Some(Err(e)) => (None, Some(e)),
            None => (None, None),
        };
        let mut ckpt = Self::open_with_config(&file, config.as_ref())?;
        if let Some(e) = unreadable.filter(|_| !ckpt.compressed.is_empty()) {
            return Err(e);
        }
        ckpt.path = path.to_path_buf();
        Ok(ckpt)
    }

    /// Open a `.safetensors` file or a `*.safetensors.index.json` with the
    /// parsed `config.json` of its model, if any (for its compressed-tensors
    /// `sparsity_config`; without one, compressed weights are recognised by
    /// their tensors). The entry point of a Hugging Face folder reader.
    pub fn open_with_config(path: &Path, config: Option<&serde_json::Value>) -> Result<Self> {
        let name = path.to_string_lossy();
        let shards: Vec<PathBuf> = if name.to_ascii_lowercase().ends_with(".json") {
            shard_list(path)?
        } else {
            vec![path.to_path_buf()]
        };
        let mut tensors = BTreeMap::new();
        for (si, shard) in shards.iter().enumerate() {
            let buf = crate::io::fs::mmap(shard)?;
            read_shard(shard, si, buf, &mut tensors)?;
        }
        if tensors.is_empty() {
            return Err(Error::input(format!(
                "{name}: the checkpoint holds no tensors"
            )));
        }
        let sparse = match config {
            Some(c) => {
                let beside = path.parent().unwrap_or(Path::new(".")).join("config.json");
                compressed_tensors::sparse_config(c, &beside.display().to_string())?
            }
            None => None,
        };
        let compressed = Compressed::find(&tensors, sparse.as_ref(), &name)?;
        Ok(Self {
            path: path.to_path_buf(),
            shards,
            tensors,
            compressed,
        })
    }

    /// SHA-256 over every tensor's name, dtype, shape and bytes, in name
    /// order: the same for a checkpoint however it is split into shards.
    pub fn content_sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (name, e) in &self.tensors {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update(format!("{:?}{:?}", e.tensor.dtype(), e.tensor.shape).as_bytes());
            e.tensor.hash_bytes(&mut h);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The shard holding tensor `name` (or `name_orig`, or its compressed values).
    pub fn shard_of(&self, name: &str) -> Option<usize> {
        self.tensors
            .get(name)
            .or_else(|| self.tensors.get(&format!("{name}_orig")))
            .or_else(|| self.compressed.weights.get(name).map(|c| &c.entry))
            .map(|e| e.order.0)
    }

    /// A single-file checkpoint held in memory (`name` is used in messages).
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Self> {
        let path = PathBuf::from(name);
        let mut tensors = BTreeMap::new();
        read_shard(&path, 0, std::sync::Arc::new(bytes), &mut tensors)?;
        if tensors.is_empty() {
            return Err(Error::input(format!(
                "{name}: the checkpoint holds no tensors"
            )));
        }
        let compressed = Compressed::find(&tensors, None, name)?;
        Ok(Self {
            shards: vec![path.clone()],
            path,
            tensors,
            compressed,
        })
    }

    /// Bind the weights onto `arch` (by name, else by storage order and shape).
    pub fn bind(&self, arch: Network) -> Result<Bound> {
        let by_name = arch
            .layers
            .iter()
            .any(|l| self.weight_entry(&l.name).is_some());
        if by_name {
            self.bind_by_name(arch)
        } else {
            self.bind_by_order(arch)
        }
    }

    /// The weight stored under `name`, or under `name_orig` (PyTorch pruning),
    /// or compressed.
    fn weight_entry(&self, name: &str) -> Option<(&Entry, Option<&Entry>)> {
        if let Some(e) = self.tensors.get(name) {
            return Some((e, None));
        }
        if let Some(c) = self.compressed.weights.get(name) {
            return Some((&c.entry, None));
        }
        let orig = self.tensors.get(&format!("{name}_orig"))?;
        Some((orig, self.tensors.get(&format!("{name}_mask"))))
    }

    fn bind_by_name(&self, mut arch: Network) -> Result<Bound> {
        let what = self.path.display().to_string();
        let mut entries = Vec::with_capacity(arch.layers.len());
        for l in &arch.layers {
            let (w, m) = self.weight_entry(&l.name).ok_or_else(|| {
                Error::input(format!(
                    "{what}: weight '{}' is missing from the checkpoint",
                    l.name
                ))
            })?;
            check_shape(&what, &l.name, &w.tensor.shape, &l.stored_shape)?;
            entries.push((w, m));
        }
        // Stored masks only when some `_mask` partner exists: then layers
        // without one take their weights' zeros. Otherwise no weight is read.
        let any_mask = entries.iter().any(|(_, m)| m.is_some())
            || arch
                .layers
                .iter()
                .any(|l| self.compressed.weights.contains_key(&l.name));
        let mut masks = Vec::new();
        for (l, (w, m)) in arch.layers.iter().zip(&entries) {
            arch.params.insert(&l.name, w.tensor.clone());
            if any_mask {
                masks.push(match self.compressed.weights.get(&l.name) {
                    Some(c) => l.canonical_from_stored(&c.mask()),
                    None => layer_mask(&what, l, *m, Some(&w.tensor))?.0,
                });
            }
        }
        let others: Vec<(String, Vec<usize>)> = arch
            .params
            .iter()
            .filter(|(n, _)| arch.layer_index(n).is_none())
            .map(|(n, t)| (n.clone(), t.shape.clone()))
            .collect();
        for (name, shape) in others {
            if let Some(e) = self.tensors.get(&name) {
                if e.tensor.numel() != shape.iter().product::<usize>() {
                    return Err(Error::input(format!(
                        "{what}: '{name}' has shape {:?}, the architecture needs {shape:?}",
                        e.tensor.shape
                    )));
                }
                arch.params.insert(&name, e.tensor.clone());
            }
        }
        Ok(Bound {
            network: arch,
            stored_masks: any_mask.then_some(MaskSet { layers: masks }),
        })
    }

    /// Masks from `<w>_mask` partners of `<w>_orig` weights, when any exist.
    fn partner_masks(&self, net: &Network) -> Result<Option<MaskSet>> {
        let what = self.path.display().to_string();
        // Most checkpoints have no `_mask` partners: then no weight is read here.
        if self.compressed.is_empty() && !self.tensors.keys().any(|k| k.ends_with("_mask")) {
            return Ok(None);
        }
        let mut any = false;
        let layers = net
            .layers
            .iter()
            .map(|l| {
                if let Some(c) = self.compressed.weights.get(&l.name) {
                    any = true;
                    return Ok(l.canonical_from_stored(&c.mask()));
                }
                let partner = l
                    .name
                    .strip_suffix("_orig")
                    .and_then(|p| self.tensors.get(&format!("{p}_mask")));
                let (bits, stored) = layer_mask(&what, l, partner, net.params.get(&l.name))?;
                any |= stored;
                Ok(bits)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(any.then_some(MaskSet { layers }))
    }

    /// Weight-like tensors (rank >= 2, floats; compressed ones by their
    /// values' place) in storage order.
    fn weights_in_order(&self) -> Vec<(&String, &Entry)> {
        let mut v: Vec<_> = self
            .tensors
            .iter()
            .filter(|(k, _)| !self.compressed.is_part(k))
            .chain(self.compressed.weights.iter().map(|(k, c)| (k, &c.entry)))
            .filter(|(k, e)| {
                e.tensor.shape.len() >= 2 && e.tensor.dtype().is_float() && !k.ends_with("_mask")
            })
            .collect();
        v.sort_by_key(|(_, e)| e.order);
        v
    }

    fn bind_by_order(&self, mut arch: Network) -> Result<Bound> {
        let what = self.path.display().to_string();
        let ws = self.weights_in_order();
        if ws.len() != arch.layers.len() {
            return Err(Error::input(format!(
                "{what}: no weight name matches the architecture, and the checkpoint has {} weight tensors for {} layers",
                ws.len(),
                arch.layers.len()
            )));
        }
        for (l, (k, e)) in arch.layers.iter_mut().zip(&ws) {
            if e.tensor.shape != l.stored_shape {
                return Err(Error::input(format!(
                    "{what}: matching by order, '{k}' has shape {:?} but layer '{}' needs {:?}",
                    e.tensor.shape, l.name, l.stored_shape
                )));
            }
            l.name = (*k).clone();
        }
        let nodes_weights: Vec<(usize, String)> = arch
            .layers
            .iter()
            .map(|l| (l.node, l.name.clone()))
            .collect();
        for (node, name) in nodes_weights {
            if let crate::graph::Op::Conv { weight, .. } | crate::graph::Op::Dense { weight, .. } =
                &mut arch.nodes[node].op
            {
                *weight = name;
            }
        }
        for (k, e) in &ws {
            arch.params.insert(*k, e.tensor.clone());
        }
        let stored_masks = self.partner_masks(&arch)?;
        Ok(Bound {
            network: arch,
            stored_masks,
        })
    }

    /// Infer a plain ReLU MLP from `[out, in]` matrices whose sizes chain in
    /// storage order; anything else needs `--arch`.
    pub fn infer_chain(&self) -> Result<Bound> {
        let what = self.path.display().to_string();
        let ws = self.weights_in_order();
        let need_arch = |why: String| {
            Error::Architecture(format!(
                "{what}: cannot infer the architecture ({why}); give the architecture as model.onnx or zoo:NAME"
            ))
        };
        if ws.is_empty() {
            return Err(need_arch("no weight matrices".into()));
        }
        if let Some((k, _)) = ws.iter().find(|(_, e)| e.tensor.shape.len() != 2) {
            return Err(need_arch(format!("'{k}' is not a matrix")));
        }
        for pair in ws.windows(2) {
            let (a, b) = (&pair[0].1.tensor.shape, &pair[1].1.tensor.shape);
            if b[1] != a[0] {
                return Err(need_arch(format!(
                    "'{}' {a:?} does not feed '{}' {b:?}",
                    pair[0].0, pair[1].0
                )));
            }
        }
        let mut b = NetworkBuilder::new("chain");
        let mut x = b.input("input", vec![ws[0].1.tensor.shape[1]])?;
        for (i, (k, e)) in ws.iter().enumerate() {
            let bias_key = k.strip_suffix("weight").map(|p| format!("{p}bias"));
            let bias = bias_key.as_ref().and_then(|bk| {
                self.tensors
                    .get(bk)
                    .map(|be| (bk.as_str(), be.tensor.clone()))
            });
            x = b.dense(&format!("dense{i}"), x, k, e.tensor.clone(), bias)?;
            if i + 1 < ws.len() {
                x = b.activation(&format!("relu{i}"), x, Activation::Relu);
            }
        }
        b.output(x);
        let network = b.finish()?;
        let stored_masks = self.partner_masks(&network)?;
        Ok(Bound {
            network,
            stored_masks,
        })
    }
}

/// A layer's canonical mask: from its stored `_mask` partner when there is
/// one (second value `true`), else from the zeros of its weight.
fn layer_mask(
    what: &str,
    l: &crate::graph::Layer,
    partner: Option<&Entry>,
    weight: Option<&ConstTensor>,
) -> Result<(crate::bitset::BitSet, bool)> {
    let (stored, from_partner) = match (partner, weight) {
        (Some(m), _) => {
            check_shape(
                what,
                &format!("{}_mask", l.name),
                &m.tensor.shape,
                &l.stored_shape,
            )?;
            (m.tensor.nonzero_mask(), true)
        }
        (None, Some(w)) => (w.nonzero_mask(), false),
        (None, None) => (crate::bitset::BitSet::full(l.numel()), false),
    };
    Ok((l.canonical_from_stored(&stored), from_partner))
}

fn check_shape(what: &str, name: &str, have: &[usize], need: &[usize]) -> Result<()> {
    if have != need {
        return Err(Error::input(format!(
            "{what}: '{name}' has shape {have:?} in the checkpoint but the architecture needs {need:?}"
        )));
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let what = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::input(format!("{what}: cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| Error::input(format!("{what}: not valid JSON: {e}")))
}

/// The checkpoint of a model folder: `model.safetensors.index.json` when
/// there is one, else `model.safetensors`.
fn folder_checkpoint(dir: &Path) -> Result<PathBuf> {
    ["model.safetensors.index.json", "model.safetensors"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::input(format!(
                "{}: a model folder needs model.safetensors or model.safetensors.index.json",
                dir.display()
            ))
        })
}

fn shard_list(index: &Path) -> Result<Vec<PathBuf>> {
    let what = index.display().to_string();
    let text = std::fs::read_to_string(index)
        .map_err(|e| Error::input(format!("{what}: cannot read: {e}")))?;
    let files = parse_index(&text, &what)?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
    if let Some(missing) = paths.iter().find(|p| !p.exists()) {
        return Err(Error::input(format!(
            "{what}: shard {} does not exist",
            missing.display()
        )));
    }
    Ok(paths)
}

/// The shard files named by a `*.safetensors.index.json`, sorted, each
/// once; a path leaving the index's folder is refused.
pub fn parse_index(text: &str, what: &str) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::input(format!("{what}: not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::input(format!("{what}: no \"weight_map\" object")))?;
    let mut files: Vec<String> = Vec::new();
    for (k, f) in map {
        let f = f
            .as_str()
            .ok_or_else(|| Error::input(format!("{what}: shard of '{k}' is not a string")))?;
        if Path::new(f).is_absolute() || f.contains("..") {
            return Err(Error::input(format!(
                "{what}: shard path '{f}' must stay in the index's folder"
            )));
        }
        if !files.iter().any(|x| x == f) {
            files.push(f.to_string());
        }
    }
    files.sort();
    Ok(files)
}

fn read_shard(
    path: &Path,
    si: usize,
    buf: SharedBytes,
    out: &mut BTreeMap<String, Entry>,
) -> Result<()> {
    let what = path.display().to_string();
    let bytes: &[u8] = buf.bytes();
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::input(format!("{what}: not a valid safetensors file: {e}")))?;
    let base = bytes.as_ptr() as usize;
    for (name, view) in st.tensors() {
        let dt = dtype(view.dtype(), &format!("{what}: tensor '{name}'"))?;
        let offset = view.data().as_ptr() as usize - base;
        let t = ConstTensor::from_bytes(
            view.shape().to_vec(),
            dt,
            buf.clone(),
            offset,
            &format!("{what}: '{name}'"),
        )?;
        if out
            .insert(
                name.clone(),
                Entry {
                    tensor: t,
                    order: (si, offset),
                },
            )
            .is_some()
        {
            return Err(Error::input(format!(
                "{what}: tensor '{name}' appears in two shards"
            )));
        }
    }
    Ok(())
}
