//! The weight a layer's forward pass uses, `w * mask` (SynFlow: `|w| * mask`),
//! as one autograd op on the CPU, with the mask read from its bits.
//!
//! It replaces candle's `abs` and `mul` by an f32/f64 mask tensor built each
//! pass: those built the mask tensor, kept an `|w|` and a product, and in the
//! backward pass computed (and kept) a gradient for the constant mask as
//! well as `abs`'s sign temporaries, all weight-sized (15 M values for
//! VGG-16, per SynFlow round). The gradient is `dy * mask` (times `sign(w)`
//! for `|w|`, with `sign(0) = 1` as candle's `abs`), so pruned weights get
//! zero gradient as before.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use maskforge::{bitset::BitSet, autodiff::ops::masked::masked_weight};
//! let w = Var::new(&[1.0f64, -2.0, 3.0], &Device::Cpu).unwrap();
//! let mask = BitSet::from_fn(3, |i| i != 2);
//! let y = masked_weight(w.as_tensor(), Some(&mask), true).unwrap();
//! assert_eq!(y.to_vec1::<f64>().unwrap(), [1.0, 2.0, 0.0]);
//! let g = y.sum_all().unwrap().backward().unwrap();
//! assert_eq!(g.get(w.as_tensor()).unwrap().to_vec1::<f64>().unwrap(), [1.0, -1.0, 0.0]);
//! ```

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::bitset::BitSet;
use crate::error::Result;

/// `w * mask` (`abs`: `|w| * mask`); no mask means all ones. Differentiable
/// with respect to `w`. A mask of all ones without `abs` returns `w` itself.
pub fn masked_weight(w: &Tensor, mask: Option<&BitSet>, abs: bool) -> Result<Tensor> {
    let mask = mask.filter(|m| m.count_ones() < m.len());
    if mask.is_none() && !abs {
        return Ok(w.clone());
    }
    let cpu = matches!(w.device(), Device::Cpu);
    if !(cpu && matches!(w.dtype(), DType::F32 | DType::F64)) {
        return stock(w, mask, abs);
    }
    let op = Masked {
        mask: mask.map(|m| Arc::new(m.clone())),
        abs,
    };
    Ok(w.contiguous()?.apply_op1(op)?)
}

/// The gradient at `w` of [`masked_weight`]`(w, mask, abs)` for the
/// output gradient `dy`: `dy * mask` (times `sign(w)` with `abs`), for a
/// reverse pass that is not candle's ([`crate::autodiff::backward`]).
pub fn masked_weight_backward(
    w: &Tensor,
    mask: Option<&BitSet>,
    abs: bool,
    dy: &Tensor,
) -> Result<Tensor> {
    let mask = mask.filter(|m| m.count_ones() < m.len());
    if mask.is_none() && !abs {
        return Ok(dy.clone());
    }
    let cpu = matches!(w.device(), Device::Cpu);
    if !(cpu && matches!(w.dtype(), DType::F32 | DType::F64)) {
        let wv = candle_core::Var::from_tensor(w)?;
        let y = stock(wv.as_tensor(), mask, abs)?;
        let g = (y * dy.detach())?.sum_all()?.backward()?;
        return g
            .get(wv.as_tensor())
            .cloned()
            .ok_or_else(|| crate::error::Error::internal("masked weight: no gradient"));
    }
    let op = Masked {
        mask: mask.map(|m| Arc::new(m.clone())),
        abs,
    };
    Ok(dy
        .contiguous()?
        .apply_op2_no_bwd(&w.contiguous()?, &MaskedGrad(op))?)
}

/// The same with candle ops (other devices and dtypes).
fn stock(w: &Tensor, mask: Option<&BitSet>, abs: bool) -> Result<Tensor> {
    let w = if abs { w.abs()? } else { w.clone() };
    Ok(match mask {
        None => w,
        Some(m) => {
            let v: Vec<f32> = (0..m.len()).map(|i| m.get(i) as u8 as f32).collect();
            let m = Tensor::from_vec(v, w.dims(), w.device())?.to_dtype(w.dtype())?;
            w.mul(&m)?
        }
    })
}

/// Elements per parallel chunk: a multiple of 64, so chunks start on a
/// mask word.
const CHUNK: usize = 1 << 16;

/// `out[i] = f(a[i], b[i])` where mask bit `i` is set (everywhere without
/// a mask), `zero` elsewhere; chunks in parallel, a mask word at a time
/// (empty and full words take the fast paths: pruned layers are mostly
/// empty words, dense ones full words). Every element is written once,
/// into uninitialised memory: zero-filling the weight-sized output first
/// was a tenth of a SynFlow run (this runs forward and backward for every
/// layer in every round).
fn map<T: Copy + Send + Sync>(
    mask: Option<&BitSet>,
    a: &[T],
    b: &[T],
    zero: T,
    f: impl Fn(T, T) -> T + Sync,
) -> Vec<T> {
    let n = a.len();
    let mut out = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, dst)| {
            let base = c * CHUNK;
            for (wi, d) in dst.chunks_mut(64).enumerate() {
                let start = base + wi * 64;
                let (a, b) = (&a[start..start + d.len()], &b[start..start + d.len()]);
                let word = mask.map_or(u64::MAX, |m| m.words()[start / 64]);
                map_word(word, d, a, b, zero, &f);
            }
        });
    // SAFETY: the chunks above cover `out[..n]` and `map_word` writes
    // every element of its chunk.
    unsafe { out.set_len(n) };
    out
}

/// One mask word of [`map`]: `d[j] = f(a[j], b[j])` where bit `j` of
/// `word` is set, `zero` elsewhere (every element of `d` written).
fn map_word<T: Copy>(
    word: u64,
    d: &mut [std::mem::MaybeUninit<T>],
    a: &[T],
    b: &[T],
    zero: T,
    f: &impl Fn(T, T) -> T,
) {
    let all = match d.len() {
        64 => u64::MAX,
        len => (1u64 << len) - 1,
    };
    if word & all == 0 {
        d.iter_mut().for_each(|d| {
            d.write(zero);
        });
    } else if word & all == all {
        for ((d, &x), &y) in d.iter_mut().zip(a).zip(b) {
            d.write(f(x, y));
        }
    } else {
        for (j, ((d, &x), &y)) in d.iter_mut().zip(a).zip(b).enumerate() {
            d.write(if word >> j & 1 == 1 { f(x, y) } else { zero });
        }
    }
}

fn contiguous<'a, T>(s: &'a [T], l: &Layout) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("masked weight: non-contiguous operand"),
    }
}

#[derive(Clone)]
struct Masked {
    mask: Option<Arc<BitSet>>,
    abs: bool,
}

impl CustomOp1 for Masked {
    fn name(&self) -> &'static str {
        "maskforge-masked-weight"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, abs) = (self.mask.as_deref(), self.abs);
        if m.is_some_and(|m| m.len() != l.shape().elem_count()) {
            candle_core::bail!("masked weight: mask and weight sizes differ")
        }
        let out = match s {
            CpuStorage::F32(w) => {
                let w = contiguous(w, l)?;
                CpuStorage::F32(map(m, w, w, 0.0, |x, _| if abs { x.abs() } else { x }))
            }
            CpuStorage::F64(w) => {
                let w = contiguous(w, l)?;
                CpuStorage::F64(map(m, w, w, 0.0, |x, _| if abs { x.abs() } else { x }))
            }
            _ => candle_core::bail!("masked weight: f32 or f64 expected"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, w: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            dy.contiguous()?
                .apply_op2_no_bwd(w, &MaskedGrad(self.clone()))?,
        ))
    }
}

/// `(dy, w) -> dy * mask` (times `sign(w)` for `|w|`).
struct MaskedGrad(Masked);

impl CustomOp2 for MaskedGrad {
    fn name(&self) -> &'static str {
        "maskforge-masked-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, abs) = (self.0.mask.as_deref(), self.0.abs);
        if l1.shape() != l2.shape() {
            candle_core::bail!("masked weight grad: gradient and weight shapes differ")
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(g), CpuStorage::F32(w)) => CpuStorage::F32(map(
                m,
                contiguous(g, l1)?,
                contiguous(w, l2)?,
                0.0,
                |g, w| if abs && w < 0.0 { -g } else { g },
            )),
            (CpuStorage::F64(g), CpuStorage::F64(w)) => CpuStorage::F64(map(
                m,
                contiguous(g, l1)?,
                contiguous(w, l2)?,
                0.0,
                |g, w| if abs && w < 0.0 { -g } else { g },
            )),
            _ => candle_core::bail!("masked weight grad: f32 or f64 operands of one dtype"),
        };
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// Against the candle ops it replaces (abs, product with the mask as a
    /// tensor): values and gradients, across chunk boundaries and a
    /// non-multiple-of-64 length, in f32 and f64.
    #[test]
    fn matches_candle_abs_and_mul() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let n = 2 * CHUNK + 77;
        let w: Vec<f64> = (0..n).map(|_| rng.random::<f64>() - 0.5).collect();
        let r: Vec<f64> = (0..n).map(|_| rng.random::<f64>() - 0.5).collect();
        let mask = BitSet::from_fn(n, |_| rng.random::<f64>() < 0.6);
        for dtype in [DType::F32, DType::F64] {
            for abs in [false, true] {
                let dev = Device::Cpu;
                let t = |v: &[f64]| {
                    Tensor::from_vec(v.to_vec(), n, &dev)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap()
                };
                let wv = Var::from_tensor(&t(&w)).unwrap();
                let run = |y: Tensor| {
                    let g = (&y * &t(&r))
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap();
                    let flat =
                        |x: &Tensor| x.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
                    (flat(&y), flat(g.get(wv.as_tensor()).unwrap()))
                };
                let ours = run(masked_weight(wv.as_tensor(), Some(&mask), abs).unwrap());
                let theirs = run(stock(wv.as_tensor(), Some(&mask), abs).unwrap());
                assert_eq!(ours, theirs, "{dtype:?} abs={abs}");
            }
        }
    }

    #[test]
    fn a_full_mask_without_abs_is_the_weight_itself() {
        let w = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let y = masked_weight(w.as_tensor(), Some(&BitSet::full(2)), false).unwrap();
        assert_eq!(y.id(), w.as_tensor().id());
    }
}
