//! Running the internal network with candle: the forward pass the gradient
//! scorers differentiate through.
//!
//! Weights are candle `Var`s in canonical layout, multiplied by the current
//! mask in the forward pass (as Synaptic-Flow's masked layers do), so pruned
//! weights get zero gradient. BatchNorm runs in eval mode (running
//! statistics) or train mode (batch statistics). Max pools on the CPU are
//! [`crate::autodiff::ops::maxpool`]'s op; other pools are built from strided views and
//! elementwise maxima/sums, because candle's own pools have no backward pass
//! for overlapping windows. With [`Mode::Linear`] the network is
//! SynFlow's, as the reference code runs a model: every parameter replaced
//! by its absolute value, every op evaluated as it is. That covers the
//! graph's stored constants that act as weights and biases (BatchNorm's,
//! Mul/Add/Sub/Div by a constant, PRelu's slope, a normalisation's scale
//! and bias); a Pow's exponent and a Max/Min threshold define the function
//! (as Clip's bounds do) and are kept, and so are an element map's weights
//! and constants (interpolation coefficients, padding values), except a
//! masked attention score (`f32::MIN`), which carries no flow and reads 0.
//! ReLU, leaky ReLU and PRelu are evaluated as they are (identity on the
//! positive flow; the reference's behaviour after a BatchNorm that subtracts
//! its mean). Every other op reads as SynFlow's R = 1^T (prod |theta|) 1
//! (Tanaka et al., Eq. 2) reads a chain, the path norm that CONVENTIONS uses
//! for effective sparsity: a smooth or saturating activation (sigmoid,
//! hard-sigmoid, tanh, GELU, ...) is the identity, a product of two
//! activations (a gate) is the sum of its operands, a MatMul of two
//! activations `A @ B` is `A @ 1 + 1 @ B`, and a softmax or normalisation is
//! the sum over its axes. Evaluated as themselves they saturate on the
//! all-ones flow (a sigmoid of 1e3 has gradient 0 in f32; a LayerNorm of
//! equal values is 0), and every score upstream of a detector's sigmoid
//! head or an attention block would be 0. Reductions, pools and element
//! maps are evaluated as they are.
//!
//! Elementwise, binary, matrix, axis-mixing and data-movement ops follow
//! ONNX's definitions ([`crate::autodiff::ops`]); a dense layer also takes
//! inputs with leading axes (`[..., in] -> [..., out]`).
//!
//! Convolutions run as [`crate::autodiff::ops::conv`]'s op, which also does the conv's
//! bias and, where each is the sole reader of the value before it, the
//! BatchNorm (eval and linear modes: a per-channel affine map) and the ReLU
//! that follow: one autograd node per VGG block instead of seven.
//!
//! The forward pass runs either under candle's autograd (the weights are
//! tracked `Var`s) or recorded for [`crate::autodiff::backward`]'s own reverse pass:
//! weights detached, every value kept, the evaluated nodes listed in order.
//!
//! ```
//! use maskforge::{zoo, autodiff::executor::{Executor, Mode}};
//! use candle_core::{Device, DType, Tensor};
//! let net = zoo::build("lenet5", 0).unwrap();
//! let ex = Executor::new(&net, &Device::Cpu, DType::F32).unwrap();
//! let x = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
//! let y = ex.forward(&x, None, Mode::Eval).unwrap();
//! assert_eq!(y.dims(), &[2, 10]);
//! ```

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use rayon::prelude::*;

use crate::autodiff::ops::activation::activation;
use crate::autodiff::ops::binary;
use crate::autodiff::ops::gather::Gather;
use crate::autodiff::ops::{gemm, matmul, mix};
use crate::error::{Error, Result};
use crate::graph::op::{Activation, Binary, MixKind, Norm, Op, Pool, PoolKind};
use crate::graph::{Network, ValueId};
use crate::mask::MaskSet;

/// How to run the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Inference: BatchNorm with running statistics.
    Eval,
    /// BatchNorm with the batch's statistics.
    Train,
    /// SynFlow's linearised net: |parameters|, BatchNorm in eval mode, the
    /// ops themselves unchanged (see the module documentation).
    Linear,
}

/// A network ready to run on a device.
pub struct Executor<'a> {
    net: &'a Network,
    device: Device,
    dtype: DType,
    /// Canonical-layout weights, one per prunable layer.
    pub weights: Vec<Var>,
    params: HashMap<String, Tensor>,
    /// Per Conv node: the BatchNorm and ReLU nodes its op may absorb.
    fusions: Vec<Fusion>,
    /// Per Gather node: its element map as tensors on the device.
    gathers: Vec<Option<Gather>>,
    /// Training's soft activation: every ReLU evaluated as PSwish
    /// `x * sigmoid(beta x)` ([`Executor::set_pswish`]).
    pswish: Option<f64>,
    /// Masked weights kept up to date by the caller
    /// ([`Executor::use_masked_weights`]).
    masked: Option<Vec<Tensor>>,
}

/// The nodes after a convolution that [`crate::autodiff::ops::conv::Epilogue`] can do
/// inside the conv op: a BatchNorm reading only the conv's output, then a
/// ReLU reading only the BatchNorm's (or the conv's) output.
#[derive(Clone, Copy, Debug, Default)]
struct Fusion {
    bn: Option<usize>,
    relu: Option<usize>,
}

impl Fusion {
    fn plan(net: &Network) -> Vec<Fusion> {
        let mut uses = vec![0usize; net.values.len()];
        let mut reader = vec![None; net.values.len()];
        for (ni, node) in net.nodes.iter().enumerate() {
            for &v in &node.inputs {
                uses[v] += 1;
                reader[v] = Some(ni);
            }
        }
        for &v in &net.outputs {
            uses[v] += 1;
        }
        // The node reading `v`, if it is the only use of `v` and `ok` accepts it.
        let sole = |v: usize, ok: &dyn Fn(&Op) -> bool| {
            reader[v].filter(|&r| uses[v] == 1 && ok(&net.nodes[r].op))
        };
        net.nodes
            .iter()
            .map(|node| {
                if !matches!(node.op, Op::Conv { .. }) {
                    return Fusion::default();
                }
                let bn = sole(node.output, &|op| {
                    matches!(op, Op::Norm(Norm::BatchNorm { .. }))
                });
                let last = bn.map_or(node.output, |b| net.nodes[b].output);
                let relu = sole(last, &|op| matches!(op, Op::Activation(Activation::Relu)));
                Fusion { bn, relu }
            })
            .collect()
    }
}

impl<'a> Executor<'a> {
    pub fn new(net: &'a Network, device: &Device, dtype: DType) -> Result<Self> {
        // In parallel: a zoo model's weights are drawn here (VGG-16's 15 M
        // normal samples took a tenth of a SNIP run on one thread).
        let canon = (0..net.layers.len())
            .into_par_iter()
            .map(|li| net.canonical_weights(li))
            .collect::<Result<Vec<_>>>()?;
        let mut weights = Vec::with_capacity(net.layers.len());
        for (v, l) in canon.into_iter().zip(&net.layers) {
            // Built as variables directly: `Var::from_tensor` copies.
            let shape = l.shape.clone();
            weights.push(match dtype {
                DType::F32 => Var::from_vec(v, shape, device)?,
                DType::F64 => Var::from_vec(v.into_iter().map(f64::from).collect(), shape, device)?,
                _ => Var::from_tensor(&Tensor::from_vec(v, shape, device)?.to_dtype(dtype)?)?,
            });
        }
        let mut params = HashMap::new();
        for (name, t) in net.params.iter() {
            if net.layer_index(name).is_some() || !t.dtype().is_float() {
                continue;
            }
            let v = Tensor::from_vec(t.to_f32()?, t.shape.clone(), device)?.to_dtype(dtype)?;
            params.insert(name.clone(), v);
        }
        let gathers = net
            .nodes
            .iter()
            .map(|n| match &n.op {
                Op::Gather(map) => Gather::new(map, dtype, device).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            net,
            device: device.clone(),
            dtype,
            weights,
            params,
            fusions: Fusion::plan(net),
            gathers,
            pswish: None,
            masked: None,
        })
    }

    /// The network it runs.
    pub fn network(&self) -> &'a Network {
        self.net
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Evaluate every ReLU as the pipeline paper's PSwish
    /// `x * sigmoid(beta x)` (`None`: as ReLU again). Training's soft
    /// activation (`maskforge train --activation pswish`): a conv no
    /// longer absorbs the ReLU after it, and the reverse pass
    /// differentiates the PSwish.
    pub fn set_pswish(&mut self, beta: Option<f64>) {
        self.pswish = beta;
    }

    /// The PSwish temperature ReLUs are evaluated with, if any.
    pub fn pswish(&self) -> Option<f64> {
        self.pswish
    }

    /// Take `weights` (one per layer, in canonical layout) as the masked
    /// weights of every recorded pass ([`crate::autodiff::backward`]), in
    /// place of building `w * mask` (`|w| * mask` in linear mode) from the
    /// masks each pass is given: the caller keeps them equal to that, as
    /// [`crate::autodiff::masked_weights::MaskedWeights`] does across
    /// SynFlow's rounds. Passes under candle's autograd still build them.
    pub fn use_masked_weights(&mut self, weights: Vec<Tensor>) {
        self.masked = Some(weights);
    }

    /// A stored float parameter that is not a layer's weight (a bias,
    /// BatchNorm's, a constant operand), as the forward pass reads it.
    pub fn parameter(&self, name: &str) -> Option<&Tensor> {
        self.params.get(name)
    }

    /// Replace such a parameter's values (the same shape; converted to the
    /// executor's dtype and device): training updates the layers' biases
    /// through this, as it updates [`Executor::weights`] with `Var::set`.
    pub fn set_parameter(&mut self, name: &str, t: &Tensor) -> Result<()> {
        let old = self
            .params
            .get_mut(name)
            .ok_or_else(|| Error::internal(format!("parameter '{name}' missing")))?;
        if old.dims() != t.dims() {
            return Err(Error::internal(format!(
                "parameter '{name}': shape {:?} replaced by {:?}",
                old.dims(),
                t.dims()
            )));
        }
        *old = t.to_dtype(self.dtype)?.to_device(&self.device)?;
        Ok(())
    }

    fn param(&self, name: &str, linear: bool) -> Result<Tensor> {
        let t = self
            .params
            .get(name)
            .cloned()
            .ok_or_else(|| Error::internal(format!("parameter '{name}' missing")))?;
        Ok(if linear { t.abs()? } else { t })
    }

    /// The masked weight of layer `li` as used in the forward pass.
    /// `detach`: without candle's autograd (for [`crate::autodiff::backward`]).
    fn weight(
        &self,
        li: usize,
        masks: Option<&MaskSet>,
        linear: bool,
        detach: bool,
    ) -> Result<Tensor> {
        if let Some(w) = self.masked.as_ref().filter(|_| detach) {
            return Ok(w[li].clone());
        }
        let mask = masks.map(|m| &m.layers[li]);
        let w = self.weights[li].as_tensor();
        let w = if detach { w.detach() } else { w.clone() };
        crate::autodiff::ops::masked::masked_weight(&w, mask, linear)
    }

    /// A parameter as f64 values on the host.
    fn host(&self, name: &str, linear: bool) -> Result<Vec<f64>> {
        Ok(self
            .param(name, linear)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1()?)
    }

    /// The epilogue of Conv node `ni` (its bias, and the BatchNorm and ReLU
    /// it absorbs in this mode unless `target` is read in between), with
    /// the absorbed nodes and the value the op produces.
    fn epilogue(
        &self,
        ni: usize,
        bias: Option<&String>,
        mode: Mode,
        target: ValueId,
    ) -> Result<(crate::autodiff::ops::conv::Epilogue, Vec<usize>, ValueId)> {
        let linear = mode == Mode::Linear;
        let nodes = &self.net.nodes;
        let mut epi = crate::autodiff::ops::conv::Epilogue {
            shift: bias.map(|b| self.host(b, linear)).transpose()?,
            ..Default::default()
        };
        let mut absorbed = Vec::new();
        let mut out = nodes[ni].output;
        let f = self.fusions[ni];
        // Batch statistics (train mode) are not a per-channel constant.
        let bn = f.bn.filter(|_| mode != Mode::Train && out != target);
        if let Some(b) = bn {
            let Op::Norm(Norm::BatchNorm {
                scale,
                bias,
                mean,
                var,
                eps,
            }) = &nodes[b].op
            else {
                return Err(Error::internal("executor: fused node is not a BatchNorm"));
            };
            let (g, beta) = (self.host(scale, linear)?, self.host(bias, linear)?);
            let (m, v) = (self.host(mean, linear)?, self.host(var, linear)?);
            // (y + c - m) / sqrt(v + eps) * g + beta = y * a + ((c - m) * a + beta)
            let a: Vec<f64> = (0..g.len())
                .map(|i| g[i] / (v[i] + *eps as f64).sqrt())
                .collect();
            let c = epi.shift.take().unwrap_or_else(|| vec![0.0; a.len()]);
            epi.shift = Some(
                (0..a.len())
                    .map(|i| (c[i] - m[i]) * a[i] + beta[i])
                    .collect(),
            );
            epi.scale = Some(a);
            absorbed.push(b);
            out = nodes[b].output;
        }
        if let Some(r) = f
            .relu
            .filter(|_| out != target && (f.bn.is_none() || bn.is_some()) && self.pswish.is_none())
        {
            epi.relu = true;
            absorbed.push(r);
            out = nodes[r].output;
        }
        Ok((epi, absorbed, out))
    }

    /// Run a batch `x` (`[N, ...input shape]`); returns the first output.
    pub fn forward(&self, x: &Tensor, masks: Option<&MaskSet>, mode: Mode) -> Result<Tensor> {
        self.run_to(x, masks, mode, self.net.outputs[0])
    }

    /// The forward pass up to the logits: a trailing Softmax is skipped, as
    /// the losses apply their own.
    pub fn logits(&self, x: &Tensor, masks: Option<&MaskSet>, mode: Mode) -> Result<Tensor> {
        self.run_to(x, masks, mode, self.logits_value())
    }

    /// The batch's values of any intermediate `value` (e.g. the hidden
    /// activations a neuron scorer reads).
    pub fn value(
        &self,
        x: &Tensor,
        masks: Option<&MaskSet>,
        mode: Mode,
        value: ValueId,
    ) -> Result<Tensor> {
        self.run_to(x, masks, mode, value)
    }

    /// Evaluate nodes in order until `target` is computed.
    fn run_to(
        &self,
        x: &Tensor,
        masks: Option<&MaskSet>,
        mode: Mode,
        target: ValueId,
    ) -> Result<Tensor> {
        let mut vals = self.run(std::slice::from_ref(x), masks, mode, target, None)?;
        vals[target]
            .take()
            .ok_or_else(|| Error::internal("executor: no output"))
    }

    /// The forward pass a reverse pass ([`crate::autodiff::backward`]) differentiates:
    /// up to the logits, weights detached from candle's autograd (nothing
    /// is recorded for it), every computed value kept, and the evaluated
    /// nodes in order.
    pub(crate) fn record(
        &self,
        x: &Tensor,
        masks: Option<&MaskSet>,
        mode: Mode,
    ) -> Result<Recording> {
        let target = self.logits_value();
        let mut steps = Vec::new();
        let values = self.run(
            std::slice::from_ref(x),
            masks,
            mode,
            target,
            Some(&mut steps),
        )?;
        Ok(Recording {
            values,
            steps,
            target,
        })
    }

    /// The value the logits are read from: the output, or the input of a
    /// trailing Softmax (the losses apply their own).
    fn logits_value(&self) -> ValueId {
        let out = self.net.outputs[0];
        match self.net.nodes.iter().find(|n| n.output == out) {
            Some(n) if matches!(n.op, Op::Softmax(_) | Op::LogSoftmax(_)) => n.inputs[0],
            _ => out,
        }
    }

    /// One sample with every graph input 0, in [`Mode::Eval`], weights
    /// detached: every value the network computes (`None` for the values a
    /// conv op absorbs), up to `until` when given. The constant values of
    /// the masked network, as the dead-factor rule of effective sparsity
    /// reads them ([`crate::analysis::factors`]).
    pub fn zero_input_values(
        &self,
        masks: Option<&MaskSet>,
        until: Option<ValueId>,
    ) -> Result<Vec<Option<Tensor>>> {
        let xs = self
            .net
            .inputs
            .iter()
            .map(|&v| {
                let mut s = vec![1];
                s.extend(&self.net.values[v].shape);
                Ok(Tensor::zeros(s, self.dtype, &self.device)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut steps = Vec::new();
        self.run(
            &xs,
            masks,
            Mode::Eval,
            until.unwrap_or(usize::MAX),
            Some(&mut steps),
        )
    }

    /// Evaluate nodes in order until `target` is computed; returns every
    /// value computed. `xs` are the graph inputs in order (only the first
    /// when fewer are given). With `steps`, weights are detached and each
    /// evaluated node is recorded.
    fn run(
        &self,
        xs: &[Tensor],
        masks: Option<&MaskSet>,
        mode: Mode,
        target: ValueId,
        mut steps: Option<&mut Vec<Step>>,
    ) -> Result<Vec<Option<Tensor>>> {
        let net = self.net;
        let linear = mode == Mode::Linear;
        let detach = steps.is_some();
        let layer_of = net.layer_of_node();
        let mut vals: Vec<Option<Tensor>> = vec![None; net.values.len()];
        for (&v, x) in net.inputs.iter().zip(xs) {
            vals[v] = Some(x.to_dtype(self.dtype)?);
        }
        // Nodes a conv op has already computed (its epilogue).
        let mut absorbed = vec![false; net.nodes.len()];
        for (ni, node) in net.nodes.iter().enumerate() {
            if absorbed[ni] {
                continue;
            }
            let ins = node
                .inputs
                .iter()
                .map(|&v| {
                    vals[v].clone().ok_or_else(|| {
                        Error::internal("executor: value used before it is computed")
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let (y, out, kind) = match &node.op {
                Op::Conv { conv, bias, .. } => {
                    let li = layer_of[ni].unwrap();
                    let w = self.weight(li, masks, linear, detach)?;
                    let (epi, nodes, last) = self.epilogue(ni, bias.as_ref(), mode, target)?;
                    for n in nodes {
                        absorbed[n] = true;
                    }
                    let y = crate::autodiff::ops::conv::conv2d_with(
                        &ins[0],
                        &w,
                        conv.window,
                        conv.groups,
                        &epi,
                    )?;
                    (y, last, StepKind::Conv { layer: li, w, epi })
                }
                Op::Dense { bias, .. } => {
                    let li = layer_of[ni].unwrap();
                    let w = self.weight(li, masks, linear, detach)?;
                    let y = dense(&ins[0], &w, detach)?;
                    let y = match bias {
                        Some(b) => y.broadcast_add(&self.param(b, linear)?)?,
                        None => y,
                    };
                    (y, node.output, StepKind::Dense { layer: li, w })
                }
                _ => (
                    self.eval_plain(ni, &ins, mode)?,
                    node.output,
                    StepKind::Plain,
                ),
            };
            vals[out] = Some(y);
            if let Some(steps) = steps.as_deref_mut() {
                steps.push(Step {
                    node: ni,
                    out,
                    kind,
                });
            }
            if out == target {
                break;
            }
        }
        Ok(vals)
    }

    /// Node `ni` in [`Mode::Linear`] when it reads as the path norm rather
    /// than as itself (see the module documentation); `None` otherwise.
    pub(crate) fn path_norm_reading(&self, ni: usize, ins: &[Tensor]) -> Result<Option<Tensor>> {
        let node = &self.net.nodes[ni];
        let x0 = &ins[0];
        let sum_over = |axes: &[usize]| -> Result<Tensor> {
            let mut s = x0.clone();
            for &a in axes {
                s = s.sum_keepdim(a + 1)?;
            }
            Ok(s.broadcast_as(x0.shape())?.contiguous()?)
        };
        Ok(Some(match &node.op {
            Op::Activation(Activation::Relu | Activation::LeakyRelu(_)) => return Ok(None),
            Op::Activation(_) => x0.clone(),
            Op::Binary(_) => binary::binary(Binary::Add, x0, &ins[1])?,
            Op::Where => {
                let xy = binary::binary(Binary::Add, &ins[1], &ins[2])?;
                binary::binary(Binary::Add, x0, &xy)?
            }
            Op::MatMul => {
                let b = &ins[1];
                let left = matmul::matmul(x0, &b.ones_like()?)?;
                let right = matmul::matmul(&x0.ones_like()?, b)?;
                (left + right)?
            }
            Op::Softmax(axis) | Op::LogSoftmax(axis) => sum_over(&[*axis])?,
            Op::Mix(m) if matches!(m.kind, MixKind::Normalize { .. }) => {
                let shape = &self.net.values[node.inputs[0]].shape;
                let view = m.view.as_deref().unwrap_or(shape);
                let mut v = vec![x0.dim(0)?];
                v.extend(view);
                let xv = x0.reshape(v)?;
                let mut s = xv.clone();
                for &a in &m.axes {
                    s = s.sum_keepdim(a + 1)?;
                }
                s.broadcast_as(xv.shape())?.reshape(x0.shape())?
            }
            _ => return Ok(None),
        }))
    }

    /// Node `ni`, neither a conv nor a dense layer, on its inputs `ins`.
    pub(crate) fn eval_plain(&self, ni: usize, ins: &[Tensor], mode: Mode) -> Result<Tensor> {
        let net = self.net;
        let linear = mode == Mode::Linear;
        if linear {
            if let Some(y) = self.path_norm_reading(ni, ins)? {
                return Ok(y);
            }
        }
        let node = &net.nodes[ni];
        let x0 = ins[0].clone();
        Ok(match &node.op {
            Op::Binary(f) => binary::binary(*f, &x0, &ins[1])?,
            Op::Where => binary::where_(&x0, &ins[1], &ins[2])?,
            Op::MatMul => matmul::matmul(&x0, &ins[1])?,
            Op::Mix(m) => {
                let view = m
                    .view
                    .as_deref()
                    .unwrap_or(&net.values[node.inputs[0]].shape);
                match &m.kind {
                    MixKind::Reduce { f, keepdims } => {
                        mix::reduce(&x0, *f, view, &m.axes, *keepdims)?
                    }
                    MixKind::Normalize { eps, scale, bias } => {
                        let p = |n: &Option<String>| n.as_ref().map(|n| self.param(n, linear));
                        mix::normalize(
                            &x0,
                            view,
                            &m.axes,
                            *eps as f64,
                            p(scale).transpose()?.as_ref(),
                            p(bias).transpose()?.as_ref(),
                        )?
                    }
                }
            }
            Op::Gather(_) => {
                let g = self.gathers[ni]
                    .as_ref()
                    .ok_or_else(|| Error::internal("executor: Gather without its map"))?;
                let shape = &net.values[node.output].shape;
                if linear {
                    g.forward_linear(ins, shape)?
                } else {
                    g.forward(ins, shape)?
                }
            }
            Op::Norm(Norm::Const {
                f,
                param,
                const_first,
            }) => {
                // Linear mode: the coefficients and offsets of Add, Sub,
                // Mul and Div (the analogues of weights and biases) as
                // |c|; the power of Pow and the thresholds of Max and Min
                // define the function, as Clip's bounds, and are kept.
                let abs =
                    linear && matches!(f, Binary::Add | Binary::Sub | Binary::Mul | Binary::Div);
                let c = self.param(param, abs)?;
                match (f, *const_first) {
                    // A scalar power: candle's powf is exactly ONNX's Pow.
                    (Binary::Pow, false) if c.elem_count() == 1 => {
                        let e = c.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?[0];
                        x0.powf(e)?
                    }
                    (_, false) => binary::apply(*f, &x0, &c)?,
                    (_, true) => binary::apply(*f, &c, &x0)?,
                }
            }
            Op::Norm(Norm::Prelu(slope)) => {
                // x where positive, slope * x elsewhere; the gradient at 0
                // is the slope's (PyTorch's rule).
                let s = self.param(slope, linear)?;
                let scaled = x0.broadcast_mul(&s)?;
                x0.gt(0.0)?.where_cond(&x0, &scaled)?
            }
            Op::Conv { .. } | Op::Dense { .. } => {
                return Err(Error::internal(
                    "executor: a layer evaluated as a plain node",
                ))
            }
            Op::Norm(Norm::BatchNorm {
                scale,
                bias,
                mean,
                var,
                eps,
            }) => {
                let c = x0.dim(1)?;
                let shape: Vec<usize> = std::iter::once(1)
                    .chain(std::iter::once(c))
                    .chain(std::iter::repeat_n(1, x0.rank() - 2))
                    .collect();
                let r = |t: Tensor| t.reshape(shape.clone());
                let (m, v) = if mode == Mode::Train {
                    let dims: Vec<usize> = (0..x0.rank()).filter(|&d| d != 1).collect();
                    let m = x0.mean_keepdim(dims.clone())?;
                    let v = x0.broadcast_sub(&m)?.sqr()?.mean_keepdim(dims)?;
                    (m, v)
                } else {
                    (r(self.param(mean, linear)?)?, r(self.param(var, linear)?)?)
                };
                let g = r(self.param(scale, linear)?)?;
                let b = r(self.param(bias, linear)?)?;
                let inv = (v + *eps as f64)?.sqrt()?.recip()?;
                x0.broadcast_sub(&m)?
                    .broadcast_mul(&inv)?
                    .broadcast_mul(&g)?
                    .broadcast_add(&b)?
            }
            Op::Norm(Norm::Lrn {
                size,
                alpha,
                beta,
                bias,
            }) => lrn(&x0, *size, *alpha, *beta, *bias)?,
            Op::Norm(Norm::MulConst(p)) => x0.broadcast_mul(&self.param(p, linear)?)?,
            Op::Norm(Norm::AddConst(p)) => x0.broadcast_add(&self.param(p, linear)?)?,
            Op::Activation(Activation::Relu) if self.pswish.is_some() => {
                let beta = self.pswish.unwrap_or(1.0);
                let gate = activation(&(&x0 * beta)?, Activation::Sigmoid)?;
                (x0 * gate)?
            }
            Op::Activation(a) => activation(&x0, *a)?,
            Op::Pool(p) => pool(&x0, p)?,
            Op::GlobalPool(k) => {
                let mut t = x0.clone();
                for d in (2..x0.rank()).rev() {
                    t = match k {
                        PoolKind::Avg => t.mean_keepdim(d)?,
                        PoolKind::Max => t.max_keepdim(d)?,
                    };
                }
                t
            }
            Op::Reshape => {
                let mut s = vec![x0.dim(0)?];
                s.extend(&net.values[node.output].shape);
                x0.reshape(s)?
            }
            Op::Transpose(p) => {
                let mut perm = vec![0];
                perm.extend(p.iter().map(|a| a + 1));
                x0.permute(perm)?.contiguous()?
            }
            Op::Add => {
                let mut acc = x0;
                for t in &ins[1..] {
                    acc = acc.broadcast_add(t)?;
                }
                acc
            }
            Op::Concat(axis) => Tensor::cat(ins, axis + 1)?,
            Op::Identity => x0,
            Op::Softmax(axis) => candle_nn::ops::softmax(&x0, axis + 1)?,
            Op::LogSoftmax(axis) => candle_nn::ops::log_softmax(&x0, axis + 1)?,
        })
    }
}

/// A forward pass kept for a reverse pass: every value computed (indexed
/// by value id), the evaluated nodes in order, and the logits' value.
pub(crate) struct Recording {
    pub values: Vec<Option<Tensor>>,
    pub steps: Vec<Step>,
    pub target: ValueId,
}

/// One evaluated node and the value it produced (a conv's is the last
/// node of its epilogue).
pub(crate) struct Step {
    pub node: usize,
    pub out: ValueId,
    pub kind: StepKind,
}

/// What the reverse pass needs of a step beyond its node.
pub(crate) enum StepKind {
    /// Layer `layer` with masked weight `w` and the epilogue its op ran.
    Conv {
        layer: usize,
        w: Tensor,
        epi: crate::autodiff::ops::conv::Epilogue,
    },
    /// Layer `layer` with masked weight `w`.
    Dense { layer: usize, w: Tensor },
    /// Any other node: [`Executor::eval_plain`].
    Plain,
}

fn pad(x: &Tensor, pads: [usize; 4], value: f64) -> Result<Tensor> {
    if pads == [0; 4] {
        return Ok(x.clone());
    }
    if value == 0.0 {
        return Ok(x
            .pad_with_zeros(2, pads[0], pads[2])?
            .pad_with_zeros(3, pads[1], pads[3])?);
    }
    let (n, c, h, w) = x.dims4()?;
    let full = |shape: (usize, usize, usize, usize)| -> Result<Tensor> {
        Ok((Tensor::ones(shape, x.dtype(), x.device())? * value)?)
    };
    let mut parts = Vec::new();
    if pads[0] > 0 {
        parts.push(full((n, c, pads[0], w))?);
    }
    parts.push(x.clone());
    if pads[2] > 0 {
        parts.push(full((n, c, pads[2], w))?);
    }
    let x = Tensor::cat(&parts, 2)?;
    let h2 = h + pads[0] + pads[2];
    let mut parts = Vec::new();
    if pads[1] > 0 {
        parts.push(full((n, c, h2, pads[1]))?);
    }
    parts.push(x);
    if pads[3] > 0 {
        parts.push(full((n, c, h2, pads[3]))?);
    }
    Ok(Tensor::cat(&parts, 3)?)
}

/// Window positions `(ky, kx)` of a pool as strided views of the padded input.
fn windows(x: &Tensor, p: &Pool, fill: f64) -> Result<Vec<Tensor>> {
    let (_, _, h, w) = x.dims4()?;
    let [oh, ow] = p.output_hw([h, w]);
    let [sh, sw] = p.window.stride;
    let mut pads = p.window.pads;
    // Room for the last (ceil-mode) window and for the reshape below.
    pads[2] += ((oh - 1) * sh + (p.kernel[0] - 1) * p.window.dilation[0] + sh)
        .saturating_sub(h + pads[0] + pads[2]);
    pads[3] += ((ow - 1) * sw + (p.kernel[1] - 1) * p.window.dilation[1] + sw)
        .saturating_sub(w + pads[1] + pads[3]);
    let xp = pad(x, pads, fill)?;
    let (n, c, _, _) = xp.dims4()?;
    let mut out = Vec::with_capacity(p.kernel[0] * p.kernel[1]);
    for ky in 0..p.kernel[0] {
        for kx in 0..p.kernel[1] {
            let (y0, x0) = (ky * p.window.dilation[0], kx * p.window.dilation[1]);
            let v = xp
                .narrow(2, y0, oh * sh)?
                .narrow(3, x0, ow * sw)?
                .reshape((n, c, oh, sh, ow, sw))?
                .narrow(3, 0, 1)?
                .narrow(5, 0, 1)?
                .reshape((n, c, oh, ow))?;
            out.push(v);
        }
    }
    Ok(out)
}

fn pool(x: &Tensor, p: &Pool) -> Result<Tensor> {
    let cpu_float =
        matches!(x.device(), Device::Cpu) && matches!(x.dtype(), DType::F32 | DType::F64);
    match p.kind {
        PoolKind::Max if cpu_float => {
            crate::autodiff::ops::maxpool::max_pool2d(x, p.kernel, p.window, p.ceil)
        }
        PoolKind::Max => {
            let ws = windows(x, p, f64::NEG_INFINITY)?;
            let mut acc = ws[0].clone();
            for v in &ws[1..] {
                acc = acc.maximum(v)?;
            }
            Ok(acc)
        }
        PoolKind::Avg => {
            // ONNX's default count_include_pad = 0: divide by the number of
            // real input positions in each window.
            let ws = windows(x, p, 0.0)?;
            let ones = Tensor::ones(x.dims(), x.dtype(), x.device())?;
            let cs = windows(&ones, p, 0.0)?;
            let mut sum = ws[0].clone();
            let mut count = cs[0].clone();
            for (v, c) in ws[1..].iter().zip(&cs[1..]) {
                sum = (sum + v)?;
                count = (count + c)?;
            }
            Ok((sum / count)?)
        }
    }
}

fn lrn(x: &Tensor, size: usize, alpha: f32, beta: f32, bias: f32) -> Result<Tensor> {
    // b_c = a_c / (bias + alpha/size * sum_{c' in window} a_c'^2)^beta
    let c = x.dim(1)?;
    let sq = x.sqr()?;
    let (lo, hi) = ((size - 1) / 2, size / 2);
    let padded = sq.pad_with_zeros(1, lo, hi)?;
    let mut acc = padded.narrow(1, 0, c)?;
    for k in 1..size {
        acc = (acc + padded.narrow(1, k, c)?)?;
    }
    let denom = ((acc * (alpha as f64 / size as f64))? + bias as f64)?.powf(beta as f64)?;
    Ok((x / denom)?)
}

/// A dense layer's product: `x` (`[N, ..., in]`) times `w^T` (`w` is
/// `[out, in]`) over the last axis, leading axes folded into one.
/// `detached`: nothing is tracked, so the untracked (and, when small,
/// single-threaded) [`gemm::product`] may run it.
pub(crate) fn dense(x: &Tensor, w: &Tensor, detached: bool) -> Result<Tensor> {
    let mul = |a: &Tensor, b: &Tensor| -> Result<Tensor> {
        if detached {
            gemm::product(a, b)
        } else {
            Ok(a.matmul(b)?)
        }
    };
    if x.rank() == 2 {
        return mul(x, &w.t()?);
    }
    let (out_f, in_f) = w.dims2()?;
    let mut shape = x.dims().to_vec();
    let y = mul(&x.reshape(((), in_f))?, &w.t()?)?;
    *shape.last_mut().unwrap() = out_f;
    Ok(y.reshape(shape)?)
}
