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
    /// `"2:4"`; `1 <= N < M`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::input(format!(
                "pattern '{s}': expected N:M with 1 <= N < M, e.g. 2:4"
            ))
        };
        let (n, m) = s.split_once(':').ok_or_else(bad)?;
        let (n, m) = (
            n.trim().parse::<usize>().map_err(|_| bad())?,
            m.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if n == 0 || n >= m {
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

/// Keep the `keep` highest `score(i)` of each group of `m` in layer `l`
/// (which must fit, [`unfit`]); ties to the lower index.
pub fn keep_in_layer(
    l: &Layer,
    keep: usize,
    m: usize,
    score: impl Fn(usize) -> f64 + Sync,
) -> BitSet {
    use rayon::prelude::*;
    let (_, _, taps) = geometry(l);
    if taps == 1 && 64 % m == 0 {
        // A dense layer's groups are runs of `m` consecutive weights: fill
        // the mask a 64-bit word at a time, words in parallel (a billion
        // weights stream by).
        let n = l.numel();
        let words = (0..n.div_ceil(64))
            .into_par_iter()
            .map_init(
                || (vec![0.0; m], vec![false; m]),
                |(s, taken), word| {
                    let mut w = 0u64;
                    for base in (word * 64..(word * 64 + 64).min(n)).step_by(m) {
                        for (j, v) in s.iter_mut().enumerate() {
                            *v = score(base + j);
                        }
                        for j in top_of_group(s, keep, taken) {
                            w |= 1 << (base + j - word * 64);
                        }
                    }
                    w
                },
            )
            .collect();
        return BitSet::from_words(words, n);
    }
    let mut s = vec![0.0; m];
    let mut taken = vec![false; m];
    let mut bits = BitSet::new(l.numel());
    for_each_group(l, m, |g| {
        for (v, &i) in s.iter_mut().zip(g) {
            *v = score(i);
        }
        for j in top_of_group(&s, keep, &mut taken) {
            bits.set(g[j], true);
        }
    });
    bits
}

/// The positions of the `keep` highest of `s` (a group of a few weights):
/// each position's rank is the number of others that beat it (higher, or
/// equal at a lower index, so ties keep the lower index), and the `keep`
/// of rank below `keep` are kept. `taken` is scratch of `s.len()`.
fn top_of_group<'a>(
    s: &'a [f64],
    keep: usize,
    taken: &'a mut [bool],
) -> impl Iterator<Item = usize> + 'a {
    for (j, t) in taken.iter_mut().enumerate() {
        let beaten_by = (0..s.len())
            .filter(|&i| {
                let c = s[i].total_cmp(&s[j]);
                c.is_gt() || (c.is_eq() && i < j)
            })
            .count();
        *t = beaten_by < keep;
    }
    taken.iter().enumerate().filter(|(_, &t)| t).map(|(j, _)| j)
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
        Ok(keep_in_layer(l, keep, m, |i| scores[li][i]))
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
            let (mut groups, mut violating, mut exactly_n) = (0, 0, 0);
            for_each_group(l, p.m, |g| {
                let kept = g.iter().filter(|&&i| bits.get(i)).count();
                groups += 1;
                violating += usize::from(kept > p.n);
                exactly_n += usize::from(kept == p.n);
            });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_and_refuse() {
        assert_eq!(Pattern::parse("2:4").unwrap(), Pattern { n: 2, m: 4 });
        assert_eq!(Pattern::parse(" 4 : 8 ").unwrap().density(), 0.5);
        for bad in ["4:4", "0:4", "2", "a:4", "5:4"] {
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
