//! CPU ops with explicit backward passes, used by the executor where they
//! beat candle's stock ops: convolution, max pooling and the masked weight.

pub mod conv;
pub mod masked;
pub mod maxpool;
