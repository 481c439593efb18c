//! The product of a binary mask with a matrix of path counts: the heavy step
//! of counting effective paths through a convolution.
//!
//! A convolution with binary weights is `out[o, p] = sum_k mask[o, k] *
//! cols[k, p]`, `k` running over (input channel, kernel tap) and `cols` the
//! im2col matrix of the input counts. [`masked_product`] forms that product
//! with candle's matrix multiply (an optimised f64 GEMM), after three cuts
//! that keep it cheap on pruned and on dense networks alike:
//! - only columns `k` kept in some row and not known to read zeros are used;
//! - mask rows with identical bit patterns are multiplied once (in a dense
//!   layer every row is the same, so the layer costs one row);
//! - the matrices are built in chunks of at most [`CHUNK`] elements, so
//!   memory stays bounded whatever the layer size.
//!
//! ```
//! use maskforge::bitset::BitSet;
//! use maskforge::paths::product::masked_product;
//! // Two rows over three columns: [1 0 1] and [1 0 1] (deduplicated), cols 3 x 2.
//! let mask = BitSet::from_fn(6, |i| i % 3 != 1);
//! let cols = [1.0, 2.0, 10.0, 20.0, 100.0, 200.0];
//! let mut out = vec![0.0; 4];
//! masked_product(&mask, 3, 0..2, 2, 2, |_| true, |k, p, buf| {
//!     buf.copy_from_slice(&cols[k * 2 + p.start..k * 2 + p.end])
//! }, &mut out).unwrap();
//! assert_eq!(out, vec![101.0, 202.0, 101.0, 202.0]);
//! ```

use std::collections::HashMap;
use std::ops::Range;

use candle_core::{Device, Tensor};

use crate::bitset::BitSet;
use crate::error::Result;

/// Most elements of one matrix built at a time (32 MB of f64).
pub const CHUNK: usize = 1 << 22;

/// `out[r, p] += sum_k mask[rows.start + r, k] * col_k[p]` for the mask rows
/// `rows` (each `row_len` bits long, row `o` at bits `o * row_len ..`).
///
/// `usable(k)` may exclude columns that are known to be all zero; `fill(k,
/// ps, buf)` writes `col_k[p]` for `p` in `ps` into `buf`. Columns are asked
/// for in ranges of whole multiples of `step` (one output row of a conv), and
/// `out` holds `rows.len() * p_len` values, row-major.
#[allow(clippy::too_many_arguments)]
pub fn masked_product(
    mask: &BitSet,
    row_len: usize,
    rows: Range<usize>,
    p_len: usize,
    step: usize,
    usable: impl Fn(usize) -> bool,
    fill: impl FnMut(usize, Range<usize>, &mut [f64]),
    out: &mut [f64],
) -> Result<()> {
    product_in_chunks(mask, row_len, rows, p_len, step, usable, fill, out, CHUNK)
}

/// [`masked_product`] with matrices of at most about `chunk` elements.
#[allow(clippy::too_many_arguments)]
fn product_in_chunks(
    mask: &BitSet,
    row_len: usize,
    rows: Range<usize>,
    p_len: usize,
    step: usize,
    usable: impl Fn(usize) -> bool,
    mut fill: impl FnMut(usize, Range<usize>, &mut [f64]),
    out: &mut [f64],
    chunk: usize,
) -> Result<()> {
    debug_assert_eq!(out.len(), rows.len() * p_len);
    let patterns = Patterns::of(mask, row_len, rows);
    let used: Vec<usize> = patterns.used_columns(row_len, &usable);
    if used.is_empty() || p_len == 0 {
        return Ok(());
    }
    let mut col_of = vec![usize::MAX; row_len];
    for (j, &k) in used.iter().enumerate() {
        col_of[k] = j;
    }
    let kk = used.len();
    let width = chunk_width(kk, p_len, step, chunk);
    let rows_per = (chunk / kk.max(width)).max(1);
    let dev = Device::Cpu;
    let mut cols = Vec::new();
    for p0 in (0..p_len).step_by(width) {
        let p1 = (p0 + width).min(p_len);
        let w = p1 - p0;
        cols.clear();
        cols.resize(kk * w, 0.0);
        for (j, &k) in used.iter().enumerate() {
            fill(k, p0..p1, &mut cols[j * w..(j + 1) * w]);
        }
        let b = Tensor::from_slice(&cols, (kk, w), &dev)?;
        for (ci, chunk) in patterns.bits.chunks(rows_per).enumerate() {
            let mut a = vec![0.0f64; chunk.len() * kk];
            for (r, ones) in chunk.iter().enumerate() {
                for &k in ones {
                    if col_of[k] != usize::MAX {
                        a[r * kk + col_of[k]] = 1.0;
                    }
                }
            }
            let c: Vec<f64> = Tensor::from_vec(a, (chunk.len(), kk), &dev)?
                .matmul(&b)?
                .flatten_all()?
                .to_vec1()?;
            let first = ci * rows_per;
            for (r, prod) in c.chunks(w).enumerate() {
                for &row in &patterns.rows[first + r] {
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

/// Output positions per chunk: as many whole `step`s as fit `chunk`
/// elements next to `kk` columns, at least one step.
fn chunk_width(kk: usize, p_len: usize, step: usize, chunk: usize) -> usize {
    let step = step.max(1);
    let steps = (chunk / (kk * step)).max(1);
    (steps * step).min(p_len)
}

/// The distinct nonempty bit patterns of some mask rows.
struct Patterns {
    /// Per pattern, its set columns.
    bits: Vec<Vec<usize>>,
    /// Per pattern, the rows (relative to the first) that have it.
    rows: Vec<Vec<usize>>,
}

impl Patterns {
    fn of(mask: &BitSet, row_len: usize, rows: Range<usize>) -> Self {
        let mut index: HashMap<Vec<u64>, usize> = HashMap::new();
        let mut p = Patterns {
            bits: Vec::new(),
            rows: Vec::new(),
        };
        for (r, o) in rows.enumerate() {
            let start = o * row_len;
            let key: Vec<u64> = (0..row_len.div_ceil(64))
                .map(|w| mask.bits_at(start + w * 64, (row_len - w * 64).min(64)))
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
                        .collect(),
                );
                p.rows.push(Vec::new());
            }
            p.rows[i].push(r);
        }
        p
    }

    /// Columns set in some pattern and accepted by `usable`, increasing.
    fn used_columns(&self, row_len: usize, usable: &impl Fn(usize) -> bool) -> Vec<usize> {
        let mut any = vec![false; row_len];
        for ones in &self.bits {
            for &k in ones {
                any[k] = true;
            }
        }
        (0..row_len).filter(|&k| any[k] && usable(k)).collect()
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
    fn matches_the_definition_with_duplicate_rows_and_chunks() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        // The last two cases split both matrices into several chunks.
        for &(n_rows, row_len, p_len, step, chunk) in &[
            (5, 7, 9, 3, CHUNK),
            (40, 130, 17, 1, CHUNK),
            (3, 1, 4, 4, CHUNK),
            (40, 13, 17, 1, 64),
            (30, 9, 20, 5, 100),
        ] {
            let mut mask = BitSet::from_fn(n_rows * row_len, |_| rng.random::<f64>() < 0.4);
            // Row 1 duplicates row 0, and row 2 is empty.
            for k in 0..row_len {
                mask.set(row_len + k, mask.get(k));
                mask.set(2 * row_len + k, false);
            }
            let cols: Vec<Vec<f64>> = (0..row_len)
                .map(|_| (0..p_len).map(|_| rng.random::<f64>()).collect())
                .collect();
            let rows = 1..n_rows;
            let mut out = vec![0.0; rows.len() * p_len];
            product_in_chunks(
                &mask,
                row_len,
                rows.clone(),
                p_len,
                step,
                |_| true,
                |k, ps, buf| {
                    assert!(ps.start % step == 0 && (ps.end % step == 0 || ps.end == p_len));
                    buf.copy_from_slice(&cols[k][ps])
                },
                &mut out,
                chunk,
            )
            .unwrap();
            let want = naive(&mask, row_len, rows, &cols);
            for (a, b) in out.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} {b}");
            }
        }
    }

    #[test]
    fn unusable_columns_are_skipped_and_never_filled() {
        let mask = BitSet::full(2 * 4);
        let mut asked = Vec::new();
        let mut out = vec![0.0; 2];
        masked_product(
            &mask,
            4,
            0..2,
            1,
            1,
            |k| k % 2 == 0,
            |k, _, buf| {
                asked.push(k);
                buf[0] = 1.0 + k as f64;
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(asked, vec![0, 2]);
        assert_eq!(out, vec![4.0, 4.0]);
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
