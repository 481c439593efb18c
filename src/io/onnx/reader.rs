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

/// Per-sample axis of an ONNX axis on a tensor of per-sample rank `rank`.
pub(super) fn sample_axis(axis: i64, rank: usize, what: &str) -> Result<usize> {
    let full = rank as i64 + 1;
    let a = if axis < 0 { axis + full } else { axis };
    if a == 0 {
        return Err(Error::unsupported(format!("{what} along the batch axis")));
    }
    if a < 0 || a >= full {
        return Err(Error::input(format!(
            "{what}: axis {axis} is out of range for rank {full}"
        )));
    }
    Ok(a as usize - 1)
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

    /// Output `k` of `n` is the activation `v`, the last node built.
    pub fn output_at(&mut self, n: &NodeProto, k: usize, v: ValueId) {
        self.b.rename_last_output(&n.output[k]);
        self.slots.insert(n.output[k].clone(), Slot::Act(v));
    }

    pub fn output(&mut self, n: &NodeProto, v: ValueId) {
        self.output_at(n, 0, v);
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

    /// Register a constant operand of an elementwise op as a parameter, its
    /// shape made per sample (a leading batch axis of 1 dropped) for an
    /// activation of per-sample rank `rank`.
    pub fn const_param(&mut self, c: &Const, label: &str, i: usize, rank: usize) -> Result<String> {
        let mut t = c.materialize()?;
        if t.shape.len() > rank + 1 {
            return Err(Error::unsupported(format!(
                "a constant of rank {} broadcast over an activation of rank {}",
                t.shape.len(),
                rank + 1
            )));
        }
        if t.shape.len() == rank + 1 {
            if t.shape[0] != 1 {
                return Err(Error::unsupported(
                    "a constant that varies along the batch axis",
                ));
            }
            t.shape.remove(0);
        }
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
                    for o in &n.output {
                        self.slots.insert(o.clone(), Slot::Unknown);
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
