//! Normalisations and reductions: BatchNorm and LRN (per channel), and the
//! axis-mixing ops that become a [`Mix`] or a softmax: Layer, Group and
//! Instance normalisation, `Reduce*`, global pools.

use candle_onnx::onnx::NodeProto;

use super::super::attrs::Attrs;
use super::super::reader::{onnx_axis, Reader};
use crate::error::{Error, Result};
use crate::graph::op::{Mix, MixKind, Norm, PoolKind, Reduce};
use crate::graph::tensor::ConstTensor;

pub fn batch_norm(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    r.require_channels_first(x, "BatchNormalization")?;
    let what = ["scale", "bias", "mean", "variance"];
    let mut ps = Vec::new();
    for (i, w) in what.iter().enumerate() {
        ps.push((
            n.input.get(i + 1).cloned().unwrap_or_default(),
            r.need_const(n, i + 1, w)?.materialize()?,
        ));
    }
    let mut it = ps.iter().map(|(nm, t)| (nm.as_str(), t.clone()));
    let p = [
        it.next().unwrap(),
        it.next().unwrap(),
        it.next().unwrap(),
        it.next().unwrap(),
    ];
    let eps = Attrs::of(n).float("epsilon", 1e-5)?;
    let v = r.b.batch_norm(label, x, p, eps)?;
    r.output(n, v);
    Ok(())
}

pub fn lrn(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    r.require_channels_first(x, "LRN")?;
    let at = Attrs::of(n);
    let norm = Norm::Lrn {
        size: at.int_in("size", 1, 1..=1 << 16)? as usize,
        alpha: at.float("alpha", 1e-4)?,
        beta: at.float("beta", 0.75)?,
        bias: at.float("bias", 1.0)?,
    };
    let v = r.b.norm(label, x, norm)?;
    r.output(n, v);
    Ok(())
}

pub fn softmax(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    let s = r.shape(x);
    let log = n.op_type == "LogSoftmax";
    // Before opset 13 the default axis is 1 and the op works on the input
    // flattened to 2-D from that axis on.
    let legacy = r.opset < 13;
    if legacy {
        r.require_channels_first(x, &n.op_type)?;
    }
    let default = if legacy { 1 } else { -1 };
    let axis = r.axis(x, Attrs::of(n).int("axis", default)?, &n.op_type)?;
    let v = if legacy && axis + 1 < s.len() {
        let mut flat: Vec<usize> = s[..axis].to_vec();
        flat.push(s[axis..].iter().product());
        let f = r.b.reshape(&format!("{label}/flatten"), x, flat)?;
        let sm = r.b.softmax(&format!("{label}/softmax"), f, axis, log)?;
        r.b.reshape(label, sm, s.clone())?
    } else {
        r.b.softmax(label, x, axis, log)?
    };
    r.output(n, v);
    Ok(())
}

/// An optional per-channel parameter of an `[C, ...]` activation, stored
/// as `[C, 1, ...]` so it broadcasts onto the input.
fn channel_param(
    r: &mut Reader,
    n: &NodeProto,
    i: usize,
    what: &str,
    c: usize,
    rank: usize,
    expand_groups: usize,
) -> Result<Option<String>> {
    let Some(k) = r.konst(n, i).cloned() else {
        if r.input_act(n, i).is_some() {
            return Err(Error::unsupported(format!(
                "{} whose {what} is computed",
                n.op_type
            )));
        }
        return Ok(None);
    };
    let mut v = k.materialize()?.to_f32()?;
    if v.len() == expand_groups && expand_groups != c {
        // GroupNormalization-18: one value per group.
        let per = c / expand_groups;
        v = (0..c).map(|ch| v[ch / per]).collect();
    }
    if v.len() != c {
        return Err(Error::input(format!(
            "{}: {what} has {} values for {c} channels",
            n.op_type,
            v.len()
        )));
    }
    let mut shape = vec![c];
    shape.extend(std::iter::repeat_n(1, rank - 1));
    let name = format!("{}/{what}", super::super::attrs::label(n));
    r.b.add_param(&name, ConstTensor::f32(shape, v));
    Ok(Some(name))
}

pub fn layer_norm(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    let at = Attrs::of(n);
    let full = r.onnx_shape(x).len();
    let first = onnx_axis(at.int("axis", -1)?, full, "LayerNormalization")?;
    let axes: Vec<usize> = (first..full)
        .map(|a| r.axis(x, a as i64, "LayerNormalization"))
        .collect::<Result<_>>()?;
    if n.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err(Error::unsupported(
            "LayerNormalization with mean / inv_std_dev outputs",
        ));
    }
    let mut params = [None, None];
    for (k, i) in [1usize, 2].into_iter().enumerate() {
        if let Some(c) = r.konst(n, i).cloned() {
            params[k] = Some(r.const_param(&c, label, i, x)?);
        } else if r.input_act(n, i).is_some() {
            return Err(Error::unsupported(
                "LayerNormalization with computed scale or bias",
            ));
        }
    }
    let [scale, bias] = params;
    let mix = Mix {
        kind: MixKind::Normalize {
            eps: at.float("epsilon", 1e-5)?,
            scale,
            bias,
        },
        view: None,
        axes,
    };
    let v = r.b.mix(label, x, mix)?;
    r.output(n, v);
    Ok(())
}

/// Group (`view` `[G, C/G, ...]`) and Instance (one group per channel)
/// normalisation.
pub fn group_norm(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    r.require_channels_first(x, &n.op_type)?;
    let s = r.shape(x);
    if s.len() < 2 {
        return Err(Error::input(format!(
            "{} on {s:?}: no spatial axes",
            n.op_type
        )));
    }
    let at = Attrs::of(n);
    let c = s[0];
    let (groups, view, axes) = if n.op_type == "InstanceNormalization" {
        (c, None, (1..s.len()).collect())
    } else {
        let g = at.int_in("num_groups", 1, 1..=c as i64)? as usize;
        if !c.is_multiple_of(g) {
            return Err(Error::input(format!(
                "{g} groups do not divide {c} channels"
            )));
        }
        let mut view = vec![g, c / g];
        view.extend(&s[1..]);
        (g, Some(view), (1..=s.len()).collect())
    };
    let scale = channel_param(r, n, 1, "scale", c, s.len(), groups)?;
    let bias = channel_param(r, n, 2, "bias", c, s.len(), groups)?;
    let mix = Mix {
        kind: MixKind::Normalize {
            eps: at.float("epsilon", 1e-5)?,
            scale,
            bias,
        },
        view,
        axes,
    };
    let v = r.b.mix(label, x, mix)?;
    r.output(n, v);
    Ok(())
}

pub fn global_pool(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    r.require_channels_first(x, &n.op_type)?;
    let kind = if n.op_type == "GlobalMaxPool" {
        PoolKind::Max
    } else {
        PoolKind::Avg
    };
    let v = r.b.global_pool(label, x, kind)?;
    r.output(n, v);
    Ok(())
}

/// `Reduce*` over any per-sample axes; a mean or max over all spatial axes
/// with `keepdims` is a global pool.
pub fn reduce(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    let s = r.shape(x);
    let at = Attrs::of(n);
    let f = match n.op_type.as_str() {
        "ReduceMean" => Reduce::Mean,
        "ReduceSum" => Reduce::Sum,
        "ReduceMax" => Reduce::Max,
        "ReduceMin" => Reduce::Min,
        "ReduceL2" => Reduce::L2,
        "ReduceSumSquare" => Reduce::SumSquare,
        "ReduceLogSumExp" => Reduce::LogSumExp,
        other => return Err(Error::unsupported(other.to_string())),
    };
    let axes = match at.ints("axes")? {
        Some(a) => Some(a),
        None => r.ints_input(n, 1, "axes")?,
    };
    let keepdims = at.int("keepdims", 1)? != 0;
    let axes = match axes.filter(|a| !a.is_empty()) {
        Some(a) => a,
        None if at.int("noop_with_empty_axes", 0)? != 0 => {
            let v = r.b.identity(label, x);
            r.output(n, v);
            return Ok(());
        }
        None => {
            return Err(Error::unsupported(format!(
                "{} over every axis, the batch included",
                n.op_type
            )))
        }
    };
    let full = r.onnx_shape(x).len();
    let mut onnx_axes: Vec<usize> = axes
        .iter()
        .map(|&a| onnx_axis(a, full, &n.op_type))
        .collect::<Result<_>>()?;
    onnx_axes.sort_unstable();
    onnx_axes.dedup();
    let axes: Vec<usize> = onnx_axes
        .iter()
        .map(|&a| r.axis(x, a as i64, &n.op_type))
        .collect::<Result<_>>()?;
    // Without keepdims the reduced axes vanish, moving a later batch axis.
    let batch = r.batch_of(x).map(|b| {
        if keepdims {
            b
        } else {
            b - onnx_axes.iter().filter(|&&a| a < b).count()
        }
    });
    let spatial: Vec<usize> = (1..s.len()).collect();
    if keepdims
        && batch == Some(0)
        && s.len() >= 2
        && axes == spatial
        && matches!(f, Reduce::Mean | Reduce::Max)
    {
        let kind = if f == Reduce::Max {
            PoolKind::Max
        } else {
            PoolKind::Avg
        };
        let v = r.b.global_pool(label, x, kind)?;
        r.output(n, v);
        return Ok(());
    }
    let mix = Mix {
        kind: MixKind::Reduce { f, keepdims },
        view: None,
        axes,
    };
    let v = r.b.mix(label, x, mix)?;
    r.output_with(n, 0, v, batch);
    Ok(())
}
