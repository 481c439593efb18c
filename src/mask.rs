//! A set of per-layer masks, bit-packed, in each layer's canonical layout.
//!
//! ```
//! use maskforge::{zoo, mask::MaskSet};
//! let net = zoo::build("lenet300", 0).unwrap();
//! let m = MaskSet::dense(&net);
//! assert_eq!(m.count_ones(), net.prunable_count());
//! assert!((m.compression() - 1.0).abs() < 1e-12);
//! ```

use crate::bitset::BitSet;
use crate::error::{Error, Result};
use crate::graph::Network;

/// One bitset per prunable layer, aligned with `Network::layers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskSet {
    pub layers: Vec<BitSet>,
}

impl MaskSet {
    /// Every weight kept.
    pub fn dense(net: &Network) -> Self {
        Self {
            layers: net.layers.iter().map(|l| BitSet::full(l.numel())).collect(),
        }
    }

    /// Masks implied by the zeros of the weights (nonzero = kept).
    pub fn from_weights(net: &Network) -> Result<Self> {
        use rayon::prelude::*;
        // Layers in parallel: each reads (and releases) its own pages.
        let layers = net
            .layers
            .par_iter()
            .map(|l| {
                let t = net.params.get(&l.name).ok_or_else(|| {
                    Error::internal(format!("weight '{}' missing from parameters", l.name))
                })?;
                Ok(l.canonical_from_stored(&t.nonzero_mask()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    pub fn count_ones(&self) -> usize {
        self.layers.iter().map(BitSet::count_ones).sum()
    }

    pub fn total(&self) -> usize {
        self.layers.iter().map(BitSet::len).sum()
    }

    /// total / kept (infinite when nothing is kept).
    pub fn compression(&self) -> f64 {
        self.total() as f64 / self.count_ones() as f64
    }

    /// True when every kept bit of `self` is kept in `other`.
    pub fn is_subset_of(&self, other: &MaskSet) -> bool {
        self.layers.len() == other.layers.len()
            && self
                .layers
                .iter()
                .zip(&other.layers)
                .all(|(a, b)| a.is_subset_of(b))
    }

    /// Check the masks fit `net` layer by layer.
    pub fn check_fits(&self, net: &Network) -> Result<()> {
        if self.layers.len() != net.layers.len() {
            return Err(Error::input(format!(
                "{} masks for {} prunable layers",
                self.layers.len(),
                net.layers.len()
            )));
        }
        for (m, l) in self.layers.iter().zip(&net.layers) {
            if m.len() != l.numel() {
                return Err(Error::input(format!(
                    "mask for '{}' has {} elements, the weight has {}",
                    l.name,
                    m.len(),
                    l.numel()
                )));
            }
        }
        Ok(())
    }
}
