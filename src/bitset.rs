//! A fixed-length bitset: the storage of every mask and liveness flag in maskforge.
//!
//! Masks are kept bit-packed (one bit per weight) so that a billion-weight
//! checkpoint's mask costs 125 MB rather than the 4 GB of a float tensor.
//!
//! ```
//! use maskforge::bitset::BitSet;
//! let mut b = BitSet::new(10);
//! b.set(3, true);
//! assert!(b.get(3) && !b.get(4));
//! assert_eq!(b.count_ones(), 1);
//! ```

/// `SPREAD[b]` holds bit `j` of `b` in byte `j` (little-endian): 8 mask bits
/// become 8 BOOL bytes in one store.
const SPREAD: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut j = 0;
        while j < 8 {
            if (b >> j) & 1 == 1 {
                t[b] |= 1u64 << (8 * j);
            }
            j += 1;
        }
        b += 1;
    }
    t
};

/// Indices of the set bits of word `wi` holding `w`.
fn word_ones(wi: usize, mut w: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if w == 0 {
            return None;
        }
        let t = w.trailing_zeros() as usize;
        w &= w - 1;
        Some(wi * 64 + t)
    })
}

/// Indices of the set bits of a little-endian word slice.
pub fn ones_of_words(words: &[u64]) -> impl Iterator<Item = usize> + '_ {
    words
        .iter()
        .enumerate()
        .flat_map(|(wi, &w)| word_ones(wi, w))
}

/// A fixed-length sequence of bits stored in 64-bit words.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct BitSet {
    words: Vec<u64>,
    len: usize,
}

impl std::fmt::Debug for BitSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BitSet(len={}, ones={})", self.len, self.count_ones())
    }
}

impl BitSet {
    /// All bits cleared.
    pub fn new(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    /// All bits set.
    pub fn full(len: usize) -> Self {
        let mut b = Self {
            words: vec![u64::MAX; len.div_ceil(64)],
            len,
        };
        b.clear_tail();
        b
    }

    /// Bits from their 64-bit words (bit `i` is bit `i % 64` of word
    /// `i / 64`); bits past `len` are cleared.
    pub fn from_words(mut words: Vec<u64>, len: usize) -> Self {
        words.resize(len.div_ceil(64), 0);
        let mut b = Self { words, len };
        b.clear_tail();
        b
    }

    /// Bits from a boolean predicate over indices.
    pub fn from_fn(len: usize, mut f: impl FnMut(usize) -> bool) -> Self {
        let mut b = Self::new(len);
        for (w, word) in b.words.iter_mut().enumerate() {
            let base = w * 64;
            let end = (base + 64).min(len);
            let mut acc = 0u64;
            for i in base..end {
                if f(i) {
                    acc |= 1 << (i - base);
                }
            }
            *word = acc;
        }
        b
    }

    fn clear_tail(&mut self) {
        let rem = self.len % 64;
        if rem != 0 {
            if let Some(last) = self.words.last_mut() {
                *last &= (1u64 << rem) - 1;
            }
        }
    }

    /// Number of bits.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the set holds no bits at all (length 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn get(&self, i: usize) -> bool {
        debug_assert!(i < self.len);
        (self.words[i >> 6] >> (i & 63)) & 1 == 1
    }

    #[inline]
    pub fn set(&mut self, i: usize, v: bool) {
        debug_assert!(i < self.len);
        let m = 1u64 << (i & 63);
        if v {
            self.words[i >> 6] |= m;
        } else {
            self.words[i >> 6] &= !m;
        }
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Set bits in `start..end`.
    pub fn count_ones_in(&self, start: usize, end: usize) -> usize {
        debug_assert!(start <= end && end <= self.len);
        if start == end {
            return 0;
        }
        let (ws, we) = (start >> 6, (end - 1) >> 6);
        let lo_mask = u64::MAX << (start & 63);
        let hi_mask = u64::MAX >> (63 - ((end - 1) & 63));
        if ws == we {
            return (self.words[ws] & lo_mask & hi_mask).count_ones() as usize;
        }
        let mut n = (self.words[ws] & lo_mask).count_ones() as usize;
        n += self.words[ws + 1..we]
            .iter()
            .map(|w| w.count_ones() as usize)
            .sum::<usize>();
        n + (self.words[we] & hi_mask).count_ones() as usize
    }

    /// True when any bit in `start..end` is set.
    pub fn any_in(&self, start: usize, end: usize) -> bool {
        self.count_ones_in(start, end) > 0
    }

    /// Up to 64 bits starting at `start`, as the low bits of a word.
    #[inline]
    pub fn bits_at(&self, start: usize, n: usize) -> u64 {
        debug_assert!(n <= 64 && start + n <= self.len);
        if n == 0 {
            return 0;
        }
        let (w, off) = (start >> 6, start & 63);
        let mut v = self.words[w] >> off;
        if off + n > 64 {
            v |= self.words[w + 1] << (64 - off);
        }
        if n == 64 {
            v
        } else {
            v & ((1u64 << n) - 1)
        }
    }

    /// OR the low `n` bits of `word` into positions `start..start + n`.
    #[inline]
    pub fn or_bits_at(&mut self, start: usize, n: usize, word: u64) {
        debug_assert!(n <= 64 && start + n <= self.len);
        if n == 0 {
            return;
        }
        let word = if n == 64 {
            word
        } else {
            word & ((1u64 << n) - 1)
        };
        let (w, off) = (start >> 6, start & 63);
        self.words[w] |= word << off;
        if off + n > 64 {
            self.words[w + 1] |= word >> (64 - off);
        }
    }

    /// OR `words` into the set from word `at` on (bit `64 * at`).
    pub fn or_words_at(&mut self, at: usize, words: &[u64]) {
        debug_assert!((at + words.len()) * 64 <= self.len.next_multiple_of(64));
        for (a, &w) in self.words[at..at + words.len()].iter_mut().zip(words) {
            *a |= w;
        }
    }

    /// Indices of the set bits, in increasing order.
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        ones_of_words(&self.words)
    }

    /// Indices of the set bits in `start..end`, in increasing order.
    pub fn ones_in(&self, start: usize, end: usize) -> impl Iterator<Item = usize> + '_ {
        debug_assert!(start <= end && end <= self.len);
        let (w0, w1) = (start >> 6, end.div_ceil(64));
        (w0..w1).flat_map(move |wi| {
            let mut w = self.words[wi];
            if wi == w0 {
                w &= u64::MAX << (start & 63);
            }
            if wi + 1 == w1 && end & 63 != 0 {
                w &= (1u64 << (end & 63)) - 1;
            }
            word_ones(wi, w)
        })
    }

    /// `self &= other`.
    pub fn and_with(&mut self, other: &BitSet) {
        assert_eq!(self.len, other.len);
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= *b;
        }
    }

    /// `self |= other`.
    pub fn or_with(&mut self, other: &BitSet) {
        assert_eq!(self.len, other.len);
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= *b;
        }
    }

    /// True when every set bit of `self` is also set in `other`.
    pub fn is_subset_of(&self, other: &BitSet) -> bool {
        self.len == other.len
            && self
                .words
                .iter()
                .zip(&other.words)
                .all(|(a, b)| a & !b == 0)
    }

    /// The raw words (little-endian bit order within each word).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// One byte per bit (0 or 1): the layout of a BOOL/U8 safetensors tensor.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        self.write_bytes(&mut out).expect("writing to memory");
        out
    }

    /// [`BitSet::to_bytes`] streamed into `w` through one small buffer: a
    /// mask file's layers are never expanded whole (a billion bits would
    /// be a gigabyte of fresh pages to fault in and zero).
    pub fn write_bytes(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        const WORDS: usize = 1024;
        let mut buf = vec![0u8; WORDS * 64];
        for (ci, words) in self.words.chunks(WORDS).enumerate() {
            let len = (self.len - ci * WORDS * 64).min(words.len() * 64);
            for (&word, bytes) in words.iter().zip(buf.chunks_exact_mut(64)) {
                for (k, b) in bytes.chunks_exact_mut(8).enumerate() {
                    // Spread 8 bits into 8 bytes with one table lookup.
                    let byte = ((word >> (8 * k)) & 0xff) as usize;
                    b.copy_from_slice(&SPREAD[byte].to_le_bytes());
                }
            }
            w.write_all(&buf[..len])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn range_counts_match_naive(bits in proptest::collection::vec(any::<bool>(), 0..300), a in 0usize..300, b in 0usize..300) {
            let n = bits.len();
            let s = BitSet::from_fn(n, |i| bits[i]);
            let (lo, hi) = (a.min(b).min(n), a.max(b).min(n));
            let naive = bits[lo..hi].iter().filter(|&&x| x).count();
            prop_assert_eq!(s.count_ones_in(lo, hi), naive);
            prop_assert_eq!(s.ones().collect::<Vec<_>>(), (0..n).filter(|&i| bits[i]).collect::<Vec<_>>());
            prop_assert_eq!(s.ones_in(lo, hi).collect::<Vec<_>>(), (lo..hi).filter(|&i| bits[i]).collect::<Vec<_>>());
            if hi > lo {
                let k = (hi - lo).min(64);
                let mut t = BitSet::new(n);
                t.or_bits_at(lo, k, s.bits_at(lo, k));
                for (j, &bit) in bits.iter().enumerate() { prop_assert_eq!(t.get(j), j >= lo && j < lo + k && bit); }
                let word = s.bits_at(lo, k);
                for j in 0..k { prop_assert_eq!((word >> j) & 1 == 1, bits[lo + j]); }
            }
        }
    }

    /// Across the streaming buffer's boundaries (65 536 bits) too.
    #[test]
    fn streamed_bytes_follow_the_bits_across_chunks() {
        let n = 2 * 65_536 + 77;
        let b = BitSet::from_fn(n, |i| (i * 7919) % 13 < 5 || i == n - 1);
        let bytes = b.to_bytes();
        assert_eq!(bytes.len(), n);
        assert!((0..n).all(|i| bytes[i] == u8::from(b.get(i))));
    }

    #[test]
    fn bytes_follow_the_bits() {
        let b = BitSet::from_fn(130, |i| i % 3 == 0 || i == 129);
        let bytes = b.to_bytes();
        assert_eq!(bytes.len(), 130);
        for (i, &x) in bytes.iter().enumerate() {
            assert_eq!(x == 1, b.get(i));
        }
    }

    #[test]
    fn full_has_no_stray_tail_bits() {
        let b = BitSet::full(70);
        assert_eq!(b.count_ones(), 70);
        assert!(BitSet::new(70).is_subset_of(&b));
    }
}
