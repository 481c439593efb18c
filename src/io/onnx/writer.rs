//! [`Network`] -> ONNX (opset 13): `maskforge zoo export`.
//!
//! Weights are written in canonical layout (Conv `[O, I/g, kh, kw]`, Gemm with
//! `transB = 1`), under their own names, so the exported file's initializer
//! names equal the mask-file keys.

use candle_onnx::onnx::{
    attribute_proto::AttributeType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use super::tensor::{encode_f32, encode_i64};
use crate::error::{Error, Result};
use crate::graph::op::{Activation, Norm, Op, PoolKind};
use crate::graph::{Network, Node};

/// An `ints` attribute.
pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// An `int` attribute.
pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

/// A float tensor `name` of shape `[N, per_sample...]`, the batch `N`
/// symbolic.
pub fn value_info(name: &str, per_sample: &[usize]) -> ValueInfoProto {
    use tensor_shape_proto::{dimension::Value, Dimension};
    let mut dim = vec![Dimension {
        value: Some(Value::DimParam("N".into())),
        ..Default::default()
    }];
    dim.extend(per_sample.iter().map(|&d| Dimension {
        value: Some(Value::DimValue(d as i64)),
        ..Default::default()
    }));
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A float tensor's value info with a fixed shape (no batch dimension).
pub fn tensor_value_info(name: &str, shape: &[usize]) -> ValueInfoProto {
    use tensor_shape_proto::{dimension::Value, Dimension};
    let dim = shape
        .iter()
        .map(|&d| Dimension {
            value: Some(Value::DimValue(d as i64)),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

struct Out {
    nodes: Vec<NodeProto>,
    inits: Vec<candle_onnx::onnx::TensorProto>,
}

impl Out {
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: Vec<String>,
        output: &str,
        attrs: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            op_type: op.into(),
            name: name.into(),
            input: inputs,
            output: vec![output.into()],
            attribute: attrs,
            ..Default::default()
        });
    }

    fn param(&mut self, net: &Network, name: &str, canonical: Option<usize>) -> Result<String> {
        let t = net
            .params
            .get(name)
            .ok_or_else(|| Error::internal(format!("parameter '{name}' missing")))?;
        let (shape, values) = match canonical {
            Some(li) => (net.layers[li].shape.clone(), net.canonical_weights(li)?),
            None => (t.shape.clone(), t.to_f32()?),
        };
        self.inits.push(encode_f32(name, &shape, &values));
        Ok(name.to_string())
    }
}

/// The ONNX model of `net`, weights included.
pub fn to_proto(net: &Network) -> Result<ModelProto> {
    let mut out = Out {
        nodes: Vec::new(),
        inits: Vec::new(),
    };
    let layer_of = net.layer_of_node();
    for (i, node) in net.nodes.iter().enumerate() {
        emit(net, node, layer_of[i], &mut out)?;
    }
    let graph = GraphProto {
        name: net.name.clone(),
        node: out.nodes,
        initializer: out.inits,
        input: net
            .inputs
            .iter()
            .map(|&v| value_info(&net.values[v].name, &net.values[v].shape))
            .collect(),
        output: net
            .outputs
            .iter()
            .map(|&v| value_info(&net.values[v].name, &net.values[v].shape))
            .collect(),
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: 8,
        producer_name: "maskforge".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(graph),
        ..Default::default()
    })
}

fn emit(net: &Network, node: &Node, layer: Option<usize>, out: &mut Out) -> Result<()> {
    let ins: Vec<String> = node
        .inputs
        .iter()
        .map(|&v| net.values[v].name.clone())
        .collect();
    let y = net.values[node.output].name.clone();
    let name = node.name.as_str();
    let rank = net.values[node.output].shape.len();
    match &node.op {
        Op::Binary(_)
        | Op::Where
        | Op::MatMul
        | Op::Mix(_)
        | Op::Gather(_)
        | Op::Norm(Norm::Const { .. } | Norm::Prelu(_)) => {
            return Err(Error::unsupported(format!(
                "exporting {} nodes to ONNX (only the zoo's op set is written)",
                node.op.kind()
            )))
        }
        Op::Conv { conv, weight, bias } => {
            let w = out.param(net, weight, layer)?;
            let mut inputs = vec![ins[0].clone(), w];
            if let Some(b) = bias {
                inputs.push(out.param(net, b, None)?);
            }
            let win = conv.window;
            let attrs = vec![
                ints(
                    "kernel_shape",
                    &[conv.kernel[0] as i64, conv.kernel[1] as i64],
                ),
                ints("strides", &win.stride.map(|x| x as i64)),
                ints("pads", &win.pads.map(|x| x as i64)),
                ints("dilations", &win.dilation.map(|x| x as i64)),
                int("group", conv.groups as i64),
            ];
            out.node("Conv", name, inputs, &y, attrs);
        }
        Op::Dense { weight, bias, .. } => {
            let w = out.param(net, weight, layer)?;
            let mut inputs = vec![ins[0].clone(), w];
            if let Some(b) = bias {
                inputs.push(out.param(net, b, None)?);
            }
            out.node("Gemm", name, inputs, &y, vec![int("transB", 1)]);
        }
        Op::Norm(Norm::BatchNorm {
            scale,
            bias,
            mean,
            var,
            eps,
        }) => {
            let mut inputs = vec![ins[0].clone()];
            for p in [scale, bias, mean, var] {
                inputs.push(out.param(net, p, None)?);
            }
            out.node(
                "BatchNormalization",
                name,
                inputs,
                &y,
                vec![float("epsilon", *eps)],
            );
        }
        Op::Norm(Norm::Lrn {
            size,
            alpha,
            beta,
            bias,
        }) => out.node(
            "LRN",
            name,
            ins,
            &y,
            vec![
                int("size", *size as i64),
                float("alpha", *alpha),
                float("beta", *beta),
                float("bias", *bias),
            ],
        ),
        Op::Norm(Norm::MulConst(p)) | Op::Norm(Norm::AddConst(p)) => {
            let c = out.param(net, p, None)?;
            let op = if matches!(node.op, Op::Norm(Norm::MulConst(_))) {
                "Mul"
            } else {
                "Add"
            };
            out.node(op, name, vec![ins[0].clone(), c], &y, vec![]);
        }
        Op::Activation(a) => {
            let (op, attrs) = match a {
                Activation::Relu => ("Relu", vec![]),
                Activation::LeakyRelu(al) => ("LeakyRelu", vec![float("alpha", *al)]),
                Activation::Sigmoid => ("Sigmoid", vec![]),
                Activation::Tanh => ("Tanh", vec![]),
                Activation::Elu(al) => ("Elu", vec![float("alpha", *al)]),
                Activation::Softplus => ("Softplus", vec![]),
                Activation::HardSigmoid { alpha, beta } => (
                    "HardSigmoid",
                    vec![float("alpha", *alpha), float("beta", *beta)],
                ),
                Activation::HardSwish => ("HardSwish", vec![]),
                other => {
                    return Err(Error::input(format!(
                        "cannot export activation {other:?} to ONNX opset 13"
                    )))
                }
            };
            out.node(op, name, ins, &y, attrs);
        }
        Op::Pool(p) => {
            let op = if p.kind == PoolKind::Max {
                "MaxPool"
            } else {
                "AveragePool"
            };
            let attrs = vec![
                ints("kernel_shape", &p.kernel.map(|x| x as i64)),
                ints("strides", &p.window.stride.map(|x| x as i64)),
                ints("pads", &p.window.pads.map(|x| x as i64)),
                int("ceil_mode", p.ceil as i64),
            ];
            out.node(op, name, ins, &y, attrs);
        }
        Op::GlobalPool(k) => {
            // ReduceMean/ReduceMax over the spatial axes rather than
            // GlobalAveragePool: same result, and candle-onnx evaluates it.
            let op = if *k == PoolKind::Max {
                "ReduceMax"
            } else {
                "ReduceMean"
            };
            let axes: Vec<i64> = (2..=net.values[node.inputs[0]].shape.len() as i64).collect();
            out.node(
                op,
                name,
                ins,
                &y,
                vec![ints("axes", &axes), int("keepdims", 1)],
            );
        }
        Op::Reshape if rank == 1 => out.node("Flatten", name, ins, &y, vec![int("axis", 1)]),
        Op::Reshape => {
            let mut target = vec![-1i64];
            target.extend(net.values[node.output].shape.iter().map(|&d| d as i64));
            let sname = format!("{name}/shape");
            out.inits.push(encode_i64(&sname, &target));
            out.node("Reshape", name, vec![ins[0].clone(), sname], &y, vec![]);
        }
        Op::Transpose(p) => {
            let mut perm = vec![0i64];
            perm.extend(p.iter().map(|&a| a as i64 + 1));
            out.node("Transpose", name, ins, &y, vec![ints("perm", &perm)]);
        }
        Op::Add => {
            let op = if ins.len() == 2 { "Add" } else { "Sum" };
            out.node(op, name, ins, &y, vec![]);
        }
        Op::Concat(axis) => out.node("Concat", name, ins, &y, vec![int("axis", *axis as i64 + 1)]),
        Op::Identity => out.node("Identity", name, ins, &y, vec![]),
        Op::Softmax(axis) => out.node(
            "Softmax",
            name,
            ins,
            &y,
            vec![int("axis", *axis as i64 + 1)],
        ),
        Op::LogSoftmax(axis) => out.node(
            "LogSoftmax",
            name,
            ins,
            &y,
            vec![int("axis", *axis as i64 + 1)],
        ),
    }
    Ok(())
}

/// Serialise a model to bytes.
pub fn encode(m: &ModelProto) -> Vec<u8> {
    use prost::Message;
    m.encode_to_vec()
}
