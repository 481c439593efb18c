//! The operations of the internal network: what each node computes.
//!
//! Only the facts the algorithms need are kept: a Conv's geometry, a dense
//! layer's sizes, a pool's window. Per-sample shapes (no batch dimension) are
//! stored on the values, not here.
//!
//! ```
//! use maskforge::graph::op::{Conv2d, Window};
//! let c = Conv2d::new(16, 3, [3, 3], Window::same(1, 1), 1);
//! assert_eq!(c.output_hw([32, 32]), [32, 32]);
//! ```

/// Strides, padding and dilation of a 2-D window (a conv kernel or a pool).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub stride: [usize; 2],
    /// Padding as `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    pub dilation: [usize; 2],
}

impl Window {
    /// Stride `s`, symmetric padding `p`, no dilation.
    pub fn same(stride: usize, pad: usize) -> Self {
        Self {
            stride: [stride; 2],
            pads: [pad; 4],
            dilation: [1; 2],
        }
    }

    /// Output extent along axis `a` (0 = rows, 1 = cols) for input extent `n`
    /// and kernel extent `k`; `ceil` rounds up as ONNX pools with `ceil_mode`.
    pub fn out_len(&self, a: usize, n: usize, k: usize, ceil: bool) -> usize {
        let padded = n + self.pads[a] + self.pads[a + 2];
        let span = self.dilation[a] * (k - 1) + 1;
        if padded < span {
            return 0;
        }
        let s = self.stride[a];
        let mut out = (padded - span) / s + 1;
        if ceil && !(padded - span).is_multiple_of(s) {
            out += 1;
            // A last window must start inside the input or left padding.
            if (out - 1) * s >= n + self.pads[a] {
                out -= 1;
            }
        }
        out
    }

    /// Input coordinate read by output coordinate `o` through kernel tap `k`
    /// along axis `a`, or `None` where it falls in the padding.
    #[inline]
    pub fn source(&self, a: usize, o: usize, k: usize, n: usize) -> Option<usize> {
        let q = (o * self.stride[a] + k * self.dilation[a]) as isize - self.pads[a] as isize;
        (q >= 0 && (q as usize) < n).then_some(q as usize)
    }
}

/// A 2-D convolution `[C_out, C_in / groups, kh, kw]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub out_channels: usize,
    pub in_channels: usize,
    pub kernel: [usize; 2],
    pub window: Window,
    pub groups: usize,
}

impl Conv2d {
    pub fn new(
        out_channels: usize,
        in_channels: usize,
        kernel: [usize; 2],
        window: Window,
        groups: usize,
    ) -> Self {
        Self {
            out_channels,
            in_channels,
            kernel,
            window,
            groups,
        }
    }

    pub fn output_hw(&self, hw: [usize; 2]) -> [usize; 2] {
        [
            self.window.out_len(0, hw[0], self.kernel[0], false),
            self.window.out_len(1, hw[1], self.kernel[1], false),
        ]
    }

    /// Input channels per group (the weight's second dimension).
    pub fn in_per_group(&self) -> usize {
        self.in_channels / self.groups
    }

    pub fn out_per_group(&self) -> usize {
        self.out_channels / self.groups
    }

    pub fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }
}

/// A fully connected layer, canonical weight `[out, in]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dense {
    pub out_features: usize,
    pub in_features: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

/// A windowed pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub kind: PoolKind,
    pub kernel: [usize; 2],
    pub window: Window,
    pub ceil: bool,
}

impl Pool {
    pub fn output_hw(&self, hw: [usize; 2]) -> [usize; 2] {
        [
            self.window.out_len(0, hw[0], self.kernel[0], self.ceil),
            self.window.out_len(1, hw[1], self.kernel[1], self.ceil),
        ]
    }
}

/// Elementwise functions of one activation: element to element for
/// connectivity, whatever the function (CONVENTIONS, "What effective means").
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
    Gelu,
    /// GELU's tanh approximation (GPT-2's `gelu_new`, ONNX Gelu `approximate="tanh"`).
    GeluTanh,
    Silu,
    Elu(f32),
    /// `clamp(alpha * x + beta, 0, 1)`.
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    Clip(f32, f32),
    Softplus,
    Erf,
    Sqrt,
    Exp,
    Log,
    Neg,
    Abs,
    Reciprocal,
    Sign,
    Mish,
    /// `gamma * (x if x > 0 else alpha * (exp(x) - 1))`.
    Selu {
        alpha: f32,
        gamma: f32,
    },
    Celu(f32),
    Softsign,
    Sin,
    Cos,
    Floor,
    Ceil,
    Round,
}

/// An elementwise function of two activations (numpy broadcasting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
}

/// The reduction of a [`Mix`] that reduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    Mean,
    Sum,
    Max,
    Min,
    L2,
    SumSquare,
    LogSumExp,
}

/// What an axis-mixing op computes over its slices.
#[derive(Clone, Debug, PartialEq)]
pub enum MixKind {
    /// Reduce the axes (kept as size 1 with `keepdims`, dropped otherwise).
    Reduce { f: Reduce, keepdims: bool },
    /// `(x - mean) / sqrt(var + eps)` over the axes, then the optional
    /// elementwise `scale` and `bias` (broadcast against the input): Layer,
    /// Instance and Group normalisation (groups via [`Mix::view`]).
    Normalize {
        eps: f32,
        scale: Option<String>,
        bias: Option<String>,
    },
}

/// An op whose every output element of a slice reads every input element of
/// that slice: normalisations and reductions over some per-sample axes.
///
/// The axes index `view`, a row-major regrouping of the input shape (Group
/// normalisation views `[C, H, W]` as `[G, C/G, H, W]`); `None` means the
/// input shape itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    pub kind: MixKind,
    pub view: Option<Vec<usize>>,
    pub axes: Vec<usize>,
}

/// Data movement as an explicit per-sample map, so that every algorithm
/// handles Slice, Gather, Split, Expand, Tile, Pad, Resize, DepthToSpace,
/// Where with a constant condition and ConvTranspose's zero insertion alike:
///
/// `out[e] = sum_k weight[e * taps + k] * src[index[e * taps + k]]`
///
/// where `src` is the concatenation of the node's inputs' elements (each in
/// row-major per-sample order) followed by `consts`. An index into `consts`
/// is a constant (padding, a Where branch): it starts no path. Unused slots
/// point at a constant 0 with weight 0. Zero-weight taps are never stored, so
/// a stored tap is a connection.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexMap {
    pub taps: usize,
    pub index: std::sync::Arc<Vec<u32>>,
    /// `None`: every tap has weight 1 (pure data movement).
    pub weight: Option<std::sync::Arc<Vec<f32>>>,
    pub consts: Vec<f32>,
}

impl IndexMap {
    /// Output elements per sample.
    pub fn len(&self) -> usize {
        self.index.len() / self.taps.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The taps of output element `e`: `(source index, weight)`.
    pub fn taps_of(&self, e: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let r = e * self.taps..(e + 1) * self.taps;
        self.index[r.clone()]
            .iter()
            .zip(r)
            .map(|(&i, k)| (i as usize, self.weight.as_ref().map_or(1.0, |w| w[k])))
    }
}

/// Per-channel or elementwise normalisations and maps by constants: element
/// to element for connectivity.
#[derive(Clone, Debug, PartialEq)]
pub enum Norm {
    /// Inference BatchNorm: parameter names of scale, bias, mean, variance.
    BatchNorm {
        scale: String,
        bias: String,
        mean: String,
        var: String,
        eps: f32,
    },
    /// Local response normalisation (AlexNet-era), across channels.
    Lrn {
        size: usize,
        alpha: f32,
        beta: f32,
        bias: f32,
    },
    /// Multiply by a constant tensor (broadcast).
    MulConst(String),
    /// Add a constant tensor (broadcast).
    AddConst(String),
    /// `f(x, c)` (or `f(c, x)` with `const_first`) for a constant tensor `c`
    /// that does not grow `x`: Sub, Div, Pow, Max, Min by constants.
    Const {
        f: Binary,
        param: String,
        const_first: bool,
    },
    /// PRelu: `x` where positive, `slope * x` elsewhere (slope broadcast).
    Prelu(String),
}

/// A node's computation.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Prunable convolution; `weight` names the parameter, `bias` an optional one.
    Conv {
        conv: Conv2d,
        weight: String,
        bias: Option<String>,
    },
    /// Prunable dense layer.
    Dense {
        dense: Dense,
        weight: String,
        bias: Option<String>,
    },
    Norm(Norm),
    Activation(Activation),
    Pool(Pool),
    /// Global pool over all spatial positions; output `[C, 1, 1]`.
    GlobalPool(PoolKind),
    /// Row-major reshape to the output value's shape (Flatten and Reshape).
    Reshape,
    /// Axis permutation of the per-sample dims.
    Transpose(Vec<usize>),
    /// Elementwise sum of two or more values (broadcasting).
    Add,
    /// Concatenation along a per-sample axis.
    Concat(usize),
    /// Dropout at inference, Identity.
    Identity,
    /// Softmax along a per-sample axis.
    Softmax(usize),
    /// Log-softmax along a per-sample axis.
    LogSoftmax(usize),
    /// Elementwise function of two activations, broadcasting; both operands
    /// reach each output element, except where a product's other factor is
    /// identically zero (CONVENTIONS' dead factors, `analysis/factors.rs`).
    Binary(Binary),
    /// `where(cond, x, y)` of three activations, broadcasting.
    Where,
    /// Matrix product of two activations (numpy `matmul` broadcasting):
    /// `out[.., m, n]` reads row `m` of the left and column `n` of the right.
    MatMul,
    /// Normalisation or reduction over axes.
    Mix(Mix),
    /// Data movement by an explicit element map.
    Gather(IndexMap),
}

impl Op {
    /// A short name for tables.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv { .. } => "Conv",
            Op::Dense { .. } => "Dense",
            Op::Norm(Norm::BatchNorm { .. }) => "BatchNorm",
            Op::Norm(Norm::Lrn { .. }) => "LRN",
            Op::Norm(Norm::MulConst(_)) => "Mul(const)",
            Op::Norm(Norm::AddConst(_)) => "Add(const)",
            Op::Norm(Norm::Const { .. }) => "Elementwise(const)",
            Op::Norm(Norm::Prelu(_)) => "PRelu",
            Op::Activation(_) => "Activation",
            Op::Pool(p) if p.kind == PoolKind::Max => "MaxPool",
            Op::Pool(_) => "AvgPool",
            Op::GlobalPool(PoolKind::Max) => "GlobalMaxPool",
            Op::GlobalPool(PoolKind::Avg) => "GlobalAvgPool",
            Op::Reshape => "Reshape",
            Op::Transpose(_) => "Transpose",
            Op::Add => "Add",
            Op::Concat(_) => "Concat",
            Op::Identity => "Identity",
            Op::Softmax(_) => "Softmax",
            Op::LogSoftmax(_) => "LogSoftmax",
            Op::Binary(_) => "Binary",
            Op::Where => "Where",
            Op::MatMul => "MatMul",
            Op::Mix(Mix {
                kind: MixKind::Reduce { .. },
                ..
            }) => "Reduce",
            Op::Mix(_) => "Normalize",
            Op::Gather(_) => "Gather",
        }
    }

    /// The prunable weight this node owns, if any.
    pub fn weight(&self) -> Option<&str> {
        match self {
            Op::Conv { weight, .. } | Op::Dense { weight, .. } => Some(weight),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lengths_follow_the_onnx_formula() {
        // ResNet stem: 224, k7, s2, p3 -> 112; max pool k3 s2 p1 -> 56.
        let c = Conv2d::new(64, 3, [7, 7], Window::same(2, 3), 1);
        assert_eq!(c.output_hw([224, 224]), [112, 112]);
        let p = Pool {
            kind: PoolKind::Max,
            kernel: [3, 3],
            window: Window::same(2, 1),
            ceil: false,
        };
        assert_eq!(p.output_hw([112, 112]), [56, 56]);
        // ceil mode: 13 -> floor((13-3)/2)+1 = 6, ceil gives 6 as well; 14 -> 6 vs 7.
        let pc = Pool {
            ceil: true,
            window: Window::same(2, 0),
            ..p
        };
        assert_eq!(pc.output_hw([14, 14]), [7, 7]);
        assert_eq!(pc.output_hw([13, 13]), [6, 6]);
    }

    #[test]
    fn padding_taps_have_no_source() {
        let w = Window::same(1, 1);
        assert_eq!(w.source(0, 0, 0, 1), None);
        assert_eq!(w.source(0, 0, 1, 1), Some(0));
        assert_eq!(w.source(0, 0, 2, 1), None);
    }
}
