//! Label smoothing with the pipeline paper's linear decay (Sec. 3.3):
//! targets `(1 - a) * onehot(y) + a / K`, with `a_t = a_0 (1 - t / T)` at
//! epoch `t`, so that from epoch `T` on the loss is plain cross-entropy.
//!
//! ```
//! use maskforge::train::smoothing::{alpha, loss_and_gradient};
//! assert_eq!(alpha(0.2, 0, 4), 0.2);
//! assert!((alpha(0.2, 2, 4) - 0.1).abs() < 1e-15);
//! assert_eq!(alpha(0.2, 5, 4), 0.0);
//! // Two equal logits, label 0: loss ln 2, gradient (p - q) = (-0.5, 0.5).
//! let (loss, grad) = loss_and_gradient(&[0.0, 0.0], 0, 0.0);
//! assert!((loss - 2f64.ln()).abs() < 1e-15);
//! assert_eq!(grad, vec![-0.5, 0.5]);
//! ```

/// The smoothing of epoch `epoch`: `a0 (1 - epoch / epochs)`, 0 from
/// `epochs` on (and throughout when `epochs` is 0).
pub fn alpha(a0: f64, epoch: usize, epochs: usize) -> f64 {
    if epoch >= epochs {
        return 0.0;
    }
    a0 * (1.0 - epoch as f64 / epochs as f64)
}

/// Cross-entropy of one sample's `logits` against the label `label`
/// smoothed by `a`, and its gradient with respect to the logits
/// (`softmax(logits) - target`).
pub fn loss_and_gradient(logits: &[f64], label: usize, a: f64) -> (f64, Vec<f64>) {
    let k = logits.len() as f64;
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|z| (z - max).exp()).sum();
    let log_z = max + sum.ln();
    let mut loss = 0.0;
    let grad = logits
        .iter()
        .enumerate()
        .map(|(i, &z)| {
            let logp = z - log_z;
            let q = a / k + if i == label { 1.0 - a } else { 0.0 };
            loss -= q * logp;
            logp.exp() - q
        })
        .collect();
    (loss, grad)
}
