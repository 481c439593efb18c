//! Dead factors: where a product of two activations cuts a path.
//!
//! CONVENTIONS ("What effective means on any graph", "Dead factors"): at a
//! product of two activations, a path through one factor continues only
//! where the other factor is not identically zero in the masked network. A
//! factor element is *alive* when a path from the input reaches it or, when
//! none does, when its constant value is not 0. That constant value is what
//! the masked network computes there for any input: weights times mask,
//! the real biases, activation functions and normalisation statistics. One
//! forward pass of the masked network with every input 0 gives it
//! ([`crate::autodiff::executor::Executor::zero_input_values`], f64), and
//! it is computed only when some product has a factor element that no path
//! reaches opposite one that a path does.
//!
//! The products ([`Product`]):
//! - `Mul` (elementwise, broadcasting): `out = a * b`; a path through `a`
//!   continues to `out[e]` only when `b`'s element of `e` is alive, and
//!   vice versa.
//! - `Div`: `out = a / b = a * (1 / b)`. `1 / b` is never 0, so a path
//!   through the numerator always continues; a path through the
//!   denominator continues only where the numerator is alive (a zero
//!   numerator kills, a zero denominator is not a factor).
//! - `MatMul` of two activations: `out[m, n] = sum_j a[m, j] b[j, n]`; a
//!   path through `a[m, j]` reaches `out[m, n]` only when `b[j, n]` is
//!   alive, and a path through `b[j, n]` only when `a[m, j]` is.
//!
//! Every other function of several activations (Add, Sub, Pow, Max, Min,
//! Where) keeps the rule of a sum: every operand reaches the output.
//!
//! Examples (the hand-derived cases of `tests/dead_factors.rs`): SiLU(0) = 0,
//! so a SwiGLU unit `silu(gate x) * up x` whose gate row is pruned (no gate
//! bias) kills its up row and down column; sigmoid(0) = 0.5, so an SE gate
//! whose branch is pruned kills nothing; a key dimension with no kept
//! weight and no bias is 0, so the scores `q k^T` do not depend on the
//! matching query dimension.
//!
//! Should the executor be unable to run the network (it runs every graph
//! maskforge reads; this is a safeguard), every factor counts as alive, the
//! rule of a sum, in the graph method and the float definition alike.

use crate::bitset::BitSet;
use crate::graph::op::{Activation, Binary, Op};
use crate::graph::{Network, ValueId};
use crate::mask::MaskSet;

/// A product of two activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    Mul,
    Div,
    MatMul,
}

impl Product {
    /// The product `op` computes, if it is one.
    pub fn of(op: &Op) -> Option<Self> {
        match op {
            Op::Binary(Binary::Mul) => Some(Product::Mul),
            Op::Binary(Binary::Div) => Some(Product::Div),
            Op::MatMul => Some(Product::MatMul),
            _ => None,
        }
    }

    /// True when a path through operand `partner`'s partner (the other
    /// operand) depends on operand `k` being alive: always, except the
    /// numerator of a Div never depends on the denominator.
    pub fn gates(self, k: usize) -> bool {
        !(self == Product::Div && k == 1)
    }
}

/// True when the liveness of operand `k` of a product can change what the
/// product reaches: some element of it is not reached (`mine`) opposite a
/// reached element of the other operand (`other`), at a common output
/// element (elementwise, broadcasting) or a common inner index (MatMul, a
/// superset). Elsewhere either both carry paths (and a reached element is
/// alive) or the other carries none: the product then reaches what a sum
/// would.
pub fn matters(
    p: Product,
    k: usize,
    shapes: [&[usize]; 2],
    out_shape: &[usize],
    mine: &BitSet,
    other: &BitSet,
) -> bool {
    if !p.gates(k) || mine.count_ones() == mine.len() || other.count_ones() == 0 {
        return false;
    }
    if p == Product::MatMul {
        let d = crate::analysis::elements::MatMulDims::new(shapes[0], shapes[1]);
        // The inner indices j of elements with `bits.get(e) == want`.
        let inner = |bits: &BitSet, left: bool, want: bool| {
            let mut js = BitSet::new(d.k);
            for e in 0..bits.len() {
                if bits.get(e) == want {
                    js.set(if left { e % d.k } else { (e / d.n) % d.k }, true);
                }
            }
            js
        };
        let mut js = inner(mine, k == 0, false);
        js.and_with(&inner(other, k == 1, true));
        return js.count_ones() > 0;
    }
    let o = bcast(other, shapes[1 - k], out_shape);
    let m = bcast(mine, shapes[k], out_shape);
    o.words().iter().zip(m.words()).any(|(o, m)| o & !m != 0)
}

/// `bits` over `from` broadcast onto `to` (numpy rules).
pub(crate) fn bcast(bits: &BitSet, from: &[usize], to: &[usize]) -> BitSet {
    if from == to {
        return bits.clone();
    }
    let src = crate::analysis::elements::broadcast_source(from, to);
    BitSet::from_fn(to.iter().product(), |e| bits.get(src(e)))
}

/// True when the network has a product of two activations.
pub fn has_products(net: &Network) -> bool {
    net.nodes.iter().any(|n| Product::of(&n.op).is_some())
}

/// True when value `v` is never 0 whatever the weights: a sigmoid, exp,
/// softplus or softmax (through reshapes, transposes and identities). Such
/// a factor is alive everywhere without evaluating it (and no underflow of
/// a very negative argument can make it look dead).
pub fn never_zero(net: &Network, v: ValueId) -> bool {
    let mut v = v;
    loop {
        let Some(node) = net.nodes.iter().find(|n| n.output == v) else {
            return false;
        };
        match &node.op {
            Op::Reshape | Op::Transpose(_) | Op::Identity => v = node.inputs[0],
            Op::Activation(Activation::Sigmoid | Activation::Exp | Activation::Softplus)
            | Op::Softmax(_) => return true,
            _ => return false,
        }
    }
}

/// The operands whose liveness some product reads and that may be 0.
pub fn factor_values(net: &Network) -> Vec<ValueId> {
    let mut v: Vec<ValueId> = net
        .nodes
        .iter()
        .filter_map(|n| Product::of(&n.op).map(|p| (p, n)))
        .flat_map(|(p, n)| {
            (0..2)
                .filter(move |&k| p.gates(k))
                .map(move |k| n.inputs[k])
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v.retain(|&x| !never_zero(net, x));
    v
}

/// The non-zero elements of the constant values of `wanted`: one forward
/// pass of the masked network (`masks`; weights times mask, real biases and
/// functions) with every input 0, in f64, up to value `until` when given.
/// A NaN counts as non-zero. `None` when the network cannot be run.
pub fn constant_nonzero(
    net: &Network,
    masks: &MaskSet,
    wanted: &[ValueId],
    until: Option<ValueId>,
) -> Option<Vec<Option<BitSet>>> {
    use crate::autodiff::executor::Executor;
    use candle_core::{DType, Device};
    if wanted.is_empty() {
        return Some(vec![None; net.values.len()]);
    }
    // Most often every factor is 0 at a zero input (bias-free LLM blocks):
    // then no weight is read (a billion-weight model would be materialised
    // in f64 by the executor).
    let zero = zero_at_zero_input(net);
    if wanted.iter().all(|&v| zero[v]) {
        let mut out = vec![None; net.values.len()];
        for &v in wanted {
            out[v] = Some(BitSet::new(net.values[v].numel()));
        }
        return Some(out);
    }
    let run = || -> crate::error::Result<Vec<Option<BitSet>>> {
        let ex = Executor::new(net, &Device::Cpu, DType::F64)?;
        let vals = ex.zero_input_values(Some(masks), until)?;
        let mut out = vec![None; net.values.len()];
        for &v in wanted {
            let n = net.values[v].numel();
            out[v] = Some(match &vals[v] {
                Some(t) => {
                    let x: Vec<f64> = t.flatten_all()?.to_vec1()?;
                    if x.len() != n {
                        return Err(crate::error::Error::internal("constant value shape"));
                    }
                    BitSet::from_fn(n, |e| x[e] != 0.0)
                }
                // Not computed (past `until`): nothing known, so alive.
                None => BitSet::full(n),
            });
        }
        Ok(out)
    };
    run().ok()
}

/// Which values are 0 everywhere when every input is 0, whatever the
/// weights and masks, proved op by op from the biases and functions alone
/// (`W 0 = 0`); `false` where it cannot be told without running the net.
pub fn zero_at_zero_input(net: &Network) -> Vec<bool> {
    use crate::graph::op::{MixKind, Norm, Reduce};
    let all_zero = |p: &str| {
        net.params
            .get(p)
            .and_then(|t| t.to_f32().ok())
            .is_some_and(|v| v.iter().all(|&x| x == 0.0))
    };
    let mut zero = vec![false; net.values.len()];
    for &v in &net.inputs {
        zero[v] = true;
    }
    for node in &net.nodes {
        let z = |k: usize| zero[node.inputs[k]];
        let all = node.inputs.iter().all(|&v| zero[v]);
        zero[node.output] = match &node.op {
            Op::Conv { bias, .. } | Op::Dense { bias, .. } => {
                z(0) && bias.as_deref().is_none_or(all_zero)
            }
            Op::Norm(Norm::MulConst(_) | Norm::Lrn { .. } | Norm::Prelu(_)) => z(0),
            Op::Norm(Norm::AddConst(p)) => z(0) && all_zero(p),
            Op::Norm(Norm::Const {
                f: Binary::Mul | Binary::Div,
                const_first: false,
                ..
            }) => z(0),
            Op::Norm(Norm::Const {
                f: Binary::Sub | Binary::Add,
                param,
                ..
            }) => z(0) && all_zero(param),
            Op::Norm(_) => false,
            Op::Activation(a) => z(0) && maps_zero_to_zero(*a),
            Op::Pool(_) | Op::GlobalPool(_) | Op::Reshape | Op::Transpose(_) | Op::Identity => z(0),
            Op::Add | Op::Concat(_) | Op::Binary(Binary::Add | Binary::Sub) => all,
            Op::Binary(Binary::Mul) | Op::MatMul => z(0) || z(1),
            // 0 / d is 0 where d is not 0: a square root of a positive
            // offset added to a mean of squares (RMSNorm, LayerNorm written out).
            Op::Binary(Binary::Div) => z(0) && positive_root(net, node.inputs[1]),
            Op::Mix(m) => match &m.kind {
                MixKind::Reduce { f, .. } => z(0) && *f != Reduce::LogSumExp,
                MixKind::Normalize { bias, .. } => z(0) && bias.as_deref().is_none_or(all_zero),
            },
            Op::Gather(map) => all && map.consts.iter().all(|&c| c == 0.0),
            _ => false,
        };
    }
    zero
}

/// `f(0) == 0`.
fn maps_zero_to_zero(a: Activation) -> bool {
    use Activation::*;
    match a {
        Relu
        | LeakyRelu(_)
        | Tanh
        | Gelu
        | GeluTanh
        | Silu
        | Elu(_)
        | HardSwish
        | Erf
        | Sqrt
        | Neg
        | Abs
        | Sign
        | Mish
        | Selu { .. }
        | Celu(_)
        | Softsign
        | Sin
        | Floor
        | Ceil
        | Round => true,
        Clip(lo, hi) => lo <= 0.0 && hi >= 0.0,
        _ => false,
    }
}

/// `v` is `sqrt(c + mean(x * x))` (or a sum) with every `c > 0`: never 0.
fn positive_root(net: &Network, v: ValueId) -> bool {
    use crate::graph::op::{MixKind, Norm, Reduce};
    let producer = |v: ValueId| net.nodes.iter().find(|n| n.output == v);
    let Some(sqrt) = producer(v).filter(|n| n.op == Op::Activation(Activation::Sqrt)) else {
        return false;
    };
    let Some(add) = producer(sqrt.inputs[0]) else {
        return false;
    };
    let Op::Norm(Norm::AddConst(c)) = &add.op else {
        return false;
    };
    let positive = net
        .params
        .get(c)
        .and_then(|t| t.to_f32().ok())
        .is_some_and(|v| v.iter().all(|&x| x > 0.0));
    let is_square = |sq: &crate::graph::Node| match &sq.op {
        Op::Binary(Binary::Mul) => sq.inputs[0] == sq.inputs[1],
        Op::Norm(Norm::Const {
            f: Binary::Pow,
            param,
            const_first: false,
        }) => net
            .params
            .get(param)
            .and_then(|t| t.to_f32().ok())
            .is_some_and(|v| v.iter().all(|&x| x == 2.0)),
        _ => false,
    };
    let squares = producer(add.inputs[0]).is_some_and(|r| match &r.op {
        Op::Mix(m) => match m.kind {
            MixKind::Reduce {
                f: Reduce::SumSquare | Reduce::L2,
                ..
            } => true,
            MixKind::Reduce {
                f: Reduce::Mean | Reduce::Sum,
                ..
            } => producer(r.inputs[0]).is_some_and(is_square),
            _ => false,
        },
        _ => false,
    });
    positive && squares
}

/// The constant values a liveness pass needs, computed at most once, when
/// a product first needs them.
pub(crate) struct Constants<'a> {
    net: &'a Network,
    /// `None`: every factor alive, the rule of a sum.
    masks: Option<&'a MaskSet>,
    /// Non-zero elements per value (`None` inside: the network cannot run).
    cache: Option<Option<Vec<Option<BitSet>>>>,
    wanted: Option<Vec<ValueId>>,
}

impl<'a> Constants<'a> {
    pub fn of_masks(net: &'a Network, masks: &'a MaskSet) -> Self {
        Self {
            net,
            masks: Some(masks),
            cache: None,
            wanted: None,
        }
    }

    /// Every factor counts as alive: a product joins its operands as a sum
    /// does (the rule before dead factors).
    pub fn sum_rule(net: &'a Network) -> Self {
        Self {
            net,
            masks: None,
            cache: None,
            wanted: None,
        }
    }

    /// The non-zero constant elements of value `v`, a factor of a product;
    /// `None` when every element counts as alive (the rule of a sum, a
    /// factor that is never 0, a network that cannot run).
    pub fn nonzero(&mut self, v: ValueId) -> Option<&BitSet> {
        let masks = self.masks?;
        let net = self.net;
        let wanted = self.wanted.get_or_insert_with(|| factor_values(net));
        if wanted.binary_search(&v).is_err() {
            // Never 0: alive everywhere.
            return None;
        }
        if self.cache.is_none() {
            let wanted = self.wanted.as_deref().unwrap_or_default();
            self.cache = Some(constant_nonzero(net, masks, wanted, last_product(net)));
        }
        self.cache
            .as_ref()
            .and_then(|c| c.as_ref())
            .and_then(|c| c[v].as_ref())
    }
}

/// The output of the last product node: the forward pass needs go no further.
fn last_product(net: &Network) -> Option<ValueId> {
    net.nodes
        .iter()
        .rev()
        .find(|n| Product::of(&n.op).is_some())
        .map(|n| n.output)
}
