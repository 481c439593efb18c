//! The rounds of the iterative methods (SynFlow, SNIP-it): the exponential
//! schedule `density_k = density^(k / rounds)`, how many weights each round
//! prunes ([`Counts`]), and the loop that re-scores and cuts ([`iterate`]).
//! The scorers only say how to score a mask; this file owns the rounds.
//!
//! ```
//! use maskforge::{mask::MaskSet, methods::scored::rounds::{iterate, Counts, Schedule}};
//! let net = maskforge::zoo::build("mlp:6-5-4", 0).unwrap();
//! assert_eq!(net.prunable_count(), 50);
//! // Scores that never change: 1, 2, ..., 50 in network order.
//! let mut score = |m: &MaskSet| {
//!     let mut i = 0.0;
//!     Ok(m.layers.iter().map(|b| (0..b.len()).map(|_| { i += 1.0; i }).collect()).collect())
//! };
//! let schedule = Schedule { rounds: 2, density: 0.1, counts: Counts::Reference };
//! let (masks, densities) = iterate(&net, 5, schedule, &mut score, None, &mut |_, _| {}).unwrap();
//! // Round 2 prunes int((1 - 0.1) * 50) = 45: the 5 highest are kept.
//! assert_eq!(masks.count_ones(), 5);
//! assert_eq!(densities.len(), 2);
//! ```

use std::borrow::Cow;

use crate::error::Result;
use crate::graph::Network;
use crate::mask::MaskSet;
use crate::methods::scored::kept::Kept;
use crate::methods::select::keep_top;

/// A round's scores as the rounds cut them: every weight's
/// (`Vec<Vec<f64>>`), or the kept weights' only ([`Kept`], for scorers
/// whose pruned weights score 0).
pub trait RoundScores {
    /// [`keep_top`] of every weight's score at `k`; `masks` are the masks
    /// the round scored.
    fn keep_top(&self, masks: &MaskSet, k: usize) -> MaskSet;
    /// Every weight's score.
    fn dense(&self, masks: &MaskSet) -> Cow<'_, [Vec<f64>]>;
}

impl RoundScores for Vec<Vec<f64>> {
    fn keep_top(&self, _: &MaskSet, k: usize) -> MaskSet {
        MaskSet {
            layers: keep_top(self, k),
        }
    }

    fn dense(&self, _: &MaskSet) -> Cow<'_, [Vec<f64>]> {
        Cow::Borrowed(self)
    }
}

impl RoundScores for Kept {
    fn keep_top(&self, masks: &MaskSet, k: usize) -> MaskSet {
        Kept::keep_top(self, masks, k)
    }

    fn dense(&self, masks: &MaskSet) -> Cow<'_, [Vec<f64>]> {
        Cow::Owned(Kept::dense(self, masks))
    }
}

/// How many weights each round of an iterative method prunes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum Counts {
    /// Synaptic-Flow's `prune_loop` and `_global_mask`: round `k` of `R`
    /// prunes `int((1 - d^(k/R)) * N)` of all `N` weights, pruned ones
    /// included, and every weight tied with the last of them; nothing when
    /// that count is below 1; the last round likewise (SynFlow's default).
    #[default]
    Reference,
    /// Keep `round(N * d^(k/R))` (ties at the threshold still pruned) and
    /// exactly the target in the last round (SNIP-it; SynFlow's earlier rule).
    Nearest,
}

crate::named!(Counts, "round counts" { Reference => "reference", Nearest => "nearest" });

/// A last round's own cut of the scores (the effective cut).
pub type LastCut<'a> = dyn FnMut(&[Vec<f64>]) -> Result<MaskSet> + 'a;

/// The exponential schedule of an iterative method: `rounds` rounds down
/// to `density`, each round's count by `counts`.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub rounds: usize,
    pub density: f64,
    pub counts: Counts,
}

/// The rounds of the iterative methods (SynFlow, SNIP-it): round `k` of
/// `rounds` re-scores the current masks with `score` and prunes down to
/// the schedule's density `density^(k / rounds)` ([`Counts`] says how many
/// weights that is). The last round's scores go to `cut` when given (the
/// effective cut); without it the last round follows the schedule
/// ([`Counts::Nearest`]: exactly `target` kept). Returns the masks and the
/// density after each round; `progress(round, rounds)` after each.
pub fn iterate(
    net: &Network,
    target: usize,
    schedule: Schedule,
    score: &mut dyn FnMut(&MaskSet) -> Result<Vec<Vec<f64>>>,
    cut: Option<&mut LastCut>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(MaskSet, Vec<f64>)> {
    iterate_frozen(net, 0, target, schedule, score, cut, progress)
}

/// [`iterate`] with `frozen` weights in frozen layers
/// ([`crate::methods::selection::Selection`]) that `score` ranks `+inf`:
/// the schedule, its counts, `target` and the densities returned are over
/// the other (selected) weights, and every cut keeps the frozen ones too.
/// `score` gives every weight's scores or the kept ones' ([`RoundScores`]).
pub fn iterate_frozen<S: RoundScores>(
    net: &Network,
    frozen: usize,
    target: usize,
    schedule: Schedule,
    score: &mut dyn FnMut(&MaskSet) -> Result<S>,
    mut cut: Option<&mut LastCut>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(MaskSet, Vec<f64>)> {
    let rounds = schedule.rounds.max(1);
    let n = net.prunable_count().saturating_sub(frozen);
    let total = n as f64;
    let mut masks = MaskSet::dense(net);
    let mut history = Vec::with_capacity(rounds);
    for k in 1..=rounds {
        let s = score(&masks)?;
        let d = schedule.density.powf(k as f64 / rounds as f64);
        masks = match (k == rounds, cut.as_deref_mut(), schedule.counts) {
            (true, Some(cut), _) => cut(&s.dense(&masks))?,
            (_, _, Counts::Reference) => {
                // Python's int() of a non-negative float: truncation.
                let prune = ((1.0 - d) * total) as usize;
                if prune < 1 {
                    masks
                } else {
                    s.keep_top(&masks, n.saturating_sub(prune) + frozen)
                }
            }
            (true, None, Counts::Nearest) => s.keep_top(&masks, target + frozen),
            (false, _, Counts::Nearest) => {
                s.keep_top(&masks, (total * d).round() as usize + frozen)
            }
        };
        history.push(masks.count_ones().saturating_sub(frozen) as f64 / total);
        progress(k, rounds);
    }
    Ok((masks, history))
}

/// The rounds under an N:M pattern: round `k` of `rounds` keeps
/// `ceil(M p^(k / rounds))` of every group of `M` (`p = N / M`, so `N` in
/// the last round) by the current scores, weights already pruned ranked
/// below every kept one. A round whose per-group count does not change
/// prunes nothing and is not scored. Layers `selection` freezes stay
/// dense in every round. Returns the placement and the density of the
/// fitting layers after each round.
pub fn iterate_groups(
    net: &Network,
    pattern: crate::methods::nm::Pattern,
    rounds: usize,
    selection: &crate::methods::selection::Selection,
    score: &mut dyn FnMut(&MaskSet) -> Result<Vec<Vec<f64>>>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(crate::methods::nm::Placed, Vec<f64>)> {
    use crate::methods::nm::keep_per_group;
    let rounds = rounds.max(1);
    let m = pattern.m;
    let mut keep = m;
    let mut placed = keep_per_group(net, &vec_of_ones(net), m, m);
    selection.fill_frozen(&mut placed.masks);
    let mut history = Vec::with_capacity(rounds);
    for k in 1..=rounds {
        let d = pattern.density().powf(k as f64 / rounds as f64);
        // The float guard keeps an exact N from rounding up in the last round.
        let want = ((m as f64 * d) - 1e-9).ceil().max(pattern.n as f64) as usize;
        if want < keep {
            let mut s = score(&placed.masks)?;
            for (layer, bits) in s.iter_mut().zip(&placed.masks.layers) {
                for (i, v) in layer.iter_mut().enumerate() {
                    if !bits.get(i) {
                        *v = f64::NEG_INFINITY;
                    }
                }
            }
            placed = keep_per_group(net, &s, want, m);
            selection.fill_frozen(&mut placed.masks);
            keep = want;
        }
        history.push(keep as f64 / m as f64);
        progress(k, rounds);
    }
    Ok((placed, history))
}

fn vec_of_ones(net: &Network) -> Vec<Vec<f64>> {
    net.layers.iter().map(|l| vec![1.0; l.numel()]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference counts: round k prunes int((1 - d^(k/R)) N) weights, pruned
    /// ones (score 0) among them; a round whose count is below 1 leaves even
    /// a zero-scored kept weight alone; ties at the threshold are pruned.
    #[test]
    fn reference_counts_follow_the_official_loop() {
        let net = crate::zoo::build("mlp:6-5-4", 0).unwrap();
        let n = net.prunable_count(); // 50
        let distinct = |m: &MaskSet| -> Result<Vec<Vec<f64>>> {
            let mut i = 0.0;
            Ok(m.layers
                .iter()
                .map(|b| {
                    (0..b.len())
                        .map(|j| {
                            i += 1.0;
                            if b.get(j) && j != 0 {
                                i
                            } else {
                                0.0
                            }
                        })
                        .collect()
                })
                .collect())
        };
        let (d, rounds) = (0.1, 4);
        let schedule = Schedule {
            rounds,
            density: d,
            counts: Counts::Reference,
        };
        let (m, history) =
            iterate(&net, 5, schedule, &mut { distinct }, None, &mut |_, _| {}).unwrap();
        for (k, h) in history.iter().enumerate() {
            let dk: f64 = d.powf((k + 1) as f64 / rounds as f64);
            let pruned = ((1.0 - dk) * n as f64) as usize;
            assert_eq!(
                (h * n as f64).round() as usize,
                n - pruned,
                "round {}",
                k + 1
            );
        }
        assert_eq!(m.count_ones(), n - ((1.0 - d) * n as f64) as usize);
        // One round at density 0.99 prunes int(0.5) = 0: nothing changes, the
        // zero-scored weight 0 of each layer included.
        let schedule = Schedule {
            rounds: 1,
            density: 0.99,
            counts: Counts::Reference,
        };
        let (m, _) = iterate(&net, 50, schedule, &mut { distinct }, None, &mut |_, _| {}).unwrap();
        assert_eq!(m.count_ones(), n);
        // Ties: every score equal, one weight to prune: all go.
        let schedule = Schedule {
            rounds: 1,
            density: 0.9,
            counts: Counts::Reference,
        };
        let mut tied = |m: &MaskSet| -> Result<Vec<Vec<f64>>> {
            Ok(m.layers.iter().map(|b| vec![1.0; b.len()]).collect())
        };
        let (m, _) = iterate(&net, 45, schedule, &mut tied, None, &mut |_, _| {}).unwrap();
        assert_eq!(m.count_ones(), 0);
    }
}
