//! N:M semi-structured sparsity: exactly `N` weights kept in every `M`
//! consecutive weights along a layer's input dimension, the pattern sparse
//! tensor cores accelerate (2:4 on NVIDIA Ampere and later).
//!
//! A group is `M` consecutive input channels of one output and, for a
//! convolution, one kernel tap: in the canonical layout `[out, in, kh, kw]`
//! (`[out, in]` for a dense layer, whatever the source's storage) the
//! weights `(o, g M .. (g + 1) M, y, x)`. This is the reduction dimension of
//! the layer's product, the one the hardware groups, and NVIDIA's ASP
//! groups a convolution's weights the same way. A layer whose input
//! dimension (per conv group) is not a multiple of `M` (a first conv on
//! three colours, a depthwise conv) cannot hold the pattern: it stays dense
//! and is reported ([`Placed::dense`]).
//!
//! Inside each group the method's scores choose: the `N` highest are kept,
//! ties to the lower index.
//!
//! ```
//! use maskforge::methods::nm::{keep_top_in_groups, Pattern};
//! let net = maskforge::zoo::build("mlp:8-2", 0).unwrap();
//! let p = Pattern::parse("2:4").unwrap();
//! // Row 0: 1 9 3 9 | 5 5 5 0; row 1 all tied.
//! let s = vec![vec![1., 9., 3., 9., 5., 5., 5., 0., 1., 1., 1., 1., 1., 1., 1., 1.]];
//! let placed = keep_top_in_groups(&net, &s, p);
//! let kept: Vec<usize> = (0..16).filter(|&i| placed.masks.layers[0].get(i)).collect();
//! assert_eq!(kept, [1, 3, 4, 5, 8, 9, 12, 13]);
//! ```

use serde::Serialize;

use crate::bitset::BitSet;
use crate::error::{Error, Result};
use crate::graph::{Layer, Network};
use crate::mask::MaskSet;

/// `N` kept in every `M`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Pattern {
    pub n: usize,
    pub m: usize,
}

impl Pattern {
    /// `"2:4"`; `1 <= N < M <= 64` (a group's choice is one word).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::input(format!(
                "pattern '{s}': expected N:M with 1 <= N < M <= 64, e.g. 2:4"
            ))
        };
        let (n, m) = s.split_once(':').ok_or_else(bad)?;
        let (n, m) = (
            n.trim().parse::<usize>().map_err(|_| bad())?,
            m.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if n == 0 || n >= m || m > 64 {
            return Err(bad());
        }
        Ok(Self { n, m })
    }

    pub fn density(self) -> f64 {
        self.n as f64 / self.m as f64
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.n, self.m)
    }
}

/// A layer's weights as `(out, in, taps)`: weight `(o, c, t)` at
/// `(o * in + c) * taps + t`.
fn geometry(l: &Layer) -> (usize, usize, usize) {
    let taps = l.shape[2..].iter().product();
    (l.shape[0], l.shape[1], taps)
}

/// Why layer `l` cannot hold groups of `m`, if it cannot.
pub fn unfit(l: &Layer, m: usize) -> Option<String> {
    let (_, cin, _) = geometry(l);
    (cin % m != 0).then(|| format!("input dimension {cin} (per group) is not a multiple of {m}"))
}

/// Call `f` with the flat indices of every group of `m` in layer `l`
/// (which must fit, [`unfit`]).
pub fn for_each_group(l: &Layer, m: usize, mut f: impl FnMut(&[usize])) {
    let (out, cin, taps) = geometry(l);
    let mut idx = vec![0; m];
    for o in 0..out {
        for g in 0..cin / m {
            for t in 0..taps {
                for (j, slot) in idx.iter_mut().enumerate() {
                    *slot = (o * cin + g * m + j) * taps + t;
                }
                f(&idx);
            }
        }
    }
}

/// A layer left dense because the pattern does not fit it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DenseLayer {
    pub layer: String,
    pub reason: String,
}

/// Masks with the pattern, and the layers that could not take it.
#[derive(Clone, Debug)]
pub struct Placed {
    pub masks: MaskSet,
    pub dense: Vec<DenseLayer>,
}

/// Keep the `keep` highest of each group of `m` in layer `l` (which must
/// fit, [`unfit`]) by integer keys, one per weight in the canonical layout
/// (see [`score_key`] for float scores); ties to the lower index.
/// `fill(range, out)` appends the keys of weights `range` to `out`: a
/// dense layer is read a chunk at a time, so its keys never exist whole
/// (they would cost a second pass over memory as large as the weights).
pub fn keep_in_layer<K: Copy + Ord + Send>(
    l: &Layer,
    keep: usize,
    m: usize,
    fill: impl Fn(std::ops::Range<usize>, &mut Vec<K>) -> Result<()> + Sync,
) -> Result<BitSet> {
    use rayon::prelude::*;
    /// Weights per chunk of a dense layer: a multiple of 64 whose keys
    /// stay in a core's cache.
    const CHUNK: usize = 1 << 14;
    let (_, _, taps) = geometry(l);
    let n = l.numel();
    if taps == 1 && 64 % m == 0 {
        // A dense layer's groups are runs of `m` consecutive weights: fill
        // the mask a 64-bit word at a time, chunks in parallel.
        let chunks = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map_init(Vec::new, |keys, c| {
                keys.clear();
                fill(c * CHUNK..(c * CHUNK + CHUNK).min(n), keys)?;
                Ok(keys
                    .chunks(64)
                    .map(|word| match m {
                        // The common sizes with the group length known at
                        // compile time, so the rank loops unroll.
                        4 => word_of_groups(word, 4, keep),
                        8 => word_of_groups(word, 8, keep),
                        _ => word_of_groups(word, m, keep),
                    })
                    .collect::<Vec<u64>>())
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(BitSet::from_words(chunks.concat(), n));
    }
    let mut keys = Vec::with_capacity(n);
    fill(0..n, &mut keys)?;
    let mut s = Vec::with_capacity(m);
    let mut bits = BitSet::new(n);
    for_each_group(l, m, |g| {
        s.clear();
        s.extend(g.iter().map(|&i| keys[i]));
        let top = top_of_group(&s, keep);
        for (j, &i) in g.iter().enumerate() {
            bits.set(i, top >> j & 1 == 1);
        }
    });
    Ok(bits)
}

/// An integer that orders like `x.total_cmp`, so float scores can key
/// [`keep_in_layer`] (the IEEE bits of a negative float count down).
pub fn score_key(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | 1 << 63
    }
}

/// The mask word of the groups of `m` in `word` (up to 64 keys).
#[inline(always)]
fn word_of_groups<K: Copy + Ord>(word: &[K], m: usize, keep: usize) -> u64 {
    word.chunks_exact(m)
        .enumerate()
        .fold(0, |w, (g, s)| w | top_of_group(s, keep) << (g * m))
}

/// Bit `j` set for the `keep` highest of `s` (a group of at most 64
/// weights): each position's rank is the number of others that beat it
/// (higher, or equal at a lower index, so ties keep the lower index), and
/// the `keep` of rank below `keep` are kept. Counted without branches:
/// random weights would mispredict every other one.
#[inline(always)]
fn top_of_group<K: Copy + Ord>(s: &[K], keep: usize) -> u64 {
    assert!(s.len() <= 64, "groups of at most 64");
    let mut kept = 0u64;
    for (j, &x) in s.iter().enumerate() {
        let before: usize = s[..j].iter().map(|&y| usize::from(y >= x)).sum();
        let after: usize = s[j + 1..].iter().map(|&y| usize::from(y > x)).sum();
        kept |= u64::from(before + after < keep) << j;
    }
    kept
}

/// `n` of every group of `m` in layer `l` drawn uniformly from the stream
/// `key`, group after group.
pub fn random_in_layer(l: &Layer, n: usize, m: usize, key: [u8; 32]) -> BitSet {
    use rand::seq::index::sample;
    let mut rng = crate::rng::stream(key);
    let mut bits = BitSet::new(l.numel());
    for_each_group(l, m, |g| {
        for j in sample(&mut rng, m, n) {
            bits.set(g[j], true);
        }
    });
    bits
}

/// A mask per layer from `layer(index, layer)` on every layer that can
/// hold groups of `m`; the others dense and listed. One layer is worked at
/// a time, so `layer` may read (and release) one layer's weights.
pub fn place(
    net: &Network,
    m: usize,
    mut layer: impl FnMut(usize, &Layer) -> Result<BitSet>,
) -> Result<Placed> {
    let mut dense = Vec::new();
    let mut layers = Vec::with_capacity(net.layers.len());
    for (li, l) in net.layers.iter().enumerate() {
        layers.push(match unfit(l, m) {
            Some(reason) => {
                dense.push(DenseLayer {
                    layer: l.name.clone(),
                    reason,
                });
                BitSet::from_fn(l.numel(), |_| true)
            }
            None => layer(li, l)?,
        });
    }
    Ok(Placed {
        masks: MaskSet { layers },
        dense,
    })
}

/// The pattern `p` on every layer that fits it, chosen by `scores`
/// (higher kept); the others dense.
pub fn keep_top_in_groups(net: &Network, scores: &[Vec<f64>], p: Pattern) -> Placed {
    keep_per_group(net, scores, p.n, p.m)
}

/// `keep` of every `m` by `scores`; layers `m` does not fit stay dense.
pub fn keep_per_group(net: &Network, scores: &[Vec<f64>], keep: usize, m: usize) -> Placed {
    let placed = place(net, m, |li, l| {
        keep_in_layer(l, keep, m, |range, out: &mut Vec<u64>| {
            out.extend(scores[li][range].iter().map(|&x| score_key(x)));
            Ok(())
        })
    });
    placed.expect("placing by given scores cannot fail")
}

/// How one layer's mask (or its weights' zeros) meets a pattern.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Conformance {
    pub layer: String,
    /// Groups of `M` in the layer (0 when it cannot hold the pattern).
    pub groups: usize,
    /// Groups keeping more than `N`: each breaks the pattern.
    pub violating: usize,
    /// Groups keeping exactly `N`.
    pub exactly_n: usize,
    /// Every group keeps at most `N` (and the layer can hold the pattern).
    pub conforms: bool,
    /// Why the layer cannot hold the pattern, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unfit: Option<String>,
}

/// Per layer: whether `masks` keeps at most `N` in every group of `M`.
pub fn check(net: &Network, masks: &MaskSet, p: Pattern) -> Vec<Conformance> {
    net.layers
        .iter()
        .zip(&masks.layers)
        .map(|(l, bits)| {
            if let Some(reason) = unfit(l, p.m) {
                return Conformance {
                    layer: l.name.clone(),
                    groups: 0,
                    violating: 0,
                    exactly_n: 0,
                    conforms: false,
                    unfit: Some(reason),
                };
            }
            let [groups, violating, exactly_n] = group_tally(l, bits, p);
            Conformance {
                layer: l.name.clone(),
                groups,
                violating,
                exactly_n,
                conforms: violating == 0,
                unfit: None,
            }
        })
        .collect()
}

/// Groups, groups keeping more than `N` and groups keeping exactly `N` in
/// layer `l` (which must fit `p.m`).
fn group_tally(l: &Layer, bits: &BitSet, p: Pattern) -> [usize; 3] {
    use rayon::prelude::*;
    let tally = |kept: u32| {
        let kept = kept as usize;
        [1, usize::from(kept > p.n), usize::from(kept == p.n)]
    };
    let add = |a: [usize; 3], b: [usize; 3]| [a[0] + b[0], a[1] + b[1], a[2] + b[2]];
    let (_, _, taps) = geometry(l);
    if taps == 1 && 64 % p.m == 0 {
        // Groups are runs of `m` bits: count each inside its mask word.
        let n = l.numel();
        let group = u64::MAX >> (64 - p.m);
        return (0..n.div_ceil(64))
            .into_par_iter()
            .map(|wi| {
                let in_word = (n - wi * 64).min(64) / p.m;
                let w = bits.bits_at(wi * 64, (n - wi * 64).min(64));
                (0..in_word)
                    .map(|g| tally((w >> (g * p.m) & group).count_ones()))
                    .fold([0; 3], add)
            })
            .reduce(|| [0; 3], add);
    }
    let mut total = [0; 3];
    for_each_group(l, p.m, |g| {
        total = add(
            total,
            tally(g.iter().filter(|&&i| bits.get(i)).count() as u32),
        );
    });
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_and_refuse() {
        assert_eq!(Pattern::parse("2:4").unwrap(), Pattern { n: 2, m: 4 });
        assert_eq!(Pattern::parse(" 4 : 8 ").unwrap().density(), 0.5);
        for bad in ["4:4", "0:4", "2", "a:4", "5:4", "2:65"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    /// Random N:M keeps each position of a group about equally often, and
    /// exactly N per group.
    #[test]
    fn random_groups_are_uniform() {
        let net = crate::zoo::build("lenet300", 0).unwrap();
        let l = &net.layers[0];
        let bits = random_in_layer(l, 2, 4, crate::rng::stream_key(1, "t", "fc1"));
        let mut by_slot = [0usize; 4];
        let mut groups = 0;
        for_each_group(l, 4, |g| {
            let kept: Vec<usize> = (0..4).filter(|&j| bits.get(g[j])).collect();
            assert_eq!(kept.len(), 2);
            for j in kept {
                by_slot[j] += 1;
            }
            groups += 1;
        });
        for c in by_slot {
            let share = c as f64 / groups as f64;
            assert!((share - 0.5).abs() < 0.01, "{by_slot:?} of {groups}");
        }
    }

    /// The integer keys order exactly as `total_cmp`, signed zeros, NaNs
    /// and infinities included.
    #[test]
    fn score_keys_order_like_total_cmp() {
        let v = [
            f64::NEG_INFINITY,
            -1e300,
            -1.0,
            -5e-324,
            -0.0,
            0.0,
            5e-324,
            1.0,
            f64::INFINITY,
            f64::NAN,
            -f64::NAN,
        ];
        for a in v {
            for b in v {
                assert_eq!(score_key(a).cmp(&score_key(b)), a.total_cmp(&b), "{a} {b}");
            }
        }
    }

    /// The word-level tally of a dense layer equals counting group by group.
    #[test]
    fn dense_tally_equals_the_group_walk() {
        // 24 x 10 weights: the last mask word is partial.
        let net = crate::zoo::build("mlp:24-10", 0).unwrap();
        let l = &net.layers[0];
        let mut x = 12345u64;
        for (keep, m) in [(2, 4), (1, 2), (3, 8), (5, 8)] {
            let p = Pattern { n: keep, m };
            let bits = BitSet::from_fn(l.numel(), |_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                x >> 62 != 0
            });
            let mut walk = [0; 3];
            for_each_group(l, m, |g| {
                let kept = g.iter().filter(|&&i| bits.get(i)).count();
                walk[0] += 1;
                walk[1] += usize::from(kept > keep);
                walk[2] += usize::from(kept == keep);
            });
            assert_eq!(group_tally(l, &bits, p), walk, "{keep}:{m}");
            assert!(walk[1] > 0 && walk[2] > 0, "the case tests both counts");
        }
    }

    /// Conv groups run along input channels at a fixed output and tap.
    #[test]
    fn conv_groups_stride_over_the_taps() {
        let net = crate::zoo::build("lenet5", 0).unwrap();
        // conv2: [16, 6, 5, 5]; 6 channels take groups of 2 and 3, not 4.
        let conv2 = &net.layers[1];
        assert_eq!(conv2.shape, vec![16, 6, 5, 5]);
        assert!(unfit(conv2, 4).is_some() && unfit(conv2, 3).is_none());
        let mut first = None;
        let mut n = 0;
        for_each_group(conv2, 3, |g| {
            first.get_or_insert_with(|| g.to_vec());
            n += 1;
        });
        assert_eq!(first.unwrap(), vec![0, 25, 50]);
        assert_eq!(n, 16 * 2 * 25);
    }
}
