//! Per-position liveness of activation channels: the data structure behind the
//! exact effective-mask pass.
//!
//! A channel's positions are usually all alive or all dead, so [`PosSet`]
//! stores those two cases in one word and only spells out a bitmap (one row
//! of 64-bit words per spatial row) when positions genuinely differ: e.g. a
//! sparse strided conv whose kept taps never reach some output positions.
//! [`Geometry`] moves position sets through a sliding window (conv or pool),
//! forward (input -> output positions) and backward (output -> input).
//!
//! ```
//! use maskforge::analysis::liveness::{Geometry, PosSet};
//! use maskforge::graph::op::Window;
//! // 3x3 conv, pad 1, on a 1x1 map: only the centre tap reads data.
//! let g = Geometry::new([1, 1], [3, 3], Window::same(1, 1), false);
//! assert!(g.tap_reads_data(4));
//! assert!(!g.tap_reads_data(0));
//! let all = PosSet::All;
//! assert!(g.forward(&all, 0).is_none());
//! ```

use crate::graph::op::Window;

/// Row-major plane extent: `h` rows of `w` positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Plane {
    pub h: usize,
    pub w: usize,
}

impl Plane {
    pub fn new(h: usize, w: usize) -> Self {
        Self { h, w }
    }

    /// Words per row.
    pub fn rw(&self) -> usize {
        self.w.div_ceil(64).max(1)
    }

    pub fn len(&self) -> usize {
        self.h * self.w
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The plane of a per-sample shape `[C, rest...]`: rows = all of `rest`
    /// but the last dim, columns = the last dim.
    pub fn of_shape(shape: &[usize]) -> Self {
        match shape.len() {
            0 | 1 => Plane::new(1, 1),
            n => Plane::new(shape[1..n - 1].iter().product(), shape[n - 1]),
        }
    }
}

/// The live positions of one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PosSet {
    None,
    All,
    /// Row bitmaps, `plane.rw()` words per row; never all-zero or all-one.
    Some(Vec<u64>),
}

impl PosSet {
    pub fn is_none(&self) -> bool {
        matches!(self, PosSet::None)
    }

    pub fn is_all(&self) -> bool {
        matches!(self, PosSet::All)
    }

    /// Normalise a bitmap to `None`/`All` where it is empty/full.
    pub fn from_rows(rows: Vec<u64>, p: Plane) -> Self {
        if rows.iter().all(|&w| w == 0) {
            return PosSet::None;
        }
        let full = full_rows(p);
        if rows == full {
            PosSet::All
        } else {
            PosSet::Some(rows)
        }
    }

    /// The bitmap (materialising `All`/`None`).
    pub fn rows(&self, p: Plane) -> std::borrow::Cow<'_, [u64]> {
        match self {
            PosSet::None => vec![0; p.h * p.rw()].into(),
            PosSet::All => full_rows(p).into(),
            PosSet::Some(r) => r.as_slice().into(),
        }
    }

    pub fn get(&self, p: Plane, y: usize, x: usize) -> bool {
        match self {
            PosSet::None => false,
            PosSet::All => true,
            PosSet::Some(r) => (r[y * p.rw() + x / 64] >> (x % 64)) & 1 == 1,
        }
    }

    /// Number of live positions.
    pub fn count(&self, p: Plane) -> usize {
        match self {
            PosSet::None => 0,
            PosSet::All => p.len(),
            PosSet::Some(r) => r.iter().map(|w| w.count_ones() as usize).sum(),
        }
    }

    /// `self |= other`.
    pub fn union_with(&mut self, other: &PosSet, p: Plane) {
        match (&mut *self, other) {
            (PosSet::All, _) | (_, PosSet::None) => {}
            (_, PosSet::All) => *self = PosSet::All,
            (PosSet::None, o) => *self = o.clone(),
            (PosSet::Some(a), PosSet::Some(b)) => {
                for (x, y) in a.iter_mut().zip(b) {
                    *x |= *y;
                }
                *self = PosSet::from_rows(std::mem::take(a), p);
            }
        }
    }

    /// True when the two sets share a position.
    pub fn intersects(&self, other: &PosSet, p: Plane) -> bool {
        match (self, other) {
            (PosSet::None, _) | (_, PosSet::None) => false,
            (PosSet::All, _) | (_, PosSet::All) => true,
            (PosSet::Some(a), PosSet::Some(b)) => {
                let _ = p;
                a.iter().zip(b).any(|(x, y)| x & y != 0)
            }
        }
    }
}

/// A full bitmap with no bits past column `w`.
pub(crate) fn full_rows(p: Plane) -> Vec<u64> {
    let rw = p.rw();
    let mut row = vec![u64::MAX; rw];
    let rem = p.w % 64;
    if rem != 0 {
        row[rw - 1] = (1u64 << rem) - 1;
    }
    if p.w == 0 {
        row.fill(0);
    }
    let mut out = Vec::with_capacity(p.h * rw);
    for _ in 0..p.h {
        out.extend_from_slice(&row);
    }
    out
}

#[inline]
fn set_bit(rows: &mut [u64], rw: usize, y: usize, x: usize) {
    rows[y * rw + x / 64] |= 1 << (x % 64);
}

#[inline]
fn bit(rows: &[u64], rw: usize, y: usize, x: usize) -> bool {
    (rows[y * rw + x / 64] >> (x % 64)) & 1 == 1
}

/// A sliding window from an input plane to an output plane.
#[derive(Clone, Debug)]
pub struct Geometry {
    pub input: Plane,
    pub output: Plane,
    pub kernel: [usize; 2],
    pub window: Window,
    /// For each tap, the output rows and columns whose source is in bounds
    /// (a contiguous range each).
    rows_ok: Vec<(usize, usize)>,
    cols_ok: Vec<(usize, usize)>,
}

impl Geometry {
    pub fn new(in_hw: [usize; 2], kernel: [usize; 2], window: Window, ceil: bool) -> Self {
        let out = [
            window.out_len(0, in_hw[0], kernel[0], ceil),
            window.out_len(1, in_hw[1], kernel[1], ceil),
        ];
        let range = |a: usize, k: usize| {
            let ok: Vec<usize> = (0..out[a])
                .filter(|&o| window.source(a, o, k, in_hw[a]).is_some())
                .collect();
            match (ok.first(), ok.last()) {
                (Some(&s), Some(&e)) => (s, e + 1),
                _ => (0, 0),
            }
        };
        Self {
            input: Plane::new(in_hw[0], in_hw[1]),
            output: Plane::new(out[0], out[1]),
            kernel,
            window,
            rows_ok: (0..kernel[0]).map(|k| range(0, k)).collect(),
            cols_ok: (0..kernel[1]).map(|k| range(1, k)).collect(),
        }
    }

    pub fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    fn tap_yx(&self, t: usize) -> (usize, usize) {
        (t / self.kernel[1], t % self.kernel[1])
    }

    /// True when tap `t` reads a real input position for some output position.
    pub fn tap_reads_data(&self, t: usize) -> bool {
        let (ky, kx) = self.tap_yx(t);
        let (r0, r1) = self.rows_ok[ky];
        let (c0, c1) = self.cols_ok[kx];
        r0 < r1 && c0 < c1
    }

    /// Output positions reached through tap `t` from input positions `s`.
    pub fn forward(&self, s: &PosSet, t: usize) -> PosSet {
        let mut out = vec![0u64; self.output.h * self.output.rw()];
        self.forward_into(s, t, &mut out);
        PosSet::from_rows(out, self.output)
    }

    /// OR into `out` the output positions reached through tap `t` from `s`.
    pub fn forward_into(&self, s: &PosSet, t: usize, out: &mut [u64]) {
        let (ky, kx) = self.tap_yx(t);
        let (r0, r1) = self.rows_ok[ky];
        let (c0, c1) = self.cols_ok[kx];
        if r0 >= r1 || c0 >= c1 || s.is_none() {
            return;
        }
        let orw = self.output.rw();
        match s {
            PosSet::All => {
                for y in r0..r1 {
                    set_range(&mut out[y * orw..(y + 1) * orw], c0, c1);
                }
            }
            PosSet::Some(rows) => {
                let irw = self.input.rw();
                let w = &self.window;
                for y in r0..r1 {
                    let qy = w.source(0, y, ky, self.input.h).unwrap();
                    let src = &rows[qy * irw..(qy + 1) * irw];
                    if src.iter().all(|&v| v == 0) {
                        continue;
                    }
                    let dst = &mut out[y * orw..(y + 1) * orw];
                    if w.stride[1] == 1 {
                        // q = x + kx*d - pad: a plain shift of the row.
                        let off = (kx * w.dilation[1]) as isize - w.pads[1] as isize;
                        or_shifted(dst, src, off, c0, c1);
                    } else {
                        for x in c0..c1 {
                            let qx = w.source(1, x, kx, self.input.w).unwrap();
                            if (src[qx / 64] >> (qx % 64)) & 1 == 1 {
                                dst[x / 64] |= 1 << (x % 64);
                            }
                        }
                    }
                }
            }
            PosSet::None => {}
        }
    }

    /// Input positions that feed output positions `s` through tap `t`.
    pub fn backward(&self, s: &PosSet, t: usize) -> PosSet {
        let mut out = vec![0u64; self.input.h * self.input.rw()];
        self.backward_into(s, t, &mut out);
        PosSet::from_rows(out, self.input)
    }

    /// OR into `out` the input positions that feed `s` through tap `t`.
    pub fn backward_into(&self, s: &PosSet, t: usize, out: &mut [u64]) {
        let (ky, kx) = self.tap_yx(t);
        let (r0, r1) = self.rows_ok[ky];
        let (c0, c1) = self.cols_ok[kx];
        if r0 >= r1 || c0 >= c1 || s.is_none() {
            return;
        }
        let irw = self.input.rw();
        let orw = self.output.rw();
        let w = &self.window;
        for y in r0..r1 {
            if let PosSet::Some(rows) = s {
                if rows[y * orw..(y + 1) * orw].iter().all(|&v| v == 0) {
                    continue;
                }
            }
            let qy = w.source(0, y, ky, self.input.h).unwrap();
            for x in c0..c1 {
                let live = match s {
                    PosSet::All => true,
                    PosSet::Some(rows) => bit(rows, orw, y, x),
                    PosSet::None => false,
                };
                if live {
                    let qx = w.source(1, x, kx, self.input.w).unwrap();
                    set_bit(out, irw, qy, qx);
                }
            }
        }
    }

    /// True when some output position in `back` reads an input position in
    /// `fwd` through tap `t`: the exact activity test of one conv weight.
    pub fn connects(&self, fwd: &PosSet, back: &PosSet, t: usize) -> bool {
        if fwd.is_none() || back.is_none() || !self.tap_reads_data(t) {
            return false;
        }
        if fwd.is_all() && back.is_all() {
            return true;
        }
        let reached = self.forward(fwd, t);
        reached.intersects(back, self.output)
    }
}

/// Set bits `c0..c1` of a row.
fn set_range(row: &mut [u64], c0: usize, c1: usize) {
    for x in c0..c1 {
        row[x / 64] |= 1 << (x % 64);
    }
}

/// `dst[x] |= src[x + off]` for `x` in `c0..c1`.
fn or_shifted(dst: &mut [u64], src: &[u64], off: isize, c0: usize, c1: usize) {
    if dst.len() == 1 && src.len() == 1 {
        let s = src[0];
        let shifted = if off >= 0 {
            s.checked_shr(off as u32).unwrap_or(0)
        } else {
            s.checked_shl((-off) as u32).unwrap_or(0)
        };
        let width = c1 - c0;
        let m = if width == 64 {
            u64::MAX
        } else {
            ((1u64 << width) - 1) << c0
        };
        dst[0] |= shifted & m;
        return;
    }
    for x in c0..c1 {
        let q = (x as isize + off) as usize;
        if (src[q / 64] >> (q % 64)) & 1 == 1 {
            dst[x / 64] |= 1 << (x % 64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force: positions reached through tap t from set s.
    fn naive_forward(g: &Geometry, s: &PosSet, t: usize) -> Vec<bool> {
        let (ky, kx) = (t / g.kernel[1], t % g.kernel[1]);
        let mut out = vec![false; g.output.len()];
        for y in 0..g.output.h {
            for x in 0..g.output.w {
                if let (Some(qy), Some(qx)) = (
                    g.window.source(0, y, ky, g.input.h),
                    g.window.source(1, x, kx, g.input.w),
                ) {
                    out[y * g.output.w + x] = s.get(g.input, qy, qx);
                }
            }
        }
        out
    }

    fn as_bools(s: &PosSet, p: Plane) -> Vec<bool> {
        (0..p.h)
            .flat_map(|y| (0..p.w).map(move |x| (y, x)))
            .map(|(y, x)| s.get(p, y, x))
            .collect()
    }

    #[test]
    fn forward_and_backward_match_brute_force() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for &(h, k, s, p, d) in &[
            (7, 3, 1, 1, 1),
            (8, 3, 2, 1, 1),
            (9, 5, 2, 2, 2),
            (70, 3, 1, 1, 1),
            (5, 1, 2, 0, 1),
            (13, 7, 3, 3, 1),
        ] {
            let win = Window {
                stride: [s, s],
                pads: [p, p, p + 1, p],
                dilation: [d, d],
            };
            let g = Geometry::new([h, h + 1], [k, k], win, false);
            let bits: Vec<u64> = (0..g.input.h * g.input.rw())
                .map(|_| rng.random::<u64>() & rng.random::<u64>())
                .collect();
            let mut bits = bits;
            // Clear bits beyond the row width.
            let full = full_rows(g.input);
            for (b, f) in bits.iter_mut().zip(&full) {
                *b &= f;
            }
            let set = PosSet::from_rows(bits, g.input);
            for t in 0..g.taps() {
                let fast = as_bools(&g.forward(&set, t), g.output);
                assert_eq!(
                    fast,
                    naive_forward(&g, &set, t),
                    "fwd h={h} k={k} s={s} t={t}"
                );
                assert_eq!(
                    as_bools(&g.forward(&PosSet::All, t), g.output),
                    naive_forward(&g, &PosSet::All, t)
                );
                // Backward is the transpose: q in back(S_out) iff some x in S_out reads q.
                let outset = g.forward(&set, t);
                let back = g.backward(&outset, t);
                for qy in 0..g.input.h {
                    for qx in 0..g.input.w {
                        let single = {
                            let mut r = vec![0u64; g.input.h * g.input.rw()];
                            set_bit(&mut r, g.input.rw(), qy, qx);
                            PosSet::from_rows(r, g.input)
                        };
                        let reach = g.forward(&single, t);
                        assert_eq!(
                            back.get(g.input, qy, qx),
                            reach.intersects(&outset, g.output),
                            "bwd"
                        );
                    }
                }
            }
        }
    }
}
