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
        return lowest_priorities(n, k, key, n <= STORE_UP_TO);
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

/// Elements per parallel chunk of a priority pass: a multiple of 64 small
/// enough to stay in a core's cache between drawing and counting.
const CHUNK: usize = 1 << 16;

/// Layers up to this many weights keep their priorities in memory (4
/// bytes a weight, 64 MB at most, for each layer being placed: layers are
/// placed in parallel) and draw the stream once; larger ones draw it again
/// for each of the three passes. Drawing is the costliest step (three
/// draws of a Llama's billion weights took 9 s); memory is the budget of
/// streaming a checkpoint (1.5 x its largest shard plus the masks).
const STORE_UP_TO: usize = 1 << 24;

/// Weight `i`'s priority is the `i`-th `u32` of the stream `key` (read
/// chunk by chunk in parallel: the stream can seek). The `k` lowest are kept,
/// ties at the threshold going to the lower index, so a smaller `k` keeps a
/// subset. Pass 1 counts priorities by their top 8 bits (a table that
/// stays in L1), pass 2 sorts the one bucket where the threshold falls
/// (about n/256 priorities), pass 3 sets the bits.
fn lowest_priorities(n: usize, k: usize, key: [u8; 32], store: bool) -> BitSet {
    const SHIFT: u32 = 24;
    const BUCKETS: usize = 1 << (32 - SHIFT);
    if k == 0 || k == n {
        return if k == 0 {
            BitSet::new(n)
        } else {
            BitSet::full(n)
        };
    }
    let draw = |c: usize, out: &mut [u32]| {
        let mut rng = stream(key);
        rng.set_word_pos((c * CHUNK) as u128);
        rng.fill(out);
    };
    let mut stored = vec![0u32; if store { n } else { 0 }];
    // Pass 1, drawing each chunk (into `stored`, or a scratch buffer) and
    // counting it while it is in cache.
    let count = |mut h: Vec<usize>, chunk: &[u32]| {
        chunk.iter().for_each(|&p| h[(p >> SHIFT) as usize] += 1);
        h
    };
    let merge = |mut a: Vec<usize>, b: Vec<usize>| {
        a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        a
    };
    let histogram = if store {
        stored
            .par_chunks_mut(CHUNK)
            .enumerate()
            .fold(
                || vec![0usize; BUCKETS],
                |h, (c, out)| {
                    draw(c, out);
                    count(h, out)
                },
            )
            .reduce(|| vec![0usize; BUCKETS], merge)
    } else {
        (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .fold(
                || (vec![0usize; BUCKETS], vec![0u32; CHUNK]),
                |(h, mut buf), c| {
                    let len = CHUNK.min(n - c * CHUNK);
                    draw(c, &mut buf[..len]);
                    (count(h, &buf[..len]), buf)
                },
            )
            .map(|(h, _)| h)
            .reduce(|| vec![0usize; BUCKETS], merge)
    };
    // Passes 2 and 3 read chunk `c` through `with_chunk`.
    let with_chunk = |c: usize, f: &mut dyn FnMut(&[u32])| {
        let range = c * CHUNK..((c + 1) * CHUNK).min(n);
        if store {
            f(&stored[range]);
        } else {
            let mut buf = vec![0u32; range.len()];
            draw(c, &mut buf);
            f(&buf);
        }
    };
    let chunks = n.div_ceil(CHUNK);
    let (mut below, mut bucket) = (0, 0);
    while below + histogram[bucket] < k {
        below += histogram[bucket];
        bucket += 1;
    }
    let mut inside: Vec<u32> = (0..chunks)
        .into_par_iter()
        .flat_map_iter(|c| {
            let mut found = Vec::new();
            with_chunk(c, &mut |ps| {
                found.extend(ps.iter().filter(|&&p| (p >> SHIFT) as usize == bucket));
            });
            found
        })
        .collect();
    inside.sort_unstable();
    let threshold = inside[k - below - 1];
    let strictly_below = below + inside.iter().take_while(|&&p| p < threshold).count();
    let mut ties = k - strictly_below;
    // Pass 3: priorities below the threshold in parallel, then the ties in
    // index order.
    let words: Vec<Vec<u64>> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let mut words = Vec::with_capacity(CHUNK / 64);
            with_chunk(c, &mut |ps| {
                words.extend(ps.chunks(64).map(|w| below_threshold(w, threshold)));
            });
            words
        })
        .collect();
    let mut bits = BitSet::from_words(words.concat(), n);
    for c in 0..chunks {
        with_chunk(c, &mut |ps| {
            for (j, &p) in ps.iter().enumerate() {
                if ties > 0 && p == threshold {
                    bits.set(c * CHUNK + j, true);
                    ties -= 1;
                }
            }
        });
        if ties == 0 {
            break;
        }
    }
    bits
}

/// Bit `j` set where `ps[j] < t` (up to 64 priorities).
fn below_threshold(ps: &[u32], t: u32) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if ps.len() == 64 {
        return simd_below(ps.try_into().expect("64"), t);
    }
    ps.iter()
        .enumerate()
        .fold(0, |w, (j, &p)| w | u64::from(p < t) << j)
}

/// [`below_threshold`] on a full word with SSE2 (in every x86-64): its
/// compares are signed, so both sides are shifted by 2^31 first.
#[cfg(target_arch = "x86_64")]
fn simd_below(ps: &[u32; 64], t: u32) -> u64 {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is in the x86-64 baseline; the unaligned loads read
    // `ps`, 16 lanes of 4 bytes at a time.
    unsafe {
        let flip = _mm_set1_epi32(i32::MIN);
        let t = _mm_xor_si128(_mm_set1_epi32(t as i32), flip);
        let lt = |v: usize| {
            let x = _mm_loadu_si128(ps.as_ptr().add(4 * v).cast());
            _mm_cmplt_epi32(_mm_xor_si128(x, flip), t)
        };
        (0..4).fold(0u64, |w, q| {
            let bytes = _mm_packs_epi16(
                _mm_packs_epi32(lt(4 * q), lt(4 * q + 1)),
                _mm_packs_epi32(lt(4 * q + 2), lt(4 * q + 3)),
            );
            w | (_mm_movemask_epi8(bytes) as u32 as u64 & 0xffff) << (16 * q)
        })
    }
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
        // Drawing the stream once or once per pass: the same bits.
        for k in [1234, n / 2] {
            assert_eq!(
                lowest_priorities(n, k, key, true),
                lowest_priorities(n, k, key, false)
            );
        }
    }

    /// The SSE2 word equals the scalar one, at thresholds around every
    /// sign and edge of `u32`.
    #[test]
    fn below_threshold_words_agree() {
        let mut rng = stream(stream_key(9, "t", "below"));
        for _ in 0..500 {
            let mut ps = [0u32; 64];
            rng.fill(&mut ps[..]);
            ps[3] = 0;
            ps[5] = u32::MAX;
            ps[7] = 1 << 31;
            for t in [0, 1, ps[11], 1 << 31, (1 << 31) + 1, u32::MAX, rng.random()] {
                let scalar = ps
                    .iter()
                    .enumerate()
                    .fold(0u64, |w, (j, &p)| w | u64::from(p < t) << j);
                assert_eq!(below_threshold(&ps, t), scalar, "t={t}");
                assert_eq!(below_threshold(&ps[..40], t), scalar & ((1 << 40) - 1));
            }
        }
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
