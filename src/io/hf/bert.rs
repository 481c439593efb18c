//! BERT and RoBERTa from their `config.json` (`BertModel`,
//! `RobertaModel`, and the `*ForMaskedLM` heads).
//!
//! Post-norm encoder blocks: self-attention over every position (q/k/v/o
//! with biases), residual and LayerNorm, then `dense -> act -> dense`,
//! residual and LayerNorm. Position and token-type embeddings are constants
//! added to `inputs_embeds` (token type 0; RoBERTa numbers positions from
//! `pad_token_id + 1`, which assumes no padding tokens in the input). The
//! masked-LM decoder is tied to the word embedding.
//!
//! ```no_run
//! let m = maskforge::io::hf::load("fixtures/hf/bert".as_ref(), &Default::default()).unwrap();
//! assert_eq!(m.network.outputs.len(), 2); // last_hidden_state, pooler_output
//! ```

use crate::error::Result;
use crate::graph::tensor::ConstTensor;
use crate::graph::ValueId;
use crate::io::hf::blocks::{Bias, Heads, MaskKind, Stored, Tx};
use crate::io::hf::config::Config;
use crate::io::hf::{Family, Output};

pub fn family(config: &Config) -> Result<Family> {
    let prefix = match config.model_type()? {
        "roberta" => "roberta.",
        _ => "bert.",
    };
    Ok(Family {
        prefixes: vec![prefix, ""],
        probe: "embeddings.word_embeddings.weight".into(),
        hidden: config.usize(&["hidden_size"])?,
        vocab: config.usize(&["vocab_size"])?,
    })
}

pub fn build(tx: &mut Tx, config: &Config, x: ValueId) -> Result<Vec<Output>> {
    let hidden = config.usize(&["hidden_size"])?;
    let query = config.usize(&["num_attention_heads"])?;
    let heads = Heads {
        query,
        kv: query,
        dim: hidden / query,
    };
    let eps = config.f64_or(&["layer_norm_eps"], 1e-12)?;
    let act = config.str_or(&["hidden_act"], "gelu")?.to_string();
    let intermediate = config.usize(&["intermediate_size"])?;
    let mut h = embeddings(tx, config, x, hidden, eps)?;
    for i in 0..config.usize(&["num_hidden_layers"])? {
        let p = tx.w.backbone(&format!("encoder.layer.{i}"));
        h = block(tx, &p, h, heads, eps, &act, intermediate)?;
    }
    heads_on(tx, config, h, hidden, eps, &act)
}

/// `inputs_embeds + token_type[0] + positions`, then LayerNorm.
fn embeddings(
    tx: &mut Tx,
    config: &Config,
    x: ValueId,
    hidden: usize,
    eps: f64,
) -> Result<ValueId> {
    let e = tx.w.backbone("embeddings");
    let types = format!("{e}.token_type_embeddings.weight");
    let mut h = x;
    if tx.w.has(&types) {
        let first = tx.w.get(&types)?.to_f32()?;
        if first.len() < hidden {
            return Err(config.error(format!("'{types}' holds no row for token type 0")));
        }
        let row = ConstTensor::f32(vec![hidden], first[..hidden].to_vec());
        h = tx.add_constant(&format!("{e}.token_type"), h, row)?;
    }
    let offset = match config.model_type()? {
        "roberta" => config.opt_usize(&["pad_token_id"])?.unwrap_or(1) + 1,
        _ => 0,
    };
    let max = config.usize(&["max_position_embeddings"])?;
    let table = format!("{e}.position_embeddings.weight");
    h = tx.add_positions(&format!("{e}.positions"), h, &table, max, offset)?;
    tx.layer_norm(h, &format!("{e}.LayerNorm"), eps, true)
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
    let s = format!("{p}.attention.self");
    let q = tx.dense(x, &format!("{s}.query"), hidden)?;
    let k = tx.dense(x, &format!("{s}.key"), hidden)?;
    let v = tx.dense(x, &format!("{s}.value"), hidden)?;
    let ctx = tx.attention(&s, [q, k, v], heads, None, MaskKind::Full)?;
    let o = format!("{p}.attention.output");
    let a = tx.dense(ctx, &format!("{o}.dense"), hidden)?;
    let a = tx.b.add(&format!("{o}.residual"), &[a, x])?;
    let a = tx.layer_norm(a, &format!("{o}.LayerNorm"), eps, true)?;
    let m = tx.dense(a, &format!("{p}.intermediate.dense"), intermediate)?;
    let m = tx.act(&format!("{p}.intermediate.act"), m, act)?;
    let m = tx.dense(m, &format!("{p}.output.dense"), hidden)?;
    let m = tx.b.add(&format!("{p}.output.residual"), &[m, a])?;
    tx.layer_norm(m, &format!("{p}.output.LayerNorm"), eps, true)
}

/// The task head the architecture names: a masked-LM decoder, or the bare
/// model's last hidden state and, when stored, its pooler.
fn heads_on(
    tx: &mut Tx,
    config: &Config,
    h: ValueId,
    hidden: usize,
    eps: f64,
    act: &str,
) -> Result<Vec<Output>> {
    if config
        .architecture()
        .is_some_and(|a| a.ends_with("ForMaskedLM"))
    {
        return Ok(vec![(
            masked_lm(tx, config, h, hidden, eps, act)?,
            "logits",
        )]);
    }
    let mut outs = vec![(h, "last_hidden_state")];
    if let Some(pooled) = tx.pooler(h, hidden)? {
        outs.push((pooled, "pooler_output"));
    }
    Ok(outs)
}

/// `decoder(norm(act(dense(h)))) + bias`, the decoder tied to the word embedding.
fn masked_lm(
    tx: &mut Tx,
    config: &Config,
    h: ValueId,
    hidden: usize,
    eps: f64,
    act: &str,
) -> Result<ValueId> {
    let vocab = config.usize(&["vocab_size"])?;
    let (transform, norm, bias) = match config.model_type()? {
        "roberta" => ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
        _ => (
            "cls.predictions.transform.dense",
            "cls.predictions.transform.LayerNorm",
            "cls.predictions.bias",
        ),
    };
    let t = tx.dense(h, transform, hidden)?;
    let t = tx.act(&format!("{transform}.act"), t, act)?;
    let t = tx.layer_norm(t, norm, eps, true)?;
    let decoder = tx.w.backbone("embeddings.word_embeddings.weight");
    tx.dense_by_default.push(format!("{transform}.weight"));
    tx.dense_by_default.push(decoder.clone());
    tx.linear(t, &decoder, Bias::Required(bias), vocab, Stored::OutIn)
}
