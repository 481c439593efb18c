//! Placement alone (quota counts given), the like-for-like comparison with the
//! official code's placement call: RPI and MiCA on VGG-16 and ResNet-20 at
//! 1000x with IGQ; the IGQ quota itself; and the mask-file writer.

use criterion::{criterion_group, criterion_main, Criterion};
use maskforge::methods::quota::{kept_counts, target_from_compression, Quota};
use maskforge::methods::random::mica::MicaChoice;
use maskforge::{methods::random::mica, methods::random::rpi, zoo};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("placement");
    for model in ["vgg16", "resnet20"] {
        let net = zoo::build(model, 0).unwrap();
        let k = target_from_compression(net.prunable_count(), 1000.0).unwrap();
        let counts = kept_counts(&net, &Quota::Igq, k).unwrap();
        g.bench_function(format!("igq-quota/{model}"), |b| {
            b.iter(|| kept_counts(&net, &Quota::Igq, k).unwrap())
        });
        g.bench_function(format!("rpi/{model}/1000"), |b| {
            b.iter(|| rpi::rpi(&net, &counts, 0))
        });
        g.bench_function(format!("mica/{model}/1000"), |b| {
            b.iter(|| mica::mica(&net, &counts, MicaChoice::Rand, 0).unwrap())
        });
    }
    g.finish();
}

/// The mask writer: VGG-16's 14.7 M weights as a BOOL mask file in memory.
fn writer(c: &mut Criterion) {
    let net = zoo::build("vgg16", 0).unwrap();
    let k = target_from_compression(net.prunable_count(), 100.0).unwrap();
    let counts = kept_counts(&net, &Quota::Igq, k).unwrap();
    let m = rpi::rpi(&net, &counts, 0);
    let meta = std::collections::BTreeMap::new();
    c.bench_function("maskfile/vgg16/bool", |b| {
        b.iter(|| {
            maskforge::io::maskfile::to_bytes(
                &net,
                &m,
                maskforge::io::maskfile::MaskDType::Bool,
                maskforge::io::maskfile::Naming::Source,
                &meta,
            )
            .unwrap()
        })
    });
}

/// One scorer round: SNIP on LeNet-300-100 with 100 samples, and one
/// SynFlow round (forward and backward of the linearised net) on ResNet-20.
fn scorers(c: &mut Criterion) {
    use candle_core::{DType, Device, Tensor};
    use maskforge::autodiff::executor::Executor;
    use maskforge::mask::MaskSet;
    let mut g = c.benchmark_group("scorer");
    g.sample_size(10);
    let net = zoo::build("lenet300", 0).unwrap();
    let ex = Executor::new(&net, &Device::Cpu, DType::F32).unwrap();
    let x = Tensor::zeros((100, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
    let y = Tensor::from_vec(
        (0..100u32).map(|i| i % 10).collect::<Vec<_>>(),
        100,
        &Device::Cpu,
    )
    .unwrap();
    let cal = maskforge::autodiff::calibration::Calibration {
        batches: vec![(x, y)],
    };
    let dense = MaskSet::dense(&net);
    g.bench_function("snip-round/lenet300/100", |b| {
        b.iter(|| maskforge::methods::scored::snip::scores(&ex, &dense, &cal).unwrap())
    });
    let net = zoo::build("resnet20", 0).unwrap();
    let ex = Executor::new(&net, &Device::Cpu, DType::F64).unwrap();
    let dense = MaskSet::dense(&net);
    g.bench_function("synflow-round/resnet20", |b| {
        b.iter(|| maskforge::methods::scored::synflow::scores(&ex, &net, &dense).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench, writer, scorers);
criterion_main!(benches);
