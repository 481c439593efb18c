//! The product of a binary mask with a matrix of path counts: the heavy step
//! of counting effective paths through a convolution.
//!
//! A convolution with binary weights is `out[o, p] = sum_k mask[o, k] *
//! cols[k, p]`, `k` running over (input channel, kernel tap) and `cols` the
//! im2col matrix of the input counts. [`Product::compute`] forms it in one of
//! two ways, whichever its cost model says is cheaper:
//! - as a matrix product with candle (an optimised f64 GEMM), after cutting
//!   the columns no row keeps or that are known to read zeros, and
//!   multiplying mask rows with identical bit patterns once (in a dense layer
//!   every row is the same, so the layer costs one row); the matrices are
//!   built in chunks of at most [`CHUNK`] elements, so memory stays bounded;
//! - or, for sparse rows, directly: one column added per kept weight, so the
//!   cost follows the kept count rather than the layer size.
//!
//! ```
//! use maskforge::bitset::BitSet;
//! use maskforge::analysis::paths::product::Product;
//! // Two rows over three columns: [1 0 1] and [1 0 1] (deduplicated), cols 3 x 2.
//! let mask = BitSet::from_fn(6, |i| i % 3 != 1);
//! let cols = [1.0, 2.0, 10.0, 20.0, 100.0, 200.0];
//! let mut out = vec![0.0; 4];
//! let product = Product { mask: &mask, row_len: 3, rows: 0..2, p_len: 2, step: 2 };
//! product.compute(|_| true, |k, p, buf| {
//!     buf.copy_from_slice(&cols[k * 2 + p.start..k * 2 + p.end])
//! }, &mut out).unwrap();
//! assert_eq!(out, vec![101.0, 202.0, 101.0, 202.0]);
//! ```

use std::collections::HashMap;
use std::ops::Range;

use candle_core::{Device, Tensor};

use crate::bitset::BitSet;
use crate::error::Result;

/// Most elements of one matrix built at a time (8 MB of f64).
pub const CHUNK: usize = 1 << 20;

/// How many times faster the GEMM is per multiply-add than the direct loop
/// per element touched: the crossover measured on random ResNet-50 masks
/// lies near density 0.03, which this ratio reproduces (`docs/performance.md`).
const GEMM_SPEEDUP: usize = 10;

/// `out[r, p] += sum_k mask[rows.start + r, k] * col_k[p]` for some rows of
/// a mask whose row `o` is the bits `o * row_len .. (o + 1) * row_len`.
pub struct Product<'a> {
    pub mask: &'a BitSet,
    pub row_len: usize,
    pub rows: Range<usize>,
    /// Length of every column.
    pub p_len: usize,
    /// Columns are asked for in ranges of whole multiples of `step` (one
    /// output row of a conv).
    pub step: usize,
}

/// How to form a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    /// By the cost model.
    Auto,
    /// Matrix product, matrices of at most about this many elements.
    Gemm(usize),
    /// One column added per kept weight.
    Direct,
}

impl Product<'_> {
    /// Accumulate the product into `out` (`rows.len() * p_len` values,
    /// row-major). `usable(k)` may exclude columns known to be all zero;
    /// `fill(k, ps, buf)` writes `col_k[p]` for `p` in `ps` into `buf`,
    /// which arrives zeroed.
    pub fn compute(
        &self,
        usable: impl Fn(usize) -> bool,
        fill: impl FnMut(usize, Range<usize>, &mut [f64]),
        out: &mut [f64],
    ) -> Result<()> {
        self.compute_by(Method::Auto, usable, fill, out)
    }

    fn compute_by(
        &self,
        method: Method,
        usable: impl Fn(usize) -> bool,
        fill: impl FnMut(usize, Range<usize>, &mut [f64]),
        out: &mut [f64],
    ) -> Result<()> {
        debug_assert_eq!(out.len(), self.rows.len() * self.p_len);
        let patterns = Patterns::of(self.mask, self.row_len, self.rows.clone(), &usable);
        let used = patterns.used_columns(self.row_len);
        if used.is_empty() || self.p_len == 0 {
            return Ok(());
        }
        let method = match method {
            Method::Auto if patterns.direct_is_cheaper(used.len()) => Method::Direct,
            Method::Auto => Method::Gemm(CHUNK),
            m => m,
        };
        match method {
            Method::Direct => {
                self.direct(&patterns, fill, out);
                Ok(())
            }
            Method::Gemm(chunk) => self.gemm(&patterns, &used, chunk, fill, out),
            Method::Auto => unreachable!("resolved above"),
        }
    }

    /// Per pattern, add up its columns, then add the sum to its rows.
    fn direct(
        &self,
        patterns: &Patterns,
        mut fill: impl FnMut(usize, Range<usize>, &mut [f64]),
        out: &mut [f64],
    ) {
        let p_len = self.p_len;
        let mut col = vec![0.0; p_len];
        let mut acc = vec![0.0; p_len];
        for (ones, rows) in patterns.bits.iter().zip(&patterns.rows) {
            acc.fill(0.0);
            for &k in ones {
                col.fill(0.0);
                fill(k, 0..p_len, &mut col);
                for (a, c) in acc.iter_mut().zip(&col) {
                    *a += c;
                }
            }
            for &row in rows {
                for (d, a) in out[row * p_len..(row + 1) * p_len].iter_mut().zip(&acc) {
                    *d += a;
                }
            }
        }
    }

    /// The matrix product over the used columns, in chunks.
    fn gemm(
        &self,
        patterns: &Patterns,
        used: &[usize],
        chunk: usize,
        mut fill: impl FnMut(usize, Range<usize>, &mut [f64]),
        out: &mut [f64],
    ) -> Result<()> {
        let p_len = self.p_len;
        let mut col_of = vec![usize::MAX; self.row_len];
        for (j, &k) in used.iter().enumerate() {
            col_of[k] = j;
        }
        let kk = used.len();
        let width = chunk_width(kk, p_len, self.step, chunk);
        let rows_per = (chunk / kk.max(width)).max(1);
        let dev = Device::Cpu;
        for p0 in (0..p_len).step_by(width) {
            let p1 = (p0 + width).min(p_len);
            let w = p1 - p0;
            let mut cols = vec![0.0; kk * w];
            for (j, &k) in used.iter().enumerate() {
                fill(k, p0..p1, &mut cols[j * w..(j + 1) * w]);
            }
            let b = Tensor::from_vec(cols, (kk, w), &dev)?;
            for (ci, part) in patterns.bits.chunks(rows_per).enumerate() {
                let mut a = vec![0.0f64; part.len() * kk];
                for (r, ones) in part.iter().enumerate() {
                    for &k in ones {
                        a[r * kk + col_of[k]] = 1.0;
                    }
                }
                let c: Vec<f64> = Tensor::from_vec(a, (part.len(), kk), &dev)?
                    .matmul(&b)?
                    .flatten_all()?
                    .to_vec1()?;
                for (r, prod) in c.chunks(w).enumerate() {
                    for &row in &patterns.rows[ci * rows_per + r] {
                        let dst = &mut out[row * p_len + p0..row * p_len + p1];
                        for (d, s) in dst.iter_mut().zip(prod) {
                            *d += s;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Output positions per chunk: as many whole `step`s as fit `chunk`
/// elements next to `kk` columns, at least one step.
fn chunk_width(kk: usize, p_len: usize, step: usize, chunk: usize) -> usize {
    let step = step.max(1);
    let steps = (chunk / (kk * step)).max(1);
    (steps * step).min(p_len)
}

/// The distinct bit patterns of some mask rows, restricted to the usable
/// columns; rows left empty are dropped.
struct Patterns {
    /// Per pattern, its set (usable) columns.
    bits: Vec<Vec<usize>>,
    /// Per pattern, the rows (relative to the first) that have it.
    rows: Vec<Vec<usize>>,
}

impl Patterns {
    fn of(
        mask: &BitSet,
        row_len: usize,
        rows: Range<usize>,
        usable: &impl Fn(usize) -> bool,
    ) -> Self {
        // Rows are compared as words (cheap even for dense rows); only a new
        // pattern is spelled out as a list of columns.
        let ok = BitSet::from_fn(row_len, usable);
        let words = row_len.div_ceil(64);
        let mut index: HashMap<Vec<u64>, usize> = HashMap::new();
        let mut p = Patterns {
            bits: Vec::new(),
            rows: Vec::new(),
        };
        for (r, o) in rows.enumerate() {
            let start = o * row_len;
            let key: Vec<u64> = (0..words)
                .map(|w| {
                    let n = (row_len - w * 64).min(64);
                    mask.bits_at(start + w * 64, n) & ok.bits_at(w * 64, n)
                })
                .collect();
            if key.iter().all(|&w| w == 0) {
                continue;
            }
            let next = p.bits.len();
            let i = *index.entry(key).or_insert(next);
            if i == next {
                p.bits.push(
                    mask.ones_in(start, start + row_len)
                        .map(|b| b - start)
                        .filter(|&k| ok.get(k))
                        .collect(),
                );
                p.rows.push(Vec::new());
            }
            p.rows[i].push(r);
        }
        p
    }

    /// Columns set in some pattern, increasing.
    fn used_columns(&self, row_len: usize) -> Vec<usize> {
        let mut any = vec![false; row_len];
        for ones in &self.bits {
            for &k in ones {
                any[k] = true;
            }
        }
        (0..row_len).filter(|&k| any[k]).collect()
    }

    /// The cost model, in element operations per output position: direct
    /// zeroes, fills and adds one column per kept weight of each pattern; the
    /// GEMM zeroes and fills each used column once, then multiplies.
    fn direct_is_cheaper(&self, used: usize) -> bool {
        let kept: usize = self.bits.iter().map(Vec::len).sum();
        3 * kept < 2 * used + self.bits.len() * used / GEMM_SPEEDUP
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The product by definition, with no cuts.
    fn naive(mask: &BitSet, row_len: usize, rows: Range<usize>, cols: &[Vec<f64>]) -> Vec<f64> {
        let p_len = cols[0].len();
        let mut out = vec![0.0; rows.len() * p_len];
        for (r, o) in rows.enumerate() {
            for (k, col) in cols.iter().enumerate() {
                if mask.get(o * row_len + k) {
                    for p in 0..p_len {
                        out[r * p_len + p] += col[p];
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_method_matches_the_definition() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        // The last two cases split both GEMM matrices into several chunks.
        for &(n_rows, row_len, p_len, step, chunk) in &[
            (5, 7, 9, 3, CHUNK),
            (40, 130, 17, 1, CHUNK),
            (3, 1, 4, 4, CHUNK),
            (40, 13, 17, 1, 64),
            (30, 9, 20, 5, 100),
        ] {
            for density in [0.05, 0.4, 1.0] {
                let mut mask = BitSet::from_fn(n_rows * row_len, |_| rng.random::<f64>() < density);
                // Row 1 duplicates row 0, and row 2 is empty.
                for k in 0..row_len {
                    mask.set(row_len + k, mask.get(k));
                    mask.set(2 * row_len + k, false);
                }
                let cols: Vec<Vec<f64>> = (0..row_len)
                    .map(|_| (0..p_len).map(|_| rng.random::<f64>()).collect())
                    .collect();
                let product = Product {
                    mask: &mask,
                    row_len,
                    rows: 1..n_rows,
                    p_len,
                    step,
                };
                let want = naive(&mask, row_len, 1..n_rows, &cols);
                for method in [Method::Auto, Method::Direct, Method::Gemm(chunk)] {
                    let mut out = vec![0.0; (n_rows - 1) * p_len];
                    product
                        .compute_by(
                            method,
                            |_| true,
                            |k, ps, buf| {
                                assert!(ps.start % step == 0);
                                assert!(ps.end % step == 0 || ps.end == p_len);
                                assert!(buf.iter().all(|&b| b == 0.0), "buffer not zeroed");
                                buf.copy_from_slice(&cols[k][ps])
                            },
                            &mut out,
                        )
                        .unwrap();
                    for (a, b) in out.iter().zip(&want) {
                        assert!(
                            (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                            "{method:?}: {a} {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn unusable_columns_are_skipped_and_never_filled() {
        let mask = BitSet::full(2 * 4);
        for method in [Method::Direct, Method::Gemm(CHUNK)] {
            let mut asked = Vec::new();
            let mut out = vec![0.0; 2];
            let product = Product {
                mask: &mask,
                row_len: 4,
                rows: 0..2,
                p_len: 1,
                step: 1,
            };
            product
                .compute_by(
                    method,
                    |k| k % 2 == 0,
                    |k, _, buf| {
                        asked.push(k);
                        buf[0] = 1.0 + k as f64;
                    },
                    &mut out,
                )
                .unwrap();
            // The two rows are one pattern: each column is filled once.
            assert_eq!(asked, vec![0, 2], "{method:?}");
            assert_eq!(out, vec![4.0, 4.0]);
        }
    }

    #[test]
    fn the_cost_model_picks_direct_for_sparse_rows_only() {
        let patterns = |n: usize, per: usize| Patterns {
            bits: (0..n)
                .map(|i| (0..per).map(|k| i * per + k).collect())
                .collect(),
            rows: (0..n).map(|i| vec![i]).collect(),
        };
        // 64 distinct rows keeping 5 of 576 columns each: direct.
        assert!(patterns(64, 5).direct_is_cheaper(576));
        // One dense pattern (a dense layer): the GEMM.
        assert!(!patterns(1, 576).direct_is_cheaper(576));
        // 64 distinct rows keeping half of 576 columns: the GEMM.
        assert!(!patterns(64, 288).direct_is_cheaper(576));
    }

    #[test]
    fn chunk_widths_are_whole_steps() {
        assert_eq!(chunk_width(10, 100, 7, CHUNK), 100);
        assert_eq!(chunk_width(CHUNK / 70, 100, 7, CHUNK), 70);
        assert_eq!(chunk_width(CHUNK, 100, 7, CHUNK), 7);
        assert_eq!(chunk_width(1, 5, 5, CHUNK), 5);
        assert_eq!(chunk_width(13, 17, 1, 64), 4);
    }
}
