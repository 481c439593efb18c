//! GPT-2 from its `config.json` (`GPT2LMHeadModel` and the bare `GPT2Model`).
//!
//! Pre-norm decoder blocks under a causal mask: LayerNorm, the fused
//! `c_attn` projection split into q, k and v, attention, `c_proj`; LayerNorm,
//! `c_fc -> act -> c_proj`. Its linear layers are Conv1D modules that store
//! weights `[in, out]`; masks keep that shape. Learned positions are a
//! constant added to `inputs_embeds`; the LM head is tied to `wte`.
//!
//! ```no_run
//! let m = maskforge::io::hf::load("fixtures/hf/gpt2".as_ref(), &Default::default()).unwrap();
//! let l = &m.network.layers[m.network.layer_index("transformer.h.0.attn.c_attn.weight").unwrap()];
//! assert_eq!(l.stored_shape, vec![32, 96]); // [in, out]
//! ```

use crate::error::Result;
use crate::graph::ValueId;
use crate::io::hf::blocks::{Bias, Heads, MaskKind, Stored, Tx};
use crate::io::hf::config::Config;
use crate::io::hf::{Family, Output};

pub fn family(config: &Config) -> Result<Family> {
    Ok(Family {
        prefixes: vec!["transformer.", ""],
        probe: "wte.weight".into(),
        hidden: config.usize(&["n_embd", "hidden_size"])?,
        vocab: config.usize(&["vocab_size"])?,
    })
}

pub fn build(tx: &mut Tx, config: &Config, x: ValueId) -> Result<Vec<Output>> {
    let hidden = config.usize(&["n_embd", "hidden_size"])?;
    let query = config.usize(&["n_head", "num_attention_heads"])?;
    let heads = Heads {
        query,
        kv: query,
        dim: hidden / query,
    };
    let inner = config.opt_usize(&["n_inner"])?.unwrap_or(4 * hidden);
    let eps = config.f64_or(&["layer_norm_epsilon"], 1e-5)?;
    let act = config
        .str_or(&["activation_function"], "gelu_new")?
        .to_string();
    if config.opt_bool(&["scale_attn_by_inverse_layer_idx"])? == Some(true)
        || config.opt_bool(&["reorder_and_upcast_attn"])? == Some(true)
    {
        return Err(config.error(
            "scale_attn_by_inverse_layer_idx and reorder_and_upcast_attn are not supported",
        ));
    }
    let max = config.usize(&["n_positions", "max_position_embeddings"])?;
    let (node, table) = (tx.w.backbone("positions"), tx.w.backbone("wpe.weight"));
    let mut h = tx.add_positions(&node, x, &table, max, 0)?;
    for i in 0..config.usize(&["n_layer", "num_hidden_layers"])? {
        let p = tx.w.backbone(&format!("h.{i}"));
        h = block(tx, &p, h, heads, eps, &act, inner)?;
    }
    let h = tx.layer_norm(h, &tx.w.backbone("ln_f"), eps, true)?;
    let bare = config.architecture().is_some_and(|a| a == "GPT2Model");
    if bare && !tx.w.has("lm_head.weight") {
        return Ok(vec![(h, "last_hidden_state")]);
    }
    let head = if tx.w.has("lm_head.weight") {
        "lm_head.weight".to_string()
    } else {
        tx.w.backbone("wte.weight")
    };
    let vocab = config.usize(&["vocab_size"])?;
    let logits = tx.linear(h, &head, Bias::None, vocab, Stored::OutIn)?;
    tx.dense_by_default.push(head);
    Ok(vec![(logits, "logits")])
}

fn block(
    tx: &mut Tx,
    p: &str,
    x: ValueId,
    heads: Heads,
    eps: f64,
    act: &str,
    inner: usize,
) -> Result<ValueId> {
    let hidden = heads.query * heads.dim;
    let h = tx.layer_norm(x, &format!("{p}.ln_1"), eps, true)?;
    let qkv = conv1d(tx, h, &format!("{p}.attn.c_attn"), 3 * hidden)?;
    let q = tx.columns(&format!("{p}.attn.q"), qkv, 0, hidden)?;
    let k = tx.columns(&format!("{p}.attn.k"), qkv, hidden, hidden)?;
    let v = tx.columns(&format!("{p}.attn.v"), qkv, 2 * hidden, hidden)?;
    let causal = MaskKind::Causal { window: None };
    let ctx = tx.attention(&format!("{p}.attn"), [q, k, v], heads, None, causal)?;
    let a = conv1d(tx, ctx, &format!("{p}.attn.c_proj"), hidden)?;
    let x = tx.b.add(&format!("{p}.attn_residual"), &[a, x])?;
    let h = tx.layer_norm(x, &format!("{p}.ln_2"), eps, true)?;
    let m = conv1d(tx, h, &format!("{p}.mlp.c_fc"), inner)?;
    let m = tx.act(&format!("{p}.mlp.act"), m, act)?;
    let m = conv1d(tx, m, &format!("{p}.mlp.c_proj"), hidden)?;
    tx.b.add(&format!("{p}.mlp_residual"), &[x, m])
}

/// A Conv1D module: weight `[in, out]`, bias `[out]`.
fn conv1d(tx: &mut Tx, x: ValueId, prefix: &str, out: usize) -> Result<ValueId> {
    tx.linear(
        x,
        &format!("{prefix}.weight"),
        Bias::Required(&format!("{prefix}.bias")),
        out,
        Stored::InOut,
    )
}
