//! ViT from its `config.json` (`ViTModel`, `ViTForImageClassification`).
//!
//! The patch projection (a convolution with stride = kernel = patch size),
//! the class token prepended as a constant row, learned positions added,
//! then pre-norm encoder blocks (LayerNorm, attention over every position
//! with q/k/v/o biases, residual; LayerNorm, `dense -> act -> dense`,
//! residual), a final LayerNorm and the classifier (or pooler) on the class
//! token. The input is `pixel_values` at the config's `image_size`.
//!
//! ```no_run
//! let m = maskforge::io::hf::load("fixtures/hf/vit".as_ref(), &Default::default()).unwrap();
//! assert_eq!(m.network.value(m.network.inputs[0]).shape, vec![3, 32, 32]);
//! ```

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::graph::op::{IndexMap, Window};
use crate::graph::tensor::ConstTensor;
use crate::graph::{Network, ValueId};
use crate::io::checkpoint::Checkpoint;
use crate::io::hf::blocks::{Heads, MaskKind, Tx};
use crate::io::hf::config::Config;
use crate::io::hf::tokens::TokenEmbedding;
use crate::io::hf::weights::Weights;
use crate::io::hf::Output;
use crate::io::onnx::ReadOptions;

/// The image geometry of a config.
struct Geometry {
    channels: usize,
    image: usize,
    patch: usize,
}

impl Geometry {
    fn patches(&self) -> usize {
        (self.image / self.patch).pow(2)
    }
}

pub fn load(
    config: &Config,
    ckpt: &Checkpoint,
    folder: &Path,
    name: &str,
    options: &ReadOptions,
) -> Result<(Network, Option<TokenEmbedding>)> {
    let g = Geometry {
        channels: config.opt_usize(&["num_channels"])?.unwrap_or(3),
        image: config.usize(&["image_size"])?,
        patch: config.usize(&["patch_size"])?,
    };
    if g.patch == 0 || !g.image.is_multiple_of(g.patch) {
        return Err(config.error("image_size is not a multiple of patch_size"));
    }
    check_shape(options, &g)?;
    let folder = folder.display().to_string();
    let w = Weights::new(
        ckpt,
        &folder,
        &["vit.", ""],
        "embeddings.patch_embeddings.projection.weight",
    )?;
    let mut tx = Tx::new(name, &w, g.patches() + 1);
    let x =
        tx.b.input("pixel_values", vec![g.channels, g.image, g.image])?;
    let hidden = config.usize(&["hidden_size"])?;
    let mut h = embeddings(&mut tx, x, &g, hidden)?;
    let query = config.usize(&["num_attention_heads"])?;
    let heads = Heads {
        query,
        kv: query,
        dim: hidden / query,
    };
    let eps = config.f64_or(&["layer_norm_eps"], 1e-12)?;
    let act = config.str_or(&["hidden_act"], "gelu")?.to_string();
    let intermediate = config.usize(&["intermediate_size"])?;
    for i in 0..config.usize(&["num_hidden_layers"])? {
        let p = tx.w.backbone(&format!("encoder.layer.{i}"));
        h = block(&mut tx, &p, h, heads, eps, &act, intermediate)?;
    }
    let h = tx.layer_norm(h, &tx.w.backbone("layernorm"), eps, true)?;
    let outputs = head(&mut tx, config, h, hidden)?;
    Ok((crate::io::hf::finish(tx, outputs)?, None))
}

fn check_shape(options: &ReadOptions, g: &Geometry) -> Result<()> {
    let want = [1, g.channels, g.image, g.image];
    for (name, shape) in &options.input_shapes {
        if name != "pixel_values" || shape.as_slice() != want {
            return Err(Error::input(format!(
                "--input-shape {name}: this ViT takes pixel_values=1x{}x{}x{} \
                 (position embeddings are not interpolated)",
                g.channels, g.image, g.image
            )));
        }
    }
    Ok(())
}

/// Patches, class token and positions: `[patches + 1, hidden]`.
fn embeddings(tx: &mut Tx, x: ValueId, g: &Geometry, hidden: usize) -> Result<ValueId> {
    let e = tx.w.backbone("embeddings");
    let proj = format!("{e}.patch_embeddings.projection");
    let weight = format!("{proj}.weight");
    let wt =
        tx.w.shaped(&weight, &[hidden, g.channels, g.patch, g.patch])?;
    let bias = format!("{proj}.bias");
    let bt = tx.w.shaped(&bias, &[hidden])?;
    let window = Window {
        stride: [g.patch; 2],
        pads: [0; 4],
        dilation: [1; 2],
    };
    let p =
        tx.b.conv(&proj, x, &weight, wt, Some((&bias, bt)), window, 1)?;
    tx.dense_by_default.push(weight);
    let n = g.patches();
    let flat =
        tx.b.reshape(&format!("{proj}.flatten"), p, vec![hidden, n])?;
    let rows = tx.b.transpose(&format!("{proj}.rows"), flat, vec![1, 0])?;
    let cls = tx.w.values(&format!("{e}.cls_token"), &[1, 1, hidden])?;
    // Row 0 reads the constants (the class token), row r the patch r - 1.
    let sources = (n * hidden) as u32;
    let index = (0..(n + 1) * hidden)
        .map(|i| {
            let (r, c) = (i / hidden, i % hidden);
            if r == 0 {
                sources + c as u32
            } else {
                ((r - 1) * hidden + c) as u32
            }
        })
        .collect();
    let map = IndexMap {
        taps: 1,
        index: Arc::new(index),
        weight: None,
        consts: cls,
    };
    let tokens = tx.b.gather(
        &format!("{e}.cls_concat"),
        &[rows],
        map,
        vec![n + 1, hidden],
    )?;
    let pos =
        tx.w.values(&format!("{e}.position_embeddings"), &[1, n + 1, hidden])?;
    tx.add_constant(
        &format!("{e}.positions"),
        tokens,
        ConstTensor::f32(vec![n + 1, hidden], pos),
    )
}

fn block(
    tx: &mut Tx,
    p: &str,
    x: ValueId,
    heads: Heads,
    eps: f64,
    act: &str,
    intermediate: usize,
) -> Result<ValueId> {
    let hidden = heads.query * heads.dim;
    let h = tx.layer_norm(x, &format!("{p}.layernorm_before"), eps, true)?;
    let s = format!("{p}.attention.attention");
    let q = tx.dense(h, &format!("{s}.query"), hidden)?;
    let k = tx.dense(h, &format!("{s}.key"), hidden)?;
    let v = tx.dense(h, &format!("{s}.value"), hidden)?;
    let ctx = tx.attention(&s, [q, k, v], heads, None, MaskKind::Full)?;
    let a = tx.dense(ctx, &format!("{p}.attention.output.dense"), hidden)?;
    let x = tx.b.add(&format!("{p}.attn_residual"), &[a, x])?;
    let h = tx.layer_norm(x, &format!("{p}.layernorm_after"), eps, true)?;
    let m = tx.dense(h, &format!("{p}.intermediate.dense"), intermediate)?;
    let m = tx.act(&format!("{p}.intermediate.act"), m, act)?;
    let m = tx.dense(m, &format!("{p}.output.dense"), hidden)?;
    tx.b.add(&format!("{p}.mlp_residual"), &[m, x])
}

/// The classifier on the class token, or the bare model's outputs.
fn head(tx: &mut Tx, config: &Config, h: ValueId, hidden: usize) -> Result<Vec<Output>> {
    if tx.w.has("classifier.weight") {
        let labels = tx.w.get("classifier.weight")?.shape[0];
        let cls = tx.row("classifier.class_token", h, 0)?;
        let logits = tx.dense(cls, "classifier", labels)?;
        tx.dense_by_default.push("classifier.weight".into());
        return Ok(vec![(logits, "logits")]);
    }
    if config
        .architecture()
        .is_some_and(|a| a.ends_with("ForImageClassification"))
    {
        tx.w.get("classifier.weight")?;
    }
    let mut outs = vec![(h, "last_hidden_state")];
    if let Some(pooled) = tx.pooler(h, hidden)? {
        outs.push((pooled, "pooler_output"));
    }
    Ok(outs)
}
