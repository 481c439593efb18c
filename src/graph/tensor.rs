//! Constant tensors: the weights and shape constants a model carries.
//!
//! Data stays where it was found (an ONNX buffer, a memory-mapped safetensors
//! file, or a single splatted value for `ConstantOfShape`) and is converted to
//! `f32` only when an algorithm asks for values.
//!
//! ```
//! use maskforge::graph::tensor::{ConstTensor, DType};
//! let t = ConstTensor::splat(vec![2, 3], 0.5, DType::F32);
//! assert_eq!(t.numel(), 6);
//! assert_eq!(t.to_f32().unwrap(), vec![0.5; 6]);
//! ```

use std::sync::Arc;

use crate::bitset::BitSet;
use crate::error::{Error, Result};

/// Element types maskforge can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I8,
    U8,
    Bool,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }

    /// The name safetensors headers give this dtype.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F64 => "F64",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I8 => "I8",
            DType::U8 => "U8",
            DType::Bool => "BOOL",
        }
    }
}

/// Where a tensor's bytes live: an owned vector or a memory map.
pub trait ByteSource: Send + Sync {
    fn bytes(&self) -> &[u8];
    /// The range will not be read again soon: a memory map drops its pages,
    /// so scanning a checkpoint larger than memory keeps the RSS bounded.
    fn release(&self, _range: std::ops::Range<usize>) {}
}

impl ByteSource for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// A read-only byte buffer shared between tensors.
pub type SharedBytes = Arc<dyn ByteSource>;

/// Where a tensor's elements live.
#[derive(Clone)]
pub enum Data {
    /// Little-endian elements of `dtype` in `buf[range]`.
    Bytes {
        buf: SharedBytes,
        range: std::ops::Range<usize>,
        dtype: DType,
    },
    /// Decoded floats.
    F32(Arc<Vec<f32>>),
    /// Decoded integers (shape constants).
    I64(Arc<Vec<i64>>),
    /// Every element equal to one value (`ConstantOfShape`).
    Splat(f64, DType),
    /// Seeded normal samples `N(0, std^2)`, generated on demand from a
    /// ChaCha stream keyed by `seed` (see [`crate::rng`]).
    Normal { seed: [u8; 32], std: f32 },
    /// Seeded uniform samples `U(-bound, bound)`, generated on demand like
    /// [`Data::Normal`].
    Uniform { seed: [u8; 32], bound: f32 },
}

/// A constant tensor with its shape.
#[derive(Clone)]
pub struct ConstTensor {
    pub shape: Vec<usize>,
    pub data: Data,
}

impl std::fmt::Debug for ConstTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConstTensor({:?}, {:?})", self.shape, self.dtype())
    }
}

impl ConstTensor {
    pub fn f32(shape: Vec<usize>, values: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), values.len());
        Self {
            shape,
            data: Data::F32(Arc::new(values)),
        }
    }

    pub fn i64(shape: Vec<usize>, values: Vec<i64>) -> Self {
        Self {
            shape,
            data: Data::I64(Arc::new(values)),
        }
    }

    pub fn splat(shape: Vec<usize>, value: f64, dtype: DType) -> Self {
        Self {
            shape,
            data: Data::Splat(value, dtype),
        }
    }

    /// A view of `len` elements of `dtype` stored at `offset` in `buf`; checks bounds.
    pub fn from_bytes(
        shape: Vec<usize>,
        dtype: DType,
        buf: SharedBytes,
        offset: usize,
        what: &str,
    ) -> Result<Self> {
        let n: usize = shape.iter().product();
        let bytes = n
            .checked_mul(dtype.size())
            .ok_or_else(|| Error::input(format!("{what}: tensor size overflows")))?;
        let end = offset
            .checked_add(bytes)
            .ok_or_else(|| Error::input(format!("{what}: tensor offset overflows")))?;
        let have = buf.bytes().len();
        if end > have {
            return Err(Error::input(format!(
                "{what}: data needs bytes {offset}..{end} but only {have} are present"
            )));
        }
        Ok(Self {
            shape,
            data: Data::Bytes {
                buf,
                range: offset..end,
                dtype,
            },
        })
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// A tensor of the float type `dtype` holding `values` (rounded to nearest
    /// even when `dtype` is narrower than f32).
    pub fn from_f32_as(shape: Vec<usize>, dtype: DType, values: &[f32]) -> Result<Self> {
        let bytes = encode_floats(dtype, values)?;
        Self::from_bytes(shape, dtype, Arc::new(bytes), 0, "encoded tensor")
    }

    /// The elements as little-endian bytes of the tensor's own dtype: the
    /// stored bytes when there are any, else the values encoded.
    pub fn le_bytes(&self) -> Result<Vec<u8>> {
        match &self.data {
            Data::Bytes { buf, range, .. } => Ok(buf.bytes()[range.clone()].to_vec()),
            Data::I64(v) => Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            _ => encode_floats(self.dtype(), &self.to_f32()?),
        }
    }

    pub fn dtype(&self) -> DType {
        match &self.data {
            Data::Bytes { dtype, .. } => *dtype,
            Data::F32(_) => DType::F32,
            Data::I64(_) => DType::I64,
            Data::Splat(_, d) => *d,
            Data::Normal { .. } | Data::Uniform { .. } => DType::F32,
        }
    }

    /// Element `i` as f64 (slow path: used for small tensors and folding).
    fn get_f64(&self, i: usize) -> f64 {
        match &self.data {
            Data::F32(v) => v[i] as f64,
            Data::I64(v) => v[i] as f64,
            Data::Splat(x, _) => *x,
            Data::Normal { .. } | Data::Uniform { .. } => {
                self.to_f32().map(|v| v[i] as f64).unwrap_or(f64::NAN)
            }
            Data::Bytes { buf, range, dtype } => {
                let b = &buf.bytes()[range.clone()];
                decode_one(b, *dtype, i)
            }
        }
    }

    /// All elements as f32.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        Ok(match &self.data {
            Data::F32(v) => v.as_ref().clone(),
            Data::Splat(x, _) => vec![*x as f32; self.numel()],
            Data::Normal { seed, std } => crate::rng::normal_vec(*seed, *std, self.numel()),
            Data::Uniform { seed, bound } => crate::rng::uniform_vec(*seed, *bound, self.numel()),
            Data::Bytes {
                buf,
                range,
                dtype: DType::F32,
            } => buf.bytes()[range.clone()]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Data::Bytes {
                buf,
                range,
                dtype: DType::BF16,
            } => buf.bytes()[range.clone()]
                .chunks_exact(2)
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                .collect(),
            Data::Bytes {
                buf,
                range,
                dtype: DType::F16,
            } => buf.bytes()[range.clone()]
                .chunks_exact(2)
                .map(|c| half_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            _ => (0..self.numel()).map(|i| self.get_f64(i) as f32).collect(),
        })
    }

    /// Append `|x|` of elements `range` to `out` as integers that order
    /// like it, read straight from the stored bits: a float's bits without
    /// the sign count up with its magnitude, in f32, f16 and bf16 alike.
    /// Keys of one tensor compare with each other only. False when an
    /// element is NaN or infinite (nothing to rank by).
    ///
    /// ```
    /// use maskforge::graph::tensor::{ConstTensor, DType};
    /// let t = ConstTensor::from_f32_as(vec![4], DType::BF16, &[-3.0, 0.5, -0.0, 2.0]).unwrap();
    /// let mut k = Vec::new();
    /// assert!(t.magnitude_keys(0..4, &mut k).unwrap());
    /// assert!(k[0] > k[3] && k[3] > k[1] && k[1] > k[2] && k[2] == 0);
    /// let t = ConstTensor::from_f32_as(vec![2], DType::F16, &[1.0, f32::INFINITY]).unwrap();
    /// assert!(!t.magnitude_keys(0..2, &mut k).unwrap());
    /// ```
    pub fn magnitude_keys(
        &self,
        range: std::ops::Range<usize>,
        out: &mut Vec<u32>,
    ) -> Result<bool> {
        /// Keys of `S`-byte floats whose magnitude bits are `abs` and
        /// exponent bits `exp`.
        fn keys<const S: usize>(b: &[u8], abs: u32, exp: u32, out: &mut Vec<u32>) -> bool {
            let mut finite = true;
            out.extend(b.chunks_exact(S).map(|c| {
                let bits = c.iter().rev().fold(0u32, |a, &x| a << 8 | u32::from(x));
                finite &= bits & exp != exp;
                bits & abs
            }));
            finite
        }
        if let Data::Bytes {
            buf,
            range: at,
            dtype,
        } = &self.data
        {
            let sz = dtype.size();
            let b = &buf.bytes()[at.start + range.start * sz..at.start + range.end * sz];
            match dtype {
                DType::F32 => return Ok(keys::<4>(b, 0x7fff_ffff, 0x7f80_0000, out)),
                DType::BF16 => return Ok(keys::<2>(b, 0x7fff, 0x7f80, out)),
                DType::F16 => return Ok(keys::<2>(b, 0x7fff, 0x7c00, out)),
                _ => {}
            }
        }
        let v = self.range_f32(range)?;
        out.extend(v.iter().map(|x| x.abs().to_bits()));
        Ok(v.iter().all(|x| x.is_finite()))
    }

    /// Elements `range` as f32, decoding only those (one row of a large
    /// embedding table, not the table).
    pub fn range_f32(&self, range: std::ops::Range<usize>) -> Result<Vec<f32>> {
        if range.end > self.numel() {
            return Err(Error::internal(format!(
                "elements {range:?} of a tensor of {}",
                self.numel()
            )));
        }
        Ok(match &self.data {
            Data::F32(v) => v[range].to_vec(),
            Data::Normal { .. } | Data::Uniform { .. } => self.to_f32()?[range].to_vec(),
            _ => range.map(|i| self.get_f64(i) as f32).collect(),
        })
    }

    /// All elements as i64 (shape constants, axes).
    pub fn to_i64(&self) -> Vec<i64> {
        match &self.data {
            Data::I64(v) => v.as_ref().clone(),
            _ => (0..self.numel()).map(|i| self.get_f64(i) as i64).collect(),
        }
    }

    /// Bit `i` set where element `i` is nonzero: the mask a checkpoint's zeros imply.
    pub fn nonzero_mask(&self) -> BitSet {
        let n = self.numel();
        match &self.data {
            Data::Splat(x, _) => {
                if *x != 0.0 {
                    BitSet::full(n)
                } else {
                    BitSet::new(n)
                }
            }
            Data::F32(v) => BitSet::from_fn(n, |i| v[i] != 0.0),
            Data::Normal { .. } | Data::Uniform { .. } => {
                let v = self.to_f32().unwrap_or_default();
                BitSet::from_fn(n, |i| v[i] != 0.0)
            }
            Data::I64(v) => BitSet::from_fn(n, |i| v[i] != 0),
            Data::Bytes { buf, range, dtype } => {
                let b = &buf.bytes()[range.clone()];
                let sz = dtype.size();
                let bits = match dtype {
                    // +0.0 and -0.0 are both zero: test the bits without the sign.
                    DType::F32 => nonzero_floats::<4>(n, b),
                    DType::F16 | DType::BF16 => nonzero_floats::<2>(n, b),
                    DType::F64 => BitSet::from_fn(n, |i| {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(&b[i * 8..i * 8 + 8]);
                        u64::from_le_bytes(a) & 0x7fff_ffff_ffff_ffff != 0
                    }),
                    _ => BitSet::from_fn(n, |i| b[i * sz..(i + 1) * sz].iter().any(|&x| x != 0)),
                };
                buf.release(range.clone());
                bits
            }
        }
    }

    /// Let a memory-mapped tensor's pages go (it will not be read again soon).
    pub fn release(&self) {
        if let Data::Bytes { buf, range, .. } = &self.data {
            buf.release(range.clone());
        }
    }

    /// Feed the stored bytes to a hasher (memory-mapped pages are released
    /// afterwards). Decoded data is hashed as little-endian f32 or i64.
    pub fn hash_bytes(&self, h: &mut impl sha2::Digest) {
        match &self.data {
            Data::Bytes { buf, range, .. } => {
                for chunk in buf.bytes()[range.clone()].chunks(1 << 24) {
                    h.update(chunk);
                }
                buf.release(range.clone());
            }
            Data::I64(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
            _ => {
                if let Ok(v) = self.to_f32() {
                    v.iter().for_each(|x| h.update(x.to_le_bytes()));
                }
            }
        }
    }
}

/// Which of `n` floats of `S` bytes (2: f16/bf16, 4: f32), stored little
/// endian in `b`, are non-zero (either sign of zero counts as zero), a
/// mask word of 64 at a time. The per-element path took seconds on a
/// billion weights.
fn nonzero_floats<const S: usize>(n: usize, b: &[u8]) -> BitSet {
    let mut words = Vec::with_capacity(n.div_ceil(64));
    let bytes = &b[..n * S];
    let mut blocks = bytes.chunks_exact(64 * S);
    for block in &mut blocks {
        #[cfg(target_arch = "x86_64")]
        words.push(simd::nonzero_word::<S>(block));
        #[cfg(not(target_arch = "x86_64"))]
        words.push(nonzero_word_swar::<S>(block));
    }
    let rest = blocks.remainder();
    if !rest.is_empty() {
        let lane = if S == 2 { 0x7fff } else { 0x7fff_ffff };
        let mut w = 0u64;
        for (i, c) in rest.chunks_exact(S).enumerate() {
            let bits = c.iter().rev().fold(0u64, |a, &x| a << 8 | u64::from(x));
            w |= u64::from(bits & lane != 0) << i;
        }
        words.push(w);
    }
    BitSet::from_words(words, n)
}

/// One word of [`nonzero_floats`] eight bytes at a time (the portable
/// path; x86-64 uses [`simd`]): with the sign bits cleared, adding
/// `0x7fff` to each 16-bit lane (`0x7fffffff` to each 32-bit one) sets the
/// lane's top bit exactly when the lane is non-zero, and no carry crosses
/// lanes.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn nonzero_word_swar<const S: usize>(block: &[u8]) -> u64 {
    let (mask, lanes) = match S {
        2 => (0x7fff_7fff_7fff_7fffu64, 4),
        _ => (0x7fff_ffff_7fff_ffffu64, 2),
    };
    let top = |t: u64| -> u64 {
        (0..lanes).fold(0, |acc, k| acc | ((t >> (8 * S * (k + 1) - 1)) & 1) << k)
    };
    block.chunks_exact(8).enumerate().fold(0u64, |w, (j, c)| {
        let x = u64::from_le_bytes(c.try_into().expect("8 bytes")) & mask;
        w | top(x + mask) << (j * lanes)
    })
}

/// SSE2 (part of every x86-64) for [`nonzero_floats`]: a compare against
/// zero per lane and one `movemask` per 16 elements, about a sixth of the
/// instructions of the eight-byte trick, which matters at 2 GB per audit.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Bit `i` set when float `i` of the 64 in `block` (`64 * S` bytes) is
    /// non-zero, ignoring the sign.
    pub(super) fn nonzero_word<const S: usize>(block: &[u8]) -> u64 {
        assert_eq!(block.len(), 64 * S);
        // SAFETY: SSE2 is in the x86-64 baseline; the loads are unaligned
        // and stay inside `block` (checked above).
        unsafe {
            let load = |v: usize| _mm_loadu_si128(block.as_ptr().add(16 * v).cast());
            let mut zero = 0u64;
            for q in 0..4 {
                // 16 elements -> 16 bytes of 0xff (zero) or 0x00.
                let bytes = if S == 2 {
                    let m = _mm_set1_epi16(0x7fff);
                    let eq = |v| _mm_cmpeq_epi16(_mm_and_si128(load(v), m), _mm_setzero_si128());
                    _mm_packs_epi16(eq(2 * q), eq(2 * q + 1))
                } else {
                    let m = _mm_set1_epi32(0x7fff_ffff);
                    let eq = |v| _mm_cmpeq_epi32(_mm_and_si128(load(v), m), _mm_setzero_si128());
                    _mm_packs_epi16(
                        _mm_packs_epi32(eq(4 * q), eq(4 * q + 1)),
                        _mm_packs_epi32(eq(4 * q + 2), eq(4 * q + 3)),
                    )
                };
                zero |= (_mm_movemask_epi8(bytes) as u32 as u64 & 0xffff) << (16 * q);
            }
            !zero
        }
    }
}

/// `values` as little-endian elements of the float type `dtype`.
pub(crate) fn encode_floats(dtype: DType, values: &[f32]) -> Result<Vec<u8>> {
    Ok(match dtype {
        DType::F32 => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::F64 => values
            .iter()
            .flat_map(|&x| (x as f64).to_le_bytes())
            .collect(),
        DType::F16 => values
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        DType::BF16 => values
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
        other => {
            return Err(Error::internal(format!(
                "cannot encode floats as {other:?}"
            )))
        }
    })
}

fn decode_one(b: &[u8], dtype: DType, i: usize) -> f64 {
    let s = dtype.size();
    let c = &b[i * s..(i + 1) * s];
    match dtype {
        DType::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
        DType::F64 => f64::from_le_bytes(c.try_into().unwrap()),
        DType::F16 => half_to_f32(u16::from_le_bytes([c[0], c[1]])) as f64,
        DType::BF16 => f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64,
        DType::I64 => i64::from_le_bytes(c.try_into().unwrap()) as f64,
        DType::I32 => i32::from_le_bytes(c.try_into().unwrap()) as f64,
        DType::I8 => c[0] as i8 as f64,
        DType::U8 | DType::Bool => c[0] as f64,
    }
}

/// IEEE half to single precision.
fn half_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: renormalise.
            let mut e = 127 - 15 + 1;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
        (31, 0) => sign | 0x7f80_0000,
        (31, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonzero_floats_agrees_with_the_element_test() {
        // Every awkward value in both widths, at lengths around a word.
        let f32s = [
            0.0f32,
            -0.0,
            1.0,
            -1e-45,
            f32::MIN_POSITIVE,
            f32::NAN,
            -2.5,
            0.0,
        ];
        for n in [1, 7, 63, 64, 65, 130] {
            let v: Vec<f32> = (0..n).map(|i| f32s[(i * 5 + i / 3) % f32s.len()]).collect();
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            let want = BitSet::from_fn(n, |i| v[i] != 0.0 || v[i].is_nan());
            assert_eq!(nonzero_floats::<4>(n, &bytes), want, "f32 n={n}");
            let h: Vec<u16> = v.iter().map(|x| (x.to_bits() >> 16) as u16).collect();
            let bytes: Vec<u8> = h.iter().flat_map(|x| x.to_le_bytes()).collect();
            let want = BitSet::from_fn(n, |i| h[i] & 0x7fff != 0);
            assert_eq!(nonzero_floats::<2>(n, &bytes), want, "bf16 n={n}");
        }
    }

    /// Both word paths on every bit pattern class: the zeros, the smallest
    /// and largest magnitudes, sign-only, NaN payloads, and random bits.
    #[test]
    fn nonzero_word_paths_agree_on_all_bit_classes() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let specials = [
            0u32,
            0x8000_0000,
            0x8000,
            1,
            0x8000_8001,
            0x7fff_ffff,
            0xffff_ffff,
        ];
        for round in 0..200 {
            let v: Vec<u32> = (0..64)
                .map(|_| match next() % 4 {
                    0 | 1 => specials[(next() % 7) as usize],
                    _ if round % 2 == 0 => next() as u32 & 0x8000_0001,
                    _ => next() as u32,
                })
                .collect();
            let want = |bits: u32| (0..64).fold(0u64, |w, i| w | u64::from(v[i] & bits != 0) << i);
            let b4: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            let b2: Vec<u8> = v.iter().flat_map(|&x| (x as u16).to_le_bytes()).collect();
            assert_eq!(nonzero_word_swar::<4>(&b4), want(0x7fff_ffff));
            assert_eq!(nonzero_word_swar::<2>(&b2), want(0x7fff));
            #[cfg(target_arch = "x86_64")]
            {
                assert_eq!(simd::nonzero_word::<4>(&b4), want(0x7fff_ffff));
                assert_eq!(simd::nonzero_word::<2>(&b2), want(0x7fff));
            }
        }
    }

    /// Keys order like |x| in every stored float type, against the
    /// decoded values (random magnitudes over the whole exponent range,
    /// both signs, zeros, subnormals).
    #[test]
    fn magnitude_keys_order_like_decoded_magnitudes() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let v: Vec<f32> = (0..5000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match i % 10 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => 1e-40 * (x % 7) as f32,
                    _ => f32::from_bits(x as u32 & 0xbfff_ffff),
                }
            })
            .collect();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let t = ConstTensor::from_f32_as(vec![v.len()], dtype, &v).unwrap();
            let mut keys = Vec::new();
            assert!(t.magnitude_keys(0..v.len(), &mut keys).unwrap());
            let decoded = t.to_f32().unwrap();
            for i in 0..v.len() - 1 {
                let (a, b) = (decoded[i].abs(), decoded[i + 1].abs());
                assert_eq!(
                    keys[i].cmp(&keys[i + 1]),
                    a.total_cmp(&b),
                    "{dtype:?} {a} {b}"
                );
            }
            let mut bad = v.clone();
            bad[4321] = f32::NAN;
            let t = ConstTensor::from_f32_as(vec![v.len()], dtype, &bad).unwrap();
            let mut keys = Vec::new();
            assert!(
                !t.magnitude_keys(4000..4400, &mut keys).unwrap(),
                "{dtype:?}"
            );
            assert!(
                t.magnitude_keys(4400..5000, &mut keys).unwrap(),
                "{dtype:?}"
            );
            assert_eq!(keys.len(), 1000);
        }
    }

    #[test]
    fn half_decodes_known_values() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x0001), 2f32.powi(-24));
        assert!(half_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn negative_zero_is_pruned() {
        let bytes: Vec<u8> = [0.0f32, -0.0, 1.5, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let buf: SharedBytes = Arc::new(bytes);
        let t = ConstTensor::from_bytes(vec![4], DType::F32, buf, 0, "t").unwrap();
        assert_eq!(t.nonzero_mask().ones().collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn floats_encode_in_each_dtype_and_round_to_nearest_even() {
        // 1 + 2^-11 lies halfway between the f16 neighbours 1 and 1 + 2^-10:
        // ties go to the even mantissa, 1.0 (0x3c00).
        let tie = 1.0 + 2f32.powi(-11);
        let t = ConstTensor::from_f32_as(vec![3], DType::F16, &[tie, -2.0, 0.5]).unwrap();
        assert_eq!(
            t.le_bytes().unwrap(),
            vec![0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38]
        );
        assert_eq!(t.to_f32().unwrap(), vec![1.0, -2.0, 0.5]);
        let b = ConstTensor::from_f32_as(vec![1], DType::BF16, &[-2.0]).unwrap();
        assert_eq!(b.le_bytes().unwrap(), vec![0x00, 0xc0]);
        let d = ConstTensor::from_f32_as(vec![1], DType::F64, &[0.1]).unwrap();
        assert_eq!(
            d.le_bytes().unwrap(),
            (0.1f32 as f64).to_le_bytes().to_vec()
        );
        assert!(encode_floats(DType::I64, &[1.0]).is_err());
    }

    #[test]
    fn out_of_range_bytes_are_an_input_error() {
        let buf: SharedBytes = Arc::new(vec![0u8; 8]);
        let e = ConstTensor::from_bytes(vec![4], DType::F32, buf, 0, "w").unwrap_err();
        assert!(e.to_string().contains("only 8"));
    }
}
