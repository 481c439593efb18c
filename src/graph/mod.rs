//! The one internal network representation every algorithm works on.
//!
//! A [`Network`] is a DAG of [`Node`]s, each computing one [`Value`] from
//! others, stored in topological order and mirrored in a petgraph graph.
//! Shapes are per sample (no batch dimension). Prunable layers (Conv, Dense)
//! name their weight in the [`ParamStore`]; a [`Layer`] records how the
//! canonical weight layout (`[out, in, kh, kw]` / `[out, in]`) maps onto the
//! tensor as stored in the source file, so masks are written in the source's
//! own shape and name. Nothing here knows about ONNX.
//!
//! ```
//! use maskforge::graph::NetworkBuilder;
//! use maskforge::graph::tensor::ConstTensor;
//! let mut b = NetworkBuilder::new("tiny");
//! let x = b.input("x", vec![4]).unwrap();
//! let w = ConstTensor::f32(vec![2, 4], vec![1.0; 8]);
//! let y = b.dense("fc", x, "fc.weight", w, None).unwrap();
//! b.output(y);
//! let net = b.finish().unwrap();
//! assert_eq!(net.layers.len(), 1);
//! assert_eq!(net.value(y).shape, vec![2]);
//! ```

pub mod tensor;

pub mod builder;
pub mod index_map;
pub mod op;

use std::collections::BTreeMap;
use std::sync::Arc;

use petgraph::graph::DiGraph;

pub use builder::NetworkBuilder;
pub use op::Op;

use crate::graph::tensor::ConstTensor;

pub type ValueId = usize;
pub type NodeId = usize;

/// An activation tensor flowing between nodes.
#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    /// Per-sample shape, e.g. `[C, H, W]` or `[F]`.
    pub shape: Vec<usize>,
}

impl Value {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// One computation.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
}

/// Whether a prunable layer is a convolution or a dense layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum LayerKind {
    Conv,
    Dense,
}

/// A prunable weight and how it is stored.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The stored tensor's name: the mask file key.
    pub name: String,
    pub node: NodeId,
    pub kind: LayerKind,
    /// Canonical shape: `[out, in/groups, kh, kw]` or `[out, in]`.
    pub shape: Vec<usize>,
    /// The shape of the tensor as stored in the source.
    pub stored_shape: Vec<usize>,
    /// `stored_index[c]` is the stored flat index of canonical element `c`;
    /// `None` when the two layouts coincide.
    pub stored_index: Option<Arc<Vec<u32>>>,
    /// Whether the layer is pruned when no `--include` glob is given
    /// ([`crate::methods::selection::Selection`]). True for every layer the
    /// builder registers; a reader clears it with
    /// [`NetworkBuilder::exclude_by_default`] for weights that stay dense
    /// unless named (embeddings, `lm_head`).
    pub default_selected: bool,
}

impl Layer {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Output and input node counts `(n_out, n_in)` of the canonical layout.
    pub fn fan(&self) -> (usize, usize) {
        (self.shape[0], self.shape[1..].iter().product())
    }

    /// Convert a bitset in stored order into canonical order.
    pub fn canonical_from_stored(&self, stored: &crate::bitset::BitSet) -> crate::bitset::BitSet {
        match &self.stored_index {
            None => stored.clone(),
            Some(ix) => {
                crate::bitset::BitSet::from_fn(self.numel(), |c| stored.get(ix[c] as usize))
            }
        }
    }

    /// Convert a canonical bitset into the stored order.
    pub fn stored_from_canonical(&self, canon: &crate::bitset::BitSet) -> crate::bitset::BitSet {
        match &self.stored_index {
            None => canon.clone(),
            Some(ix) => {
                let mut out = crate::bitset::BitSet::new(self.numel());
                for c in canon.ones() {
                    out.set(ix[c] as usize, true);
                }
                out
            }
        }
    }
}

/// A layer's magnitude keys ([`ConstTensor::magnitude_keys`]) in the
/// canonical layout: straight from the stored tensor when the layouts
/// agree (a billion-weight checkpoint is never decoded whole), else
/// permuted once.
pub enum MagnitudeKeys<'a> {
    Stored(&'a str, &'a ConstTensor),
    /// The keys, and whether every weight is finite.
    Permuted(&'a str, Vec<u32>, bool),
}

impl MagnitudeKeys<'_> {
    /// Append the keys of canonical weights `range` to `out`; an input
    /// error naming the weight when one of them is NaN or infinite.
    pub fn fill(
        &self,
        range: std::ops::Range<usize>,
        out: &mut Vec<u32>,
    ) -> crate::error::Result<()> {
        let (name, finite) = match self {
            Self::Stored(name, t) => (name, t.magnitude_keys(range, out)?),
            Self::Permuted(name, keys, finite) => {
                out.extend_from_slice(&keys[range]);
                (name, *finite)
            }
        };
        if !finite {
            return Err(crate::error::Error::input(format!(
                "weight '{name}' has NaN or infinite values: a magnitude ranking of it is meaningless"
            )));
        }
        Ok(())
    }
}

/// Named constant tensors: weights, biases, BatchNorm statistics.
#[derive(Clone, Default, Debug)]
pub struct ParamStore {
    tensors: BTreeMap<String, ConstTensor>,
}

impl ParamStore {
    pub fn insert(&mut self, name: impl Into<String>, t: ConstTensor) {
        self.tensors.insert(name.into(), t);
    }

    pub fn get(&self, name: &str) -> Option<&ConstTensor> {
        self.tensors.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &ConstTensor)> {
        self.tensors.iter()
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

/// A network: values, nodes in topological order, prunable layers, parameters.
#[derive(Clone, Debug)]
pub struct Network {
    pub name: String,
    pub values: Vec<Value>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    pub layers: Vec<Layer>,
    pub params: ParamStore,
    /// Connectivity: one graph node per [`Node`], edges carry the value id.
    pub graph: DiGraph<NodeId, ValueId>,
}

impl Network {
    /// The input shapes the network was built for, batch first (batch 1):
    /// `name=1x3x224x224`, several joined by `;`. Effective masks are exact
    /// for these shapes, so reports and mask files record them.
    pub fn input_signature(&self) -> String {
        self.inputs
            .iter()
            .map(|&v| {
                let dims: Vec<String> = std::iter::once(1)
                    .chain(self.values[v].shape.iter().copied())
                    .map(|d| d.to_string())
                    .collect();
                format!("{}={}", self.values[v].name, dims.join("x"))
            })
            .collect::<Vec<_>>()
            .join(";")
    }

    pub fn value(&self, v: ValueId) -> &Value {
        &self.values[v]
    }

    /// Total prunable weights.
    pub fn prunable_count(&self) -> usize {
        self.layers.iter().map(Layer::numel).sum()
    }

    /// Index of the layer owning weight `name`.
    pub fn layer_index(&self, name: &str) -> Option<usize> {
        self.layers.iter().position(|l| l.name == name)
    }

    /// The weight of layer `li` in canonical layout (`[out, in/groups, kh, kw]`
    /// or `[out, in]`), as f32, whatever order the source stored it in.
    pub fn canonical_weights(&self, li: usize) -> crate::error::Result<Vec<f32>> {
        let l = &self.layers[li];
        let t = self
            .params
            .get(&l.name)
            .ok_or_else(|| crate::error::Error::internal(format!("weight '{}' missing", l.name)))?;
        let v = t.to_f32()?;
        Ok(match &l.stored_index {
            None => v,
            Some(ix) => ix.iter().map(|&i| v[i as usize]).collect(),
        })
    }

    /// Layer `li`'s [`ConstTensor::magnitude_keys`] in the canonical
    /// layout, to be read range by range.
    pub fn magnitude_keys(&self, li: usize) -> crate::error::Result<MagnitudeKeys<'_>> {
        let l = &self.layers[li];
        let t = self
            .params
            .get(&l.name)
            .ok_or_else(|| crate::error::Error::internal(format!("weight '{}' missing", l.name)))?;
        Ok(match &l.stored_index {
            None => MagnitudeKeys::Stored(&l.name, t),
            Some(ix) => {
                let mut stored = Vec::with_capacity(ix.len());
                let finite = t.magnitude_keys(0..ix.len(), &mut stored)?;
                let canonical = ix.iter().map(|&i| stored[i as usize]).collect();
                MagnitudeKeys::Permuted(&l.name, canonical, finite)
            }
        })
    }

    /// For each value, the nodes that read it.
    pub fn consumers(&self) -> Vec<Vec<NodeId>> {
        let mut c = vec![Vec::new(); self.values.len()];
        for (n, node) in self.nodes.iter().enumerate() {
            for &v in &node.inputs {
                if !c[v].contains(&n) {
                    c[v].push(n);
                }
            }
        }
        c
    }

    /// The layer index of each node, for nodes that own a prunable weight.
    pub fn layer_of_node(&self) -> Vec<Option<usize>> {
        let mut m = vec![None; self.nodes.len()];
        for (i, l) in self.layers.iter().enumerate() {
            m[l.node] = Some(i);
        }
        m
    }
}
