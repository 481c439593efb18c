//! ONNX graph -> [`Network`]: the door through which ONNX enters.
//!
//! Constants (initializers, `Constant`, `ConstantOfShape`, folded shape
//! arithmetic) are tracked separately from activations; every node that
//! touches an activation becomes one typed network op. Ops we cannot
//! translate are all collected, so one error names every one of them.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_onnx::onnx::{type_proto, AttributeProto, GraphProto, NodeProto};

use super::consts::{arith, cast, resolve_reshape, Const};
use super::tensor::{decode, dtype_of};
use crate::error::{Error, Result};
use crate::graph::op::{Activation, Norm, Pool, PoolKind, Window};
use crate::graph::tensor::{ConstTensor, DType};
use crate::graph::{Network, NetworkBuilder, ValueId};

pub use crate::error::UnsupportedOp as Unsupported;

/// The most elements per sample an activation may have (2^30).
const MAX_ACTIVATION: usize = 1 << 30;

/// What a graph name refers to.
enum Slot {
    Act(ValueId),
    Const(Const),
    /// Output of an untranslatable node.
    Unknown,
}

struct Reader<'a> {
    /// Version of the default ONNX domain (some ops' defaults depend on it).
    opset: i64,
    b: NetworkBuilder,
    slots: HashMap<String, Slot>,
    unsupported: Vec<Unsupported>,
    dir: &'a Path,
}

/// Translate a decoded graph; `dir` is the model's folder (external data).
pub fn translate(
    name: &str,
    g: GraphProto,
    dir: &Path,
    opset: i64,
) -> Result<(Option<Network>, Vec<Unsupported>)> {
    let mut r = Reader {
        opset,
        b: NetworkBuilder::new(name),
        slots: HashMap::new(),
        unsupported: Vec::new(),
        dir,
    };
    let GraphProto {
        node,
        initializer,
        input,
        output,
        ..
    } = g;
    for t in initializer {
        let n = t.name.clone();
        let c = decode(t, dir)?;
        r.slots.insert(n.clone(), Slot::Const(Const::stored(&n, c)));
    }
    for vi in &input {
        if r.slots.contains_key(&vi.name) {
            continue;
        }
        let shape = input_shape(vi)?;
        let v = r.b.input(&vi.name, shape)?;
        r.slots.insert(vi.name.clone(), Slot::Act(v));
    }
    for n in topo_order(node)? {
        r.node(n)?;
    }
    let mut outputs = 0;
    for o in &output {
        match r.slots.get(&o.name) {
            Some(Slot::Act(v)) => {
                r.b.output(*v);
                outputs += 1;
            }
            Some(Slot::Unknown) => {}
            Some(Slot::Const(_)) => {}
            None => {
                return Err(Error::input(format!(
                    "graph output '{}' is produced by no node",
                    o.name
                )))
            }
        }
    }
    if !r.unsupported.is_empty() {
        return Ok((None, r.unsupported));
    }
    if outputs == 0 {
        return Err(Error::input("no graph output depends on the data input"));
    }
    Ok((Some(r.b.finish()?), Vec::new()))
}

fn input_shape(vi: &candle_onnx::onnx::ValueInfoProto) -> Result<Vec<usize>> {
    use candle_onnx::onnx::tensor_shape_proto::dimension::Value as D;
    let err = |m: &str| Error::input(format!("graph input '{}': {m}", vi.name));
    let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(err("not a tensor input"));
    };
    let shape = t.shape.as_ref().ok_or_else(|| err("has no shape"))?;
    if shape.dim.len() < 2 {
        return Err(err("needs a batch dimension and at least one more"));
    }
    let dims: Vec<usize> = shape.dim[1..]
        .iter()
        .map(|d| match &d.value {
            Some(D::DimValue(v)) if *v > 0 => Ok(*v as usize),
            _ => Err(err(
                "has a symbolic or unknown non-batch dimension; export it with a fixed input size",
            )),
        })
        .collect::<Result<_>>()?;
    if !checked_numel(&dims, "").is_ok_and(|k| k <= MAX_ACTIVATION) {
        return Err(err(&format!(
            "shape {dims:?} is implausibly large (more than {MAX_ACTIVATION} elements per sample)"
        )));
    }
    Ok(dims)
}

/// Nodes in dependency order; a cycle or a missing producer is an error.
fn topo_order(nodes: Vec<NodeProto>) -> Result<Vec<NodeProto>> {
    let producer: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let mut indeg = vec![0usize; nodes.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        let deps: HashSet<usize> = n
            .input
            .iter()
            .filter_map(|x| producer.get(x.as_str()).copied())
            .collect();
        indeg[i] = deps.len();
        for d in deps {
            users[d].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..nodes.len()).filter(|&i| indeg[i] == 0).rev().collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop() {
        order.push(i);
        for &u in users[i].iter().rev() {
            indeg[u] -= 1;
            if indeg[u] == 0 {
                ready.push(u);
            }
        }
    }
    if order.len() != nodes.len() {
        let stuck = (0..nodes.len()).find(|&i| indeg[i] > 0).unwrap();
        return Err(Error::input(format!(
            "the graph has a cycle through node '{}' ({})",
            nodes[stuck].name, nodes[stuck].op_type
        )));
    }
    let mut slots: Vec<Option<NodeProto>> = nodes.into_iter().map(Some).collect();
    Ok(order
        .into_iter()
        .map(|i| slots[i].take().unwrap())
        .collect())
}

fn attr<'n>(n: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

fn attr_i(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map(|a| a.i).unwrap_or(default)
}

fn attr_f(n: &NodeProto, name: &str, default: f32) -> f32 {
    attr(n, name).map(|a| a.f).unwrap_or(default)
}

fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

fn attr_s(n: &NodeProto, name: &str) -> String {
    attr(n, name)
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
        .unwrap_or_default()
}

fn node_label(n: &NodeProto) -> String {
    if n.name.is_empty() {
        n.output.first().cloned().unwrap_or_default()
    } else {
        n.name.clone()
    }
}

/// Per-sample axis of an ONNX axis on a tensor of per-sample rank `rank`.
fn sample_axis(axis: i64, rank: usize, what: &str) -> Result<usize> {
    let full = rank as i64 + 1;
    let a = if axis < 0 { axis + full } else { axis };
    if a <= 0 || a >= full {
        return Err(Error::input(format!(
            "{what}: axis {axis} is the batch axis or out of range"
        )));
    }
    Ok(a as usize - 1)
}

impl Reader<'_> {
    fn unsupported(&mut self, n: &NodeProto, why: impl Into<String>) {
        self.unsupported.push(Unsupported {
            op: n.op_type.clone(),
            node: node_label(n),
            detail: why.into(),
        });
        for o in &n.output {
            self.slots.insert(o.clone(), Slot::Unknown);
        }
    }

    fn set_const(&mut self, n: &NodeProto, c: Const) {
        self.slots.insert(n.output[0].clone(), Slot::Const(c));
    }

    fn set_const_t(&mut self, n: &NodeProto, t: ConstTensor) {
        let c = Const::stored(&n.output[0], t);
        self.set_const(n, c);
    }

    fn name_output(&mut self, n: &NodeProto, v: ValueId) {
        self.b.rename_last_output(&n.output[0]);
        self.slots.insert(n.output[0].clone(), Slot::Act(v));
    }

    fn get_const(&self, n: &NodeProto, i: usize) -> Option<&Const> {
        match n.input.get(i).map(|s| s.as_str()) {
            Some(s) if !s.is_empty() => match self.slots.get(s) {
                Some(Slot::Const(c)) => Some(c),
                _ => None,
            },
            _ => None,
        }
    }

    fn node(&mut self, n: NodeProto) -> Result<()> {
        if n.output.is_empty() {
            return Ok(());
        }
        // Inputs: activations, constants, or unknown (downstream of an unsupported op).
        let mut any_act = false;
        for name in n.input.iter().filter(|s| !s.is_empty()) {
            match self.slots.get(name) {
                Some(Slot::Act(_)) => any_act = true,
                Some(Slot::Const(_)) => {}
                Some(Slot::Unknown) => {
                    for o in &n.output {
                        self.slots.insert(o.clone(), Slot::Unknown);
                    }
                    return Ok(());
                }
                None => {
                    return Err(Error::input(format!(
                        "node '{}' ({}) reads '{name}', which is neither a graph input, an initializer nor a node output",
                        node_label(&n),
                        n.op_type
                    )))
                }
            }
        }
        if !n.domain.is_empty() && n.domain != "ai.onnx" {
            self.unsupported(&n, format!("custom domain '{}'", n.domain));
            return Ok(());
        }
        let res = if any_act {
            self.activation_node(&n)
        } else {
            self.fold(&n)
        };
        match res.and_then(|()| self.check_outputs(&n)) {
            Ok(()) => Ok(()),
            Err(Error::Unsupported { detail, .. }) => {
                self.unsupported(&n, detail);
                Ok(())
            }
            Err(e) => Err(e.context(format!("node '{}' ({})", node_label(&n), n.op_type))),
        }
    }

    /// Every activation a node produced must have a plausible size (huge
    /// pads or shapes in a file would otherwise send the analyses into
    /// endless loops or allocations).
    fn check_outputs(&self, n: &NodeProto) -> Result<()> {
        for o in &n.output {
            if let Some(Slot::Act(v)) = self.slots.get(o) {
                let shape = self.b.shape(*v);
                if checked_numel(shape, "output").is_ok_and(|k| k <= MAX_ACTIVATION) {
                    continue;
                }
                return Err(Error::input(format!(
                    "output '{o}' of shape {shape:?} is implausibly large (more than {MAX_ACTIVATION} elements per sample)"
                )));
            }
        }
        Ok(())
    }

    fn act(&self, name: &str) -> Option<ValueId> {
        match self.slots.get(name) {
            Some(Slot::Act(v)) => Some(*v),
            _ => None,
        }
    }

    /// The activation a single-input op reads (its first input).
    fn first_act(&self, n: &NodeProto) -> Result<ValueId> {
        n.input
            .first()
            .and_then(|i| self.act(i))
            .ok_or_else(|| Error::unsupported(format!("{} with a constant first input", n.op_type)))
    }

    /// Fold a node whose inputs are all constants.
    fn fold(&mut self, n: &NodeProto) -> Result<()> {
        let c = |i| self.get_const(n, i).cloned();
        let need =
            |i: usize| c(i).ok_or_else(|| Error::input(format!("input {i} must be a constant")));
        match n.op_type.as_str() {
            "Constant" => {
                let a = n
                    .attribute
                    .first()
                    .ok_or_else(|| Error::input("Constant without a value"))?;
                let t = match a.name.as_str() {
                    "value" => decode(a.t.clone().unwrap_or_default(), self.dir)?,
                    "value_float" => ConstTensor::f32(vec![], vec![a.f]),
                    "value_floats" => ConstTensor::f32(vec![a.floats.len()], a.floats.clone()),
                    "value_int" => ConstTensor::i64(vec![], vec![a.i]),
                    "value_ints" => ConstTensor::i64(vec![a.ints.len()], a.ints.clone()),
                    other => return Err(Error::unsupported(format!("Constant {other}"))),
                };
                self.set_const_t(n, t);
            }
            "ConstantOfShape" => {
                let shape: Vec<usize> = need(0)?
                    .to_i64()?
                    .iter()
                    .map(|&d| d.max(0) as usize)
                    .collect();
                checked_numel(&shape, "ConstantOfShape")?;
                let (v, dt) = match attr(n, "value").and_then(|a| a.t.clone()) {
                    Some(t) => {
                        let dt = dtype_of(t.data_type, "ConstantOfShape value")?;
                        let v = decode(t, self.dir)?;
                        let x = if dt.is_float() {
                            v.to_f32()?.first().copied().unwrap_or(0.0) as f64
                        } else {
                            v.to_i64().first().copied().unwrap_or(0) as f64
                        };
                        (x, dt)
                    }
                    None => (0.0, DType::F32),
                };
                self.set_const_t(n, ConstTensor::splat(shape, v, dt));
            }
            "Identity" | "Dropout" => {
                let x = need(0)?;
                self.set_const(n, x);
            }
            "Cast" => {
                let to = dtype_of(attr_i(n, "to", 1) as i32, "Cast")?;
                let x = cast(&need(0)?, to)?;
                self.set_const(n, x);
            }
            "Reshape" => {
                let x = need(0)?;
                let target = need(1)?.to_i64()?;
                let s = resolve_reshape(&x.shape, &target, attr_i(n, "allowzero", 0) == 1)?;
                self.set_const(n, x.reshaped(s));
            }
            "Flatten" => {
                let x = need(0)?;
                let axis = attr_i(n, "axis", 1);
                let r = x.shape.len() as i64;
                let a = if axis < 0 { axis + r } else { axis };
                if a < 0 || a > r {
                    return Err(Error::input(format!(
                        "Flatten axis {axis} is out of range for rank {r}"
                    )));
                }
                let a = a as usize;
                let s = vec![x.shape[..a].iter().product(), x.shape[a..].iter().product()];
                self.set_const(n, x.reshaped(s));
            }
            "Unsqueeze" | "Squeeze" => {
                let x = need(0)?;
                let axes = attr_ints(n, "axes").or_else(|| c(1).and_then(|a| a.to_i64().ok()));
                let s = squeeze_shape(&x.shape, axes.as_deref(), n.op_type == "Unsqueeze")?;
                self.set_const(n, x.reshaped(s));
            }
            "Transpose" => {
                let x = need(0)?;
                let perm = match attr_ints(n, "perm") {
                    Some(p) => permutation(&p, x.shape.len(), 0)?,
                    None => (0..x.shape.len()).rev().collect::<Vec<_>>(),
                };
                let t = x.transposed(&perm)?;
                self.set_const(n, t);
            }
            "Shape" => {
                let x = need(0)?;
                let dims: Vec<i64> = x.shape.iter().map(|&d| d as i64).collect();
                self.set_const_t(n, ConstTensor::i64(vec![dims.len()], dims));
            }
            "Gather" => self.fold_gather(n, need(0)?, need(1)?)?,
            "Concat" => {
                let parts: Vec<Const> = (0..n.input.len()).map(need).collect::<Result<_>>()?;
                if parts.iter().all(|p| p.shape.len() <= 1) {
                    let ints = parts.iter().all(|p| !p.stored.dtype().is_float());
                    let t = if ints {
                        let v: Vec<i64> = parts
                            .iter()
                            .map(|p| p.to_i64())
                            .collect::<Result<Vec<_>>>()?
                            .concat();
                        ConstTensor::i64(vec![v.len()], v)
                    } else {
                        let v: Vec<f32> = parts
                            .iter()
                            .map(|p| p.materialize().and_then(|m| m.to_f32()))
                            .collect::<Result<Vec<_>>>()?
                            .concat();
                        ConstTensor::f32(vec![v.len()], v)
                    };
                    self.set_const_t(n, t);
                } else {
                    return Err(Error::unsupported("Concat of multi-dimensional constants"));
                }
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let t = arith(&n.op_type, &need(0)?, &need(1)?)?;
                self.set_const_t(n, t);
            }
            "Slice" => self.fold_slice(n)?,
            op => {
                return Err(Error::unsupported(format!(
                    "{op} on constants only is not folded"
                )))
            }
        }
        Ok(())
    }

    fn fold_gather(&mut self, n: &NodeProto, data: Const, idx: Const) -> Result<()> {
        if data.shape.len() != 1 || attr_i(n, "axis", 0) != 0 {
            return Err(Error::unsupported("Gather on constants beyond 1-D"));
        }
        let d = data.to_i64()?;
        let ix = idx.to_i64()?;
        let v: Result<Vec<i64>> = ix
            .iter()
            .map(|&i| {
                let j = if i < 0 { i + d.len() as i64 } else { i };
                d.get(j as usize)
                    .copied()
                    .ok_or_else(|| Error::input(format!("Gather index {i} out of range")))
            })
            .collect();
        self.set_const_t(n, ConstTensor::i64(idx.shape.clone(), v?));
        Ok(())
    }

    fn fold_slice(&mut self, n: &NodeProto) -> Result<()> {
        let data = self
            .get_const(n, 0)
            .cloned()
            .ok_or_else(|| Error::input("Slice data must be constant"))?;
        if data.shape.len() != 1 {
            return Err(Error::unsupported("Slice on constants beyond 1-D"));
        }
        let (starts, ends, steps) = match attr_ints(n, "starts") {
            Some(s) => (s, attr_ints(n, "ends").unwrap_or_default(), vec![1]),
            None => {
                let g = |i| self.get_const(n, i).map(|c| c.to_i64()).transpose();
                (
                    g(1)?.unwrap_or_default(),
                    g(2)?.unwrap_or_default(),
                    g(4)?.unwrap_or_else(|| vec![1]),
                )
            }
        };
        let first = |v: &[i64], what: &str| {
            v.first()
                .copied()
                .ok_or_else(|| Error::input(format!("Slice {what} missing or empty")))
        };
        let (s0, e0, st) = (
            first(&starts, "starts")?,
            first(&ends, "ends")?,
            first(&steps, "steps")?,
        );
        let d = data.to_i64()?;
        let len = d.len() as i64;
        let clamp = |x: i64| if x < 0 { (x + len).max(0) } else { x.min(len) };
        let (s, e) = (clamp(s0), clamp(e0));
        if st != 1 {
            return Err(Error::unsupported("Slice with a step on constants"));
        }
        let v: Vec<i64> = if s < e {
            d[s as usize..e as usize].to_vec()
        } else {
            vec![]
        };
        self.set_const_t(n, ConstTensor::i64(vec![v.len()], v));
        Ok(())
    }

    /// Translate a node that reads at least one activation.
    fn activation_node(&mut self, n: &NodeProto) -> Result<()> {
        let label = node_label(n);
        let x0 = n.input.first().and_then(|i| self.act(i));
        let unary = |r: &Self| {
            x0.ok_or_else(|| {
                Error::unsupported(format!("{} with a constant first input", n.op_type))
            })
            .map(|v| (v, r.b.shape(v).to_vec()))
        };
        let a = |act: Activation, r: &mut Self| -> Result<()> {
            let (x, _) = unary(r)?;
            let v = r.b.activation(&label, x, act);
            r.name_output(n, v);
            Ok(())
        };
        match n.op_type.as_str() {
            "Conv" => self.conv(n, &label)?,
            "Gemm" => self.gemm(n, &label)?,
            "MatMul" => self.matmul(n, &label)?,
            "BatchNormalization" => {
                let (x, _) = unary(self)?;
                let names: Vec<String> = (1..5)
                    .map(|i| n.input.get(i).cloned().unwrap_or_default())
                    .collect();
                let mut ps = Vec::new();
                for (i, nm) in names.iter().enumerate() {
                    let c = self.get_const(n, i + 1).ok_or_else(|| {
                        Error::input(format!("BatchNorm parameter '{nm}' must be constant"))
                    })?;
                    ps.push(c.materialize()?);
                }
                let mut it = ps.into_iter();
                let p = [
                    (names[0].as_str(), it.next().unwrap()),
                    (names[1].as_str(), it.next().unwrap()),
                    (names[2].as_str(), it.next().unwrap()),
                    (names[3].as_str(), it.next().unwrap()),
                ];
                let v = self
                    .b
                    .batch_norm(&label, x, p, attr_f(n, "epsilon", 1e-5))?;
                self.name_output(n, v);
            }
            "Relu" => a(Activation::Relu, self)?,
            "LeakyRelu" => a(Activation::LeakyRelu(attr_f(n, "alpha", 0.01)), self)?,
            "Sigmoid" => a(Activation::Sigmoid, self)?,
            "Tanh" => a(Activation::Tanh, self)?,
            "Gelu" => a(Activation::Gelu, self)?,
            "Elu" => a(Activation::Elu(attr_f(n, "alpha", 1.0)), self)?,
            "HardSigmoid" => a(
                Activation::HardSigmoid {
                    alpha: attr_f(n, "alpha", 0.2),
                    beta: attr_f(n, "beta", 0.5),
                },
                self,
            )?,
            "HardSwish" => a(Activation::HardSwish, self)?,
            "Softplus" => a(Activation::Softplus, self)?,
            "Clip" => {
                let lo = self
                    .get_const(n, 1)
                    .and_then(|c| c.materialize().ok()?.to_f32().ok()?.first().copied());
                let hi = self
                    .get_const(n, 2)
                    .and_then(|c| c.materialize().ok()?.to_f32().ok()?.first().copied());
                let lo = lo.unwrap_or_else(|| attr_f(n, "min", f32::MIN));
                let hi = hi.unwrap_or_else(|| attr_f(n, "max", f32::MAX));
                a(Activation::Clip(lo, hi), self)?
            }
            "Identity" | "Dropout" | "Cast" => {
                let (x, _) = unary(self)?;
                let v = self.b.identity(&label, x);
                self.name_output(n, v);
            }
            "Softmax" | "LogSoftmax" => {
                let (x, s) = unary(self)?;
                let log = n.op_type == "LogSoftmax";
                // Before opset 13 the default axis is 1 and the op works on
                // the input flattened to 2-D from that axis on.
                let legacy = self.opset < 13;
                let default = if legacy { 1 } else { -1 };
                let axis = sample_axis(attr_i(n, "axis", default), s.len(), "Softmax")?;
                let v = if legacy && axis + 1 < s.len() {
                    let mut flat: Vec<usize> = s[..axis].to_vec();
                    flat.push(s[axis..].iter().product());
                    let f = self.b.reshape(&format!("{label}/flatten"), x, flat)?;
                    let sm = self.b.softmax(&format!("{label}/softmax"), f, axis, log)?;
                    self.b.reshape(&label, sm, s.clone())?
                } else {
                    self.b.softmax(&label, x, axis, log)?
                };
                self.name_output(n, v);
            }
            "LRN" => {
                let (x, _) = unary(self)?;
                let size = attr_i(n, "size", 1);
                if !(1..=1 << 16).contains(&size) {
                    return Err(Error::input(format!("LRN size {size} is out of range")));
                }
                let norm = Norm::Lrn {
                    size: size as usize,
                    alpha: attr_f(n, "alpha", 1e-4),
                    beta: attr_f(n, "beta", 0.75),
                    bias: attr_f(n, "bias", 1.0),
                };
                let v = self.b.norm(&label, x, norm)?;
                self.name_output(n, v);
            }
            "MaxPool" | "AveragePool" => self.pool(n, &label)?,
            "GlobalAveragePool" | "GlobalMaxPool" => {
                let (x, _) = unary(self)?;
                let kind = if n.op_type == "GlobalMaxPool" {
                    PoolKind::Max
                } else {
                    PoolKind::Avg
                };
                let v = self.b.global_pool(&label, x, kind)?;
                self.name_output(n, v);
            }
            "ReduceMean" | "ReduceMax" => self.reduce(n, &label)?,
            "Flatten" => {
                let (x, s) = unary(self)?;
                let axis = attr_i(n, "axis", 1);
                let full = s.len() as i64 + 1;
                let ax = if axis < 0 { axis + full } else { axis };
                if ax < 1 {
                    return Err(Error::unsupported("Flatten into the batch axis"));
                }
                if ax > s.len() as i64 {
                    return Err(Error::input(format!(
                        "Flatten axis {axis} is out of range for rank {full}"
                    )));
                }
                let ax = (ax - 1) as usize;
                let shape = if ax == 0 {
                    vec![s.iter().product()]
                } else {
                    vec![s[..ax].iter().product::<usize>(), s[ax..].iter().product()]
                };
                let v = self.b.reshape(&label, x, shape)?;
                self.name_output(n, v);
            }
            "Reshape" => {
                let (x, s) = unary(self)?;
                let target = self
                    .get_const(n, 1)
                    .ok_or_else(|| {
                        Error::unsupported("Reshape with a computed (non-constant) shape")
                    })?
                    .to_i64()?;
                let mut with_batch = vec![1usize];
                with_batch.extend(&s);
                let out = resolve_reshape(&with_batch, &target, attr_i(n, "allowzero", 0) == 1)?;
                if out.first() != Some(&1) {
                    return Err(Error::unsupported(format!(
                        "Reshape to {target:?} mixes the batch axis with others"
                    )));
                }
                let v = self.b.reshape(&label, x, out[1..].to_vec())?;
                self.name_output(n, v);
            }
            "Squeeze" | "Unsqueeze" => {
                let (x, s) = unary(self)?;
                let axes = attr_ints(n, "axes")
                    .or_else(|| self.get_const(n, 1).and_then(|c| c.to_i64().ok()));
                let mut full = vec![1usize];
                full.extend(&s);
                let out = squeeze_shape(&full, axes.as_deref(), n.op_type == "Unsqueeze")?;
                if out.first() != Some(&1) || (n.op_type == "Squeeze" && axes.is_none()) {
                    return Err(Error::unsupported(format!(
                        "{} touching the batch axis",
                        n.op_type
                    )));
                }
                let v = self.b.reshape(&label, x, out[1..].to_vec())?;
                self.name_output(n, v);
            }
            "Transpose" => {
                let (x, s) = unary(self)?;
                let perm =
                    attr_ints(n, "perm").unwrap_or_else(|| (0..=s.len() as i64).rev().collect());
                if perm.first() != Some(&0) {
                    return Err(Error::unsupported("Transpose that moves the batch axis"));
                }
                let p = permutation(&perm[1..], s.len(), 1)?;
                let v = self.b.transpose(&label, x, p)?;
                self.name_output(n, v);
            }
            "Add" | "Sum" | "Sub" => self.add_like(n, &label)?,
            "Mul" | "Div" => self.mul_like(n, &label)?,
            "Concat" => {
                let mut xs = Vec::new();
                for i in n.input.iter().filter(|s| !s.is_empty()) {
                    xs.push(self.act(i).ok_or_else(|| {
                        Error::unsupported("Concat of an activation with a constant")
                    })?);
                }
                let rank = self.b.shape(xs[0]).len();
                let axis = sample_axis(attr_i(n, "axis", 1), rank, "Concat")?;
                let v = self.b.concat(&label, &xs, axis)?;
                self.name_output(n, v);
            }
            "Shape" => {
                let (_, s) = unary(self)?;
                let mut dims = vec![1i64];
                dims.extend(s.iter().map(|&d| d as i64));
                self.set_const_t(n, ConstTensor::i64(vec![dims.len()], dims));
            }
            op => {
                return Err(Error::unsupported(format!(
                    "maskforge has no translation for {op}"
                )))
            }
        }
        Ok(())
    }

    /// A mean or max over all spatial axes is a global pool.
    fn reduce(&mut self, n: &NodeProto, label: &str) -> Result<()> {
        let x = self.first_act(n)?;
        let s = self.b.shape(x).to_vec();
        let axes =
            attr_ints(n, "axes").or_else(|| self.get_const(n, 1).and_then(|c| c.to_i64().ok()));
        let full = s.len() as i64 + 1;
        let mut axes: Vec<i64> = axes
            .unwrap_or_default()
            .iter()
            .map(|&a| if a < 0 { a + full } else { a })
            .collect();
        axes.sort_unstable();
        let spatial: Vec<i64> = (2..full).collect();
        if s.len() < 2 || axes != spatial {
            return Err(Error::unsupported(format!(
                "{} over axes {axes:?} (only all spatial axes, a global pool)",
                n.op_type
            )));
        }
        let kind = if n.op_type == "ReduceMax" {
            PoolKind::Max
        } else {
            PoolKind::Avg
        };
        let keep = attr_i(n, "keepdims", 1) != 0;
        let mut v = self.b.global_pool(
            &format!("{label}{}", if keep { "" } else { "/pool" }),
            x,
            kind,
        )?;
        if !keep {
            v = self.b.reshape(label, v, vec![s[0]])?;
        }
        self.name_output(n, v);
        Ok(())
    }

    fn weight(&self, n: &NodeProto, i: usize, what: &str) -> Result<Const> {
        self.get_const(n, i).cloned().ok_or_else(|| {
            Error::unsupported(format!(
                "{what} whose weight '{}' is computed at run time (not a constant)",
                n.input.get(i).cloned().unwrap_or_default()
            ))
        })
    }

    fn bias(&self, n: &NodeProto, i: usize) -> Result<Option<(String, ConstTensor)>> {
        match self.get_const(n, i) {
            None => {
                if n.input.get(i).is_some_and(|s| !s.is_empty()) {
                    return Err(Error::unsupported("bias computed at run time"));
                }
                Ok(None)
            }
            Some(c) => {
                let t = c.materialize()?;
                Ok(Some((c.stored_name.clone(), t)))
            }
        }
    }

    fn conv(&mut self, n: &NodeProto, label: &str) -> Result<()> {
        let x = n
            .input
            .first()
            .and_then(|i| self.act(i))
            .ok_or_else(|| Error::unsupported("Conv on a constant input"))?;
        let s = self.b.shape(x).to_vec();
        let w = self.weight(n, 1, "Conv")?;
        if w.shape.len() != 4 || s.len() != 3 {
            return Err(Error::unsupported(format!(
                "only 2-D Conv is supported (weight {:?}, input {:?})",
                w.shape, s
            )));
        }
        let k = [w.shape[2], w.shape[3]];
        if k.contains(&0) {
            return Err(Error::input(format!(
                "Conv weight {:?} has a zero-sized kernel",
                w.shape
            )));
        }
        let window = window_of(n, [s[1], s[2]], k)?;
        let groups = attr_i(n, "group", 1).max(1) as usize;
        let bias = self.bias(n, 2)?;
        let canon = w.shape.clone();
        let sw = w.stored_weight();
        let v = self.b.conv_stored(
            label,
            x,
            sw,
            canon,
            bias.as_ref().map(|(a, b)| (a.as_str(), b.clone())),
            window,
            groups,
        )?;
        self.name_output(n, v);
        Ok(())
    }

    fn dense_from(
        &mut self,
        n: &NodeProto,
        label: &str,
        x: ValueId,
        w: Const,
        out_in: bool,
        bias: Option<(String, ConstTensor)>,
    ) -> Result<()> {
        if w.shape.len() != 2 {
            return Err(Error::unsupported(format!(
                "dense weight of rank {} ({:?})",
                w.shape.len(),
                w.shape
            )));
        }
        // Canonical layout is [out, in]; an [in, out] view is transposed.
        let view = if out_in { w } else { w.transposed(&[1, 0])? };
        let sw = view.stored_weight();
        let v = self.b.dense_stored(
            label,
            x,
            sw,
            view.shape.clone(),
            bias.as_ref().map(|(a, b)| (a.as_str(), b.clone())),
        )?;
        self.name_output(n, v);
        Ok(())
    }

    fn gemm(&mut self, n: &NodeProto, label: &str) -> Result<()> {
        let x = n
            .input
            .first()
            .and_then(|i| self.act(i))
            .ok_or_else(|| Error::unsupported("Gemm whose first operand is the constant"))?;
        if attr_i(n, "transA", 0) != 0 {
            return Err(Error::unsupported("Gemm with transA=1 on activations"));
        }
        if attr_f(n, "alpha", 1.0) == 0.0 {
            return Err(Error::unsupported("Gemm with alpha=0"));
        }
        let w = self.weight(n, 1, "Gemm")?;
        let bias = self.bias(n, 2)?;
        self.dense_from(n, label, x, w, attr_i(n, "transB", 0) != 0, bias)
    }

    fn matmul(&mut self, n: &NodeProto, label: &str) -> Result<()> {
        let x = n
            .input
            .first()
            .and_then(|i| self.act(i))
            .ok_or_else(|| Error::unsupported("MatMul with the constant on the left"))?;
        if n.input.len() != 2 {
            return Err(Error::input(format!(
                "MatMul needs 2 inputs, has {}",
                n.input.len()
            )));
        }
        if self.act(&n.input[1]).is_some() {
            return Err(Error::unsupported("MatMul of two activations (attention)"));
        }
        let w = self.weight(n, 1, "MatMul")?;
        self.dense_from(n, label, x, w, false, None)
    }

    fn pool(&mut self, n: &NodeProto, label: &str) -> Result<()> {
        if n.output.len() > 1 && !n.output[1].is_empty() {
            return Err(Error::unsupported("MaxPool with an Indices output"));
        }
        let x = self.first_act(n)?;
        let s = self.b.shape(x).to_vec();
        if s.len() != 3 {
            return Err(Error::unsupported(format!(
                "pool on input {s:?} (only 2-D)"
            )));
        }
        let k = attr_ints(n, "kernel_shape").unwrap_or_default();
        if k.len() != 2 {
            return Err(Error::unsupported("pool without a 2-D kernel_shape"));
        }
        if k.iter().any(|&d| d < 1) {
            return Err(Error::input(format!("bad kernel_shape {k:?}")));
        }
        let k = [k[0] as usize, k[1] as usize];
        let window = window_of(n, [s[1], s[2]], k)?;
        let kind = if n.op_type == "MaxPool" {
            PoolKind::Max
        } else {
            PoolKind::Avg
        };
        let pool = Pool {
            kind,
            kernel: k,
            window,
            ceil: attr_i(n, "ceil_mode", 0) != 0,
        };
        let v = self.b.pool(label, x, pool)?;
        self.name_output(n, v);
        Ok(())
    }

    /// Register a constant operand of an elementwise op as a parameter.
    fn const_param(&mut self, c: &Const, label: &str, i: usize) -> Result<String> {
        let name = if self.b.value_by_name(&c.stored_name).is_none() && c.index.is_none() {
            c.stored_name.clone()
        } else {
            format!("{label}/const{i}")
        };
        self.b.add_param(&name, c.materialize()?);
        Ok(name)
    }

    fn add_like(&mut self, n: &NodeProto, label: &str) -> Result<()> {
        let mut acts = Vec::new();
        let mut consts = Vec::new();
        for (i, name) in n.input.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
            match self.act(name) {
                Some(v) => acts.push((i, v)),
                None => consts.push((
                    i,
                    self.get_const(n, i).cloned().ok_or_else(|| {
                        Error::input(format!("input '{name}' is neither activation nor constant"))
                    })?,
                )),
            }
        }
        if n.op_type == "Sub" && acts.first().map(|a| a.0) != Some(0) {
            return Err(Error::unsupported("Sub of an activation from a constant"));
        }
        let mut v = if acts.len() == 1 {
            acts[0].1
        } else {
            let xs: Vec<ValueId> = acts.iter().map(|a| a.1).collect();
            self.b.add(&format!("{label}/sum"), &xs)?
        };
        if n.op_type == "Sub" && acts.len() > 1 {
            // a - b has the same connectivity as a + b.
        }
        for (i, c) in consts {
            let p = self.const_param(&c, label, i)?;
            v = self
                .b
                .norm(&format!("{label}/add{i}"), v, Norm::AddConst(p))?;
        }
        if acts.len() == 1 && v == acts[0].1 {
            v = self.b.identity(label, v);
        }
        self.name_output(n, v);
        Ok(())
    }

    fn mul_like(&mut self, n: &NodeProto, label: &str) -> Result<()> {
        if n.input.len() != 2 {
            return Err(Error::input(format!(
                "{} needs 2 inputs, has {}",
                n.op_type,
                n.input.len()
            )));
        }
        let a0 = self.act(&n.input[0]);
        let a1 = self.act(&n.input[1]);
        let (x, ci) = match (a0, a1) {
            (Some(x), None) => (x, 1),
            (None, Some(x)) if n.op_type == "Mul" => (x, 0),
            (Some(_), Some(_)) => {
                return Err(Error::unsupported(format!(
                    "{} of two activations (gating/attention)",
                    n.op_type
                )))
            }
            _ => return Err(Error::unsupported("Div of a constant by an activation")),
        };
        let c = self
            .get_const(n, ci)
            .cloned()
            .ok_or_else(|| Error::input(format!("{} operand {ci} is missing", n.op_type)))?;
        let p = self.const_param(&c, label, ci)?;
        let v = self.b.norm(label, x, Norm::MulConst(p))?;
        self.name_output(n, v);
        Ok(())
    }
}

fn squeeze_shape(shape: &[usize], axes: Option<&[i64]>, unsqueeze: bool) -> Result<Vec<usize>> {
    if unsqueeze {
        let axes = axes.ok_or_else(|| Error::input("Unsqueeze without axes"))?;
        let r = (shape.len() + axes.len()) as i64;
        let mut norm: Vec<usize> = axes
            .iter()
            .map(|&a| if a < 0 { a + r } else { a } as usize)
            .collect();
        norm.sort_unstable();
        let mut out = shape.to_vec();
        for a in norm {
            if a > out.len() {
                return Err(Error::input("Unsqueeze axis out of range"));
            }
            out.insert(a, 1);
        }
        Ok(out)
    } else {
        let r = shape.len() as i64;
        let drop: Vec<usize> = match axes {
            Some(a) => a
                .iter()
                .map(|&x| {
                    let i = if x < 0 { x + r } else { x };
                    match usize::try_from(i) {
                        Ok(i) if i < shape.len() && shape[i] == 1 => Ok(i),
                        _ => Err(Error::input(format!(
                            "Squeeze axis {x} is out of range or not of size 1 in {shape:?}"
                        ))),
                    }
                })
                .collect::<Result<_>>()?,
            None => (0..shape.len()).filter(|&i| shape[i] == 1).collect(),
        };
        Ok(shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !drop.contains(i))
            .map(|(_, &d)| d)
            .collect())
    }
}

/// The ONNX permutation `perm` (axes counted from `base`) of `rank` axes,
/// checked: each axis exactly once.
fn permutation(perm: &[i64], rank: usize, base: i64) -> Result<Vec<usize>> {
    let mut seen = vec![false; rank];
    let out: Option<Vec<usize>> = perm
        .iter()
        .map(|&a| {
            let i = usize::try_from(a.checked_sub(base)?).ok()?;
            (i < rank && !std::mem::replace(&mut seen[i], true)).then_some(i)
        })
        .collect();
    match out {
        Some(p) if p.len() == rank => Ok(p),
        _ => Err(Error::input(format!(
            "Transpose perm {perm:?} is not a permutation of {} axes",
            rank as i64 + base
        ))),
    }
}

/// Element count of `shape`, an input error when it overflows.
pub(super) fn checked_numel(shape: &[usize], what: &str) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::input(format!("{what}: shape {shape:?} is too large")))
}

/// Strides, pads (incl. `auto_pad`) and dilations of a Conv or pool node.
fn window_of(n: &NodeProto, in_hw: [usize; 2], k: [usize; 2]) -> Result<Window> {
    let two = |name: &str| -> Result<[usize; 2]> {
        match attr_ints(n, name) {
            None => Ok([1, 1]),
            Some(v) if v.len() == 2 && v.iter().all(|&x| x > 0) => {
                Ok([v[0] as usize, v[1] as usize])
            }
            Some(v) => Err(Error::input(format!("bad {name} {v:?}"))),
        }
    };
    let stride = two("strides")?;
    let dilation = two("dilations")?;
    let auto = attr_s(n, "auto_pad");
    let pads = match auto.as_str() {
        "" | "NOTSET" => match attr_ints(n, "pads") {
            None => [0; 4],
            Some(p) if p.len() == 4 && p.iter().all(|&x| x >= 0) => {
                // ONNX order: [top, left, bottom, right].
                [p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize]
            }
            Some(p) => return Err(Error::input(format!("bad pads {p:?}"))),
        },
        "VALID" => [0; 4],
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut p = [0; 4];
            for a in 0..2 {
                let out = in_hw[a].div_ceil(stride[a]);
                let total = k[a]
                    .checked_sub(1)
                    .and_then(|x| x.checked_mul(dilation[a]))
                    .and_then(|span| {
                        out.saturating_sub(1)
                            .checked_mul(stride[a])?
                            .checked_add(span + 1)
                    })
                    .ok_or_else(|| {
                        Error::input(format!(
                            "window out of range (kernel {k:?}, dilations {dilation:?})"
                        ))
                    })?
                    .saturating_sub(in_hw[a]);
                let (small, big) = (total / 2, total - total / 2);
                if auto == "SAME_UPPER" {
                    p[a] = small;
                    p[a + 2] = big;
                } else {
                    p[a] = big;
                    p[a + 2] = small;
                }
            }
            p
        }
        other => return Err(Error::input(format!("unknown auto_pad '{other}'"))),
    };
    // The window arithmetic (padded extent, kernel span) must fit a usize.
    for a in 0..2 {
        let padded = in_hw[a]
            .checked_add(pads[a])
            .and_then(|x| x.checked_add(pads[a + 2]));
        let span = k[a]
            .checked_sub(1)
            .and_then(|x| x.checked_mul(dilation[a]))
            .and_then(|x| x.checked_add(1));
        if padded.is_none() || span.is_none() {
            return Err(Error::input(format!(
                "window out of range (kernel {k:?}, pads {pads:?}, dilations {dilation:?})"
            )));
        }
    }
    Ok(Window {
        stride,
        pads,
        dilation,
    })
}
