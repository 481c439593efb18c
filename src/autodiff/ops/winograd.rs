//! Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast
//! Algorithms for Convolutional Neural Networks", CVPR 2016) for the 3x3,
//! stride-1, ungrouped convolutions VGG and ResNet are made of: the
//! forward pass, the input gradient and the weight gradient of
//! [`super::conv`]'s op, each with 16 multiplies per 2x2 output tile and
//! channel pair where im2col's gemm does 36.
//!
//! Per 4x4 input tile `d` (tiles at stride 2, overlapping by 2), 3x3
//! kernel `g` and 2x2 output tile `Y` (the convolution as deep learning
//! means it, a correlation):
//!
//! ```text
//! Y  = A^T [ (G g G^T) ⊙ (B^T d B) ] A
//! dW = G^T [ Σ_tiles (A dY A^T) ⊙ (B^T d B) ] G      (the adjoint in g)
//! ```
//!
//! With the 16 positions of the transformed tile as 16 separate matrices,
//! the sums over input channels (forward) or tiles (weight gradient) are
//! 16 gemms. The input gradient is the forward pass of the output gradient
//! through the kernel turned round and transposed (`W'[c][o] =
//! rot180(W[o][c])`, padding `2 - pad`).
//!
//! The transforms are additions (and halvings) only; they run over
//! [`LANES`] tiles at a time so that they vectorise. Results differ from
//! im2col's by rounding only (tested against a direct loop here, and with
//! every other conv test through the op).

use rayon::prelude::*;

use super::conv::{block_plan, parallelism, Geometry};
use super::gemm::{gemm, Mat};
use super::zeros;
use crate::graph::op::Window;
use candle_core::WithDType;

/// Tiles transformed together: one AVX-512 register of f32.
const LANES: usize = 16;

/// Fewest channels on either side worth the transforms: below it the
/// gemms are too thin for the saved multiplies to pay for them.
const MIN_CHANNELS: usize = 16;

/// Fewest output tiles over the whole batch, and fewest samples. SynFlow's
/// batch of one through VGG-16 ran 2.4x slower with every layer here
/// (the kernels' transforms cost per kernel, not per tile, and the 2x2 to
/// 8x8 maps have 1 to 16 tiles), and still 10 % slower with only its
/// 32x32 and 16x16 layers (16 thin gemms against one wide one).
const MIN_BATCH_TILES: usize = 64;
const MIN_SAMPLES: usize = 2;

/// The weight gradient's partial sums per thread: more parts than threads
/// let a thread that finishes early take another (a static split left
/// one waiting), at a `16 C O` sum each.
const PARTS_PER_THREAD: usize = 4;

/// Tiles a gemm should see at least (samples are stacked side by side
/// until a block has this many).
const MIN_TILES: usize = 256;

type Lane<T> = [T; LANES];

/// Whether `g` is a convolution this module computes: 3x3, stride 1, no
/// dilation, one group, padding at most 2 on each side (so that the input
/// gradient's padding `2 - pad` exists), wide enough on both sides, and
/// with enough output tiles over the batch to pay for transforming the
/// kernels (every call does).
pub(super) fn applies(g: &Geometry) -> bool {
    g.kh == 3
        && g.kw == 3
        && g.win.stride == [1, 1]
        && g.win.dilation == [1, 1]
        && g.groups == 1
        && g.win.pads.iter().all(|&p| p <= 2)
        && g.c >= MIN_CHANNELS
        && g.o >= MIN_CHANNELS
        && g.n >= MIN_SAMPLES
        && g.n * Tiling::of(g).per_sample >= MIN_BATCH_TILES
}

/// The per-channel affine map and ReLU applied to each output value.
#[derive(Clone, Copy)]
pub(super) struct Finish<'a, T> {
    pub scale: &'a [T],
    pub shift: &'a [T],
    pub relu: bool,
}

/// The forward pass: `y = finish(conv(x, w))`, `[N, O, OH, OW]`.
pub(super) fn forward<T: WithDType>(g: &Geometry, x: &[T], w: &[T], finish: Finish<T>) -> Vec<T> {
    let u = filter_transform(w, g.o, g.c);
    convolve(g, x, Kernels::Forward(&u), Some(finish))
}

/// The input gradient: the output gradient `dy` convolved with the kernel
/// turned round, `[N, C, H, W]`.
pub(super) fn input_grad<T: WithDType>(g: &Geometry, dy: &[T], w: &[T]) -> Vec<T> {
    let [pt, pl, pb, pr] = g.win.pads;
    let back = Geometry {
        n: g.n,
        c: g.o,
        h: g.oh,
        w: g.ow,
        o: g.c,
        kh: 3,
        kw: 3,
        oh: g.h,
        ow: g.w,
        groups: 1,
        win: Window {
            stride: [1, 1],
            pads: [2 - pt, 2 - pl, 2 - pb, 2 - pr],
            dilation: [1, 1],
        },
    };
    let u = filter_transform(w, g.o, g.c);
    convolve(&back, dy, Kernels::TurnedRound(&u), None)
}

/// The weight gradient `[O, C, 3, 3]` of the output gradient `dy`.
pub(super) fn weight_grad<T: WithDType>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    let t = Tiling::of(g);
    let (block, parallel) = t.plan(g.n);
    let par = parallelism(parallel);
    let blocks = g.n.div_ceil(block);
    let part_count = if parallel {
        blocks.min(PARTS_PER_THREAD * rayon::current_num_threads())
    } else {
        1
    };
    let (c, o) = (g.c, g.o);
    // Per part (a fixed run of blocks, so that the sum's order does not
    // depend on which thread took what): Σ over its tiles of
    // V[ξ] . E[ξ]^T, `[C][16][O]`.
    let part = |pi: usize| {
        let mut acc = vec![T::zero(); 16 * c * o];
        let mut s = Scratch::reuse(g, &t, block);
        for bi in pi * blocks / part_count..(pi + 1) * blocks / part_count {
            let n0 = bi * block;
            let b = block.min(g.n - n0);
            let ld = b * t.per_sample;
            let Scratch { v, m: e, taps, row } = &mut s;
            input_transform(g, &t, x, n0, b, v, taps, row);
            gradient_transform(g, &t, dy, n0, b, e, taps, row);
            for xi in 0..16 {
                let lhs = Mat {
                    data: &v[xi * c * ld..][..c * ld],
                    rows: c,
                    cols: ld,
                    rs: ld,
                    cs: 1,
                };
                let rhs = Mat {
                    data: &e[xi * o * ld..][..o * ld],
                    rows: ld,
                    cols: o,
                    rs: 1,
                    cs: ld,
                };
                gemm(&mut acc[xi * o..], 16 * o, true, lhs, rhs, par);
            }
        }
        s.keep();
        acc
    };
    let parts: Vec<Vec<T>> = if part_count > 1 {
        (0..part_count).into_par_iter().map(part).collect()
    } else {
        vec![part(0)]
    };
    kernel_from_transformed(&parts, o, c)
}

/// The tile grid over a convolution's output.
struct Tiling {
    /// Tile rows and columns: `ceil(oh / 2)`, `ceil(ow / 2)`.
    rows: usize,
    cols: usize,
    per_sample: usize,
}

impl Tiling {
    fn of(g: &Geometry) -> Tiling {
        let (rows, cols) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
        Tiling {
            rows,
            cols,
            per_sample: rows * cols,
        }
    }

    /// Samples per block, and whether blocks run in parallel (else the
    /// gemms do).
    fn plan(&self, n: usize) -> (usize, bool) {
        block_plan(n, self.per_sample, MIN_TILES)
    }

    /// Where tile values come from in an `h x w` plane for `K x K` windows
    /// at stride 2 from `(-pads.0, -pads.1)`, tap by tap (`[K * K][tiles]`):
    /// the index into the plane, or `h * w` for a value outside (read from
    /// a 0 appended to a copy of the plane).
    fn sources<const K: usize>(&self, h: usize, w: usize, pads: (usize, usize)) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.per_sample * K * K);
        for i in 0..K {
            for j in 0..K {
                for ty in 0..self.rows {
                    for tx in 0..self.cols {
                        let iy = (2 * ty + i).checked_sub(pads.0).filter(|&v| v < h);
                        let ix = (2 * tx + j).checked_sub(pads.1).filter(|&v| v < w);
                        out.push(iy.zip(ix).map_or(h * w, |(y, x)| y * w + x) as u32);
                    }
                }
            }
        }
        out
    }
}

/// Gathers a plane's tiles into `K * K` rows of tap values (row stride
/// `ld`, the plane's tiles in columns `col0 ..`).
enum Gather {
    /// Small planes: every tile value from a table of [`Tiling::sources`]
    /// (per-row work would be mostly call overhead).
    Table(Vec<u32>),
    /// Larger planes: from the plane's even and odd columns
    /// ([`rows_gather`]).
    Rows {
        h: usize,
        w: usize,
        pads: (usize, usize),
    },
}

impl Gather {
    /// Tiles per plane up to which [`Gather::Table`] is used.
    const TABLE_UP_TO: usize = 16;

    fn new<const K: usize>(t: &Tiling, h: usize, w: usize, pads: (usize, usize)) -> Gather {
        if t.per_sample <= Self::TABLE_UP_TO {
            Gather::Table(t.sources::<K>(h, w, pads))
        } else {
            Gather::Rows { h, w, pads }
        }
    }

    /// Scratch [`Gather::transform`] needs besides the taps.
    fn scratch_len(t: &Tiling, h: usize, w: usize) -> usize {
        (h * w + 1).max(2 * (2 * t.rows + 2) * (t.cols + 1))
    }

    /// Transforms one channel of a block: the `K x K` tiles of the `b`
    /// planes `plane(si)` (`tiles` each) through `f`; output row `r` of the
    /// block's column `q` goes to `dst[at + r * stride + q]`. `taps` holds
    /// `I = K * K` rows of `ld = b * tiles` gathered values, `row` the
    /// [`Gather::scratch_len`] values of scratch.
    #[allow(clippy::too_many_arguments)]
    fn transform<'p, T: WithDType + 'p, const K: usize, const I: usize, const O: usize>(
        &self,
        t: &Tiling,
        b: usize,
        plane: impl Fn(usize) -> &'p [T],
        (taps, row): (&mut [T], &mut [T]),
        (dst, at, stride): (&mut [T], usize, usize),
        f: impl Fn(&[Lane<T>; I]) -> [Lane<T>; O] + Copy,
    ) {
        debug_assert_eq!(I, K * K);
        let (ld, tiles) = (b * t.per_sample, t.per_sample);
        let taps = &mut taps[..I * ld];
        for si in 0..b {
            let (plane, col0) = (plane(si), si * tiles);
            match self {
                Gather::Table(sources) => {
                    let padded = &mut row[..plane.len() + 1];
                    padded[..plane.len()].copy_from_slice(plane);
                    padded[plane.len()] = T::zero();
                    for (k, srcs) in sources.chunks_exact(tiles).enumerate() {
                        let out = &mut taps[k * ld + col0..][..tiles];
                        for (v, &src) in out.iter_mut().zip(srcs) {
                            *v = padded[src as usize];
                        }
                    }
                }
                &Gather::Rows { h, w, pads } => {
                    rows_gather::<T, K>(t, plane, (h, w, pads), row, taps, ld, col0)
                }
            }
        }
        transform_rows::<T, I, O>((taps, ld), ld, dst, at, stride, f);
    }
}

/// [`Gather::transform`]'s gather for one larger plane: the zero-padded
/// plane is split once into its even and odd columns (`[2 rows + 2][2][tiles
/// per row + 1]`), so that tap `(i, j)` of tile row `ty` is the contiguous
/// run `half[2 ty + i][j % 2][j / 2 ..]`, copied whole. Row `k` of the taps
/// goes to `taps[k * ld + col0 ..]`.
#[allow(clippy::too_many_arguments)]
fn rows_gather<T: WithDType, const K: usize>(
    t: &Tiling,
    plane: &[T],
    (h, w, pads): (usize, usize, (usize, usize)),
    row: &mut [T],
    taps: &mut [T],
    ld: usize,
    col0: usize,
) {
    let (tw, half) = (t.cols, t.cols + 1);
    let halves = &mut row[..2 * (2 * t.rows + 2) * half];
    for (r, pair) in halves.chunks_exact_mut(2 * half).enumerate() {
        pair.fill(T::zero());
        let Some(iy) = r.checked_sub(pads.0).filter(|&v| v < h) else {
            continue;
        };
        let src = &plane[iy * w..][..w.min(2 * half - pads.1.min(2 * half))];
        let (even, odd) = pair.split_at_mut(half);
        // Input column `x` sits at padded place `x + pads.1`.
        let first_even = pads.1 % 2;
        for (k, &v) in src.iter().skip(first_even).step_by(2).enumerate() {
            even[(first_even + pads.1) / 2 + k] = v;
        }
        let first_odd = 1 - first_even;
        for (k, &v) in src.iter().skip(first_odd).step_by(2).enumerate() {
            odd[(first_odd + pads.1) / 2 + k] = v;
        }
    }
    for ty in 0..t.rows {
        for k in 0..K * K {
            let (i, j) = (k / K, k % K);
            let src = &halves[((2 * ty + i) * 2 + j % 2) * half + j / 2..];
            copy_run(&mut taps[k * ld + col0 + ty * tw..], src, tw);
        }
    }
}

/// The transformed kernels `U` (`[O][16][C]`, [`filter_transform`]) as a
/// convolution reads them.
#[derive(Clone, Copy)]
enum Kernels<'a, T> {
    /// `U[ξ]` as they are: `O x C`.
    Forward(&'a [T]),
    /// For the input gradient, each kernel turned round and the channel
    /// roles swapped: `U'[ξ] = U[σξ]^T` (`C x O`), σ swapping the first
    /// and last transform row and column. Turning a kernel round reverses
    /// each `G g` and swaps its first and last value
    /// (`G (g2, g1, g0) = ((Gg)_3, (Gg)_1, (Gg)_2, (Gg)_0)`).
    TurnedRound(&'a [T]),
}

impl<'a, T> Kernels<'a, T> {
    /// The left operand of position `xi`'s gemm for a convolution with
    /// `o` outputs and `c` inputs.
    fn at(self, xi: usize, o: usize, c: usize) -> Mat<'a, T> {
        match self {
            // `[O][16][C]`: row `r` of `U[ξ]` at `(r * 16 + ξ) * C`.
            Kernels::Forward(u) => Mat {
                data: &u[xi * c..],
                rows: o,
                cols: c,
                rs: 16 * c,
                cs: 1,
            },
            Kernels::TurnedRound(u) => {
                let turn = |i: usize| [3, 1, 2, 0][i];
                let xi = turn(xi / 4) * 4 + turn(xi % 4);
                // Stored `[c][16][o]` for this convolution's `o` outputs
                // and `c` inputs, read transposed.
                Mat {
                    data: &u[xi * o..],
                    rows: o,
                    cols: c,
                    rs: 1,
                    cs: 16 * o,
                }
            }
        }
    }
}

/// `y = finish(Σ_c conv(x[c], ·))` from the transformed kernels, for the
/// geometry `g` (3x3, stride 1), block by block.
fn convolve<T: WithDType>(
    g: &Geometry,
    x: &[T],
    u: Kernels<T>,
    finish: Option<Finish<T>>,
) -> Vec<T> {
    let t = Tiling::of(g);
    let (block, parallel) = t.plan(g.n);
    let par = parallelism(parallel);
    let (c, o, p) = (g.c, g.o, g.oh * g.ow);
    let mut y = zeros(g.n * o * p);
    let run_block = |s: &mut Scratch<T>, n0: usize, yb: &mut [T]| {
        let b = yb.len() / (o * p);
        let ld = b * t.per_sample;
        let Scratch { v, m, taps, row } = s;
        input_transform(g, &t, x, n0, b, v, taps, row);
        for xi in 0..16 {
            let rhs = Mat {
                data: &v[xi * c * ld..][..c * ld],
                rows: c,
                cols: ld,
                rs: ld,
                cs: 1,
            };
            gemm(&mut m[xi * o * ld..], ld, false, u.at(xi, o, c), rhs, par);
        }
        output_transform(g, &t, &m[..16 * o * ld], ld, yb, taps, finish);
    };
    // Blocks are independent here, so rayon hands them out as threads
    // free up (a static split left one thread waiting on the other);
    // each takes this thread's scratch and returns it.
    let run_one = |(bi, yb): (usize, &mut [T])| {
        let mut s = Scratch::reuse(g, &t, block);
        run_block(&mut s, bi * block, yb);
        s.keep();
    };
    let chunk = block * o * p;
    if parallel {
        y.par_chunks_mut(chunk).enumerate().for_each(run_one);
    } else {
        y.chunks_mut(chunk).enumerate().for_each(run_one);
    }
    y
}

/// `V[ξ][c][t] = (B^T d B)[ξ]` for the 4x4 input tile `d` of every tile `t`
/// of samples `n0 .. n0 + b` and channel `c`; `v` is `[16][C][b * tiles]`.
#[allow(clippy::too_many_arguments)]
fn input_transform<T: WithDType>(
    g: &Geometry,
    t: &Tiling,
    x: &[T],
    n0: usize,
    b: usize,
    v: &mut [T],
    taps: &mut [T],
    row: &mut [T],
) {
    let (c, hw, ld) = (g.c, g.h * g.w, b * t.per_sample);
    let pads = (g.win.pads[0], g.win.pads[1]);
    let gather = Gather::new::<4>(t, g.h, g.w, pads);
    for ch in 0..c {
        let plane = |si: usize| &x[((n0 + si) * c + ch) * hw..][..hw];
        let out = (&mut *v, ch * ld, c * ld);
        gather.transform::<T, 4, 16, 16>(t, b, plane, (&mut *taps, &mut *row), out, input_tile);
    }
}

/// `E[ξ][o][t] = (A e A^T)[ξ]` for the 2x2 output-gradient tile `e` of every
/// tile `t` of samples `n0 .. n0 + b`; `e_out` is `[16][O][b * tiles]`.
#[allow(clippy::too_many_arguments)]
fn gradient_transform<T: WithDType>(
    g: &Geometry,
    t: &Tiling,
    dy: &[T],
    n0: usize,
    b: usize,
    e_out: &mut [T],
    taps: &mut [T],
    row: &mut [T],
) {
    let (o, p, ld) = (g.o, g.oh * g.ow, b * t.per_sample);
    let gather = Gather::new::<2>(t, g.oh, g.ow, (0, 0));
    for ch in 0..o {
        let plane = |si: usize| &dy[((n0 + si) * o + ch) * p..][..p];
        let out = (&mut *e_out, ch * ld, o * ld);
        gather.transform::<T, 2, 4, 16>(t, b, plane, (&mut *taps, &mut *row), out, gradient_tile);
    }
}

/// Per-worker buffers: the transformed block (`[16][C][ld]`), the
/// transformed products or output gradients (`[16][O][ld]`), one channel's
/// tile values (`16` rows of `ld`) and a padded row.
struct Scratch<T> {
    v: Vec<T>,
    m: Vec<T>,
    taps: Vec<T>,
    row: Vec<T>,
}

impl<T: WithDType> Scratch<T> {
    /// This thread's scratch from an earlier call, grown to fit, or a new
    /// one: zero-filling and first-touching a few MB per call was a
    /// twentieth of a SNIP pass. Every buffer is written before it is read
    /// (no caller relies on zeros). Return it with [`Scratch::keep`].
    fn reuse(g: &Geometry, t: &Tiling, block: usize) -> Self {
        let ld = block * t.per_sample;
        let mut s = Self::take().unwrap_or(Scratch {
            v: Vec::new(),
            m: Vec::new(),
            taps: Vec::new(),
            row: Vec::new(),
        });
        let grow = |v: &mut Vec<T>, len: usize| {
            if v.len() < len {
                v.resize(len, T::zero());
            }
        };
        grow(&mut s.v, 16 * g.c * ld);
        grow(&mut s.m, 16 * g.o * ld);
        grow(&mut s.taps, 16 * ld);
        grow(
            &mut s.row,
            Gather::scratch_len(t, g.h.max(g.oh), g.w.max(g.ow)),
        );
        s
    }

    /// Keeps the scratch for this thread's next call.
    fn keep(self) {
        // A thread whose pool is borrowed (cannot happen: no borrow is held
        // across other work) just drops it.
        SCRATCH.with(|pool| {
            if let Ok(mut pool) = pool.try_borrow_mut() {
                pool.push(Box::new(self));
            }
        });
    }

    fn take() -> Option<Self> {
        SCRATCH.with(|pool| {
            let mut pool = pool.try_borrow_mut().ok()?;
            let at = pool.iter().position(|s| s.is::<Self>())?;
            pool.swap_remove(at).downcast().ok().map(|s| *s)
        })
    }
}

thread_local! {
    /// Per thread, at most one [`Scratch`] per element type, between calls.
    static SCRATCH: std::cell::RefCell<Vec<Box<dyn std::any::Any>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Applies the tile map `f` (`I` values to `O`) to each of the `ld`
/// columns of the `I` rows of `src` (row `r` at `src[r * src_stride]`),
/// [`LANES`] columns at a time; output row `r` starts at
/// `dst[at + r * stride]`.
fn transform_rows<T: WithDType, const I: usize, const O: usize>(
    (src, src_stride): (&[T], usize),
    ld: usize,
    dst: &mut [T],
    at: usize,
    stride: usize,
    f: impl Fn(&[Lane<T>; I]) -> [Lane<T>; O],
) {
    let mut lanes = [[T::zero(); LANES]; I];
    let full = ld - ld % LANES;
    for t0 in (0..full).step_by(LANES) {
        for (r, lane) in lanes.iter_mut().enumerate() {
            lane.copy_from_slice(&src[r * src_stride + t0..][..LANES]);
        }
        for (r, lane) in f(&lanes).iter().enumerate() {
            dst[at + r * stride + t0..][..LANES].copy_from_slice(lane);
        }
    }
    if full < ld {
        let len = ld - full;
        for (r, lane) in lanes.iter_mut().enumerate() {
            lane[..len].copy_from_slice(&src[r * src_stride + full..][..len]);
        }
        for (r, lane) in f(&lanes).iter().enumerate() {
            dst[at + r * stride + full..][..len].copy_from_slice(&lane[..len]);
        }
    }
}

/// `dst[..len] = src[..len]`, a whole lane as a fixed-size copy (inlined
/// vector moves rather than a `memcpy` call per 64 bytes).
#[inline(always)]
fn copy_run<T: Copy>(dst: &mut [T], src: &[T], len: usize) {
    if len == LANES {
        dst[..LANES].copy_from_slice(&src[..LANES]);
    } else {
        dst[..len].copy_from_slice(&src[..len]);
    }
}

/// Writes the output tiles of the block `yb` (`[b][O][OH][OW]`) from `m`
/// (`[16][O][ld]`): `Y = A^T M A`, then the finishing map; tile rows and
/// columns past the output are dropped. `y4` holds one channel's four
/// output rows of `ld` tiles.
fn output_transform<T: WithDType>(
    g: &Geometry,
    t: &Tiling,
    m: &[T],
    ld: usize,
    yb: &mut [T],
    y4: &mut [T],
    finish: Option<Finish<T>>,
) {
    let (o, oh, ow) = (g.o, g.oh, g.ow);
    let p = oh * ow;
    let y4 = &mut y4[..4 * ld];
    for ch in 0..o {
        transform_rows::<T, 16, 4>((&m[ch * ld..], o * ld), ld, y4, 0, ld, output_tile);
        if let Some(f) = finish {
            let (scale, shift) = (f.scale[ch], f.shift[ch]);
            for v in y4.iter_mut() {
                let z = *v * scale + shift;
                *v = if f.relu && z <= T::zero() {
                    T::zero()
                } else {
                    z
                };
            }
        }
        for (s, plane) in yb.chunks_exact_mut(o * p).enumerate() {
            let plane = &mut plane[ch * p..][..p];
            for ty in 0..t.rows {
                let col = s * t.per_sample + ty * t.cols;
                for a in 0..2.min(oh - 2 * ty) {
                    let out = &mut plane[(2 * ty + a) * ow..][..ow];
                    let left = &y4[2 * a * ld + col..][..t.cols];
                    let right = &y4[(2 * a + 1) * ld + col..][..t.cols];
                    interleave(out, left, right);
                }
            }
        }
    }
}

/// `out = [l0, r0, l1, r1, ...]`, as far as `out` reaches.
fn interleave<T: Copy>(out: &mut [T], left: &[T], right: &[T]) {
    let pairs = out.len() / 2;
    for ((pair, &l), &r) in out.chunks_exact_mut(2).zip(left).zip(right) {
        pair[0] = l;
        pair[1] = r;
    }
    if out.len() % 2 == 1 {
        out[2 * pairs] = left[pairs];
    }
}

/// `U[o][ξ][c] = (G g G^T)[ξ]` for every kernel `g = w[o][c]` of `w`
/// (`[O][C][3][3]`): `[O][16][C]`, each output channel's 16 rows
/// together (written in parallel; [`Kernels::at`] reads them by stride).
fn filter_transform<T: WithDType>(w: &[T], o: usize, c: usize) -> Vec<T> {
    let mut u = zeros(16 * o * c);
    u.par_chunks_mut(16 * c)
        .zip(w[..9 * o * c].par_chunks(9 * c))
        .for_each(|(dst, kernels)| {
            let mut lanes = [[T::zero(); LANES]; 9];
            for (l0, chunk) in kernels.chunks(9 * LANES).enumerate() {
                let (c0, len) = (l0 * LANES, chunk.len() / 9);
                for (l, kernel) in chunk.chunks_exact(9).enumerate() {
                    for (lane, &v) in lanes.iter_mut().zip(kernel) {
                        lane[l] = v;
                    }
                }
                for (xi, lane) in filter_tile(&lanes).iter().enumerate() {
                    dst[xi * c + c0..][..len].copy_from_slice(&lane[..len]);
                }
            }
        });
    u
}

/// `dW[o][c] = G^T Mw[o][c] G` from the workers' partial sums `parts`
/// (each `[C][16][O]`), added here.
fn kernel_from_transformed<T: WithDType>(parts: &[Vec<T>], o: usize, c: usize) -> Vec<T> {
    // Per input channel `ci`: its `o` kernels `[O][9]`, then laid out.
    let by_channel: Vec<Vec<T>> = (0..c)
        .into_par_iter()
        .map(|ci| {
            let mut sum = parts[0][ci * 16 * o..][..16 * o].to_vec();
            for part in &parts[1..] {
                for (v, &p) in sum.iter_mut().zip(&part[ci * 16 * o..][..16 * o]) {
                    *v += p;
                }
            }
            let mut out = vec![T::zero(); 9 * o];
            let mut lanes = [[T::zero(); LANES]; 16];
            for o0 in (0..o).step_by(LANES) {
                let len = LANES.min(o - o0);
                for (xi, lane) in lanes.iter_mut().enumerate() {
                    lane[..len].copy_from_slice(&sum[xi * o + o0..][..len]);
                }
                let k = kernel_tile(&lanes);
                for l in 0..len {
                    for (tap, lane) in k.iter().enumerate() {
                        out[(o0 + l) * 9 + tap] = lane[l];
                    }
                }
            }
            out
        })
        .collect();
    let mut dw = zeros(9 * o * c);
    dw.par_chunks_mut(9 * c).enumerate().for_each(|(oi, row)| {
        for (ci, kernels) in by_channel.iter().enumerate() {
            row[ci * 9..][..9].copy_from_slice(&kernels[oi * 9..][..9]);
        }
    });
    dw
}

#[inline(always)]
fn add<T: WithDType>(a: &Lane<T>, b: &Lane<T>) -> Lane<T> {
    std::array::from_fn(|i| a[i] + b[i])
}

#[inline(always)]
fn sub<T: WithDType>(a: &Lane<T>, b: &Lane<T>) -> Lane<T> {
    std::array::from_fn(|i| a[i] - b[i])
}

#[inline(always)]
fn half<T: WithDType>(a: &Lane<T>) -> Lane<T> {
    let h = T::from_f64(0.5);
    std::array::from_fn(|i| a[i] * h)
}

#[inline(always)]
fn neg<T: WithDType>(a: &Lane<T>) -> Lane<T> {
    std::array::from_fn(|i| T::zero() - a[i])
}

/// A separable tile map on a row-major `R x C` tile: `f` along the
/// columns (each column's `R` values to `R2`), then `f2` along the rows of
/// the result (`C` values to `C2`); the `R2 x C2` result row-major in the
/// first places of the array.
#[inline(always)]
fn separable<T: WithDType, const R: usize, const C: usize, const R2: usize, const C2: usize>(
    tile: &[Lane<T>],
    f: impl Fn([&Lane<T>; R]) -> [Lane<T>; R2],
    f2: impl Fn([&Lane<T>; C]) -> [Lane<T>; C2],
) -> [Lane<T>; 16] {
    let mut mid = [[T::zero(); LANES]; 16];
    for j in 0..C {
        let col = f(std::array::from_fn(|i| &tile[i * C + j]));
        for (i, v) in col.into_iter().enumerate() {
            mid[i * C + j] = v;
        }
    }
    let mut out = [[T::zero(); LANES]; 16];
    for i in 0..R2 {
        let row = f2(std::array::from_fn(|j| &mid[i * C + j]));
        out[i * C2..][..C2].copy_from_slice(&row);
    }
    out
}

/// `B^T` applied to 4 values: `[d0 - d2, d1 + d2, d2 - d1, d1 - d3]`.
#[inline(always)]
fn b_t<T: WithDType>(d: [&Lane<T>; 4]) -> [Lane<T>; 4] {
    [
        sub(d[0], d[2]),
        add(d[1], d[2]),
        sub(d[2], d[1]),
        sub(d[1], d[3]),
    ]
}

/// `A^T` applied to 4 values: `[m0 + m1 + m2, m1 - m2 - m3]`.
#[inline(always)]
fn a_t<T: WithDType>(m: [&Lane<T>; 4]) -> [Lane<T>; 2] {
    [add(&add(m[0], m[1]), m[2]), sub(&sub(m[1], m[2]), m[3])]
}

/// `G` applied to 3 values: `[g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2]`.
#[inline(always)]
fn g_<T: WithDType>(g: [&Lane<T>; 3]) -> [Lane<T>; 4] {
    let outer = add(g[0], g[2]);
    [
        *g[0],
        half(&add(&outer, g[1])),
        half(&sub(&outer, g[1])),
        *g[2],
    ]
}

/// `A` applied to 2 values: `[e0, e0 + e1, e0 - e1, -e1]`.
#[inline(always)]
fn a_<T: WithDType>(e: [&Lane<T>; 2]) -> [Lane<T>; 4] {
    [*e[0], add(e[0], e[1]), sub(e[0], e[1]), neg(e[1])]
}

/// `G^T` applied to 4 values: `[m0 + (m1 + m2) / 2, (m1 - m2) / 2, (m1 + m2) / 2 + m3]`.
#[inline(always)]
fn g_t<T: WithDType>(m: [&Lane<T>; 4]) -> [Lane<T>; 3] {
    let mid = half(&add(m[1], m[2]));
    [add(m[0], &mid), half(&sub(m[1], m[2])), add(&mid, m[3])]
}

#[inline(always)]
fn input_tile<T: WithDType>(d: &[Lane<T>; 16]) -> [Lane<T>; 16] {
    to_array(separable::<T, 4, 4, 4, 4>(d, b_t, b_t))
}

#[inline(always)]
fn output_tile<T: WithDType>(m: &[Lane<T>; 16]) -> [Lane<T>; 4] {
    to_array(separable::<T, 4, 4, 2, 2>(m, a_t, a_t))
}

#[inline(always)]
fn filter_tile<T: WithDType>(g: &[Lane<T>; 9]) -> [Lane<T>; 16] {
    to_array(separable::<T, 3, 3, 4, 4>(g, g_, g_))
}

#[inline(always)]
fn gradient_tile<T: WithDType>(e: &[Lane<T>; 4]) -> [Lane<T>; 16] {
    to_array(separable::<T, 2, 2, 4, 4>(e, a_, a_))
}

#[inline(always)]
fn kernel_tile<T: WithDType>(m: &[Lane<T>; 16]) -> [Lane<T>; 9] {
    to_array(separable::<T, 4, 4, 3, 3>(m, g_t, g_t))
}

/// The first `N` tiles of a [`separable`] result.
#[inline(always)]
fn to_array<T: WithDType, const N: usize>(v: [Lane<T>; 16]) -> [Lane<T>; N] {
    std::array::from_fn(|i| v[i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// `y[n][o][i][j] = Σ_c,ky,kx x[n][c][i + ky - pt][j + kx - pl] w[o][c][ky][kx]`,
    /// by the definition, with its two gradients for the output gradient
    /// `dy` (the same loop nest, read the other way round).
    fn direct(g: &Geometry, x: &[f64], w: &[f64], dy: &[f64]) -> [Vec<f64>; 3] {
        let (pt, pl) = (g.win.pads[0] as isize, g.win.pads[1] as isize);
        let mut y = vec![0.0; g.n * g.o * g.oh * g.ow];
        let mut dx = vec![0.0; x.len()];
        let mut dw = vec![0.0; w.len()];
        for n in 0..g.n {
            for o in 0..g.o {
                for i in 0..g.oh {
                    for j in 0..g.ow {
                        let yi = ((n * g.o + o) * g.oh + i) * g.ow + j;
                        for c in 0..g.c {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (
                                        i as isize + ky as isize - pt,
                                        j as isize + kx as isize - pl,
                                    );
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xi =
                                        ((n * g.c + c) * g.h + iy as usize) * g.w + ix as usize;
                                    let wi = ((o * g.c + c) * 3 + ky) * 3 + kx;
                                    y[yi] += x[xi] * w[wi];
                                    dx[xi] += dy[yi] * w[wi];
                                    dw[wi] += dy[yi] * x[xi];
                                }
                            }
                        }
                    }
                }
            }
        }
        [y, dx, dw]
    }

    fn close(a: &[f64], b: &[f64], tol: f64, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        let scale = b.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
        for (i, (p, q)) in a.iter().zip(b).enumerate() {
            assert!((p - q).abs() <= tol * scale, "{what}[{i}]: {p} vs {q}");
        }
    }

    /// The three passes against the definition on odd and even maps,
    /// maps smaller than a tile, padding 0, 1, 2 and asymmetric, batches
    /// that split into blocks unevenly, both ways of gathering tiles; f64 to rounding, f32 to its
    /// precision.
    #[test]
    fn the_three_passes_equal_the_definition() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (n, c, o, h, w, pads) in [
            (3, 16, 17, 8, 8, [1, 1, 1, 1]),
            (2, 17, 16, 7, 5, [1, 1, 1, 1]),
            (5, 16, 16, 2, 2, [1, 1, 1, 1]),
            (1, 20, 18, 1, 1, [1, 1, 1, 1]),
            (2, 16, 16, 6, 7, [0, 0, 0, 0]),
            (2, 16, 19, 5, 6, [2, 2, 2, 2]),
            (3, 18, 16, 6, 5, [0, 2, 1, 0]),
            (70, 16, 16, 3, 3, [1, 0, 2, 1]),
            // Planes past `Gather::TABLE_UP_TO` tiles, gathered row by row.
            (2, 16, 17, 13, 11, [1, 1, 1, 1]),
            (3, 17, 16, 12, 9, [0, 2, 1, 0]),
            (1, 16, 16, 10, 10, [2, 0, 0, 2]),
        ] {
            let win = Window {
                stride: [1, 1],
                pads,
                dilation: [1, 1],
            };
            let g = Geometry::new(&[n, c, h, w], &[o, c, 3, 3], win, 1).unwrap();
            let x: Vec<f64> = (0..n * c * h * w)
                .map(|_| rng.random::<f64>() - 0.5)
                .collect();
            let wt: Vec<f64> = (0..o * c * 9).map(|_| rng.random::<f64>() - 0.5).collect();
            let dy: Vec<f64> = (0..n * o * g.oh * g.ow)
                .map(|_| rng.random::<f64>() - 0.5)
                .collect();
            let [y, dx, dw] = direct(&g, &x, &wt, &dy);
            let what = format!("{n}x{c}->{o} {h}x{w} pads {pads:?}");
            let ones = vec![1.0; o];
            let zeros = vec![0.0; o];
            let plain = Finish {
                scale: &ones,
                shift: &zeros,
                relu: false,
            };
            close(
                &forward(&g, &x, &wt, plain),
                &y,
                1e-13,
                &format!("y {what}"),
            );
            close(&input_grad(&g, &dy, &wt), &dx, 1e-13, &format!("dx {what}"));
            close(&weight_grad(&g, &x, &dy), &dw, 1e-13, &format!("dw {what}"));
            let f32s = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
            let f64s = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<f64>>();
            let (x32, w32, dy32) = (f32s(&x), f32s(&wt), f32s(&dy));
            let (ones32, zeros32) = (vec![1f32; o], vec![0f32; o]);
            let plain32 = Finish {
                scale: &ones32,
                shift: &zeros32,
                relu: false,
            };
            close(&f64s(forward(&g, &x32, &w32, plain32)), &y, 1e-5, &what);
            close(&f64s(input_grad(&g, &dy32, &w32)), &dx, 1e-5, &what);
            close(&f64s(weight_grad(&g, &x32, &dy32)), &dw, 1e-5, &what);
        }
    }

    /// The dispatch rule: VGG's 3x3 layers on a calibration batch, not on
    /// SynFlow's batch of one, nor on shapes the transforms do not cover.
    #[test]
    fn applies_to_batches_of_3x3_stride_1_convolutions_only() {
        let geometry = |n, c, h, stride, pad, k| {
            let win = Window {
                stride: [stride; 2],
                pads: [pad; 4],
                dilation: [1, 1],
            };
            Geometry::new(&[n, c, h, h], &[c, c, k, k], win, 1).unwrap()
        };
        assert!(applies(&geometry(100, 512, 2, 1, 1, 3)));
        assert!(applies(&geometry(100, 64, 32, 1, 1, 3)));
        assert!(!applies(&geometry(1, 64, 32, 1, 1, 3)), "a batch of one");
        assert!(!applies(&geometry(8, 512, 2, 1, 1, 3)), "8 tiles in all");
        assert!(!applies(&geometry(100, 8, 32, 1, 1, 3)), "8 channels");
        assert!(!applies(&geometry(100, 64, 32, 2, 1, 3)), "stride 2");
        assert!(!applies(&geometry(100, 64, 32, 1, 3, 3)), "padding 3");
        assert!(!applies(&geometry(100, 64, 32, 1, 2, 5)), "5x5");
    }

    /// The finishing map is applied per output channel, after the sum.
    #[test]
    fn the_finishing_map_scales_shifts_and_clips_per_channel() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let (n, c, o, h) = (2, 16, 16, 5);
        let g = Geometry::new(&[n, c, h, h], &[o, c, 3, 3], Window::same(1, 1), 1).unwrap();
        let x: Vec<f64> = (0..n * c * h * h)
            .map(|_| rng.random::<f64>() - 0.5)
            .collect();
        let wt: Vec<f64> = (0..o * c * 9).map(|_| rng.random::<f64>() - 0.5).collect();
        let [y, _, _] = direct(&g, &x, &wt, &vec![0.0; n * o * h * h]);
        let scale: Vec<f64> = (0..o).map(|i| i as f64 - 7.5).collect();
        let shift: Vec<f64> = (0..o).map(|i| 0.1 * i as f64).collect();
        let finish = Finish {
            scale: &scale,
            shift: &shift,
            relu: true,
        };
        let want: Vec<f64> = y
            .iter()
            .enumerate()
            .map(|(i, &v)| (v * scale[(i / (h * h)) % o] + shift[(i / (h * h)) % o]).max(0.0))
            .collect();
        close(&forward(&g, &x, &wt, finish), &want, 1e-13, "finished");
    }
}
