//! Masked layer weights kept from one pass to the next: `w * mask` (or
//! SynFlow's `|w| * mask`) held as tensors and brought up to date in place
//! when the masks change, instead of rebuilt from `w` and the mask bits.
//!
//! SynFlow's rounds run a forward pass at masks that lose a few percent of
//! their weights each round. Building every masked weight afresh wrote all
//! 15 M of VGG-16's weights a hundred times (a sixth of the run); here a
//! round touches only the mask words that changed, and only their
//! elements. Masks may also grow back: an element whose bit is set again
//! takes its weight again.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use maskforge::{autodiff::masked_weights::MaskedWeights, bitset::BitSet, mask::MaskSet};
//! let w = Tensor::new(&[1.0f32, -2.0, 3.0], &Device::Cpu).unwrap();
//! let mut masks = MaskSet { layers: vec![BitSet::from_fn(3, |i| i != 2)] };
//! let mut mw = MaskedWeights::new(&[w], &masks, true).unwrap();
//! assert_eq!(mw.tensors()[0].to_vec1::<f32>().unwrap(), [1.0, 2.0, 0.0]);
//! // Prune the first weight and bring the pruned one back.
//! masks.layers[0] = BitSet::from_fn(3, |i| i != 0);
//! mw.update(&masks).unwrap();
//! assert_eq!(mw.tensors()[0].to_vec1::<f32>().unwrap(), [0.0, 2.0, 3.0]);
//! ```

use candle_core::{CpuStorage, DType, Device, InplaceOp1, Layout, Tensor};
use rayon::prelude::*;

use crate::bitset::BitSet;
use crate::error::{Error, Result};
use crate::mask::MaskSet;

/// Per layer: the weight (`|w|` with `abs`) and its masked copy for
/// `masks`, the masks the copies hold.
pub struct MaskedWeights {
    source: Vec<Tensor>,
    masked: Vec<Tensor>,
    masks: MaskSet,
}

impl MaskedWeights {
    /// The masked weights of `weights` (canonical layout, f32 or f64 on the
    /// CPU) for `masks`.
    pub fn new(weights: &[Tensor], masks: &MaskSet, abs: bool) -> Result<Self> {
        if weights.len() != masks.layers.len() {
            return Err(Error::internal("masked weights: one mask per weight"));
        }
        let source = weights
            .iter()
            .map(|w| {
                if !matches!(w.device(), Device::Cpu)
                    || !matches!(w.dtype(), DType::F32 | DType::F64)
                {
                    return Err(Error::internal("masked weights: f32 or f64 on the CPU"));
                }
                // A copy of its own: `w` may be a variable that changes.
                let w = if abs { w.abs()? } else { w.copy()? };
                Ok(w.contiguous()?)
            })
            .collect::<Result<Vec<_>>>()?;
        let masked = source
            .iter()
            .zip(&masks.layers)
            .map(|(w, m)| {
                Ok(crate::autodiff::ops::masked::masked_weight(w, Some(m), false)?.copy()?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            source,
            masked,
            masks: masks.clone(),
        })
    }

    /// The masked weights, one per layer (the same storage across updates:
    /// clones of these tensors see every update).
    pub fn tensors(&self) -> &[Tensor] {
        &self.masked
    }

    /// Bring every masked weight to `masks` (of the same layers and sizes).
    pub fn update(&mut self, masks: &MaskSet) -> Result<()> {
        for (li, new) in masks.layers.iter().enumerate() {
            let old = &self.masks.layers[li];
            if new.len() != old.len() {
                return Err(Error::internal("masked weights: mask sizes changed"));
            }
            if new.words() == old.words() {
                continue;
            }
            let src = self.source[li].storage_and_layout().0;
            let candle_core::Storage::Cpu(src) = &*src else {
                return Err(Error::internal("masked weights: source left the CPU"));
            };
            self.masked[li].inplace_op1(&Refresh { old, new, src })?;
        }
        self.masks = masks.clone();
        Ok(())
    }
}

/// `dst[i] = if new[i] { src[i] } else { 0 }` wherever `old` and `new`
/// differ (elsewhere `dst` already holds that).
struct Refresh<'a> {
    old: &'a BitSet,
    new: &'a BitSet,
    src: &'a CpuStorage,
}

impl InplaceOp1 for Refresh<'_> {
    fn name(&self) -> &'static str {
        "maskforge-masked-weight-refresh"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let Some((lo, hi)) = l.contiguous_offsets() else {
            candle_core::bail!("masked weights: non-contiguous destination")
        };
        match (dst, self.src) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => {
                refresh(&mut d[lo..hi], s, self.old, self.new)
            }
            (CpuStorage::F64(d), CpuStorage::F64(s)) => {
                refresh(&mut d[lo..hi], s, self.old, self.new)
            }
            _ => candle_core::bail!("masked weights: dtypes differ"),
        }
        Ok(())
    }
}

/// Elements per parallel chunk (a multiple of 64: chunks start on a word).
const CHUNK: usize = 1 << 16;

fn refresh<T: Copy + Default + Send + Sync>(dst: &mut [T], src: &[T], old: &BitSet, new: &BitSet) {
    let (old, new) = (old.words(), new.words());
    dst.par_chunks_mut(CHUNK).enumerate().for_each(|(c, d)| {
        let base = c * CHUNK;
        for (j, d) in d.chunks_mut(64).enumerate() {
            let wi = base / 64 + j;
            let mut changed = old[wi] ^ new[wi];
            while changed != 0 {
                let b = changed.trailing_zeros() as usize;
                changed &= changed - 1;
                d[b] = if new[wi] >> b & 1 == 1 {
                    src[base + j * 64 + b]
                } else {
                    T::default()
                };
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Random masks of a random walk (pruning and regrowing) give the
    /// weights `masked_weight` builds from scratch, bit for bit.
    #[test]
    fn updates_equal_a_fresh_build() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let n = 3 * CHUNK + 77;
        let w: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let w = Tensor::from_vec(w, n, &Device::Cpu).unwrap();
        let mut masks = MaskSet {
            layers: vec![BitSet::from_fn(n, |_| true)],
        };
        for abs in [false, true] {
            let mut mw = MaskedWeights::new(std::slice::from_ref(&w), &masks, abs).unwrap();
            for round in 0..6 {
                let keep = if round == 3 { 0.9 } else { 0.5 };
                masks.layers[0] = BitSet::from_fn(n, |_| rng.random_bool(keep));
                mw.update(&masks).unwrap();
                let fresh =
                    crate::autodiff::ops::masked::masked_weight(&w, Some(&masks.layers[0]), abs)
                        .unwrap();
                assert_eq!(
                    mw.tensors()[0].to_vec1::<f32>().unwrap(),
                    fresh.to_vec1::<f32>().unwrap(),
                    "round {round}, abs {abs}"
                );
            }
        }
    }
}
