//! ONNX graph -> [`Network`]: the door through which ONNX enters.
//!
//! Constants (initializers, `Constant`, `ConstantOfShape`, folded shape
//! arithmetic) are tracked separately from activations; every node that
//! touches an activation becomes typed network ops, translated by its op
//! family in [`super::ops`]. Ops we cannot translate are all collected, so one
//! error names every one of them. Symbolic input dimensions are fixed here,
//! from [`ReadOptions::input_shapes`] (CONVENTIONS.md, `--input-shape`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use candle_onnx::onnx::{type_proto, GraphProto, NodeProto, ValueInfoProto};

use super::attrs::label;
use super::consts::Const;
use super::tensor::decode;
use crate::error::{Error, Result};
use crate::graph::tensor::ConstTensor;
use crate::graph::{Network, NetworkBuilder, ValueId};

pub use crate::error::UnsupportedOp as Unsupported;

/// The most elements per sample an activation may have (2^30).
pub(super) const MAX_ACTIVATION: usize = 1 << 30;

/// How to read a model.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    /// Full shapes (batch first) of graph inputs, by name: they fix symbolic
    /// dimensions (`--input-shape NAME=1x3x224x224`).
    pub input_shapes: BTreeMap<String, Vec<usize>>,
}

/// What a graph name refers to.
enum Slot {
    Act(ValueId),
    Const(Const),
    /// Output of an untranslatable node.
    Unknown,
}

/// The translation state the op families work on.
pub(super) struct Reader<'a> {
    /// Version of the default ONNX domain (some ops' defaults depend on it).
    pub opset: i64,
    pub b: NetworkBuilder,
    slots: HashMap<String, Slot>,
    /// Where each activation's (unit) batch axis sits in its ONNX shape;
    /// absent means in front. `None`: merged into another axis (Swin's
    /// window partition), so the ONNX shape is the per-sample shape.
    batch_axis: HashMap<ValueId, Option<usize>>,
    unsupported: Vec<Unsupported>,
    pub dir: &'a Path,
}

/// Translate a decoded graph; `dir` is the model's folder (external data).
pub fn translate(
    name: &str,
    g: GraphProto,
    dir: &Path,
    opset: i64,
    options: &ReadOptions,
) -> Result<(Option<Network>, Vec<Unsupported>)> {
    let mut r = Reader {
        opset,
        b: NetworkBuilder::new(name),
        slots: HashMap::new(),
        batch_axis: HashMap::new(),
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
    let data_inputs: Vec<&ValueInfoProto> = input
        .iter()
        .filter(|vi| !r.slots.contains_key(&vi.name))
        .collect();
    check_shape_names(&data_inputs, options)?;
    for vi in data_inputs {
        let shape = input_shape(vi, options.input_shapes.get(&vi.name))?;
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
            Some(Slot::Unknown) | Some(Slot::Const(_)) => {}
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

/// Every `--input-shape` must name a data input of the graph.
fn check_shape_names(inputs: &[&ValueInfoProto], options: &ReadOptions) -> Result<()> {
    for name in options.input_shapes.keys() {
        if !inputs.iter().any(|vi| &vi.name == name) {
            let known: Vec<&str> = inputs.iter().map(|vi| vi.name.as_str()).collect();
            return Err(Error::input(format!(
                "--input-shape names '{name}', which is not a data input of the model (inputs: {})",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// The per-sample shape of a graph input: its static dims, a symbolic batch
/// read as 1, and any other symbolic dim from `given` (or an error naming it).
fn input_shape(vi: &ValueInfoProto, given: Option<&Vec<usize>>) -> Result<Vec<usize>> {
    use candle_onnx::onnx::tensor_shape_proto::dimension::Value as D;
    let err = |m: String| Error::input(format!("graph input '{}': {m}", vi.name));
    let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(err("not a tensor input".into()));
    };
    let declared: Vec<Option<usize>> = match &t.shape {
        Some(s) => s
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(D::DimValue(v)) if *v > 0 => Some(*v as usize),
                _ => None,
            })
            .collect(),
        None => match given {
            Some(g) => vec![None; g.len()],
            None => return Err(err("has no shape; give one with --input-shape".into())),
        },
    };
    let dim_name = |i: usize| -> String {
        match t
            .shape
            .as_ref()
            .and_then(|s| s.dim.get(i))
            .and_then(|d| d.value.as_ref())
        {
            Some(D::DimParam(p)) if !p.is_empty() => format!(" ('{p}')"),
            _ => String::new(),
        }
    };
    let full: Vec<usize> = match given {
        Some(g) => {
            if g.len() != declared.len() {
                return Err(err(format!(
                    "--input-shape gives {} dimensions, the model declares {}",
                    g.len(),
                    declared.len()
                )));
            }
            for (i, (d, &v)) in declared.iter().zip(g).enumerate() {
                if d.is_some_and(|d| d != v) {
                    return Err(err(format!(
                        "--input-shape sets dimension {i} to {v}, the model fixes it at {}",
                        d.unwrap()
                    )));
                }
            }
            g.clone()
        }
        None => declared
            .iter()
            .enumerate()
            .map(|(i, d)| match (i, d) {
                (_, Some(v)) => Ok(*v),
                (0, None) => Ok(1),
                (i, None) => Err(err(format!(
                    "dimension {i}{} is symbolic; fix it with --input-shape {}={}",
                    dim_name(i),
                    vi.name,
                    declared
                        .iter()
                        .enumerate()
                        .map(|(j, d)| match d {
                            Some(v) => v.to_string(),
                            None if j == 0 => "1".into(),
                            None => "N".into(),
                        })
                        .collect::<Vec<_>>()
                        .join("x")
                ))),
            })
            .collect::<Result<_>>()?,
    };
    if full.len() < 2 {
        return Err(err("needs a batch dimension and at least one more".into()));
    }
    let dims = full[1..].to_vec();
    if !checked_numel(&dims, "").is_ok_and(|k| k <= MAX_ACTIVATION) {
        return Err(err(format!(
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

/// An ONNX axis (negative counts from the end) of a rank-`rank` tensor.
pub(super) fn onnx_axis(axis: i64, rank: usize, what: &str) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a >= rank as i64 {
        return Err(Error::input(format!(
            "{what}: axis {axis} is out of range for rank {rank}"
        )));
    }
    Ok(a as usize)
}

/// Element count of `shape`, an input error when it overflows.
pub(super) fn checked_numel(shape: &[usize], what: &str) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::input(format!("{what}: shape {shape:?} is too large")))
}

impl Reader<'_> {
    fn unsupported(&mut self, n: &NodeProto, why: impl Into<String>) {
        self.unsupported.push(Unsupported {
            op: n.op_type.clone(),
            node: label(n),
            detail: why.into(),
        });
        for o in &n.output {
            self.slots.insert(o.clone(), Slot::Unknown);
        }
    }

    /// Output `k` of `n` is the constant `c`.
    pub fn set_const_at(&mut self, n: &NodeProto, k: usize, c: Const) {
        self.slots.insert(n.output[k].clone(), Slot::Const(c));
    }

    pub fn set_const(&mut self, n: &NodeProto, c: Const) {
        self.set_const_at(n, 0, c);
    }

    /// Output 0 of `n` is a new stored constant `t`.
    pub fn set_const_t(&mut self, n: &NodeProto, t: ConstTensor) {
        let c = Const::stored(&n.output[0], t);
        self.set_const(n, c);
    }

    /// Output `k` of `n` is the activation `v`, the last node built, with
    /// its batch axis where `batch` says (see [`Reader::batch_of`]).
    pub fn output_with(&mut self, n: &NodeProto, k: usize, v: ValueId, batch: Option<usize>) {
        self.b.rename_last_output(&n.output[k]);
        self.slots.insert(n.output[k].clone(), Slot::Act(v));
        if batch == Some(0) {
            self.batch_axis.remove(&v);
        } else {
            self.batch_axis.insert(v, batch);
        }
    }

    /// Output `k` of `n` is `v`, laid out as the node's first activation
    /// input when the ranks agree (elementwise ops, slices, pads, ...), with
    /// the batch in front otherwise.
    pub fn output_at(&mut self, n: &NodeProto, k: usize, v: ValueId) {
        let batch = (0..n.input.len())
            .find_map(|i| self.input_act(n, i))
            .filter(|&x| self.b.shape(x).len() == self.b.shape(v).len())
            .map_or(Some(0), |x| self.batch_of(x));
        self.output_with(n, k, v, batch);
    }

    pub fn output(&mut self, n: &NodeProto, v: ValueId) {
        self.output_at(n, 0, v);
    }

    /// Where `v`'s unit batch axis sits in its ONNX shape (`None`: merged away).
    pub fn batch_of(&self, v: ValueId) -> Option<usize> {
        self.batch_axis.get(&v).copied().unwrap_or(Some(0))
    }

    /// `v`'s shape as the ONNX graph sees it: the per-sample shape with the
    /// unit batch axis put back.
    pub fn onnx_shape(&self, v: ValueId) -> Vec<usize> {
        let mut s = self.shape(v);
        if let Some(b) = self.batch_of(v) {
            s.insert(b.min(s.len()), 1);
        }
        s
    }

    /// The per-sample axis of ONNX axis `axis` of `v`; the batch axis itself
    /// has none.
    pub fn axis(&self, v: ValueId, axis: i64, what: &str) -> Result<usize> {
        let a = onnx_axis(axis, self.onnx_shape(v).len(), what)?;
        match self.batch_of(v) {
            Some(b) if a == b => Err(Error::unsupported(format!("{what} along the batch axis"))),
            Some(b) if a > b => Ok(a - 1),
            _ => Ok(a),
        }
    }

    /// Split an ONNX shape computed from activations (a Reshape target) into
    /// the per-sample shape and its batch axis: the first unit axis, else
    /// none (the batch has merged into another axis).
    ///
    /// With one sample, unit axes carry no data: dropping any of them keeps
    /// the element order, and ops refuse to work along the dropped axis (see
    /// [`Reader::axis`]), so the choice cannot change a result, only whether
    /// a model is read.
    pub fn split_batch(mut full: Vec<usize>) -> (Vec<usize>, Option<usize>) {
        match full.iter().position(|&d| d == 1) {
            Some(b) if full.len() > 1 => {
                full.remove(b);
                (full, Some(b))
            }
            _ => (full, None),
        }
    }

    /// A constant's shape made per sample for broadcasting against `x`: the
    /// dimension that meets `x`'s batch axis (which must be 1) dropped.
    pub fn strip_batch(&self, shape: &[usize], x: ValueId) -> Result<Vec<usize>> {
        let mut s = shape.to_vec();
        if s.len() > self.onnx_shape(x).len() {
            return Err(Error::unsupported(format!(
                "a constant of shape {shape:?} broadcast over an activation of rank {}",
                self.onnx_shape(x).len()
            )));
        }
        if let Some(b) = self.batch_in_const(x, s.len()) {
            if s[b] != 1 {
                return Err(Error::unsupported(
                    "a constant that varies along the batch axis",
                ));
            }
            s.remove(b);
        }
        Ok(s)
    }

    /// The batch axis of `x` must be in front, as convolutions, pools and
    /// channel normalisations read `[N, C, ...]`.
    pub fn require_channels_first(&self, x: ValueId, what: &str) -> Result<()> {
        match self.batch_of(x) {
            Some(0) => Ok(()),
            _ => Err(Error::unsupported(format!(
                "{what} on an activation whose batch axis is not in front"
            ))),
        }
    }

    /// The right-aligned distance from the end of `x`'s ONNX shape to its
    /// batch axis (how numpy broadcasting lines it up with other operands).
    pub fn batch_from_end(&self, x: ValueId) -> Option<usize> {
        self.batch_of(x).map(|b| self.onnx_shape(x).len() - b)
    }

    /// The batch axis of the broadcast of `xs` (ONNX right alignment), or
    /// unsupported when their batch axes do not line up.
    pub fn broadcast_batch(&self, xs: &[ValueId], out_rank: usize) -> Result<Option<usize>> {
        let mut d: Option<usize> = None;
        for &x in xs {
            if let Some(e) = self.batch_from_end(x) {
                if d.is_some_and(|d| d != e) {
                    return Err(Error::unsupported(
                        "operands whose batch axes do not line up",
                    ));
                }
                d = Some(e);
            }
        }
        if let Some(e) = d {
            for &x in xs {
                if self.batch_of(x).is_none() && self.onnx_shape(x).len() >= e {
                    return Err(Error::unsupported(
                        "operands whose batch axes do not line up",
                    ));
                }
            }
        }
        Ok(d.map(|e| out_rank + 1 - e))
    }

    /// Where a constant operand of rank `rank` broadcast against `v` (ONNX
    /// right alignment) meets `v`'s batch axis, if it reaches it.
    pub fn batch_in_const(&self, v: ValueId, rank: usize) -> Option<usize> {
        let full = self.onnx_shape(v).len();
        let b = self.batch_of(v)?;
        (b + rank >= full).then(|| b + rank - full)
    }

    /// The activation named `name`, if it is one.
    pub fn act(&self, name: &str) -> Option<ValueId> {
        match self.slots.get(name) {
            Some(Slot::Act(v)) => Some(*v),
            _ => None,
        }
    }

    /// Input `i` of `n` if it is an activation.
    pub fn input_act(&self, n: &NodeProto, i: usize) -> Option<ValueId> {
        n.input.get(i).and_then(|s| self.act(s))
    }

    /// Input `i` of `n`, which must be an activation.
    pub fn need_act(&self, n: &NodeProto, i: usize) -> Result<ValueId> {
        self.input_act(n, i).ok_or_else(|| {
            Error::unsupported(format!("{} whose input {i} is a constant", n.op_type))
        })
    }

    /// Input `i` of `n` if it is a constant (absent or empty inputs are `None`).
    pub fn konst(&self, n: &NodeProto, i: usize) -> Option<&Const> {
        match n.input.get(i).map(|s| s.as_str()) {
            Some(s) if !s.is_empty() => match self.slots.get(s) {
                Some(Slot::Const(c)) => Some(c),
                _ => None,
            },
            _ => None,
        }
    }

    /// Input `i` of `n`, which must be a constant (`what` says which).
    pub fn need_const(&self, n: &NodeProto, i: usize, what: &str) -> Result<Const> {
        self.konst(n, i).cloned().ok_or_else(|| {
            if self.input_act(n, i).is_some() {
                Error::unsupported(format!(
                    "{} whose {what} is computed at run time",
                    n.op_type
                ))
            } else {
                Error::input(format!("{} needs its {what} (input {i})", n.op_type))
            }
        })
    }

    /// Input `i` as integers, when present.
    pub fn ints_input(&self, n: &NodeProto, i: usize, what: &str) -> Result<Option<Vec<i64>>> {
        match n.input.get(i).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(_) => Ok(Some(self.need_const(n, i, what)?.to_i64()?)),
        }
    }

    pub fn shape(&self, v: ValueId) -> Vec<usize> {
        self.b.shape(v).to_vec()
    }

    /// Register a constant operand of an elementwise op on activation `x`
    /// as a parameter, its shape made per sample (the dimension that meets
    /// `x`'s unit batch axis dropped).
    pub fn const_param(&mut self, c: &Const, label: &str, i: usize, x: ValueId) -> Result<String> {
        let mut t = c.materialize()?;
        t.shape = self.strip_batch(&t.shape, x)?;
        let name = if self.b.value_by_name(&c.stored_name).is_none() && c.index.is_none() {
            c.stored_name.clone()
        } else {
            format!("{label}/const{i}")
        };
        self.b.add_param(&name, t);
        Ok(name)
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
                    // Downstream of an unreadable node: still list this one
                    // if its kind can never be read.
                    match super::ops::never_read(&n.op_type) {
                        Some(why) => self.unsupported(&n, why),
                        None => {
                            for o in &n.output {
                                self.slots.insert(o.clone(), Slot::Unknown);
                            }
                        }
                    }
                    return Ok(());
                }
                None => {
                    return Err(Error::input(format!(
                        "node '{}' ({}) reads '{name}', which is neither a graph input, an initializer nor a node output",
                        label(&n),
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
            super::ops::translate(self, &n)
        } else {
            super::ops::fold::fold(self, &n)
        };
        match res.and_then(|()| self.check_outputs(&n)) {
            Ok(()) => Ok(()),
            Err(Error::Unsupported { detail, .. }) => {
                self.unsupported(&n, detail);
                Ok(())
            }
            Err(e) => Err(e.context(format!("node '{}' ({})", label(&n), n.op_type))),
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
}
