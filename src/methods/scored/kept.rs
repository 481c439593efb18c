//! The scores of an iterative round held for the kept weights only.
//!
//! Why: SynFlow prunes for good (a pruned weight carries no flow, scores 0
//! and never comes back), and its rounds go down the exponential schedule,
//! so at 100x the average round keeps about a fifth of the weights. Every
//! per-round pass over all of them (15 M scores for VGG-16: the products,
//! the overflow check, the global selection, the new bitsets) was most of
//! a 100-round run; over the kept ones only it costs what they do.
//!
//! [`Kept`] gives the masks of [`crate::methods::select::keep_top`] on
//! every weight's score (the pruned ones at 0), bit for bit: the threshold
//! is selected among the positive scores, which are all kept ones, and a
//! weight outside the masks is never above it.
//!
//! ```
//! use maskforge::{bitset::BitSet, mask::MaskSet, methods::scored::kept::Kept};
//! let masks = MaskSet { layers: vec![BitSet::from_fn(4, |i| i != 1)] };
//! // The scores of weights 0, 2 and 3 (weight 1 is pruned: 0).
//! let kept = Kept::new(vec![vec![0.5, 0.2, 0.9]]);
//! let cut = kept.keep_top(&masks, 1);
//! assert_eq!(cut.layers[0].ones().collect::<Vec<_>>(), vec![3]);
//! assert_eq!(kept.dense(&masks), vec![vec![0.5, 0.0, 0.2, 0.9]]);
//! ```

use rayon::prelude::*;

use crate::bitset::{ones_of_words, BitSet};
use crate::mask::MaskSet;
use crate::methods::select::TopRanking;

/// Per layer, the scores of the weights some masks keep, in index order;
/// every weight they prune scores 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    pub layers: Vec<Vec<f64>>,
}

impl Kept {
    pub fn new(layers: Vec<Vec<f64>>) -> Self {
        Self { layers }
    }

    /// [`crate::methods::select::keep_top`] of every weight's score: the
    /// `k` highest over all layers, ties at the threshold and zero scores
    /// pruned.
    pub fn keep_top(&self, masks: &MaskSet, k: usize) -> MaskSet {
        self.check(masks);
        let t = TopRanking::among(&self.layers, masks.total()).threshold(k);
        MaskSet {
            layers: masks
                .layers
                .par_iter()
                .zip(&self.layers)
                .map(|(m, s)| keep_above(m, s, t))
                .collect(),
        }
    }

    /// Every weight's score (0 where `masks` prunes).
    pub fn dense(&self, masks: &MaskSet) -> Vec<Vec<f64>> {
        self.check(masks);
        masks
            .layers
            .par_iter()
            .zip(&self.layers)
            .map(|(m, s)| {
                let mut d = vec![0.0; m.len()];
                m.ones().zip(s).for_each(|(i, &x)| d[i] = x);
                d
            })
            .collect()
    }

    fn check(&self, masks: &MaskSet) {
        assert!(
            masks.layers.len() == self.layers.len()
                && masks
                    .layers
                    .iter()
                    .zip(&self.layers)
                    .all(|(m, s)| m.count_ones() == s.len()),
            "kept scores: one score per kept weight expected"
        );
    }
}

/// The weights of `mask` whose score (`scores`, one per kept weight in
/// index order) is above `t`: a word at a time, so that pruned stretches
/// cost a word each.
fn keep_above(mask: &BitSet, scores: &[f64], t: f64) -> BitSet {
    let words = mask.words();
    let mut out = vec![0u64; words.len()];
    let mut s = scores.iter();
    for (wi, &w) in words.iter().enumerate() {
        if w == 0 {
            continue;
        }
        let mut acc = 0u64;
        for (i, &x) in ones_of_words(std::slice::from_ref(&w)).zip(&mut s) {
            if x > t {
                acc |= 1 << i;
            }
        }
        out[wi] = acc;
    }
    BitSet::from_words(out, mask.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::select::keep_top;
    use rand::{Rng, SeedableRng};

    /// Against `keep_top` on every weight's score, with zeros, ties,
    /// zero-scored kept weights and frozen ones (+inf) about, at every count, over layers that
    /// cross word boundaries and are empty or full.
    #[test]
    fn keep_top_equals_the_cut_of_every_score() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
        let lens = [130, 3, 64, 0, 200];
        for trial in 0..10 {
            let masks = MaskSet {
                layers: lens
                    .iter()
                    .enumerate()
                    .map(|(li, &n)| match (trial + li) % 5 {
                        0 => BitSet::full(n),
                        1 => BitSet::new(n),
                        _ => BitSet::from_fn(n, |_| rng.random::<f64>() < 0.4),
                    })
                    .collect(),
            };
            let kept = Kept::new(
                masks
                    .layers
                    .iter()
                    .map(|m| {
                        (0..m.count_ones())
                            .map(|_| match rng.random_range(0..6) {
                                0 => 0.0,
                                1 => f64::INFINITY,
                                _ => (rng.random::<f64>() * 8.0).round(),
                            })
                            .collect()
                    })
                    .collect(),
            );
            let dense = kept.dense(&masks);
            for (d, m) in dense.iter().zip(&masks.layers) {
                assert!((0..m.len()).all(|i| m.get(i) || d[i] == 0.0));
            }
            let total: usize = lens.iter().sum();
            for k in 0..=total + 1 {
                assert_eq!(
                    kept.keep_top(&masks, k).layers,
                    keep_top(&dense, k),
                    "trial {trial} k={k}"
                );
            }
        }
    }
}
