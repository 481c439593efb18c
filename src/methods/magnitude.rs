//! Ranking by weight magnitude and by LAMP, and turning any ranking into
//! masks (global or per-layer), for trained checkpoints (step 2 of the
//! end-to-end pipeline, papers/end-to-end-pruning-pipeline.txt).
//!
//! Threshold rule (Synaptic-Flow's `Pruners/pruners.py`, REFERENCE.md): to
//! keep `k` of `n` scores, prune the `n - k` lowest; the threshold is the
//! `(n - k)`-th smallest score and a weight is kept iff its score is strictly
//! greater, so ties at the threshold and zero scores are pruned (already
//! pruned weights score 0 and stay pruned). Ties can therefore keep slightly
//! fewer than `k`; the report gives the achieved count.
//!
//! LAMP (Lee et al. 2021): within a layer, sort `w^2` ascending; the score of
//! the `u`-th is `w_u^2 / sum_{v >= u} w_v^2`; one global threshold.
//!
//! ```
//! use maskforge::methods::magnitude::{lamp_scores, keep_top};
//! let s = lamp_scores(&[1.0, -3.0, 2.0]);
//! // sorted squares 1, 4, 9: 1/14, 4/13, 9/9
//! assert!((s[0] - 1.0 / 14.0).abs() < 1e-12 && (s[1] - 1.0).abs() < 1e-12);
//! assert_eq!(keep_top(&[vec![0.5, 0.1, 0.9]], 2)[0].ones().collect::<Vec<_>>(), vec![0, 2]);
//! ```

use rayon::prelude::*;

use crate::bitset::BitSet;
use crate::error::{Error, Result};
use crate::graph::Network;
use crate::mask::MaskSet;

/// How a ranking becomes a mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Scope {
    /// One threshold over all layers.
    Global,
    /// Per-layer counts from a quota.
    Layer,
}

crate::named!(Scope, "scope" { Global => "global", Layer => "layer" });

/// Which ranking of trained weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Ranking {
    Magnitude,
    Lamp,
}

/// Canonical-order weights of every layer as f64.
pub fn layer_weights(net: &Network) -> Result<Vec<Vec<f64>>> {
    (0..net.layers.len())
        .map(|li| {
            let v = net.canonical_weights(li)?;
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::input(format!(
                    "weight '{}' has NaN or infinite values: a magnitude ranking of it is meaningless",
                    net.layers[li].name
                )));
            }
            Ok(v.into_iter().map(f64::from).collect())
        })
        .collect()
}

/// LAMP scores of one layer's weights.
pub fn lamp_scores(w: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..w.len()).collect();
    order.sort_by(|&a, &b| (w[a] * w[a]).total_cmp(&(w[b] * w[b])).then(a.cmp(&b)));
    let mut out = vec![0.0; w.len()];
    let mut suffix = 0.0;
    for &i in order.iter().rev() {
        suffix += w[i] * w[i];
        out[i] = if suffix > 0.0 {
            w[i] * w[i] / suffix
        } else {
            0.0
        };
    }
    out
}

/// Scores of every layer for a ranking; `current` zeroes pruned weights.
pub fn scores(net: &Network, ranking: Ranking, current: Option<&MaskSet>) -> Result<Vec<Vec<f64>>> {
    let mut s: Vec<Vec<f64>> = layer_weights(net)?
        .into_iter()
        .map(|w| match ranking {
            Ranking::Magnitude => w.iter().map(|x| x.abs()).collect(),
            Ranking::Lamp => lamp_scores(&w),
        })
        .collect();
    if let Some(m) = current {
        for (layer, bits) in s.iter_mut().zip(&m.layers) {
            for (i, x) in layer.iter_mut().enumerate() {
                if !bits.get(i) {
                    *x = 0.0;
                }
            }
        }
    }
    Ok(s)
}

/// The `(n - k)`-th smallest of `values` (the pruning threshold), or `None`
/// when nothing is to be pruned.
fn threshold(values: &mut [f64], k: usize) -> Option<f64> {
    let prune = values.len().saturating_sub(k);
    if prune == 0 {
        return None;
    }
    let (_, t, _) = values.select_nth_unstable_by(prune - 1, |a, b| a.total_cmp(b));
    Some(*t)
}

fn mask_above(scores: &[f64], t: Option<f64>) -> BitSet {
    let t = t.unwrap_or(0.0).max(0.0);
    BitSet::from_fn(scores.len(), |i| scores[i] > t)
}

/// Keep the `k` highest of signed scores (GraSP): pruned weights must carry
/// `-inf`; ties at the threshold are pruned.
pub fn keep_top_signed(scores: &[Vec<f64>], k: usize) -> Vec<BitSet> {
    let mut all: Vec<f64> = scores.iter().flatten().copied().collect();
    let t = threshold(&mut all, k);
    scores
        .iter()
        .map(|s| {
            BitSet::from_fn(s.len(), |i| {
                s[i] > f64::NEG_INFINITY && t.is_none_or(|t| s[i] > t)
            })
        })
        .collect()
}

/// Keep the `k` highest scores over all layers (one threshold).
///
/// Scores at or below +0 are pruned whatever the threshold (it is clamped
/// to 0) and rank below every positive score, so the threshold is selected
/// among the positive scores only: SynFlow's later rounds, where most
/// scores are 0, select among the few still kept.
pub fn keep_top(scores: &[Vec<f64>], k: usize) -> Vec<BitSet> {
    TopRanking::new(scores).keep(k)
}

/// A ranking ready to be cut at any count: [`keep_top`] for several `k`
/// over the same scores (effective pruning's bisection) counts them once.
pub struct TopRanking<'a> {
    scores: &'a [Vec<f64>],
    hist: PositiveHistogram,
    len: usize,
}

impl<'a> TopRanking<'a> {
    pub fn new(scores: &'a [Vec<f64>]) -> Self {
        Self {
            scores,
            hist: PositiveHistogram::of(scores),
            len: scores.iter().map(Vec::len).sum(),
        }
    }

    /// How many scores are positive (the most any cut keeps).
    pub fn positive(&self) -> usize {
        self.hist.total
    }

    /// [`keep_top`]`(scores, k)`.
    pub fn keep(&self, k: usize) -> Vec<BitSet> {
        let (prune, below) = (self.len.saturating_sub(k), self.len - self.hist.total);
        // Pruning no more than the non-positive scores: the overall threshold
        // is one of them, which the clamp turns into 0.
        let t = (prune > below).then(|| self.hist.nth(self.scores, prune - below - 1));
        self.scores.par_iter().map(|s| mask_above(s, t)).collect()
    }
}

/// Counts of the positive scores by the top 16 bits of their IEEE
/// representation (sign clear: the bit patterns sort as the values do),
/// so that a rank is found by a selection inside one bucket instead of
/// in a copy of every score (118 MB of f64 for VGG-16).
struct PositiveHistogram {
    counts: Vec<usize>,
    total: usize,
}

impl PositiveHistogram {
    const SHIFT: u32 = 47;

    fn bucket(x: f64) -> Option<usize> {
        let b = x.to_bits() as i64;
        (b > 0).then_some((b >> Self::SHIFT) as usize)
    }

    fn of(scores: &[Vec<f64>]) -> Self {
        let counts = scores
            .par_iter()
            .fold(
                || vec![0usize; 1 << 16],
                |mut h, s| {
                    s.iter()
                        .filter_map(|&x| Self::bucket(x))
                        .for_each(|b| h[b] += 1);
                    h
                },
            )
            .reduce(
                || vec![0usize; 1 << 16],
                |mut a, b| {
                    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                    a
                },
            );
        let total = counts.iter().sum();
        Self { counts, total }
    }

    /// The `rank`-th smallest (from 0) positive score; `rank < total`.
    fn nth(&self, scores: &[Vec<f64>], rank: usize) -> f64 {
        let (bucket, below) = bucket_of_rank(&self.counts, rank);
        let mut inside: Vec<f64> = Vec::with_capacity(self.counts[bucket]);
        for s in scores {
            inside.extend(s.iter().filter(|&&x| Self::bucket(x) == Some(bucket)));
        }
        let (_, t, _) = inside.select_nth_unstable_by(rank - below, |a, b| a.total_cmp(b));
        *t
    }
}

/// The bucket of a histogram holding the value of ascending `rank` (from
/// 0), and how many values lie in the buckets below it.
fn bucket_of_rank(counts: &[usize], rank: usize) -> (usize, usize) {
    let (mut below, mut bucket) = (0, 0);
    while below + counts[bucket] <= rank {
        below += counts[bucket];
        bucket += 1;
    }
    (bucket, below)
}

/// Keep `counts[l]` highest scores within each layer.
pub fn keep_top_per_layer(scores: &[Vec<f64>], counts: &[usize]) -> Vec<BitSet> {
    scores
        .iter()
        .zip(counts)
        .map(|(s, &k)| {
            let mut v = s.clone();
            mask_above(s, threshold(&mut v, k))
        })
        .collect()
}

/// Global magnitude pruning that streams the weights: three passes, one
/// layer in memory at a time (pages of memory-mapped checkpoints are released
/// after each pass), a 65 536-bucket histogram of `|w|` to find the
/// threshold's bucket, then an exact selection inside it. Gives the same
/// masks as [`keep_top`] on `|w|`, for checkpoints too large to rank in one
/// array (a billion weights would need 8 GB of f64 scores).
pub fn magnitude_global_streaming(net: &Network, k: usize) -> Result<Vec<BitSet>> {
    let total = net.prunable_count();
    let prune = total.saturating_sub(k);
    let key = |x: f32| (x.abs().to_bits() >> 16) as usize;
    let layer_values = |l: &crate::graph::Layer| -> Result<Vec<f32>> {
        let t = net
            .params
            .get(&l.name)
            .ok_or_else(|| Error::internal(format!("weight '{}' missing", l.name)))?;
        let v = t.to_f32()?;
        t.release();
        Ok(v)
    };
    let mut hist = vec![0usize; 1 << 16];
    for l in &net.layers {
        let v = layer_values(l)?;
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Error::input(format!(
                "weight '{}' has NaN or infinite values: a magnitude ranking of it is meaningless",
                l.name
            )));
        }
        for &x in &v {
            hist[key(x)] += 1;
        }
    }
    let threshold = if prune == 0 {
        0.0
    } else {
        let (bucket, below) = bucket_of_rank(&hist, prune - 1);
        let mut inside: Vec<f32> = Vec::with_capacity(hist[bucket]);
        for l in &net.layers {
            inside.extend(
                layer_values(l)?
                    .iter()
                    .map(|x| x.abs())
                    .filter(|&x| key(x) == bucket),
            );
        }
        let nth = prune - below - 1;
        let (_, t, _) = inside.select_nth_unstable_by(nth, |a, b| a.total_cmp(b));
        *t
    };
    net.layers
        .iter()
        .map(|l| {
            let v = layer_values(l)?;
            let stored = BitSet::from_fn(v.len(), |i| v[i].abs() > threshold && v[i] != 0.0);
            Ok(l.canonical_from_stored(&stored))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lamp_matches_its_formula_on_hand_made_weights() {
        let w = [0.5, -2.0, 1.0, 0.0, -1.5];
        // squares sorted: 0 (i3), .25 (i0), 1 (i2), 2.25 (i4), 4 (i1); total 7.5
        let s = lamp_scores(&w);
        let expect = [0.25 / 7.5, 4.0 / 4.0, 1.0 / 7.25, 0.0, 2.25 / 6.25];
        for (a, b) in s.iter().zip(expect) {
            assert!((a - b).abs() < 1e-12, "{s:?}");
        }
        // The largest weight of every layer scores 1: LAMP never empties a layer first.
        assert_eq!(lamp_scores(&[3.0, 1.0])[0], 1.0);
    }

    #[test]
    fn global_magnitude_equals_sorting_all_weights() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let layers: Vec<Vec<f64>> = [50, 7, 300]
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|_| rng.random::<f64>() - 0.5)
                    .map(f64::abs)
                    .collect()
            })
            .collect();
        for k in [0, 1, 10, 100, 356, 357] {
            let masks = keep_top(&layers, k);
            let mut all: Vec<(f64, usize, usize)> = layers
                .iter()
                .enumerate()
                .flat_map(|(l, s)| s.iter().enumerate().map(move |(i, &x)| (x, l, i)))
                .collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0));
            let kept: usize = masks.iter().map(BitSet::count_ones).sum();
            assert_eq!(kept, k.min(357));
            for &(_, l, i) in &all[..k.min(357)] {
                assert!(masks[l].get(i), "k={k}");
            }
        }
    }

    #[test]
    fn streaming_magnitude_equals_the_in_memory_ranking() {
        let net = crate::zoo::build("lenet300", 1).unwrap();
        let s = scores(&net, Ranking::Magnitude, None).unwrap();
        for k in [1, 100, 26_620, 200_000, 266_200] {
            let a = magnitude_global_streaming(&net, k).unwrap();
            assert_eq!(a, keep_top(&s, k), "k={k}");
        }
    }

    /// The selection among positive scores gives the masks of a threshold
    /// taken over all scores, with zeros, -0, negatives and ties about.
    #[test]
    fn keep_top_equals_the_threshold_over_all_scores() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let pick = [0.0, -0.0, -1.5, 0.25, 0.25, 2.0];
        let layers: Vec<Vec<f64>> = [40, 3, 90]
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|_| match rng.random_range(0..3) {
                        0 => pick[rng.random_range(0..pick.len())],
                        _ => rng.random::<f64>() - 0.3,
                    })
                    .collect()
            })
            .collect();
        let total: usize = layers.iter().map(Vec::len).sum();
        for k in 0..=total + 1 {
            let mut all: Vec<f64> = layers.iter().flatten().copied().collect();
            let t = threshold(&mut all, k);
            let expect: Vec<BitSet> = layers.iter().map(|s| mask_above(s, t)).collect();
            assert_eq!(keep_top(&layers, k), expect, "k={k}");
        }
    }

    #[test]
    fn ties_at_the_threshold_and_zeros_are_pruned() {
        let s = vec![vec![0.0, 1.0, 1.0, 2.0, 0.0]];
        // Keeping 2 prunes 3: the 3rd smallest is 1.0, so both 1.0s go.
        assert_eq!(keep_top(&s, 2)[0].ones().collect::<Vec<_>>(), vec![3]);
        // Keeping everything still drops zero scores.
        assert_eq!(keep_top(&s, 5)[0].count_ones(), 3);
        assert_eq!(
            keep_top_per_layer(&s, &[4])[0].ones().collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }
}
