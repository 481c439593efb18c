//! Random pruning at initialisation (RPI): per layer, exactly `k_l` weights
//! kept, chosen uniformly at random (REFERENCE.md, "Random pruning"): not
//! Bernoulli, so the quota is met exactly.
//!
//! The kept set is the first `k_l` entries of a seeded random permutation of
//! the layer (a partial Fisher-Yates shuffle), so masks for smaller counts are
//! subsets of masks for larger ones: the nesting effective pruning needs
//! (papers/effective-sparsity-igq.txt, Sec. 5, Algorithm 1).
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

/// `k` distinct indices of `0..n`, uniformly, as the prefix of the random
/// permutation keyed by `key`.
pub fn random_subset(n: usize, k: usize, key: [u8; 32]) -> BitSet {
    let k = k.min(n);
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

/// RPI masks for per-layer kept `counts`.
pub fn rpi(net: &Network, counts: &[usize], seed: u64) -> MaskSet {
    MaskSet {
        layers: net
            .layers
            .iter()
            .zip(counts)
            .map(|(l, &k)| random_subset(l.numel(), k, stream_key(seed, "rpi", &l.name)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
