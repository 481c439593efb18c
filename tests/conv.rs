//! The im2col conv op (`maskforge::autodiff::ops::conv`), with and without its fused
//! per-channel epilogue, against a direct seven-loop convolution and its
//! hand-derived gradients, candle's own conv2d and
//! autograd, and central finite differences (f64), across batch sizes,
//! kernel shapes, strides, dilations, asymmetric paddings and groups, with
//! 1, 2 and 3 worker threads (the op blocks samples by thread count, so
//! each count takes other block sizes and the serial and parallel paths).

use candle_core::{DType, Device, Tensor, Var};
use maskforge::autodiff::ops::conv::{conv2d, conv2d_with, stock_conv2d, Epilogue};
use maskforge::graph::op::Window;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

#[derive(Clone, Copy, Debug)]
struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    groups: usize,
    kh: usize,
    kw: usize,
    win: Window,
}

impl Case {
    fn out(&self) -> (usize, usize) {
        (
            self.win.out_len(0, self.h, self.kh, false),
            self.win.out_len(1, self.w, self.kw, false),
        )
    }
    fn x_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    fn w_len(&self) -> usize {
        self.o * (self.c / self.groups) * self.kh * self.kw
    }
    fn y_len(&self) -> usize {
        let (oh, ow) = self.out();
        self.n * self.o * oh * ow
    }
}

/// Visits every (output, input, weight) index triple of the convolution:
/// `y[yi] += x[xi] * w[wi]`.
fn each_term(k: &Case, mut f: impl FnMut(usize, usize, usize)) {
    let (oh, ow) = k.out();
    let (cg, og) = (k.c / k.groups, k.o / k.groups);
    for n in 0..k.n {
        for o in 0..k.o {
            let g = o / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let yi = ((n * k.o + o) * oh + oy) * ow + ox;
                    for ci in 0..cg {
                        let c = g * cg + ci;
                        for ky in 0..k.kh {
                            let Some(iy) = k.win.source(0, oy, ky, k.h) else {
                                continue;
                            };
                            for kx in 0..k.kw {
                                let Some(ix) = k.win.source(1, ox, kx, k.w) else {
                                    continue;
                                };
                                let xi = ((n * k.c + c) * k.h + iy) * k.w + ix;
                                let wi = ((o * cg + ci) * k.kh + ky) * k.kw + kx;
                                f(yi, xi, wi);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The direct convolution followed by `epi` and, for `L = sum(y * r)`,
/// `dL/dx` and `dL/dw`.
fn reference(k: &Case, x: &[f64], w: &[f64], r: &[f64], epi: &Epilogue) -> [Vec<f64>; 3] {
    let mut z = vec![0.0; k.y_len()];
    each_term(k, |yi, xi, wi| z[yi] += x[xi] * w[wi]);
    let (oh, ow) = k.out();
    let ch = |yi: usize| (yi / (oh * ow)) % k.o;
    let scale = |yi: usize| epi.scale.as_ref().map_or(1.0, |s| s[ch(yi)]);
    let shift = |yi: usize| epi.shift.as_ref().map_or(0.0, |s| s[ch(yi)]);
    let mut y = vec![0.0; k.y_len()];
    // dL/dz: the output gradient through the ReLU and the scale.
    let mut dz = vec![0.0; k.y_len()];
    for i in 0..y.len() {
        let v = z[i] * scale(i) + shift(i);
        let pass = !epi.relu || v > 0.0;
        y[i] = if pass { v } else { 0.0 };
        dz[i] = if pass { r[i] * scale(i) } else { 0.0 };
    }
    let (mut dx, mut dw) = (vec![0.0; x.len()], vec![0.0; w.len()]);
    each_term(k, |yi, xi, wi| {
        dx[xi] += w[wi] * dz[yi];
        dw[wi] += x[xi] * dz[yi];
    });
    [y, dx, dw]
}

fn random(len: usize, rng: &mut impl Rng) -> Vec<f64> {
    (0..len).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect()
}

/// Our op's output and gradients of `sum(y * r)`, in a pool of `threads`.
fn ours(
    k: &Case,
    x: &[f64],
    w: &[f64],
    r: &[f64],
    epi: &Epilogue,
    threads: usize,
) -> [Vec<f64>; 3] {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let dev = Device::Cpu;
        let xv = Var::from_vec(x.to_vec(), (k.n, k.c, k.h, k.w), &dev).unwrap();
        let wv = Var::from_vec(w.to_vec(), (k.o, k.c / k.groups, k.kh, k.kw), &dev).unwrap();
        let y = conv2d_with(xv.as_tensor(), wv.as_tensor(), k.win, k.groups, epi).unwrap();
        let rt = Tensor::from_vec(r.to_vec(), y.dims(), &dev).unwrap();
        let grads = (&y * &rt).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        [
            flat(&y),
            flat(grads.get(xv.as_tensor()).unwrap()),
            flat(grads.get(wv.as_tensor()).unwrap()),
        ]
    })
}

fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str, k: &Case) {
    assert_eq!(a.len(), b.len(), "{what} length, {k:?}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}, {k:?}"
        );
    }
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        (1usize..=5, 1usize..=3, 1usize..=3, 1usize..=3),
        (1usize..=9, 1usize..=9, 1usize..=3, 1usize..=3),
        (1usize..=3, 1usize..=3, 1usize..=2, 1usize..=2),
        [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
    )
        .prop_map(
            |((n, groups, cg, og), (h, w, kh, kw), (sh, sw, dh, dw), pads)| Case {
                n,
                c: cg * groups,
                h,
                w,
                o: og * groups,
                groups,
                kh,
                kw,
                win: Window {
                    stride: [sh, sw],
                    pads,
                    dilation: [dh, dw],
                },
            },
        )
        .prop_filter("empty output", |k| k.out().0 > 0 && k.out().1 > 0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Forward and both gradients equal the direct loops' exactly (up to
    /// summation order), for every index: an off-by-one in im2col, col2im
    /// or a block's gather would move some term. Half the cases carry a
    /// random epilogue (scale, shift, ReLU).
    #[test]
    fn op_matches_the_direct_convolution(k in case_strategy(), seed in 0u64..1000, threads in 1usize..=3, fused in 0u8..4) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (x, w, r) = (random(k.x_len(), &mut rng), random(k.w_len(), &mut rng), random(k.y_len(), &mut rng));
        let epi = Epilogue {
            scale: (fused & 1 == 1).then(|| random(k.o, &mut rng)),
            shift: (fused & 1 == 1).then(|| random(k.o, &mut rng)),
            relu: fused & 2 == 2,
        };
        let expect = reference(&k, &x, &w, &r, &epi);
        let got = ours(&k, &x, &w, &r, &epi, threads);
        for (i, what) in ["y", "dx", "dw"].iter().enumerate() {
            assert_close(&got[i], &expect[i], 1e-12, what, &k);
        }
    }
}

/// Square strides and dilations (what candle's conv2d takes): output and
/// autograd gradients equal candle's own, in f64 and f32, including batch
/// sizes that split into uneven sample blocks and VGG-like shapes. With a
/// stride, candle's own backward sizes the input gradient from the input's
/// and the kernel's height alone, so the strided cases here are square.
#[test]
fn op_matches_candle_conv2d_and_its_autograd() {
    let cases = [
        // (n, c, h, w, o, groups, kh, kw, stride, dilation, pads)
        (2, 3, 8, 8, 4, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
        (7, 4, 5, 6, 6, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
        (3, 4, 9, 9, 4, 2, 3, 3, 2, 1, [0, 1, 2, 1]),
        (1, 6, 10, 10, 6, 3, 3, 3, 1, 2, [2, 2, 2, 2]),
        (4, 4, 6, 6, 4, 4, 3, 3, 1, 1, [1, 1, 1, 1]),
        (5, 8, 4, 4, 16, 1, 1, 1, 1, 1, [0, 0, 0, 0]),
        (3, 5, 7, 7, 3, 1, 1, 1, 2, 1, [0, 0, 0, 0]),
        (2, 2, 12, 12, 3, 1, 5, 5, 3, 1, [2, 1, 0, 1]),
        (9, 16, 2, 2, 8, 1, 3, 3, 1, 1, [1, 1, 1, 1]),
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for (n, c, h, w, o, groups, kh, kw, s, d, pads) in cases {
        let k = Case {
            n,
            c,
            h,
            w,
            o,
            groups,
            kh,
            kw,
            win: Window {
                stride: [s; 2],
                pads,
                dilation: [d; 2],
            },
        };
        let (x, wt, r) = (
            random(k.x_len(), &mut rng),
            random(k.w_len(), &mut rng),
            random(k.y_len(), &mut rng),
        );
        for dtype in [DType::F64, DType::F32] {
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-4 };
            let run = |stock: bool| -> [Vec<f64>; 3] {
                let dev = Device::Cpu;
                let t = |v: &[f64], shape: (usize, usize, usize, usize)| {
                    Var::from_tensor(
                        &Tensor::from_vec(v.to_vec(), shape, &dev)
                            .unwrap()
                            .to_dtype(dtype)
                            .unwrap(),
                    )
                    .unwrap()
                };
                let xv = t(&x, (n, c, h, w));
                let wv = t(&wt, (o, c / groups, kh, kw));
                let f = if stock { stock_conv2d } else { conv2d };
                let y = f(xv.as_tensor(), wv.as_tensor(), k.win, groups).unwrap();
                let rt = Tensor::from_vec(r.clone(), y.dims(), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let grads = (&y * &rt).unwrap().sum_all().unwrap().backward().unwrap();
                let flat = |t: &Tensor| {
                    t.to_dtype(DType::F64)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap()
                };
                [
                    flat(&y),
                    flat(grads.get(xv.as_tensor()).unwrap()),
                    flat(grads.get(wv.as_tensor()).unwrap()),
                ]
            };
            let (a, b) = (run(false), run(true));
            for (i, what) in ["y", "dx", "dw"].iter().enumerate() {
                assert_close(&a[i], &b[i], tol, &format!("{what} {dtype:?}"), &k);
            }
        }
    }
}

/// Central finite differences of `sum(y * r)` in f64 for every input and
/// weight element of a few small convolutions, non-square strides and
/// dilations included.
#[test]
fn op_gradients_match_finite_differences() {
    let cases = [
        Case {
            n: 2,
            c: 2,
            h: 6,
            w: 5,
            o: 3,
            groups: 1,
            kh: 3,
            kw: 2,
            win: Window {
                stride: [2, 1],
                pads: [1, 0, 2, 1],
                dilation: [1, 2],
            },
        },
        Case {
            n: 3,
            c: 4,
            h: 5,
            w: 5,
            o: 2,
            groups: 2,
            kh: 2,
            kw: 3,
            win: Window {
                stride: [1, 2],
                pads: [0, 2, 1, 0],
                dilation: [2, 1],
            },
        },
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    for k in cases {
        let (x, w, r) = (
            random(k.x_len(), &mut rng),
            random(k.w_len(), &mut rng),
            random(k.y_len(), &mut rng),
        );
        let none = Epilogue::default();
        let [_, dx, dw] = ours(&k, &x, &w, &r, &none, 2);
        let loss = |x: &[f64], w: &[f64]| -> f64 {
            let y = ours(&k, x, w, &r, &none, 2)[0].clone();
            y.iter().zip(&r).map(|(a, b)| a * b).sum()
        };
        let h = 1e-6;
        for i in 0..x.len() {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[i] += h;
            down[i] -= h;
            let fd = (loss(&up, &w) - loss(&down, &w)) / (2.0 * h);
            assert!(
                (dx[i] - fd).abs() <= 1e-7 * (1.0 + fd.abs()),
                "dx[{i}] {} vs {fd}, {k:?}",
                dx[i]
            );
        }
        for i in 0..w.len() {
            let (mut up, mut down) = (w.to_vec(), w.to_vec());
            up[i] += h;
            down[i] -= h;
            let fd = (loss(&x, &up) - loss(&x, &down)) / (2.0 * h);
            assert!(
                (dw[i] - fd).abs() <= 1e-7 * (1.0 + fd.abs()),
                "dw[{i}] {} vs {fd}, {k:?}",
                dw[i]
            );
        }
    }
}

/// A data input (not a variable) gets no gradient; the weight's is still
/// right. Non-contiguous operands are accepted.
#[test]
fn op_skips_the_gradient_of_a_constant_input_and_takes_strided_operands() {
    let dev = Device::Cpu;
    let x = Tensor::arange(0f64, 2. * 3. * 4. * 5., &dev)
        .unwrap()
        .reshape((2, 3, 5, 4))
        .unwrap()
        .transpose(2, 3)
        .unwrap();
    assert!(!x.is_contiguous());
    let w = Var::from_tensor(&Tensor::ones((2, 3, 2, 2), DType::F64, &dev).unwrap()).unwrap();
    let y = conv2d(&x, w.as_tensor(), Window::same(1, 0), 1).unwrap();
    let y_stock = stock_conv2d(&x, w.as_tensor(), Window::same(1, 0), 1).unwrap();
    let diff = (&y - &y_stock)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert_eq!(diff, 0.0);
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    let gs = y_stock.sum_all().unwrap().backward().unwrap();
    let a: Vec<f64> = grads
        .get(w.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f64> = gs
        .get(w.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(a, b);
}

/// The fused epilogue against the same steps as candle ops after candle's
/// conv2d (broadcast product, broadcast sum, ReLU): output and gradients.
#[test]
fn epilogue_matches_candle_ops_after_candle_conv2d() {
    let dev = Device::Cpu;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
    // 3 x 7 x 40 x 40 outputs: the gradient pass works in chunks of about
    // 16 K values, so rows of several channels share a chunk here.
    let (n, c, o, h) = (3, 4, 7, 40);
    let x = Tensor::from_vec(random(n * c * h * h, &mut rng), (n, c, h, h), &dev).unwrap();
    let w = Var::from_vec(random(o * c * 9, &mut rng), (o, c, 3, 3), &dev).unwrap();
    let epi = Epilogue {
        scale: Some(random(o, &mut rng)),
        shift: Some(random(o, &mut rng)),
        relu: true,
    };
    let win = Window::same(1, 1);
    let per_channel = |v: &[f64]| Tensor::new(v, &dev).unwrap().reshape((1, o, 1, 1)).unwrap();
    let ours = conv2d_with(&x, w.as_tensor(), win, 1, &epi).unwrap();
    let stock = stock_conv2d(&x, w.as_tensor(), win, 1)
        .unwrap()
        .broadcast_mul(&per_channel(epi.scale.as_ref().unwrap()))
        .unwrap()
        .broadcast_add(&per_channel(epi.shift.as_ref().unwrap()))
        .unwrap()
        .relu()
        .unwrap();
    let r = Tensor::from_vec(random(ours.elem_count(), &mut rng), ours.dims(), &dev).unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let k = Case {
        n,
        c,
        h,
        w: h,
        o,
        groups: 1,
        kh: 3,
        kw: 3,
        win,
    };
    assert_close(&flat(&ours), &flat(&stock), 1e-12, "y", &k);
    assert!(flat(&ours).contains(&0.0), "the ReLU clips something");
    let ga = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let gb = (&stock * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_close(
        &flat(ga.get(w.as_tensor()).unwrap()),
        &flat(gb.get(w.as_tensor()).unwrap()),
        1e-12,
        "dw",
        &k,
    );
}

#[test]
fn op_rejects_a_kernel_larger_than_the_padded_input() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &dev).unwrap();
    let w = Tensor::zeros((1, 1, 3, 3), DType::F32, &dev).unwrap();
    assert!(conv2d(&x, &w, Window::same(1, 0), 1).is_err());
    let w = Tensor::zeros((1, 2, 1, 1), DType::F32, &dev).unwrap();
    assert!(
        conv2d(&x, &w, Window::same(1, 0), 1).is_err(),
        "channel mismatch"
    );
}
