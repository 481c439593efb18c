//! Constant folding: nodes whose inputs are all constants.
//!
//! Exporters compute shapes at run time (`Shape -> Gather -> Concat ->
//! Reshape`, `Range`, `Equal -> Where` around `Expand`) and store weights
//! behind `Identity`, `Cast`, `Reshape`, `Transpose` or, in QDQ-quantized
//! models, `DequantizeLinear`. With the input shapes fixed, all of that is
//! constant: it is evaluated here, once. Views keep the stored tensor's name
//! and element map, so a weight is still keyed by its initializer (see
//! [`Const`]); arithmetic produces new small tensors.

use candle_onnx::onnx::NodeProto;

use super::super::attrs::Attrs;
use super::super::consts::{cast, resolve_reshape, Const};
use super::super::reader::{checked_numel, Reader};
use super::super::tensor::{decode, dtype_of};
use super::quant;
use crate::error::{Error, Result};
use crate::graph::index_map::strides;
use crate::graph::tensor::{ConstTensor, DType};

/// Folding is for shape arithmetic and masks: small tensors only.
const MAX_FOLD: usize = 1 << 24;

/// The values of a small constant, integers kept exact.
#[derive(Clone, Debug)]
enum Vals {
    I(Vec<i64>),
    F(Vec<f64>),
}

impl Vals {
    fn of(c: &Const) -> Result<Self> {
        if c.numel() > MAX_FOLD {
            return Err(Error::unsupported(format!(
                "arithmetic on a constant of shape {:?} is not folded (too large)",
                c.shape
            )));
        }
        let t = c.materialize()?;
        Ok(if t.dtype().is_float() {
            Vals::F(t.to_f32()?.into_iter().map(f64::from).collect())
        } else {
            Vals::I(t.to_i64())
        })
    }

    fn f(&self, i: usize) -> f64 {
        match self {
            Vals::I(v) => v[i] as f64,
            Vals::F(v) => v[i],
        }
    }

    fn tensor(self, shape: Vec<usize>) -> ConstTensor {
        match self {
            Vals::I(v) => ConstTensor::i64(shape, v),
            Vals::F(v) => ConstTensor::f32(shape, v.into_iter().map(|x| x as f32).collect()),
        }
    }
}

/// Numpy broadcasting of constants: output shape and, per input, the
/// source element of each output element.
fn broadcast_index(shapes: &[&[usize]]) -> Result<(Vec<usize>, Vec<Vec<usize>>)> {
    let mut out: Vec<usize> = Vec::new();
    for s in shapes {
        out = crate::graph::builder::broadcast(&out, s)?;
    }
    let n = checked_numel(&out, "broadcast")?;
    if n > MAX_FOLD {
        return Err(Error::unsupported("folding a broadcast this large"));
    }
    let ost = strides(&out);
    let maps = shapes
        .iter()
        .map(|s| {
            let off = out.len() - s.len();
            let st = strides(s);
            (0..n)
                .map(|e| {
                    (0..s.len())
                        .map(|a| {
                            if s[a] == 1 {
                                0
                            } else {
                                (e / ost[a + off]) % out[a + off] * st[a]
                            }
                        })
                        .sum()
                })
                .collect()
        })
        .collect();
    Ok((out, maps))
}

/// Elementwise op of two constants with broadcasting.
fn binary(op: &str, a: &Const, b: &Const) -> Result<ConstTensor> {
    let (x, y) = (Vals::of(a)?, Vals::of(b)?);
    let (shape, maps) = broadcast_index(&[&a.shape, &b.shape])?;
    let (ia, ib) = (&maps[0], &maps[1]);
    let n = ia.len();
    let boolean = |f: &dyn Fn(f64, f64) -> bool| {
        Vals::I((0..n).map(|e| f(x.f(ia[e]), y.f(ib[e])) as i64).collect())
    };
    let out = match (op, &x, &y) {
        ("Equal", ..) => boolean(&|p, q| p == q),
        ("Less", ..) => boolean(&|p, q| p < q),
        ("LessOrEqual", ..) => boolean(&|p, q| p <= q),
        ("Greater", ..) => boolean(&|p, q| p > q),
        ("GreaterOrEqual", ..) => boolean(&|p, q| p >= q),
        ("And", ..) => boolean(&|p, q| p != 0.0 && q != 0.0),
        ("Or", ..) => boolean(&|p, q| p != 0.0 || q != 0.0),
        ("Xor", ..) => boolean(&|p, q| (p != 0.0) != (q != 0.0)),
        (_, Vals::I(u), Vals::I(v)) => {
            let f = |e: usize| -> Result<i64> {
                let (p, q) = (u[ia[e]], v[ib[e]]);
                Ok(match op {
                    "Add" => p.wrapping_add(q),
                    "Sub" => p.wrapping_sub(q),
                    "Mul" => p.wrapping_mul(q),
                    "Max" => p.max(q),
                    "Min" => p.min(q),
                    "Pow" => p.wrapping_pow(q.clamp(0, 63) as u32),
                    "Div" | "Mod" if q == 0 => {
                        return Err(Error::input(format!("{op} by zero in a constant")))
                    }
                    // ONNX integer Div truncates, as C does.
                    "Div" => p.wrapping_div(q),
                    // fmod = 0: the remainder takes the divisor's sign (Python's %).
                    "Mod" => {
                        let r = p.wrapping_rem(q);
                        if r != 0 && (r < 0) != (q < 0) {
                            r + q
                        } else {
                            r
                        }
                    }
                    other => return Err(Error::unsupported(format!("folding {other}"))),
                })
            };
            Vals::I((0..n).map(f).collect::<Result<_>>()?)
        }
        _ => {
            let f = |e: usize| -> Result<f64> {
                let (p, q) = (x.f(ia[e]), y.f(ib[e]));
                Ok(match op {
                    "Add" => p + q,
                    "Sub" => p - q,
                    "Mul" => p * q,
                    "Div" => p / q,
                    "Max" => p.max(q),
                    "Min" => p.min(q),
                    "Pow" => p.powf(q),
                    "Mod" => p % q,
                    other => return Err(Error::unsupported(format!("folding {other}"))),
                })
            };
            Vals::F((0..n).map(f).collect::<Result<_>>()?)
        }
    };
    Ok(out.tensor(shape))
}

/// Elementwise function of one constant.
fn unary(op: &str, a: &Const) -> Result<ConstTensor> {
    let x = Vals::of(a)?;
    let out = match (op, x) {
        ("Neg", Vals::I(v)) => Vals::I(v.into_iter().map(|p| p.wrapping_neg()).collect()),
        ("Abs", Vals::I(v)) => Vals::I(v.into_iter().map(|p| p.wrapping_abs()).collect()),
        ("Not", x) => {
            let n = a.numel();
            Vals::I((0..n).map(|i| (x.f(i) == 0.0) as i64).collect())
        }
        ("Sign", Vals::I(v)) => Vals::I(v.into_iter().map(i64::signum).collect()),
        (op, x) => {
            let f: fn(f64) -> f64 = match op {
                "Neg" => |p| -p,
                "Abs" => f64::abs,
                "Sqrt" => f64::sqrt,
                "Exp" => f64::exp,
                "Log" => f64::ln,
                "Reciprocal" => |p| 1.0 / p,
                "Floor" => f64::floor,
                "Ceil" => f64::ceil,
                "Round" => f64::round_ties_even,
                "Sign" => |p: f64| if p == 0.0 { 0.0 } else { p.signum() },
                "Sigmoid" => |p: f64| 1.0 / (1.0 + (-p).exp()),
                "Tanh" => f64::tanh,
                "Relu" => |p: f64| p.max(0.0),
                "Sin" => f64::sin,
                "Cos" => f64::cos,
                other => return Err(Error::unsupported(format!("folding {other}"))),
            };
            let n = a.numel();
            Vals::F((0..n).map(|i| f(x.f(i))).collect())
        }
    };
    Ok(out.tensor(a.shape.clone()))
}

/// `where(cond, x, y)` of constants.
fn select(c: &Const, x: &Const, y: &Const) -> Result<ConstTensor> {
    let (vc, vx, vy) = (Vals::of(c)?, Vals::of(x)?, Vals::of(y)?);
    let (shape, maps) = broadcast_index(&[&c.shape, &x.shape, &y.shape])?;
    let pick = |e: usize| vc.f(maps[0][e]) != 0.0;
    let out = match (&vx, &vy) {
        (Vals::I(a), Vals::I(b)) => Vals::I(
            (0..maps[0].len())
                .map(|e| {
                    if pick(e) {
                        a[maps[1][e]]
                    } else {
                        b[maps[2][e]]
                    }
                })
                .collect(),
        ),
        _ => Vals::F(
            (0..maps[0].len())
                .map(|e| {
                    if pick(e) {
                        vx.f(maps[1][e])
                    } else {
                        vy.f(maps[2][e])
                    }
                })
                .collect(),
        ),
    };
    Ok(out.tensor(shape))
}

/// A constant broadcast to `target` (Expand with numpy rules both ways).
fn expand(x: &Const, target: &[i64]) -> Result<ConstTensor> {
    let t: Vec<usize> = target.iter().map(|&d| d.max(0) as usize).collect();
    let v = Vals::of(x)?;
    let (shape, maps) = broadcast_index(&[&x.shape, &t])?;
    let m = &maps[0];
    let out = match v {
        Vals::I(a) => Vals::I(m.iter().map(|&i| a[i]).collect()),
        Vals::F(a) => Vals::F(m.iter().map(|&i| a[i]).collect()),
    };
    Ok(out.tensor(shape))
}

fn range(start: &Const, limit: &Const, delta: &Const) -> Result<ConstTensor> {
    let (s, l, d) = (Vals::of(start)?, Vals::of(limit)?, Vals::of(delta)?);
    match (s, l, d) {
        (Vals::I(s), Vals::I(l), Vals::I(d)) => {
            let (s, l, d) = (s[0], l[0], d[0]);
            if d == 0 {
                return Err(Error::input("Range with delta 0"));
            }
            let n = ((l - s) as f64 / d as f64).ceil().max(0.0) as usize;
            if n > MAX_FOLD {
                return Err(Error::input(format!("Range of {n} elements")));
            }
            Ok(ConstTensor::i64(
                vec![n],
                (0..n as i64).map(|i| s + i * d).collect(),
            ))
        }
        (s, l, d) => {
            let (s, l, d) = (s.f(0), l.f(0), d.f(0));
            if d == 0.0 {
                return Err(Error::input("Range with delta 0"));
            }
            let n = ((l - s) / d).ceil().max(0.0) as usize;
            if n > MAX_FOLD {
                return Err(Error::input(format!("Range of {n} elements")));
            }
            Ok(ConstTensor::f32(
                vec![n],
                (0..n).map(|i| (s + i as f64 * d) as f32).collect(),
            ))
        }
    }
}

/// Take `indices` along `axis` of a constant.
fn gather(data: &Const, indices: &Const, axis: i64) -> Result<ConstTensor> {
    let r = data.shape.len() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) {
        return Err(Error::input(format!("Gather axis {axis} out of range")));
    }
    let a = a as usize;
    let n = data.shape.get(a).copied().unwrap_or(1) as i64;
    let idx: Vec<usize> = indices
        .to_i64()?
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + n } else { i };
            if (0..n).contains(&j) {
                Ok(j as usize)
            } else {
                Err(Error::input(format!(
                    "Gather index {i} out of range for {n}"
                )))
            }
        })
        .collect::<Result<_>>()?;
    let (map, shape) = crate::graph::index_map::gather(&data.shape, a, &idx, &indices.shape)?;
    take(data, &map, shape)
}

/// The constant whose element `e` is element `map`'s source of `data`.
fn take(data: &Const, map: &crate::graph::op::IndexMap, shape: Vec<usize>) -> Result<ConstTensor> {
    let v = Vals::of(data)?;
    let src: Vec<usize> = (0..map.len())
        .map(|e| map.taps_of(e).next().unwrap().0)
        .collect();
    Ok(match v {
        Vals::I(a) => Vals::I(src.iter().map(|&i| a[i]).collect()),
        Vals::F(a) => Vals::F(src.iter().map(|&i| a[i]).collect()),
    }
    .tensor(shape))
}

/// `GatherElements`: `out[i][j][k] = data[i][idx[i][j][k]][k]` along `axis`.
fn gather_elements(data: &Const, indices: &Const, axis: i64) -> Result<ConstTensor> {
    let rank = data.shape.len();
    let a = super::super::reader::onnx_axis(axis, rank, "GatherElements")?;
    if indices.shape.len() != rank {
        return Err(Error::input(
            "GatherElements: indices and data differ in rank",
        ));
    }
    let v = Vals::of(data)?;
    let idx = indices.to_i64()?;
    let (ds, is) = (strides(&data.shape), strides(&indices.shape));
    let n = data.shape[a] as i64;
    let src: Vec<usize> = (0..idx.len())
        .map(|e| {
            let i = idx[e];
            let j = if i < 0 { i + n } else { i };
            if !(0..n).contains(&j) {
                return Err(Error::input(format!(
                    "GatherElements index {i} out of range"
                )));
            }
            Ok((0..rank)
                .map(|d| {
                    let c = (e / is[d]) % indices.shape[d];
                    (if d == a { j as usize } else { c }) * ds[d]
                })
                .sum())
        })
        .collect::<Result<_>>()?;
    Ok(match v {
        Vals::I(x) => Vals::I(src.iter().map(|&i| x[i]).collect()),
        Vals::F(x) => Vals::F(src.iter().map(|&i| x[i]).collect()),
    }
    .tensor(indices.shape.clone()))
}

/// `ScatterND` without reduction: `updates` written into a copy of `data`
/// at the index tuples of `indices` (Swin's shifted-window masks).
fn scatter_nd(data: &Const, indices: &Const, updates: &Const) -> Result<ConstTensor> {
    let mut out = Vals::of(data)?;
    let upd = Vals::of(updates)?;
    let idx = indices.to_i64()?;
    let k = *indices.shape.last().unwrap_or(&0);
    if k == 0 || k > data.shape.len() {
        return Err(Error::input("ScatterND: bad index depth"));
    }
    let st = strides(&data.shape);
    let slice: usize = data.shape[k..].iter().product();
    for (t, tuple) in idx.chunks(k).enumerate() {
        let mut base = 0;
        for (d, &i) in tuple.iter().enumerate() {
            let n = data.shape[d] as i64;
            let j = if i < 0 { i + n } else { i };
            if !(0..n).contains(&j) {
                return Err(Error::input(format!("ScatterND index {i} out of range")));
            }
            base += j as usize * st[d];
        }
        for e in 0..slice {
            let u = t * slice + e;
            match (&mut out, &upd) {
                (Vals::I(o), Vals::I(v)) => o[base + e] = v[u],
                (Vals::F(o), v) => o[base + e] = v.f(u),
                (Vals::I(o), v) => o[base + e] = v.f(u) as i64,
            }
        }
    }
    Ok(out.tensor(data.shape.clone()))
}

fn concat(parts: &[Const], axis: i64) -> Result<ConstTensor> {
    let r = parts[0].shape.len() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(Error::input(format!("Concat axis {axis} out of range")));
    }
    let a = a as usize;
    let vals: Vec<Vals> = parts.iter().map(Vals::of).collect::<Result<_>>()?;
    let ints = vals.iter().all(|v| matches!(v, Vals::I(_)));
    let mut shape = parts[0].shape.clone();
    shape[a] = parts
        .iter()
        .map(|p| p.shape.get(a).copied().unwrap_or(0))
        .sum();
    for p in parts {
        let same = p.shape.len() == shape.len()
            && p.shape
                .iter()
                .zip(&shape)
                .enumerate()
                .all(|(i, (x, y))| i == a || x == y);
        if !same {
            return Err(Error::input(format!(
                "Concat of constants of shapes {:?} and {:?}",
                parts[0].shape, p.shape
            )));
        }
    }
    let outer: usize = shape[..a].iter().product();
    let mut i_out = Vec::new();
    let mut f_out = Vec::new();
    for o in 0..outer {
        for (p, v) in parts.iter().zip(&vals) {
            let inner: usize = p.shape[a..].iter().product();
            for e in o * inner..(o + 1) * inner {
                if ints {
                    if let Vals::I(x) = v {
                        i_out.push(x[e]);
                    }
                } else {
                    f_out.push(v.f(e));
                }
            }
        }
    }
    Ok(if ints { Vals::I(i_out) } else { Vals::F(f_out) }.tensor(shape))
}

fn slice(r: &Reader, n: &NodeProto, data: &Const) -> Result<ConstTensor> {
    let ranges = super::movement::slice_ranges(r, n, &data.shape, None)?;
    let (map, shape) = crate::graph::index_map::slice(&data.shape, &ranges)?;
    take(data, &map, shape)
}

/// Fold a node whose inputs are all constants.
pub fn fold(r: &mut Reader, n: &NodeProto) -> Result<()> {
    let at = Attrs::of(n);
    let c = |i: usize, what: &str| r.need_const(n, i, what);
    match n.op_type.as_str() {
        "Constant" => {
            let a = n
                .attribute
                .first()
                .ok_or_else(|| Error::input("Constant without a value"))?;
            let t = match a.name.as_str() {
                "value" => decode(at.tensor("value")?.unwrap_or_default(), r.dir)?,
                "value_float" => ConstTensor::f32(vec![], vec![at.float("value_float", 0.0)?]),
                "value_floats" => {
                    let v = at.floats("value_floats")?.unwrap_or_default();
                    ConstTensor::f32(vec![v.len()], v)
                }
                "value_int" => ConstTensor::i64(vec![], vec![at.int("value_int", 0)?]),
                "value_ints" => {
                    let v = at.ints("value_ints")?.unwrap_or_default();
                    ConstTensor::i64(vec![v.len()], v)
                }
                other => return Err(Error::unsupported(format!("Constant {other}"))),
            };
            r.set_const_t(n, t);
        }
        "ConstantOfShape" => {
            let shape: Vec<usize> = c(0, "shape")?
                .to_i64()?
                .iter()
                .map(|&d| d.max(0) as usize)
                .collect();
            checked_numel(&shape, "ConstantOfShape")?;
            let (v, dt) = match at.tensor("value")? {
                Some(t) => {
                    let dt = dtype_of(t.data_type, "ConstantOfShape value")?;
                    let v = decode(t, r.dir)?;
                    let x = if dt.is_float() {
                        v.to_f32()?.first().copied().unwrap_or(0.0) as f64
                    } else {
                        v.to_i64().first().copied().unwrap_or(0) as f64
                    };
                    (x, dt)
                }
                None => (0.0, DType::F32),
            };
            r.set_const_t(n, ConstTensor::splat(shape, v, dt));
        }
        "Identity" | "Dropout" | "QuantizeLinear" => {
            // A float weight fake-quantized by Q -> DQ is still that weight.
            let x = c(0, "input")?;
            r.set_const(n, x);
        }
        "DequantizeLinear" => {
            let x = quant::dequantize(r, n)?;
            r.set_const(n, x);
        }
        "Cast" => {
            let to = dtype_of(at.int("to", 1)? as i32, "Cast")?;
            let x = cast(&c(0, "input")?, to)?;
            r.set_const(n, x);
        }
        "Reshape" => {
            let x = c(0, "data")?;
            let target = c(1, "shape")?.to_i64()?;
            let s = resolve_reshape(&x.shape, &target, at.int("allowzero", 0)? == 1)?;
            r.set_const(n, x.reshaped(s));
        }
        "Flatten" => {
            let x = c(0, "input")?;
            let axis = at.int("axis", 1)?;
            let rank = x.shape.len() as i64;
            let a = if axis < 0 { axis + rank } else { axis };
            if a < 0 || a > rank {
                return Err(Error::input(format!(
                    "Flatten axis {axis} is out of range for rank {rank}"
                )));
            }
            let a = a as usize;
            let s = vec![x.shape[..a].iter().product(), x.shape[a..].iter().product()];
            r.set_const(n, x.reshaped(s));
        }
        "Unsqueeze" | "Squeeze" => {
            let x = c(0, "input")?;
            let axes = match at.ints("axes")? {
                Some(a) => Some(a),
                None => r.ints_input(n, 1, "axes")?,
            };
            let s = super::movement::squeeze_shape(
                &x.shape,
                axes.as_deref(),
                n.op_type == "Unsqueeze",
            )?;
            r.set_const(n, x.reshaped(s));
        }
        "Transpose" => {
            let x = c(0, "input")?;
            let perm = match at.ints("perm")? {
                Some(p) => super::movement::permutation(&p, x.shape.len(), 0)?,
                None => (0..x.shape.len()).rev().collect::<Vec<_>>(),
            };
            let t = x.transposed(&perm)?;
            r.set_const(n, t);
        }
        "Shape" => {
            let x = c(0, "input")?;
            let dims: Vec<i64> = x.shape.iter().map(|&d| d as i64).collect();
            let dims = super::movement::shape_range(&at, dims)?;
            r.set_const_t(n, ConstTensor::i64(vec![dims.len()], dims));
        }
        "Size" => {
            let x = c(0, "input")?;
            r.set_const_t(n, ConstTensor::i64(vec![], vec![x.numel() as i64]));
        }
        "Gather" => {
            let t = gather(&c(0, "data")?, &c(1, "indices")?, at.int("axis", 0)?)?;
            r.set_const_t(n, t);
        }
        "ScatterND" => {
            if at.string("reduction", "none")? != "none" {
                return Err(Error::unsupported("ScatterND with a reduction"));
            }
            let t = scatter_nd(&c(0, "data")?, &c(1, "indices")?, &c(2, "updates")?)?;
            r.set_const_t(n, t);
        }
        "GatherElements" => {
            let t = gather_elements(&c(0, "data")?, &c(1, "indices")?, at.int("axis", 0)?)?;
            r.set_const_t(n, t);
        }
        "Concat" => {
            let parts: Vec<Const> = (0..n.input.len())
                .filter(|&i| !n.input[i].is_empty())
                .map(|i| c(i, "input"))
                .collect::<Result<_>>()?;
            let t = concat(&parts, at.int("axis", 0)?)?;
            r.set_const_t(n, t);
        }
        "Slice" => {
            let t = slice(r, n, &c(0, "data")?)?;
            r.set_const_t(n, t);
        }
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Mod" | "Equal" | "Less"
        | "LessOrEqual" | "Greater" | "GreaterOrEqual" | "And" | "Or" | "Xor"
            if n.input.len() == 2 =>
        {
            let t = binary(&n.op_type, &c(0, "left operand")?, &c(1, "right operand")?)?;
            r.set_const_t(n, t);
        }
        "Neg" | "Abs" | "Not" | "Sqrt" | "Exp" | "Log" | "Reciprocal" | "Floor" | "Ceil"
        | "Round" | "Sign" | "Sigmoid" | "Tanh" | "Relu" | "Sin" | "Cos" => {
            let t = unary(&n.op_type, &c(0, "input")?)?;
            r.set_const_t(n, t);
        }
        "Where" => {
            let t = select(&c(0, "condition")?, &c(1, "X")?, &c(2, "Y")?)?;
            r.set_const_t(n, t);
        }
        "Expand" => {
            let t = expand(&c(0, "input")?, &c(1, "shape")?.to_i64()?)?;
            r.set_const_t(n, t);
        }
        "Range" => {
            let t = range(&c(0, "start")?, &c(1, "limit")?, &c(2, "delta")?)?;
            r.set_const_t(n, t);
        }
        op => {
            return Err(Error::unsupported(super::never_read(op).unwrap_or_else(
                || format!("{op} on constants only is not folded"),
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(shape: Vec<usize>, v: Vec<i64>) -> Const {
        Const::stored("k", ConstTensor::i64(shape, v))
    }

    #[test]
    fn integer_division_truncates_toward_zero_as_onnx() {
        let t = binary("Div", &k(vec![2], vec![-7, 7]), &k(vec![], vec![2])).unwrap();
        assert_eq!(t.to_i64(), vec![-3, 3]);
    }

    #[test]
    fn comparisons_broadcast_and_give_booleans() {
        let t = binary(
            "Equal",
            &k(vec![2, 1], vec![1, 2]),
            &k(vec![3], vec![1, 2, 2]),
        )
        .unwrap();
        assert_eq!(t.shape, vec![2, 3]);
        assert_eq!(t.to_i64(), vec![1, 0, 0, 0, 1, 1]);
    }

    #[test]
    fn where_then_expand_builds_the_exporters_shape_idiom() {
        // Expand(x, Where(Equal(s, -1), ones, s)) with s = [-1, 4].
        let s = k(vec![2], vec![-1, 4]);
        let eq = Const::stored("e", binary("Equal", &s, &k(vec![], vec![-1])).unwrap());
        let target = select(&eq, &k(vec![], vec![1]), &s).unwrap();
        assert_eq!(target.to_i64(), vec![1, 4]);
        let x = k(vec![3, 1], vec![1, 2, 3]);
        let t = expand(&x, &target.to_i64()).unwrap();
        assert_eq!(t.shape, vec![3, 4]);
        assert_eq!(t.to_i64()[4..8], [2, 2, 2, 2]);
    }

    #[test]
    fn ranges_count_like_numpy_arange() {
        let t = range(
            &k(vec![], vec![10]),
            &k(vec![], vec![0]),
            &k(vec![], vec![-3]),
        )
        .unwrap();
        assert_eq!(t.to_i64(), vec![10, 7, 4, 1]);
    }

    #[test]
    fn concat_of_matrices_interleaves_rows() {
        let a = k(vec![2, 1], vec![1, 2]);
        let b = k(vec![2, 2], vec![3, 4, 5, 6]);
        let t = concat(&[a, b], 1).unwrap();
        assert_eq!(t.to_i64(), vec![1, 3, 4, 2, 5, 6]);
    }
}
