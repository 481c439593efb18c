//! numpy `matmul` of two batched activations (attention's `Q K^T` and
//! `softmax(.) V`), per sample: the batch axis first, then the per-sample
//! shapes' own batch axes broadcast against each other, a 1-D left operand
//! a row vector and a 1-D right operand a column vector, their axis dropped
//! from the result.
//!
//! candle's `matmul` wants equal batch axes, so both operands are broadcast
//! to the common batch shape, made contiguous and folded into one batch
//! axis; candle differentiates every step (the broadcast's backward sums
//! the gradient back over the broadcast axes).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use maskforge::autodiff::ops::matmul::matmul;
//! // Per sample: [2, 1, 1, 3] x [4, 3, 5] -> [2, 4, 1, 5].
//! let a = Tensor::ones((7, 2, 1, 1, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
//! let b = Tensor::ones((7, 4, 3, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
//! let y = matmul(&a, &b).unwrap();
//! assert_eq!(y.dims(), &[7, 2, 4, 1, 5]);
//! assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0], 3.0);
//! ```

use candle_core::Tensor;

use crate::error::{Error, Result};

/// `a @ b` of batched operands `[N, ...a]` and `[N, ...b]`.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let n = a.dim(0)?;
    let (sa, sb) = (&a.dims()[1..], &b.dims()[1..]);
    let err = || Error::internal(format!("MatMul: shapes {sa:?} and {sb:?} do not multiply"));
    if sa.is_empty() || sb.is_empty() || b.dim(0)? != n {
        return Err(err());
    }
    // 1-D operands as matrices: [k] -> [1, k] on the left, [k, 1] on the right.
    let (a2, b2) = crate::graph::builder::as_matrices(sa, sb);
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, p) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(err());
    }
    let batch = crate::graph::builder::broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2])
        .map_err(|_| err())?;
    let folded: usize = batch.iter().product();
    let operand = |t: &Tensor, s2: &[usize], rows: usize, cols: usize| -> Result<Tensor> {
        // [N, ...own batch, rows, cols] with the batch axes left-padded by 1s
        // to the common rank, broadcast, then one batch axis of N * folded.
        let mut own = vec![n];
        own.extend(std::iter::repeat_n(1, batch.len() + 2 - s2.len()));
        own.extend(s2);
        let mut full = vec![n];
        full.extend(&batch);
        full.extend([rows, cols]);
        let t = t.reshape(own)?;
        let t = if t.dims() == full.as_slice() {
            t
        } else {
            t.broadcast_as(full)?
        };
        Ok(t.contiguous()?.reshape((n * folded, rows, cols))?)
    };
    let y = operand(a, &a2, m, k)?.matmul(&operand(b, &b2, k, p)?)?;
    let mut out = vec![n];
    out.extend(&batch);
    if sa.len() > 1 {
        out.push(m);
    }
    if sb.len() > 1 {
        out.push(p);
    }
    Ok(y.reshape(out)?)
}
