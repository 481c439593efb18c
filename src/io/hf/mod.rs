//! Hugging Face folders as models: `config.json` plus `model.safetensors`
//! (or its shards and `model.safetensors.index.json`), no ONNX export.
//!
//! The architecture is built from `config.json` by family (`model_type`):
//! BERT and RoBERTa ([`bert`]), GPT-2 ([`gpt2`]), Llama, Mistral and Qwen2
//! ([`llama`]), ViT ([`vit`]), out of the pieces in [`blocks`]. Weights are
//! bound by their stored names and stay memory-mapped in the shards (bf16,
//! f16 or f32). Text models take `inputs_embeds` (`[seq, hidden]`; the
//! token lookup is [`tokens`]' job at the edge), ViT takes `pixel_values`.
//! The sequence length is [`DEFAULT_SEQUENCE`] unless `--input-shape`
//! gives `inputs_embeds=1xLxH` or `input_ids=1xL`.
//!
//! Embeddings, the LM head (often tied to the embedding), poolers,
//! classifiers and ViT's patch projection are dense by default; the linear
//! layers inside the blocks are what gets pruned.
//!
//! ```no_run
//! let m = maskforge::io::hf::load("fixtures/hf/gpt2".as_ref(), &Default::default()).unwrap();
//! assert_eq!(m.network.inputs.len(), 1);
//! assert!(m.tokens.is_some());
//! ```

pub mod bert;
pub mod blocks;
pub mod config;
pub mod gpt2;
pub mod llama;
pub mod rope;
pub mod tokens;
pub mod vit;
pub mod weights;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::graph::Network;
use crate::io::checkpoint::Checkpoint;
use crate::io::onnx::ReadOptions;

use blocks::Tx;
use config::Config;
use tokens::TokenEmbedding;
use weights::Weights;

/// Tokens per sample when `--input-shape` does not say.
pub const DEFAULT_SEQUENCE: usize = 16;

/// A loaded folder.
pub struct HfModel {
    pub network: Network,
    pub checkpoint: Checkpoint,
    /// The token lookup in front of a text model's graph.
    pub tokens: Option<TokenEmbedding>,
    pub config_path: PathBuf,
}

/// Where a family keeps its backbone and what its input is.
pub struct Family {
    /// The backbone's prefixes in task models and bare ones.
    pub prefixes: Vec<&'static str>,
    /// A backbone tensor every checkpoint of the family has.
    pub probe: String,
    pub hidden: usize,
    pub vocab: usize,
}

/// The folder `path` names, when it is a Hugging Face folder: a directory
/// holding `config.json`, or the `config.json` itself.
pub fn folder_of(path: &Path) -> Option<PathBuf> {
    if path.is_dir() && path.join("config.json").is_file() {
        return Some(path.to_path_buf());
    }
    let is_config = path.file_name().is_some_and(|n| n == "config.json") && path.is_file();
    is_config.then(|| {
        path.parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."))
    })
}

/// Load the folder at `path` (see [`folder_of`]).
pub fn load(path: &Path, options: &ReadOptions) -> Result<HfModel> {
    let folder = folder_of(path).ok_or_else(|| {
        Error::input(format!("{}: not a folder with config.json", path.display()))
    })?;
    let config_path = folder.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| Error::input(format!("{}: cannot read: {e}", config_path.display())))?;
    let config = Config::parse(&text, &config_path.display().to_string())?;
    // The folder itself: Checkpoint finds model.safetensors or its index,
    // and its config.json declares any compressed-tensors format.
    let checkpoint = Checkpoint::open(&folder)?;
    let name = folder
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let (network, tokens) = build(&config, &checkpoint, &folder, &name, options)?;
    Ok(HfModel {
        network,
        checkpoint,
        tokens,
        config_path,
    })
}

/// A value of the network and the name transformers gives that output.
pub type Output = (crate::graph::ValueId, &'static str);

type Builder = fn(&mut Tx, &Config, crate::graph::ValueId) -> Result<Vec<Output>>;

fn build(
    config: &Config,
    ckpt: &Checkpoint,
    folder: &Path,
    name: &str,
    options: &ReadOptions,
) -> Result<(Network, Option<TokenEmbedding>)> {
    let model_type = config.model_type()?;
    let (family, builder): (Family, Builder) = match model_type {
        "bert" | "roberta" => (bert::family(config)?, bert::build),
        "gpt2" => (gpt2::family(config)?, gpt2::build),
        "llama" | "mistral" | "qwen2" => (llama::family(config)?, llama::build),
        "vit" => return vit::load(config, ckpt, folder, name, options),
        other => {
            return Err(config.error(format!(
                "model_type '{other}' is not supported (bert, roberta, gpt2, llama, \
                 mistral, qwen2 and vit are)"
            )))
        }
    };
    let folder_name = folder.display().to_string();
    let w = Weights::new(ckpt, &folder_name, &family.prefixes, &family.probe)?;
    let seq = sequence_length(options, family.hidden)?;
    let table_name = w.backbone(&family.probe);
    let tokens = TokenEmbedding::new(
        &table_name,
        w.shaped(&table_name, &[family.vocab, family.hidden])?,
    )?;
    let mut tx = Tx::new(name, &w, seq);
    let x = tx.b.input("inputs_embeds", vec![seq, family.hidden])?;
    let outputs = builder(&mut tx, config, x)?;
    Ok((finish(tx, outputs)?, Some(tokens)))
}

/// The network with its outputs named, and the weights that stay dense
/// unless asked marked so.
pub(crate) fn finish(tx: Tx, outputs: Vec<Output>) -> Result<Network> {
    let Tx {
        mut b,
        dense_by_default,
        ..
    } = tx;
    for (v, name) in outputs {
        b.rename(v, name);
        b.output(v);
    }
    for name in &dense_by_default {
        b.exclude_by_default(name)?;
    }
    b.finish()
}

/// The sequence length `--input-shape` asks for, else [`DEFAULT_SEQUENCE`].
fn sequence_length(options: &ReadOptions, hidden: usize) -> Result<usize> {
    let mut given = options.input_shapes.iter();
    let Some((name, shape)) = given.next() else {
        return Ok(DEFAULT_SEQUENCE);
    };
    if given.next().is_some() {
        return Err(Error::input(
            "a text model has one input: give --input-shape once (input_ids=1xL)",
        ));
    }
    match (name.as_str(), shape.as_slice()) {
        ("inputs_embeds", [1, l, h]) if *h == hidden && *l > 0 => Ok(*l),
        ("input_ids", [1, l]) if *l > 0 => Ok(*l),
        ("inputs_embeds" | "input_ids", _) => Err(Error::input(format!(
            "--input-shape {name}={}: expected input_ids=1xL or inputs_embeds=1xLx{hidden}",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x")
        ))),
        (other, _) => Err(Error::input(format!(
            "--input-shape {other}: a text model's inputs are input_ids or inputs_embeds"
        ))),
    }
}
