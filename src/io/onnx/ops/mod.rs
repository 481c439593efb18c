//! ONNX ops, one file per family, each mapping op names onto the network's
//! op classes (tract's layout): [`elementwise`], [`linear`] (weight ops),
//! [`normalize`] (normalisations, reductions, softmax), [`movement`] (data
//! movement and element maps), [`pool`], [`quant`] (QDQ) and [`fold`]
//! (nodes on constants only).

pub mod elementwise;
pub mod fold;
pub mod linear;
pub mod movement;
pub mod normalize;
pub mod pool;
pub mod quant;

use candle_onnx::onnx::NodeProto;

use super::attrs::label;
use super::reader::Reader;
use crate::error::{Error, Result};

/// Translate a node that reads at least one activation.
pub(super) fn translate(r: &mut Reader, n: &NodeProto) -> Result<()> {
    let l = label(n);
    if let Some(a) = elementwise::activation_of(n)? {
        return elementwise::unary(r, n, &l, a);
    }
    match n.op_type.as_str() {
        "Conv" => linear::conv(r, n, &l),
        "ConvTranspose" => linear::conv_transpose(r, n, &l),
        "Gemm" => linear::gemm(r, n, &l),
        "MatMul" => linear::matmul(r, n, &l),
        "Identity" | "Dropout" | "Cast" => elementwise::identity(r, n, &l),
        "Clip" => elementwise::clip(r, n, &l),
        "PRelu" => elementwise::prelu(r, n, &l),
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" => {
            elementwise::arithmetic(r, n, &l)
        }
        "Where" => elementwise::where_(r, n, &l),
        "BatchNormalization" => normalize::batch_norm(r, n, &l),
        "LRN" => normalize::lrn(r, n, &l),
        "Softmax" | "LogSoftmax" => normalize::softmax(r, n, &l),
        "LayerNormalization" => normalize::layer_norm(r, n, &l),
        "GroupNormalization" | "InstanceNormalization" => normalize::group_norm(r, n, &l),
        "GlobalAveragePool" | "GlobalMaxPool" => normalize::global_pool(r, n, &l),
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceL2"
        | "ReduceSumSquare" | "ReduceLogSumExp" => normalize::reduce(r, n, &l),
        "MaxPool" | "AveragePool" => pool::pool(r, n, &l),
        "Reshape" => movement::reshape(r, n, &l),
        "Flatten" => movement::flatten(r, n, &l),
        "Squeeze" | "Unsqueeze" => movement::squeeze(r, n, &l),
        "Transpose" => movement::transpose(r, n, &l),
        "Concat" => movement::concat(r, n, &l),
        "Split" => movement::split(r, n, &l),
        "Slice" => movement::slice(r, n, &l),
        "Gather" => movement::gather(r, n, &l),
        "Expand" => movement::expand(r, n, &l),
        "Tile" => movement::tile(r, n, &l),
        "Pad" => movement::pad(r, n, &l),
        "Resize" | "Upsample" => movement::resize(r, n, &l),
        "DepthToSpace" | "SpaceToDepth" => movement::depth_space(r, n, &l),
        "Shape" | "Size" => movement::shape_of(r, n),
        "QuantizeLinear" | "DequantizeLinear" => quant::activation(r, n, &l),
        op @ ("If" | "Loop" | "Scan") => Err(Error::unsupported(format!(
            "{op} has a subgraph; control flow is not supported"
        ))),
        op @ ("LSTM" | "GRU" | "RNN") => Err(Error::unsupported(format!(
            "{op} is a recurrent layer with state; recurrent layers are not supported"
        ))),
        op @ ("QLinearConv" | "QLinearMatMul" | "ConvInteger" | "MatMulInteger"
        | "DynamicQuantizeLinear") => Err(Error::unsupported(format!(
            "{op} is operator-level quantization; only QDQ models (Quantize/DequantizeLinear pairs) are read"
        ))),
        op => Err(Error::unsupported(format!("maskforge has no translation for {op}"))),
    }
}
