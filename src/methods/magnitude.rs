//! Ranking by weight magnitude and by LAMP, for trained checkpoints (step 2
//! of the end-to-end pipeline, papers/end-to-end-pruning-pipeline.txt); the
//! rankings are cut into masks by [`crate::methods::select`].
//!
//! LAMP (Lee et al. 2021): within a layer, sort `w^2` ascending; the score of
//! the `u`-th is `w_u^2 / sum_{v >= u} w_v^2`; one global threshold.
//!
//! ```
//! use maskforge::methods::{magnitude::lamp_scores, select::keep_top};
//! let s = lamp_scores(&[1.0, -3.0, 2.0]);
//! // sorted squares 1, 4, 9: 1/14, 4/13, 9/9
//! assert!((s[0] - 1.0 / 14.0).abs() < 1e-12 && (s[1] - 1.0).abs() < 1e-12);
//! assert_eq!(keep_top(&[vec![0.5, 0.1, 0.9]], 2)[0].ones().collect::<Vec<_>>(), vec![0, 2]);
//! ```

use crate::bitset::BitSet;
use crate::error::{Error, Result};
use crate::graph::Network;
use crate::mask::MaskSet;

/// Which ranking of trained weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Ranking {
    Magnitude,
    Lamp,
}

/// Canonical-order weights of every layer as f64.
pub(crate) fn layer_weights(net: &Network) -> Result<Vec<Vec<f64>>> {
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

/// Global magnitude pruning that streams the weights: three passes, one
/// layer in memory at a time (pages of memory-mapped checkpoints are released
/// after each pass), a 65 536-bucket histogram of `|w|` to find the
/// threshold's bucket, then an exact selection inside it. Gives the same
/// masks as [`crate::methods::select::keep_top`] on `|w|`, for checkpoints too large to rank in one
/// array (a billion weights would need 8 GB of f64 scores).
pub fn magnitude_global_streaming(net: &Network, k: usize) -> Result<Vec<BitSet>> {
    magnitude_global_streaming_selected(net, k, &vec![true; net.layers.len()])
}

/// [`magnitude_global_streaming`] over the layers with `selected[l]` only,
/// `k` kept among them; the others (frozen) keep every weight and are not
/// read.
pub fn magnitude_global_streaming_selected(
    net: &Network,
    k: usize,
    selected: &[bool],
) -> Result<Vec<BitSet>> {
    let chosen = |li: usize| selected.get(li).copied().unwrap_or(false);
    let total: usize = net
        .layers
        .iter()
        .enumerate()
        .filter(|&(li, _)| chosen(li))
        .map(|(_, l)| l.numel())
        .sum();
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
    for (_, l) in net.layers.iter().enumerate().filter(|&(li, _)| chosen(li)) {
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
        let (bucket, below) = crate::methods::select::bucket_of_rank(&hist, prune - 1);
        let mut inside: Vec<f32> = Vec::with_capacity(hist[bucket]);
        for (_, l) in net.layers.iter().enumerate().filter(|&(li, _)| chosen(li)) {
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
        .enumerate()
        .map(|(li, l)| {
            if !chosen(li) {
                return Ok(BitSet::full(l.numel()));
            }
            let v = layer_values(l)?;
            let stored = BitSet::from_fn(v.len(), |i| v[i].abs() > threshold && v[i] != 0.0);
            Ok(l.canonical_from_stored(&stored))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::select::keep_top;

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

    /// With frozen layers: the in-memory ranking of the selected weights
    /// (frozen ones at +inf, cut at `k` plus the frozen count), frozen
    /// layers whole.
    #[test]
    fn streaming_magnitude_over_a_selection() {
        let net = crate::zoo::build("lenet300", 2).unwrap();
        let flags = [true, false, true];
        let frozen = net.layers[1].numel();
        let mut s = scores(&net, Ranking::Magnitude, None).unwrap();
        s[1].iter_mut().for_each(|x| *x = f64::INFINITY);
        for k in [1, 777, 100_000, 236_200] {
            let a = magnitude_global_streaming_selected(&net, k, &flags).unwrap();
            assert_eq!(a[1].count_ones(), frozen);
            assert_eq!(a[0].count_ones() + a[2].count_ones(), k, "k={k}");
            assert_eq!(a, keep_top(&s, k + frozen), "k={k}");
        }
    }
}
