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
