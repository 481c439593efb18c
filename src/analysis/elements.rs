//! Element-level connectivity of the ops a per-channel liveness cannot
//! express: MatMul of two activations, axis mixing (normalisations,
//! reductions, softmax), explicit element maps ([`IndexMap`]) and dense
//! layers over leading axes (`[..., in] -> [..., out]`).
//!
//! Each rule says, per CONVENTIONS ("What effective means on any graph"),
//! which output elements each input element reaches, on row-major bitsets
//! of whole values: forward (input elements reached from the graph input ->
//! output elements reached) and backward (output elements reaching the graph
//! output -> input elements reaching it). The liveness pass
//! ([`crate::analysis::effective`]) and the path counts
//! ([`crate::analysis::paths`]) share the geometry defined here, so the two
//! cannot disagree on which elements connect.
//!
//! ```
//! use maskforge::analysis::elements::MatMulDims;
//! use maskforge::bitset::BitSet;
//! // Attention scores q [3, 2] x k^T [2, 3]: out[m, n] reads row m of q
//! // and column n of k^T.
//! let d = MatMulDims::new(&[3, 2], &[2, 3]);
//! let q = BitSet::from_fn(6, |e| e / 2 == 1); // only query row 1 is live
//! let kt = BitSet::new(6); // no key is live
//! let out = d.forward(&q, &kt);
//! assert_eq!(out.ones().collect::<Vec<_>>(), vec![3, 4, 5]); // row 1 of out
//! // Backward from out[0, 2] alone: row 0 of q and column 2 of k^T.
//! let (a, b) = d.backward(&BitSet::from_fn(9, |e| e == 2));
//! assert_eq!(a.ones().collect::<Vec<_>>(), vec![0, 1]);
//! assert_eq!(b.ones().collect::<Vec<_>>(), vec![2, 5]);
//! ```

use std::collections::{HashMap, HashSet};

use crate::bitset::BitSet;
use crate::graph::builder::broadcast;
use crate::graph::index_map::strides;
use crate::graph::op::{IndexMap, Mix, MixKind};

/// For each element of `to`, the element of `from` it broadcasts from
/// (numpy rules: dims aligned from the right, size 1 repeats).
pub fn broadcast_source(from: &[usize], to: &[usize]) -> impl Fn(usize) -> usize {
    let pad = to.len() - from.len();
    let full: Vec<usize> = std::iter::repeat_n(1, pad)
        .chain(from.iter().copied())
        .collect();
    let (ts, fs) = (strides(to), strides(&full));
    let to = to.to_vec();
    move |e| {
        let mut src = 0;
        for d in 0..to.len() {
            if full[d] != 1 {
                src += ((e / ts[d]) % to[d]) * fs[d];
            }
        }
        src
    }
}

/// The geometry of numpy `matmul` of two activations: batch broadcasting
/// and the 1-D rules (a 1-D left operand is one row, a 1-D right operand
/// one column, and that axis is dropped from the result, which leaves the
/// row-major order of the output unchanged).
///
/// Element layouts: left `(ba, m, k)`, right `(bb, k, n)`, output
/// `(batch, m, n)`, each row-major.
#[derive(Clone, Debug)]
pub struct MatMulDims {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// For each output batch index, the left operand's batch index.
    pub a_of: Vec<usize>,
    /// For each output batch index, the right operand's batch index.
    pub b_of: Vec<usize>,
    pub a_batches: usize,
    pub b_batches: usize,
}

impl MatMulDims {
    /// The dims of `a @ b` for per-sample shapes that multiply
    /// ([`crate::graph::builder::matmul_shape`] has checked them).
    pub fn new(a: &[usize], b: &[usize]) -> Self {
        let (a2, b2) = crate::graph::builder::as_matrices(a, b);
        let (ab, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
        let batch = broadcast(ab, bb).expect("matmul shapes checked by the builder");
        let batches: usize = batch.iter().product();
        let (fa, fb) = (broadcast_source(ab, &batch), broadcast_source(bb, &batch));
        Self {
            m: a2[a2.len() - 2],
            k: a2[a2.len() - 1],
            n: b2[b2.len() - 1],
            a_of: (0..batches).map(fa).collect(),
            b_of: (0..batches).map(fb).collect(),
            a_batches: ab.iter().product(),
            b_batches: bb.iter().product(),
        }
    }

    pub fn batches(&self) -> usize {
        self.a_of.len()
    }

    /// Output elements reached: `out[b, m, n]` is live when some element of
    /// row `m` of the left or column `n` of the right operand is.
    pub fn forward(&self, a: &BitSet, b: &BitSet) -> BitSet {
        let (m, k, n) = (self.m, self.k, self.n);
        let rows = BitSet::from_fn(self.a_batches * m, |r| a.any_in(r * k, (r + 1) * k));
        let mut cols = BitSet::new(self.b_batches * n);
        for e in b.ones() {
            let (bb, j) = (e / (k * n), e % n);
            cols.set(bb * n + j, true);
        }
        let mut out = BitSet::new(self.batches() * m * n);
        for (bi, (&ba, &bb)) in self.a_of.iter().zip(&self.b_of).enumerate() {
            for i in 0..m {
                let base = (bi * m + i) * n;
                if rows.get(ba * m + i) {
                    (base..base + n).for_each(|e| out.set(e, true));
                    continue;
                }
                for j in cols.ones_in(bb * n, (bb + 1) * n) {
                    out.set(base + j - bb * n, true);
                }
            }
        }
        out
    }

    /// Operand elements reaching a live output element: all of row `m` of
    /// the left operand when some `out[b, m, ·]` is live (in a batch that
    /// reads it), all of column `n` of the right when some `out[b, ·, n]` is.
    pub fn backward(&self, out: &BitSet) -> (BitSet, BitSet) {
        let (m, k, n) = (self.m, self.k, self.n);
        let mut rows = BitSet::new(self.a_batches * m);
        let mut cols = BitSet::new(self.b_batches * n);
        for e in out.ones() {
            let (bi, i, j) = (e / (m * n), (e / n) % m, e % n);
            rows.set(self.a_of[bi] * m + i, true);
            cols.set(self.b_of[bi] * n + j, true);
        }
        let a = BitSet::from_fn(self.a_batches * m * k, |e| rows.get(e / k));
        let b = BitSet::from_fn(self.b_batches * k * n, |e| {
            cols.get((e / (k * n)) * n + e % n)
        });
        (a, b)
    }
}

/// The dead-factor refinement of [`MatMulDims`] (CONVENTIONS, "Dead
/// factors"; [`crate::analysis::factors`]): with `alive` sets of the
/// operands (`None`: every element alive), a path through `a[m, j]` reaches
/// `out[m, n]` only when `b[j, n]` is alive, and one through `b[j, n]` only
/// when `a[m, j]` is.
impl MatMulDims {
    /// Row `r` (of `k` elements) of a row-major `[rows, k]` bitset, as words.
    fn rows_of(&self, bits: &BitSet, rows: usize) -> Vec<Vec<u64>> {
        (0..rows)
            .map(|r| row(bits, r, self.k).into_owned())
            .collect()
    }

    /// The columns (each `k` elements long) of the right operand, as words.
    fn cols_of(&self, bits: &BitSet) -> Vec<Vec<u64>> {
        let (k, n) = (self.k, self.n);
        let mut cols = vec![vec![0u64; k.div_ceil(64)]; self.b_batches * n];
        for e in bits.ones() {
            let (bb, j, c) = (e / (k * n), (e / n) % k, e % n);
            cols[bb * n + c][j / 64] |= 1 << (j % 64);
        }
        cols
    }

    fn all_words(&self) -> Vec<u64> {
        BitSet::full(self.k).words().to_vec()
    }

    /// Output elements reached, factors gated by the other's `alive` set.
    pub fn forward_alive(
        &self,
        a: &BitSet,
        b: &BitSet,
        a_alive: Option<&BitSet>,
        b_alive: Option<&BitSet>,
    ) -> BitSet {
        if a_alive.is_none() && b_alive.is_none() {
            return self.forward(a, b);
        }
        let (m, n) = (self.m, self.n);
        let full = self.all_words();
        let ar = self.rows_of(a, self.a_batches * m);
        let bc = self.cols_of(b);
        let aa = a_alive.map(|x| self.rows_of(x, self.a_batches * m));
        let ba = b_alive.map(|x| self.cols_of(x));
        let meets = |x: &[u64], y: &[u64]| x.iter().zip(y).any(|(p, q)| p & q != 0);
        let mut out = BitSet::new(self.batches() * m * n);
        for (bi, (&xa, &xb)) in self.a_of.iter().zip(&self.b_of).enumerate() {
            for i in 0..m {
                let r = xa * m + i;
                let a_row = &ar[r];
                let a_al = aa.as_ref().map_or(&full, |v| &v[r]);
                for j in 0..n {
                    let c = xb * n + j;
                    let b_al = ba.as_ref().map_or(&full, |v| &v[c]);
                    if meets(a_row, b_al) || meets(&bc[c], a_al) {
                        out.set((bi * m + i) * n + j, true);
                    }
                }
            }
        }
        out
    }

    /// Operand elements reaching a live output element, factors gated by
    /// the other's `alive` set: `a[m, j]` when some live `out[m, n]` has
    /// `b[j, n]` alive, `b[j, n]` when some live `out[m, n]` has `a[m, j]`
    /// alive.
    pub fn backward_alive(
        &self,
        out: &BitSet,
        a_alive: Option<&BitSet>,
        b_alive: Option<&BitSet>,
    ) -> (BitSet, BitSet) {
        if a_alive.is_none() && b_alive.is_none() {
            return self.backward(out);
        }
        let (m, k, n) = (self.m, self.k, self.n);
        let full = self.all_words();
        let aa = a_alive.map(|x| self.rows_of(x, self.a_batches * m));
        let ba = b_alive.map(|x| self.cols_of(x));
        let words = k.div_ceil(64);
        let mut a_rows = vec![vec![0u64; words]; self.a_batches * m];
        let mut b_cols = vec![vec![0u64; words]; self.b_batches * n];
        for e in out.ones() {
            let (bi, i, j) = (e / (m * n), (e / n) % m, e % n);
            let (r, c) = (self.a_of[bi] * m + i, self.b_of[bi] * n + j);
            let b_al = ba.as_ref().map_or(&full, |v| &v[c]);
            for (x, y) in a_rows[r].iter_mut().zip(b_al) {
                *x |= y;
            }
            let a_al = aa.as_ref().map_or(&full, |v| &v[r]);
            for (x, y) in b_cols[c].iter_mut().zip(a_al) {
                *x |= y;
            }
        }
        let mut a = BitSet::new(self.a_batches * m * k);
        for (r, words) in a_rows.iter().enumerate() {
            or_row(&mut a, r, k, words);
        }
        let mut b = BitSet::new(self.b_batches * k * n);
        for (c, words) in b_cols.iter().enumerate() {
            let (bb, j) = (c / n, c % n);
            for x in crate::bitset::ones_of_words(words) {
                b.set((bb * k + x) * n + j, true);
            }
        }
        (a, b)
    }
}

/// The slices of an axis-mixing op: every input element belongs to one
/// slice (its coordinates off the mixed axes), and every element of a slice
/// reaches every output element of that slice.
#[derive(Clone, Debug)]
pub struct Slices {
    /// The slice of each input element (row-major over the input).
    pub key: Vec<u32>,
    /// Number of slices.
    pub count: usize,
    /// Normalize: the output has the input's shape and element `e` belongs
    /// to slice `key[e]`. Otherwise (Reduce) output element `s` is slice `s`:
    /// keeping the reduced axes as size 1 or dropping them leaves the same
    /// row-major order.
    pub keeps_shape: bool,
}

impl Slices {
    /// The slices of `mix` over an input of `shape`.
    pub fn of_mix(shape: &[usize], mix: &Mix) -> Self {
        let view = mix.view.as_deref().unwrap_or(shape);
        let keeps_shape = matches!(mix.kind, MixKind::Normalize { .. });
        Self::over(view, &mix.axes, keeps_shape)
    }

    /// Softmax and LogSoftmax: normalised along one axis.
    pub fn along(shape: &[usize], axis: usize) -> Self {
        Self::over(shape, &[axis], true)
    }

    fn over(view: &[usize], axes: &[usize], keeps_shape: bool) -> Self {
        let mixed: Vec<bool> = (0..view.len()).map(|d| axes.contains(&d)).collect();
        // Row-major strides over the unmixed dims only: the slice index.
        let mut kstride = vec![0usize; view.len()];
        let mut count = 1;
        for d in (0..view.len()).rev() {
            if !mixed[d] {
                kstride[d] = count;
                count *= view[d];
            }
        }
        let n: usize = view.iter().product();
        let mut key = Vec::with_capacity(n);
        let mut idx = vec![0usize; view.len()];
        let mut k = 0usize;
        for _ in 0..n {
            key.push(k as u32);
            // Odometer step: advance the last dim, carrying leftwards, and
            // keep the key in step without a division per element.
            for d in (0..view.len()).rev() {
                idx[d] += 1;
                k += kstride[d];
                if idx[d] < view[d] {
                    break;
                }
                k -= kstride[d] * view[d];
                idx[d] = 0;
            }
        }
        Self {
            key,
            count,
            keeps_shape,
        }
    }

    /// Output elements of the op.
    pub fn out_len(&self) -> usize {
        if self.keeps_shape {
            self.key.len()
        } else {
            self.count
        }
    }

    /// Slices with a set element in `bits` (over the input or, for a
    /// shape-keeping op, the output).
    fn touched(&self, bits: &BitSet) -> BitSet {
        let mut s = BitSet::new(self.count);
        for e in bits.ones() {
            s.set(self.key[e] as usize, true);
        }
        s
    }

    /// Output elements reached: every element of a slice with a live input.
    pub fn forward(&self, input: &BitSet) -> BitSet {
        let live = self.touched(input);
        if self.keeps_shape {
            BitSet::from_fn(self.key.len(), |e| live.get(self.key[e] as usize))
        } else {
            live
        }
    }

    /// Path counts: each output element gets the sum of the counts of its
    /// slice (every element of the slice is one edge into it).
    pub fn sums(&self, input: &[f64]) -> Vec<f64> {
        let mut per = vec![0.0; self.count];
        for (&k, &v) in self.key.iter().zip(input) {
            per[k as usize] += v;
        }
        if self.keeps_shape {
            self.key.iter().map(|&k| per[k as usize]).collect()
        } else {
            per
        }
    }

    /// Input elements reaching a live output: every element of a slice with
    /// a live output element.
    pub fn backward(&self, out: &BitSet) -> BitSet {
        let live = if self.keeps_shape {
            self.touched(out)
        } else {
            out.clone()
        };
        BitSet::from_fn(self.key.len(), |e| live.get(self.key[e] as usize))
    }
}

/// The taps of output element `e` that start a path: into a node input
/// (not `consts`) and with a nonzero weight. A zero-weight tap moves
/// nothing (the float definition multiplies by `|weight|`), so it connects
/// nothing either.
pub fn input_taps(map: &IndexMap, sources: usize, e: usize) -> impl Iterator<Item = usize> + '_ {
    map.taps_of(e)
        .filter(move |&(i, w)| i < sources && w != 0.0)
        .map(|(i, _)| i)
}

/// Output elements of an element map reached from `ins` (the liveness of
/// the node's inputs, in order).
pub fn gather_forward(map: &IndexMap, ins: &[&BitSet]) -> BitSet {
    let sources: usize = ins.iter().map(|b| b.len()).sum();
    let mut src = BitSet::new(sources);
    let mut start = 0;
    for b in ins {
        for i in b.ones() {
            src.set(start + i, true);
        }
        start += b.len();
    }
    BitSet::from_fn(map.len(), |e| {
        input_taps(map, sources, e).any(|i| src.get(i))
    })
}

/// Input elements of an element map read by a live output element, per
/// input (of sizes `sizes`).
pub fn gather_backward(map: &IndexMap, out: &BitSet, sizes: &[usize]) -> Vec<BitSet> {
    let sources: usize = sizes.iter().sum();
    let mut src = BitSet::new(sources);
    for e in out.ones() {
        for i in input_taps(map, sources, e) {
            src.set(i, true);
        }
    }
    let mut start = 0;
    sizes
        .iter()
        .map(|&n| {
            let b = BitSet::from_fn(n, |i| src.get(start + i));
            start += n;
            b
        })
        .collect()
}

/// Row `p` of a row-major `[rows, len]` bitset, as words.
/// Row `p` of `len` bits as words; borrowed when rows are whole words (a
/// transformer's widths are), so a billion-weight mask is not copied row
/// by row.
fn row(bits: &BitSet, p: usize, len: usize) -> std::borrow::Cow<'_, [u64]> {
    if len.is_multiple_of(64) {
        let w = len / 64;
        return std::borrow::Cow::Borrowed(&bits.words()[p * w..(p + 1) * w]);
    }
    (0..len.div_ceil(64))
        .map(|w| bits.bits_at(p * len + w * 64, (len - w * 64).min(64)))
        .collect()
}

fn or_row(bits: &mut BitSet, p: usize, len: usize, words: &[u64]) {
    if len.is_multiple_of(64) {
        return bits.or_words_at(p * len / 64, words);
    }
    for (w, &x) in words.iter().enumerate() {
        bits.or_bits_at(p * len + w * 64, (len - w * 64).min(64), x);
    }
}

/// A dense layer applied at every leading position of `[..., in]`, its
/// `[out, in]` weight shared by all of them (a transformer's linear layer).
/// Positions with the same live pattern are handled once: usually all of
/// them are alike.
#[derive(Clone, Copy, Debug)]
pub struct DenseRows<'a> {
    pub n_out: usize,
    pub n_in: usize,
    pub mask: &'a BitSet,
}

impl DenseRows<'_> {
    /// True when row `o` of the mask shares a set bit with `f`.
    fn row_meets(&self, o: usize, f: &[u64]) -> bool {
        let m = row(self.mask, o, self.n_in);
        m.iter().zip(f).any(|(a, b)| a & b != 0)
    }

    /// Output elements `(p, o)` reached: some kept `W[o, i]` with input
    /// `(p, i)` live.
    pub fn forward(&self, input: &BitSet) -> BitSet {
        let positions = input.len() / self.n_in;
        let mut out = BitSet::new(positions * self.n_out);
        let mut seen: HashMap<Vec<u64>, Vec<u64>> = HashMap::new();
        for p in 0..positions {
            let f = row(input, p, self.n_in);
            let o = seen.entry(f.into_owned()).or_insert_with_key(|f| {
                let b = BitSet::from_fn(self.n_out, |o| self.row_meets(o, f));
                b.words().to_vec()
            });
            or_row(&mut out, p, self.n_out, o);
        }
        out
    }

    /// Input elements `(p, i)` reaching the output: some kept `W[o, i]` with
    /// output `(p, o)` live.
    pub fn backward(&self, out: &BitSet) -> BitSet {
        let positions = out.len() / self.n_out;
        let mut input = BitSet::new(positions * self.n_in);
        let mut seen: HashMap<Vec<u64>, Vec<u64>> = HashMap::new();
        for p in 0..positions {
            let b = row(out, p, self.n_out);
            let i = seen.entry(b.into_owned()).or_insert_with_key(|b| {
                let mut acc = vec![0u64; self.n_in.div_ceil(64)];
                for o in crate::bitset::ones_of_words(b) {
                    for (a, m) in acc.iter_mut().zip(row(self.mask, o, self.n_in).iter()) {
                        *a |= m;
                    }
                }
                acc
            });
            or_row(&mut input, p, self.n_in, i);
        }
        input
    }

    /// Kept weights `W[o, i]` with input `(p, i)` forward-live and output
    /// `(p, o)` backward-live at some common position `p`.
    pub fn active(&self, fwd: &BitSet, back: &BitSet) -> BitSet {
        let positions = fwd.len() / self.n_in;
        // Per output row, the union of the live inputs of the positions
        // where that output is backward-live; positions with the same
        // patterns once.
        let mut pairs: HashSet<(Vec<u64>, Vec<u64>)> = HashSet::new();
        for p in 0..positions {
            let f = row(fwd, p, self.n_in);
            let b = row(back, p, self.n_out);
            if f.iter().all(|&w| w == 0) || b.iter().all(|&w| w == 0) {
                continue;
            }
            pairs.insert((f.into_owned(), b.into_owned()));
        }
        // Row by row with one scratch row: a table of every row's reach
        // would be as large as the mask (10^9 bits in an LLM).
        let mut reach = vec![0u64; self.n_in.div_ceil(64)];
        let mut words = reach.clone();
        let mut out = BitSet::new(self.mask.len());
        for o in 0..self.n_out {
            reach.fill(0);
            let mut reached = false;
            for (f, b) in &pairs {
                if b[o / 64] >> (o % 64) & 1 == 1 {
                    reach.iter_mut().zip(f).for_each(|(r, x)| *r |= x);
                    reached = true;
                }
            }
            if reached {
                let m = row(self.mask, o, self.n_in);
                words
                    .iter_mut()
                    .zip(m.iter().zip(&reach))
                    .for_each(|(w, (a, b))| *w = a & b);
                or_row(&mut out, o, self.n_in, &words);
            }
        }
        out
    }
}

/// Features of a `[..., n]` value live at some leading position: the input
/// nodes of a dense layer over leading axes.
pub fn last_axis_features(bits: &BitSet, n: usize) -> BitSet {
    let mut acc = vec![0u64; n.div_ceil(64)];
    for p in 0..bits.len() / n.max(1) {
        for (a, x) in acc.iter_mut().zip(row(bits, p, n).iter()) {
            *a |= x;
        }
    }
    BitSet::from_fn(n, |i| (acc[i / 64] >> (i % 64)) & 1 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::op::Reduce;

    #[test]
    fn batched_matmul_broadcasts_the_batch_axes() {
        // a [2, 1, 2, 3] @ b [3, 3, 2] -> [2, 3, 2, 2]
        let d = MatMulDims::new(&[2, 1, 2, 3], &[3, 3, 2]);
        assert_eq!((d.m, d.k, d.n, d.batches()), (2, 3, 2, 6));
        assert_eq!(d.a_of, vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(d.b_of, vec![0, 1, 2, 0, 1, 2]);
        // 1-D on both sides: a dot product, one output.
        let d = MatMulDims::new(&[4], &[4]);
        assert_eq!((d.m, d.k, d.n, d.batches()), (1, 4, 1, 1));
    }

    #[test]
    fn group_norm_slices_are_groups_of_channels() {
        // [4, 2, 2] viewed as [2, 2, 2, 2], normalised over axes 1..3: two
        // groups of two channels (8 elements each).
        let mix = Mix {
            kind: MixKind::Normalize {
                eps: 1e-5,
                scale: None,
                bias: None,
            },
            view: Some(vec![2, 2, 2, 2]),
            axes: vec![1, 2, 3],
        };
        let s = Slices::of_mix(&[4, 2, 2], &mix);
        assert_eq!(s.count, 2);
        assert!(s.key[..8].iter().all(|&k| k == 0) && s.key[8..].iter().all(|&k| k == 1));
        // Reduce over the middle axis of [2, 3, 2]: slices (i, k).
        let mix = Mix {
            kind: MixKind::Reduce {
                f: Reduce::Sum,
                keepdims: false,
            },
            view: None,
            axes: vec![1],
        };
        let s = Slices::of_mix(&[2, 3, 2], &mix);
        assert_eq!(s.key, vec![0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3]);
        assert_eq!(s.out_len(), 4);
    }

    #[test]
    fn dense_rows_join_input_and_output_at_the_same_position() {
        // 2 positions, 2 -> 2, every weight kept. Input live: (0, 0) only;
        // output backward-live: (1, 1) only. No position has both, so no
        // weight is active.
        let mask = BitSet::full(4);
        let d = DenseRows {
            n_out: 2,
            n_in: 2,
            mask: &mask,
        };
        let fwd = BitSet::from_fn(4, |e| e == 0);
        let back = BitSet::from_fn(4, |e| e == 3);
        assert_eq!(d.active(&fwd, &back).count_ones(), 0);
        let back = BitSet::from_fn(4, |e| e == 1 || e == 3);
        // Position 0: input 0 live, output 1 live: W[1, 0].
        assert_eq!(d.active(&fwd, &back).ones().collect::<Vec<_>>(), vec![2]);
        assert_eq!(d.forward(&fwd).ones().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(
            d.backward(&back).ones().collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
    }
}
