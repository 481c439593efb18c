//! The conv op (src/autodiff/ops/conv.rs) against candle's own conv2d, forward and
//! backward (input and weight gradients) in the same run, on two VGG-16
//! CIFAR layers with a batch of 32: the second (64 -> 64 channels at 32x32,
//! the heaviest) and a late one (512 -> 512 at 4x4, thin gemms).

use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use maskforge::autodiff::ops::conv::{conv2d, stock_conv2d};
use maskforge::graph::op::Window;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv-fwd-bwd");
    g.sample_size(10);
    let dev = Device::Cpu;
    for (cin, cout, hw) in [(64, 64, 32), (512, 512, 4)] {
        let x =
            Var::from_tensor(&Tensor::randn(0f32, 1., (32, cin, hw, hw), &dev).unwrap()).unwrap();
        let w =
            Var::from_tensor(&Tensor::randn(0f32, 0.05, (cout, cin, 3, 3), &dev).unwrap()).unwrap();
        let win = Window::same(1, 1);
        for (name, f) in [
            ("ours", conv2d as fn(&Tensor, &Tensor, Window, usize) -> _),
            ("candle", stock_conv2d),
        ] {
            g.bench_function(format!("{name}/{cin}-{cout}@{hw}x{hw}/b32"), |b| {
                b.iter(|| {
                    let y = f(x.as_tensor(), w.as_tensor(), win, 1).unwrap();
                    let grads = y.sum_all().unwrap().backward().unwrap();
                    assert!(grads.get(w.as_tensor()).is_some());
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
