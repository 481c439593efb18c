//! Building a [`Network`] node by node, with per-sample shape inference.
//!
//! Every front end (ONNX reader, zoo) goes through this builder, so shape
//! rules and checks live in one place. Axes are per sample (0 = channels).
//!
//! ```
//! use maskforge::graph::{NetworkBuilder, op::Window};
//! use maskforge::graph::tensor::ConstTensor;
//! let mut b = NetworkBuilder::new("conv");
//! let x = b.input("x", vec![3, 8, 8]).unwrap();
//! let w = ConstTensor::f32(vec![4, 3, 3, 3], vec![0.1; 108]);
//! let y = b.conv("c1", x, "c1.weight", w, None, Window::same(2, 1), 1).unwrap();
//! assert_eq!(b.shape(y), &[4, 4, 4]);
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use petgraph::graph::DiGraph;

use super::op::{
    Activation, Binary, Conv2d, Dense, IndexMap, Mix, MixKind, Norm, Op, Pool, PoolKind, Window,
};
use super::{Layer, LayerKind, Network, Node, NodeId, ParamStore, Value, ValueId};
use crate::error::{Error, Result};
use crate::graph::tensor::ConstTensor;

/// How a prunable weight is stored in its source file.
#[derive(Clone, Debug)]
pub struct StoredWeight {
    /// Name of the stored tensor (the mask key).
    pub name: String,
    /// The stored tensor itself.
    pub tensor: ConstTensor,
    /// Canonical element -> stored element; `None` when layouts coincide.
    pub index: Option<Arc<Vec<u32>>>,
}

impl StoredWeight {
    /// A weight already in canonical layout.
    pub fn canonical(name: impl Into<String>, tensor: ConstTensor) -> Self {
        Self {
            name: name.into(),
            tensor,
            index: None,
        }
    }
}

/// Incrementally assembles a [`Network`].
pub struct NetworkBuilder {
    name: String,
    values: Vec<Value>,
    nodes: Vec<Node>,
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
    layers: Vec<Layer>,
    params: ParamStore,
    names: HashMap<String, ValueId>,
}

impl NetworkBuilder {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            values: Vec::new(),
            nodes: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            layers: Vec::new(),
            params: ParamStore::default(),
            names: HashMap::new(),
        }
    }

    pub fn shape(&self, v: ValueId) -> &[usize] {
        &self.values[v].shape
    }

    pub fn value_by_name(&self, name: &str) -> Option<ValueId> {
        self.names.get(name).copied()
    }

    fn new_value(&mut self, name: &str, shape: Vec<usize>) -> ValueId {
        let id = self.values.len();
        self.values.push(Value {
            name: name.to_string(),
            shape,
        });
        self.names.insert(name.to_string(), id);
        id
    }

    fn push(&mut self, name: &str, op: Op, inputs: Vec<ValueId>, shape: Vec<usize>) -> ValueId {
        let out = self.new_value(name, shape);
        self.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs,
            output: out,
        });
        out
    }

    /// Name the output value of the last node (ONNX keeps node and value names apart).
    pub fn rename_last_output(&mut self, output: &str) {
        if let Some(v) = self.nodes.last().map(|n| n.output) {
            self.rename(v, output);
        }
    }

    /// Give value `v` the name `name` (an output's conventional name).
    pub fn rename(&mut self, v: ValueId, name: &str) {
        let old = std::mem::replace(&mut self.values[v].name, name.to_string());
        self.names.remove(&old);
        self.names.insert(name.to_string(), v);
    }

    /// A registered constant.
    pub fn param(&self, name: &str) -> Option<&ConstTensor> {
        self.params.get(name)
    }

    pub fn add_param(&mut self, name: &str, t: ConstTensor) {
        self.params.insert(name, t);
    }

    pub fn input(&mut self, name: &str, shape: Vec<usize>) -> Result<ValueId> {
        if shape.contains(&0) {
            return Err(Error::input(format!(
                "input '{name}' has a zero-sized dimension {shape:?}"
            )));
        }
        let v = self.new_value(name, shape);
        self.inputs.push(v);
        Ok(v)
    }

    pub fn output(&mut self, v: ValueId) {
        if !self.outputs.contains(&v) {
            self.outputs.push(v);
        }
    }

    /// A convolution whose weight is given in canonical layout.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        name: &str,
        x: ValueId,
        weight_name: &str,
        weight: ConstTensor,
        bias: Option<(&str, ConstTensor)>,
        window: Window,
        groups: usize,
    ) -> Result<ValueId> {
        let canon = weight.shape.clone();
        self.conv_stored(
            name,
            x,
            StoredWeight::canonical(weight_name, weight),
            canon,
            bias,
            window,
            groups,
        )
    }

    /// A convolution with a weight of canonical shape `canon` stored as `w`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_stored(
        &mut self,
        name: &str,
        x: ValueId,
        w: StoredWeight,
        canon: Vec<usize>,
        bias: Option<(&str, ConstTensor)>,
        window: Window,
        groups: usize,
    ) -> Result<ValueId> {
        let xs = self.shape(x).to_vec();
        let err = |m: String| Err(Error::input(format!("Conv '{name}': {m}")));
        if xs.len() != 3 {
            return err(format!(
                "only 2-D convolutions on [C, H, W] inputs are supported; input shape is {xs:?}"
            ));
        }
        if canon.len() != 4 {
            return err(format!("weight must be 4-D, got {canon:?}"));
        }
        if groups == 0 || !xs[0].is_multiple_of(groups) || !canon[0].is_multiple_of(groups) {
            return err(format!(
                "groups={groups} does not divide input channels {} and output channels {}",
                xs[0], canon[0]
            ));
        }
        if canon[1] * groups != xs[0] {
            return err(format!(
                "weight {canon:?} expects {} input channels (groups={groups}) but the input has {}",
                canon[1] * groups,
                xs[0]
            ));
        }
        let conv = Conv2d::new(canon[0], xs[0], [canon[2], canon[3]], window, groups);
        let [h, wd] = conv.output_hw([xs[1], xs[2]]);
        if h == 0 || wd == 0 {
            return err(format!("kernel {canon:?} does not fit input {xs:?}"));
        }
        if canon[2] == 0 || canon[3] == 0 {
            return err("zero-sized kernel".into());
        }
        let bias_name = self.register_bias(name, bias, canon[0])?;
        let node = self.nodes.len();
        self.register_layer(node, LayerKind::Conv, w, canon)?;
        let weight = self.layers.last().unwrap().name.clone();
        Ok(self.push(
            name,
            Op::Conv {
                conv,
                weight,
                bias: bias_name,
            },
            vec![x],
            vec![canon_out(&self.layers), h, wd],
        ))
    }

    /// A dense layer whose weight is given canonically as `[out, in]`.
    pub fn dense(
        &mut self,
        name: &str,
        x: ValueId,
        weight_name: &str,
        weight: ConstTensor,
        bias: Option<(&str, ConstTensor)>,
    ) -> Result<ValueId> {
        let canon = weight.shape.clone();
        self.dense_stored(
            name,
            x,
            StoredWeight::canonical(weight_name, weight),
            canon,
            bias,
        )
    }

    /// A dense layer with canonical weight shape `[out, in]` stored as `w`.
    pub fn dense_stored(
        &mut self,
        name: &str,
        x: ValueId,
        w: StoredWeight,
        canon: Vec<usize>,
        bias: Option<(&str, ConstTensor)>,
    ) -> Result<ValueId> {
        let xs = self.shape(x).to_vec();
        let Some(&features) = xs.last() else {
            return Err(Error::input(format!(
                "Dense '{name}': input is a scalar per sample"
            )));
        };
        if canon.len() != 2 || canon[1] != features {
            return Err(Error::input(format!(
                "Dense '{name}': weight {canon:?} does not take {features} input features"
            )));
        }
        let bias_name = self.register_bias(name, bias, canon[0])?;
        let node = self.nodes.len();
        let dense = Dense {
            out_features: canon[0],
            in_features: canon[1],
        };
        self.register_layer(node, LayerKind::Dense, w, canon)?;
        let weight = self.layers.last().unwrap().name.clone();
        Ok(self.push(
            name,
            Op::Dense {
                dense,
                weight,
                bias: bias_name,
            },
            vec![x],
            [&xs[..xs.len() - 1], &[dense.out_features]].concat(),
        ))
    }

    fn register_bias(
        &mut self,
        layer: &str,
        bias: Option<(&str, ConstTensor)>,
        out: usize,
    ) -> Result<Option<String>> {
        let Some((bname, b)) = bias else {
            return Ok(None);
        };
        if b.numel() != out {
            return Err(Error::input(format!(
                "'{layer}': bias '{bname}' has {} elements, expected {out}",
                b.numel()
            )));
        }
        self.params.insert(bname, b);
        Ok(Some(bname.to_string()))
    }

    fn register_layer(
        &mut self,
        node: NodeId,
        kind: LayerKind,
        w: StoredWeight,
        canon: Vec<usize>,
    ) -> Result<()> {
        let n: usize = canon.iter().product();
        if w.tensor.numel() != n {
            return Err(Error::input(format!(
                "weight '{}' has shape {:?} but the layer needs {n} elements ({canon:?})",
                w.name, w.tensor.shape
            )));
        }
        if !w.tensor.dtype().is_float() {
            return Err(Error::input(format!(
                "weight '{}' has non-float dtype {:?}",
                w.name,
                w.tensor.dtype()
            )));
        }
        if self.layers.iter().any(|l| l.name == w.name) {
            return Err(Error::input(format!(
                "weight '{}' is used by two layers; shared weights are not supported",
                w.name
            )));
        }
        self.layers.push(Layer {
            name: w.name.clone(),
            node,
            kind,
            shape: canon,
            stored_shape: w.tensor.shape.clone(),
            stored_index: w.index,
            default_selected: true,
        });
        self.params.insert(w.name, w.tensor);
        Ok(())
    }

    /// Leave the layer of weight `weight_name` dense unless an `--include`
    /// glob names it (its [`Layer::default_selected`] becomes false).
    /// An input error when no layer has that weight.
    pub fn exclude_by_default(&mut self, weight_name: &str) -> Result<()> {
        match self.layers.iter_mut().find(|l| l.name == weight_name) {
            Some(l) => {
                l.default_selected = false;
                Ok(())
            }
            None => Err(Error::input(format!(
                "no prunable layer has the weight '{weight_name}'"
            ))),
        }
    }

    /// Inference BatchNorm over channels (axis 0) with named parameters.
    pub fn batch_norm(
        &mut self,
        name: &str,
        x: ValueId,
        params: [(&str, ConstTensor); 4],
        eps: f32,
    ) -> Result<ValueId> {
        let c = self.shape(x)[0];
        for (p, t) in &params {
            if t.numel() != c {
                return Err(Error::input(format!(
                    "BatchNorm '{name}': parameter '{p}' has {} elements for {c} channels",
                    t.numel()
                )));
            }
        }
        let [s, b, m, v] = params.map(|(n, t)| {
            self.params.insert(n, t);
            n.to_string()
        });
        let shape = self.shape(x).to_vec();
        Ok(self.push(
            name,
            Op::Norm(Norm::BatchNorm {
                scale: s,
                bias: b,
                mean: m,
                var: v,
                eps,
            }),
            vec![x],
            shape,
        ))
    }

    /// A shape-preserving normalisation or affine map by a constant.
    pub fn norm(&mut self, name: &str, x: ValueId, norm: Norm) -> Result<ValueId> {
        let shape = self.shape(x).to_vec();
        if let Norm::MulConst(p)
        | Norm::AddConst(p)
        | Norm::Prelu(p)
        | Norm::Const { param: p, .. } = &norm
        {
            let t = self.params.get(p).ok_or_else(|| {
                Error::internal(format!("'{name}': constant '{p}' not registered"))
            })?;
            let out = broadcast(&shape, &t.shape).map_err(|e| e.context(name))?;
            if out != shape {
                return Err(Error::input(format!(
                    "'{name}': constant of shape {:?} would grow the activation {shape:?}",
                    t.shape
                )));
            }
        }
        Ok(self.push(name, Op::Norm(norm), vec![x], shape))
    }

    pub fn activation(&mut self, name: &str, x: ValueId, a: Activation) -> ValueId {
        let shape = self.shape(x).to_vec();
        self.push(name, Op::Activation(a), vec![x], shape)
    }

    pub fn identity(&mut self, name: &str, x: ValueId) -> ValueId {
        let shape = self.shape(x).to_vec();
        self.push(name, Op::Identity, vec![x], shape)
    }

    /// Softmax (or log-softmax) along a per-sample axis.
    pub fn softmax(&mut self, name: &str, x: ValueId, axis: usize, log: bool) -> Result<ValueId> {
        let shape = self.shape(x).to_vec();
        if axis >= shape.len() {
            return Err(Error::input(format!("Softmax '{name}': axis out of range")));
        }
        let op = if log {
            Op::LogSoftmax(axis)
        } else {
            Op::Softmax(axis)
        };
        Ok(self.push(name, op, vec![x], shape))
    }

    pub fn pool(&mut self, name: &str, x: ValueId, pool: Pool) -> Result<ValueId> {
        let xs = self.shape(x).to_vec();
        if xs.len() != 3 {
            return Err(Error::input(format!(
                "pool '{name}': only 2-D pools on [C, H, W] are supported, input is {xs:?}"
            )));
        }
        let [h, w] = pool.output_hw([xs[1], xs[2]]);
        if h == 0 || w == 0 {
            return Err(Error::input(format!(
                "pool '{name}': window {:?} does not fit input {xs:?}",
                pool.kernel
            )));
        }
        Ok(self.push(name, Op::Pool(pool), vec![x], vec![xs[0], h, w]))
    }

    pub fn global_pool(&mut self, name: &str, x: ValueId, kind: PoolKind) -> Result<ValueId> {
        let xs = self.shape(x).to_vec();
        if xs.len() < 2 {
            return Err(Error::input(format!(
                "global pool '{name}': input {xs:?} has no spatial dims"
            )));
        }
        let mut out = vec![xs[0]];
        out.extend(std::iter::repeat_n(1, xs.len() - 1));
        Ok(self.push(name, Op::GlobalPool(kind), vec![x], out))
    }

    /// Flatten per-sample dims from `axis` on (axis 0 gives one flat vector).
    pub fn flatten(&mut self, name: &str, x: ValueId) -> ValueId {
        let n = self.values[x].numel();
        self.push(name, Op::Reshape, vec![x], vec![n])
    }

    /// Row-major reshape to a fully resolved per-sample shape.
    pub fn reshape(&mut self, name: &str, x: ValueId, shape: Vec<usize>) -> Result<ValueId> {
        let n = self.values[x].numel();
        if shape.iter().product::<usize>() != n {
            return Err(Error::input(format!(
                "Reshape '{name}': cannot reshape {:?} into {shape:?}",
                self.values[x].shape
            )));
        }
        Ok(self.push(name, Op::Reshape, vec![x], shape))
    }

    pub fn transpose(&mut self, name: &str, x: ValueId, perm: Vec<usize>) -> Result<ValueId> {
        let xs = self.shape(x).to_vec();
        let mut seen = vec![false; xs.len()];
        if perm.len() != xs.len()
            || perm
                .iter()
                .any(|&p| p >= xs.len() || std::mem::replace(&mut seen[p], true))
        {
            return Err(Error::input(format!(
                "Transpose '{name}': perm {perm:?} is not a permutation of {} axes",
                xs.len()
            )));
        }
        let out = perm.iter().map(|&p| xs[p]).collect();
        Ok(self.push(name, Op::Transpose(perm), vec![x], out))
    }

    /// Elementwise sum of activations (numpy broadcasting).
    pub fn add(&mut self, name: &str, xs: &[ValueId]) -> Result<ValueId> {
        if xs.is_empty() {
            return Err(Error::input(format!("Add '{name}': no inputs")));
        }
        let mut shape = self.shape(xs[0]).to_vec();
        for &x in &xs[1..] {
            shape =
                broadcast(&shape, self.shape(x)).map_err(|e| e.context(format!("Add '{name}'")))?;
        }
        Ok(self.push(name, Op::Add, xs.to_vec(), shape))
    }

    pub fn concat(&mut self, name: &str, xs: &[ValueId], axis: usize) -> Result<ValueId> {
        let first = self.shape(xs[0]).to_vec();
        if axis >= first.len() {
            return Err(Error::input(format!("Concat '{name}': axis out of range")));
        }
        let mut shape = first.clone();
        shape[axis] = 0;
        for &x in xs {
            let s = self.shape(x);
            let same_rest = s.len() == first.len()
                && s.iter()
                    .zip(&first)
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b);
            if !same_rest {
                return Err(Error::input(format!(
                    "Concat '{name}': shapes {first:?} and {s:?} differ off the concat axis"
                )));
            }
            shape[axis] += s[axis];
        }
        Ok(self.push(name, Op::Concat(axis), xs.to_vec(), shape))
    }

    /// An elementwise function of two activations, broadcasting.
    pub fn binary(&mut self, name: &str, f: Binary, a: ValueId, b: ValueId) -> Result<ValueId> {
        let shape = broadcast(self.shape(a), self.shape(b))
            .map_err(|e| e.context(format!("{f:?} '{name}'")))?;
        Ok(self.push(name, Op::Binary(f), vec![a, b], shape))
    }

    /// `where(cond, x, y)` of three activations, broadcasting.
    pub fn where_(&mut self, name: &str, cond: ValueId, x: ValueId, y: ValueId) -> Result<ValueId> {
        let ctx = |e: Error| e.context(format!("Where '{name}'"));
        let shape = broadcast(self.shape(x), self.shape(y)).map_err(ctx)?;
        let shape = broadcast(self.shape(cond), &shape).map_err(ctx)?;
        Ok(self.push(name, Op::Where, vec![cond, x, y], shape))
    }

    /// Matrix product of two activations with numpy `matmul` rules (a 1-D
    /// operand is a row (left) or column (right) vector and its axis is
    /// dropped from the result).
    pub fn matmul(&mut self, name: &str, a: ValueId, b: ValueId) -> Result<ValueId> {
        let shape = matmul_shape(self.shape(a), self.shape(b))
            .map_err(|e| e.context(format!("MatMul '{name}'")))?;
        Ok(self.push(name, Op::MatMul, vec![a, b], shape))
    }

    /// A normalisation or reduction over `mix.axes` of `mix.view`.
    pub fn mix(&mut self, name: &str, x: ValueId, mix: Mix) -> Result<ValueId> {
        let xs = self.shape(x).to_vec();
        let err = |m: String| Err(Error::input(format!("'{name}': {m}")));
        let view = mix.view.clone().unwrap_or_else(|| xs.clone());
        if view.iter().product::<usize>() != xs.iter().product::<usize>() {
            return err(format!("cannot view {xs:?} as {view:?}"));
        }
        let mut seen = vec![false; view.len()];
        for &a in &mix.axes {
            if a >= view.len() || std::mem::replace(&mut seen[a], true) {
                return err(format!(
                    "axes {:?} invalid for rank {}",
                    mix.axes,
                    view.len()
                ));
            }
        }
        let shape = match &mix.kind {
            MixKind::Reduce { keepdims, .. } => {
                let mut out: Vec<usize> = Vec::new();
                for (i, &d) in view.iter().enumerate() {
                    if !seen[i] {
                        out.push(d);
                    } else if *keepdims {
                        out.push(1);
                    }
                }
                out
            }
            MixKind::Normalize { scale, bias, .. } => {
                for p in [scale, bias].into_iter().flatten() {
                    let t = self.params.get(p).ok_or_else(|| {
                        Error::internal(format!("'{name}': constant '{p}' not registered"))
                    })?;
                    if broadcast(&xs, &t.shape).ok().as_deref() != Some(&xs[..]) {
                        return err(format!(
                            "parameter '{p}' of shape {:?} does not broadcast onto {xs:?}",
                            t.shape
                        ));
                    }
                }
                xs.clone()
            }
        };
        Ok(self.push(name, Op::Mix(mix), vec![x], shape))
    }

    /// Data movement by an explicit element map producing `shape`.
    pub fn gather(
        &mut self,
        name: &str,
        xs: &[ValueId],
        map: IndexMap,
        shape: Vec<usize>,
    ) -> Result<ValueId> {
        let sources: usize = xs.iter().map(|&x| self.values[x].numel()).sum();
        let n: usize = shape.iter().product();
        let fits = map.taps > 0
            && map.index.len() == n * map.taps
            && map
                .weight
                .as_ref()
                .is_none_or(|w| w.len() == map.index.len())
            && map
                .index
                .iter()
                .all(|&i| (i as usize) < sources + map.consts.len());
        if !fits {
            return Err(Error::internal(format!(
                "'{name}': element map does not fit {n} outputs from {sources} inputs"
            )));
        }
        Ok(self.push(name, Op::Gather(map), xs.to_vec(), shape))
    }

    /// Check and freeze: topological order, connectivity graph, reachability.
    pub fn finish(self) -> Result<Network> {
        if self.inputs.is_empty() {
            return Err(Error::input(format!(
                "model '{}' has no data input",
                self.name
            )));
        }
        if self.outputs.is_empty() {
            return Err(Error::input(format!("model '{}' has no output", self.name)));
        }
        let mut producer = vec![None; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            producer[n.output] = Some(i);
        }
        let mut graph = DiGraph::new();
        let idx: Vec<_> = (0..self.nodes.len()).map(|i| graph.add_node(i)).collect();
        for (i, n) in self.nodes.iter().enumerate() {
            for &v in &n.inputs {
                match producer[v] {
                    Some(p) => {
                        graph.add_edge(idx[p], idx[i], v);
                    }
                    None if self.inputs.contains(&v) => {}
                    None => {
                        return Err(Error::input(format!(
                            "node '{}' reads '{}', which nothing produces",
                            n.name, self.values[v].name
                        )))
                    }
                }
            }
        }
        // Nodes were pushed in dependency order, so this only guards against cycles.
        petgraph::algo::toposort(&graph, None).map_err(|c| {
            Error::input(format!(
                "the graph has a cycle through node '{}'",
                self.nodes[graph[c.node_id()]].name
            ))
        })?;
        Ok(Network {
            name: self.name,
            values: self.values,
            nodes: self.nodes,
            inputs: self.inputs,
            outputs: self.outputs,
            layers: self.layers,
            params: self.params,
            graph,
        })
    }
}

fn canon_out(layers: &[Layer]) -> usize {
    layers.last().map(|l| l.shape[0]).unwrap_or(0)
}

/// Numpy `matmul`'s operands as matrices: a 1-D left operand is a row
/// `[1, k]`, a 1-D right operand a column `[k, 1]`.
pub fn as_matrices(a: &[usize], b: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let a2 = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2 = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    (a2, b2)
}

/// Output shape of numpy `matmul`.
pub fn matmul_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let err = || Error::input(format!("shapes {a:?} and {b:?} do not multiply"));
    if a.is_empty() || b.is_empty() {
        return Err(err());
    }
    let (a2, b2) = as_matrices(a, b);
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(err());
    }
    let mut out = broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2]).map_err(|_| err())?;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(out)
}

/// Numpy broadcasting of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let get = |s: &[usize], i: usize| {
        if i + s.len() < n {
            1
        } else {
            s[i + s.len() - n]
        }
    };
    (0..n)
        .map(|i| match (get(a, i), get(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(Error::input(format!(
                "shapes {a:?} and {b:?} do not broadcast"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatched_weights_are_rejected_with_the_layer_name() {
        let mut b = NetworkBuilder::new("t");
        let x = b.input("x", vec![3, 8, 8]).unwrap();
        let w = ConstTensor::f32(vec![4, 2, 3, 3], vec![0.0; 72]);
        let e = b
            .conv("c1", x, "w", w, None, Window::same(1, 1), 1)
            .unwrap_err();
        assert!(e.to_string().contains("c1"), "{e}");
    }

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast(&[4, 8, 8], &[4, 1, 1]).unwrap(), vec![4, 8, 8]);
        assert_eq!(broadcast(&[4, 8, 8], &[8]).unwrap(), vec![4, 8, 8]);
        assert!(broadcast(&[4, 8, 8], &[3, 1, 1]).is_err());
    }
}
