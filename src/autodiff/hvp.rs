//! Exact Hessian-vector products `H v` of a loss with respect to the layer
//! weights, by one forward pass of tangents and one reverse pass of
//! gradient pairs (Pearlmutter 1994, "Fast exact multiplication by the
//! Hessian", the R-operator): GraSP's `H g` without finite differences.
//!
//! The forward pass carries, beside each value `a`, its derivative `R{a}`
//! along the weight direction `v`: a layer `z = W a` gives
//! `R{z} = W R{a} + V a`. The reverse pass carries, beside each gradient
//! `d`, its derivative `R{d}`: a layer gives `R{dW} = R{d} a^T + d R{a}^T`
//! (the Hessian-vector product at its weight) and passes on
//! `R{d_a} = W^T R{d} + V^T d`. The loss's own second derivative enters at
//! the logits: for the mean cross-entropy of `z / T`,
//! `R{d_z} = (p * u - p (p . u)) / (T N)` with `p = softmax(z / T)` and
//! `u = R{z} / T`.
//!
//! Covered: networks whose other nodes are piecewise linear in their
//! inputs (ReLU, max and average pools, reshapes, transposes, concats,
//! sums of activations, data movement without constants and sums or means
//! over axes), with convolutions and dense layers whose
//! epilogues (bias, eval-mode BatchNorm, ReLU) the executor fuses. Their
//! second derivative is zero away from the kinks, so the products are
//! exact there; at a kink they take the side the gradient takes (a ReLU
//! at 0 passes nothing, a tied max pool the first maximum). A network with
//! any other node (a sigmoid gate, a normalisation over its input, an
//! attention product) is not covered: [`covers`] says so, and GraSP falls
//! back to a central difference in f64.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use maskforge::autodiff::{backward::Seed, executor::Executor, hvp};
//! let net = maskforge::zoo::build("mlp:3-4-2", 0).unwrap();
//! let ex = Executor::new(&net, &Device::Cpu, DType::F64).unwrap();
//! let x = Tensor::new(&[[1.0f64, -2.0, 0.5]], &Device::Cpu).unwrap();
//! assert!(hvp::covers(&ex, &x).unwrap());
//! let labels = Tensor::new(&[1u32], &Device::Cpu).unwrap();
//! let seed = Seed::CrossEntropy { labels: &labels, temperature: 1.0 };
//! // Along the zero direction the product is zero.
//! let v: Vec<Tensor> = ex.weights.iter().map(|w| w.as_tensor().zeros_like().unwrap()).collect();
//! let hv = hvp::hessian_vector(&ex, &x, None, seed, &v).unwrap().unwrap();
//! let max = hv[0].as_ref().unwrap().abs().unwrap().max_all().unwrap();
//! assert_eq!(max.to_scalar::<f64>().unwrap(), 0.0);
//! ```

use candle_core::{Tensor, D};

use crate::autodiff::backward::{
    accumulate, gradients_of_recording, needs_gradient, ours, plain_gradients, PerLayer, Seed,
};
use crate::autodiff::executor::{dense, Executor, Mode, Recording, StepKind};
use crate::autodiff::ops::conv::{conv2d_backward, conv2d_input_grad, conv2d_with, Epilogue};
use crate::autodiff::ops::maxpool::max_pool2d_tangent;
use crate::error::{Error, Result};
use crate::graph::op::{Activation, Mix, MixKind, Op, PoolKind, Reduce};
use crate::mask::MaskSet;

/// Whether [`hessian_vector`] covers `ex`'s network: our reverse pass runs
/// it (f32 or f64 on the CPU) and every node an eval-mode pass of `sample`
/// evaluates outside the layers' fused epilogues has a tangent rule.
pub fn covers(ex: &Executor, sample: &Tensor) -> Result<bool> {
    if !ours(ex) {
        return Ok(false);
    }
    let rec = ex.record(sample, None, Mode::Eval)?;
    Ok(rec.steps.iter().all(|s| match s.kind {
        StepKind::Plain => piecewise_linear(ex, s.node),
        _ => true,
    }))
}

fn piecewise_linear(ex: &Executor, ni: usize) -> bool {
    match &ex.network().nodes[ni].op {
        Op::Reshape | Op::Identity | Op::Transpose(_) | Op::Concat(_) | Op::Add => true,
        Op::Activation(Activation::Relu) => ex.pswish().is_none(),
        Op::Pool(_) | Op::GlobalPool(PoolKind::Avg) => true,
        // Data movement (Slice, Split, Pad with zeros, ...) and sums or
        // means over axes: linear, no constant term.
        Op::Gather(map) => map.consts.iter().all(|&c| c == 0.0),
        Op::Mix(Mix {
            kind:
                MixKind::Reduce {
                    f: Reduce::Mean | Reduce::Sum,
                    ..
                },
            ..
        }) => true,
        _ => false,
    }
}

/// `H v` of `seed`'s loss for the batch `x` at the executor's weights
/// times `masks`, for the direction `v` (one tensor per layer, canonical
/// shape and the executor's dtype; it should be zero where `masks`
/// prunes): per layer, `None` where no gradient reaches it. `None` when
/// the network or the seed is not covered (see [`covers`]; a next-token
/// loss is not).
pub fn hessian_vector(
    ex: &Executor,
    x: &Tensor,
    masks: Option<&MaskSet>,
    seed: Seed,
    v: &[Tensor],
) -> Result<Option<Vec<Option<Tensor>>>> {
    if !ours(ex) || v.len() != ex.weights.len() {
        return Ok(None);
    }
    let rec = ex.record(x, masks, Mode::Eval)?;
    let Some(tangents) = forward_tangents(ex, &rec, v)? else {
        return Ok(None);
    };
    let logits = value(&rec, rec.target)?;
    let Some(rz) = &tangents[rec.target] else {
        // No weight reaches the logits.
        return Ok(Some(vec![None; ex.weights.len()]));
    };
    let Some(rdz) = seed_tangent(seed, logits, rz)? else {
        return Ok(None);
    };
    let dz = seed.gradient(logits)?;
    reverse_pairs(ex, &rec, &tangents, v, Primal::Seed(dz), rdz).map(Some)
}

/// The gradient `g` of `seed`'s loss for the batch `x` (as
/// [`crate::autodiff::backward::weight_gradients`] gives it) and `H g`,
/// from one recorded forward pass whose value gradients the product
/// reuses: GraSP on one batch, a forward pass and an input gradient per
/// layer cheaper than the gradient and [`hessian_vector`] apart. `None`
/// when not covered (see [`hessian_vector`]).
pub fn gradient_and_hessian_gradient(
    ex: &Executor,
    x: &Tensor,
    masks: Option<&MaskSet>,
    seed: Seed,
) -> Result<Option<(PerLayer, PerLayer)>> {
    if !ours(ex) {
        return Ok(None);
    }
    let rec = ex.record(x, masks, Mode::Eval)?;
    let (g, primal) = gradients_of_recording(ex, &rec, masks, Mode::Eval, seed)?;
    let v = g
        .iter()
        .zip(&ex.weights)
        .map(|(g, w)| match g {
            Some(g) => Ok(g.clone()),
            None => Ok(w.as_tensor().zeros_like()?),
        })
        .collect::<Result<Vec<_>>>()?;
    let Some(tangents) = forward_tangents(ex, &rec, &v)? else {
        return Ok(None);
    };
    let logits = value(&rec, rec.target)?;
    let Some(rz) = &tangents[rec.target] else {
        return Ok(Some((g, vec![None; ex.weights.len()])));
    };
    let Some(rdz) = seed_tangent(seed, logits, rz)? else {
        return Ok(None);
    };
    let hg = reverse_pairs(ex, &rec, &tangents, &v, Primal::Kept(&primal), rdz)?;
    Ok(Some((g, hg)))
}

/// `z` where `y > 0`, else 0: the tangent through a ReLU whose output is
/// `y`, in one parallel pass on the CPU (candle's `gt`, `to_dtype` and `mul`
/// were three serial ones, a tenth of GraSP's serial time on VGG-16).
fn passed_where_positive(z: &Tensor, y: &Tensor) -> Result<Tensor> {
    if !z.device().is_cpu() || z.dims() != y.dims() {
        return Ok(z.mul(&y.gt(0.0)?.to_dtype(z.dtype())?)?);
    }
    Ok(z.contiguous()?
        .apply_op2_no_bwd(&y.contiguous()?, &PassedWherePositive)?)
}

struct PassedWherePositive;

impl candle_core::CustomOp2 for PassedWherePositive {
    fn name(&self) -> &'static str {
        "maskforge-passed-where-positive"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage as S;
        use rayon::prelude::*;
        fn run<T: candle_core::WithDType>(z: &[T], y: &[T]) -> Vec<T> {
            let mut out = vec![T::zero(); z.len()];
            out.par_chunks_mut(1 << 14)
                .zip(z.par_chunks(1 << 14).zip(y.par_chunks(1 << 14)))
                .for_each(|(o, (z, y))| {
                    // A product, as candle's was: a negative `z` masked
                    // gives -0, and the masks stay bit for bit.
                    for ((o, &z), &y) in o.iter_mut().zip(z).zip(y) {
                        *o = z * if y > T::zero() { T::one() } else { T::zero() };
                    }
                });
            out
        }
        let (Some((a1, b1)), Some((a2, b2))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("passed-where-positive: non-contiguous operands")
        };
        let out = match (s1, s2) {
            (S::F32(z), S::F32(y)) => S::F32(run(&z[a1..b1], &y[a2..b2])),
            (S::F64(z), S::F64(y)) => S::F64(run(&z[a1..b1], &y[a2..b2])),
            _ => candle_core::bail!("passed-where-positive: f32 or f64 operands of one dtype"),
        };
        Ok((out, l1.shape().clone()))
    }
}

fn value(rec: &Recording, id: usize) -> Result<&Tensor> {
    rec.values[id]
        .as_ref()
        .ok_or_else(|| Error::internal("hessian-vector product: a value was not kept"))
}

/// Every value's tangent along `v` (`None`: it does not depend on a
/// weight); `None` overall when a node has no tangent rule.
fn forward_tangents(
    ex: &Executor,
    rec: &Recording,
    v: &[Tensor],
) -> Result<Option<Vec<Option<Tensor>>>> {
    let net = ex.network();
    let mut tan: Vec<Option<Tensor>> = vec![None; rec.values.len()];
    for step in &rec.steps {
        let node = &net.nodes[step.node];
        let y = value(rec, step.out)?;
        let input = node.inputs[0];
        tan[step.out] = match (&step.kind, &node.op) {
            (StepKind::Conv { layer, w, epi }, Op::Conv { conv, .. }) => {
                // The epilogue's linear part: its shift is constant, and
                // its ReLU passes where the output is positive.
                let linear = Epilogue {
                    scale: epi.scale.clone(),
                    ..Default::default()
                };
                let (win, groups) = (conv.window, conv.groups);
                let mut z = conv2d_with(value(rec, input)?, &v[*layer], win, groups, &linear)?;
                if let Some(r) = &tan[input] {
                    z = (z + conv2d_with(r, w, win, groups, &linear)?)?;
                }
                if epi.relu {
                    z = passed_where_positive(&z, y)?;
                }
                Some(z)
            }
            (StepKind::Dense { layer, w }, Op::Dense { .. }) => {
                let mut z = dense(value(rec, input)?, &v[*layer], true)?;
                if let Some(r) = &tan[input] {
                    z = (z + dense(r, w, true)?)?;
                }
                Some(z)
            }
            (StepKind::Plain, _) => {
                let rins: Vec<Option<Tensor>> =
                    node.inputs.iter().map(|&i| tan[i].clone()).collect();
                if rins.iter().all(Option::is_none) {
                    None
                } else {
                    let ins = node
                        .inputs
                        .iter()
                        .map(|&i| value(rec, i).cloned())
                        .collect::<Result<Vec<_>>>()?;
                    match plain_tangent(ex, step.node, &ins, &rins, y)? {
                        Some(t) => Some(t),
                        None => return Ok(None),
                    }
                }
            }
            _ => {
                return Err(Error::internal(
                    "hessian-vector product: a step does not match its node",
                ))
            }
        };
    }
    Ok(Some(tan))
}

/// The tangent of a piecewise-linear node's output `y` for its inputs'
/// tangents `rins` (`None`: zero); `None` when the node has no rule.
fn plain_tangent(
    ex: &Executor,
    ni: usize,
    ins: &[Tensor],
    rins: &[Option<Tensor>],
    y: &Tensor,
) -> Result<Option<Tensor>> {
    if !piecewise_linear(ex, ni) {
        return Ok(None);
    }
    let first = || {
        rins[0]
            .clone()
            .ok_or_else(|| Error::internal("hessian-vector product: no tangent to pass on"))
    };
    Ok(Some(match &ex.network().nodes[ni].op {
        Op::Activation(Activation::Relu) => first()?.mul(&y.gt(0.0)?.to_dtype(y.dtype())?)?,
        Op::Pool(p) if p.kind == PoolKind::Max => {
            max_pool2d_tangent(&ins[0], &first()?, p.kernel, p.window, p.ceil)?
        }
        Op::Add => {
            let mut sum: Option<Tensor> = None;
            for r in rins.iter().flatten() {
                let r = r.broadcast_as(y.shape())?;
                sum = Some(match sum {
                    None => r.contiguous()?,
                    Some(s) => (s + r)?,
                });
            }
            sum.ok_or_else(|| Error::internal("hessian-vector product: an empty sum"))?
        }
        // Linear without a constant term: the node itself, on the tangents.
        _ => {
            let filled = rins
                .iter()
                .zip(ins)
                .map(|(r, x)| r.clone().map_or_else(|| x.zeros_like(), Ok))
                .collect::<candle_core::Result<Vec<_>>>()?;
            ex.eval_plain(ni, &filled, Mode::Eval)?
        }
    }))
}

/// The derivative along the logits' tangent `rz` of the seed's gradient
/// at `z`; `None` for a seed not covered (a next-token loss).
fn seed_tangent(seed: Seed, z: &Tensor, rz: &Tensor) -> Result<Option<Tensor>> {
    match seed {
        Seed::Sum => Ok(Some(rz.zeros_like()?)),
        Seed::Energy => Ok(Some((rz / z.dim(0)? as f64)?)),
        Seed::CrossEntropy {
            labels,
            temperature: t,
        } => {
            // As the seed reads them: one label per sample, a global
            // pool's `[N, C, 1, 1]` as `[N, C]`.
            if labels.rank() != 1 || z.dims().iter().skip(2).any(|&d| d != 1) {
                return Ok(None);
            }
            let (z2, r2) = (z.flatten_from(1)?, rz.flatten_from(1)?);
            let n = z2.dim(0)? as f64;
            let p = candle_nn::ops::softmax(&(z2 / t)?, D::Minus1)?;
            let pu = (&p * (r2 / t)?)?;
            let dot = pu.sum_keepdim(1)?;
            let r = ((pu - p.broadcast_mul(&dot)?)? / (t * n))?;
            Ok(Some(r.reshape(z.shape())?))
        }
    }
}

/// Where the reverse pass of pairs gets the plain gradients `d`.
enum Primal<'a> {
    /// From the logits' gradient, passed back alongside `R{d}`.
    Seed(Tensor),
    /// Every value's, kept from a reverse pass of the same recording.
    Kept(&'a [Option<Tensor>]),
}

/// The reverse pass of pairs `(d, R{d})` from the logits' `R{d}`, `rdz`:
/// per layer, the sum of `R{dW}`.
fn reverse_pairs(
    ex: &Executor,
    rec: &Recording,
    tan: &[Option<Tensor>],
    v: &[Tensor],
    primal: Primal,
    rdz: Tensor,
) -> Result<Vec<Option<Tensor>>> {
    let net = ex.network();
    let needs = needs_gradient(ex, &rec.steps, rec.values.len());
    let mut d: Vec<Option<Tensor>> = vec![None; rec.values.len()];
    let mut rd: Vec<Option<Tensor>> = vec![None; rec.values.len()];
    let kept = match primal {
        Primal::Seed(dz) => {
            d[rec.target] = Some(dz);
            None
        }
        Primal::Kept(k) => Some(k),
    };
    // Pass `d` back too, unless it is kept.
    let propagate = kept.is_none();
    rd[rec.target] = Some(rdz);
    let mut hv: Vec<Option<Tensor>> = vec![None; ex.weights.len()];
    for step in rec.steps.iter().rev() {
        let dy = match kept {
            Some(k) => k[step.out].clone(),
            None => d[step.out].take(),
        };
        let (Some(dy), rdy) = (dy, rd[step.out].take()) else {
            continue;
        };
        let node = &net.nodes[step.node];
        let y = value(rec, step.out)?;
        let input = node.inputs[0];
        match (&step.kind, &node.op) {
            (StepKind::Conv { layer, w, epi }, Op::Conv { conv, .. }) => {
                let (x, need) = (value(rec, input)?, needs[input]);
                let (win, groups) = (conv.window, conv.groups);
                if need && propagate {
                    let dx = conv2d_input_grad(x, w, y, &dy, win, groups, epi)?;
                    accumulate(&mut d[input], dx)?;
                }
                // W^T R{d} and R{d} a^T.
                if let Some(rdy) = &rdy {
                    let (rdx, rdw, _) =
                        conv2d_backward(x, w, y, rdy, win, groups, epi, need, false)?;
                    accumulate(&mut hv[*layer], rdw)?;
                    if let Some(rdx) = rdx {
                        accumulate(&mut rd[input], rdx)?;
                    }
                }
                // V^T d and d R{a}^T.
                match &tan[input] {
                    Some(rx) => {
                        let (rdx, rdw, _) =
                            conv2d_backward(rx, &v[*layer], y, &dy, win, groups, epi, need, false)?;
                        accumulate(&mut hv[*layer], rdw)?;
                        if let Some(rdx) = rdx {
                            accumulate(&mut rd[input], rdx)?;
                        }
                    }
                    None if need => {
                        let rdx = conv2d_input_grad(x, &v[*layer], y, &dy, win, groups, epi)?;
                        accumulate(&mut rd[input], rdx)?;
                    }
                    None => {}
                }
            }
            (StepKind::Dense { layer, w }, Op::Dense { .. }) => {
                let (x, need) = (value(rec, input)?, needs[input]);
                let (out_f, in_f) = w.dims2()?;
                let rows = |t: &Tensor, f: usize| t.reshape(((), f));
                let product = crate::autodiff::ops::gemm::product;
                let dy2 = rows(&dy, out_f)?;
                if need && propagate {
                    accumulate(&mut d[input], product(&dy2, w)?.reshape(x.shape())?)?;
                }
                if let Some(rdy) = &rdy {
                    let rdy2 = rows(rdy, out_f)?;
                    accumulate(&mut hv[*layer], product(&rdy2.t()?, &rows(x, in_f)?)?)?;
                    if need {
                        accumulate(&mut rd[input], product(&rdy2, w)?.reshape(x.shape())?)?;
                    }
                }
                if let Some(rx) = &tan[input] {
                    accumulate(&mut hv[*layer], product(&dy2.t()?, &rows(rx, in_f)?)?)?;
                }
                if need {
                    accumulate(
                        &mut rd[input],
                        product(&dy2, &v[*layer])?.reshape(x.shape())?,
                    )?;
                }
            }
            (StepKind::Plain, _) => {
                let ins = node
                    .inputs
                    .iter()
                    .map(|&i| value(rec, i).cloned())
                    .collect::<Result<Vec<_>>>()?;
                let need: Vec<bool> = node.inputs.iter().map(|&i| needs[i]).collect();
                // Piecewise linear: the same Jacobian carries both.
                let dx = if propagate {
                    plain_gradients(ex, step.node, &ins, &need, y, &dy, Mode::Eval)?
                } else {
                    vec![None; ins.len()]
                };
                let rdx = match &rdy {
                    Some(r) => plain_gradients(ex, step.node, &ins, &need, y, r, Mode::Eval)?,
                    None => vec![None; ins.len()],
                };
                for (k, &i) in node.inputs.iter().enumerate() {
                    if !need[k] {
                        continue;
                    }
                    if let Some(g) = dx[k].clone() {
                        accumulate(&mut d[i], g)?;
                    }
                    if let Some(g) = rdx[k].clone() {
                        accumulate(&mut rd[i], g)?;
                    }
                }
            }
            _ => {
                return Err(Error::internal(
                    "hessian-vector product: a step does not match its node",
                ))
            }
        }
    }
    Ok(hv)
}
