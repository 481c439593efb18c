//! 2-D convolution on the CPU as im2col + gemm, with an explicit backward
//! pass: the conv the gradient scorers (SNIP, GraSP, SynFlow) differentiate
//! through.
//!
//! It exists because candle 0.11's own conv backward is slow: the input
//! gradient is a direct-loop `conv_transpose2d`, and the weight gradient a
//! conv with the batch as channels and the whole feature map as kernel
//! (`100 x 32 x 32` taps for VGG-16's first layers on 100 images). Here the
//! forward is `Y = W . im2col(X)`, and the backward is two gemms and a
//! scatter, computed directly (not by differentiating through im2col):
//! `dW = dY . im2col(X)^T` and `dX = col2im(W^T . dY)`.
//!
//! Samples are processed in blocks (one gemm per block and group, the block
//! wide enough that the thin late layers of VGG still make a gemm-friendly
//! matrix), blocks in parallel over rayon's threads; a batch of one (SynFlow)
//! runs the gemms themselves in parallel instead.
//!
//! Any stride, dilation, asymmetric padding and group count; f32 and f64 on
//! the CPU. Other devices and dtypes go through candle's own conv2d
//! ([`stock_conv2d`]).
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use maskforge::{autodiff::ops::conv::conv2d, graph::op::Window};
//! let x = Tensor::arange(0f32, 16., &Device::Cpu).unwrap().reshape((1, 1, 4, 4)).unwrap();
//! let w = Var::from_tensor(&Tensor::ones((1, 1, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap();
//! // A 3x3 box sum, stride 1, no padding: the four interior sums.
//! let y = conv2d(&x, w.as_tensor(), Window::same(1, 0), 1).unwrap();
//! assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [45., 54., 81., 90.]);
//! // d(sum y)/dw: every tap sums the input window it slides over.
//! let g = y.sum_all().unwrap().backward().unwrap();
//! let dw = g.get(w.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
//! assert_eq!(dw[0], 0. + 1. + 4. + 5.);
//! ```

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Shape, Tensor, WithDType};
use gemm::Parallelism;
use rayon::prelude::*;

use super::gemm::{gemm, gemm_fresh, Mat};
use super::{winograd, zeros};
use crate::error::{Error, Result};
use crate::graph::op::Window;

/// `x` `[N, C, H, W]` convolved with `w` `[O, C / groups, KH, KW]` (ONNX
/// `Conv` without bias, padding `[top, left, bottom, right]`), differentiable
/// with respect to both. f32 and f64 on the CPU use this module's op; other
/// devices and dtypes candle's conv2d.
pub fn conv2d(x: &Tensor, w: &Tensor, win: Window, groups: usize) -> Result<Tensor> {
    conv2d_with(x, w, win, groups, &Epilogue::default())
}

/// Per-output-channel work done inside the op, after the convolution:
/// `y = relu?(conv(x, w) * scale[o] + shift[o])` — a conv's bias, an
/// inference-mode BatchNorm after it and a ReLU after that.
///
/// Fused because candle's elementwise ops are costly here: a broadcast
/// product or sum with a per-channel constant computes and keeps (until the
/// backward pass ends) an activation-sized gradient for the constant too,
/// and a ReLU's backward makes four activation-sized temporaries; with VGG's
/// conv-bias-BatchNorm-ReLU blocks that was most of the memory (and page
/// faults) of a SNIP pass. `scale` and `shift` are constants: no gradient
/// flows to them. The ReLU passes gradient where its output is positive
/// (PyTorch's rule).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Epilogue {
    /// Per output channel; none means 1.
    pub scale: Option<Vec<f64>>,
    /// Per output channel; none means 0.
    pub shift: Option<Vec<f64>>,
    pub relu: bool,
}

impl Epilogue {
    fn check(&self, channels: usize) -> Result<()> {
        for v in [&self.scale, &self.shift].into_iter().flatten() {
            if v.len() != channels {
                return Err(Error::internal(format!(
                    "conv epilogue: {} values for {channels} output channels",
                    v.len()
                )));
            }
        }
        Ok(())
    }

    /// Whether the backward pass must rescale or mask the output gradient.
    fn changes_gradient(&self) -> bool {
        self.scale.is_some() || self.relu
    }

    /// `(scale, shift)` per channel in `T`, for the kernels.
    fn values<T: WithDType>(&self, channels: usize) -> (Vec<T>, Vec<T>) {
        let get = |v: &Option<Vec<f64>>, default: f64| match v {
            Some(v) => v.iter().map(|&x| T::from_f64(x)).collect(),
            None => vec![T::from_f64(default); channels],
        };
        (get(&self.scale, 1.0), get(&self.shift, 0.0))
    }

    /// The epilogue with candle ops (the stock path).
    fn apply(&self, y: &Tensor) -> Result<Tensor> {
        let per_channel = |v: &[f64]| -> Result<Tensor> {
            Ok(Tensor::new(v, y.device())?
                .to_dtype(y.dtype())?
                .reshape((1, (), 1, 1))?)
        };
        let mut y = y.clone();
        if let Some(s) = &self.scale {
            y = y.broadcast_mul(&per_channel(s)?)?;
        }
        if let Some(b) = &self.shift {
            y = y.broadcast_add(&per_channel(b)?)?;
        }
        Ok(if self.relu { y.relu()? } else { y })
    }
}

/// [`conv2d`] followed by `epi`.
pub fn conv2d_with(
    x: &Tensor,
    w: &Tensor,
    win: Window,
    groups: usize,
    epi: &Epilogue,
) -> Result<Tensor> {
    epi.check(w.dim(0)?)?;
    let cpu = matches!(x.device(), Device::Cpu);
    let float = matches!(x.dtype(), DType::F32 | DType::F64) && w.dtype() == x.dtype();
    if !(cpu && float) {
        return epi.apply(&stock_conv2d(x, w, win, groups)?);
    }
    let op = Conv::new(win, groups, epi);
    Ok(x.contiguous()?
        .apply_op2_arc(&w.contiguous()?, Arc::new(Box::new(op)))?)
}

/// The gradients of `y = conv2d_with(x, w, win, groups, epi)` for the
/// output gradient `dy`: `(dx, dw, db)`, `dx` only when `need_dx` (a data
/// input needs none), `db` (the gradient of the conv's own bias, added
/// before the epilogue's scale as [`Epilogue::shift`] folds it in) only
/// when `need_db`. The backward pass of this module's op, for a reverse
/// pass that is not candle's ([`crate::autodiff::backward`]); f32 and f64
/// on the CPU.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward(
    x: &Tensor,
    w: &Tensor,
    y: &Tensor,
    dy: &Tensor,
    win: Window,
    groups: usize,
    epi: &Epilogue,
    need_dx: bool,
    need_db: bool,
) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
    let grads = |epi: &Epilogue, dy: &Tensor| {
        let op = Conv::new(win, groups, epi);
        let (dx, dw) = op.grads(&x.contiguous()?, &w.contiguous()?, y, dy, need_dx, true)?;
        let dw = dw.ok_or_else(|| Error::internal("conv backward: no weight gradient"))?;
        Ok::<_, Error>((dx, dw))
    };
    if !need_db {
        let (dx, dw) = grads(epi, dy)?;
        return Ok((dx, dw, None));
    }
    // The bias gradient is the sum of the gradient before the epilogue,
    // which the weight gradient reads anyway: undo the epilogue once, then
    // the plain conv's gradients at dz.
    let mut dz = dy.contiguous()?;
    if epi.changes_gradient() {
        dz = dz.apply_op2_no_bwd(y, &EpilogueGrad(Arc::new(epi.clone())))?;
    }
    let (dx, dw) = grads(&Epilogue::default(), &dz)?;
    let (n, c) = (dz.dim(0)?, dz.dim(1)?);
    let db = dz.reshape((n, c, ()))?.sum(2)?.sum(0)?;
    Ok((dx, dw, Some(db)))
}

/// The input gradient alone of `y = conv2d_with(x, w, win, groups, epi)`
/// for the output gradient `dy` (no weight gradient computed): f32 and
/// f64 on the CPU.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_input_grad(
    x: &Tensor,
    w: &Tensor,
    y: &Tensor,
    dy: &Tensor,
    win: Window,
    groups: usize,
    epi: &Epilogue,
) -> Result<Tensor> {
    let op = Conv::new(win, groups, epi);
    let (dx, _) = op.grads(&x.contiguous()?, &w.contiguous()?, y, dy, true, false)?;
    dx.ok_or_else(|| Error::internal("conv backward: no input gradient"))
}

/// candle's own conv2d: square strides and dilations only, asymmetric
/// padding made explicit. The reference the tests and benches compare
/// against, and the path for CUDA devices.
pub fn stock_conv2d(x: &Tensor, w: &Tensor, win: Window, groups: usize) -> Result<Tensor> {
    let square = |a: [usize; 2], what: &str| {
        if a[0] == a[1] {
            Ok(a[0])
        } else {
            Err(Error::input(format!(
                "conv: non-square {what} {a:?} is not supported on this device"
            )))
        }
    };
    let s = square(win.stride, "stride")?;
    let d = square(win.dilation, "dilation")?;
    let p = win.pads;
    if p.iter().all(|&q| q == p[0]) {
        return Ok(x.conv2d(w, p[0], s, d, groups)?);
    }
    let xp = x
        .pad_with_zeros(2, p[0], p[2])?
        .pad_with_zeros(3, p[1], p[3])?;
    Ok(xp.conv2d(w, 0, s, d, groups)?)
}

/// Output columns a gemm should see at least: per-sample gemms of VGG's
/// 2x2 and 4x4 layers are a few columns wide and run far below speed, so
/// such samples are stacked side by side.
const MIN_COLUMNS: usize = 256;

/// Samples per block for `n` samples of `per_sample` columns each, a block
/// about `min_columns` wide unless that leaves a thread without a block;
/// and whether blocks run in parallel (else the gemms do).
///
/// The blocks are as many as a multiple of the threads and as even as the
/// samples allow, so the threads get equal work: 100 samples of VGG-16's
/// 8x8 layers in blocks of 16 made 7 blocks, one of only 4 samples, and
/// one thread waited while the other ran its fourth.
pub(super) fn block_plan(n: usize, per_sample: usize, min_columns: usize) -> (usize, bool) {
    let threads = rayon::current_num_threads().max(1);
    let widest = min_columns
        .div_ceil(per_sample)
        .min(n.div_ceil(threads))
        .max(1);
    let blocks = n.div_ceil(widest).div_ceil(threads) * threads;
    let block = n.div_ceil(blocks).max(1);
    (block, threads > 1 && n.div_ceil(block) >= threads)
}

/// Of one kernel tap along one axis: the outputs `[lo, hi)` that read
/// inside the input, and the offset `o * stride + offset` of the read.
type Tap = (usize, usize, isize);

/// Every size of one convolution.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) o: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
    pub(super) groups: usize,
    pub(super) win: Window,
}

impl Geometry {
    pub(super) fn new(
        x: &[usize],
        w: &[usize],
        win: Window,
        groups: usize,
    ) -> candle_core::Result<Geometry> {
        let (&[n, c, h, wd], &[o, cg, kh, kw]) = (x, w) else {
            candle_core::bail!("conv2d: rank-4 input and weight expected, got {x:?} and {w:?}")
        };
        if groups == 0 || c != cg * groups || o % groups != 0 {
            candle_core::bail!("conv2d: input {x:?} and weight {w:?} disagree for {groups} groups")
        }
        if kh == 0 || kw == 0 || win.stride.contains(&0) || win.dilation.contains(&0) {
            candle_core::bail!("conv2d: empty kernel, zero stride or zero dilation")
        }
        let (oh, ow) = (win.out_len(0, h, kh, false), win.out_len(1, wd, kw, false));
        if oh == 0 || ow == 0 {
            candle_core::bail!("conv2d: kernel {kh}x{kw} larger than padded input {h}x{wd}")
        }
        Ok(Geometry {
            n,
            c,
            h,
            w: wd,
            o,
            kh,
            kw,
            oh,
            ow,
            groups,
            win,
        })
    }

    /// Input channels per group.
    fn cg(&self) -> usize {
        self.c / self.groups
    }

    /// Output channels per group.
    fn og(&self) -> usize {
        self.o / self.groups
    }

    /// Rows of a group's im2col matrix (`cg * kh * kw`).
    fn k(&self) -> usize {
        self.cg() * self.kh * self.kw
    }

    /// Output positions per sample.
    fn p(&self) -> usize {
        self.oh * self.ow
    }

    fn hw(&self) -> usize {
        self.h * self.w
    }

    /// Samples per block, and whether blocks run in parallel (else the
    /// gemms do).
    fn plan(&self) -> (usize, bool) {
        block_plan(self.n, self.p(), MIN_COLUMNS)
    }

    /// `[lo, hi)`: the outputs `o` along axis `a` for which kernel tap `k`
    /// reads inside the input, with `o * stride + offset` the input
    /// coordinate read.
    fn valid(&self, a: usize, k: usize) -> Tap {
        let (out, n) = if a == 0 {
            (self.oh, self.h)
        } else {
            (self.ow, self.w)
        };
        let s = self.win.stride[a];
        let off = (k * self.win.dilation[a]) as isize - self.win.pads[a] as isize;
        let lo = if off >= 0 {
            0
        } else {
            (off.unsigned_abs()).div_ceil(s)
        };
        let last = n as isize - 1 - off;
        let hi = if last < 0 {
            0
        } else {
            (last as usize / s + 1).min(out)
        };
        (lo.min(hi), hi, off)
    }

    /// Per kernel row and column: [`Geometry::valid`].
    fn taps(&self) -> (Vec<Tap>, Vec<Tap>) {
        (
            (0..self.kh).map(|k| self.valid(0, k)).collect(),
            (0..self.kw).map(|k| self.valid(1, k)).collect(),
        )
    }
}

/// Gathers one sample's group (`x`: `cg` planes of `h x w`) into columns
/// `col0 .. col0 + p` of the im2col matrix `cols` (`k` rows of length `ld`);
/// taps in the padding read 0.
pub(super) fn im2col<T: WithDType>(g: &Geometry, x: &[T], cols: &mut [T], ld: usize, col0: usize) {
    let (ty, tx) = g.taps();
    let (ow, sh, sw) = (g.ow, g.win.stride[0], g.win.stride[1]);
    for c in 0..g.cg() {
        let plane = &x[c * g.hw()..][..g.hw()];
        for (ky, &(ylo, yhi, yoff)) in ty.iter().enumerate() {
            for (kx, &(xlo, xhi, xoff)) in tx.iter().enumerate() {
                let row = (c * g.kh + ky) * g.kw + kx;
                let dst = &mut cols[row * ld + col0..][..g.p()];
                dst[..ylo * ow].fill(T::zero());
                dst[yhi * ow..].fill(T::zero());
                if rows_run_on(g) && ylo < yhi && xlo < xhi {
                    // The tap's rows are one run of the plane: copy it
                    // whole, then clear the padding taps it wrapped onto.
                    let (a, b) = (ylo * ow + xlo, (yhi - 1) * ow + xhi);
                    let start =
                        (((ylo as isize + yoff) * g.w as isize) + xlo as isize + xoff) as usize;
                    dst[a..b].copy_from_slice(&plane[start..start + (b - a)]);
                    for oy in ylo..yhi {
                        let d = &mut dst[oy * ow..][..ow];
                        d[..xlo].iter_mut().for_each(|v| *v = T::zero());
                        d[xhi..].iter_mut().for_each(|v| *v = T::zero());
                    }
                    continue;
                }
                for oy in ylo..yhi {
                    let iy = ((oy * sh) as isize + yoff) as usize;
                    let src = &plane[iy * g.w..][..g.w];
                    let d = &mut dst[oy * ow..][..ow];
                    d[..xlo].fill(T::zero());
                    d[xhi..].fill(T::zero());
                    if sw == 1 && xlo < xhi {
                        let a = (xlo as isize + xoff) as usize;
                        d[xlo..xhi].copy_from_slice(&src[a..a + (xhi - xlo)]);
                    } else {
                        for (ox, v) in d[xlo..xhi].iter_mut().enumerate() {
                            *v = src[(((ox + xlo) * sw) as isize + xoff) as usize];
                        }
                    }
                }
            }
        }
    }
}

/// Whether consecutive output rows read consecutive input rows of the
/// same width (stride 1, output as wide as the input: VGG's and ResNet's
/// 3x3 convolutions), so that each tap's rows form one run of the plane.
fn rows_run_on(g: &Geometry) -> bool {
    g.win.stride == [1, 1] && g.ow == g.w
}

/// The adjoint of [`im2col`]: adds columns `col0 .. col0 + p` of `cols` back
/// onto the positions they were read from in `dx`; padding taps are dropped
/// (and, where [`rows_run_on`], set to 0 in `cols`, a scratch matrix).
fn col2im<T: WithDType>(g: &Geometry, cols: &mut [T], ld: usize, col0: usize, dx: &mut [T]) {
    let (ty, tx) = g.taps();
    let (ow, sh, sw) = (g.ow, g.win.stride[0], g.win.stride[1]);
    for c in 0..g.cg() {
        let plane = &mut dx[c * g.hw()..][..g.hw()];
        for (ky, &(ylo, yhi, yoff)) in ty.iter().enumerate() {
            for (kx, &(xlo, xhi, xoff)) in tx.iter().enumerate() {
                let row = (c * g.kh + ky) * g.kw + kx;
                let src = &mut cols[row * ld + col0..][..g.p()];
                if rows_run_on(g) && ylo < yhi && xlo < xhi {
                    // One run of the plane, as in `im2col`: the padding taps
                    // it wraps onto add 0. Each element of the run gets one
                    // addition, as row by row: the same sums.
                    for oy in ylo..yhi {
                        let s = &mut src[oy * ow..][..ow];
                        s[..xlo].iter_mut().for_each(|v| *v = T::zero());
                        s[xhi..].iter_mut().for_each(|v| *v = T::zero());
                    }
                    let (a, b) = (ylo * ow + xlo, (yhi - 1) * ow + xhi);
                    let start =
                        (((ylo as isize + yoff) * g.w as isize) + xlo as isize + xoff) as usize;
                    for (d, &v) in plane[start..start + (b - a)].iter_mut().zip(&src[a..b]) {
                        *d += v;
                    }
                    continue;
                }
                let src = &*src;
                for oy in ylo..yhi {
                    let iy = ((oy * sh) as isize + yoff) as usize;
                    let dst = &mut plane[iy * g.w..][..g.w];
                    let s = &src[oy * ow..][..ow];
                    if sw == 1 && xlo < xhi {
                        let a = (xlo as isize + xoff) as usize;
                        for (d, &v) in dst[a..a + (xhi - xlo)].iter_mut().zip(&s[xlo..xhi]) {
                            *d += v;
                        }
                    } else {
                        for (ox, &v) in s.iter().enumerate().take(xhi).skip(xlo) {
                            dst[((ox * sw) as isize + xoff) as usize] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Per-worker buffers: one group's im2col matrix for a block, and a block
/// of outputs (or output gradients) in `[O, block * p]` layout.
struct Scratch<T> {
    cols: Vec<T>,
    wide: Vec<T>,
}

impl<T: WithDType> Scratch<T> {
    fn new(g: &Geometry, block: usize) -> Self {
        Scratch {
            cols: vec![T::zero(); g.k() * block * g.p()],
            wide: if block > 1 {
                vec![T::zero(); g.o * block * g.p()]
            } else {
                Vec::new()
            },
        }
    }
}

/// Run `run` over `out`'s blocks of `chunk` values (block index, block),
/// each worker with its own scratch; blocks in parallel when `parallel`.
fn for_each_block<T: WithDType>(
    out: &mut [T],
    chunk: usize,
    g: &Geometry,
    block: usize,
    parallel: bool,
    run: impl Fn(&mut Scratch<T>, (usize, &mut [T])) + Sync + Send,
) {
    if parallel {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each_init(|| Scratch::new(g, block), run);
    } else {
        let mut s = Scratch::new(g, block);
        out.chunks_mut(chunk)
            .enumerate()
            .for_each(|item| run(&mut s, item));
    }
}

/// How a gemm inside a block runs: on its own thread when the blocks
/// already share the threads, else on all of them.
pub(super) fn parallelism(blocks_parallel: bool) -> Parallelism {
    let threads = rayon::current_num_threads();
    if blocks_parallel || threads <= 1 {
        Parallelism::None
    } else {
        Parallelism::Rayon(threads)
    }
}

/// Copies the output gradients of samples `n0 .. n0 + b` into `wide`
/// (`[O, b * p]`) unless `b == 1`, where `dy` already has that layout;
/// returns the `[O, b * p]` matrix.
fn gather<'a, T: WithDType>(
    g: &Geometry,
    dy: &'a [T],
    n0: usize,
    b: usize,
    wide: &'a mut [T],
) -> &'a [T] {
    let (o, p) = (g.o, g.p());
    if b == 1 {
        return &dy[n0 * o * p..][..o * p];
    }
    for s in 0..b {
        for ch in 0..o {
            wide[ch * b * p + s * p..][..p].copy_from_slice(&dy[((n0 + s) * o + ch) * p..][..p]);
        }
    }
    &wide[..o * b * p]
}

/// Forward: per block and group, `Y_g = W_g . im2col(X_g)`, then the
/// epilogue on each output row while it is in cache.
fn forward<T: WithDType>(g: &Geometry, x: &[T], w: &[T], epi: &Epilogue) -> Vec<T> {
    let (scale, shift) = epi.values::<T>(g.o);
    if winograd::applies(g) {
        let finish = winograd::Finish {
            scale: &scale,
            shift: &shift,
            relu: epi.relu,
        };
        return winograd::forward(g, x, w, finish);
    }
    let identity = *epi == Epilogue::default();
    let finish = |row: &mut [T], ch: usize| {
        let (a, b) = (scale[ch], shift[ch]);
        for v in row.iter_mut() {
            let z = *v * a + b;
            *v = if epi.relu && z <= T::zero() {
                T::zero()
            } else {
                z
            };
        }
    };
    let (block, parallel) = g.plan();
    let (o, p, k, og, cg) = (g.o, g.p(), g.k(), g.og(), g.cg());
    let par = parallelism(parallel);
    let mut y = zeros(g.n * o * p);
    let run = |s: &mut Scratch<T>, (bi, yb): (usize, &mut [T])| {
        let n0 = bi * block;
        let b = yb.len() / (o * p);
        let ld = b * p;
        for gi in 0..g.groups {
            let cols = &mut s.cols[..k * ld];
            for si in 0..b {
                let xs = &x[((n0 + si) * g.c + gi * cg) * g.hw()..][..cg * g.hw()];
                im2col(g, xs, cols, ld, si * p);
            }
            let lhs = Mat {
                data: &w[gi * og * k..],
                rows: og,
                cols: k,
                rs: k,
                cs: 1,
            };
            let rhs = Mat {
                data: &cols[..],
                rows: k,
                cols: ld,
                rs: ld,
                cs: 1,
            };
            // One sample: the output block is already [O, p]; several:
            // compute [O, b * p] and scatter per sample below.
            let dst = if b == 1 {
                &mut yb[gi * og * p..]
            } else {
                &mut s.wide[gi * og * ld..]
            };
            gemm(dst, ld, false, lhs, rhs, par);
        }
        for si in 0..b {
            for ch in 0..o {
                let row = &mut yb[(si * o + ch) * p..][..p];
                if b > 1 {
                    row.copy_from_slice(&s.wide[ch * ld + si * p..][..p]);
                }
                if !identity {
                    finish(row, ch);
                }
            }
        }
    };
    let chunk = block * o * p;
    for_each_block(&mut y, chunk, g, block, parallel, run);
    y
}

/// Input gradient: per block and group, `dX_g = col2im(W_g^T . dY_g)`.
fn input_grad<T: WithDType>(g: &Geometry, dy: &[T], w: &[T]) -> Vec<T> {
    if winograd::applies(g) {
        return winograd::input_grad(g, dy, w);
    }
    let (block, parallel) = g.plan();
    let (p, k, og, cg) = (g.p(), g.k(), g.og(), g.cg());
    let par = parallelism(parallel);
    let per_sample = g.c * g.hw();
    let mut dx = zeros(g.n * per_sample);
    let run = |s: &mut Scratch<T>, (bi, dxb): (usize, &mut [T])| {
        let n0 = bi * block;
        let b = dxb.len() / per_sample;
        let ld = b * p;
        let Scratch { cols, wide } = s;
        let dyb = gather(g, dy, n0, b, wide);
        for gi in 0..g.groups {
            let cols = &mut cols[..k * ld];
            let lhs = Mat {
                data: &w[gi * og * k..],
                rows: k,
                cols: og,
                rs: 1,
                cs: k,
            };
            let rhs = Mat {
                data: &dyb[gi * og * ld..],
                rows: og,
                cols: ld,
                rs: ld,
                cs: 1,
            };
            gemm(cols, ld, false, lhs, rhs, par);
            for si in 0..b {
                let dxs = &mut dxb[si * per_sample + gi * cg * g.hw()..][..cg * g.hw()];
                col2im(g, cols, ld, si * p, dxs);
            }
        }
    };
    let chunk = block * per_sample;
    for_each_block(&mut dx, chunk, g, block, parallel, run);
    dx
}

/// Weight gradient: `dW_g = sum over blocks of dY_g . im2col(X_g)^T`, one
/// partial sum per worker (contiguous runs of blocks), then added.
///
/// The sums are kept transposed (`[K, og]` per group, `im2col(X_g) . dY_g^T`)
/// and turned round at the end: gemm runs this product with the im2col
/// matrix as its row-major left operand about 3x faster than the
/// `[og, K]` form, whose right operand would be the im2col matrix read
/// column-wise (measured: 190 vs 61 GFLOPS for VGG-16's second layer).
fn weight_grad<T: WithDType>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    if winograd::applies(g) {
        return winograd::weight_grad(g, x, dy);
    }
    let (block, parallel) = g.plan();
    if g.groups == 1 && g.n <= block && g.n * g.p() <= DIRECT_MAX_COLUMNS {
        return weight_grad_direct(g, x, dy);
    }
    weight_grad_transposed(g, x, dy, block, parallel)
}

/// The widest block (`samples x output positions`) whose weight gradient
/// is computed straight into `[O, K]` ([`weight_grad_direct`]).
const DIRECT_MAX_COLUMNS: usize = 64;

/// [`weight_grad`] for one block of one group with few output positions
/// (a batch of one on a small map: SynFlow's passes through VGG's late
/// layers, 13 of its 15 M weights): `dW = dY . im2col(X)^T` straight into
/// `[O, K]`. The product is then bound by writing `dW`, and the transposed
/// form's turn-round pass cost as much again. Each element is the same
/// chain of multiply-adds over the same columns in the same order in
/// both forms (gemm's kernels swap the operands' roles, not the sums), so
/// the bits are those of [`weight_grad_transposed`] (tested).
fn weight_grad_direct<T: WithDType>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    let (p, k, ld) = (g.p(), g.k(), g.n * g.p());
    let Scratch { mut cols, mut wide } = Scratch::new(g, g.n);
    let dyb = gather(g, dy, 0, g.n, &mut wide);
    for si in 0..g.n {
        im2col(
            g,
            &x[si * g.c * g.hw()..][..g.c * g.hw()],
            &mut cols,
            ld,
            si * p,
        );
    }
    let lhs = Mat {
        data: dyb,
        rows: g.o,
        cols: ld,
        rs: ld,
        cs: 1,
    };
    let rhs = Mat {
        data: &cols[..],
        rows: ld,
        cols: k,
        rs: 1,
        cs: ld,
    };
    gemm_fresh(lhs, rhs, parallelism(false))
}

/// [`weight_grad`] in general: per worker, sums over its blocks.
fn weight_grad_transposed<T: WithDType>(
    g: &Geometry,
    x: &[T],
    dy: &[T],
    block: usize,
    parallel: bool,
) -> Vec<T> {
    let (p, k, og, cg) = (g.p(), g.k(), g.og(), g.cg());
    let par = parallelism(parallel);
    let blocks = g.n.div_ceil(block);
    let workers = if parallel {
        rayon::current_num_threads().min(blocks)
    } else {
        1
    };
    let per_worker = blocks.div_ceil(workers);
    let part = |wi: usize| {
        let mut acc = vec![T::zero(); g.o * k];
        let mut s = Scratch::new(g, block);
        for bi in wi * per_worker..((wi + 1) * per_worker).min(blocks) {
            let n0 = bi * block;
            let b = block.min(g.n - n0);
            let ld = b * p;
            let Scratch { cols, wide } = &mut s;
            let dyb = gather(g, dy, n0, b, wide);
            for gi in 0..g.groups {
                let cols = &mut cols[..k * ld];
                for si in 0..b {
                    let xs = &x[((n0 + si) * g.c + gi * cg) * g.hw()..][..cg * g.hw()];
                    im2col(g, xs, cols, ld, si * p);
                }
                let lhs = Mat {
                    data: &cols[..],
                    rows: k,
                    cols: ld,
                    rs: ld,
                    cs: 1,
                };
                let rhs = Mat {
                    data: &dyb[gi * og * ld..],
                    rows: ld,
                    cols: og,
                    rs: 1,
                    cs: ld,
                };
                gemm(&mut acc[gi * k * og..], og, true, lhs, rhs, par);
            }
        }
        acc
    };
    let acc = if workers > 1 {
        (0..workers)
            .into_par_iter()
            .map(part)
            .reduce_with(|mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            })
            .unwrap_or_else(|| vec![T::zero(); g.o * k])
    } else {
        part(0)
    };
    // Transposed in square tiles, tiles of rows in parallel: a plain
    // row-by-row scatter strides `k` elements per write and took as long as
    // the gemms for a batch of one (SynFlow).
    const TILE: usize = 32;
    let mut dw = vec![T::zero(); g.o * k];
    dw.par_chunks_mut(TILE * k)
        .enumerate()
        .for_each(|(ti, rows)| {
            for k0 in (0..k).step_by(TILE) {
                let k1 = (k0 + TILE).min(k);
                for (r, dst) in rows.chunks_exact_mut(k).enumerate() {
                    let o = ti * TILE + r;
                    let (gi, oo) = (o / og, o % og);
                    let src = &acc[gi * k * og..][..k * og];
                    for (kk, d) in dst.iter_mut().enumerate().take(k1).skip(k0) {
                        *d = src[kk * og + oo];
                    }
                }
            }
        });
    dw
}

/// The contiguous elements of a tensor's storage (the public entry makes
/// its operands contiguous).
fn slice<'a, T>(s: &'a [T], l: &Layout) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("conv2d: non-contiguous operand"),
    }
}

/// Runs `f` on two CPU storages of the same float dtype.
fn dispatch(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    f32s: impl FnOnce(&[f32], &[f32]) -> Vec<f32>,
    f64s: impl FnOnce(&[f64], &[f64]) -> Vec<f64>,
) -> candle_core::Result<CpuStorage> {
    Ok(match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => {
            CpuStorage::F32(f32s(slice(a, l1)?, slice(b, l2)?))
        }
        (CpuStorage::F64(a), CpuStorage::F64(b)) => {
            CpuStorage::F64(f64s(slice(a, l1)?, slice(b, l2)?))
        }
        _ => candle_core::bail!(
            "conv2d: f32 or f64 operands of one dtype expected, got {:?} and {:?}",
            s1.dtype(),
            s2.dtype()
        ),
    })
}

/// The differentiable op: `(x, w) -> y`.
#[derive(Clone, Debug)]
struct Conv {
    win: Window,
    groups: usize,
    epi: Arc<Epilogue>,
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "maskforge-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Geometry::new(l1.dims(), l2.dims(), self.win, self.groups)?;
        let y = dispatch(
            s1,
            l1,
            s2,
            l2,
            |x, w| forward(&g, x, w, &self.epi),
            |x, w| forward(&g, x, w, &self.epi),
        )?;
        Ok((y, Shape::from((g.n, g.o, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // A data input (the first conv) needs no gradient: skip its col2im.
        self.grads(x, w, y, dy, x.track_op(), w.track_op())
    }
}

impl Conv {
    fn new(win: Window, groups: usize, epi: &Epilogue) -> Conv {
        Conv {
            win,
            groups,
            epi: Arc::new(epi.clone()),
        }
    }

    /// `(dx, dw)` of the output `y` for its gradient `dy`, each only when
    /// asked for.
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        need_dx: bool,
        need_dw: bool,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let mut dy = dy.contiguous()?;
        if self.epi.changes_gradient() {
            dy = dy.apply_op2_no_bwd(y, &EpilogueGrad(self.epi.clone()))?;
        }
        let dx = if need_dx {
            let (_, _, h, wd) = x.dims4()?;
            Some(dy.apply_op2_no_bwd(
                w,
                &InputGrad {
                    conv: self.clone(),
                    h,
                    w: wd,
                },
            )?)
        } else {
            None
        };
        let dw = if need_dw {
            let (_, _, kh, kw) = w.dims4()?;
            Some(x.apply_op2_no_bwd(
                &dy,
                &WeightGrad {
                    conv: self.clone(),
                    kh,
                    kw,
                },
            )?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// `(dy, y) -> dz`, the gradient before the epilogue: `dy * scale[o]`,
/// zero where the ReLU output `y` is not positive.
struct EpilogueGrad(Arc<Epilogue>);

impl CustomOp2 for EpilogueGrad {
    fn name(&self) -> &'static str {
        "maskforge-conv2d-epilogue-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (&[_, o, oh, ow], true) = (l1.dims(), l1.dims() == l2.dims()) else {
            candle_core::bail!("conv2d epilogue grad: gradient and output shapes differ")
        };
        let p = oh * ow;
        fn run<T: WithDType>(epi: &Epilogue, o: usize, p: usize, dy: &[T], y: &[T]) -> Vec<T> {
            let (scale, _) = epi.values::<T>(o);
            let mut dz = zeros(dy.len());
            // Chunks of whole (sample, channel) rows, about 16 K values each:
            // one rayon task per row was most of the cost for 2x2 maps.
            let per = (1 << 14) / p.max(1) + 1;
            dz.par_chunks_mut(per * p)
                .zip(dy.par_chunks(per * p).zip(y.par_chunks(per * p)))
                .enumerate()
                .for_each(|(c, (dz, (dy, y)))| {
                    let rows = dz.chunks_mut(p).zip(dy.chunks(p).zip(y.chunks(p)));
                    for (r, (dz, (dy, y))) in rows.enumerate() {
                        let a = scale[(c * per + r) % o];
                        for ((d, &g), &v) in dz.iter_mut().zip(dy).zip(y) {
                            *d = if epi.relu && v <= T::zero() {
                                T::zero()
                            } else {
                                g * a
                            };
                        }
                    }
                });
            dz
        }
        let dz = dispatch(
            s1,
            l1,
            s2,
            l2,
            |dy, y| run(&self.0, o, p, dy, y),
            |dy, y| run(&self.0, o, p, dy, y),
        )?;
        Ok((dz, l1.shape().clone()))
    }
}

/// `(dy, w) -> dx` for an input of `h x w`.
struct InputGrad {
    conv: Conv,
    h: usize,
    w: usize,
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "maskforge-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (&[n, o, oh, ow], wd) = (l1.dims(), l2.dims()) else {
            candle_core::bail!("conv2d input grad: rank-4 output gradient expected")
        };
        let c = wd.get(1).copied().unwrap_or(0) * self.conv.groups;
        let g = Geometry::new(&[n, c, self.h, self.w], wd, self.conv.win, self.conv.groups)?;
        if (g.o, g.oh, g.ow) != (o, oh, ow) {
            candle_core::bail!(
                "conv2d input grad: output gradient {:?} does not fit",
                l1.dims()
            )
        }
        let dx = dispatch(
            s1,
            l1,
            s2,
            l2,
            |dy, w| input_grad(&g, dy, w),
            |dy, w| input_grad(&g, dy, w),
        )?;
        Ok((dx, Shape::from((n, c, self.h, self.w))))
    }
}

/// `(x, dy) -> dw` for a kernel of `kh x kw`.
struct WeightGrad {
    conv: Conv,
    kh: usize,
    kw: usize,
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "maskforge-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (xd, &[n, o, oh, ow]) = (l1.dims(), l2.dims()) else {
            candle_core::bail!("conv2d weight grad: rank-4 output gradient expected")
        };
        let groups = self.conv.groups;
        let cg = xd.get(1).copied().unwrap_or(0) / groups.max(1);
        let g = Geometry::new(xd, &[o, cg, self.kh, self.kw], self.conv.win, groups)?;
        if (g.n, g.oh, g.ow) != (n, oh, ow) {
            candle_core::bail!(
                "conv2d weight grad: output gradient {:?} does not fit",
                l2.dims()
            )
        }
        let dw = dispatch(
            s1,
            l1,
            s2,
            l2,
            |x, dy| weight_grad(&g, x, dy),
            |x, dy| weight_grad(&g, x, dy),
        )?;
        Ok((dw, Shape::from((o, cg, self.kh, self.kw))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(h: usize, k: usize, win: Window) -> Geometry {
        Geometry::new(&[1, 1, h, h], &[1, 1, k, k], win, 1).unwrap()
    }

    /// `valid` against the definition, one output at a time.
    #[test]
    fn valid_ranges_match_a_brute_force_scan() {
        for h in 1..7 {
            for k in 1..4 {
                for s in 1..4 {
                    for d in 1..3 {
                        for pad in 0..3 {
                            let win = Window {
                                stride: [s; 2],
                                pads: [pad, 0, pad + 1, 0],
                                dilation: [d; 2],
                            };
                            if win.out_len(0, h, k, false) == 0 || win.out_len(1, h, k, false) == 0
                            {
                                continue;
                            }
                            let g = geometry(h, k, win);
                            for tap in 0..k {
                                let (lo, hi, off) = g.valid(0, tap);
                                let inside: Vec<usize> = (0..g.oh)
                                    .filter(|&o| win.source(0, o, tap, h).is_some())
                                    .collect();
                                let expect: Vec<usize> = (lo..hi).collect();
                                assert_eq!(inside, expect, "h{h} k{k} s{s} d{d} p{pad} tap{tap}");
                                for o in lo..hi {
                                    assert_eq!(
                                        Some((o as isize * s as isize + off) as usize),
                                        win.source(0, o, tap, h)
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The direct weight gradient has the transposed form's bits, on the
    /// shapes it takes (one group, few output positions, a batch of one),
    /// f32 and f64.
    #[test]
    fn direct_weight_gradient_equals_the_transposed_one_bit_for_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for (n, c, o, h, kk, pad) in [
            (1, 512, 512, 2, 3, 1),
            (1, 256, 512, 4, 3, 1),
            (1, 64, 96, 8, 3, 1),
            (1, 16, 70, 4, 3, 0),
            (1, 3, 5, 1, 1, 0),
            (1, 40, 33, 5, 2, 1),
        ] {
            let win = Window::same(1, pad);
            let g = Geometry::new(&[n, c, h, h], &[o, c, kk, kk], win, 1).unwrap();
            let (block, parallel) = g.plan();
            assert!(n <= block && n * g.p() <= DIRECT_MAX_COLUMNS);
            let x: Vec<f64> = (0..n * c * h * h).map(|_| rng.random::<f64>()).collect();
            let dy: Vec<f64> = (0..n * o * g.p()).map(|_| rng.random::<f64>()).collect();
            let a = weight_grad_direct(&g, &x, &dy);
            let b = weight_grad_transposed(&g, &x, &dy, block, parallel);
            assert_eq!(a, b, "f64 {n} {c} {o} {h}");
            let (x, dy): (Vec<f32>, Vec<f32>) = (
                x.iter().map(|&v| v as f32).collect(),
                dy.iter().map(|&v| v as f32).collect(),
            );
            let a = weight_grad_direct(&g, &x, &dy);
            let b = weight_grad_transposed(&g, &x, &dy, block, parallel);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "f32 {n} {c} {o} {h}");
        }
    }

    /// col2im is im2col's adjoint: `<im2col(x), c> == <x, col2im(c)>` for
    /// random `x` and `c`, which pins every index of the scatter to its
    /// gather.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for (h, w, kh, kw, stride, dilation, pads) in [
            (5, 7, 3, 4, [1, 2], [1, 1], [1, 1, 1, 1]),
            (6, 5, 3, 4, [2, 3], [1, 1], [0, 1, 2, 0]),
            (7, 7, 2, 3, [3, 4], [2, 1], [2, 0, 1, 3]),
            (4, 9, 1, 2, [2, 3], [1, 1], [0, 0, 0, 0]),
            (6, 6, 3, 3, [1, 1], [2, 2], [2, 1, 0, 2]),
            // A kernel column that reads only padding (no valid output).
            (2, 1, 1, 2, [1, 1], [1, 2], [0, 2, 0, 0]),
        ] {
            let win = Window {
                stride,
                pads,
                dilation,
            };
            let g = Geometry::new(&[1, 2, h, w], &[3, 2, kh, kw], win, 1).unwrap();
            let x: Vec<f64> = (0..2 * h * w).map(|_| rng.random::<f64>() - 0.5).collect();
            let ld = g.p() + 3;
            let mut cols = vec![f64::NAN; g.k() * ld];
            im2col(&g, &x, &mut cols, ld, 2);
            let c: Vec<f64> = (0..g.k() * ld).map(|_| rng.random::<f64>() - 0.5).collect();
            let mut dx = vec![0.0; x.len()];
            col2im(&g, &mut c.clone(), ld, 2, &mut dx);
            let mut lhs = 0.0;
            for r in 0..g.k() {
                for q in 2..2 + g.p() {
                    // Every column of the block is written (NaN would leak otherwise).
                    lhs += cols[r * ld + q] * c[r * ld + q];
                }
            }
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-12, "{lhs} vs {rhs}");
        }
    }
}
