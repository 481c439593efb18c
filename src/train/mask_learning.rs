//! The pipeline paper's learned sparsity mask (papers/end-to-end-pruning-pipeline.txt,
//! Sec. 3.1, "Learning a Sparsity Mask"): during pre-pruning training every
//! prunable weight `theta_i` has a keep probability `M_i`, started at 1/2,
//! and the loss is
//!
//! `L = l(f(x, theta * m), y) + lambda1 sum M_i (1 - M_i) + lambda2 sum M_i`
//!
//! with `m_i ~ Bernoulli(M_i)` drawn anew for every forward pass. At the
//! end `theta <- theta * M`, so that magnitude pruning follows the mask.
//!
//! Where the paper is silent, maskforge chooses (and `docs/pipeline.md`
//! says so):
//! - **Sampling.** One draw per weight per training step (the whole batch
//!   shares it), from the stream `(seed, "mask-sample", "<layer>/<step>")`
//!   ([`sample`]): reruns are bit-identical.
//! - **Differentiation.** The draw has no gradient; we pass the gradient
//!   straight through it (`m` treated as `M` in the backward pass), so
//!   `dl/dM_i = dl/dw_i * theta_i` and `dl/dtheta_i = dl/dw_i * m_i` for
//!   the used weight `w_i = theta_i m_i`. The regulariser's gradient
//!   `lambda1 (1 - 2 M_i) + lambda2` is exact ([`MaskLearning::gradient`]).
//! - **Update.** `M` is trained by the run's optimiser (its own state, no
//!   weight decay, its own rate [`MaskLearning::lr`] on the run's
//!   schedule) and projected back onto `[0, 1]` after every step.
//! - **Evaluation** between epochs uses the expected weights `theta * M`,
//!   the network the run writes.
//!
//! ```
//! use maskforge::train::mask_learning::MaskLearning;
//! let ml = MaskLearning { lambda1: 1e-4, lambda2: 1e-5, lr: 0.03 };
//! // At 1/2 only lambda2 pushes; at 0 and 1, lambda1 pulls outwards.
//! assert_eq!(ml.gradient(0.5), 1e-5);
//! assert!(ml.gradient(0.9) < 0.0 && ml.gradient(0.1) > 0.0);
//! assert_eq!(ml.penalty(&[0.5f32, 1.0, 0.0]), 1e-4 * 0.25 + 1e-5 * 1.5);
//! ```

use rand::Rng;
use serde::Serialize;

use super::optim::Real;

/// The regulariser's weights: `lambda1` pushes every `M_i` to 0 or 1,
/// `lambda2` towards 0; and how fast `M` moves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaskLearning {
    pub lambda1: f64,
    pub lambda2: f64,
    /// `M`'s own learning rate, on the run's schedule (at step `t` it is
    /// `lr * lr_t / lr_0`). Absolute, not a multiple of the weights' rate:
    /// probabilities live on `[0, 1]` whatever the weights' scale, and a
    /// multiple of a high weight rate collapses the mask in a few steps.
    pub lr: f64,
}

impl MaskLearning {
    /// `d/dM [lambda1 M (1 - M) + lambda2 M]`.
    pub fn gradient(&self, m: f64) -> f64 {
        self.lambda1 * (1.0 - 2.0 * m) + self.lambda2
    }

    /// The regulariser's value over `probs`.
    pub fn penalty<T: Real>(&self, probs: &[T]) -> f64 {
        probs
            .iter()
            .map(|p| {
                let m = p.to_f64();
                self.lambda1 * m * (1.0 - m) + self.lambda2 * m
            })
            .sum()
    }
}

/// One Bernoulli draw per weight of layer `layer` for training step `step`
/// (from 1): entry `i` is kept when a uniform draw in `[0, 1)` falls
/// below `probs[i]`.
pub fn sample<T: Real>(probs: &[T], seed: u64, layer: &str, step: u64) -> Vec<bool> {
    let key = crate::rng::stream_key(seed, "mask-sample", &format!("{layer}/{step}"));
    let mut rng = crate::rng::stream(key);
    probs
        .iter()
        .map(|p| rng.random::<f64>() < p.to_f64())
        .collect()
}

/// Where the learned probabilities stand after an epoch.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct MaskStats {
    /// Mean keep probability over every (unpruned) weight.
    pub mean: f64,
    /// Fraction of weights with `M >= 1/2`.
    pub kept_half: f64,
    /// Fraction still undecided: `0.05 < M < 0.95`.
    pub undecided: f64,
    /// The regulariser's value.
    pub penalty: f64,
}

impl MaskStats {
    /// The figures of `layers`' probabilities.
    pub fn of<T: Real>(ml: &MaskLearning, layers: &[&[T]]) -> Self {
        let n: usize = layers.iter().map(|l| l.len()).sum();
        let n = n.max(1) as f64;
        let all = || layers.iter().flat_map(|l| l.iter()).map(|p| p.to_f64());
        Self {
            mean: all().sum::<f64>() / n,
            kept_half: all().filter(|&m| m >= 0.5).count() as f64 / n,
            undecided: all().filter(|&m| m > 0.05 && m < 0.95).count() as f64 / n,
            penalty: layers.iter().map(|l| ml.penalty(l)).sum(),
        }
    }
}

/// Clamp every probability onto `[0, 1]` (the projection after a step).
pub fn project<T: Real>(probs: &mut [T]) {
    let (zero, one) = (T::from_f64(0.0), T::from_f64(1.0));
    for p in probs {
        if *p < zero {
            *p = zero;
        } else if *p > one {
            *p = one;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_follow_the_probabilities_and_the_stream() {
        let probs = vec![0.0f64, 1.0, 0.25];
        let many: Vec<Vec<bool>> = (1..=4000).map(|s| sample(&probs, 7, "fc1", s)).collect();
        assert!(many.iter().all(|d| !d[0] && d[1]));
        let kept = many.iter().filter(|d| d[2]).count() as f64 / 4000.0;
        assert!((kept - 0.25).abs() < 0.03, "{kept}");
        assert_eq!(sample(&probs, 7, "fc1", 3), many[2]);
        let other: Vec<_> = (1..=64).map(|s| sample(&probs, 7, "fc2", s)[2]).collect();
        let same: Vec<_> = (0..64).map(|s| many[s][2]).collect();
        assert_ne!(other, same, "layers draw from their own streams");
    }

    #[test]
    fn projection_clamps() {
        let mut p = vec![-0.2f32, 0.3, 1.7];
        project(&mut p);
        assert_eq!(p, vec![0.0, 0.3, 1.0]);
    }
}
