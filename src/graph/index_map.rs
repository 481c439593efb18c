//! Building [`IndexMap`]s: the element maps of data-movement ops.
//!
//! Every data-movement op (Slice, Gather, Expand, Tile, Pad, Resize,
//! DepthToSpace, Where with a constant condition, the zero insertion of a
//! transposed convolution) says, for each output element, which input
//! elements it reads and with what weight. Building that list once, here,
//! means the liveness pass, the path counts, the float definition and the
//! executor all handle these ops with one rule and cannot disagree.
//! Shapes are per sample and row-major; nothing here knows ONNX.
//!
//! ```
//! use maskforge::graph::index_map::{pad, PadMode};
//! // Reflect-pad a row of 3 by 2 on the left: [c, b, a, b, c].
//! let (m, shape) = pad(&[3], &[2], &[0], PadMode::Reflect).unwrap();
//! assert_eq!(shape, vec![5]);
//! let src: Vec<usize> = (0..5).map(|e| m.taps_of(e).next().unwrap().0).collect();
//! assert_eq!(src, vec![2, 1, 0, 1, 2]);
//! ```

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::graph::op::IndexMap;

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Collects taps output element by output element.
struct Taps {
    index: Vec<u32>,
    weight: Vec<f32>,
    consts: Vec<f32>,
    sources: usize,
    taps: usize,
    weighted: bool,
    /// Scratch for merging one element's taps (no allocation per element).
    merged: Vec<(usize, f32)>,
}

impl Taps {
    fn new(sources: usize, taps: usize) -> Self {
        Self {
            index: Vec::new(),
            weight: Vec::new(),
            consts: vec![0.0],
            sources,
            taps,
            weighted: false,
            merged: Vec::new(),
        }
    }

    /// The source index of constant `v`.
    fn constant(&mut self, v: f32) -> usize {
        let i = match self.consts.iter().position(|&c| c.to_bits() == v.to_bits()) {
            Some(i) => i,
            None => {
                self.consts.push(v);
                self.consts.len() - 1
            }
        };
        self.sources + i
    }

    /// Append one output element's taps: equal indices merged, zero weights
    /// dropped, unused slots pointed at the constant 0 with weight 0.
    fn push(&mut self, taps: &mut Vec<(usize, f32)>) {
        if let [(i, w)] = taps[..] {
            if self.taps == 1 && w != 0.0 {
                self.weighted |= w != 1.0;
                self.index.push(i as u32);
                self.weight.push(w);
                taps.clear();
                return;
            }
        }
        taps.sort_by_key(|t| t.0);
        let mut merged = std::mem::take(&mut self.merged);
        merged.clear();
        for &(i, w) in taps.iter() {
            match merged.last_mut() {
                Some(last) if last.0 == i => last.1 += w,
                _ => merged.push((i, w)),
            }
        }
        merged.retain(|t| t.1 != 0.0);
        debug_assert!(merged.len() <= self.taps);
        for k in 0..self.taps {
            let (i, w) = merged.get(k).copied().unwrap_or((self.sources, 0.0));
            self.weighted |= w != 1.0 && k < merged.len();
            self.index.push(i as u32);
            self.weight.push(w);
        }
        self.merged = merged;
        taps.clear();
    }

    fn finish(self) -> IndexMap {
        IndexMap {
            taps: self.taps,
            index: Arc::new(self.index),
            weight: self.weighted.then(|| Arc::new(self.weight)),
            consts: self.consts,
        }
    }
}

/// Visit every multi-index of `shape` in row-major order.
fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize]) -> Result<()>) -> Result<()> {
    let n: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        f(&idx)?;
        for a in (0..shape.len()).rev() {
            idx[a] += 1;
            if idx[a] < shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    Ok(())
}

fn flat(idx: &[usize], strides: &[usize]) -> usize {
    idx.iter().zip(strides).map(|(i, s)| i * s).sum()
}

/// A one-tap map: `source(out_index)` gives the input element read, or
/// `Err(value)` for a constant.
fn one_tap(
    sources: usize,
    out: &[usize],
    mut source: impl FnMut(&[usize]) -> std::result::Result<usize, f32>,
) -> Result<IndexMap> {
    let mut t = Taps::new(sources, 1);
    let mut buf = Vec::with_capacity(1);
    for_each_index(out, |o| {
        let i = match source(o) {
            Ok(i) => i,
            Err(v) => t.constant(v),
        };
        buf.push((i, 1.0));
        t.push(&mut buf);
        Ok(())
    })?;
    Ok(t.finish())
}

/// One axis of a [`slice()`]: `len` elements from `start` by `step`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisRange {
    pub start: usize,
    pub step: isize,
    pub len: usize,
}

impl AxisRange {
    pub fn all(n: usize) -> Self {
        Self {
            start: 0,
            step: 1,
            len: n,
        }
    }

    fn at(&self, i: usize) -> usize {
        (self.start as isize + self.step * i as isize) as usize
    }
}

/// Strided slice, one range per axis.
pub fn slice(shape: &[usize], ranges: &[AxisRange]) -> Result<(IndexMap, Vec<usize>)> {
    if ranges.len() != shape.len() {
        return Err(Error::internal("slice: one range per axis"));
    }
    for (r, &n) in ranges.iter().zip(shape) {
        if r.len > 0 && (r.start >= n || r.at(r.len - 1) >= n) {
            return Err(Error::input(format!("slice {r:?} leaves an axis of {n}")));
        }
    }
    let out: Vec<usize> = ranges.iter().map(|r| r.len).collect();
    let st = strides(shape);
    let mut src = vec![0; shape.len()];
    let map = one_tap(shape.iter().product(), &out, |o| {
        for (a, r) in ranges.iter().enumerate() {
            src[a] = r.at(o[a]);
        }
        Ok(flat(&src, &st))
    })?;
    Ok((map, out))
}

/// `take` along `axis` with constant indices of shape `idx_shape`
/// (already made non-negative and checked by the caller).
pub fn gather(
    shape: &[usize],
    axis: usize,
    indices: &[usize],
    idx_shape: &[usize],
) -> Result<(IndexMap, Vec<usize>)> {
    if let Some(&bad) = indices.iter().find(|&&i| i >= shape[axis]) {
        return Err(Error::input(format!(
            "Gather index {bad} out of range for axis of {}",
            shape[axis]
        )));
    }
    let out: Vec<usize> = [&shape[..axis], idx_shape, &shape[axis + 1..]].concat();
    let st = strides(shape);
    let ist = strides(idx_shape);
    let k = idx_shape.len();
    let mut src = vec![0; shape.len()];
    let map = one_tap(shape.iter().product(), &out, |o| {
        src[..axis].copy_from_slice(&o[..axis]);
        src[axis] = indices[flat(&o[axis..axis + k], &ist)];
        src[axis + 1..].copy_from_slice(&o[axis + k..]);
        Ok(flat(&src, &st))
    })?;
    Ok((map, out))
}

/// Numpy broadcast of `shape` to `target` (Expand).
pub fn expand(shape: &[usize], target: &[usize]) -> Result<IndexMap> {
    let off = target.len() - shape.len();
    let st = strides(shape);
    one_tap(shape.iter().product(), target, |o| {
        Ok((0..shape.len())
            .map(|a| if shape[a] == 1 { 0 } else { o[a + off] * st[a] })
            .sum())
    })
}

/// Repeat `shape` `repeats[a]` times along each axis (Tile).
pub fn tile(shape: &[usize], repeats: &[usize]) -> Result<(IndexMap, Vec<usize>)> {
    let out: Vec<usize> = shape.iter().zip(repeats).map(|(n, r)| n * r).collect();
    let st = strides(shape);
    let map = one_tap(shape.iter().product(), &out, |o| {
        Ok((0..shape.len()).map(|a| (o[a] % shape[a]) * st[a]).sum())
    })?;
    Ok((map, out))
}

/// How [`pad`] fills the border.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PadMode {
    Constant(f32),
    Reflect,
    Edge,
    Wrap,
}

/// Pad (or crop, for negative amounts) every axis by `begin` / `end`.
pub fn pad(
    shape: &[usize],
    begin: &[isize],
    end: &[isize],
    mode: PadMode,
) -> Result<(IndexMap, Vec<usize>)> {
    let mut out = Vec::with_capacity(shape.len());
    for a in 0..shape.len() {
        let n = shape[a] as isize + begin[a] + end[a];
        if n <= 0 {
            return Err(Error::input(format!(
                "padding leaves axis {a} of {shape:?} empty"
            )));
        }
        if mode == PadMode::Reflect
            && (begin[a] >= shape[a] as isize || end[a] >= shape[a] as isize)
        {
            return Err(Error::input(format!(
                "reflect padding of {} on an axis of {}",
                begin[a].max(end[a]),
                shape[a]
            )));
        }
        out.push(n as usize);
    }
    let st = strides(shape);
    let map = one_tap(shape.iter().product(), &out, |o| {
        let mut f = 0;
        for a in 0..shape.len() {
            let n = shape[a] as isize;
            let q = o[a] as isize - begin[a];
            let q = if (0..n).contains(&q) {
                q
            } else {
                match mode {
                    PadMode::Constant(v) => return Err(v),
                    PadMode::Edge => q.clamp(0, n - 1),
                    PadMode::Wrap => q.rem_euclid(n),
                    PadMode::Reflect => {
                        let period = 2 * (n - 1).max(1);
                        let r = q.rem_euclid(period);
                        if r < n {
                            r
                        } else {
                            period - r
                        }
                    }
                }
            };
            f += q as usize * st[a];
        }
        Ok(f)
    })?;
    Ok((map, out))
}

/// The order DepthToSpace reads channels in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepthOrder {
    /// depth-column-row (ONNX default, TensorFlow).
    Dcr,
    /// column-row-depth (PyTorch's PixelShuffle).
    Crd,
}

/// `[C, H, W]` -> `[C / b^2, H b, W b]`.
pub fn depth_to_space(
    shape: &[usize],
    b: usize,
    order: DepthOrder,
) -> Result<(IndexMap, Vec<usize>)> {
    let [c, h, w] = chw(shape, "DepthToSpace")?;
    if b == 0 || c % (b * b) != 0 {
        return Err(Error::input(format!(
            "DepthToSpace: {c} channels do not split into blocks of {b}x{b}"
        )));
    }
    let oc = c / (b * b);
    let out = vec![oc, h * b, w * b];
    let map = one_tap(c * h * w, &out, |o| {
        let (y, x) = (o[1], o[2]);
        let (by, bx) = (y % b, x % b);
        let ch = match order {
            DepthOrder::Dcr => (by * b + bx) * oc + o[0],
            DepthOrder::Crd => o[0] * b * b + by * b + bx,
        };
        Ok((ch * h + y / b) * w + x / b)
    })?;
    Ok((map, out))
}

/// `[C, H, W]` -> `[C b^2, H / b, W / b]` (the inverse of DCR DepthToSpace).
pub fn space_to_depth(shape: &[usize], b: usize) -> Result<(IndexMap, Vec<usize>)> {
    let [c, h, w] = chw(shape, "SpaceToDepth")?;
    if b == 0 || h % b != 0 || w % b != 0 {
        return Err(Error::input(format!(
            "SpaceToDepth: {h}x{w} does not split into blocks of {b}"
        )));
    }
    let out = vec![c * b * b, h / b, w / b];
    let map = one_tap(c * h * w, &out, |o| {
        let (blk, ch) = (o[0] / c, o[0] % c);
        let (by, bx) = (blk / b, blk % b);
        Ok((ch * h + o[1] * b + by) * w + o[2] * b + bx)
    })?;
    Ok((map, out))
}

fn chw(shape: &[usize], what: &str) -> Result<[usize; 3]> {
    match *shape {
        [c, h, w] => Ok([c, h, w]),
        _ => Err(Error::input(format!(
            "{what} needs a [C, H, W] input, got {shape:?}"
        ))),
    }
}

/// Insert `stride - 1` zeros between the positions of a `[C, H, W]` map and
/// pad (or crop, negative) by `begin` / `end` per spatial axis: the input of
/// the ordinary convolution a transposed convolution is equal to.
pub fn dilate_pad(
    shape: &[usize],
    stride: [usize; 2],
    begin: [isize; 2],
    end: [isize; 2],
) -> Result<(IndexMap, Vec<usize>)> {
    let [c, h, w] = chw(shape, "ConvTranspose")?;
    let dil = [(h - 1) * stride[0] + 1, (w - 1) * stride[1] + 1];
    let mut out = vec![c];
    for a in 0..2 {
        let n = dil[a] as isize + begin[a] + end[a];
        if n <= 0 {
            return Err(Error::input("ConvTranspose: padding leaves no output"));
        }
        out.push(n as usize);
    }
    let map = one_tap(c * h * w, &out, |o| {
        let mut pos = [0usize; 2];
        for a in 0..2 {
            let q = o[a + 1] as isize - begin[a];
            if q < 0 || q >= dil[a] as isize || !(q as usize).is_multiple_of(stride[a]) {
                return Err(0.0);
            }
            pos[a] = q as usize / stride[a];
        }
        Ok((o[0] * h + pos[0]) * w + pos[1])
    })?;
    Ok((map, out))
}

/// `where(cond, x, y)` with a constant condition: each output element reads
/// `x` or `y` (either may be a constant, given as `Err(values)`), broadcast.
pub enum Branch<'a> {
    Act(&'a [usize]),
    Const(&'a [usize], &'a [f32]),
}

pub fn select(
    cond_shape: &[usize],
    cond: &[bool],
    x: Branch,
    y: Branch,
    out: &[usize],
) -> Result<IndexMap> {
    let shape_of = |b: &Branch| match b {
        Branch::Act(s) | Branch::Const(s, _) => s.to_vec(),
    };
    let (xs, ys) = (shape_of(&x), shape_of(&y));
    let x_elems = match x {
        Branch::Act(s) => s.iter().product(),
        Branch::Const(..) => 0,
    };
    let y_elems: usize = match y {
        Branch::Act(s) => s.iter().product(),
        Branch::Const(..) => 0,
    };
    let pick = |s: &[usize], o: &[usize]| {
        let off = o.len() - s.len();
        let st = strides(s);
        (0..s.len())
            .map(|a| if s[a] == 1 { 0 } else { o[a + off] * st[a] })
            .sum::<usize>()
    };
    one_tap(x_elems + y_elems, out, |o| {
        let (branch, shape, base) = if cond[pick(cond_shape, o)] {
            (&x, &xs, 0)
        } else {
            (&y, &ys, x_elems)
        };
        let i = pick(shape, o);
        match branch {
            Branch::Act(_) => Ok(base + i),
            Branch::Const(_, v) => Err(v[i]),
        }
    })
}

/// How Resize maps an output coordinate to an input coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordMode {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
}

/// How nearest-neighbour Resize rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

/// Resize's interpolation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Interp {
    Nearest(Rounding),
    Linear,
    Cubic { a: f32, exclude_outside: bool },
}

/// Per-axis taps of Resize: `(input index, weight)` for output index `o`.
fn axis_taps(
    o: usize,
    n_in: usize,
    n_out: usize,
    scale: f64,
    coord: CoordMode,
    interp: Interp,
) -> Vec<(usize, f32)> {
    let (oi, ni, no) = (o as f64, n_in as f64, n_out as f64);
    let x = match coord {
        CoordMode::HalfPixel => (oi + 0.5) / scale - 0.5,
        CoordMode::HalfPixelSymmetric => {
            let adj = no / (scale * ni);
            let center = ni / 2.0;
            let offset = center * (1.0 - adj);
            offset + (oi + 0.5) / scale - 0.5
        }
        CoordMode::PytorchHalfPixel => {
            if n_out > 1 {
                (oi + 0.5) / scale - 0.5
            } else {
                0.0
            }
        }
        CoordMode::AlignCorners => {
            if n_out > 1 {
                oi * (ni - 1.0) / (no - 1.0)
            } else {
                0.0
            }
        }
        CoordMode::Asymmetric => oi / scale,
    };
    let last = n_in as isize - 1;
    let clampi = |i: isize| i.clamp(0, last) as usize;
    match interp {
        Interp::Nearest(r) => {
            let i = match r {
                Rounding::RoundPreferFloor => {
                    if x.fract() == 0.5 {
                        x.floor()
                    } else {
                        x.round()
                    }
                }
                Rounding::RoundPreferCeil => x.round(),
                Rounding::Floor => x.floor(),
                Rounding::Ceil => x.ceil(),
            };
            vec![(clampi(i as isize), 1.0)]
        }
        Interp::Linear => {
            let x = x.clamp(0.0, last as f64);
            let i0 = x.floor() as isize;
            let f = x - i0 as f64;
            vec![(clampi(i0), (1.0 - f) as f32), (clampi(i0 + 1), f as f32)]
        }
        Interp::Cubic { a, exclude_outside } => {
            let a = a as f64;
            let i0 = x.floor() as isize;
            let t = x - i0 as f64;
            let k = |d: f64| {
                let d = d.abs();
                if d <= 1.0 {
                    ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
                } else if d < 2.0 {
                    ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
                } else {
                    0.0
                }
            };
            let mut taps: Vec<(isize, f64)> = (-1..=2).map(|j| (i0 + j, k(t - j as f64))).collect();
            if exclude_outside {
                taps.retain(|&(i, _)| (0..=last).contains(&i));
                let s: f64 = taps.iter().map(|t| t.1).sum();
                taps.iter_mut().for_each(|t| t.1 /= s);
            }
            taps.into_iter()
                .map(|(i, w)| (clampi(i), w as f32))
                .collect()
        }
    }
}

/// Resize `shape` to `out` (scales as given, `out[a] / shape[a]` when 0).
pub fn resize(
    shape: &[usize],
    out: &[usize],
    scales: &[f64],
    coord: CoordMode,
    interp: Interp,
) -> Result<IndexMap> {
    let per_axis: Vec<Vec<Vec<(usize, f32)>>> = (0..shape.len())
        .map(|a| {
            let s = if scales[a] > 0.0 {
                scales[a]
            } else {
                out[a] as f64 / shape[a] as f64
            };
            (0..out[a])
                .map(|o| {
                    if shape[a] == out[a] && s == 1.0 && !matches!(interp, Interp::Cubic { .. }) {
                        vec![(o, 1.0)]
                    } else {
                        axis_taps(o, shape[a], out[a], s, coord, interp)
                    }
                })
                .collect()
        })
        .collect();
    let taps: usize = per_axis
        .iter()
        .map(|ax| ax.iter().map(Vec::len).max().unwrap_or(1))
        .product();
    let st = strides(shape);
    let mut t = Taps::new(shape.iter().product(), taps);
    let (mut buf, mut prev) = (Vec::new(), Vec::new());
    for_each_index(out, |o| {
        buf.push((0usize, 1.0f32));
        for a in 0..shape.len() {
            std::mem::swap(&mut buf, &mut prev);
            buf.clear();
            for &(i, w) in &prev {
                for &(j, v) in &per_axis[a][o[a]] {
                    buf.push((i + j * st[a], w * v));
                }
            }
        }
        t.push(&mut buf);
        Ok(())
    })?;
    Ok(t.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(m: &IndexMap) -> Vec<Vec<(usize, f32)>> {
        (0..m.len())
            .map(|e| m.taps_of(e).filter(|t| t.1 != 0.0).collect())
            .collect()
    }

    #[test]
    fn depth_to_space_orders_match_their_definitions() {
        // 4 channels of 1x1 -> 1 channel of 2x2. DCR: channel (by*2+bx)*1;
        // CRD: the same for one output channel; they differ with 2 outputs.
        let (m, s) = depth_to_space(&[8, 1, 1], 2, DepthOrder::Dcr).unwrap();
        assert_eq!(s, vec![2, 2, 2]);
        // Output channel 1, position (0,1): DCR reads channel (0*2+1)*2+1 = 3.
        assert_eq!(sources(&m)[5], vec![(3, 1.0)]);
        let (m, _) = depth_to_space(&[8, 1, 1], 2, DepthOrder::Crd).unwrap();
        // CRD reads channel 1*4 + 0*2 + 1 = 5.
        assert_eq!(sources(&m)[5], vec![(5, 1.0)]);
    }

    #[test]
    fn space_to_depth_inverts_dcr_depth_to_space() {
        let (s2d, s) = space_to_depth(&[2, 4, 4], 2).unwrap();
        let (d2s, back) = depth_to_space(&s, 2, DepthOrder::Dcr).unwrap();
        assert_eq!(back, vec![2, 4, 4]);
        for e in 0..32 {
            let mid = d2s.taps_of(e).next().unwrap().0;
            assert_eq!(s2d.taps_of(mid).next().unwrap().0, e);
        }
    }

    #[test]
    fn linear_resize_drops_zero_weight_taps() {
        // 2 -> 4 with align_corners: out 0 and 3 sit exactly on inputs.
        let m = resize(&[2], &[4], &[2.0], CoordMode::AlignCorners, Interp::Linear).unwrap();
        let s = sources(&m);
        assert_eq!(s[0], vec![(0, 1.0)]);
        assert_eq!(s[3], vec![(1, 1.0)]);
        assert_eq!(s[1].len(), 2);
        assert!((s[1][0].1 - 2.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn nearest_half_pixel_upsample_by_two_repeats_each_element() {
        let m = resize(
            &[3],
            &[6],
            &[2.0],
            CoordMode::HalfPixel,
            Interp::Nearest(Rounding::RoundPreferFloor),
        )
        .unwrap();
        let src: Vec<usize> = sources(&m).iter().map(|t| t[0].0).collect();
        assert_eq!(src, vec![0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn constant_padding_reads_the_constant() {
        let (m, s) = pad(&[2], &[1], &[1], PadMode::Constant(7.0)).unwrap();
        assert_eq!(s, vec![4]);
        let first = m.taps_of(0).next().unwrap().0;
        assert!(first >= 2, "a constant lies past the inputs");
        assert_eq!(m.consts[first - 2], 7.0);
        assert_eq!(m.taps_of(1).next().unwrap().0, 0);
    }

    #[test]
    fn dilate_pad_puts_inputs_on_the_stride_grid() {
        // 1x2x2, stride 2, pad 1 each side: 1x5x5 with inputs at (1,1),(1,3),(3,1),(3,3).
        let (m, s) = dilate_pad(&[1, 2, 2], [2, 2], [1, 1], [1, 1]).unwrap();
        assert_eq!(s, vec![1, 5, 5]);
        let reads: Vec<(usize, usize)> = (0..25)
            .filter_map(|e| m.taps_of(e).next().filter(|t| t.0 < 4).map(|t| (e, t.0)))
            .collect();
        assert_eq!(reads, vec![(6, 0), (8, 1), (16, 2), (18, 3)]);
    }

    #[test]
    fn gather_with_matrix_indices_inserts_their_shape() {
        let (m, s) = gather(&[3, 2], 0, &[2, 0, 1, 2], &[2, 2]).unwrap();
        assert_eq!(s, vec![2, 2, 2]);
        let src: Vec<usize> = (0..8).map(|e| m.taps_of(e).next().unwrap().0).collect();
        assert_eq!(src, vec![4, 5, 0, 1, 2, 3, 4, 5]);
    }
}
