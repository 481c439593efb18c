//! Weight ops: Conv (1-D and 2-D), ConvTranspose, Gemm, and MatMul with a
//! constant operand (a dense layer, over any leading axes) or of two
//! activations (attention).
//!
//! A transposed convolution enters the network as what it equals: zeros
//! inserted between the input's positions and padding (an element map),
//! then an ordinary stride-1 convolution whose weight is the stored one with
//! input and output channels swapped and the kernel flipped. The weight is
//! still keyed, and masked, in its stored layout.

use candle_onnx::onnx::NodeProto;

use super::super::attrs::Attrs;
use super::super::consts::Const;
use super::super::reader::Reader;
use super::pool::{as_2d, spatial, window_of};
use crate::error::{Error, Result};
use crate::graph::op::{Norm, Window};
use crate::graph::tensor::ConstTensor;
use crate::graph::ValueId;

/// A constant bias, if the node has one.
fn bias(r: &Reader, n: &NodeProto, i: usize) -> Result<Option<(String, ConstTensor)>> {
    match r.konst(n, i) {
        None if r.input_act(n, i).is_some() => Err(Error::unsupported("bias computed at run time")),
        None => Ok(None),
        Some(c) => Ok(Some((c.stored_name.clone(), c.materialize()?))),
    }
}

/// A conv weight of a `dims`-D conv, lifted to `[O, I, kh, kw]`.
fn kernel_of(w: &Const, dims: usize, what: &str) -> Result<(Vec<usize>, [usize; 2])> {
    let s = &w.shape;
    let k = match (dims, s.len()) {
        (1, 3) => [1, s[2]],
        (2, 4) => [s[2], s[3]],
        _ => {
            return Err(Error::unsupported(format!(
                "{what} with weight {s:?} on a {dims}-D input (only 1-D and 2-D)"
            )))
        }
    };
    if k.contains(&0) {
        return Err(Error::input(format!(
            "{what} weight {s:?} has a zero-sized kernel"
        )));
    }
    Ok((vec![s[0], s[1], k[0], k[1]], k))
}

pub fn conv(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    r.require_channels_first(x, "Conv")?;
    let s = r.shape(x);
    let hw = spatial(&s, "Conv")?;
    let dims = s.len() - 1;
    let w = r.need_const(n, 1, "weight")?;
    let (canon, k) = kernel_of(&w, dims, "Conv")?;
    let window = window_of(n, dims, hw, k)?;
    let groups = Attrs::of(n).int_in("group", 1, 1..=i64::MAX)? as usize;
    let bias = bias(r, n, 2)?;
    let v = as_2d(r, label, x, |r, l, x| {
        r.b.conv_stored(
            l,
            x,
            w.stored_weight(),
            canon,
            bias.as_ref().map(|(a, b)| (a.as_str(), b.clone())),
            window,
            groups,
        )
    })?;
    r.output(n, v);
    Ok(())
}

/// Begin and end padding of one axis of a transposed convolution.
#[allow(clippy::too_many_arguments)]
fn transposed_pads(
    at: &Attrs,
    a: usize,
    dims: usize,
    input: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    out_pad: usize,
) -> Result<(isize, isize)> {
    let axis = a + dims - 2;
    let full = (stride * (input - 1) + out_pad + (k - 1) * dilation + 1) as isize;
    let auto = at.choice(
        "auto_pad",
        &["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", ""],
    )?;
    let target = match at.ints("output_shape")? {
        Some(o) if o.len() == dims => Some(o[axis] as isize),
        Some(o) => return Err(Error::input(format!("bad output_shape {o:?}"))),
        None if auto.starts_with("SAME") => Some((input * stride) as isize),
        None => None,
    };
    if let Some(out) = target {
        let total = full - out;
        let (half, rest) = (total / 2, total - total / 2);
        return Ok(if auto == "SAME_UPPER" {
            (half, rest)
        } else {
            (rest, half)
        });
    }
    if auto == "VALID" {
        return Ok((0, 0));
    }
    match at.ints("pads")? {
        None => Ok((0, 0)),
        Some(p) if p.len() == 2 * dims => Ok((p[axis] as isize, p[axis + dims] as isize)),
        Some(p) => Err(Error::input(format!("bad pads {p:?}"))),
    }
}

pub fn conv_transpose(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    r.require_channels_first(x, "ConvTranspose")?;
    let s = r.shape(x);
    let hw = spatial(&s, "ConvTranspose")?;
    let dims = s.len() - 1;
    let at = Attrs::of(n);
    let w = r.need_const(n, 1, "weight")?;
    let (c, k) = kernel_of(&w, dims, "ConvTranspose")?;
    let [cin, og, kh, kw] = [c[0], c[1], c[2], c[3]];
    let groups = at.int_in("group", 1, 1..=i64::MAX)? as usize;
    if cin != s[0] || cin % groups != 0 {
        return Err(Error::input(format!(
            "ConvTranspose weight {:?} does not take {} input channels in {groups} groups",
            w.shape, s[0]
        )));
    }
    let lift = |name: &str, default: usize| -> Result<[usize; 2]> {
        match at.ints(name)? {
            None => Ok([default; 2]),
            Some(v) if v.len() == dims && v.iter().all(|&d| d >= 0) => Ok(if dims == 1 {
                [if default == 0 { 0 } else { 1 }, v[0] as usize]
            } else {
                [v[0] as usize, v[1] as usize]
            }),
            Some(v) => Err(Error::input(format!("bad {name} {v:?}"))),
        }
    };
    let stride = lift("strides", 1)?;
    let dilation = lift("dilations", 1)?;
    let out_pad = lift("output_padding", 0)?;
    if stride.contains(&0) || dilation.contains(&0) {
        return Err(Error::input("ConvTranspose stride or dilation 0"));
    }
    let mut begin = [0isize; 2];
    let mut end = [0isize; 2];
    for a in 0..2 {
        let (pb, pe) = if dims == 1 && a == 0 {
            (0, 0)
        } else {
            transposed_pads(
                &at,
                a,
                dims,
                hw[a],
                k[a],
                stride[a],
                dilation[a],
                out_pad[a],
            )?
        };
        let span = ((k[a] - 1) * dilation[a]) as isize;
        begin[a] = span - pb;
        end[a] = span - pe + out_pad[a] as isize;
    }
    // Canonical [O, I/g, kh, kw]: channels swapped per group, kernel flipped.
    let ig = cin / groups;
    let cout = og * groups;
    let canon = vec![cout, ig, kh, kw];
    let view = w.remapped(canon.clone(), |e| {
        let kx = e % kw;
        let ky = (e / kw) % kh;
        let ii = (e / (kw * kh)) % ig;
        let o = e / (kw * kh * ig);
        let (g, oo) = (o / og, o % og);
        (((g * ig + ii) * og + oo) * kh + (kh - 1 - ky)) * kw + (kw - 1 - kx)
    })?;
    let bias = bias(r, n, 2)?;
    let window = Window {
        stride: [1, 1],
        pads: [0; 4],
        dilation,
    };
    let v = as_2d(r, label, x, |r, l, x| {
        let xs = r.shape(x);
        let (map, shape) = crate::graph::index_map::dilate_pad(&xs, stride, begin, end)?;
        let z = r.b.gather(&format!("{l}/dilate"), &[x], map, shape)?;
        r.b.conv_stored(
            l,
            z,
            view.stored_weight(),
            canon,
            bias.as_ref().map(|(a, b)| (a.as_str(), b.clone())),
            window,
            groups,
        )
    })?;
    r.output(n, v);
    Ok(())
}

/// A dense layer `x W^T (+ b)` with canonical `[out, in]` weight `w`
/// (`out_in`) or its transpose.
fn dense(
    r: &mut Reader,
    label: &str,
    x: ValueId,
    w: Const,
    out_in: bool,
    bias: Option<(String, ConstTensor)>,
) -> Result<ValueId> {
    let w = match w.shape.len() {
        2 => w,
        d if d > 2 && w.shape[..d - 2].iter().all(|&s| s == 1) => {
            let s = w.shape[d - 2..].to_vec();
            w.reshaped(s)
        }
        _ => {
            return Err(Error::unsupported(format!(
                "a dense weight of shape {:?} (batched weights)",
                w.shape
            )))
        }
    };
    let view = if out_in { w } else { w.transposed(&[1, 0])? };
    if r.batch_of(x)
        .is_some_and(|b| b + 1 == r.onnx_shape(x).len())
    {
        return Err(Error::unsupported("a dense layer over the batch axis"));
    }
    r.b.dense_stored(
        label,
        x,
        view.stored_weight(),
        view.shape.clone(),
        bias.as_ref().map(|(a, b)| (a.as_str(), b.clone())),
    )
}

pub fn gemm(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let at = Attrs::of(n);
    let x = r.need_act(n, 0)?;
    if at.int("transA", 0)? != 0 {
        return Err(Error::unsupported("Gemm with transA=1 on activations"));
    }
    let (alpha, beta) = (at.float("alpha", 1.0)?, at.float("beta", 1.0)?);
    let w = r.need_const(n, 1, "weight")?;
    let mut b = bias(r, n, 2)?;
    if let Some((name, t)) = &mut b {
        if beta != 1.0 || t.shape.len() > 1 {
            let v: Vec<f32> = t.to_f32()?.iter().map(|&v| v * beta).collect();
            *t = ConstTensor::f32(vec![v.len()], v);
            *name = format!("{label}/bias");
        }
    }
    let trans_b = at.int("transB", 0)? != 0;
    let v = if alpha == 1.0 {
        dense(r, label, x, w, trans_b, b)?
    } else {
        let y = dense(r, &format!("{label}/product"), x, w, trans_b, None)?;
        let p = format!("{label}/alpha");
        r.b.add_param(&p, ConstTensor::f32(vec![], vec![alpha]));
        let mut y = r.b.norm(&format!("{label}/scaled"), y, Norm::MulConst(p))?;
        if let Some((name, t)) = b {
            r.b.add_param(&name, t);
            y = r.b.norm(label, y, Norm::AddConst(name))?;
        }
        y
    };
    r.output(n, v);
    Ok(())
}

pub fn matmul(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    if n.input.len() != 2 {
        return Err(Error::input(format!(
            "MatMul needs 2 inputs, has {}",
            n.input.len()
        )));
    }
    match (r.input_act(n, 0), r.input_act(n, 1)) {
        (Some(a), Some(b)) => {
            // The batch axis must be among the broadcast (leading) axes of
            // both operands, not a row or column of a matrix.
            for x in [a, b] {
                if r.batch_from_end(x).is_some_and(|e| e <= 2) {
                    return Err(Error::unsupported(
                        "MatMul whose batch axis is a matrix axis",
                    ));
                }
            }
            let v = r.b.matmul(label, a, b)?;
            let batch = r.broadcast_batch(&[a, b], r.shape(v).len())?;
            r.output_with(n, 0, v, batch);
        }
        (Some(x), None) => {
            let w = r.need_const(n, 1, "weight")?;
            let v = dense(r, label, x, w, false, None)?;
            r.output(n, v);
        }
        _ => return Err(Error::unsupported("MatMul with the constant on the left")),
    }
    Ok(())
}
