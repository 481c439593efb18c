//! How close SNIP's gradient pass runs to the machine's peak, in one run:
//! GFLOP/s of the `gemm` crate's kernels on matrix shapes of VGG-16's
//! CIFAR passes (one thread and every thread: the peak), and GFLOP/s of a
//! whole SNIP pass (forward and backward of VGG-16 on 100 images, f32), its
//! floating-point work counted from the network's layers as direct
//! convolutions. The 3x3 layers run through Winograd's F(2x2, 3x3)
//! (`src/autodiff/ops/winograd.rs`), 16 multiplies where direct takes 36,
//! so the pass's figure is a direct-equivalent rate, not the kernel's.
//!
//! criterion's throughput line reads "elem/s" for these groups: each
//! element is one floating-point operation (a multiply-add is two).
//!
//!     cargo bench --bench gflops

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gemm::Parallelism;
use maskforge::autodiff::backward::{weight_gradients, Seed};
use maskforge::autodiff::executor::{Executor, Mode};
use maskforge::graph::{LayerKind, Network};

/// `dst = lhs . rhs`, row-major `m x k` times `k x n`.
fn product(
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
    (m, k, n): (usize, usize, usize),
    par: Parallelism,
) {
    assert!(dst.len() == m * n && lhs.len() == m * k && rhs.len() == k * n);
    // SAFETY: the three buffers have the sizes the strides address.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

fn gemm_peak(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm-gflops");
    g.sample_size(20);
    // (out channels, in channels x 9, columns): VGG-16's second conv on a
    // block of 8 samples, and a late 512 -> 512 layer on 64 samples at 2x2.
    for (m, k, n) in [(64, 576, 8192), (512, 4608, 256)] {
        let lhs: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let rhs: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut dst = vec![0f32; m * n];
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        for (threads, par) in [
            (1, Parallelism::None),
            (rayon::current_num_threads(), Parallelism::Rayon(0)),
        ] {
            g.bench_function(format!("{m}x{k}x{n}/{threads}-threads"), |b| {
                b.iter(|| product(&mut dst, &lhs, &rhs, (m, k, n), par))
            });
        }
    }
    g.finish();
}

/// Floating-point operations of one forward and backward pass of `net`
/// on `batch` samples: per layer, a multiply-add per weight and output
/// position for the output, the weight gradient and (but for the first
/// layer, whose input needs none) the input gradient.
fn pass_flops(net: &Network, batch: usize) -> u64 {
    let mut total = 0u64;
    for (li, layer) in net.layers.iter().enumerate() {
        let out = &net.values[net.nodes[layer.node].output].shape;
        let positions: usize = match layer.kind {
            LayerKind::Conv => out[1..].iter().product(),
            _ => out[..out.len() - 1].iter().product(),
        };
        let products = if li == 0 { 2 } else { 3 };
        total += (2 * layer.numel() * positions * batch * products) as u64;
    }
    total
}

fn snip_pass(c: &mut Criterion) {
    let net = maskforge::zoo::build("vgg16", 0).unwrap();
    let ex = Executor::new(&net, &Device::Cpu, DType::F32).unwrap();
    let batch = 100;
    let x = Tensor::randn(0f32, 1., (batch, 3, 32, 32), &Device::Cpu).unwrap();
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    let labels = Tensor::new(labels, &Device::Cpu).unwrap();
    let seed = Seed::CrossEntropy {
        labels: &labels,
        temperature: 1.0,
    };
    let mut g = c.benchmark_group("snip-pass-gflops");
    g.sample_size(10);
    g.throughput(Throughput::Elements(pass_flops(&net, batch)));
    g.bench_function("vgg16/100-images", |b| {
        b.iter(|| weight_gradients(&ex, &x, None, Mode::Eval, seed).unwrap())
    });
    g.finish();
}

criterion_group!(benches, gemm_peak, snip_pass);
criterion_main!(benches);
