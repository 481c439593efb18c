//! Data movement on activations: reshapes, transposes, concatenation and
//! everything that becomes an element map ([`crate::graph::index_map`]):
//! Split, Slice, Gather with constant indices, Expand, Tile, Pad, Resize,
//! Upsample, DepthToSpace, SpaceToDepth.
//!
//! ONNX axes count the batch axis; the network's shapes do not. An op that
//! moves data across the batch axis has no per-sample meaning and is
//! reported unsupported.

use candle_onnx::onnx::NodeProto;

use super::super::attrs::Attrs;
use super::super::consts::resolve_reshape;
use super::super::reader::{onnx_axis, Reader};
use crate::error::{Error, Result};
use crate::graph::index_map::{
    self as im, AxisRange, CoordMode, DepthOrder, Interp, PadMode, Rounding,
};
use crate::graph::ValueId;

/// A row-major reshape of `x` to the ONNX shape `full`; the batch axis is
/// found again in the result ([`Reader::split_batch`]).
fn reshape_to(
    r: &mut Reader,
    n: &NodeProto,
    label: &str,
    x: ValueId,
    full: Vec<usize>,
) -> Result<()> {
    let (shape, batch) = Reader::split_batch(full);
    let v = r.b.reshape(label, x, shape)?;
    r.output_with(n, 0, v, batch);
    Ok(())
}

pub fn reshape(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    let target = r.need_const(n, 1, "shape")?.to_i64()?;
    let allow_zero = Attrs::of(n).int("allowzero", 0)? == 1;
    let out = resolve_reshape(&r.onnx_shape(x), &target, allow_zero)?;
    reshape_to(r, n, label, x, out)
}

pub fn flatten(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    let s = r.onnx_shape(x);
    let axis = Attrs::of(n).int("axis", 1)?;
    let a = if axis == s.len() as i64 {
        s.len()
    } else {
        onnx_axis(axis, s.len(), "Flatten")?
    };
    let out = vec![s[..a].iter().product(), s[a..].iter().product()];
    reshape_to(r, n, label, x, out)
}

pub fn squeeze(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    let axes = match Attrs::of(n).ints("axes")? {
        Some(a) => Some(a),
        None => r.ints_input(n, 1, "axes")?,
    };
    let out = squeeze_shape(&r.onnx_shape(x), axes.as_deref(), n.op_type == "Unsqueeze")?;
    reshape_to(r, n, label, x, out)
}

pub fn transpose(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    let full = r.onnx_shape(x).len();
    let perm = Attrs::of(n)
        .ints("perm")?
        .unwrap_or_else(|| (0..full as i64).rev().collect());
    let perm = permutation(&perm, full, 0)?;
    // The unit batch axis moves freely; the per-sample permutation is the
    // ONNX one without it.
    let (p, batch) = match r.batch_of(x) {
        Some(b) => (
            perm.iter()
                .filter(|&&a| a != b)
                .map(|&a| if a > b { a - 1 } else { a })
                .collect(),
            perm.iter().position(|&a| a == b),
        ),
        None => (perm, None),
    };
    let v = r.b.transpose(label, x, p)?;
    r.output_with(n, 0, v, batch);
    Ok(())
}

/// Concat of activations, or of activations and constants (a class token,
/// anchors): the constant parts become constants of an element map.
pub fn concat(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let ins: Vec<usize> = (0..n.input.len())
        .filter(|&i| !n.input[i].is_empty())
        .collect();
    let first = ins
        .iter()
        .find_map(|&i| r.input_act(n, i))
        .ok_or_else(|| Error::internal("Concat without an activation"))?;
    let axis = r.axis(first, Attrs::of(n).int("axis", 1)?, "Concat")?;
    for &i in &ins {
        if let Some(v) = r.input_act(n, i) {
            if r.batch_of(v) != r.batch_of(first) || r.shape(v).len() != r.shape(first).len() {
                return Err(Error::unsupported(
                    "Concat of activations laid out differently",
                ));
            }
        }
    }
    if ins.iter().all(|&i| r.input_act(n, i).is_some()) {
        let xs: Vec<ValueId> = ins.iter().map(|&i| r.input_act(n, i).unwrap()).collect();
        let v = r.b.concat(label, &xs, axis)?;
        r.output(n, v);
        return Ok(());
    }
    // Parts in order: activations by source offset, constants by value.
    enum Part {
        Act(usize, Vec<usize>),
        Const(Vec<f32>, Vec<usize>),
    }
    let mut acts = Vec::new();
    let mut parts = Vec::new();
    let mut offset = 0;
    for &i in &ins {
        match r.input_act(n, i) {
            Some(v) => {
                let s = r.shape(v);
                parts.push(Part::Act(offset, s.clone()));
                offset += s.iter().product::<usize>();
                acts.push(v);
            }
            None => {
                let c = r.need_const(n, i, "input")?;
                let s = r.strip_batch(&c.shape, first)?;
                parts.push(Part::Const(c.materialize()?.to_f32()?, s));
            }
        }
    }
    let shape_of = |p: &Part| match p {
        Part::Act(_, s) | Part::Const(_, s) => s.clone(),
    };
    let mut out = shape_of(&parts[0]);
    out[axis] = parts.iter().map(|p| shape_of(p)[axis]).sum();
    let mut consts: Vec<f32> = Vec::new();
    let mut index: Vec<u32> = Vec::new();
    let outer: usize = out[..axis].iter().product();
    let const_base = offset;
    for o in 0..outer {
        for p in &parts {
            let s = shape_of(p);
            if s.len() != out.len()
                || s.iter()
                    .zip(&out)
                    .enumerate()
                    .any(|(i, (a, b))| i != axis && a != b)
            {
                return Err(Error::input(format!(
                    "Concat: shapes {:?} and {s:?} differ off the concat axis",
                    out
                )));
            }
            let inner: usize = s[axis..].iter().product();
            for e in o * inner..(o + 1) * inner {
                match p {
                    Part::Act(off, _) => index.push((off + e) as u32),
                    Part::Const(v, _) => {
                        index.push((const_base + consts.len()) as u32);
                        consts.push(v[e]);
                    }
                }
            }
        }
    }
    let map = crate::graph::op::IndexMap {
        taps: 1,
        index: std::sync::Arc::new(index),
        weight: None,
        consts,
    };
    let v = r.b.gather(label, &acts, map, out)?;
    r.output(n, v);
    Ok(())
}

/// The per-axis ranges of a Slice node on a tensor of ONNX shape `shape`
/// whose unit axis `batch` (if any) is left out of the result.
pub fn slice_ranges(
    r: &Reader,
    n: &NodeProto,
    shape: &[usize],
    batch: Option<usize>,
) -> Result<Vec<AxisRange>> {
    let at = Attrs::of(n);
    let (starts, ends, axes, steps) = match at.ints("starts")? {
        Some(s) => (
            s,
            at.ints("ends")?.unwrap_or_default(),
            at.ints("axes")?,
            None,
        ),
        None => (
            r.ints_input(n, 1, "starts")?.unwrap_or_default(),
            r.ints_input(n, 2, "ends")?.unwrap_or_default(),
            r.ints_input(n, 3, "axes")?,
            r.ints_input(n, 4, "steps")?,
        ),
    };
    let full = shape.len();
    let axes: Vec<i64> = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(Error::input(
            "Slice: starts, ends, axes and steps differ in length",
        ));
    }
    let mut ranges: Vec<AxisRange> = shape.iter().map(|&d| AxisRange::all(d)).collect();
    for k in 0..starts.len() {
        let a = onnx_axis(axes[k], full, "Slice")?;
        ranges[a] = axis_range(shape[a] as i64, starts[k], ends[k], steps[k])?;
    }
    if let Some(b) = batch {
        if ranges[b] != AxisRange::all(1) {
            return Err(Error::unsupported("Slice along the batch axis"));
        }
        ranges.remove(b);
    }
    Ok(ranges)
}

/// ONNX Slice's clamping rules for one axis of length `d`.
fn axis_range(d: i64, start: i64, end: i64, step: i64) -> Result<AxisRange> {
    if step == 0 {
        return Err(Error::input("Slice step 0"));
    }
    let norm = |x: i64| if x < 0 { x.saturating_add(d) } else { x };
    let (s, e) = (norm(start), norm(end));
    let (s, e) = if step > 0 {
        (s.clamp(0, d), e.clamp(0, d))
    } else {
        (s.clamp(-1, d - 1), e.clamp(-1, d - 1))
    };
    let len = if step > 0 {
        if e > s {
            (e - s + step - 1) / step
        } else {
            0
        }
    } else if s > e {
        (s - e + (-step) - 1) / (-step)
    } else {
        0
    };
    Ok(AxisRange {
        start: s as usize,
        step: step as isize,
        len: len as usize,
    })
}

pub fn slice(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    let s = r.shape(x);
    let ranges = slice_ranges(r, n, &r.onnx_shape(x), r.batch_of(x))?;
    if ranges.iter().any(|a| a.len == 0) {
        return Err(Error::unsupported("Slice that leaves an activation empty"));
    }
    gather_map(r, n, 0, label, x, im::slice(&s, &ranges)?)
}

/// Name an element map's output, skipping the identity.
fn gather_map(
    r: &mut Reader,
    n: &NodeProto,
    k: usize,
    label: &str,
    x: ValueId,
    (map, shape): (crate::graph::op::IndexMap, Vec<usize>),
) -> Result<()> {
    let identity = shape == r.shape(x)
        && map.weight.is_none()
        && (0..map.len()).all(|e| map.taps_of(e).next().map(|t| t.0) == Some(e));
    let v = if identity {
        r.b.identity(label, x)
    } else {
        r.b.gather(label, &[x], map, shape)?
    };
    r.output_at(n, k, v);
    Ok(())
}

pub fn split(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    let s = r.shape(x);
    let at = Attrs::of(n);
    let axis = r.axis(x, at.int("axis", 0)?, "Split")?;
    let outputs = n.output.len();
    let sizes: Vec<usize> = match at.ints("split")? {
        Some(v) => v.iter().map(|&d| d.max(0) as usize).collect(),
        None => match r.ints_input(n, 1, "split")? {
            Some(v) => v.iter().map(|&d| d.max(0) as usize).collect(),
            None => {
                let parts = at.int("num_outputs", outputs as i64)?.max(1) as usize;
                let each = s[axis].div_ceil(parts);
                (0..parts)
                    .map(|i| each.min(s[axis].saturating_sub(i * each)))
                    .collect()
            }
        },
    };
    if sizes.len() != outputs || sizes.iter().sum::<usize>() != s[axis] {
        return Err(Error::input(format!(
            "Split of {} into {sizes:?} for {outputs} outputs",
            s[axis]
        )));
    }
    let mut start = 0;
    for (k, &len) in sizes.iter().enumerate() {
        let mut ranges: Vec<AxisRange> = s.iter().map(|&d| AxisRange::all(d)).collect();
        ranges[axis] = AxisRange {
            start,
            step: 1,
            len,
        };
        start += len;
        if n.output[k].is_empty() || len == 0 {
            continue;
        }
        gather_map(r, n, k, &format!("{label}/{k}"), x, im::slice(&s, &ranges)?)?;
    }
    Ok(())
}

pub fn gather(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let Some(x) = r.input_act(n, 0) else {
        return Err(Error::unsupported(
            "Gather of a constant table by computed indices (an embedding lookup; \
             export the model from its embeddings)",
        ));
    };
    let s = r.shape(x);
    let onnx_a = onnx_axis(
        Attrs::of(n).int("axis", 0)?,
        r.onnx_shape(x).len(),
        "Gather",
    )?;
    let axis = r.axis(x, onnx_a as i64, "Gather")?;
    let idx = r.need_const(n, 1, "indices")?;
    let d = s[axis] as i64;
    let ix: Vec<usize> = idx
        .to_i64()?
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + d } else { i };
            usize::try_from(j)
                .ok()
                .filter(|&j| j < s[axis])
                .ok_or_else(|| Error::input(format!("Gather index {i} out of range for {d}")))
        })
        .collect::<Result<_>>()?;
    // The indices' axes replace the gathered one, shifting a later batch axis.
    let batch = r.batch_of(x).map(|b| {
        if onnx_a < b {
            b + idx.shape.len() - 1
        } else {
            b
        }
    });
    let (map, shape) = im::gather(&s, axis, &ix, &idx.shape)?;
    let v = r.b.gather(label, &[x], map, shape)?;
    r.output_with(n, 0, v, batch);
    Ok(())
}

pub fn expand(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    let s = r.shape(x);
    let target: Vec<usize> = r
        .need_const(n, 1, "shape")?
        .to_i64()?
        .iter()
        .map(|&d| d.max(0) as usize)
        .collect();
    let full = crate::graph::builder::broadcast(&r.onnx_shape(x), &target)?;
    let batch = r.broadcast_batch(&[x], full.len().saturating_sub(1))?;
    let mut out = full;
    if let Some(b) = batch {
        if out[b] != 1 {
            return Err(Error::unsupported("Expand along the batch axis"));
        }
        out.remove(b);
    }
    let map = im::expand(&s, &out)?;
    let v = r.b.gather(label, &[x], map, out)?;
    r.output_with(n, 0, v, batch);
    Ok(())
}

pub fn tile(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    let s = r.shape(x);
    let mut reps = r.need_const(n, 1, "repeats")?.to_i64()?;
    let full = r.onnx_shape(x).len();
    if reps.len() != full || reps.iter().any(|&k| k < 1) {
        return Err(Error::input(format!(
            "Tile repeats {reps:?} for rank {full}"
        )));
    }
    if let Some(b) = r.batch_of(x) {
        if reps[b] != 1 {
            return Err(Error::unsupported("Tile along the batch axis"));
        }
        reps.remove(b);
    }
    let reps: Vec<usize> = reps.iter().map(|&k| k as usize).collect();
    gather_map(r, n, 0, label, x, im::tile(&s, &reps)?)
}

pub fn pad(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    let s = r.shape(x);
    let at = Attrs::of(n);
    let full = r.onnx_shape(x).len();
    let pads = match at.ints("pads")? {
        Some(p) => p,
        None => r.need_const(n, 1, "pads")?.to_i64()?,
    };
    let value = match r.konst(n, 2) {
        Some(c) => c.materialize()?.to_f32()?.first().copied().unwrap_or(0.0),
        None => at.float("value", 0.0)?,
    };
    let axes: Vec<usize> = match r.ints_input(n, 3, "axes")? {
        Some(a) => a
            .iter()
            .map(|&a| {
                let a = if a < 0 { a + full as i64 } else { a };
                usize::try_from(a)
                    .ok()
                    .filter(|&a| a < full)
                    .ok_or_else(|| Error::input(format!("Pad axis {a} out of range")))
            })
            .collect::<Result<_>>()?,
        None => (0..full).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(Error::input(format!(
            "Pad: {} pads for {} axes",
            pads.len(),
            axes.len()
        )));
    }
    let mut begin = vec![0isize; full];
    let mut end = vec![0isize; full];
    for (k, &a) in axes.iter().enumerate() {
        begin[a] = pads[k] as isize;
        end[a] = pads[k + axes.len()] as isize;
    }
    if let Some(b) = r.batch_of(x) {
        if begin[b] != 0 || end[b] != 0 {
            return Err(Error::unsupported("Pad along the batch axis"));
        }
        begin.remove(b);
        end.remove(b);
    }
    let mode = match at
        .choice("mode", &["constant", "reflect", "edge", "wrap"])?
        .as_str()
    {
        "constant" => PadMode::Constant(value),
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        _ => PadMode::Wrap,
    };
    gather_map(r, n, 0, label, x, im::pad(&s, &begin, &end, mode)?)
}

/// Resize (opset 10+) and the older Upsample.
pub fn resize(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    let s = r.shape(x);
    let full = r.onnx_shape(x);
    let at = Attrs::of(n);
    let upsample = n.op_type == "Upsample";
    if !upsample && at.int("antialias", 0)? != 0 {
        return Err(Error::unsupported("Resize with antialias"));
    }
    if !upsample && at.string("keep_aspect_ratio_policy", "stretch")? != "stretch" {
        return Err(Error::unsupported("Resize with a keep_aspect_ratio_policy"));
    }
    // Inputs: Upsample (X, scales) or attr scales; Resize-10 (X, scales);
    // Resize-11+ (X, roi, scales, sizes).
    let (scales_in, sizes_in) = if upsample || r.opset < 11 {
        (1, usize::MAX)
    } else {
        (2, 3)
    };
    let floats = |i: usize| -> Result<Option<Vec<f32>>> {
        match r.konst(n, i) {
            Some(c) if c.numel() > 0 => Ok(Some(c.materialize()?.to_f32()?)),
            Some(_) => Ok(None),
            None if n.input.get(i).is_some_and(|s| !s.is_empty()) => Err(Error::unsupported(
                "Resize with scales or sizes computed at run time",
            )),
            None => Ok(None),
        }
    };
    let mut scales = match at.floats("scales")? {
        Some(v) => Some(v),
        None => floats(scales_in)?,
    };
    let sizes = if sizes_in == usize::MAX {
        None
    } else {
        match r.konst(n, sizes_in) {
            Some(c) if c.numel() > 0 => Some(c.to_i64()?),
            _ => None,
        }
    };
    let axes: Vec<usize> = match at.ints("axes")? {
        Some(a) => a
            .iter()
            .map(|&a| (if a < 0 { a + full.len() as i64 } else { a }) as usize)
            .collect(),
        None => (0..full.len()).collect(),
    };
    let mut out = full.clone();
    let mut sc = vec![1.0f64; full.len()];
    match (&sizes, &mut scales) {
        (Some(sz), _) => {
            if sz.len() != axes.len() {
                return Err(Error::input("Resize: sizes do not match the axes"));
            }
            for (k, &a) in axes.iter().enumerate() {
                out[a] = sz[k].max(1) as usize;
                sc[a] = out[a] as f64 / full[a] as f64;
            }
        }
        (None, Some(v)) => {
            if v.len() != axes.len() {
                return Err(Error::input("Resize: scales do not match the axes"));
            }
            for (k, &a) in axes.iter().enumerate() {
                if v[k].is_nan() || v[k] <= 0.0 {
                    return Err(Error::input(format!("Resize scale {}", v[k])));
                }
                sc[a] = v[k] as f64;
                out[a] = (full[a] as f64 * sc[a]).floor() as usize;
            }
        }
        (None, None) => return Err(Error::input("Resize without scales or sizes")),
    }
    if let Some(b) = r.batch_of(x) {
        if out[b] != 1 {
            return Err(Error::unsupported("Resize along the batch axis"));
        }
        out.remove(b);
        sc.remove(b);
    }
    let mode = at.choice("mode", &["nearest", "linear", "cubic", "bilinear"])?;
    let coord = if upsample || r.opset < 11 {
        CoordMode::Asymmetric
    } else {
        match at
            .choice(
                "coordinate_transformation_mode",
                &[
                    "half_pixel",
                    "half_pixel_symmetric",
                    "pytorch_half_pixel",
                    "align_corners",
                    "asymmetric",
                    "tf_half_pixel_for_nn",
                    "tf_crop_and_resize",
                ],
            )?
            .as_str()
        {
            "half_pixel" => CoordMode::HalfPixel,
            "half_pixel_symmetric" => CoordMode::HalfPixelSymmetric,
            "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
            "align_corners" => CoordMode::AlignCorners,
            "asymmetric" => CoordMode::Asymmetric,
            other => {
                return Err(Error::unsupported(format!(
                    "Resize coordinate mode {other}"
                )))
            }
        }
    };
    let interp = match mode.as_str() {
        "nearest" => Interp::Nearest(if upsample || r.opset < 11 {
            Rounding::Floor
        } else {
            match at
                .choice(
                    "nearest_mode",
                    &["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"],
                )?
                .as_str()
            {
                "round_prefer_floor" => Rounding::RoundPreferFloor,
                "round_prefer_ceil" => Rounding::RoundPreferCeil,
                "floor" => Rounding::Floor,
                _ => Rounding::Ceil,
            }
        }),
        "linear" | "bilinear" => Interp::Linear,
        _ => Interp::Cubic {
            a: at.float("cubic_coeff_a", -0.75)?,
            exclude_outside: at.int("exclude_outside", 0)? != 0,
        },
    };
    let map = im::resize(&s, &out, &sc, coord, interp)?;
    gather_map(r, n, 0, label, x, (map, out))
}

pub fn depth_space(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    let s = r.shape(x);
    let at = Attrs::of(n);
    r.require_channels_first(x, &n.op_type)?;
    let b = at.int_in("blocksize", 0, 1..=1 << 16)? as usize;
    let res = if n.op_type == "DepthToSpace" {
        let order = match at.choice("mode", &["DCR", "CRD"])?.as_str() {
            "DCR" => DepthOrder::Dcr,
            _ => DepthOrder::Crd,
        };
        im::depth_to_space(&s, b, order)?
    } else {
        im::space_to_depth(&s, b)?
    };
    gather_map(r, n, 0, label, x, res)
}

/// `Shape`'s optional `start`/`end` attributes (opset 15) on `dims`.
pub fn shape_range(at: &Attrs, dims: Vec<i64>) -> Result<Vec<i64>> {
    let d = dims.len() as i64;
    let norm = |x: i64| (if x < 0 { x + d } else { x }).clamp(0, d) as usize;
    let (s, e) = (norm(at.int("start", 0)?), norm(at.int("end", d)?));
    Ok(if s < e { dims[s..e].to_vec() } else { vec![] })
}

/// `Shape` / `Size` of an activation: constants, batch 1.
pub fn shape_of(r: &mut Reader, n: &NodeProto) -> Result<()> {
    let x = r.need_act(n, 0)?;
    let dims: Vec<i64> = r.onnx_shape(x).iter().map(|&d| d as i64).collect();
    let t = if n.op_type == "Size" {
        crate::graph::tensor::ConstTensor::i64(vec![], vec![dims.iter().product()])
    } else {
        let dims = shape_range(&Attrs::of(n), dims)?;
        crate::graph::tensor::ConstTensor::i64(vec![dims.len()], dims)
    };
    r.set_const_t(n, t);
    Ok(())
}

pub fn squeeze_shape(shape: &[usize], axes: Option<&[i64]>, unsqueeze: bool) -> Result<Vec<usize>> {
    if unsqueeze {
        let axes = axes.ok_or_else(|| Error::input("Unsqueeze without axes"))?;
        let r = (shape.len() + axes.len()) as i64;
        let mut norm: Vec<usize> = axes
            .iter()
            .map(|&a| if a < 0 { a + r } else { a } as usize)
            .collect();
        norm.sort_unstable();
        let mut out = shape.to_vec();
        for a in norm {
            if a > out.len() {
                return Err(Error::input("Unsqueeze axis out of range"));
            }
            out.insert(a, 1);
        }
        Ok(out)
    } else {
        let r = shape.len() as i64;
        let drop: Vec<usize> = match axes {
            Some(a) => a
                .iter()
                .map(|&x| {
                    let i = if x < 0 { x + r } else { x };
                    match usize::try_from(i) {
                        Ok(i) if i < shape.len() && shape[i] == 1 => Ok(i),
                        _ => Err(Error::input(format!(
                            "Squeeze axis {x} is out of range or not of size 1 in {shape:?}"
                        ))),
                    }
                })
                .collect::<Result<_>>()?,
            None => (0..shape.len()).filter(|&i| shape[i] == 1).collect(),
        };
        Ok(shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !drop.contains(i))
            .map(|(_, &d)| d)
            .collect())
    }
}

/// The ONNX permutation `perm` (axes counted from `base`) of `rank` axes,
/// checked: each axis exactly once.
pub fn permutation(perm: &[i64], rank: usize, base: i64) -> Result<Vec<usize>> {
    let mut seen = vec![false; rank];
    let out: Option<Vec<usize>> = perm
        .iter()
        .map(|&a| {
            let i = usize::try_from(a.checked_sub(base)?).ok()?;
            (i < rank && !std::mem::replace(&mut seen[i], true)).then_some(i)
        })
        .collect();
    match out {
        Some(p) if p.len() == rank => Ok(p),
        _ => Err(Error::input(format!(
            "Transpose perm {perm:?} is not a permutation of {} axes",
            rank as i64 + base
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_ranges_clamp_like_onnx() {
        // ends past the axis and INT64_MAX clamp; negative steps walk back.
        assert_eq!(
            axis_range(5, 1, i64::MAX, 1).unwrap(),
            AxisRange {
                start: 1,
                step: 1,
                len: 4
            }
        );
        assert_eq!(
            axis_range(5, -1, i64::MIN, -1).unwrap(),
            AxisRange {
                start: 4,
                step: -1,
                len: 5
            }
        );
        assert_eq!(axis_range(5, 0, 5, 2).unwrap().len, 3);
        assert_eq!(axis_range(5, 3, 3, 1).unwrap().len, 0);
    }
}
