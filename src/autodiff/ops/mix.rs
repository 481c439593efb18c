//! Reductions and normalisations over some per-sample axes
//! ([`Mix`](crate::graph::op::Mix)):
//! Reduce{Mean, Sum, Max, Min, L2, SumSquare, LogSumExp} with and without
//! kept axes, and `(x - mean) / sqrt(var + eps) * scale + bias` (Layer,
//! Instance and Group normalisation; biased variance, as ONNX).
//!
//! The axes index the mix's `view` of the per-sample shape (Group
//! normalisation views `[C, H, W]` as `[G, C/G, H, W]`), so the batch
//! `[N, ...shape]` is reshaped to `[N, ...view]` first and the axes shift
//! by one for the batch axis. The normalisation's scale and bias have no
//! batch axis and broadcast against the input's per-sample shape (a
//! per-channel scale is stored as `[C, 1, 1]`).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use maskforge::autodiff::ops::mix::reduce;
//! use maskforge::graph::op::Reduce;
//! let x = Tensor::new(&[[[1.0f64, 2.0], [3.0, 4.0]]], &Device::Cpu).unwrap(); // [1, 2, 2]
//! // ReduceSumSquare over axis 1 of the per-sample [2, 2], keepdims.
//! let y = reduce(&x, Reduce::SumSquare, &[2, 2], &[1], true).unwrap();
//! assert_eq!(y.to_vec3::<f64>().unwrap(), [[[5.0], [25.0]]]);
//! ```

use candle_core::Tensor;

use crate::error::Result;
use crate::graph::op::Reduce;

/// `x` (`[N, ...]`) viewed as `[N, ...view]`.
fn viewed(x: &Tensor, view: &[usize]) -> Result<Tensor> {
    let mut s = vec![x.dim(0)?];
    s.extend(view);
    Ok(x.reshape(s)?)
}

/// The batched axes of per-sample `axes`.
fn batched(axes: &[usize]) -> Vec<usize> {
    axes.iter().map(|a| a + 1).collect()
}

/// Sum over `dims` kept as size 1 (nothing to sum over: `x` itself).
fn sum(x: &Tensor, dims: &[usize]) -> Result<Tensor> {
    Ok(if dims.is_empty() {
        x.clone()
    } else {
        x.sum_keepdim(dims.to_vec())?
    })
}

/// `f` over `axes` of `x` (`[N, ...]`) viewed as `[N, ...view]`; the
/// reduced axes kept as size 1 with `keepdims`, dropped otherwise.
pub fn reduce(
    x: &Tensor,
    f: Reduce,
    view: &[usize],
    axes: &[usize],
    keepdims: bool,
) -> Result<Tensor> {
    let v = viewed(x, view)?;
    let dims = batched(axes);
    let extreme = |max: bool| -> Result<Tensor> {
        let mut t = v.clone();
        for &d in &dims {
            t = if max {
                t.max_keepdim(d)?
            } else {
                t.min_keepdim(d)?
            };
        }
        Ok(t)
    };
    let y = match f {
        Reduce::Sum => sum(&v, &dims)?,
        Reduce::Mean => {
            let count: usize = axes.iter().map(|&a| view[a]).product();
            (sum(&v, &dims)? / count as f64)?
        }
        Reduce::Max => extreme(true)?,
        Reduce::Min => extreme(false)?,
        Reduce::SumSquare => sum(&v.sqr()?, &dims)?,
        Reduce::L2 => {
            // sqrt(s) with s = 0 read as 1 under the root: the gradient of
            // an all-zero slice is 0 (as PyTorch's norm), not 0 * inf.
            let s = sum(&v.sqr()?, &dims)?;
            let zero = s.eq(0.0)?;
            let root = zero.where_cond(&s.ones_like()?, &s)?.sqrt()?;
            zero.where_cond(&s.zeros_like()?, &root)?
        }
        Reduce::LogSumExp => {
            // m + ln(sum(e^(x - m))) with m the (constant) maximum: no
            // overflow; an infinite maximum is replaced by 0 so that
            // x - m is not inf - inf.
            let m = extreme(true)?.detach();
            let finite = m.abs()?.lt(f64::INFINITY)?;
            let m = finite.where_cond(&m, &m.zeros_like()?)?;
            (sum(&v.broadcast_sub(&m)?.exp()?, &dims)?.log()? + m)?
        }
    };
    let mut out = vec![x.dim(0)?];
    for (a, &d) in view.iter().enumerate() {
        if !axes.contains(&a) {
            out.push(d);
        } else if keepdims {
            out.push(1);
        }
    }
    Ok(y.reshape(out)?)
}

/// `(x - mean) / sqrt(var + eps)` over `axes` of `x` viewed as
/// `[N, ...view]` (biased variance), back in `x`'s shape, then times
/// `scale` and plus `bias` (per-sample shapes broadcast against `x`'s).
pub fn normalize(
    x: &Tensor,
    view: &[usize],
    axes: &[usize],
    eps: f64,
    scale: Option<&Tensor>,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let v = viewed(x, view)?;
    let dims = batched(axes);
    let count: usize = axes.iter().map(|&a| view[a]).product();
    let mean = (sum(&v, &dims)? / count as f64)?;
    let c = v.broadcast_sub(&mean)?;
    let var = (sum(&c.sqr()?, &dims)? / count as f64)?;
    let y = c.broadcast_div(&(var + eps)?.sqrt()?)?.reshape(x.dims())?;
    let y = match scale {
        Some(s) => y.broadcast_mul(s)?,
        None => y,
    };
    Ok(match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}
