//! 2-D max pooling on the CPU as one autograd op with an explicit backward:
//! the gradient of each output goes to the first maximum of its window in
//! row-major order (PyTorch's rule, the reference code's); padding and
//! window positions past the input (ceil mode) never win.
//!
//! It replaces, for f32 and f64 on the CPU, the executor's pool built from
//! strided window views and a chain of elementwise maxima (candle's own
//! pools have no backward for overlapping windows): for a 2x2 pool that was
//! four window copies, three maxima, and a backward of masks, divisions and
//! zero-padded window gradients, about a tenth of a SNIP pass on VGG-16. On
//! ties that chain split the gradient unevenly (1/2, 1/4, 1/8, 1/8); here
//! it follows the reference.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use maskforge::{autodiff::ops::maxpool::max_pool2d, graph::op::Window};
//! let x = Var::new(&[[[[1.0f64, 5.0], [5.0, 2.0]]]], &Device::Cpu).unwrap();
//! let y = max_pool2d(x.as_tensor(), [2, 2], Window::same(2, 0), false).unwrap();
//! assert_eq!(y.flatten_all().unwrap().to_vec1::<f64>().unwrap(), [5.0]);
//! let g = y.sum_all().unwrap().backward().unwrap();
//! let dx = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
//! assert_eq!(dx, [0.0, 1.0, 0.0, 0.0], "the first of the tied maxima");
//! ```

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::error::Result;
use crate::graph::op::Window;

/// Max pool of `x` `[N, C, H, W]` with a `kernel` window, stride, padding
/// and dilation from `win`, `ceil` rounding the output size up (ONNX
/// `MaxPool`). CPU tensors of f32 or f64 only.
pub fn max_pool2d(x: &Tensor, kernel: [usize; 2], win: Window, ceil: bool) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(MaxPool { kernel, win, ceil })?)
}

/// The gradient at `x` of [`max_pool2d`]`(x, ...)` for the output
/// gradient `dy` (for a reverse pass that is not candle's:
/// [`crate::autodiff::backward`]).
pub fn max_pool2d_backward(
    x: &Tensor,
    dy: &Tensor,
    kernel: [usize; 2],
    win: Window,
    ceil: bool,
) -> Result<Tensor> {
    let op = MaxPool { kernel, win, ceil };
    Ok(dy
        .contiguous()?
        .apply_op2_no_bwd(&x.contiguous()?, &MaxPoolLinear(op, Along::Back))?)
}

/// The derivative of [`max_pool2d`] at `x` along `r` (same shape as `x`):
/// each output takes `r` at its window's winner (0 where nothing wins).
/// Exact wherever each window's maximum is unique; on ties it follows the
/// gradient's rule, the first maximum (for a Hessian-vector product:
/// [`crate::autodiff::hvp`]).
pub fn max_pool2d_tangent(
    x: &Tensor,
    r: &Tensor,
    kernel: [usize; 2],
    win: Window,
    ceil: bool,
) -> Result<Tensor> {
    let op = MaxPool { kernel, win, ceil };
    Ok(r.contiguous()?
        .apply_op2_no_bwd(&x.contiguous()?, &MaxPoolLinear(op, Along::Tangent))?)
}

#[derive(Clone, Copy, Debug)]
struct MaxPool {
    kernel: [usize; 2],
    win: Window,
    ceil: bool,
}

/// Sizes of one pooling: planes (`N * C`), input and output extents.
#[derive(Clone, Copy)]
struct Dims {
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

impl MaxPool {
    fn dims(&self, x: &[usize]) -> candle_core::Result<Dims> {
        let &[n, c, h, w] = x else {
            candle_core::bail!("max pool: rank-4 input expected, got {x:?}")
        };
        if self.kernel.contains(&0) || self.win.stride.contains(&0) {
            candle_core::bail!("max pool: empty kernel or zero stride")
        }
        let oh = self.win.out_len(0, h, self.kernel[0], self.ceil);
        let ow = self.win.out_len(1, w, self.kernel[1], self.ceil);
        Ok(Dims {
            planes: n * c,
            h,
            w,
            oh,
            ow,
        })
    }

    /// The winning input index of output `(oy, ox)` in a plane and its
    /// value: the first strictly greater than everything before it,
    /// starting from -inf (a NaN wins and stays); `None` if nothing beats
    /// -inf.
    fn argmax<T: WithDType>(&self, d: &Dims, x: &[T], oy: usize, ox: usize) -> Option<(usize, T)> {
        let mut best: Option<(usize, T)> = None;
        let mut top = T::from_f64(f64::NEG_INFINITY);
        for ky in 0..self.kernel[0] {
            let Some(iy) = self.win.source(0, oy, ky, d.h) else {
                continue;
            };
            for kx in 0..self.kernel[1] {
                let Some(ix) = self.win.source(1, ox, kx, d.w) else {
                    continue;
                };
                let v = x[iy * d.w + ix];
                let nan = v.partial_cmp(&v).is_none();
                let top_nan = top.partial_cmp(&top).is_none();
                if !top_nan && (v > top || nan) {
                    top = v;
                    best = Some((iy * d.w + ix, v));
                }
            }
        }
        best
    }

    /// Whether every window lies inside the input (no padding, no ceil-mode
    /// overhang): [`MaxPool::argmax_inside`] applies.
    fn windows_inside(&self, d: &Dims) -> bool {
        let fits = |a: usize, out: usize, n: usize| {
            let span = self.win.dilation[a] * (self.kernel[a] - 1) + 1;
            out == 0 || (out - 1) * self.win.stride[a] + span <= n
        };
        self.win.pads == [0; 4] && fits(0, d.oh, d.h) && fits(1, d.ow, d.w)
    }

    /// [`MaxPool::argmax`] where the window is known to lie inside the
    /// input: no bounds checks per tap (VGG's 2x2 pools spent more time in
    /// them than in the comparisons).
    #[inline]
    fn argmax_inside<T: WithDType>(
        &self,
        d: &Dims,
        x: &[T],
        oy: usize,
        ox: usize,
    ) -> Option<(usize, T)> {
        let (y0, x0) = (oy * self.win.stride[0], ox * self.win.stride[1]);
        let [dy, dx] = self.win.dilation;
        let mut best: Option<(usize, T)> = None;
        let mut top = T::from_f64(f64::NEG_INFINITY);
        for ky in 0..self.kernel[0] {
            let row = (y0 + ky * dy) * d.w + x0;
            for kx in 0..self.kernel[1] {
                let i = row + kx * dx;
                let v = x[i];
                let nan = v.partial_cmp(&v).is_none();
                let top_nan = top.partial_cmp(&top).is_none();
                if !top_nan && (v > top || nan) {
                    top = v;
                    best = Some((i, v));
                }
            }
        }
        best
    }

    /// The winner of output `(oy, ox)`: [`MaxPool::argmax`], by the faster
    /// path when `inside`.
    #[inline]
    fn winner<T: WithDType>(
        &self,
        d: &Dims,
        x: &[T],
        inside: bool,
        oy: usize,
        ox: usize,
    ) -> Option<(usize, T)> {
        if inside {
            self.argmax_inside(d, x, oy, ox)
        } else {
            self.argmax(d, x, oy, ox)
        }
    }
}

/// The winner among the taps `taps` of a plane, in order, by
/// [`MaxPool::argmax`]'s rule.
#[inline(always)]
fn pick<T: WithDType>(x: &[T], taps: [usize; 4]) -> Option<(usize, T)> {
    let mut best: Option<(usize, T)> = None;
    let mut top = T::from_f64(f64::NEG_INFINITY);
    for i in taps {
        let v = x[i];
        let nan = v.partial_cmp(&v).is_none();
        let top_nan = top.partial_cmp(&top).is_none();
        if !top_nan && (v > top || nan) {
            top = v;
            best = Some((i, v));
        }
    }
    best
}

/// For the common 2x2 pool of stride 2 inside the input (LeNet's, VGG's):
/// every output's winner of plane `x`, in output order, called with the
/// output index; the taps are fixed and no division is made per output.
#[inline(always)]
fn each_2x2<T: WithDType>(d: &Dims, x: &[T], mut f: impl FnMut(usize, Option<(usize, T)>)) {
    for oy in 0..d.oh {
        let row = 2 * oy * d.w;
        for ox in 0..d.ow {
            let i0 = row + 2 * ox;
            f(
                oy * d.ow + ox,
                pick(x, [i0, i0 + 1, i0 + d.w, i0 + d.w + 1]),
            );
        }
    }
}

impl MaxPool {
    /// A 2x2 window of stride 2 and dilation 1, every window inside.
    fn is_2x2(&self, inside: bool) -> bool {
        inside && self.kernel == [2, 2] && self.win.stride == [2, 2] && self.win.dilation == [1, 1]
    }
}

/// Planes per parallel task: about 16 K outputs.
fn planes_per_task(d: &Dims) -> usize {
    ((1 << 14) / (d.oh * d.ow).max(1)).max(1)
}

fn contiguous<'a, T>(s: &'a [T], l: &Layout) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("max pool: non-contiguous operand"),
    }
}

fn forward<T: WithDType>(op: &MaxPool, d: &Dims, x: &[T]) -> Vec<T> {
    // The winner's value is the maximum; an empty window reads -inf.
    per_output(op, d, x, |_, w| {
        w.map_or(T::from_f64(f64::NEG_INFINITY), |(_, m)| m)
    })
}

/// Every output of the pool of `x`, as `value(plane, winner)` of its
/// window's winner (index in the plane and value; `None`: nothing wins).
fn per_output<T: WithDType>(
    op: &MaxPool,
    d: &Dims,
    x: &[T],
    value: impl Fn(usize, Option<(usize, T)>) -> T + Sync,
) -> Vec<T> {
    let (ip, op_len) = (d.h * d.w, d.oh * d.ow);
    let per = planes_per_task(d);
    let inside = op.windows_inside(d);
    let fast = op.is_2x2(inside);
    let mut y = super::zeros(d.planes * op_len);
    y.par_chunks_mut(per * op_len.max(1))
        .enumerate()
        .for_each(|(t, ys)| {
            for (k, yp) in ys.chunks_mut(op_len.max(1)).enumerate() {
                let plane = t * per + k;
                let xp = &x[plane * ip..][..ip];
                if fast {
                    each_2x2(d, xp, |i, w| yp[i] = value(plane, w));
                    continue;
                }
                for (i, v) in yp.iter_mut().enumerate() {
                    *v = value(plane, op.winner(d, xp, inside, i / d.ow, i % d.ow));
                }
            }
        });
    y
}

fn backward<T: WithDType>(op: &MaxPool, d: &Dims, dy: &[T], x: &[T]) -> Vec<T> {
    let (ip, op_len) = (d.h * d.w, d.oh * d.ow);
    let per = planes_per_task(d);
    let inside = op.windows_inside(d);
    let fast = op.is_2x2(inside);
    let mut dx = super::zeros(d.planes * ip);
    dx.par_chunks_mut(per * ip.max(1))
        .enumerate()
        .for_each(|(t, dxs)| {
            for (k, dxp) in dxs.chunks_mut(ip.max(1)).enumerate() {
                let plane = t * per + k;
                let (xp, dyp) = (&x[plane * ip..][..ip], &dy[plane * op_len..][..op_len]);
                if fast {
                    each_2x2(d, xp, |i, w| {
                        if let Some((at, _)) = w {
                            dxp[at] += dyp[i];
                        }
                    });
                    continue;
                }
                for (i, &g) in dyp.iter().enumerate() {
                    if let Some((at, _)) = op.winner(d, xp, inside, i / d.ow, i % d.ow) {
                        dxp[at] += g;
                    }
                }
            }
        });
    dx
}

fn tangent<T: WithDType>(op: &MaxPool, d: &Dims, r: &[T], x: &[T]) -> Vec<T> {
    let ip = d.h * d.w;
    per_output(op, d, x, |plane, w| {
        w.map_or(T::zero(), |(i, _)| r[plane * ip + i])
    })
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "maskforge-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.dims(l.dims())?;
        let y = match s {
            CpuStorage::F32(x) => CpuStorage::F32(forward(self, &d, contiguous(x, l)?)),
            CpuStorage::F64(x) => CpuStorage::F64(forward(self, &d, contiguous(x, l)?)),
            _ => candle_core::bail!("max pool: f32 or f64 expected"),
        };
        let dims = l.dims();
        Ok((y, Shape::from((dims[0], dims[1], d.oh, d.ow))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            dy.contiguous()?
                .apply_op2_no_bwd(x, &MaxPoolLinear(*self, Along::Back))?,
        ))
    }
}

/// The two linear maps a max pool fixes at its input `x`, as one op
/// `(a, x) -> ...`: routing an output gradient back to the winners
/// (`Back`, `a` shaped as the output) and reading a direction at the
/// winners (`Tangent`, `a` shaped as the input).
#[derive(Clone, Copy)]
enum Along {
    Back,
    Tangent,
}

struct MaxPoolLinear(MaxPool, Along);

impl MaxPoolLinear {
    fn run<T: WithDType>(&self, d: &Dims, a: &[T], x: &[T]) -> Vec<T> {
        match self.1 {
            Along::Back => backward(&self.0, d, a, x),
            Along::Tangent => tangent(&self.0, d, a, x),
        }
    }
}

impl CustomOp2 for MaxPoolLinear {
    fn name(&self) -> &'static str {
        match self.1 {
            Along::Back => "maskforge-max-pool2d-grad",
            Along::Tangent => "maskforge-max-pool2d-tangent",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.0.dims(l2.dims())?;
        let (x, pooled) = (l2.dims(), (l2.dims()[0], l2.dims()[1], d.oh, d.ow));
        let (fits, out) = match self.1 {
            Along::Back => (
                l1.shape().elem_count() == d.planes * d.oh * d.ow,
                Shape::from(x),
            ),
            Along::Tangent => (l1.dims() == x, Shape::from(pooled)),
        };
        if !fits {
            candle_core::bail!("{}: operand {:?} does not fit", self.name(), l1.dims())
        }
        let y = match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(x)) => {
                CpuStorage::F32(self.run(&d, contiguous(a, l1)?, contiguous(x, l2)?))
            }
            (CpuStorage::F64(a), CpuStorage::F64(x)) => {
                CpuStorage::F64(self.run(&d, contiguous(a, l1)?, contiguous(x, l2)?))
            }
            _ => candle_core::bail!("{}: f32 or f64 operands of one dtype", self.name()),
        };
        Ok((y, out))
    }
}
