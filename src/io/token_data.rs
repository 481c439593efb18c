//! Token ids as calibration data for text models (`--data` on a Hugging
//! Face text model): a safetensors file with `input_ids` (`[N, L]`, int64
//! or int32, as a tokenizer writes them), or `synthetic-tokens:N:LEN`, N
//! seeded sequences of LEN ids drawn uniformly from the vocabulary.
//!
//! The ids go through the model's token lookup into the network's
//! `inputs_embeds`; they are also the labels of the next-token loss that
//! SNIP and its kin differentiate (position `t` predicts id `t + 1`).
//!
//! ```
//! use maskforge::io::token_data::TokenData;
//! let d = TokenData::load("synthetic-tokens:3:5", 50, 5, 0).unwrap();
//! assert_eq!((d.samples, d.len), (3, 5));
//! assert!(d.ids.iter().all(|&t| (0..50).contains(&t)));
//! // The sequence length must be the network's.
//! assert!(TokenData::load("synthetic-tokens:3:5", 50, 8, 0).is_err());
//! ```

use std::path::Path;

use rand::Rng;

use crate::autodiff::calibration::Calibration;
use crate::error::{Error, Result};
use crate::io::hf::tokens::TokenEmbedding;
use crate::rng::{stream, stream_key};

/// `samples` sequences of `len` token ids, row-major.
#[derive(Clone, Debug)]
pub struct TokenData {
    pub ids: Vec<i64>,
    pub samples: usize,
    pub len: usize,
}

impl TokenData {
    /// Read `spec` for a model with `vocab` tokens and sequences of `len`.
    pub fn load(spec: &str, vocab: usize, len: usize, seed: u64) -> Result<Self> {
        let d = match spec.strip_prefix("synthetic-tokens:") {
            Some(rest) => synthetic(spec, rest, vocab, seed)?,
            None => read_ids(Path::new(spec))?,
        };
        if d.len != len {
            return Err(Error::input(format!(
                "{spec}: sequences of {} tokens, the model was loaded for {len} \
                 (give --input-shape input_ids=1x{})",
                d.len, d.len
            )));
        }
        if let Some(bad) = d.ids.iter().find(|&&t| t < 0 || t as usize >= vocab) {
            return Err(Error::input(format!(
                "{spec}: token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        Ok(d)
    }

    /// Batches of `batch_size` sequences: inputs `[n, len, hidden]` looked
    /// up in `tokens`, labels the ids `[n, len]`.
    pub fn calibration(
        &self,
        tokens: &TokenEmbedding,
        batch_size: usize,
        device: &candle_core::Device,
    ) -> Result<Calibration> {
        let mut batches = Vec::new();
        let per = self.len;
        for chunk in self.ids.chunks(batch_size.max(1) * per) {
            let n = chunk.len() / per;
            let x = tokens.embed(chunk)?;
            let y: Vec<u32> = chunk.iter().map(|&t| t as u32).collect();
            batches.push((
                candle_core::Tensor::from_vec(x, (n, per, tokens.hidden()), device)?,
                candle_core::Tensor::from_vec(y, (n, per), device)?,
            ));
        }
        Ok(Calibration { batches })
    }
}

fn synthetic(spec: &str, rest: &str, vocab: usize, seed: u64) -> Result<TokenData> {
    let bad = || {
        Error::input(format!(
            "{spec}: expected synthetic-tokens:N:LEN with N, LEN > 0"
        ))
    };
    let (n, len) = rest.split_once(':').ok_or_else(bad)?;
    let n: usize = n.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?;
    let len: usize = len.parse().ok().filter(|&l| l > 0).ok_or_else(bad)?;
    let mut rng = stream(stream_key(seed, "synthetic-tokens", ""));
    let ids = (0..n * len)
        .map(|_| rng.random_range(0..vocab as i64))
        .collect();
    Ok(TokenData {
        ids,
        samples: n,
        len,
    })
}

fn read_ids(p: &Path) -> Result<TokenData> {
    let ck = crate::io::checkpoint::Checkpoint::open(p)?;
    let t = ck
        .tensors
        .get("input_ids")
        .map(|e| &e.tensor)
        .ok_or_else(|| {
            Error::input(format!(
                "{}: no tensor 'input_ids' (token ids [N, L] are expected for a text model)",
                p.display()
            ))
        })?;
    use crate::graph::tensor::DType;
    if !matches!(t.dtype(), DType::I64 | DType::I32) || t.shape.len() != 2 || t.numel() == 0 {
        return Err(Error::input(format!(
            "{}: 'input_ids' must be int64 or int32 [N, L], it is {:?} {:?}",
            p.display(),
            t.dtype(),
            t.shape
        )));
    }
    Ok(TokenData {
        ids: t.to_i64(),
        samples: t.shape[0],
        len: t.shape[1],
    })
}
