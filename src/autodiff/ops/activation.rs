//! Elementwise functions of one activation ([`Activation`]) as candle ops,
//! with ONNX's definitions, on any device and float dtype.
//!
//! Every function is composed from candle ops that have a backward pass, so
//! the reverse pass can differentiate any of them node by node. Piecewise
//! functions select with `elu` or `where_cond` rather than adding masked
//! branches, so an unselected branch that overflows (`exp` of a large
//! input) cannot turn a zero gradient into `0 * inf = NaN`. Floor, Ceil,
//! Round and Sign have zero gradient: candle records nothing for them.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use maskforge::autodiff::ops::activation::activation;
//! use maskforge::graph::op::Activation;
//! let x = Tensor::new(&[-2.5f64, -0.5, 0.5, 1.5, 2.5], &Device::Cpu).unwrap();
//! // ONNX Round: halves go to the even neighbour.
//! let y = activation(&x, Activation::Round).unwrap();
//! assert_eq!(y.to_vec1::<f64>().unwrap(), [-2.0, -0.0, 0.0, 2.0, 2.0]);
//! ```

use candle_core::Tensor;

use crate::error::Result;
use crate::graph::op::Activation;

/// `a(x)`, elementwise.
pub fn activation(x: &Tensor, a: Activation) -> Result<Tensor> {
    Ok(match a {
        Activation::Relu => x.relu()?,
        Activation::LeakyRelu(s) => (x.relu()? - (x.neg()?.relu()? * s as f64)?)?,
        Activation::Sigmoid => candle_nn::ops::sigmoid(x)?,
        Activation::Tanh => x.tanh()?,
        Activation::Gelu => x.gelu_erf()?,
        Activation::GeluTanh => x.gelu()?,
        Activation::Silu => x.silu()?,
        Activation::Elu(al) => x.elu(al as f64)?,
        Activation::HardSigmoid { alpha, beta } => {
            ((x * alpha as f64)? + beta as f64)?.clamp(0f32, 1f32)?
        }
        Activation::HardSwish => (x * ((x + 3.0)?.clamp(0f32, 6f32)? / 6.0)?)?,
        Activation::Clip(lo, hi) => x.clamp(lo, hi)?,
        Activation::Softplus => (x.exp()? + 1.0)?.log()?,
        Activation::Erf => x.erf()?,
        Activation::Sqrt => x.sqrt()?,
        Activation::Exp => x.exp()?,
        Activation::Log => x.log()?,
        Activation::Neg => x.neg()?,
        Activation::Abs => x.abs()?,
        Activation::Reciprocal => x.recip()?,
        Activation::Sign => x.sign()?,
        // x * tanh(ln(1 + e^x)); the softplus in its stable form, so that a
        // large input gives x rather than inf / inf in the gradient.
        Activation::Mish => (x * softplus_stable(x)?.tanh()?)?,
        // gamma * (x > 0 ? x : alpha (e^x - 1)) is gamma * elu(x, alpha).
        Activation::Selu { alpha, gamma } => (x.elu(alpha as f64)? * gamma as f64)?,
        // max(0, x) + min(0, alpha (e^(x/alpha) - 1)) is alpha * elu(x/alpha, 1):
        // x for x > 0, alpha (e^(x/alpha) - 1) <= 0 otherwise.
        Activation::Celu(alpha) => {
            let a = alpha as f64;
            ((x / a)?.elu(1.0)? * a)?
        }
        Activation::Softsign => (x / (x.abs()? + 1.0)?)?,
        Activation::Sin => x.sin()?,
        Activation::Cos => x.cos()?,
        Activation::Floor => x.floor()?,
        Activation::Ceil => x.ceil()?,
        Activation::Round => round_half_even(x)?,
    })
}

/// `ln(1 + e^x)` as `max(x, 0) + ln(1 + e^-|x|)`: no overflow.
fn softplus_stable(x: &Tensor) -> Result<Tensor> {
    Ok((x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?)
}

/// Round to the nearest integer, halves to the even one (ONNX Round, as
/// numpy; candle's `round` takes halves away from zero). Zero gradient.
pub fn round_half_even(x: &Tensor) -> Result<Tensor> {
    let x = x.detach();
    let f = x.floor()?;
    let frac = (&x - &f)?;
    // `f` odd: f - 2 floor(f / 2) == 1.
    let odd = (&f - ((&f / 2.0)?.floor()? * 2.0)?)?.eq(1.0)?;
    let up = frac.gt(0.5)?;
    let half = frac.eq(0.5)?;
    let dt = x.dtype();
    let step = (up.to_dtype(dt)? + (half.to_dtype(dt)? * odd.to_dtype(dt)?)?)?;
    // The sign of zero as numpy's (-0.3 -> -0.0): |r| with the sign of x.
    let r = (f + step)?.abs()?;
    Ok(x.lt(0.0)?.where_cond(&r.neg()?, &r)?)
}
