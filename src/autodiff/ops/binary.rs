//! Elementwise functions of two or three batched activations ([`Binary`],
//! `Where`), with numpy broadcasting of their per-sample shapes and ONNX's
//! definitions.
//!
//! Tensors here carry the batch axis first, so two per-sample shapes of
//! different ranks are aligned after it ([`align`]): `[N, W]` against
//! `[N, C, H, W]` is `[N, 1, 1, W]`, never `N` against `H`. Every function
//! is composed from candle ops with a backward pass.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use maskforge::autodiff::ops::binary::binary;
//! use maskforge::graph::op::Binary;
//! let a = Tensor::new(&[[-2.0f64, 0.0], [-2.0, 4.0]], &Device::Cpu).unwrap(); // [N=2, 2]
//! let b = Tensor::new(&[[3.0f64], [0.5]], &Device::Cpu).unwrap(); // [N=2, 1]
//! // ONNX Pow: a negative base to an integer power is real, to a
//! // fractional one NaN.
//! let y = binary(Binary::Pow, &a, &b).unwrap().to_vec2::<f64>().unwrap();
//! assert!((y[0][0] + 8.0).abs() < 1e-12 && y[0][1] == 0.0);
//! assert!(y[1][0].is_nan() && (y[1][1] - 2.0).abs() < 1e-12);
//! ```

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::graph::op::Binary;

/// `t` (`[N, ...s]`) with unit axes inserted after the batch axis up to
/// `rank` axes in all.
pub fn align(t: &Tensor, rank: usize) -> Result<Tensor> {
    let d = t.dims();
    if d.len() >= rank {
        return Ok(t.clone());
    }
    let mut s = vec![d[0]];
    s.extend(std::iter::repeat_n(1, rank - d.len()));
    s.extend(&d[1..]);
    Ok(t.reshape(s)?)
}

/// The numpy broadcast of equal-rank shapes.
fn common_shape(ts: &[&Tensor]) -> Result<Vec<usize>> {
    let mut out = ts[0].dims().to_vec();
    for t in &ts[1..] {
        for (o, &d) in out.iter_mut().zip(t.dims()) {
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(Error::internal(format!(
                    "shapes {:?} and {:?} do not broadcast",
                    ts[0].dims(),
                    t.dims()
                )));
            }
        }
    }
    Ok(out)
}

/// `f(a, b)` of two batched activations.
pub fn binary(f: Binary, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let rank = a.rank().max(b.rank());
    let (a, b) = (align(a, rank)?, align(b, rank)?);
    apply(f, &a, &b)
}

/// `f(a, b)` of two tensors that broadcast as they are (a batched
/// activation and a constant without batch axis, or two aligned ones).
pub fn apply(f: Binary, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(match f {
        Binary::Add => a.broadcast_add(b)?,
        Binary::Sub => a.broadcast_sub(b)?,
        Binary::Mul => a.broadcast_mul(b)?,
        Binary::Div => a.broadcast_div(b)?,
        Binary::Max => a.broadcast_maximum(b)?,
        Binary::Min => a.broadcast_minimum(b)?,
        Binary::Pow => pow(a, b)?,
    })
}

/// `a ^ b` elementwise, broadcasting, as ONNX (and numpy) define it for
/// floats: a negative base to an integer power is real (`(-2)^3 = -8`), to
/// any other power NaN; `0^b` is 0, 1 and inf for positive, zero and
/// negative `b`. (candle's `pow` is `exp(b ln a)`: NaN for every negative
/// base.) For a constant scalar power, candle's `powf` is the same function
/// (and exact for integer powers).
///
/// The gradient with respect to `a` is `b a^(b-1)` and with respect to `b`
/// `a^b ln|a|`, except at `a == 0` exactly, where both are 0.
pub fn pow(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let shape = common_shape_any(a, b)?;
    let (a, b) = (a.broadcast_as(shape.clone())?, b.broadcast_as(shape)?);
    let zero = a.eq(0.0)?;
    // ln|a| with a = 0 read as 1, so no -inf enters the graph (its
    // gradient, 0 * inf, would be NaN even where unselected).
    let ones = a.ones_like()?;
    let mag = (&b * zero.where_cond(&ones, &a.abs()?)?.log()?)?.exp()?;
    // Sign of a negative base: +1 for an even power, -1 for an odd one,
    // NaN for a fractional one; +1 for a non-negative base.
    let bd = b.detach();
    let is_int = bd.eq(&bd.floor()?)?;
    let odd = (&bd - ((&bd / 2.0)?.floor()? * 2.0)?)?.eq(1.0)?;
    let nan = (&ones * f64::NAN)?;
    let neg_sign = is_int.where_cond(&odd.where_cond(&ones.neg()?, &ones)?, &nan)?;
    let sign = a.lt(0.0)?.where_cond(&neg_sign, &ones)?;
    // 0^b: 0 for b > 0, 1 for b = 0, inf for b < 0.
    let inf = (&ones * f64::INFINITY)?;
    let at_zero = bd
        .gt(0.0)?
        .where_cond(&ones.zeros_like()?, &bd.eq(0.0)?.where_cond(&ones, &inf)?)?;
    Ok(zero.where_cond(&at_zero, &(mag * sign)?)?)
}

/// The broadcast shape of two tensors of possibly different ranks,
/// right-aligned (candle's rule; callers have already aligned batch axes).
fn common_shape_any(a: &Tensor, b: &Tensor) -> Result<Vec<usize>> {
    Ok(a.shape()
        .broadcast_shape_binary_op(b.shape(), "pow")?
        .dims()
        .to_vec())
}

/// `where(cond, x, y)` of three batched activations: `x` where `cond` is
/// non-zero, `y` elsewhere, broadcasting. No gradient reaches `cond`.
pub fn where_(cond: &Tensor, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let rank = cond.rank().max(x.rank()).max(y.rank());
    let (c, x, y) = (align(cond, rank)?, align(x, rank)?, align(y, rank)?);
    let shape = common_shape(&[&c, &x, &y])?;
    let c = c.detach().broadcast_as(shape.clone())?.ne(0.0)?;
    let x = x.broadcast_as(shape.clone())?.contiguous()?;
    let y = y.broadcast_as(shape)?.contiguous()?;
    Ok(c.where_cond(&x, &y)?)
}

/// `g` (the gradient of a broadcast result, `[N, ...]`) summed back onto
/// an operand of batched shape `shape`: over the axes the operand was
/// broadcast along, and the axes it lacked.
pub fn reduce_to(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if g.dims() == shape {
        return Ok(g.clone());
    }
    let rank = g.rank();
    // The operand aligned after the batch axis, as `align` does.
    let mut aligned = vec![shape[0]];
    aligned.extend(std::iter::repeat_n(1, rank - shape.len()));
    aligned.extend(&shape[1..]);
    let axes: Vec<usize> = (0..rank)
        .filter(|&a| aligned[a] == 1 && g.dim(a).is_ok_and(|d| d != 1))
        .collect();
    let s = if axes.is_empty() {
        g.clone()
    } else {
        g.sum_keepdim(axes)?
    };
    Ok(s.reshape(shape)?)
}

/// The input gradients of `f(a, b)` for Add, Sub and Mul (where `need`ed),
/// by hand: the gated units (SiLU written out, squeeze-and-excite) are
/// activation-sized and everywhere in modern graphs. `None` for the other
/// functions (differentiated by candle).
pub fn backward(
    f: Binary,
    a: &Tensor,
    b: &Tensor,
    dy: &Tensor,
    need: [bool; 2],
) -> Result<Option<[Option<Tensor>; 2]>> {
    let rank = dy.rank();
    let grad =
        |on: bool, local: Option<&Tensor>, neg: bool, shape: &[usize]| -> Result<Option<Tensor>> {
            if !on {
                return Ok(None);
            }
            let g = match local {
                Some(t) => dy.broadcast_mul(&align(t, rank)?)?,
                None => dy.clone(),
            };
            let g = if neg { g.neg()? } else { g };
            Ok(Some(reduce_to(&g, shape)?))
        };
    Ok(Some(match f {
        Binary::Add => [
            grad(need[0], None, false, a.dims())?,
            grad(need[1], None, false, b.dims())?,
        ],
        Binary::Sub => [
            grad(need[0], None, false, a.dims())?,
            grad(need[1], None, true, b.dims())?,
        ],
        Binary::Mul => [
            grad(need[0], Some(b), false, a.dims())?,
            grad(need[1], Some(a), false, b.dims())?,
        ],
        _ => return Ok(None),
    }))
}
