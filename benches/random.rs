//! Placement alone (quota counts given), the like-for-like comparison with the
//! official code's placement call: RPI and MiCA on VGG-16 and ResNet-20 at
//! 1000x with IGQ; the IGQ quota itself; and the mask-file writer.

use criterion::{criterion_group, criterion_main, Criterion};
use maskforge::prune::MicaChoice;
use maskforge::quota::{kept_counts, target_from_compression, Quota};
use maskforge::{mica, rpi, zoo};

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
            maskforge::maskfile::to_bytes(
                &net,
                &m,
                maskforge::maskfile::MaskDType::Bool,
                maskforge::maskfile::Naming::Source,
                &meta,
            )
            .unwrap()
        })
    });
}

criterion_group!(benches, bench, writer);
criterion_main!(benches);
