//! Turning a ranking into masks: one threshold over all layers, per-layer
//! counts, signed scores, and the fewest top-ranked weights of which a
//! target number are active. Every method that ranks (magnitude, LAMP, SNIP,
//! GraSP, SynFlow, SNIP-it, neuron scores) cuts through here.
//!
//! Threshold rule (Synaptic-Flow's `Pruners/pruners.py`, REFERENCE.md): to
//! keep `k` of `n` scores, prune the `n - k` lowest; the threshold is the
//! `(n - k)`-th smallest score and a weight is kept iff its score is strictly
//! greater, so ties at the threshold and zero scores are pruned (already
//! pruned weights score 0 and stay pruned). Ties can therefore keep fewer
//! than `k`; reports give the achieved count.
//!
//! Count rule of a one-shot global cut (magnitude, LAMP, SNIP, GraSP with
//! `--scope global`): the reference code prunes `int((1 - d) * N)` of the
//! `N` weights for a density `d` ([`reference_kept`]), so it keeps
//! `N - int((1 - d) N)`, one more than `round(N d)` where `N d` has a
//! fraction below one half (LeNet-300-100 at 1000x: 267, not 266). With the
//! density asked for at hand (the CLI's `--compression`, `--density`,
//! `--sparsity`), [`crate::methods::prune::prune_with`] keeps that count, as
//! SynFlow's rounds do ([`crate::methods::scored::rounds::Counts::Reference`]);
//! library callers that give only a target count (and effective targets,
//! which count active weights) keep that count. When `int((1 - d) N)` is 0
//! the reference prunes nothing at all; we still prune zero scores.
//!
//! ```
//! use maskforge::methods::select::{keep_top, keep_top_per_layer};
//! let s = vec![vec![0.5, 0.1, 0.9], vec![0.3, 0.0]];
//! // The two highest overall: 0.9 and 0.5.
//! assert_eq!(keep_top(&s, 2)[0].ones().collect::<Vec<_>>(), vec![0, 2]);
//! // A tie at the threshold is pruned: keeping 1 of [0.4, 0.4] keeps none.
//! assert_eq!(keep_top(&[vec![0.4, 0.4]], 1)[0].count_ones(), 0);
//! // Zero scores are never kept, whatever the count asked.
//! assert_eq!(keep_top_per_layer(&s, &[1, 2])[1].ones().collect::<Vec<_>>(), vec![0]);
//! ```

use rayon::prelude::*;

use crate::bitset::BitSet;
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

/// How many of `total` weights the reference code keeps at density `d`
/// (Synaptic-Flow's `_global_mask`): it prunes `int((1 - d) * total)`,
/// Python's `int` of a non-negative float truncating.
///
/// ```
/// use maskforge::methods::select::reference_kept;
/// assert_eq!(reference_kept(266_200, 1.0 / 1000.0), 267); // round would give 266
/// assert_eq!(reference_kept(266_200, 1.0 / 10.0), 26_620);
/// ```
pub fn reference_kept(total: usize, d: f64) -> usize {
    total.saturating_sub(((1.0 - d) * total as f64) as usize)
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

/// The cut value of a threshold: scores at or below +0 are pruned whatever
/// it is (none: nothing beyond them).
fn clamped(t: Option<f64>) -> f64 {
    t.unwrap_or(0.0).max(0.0)
}

fn mask_above(scores: &[f64], t: Option<f64>) -> BitSet {
    let t = clamped(t);
    BitSet::from_fn(scores.len(), |i| scores[i] > t)
}

/// Keep the `k` highest of signed scores (GraSP): pruned weights must carry
/// `-inf`; ties at the threshold are pruned.
pub fn keep_top_signed(scores: &[Vec<f64>], k: usize) -> Vec<BitSet> {
    let len: usize = scores.iter().map(Vec::len).sum();
    let prune = len.saturating_sub(k);
    let t = (prune > 0).then(|| nth_smallest(scores, prune - 1));
    scores
        .par_iter()
        .map(|s| {
            BitSet::from_fn(s.len(), |i| {
                s[i] > f64::NEG_INFINITY && t.is_none_or(|t| s[i] > t)
            })
        })
        .collect()
}

/// The `rank`-th smallest (from 0) of all scores in `f64::total_cmp`'s
/// order (what [`threshold`] finds in a copy of them all), found in
/// parallel: counts by the top 16 bits of an order-preserving integer key,
/// then a selection inside the one bucket that holds the rank.
fn nth_smallest(scores: &[Vec<f64>], rank: usize) -> f64 {
    // Negative values: every bit flipped (larger magnitudes sort first);
    // others: the sign bit set. The keys then sort as `total_cmp` does.
    let bucket = |x: f64| {
        let b = x.to_bits();
        let key = if b >> 63 == 1 { !b } else { b | 1 << 63 };
        (key >> 48) as usize
    };
    let counts = chunks(scores)
        .fold(
            || vec![0usize; 1 << 16],
            |mut h, s| {
                s.iter().for_each(|&x| h[bucket(x)] += 1);
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
    let (b, below) = bucket_of_rank(&counts, rank);
    let mut inside: Vec<f64> = chunks(scores)
        .flat_map_iter(|s| s.iter().copied().filter(|&x| bucket(x) == b))
        .collect();
    let (_, t, _) = inside.select_nth_unstable_by(rank - below, |a, b| a.total_cmp(b));
    *t
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
        Self::among(scores, scores.iter().map(Vec::len).sum())
    }

    /// The ranking of `len` scores of which `scores` holds every positive
    /// one and the rest are at or below 0 (an iterative round's scores of
    /// its kept weights: the pruned ones score 0), so that
    /// [`TopRanking::threshold`] is that of all `len`.
    pub fn among(scores: &'a [Vec<f64>], len: usize) -> Self {
        let hist = PositiveHistogram::of(scores);
        assert!(hist.total <= len, "more positive scores than scores");
        Self { scores, hist, len }
    }

    /// How many scores are positive (the most any cut keeps).
    pub fn positive(&self) -> usize {
        self.hist.total
    }

    /// [`keep_top`]`(scores, k)`.
    pub fn keep(&self, k: usize) -> Vec<BitSet> {
        let t = self.threshold(k);
        self.scores
            .par_iter()
            .map(|s| BitSet::from_fn(s.len(), |i| s[i] > t))
            .collect()
    }

    /// The cut of [`keep_top`]`(scores, k)`: a score is kept iff it is
    /// above this value (at least 0: zero scores are always pruned).
    pub fn threshold(&self, k: usize) -> f64 {
        let (prune, below) = (self.len.saturating_sub(k), self.len - self.hist.total);
        // Pruning no more than the non-positive scores: the overall threshold
        // is one of them, which the clamp turns into 0.
        clamped((prune > below).then(|| self.hist.nth(self.scores, prune - below - 1)))
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
        // In chunks across layers: VGG-16's last convolutions hold most of
        // its weights, so one task per layer leaves a thread idle.
        let counts = chunks(scores)
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
        // Gathered in parallel, in no particular order: the selection
        // finds the same value whatever the order.
        let mut inside: Vec<f64> = chunks(scores)
            .flat_map_iter(|s| {
                s.iter()
                    .copied()
                    .filter(|&x| Self::bucket(x) == Some(bucket))
            })
            .collect();
        let (_, t, _) = inside.select_nth_unstable_by(rank - below, |a, b| a.total_cmp(b));
        *t
    }
}

/// Every layer's scores in runs of at most 64 K, in parallel.
fn chunks(scores: &[Vec<f64>]) -> impl ParallelIterator<Item = &[f64]> {
    scores.par_iter().flat_map(|s| s.par_chunks(1 << 16))
}

/// The bucket of a histogram holding the value of ascending `rank` (from
/// 0), and how many values lie in the buckets below it.
pub(crate) fn bucket_of_rank(counts: &[usize], rank: usize) -> (usize, usize) {
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

/// Effective pruning on a ranking (Sec. 5 of the effective-sparsity paper,
/// "effective ranking-based pruning"): the fewest top-ranked weights
/// (`keep_top`, the ties rule included) of which at least `target` are
/// active, by bisection over their number; every positively scored weight
/// when even those leave fewer active. Active counts grow with the kept
/// set (a larger cut keeps a superset), so the bisection is exact.
pub fn effective_top(net: &Network, scores: &[Vec<f64>], target: usize) -> MaskSet {
    effective_top_by(net, scores, target, MaskSet::count_ones)
}

/// [`effective_top`] with the active weights counted by `count` (of the
/// effective masks): the selected layers' only when some layers are frozen
/// ([`crate::methods::selection::Selection::count_selected`]).
pub fn effective_top_by(
    net: &Network,
    scores: &[Vec<f64>],
    target: usize,
    count: impl Fn(&MaskSet) -> usize,
) -> MaskSet {
    let ranking = TopRanking::new(scores);
    let cut = |k: usize| MaskSet {
        layers: ranking.keep(k),
    };
    let positive = ranking.positive();
    let (mut lo, mut hi) = (target.min(positive), positive);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if count(&crate::analysis::effective::effective_masks(net, &cut(mid))) >= target {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    cut(lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The parallel bucketed selection finds what sorting every score does,
    /// at every rank, over signed scores with -inf (GraSP's pruned
    /// weights), both zeros, ties, and magnitudes across many buckets.
    #[test]
    fn nth_smallest_equals_the_rank_in_a_sorted_copy() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let scores: Vec<Vec<f64>> = [300, 1, 0, 257, 90_000]
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|_| match rng.random_range(0..8) {
                        0 => f64::NEG_INFINITY,
                        1 => 0.0,
                        2 => -0.0,
                        3 => (rng.random_range(-4..4) as f64) * 0.5,
                        _ => (rng.random::<f64>() - 0.5) * 10f64.powi(rng.random_range(-30..30)),
                    })
                    .collect()
            })
            .collect();
        let mut sorted: Vec<f64> = scores.iter().flatten().copied().collect();
        sorted.sort_by(|a, b| a.total_cmp(b));
        for rank in (0..sorted.len()).step_by(997).chain([sorted.len() - 1]) {
            let got = nth_smallest(&scores, rank);
            assert_eq!(got.to_bits(), sorted[rank].to_bits(), "rank {rank}");
        }
    }

    /// Against trying every cut: the smallest top-k reaching the target,
    /// on an MLP whose random scores leave many top-ranked weights inactive.
    #[test]
    fn effective_top_is_the_smallest_cut_reaching_the_target() {
        let net = crate::zoo::build("mlp:12-9-7-5", 0).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for trial in 0..20 {
            let scores: Vec<Vec<f64>> = net
                .layers
                .iter()
                .map(|l| {
                    (0..l.numel())
                        .map(|_| {
                            // Some zeros and ties, as real rankings have.
                            let r: f64 = rng.random();
                            if r < 0.2 {
                                0.0
                            } else {
                                (r * 50.0).round()
                            }
                        })
                        .collect()
                })
                .collect();
            let active = |k: usize| {
                crate::analysis::effective::effective_masks(
                    &net,
                    &MaskSet {
                        layers: keep_top(&scores, k),
                    },
                )
                .count_ones()
            };
            let positive = scores.iter().flatten().filter(|&&s| s > 0.0).count();
            for target in [1, 5, 20, 60, positive] {
                let got = effective_top(&net, &scores, target);
                let k = (target.min(positive)..=positive)
                    .find(|&k| active(k) >= target)
                    .unwrap_or(positive);
                let want = keep_top(&scores, k);
                assert_eq!(got.layers, want, "trial {trial} target {target}");
            }
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
