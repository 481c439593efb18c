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
//! A kept weight whose value is exactly 0 (an int8 weight at its zero point
//! in a QDQ model, a trained weight that happens to be 0) is still a kept
//! connection: the mask, not the value, says what is kept (CONVENTIONS:
//! "paths through kept weights"). Such a weight enters with coefficient 1;
//! `|w|` only serves to keep every coefficient positive, and any positive
//! value gives the same zero pattern.
//!
//! The ops of modern graphs are linearised as CONVENTIONS ("What effective
//! means on any graph") reads them: a function of several activations
//! (Add, Sub, Max, Where, ...) is the broadcast *sum* of its operands; a
//! product reads its dead factors ([`crate::analysis::factors`]): with
//! `alive(x)` the 0/1 mask of the elements of `x` that carry flow or have a
//! non-zero constant value in the masked network (not differentiated), a
//! Mul is `A * alive(B) + B * alive(A)`, a Div `A + B * alive(A)` and a
//! MatMul of two activations `A @ alive(B) + alive(A) @ B` (`rowsum(A) +
//! colsum(B)`, broadcast to `[.., m, n]`, when every factor is alive); a normalisation or reduction (Softmax included) is the
//! sum over its axes, broadcast back over the slice when it keeps the
//! shape; an element map sums its taps times `|weight|`, reading constants
//! as 0; a dense layer over leading axes is the same `|w| * mask` product at
//! every position.
//!
//! ```
//! use maskforge::{zoo, mask::MaskSet, analysis::oracle, analysis::effective};
//! let net = zoo::build("lenet5", 0).unwrap();
//! let m = MaskSet::dense(&net);
//! assert_eq!(oracle::effective_masks(&net, &m).unwrap(), effective::effective_masks(&net, &m));
//! ```

use candle_core::{DType, Device, Tensor, Var};

use crate::analysis::factors;
use crate::bitset::BitSet;
use crate::error::{Error, Result};
use crate::graph::builder::{broadcast, matmul_shape};
use crate::graph::op::{Binary, IndexMap, Mix, MixKind, Op, Pool};
use crate::graph::Network;
use crate::mask::MaskSet;

/// Canonical-order |w| * mask values of layer `li` as f64, a kept weight
/// of value 0 as 1 (it is still a connection).
fn masked_abs(net: &Network, li: usize, mask: &BitSet) -> Result<Vec<f64>> {
    let v = net.canonical_weights(li)?;
    Ok((0..v.len())
        .map(|c| match (mask.get(c), v[c].abs() as f64) {
            (false, _) => 0.0,
            (true, 0.0) => 1.0,
            (true, a) => a,
        })
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

/// A 2-D convolution with per-axis `stride`: candle's conv2d takes one
/// stride, so a non-square one runs at stride 1 and keeps every
/// `stride[a]`-th row and column (the same sums, with a backward pass).
fn conv2d_strided(
    x: &Tensor,
    w: &Tensor,
    stride: [usize; 2],
    d: usize,
    groups: usize,
) -> Result<Tensor> {
    if stride[0] == stride[1] {
        return Ok(x.conv2d(w, 0, stride[0], d, groups)?);
    }
    let mut y = x.conv2d(w, 0, 1, d, groups)?;
    for (a, &s) in stride.iter().enumerate() {
        let n = y.dim(a + 2)?;
        let keep: Vec<u32> = (0..n).step_by(s).map(|i| i as u32).collect();
        let ix = Tensor::from_vec(keep.clone(), keep.len(), y.device())?;
        y = y.index_select(&ix, a + 2)?;
    }
    Ok(y)
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
    conv2d_strided(&x, &k, p.window.stride, 1, c)
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
    // Dead factors: the non-zero elements of the constant values of every
    // product's operands (all of them alive when the network cannot run).
    let nonzero = if factors::has_products(net) {
        factors::constant_nonzero(net, masks, &factors::factor_values(net), None)
    } else {
        None
    };
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
        // Operand k of a product as a 0/1 tensor: carrying flow (reached
        // from the input) or a non-zero constant. Not differentiated.
        let alive = |k: usize| -> Result<Tensor> {
            let t = x(k);
            let reached = t.gt(0.0)?.to_dtype(DType::F64)?;
            Ok(
                match nonzero.as_ref().and_then(|n| n[node.inputs[k]].as_ref()) {
                    Some(nz) => {
                        let c: Vec<f64> = (0..nz.len()).map(|e| nz.get(e) as u8 as f64).collect();
                        let c = Tensor::from_vec(c, t.shape(), &dev)?;
                        reached.maximum(&c)?
                    }
                    None => reached.ones_like()?,
                }
                .detach(),
            )
        };
        let y = match &node.op {
            Op::Binary(Binary::Mul) | Op::Binary(Binary::Div) => {
                let (a_shape, b_shape) = (
                    net.values[node.inputs[0]].shape.as_slice(),
                    net.values[node.inputs[1]].shape.as_slice(),
                );
                // Mul: a * alive(b) + b * alive(a). Div: the numerator's
                // path always continues (1 / b is never 0), the
                // denominator's where the numerator is alive.
                let through_a = if matches!(node.op, Op::Binary(Binary::Mul)) {
                    (expand_to(&x(0), a_shape, out_shape)?
                        * expand_to(&alive(1)?, b_shape, out_shape)?)?
                } else {
                    expand_to(&x(0), a_shape, out_shape)?
                };
                let through_b = (expand_to(&x(1), b_shape, out_shape)?
                    * expand_to(&alive(0)?, a_shape, out_shape)?)?;
                (through_a + through_b)?.contiguous()?
            }
            Op::Add | Op::Binary(_) | Op::Where => {
                let parts: Vec<(Tensor, &[usize])> = node
                    .inputs
                    .iter()
                    .enumerate()
                    .map(|(k, &v)| (x(k), net.values[v].shape.as_slice()))
                    .collect();
                broadcast_sum(&parts, out_shape)?
            }
            Op::MatMul if nonzero.is_some() => {
                // a @ alive(b) + alive(a) @ b: a path through a[m, j] reaches
                // out[m, n] where b[j, n] is alive, and vice versa.
                use crate::autodiff::ops::matmul::matmul;
                let y = (matmul(&x(0), &alive(1)?)? + matmul(&alive(0)?, &x(1))?)?;
                rescale(&y)?
            }
            Op::MatMul => {
                let b_shape = &net.values[node.inputs[1]].shape;
                rescale(&matmul_sums(&x(0), in_shape, &x(1), b_shape)?)?
            }
            Op::Mix(mix) => rescale(&mix_sums(&x(0), in_shape, mix, out_shape)?)?,
            Op::Softmax(axis) | Op::LogSoftmax(axis) => {
                let s = x(0).sum_keepdim(axis + 1)?;
                s.broadcast_as(x(0).shape())?.contiguous()?
            }
            Op::Gather(map) => {
                let parts: Vec<Tensor> = (0..node.inputs.len()).map(x).collect();
                gather_sums(&parts, map, out_shape)?
            }
            Op::Dense { .. } if in_shape.len() > 1 => {
                let w = vars[layer_of[ni].unwrap()].as_tensor();
                let features = in_shape[in_shape.len() - 1];
                let rows = x(0).reshape(((), features))?;
                let mut s = vec![1];
                s.extend(out_shape);
                rescale(&rows.matmul(&w.t()?)?.reshape(s)?)?
            }
            Op::Conv { conv, .. } => {
                let w = vars[layer_of[ni].unwrap()].as_tensor();
                let s = conv.window.stride;
                let d = same_or_err(conv.window.dilation, "dilation")?;
                let mut xp = pad_spatial(&x(0), conv.window.pads)?;
                // Rows and columns past the last window are never read; cut
                // them, or candle's backward pass (a transposed conv that
                // cannot produce them) returns a gradient of the wrong shape.
                for a in 0..2 {
                    let used = (out_shape[a + 1] - 1) * s[a] + (conv.kernel[a] - 1) * d + 1;
                    xp = xp.narrow(a + 2, 0, used)?;
                }
                rescale(&conv2d_strided(&xp, w, s, d, conv.groups)?)?
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
            Op::Norm(_) | Op::Activation(_) | Op::Identity => x(0),
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

/// `t` (batch 1, per-sample `shape`) with leading 1s up to `rank`
/// per-sample dims, broadcast to `[1] + to`.
fn expand_to(t: &Tensor, shape: &[usize], to: &[usize]) -> Result<Tensor> {
    let mut s = vec![1; 1 + to.len() - shape.len()];
    s.extend(shape);
    let mut full = vec![1];
    full.extend(to);
    Ok(t.reshape(s)?.broadcast_as(full)?)
}

/// The numpy-broadcast sum of activations of per-sample shapes as given.
fn broadcast_sum(parts: &[(Tensor, &[usize])], out_shape: &[usize]) -> Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for (t, shape) in parts {
        let e = expand_to(t, shape, out_shape)?;
        acc = Some(match acc {
            None => e,
            Some(a) => (a + e)?,
        });
    }
    Ok(acc.expect("an operand").contiguous()?)
}

/// `A @ B` linearised: `rowsum(A)[.., m] + colsum(B)[.., n]`, broadcast to
/// `[.., m, n]` (numpy matmul's batch broadcasting and 1-D rules).
fn matmul_sums(a: &Tensor, a_shape: &[usize], b: &Tensor, b_shape: &[usize]) -> Result<Tensor> {
    let (a2, b2) = crate::graph::builder::as_matrices(a_shape, b_shape);
    let (ra, rb) = (a2.len(), b2.len());
    let mut full = broadcast(&a2[..ra - 2], &b2[..rb - 2])?;
    full.extend([a2[ra - 2], b2[rb - 1]]);
    let mut a_sum = a2.clone();
    a_sum[ra - 1] = 1;
    let mut b_sum = b2.clone();
    b_sum[rb - 2] = 1;
    let rows = a.reshape([&[1][..], &a2].concat())?.sum_keepdim(ra)?;
    let cols = b.reshape([&[1][..], &b2].concat())?.sum_keepdim(rb - 1)?;
    let y = (expand_to(&rows, &a_sum, &full)? + expand_to(&cols, &b_sum, &full)?)?;
    let mut out = vec![1];
    out.extend(matmul_shape(a_shape, b_shape)?);
    Ok(y.contiguous()?.reshape(out)?)
}

/// An axis-mixing op linearised: the sum over its axes of its view, kept
/// as one element per slice (Reduce) or broadcast back over the slice
/// (Normalize).
fn mix_sums(x: &Tensor, in_shape: &[usize], mix: &Mix, out_shape: &[usize]) -> Result<Tensor> {
    let view = mix.view.clone().unwrap_or_else(|| in_shape.to_vec());
    let mut v = vec![1];
    v.extend(&view);
    let xv = x.reshape(v.clone())?;
    let axes: Vec<usize> = mix.axes.iter().map(|a| a + 1).collect();
    let s = xv.sum_keepdim(axes)?;
    let mut out = vec![1];
    out.extend(out_shape);
    match mix.kind {
        // With or without keepdims: the same elements in the same order.
        MixKind::Reduce { .. } => Ok(s.reshape(out)?),
        MixKind::Normalize { .. } => Ok(s.broadcast_as(v)?.contiguous()?.reshape(out)?),
    }
}

/// An element map linearised: `out[e] = sum_k |weight[e, k]| * src[index[e, k]]`
/// over the inputs' elements, in order, followed by the constants read as 0
/// (a constant starts no path).
fn gather_sums(parts: &[Tensor], map: &IndexMap, out_shape: &[usize]) -> Result<Tensor> {
    let dev = Device::Cpu;
    let mut flat: Vec<Tensor> = parts
        .iter()
        .map(|t| t.flatten_all()?.reshape((1, ())))
        .collect::<candle_core::Result<_>>()?;
    flat.push(Tensor::zeros(
        (1, map.consts.len().max(1)),
        DType::F64,
        &dev,
    )?);
    let src = Tensor::cat(&flat, 1)?;
    let index = Tensor::from_vec(map.index.to_vec(), map.index.len(), &dev)?;
    let weight: Vec<f64> = match &map.weight {
        Some(w) => w.iter().map(|&v| v.abs() as f64).collect(),
        None => vec![1.0; map.index.len()],
    };
    let weight = Tensor::from_vec(weight, (1, map.index.len()), &dev)?;
    let taps = (src.index_select(&index, 1)? * weight)?;
    let mut out = vec![1];
    out.extend(out_shape);
    Ok(taps
        .reshape((1, map.len(), map.taps))?
        .sum(2)?
        .reshape(out)?)
}
