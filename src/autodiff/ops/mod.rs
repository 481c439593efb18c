//! The ops the executor composes beyond candle's stock ones: CPU ops with
//! explicit backward passes where they beat candle's (convolution, max
//! pooling, the masked weight), and the forward semantics of ONNX's
//! elementwise, matrix, axis-mixing and data-movement ops as candle
//! compositions that candle can differentiate (activation functions,
//! broadcasting binary ops and Where, numpy matmul, reductions and
//! normalisations, element maps).

pub mod activation;
pub mod binary;
pub mod conv;
pub mod gather;
pub mod gemm;
pub mod masked;
pub mod matmul;
pub mod maxpool;
pub mod mix;
mod winograd;

/// `len` zeros, written by all threads: a large output's first touch
/// (page faults and all) would otherwise be one thread's serial work while
/// the other waits.
pub(crate) fn zeros<T: candle_core::WithDType>(len: usize) -> Vec<T> {
    use rayon::prelude::*;
    let mut v = Vec::with_capacity(len);
    (0..len)
        .into_par_iter()
        .map(|_| T::zero())
        .collect_into_vec(&mut v);
    v
}
