//! The max-pool op (`maskforge::autodiff::ops::maxpool`) against a direct reference (max
//! over the window positions inside the input; gradient to the first
//! maximum, PyTorch's rule) on values drawn from a few levels so that ties
//! are common, and against central finite differences on tie-free values.

use candle_core::{Device, Tensor, Var};
use maskforge::autodiff::ops::maxpool::max_pool2d;
use maskforge::graph::op::Window;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

#[derive(Clone, Copy, Debug)]
struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kernel: [usize; 2],
    win: Window,
    ceil: bool,
}

impl Case {
    fn out(&self) -> (usize, usize) {
        (
            self.win.out_len(0, self.h, self.kernel[0], self.ceil),
            self.win.out_len(1, self.w, self.kernel[1], self.ceil),
        )
    }
}

/// Output and `d sum(y * r) / dx` by direct loops.
fn reference(k: &Case, x: &[f64], r: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (oh, ow) = k.out();
    let (mut y, mut dx) = (Vec::new(), vec![0.0; x.len()]);
    for plane in 0..k.n * k.c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best: Option<usize> = None;
                for ky in 0..k.kernel[0] {
                    for kx in 0..k.kernel[1] {
                        if let (Some(iy), Some(ix)) =
                            (k.win.source(0, oy, ky, k.h), k.win.source(1, ox, kx, k.w))
                        {
                            let i = (plane * k.h + iy) * k.w + ix;
                            if best.is_none_or(|b| x[i] > x[b]) {
                                best = Some(i);
                            }
                        }
                    }
                }
                let o = y.len();
                y.push(best.map_or(f64::NEG_INFINITY, |b| x[b]));
                if let Some(b) = best {
                    dx[b] += r[o];
                }
            }
        }
    }
    (y, dx)
}

fn ours(k: &Case, x: &[f64], r: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let dev = Device::Cpu;
    let xv = Var::from_vec(x.to_vec(), (k.n, k.c, k.h, k.w), &dev).unwrap();
    let y = max_pool2d(xv.as_tensor(), k.kernel, k.win, k.ceil).unwrap();
    let rt = Tensor::from_vec(r.to_vec(), y.dims(), &dev).unwrap();
    let g = (&y * &rt).unwrap().sum_all().unwrap().backward().unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    (flat(&y), flat(g.get(xv.as_tensor()).unwrap()))
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        (1usize..=3, 1usize..=3, 1usize..=9, 1usize..=9),
        (1usize..=3, 1usize..=3, 1usize..=3, 1usize..=3),
        (1usize..=2, 1usize..=2, any::<bool>()),
        // Unpadded half the time: the op's path for windows inside the input.
        prop_oneof![
            Just([0usize; 4]),
            [0usize..=1, 0usize..=1, 0usize..=1, 0usize..=1]
        ],
    )
        .prop_map(
            |((n, c, h, w), (kh, kw, sh, sw), (dh, dw, ceil), pads)| Case {
                n,
                c,
                h,
                w,
                kernel: [kh, kw],
                win: Window {
                    stride: [sh, sw],
                    pads,
                    dilation: [dh, dw],
                },
                ceil,
            },
        )
        // Padding below the kernel extent, as ONNX requires.
        .prop_filter("valid pool", |k| {
            k.out().0 > 0
                && k.out().1 > 0
                && k.win.pads[0].max(k.win.pads[2]) < k.kernel[0]
                && k.win.pads[1].max(k.win.pads[3]) < k.kernel[1]
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn op_matches_the_direct_pool_with_ties(k in case_strategy(), seed in 0u64..1000) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let len = k.n * k.c * k.h * k.w;
        // Three levels: most windows hold a tie.
        let x: Vec<f64> = (0..len).map(|_| rng.random_range(0..3) as f64 - 1.0).collect();
        let (oh, ow) = k.out();
        let r: Vec<f64> = (0..k.n * k.c * oh * ow).map(|_| rng.random::<f64>() - 0.5).collect();
        let (y, dx) = ours(&k, &x, &r);
        let (ey, edx) = reference(&k, &x, &r);
        prop_assert_eq!(y, ey);
        prop_assert_eq!(dx, edx);
    }
}

#[test]
fn op_gradient_matches_finite_differences() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let cases = [
        Case {
            n: 2,
            c: 2,
            h: 7,
            w: 6,
            kernel: [3, 3],
            win: Window::same(2, 1),
            ceil: true,
        },
        Case {
            n: 1,
            c: 3,
            h: 8,
            w: 8,
            kernel: [2, 2],
            win: Window::same(2, 0),
            ceil: false,
        },
    ];
    for k in cases {
        let len = k.n * k.c * k.h * k.w;
        let x: Vec<f64> = (0..len).map(|_| rng.random::<f64>()).collect();
        let (oh, ow) = k.out();
        let r: Vec<f64> = (0..k.n * k.c * oh * ow)
            .map(|_| rng.random::<f64>() - 0.5)
            .collect();
        let (_, dx) = ours(&k, &x, &r);
        let loss =
            |x: &[f64]| -> f64 { ours(&k, x, &r).0.iter().zip(&r).map(|(a, b)| a * b).sum() };
        for i in 0..len {
            let h = 1e-7;
            let (mut up, mut down) = (x.clone(), x.clone());
            up[i] += h;
            down[i] -= h;
            let fd = (loss(&up) - loss(&down)) / (2.0 * h);
            assert!(
                (dx[i] - fd).abs() < 1e-6,
                "dx[{i}] {} vs {fd}, {k:?}",
                dx[i]
            );
        }
    }
}

/// The 2x2, stride-2 pool inside the input (LeNet's, VGG's) has its own
/// path in the op: ties and odd extents against the direct pool.
#[test]
fn the_2x2_stride_2_path_matches_the_direct_pool_with_ties() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for (h, w) in [(2, 2), (7, 6), (8, 9), (28, 28)] {
        let k = Case {
            n: 2,
            c: 3,
            h,
            w,
            kernel: [2, 2],
            win: Window::same(2, 0),
            ceil: false,
        };
        let len = k.n * k.c * k.h * k.w;
        let x: Vec<f64> = (0..len)
            .map(|_| rng.random_range(0..3) as f64 - 1.0)
            .collect();
        let (oh, ow) = k.out();
        let r: Vec<f64> = (0..k.n * k.c * oh * ow)
            .map(|_| rng.random::<f64>() - 0.5)
            .collect();
        assert_eq!(ours(&k, &x, &r), reference(&k, &x, &r), "{h}x{w}");
    }
}
