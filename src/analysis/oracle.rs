//! The float definition of effective sparsity, computed with candle: the
//! independent check of [`crate::analysis::effective`].
//!
//! Vysogorets & Kempe (papers/effective-sparsity-igq.txt, Sec. 3) call a kept
//! weight active iff `dR/dw != 0` in the linearised network: weights
//! `|w| * mask`, activations, normalisations and biases removed, max-pool
//! replaced by average pooling, input all ones, `R = sum(output)`. This module
//! runs exactly that in f64 with candle's autograd. After every prunable layer
//! the activations are divided by their (detached) maximum: a positive scale
//! changes no zero pattern but keeps deep networks from overflowing or
//! underflowing. It is slow by design (a full forward and backward pass); the
//! graph pass in [`crate::analysis::effective`] is the production path.
//!
//! ```
//! use maskforge::{zoo, mask::MaskSet, analysis::oracle, analysis::effective};
//! let net = zoo::build("lenet5", 0).unwrap();
//! let m = MaskSet::dense(&net);
//! assert_eq!(oracle::effective_masks(&net, &m).unwrap(), effective::effective_masks(&net, &m));
//! ```

use candle_core::{DType, Device, Tensor, Var};

use crate::bitset::BitSet;
use crate::error::{Error, Result};
use crate::graph::op::{Op, Pool};
use crate::graph::Network;
use crate::mask::MaskSet;

/// Canonical-order |w| * mask values of layer `li` as f64.
fn masked_abs(net: &Network, li: usize, mask: &BitSet) -> Result<Vec<f64>> {
    let v = net.canonical_weights(li)?;
    Ok((0..v.len())
        .map(|c| if mask.get(c) { v[c].abs() as f64 } else { 0.0 })
        .collect())
}

fn same_or_err(a: [usize; 2], what: &str) -> Result<usize> {
    if a[0] == a[1] {
        Ok(a[0])
    } else {
        Err(Error::input(format!(
            "path-norm check: non-square {what} {a:?}"
        )))
    }
}

fn pad_spatial(x: &Tensor, pads: [usize; 4]) -> Result<Tensor> {
    Ok(x.pad_with_zeros(2, pads[0], pads[2])?
        .pad_with_zeros(3, pads[1], pads[3])?)
}

fn avg_pool(x: &Tensor, p: &Pool, in_hw: [usize; 2], out_hw: [usize; 2]) -> Result<Tensor> {
    if p.window.dilation != [1, 1] {
        return Err(Error::input("path-norm check: dilated pools"));
    }
    let mut pads = p.window.pads;
    // Extra bottom/right padding so that floor division yields the ceil-mode size.
    for a in 0..2 {
        let need = (out_hw[a] - 1) * p.window.stride[a] + p.kernel[a];
        let have = in_hw[a] + pads[a] + pads[a + 2];
        pads[a + 2] += need.saturating_sub(have);
    }
    let x = pad_spatial(x, pads)?;
    // A depthwise conv with a ones kernel: the window sum, which has the
    // zeros of the average and, unlike candle's avg-pool, a backward pass
    // for overlapping windows.
    let c = x.dim(1)?;
    let k = Tensor::ones((c, 1, p.kernel[0], p.kernel[1]), DType::F64, x.device())?;
    let s = same_or_err(p.window.stride, "pool stride")?;
    Ok(x.conv2d(&k, 0, s, 1, c)?)
}

/// The active masks by the float definition.
pub fn effective_masks(net: &Network, masks: &MaskSet) -> Result<MaskSet> {
    masks.check_fits(net)?;
    let dev = Device::Cpu;
    let layer_of = net.layer_of_node();
    let mut vars: Vec<Var> = Vec::with_capacity(net.layers.len());
    for (li, l) in net.layers.iter().enumerate() {
        let v = masked_abs(net, li, &masks.layers[li])?;
        vars.push(Var::from_tensor(&Tensor::from_vec(
            v,
            l.shape.clone(),
            &dev,
        )?)?);
    }
    let mut vals: Vec<Option<Tensor>> = vec![None; net.values.len()];
    for &i in &net.inputs {
        let mut s = vec![1];
        s.extend(&net.values[i].shape);
        vals[i] = Some(Tensor::ones(s, DType::F64, &dev)?);
    }
    for (ni, node) in net.nodes.iter().enumerate() {
        let x = |k: usize| vals[node.inputs[k]].clone().expect("topological order");
        let in_shape = &net.values[node.inputs[0]].shape;
        let out_shape = &net.values[node.output].shape;
        let y = match &node.op {
            Op::Binary(_) | Op::Where | Op::MatMul | Op::Mix(_) | Op::Gather(_) => {
                unimplemented!("WIP #11: {}", node.op.kind())
            }
            Op::Conv { conv, .. } => {
                let w = vars[layer_of[ni].unwrap()].as_tensor();
                let s = same_or_err(conv.window.stride, "stride")?;
                let d = same_or_err(conv.window.dilation, "dilation")?;
                let xp = pad_spatial(&x(0), conv.window.pads)?;
                rescale(&xp.conv2d(w, 0, s, d, conv.groups)?)?
            }
            Op::Dense { .. } => {
                let w = vars[layer_of[ni].unwrap()].as_tensor();
                rescale(&x(0).matmul(&w.t()?)?)?
            }
            Op::Pool(p) => avg_pool(
                &x(0),
                p,
                [in_shape[1], in_shape[2]],
                [out_shape[1], out_shape[2]],
            )?,
            Op::GlobalPool(_) => {
                let t = x(0);
                let mut t2 = t.clone();
                for d in (2..t.rank()).rev() {
                    t2 = t2.mean_keepdim(d)?;
                }
                t2
            }
            Op::Norm(_) | Op::Activation(_) | Op::Identity | Op::Softmax(_) | Op::LogSoftmax(_) => {
                x(0)
            }
            Op::Reshape => {
                let mut s = vec![1];
                s.extend(out_shape);
                x(0).reshape(s)?
            }
            Op::Transpose(p) => {
                let mut perm = vec![0];
                perm.extend(p.iter().map(|a| a + 1));
                x(0).permute(perm)?.contiguous()?
            }
            Op::Add => {
                let mut acc = x(0);
                for k in 1..node.inputs.len() {
                    acc = acc.broadcast_add(&x(k))?;
                }
                acc
            }
            Op::Concat(axis) => {
                let parts: Vec<Tensor> = (0..node.inputs.len()).map(x).collect();
                Tensor::cat(&parts, axis + 1)?
            }
        };
        vals[node.output] = Some(y);
    }
    let mut r: Option<Tensor> = None;
    for &o in &net.outputs {
        let s = vals[o].as_ref().unwrap().sum_all()?;
        r = Some(match r {
            None => s,
            Some(a) => (a + s)?,
        });
    }
    let grads = r.expect("an output").backward()?;
    let layers = vars
        .iter()
        .enumerate()
        .map(|(li, v)| {
            let g: Vec<f64> = match grads.get(v.as_tensor()) {
                Some(g) => g.flatten_all()?.to_vec1()?,
                None => vec![0.0; masks.layers[li].len()],
            };
            Ok(BitSet::from_fn(g.len(), |i| {
                masks.layers[li].get(i) && g[i] != 0.0
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(MaskSet { layers })
}

/// Divide by the detached maximum (when positive): same zeros, bounded scale.
fn rescale(t: &Tensor) -> Result<Tensor> {
    let m = t.max_all()?.to_scalar::<f64>()?;
    if m > 0.0 && m.is_finite() {
        Ok((t / m)?)
    } else {
        Ok(t.clone())
    }
}
