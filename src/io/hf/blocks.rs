//! The pieces transformer families are built from, on a [`NetworkBuilder`]:
//! linear layers read from the shards, LayerNorm and RMSNorm, multi-head
//! attention with grouped key/value heads, RoPE and causal or sliding-window
//! masks. Each piece computes what transformers' eager code computes, op for
//! op, so the executor reproduces its logits.
//!
//! Masking is an element map, not an added constant: a masked score is
//! replaced by the constant `f32::MIN` (what transformers adds), so a later
//! position starts no path to an earlier one and effective sparsity sees the
//! causal structure exactly.
//!
//! ```
//! use maskforge::io::hf::blocks::{attention_mask, MaskKind};
//! // Causal with a window of 2: position 2 sees positions 1 and 2.
//! let allowed: Vec<bool> = (0..3).map(|j| attention_mask(MaskKind::Causal { window: Some(2) }, 2, j)).collect();
//! assert_eq!(allowed, [false, true, true]);
//! ```

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::graph::builder::StoredWeight;
use crate::graph::op::{Activation, Binary, IndexMap, Mix, MixKind, Norm, Reduce};
use crate::graph::tensor::ConstTensor;
use crate::graph::{NetworkBuilder, ValueId};
use crate::io::hf::rope::Rope;
use crate::io::hf::weights::Weights;

/// How a linear weight is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// `[out, in]`, torch.nn.Linear.
    OutIn,
    /// `[in, out]`, GPT-2's Conv1D.
    InOut,
}

/// Where a linear layer's bias comes from.
#[derive(Clone, Copy, Debug)]
pub enum Bias<'n> {
    None,
    /// Stored under this name; its absence is an error.
    Required(&'n str),
    /// Used when the shards hold it (families where the config does not say).
    IfStored(&'n str),
}

/// Which key positions a query position may attend to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskKind {
    /// Every position (encoders).
    Full,
    /// Positions up to the query's own; with a window `w`, only the last `w`
    /// of them (`i - j < w`, transformers' sliding window).
    Causal { window: Option<usize> },
}

/// Whether query position `i` reads key position `j`.
pub fn attention_mask(kind: MaskKind, i: usize, j: usize) -> bool {
    match kind {
        MaskKind::Full => true,
        MaskKind::Causal { window } => j <= i && window.is_none_or(|w| i - j < w),
    }
}

/// The shape of one attention block.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub query: usize,
    /// Key/value heads: each serves `query / kv` query heads.
    pub kv: usize,
    pub dim: usize,
}

/// A [`NetworkBuilder`] with the folder's tensors at hand.
pub struct Tx<'w, 'a> {
    pub b: NetworkBuilder,
    pub w: &'w Weights<'a>,
    /// Tokens (or patches) per sample.
    pub seq: usize,
    /// Weights that stay dense unless `--include` names them (heads, embeddings).
    pub dense_by_default: Vec<String>,
}

impl<'w, 'a> Tx<'w, 'a> {
    pub fn new(name: &str, w: &'w Weights<'a>, seq: usize) -> Self {
        Self {
            b: NetworkBuilder::new(name),
            w,
            seq,
            dense_by_default: Vec::new(),
        }
    }

    /// A linear layer `weight` (`[out, in]` or `[in, out]` as stored).
    pub fn linear(
        &mut self,
        x: ValueId,
        weight: &str,
        bias: Bias,
        out: usize,
        stored: Stored,
    ) -> Result<ValueId> {
        let features = *self.b.shape(x).last().unwrap_or(&0);
        let node = weight.strip_suffix(".weight").unwrap_or(weight).to_string();
        let w = match stored {
            Stored::OutIn => {
                StoredWeight::canonical(weight, self.w.shaped(weight, &[out, features])?)
            }
            Stored::InOut => StoredWeight {
                name: weight.to_string(),
                tensor: self.w.shaped(weight, &[features, out])?,
                index: Some(Arc::new(transposed_index(out, features))),
            },
        };
        let bias = match bias {
            Bias::None => None,
            Bias::Required(name) => Some((name, self.w.shaped(name, &[out])?)),
            Bias::IfStored(name) => self.w.optional(name, &[out])?.map(|t| (name, t)),
        };
        self.b.dense_stored(&node, x, w, vec![out, features], bias)
    }

    /// `prefix.weight` (`[out, in]`) with its required bias `prefix.bias`:
    /// the linear layers of BERT, RoBERTa and ViT.
    pub fn dense(&mut self, x: ValueId, prefix: &str, out: usize) -> Result<ValueId> {
        self.linear(
            x,
            &format!("{prefix}.weight"),
            Bias::Required(&format!("{prefix}.bias")),
            out,
            Stored::OutIn,
        )
    }

    /// `tanh(dense(first row of h))`, the encoders' pooler, when the
    /// backbone stores `pooler.dense` (dense unless `--include` names it).
    pub fn pooler(&mut self, h: ValueId, hidden: usize) -> Result<Option<ValueId>> {
        let pooler = self.w.backbone("pooler.dense");
        if !self.w.has(&format!("{pooler}.weight")) {
            return Ok(None);
        }
        let first = self.row(&format!("{pooler}.first_token"), h, 0)?;
        let pooled = self.dense(first, &pooler, hidden)?;
        self.dense_by_default.push(format!("{pooler}.weight"));
        let tanh = Activation::Tanh;
        Ok(Some(self.b.activation(
            &format!("{pooler}.tanh"),
            pooled,
            tanh,
        )))
    }

    /// Register a constant under a fresh name.
    pub fn constant(&mut self, name: &str, t: ConstTensor) -> String {
        self.b.add_param(name, t);
        name.to_string()
    }

    /// `x * c` for a constant scalar.
    pub fn scale(&mut self, name: &str, x: ValueId, c: f32) -> Result<ValueId> {
        let p = self.constant(
            &format!("{name}.factor"),
            ConstTensor::f32(vec![1], vec![c]),
        );
        self.b.norm(name, x, Norm::MulConst(p))
    }

    /// `x + c` for a stored or computed constant broadcast onto `x`.
    pub fn add_constant(&mut self, name: &str, x: ValueId, c: ConstTensor) -> Result<ValueId> {
        let p = self.constant(&format!("{name}.value"), c);
        self.b.norm(name, x, Norm::AddConst(p))
    }

    /// `x + table[offset..offset + seq]`: learned positions, rows of the
    /// stored `[max, hidden]` table `table`, added as a constant.
    pub fn add_positions(
        &mut self,
        node: &str,
        x: ValueId,
        table: &str,
        max: usize,
        offset: usize,
    ) -> Result<ValueId> {
        let (seq, hidden) = (self.seq, *self.b.shape(x).last().unwrap_or(&0));
        if offset + seq > max {
            return Err(Error::input(format!(
                "{}: a sequence of {seq} needs positions up to {}, the table '{table}' has {max}",
                self.w.folder(),
                offset + seq
            )));
        }
        let rows = self.w.values(table, &[max, hidden])?;
        let rows = rows[offset * hidden..(offset + seq) * hidden].to_vec();
        self.add_constant(node, x, ConstTensor::f32(vec![seq, hidden], rows))
    }

    /// LayerNorm over the last axis with stored `weight` and `bias`.
    pub fn layer_norm(
        &mut self,
        x: ValueId,
        prefix: &str,
        eps: f64,
        with_bias: bool,
    ) -> Result<ValueId> {
        let h = *self.b.shape(x).last().unwrap_or(&0);
        let scale = format!("{prefix}.weight");
        let t = self.w.shaped(&scale, &[h])?;
        self.b.add_param(&scale, t);
        let bias = if with_bias {
            let name = format!("{prefix}.bias");
            let t = self.w.shaped(&name, &[h])?;
            self.b.add_param(&name, t);
            Some(name)
        } else {
            None
        };
        let axis = self.b.shape(x).len() - 1;
        self.b.mix(
            prefix,
            x,
            Mix {
                kind: MixKind::Normalize {
                    eps: eps as f32,
                    scale: Some(scale),
                    bias,
                },
                view: None,
                axes: vec![axis],
            },
        )
    }

    /// RMSNorm as Llama writes it: `weight * x / sqrt(mean(x^2) + eps)`.
    pub fn rms_norm(&mut self, x: ValueId, prefix: &str, eps: f64) -> Result<ValueId> {
        let h = *self.b.shape(x).last().unwrap_or(&0);
        let axis = self.b.shape(x).len() - 1;
        let sq = self
            .b
            .binary(&format!("{prefix}.square"), Binary::Mul, x, x)?;
        let mean = self.b.mix(
            &format!("{prefix}.mean"),
            sq,
            Mix {
                kind: MixKind::Reduce {
                    f: Reduce::Mean,
                    keepdims: true,
                },
                view: None,
                axes: vec![axis],
            },
        )?;
        let eps = ConstTensor::f32(vec![1], vec![eps as f32]);
        let var = self.add_constant(&format!("{prefix}.eps"), mean, eps)?;
        let rms = self
            .b
            .activation(&format!("{prefix}.sqrt"), var, Activation::Sqrt);
        let normed = self
            .b
            .binary(&format!("{prefix}.div"), Binary::Div, x, rms)?;
        let scale = format!("{prefix}.weight");
        let t = self.w.shaped(&scale, &[h])?;
        self.b.add_param(&scale, t);
        self.b.norm(prefix, normed, Norm::MulConst(scale))
    }

    /// The activation transformers calls `name` (`hidden_act`).
    pub fn act(&mut self, node: &str, x: ValueId, name: &str) -> Result<ValueId> {
        let a = match name {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "silu" | "swish" => Activation::Silu,
            "relu" => Activation::Relu,
            "tanh" => Activation::Tanh,
            "sigmoid" => Activation::Sigmoid,
            other => {
                return Err(Error::input(format!(
                    "{}: activation '{other}' is not supported",
                    self.w.folder()
                )))
            }
        };
        Ok(self.b.activation(node, x, a))
    }

    /// Columns `from..from + len` of the last axis (a fused projection's part).
    pub fn columns(&mut self, name: &str, x: ValueId, from: usize, len: usize) -> Result<ValueId> {
        let shape = self.b.shape(x).to_vec();
        let width = *shape.last().unwrap_or(&0);
        let rows: usize = shape[..shape.len() - 1].iter().product();
        let index = (0..rows)
            .flat_map(|r| (0..len).map(move |c| (r * width + from + c) as u32))
            .collect();
        let mut out = shape.clone();
        *out.last_mut().unwrap() = len;
        self.b.gather(name, &[x], pure(index), out)
    }

    /// Row `r` of a `[rows, width]` value, as `[width]` (a class token).
    pub fn row(&mut self, name: &str, x: ValueId, r: usize) -> Result<ValueId> {
        let width = self.b.shape(x)[1];
        let index = (0..width).map(|c| (r * width + c) as u32).collect();
        self.b.gather(name, &[x], pure(index), vec![width])
    }

    /// Self-attention over `[seq, hidden]` projections `q`, `k`, `v` to
    /// `[seq, query * dim]` (before the output projection).
    pub fn attention(
        &mut self,
        prefix: &str,
        qkv: [ValueId; 3],
        heads: Heads,
        rope: Option<&Rope>,
        mask: MaskKind,
    ) -> Result<ValueId> {
        let [q, k, v] = qkv;
        let mut q = self.split_heads(&format!("{prefix}.q_heads"), q, heads.query, heads.dim)?;
        let mut k = self.split_heads(&format!("{prefix}.k_heads"), k, heads.kv, heads.dim)?;
        let v = self.split_heads(&format!("{prefix}.v_heads"), v, heads.kv, heads.dim)?;
        if let Some(r) = rope {
            q = self.rotate(&format!("{prefix}.q_rope"), q, r)?;
            k = self.rotate(&format!("{prefix}.k_rope"), k, r)?;
        }
        let k = self.repeat_kv(&format!("{prefix}.k_repeat"), k, heads)?;
        let v = self.repeat_kv(&format!("{prefix}.v_repeat"), v, heads)?;
        let kt = self
            .b
            .transpose(&format!("{prefix}.k_t"), k, vec![0, 2, 1])?;
        let scores = self.b.matmul(&format!("{prefix}.scores"), q, kt)?;
        let scores = self.scale(
            &format!("{prefix}.scaled"),
            scores,
            (heads.dim as f64).powf(-0.5) as f32,
        )?;
        let scores = self.mask(&format!("{prefix}.masked"), scores, mask)?;
        let probs = self
            .b
            .softmax(&format!("{prefix}.softmax"), scores, 2, false)?;
        let ctx = self.b.matmul(&format!("{prefix}.context"), probs, v)?;
        let ctx = self
            .b
            .transpose(&format!("{prefix}.context_t"), ctx, vec![1, 0, 2])?;
        self.b.reshape(
            &format!("{prefix}.merge_heads"),
            ctx,
            vec![self.seq, heads.query * heads.dim],
        )
    }

    /// `[seq, heads * dim]` to `[heads, seq, dim]`.
    fn split_heads(&mut self, name: &str, x: ValueId, heads: usize, dim: usize) -> Result<ValueId> {
        let r = self
            .b
            .reshape(&format!("{name}.reshape"), x, vec![self.seq, heads, dim])?;
        self.b.transpose(name, r, vec![1, 0, 2])
    }

    /// `x * cos + rotate_half(x) * sin` on `[heads, seq, dim]`, where
    /// `rotate_half` maps the halves `(a, b)` to `(-b, a)`.
    fn rotate(&mut self, name: &str, x: ValueId, rope: &Rope) -> Result<ValueId> {
        let shape = self.b.shape(x).to_vec();
        let dim = shape[2];
        let half = dim / 2;
        let n: usize = shape.iter().product();
        let mut index = Vec::with_capacity(n);
        let mut weight = Vec::with_capacity(n);
        for e in 0..n {
            let (row, i) = (e / dim * dim, e % dim);
            if i < half {
                index.push((row + i + half) as u32);
                weight.push(-1.0);
            } else {
                index.push((row + i - half) as u32);
                weight.push(1.0);
            }
        }
        let map = IndexMap {
            taps: 1,
            index: Arc::new(index),
            weight: Some(Arc::new(weight)),
            consts: vec![],
        };
        let rotated = self
            .b
            .gather(&format!("{name}.rotate_half"), &[x], map, shape)?;
        let (cos, sin) = rope.tables(self.seq);
        let cos_name = self.constant(&format!("{name}.cos"), cos);
        let sin_name = self.constant(&format!("{name}.sin"), sin);
        let a = self
            .b
            .norm(&format!("{name}.x_cos"), x, Norm::MulConst(cos_name))?;
        let b = self.b.norm(
            &format!("{name}.rot_sin"),
            rotated,
            Norm::MulConst(sin_name),
        )?;
        self.b.add(name, &[a, b])
    }

    /// Key/value heads `[kv, seq, dim]` to one per query head `[query, seq, dim]`.
    fn repeat_kv(&mut self, name: &str, x: ValueId, heads: Heads) -> Result<ValueId> {
        if heads.kv == heads.query {
            return Ok(x);
        }
        if heads.kv == 0 || !heads.query.is_multiple_of(heads.kv) {
            return Err(Error::input(format!(
                "{}: {} attention heads cannot share {} key/value heads",
                self.w.folder(),
                heads.query,
                heads.kv
            )));
        }
        let group = heads.query / heads.kv;
        let per_head = self.seq * heads.dim;
        let index = (0..heads.query * per_head)
            .map(|e| ((e / per_head / group) * per_head + e % per_head) as u32)
            .collect();
        self.b.gather(
            name,
            &[x],
            pure(index),
            vec![heads.query, self.seq, heads.dim],
        )
    }

    /// Scores `[heads, seq, seq]` with disallowed entries replaced by `f32::MIN`.
    fn mask(&mut self, name: &str, scores: ValueId, kind: MaskKind) -> Result<ValueId> {
        if kind == MaskKind::Full {
            return Ok(scores);
        }
        let shape = self.b.shape(scores).to_vec();
        let n: usize = shape.iter().product();
        let s = self.seq;
        let index = (0..n)
            .map(|e| {
                let (i, j) = (e / s % s, e % s);
                if attention_mask(kind, i, j) {
                    e as u32
                } else {
                    n as u32
                }
            })
            .collect();
        let map = IndexMap {
            taps: 1,
            index: Arc::new(index),
            weight: None,
            consts: vec![f32::MIN],
        };
        self.b.gather(name, &[scores], map, shape)
    }
}

/// Canonical `[out, in]` element to its place in a `[in, out]` tensor.
fn transposed_index(out: usize, inp: usize) -> Vec<u32> {
    (0..out * inp)
        .map(|c| ((c % inp) * out + c / inp) as u32)
        .collect()
}

/// A pure data-movement map, one tap per output element.
fn pure(index: Vec<u32>) -> IndexMap {
    IndexMap {
        taps: 1,
        index: Arc::new(index),
        weight: None,
        consts: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_index_reads_in_out_storage() {
        // canonical [out=2, in=3]; stored [3, 2]: w[o][i] at i * 2 + o.
        assert_eq!(transposed_index(2, 3), [0, 2, 4, 1, 3, 5]);
    }

    #[test]
    fn sliding_window_keeps_the_last_w_positions() {
        let w = MaskKind::Causal { window: Some(3) };
        let seen: Vec<usize> = (0..6).filter(|&j| attention_mask(w, 5, j)).collect();
        assert_eq!(seen, [3, 4, 5]);
        assert!(!attention_mask(MaskKind::Causal { window: None }, 1, 2));
    }
}
