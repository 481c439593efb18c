//! The token embedding of a text model: a lookup done at the edge.
//!
//! A Hugging Face text model's graph starts from `inputs_embeds`
//! `[seq, hidden]`; turning token ids into those rows is a table lookup that
//! depends on the data, not a connection pattern, so it stays outside the
//! network (the embedding is never pruned, CONVENTIONS "Prunable by
//! default"). Position and token-type embeddings do not depend on the ids
//! and are constants inside the graph.
//!
//! ```
//! use maskforge::graph::tensor::ConstTensor;
//! use maskforge::io::hf::tokens::TokenEmbedding;
//! let table = ConstTensor::f32(vec![3, 2], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
//! let e = TokenEmbedding::new("wte.weight", table).unwrap();
//! assert_eq!(e.embed(&[2, 0]).unwrap(), [4.0, 5.0, 0.0, 1.0]);
//! assert!(e.embed(&[3]).is_err());
//! ```

use crate::error::{Error, Result};
use crate::graph::tensor::ConstTensor;

#[derive(Clone, Debug)]
pub struct TokenEmbedding {
    /// The stored table's name.
    pub name: String,
    /// `[vocab, hidden]`, still memory-mapped.
    pub table: ConstTensor,
}

impl TokenEmbedding {
    pub fn new(name: &str, table: ConstTensor) -> Result<Self> {
        if table.shape.len() != 2 {
            return Err(Error::input(format!(
                "token embedding '{name}' has shape {:?}, expected [vocab, hidden]",
                table.shape
            )));
        }
        Ok(Self {
            name: name.to_string(),
            table,
        })
    }

    pub fn vocab(&self) -> usize {
        self.table.shape[0]
    }

    pub fn hidden(&self) -> usize {
        self.table.shape[1]
    }

    /// The rows of `ids`, concatenated (`[ids.len(), hidden]`).
    pub fn embed(&self, ids: &[i64]) -> Result<Vec<f32>> {
        let h = self.hidden();
        let mut out = Vec::with_capacity(ids.len() * h);
        for &id in ids {
            if id < 0 || id as usize >= self.vocab() {
                return Err(Error::input(format!(
                    "token id {id} is outside the vocabulary of {} ('{}')",
                    self.vocab(),
                    self.name
                )));
            }
            // Only the rows asked for: a 32 000 x 2048 table is 65 M values.
            out.extend(
                self.table
                    .range_f32(id as usize * h..(id as usize + 1) * h)?,
            );
        }
        Ok(out)
    }
}
