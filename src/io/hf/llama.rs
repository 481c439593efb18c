//! The Llama family from its `config.json`: Llama, Mistral and Qwen2
//! (`LlamaForCausalLM` and the bare `LlamaModel`, likewise for the others).
//!
//! Pre-norm decoder blocks: RMSNorm, self-attention with grouped-query heads
//! and RoPE under a causal mask (a sliding window where `layer_types` or
//! `use_sliding_window` asks for one), RMSNorm, SwiGLU MLP
//! `down(silu(gate x) * up x)`; a final RMSNorm and the LM head, tied to the
//! token embedding when `tie_word_embeddings` is set. q/k/v/o and MLP biases
//! are read where the shards hold them (Qwen2's q/k/v, `attention_bias`,
//! `mlp_bias`), and a config that promises one the shards lack is an error.
//!
//! ```no_run
//! let m = maskforge::io::hf::load("fixtures/hf/llama".as_ref(), &Default::default()).unwrap();
//! assert!(m.network.layer_index("model.layers.0.mlp.gate_proj.weight").is_some());
//! ```

use crate::error::Result;
use crate::graph::op::Binary;
use crate::graph::ValueId;
use crate::io::hf::blocks::{Bias, Heads, MaskKind, Stored, Tx};
use crate::io::hf::config::Config;
use crate::io::hf::rope::Rope;
use crate::io::hf::{Family, Output};

/// The sizes one block needs.
struct Shape {
    hidden: usize,
    heads: Heads,
    intermediate: usize,
    eps: f64,
    act: String,
    attention_bias: bool,
    mlp_bias: bool,
}

pub fn family(config: &Config) -> Result<Family> {
    Ok(Family {
        prefixes: vec!["model.", ""],
        probe: "embed_tokens.weight".into(),
        hidden: config.usize(&["hidden_size"])?,
        vocab: config.usize(&["vocab_size"])?,
    })
}

pub fn build(tx: &mut Tx, config: &Config, x: ValueId) -> Result<Vec<Output>> {
    let hidden = config.usize(&["hidden_size"])?;
    let query = config.usize(&["num_attention_heads"])?;
    let kv = config.opt_usize(&["num_key_value_heads"])?.unwrap_or(query);
    let dim = config.opt_usize(&["head_dim"])?.unwrap_or(hidden / query);
    let shape = Shape {
        hidden,
        heads: Heads { query, kv, dim },
        intermediate: config.usize(&["intermediate_size"])?,
        eps: config.f64_or(&["rms_norm_eps"], 1e-6)?,
        act: config.str_or(&["hidden_act"], "silu")?.to_string(),
        attention_bias: config.opt_bool(&["attention_bias"])?.unwrap_or(false),
        mlp_bias: config.opt_bool(&["mlp_bias"])?.unwrap_or(false),
    };
    let rope = Rope::from_config(config, dim)?;
    let layers = config.usize(&["num_hidden_layers"])?;
    let masks = layer_masks(config, layers)?;
    let mut h = x;
    for (i, mask) in masks.into_iter().enumerate() {
        let p = tx.w.backbone(&format!("layers.{i}"));
        h = block(tx, &p, h, &shape, &rope, mask)?;
    }
    let h = tx.rms_norm(h, &tx.w.backbone("norm"), shape.eps)?;
    Ok(vec![lm_head(tx, config, h)?])
}

/// Each layer's attention mask: causal, with the sliding window where the
/// config puts one (`layer_types`, else `use_sliding_window` for the layers
/// from `max_window_layers` on, else Mistral's `sliding_window` alone).
fn layer_masks(config: &Config, layers: usize) -> Result<Vec<MaskKind>> {
    let window = config.opt_usize(&["sliding_window"])?;
    let full = MaskKind::Causal { window: None };
    let sliding = MaskKind::Causal { window };
    if let Some(types) = config.opt_strings(&["layer_types"])? {
        if types.len() != layers {
            return Err(config.error(format!(
                "layer_types lists {} layers, num_hidden_layers is {layers}",
                types.len()
            )));
        }
        return types
            .iter()
            .map(|t| match t.as_str() {
                "full_attention" => Ok(full),
                "sliding_attention" => Ok(sliding),
                other => Err(config.error(format!("layer type '{other}' is not supported"))),
            })
            .collect();
    }
    let kind = match config.opt_bool(&["use_sliding_window"])? {
        Some(false) => full,
        Some(true) => {
            let from = config.opt_usize(&["max_window_layers"])?.unwrap_or(0);
            return Ok((0..layers)
                .map(|i| if i >= from { sliding } else { full })
                .collect());
        }
        None => sliding,
    };
    Ok(vec![kind; layers])
}

fn block(
    tx: &mut Tx,
    p: &str,
    x: ValueId,
    s: &Shape,
    rope: &Rope,
    mask: MaskKind,
) -> Result<ValueId> {
    let h = tx.rms_norm(x, &format!("{p}.input_layernorm"), s.eps)?;
    let a = format!("{p}.self_attn");
    let (q_out, kv_out) = (s.heads.query * s.heads.dim, s.heads.kv * s.heads.dim);
    let proj = |tx: &mut Tx, input: ValueId, name: &str, out: usize| {
        let bias = format!("{a}.{name}.bias");
        tx.linear(
            input,
            &format!("{a}.{name}.weight"),
            bias_of(&bias, s.attention_bias),
            out,
            Stored::OutIn,
        )
    };
    let q = proj(tx, h, "q_proj", q_out)?;
    let k = proj(tx, h, "k_proj", kv_out)?;
    let v = proj(tx, h, "v_proj", kv_out)?;
    let ctx = tx.attention(&a, [q, k, v], s.heads, Some(rope), mask)?;
    let o = proj(tx, ctx, "o_proj", s.hidden)?;
    let x = tx.b.add(&format!("{p}.attn_residual"), &[x, o])?;
    let h = tx.rms_norm(x, &format!("{p}.post_attention_layernorm"), s.eps)?;
    let m = format!("{p}.mlp");
    let mlp = |tx: &mut Tx, input: ValueId, name: &str, out: usize| {
        let bias = format!("{m}.{name}.bias");
        tx.linear(
            input,
            &format!("{m}.{name}.weight"),
            bias_of(&bias, s.mlp_bias),
            out,
            Stored::OutIn,
        )
    };
    let gate = mlp(tx, h, "gate_proj", s.intermediate)?;
    let gate = tx.act(&format!("{m}.act"), gate, &s.act)?;
    let up = mlp(tx, h, "up_proj", s.intermediate)?;
    let gated = tx.b.binary(&format!("{m}.gated"), Binary::Mul, gate, up)?;
    let down = mlp(tx, gated, "down_proj", s.hidden)?;
    tx.b.add(&format!("{p}.mlp_residual"), &[x, down])
}

/// A bias the config promises is required; others are read where stored
/// (Qwen2's q/k/v biases are not announced in its config).
fn bias_of(name: &str, promised: bool) -> Bias<'_> {
    if promised {
        Bias::Required(name)
    } else {
        Bias::IfStored(name)
    }
}

/// `lm_head.weight`, or the token embedding when tied; none for a bare model.
fn lm_head(tx: &mut Tx, config: &Config, h: ValueId) -> Result<Output> {
    let vocab = config.usize(&["vocab_size"])?;
    let stored = tx.w.has("lm_head.weight");
    let bare = config
        .architecture()
        .is_some_and(|a| a.ends_with("Model") && !a.ends_with("ForCausalLM"));
    if bare && !stored {
        return Ok((h, "last_hidden_state"));
    }
    let tied = config.opt_bool(&["tie_word_embeddings"])?.unwrap_or(false);
    let head = if stored || !tied {
        "lm_head.weight".to_string()
    } else {
        tx.w.backbone("embed_tokens.weight")
    };
    let logits = tx.linear(h, &head, Bias::None, vocab, Stored::OutIn)?;
    tx.dense_by_default.push(head);
    Ok((logits, "logits"))
}
