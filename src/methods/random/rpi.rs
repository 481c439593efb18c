//! Random pruning at initialisation (RPI): per layer, exactly `k_l` weights
//! kept, chosen uniformly at random (REFERENCE.md, "Random pruning"): not
//! Bernoulli, so the quota is met exactly.
//!
//! The kept set is the first `k_l` entries of a seeded random permutation of
//! the layer (a partial Fisher-Yates shuffle), so masks for smaller counts are
//! subsets of masks for larger ones: the nesting effective pruning needs
//! (papers/effective-sparsity-igq.txt, Sec. 5, Algorithm 1). Layers of
//! [`PRIORITY_FROM`] weights or more (LLM matrices; no CNN of the zoo has
//! one) keep instead the `k_l` weights of lowest random priority, one `u32`
//! per weight from the stream: the same uniform choice, nested the same way,
//! but three sequential passes instead of `k_l` random swaps across a
//! permutation far larger than the cache (a minute for a billion weights).
//!
//! ```
//! use maskforge::methods::random::rpi::random_subset;
//! let a = random_subset(100, 10, maskforge::rng::stream_key(0, "rpi", "fc1.weight"));
//! let b = random_subset(100, 30, maskforge::rng::stream_key(0, "rpi", "fc1.weight"));
//! assert_eq!(a.count_ones(), 10);
//! assert!(a.is_subset_of(&b));
//! ```

use std::collections::HashMap;

use rand::Rng;
use rayon::prelude::*;

use crate::bitset::BitSet;
use crate::graph::Network;
use crate::mask::MaskSet;
use crate::rng::{stream, stream_key};

/// A virtual array `0..n` for a partial Fisher-Yates shuffle: a hash map of
/// displaced entries when few are drawn, a full array otherwise. Both give
/// the same sequence for the same random draws.
enum Perm {
    Sparse(HashMap<usize, usize>),
    Dense(Vec<u32>),
}

impl Perm {
    fn new(n: usize, k: usize) -> Self {
        if k < n / 16 || n > u32::MAX as usize {
            Perm::Sparse(HashMap::with_capacity(2 * k))
        } else {
            Perm::Dense((0..n as u32).collect())
        }
    }

    fn get(&self, i: usize) -> usize {
        match self {
            Perm::Sparse(m) => *m.get(&i).unwrap_or(&i),
            Perm::Dense(v) => v[i] as usize,
        }
    }

    fn swap(&mut self, i: usize, j: usize) {
        match self {
            Perm::Sparse(m) => {
                let (a, b) = (*m.get(&i).unwrap_or(&i), *m.get(&j).unwrap_or(&j));
                m.insert(i, b);
                m.insert(j, a);
            }
            Perm::Dense(v) => v.swap(i, j),
        }
    }
}

/// Layers with at least this many weights choose by priorities.
pub const PRIORITY_FROM: usize = 1 << 22;

/// `k` distinct indices of `0..n`, uniformly, as the prefix of the random
/// permutation keyed by `key` (by priorities from [`PRIORITY_FROM`] on).
pub fn random_subset(n: usize, k: usize, key: [u8; 32]) -> BitSet {
    let k = k.min(n);
    if n >= PRIORITY_FROM {
        return lowest_priorities(n, k, key);
    }
    let mut rng = stream(key);
    let mut perm = Perm::new(n, k);
    let mut out = BitSet::new(n);
    for i in 0..k {
        let j = rng.random_range(i..n);
        perm.swap(i, j);
        out.set(perm.get(i), true);
    }
    out
}

/// Elements per parallel chunk of a priority pass (a multiple of 64).
const CHUNK: usize = 1 << 20;

/// Weight `i`'s priority is the `i`-th `u32` of the stream `key` (read
/// chunk by chunk in parallel: the stream can seek). The `k` lowest are kept,
/// ties at the threshold going to the lower index, so a smaller `k` keeps a
/// subset. Pass 1 counts priorities by their top 16 bits, pass 2 sorts the
/// one bucket where the threshold falls, pass 3 sets the bits.
fn lowest_priorities(n: usize, k: usize, key: [u8; 32]) -> BitSet {
    if k == 0 || k == n {
        return if k == 0 {
            BitSet::new(n)
        } else {
            BitSet::full(n)
        };
    }
    let chunks: Vec<usize> = (0..n.div_ceil(CHUNK)).collect();
    let priorities = |c: usize| {
        let mut rng = stream(key);
        rng.set_word_pos((c * CHUNK) as u128);
        (c * CHUNK..((c + 1) * CHUNK).min(n)).map(move |i| (i, rng.random::<u32>()))
    };
    let histogram = chunks
        .par_iter()
        .map(|&c| {
            let mut h = vec![0usize; 1 << 16];
            priorities(c).for_each(|(_, p)| h[(p >> 16) as usize] += 1);
            h
        })
        .reduce(
            || vec![0usize; 1 << 16],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        );
    let (mut below, mut bucket) = (0, 0);
    while below + histogram[bucket] < k {
        below += histogram[bucket];
        bucket += 1;
    }
    let mut inside: Vec<u32> = chunks
        .par_iter()
        .flat_map_iter(|&c| {
            priorities(c)
                .filter(|(_, p)| (p >> 16) as usize == bucket)
                .map(|(_, p)| p)
        })
        .collect();
    inside.sort_unstable();
    let threshold = inside[k - below - 1];
    let strictly_below = below + inside.iter().take_while(|&&p| p < threshold).count();
    let mut ties = k - strictly_below;
    // Pass 3: priorities below the threshold in parallel, then the ties in
    // index order.
    let words: Vec<Vec<u64>> = chunks
        .par_iter()
        .map(|&c| {
            let mut w = vec![0u64; (((c + 1) * CHUNK).min(n) - c * CHUNK).div_ceil(64)];
            for (i, p) in priorities(c) {
                if p < threshold {
                    w[(i - c * CHUNK) / 64] |= 1 << (i % 64);
                }
            }
            w
        })
        .collect();
    let mut bits = BitSet::from_words(words.concat(), n);
    for c in chunks {
        for (i, p) in priorities(c) {
            if ties == 0 {
                return bits;
            }
            if p == threshold {
                bits.set(i, true);
                ties -= 1;
            }
        }
    }
    bits
}

/// RPI masks for per-layer kept `counts`.
pub fn rpi(net: &Network, counts: &[usize], seed: u64) -> MaskSet {
    MaskSet {
        layers: net
            .layers
            .par_iter()
            .zip(counts)
            .map(|(l, &k)| random_subset(l.numel(), k, stream_key(seed, "rpi", &l.name)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_keep_exact_nested_uniform_subsets() {
        let n = PRIORITY_FROM + 1000;
        let key = stream_key(3, "rpi", "big");
        let mut last = BitSet::new(n);
        for k in [0, 1, 17, n / 3, n / 2, n - 1, n] {
            let b = random_subset(n, k, key);
            assert_eq!(b.count_ones(), k);
            assert!(
                last.is_subset_of(&b),
                "k={k} does not contain the smaller set"
            );
            last = b;
        }
        // Uniform: each quarter of the layer holds about a quarter of k.
        let b = random_subset(n, n / 2, key);
        for q in 0..4 {
            let ones = (q * n / 4..(q + 1) * n / 4).filter(|&i| b.get(i)).count() as f64;
            let want = (n / 8) as f64;
            assert!(
                (ones - want).abs() < 5.0 * want.sqrt(),
                "quarter {q}: {ones} vs {want}"
            );
        }
        // By the priorities' definition: the k lowest u32s of the stream.
        let mut rng = stream(key);
        let mut p: Vec<(u32, usize)> = (0..n).map(|i| (rng.random::<u32>(), i)).collect();
        p.sort_unstable();
        let mut want = BitSet::new(n);
        for &(_, i) in &p[..1234] {
            want.set(i, true);
        }
        assert_eq!(random_subset(n, 1234, key), want);
    }

    #[test]
    fn exact_counts_and_both_representations_agree() {
        for (n, k) in [(1000, 3), (1000, 500), (64, 64), (10, 0)] {
            let key = stream_key(1, "t", "w");
            let a = random_subset(n, k, key);
            assert_eq!(a.count_ones(), k);
            // Force the other representation and compare.
            let mut rng = stream(key);
            let mut p = if matches!(Perm::new(n, k), Perm::Sparse(_)) {
                Perm::Dense((0..n as u32).collect())
            } else {
                Perm::Sparse(HashMap::new())
            };
            let mut b = BitSet::new(n);
            for i in 0..k {
                let j = rng.random_range(i..n);
                p.swap(i, j);
                b.set(p.get(i), true);
            }
            assert_eq!(a, b);
        }
    }

    /// Every position is kept with probability k/n: a chi-square test over
    /// 2000 seeded draws (fixed seed, so the test is deterministic).
    #[test]
    fn placement_is_uniform() {
        let (n, k, draws) = (50usize, 5usize, 2000u64);
        let mut hits = vec![0f64; n];
        for s in 0..draws {
            for i in random_subset(n, k, stream_key(s, "uniformity", "w")).ones() {
                hits[i] += 1.0;
            }
        }
        let expected = draws as f64 * k as f64 / n as f64;
        let chi2: f64 = hits.iter().map(|h| (h - expected).powi(2) / expected).sum();
        // 49 degrees of freedom: the 99.9th percentile is about 85.4.
        assert!(chi2 < 85.4, "chi2 = {chi2}");
        // And a biased sampler (always the first k) would fail it.
        let mut biased = vec![0f64; n];
        for _ in 0..draws {
            for b in biased.iter_mut().take(k) {
                *b += 1.0;
            }
        }
        let chi2b: f64 = biased
            .iter()
            .map(|h| (h - expected).powi(2) / expected)
            .sum();
        assert!(chi2b > 85.4);
    }
}
