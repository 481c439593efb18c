//! Elementwise ops: functions of one activation, of an activation and a
//! constant, and of several activations (with numpy broadcasting).
//!
//! A product of two activations (SiLU written out, a squeeze-and-excite
//! gate, GLU, attention masks) is an [`Op::Binary`](crate::graph::Op): both
//! operands reach the output, as CONVENTIONS.md defines.

use candle_onnx::onnx::NodeProto;

use super::super::attrs::Attrs;
use super::super::consts::Const;
use super::super::reader::Reader;
use crate::error::{Error, Result};
use crate::graph::op::{Activation, Binary, Norm};
use crate::graph::ValueId;

/// The [`Activation`] an ONNX unary op computes, `None` if it is not one.
pub fn activation_of(n: &NodeProto) -> Result<Option<Activation>> {
    let at = Attrs::of(n);
    Ok(Some(match n.op_type.as_str() {
        "Relu" => Activation::Relu,
        "LeakyRelu" => Activation::LeakyRelu(at.float("alpha", 0.01)?),
        "Sigmoid" => Activation::Sigmoid,
        "Tanh" => Activation::Tanh,
        "Gelu" => match at.choice("approximate", &["none", "tanh"])?.as_str() {
            "none" => Activation::Gelu,
            _ => return Err(Error::unsupported("Gelu with the tanh approximation")),
        },
        "Elu" => Activation::Elu(at.float("alpha", 1.0)?),
        "HardSigmoid" => Activation::HardSigmoid {
            alpha: at.float("alpha", 0.2)?,
            beta: at.float("beta", 0.5)?,
        },
        "HardSwish" => Activation::HardSwish,
        "Softplus" => Activation::Softplus,
        "Erf" => Activation::Erf,
        "Sqrt" => Activation::Sqrt,
        "Exp" => Activation::Exp,
        "Log" => Activation::Log,
        "Neg" => Activation::Neg,
        "Abs" => Activation::Abs,
        "Reciprocal" => Activation::Reciprocal,
        "Sign" => Activation::Sign,
        "Mish" => Activation::Mish,
        "Selu" => Activation::Selu {
            alpha: at.float("alpha", 1.673_263_2)?,
            gamma: at.float("gamma", 1.050_701)?,
        },
        "Celu" => Activation::Celu(at.float("alpha", 1.0)?),
        "Softsign" => Activation::Softsign,
        "Sin" => Activation::Sin,
        "Cos" => Activation::Cos,
        "Floor" => Activation::Floor,
        "Ceil" => Activation::Ceil,
        "Round" => Activation::Round,
        _ => return Ok(None),
    }))
}

pub fn unary(r: &mut Reader, n: &NodeProto, label: &str, a: Activation) -> Result<()> {
    let x = r.need_act(n, 0)?;
    let v = r.b.activation(label, x, a);
    r.output(n, v);
    Ok(())
}

/// Identity, Dropout (inference) and Cast of an activation.
pub fn identity(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    let v = r.b.identity(label, x);
    r.output(n, v);
    Ok(())
}

pub fn clip(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let at = Attrs::of(n);
    let bound = |i: usize| -> Result<Option<f32>> {
        match r.konst(n, i) {
            Some(c) => Ok(c.materialize()?.to_f32()?.first().copied()),
            None if r.input_act(n, i).is_some() => {
                Err(Error::unsupported("Clip with bounds computed at run time"))
            }
            None => Ok(None),
        }
    };
    let lo = match bound(1)? {
        Some(v) => v,
        None => at.float("min", f32::MIN)?,
    };
    let hi = match bound(2)? {
        Some(v) => v,
        None => at.float("max", f32::MAX)?,
    };
    unary(r, n, label, Activation::Clip(lo, hi))
}

pub fn prelu(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let x = r.need_act(n, 0)?;
    let slope = r.need_const(n, 1, "slope")?;
    // The slope broadcasts numpy-style onto the input (PyTorch exports a
    // per-channel slope as [C, 1, 1]).
    let p = r.const_param(&slope, label, 1, x)?;
    let v = r.b.norm(label, x, Norm::Prelu(p))?;
    r.output(n, v);
    Ok(())
}

fn binary_kind(op: &str) -> Option<Binary> {
    Some(match op {
        "Add" | "Sum" => Binary::Add,
        "Sub" => Binary::Sub,
        "Mul" => Binary::Mul,
        "Div" => Binary::Div,
        "Pow" => Binary::Pow,
        "Max" => Binary::Max,
        "Min" => Binary::Min,
        _ => return None,
    })
}

/// Add/Sub/Mul/Div/Pow/Max/Min/Sum of activations and constants.
pub fn arithmetic(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    let f = binary_kind(&n.op_type)
        .ok_or_else(|| Error::internal(format!("{} is not arithmetic", n.op_type)))?;
    let ins: Vec<usize> = (0..n.input.len())
        .filter(|&i| !n.input[i].is_empty())
        .collect();
    if ins.len() != 2 && !matches!(f, Binary::Add | Binary::Max | Binary::Min) {
        return Err(Error::input(format!(
            "{} needs 2 inputs, has {}",
            n.op_type,
            ins.len()
        )));
    }
    // Fold the operands left to right: activations join, constants apply.
    let mut acc: Option<ValueId> = None;
    let mut pending: Vec<(usize, Const)> = Vec::new();
    let last = ins.len() - 1;
    for (k, &i) in ins.iter().enumerate() {
        let name = if k == last {
            label.to_string()
        } else {
            format!("{label}/{k}")
        };
        match (acc, r.input_act(n, i)) {
            (None, Some(v)) => {
                acc = Some(v);
                for (j, c) in std::mem::take(&mut pending) {
                    let nm = format!("{label}/c{j}");
                    acc = Some(with_const(r, &nm, f, acc.unwrap(), &c, j, true)?);
                }
            }
            (Some(a), Some(v)) => {
                let out = crate::graph::builder::broadcast(&r.shape(a), &r.shape(v))?;
                r.broadcast_batch(&[a, v], out.len())?;
                acc = Some(if f == Binary::Add {
                    r.b.add(&name, &[a, v])?
                } else {
                    r.b.binary(&name, f, a, v)?
                });
            }
            (Some(a), None) => {
                let c = r.need_const(n, i, "operand")?;
                acc = Some(with_const(r, &name, f, a, &c, i, false)?);
            }
            (None, None) => pending.push((i, r.need_const(n, i, "operand")?)),
        }
    }
    let v = acc.ok_or_else(|| Error::internal("arithmetic without an activation"))?;
    // A lone operand (Sum of one input) still gets a node to carry the name.
    let v = if ins.len() == 1 {
        r.b.identity(label, v)
    } else {
        v
    };
    let acts: Vec<ValueId> = ins.iter().filter_map(|&i| r.input_act(n, i)).collect();
    let batch = r.broadcast_batch(&acts, r.shape(v).len())?;
    r.output_with(n, 0, v, batch);
    Ok(())
}

/// `f(x, c)`, or `f(c, x)` when the constant came first.
#[allow(clippy::too_many_arguments)]
fn with_const(
    r: &mut Reader,
    name: &str,
    f: Binary,
    x: ValueId,
    c: &Const,
    i: usize,
    const_first: bool,
) -> Result<ValueId> {
    let s = r.shape(x);
    let p = r.const_param(c, name, i, x)?;
    let grows = {
        let t = r.b.param(&p).map(|t| t.shape.clone()).unwrap_or_default();
        crate::graph::builder::broadcast(&s, &t)? != s
    };
    // A constant that broadcasts the activation larger first expands it.
    let x = if grows {
        let t = r.b.param(&p).map(|t| t.shape.clone()).unwrap_or_default();
        let out = crate::graph::builder::broadcast(&s, &t)?;
        let map = crate::graph::index_map::expand(&s, &out)?;
        r.b.gather(&format!("{name}/expand"), &[x], map, out)?
    } else {
        x
    };
    let norm = match (f, const_first) {
        (Binary::Add, _) => Norm::AddConst(p),
        (Binary::Mul, _) => Norm::MulConst(p),
        _ => Norm::Const {
            f,
            param: p,
            const_first,
        },
    };
    r.b.norm(name, x, norm)
}

/// `Where(cond, x, y)`: a constant condition picks elements (an element
/// map); a computed one joins all three operands.
pub fn where_(r: &mut Reader, n: &NodeProto, label: &str) -> Result<()> {
    use crate::graph::index_map::{select, Branch};
    if let Some(cond) = r.konst(n, 0).cloned() {
        let cond_t = cond.materialize()?;
        let cv: Vec<bool> = cond_t.to_f32()?.iter().map(|&v| v != 0.0).collect();
        let mut acts = Vec::new();
        let mut shapes = Vec::new();
        let mut values = Vec::new();
        for i in [1, 2] {
            match r.input_act(n, i) {
                Some(v) => {
                    shapes.push(r.shape(v));
                    values.push(None);
                    acts.push(v);
                }
                None => {
                    let c = r.need_const(n, i, "branch")?;
                    shapes.push(c.shape.clone());
                    values.push(Some(c.materialize()?.to_f32()?));
                }
            }
        }
        // Activations are per sample already; constants lose the batch axis.
        let strip = |i: usize, s: &[usize]| -> Result<Vec<usize>> {
            match i {
                0 => r.strip_batch(s, acts[0]),
                _ if values[i - 1].is_some() => r.strip_batch(s, acts[0]),
                _ => Ok(s.to_vec()),
            }
        };
        let cs = strip(0, &cond.shape)?;
        let (xs, ys) = (strip(1, &shapes[0])?, strip(2, &shapes[1])?);
        let out =
            crate::graph::builder::broadcast(&crate::graph::builder::broadcast(&xs, &ys)?, &cs)?;
        let x = match &values[0] {
            Some(v) => Branch::Const(&xs, v),
            None => Branch::Act(&xs),
        };
        let y = match &values[1] {
            Some(v) => Branch::Const(&ys, v),
            None => Branch::Act(&ys),
        };
        let map = select(&cs, &cv, x, y, &out)?;
        let batch = r.broadcast_batch(&acts, out.len())?;
        let v = r.b.gather(label, &acts, map, out)?;
        r.output_with(n, 0, v, batch);
        return Ok(());
    }
    let (c, x, y) = (r.need_act(n, 0)?, r.input_act(n, 1), r.input_act(n, 2));
    match (x, y) {
        (Some(x), Some(y)) => {
            let v = r.b.where_(label, c, x, y)?;
            let batch = r.broadcast_batch(&[c, x, y], r.shape(v).len())?;
            r.output_with(n, 0, v, batch);
            Ok(())
        }
        _ => Err(Error::unsupported(
            "Where with a computed condition and a constant branch",
        )),
    }
}
