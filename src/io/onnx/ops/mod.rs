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

/// Ops that enter the network translated on activations or folded on
/// constants.
const KNOWN: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "Identity",
    "Dropout",
    "Cast",
    "Clip",
    "PRelu",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Sum",
    "Where",
    "BatchNormalization",
    "LRN",
    "Softmax",
    "LogSoftmax",
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSumExp",
    "MaxPool",
    "AveragePool",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "Expand",
    "Tile",
    "Pad",
    "Resize",
    "Upsample",
    "DepthToSpace",
    "SpaceToDepth",
    "Shape",
    "Size",
    "QuantizeLinear",
    "DequantizeLinear",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Gelu",
    "Elu",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "Erf",
    "Sqrt",
    "Exp",
    "Log",
    "Neg",
    "Abs",
    "Reciprocal",
    "Sign",
    "Mish",
    "Selu",
    "Celu",
    "Softsign",
    "Sin",
    "Cos",
    "Floor",
    "Ceil",
    "Round",
    "Constant",
    "ConstantOfShape",
    "Mod",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Not",
    "Range",
    "GatherElements",
    "ScatterND",
];

/// Why `op` can never be read, for ops maskforge does not translate at all;
/// `None` for ops it does (which may still fail on particular inputs). The
/// reader asks this of nodes downstream of an unreadable one too, so one
/// error lists every unsupported op of a model.
pub(super) fn never_read(op: &str) -> Option<String> {
    Some(match op {
        "If" | "Loop" | "Scan" => {
            format!("{op} has a subgraph; control flow is not supported")
        }
        "LSTM" | "GRU" | "RNN" => {
            format!("{op} is a recurrent layer with state; recurrent layers are not supported")
        }
        "QLinearConv" | "QLinearMatMul" | "ConvInteger" | "MatMulInteger"
        | "DynamicQuantizeLinear" => format!(
            "{op} is operator-level quantization; only QDQ models (Quantize/DequantizeLinear pairs) are read"
        ),
        _ if KNOWN.contains(&op) => return None,
        _ => format!("maskforge has no translation for {op}"),
    })
}

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
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceL2" | "ReduceSumSquare"
        | "ReduceLogSumExp" => normalize::reduce(r, n, &l),
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
        op => Err(Error::unsupported(never_read(op).unwrap_or_else(|| {
            format!("maskforge has no translation for {op}")
        }))),
    }
}
