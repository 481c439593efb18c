//! Seeded random streams, one per layer, independent of run order.
//!
//! Every random draw in maskforge comes from a ChaCha8 stream whose key is
//! derived from `(seed, purpose, layer name)` by SHA-256, so a layer's
//! randomness does not change when other layers are added, removed or
//! processed on another thread (CONVENTIONS.md, "Determinism").
//!
//! ```
//! use maskforge::rng::{stream_key, normal_vec};
//! let a = normal_vec(stream_key(1, "init", "fc1.weight"), 1.0, 4);
//! let b = normal_vec(stream_key(1, "init", "fc1.weight"), 1.0, 4);
//! assert_eq!(a, b);
//! assert_ne!(a, normal_vec(stream_key(2, "init", "fc1.weight"), 1.0, 4));
//! ```

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};
use sha2::{Digest, Sha256};

/// The 32-byte key of the stream for `(seed, purpose, name)`.
pub fn stream_key(seed: u64, purpose: &str, name: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update((purpose.len() as u64).to_le_bytes());
    h.update(purpose.as_bytes());
    h.update(name.as_bytes());
    h.finalize().into()
}

/// The random stream for a key.
pub fn stream(key: [u8; 32]) -> ChaCha8Rng {
    ChaCha8Rng::from_seed(key)
}

/// `n` samples of `N(0, std^2)` from the stream `key`.
pub fn normal_vec(key: [u8; 32], std: f32, n: usize) -> Vec<f32> {
    let mut rng = stream(key);
    let d = Normal::new(0.0f32, std.max(0.0)).expect("finite std");
    (0..n).map(|_| d.sample(&mut rng)).collect()
}

/// `n` samples of `U(-bound, bound)` from the stream `key`.
pub fn uniform_vec(key: [u8; 32], bound: f32, n: usize) -> Vec<f32> {
    let mut rng = stream(key);
    let b = bound.max(f32::MIN_POSITIVE);
    let d = Uniform::new_inclusive(-b, b).expect("finite bound");
    (0..n).map(|_| d.sample(&mut rng)).collect()
}
