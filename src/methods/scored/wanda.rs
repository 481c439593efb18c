//! Wanda (Sun et al. 2024, "A Simple and Effective Pruning Approach for
//! Large Language Models", Eq. 1): the score of weight `W[i, j]` is
//! `|W[i, j]| * ||X_j||_2`, the norm of input feature `j` over every token
//! of the calibration data, and weights compete only within their output
//! row (Sec. 3, "comparison group"): each row of a layer keeps the same
//! share of its weights.
//!
//! The feature norms come from one forward pass of the dense network over
//! the calibration batches (every position of a sequence is a token). Only
//! linear layers have the paper's feature norms; a convolution in the
//! selection is an input error (layers outside it, kept dense, score `|W|`).
//!
//! ```
//! use maskforge::methods::scored::wanda::keep_per_row;
//! // One layer of 2 rows x 3 inputs, 4 weights to keep: 2 per row.
//! let scores = vec![vec![3.0, 1.0, 2.0, 0.5, 0.7, 0.6]];
//! let kept = keep_per_row(&[2], &scores, &[4]).unwrap();
//! assert_eq!(kept[0].ones().collect::<Vec<_>>(), [0, 2, 4, 5]);
//! ```

use crate::autodiff::calibration::Calibration;
use crate::autodiff::executor::{Executor, Mode};
use crate::bitset::BitSet;
use crate::error::{Error, Result};
use crate::graph::{LayerKind, Op};
use crate::methods::select::keep_top_per_layer;

/// `|W| * ||X_j||` for every layer (canonical order); `selected[l]` says
/// which layers are pruned (the others stay dense; they score `|W|`).
pub fn scores(ex: &Executor, cal: &Calibration, selected: &[bool]) -> Result<Vec<Vec<f64>>> {
    let net = ex.network();
    for (l, _) in net.layers.iter().zip(selected).filter(|(_, &s)| s) {
        if l.kind != LayerKind::Dense {
            return Err(Error::input(format!(
                "wanda scores linear layers; '{}' is a convolution (leave it out with --exclude)",
                l.name
            )));
        }
    }
    let mut sq: Vec<Vec<f64>> = net.layers.iter().map(|l| vec![0.0; l.shape[1]]).collect();
    for (x, _) in &cal.batches {
        let rec = ex.record(x, None, Mode::Eval)?;
        for (li, l) in net
            .layers
            .iter()
            .enumerate()
            .filter(|(li, _)| selected[*li])
        {
            let input = net.nodes[l.node].inputs[0];
            let Some(v) = rec.values[input].as_ref() else {
                continue; // not on the way to the logits: no tokens reach it
            };
            let features = l.shape[1];
            let v: Vec<f32> = v
                .flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1()?;
            for row in v.chunks_exact(features) {
                for (s, &a) in sq[li].iter_mut().zip(row) {
                    *s += f64::from(a) * f64::from(a);
                }
            }
        }
    }
    net.layers
        .iter()
        .enumerate()
        .map(|(li, l)| {
            let w = net.canonical_weights(li)?;
            if !selected[li] {
                return Ok(w.iter().map(|x| f64::from(x.abs())).collect());
            }
            let norms: Vec<f64> = sq[li].iter().map(|s| s.sqrt()).collect();
            debug_assert!(matches!(net.nodes[l.node].op, Op::Dense { .. }));
            Ok(w.iter()
                .enumerate()
                .map(|(i, &wi)| f64::from(wi.abs()) * norms[i % l.shape[1]])
                .collect())
        })
        .collect()
}

/// Keep `counts[l]` weights of each layer, spread evenly over its `rows[l]`
/// output rows (the first `counts % rows` rows keep one more), each row
/// keeping its highest scores.
pub fn keep_per_row(rows: &[usize], scores: &[Vec<f64>], counts: &[usize]) -> Result<Vec<BitSet>> {
    scores
        .iter()
        .zip(rows.iter().zip(counts))
        .map(|(s, (&r, &k))| {
            let width = s.len() / r.max(1);
            if k > s.len() {
                return Err(Error::internal("wanda: more kept than weights"));
            }
            let mut out = BitSet::new(s.len());
            for (row, chunk) in s.chunks_exact(width).enumerate() {
                let keep = k / r + usize::from(row < k % r);
                let kept = keep_top_per_layer(&[chunk.to_vec()], &[keep]).remove(0);
                for j in kept.ones() {
                    out.set(row * width + j, true);
                }
            }
            Ok(out)
        })
        .collect()
}
