//! Weight gradients by a reverse pass over the network's own node list:
//! the gradients SNIP, GraSP, SNIP-it and SynFlow score with.
//!
//! candle's autograd gives the same numbers, at a cost that dominated a
//! SNIP pass once the convolutions were fast: it starts every gradient as
//! a tensor of zeros and adds each contribution into a new tensor (three
//! activation-sized buffers where one will do), and it keeps every
//! activation and every gradient until the whole pass ends. Here the
//! forward pass (`Executor::record`) keeps the values, and the reverse
//! pass walks the evaluated nodes backwards, passing a gradient on as is
//! when a value has one reader, adding only where values join, and
//! dropping each value and its gradient as soon as its producer is done.
//! Only values that depend on a weight get a gradient (the first conv's
//! input gradient is never computed).
//!
//! The heavy nodes call the backward functions of this crate's ops
//! directly (convolutions with their fused epilogue, dense layers as two
//! matrix products, also over leading axes (a sequence's positions are
//! rows: the weight gradient sums over them), max pools, masked weights);
//! ReLU passes gradient where its output is positive (PyTorch's rule, as
//! the fused conv epilogue); reshapes and same-shape sums pass it through;
//! sigmoids and the broadcasting Add, Sub and Mul of two activations (the
//! gates of SiLU, hard-swish and squeeze-and-excite) are done by hand too.
//! Every other node (Where, Div, Pow, Max, Min, MatMul of activations,
//! reductions and normalisations, element maps, the other functions) is
//! differentiated on its own by candle (its forward re-run on copies of its
//! inputs), so each op the executor runs is covered: the executor builds
//! them only from candle ops with a backward pass. Floor, Ceil, Round and
//! Sign pass no gradient, in candle's pass as in ours. Devices other than
//! the CPU, and dtypes other than f32 and f64, use candle's autograd for
//! the whole pass.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use maskforge::autodiff::backward::{weight_gradients, Seed};
//! use maskforge::autodiff::executor::{Executor, Mode};
//! let net = maskforge::zoo::build("lenet5", 0).unwrap();
//! let ex = Executor::new(&net, &Device::Cpu, DType::F64).unwrap();
//! let x = Tensor::ones((2, 1, 28, 28), DType::F64, &Device::Cpu).unwrap();
//! let ours = weight_gradients(&ex, &x, None, Mode::Eval, Seed::Sum).unwrap();
//! // candle's autograd on the same pass.
//! let theirs = ex.logits(&x, None, Mode::Eval).unwrap().sum_all().unwrap().backward().unwrap();
//! for (g, w) in ours.iter().zip(&ex.weights) {
//!     let (a, b) = (g.as_ref().unwrap(), theirs.get(w.as_tensor()).unwrap());
//!     let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
//!     assert!(diff < 1e-9);
//! }
//! ```

use candle_core::{DType, Device, Tensor, Var};

use crate::autodiff::executor::{Executor, Mode, Recording, Step, StepKind};
use crate::error::{Error, Result};
use crate::graph::op::{Activation, Op, PoolKind};
use crate::mask::MaskSet;

/// The scalar differentiated, as a function of the logits.
#[derive(Clone, Copy)]
pub enum Seed<'a> {
    /// Mean cross-entropy of `logits / temperature` against `labels` (`u32`):
    /// one label per sample, or token ids `[n, len]` against logits
    /// `[n, len, vocab]`, where position `t` predicts id `t + 1` (a causal
    /// language model's loss, as transformers shifts it).
    CrossEntropy {
        labels: &'a Tensor,
        temperature: f64,
    },
    /// The sum of the logits (SynFlow's `R`).
    Sum,
    /// Half the squared output, averaged over the batch: a label-free
    /// objective for outputs that are not class scores (detection maps,
    /// sequences), where no cross-entropy against labels exists.
    Energy,
}

impl Seed<'_> {
    /// The seed as a function of `logits` (differentiable).
    fn apply(&self, logits: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Seed::CrossEntropy {
                labels,
                temperature,
            } => {
                // A classifier ending in a global pool (SqueezeNet) gives
                // `[N, C, 1, 1]`.
                let logits = if logits.dims().iter().skip(2).all(|&d| d == 1) {
                    logits.flatten_from(1)?
                } else {
                    logits.clone()
                };
                if labels.rank() == 2 && logits.rank() == 3 {
                    next_token_loss(&(logits / *temperature)?, labels)?
                } else {
                    candle_nn::loss::cross_entropy(&(logits / *temperature)?, labels)?
                }
            }
            Seed::Sum => logits.sum_all()?,
            Seed::Energy => (logits.sqr()?.sum_all()? * (0.5 / logits.dim(0)? as f64))?,
        })
    }

    /// Its gradient at `logits`.
    pub(crate) fn gradient(&self, logits: &Tensor) -> Result<Tensor> {
        match self {
            Seed::Sum => return Ok(logits.ones_like()?),
            Seed::Energy => return Ok((logits / logits.dim(0)? as f64)?),
            Seed::CrossEntropy { .. } => {}
        }
        let z = Var::from_tensor(logits)?;
        let g = self.apply(z.as_tensor())?.backward()?;
        g.get(z.as_tensor())
            .cloned()
            .ok_or_else(|| Error::internal("backward: no gradient at the logits"))
    }
}

/// Mean cross-entropy of `logits[:, t]` against `ids[:, t + 1]`.
fn next_token_loss(logits: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let (n, len, vocab) = logits.dims3()?;
    if len < 2 {
        return Err(Error::input(
            "a next-token loss needs sequences of at least 2 tokens",
        ));
    }
    let predicted = logits
        .narrow(1, 0, len - 1)?
        .reshape((n * (len - 1), vocab))?;
    let targets = ids.narrow(1, 1, len - 1)?.reshape(n * (len - 1))?;
    Ok(candle_nn::loss::cross_entropy(&predicted, &targets)?)
}

/// The gradient of `seed` with respect to every layer's weight (canonical
/// layout, the executor's [`Executor::weights`] order) for the batch `x`
/// with `masks` applied; `None` where no gradient reaches a layer.
pub fn weight_gradients(
    ex: &Executor,
    x: &Tensor,
    masks: Option<&MaskSet>,
    mode: Mode,
    seed: Seed,
) -> Result<Vec<Option<Tensor>>> {
    // The ops' own backward functions take f32 and f64 on the CPU.
    if !ours(ex) {
        return candle_gradients(ex, x, masks, mode, seed);
    }
    Ok(reverse(ex, x, masks, mode, |z| seed.gradient(z), false, false)?.weights)
}

/// [`weight_gradients`] at the masked weights themselves: the gradient with
/// respect to `w * mask` (`|w| * mask` in [`Mode::Linear`]), before the
/// mask and `|w|`'s sign are applied, so it equals [`weight_gradients`] up
/// to sign at the kept weights and is not zero at the pruned ones. For a
/// scorer that reads only the kept weights' `|g * w|` (SynFlow's rounds):
/// one weight-sized pass per layer and pass fewer. Where our reverse pass
/// does not run, [`weight_gradients`] itself.
pub fn masked_weight_gradients(
    ex: &Executor,
    x: &Tensor,
    masks: Option<&MaskSet>,
    mode: Mode,
    seed: Seed,
) -> Result<Vec<Option<Tensor>>> {
    if !ours(ex) {
        return candle_gradients(ex, x, masks, mode, seed);
    }
    Ok(reverse(ex, x, masks, mode, |z| seed.gradient(z), false, true)?.weights)
}

/// What [`parameter_gradients`] returns.
pub struct Gradients {
    /// Per layer, as [`weight_gradients`].
    pub weights: Vec<Option<Tensor>>,
    /// Per stored bias of a layer (a Conv's or dense layer's, by its name):
    /// its gradient, where one reaches it.
    pub biases: Vec<(String, Tensor)>,
}

/// The gradients of the weights and of the layers' biases for the batch
/// `x`, where `seed` is given the logits (the forward pass's own, no second
/// pass) and returns the loss's gradient at them: the training step
/// ([`crate::train`]) reads its loss and accuracy from the same logits.
/// Our reverse pass on the CPU in f32 and f64 only.
pub fn parameter_gradients(
    ex: &Executor,
    x: &Tensor,
    masks: Option<&MaskSet>,
    mode: Mode,
    seed: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Gradients> {
    if !ours(ex) {
        return Err(Error::input(
            "training runs on the CPU in f32 or f64 (our reverse pass)",
        ));
    }
    reverse(ex, x, masks, mode, seed, true, false)
}

pub(crate) fn ours(ex: &Executor) -> bool {
    matches!(ex.device(), Device::Cpu) && matches!(ex.dtype(), DType::F32 | DType::F64)
}

/// The reverse pass; bias gradients only when `biases`; with `at_masked`
/// the weight gradients at the masked weights
/// ([`masked_weight_gradients`]).
fn reverse(
    ex: &Executor,
    x: &Tensor,
    masks: Option<&MaskSet>,
    mode: Mode,
    seed: impl FnOnce(&Tensor) -> Result<Tensor>,
    biases: bool,
    at_masked: bool,
) -> Result<Gradients> {
    let rec = ex.record(x, masks, mode)?;
    let pass = Pass {
        masks,
        mode,
        biases,
        at_masked,
        keep: false,
    };
    Ok(reverse_over(ex, rec.values, &rec.steps, rec.target, seed, pass)?.0)
}

/// The weight gradients (as [`weight_gradients`]) of a recorded pass, and
/// the gradient of every value it computed (`None` where none reaches):
/// what a Hessian-vector product on the same batch reuses
/// ([`crate::autodiff::hvp`]). The recording is left as it was.
pub(crate) fn gradients_of_recording(
    ex: &Executor,
    rec: &Recording,
    masks: Option<&MaskSet>,
    mode: Mode,
    seed: Seed,
) -> Result<(PerLayer, PerValue)> {
    let pass = Pass {
        masks,
        mode,
        biases: false,
        at_masked: false,
        keep: true,
    };
    let values = rec.values.clone();
    let (g, kept) = reverse_over(
        ex,
        values,
        &rec.steps,
        rec.target,
        |z| seed.gradient(z),
        pass,
    )?;
    Ok((g.weights, kept))
}

/// One optional tensor per layer (weight gradients).
pub type PerLayer = Vec<Option<Tensor>>;
/// One optional tensor per value of the network (value gradients).
pub type PerValue = Vec<Option<Tensor>>;

/// How [`reverse_over`] runs: `keep` returns every value's gradient.
#[derive(Clone, Copy)]
struct Pass<'a> {
    masks: Option<&'a MaskSet>,
    mode: Mode,
    biases: bool,
    at_masked: bool,
    keep: bool,
}

fn reverse_over(
    ex: &Executor,
    mut values: Vec<Option<Tensor>>,
    steps: &[Step],
    target: usize,
    seed: impl FnOnce(&Tensor) -> Result<Tensor>,
    pass: Pass,
) -> Result<(Gradients, Vec<Option<Tensor>>)> {
    let Pass {
        masks,
        mode,
        biases,
        at_masked,
        keep,
    } = pass;
    let net = ex.network();
    let needs = needs_gradient(ex, steps, values.len());
    let mut grads: Vec<Option<Tensor>> = vec![None; values.len()];
    let mut kept: Vec<Option<Tensor>> = Vec::new();
    if keep {
        kept = vec![None; values.len()];
    }
    let logits = values[target]
        .as_ref()
        .ok_or_else(|| Error::internal("backward: no logits"))?;
    grads[target] = Some(seed(logits)?);
    let mut out: Vec<Option<Tensor>> = vec![None; ex.weights.len()];
    let mut bias_grads: Vec<(String, Tensor)> = Vec::new();
    for step in steps.iter().rev() {
        let y = values[step.out].take();
        let Some(dy) = grads[step.out].take() else {
            continue;
        };
        if keep {
            kept[step.out] = Some(dy.clone());
        }
        let y = y.ok_or_else(|| Error::internal("backward: a value was not kept"))?;
        let node = &net.nodes[step.node];
        let ins = node
            .inputs
            .iter()
            .map(|&v| {
                values[v]
                    .clone()
                    .ok_or_else(|| Error::internal("backward: an input was not kept"))
            })
            .collect::<Result<Vec<_>>>()?;
        let need: Vec<bool> = node.inputs.iter().map(|&v| needs[v]).collect();
        let (dins, dw, db) = step_gradients(ex, step, &ins, &need, &y, &dy, mode, biases)?;
        if let Some((name, g)) = db {
            match bias_grads.iter_mut().find(|(n, _)| *n == name) {
                Some((_, acc)) => *acc = (&*acc + g)?,
                None => bias_grads.push((name, g)),
            }
        }
        if let Some((layer, dw)) = dw {
            let g = if at_masked {
                dw
            } else {
                crate::autodiff::ops::masked::masked_weight_backward(
                    ex.weights[layer].as_tensor(),
                    masks.map(|m| &m.layers[layer]),
                    mode == Mode::Linear,
                    &dw,
                )?
            };
            accumulate(&mut out[layer], g)?;
        }
        for ((&v, g), need) in node.inputs.iter().zip(dins).zip(need) {
            if let (Some(g), true) = (g, need) {
                accumulate(&mut grads[v], g)?;
            }
        }
    }
    let gradients = Gradients {
        weights: out,
        biases: bias_grads,
    };
    Ok((gradients, kept))
}

/// The same with candle's autograd over the whole pass.
fn candle_gradients(
    ex: &Executor,
    x: &Tensor,
    masks: Option<&MaskSet>,
    mode: Mode,
    seed: Seed,
) -> Result<Vec<Option<Tensor>>> {
    let grads = seed.apply(&ex.logits(x, masks, mode)?)?.backward()?;
    Ok(ex
        .weights
        .iter()
        .map(|w| grads.get(w.as_tensor()).cloned())
        .collect())
}

/// Per value: whether it depends on a weight (only those need gradients).
pub(crate) fn needs_gradient(ex: &Executor, steps: &[Step], values: usize) -> Vec<bool> {
    let net = ex.network();
    let mut needs = vec![false; values];
    for s in steps {
        let layer = !matches!(s.kind, StepKind::Plain);
        needs[s.out] = layer || net.nodes[s.node].inputs.iter().any(|&v| needs[v]);
    }
    needs
}

pub(crate) fn accumulate(slot: &mut Option<Tensor>, g: Tensor) -> Result<()> {
    *slot = Some(match slot.take() {
        None => g,
        Some(a) => (a + g)?,
    });
    Ok(())
}

/// Input gradients (where `need`ed) and the layer's masked-weight
/// gradient of one step, for the output gradient `dy`; with `bias`, also
/// the gradient of the layer's bias, by its name.
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn step_gradients(
    ex: &Executor,
    step: &Step,
    ins: &[Tensor],
    need: &[bool],
    y: &Tensor,
    dy: &Tensor,
    mode: Mode,
    bias: bool,
) -> Result<(
    Vec<Option<Tensor>>,
    Option<(usize, Tensor)>,
    Option<(String, Tensor)>,
)> {
    let node = &ex.network().nodes[step.node];
    match (&step.kind, &node.op) {
        (StepKind::Conv { layer, w, epi }, Op::Conv { conv, bias: b, .. }) => {
            let bias = b.as_ref().filter(|_| bias);
            let (dx, dw, db) = crate::autodiff::ops::conv::conv2d_backward(
                &ins[0],
                w,
                y,
                dy,
                conv.window,
                conv.groups,
                epi,
                need[0],
                bias.is_some(),
            )?;
            let db = bias.cloned().zip(db);
            Ok((vec![dx], Some((*layer, dw)), db))
        }
        (StepKind::Dense { layer, w }, Op::Dense { bias: b, .. }) => {
            let (out_f, in_f) = w.dims2()?;
            let dy2 = dy.reshape(((), out_f))?;
            let x2 = ins[0].reshape(((), in_f))?;
            let dw = crate::autodiff::ops::gemm::product(&dy2.t()?, &x2)?;
            let dx = if need[0] {
                Some(crate::autodiff::ops::gemm::product(&dy2, w)?.reshape(ins[0].shape())?)
            } else {
                None
            };
            let db = match b.as_ref().filter(|_| bias) {
                Some(b) => Some((b.clone(), dy2.sum(0)?)),
                None => None,
            };
            Ok((vec![dx], Some((*layer, dw)), db))
        }
        (StepKind::Plain, _) => Ok((
            plain_gradients(ex, step.node, ins, need, y, dy, mode)?,
            None,
            None,
        )),
        _ => Err(Error::internal("backward: a step does not match its node")),
    }
}

/// Input gradients of a node that is not a layer.
pub(crate) fn plain_gradients(
    ex: &Executor,
    ni: usize,
    ins: &[Tensor],
    need: &[bool],
    y: &Tensor,
    dy: &Tensor,
    mode: Mode,
) -> Result<Vec<Option<Tensor>>> {
    if !need.iter().any(|&n| n) {
        return Ok(vec![None; ins.len()]);
    }
    let same_shapes = ins.iter().all(|t| t.shape() == y.shape());
    let op = &ex.network().nodes[ni].op;
    // In linear mode some ops read as the path norm, not as themselves:
    // differentiate what the forward pass computed.
    let path_norm =
        mode == Mode::Linear && matches!(op, Op::Activation(Activation::Sigmoid) | Op::Binary(_));
    if path_norm {
        return local_gradients(ex, ni, ins, dy, mode);
    }
    Ok(match op {
        Op::Reshape | Op::Identity => vec![Some(dy.reshape(ins[0].shape())?)],
        Op::Add if same_shapes => vec![Some(dy.clone()); ins.len()],
        Op::Activation(Activation::Relu) if ex.pswish().is_none() => {
            let positive = y.gt(0.0)?.to_dtype(dy.dtype())?;
            vec![Some(dy.mul(&positive)?)]
        }
        Op::Activation(Activation::Relu) => {
            // PSwish x s(bx): s + b x s (1 - s).
            let b = ex.pswish().unwrap_or(1.0);
            let x = &ins[0];
            let sg = crate::autodiff::ops::activation::activation(&(x * b)?, Activation::Sigmoid)?;
            let d = (&sg + ((x * b)? * &sg)?.mul(&sg.affine(-1.0, 1.0)?)?)?;
            vec![Some(dy.mul(&d)?)]
        }
        Op::Activation(Activation::Sigmoid) => {
            vec![Some(dy.mul(&y.mul(&y.affine(-1.0, 1.0)?)?)?)]
        }
        Op::Binary(f) => {
            match crate::autodiff::ops::binary::backward(
                *f,
                &ins[0],
                &ins[1],
                dy,
                [need[0], need[1]],
            )? {
                Some(g) => g.into(),
                None => local_gradients(ex, ni, ins, dy, mode)?,
            }
        }
        Op::Pool(p) if p.kind == PoolKind::Max => {
            vec![Some(crate::autodiff::ops::maxpool::max_pool2d_backward(
                &ins[0], dy, p.kernel, p.window, p.ceil,
            )?)]
        }
        _ => local_gradients(ex, ni, ins, dy, mode)?,
    })
}

/// Input gradients of node `ni` by candle's autograd on that node alone:
/// its forward re-run on copies of the inputs, `sum(y * dy)` differentiated.
fn local_gradients(
    ex: &Executor,
    ni: usize,
    ins: &[Tensor],
    dy: &Tensor,
    mode: Mode,
) -> Result<Vec<Option<Tensor>>> {
    let vars = ins
        .iter()
        .map(|t| Ok(Var::from_tensor(&t.detach())?))
        .collect::<Result<Vec<_>>>()?;
    let tracked: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = ex.eval_plain(ni, &tracked, mode)?;
    let g = (y * dy.detach())?.sum_all()?.backward()?;
    Ok(vars.iter().map(|v| g.get(v.as_tensor()).cloned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_token_loss_shifts_the_targets() {
        // One sequence of 3 tokens over a vocabulary of 2; positions 0 and 1
        // predict ids[1] = 1 and ids[2] = 0; position 2 predicts nothing.
        let dev = candle_core::Device::Cpu;
        let logits = Tensor::new(&[[[0.0f64, 1.0], [2.0, -1.0], [5.0, 5.0]]], &dev).unwrap();
        let ids = Tensor::new(&[[1u32, 1, 0]], &dev).unwrap();
        let lse = |a: f64, b: f64| (a.exp() + b.exp()).ln();
        let want = ((lse(0.0, 1.0) - 1.0) + (lse(2.0, -1.0) - 2.0)) / 2.0;
        let got: f64 = next_token_loss(&logits, &ids).unwrap().to_scalar().unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
}
